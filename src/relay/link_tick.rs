//! What the link settings do while connections run, as the loop sees it:
//! a few events (legs opened, the one-second tick, the share's own timer),
//! each answered with when the link next needs the loop. Behind them: the
//! link's rate shared between long legs (share.rs), the BBR-to-cubic
//! handover (window.rs), the RTT-probe skip (rtt_probe.rs) and what the
//! long legs measured (learn.rs).

use std::time::Instant;

use super::{Conn, Handover, LinkShare, ProbeSkip};
use crate::config::{Config, LinkLeg};
use crate::learn::{Estimate, LinkEstimate};
use crate::pool::Pool;
use crate::sys::socket;

pub struct LinkTick {
    /// The link's rate shared between long legs, with link settings.
    share: Option<LinkShare>,
    /// Hands long legs held back by the peer's window from BBR to cubic.
    handover: Option<Handover>,
    /// Keeps paced BBR long legs from idling for BBR's RTT probe.
    probe_skip: Option<ProbeSkip>,
    /// Which leg crosses the long link, and what those legs measured.
    long_leg: LinkLeg,
    learned: LinkEstimate,
}

/// What one tick did, for the counters, and when the link next needs the
/// loop.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkTicked {
    pub handed_to_cubic: u64,
    pub rtt_probes_skipped: u64,
    pub due: Option<Instant>,
}

impl LinkTick {
    pub fn new(cfg: &Config) -> LinkTick {
        LinkTick {
            share: LinkShare::new(cfg),
            handover: Handover::new(cfg),
            probe_skip: ProbeSkip::new(cfg),
            long_leg: cfg.link.map_or(LinkLeg::Server, |l| l.leg),
            learned: LinkEstimate::default(),
        }
    }

    /// The link as the long legs measured it, once they have.
    pub fn estimate(&self) -> Option<Estimate> {
        self.learned.estimate()
    }

    /// When the link next needs the loop (besides the tick).
    pub fn due(&self) -> Option<Instant> {
        self.share.as_ref().and_then(LinkShare::due)
    }

    /// New legs opened: the rate is shared out again.
    pub fn opened(&mut self, pool: &mut Pool<Conn>, now: Instant) -> Option<Instant> {
        if let Some(share) = &mut self.share {
            share.apply(pool, now);
        }
        self.due()
    }

    /// The link's own deadline came.
    pub fn on_timer(&mut self, pool: &mut Pool<Conn>, now: Instant) -> Option<Instant> {
        if let Some(share) = &mut self.share {
            share.on_timer(pool, now);
        }
        self.due()
    }

    /// Once a tick: the rate is shared out again, and each live
    /// connection's leg over the long link is looked at: what it measured
    /// feeds the link estimate, a leg the peer's window holds back may
    /// leave BBR (window.rs), and a paced BBR leg starts its BBR afresh
    /// before the RTT probe is due (rtt_probe.rs).
    pub fn tick(&mut self, pool: &mut Pool<Conn>, now: Instant) -> LinkTicked {
        let mut done = LinkTicked {
            due: self.opened(pool, now),
            ..LinkTicked::default()
        };
        let mut cursor = 0;
        while let Some(id) = pool.next_active(&mut cursor) {
            let Some(live) = pool.live(id) else {
                continue;
            };
            let fd = live.conn.link_fd(self.long_leg);
            let Ok(Some(info)) = socket::leg_info(fd) else {
                continue;
            };
            self.learned.observe(&info, now);
            if let Some(handover) = &self.handover
                && handover.look(live.conn, fd, info)
            {
                done.handed_to_cubic += 1;
            }
            if let Some(skip) = &self.probe_skip
                && skip.look(live.conn, fd, now)
            {
                done.rtt_probes_skipped += 1;
            }
        }
        done
    }
}
