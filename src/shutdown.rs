//! How pepwrt stops, and what its signals ask for. A stop takes no new
//! connections (the queues let every waiting packet through unchanged,
//! and with queue bypass new SYNs pass unsplit; the listeners take in
//! their backlog, then close) and gives live connections DRAIN to finish.

use std::time::{Duration, Instant};

/// After SIGTERM, live connections get this long to finish (procd sends
/// SIGKILL after 5 s).
pub const DRAIN: Duration = Duration::from_secs(3);

/// The signals the loop hears, each turned into a request there.
pub const SIGNALS: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1];

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGTERM, SIGINT.
    Stop,
    /// SIGHUP: logrotate moved the log file.
    ReopenLog,
    /// SIGUSR1: the status report, into the log.
    LogStatus,
}

impl Request {
    pub fn from_signal(sig: libc::c_int) -> Option<Request> {
        match sig {
            libc::SIGTERM | libc::SIGINT => Some(Request::Stop),
            libc::SIGHUP => Some(Request::ReopenLog),
            libc::SIGUSR1 => Some(Request::LogStatus),
            _ => None,
        }
    }
}

/// Whether pepwrt is stopping, and until when live connections may run.
#[derive(Debug, Default)]
pub struct Drain {
    until: Option<Instant>,
}

impl Drain {
    /// Starts the drain; None if it had started already (a second SIGTERM
    /// changes nothing), else its deadline.
    pub fn begin(&mut self, now: Instant) -> Option<Instant> {
        if self.until.is_some() {
            return None;
        }
        self.until = Some(now + DRAIN);
        self.until
    }

    /// The drain is over: every connection finished, or time is up.
    pub fn is_over(&self, live: usize, now: Instant) -> bool {
        self.until.is_some_and(|until| live == 0 || now >= until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_ends_when_the_last_connection_does_or_time_is_up() {
        let t = Instant::now();
        let mut d = Drain::default();
        assert!(!d.is_over(0, t));
        assert_eq!(d.begin(t), Some(t + DRAIN));
        assert_eq!(d.begin(t + DRAIN), None);
        assert!(!d.is_over(2, t + DRAIN / 2));
        assert!(d.is_over(0, t + DRAIN / 2));
        assert!(d.is_over(2, t + DRAIN));
    }

    #[test]
    fn signals_map_to_requests() {
        assert_eq!(Request::from_signal(libc::SIGTERM), Some(Request::Stop));
        assert_eq!(Request::from_signal(libc::SIGINT), Some(Request::Stop));
        assert_eq!(Request::from_signal(libc::SIGHUP), Some(Request::ReopenLog));
        assert_eq!(
            Request::from_signal(libc::SIGUSR1),
            Some(Request::LogStatus)
        );
        assert_eq!(Request::from_signal(libc::SIGPIPE), None);
    }
}
