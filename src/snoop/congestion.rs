//! Congestion or radio? A hole the host's duplicate ACKs show was either
//! lost on the air, which Snoop repairs locally and hides from the sender,
//! or dropped by a full queue on the way to the host, which is congestion:
//! the sender must hear of it and back off, or it keeps the queue full
//! and every repaired drop is followed by the next.
//!
//! The evidence is the queue the hole's neighbours crossed: how far the
//! wireless hop's RTT sits above its base. As in CoDel, the smallest RTT
//! of the last interval (`INTERVAL`) tells a standing queue from a burst:
//! a burst, a delayed ACK or a radio retry raises some samples, a queue
//! that stands raises all of them. The base is the smallest RTT of the
//! last 10 to 20 s. Samples come from ACKs that fill no hole (those
//! covering a repaired hole waited for the repair, not in the queue) and
//! from SACK blocks, which tell when each segment arrived while a hole
//! holds the cumulative ACK (`sack.rs`). Three rules, any makes a loss
//! congestion:
//!
//! - The hole's neighbour crossed the queue at its top (SACK hosts): the
//!   segment a dup ACK SACKs first arrived right behind the lost one, and
//!   a tail-drop queue drops only when it is full. If that segment's queue
//!   delay is within an eighth of the deepest queue seen lately, the hole
//!   fell into a full queue. This catches a short queue (64 KB at
//!   10 Mbit/s holds 52 ms, never past the standing limit below), whose
//!   drops Snoop otherwise repaired one overflow after another while the
//!   sender never backed off. A queue that has never been deeper than now
//!   counts as full: taking a radio loss there for congestion costs one
//!   backoff of a sender that fills the queue anyway.
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
//!   a local copy that was lost as well (the host SACKed data sent after
//!   it) is what a full queue does, and that queue delay is
//!   remembered for `FULL_MEMORY`. This catches short queues that never
//!   reach the standing limit. The radio loses copies too, at its loss
//!   rate; so a lost copy counts only while copies are lost far more
//!   often than a radio would lose them (`COPY_LOSS_OVERFLOW`).
//!
//! Time is passed in, nothing allocates; the unit tests below cover each
//! rule.

use std::time::{Duration, Instant};

use super::rtt::RttEstimator;
use crate::duration::LikeDebug;

/// The smallest sample of the last one to two windows.
#[derive(Debug, Clone, Copy)]
struct WindowedMin {
    window: Duration,
    /// Smallest sample of the current window, and when the window began.
    current: Option<(Duration, Instant)>,
    /// Smallest sample of the window before.
    before: Option<Duration>,
}

impl WindowedMin {
    const fn new(window: Duration) -> WindowedMin {
        WindowedMin {
            window,
            current: None,
            before: None,
        }
    }

    fn sample(&mut self, value: Duration, now: Instant) {
        self.current = match self.current {
            Some((m, start)) if now >= start + self.window => {
                self.before = Some(m);
                Some((value, now))
            }
            Some((m, start)) => Some((m.min(value), start)),
            None => Some((value, now)),
        };
    }

    /// `None` once no sample came for two windows: old evidence of a
    /// queue is no evidence.
    fn get(&self, now: Instant) -> Option<Duration> {
        let (m, start) = self.current?;
        if now >= start + self.window * 2 {
            return None;
        }
        Some(self.before.map_or(m, |b| b.min(m)))
    }
}

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
/// A queue stands if it stays for this long (CoDel's interval).
const INTERVAL: Duration = Duration::from_millis(100);
/// The hop's base RTT is the smallest of the last one to two of these: a
/// hop that got slower for good (a station moving away) sets a new base,
/// a queue standing for a few seconds does not.
const BASE_WINDOW: Duration = Duration::from_secs(10);
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
#[derive(Debug, Clone, Copy)]
pub struct CongestionWatch {
    /// The hop's base RTT.
    base: WindowedMin,
    /// The smallest RTT of the last interval.
    recent: WindowedMin,
    /// Deepest queue delay of the current window, and when it began.
    peak: Option<(Duration, Instant)>,
    /// Deepest queue delay of the window before.
    peak_before: Duration,
    /// Queue delay at the last overflow seen, and when.
    full: Option<(Duration, Instant)>,
    /// Share of local copies lost as well, in `ONE`ths: a moving average
    /// over about the last sixteen copies.
    copies_lost: u16,
    /// The RTT of the segment a SACK named first, and when: on a dup ACK,
    /// the segment that arrived right behind the hole.
    neighbour: Option<(Duration, Instant)>,
}

impl Default for CongestionWatch {
    fn default() -> CongestionWatch {
        CongestionWatch {
            base: WindowedMin::new(BASE_WINDOW),
            recent: WindowedMin::new(INTERVAL),
            peak: None,
            peak_before: Duration::ZERO,
            full: None,
            copies_lost: 0,
            neighbour: None,
        }
    }
}

impl CongestionWatch {
    /// One RTT sample: from an ACK that filled no hole, or from a SACK.
    pub fn sample(&mut self, rtt: Duration, now: Instant) {
        self.base.sample(rtt, now);
        self.recent.sample(rtt, now);
        let delay = self.queue_delay(now);
        self.peak = match self.peak {
            Some((p, start)) if now >= start + PEAK_WINDOW => {
                self.peak_before = p;
                Some((delay, now))
            }
            Some((p, start)) => Some((p.max(delay), start)),
            None => Some((delay, now)),
        };
    }

    /// One RTT sample from a SACK block: the youngest segment it named
    /// for the first time.
    pub fn sample_sacked(&mut self, rtt: Duration, now: Instant) {
        self.sample(rtt, now);
        self.neighbour = Some((rtt, now));
    }

    /// The deepest queue delay of the last one to two windows.
    fn peak(&self) -> Duration {
        self.peak
            .map_or(Duration::ZERO, |(p, _)| p.max(self.peak_before))
    }

    /// The hop's standing queue: the smallest RTT of the last interval
    /// above the base; zero without recent samples.
    pub fn queue_delay(&self, now: Instant) -> Duration {
        match (self.recent.get(now), self.base.get(now)) {
            (Some(recent), Some(base)) => recent.saturating_sub(base),
            _ => Duration::ZERO,
        }
    }

    /// Classifies a new hole, from the hop's queue delay now and whether
    /// the host speaks SACK. Without SACK the delay is read from `acked`,
    /// the RTT of every ACK, repairs included: there it is the stall a
    /// local repair costs the sender's ACK clock that matters, and this
    /// view has no SACK samples to keep up with the queue anyway.
    pub fn classify(&self, sack: bool, acked: &RttEstimator, now: Instant) -> LossCause {
        if sack && self.neighbour_at_top(now) {
            return LossCause::Congestion;
        }
        let queue_delay = if sack {
            self.queue_delay(now)
        } else {
            acked.queue_delay()
        };
        self.classify_at(queue_delay, sack, now)
    }

    /// Whether the ACK being handled (the same `now`) SACKed a segment
    /// that crossed the queue at its deepest: 7/8 of the peak, on a queue
    /// deep enough to tell from the radio's jitter.
    fn neighbour_at_top(&self, now: Instant) -> bool {
        self.neighbour
            .is_some_and(|(rtt, at)| at == now && self.crossed_at_top(rtt, now))
    }

    /// Whether a segment that took `rtt` to be SACKed crossed the queue
    /// at its deepest: within an eighth of the peak, on a queue deep
    /// enough to tell from the radio's jitter. The segment right behind a
    /// hole that did is taken for a tail drop's neighbour (a tail-drop
    /// queue drops only when full).
    pub fn crossed_at_top(&self, rtt: Duration, now: Instant) -> bool {
        let Some(base) = self.base.get(now) else {
            return false;
        };
        let peak = self.peak();
        peak >= FLOOR * 2 && rtt.saturating_sub(base) >= peak * 7 / 8
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
            // Three quarters: the queue delay is an interval's minimum,
            // so a queue overflows with its minimum a little below the
            // level seen at the last overflow (a burst on top).
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

    /// What the rules weigh besides the queue delay, for the debug log.
    /// (A derived `Debug` of the watch printed raw `Instant`s, and cost
    /// 3.5 KB of the MIPS binary.)
    pub fn evidence(&self, now: Instant) -> Evidence {
        Evidence {
            peak: self.peak(),
            full: self.full_level(now),
            copies_lost: self.copies_lost,
        }
    }
}

/// See [`CongestionWatch::evidence`].
pub struct Evidence {
    peak: Duration,
    full: Option<Duration>,
    copies_lost: u16,
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "peak {}, overflow at {}, copies lost {}/{ONE}",
            LikeDebug(self.peak),
            LikeDebug(self.full),
            self.copies_lost
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Samples of `rtt` every millisecond for `span` from `*t`, which
    /// moves on.
    fn feed(w: &mut CongestionWatch, rtt: Duration, span: Duration, t: &mut Instant) {
        let end = *t + span;
        while *t < end {
            w.sample(rtt, *t);
            *t += ms(1);
        }
    }

    #[test]
    fn a_queue_that_stands_for_an_interval_is_congestion_a_burst_is_not() {
        let mut w = CongestionWatch::default();
        let acked = RttEstimator::default();
        let mut t = Instant::now();
        feed(&mut w, ms(5), ms(50), &mut t);
        // Every other sample late (a burst, delayed ACKs): the interval's
        // smallest RTT stays at the base.
        for _ in 0..300 {
            w.sample(ms(90), t);
            w.sample(ms(6), t);
            t += ms(1);
        }
        assert!(w.queue_delay(t) < ms(2));
        assert_eq!(w.classify(true, &acked, t), LossCause::Wireless);
        // A queue that stays.
        feed(&mut w, ms(85), ms(250), &mut t);
        assert!(w.queue_delay(t) >= ms(79));
        assert_eq!(w.classify(true, &acked, t), LossCause::Congestion);
        // Without SACK the other view decides (here: nothing measured).
        assert_eq!(w.classify(false, &acked, t), LossCause::Wireless);
        // Without samples for two intervals the evidence is gone.
        assert_eq!(w.queue_delay(t + INTERVAL * 2), Duration::ZERO);
    }

    /// A watch fed with each (RTT, for how long) in turn, and the time
    /// after the last.
    fn fed(steps: &[(u64, u64)]) -> (CongestionWatch, Instant) {
        let mut w = CongestionWatch::default();
        let mut t = Instant::now();
        for &(rtt, span) in steps {
            feed(&mut w, ms(rtt), ms(span), &mut t);
        }
        (w, t)
    }

    #[test]
    fn a_hole_whose_neighbour_crossed_a_full_queue_is_congestion() {
        let acked = RttEstimator::default();
        // A 10 ms hop whose short queue fills to 40 ms, then drains to 25.
        let (mut w, t) = fed(&[(10, 50), (50, 300), (35, 300)]);
        assert_eq!(w.classify(true, &acked, t), LossCause::Wireless);
        // A dup ACK SACKs a segment that waited 36 ms: the queue at its top.
        w.sample_sacked(ms(46), t);
        assert_eq!(w.classify(true, &acked, t), LossCause::Congestion);
        // Not an ACK later: that sample is not the next hole's neighbour.
        assert_eq!(w.classify(true, &acked, t + ms(1)), LossCause::Wireless);
        // A neighbour that found the queue half full: a radio loss.
        w.sample_sacked(ms(30), t);
        assert_eq!(w.classify(true, &acked, t), LossCause::Wireless);
        // Without SACK there is no neighbour to ask.
        w.sample_sacked(ms(50), t);
        assert_eq!(w.classify(false, &acked, t), LossCause::Wireless);
    }

    #[test]
    fn a_neighbour_within_the_radio_jitter_says_nothing() {
        let acked = RttEstimator::default();
        // The deepest queue was 8 ms: jitter, not a queue to overflow.
        let (mut w, t) = fed(&[(10, 50), (18, 300)]);
        w.sample_sacked(ms(18), t);
        assert_eq!(w.classify(true, &acked, t), LossCause::Wireless);
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
        let acked = RttEstimator::default();
        let t0 = Instant::now();
        let mut t = t0;
        // A 5 ms hop whose queue once reached 100 ms.
        feed(&mut w, ms(5), ms(50), &mut t);
        feed(&mut w, ms(105), ms(300), &mut t);
        feed(&mut w, ms(65), ms(300), &mut t);
        assert!(w.queue_delay(t) > STANDING_SACK);
        assert_eq!(w.classify(true, &acked, t), LossCause::Wireless);
        feed(&mut w, ms(90), ms(300), &mut t);
        assert_eq!(w.classify(true, &acked, t), LossCause::Congestion);
        // Two windows on, that peak is forgotten.
        for k in 1..=2 {
            t = t0 + PEAK_WINDOW * k;
            feed(&mut w, ms(5), ms(50), &mut t);
            feed(&mut w, ms(65), ms(300), &mut t);
        }
        assert_eq!(w.classify(true, &acked, t), LossCause::Congestion);
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
