//! Congestion or radio? A hole the host's duplicate ACKs show was either
//! lost on the air, which Snoop repairs locally and hides from the sender,
//! or dropped by a full queue on the way to the host, which is congestion:
//! the sender must hear of it and back off, or it keeps the queue full
//! and every repaired drop is followed by the next.
//!
//! The evidence is the queue the hole's neighbours crossed: how far the
//! wireless hop's smoothed RTT sits above its minimum (the segments that
//! were acknowledged just before the loss queued right before the lost
//! one). That RTT is kept here, apart from the one that times local
//! retransmissions: it takes no sample from an ACK that fills a hole,
//! whose segments waited for the repair (a local round trip, or the
//! sender's whole path), not in the queue; counted as queueing, that wait
//! would make every later loss look like congestion. SACK blocks give it
//! samples while a hole stands (`sack.rs`). Two rules, either makes a
//! loss congestion:
//!
//! - The queue stands: past `STANDING_SACK` (or `STANDING_NO_SACK` for a
//!   host without SACK). A queue that deep holds about half the sender's
//!   window on a 100 ms path, so a cubic sender's backoff still keeps the
//!   hop busy, and a random loss then costs little; a tail-drop queue is
//!   deeper and overflows past it. With SACK the limit rises to three
//!   quarters of the deepest queue seen lately (up to `STANDING_MAX`): a
//!   deep tail-drop queue overflows near its top, and a radio loss below
//!   that is still repaired locally, so the sender is told no more often
//!   than it would be without Snoop.
//! - The queue is near the level at which it was last seen to overflow:
//!   a local copy that was lost as well (dup ACKs a whole round trip after
//!   it went) is what a full queue does, and that queue delay is
//!   remembered for `FULL_MEMORY`. This catches short queues that never
//!   reach the standing limit. The radio loses copies too, at its loss
//!   rate; so a lost copy counts only while copies are lost far more
//!   often than a radio would lose them (`COPY_LOSS_OVERFLOW`).
//!
//! Pure arithmetic on what the caller measured; the unit tests below
//! cover each rule.

use std::time::{Duration, Instant};

use super::rtt::RttEstimator;

/// A queue this deep toward a SACK host is congestion, whatever else.
pub const STANDING_SACK: Duration = Duration::from_millis(50);
/// The same for a host without SACK: the CoDel target mac80211 uses for
/// Wi-Fi stations (20 ms), past which CoDel starts dropping. Lower than
/// with SACK because without SACK local repair stalls the sender's ACK
/// clock: every dup ACK is held back until the copy has crossed the
/// queue, one hole after the other, and over a standing queue that stall
/// costs more than the sender's own fast recovery.
pub const STANDING_NO_SACK: Duration = Duration::from_millis(20);
/// The most the standing limit rises with a deep queue: past this the
/// queue itself is the problem, whatever its size.
const STANDING_MAX: Duration = Duration::from_millis(150);
/// The deepest queue is that of the last one to two of these windows.
const PEAK_WINDOW: Duration = Duration::from_secs(10);
/// Below this no queue is congested: the jitter of a radio hop (retries,
/// aggregation, the host's ACK timing).
const FLOOR: Duration = Duration::from_millis(5);
/// How long an observed overflow level stays evidence. A hop's queue
/// changes with its rate (a station moving away), so it is learned anew.
const FULL_MEMORY: Duration = Duration::from_secs(10);
/// Fixed-point one for the share of local copies lost.
const ONE: u16 = 1024;
/// A share of lost copies above this is a queue's doing, not the radio's:
/// a radio that loses a quarter of its frames is beyond what Snoop can
/// help anyway.
const COPY_LOSS_OVERFLOW: u16 = ONE / 4;
/// What a loss was, as far as Snoop can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossCause {
    /// Lost on the air: repair locally, keep the dup ACKs from the sender.
    Wireless,
    /// Dropped by a full queue: the sender must see it.
    Congestion,
}

/// Per-flow view of the hop's queue.
#[derive(Debug, Clone, Copy, Default)]
pub struct CongestionWatch {
    /// RTT of the wireless hop from ACKs that filled no hole.
    rtt: RttEstimator,
    /// Deepest queue delay of the current window, and when it began.
    peak: Option<(Duration, Instant)>,
    /// Deepest queue delay of the window before.
    peak_before: Duration,
    /// Queue delay at the last overflow seen, and when.
    full: Option<(Duration, Instant)>,
    /// Share of local copies lost as well, in `ONE`ths: a moving average
    /// over about the last sixteen copies.
    copies_lost: u16,
}

impl CongestionWatch {
    /// One RTT sample, from an ACK that filled no hole.
    pub fn sample(&mut self, rtt: Duration, now: Instant) {
        self.rtt.sample(rtt, now);
        let delay = self.queue_delay();
        self.peak = match self.peak {
            Some((p, start)) if now >= start + PEAK_WINDOW => {
                self.peak_before = p;
                Some((delay, now))
            }
            Some((p, start)) => Some((p.max(delay), start)),
            None => Some((delay, now)),
        };
    }

    /// The deepest queue delay of the last one to two windows.
    fn peak(&self) -> Duration {
        self.peak
            .map_or(Duration::ZERO, |(p, _)| p.max(self.peak_before))
    }

    /// The hop's queueing delay: smoothed RTT above its minimum.
    pub fn queue_delay(&self) -> Duration {
        self.rtt.queue_delay()
    }

    /// Classifies a new hole, from the hop's queue delay now and whether
    /// the host speaks SACK. Without SACK the delay is read from `acked`,
    /// the RTT of every ACK, repairs included: there it is the stall a
    /// local repair costs the sender's ACK clock that matters, and this
    /// view has no SACK samples to keep up with the queue anyway.
    pub fn classify(&self, sack: bool, acked: &RttEstimator, now: Instant) -> LossCause {
        let queue_delay = if sack {
            self.queue_delay()
        } else {
            acked.queue_delay()
        };
        self.classify_at(queue_delay, sack, now)
    }

    fn classify_at(&self, queue_delay: Duration, sack: bool, now: Instant) -> LossCause {
        let standing = if sack {
            (self.peak() * 3 / 4).clamp(STANDING_SACK, STANDING_MAX)
        } else {
            STANDING_NO_SACK
        };
        if queue_delay >= standing {
            return LossCause::Congestion;
        }
        if let Some(full) = self.full_level(now) {
            // Three quarters: the queue delay is smoothed, and a queue
            // that overflowed at its top overflows a little below it too
            // (a burst on top of a smoothed level).
            if queue_delay >= FLOOR && queue_delay >= full * 3 / 4 {
                return LossCause::Congestion;
            }
        }
        LossCause::Wireless
    }

    /// A local copy was lost too, at `queue_delay`. While copies are lost
    /// often, the queue was full there. A level within the radio's jitter
    /// says nothing and is ignored.
    pub fn copy_lost(&mut self, queue_delay: Duration, now: Instant) {
        self.copies_lost += (ONE - self.copies_lost) / 16;
        if self.copies_lost >= COPY_LOSS_OVERFLOW && queue_delay >= FLOOR {
            self.full = Some((queue_delay, now));
        }
    }

    /// A local copy reached the host.
    pub fn copy_delivered(&mut self) {
        self.copies_lost -= self.copies_lost / 16;
    }

    fn full_level(&self, now: Instant) -> Option<Duration> {
        let (level, at) = self.full?;
        (now < at + FULL_MEMORY).then_some(level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_queue_delay_is_the_rtt_above_its_minimum() {
        let mut w = CongestionWatch::default();
        let now = Instant::now();
        w.sample(ms(5), now);
        for _ in 0..60 {
            w.sample(ms(85), now);
        }
        assert!(w.queue_delay() > ms(75));
        let acked = RttEstimator::default();
        assert_eq!(w.classify(true, &acked, now), LossCause::Congestion);
        assert_eq!(w.classify(false, &acked, now), LossCause::Wireless);
    }

    #[test]
    fn a_short_queue_means_a_radio_loss() {
        let w = CongestionWatch::default();
        let now = Instant::now();
        assert_eq!(w.classify_at(ms(0), true, now), LossCause::Wireless);
        assert_eq!(w.classify_at(ms(30), true, now), LossCause::Wireless);
        assert_eq!(w.classify_at(ms(15), false, now), LossCause::Wireless);
    }

    #[test]
    fn a_standing_queue_means_congestion_sooner_without_sack() {
        let w = CongestionWatch::default();
        let now = Instant::now();
        assert_eq!(w.classify_at(ms(50), true, now), LossCause::Congestion);
        assert_eq!(w.classify_at(ms(95), true, now), LossCause::Congestion);
        assert_eq!(w.classify_at(ms(20), false, now), LossCause::Congestion);
        assert_eq!(w.classify_at(ms(49), true, now), LossCause::Wireless);
    }

    /// A watch that has seen most of its recent copies lost.
    fn losing_copies(w: &mut CongestionWatch, now: Instant) {
        for _ in 0..8 {
            w.copy_lost(ms(0), now);
        }
    }

    #[test]
    fn copies_lost_at_a_radios_rate_teach_nothing() {
        let mut w = CongestionWatch::default();
        let now = Instant::now();
        // One copy in ten lost, for a long while.
        for i in 0..1000 {
            if i % 10 == 0 {
                w.copy_lost(ms(30), now);
            } else {
                w.copy_delivered();
            }
        }
        assert_eq!(w.classify_at(ms(30), true, now), LossCause::Wireless);
        // A queue that drops most copies is learned within a few.
        for _ in 0..4 {
            w.copy_lost(ms(30), now);
        }
        assert_eq!(w.classify_at(ms(30), true, now), LossCause::Congestion);
    }

    #[test]
    fn below_the_top_of_a_deep_queue_a_loss_is_the_radios() {
        let mut w = CongestionWatch::default();
        let t0 = Instant::now();
        // A 5 ms hop whose queue once reached 100 ms.
        w.sample(ms(5), t0);
        for _ in 0..80 {
            w.sample(ms(105), t0);
        }
        for _ in 0..80 {
            w.sample(ms(65), t0);
        }
        let acked = RttEstimator::default();
        assert!(w.queue_delay() > STANDING_SACK);
        assert_eq!(w.classify(true, &acked, t0), LossCause::Wireless);
        for _ in 0..80 {
            w.sample(ms(90), t0);
        }
        assert_eq!(w.classify(true, &acked, t0), LossCause::Congestion);
        // Two windows on, that peak is forgotten.
        let later = t0 + PEAK_WINDOW * 2;
        for at in [t0 + PEAK_WINDOW, later] {
            w.sample(ms(5), at);
            for _ in 0..80 {
                w.sample(ms(65), at);
            }
        }
        assert_eq!(w.classify(true, &acked, later), LossCause::Congestion);
    }

    #[test]
    fn a_short_queue_seen_overflowing_is_congested_near_that_level() {
        let mut w = CongestionWatch::default();
        let t0 = Instant::now();
        losing_copies(&mut w, t0);
        w.copy_lost(ms(12), t0);
        assert_eq!(w.classify_at(ms(10), true, t0), LossCause::Congestion);
        assert_eq!(w.classify_at(ms(9), true, t0), LossCause::Congestion);
        assert_eq!(w.classify_at(ms(8), true, t0), LossCause::Wireless);
        // Forgotten after a while: the hop may have changed.
        assert_eq!(
            w.classify_at(ms(10), true, t0 + FULL_MEMORY),
            LossCause::Wireless
        );
    }

    #[test]
    fn an_overflow_within_the_radio_jitter_teaches_nothing() {
        let mut w = CongestionWatch::default();
        let now = Instant::now();
        losing_copies(&mut w, now);
        w.copy_lost(ms(2), now);
        assert_eq!(w.classify_at(ms(2), true, now), LossCause::Wireless);
        // Nor does a level learned above the floor make the floor count.
        w.copy_lost(ms(6), now);
        assert_eq!(w.classify_at(ms(4), true, now), LossCause::Wireless);
        assert_eq!(w.classify_at(ms(5), true, now), LossCause::Congestion);
    }
}
