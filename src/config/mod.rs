//! Command line and configuration: the one place where options are
//! named, parsed and validated.
//!
//! - `parse`: the lexopt parser, and which subcommands take each option;
//! - `values`: one option's value (numbers, sizes, rates, targets);
//! - `model`: the configuration the daemon reads, and its checks;
//! - `link`: the link settings and the policy they put in force;
//! - `help`: the help pages.
//!
//! Parsing does no I/O: the caller reads what it needs from the system
//! into `System` and passes it in.

pub mod help;
mod link;
mod model;
mod parse;
mod values;

pub use link::{Link, LinkInForce, LinkLeg};
pub use model::{
    Backend, Command, Config, ConfigError, LegOptions, OutgoingSource, RulesPart, RulesRequest,
    SnoopConfig, Subcommand, Target, human_bytes,
};
pub use parse::parse;
pub use values::{parse_duration, parse_rate, parse_target};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the configuration depends on in the system it runs on, read by
/// the caller. `System::default()`: nothing known, nothing assumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct System {
    /// The most send buffer autotuning gives a socket (tcp_wmem's third
    /// field).
    pub autotuning_ceiling_bytes: Option<u64>,
}

impl System {
    /// From the text of /proc/sys/net/ipv4/tcp_wmem: min, default, max.
    pub fn from_tcp_wmem(text: &str) -> System {
        System {
            autotuning_ceiling_bytes: text.split_whitespace().nth(2).and_then(|f| f.parse().ok()),
        }
    }
}

#[cfg(test)]
mod tests;
