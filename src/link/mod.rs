//! The slow link: its settings and the policy they put in force, setting
//! that policy on the legs' sockets, and what it does while connections
//! run. Config parses the figures and hands them to `settings::settle`,
//! which checks them and puts the policy in force (the kernel's units
//! come from `sys`); the loop talks to `LinkRuntime` through a few
//! events; status reads its facts here.
//!
//! - `settings`: the figures, which leg crosses the link, and the policy
//!   (pacing, BBR or not, send buffer, the routes' initial window);
//! - `tuning`: a leg's socket options and setting them;
//! - `runtime`: the events, and the table of what the link keeps of each
//!   connection;
//! - `share`, `window`, `rtt_probe`: the rate shared between long legs,
//!   the BBR-to-cubic handover, the RTT-probe skip;
//! - `learn`: what the long legs measured.

mod learn;
mod rtt_probe;
mod runtime;
pub mod settings;
mod share;
pub mod tuning;
mod window;

pub use learn::Estimate;
pub use runtime::{LinkRuntime, LinkTicked, Opened};
pub use settings::{Link, LinkInForce, LinkLeg, Setup, System, route_windows};
pub use tuning::{Congestion, LegOptions};
