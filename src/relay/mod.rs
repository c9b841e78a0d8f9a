//! Split connections: opening one (the listeners, the slot, the outgoing
//! leg: open.rs) and relaying it (the state machine in conn.rs, moving
//! bytes with crate::channel), and the pool they run in, sized to the
//! open-file limit.

mod conn;
mod open;
#[cfg(test)]
mod tests;

pub use conn::{Conn, End, Ready, Seconds, Step};
pub use open::{Accepted, Intake, RefusalCount};

use crate::config::Config;
use crate::pool::Pool;

/// Open files besides the pool's: listeners, epoll, the queues, the log,
/// control clients.
const OTHER_FILES: usize = 32;
/// The most pipes: the directions with bytes in flight at once (a pipe
/// goes back as soon as it is empty; a direction waiting for one is not
/// read, and TCP's flow control slows its sender meanwhile).
const MOST_PIPES: usize = 256;
/// The fewest pipes the pool is made with, when open files are short.
const FEWEST_PIPES: usize = 4;

/// The pool of `cfg.max_conns` slots (two sockets each) and its pipes
/// (two ends each: two per slot, at most `MOST_PIPES`), after raising
/// the open-file limit for them; when it stays lower, slots come first
/// (a slot fewer passes a connection unsplit, a pipe fewer only makes
/// busy directions take turns). And the files wanted.
pub fn pool_for<C>(cfg: &Config) -> (Pool<C>, u64) {
    let conns = usize::from(cfg.max_conns);
    let pipes = (2 * conns).min(MOST_PIPES);
    let want = 2 * (conns + pipes) + OTHER_FILES;
    let have = crate::sys::raise_nofile(want as u64).unwrap_or(0);
    let room = (have.min(want as u64) as usize).saturating_sub(OTHER_FILES) / 2;
    // Room for the pipes' first few (all of them, in a small pool).
    let slots = conns.min(room.saturating_sub(pipes.min(FEWEST_PIPES)));
    let pool = Pool::make(
        slots as u16,
        pipes.min(room - slots) as u16,
        cfg.buffer_bytes as usize,
    );
    if pool.capacity() < conns || pool.pipes().1 < pipes {
        log::warn!(
            "open-file limit {have}: {} of {conns} connections, {} of {pipes} pipes (procd: limits nofile)",
            pool.capacity(),
            pool.pipes().1,
        );
    }
    (pool, want as u64)
}
