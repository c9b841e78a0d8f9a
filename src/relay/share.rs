//! The link's rate, shared between the long legs that are sending. With a
//! BDP-sized initial window each leg would start at the whole link's rate:
//! 32 legs opening at once (a web page's objects) would send 32 BDPs into
//! a queue that holds about one, and lose most of it. So every long leg's
//! pacing cap is the link's rate divided by the legs sending or just
//! opened; a leg whose queue went empty, or that closed, hands its share
//! back when the shares are next worked out (each tick, and whenever legs
//! open). The legs are the pool's live connections: nothing is tracked
//! beside them.

use std::time::{Duration, Instant};

use super::Conn;
use crate::config::{Config, LinkLeg};
use crate::pool::Pool;
use crate::sys::socket;

/// A leg counts as sending for this long after it opened, whatever its
/// queue says: legs that open together have not queued anything yet when
/// the next one opens.
const YOUNG: Duration = Duration::from_secs(2);

/// Never below this, so no leg stalls (bytes per second).
const FLOOR: u64 = 8_000;

pub struct LinkShare {
    /// Bytes per second over the link, in the long legs' direction.
    rate: u64,
    leg: LinkLeg,
}

impl LinkShare {
    /// Sharing applies where link settings pace a leg.
    pub fn new(cfg: &Config) -> Option<LinkShare> {
        let leg = cfg.link?.leg;
        let options = match leg {
            LinkLeg::Server => &cfg.server_leg,
            LinkLeg::Client => &cfg.client_leg,
        };
        Some(LinkShare {
            rate: options.pacing_bytes_per_s?,
            leg,
        })
    }

    /// Gives every live connection's long leg its share of the rate.
    pub fn apply(&self, pool: &mut Pool<Conn>, now: Instant) {
        let sending = pool
            .active()
            .filter(|(_, c)| {
                now.saturating_duration_since(c.started) < YOUNG
                    || socket::unsent_bytes(c.link_fd(self.leg)).is_ok_and(|n| n > 0)
            })
            .count();
        let each = share_of(self.rate, sending);
        let mut cursor = 0;
        while let Some(id) = pool.next_active(&mut cursor) {
            if let Some(live) = pool.live(id) {
                live.conn.cap_link_rate(self.leg, each);
            }
        }
    }
}

/// One leg's share of `rate` among `n` legs sending, in the kernel's
/// 32-bit form.
pub fn share_of(rate: u64, n: usize) -> u32 {
    let n = n.max(1) as u64;
    (rate / n).clamp(FLOOR, u64::from(u32::MAX >> 1)) as u32
}
