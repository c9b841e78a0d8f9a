//! Round-trip time of the wireless hop: from the moment a segment is cached
//! (just before the router queues it toward the host) to the ACK that covers
//! it. RFC 6298 smoothing, with Snoop's own floor.

use std::time::{Duration, Instant};

/// Below this a local retransmission would race the host's delayed ACK
/// (Linux acks within 40 ms once quick-ack mode ends).
pub const MIN_RTO: Duration = Duration::from_millis(100);
/// Floor of `copy_timeout`: a few of a radio hop's round trips.
const MIN_COPY_RTO: Duration = Duration::from_millis(20);
/// RFC 6298 (2.1): 1 s until the first sample.
const INITIAL_RTO: Duration = Duration::from_secs(1);
/// Backed-off timeouts stop here: a local timer longer than the sender's own
/// RTO helps nobody.
const MAX_RTO: Duration = Duration::from_secs(4);
/// The minimum RTT is the smallest sample of the last one to two of these
/// windows, so a hop that got slower for good (a station moving away, a
/// lower Wi-Fi rate) sets a new base, while a queue that stands for a few
/// seconds does not become the base.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default)]
pub struct RttEstimator {
    /// Smoothed RTT and its mean deviation, in microseconds; `None` before
    /// the first sample.
    smoothed: Option<(u64, u64)>,
    /// Smallest sample in the current window, and when that window began.
    min: Option<(Duration, Instant)>,
    /// Smallest sample in the window before.
    min_before: Option<Duration>,
}

impl RttEstimator {
    /// Folds in one measurement (RFC 6298 section 2.2 and 2.3, alpha 1/8,
    /// beta 1/4) taken at `now`.
    pub fn sample(&mut self, rtt: Duration, now: Instant) {
        match self.min {
            Some((_, start)) if now >= start + MIN_RTT_WINDOW => {
                self.min_before = self.min.map(|(m, _)| m);
                self.min = Some((rtt, now));
            }
            Some((m, start)) if rtt < m => self.min = Some((rtt, start)),
            Some(_) => {}
            None => self.min = Some((rtt, now)),
        }
        let r = rtt.as_micros().min(u128::from(u32::MAX)) as u64;
        self.smoothed = Some(match self.smoothed {
            None => (r, r / 2),
            Some((srtt, rttvar)) => {
                let rttvar = (3 * rttvar + srtt.abs_diff(r)) / 4;
                let srtt = (7 * srtt + r) / 8;
                (srtt, rttvar)
            }
        });
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.smoothed.map(|(s, _)| Duration::from_micros(s))
    }

    /// How far the smoothed RTT sits above the minimum: the time segments
    /// spend waiting in queues on the way to the host (the router's qdisc,
    /// the driver, the radio's retries). Zero before any sample.
    pub fn queue_delay(&self) -> Duration {
        let min = match (self.min, self.min_before) {
            (Some((m, _)), Some(b)) => Some(m.min(b)),
            (Some((m, _)), None) => Some(m),
            (None, _) => None,
        };
        match (self.srtt(), min) {
            (Some(srtt), Some(min)) => srtt.saturating_sub(min),
            _ => Duration::ZERO,
        }
    }

    /// srtt + 4 * rttvar, at least `MIN_RTO`.
    pub fn rto(&self) -> Duration {
        self.timeout_with_floor(MIN_RTO)
    }

    /// srtt + 4 * rttvar between `floor` and `MAX_RTO`; `INITIAL_RTO`
    /// before any sample.
    fn timeout_with_floor(&self, floor: Duration) -> Duration {
        match self.smoothed {
            None => INITIAL_RTO,
            Some((srtt, rttvar)) => Duration::from_micros(srtt + 4 * rttvar).clamp(floor, MAX_RTO),
        }
    }

    /// How long a local copy of the segment at the host's cumulative ACK
    /// may go unanswered before the timer sends it again: srtt + 4 *
    /// rttvar as for the RTO, but with a floor of `MIN_COPY_RTO`. The host
    /// acknowledges a segment that fills a hole at once (RFC 5681, 4.2),
    /// so the delayed-ACK wait that `MIN_RTO` allows for does not apply;
    /// and when the copy is lost with no data behind it to show that (a
    /// sender with a small window has sent all it may), the sender waits
    /// for this timer with its window stalled.
    pub fn copy_timeout(&self) -> Duration {
        self.timeout_with_floor(MIN_COPY_RTO)
    }

    /// The timeout after `backoff` unanswered local retransmissions
    /// (doubling, RFC 6298 5.5).
    pub fn backed_off(&self, backoff: u8) -> Duration {
        self.rto()
            .saturating_mul(1u32 << backoff.min(6))
            .min(MAX_RTO)
    }

    /// How long dup ACKs for a hole may keep coming after a local
    /// retransmission before that retransmission counts as lost too: one
    /// smoothed round trip plus two deviations (the copy queues behind the
    /// data already in the router's queue, which the samples include).
    pub fn retransmit_guard(&self) -> Duration {
        match self.smoothed {
            None => INITIAL_RTO,
            Some((srtt, rttvar)) => {
                Duration::from_micros(srtt + 2 * rttvar).max(Duration::from_millis(10))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_sets_srtt_and_half_variance() {
        let mut e = RttEstimator::default();
        assert_eq!(e.rto(), INITIAL_RTO);
        e.sample(Duration::from_millis(40), Instant::now());
        assert_eq!(e.srtt(), Some(Duration::from_millis(40)));
        // 40 + 4 * 20 ms
        assert_eq!(e.rto(), Duration::from_millis(120));
    }

    #[test]
    fn rto_has_a_floor_and_backoff_a_ceiling() {
        let mut e = RttEstimator::default();
        for _ in 0..50 {
            e.sample(Duration::from_millis(2), Instant::now());
        }
        assert_eq!(e.rto(), MIN_RTO);
        assert_eq!(e.backed_off(1), MIN_RTO * 2);
        assert_eq!(e.backed_off(200), MAX_RTO);
    }

    #[test]
    fn smoothing_moves_an_eighth_toward_the_sample() {
        let mut e = RttEstimator::default();
        let now = Instant::now();
        e.sample(Duration::from_millis(80), now);
        e.sample(Duration::from_millis(160), now);
        assert_eq!(e.srtt(), Some(Duration::from_millis(90)));
    }

    #[test]
    fn queue_delay_is_srtt_above_a_windowed_minimum() {
        let mut e = RttEstimator::default();
        let t0 = Instant::now();
        e.sample(Duration::from_millis(5), t0);
        for _ in 0..40 {
            e.sample(Duration::from_millis(45), t0);
        }
        assert!(e.queue_delay() > Duration::from_millis(35));
        // Ten seconds on, the 5 ms sample is still the base: a queue that
        // stands for a while is not the hop's new normal.
        for _ in 0..40 {
            e.sample(Duration::from_millis(45), t0 + MIN_RTT_WINDOW);
        }
        assert!(e.queue_delay() > Duration::from_millis(35));
        // Twenty seconds on, the slower hop is.
        for _ in 0..40 {
            e.sample(Duration::from_millis(45), t0 + MIN_RTT_WINDOW * 2);
        }
        assert!(e.queue_delay() < Duration::from_millis(1));
    }
}
