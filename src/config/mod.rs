//! Command line and configuration: the one place where options are
//! named, parsed and validated.
//!
//! - `parse`: the lexopt parser, and which subcommands take each option;
//! - `values`: one option's value (numbers, sizes, rates, targets);
//! - `model`: the configuration the daemon reads, and its checks;
//! - `help`: the help pages.
//!
//! The link's figures are parsed here and handed to `crate::link`, which
//! puts its policy in force. Parsing does no I/O: the caller reads what
//! the policy needs from the system into `System` and passes it in.

pub mod help;
mod model;
mod parse;
mod values;

pub use crate::link::System;
pub use model::{
    Backend, Command, Config, ConfigError, OutgoingSource, RulesPart, RulesRequest, SnoopConfig,
    Subcommand, Target, human_bytes,
};
pub use parse::parse;
pub use values::{parse_duration, parse_rate, parse_target};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests;
