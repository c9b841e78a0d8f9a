//! What happens to one frame on one direction of the link: queue
//! admission, serialization, loss and the time it comes out the far
//! end. Pure (time is passed in) so it is tested without sockets.

use crate::rng::Rng;
use crate::spec::Spec;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Verdict {
    /// Deliver at this monotonic time (ns).
    Deliver(u64),
    Lost,
    QueueFull,
    Outage,
}

/// The start of the event cycle (two periods) that `now` falls in.
pub fn cycle_start(now: u64, period_ns: u64) -> u64 {
    match period_ns {
        0 => now,
        p => now - now % (2 * p),
    }
}

pub struct Link {
    spec: Spec,
    rng: Rng,
    /// Time zero for scheduled events: a multiple of two periods (one
    /// whole step-off/step-on cycle) on the monotonic clock, so both
    /// directions share one schedule and a benchmark can start its runs at
    /// the same phase of it (see `cycle_start`).
    epoch: u64,
    /// When the transmitter finishes the frames already accepted.
    busy_until: u64,
    /// Delivery times never go backwards: jitter must not reorder.
    last_delivery: u64,
    in_bad_state: bool,
}

impl Link {
    pub fn new(spec: Spec, seed: u64, now: u64) -> Link {
        Link {
            epoch: cycle_start(now, spec.period_ns),
            spec,
            rng: Rng::new(seed),
            busy_until: now,
            last_delivery: now,
            in_bad_state: false,
        }
    }

    fn serialization_ns(&self, len: usize) -> u64 {
        if self.spec.rate_bps == 0 {
            return 0;
        }
        (len as u128 * 8 * 1_000_000_000 / self.spec.rate_bps as u128) as u64
    }

    /// Bytes still waiting to be serialized at `now`.
    pub fn backlog_bytes(&self, now: u64) -> u64 {
        let pending = self.busy_until.saturating_sub(now) as u128;
        (pending * self.spec.rate_bps as u128 / 8_000_000_000) as u64
    }

    /// The scheduled-event phase: (link down?, extra delay).
    fn events(&self, at: u64) -> (bool, u64) {
        let period = self.spec.period_ns;
        if period == 0 {
            return (false, 0);
        }
        let t = at.saturating_sub(self.epoch);
        let down = t >= period && t % period < self.spec.outage_ns;
        let extra = if (t / period) % 2 == 1 {
            self.spec.step_ns
        } else {
            0
        };
        (down, extra)
    }

    fn lose(&mut self) -> bool {
        let bursty = match self.spec.gilbert {
            Some(ge) => {
                let flip = if self.in_bad_state {
                    ge.p_bad_to_good
                } else {
                    ge.p_good_to_bad
                };
                if self.rng.chance(flip) {
                    self.in_bad_state = !self.in_bad_state;
                }
                self.rng.chance(if self.in_bad_state {
                    ge.loss_bad
                } else {
                    ge.loss_good
                })
            }
            None => false,
        };
        let random = self.rng.chance(self.spec.loss);
        bursty || random
    }

    fn jitter(&mut self) -> i64 {
        let j = self.spec.jitter_ns;
        if j == 0 {
            return 0;
        }
        (self.rng.next_u64() % (2 * j + 1)) as i64 - j as i64
    }

    /// Restarts the random stream (loss, jitter, the bursty-loss state)
    /// from `seed`; queue and delay line are left as they are.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
        self.in_bad_state = false;
    }

    /// Accepts a frame of `len` bytes arriving at `now`.
    pub fn admit(&mut self, now: u64, len: usize) -> Verdict {
        if self.events(now).0 {
            return Verdict::Outage;
        }
        if self.spec.rate_bps > 0 && self.backlog_bytes(now) + len as u64 > self.spec.limit_bytes {
            return Verdict::QueueFull;
        }
        // A frame lost on the medium still took its time on the wire.
        let sent = self.busy_until.max(now) + self.serialization_ns(len);
        self.busy_until = sent;
        if self.lose() {
            return Verdict::Lost;
        }
        let delay = (self.spec.delay_ns + self.events(sent).1) as i64 + self.jitter();
        let at = (sent + delay.max(0) as u64).max(self.last_delivery);
        self.last_delivery = at;
        Verdict::Deliver(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn link(text: &str) -> Link {
        Link::new(Spec::parse(text).unwrap(), 1, 0)
    }

    #[test]
    fn rate_and_delay_add_up() {
        let mut l = link("rate=8mbit,delay=10ms");
        // 1000 bytes at 8 Mbit/s = 1 ms each, back to back.
        assert_eq!(l.admit(0, 1000), Verdict::Deliver(11 * MS));
        assert_eq!(l.admit(0, 1000), Verdict::Deliver(12 * MS));
        assert_eq!(l.admit(5 * MS, 1000), Verdict::Deliver(16 * MS));
    }

    #[test]
    fn queue_limit_drops_tail() {
        let mut l = link("rate=8mbit,limit=3000");
        let verdicts: Vec<_> = (0..5).map(|_| l.admit(0, 1000)).collect();
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| **v == Verdict::QueueFull)
                .count(),
            2
        );
        assert!(matches!(l.admit(3 * MS, 1000), Verdict::Deliver(_)));
    }

    #[test]
    fn loss_rate_matches_and_bursts_cluster() {
        let mut l = link("loss=2%");
        let lost = (0..100_000)
            .filter(|_| l.admit(0, 100) == Verdict::Lost)
            .count();
        assert!((1_800..2_200).contains(&lost), "{lost}");
        // Bad state 1/(1%+10%) of the time, losing all: ~9.1%.
        let mut g = link("ge=1%/10%/100%");
        let seq: Vec<bool> = (0..100_000)
            .map(|_| g.admit(0, 100) == Verdict::Lost)
            .collect();
        let lost = seq.iter().filter(|x| **x).count();
        assert!((8_000..10_200).contains(&lost), "{lost}");
        let runs = seq.windows(2).filter(|w| w[0] && !w[1]).count();
        assert!(
            lost / runs.max(1) >= 5,
            "bursts average {} frames",
            lost / runs.max(1)
        );
    }

    #[test]
    fn reseeding_replays_the_same_losses() {
        let losses = |l: &mut Link| -> Vec<bool> {
            (0..2_000)
                .map(|_| l.admit(0, 100) == Verdict::Lost)
                .collect()
        };
        let mut l = link("loss=5%,ge=1%/25%/50%");
        let first = losses(&mut l);
        let other = losses(&mut l);
        l.reseed(1);
        assert_eq!(losses(&mut l), first);
        assert_ne!(first, other);
    }

    #[test]
    fn jitter_never_reorders() {
        let mut l = link("delay=20ms,jitter=10ms");
        let mut last = 0;
        for i in 0..10_000 {
            let Verdict::Deliver(at) = l.admit(i * 10_000, 100) else {
                panic!()
            };
            assert!(at >= last && at >= i * 10_000 + 10 * MS && at <= i * 10_000 + 30 * MS);
            last = at;
        }
    }

    #[test]
    fn events_step_delay_and_cut_the_link() {
        let mut l = link("delay=20ms,period=15s,step=60ms,outage=100ms");
        assert_eq!(l.admit(MS, 100), Verdict::Deliver(21 * MS));
        assert_eq!(l.admit(15_000 * MS + MS, 100), Verdict::Outage);
        assert_eq!(l.admit(15_200 * MS, 100), Verdict::Deliver(15_280 * MS));
        assert_eq!(l.admit(30_200 * MS, 100), Verdict::Deliver(30_220 * MS));
    }

    #[test]
    fn events_follow_the_clock_not_the_start() {
        // Started 5 s into a cycle: the step still comes at 15 s of it.
        let spec = Spec::parse("delay=20ms,period=15s,step=60ms").unwrap();
        let cycle = 300_000 * MS;
        let mut l = Link::new(spec, 1, cycle + 5_000 * MS);
        let at = cycle + 15_200 * MS;
        assert_eq!(l.admit(at, 100), Verdict::Deliver(at + 80 * MS));
    }
}
