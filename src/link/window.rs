//! A long leg that the far end's receive window holds back gives up BBR.
//!
//! On a long link the link settings choose BBR for the leg over it. BBR
//! paces at the bandwidth it measures; when the peer's receive window is
//! what limits the leg (a host with a 64 KB window behind a GEO link gets
//! 0.9 Mbit/s at 600 ms, whatever the link could carry), that window is
//! all BBR measures, and its probing only costs: its slower pacing phase
//! and its RTT probe every 10 s leave the window partly unused, and
//! nothing makes that up (measured: a 1 MB upload took 17.8 s against
//! 16.7 s direct). So a leg whose peer window stays below half the link's
//! BDP, without growing, after some seconds of sending, is handed to
//! cubic, which keeps a fixed window full. A receiver with a normal window
//! opens it past that within a few round trips and keeps BBR.

use std::os::fd::RawFd;

use super::settings::Link;
use super::tuning::{Congestion, set_congestion};
use crate::sys::socket::LegInfo;
use crate::tuple::FourTuple;

/// Ticks (seconds) in a row the window must hold the leg back.
const STRIKES: u8 = 2;

/// What one connection's long leg has shown so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct WindowWatch {
    last_window: u32,
    strikes: u8,
    handed_over: bool,
}

impl WindowWatch {
    /// The leg runs cubic now.
    pub fn handed_over(&self) -> bool {
        self.handed_over
    }

    /// One tick's look at the leg; true when it should be handed over now
    /// (once per connection).
    fn judge(&mut self, limits: LegInfo, rule: &Handover) -> bool {
        if self.handed_over {
            return false;
        }
        let grew = limits.peer_window > self.last_window.saturating_add(self.last_window / 4);
        let held =
            limits.busy_us >= rule.min_busy_us && limits.peer_window < rule.small_window && !grew;
        self.last_window = limits.peer_window;
        self.strikes = if held { self.strikes + 1 } else { 0 };
        self.handed_over = self.strikes >= STRIKES;
        self.handed_over
    }
}

/// The rule, where link settings chose BBR.
pub struct Handover {
    /// A peer window below this cannot carry the link's rate: half the
    /// link's BDP.
    small_window: u32,
    /// Sending time before judging: a normal receiver opens its window
    /// over the first round trips (four, and at least two seconds).
    min_busy_us: u64,
}

impl Handover {
    /// Where the link settings chose BBR (`bbr_by_link`).
    pub fn new(link: Link, bbr_by_link: bool) -> Option<Handover> {
        if !bbr_by_link {
            return None;
        }
        let bdp = link.bdp_bytes(link.send_bps()?);
        Some(Handover {
            small_window: (bdp / 2).min(u64::from(u32::MAX)) as u32,
            min_busy_us: (4 * link.rtt.as_micros() as u64).max(2_000_000),
        })
    }

    /// Looks at one connection's long leg (`fd`, as TCP_INFO described
    /// it this tick; `tuple` for the log) and hands it to cubic if its
    /// window holds it back; true if it did.
    pub fn look(
        &self,
        watch: &mut WindowWatch,
        fd: RawFd,
        tuple: &FourTuple,
        info: LegInfo,
    ) -> bool {
        if !watch.judge(info, self) {
            return false;
        }
        // cubic is built into every kernel pepwrt runs on; reno is the
        // kernel's own fallback.
        let cubic = set_congestion(fd, &Congestion::Cubic);
        match cubic.or_else(|_| set_congestion(fd, &Congestion::Reno)) {
            Ok(()) => {
                log::info!(
                    "{} -> {}: the receive window of {} bytes holds the leg over the link below the link's rate; BBR handed over to cubic",
                    tuple.client,
                    tuple.server,
                    info.peer_window
                );
                true
            }
            Err(e) => {
                log::warn!(
                    "{} -> {}: could not hand the leg over the link to cubic: {e}",
                    tuple.client,
                    tuple.server
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Handover = Handover {
        small_window: 187_500,
        min_busy_us: 2_400_000,
    };

    fn look(w: &mut WindowWatch, busy_s: f64, window: u32) -> bool {
        let limits = LegInfo {
            busy_us: (busy_s * 1e6) as u64,
            peer_window: window,
            ..LegInfo::default()
        };
        w.judge(limits, &RULE)
    }

    #[test]
    fn a_small_window_that_stays_hands_over_once() {
        let mut w = WindowWatch::default();
        // The first seconds do not count: every receiver starts small.
        assert!(!look(&mut w, 1.0, 39_552));
        assert!(!look(&mut w, 2.0, 39_552));
        assert!(!look(&mut w, 3.0, 39_552));
        assert!(look(&mut w, 4.0, 39_552));
        assert!(!look(&mut w, 5.0, 39_552));
    }

    #[test]
    fn a_growing_or_large_window_keeps_bbr() {
        let mut w = WindowWatch::default();
        let mut window = 65_000;
        for s in 1..20 {
            window = (window * 2).min(4_000_000);
            assert!(!look(&mut w, f64::from(s), window), "{s} s");
        }
        // Growing by more than a quarter each tick, even below half the
        // BDP, is a receiver opening up.
        let mut w = WindowWatch::default();
        let mut window = 40_000;
        for s in 3..10 {
            window += window / 3;
            assert!(!look(&mut w, f64::from(s), window), "{s} s, {window} bytes");
        }
    }

    #[test]
    fn a_sender_that_stops_sending_is_not_judged() {
        let mut w = WindowWatch::default();
        // Busy time stays under the threshold: the leg had little to send.
        for _ in 0..10 {
            assert!(!look(&mut w, 1.5, 39_552));
        }
    }
}
