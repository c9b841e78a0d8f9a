//! The link's rate, shared between the long legs that are sending. With a
//! BDP-sized initial window each leg would start at the whole link's rate:
//! 32 legs opening at once (a web page's objects) would send 32 BDPs into
//! a queue that holds about one, and lose most of it. So every long leg's
//! pacing cap is the link's rate divided by the legs sending or just
//! opened; a leg whose queue went empty, or that closed, hands its share
//! back when the shares are next worked out: whenever legs open, and once
//! a link RTT while two or more legs are sending (at least every 20 ms, at
//! most every second; idle connections, however many, wake nothing: the
//! tick's sharing catches a leg that starts sending again). A page's legs
//! finish at different times, and the last ones would otherwise keep a
//! 32nd of the link after the others are done (LEO, two pepwrts: 32
//! downloads of 50 KB 0.32 s against 0.25 s direct when shares were
//! worked out once a second and a leg counted as sending for 2 s after
//! it opened). The legs are the pool's live
//! connections: nothing is tracked beside them.

use std::time::{Duration, Instant};

use std::os::fd::RawFd;

use super::settings::Link;
use super::tuning::LegOptions;
use crate::sys::socket;

/// A leg counts as sending for two link RTTs after it opened (within
/// these bounds), whatever its queue says: legs that open together have
/// not queued anything yet when the next one opens, and a leg's first
/// bytes come within about a round trip (the request, then the reply).
const YOUNG_MIN: Duration = Duration::from_millis(100);
const YOUNG_MAX: Duration = Duration::from_secs(2);

/// Shares are worked out again once a link RTT, within these bounds.
const PERIOD_MIN: Duration = Duration::from_millis(20);
const PERIOD_MAX: Duration = Duration::from_secs(1);

/// Never below this, so no leg stalls (bytes per second).
const FLOOR: u64 = 8_000;

pub struct LinkShare {
    /// A lone leg's pacing cap (bytes per second): the link's rate, plus
    /// headroom on short links (settings.rs).
    rate: u64,
    /// The link's rate in the long legs' direction (bytes per second):
    /// what legs sending together divide. The headroom is for one leg
    /// catching up after an outage; split among a page's legs, each of
    /// which sends its first ten segments unpaced (the kernel paces from
    /// the eleventh), it overflowed a LEO link's queue (two pepwrts, 32
    /// downloads: 57-137 segments retransmitted per page, none direct).
    link_rate: u64,
    young: Duration,
    period: Duration,
    /// When the shares are next due, while two or more legs are sending.
    due: Option<Instant>,
}

impl LinkShare {
    /// Sharing applies where link settings pace the long leg (`long`).
    pub fn new(link: Link, long: &LegOptions) -> Option<LinkShare> {
        let rate = long.pacing_bytes_per_s?;
        Some(LinkShare {
            rate,
            link_rate: socket::pacing_rate(link.send_bps()).map_or(rate, |r| r.min(rate)),
            young: (2 * link.rtt).clamp(YOUNG_MIN, YOUNG_MAX),
            period: link.rtt.clamp(PERIOD_MIN, PERIOD_MAX),
            due: None,
        })
    }

    /// When the event loop should next call `on_timer`: None while fewer
    /// than two legs are sending (one leg has the whole rate).
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The shares are due to be worked out again.
    pub fn is_due(&self, now: Instant) -> bool {
        self.due.is_some_and(|due| now >= due)
    }

    /// Whether a long leg (`fd`, opened at `opened`) counts as sending.
    pub fn is_sending(&self, opened: Instant, fd: RawFd, now: Instant) -> bool {
        now.saturating_duration_since(opened) < self.young
            || socket::unsent_bytes(fd).is_ok_and(|n| n > 0)
    }

    /// Each long leg's pacing cap with `sending` legs sending; sets when
    /// the shares are due next.
    pub fn share_out(&mut self, sending: usize, now: Instant) -> u32 {
        self.due = (sending >= 2).then(|| now + self.period);
        if sending <= 1 {
            share_of(self.rate, 1)
        } else {
            share_of(self.link_rate, sending)
        }
    }
}

/// One leg's share of `rate` among `n` legs sending, in the kernel's
/// 32-bit form.
pub fn share_of(rate: u64, n: usize) -> u32 {
    let n = n.max(1) as u64;
    (rate / n).clamp(FLOOR, u64::from(u32::MAX >> 1)) as u32
}
