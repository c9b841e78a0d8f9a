//! Split connections: opening one (the listeners, the slot, the outgoing
//! leg) and
//! relaying it (the state machine in conn.rs).

mod channel;
mod conn;
mod open;
#[cfg(test)]
mod tests;

pub use channel::{Channel, pool_for};
pub use conn::{Conn, End, Ready, Seconds, Step};
pub use open::{Accepted, Intake, RefusalCount};
