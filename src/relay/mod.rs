//! Split connections: opening one (the listeners, the slot, the outgoing
//! leg) and
//! relaying it (the state machine in conn.rs).

mod conn;
mod link_tick;
mod open;
mod rtt_probe;
mod share;
#[cfg(test)]
mod tests;
mod window;

pub use conn::{Conn, End, Ready, Seconds, Step};
pub use link_tick::{LinkTick, LinkTicked};
pub use open::{Accepted, Intake, Refusal, Refused};
pub use rtt_probe::{ProbeClock, ProbeSkip};
pub use share::LinkShare;
pub use window::{Handover, WindowWatch};
