//! The link as the long legs measure it: the fastest delivery rate a long
//! leg sent at and the smallest RTT one saw (TCP_INFO, every tick). For a
//! user who does not know the link's figures, `pepwrt status` shows them
//! with the flags they suggest; for one who gave them, a check that they
//! are about right (with link settings the legs are paced at the given
//! rate, so the rate seen cannot exceed it). Kept over two periods, so a
//! peak from long ago fades.

use std::time::{Duration, Instant};

use crate::sys::socket::LegInfo;

const PERIOD: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// Bytes per second.
    rate: u64,
    /// Microseconds; 0 until a leg has measured one.
    rtt_us: u32,
}

impl Seen {
    fn add(&mut self, rate: u64, rtt_us: u32) {
        self.rate = self.rate.max(rate);
        if rtt_us > 0 && (self.rtt_us == 0 || rtt_us < self.rtt_us) {
            self.rtt_us = rtt_us;
        }
    }
}

/// What `status` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub send_bps: u64,
    pub min_rtt: Duration,
}

#[derive(Debug, Default)]
pub struct LinkEstimate {
    current: Seen,
    previous: Seen,
    period_start: Option<Instant>,
}

impl LinkEstimate {
    /// One long leg's TCP_INFO at `now`.
    pub fn observe(&mut self, info: &LegInfo, now: Instant) {
        let start = *self.period_start.get_or_insert(now);
        if now.saturating_duration_since(start) >= PERIOD {
            self.previous = self.current;
            self.current = Seen::default();
            self.period_start = Some(now);
        }
        self.current.add(info.delivery_rate, info.min_rtt_us);
    }

    /// The estimate, once a leg has carried data and measured its RTT.
    pub fn estimate(&self) -> Option<Estimate> {
        let mut both = self.current;
        both.add(self.previous.rate, self.previous.rtt_us);
        (both.rate > 0 && both.rtt_us > 0).then(|| Estimate {
            send_bps: both.rate * 8,
            min_rtt: Duration::from_micros(u64::from(both.rtt_us)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(rate: u64, rtt_us: u32) -> LegInfo {
        LegInfo {
            delivery_rate: rate,
            min_rtt_us: rtt_us,
            ..LegInfo::default()
        }
    }

    #[test]
    fn fastest_rate_and_smallest_rtt_over_two_periods() {
        let t0 = Instant::now();
        let mut e = LinkEstimate::default();
        assert_eq!(e.estimate(), None);
        // A leg that has not measured an RTT yet tells nothing.
        e.observe(&info(500_000, 0), t0);
        assert_eq!(e.estimate(), None);
        e.observe(&info(1_250_000, 612_000), t0 + Duration::from_secs(1));
        e.observe(&info(900_000, 650_000), t0 + Duration::from_secs(2));
        let want = Estimate {
            send_bps: 10_000_000,
            min_rtt: Duration::from_micros(612_000),
        };
        assert_eq!(e.estimate(), Some(want));
        // Still seen one period later; gone after two.
        e.observe(&info(100_000, 700_000), t0 + PERIOD);
        assert_eq!(e.estimate(), Some(want));
        e.observe(&info(100_000, 700_000), t0 + 2 * PERIOD);
        assert_eq!(
            e.estimate(),
            Some(Estimate {
                send_bps: 800_000,
                min_rtt: Duration::from_micros(700_000),
            })
        );
    }
}
