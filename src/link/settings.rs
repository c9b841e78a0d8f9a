//! The link settings: the slow link's figures as the user gives them, and
//! the policy they put in force on the leg that crosses it (pacing,
//! congestion control, send buffer, the routes' initial window).

use std::time::Duration;

use super::tuning::{Congestion, LegOptions};
use crate::sys::socket;

/// Which leg of a split connection crosses the long link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkLeg {
    /// pepwrt in the router on the user's side of the link: the outgoing
    /// leg sends uploads over it.
    Server,
    /// pepwrt at the far end (a gateway): the intercepted leg sends
    /// downloads over it.
    Client,
}

impl LinkLeg {
    /// Of a connection's (client, server) pair, the one over the link:
    /// the one place that maps the setting to a leg.
    pub fn pick<T>(self, client: T, server: T) -> T {
        match self {
            LinkLeg::Server => server,
            LinkLeg::Client => client,
        }
    }

    pub fn name(self) -> &'static str {
        self.pick("client", "server")
    }
}

/// The slow link's figures as the user knows them (like SQM's settings),
/// named from the user's side: uplink is what the user sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub uplink_bps: Option<u64>,
    pub downlink_bps: Option<u64>,
    pub rtt: Duration,
    pub leg: LinkLeg,
}

/// What the link policy depends on in the system it runs on, read by the
/// caller. `System::default()`: nothing known, nothing assumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct System {
    /// The most send buffer autotuning gives a socket (tcp_wmem's third
    /// field).
    pub autotuning_ceiling_bytes: Option<u64>,
}

impl System {
    /// From the text of /proc/sys/net/ipv4/tcp_wmem: min, default, max.
    pub fn from_tcp_wmem(text: &str) -> System {
        System {
            autotuning_ceiling_bytes: text.split_whitespace().nth(2).and_then(|f| f.parse().ok()),
        }
    }
}

/// The link's figures as given on the command line or in UCI, before
/// they are checked: `settle` turns them into a `Link`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Figures {
    pub uplink_bps: Option<u64>,
    pub downlink_bps: Option<u64>,
    pub rtt: Option<Duration>,
    pub leg: Option<LinkLeg>,
}

impl Figures {
    /// Whether any figure is given: `--link-leg` alone changes nothing, so
    /// UCI may always pass it.
    pub fn given(&self) -> bool {
        self.uplink_bps.is_some() || self.downlink_bps.is_some() || self.rtt.is_some()
    }

    /// The leg that crosses the link: the server's unless told (the
    /// router), also without figures (it still decides a gateway's
    /// listener).
    pub fn leg(&self) -> LinkLeg {
        self.leg.unwrap_or(LinkLeg::Server)
    }

    /// The link they describe, or what is missing from the set.
    pub fn checked(&self) -> Result<Link, &'static str> {
        let rates = self.uplink_bps.is_some() || self.downlink_bps.is_some();
        match (rates, self.rtt) {
            (true, Some(rtt)) => Ok(Link {
                uplink_bps: self.uplink_bps,
                downlink_bps: self.downlink_bps,
                rtt,
                leg: self.leg(),
            }),
            (false, _) => Err("--rtt needs --uplink or --downlink (the link's rates)"),
            (true, None) => Err(
                "--uplink/--downlink need --rtt (the link's round-trip time, e.g. 600ms) to size the window",
            ),
        }
    }
}

/// Checks the figures and puts the link's policy in force on the leg that
/// crosses it (`legs`: the client's and the server's options as the user
/// gave them). Gives the link, and whether it chose BBR.
pub fn settle(
    figures: Figures,
    legs: (&mut LegOptions, &mut LegOptions),
    system: &System,
    two_ended: bool,
) -> Result<Option<(Link, bool)>, &'static str> {
    if !figures.given() {
        return Ok(None);
    }
    let link: Link = figures.checked()?;
    let long = link.leg.pick(legs.0, legs.1);
    let bbr_by_link = apply(&link, long, system, two_ended);
    Ok(Some((link, bbr_by_link)))
}

/// Link settings with at least this RTT choose BBR for the long leg.
const BBR_MIN_RTT: Duration = Duration::from_millis(200);

/// Segment size the window figures assume: a 1500-byte MTU with TCP
/// timestamps.
const LINK_MSS: u64 = 1448;

impl Link {
    /// The rate pepwrt sends at over the link, and the rate it receives.
    pub fn send_bps(&self) -> Option<u64> {
        self.leg.pick(self.downlink_bps, self.uplink_bps)
    }

    pub fn receive_bps(&self) -> Option<u64> {
        self.leg.pick(self.uplink_bps, self.downlink_bps)
    }

    /// A link long enough for BBR, and paced at exactly its rate.
    pub fn is_long(&self) -> bool {
        self.rtt >= BBR_MIN_RTT
    }

    /// Bandwidth-delay product in bytes.
    pub fn bdp_bytes(&self, bps: u64) -> u64 {
        // In 64 bits (128-bit division costs 2 KB on 32-bit MIPS): the
        // parser's bounds (100 Gbit/s, 10 s) keep the product below 10^18;
        // beyond them it saturates, and every caller clamps far below.
        let us = crate::duration::micros(self.rtt);
        let bits = (bps / 1_000_000)
            .saturating_mul(us)
            .saturating_add((bps % 1_000_000).saturating_mul(us) / 1_000_000);
        bits / 8
    }

    /// The BDP in full-sized segments, for a route's initial window: the
    /// long leg's first flight fills the link instead of probing from 10.
    pub fn window_segments(&self, bps: Option<u64>) -> Option<u32> {
        let bdp = self.bdp_bytes(bps?);
        Some(bdp.div_ceil(LINK_MSS).clamp(10, 65535) as u32)
    }

    /// Initial congestion window of the legs that send over the link.
    pub fn initcwnd(&self) -> Option<u32> {
        self.window_segments(self.send_bps())
    }

    /// Initial receive window of those legs' routes.
    pub fn initrwnd(&self) -> Option<u32> {
        self.window_segments(self.receive_bps())
    }

    /// Two BDPs in bytes, within what a socket buffer can take.
    fn two_bdp(&self, bps: u64) -> u32 {
        (2 * self.bdp_bytes(bps)).clamp(64 * 1024, 1 << 30) as u32
    }
}

/// The long leg's options (`long`, as the user gave them): paced at
/// the link's rate, and a send buffer of two BDPs (one in flight, one
/// to refill it while the first is acknowledged) unless the user set
/// one; with pepwrt at the far end (`two_ended`), a receive buffer of
/// two BDPs too. True when the link chose BBR (the user named none).
pub fn apply(link: &Link, long: &mut LegOptions, system: &System, two_ended: bool) -> bool {
    // BBR holds the link's rate through random loss (a 1 % loss GEO
    // link: 3.3x direct, cubic 2.6x) and also wins on a clean one, but
    // BBR (v1) caps its window at twice the smallest RTT it has seen:
    // where the RTT steps up, as at LEO handovers (40 to 100 ms), that
    // cap cuts its rate for seconds (LEO uploads 0.8x direct). So BBR
    // on long links, the kernel's default (cubic) on short ones,
    // unless the user chose.
    let bbr_by_link = long.congestion.is_none() && link.is_long();
    if bbr_by_link {
        long.congestion = Some(Congestion::Bbr);
    }
    let send = link.send_bps();
    let paced = socket::pacing_rate(send);
    if let (Some(bps), Some(rate)) = (send, paced) {
        // The cap is the link's rate on long links; short ones get half
        // as much again: after an outage or an RTT step (LEO handovers)
        // a leg capped near the link's rate cannot catch up. LEO 1 MB
        // uploads meeting a handover 0.3 / 0.4 / 0.5 s in, medians of 6
        // (direct 1.00 / 0.83 / 0.82 s): 1.0x 1.34 / 1.23 / 1.17 s,
        // 1.25x 1.11 / 0.84 / 0.82, 1.5x 0.99 / 0.80 / 0.79; 2x lost a
        // run in four at 0.4 and 0.5 s (1.13-1.22 s: slow start overran
        // the modem's queue). On a clean GEO link 1.25x cost 3 %.
        let headroom = if link.is_long() { 0 } else { rate / 2 };
        long.pacing_bytes_per_s = Some(rate + headroom);
        // Send buffer autotuning starts at two initial windows and
        // follows the RTT when it grows (queues, LEO handovers); a
        // fixed buffer would not. So it is fixed only where
        // autotuning's ceiling (tcp_wmem) cannot reach two BDPs.
        let two_bdp = link.two_bdp(bps);
        let ceiling = system.autotuning_ceiling_bytes;
        if ceiling.is_some_and(|max| max < u64::from(two_bdp)) {
            long.sndbuf_bytes.get_or_insert(two_bdp);
        }
    }
    // The receive buffer stays with autotuning. A fixed one of two
    // BDPs of the other direction lets the route's initrwnd act (the
    // kernel's 128 KB start holds the window back for several round
    // trips): with pepwrt at the far end too, which sends a BDP at
    // once, downloads then reach the link's limit (geo-clean: 1 MB
    // 3.52 -> 2.04 s, 10 MB 11.06 -> 9.57 s). But from a plain server
    // that window let its slow start overshoot the link's queue
    // (geo-clean 10 MB downloads 13.25 s against 12.42 s direct), so
    // it is for two-ended setups: a tunnel whose far end runs pepwrt
    // (--tunnel) sets it on long links; --server-rcvbuf on the router
    // or --client-rcvbuf on the gateway set it by hand. On short links
    // a fixed buffer cannot follow an RTT that grows (LEO handovers:
    // 1 MB uploads 0.93 s with it, 0.82 s autotuned).
    if two_ended
        && link.is_long()
        && let Some(bps) = link.receive_bps()
    {
        long.rcvbuf_bytes.get_or_insert(link.two_bdp(bps));
    }
    bbr_by_link
}

/// Initial congestion and receive windows (segments) for the routes the
/// long legs take: `--initcwnd` (`fixed`) as given, else one BDP of the
/// link.
pub fn route_windows(link: Option<Link>, fixed: Option<u16>) -> Option<(u32, u32)> {
    if let Some(iw) = fixed {
        return Some((u32::from(iw), u32::from(iw)));
    }
    let link = link?;
    let cwnd = link.initcwnd()?;
    Some((cwnd, link.initrwnd().unwrap_or(cwnd)))
}

/// What config hands the link for the daemon: the figures, the options in
/// force on the leg over the link, whether the link chose its BBR, and
/// the user's route window.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    pub link: Option<Link>,
    pub long: LegOptions,
    pub bbr_by_link: bool,
    pub initcwnd: Option<u16>,
}

/// What the link settings put in force, for `pepwrt status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInForce {
    pub link: Link,
    /// The long leg's send pacing and buffers.
    pub pacing_bytes_per_s: Option<u64>,
    pub sndbuf_bytes: Option<u32>,
    pub rcvbuf_bytes: Option<u32>,
    /// The initial window `pepwrt rules` gives the long legs' routes.
    pub route_initcwnd: Option<u32>,
}

impl LinkInForce {
    /// From the link, the options of the leg over it, and `--initcwnd`.
    pub fn new(link: Link, long: &LegOptions, initcwnd: Option<u16>) -> LinkInForce {
        LinkInForce {
            link,
            pacing_bytes_per_s: long.pacing_bytes_per_s,
            sndbuf_bytes: long.sndbuf_bytes,
            rcvbuf_bytes: long.rcvbuf_bytes,
            route_initcwnd: route_windows(Some(link), initcwnd).map(|(cwnd, _)| cwnd),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEO_UPLINK: Link = Link {
        uplink_bps: Some(10_000_000),
        downlink_bps: Some(50_000_000),
        rtt: Duration::from_millis(600),
        leg: LinkLeg::Server,
    };

    fn applied(link: Link, system: System) -> (LegOptions, bool) {
        let mut long = LegOptions::default();
        let bbr = apply(&link, &mut long, &system, false);
        (long, bbr)
    }

    #[test]
    fn the_long_leg_is_paced_at_the_link_rate_with_bbr() {
        assert_eq!(GEO_UPLINK.bdp_bytes(10_000_000), 750_000);
        assert_eq!(GEO_UPLINK.initcwnd(), Some(518));
        let (long, bbr_by_link) = applied(GEO_UPLINK, System::default());
        assert_eq!(long.pacing_bytes_per_s, Some(1_250_000));
        assert_eq!(long.congestion, Some(Congestion::Bbr));
        assert!(bbr_by_link);
        // The receive buffer is left to autotuning.
        assert_eq!(long.rcvbuf_bytes, None);
    }

    #[test]
    fn the_send_buffer_is_fixed_only_where_autotuning_cannot_reach_two_bdp() {
        let roomy = System {
            autotuning_ceiling_bytes: Some(4 << 20),
        };
        assert_eq!(applied(GEO_UPLINK, roomy).0.sndbuf_bytes, None);
        let tight = System {
            autotuning_ceiling_bytes: Some(1 << 20),
        };
        assert_eq!(applied(GEO_UPLINK, tight).0.sndbuf_bytes, Some(1_500_000));
        // Unknown: autotuning is left alone.
        assert_eq!(applied(GEO_UPLINK, System::default()).0.sndbuf_bytes, None);
    }

    #[test]
    fn a_short_link_keeps_the_kernels_congestion_control_with_headroom() {
        let short = Link {
            uplink_bps: Some(16_000_000),
            downlink_bps: None,
            rtt: Duration::from_millis(40),
            leg: LinkLeg::Server,
        };
        let (long, bbr_by_link) = applied(short, System::default());
        assert_eq!(long.congestion, None);
        assert_eq!(long.pacing_bytes_per_s, Some(3_000_000));
        assert!(!bbr_by_link);
    }

    #[test]
    fn a_named_congestion_control_is_kept() {
        let mut long = LegOptions {
            congestion: Some(Congestion::Cubic),
            ..LegOptions::default()
        };
        assert!(!apply(&GEO_UPLINK, &mut long, &System::default(), false));
        assert_eq!(long.congestion, Some(Congestion::Cubic));
    }

    #[test]
    fn with_pepwrt_at_the_far_end_a_long_leg_offers_two_bdp_at_once() {
        let mut long = LegOptions::default();
        apply(&GEO_UPLINK, &mut long, &System::default(), true);
        // Two BDPs of the downlink it receives: 50 Mbit/s x 600 ms x 2.
        assert_eq!(long.rcvbuf_bytes, Some(7_500_000));
        let leo = Link {
            rtt: Duration::from_millis(40),
            ..GEO_UPLINK
        };
        let mut short = LegOptions::default();
        apply(&leo, &mut short, &System::default(), true);
        assert_eq!(short.rcvbuf_bytes, None);
        let mut mine = LegOptions {
            rcvbuf_bytes: Some(1 << 20),
            ..LegOptions::default()
        };
        apply(&GEO_UPLINK, &mut mine, &System::default(), true);
        assert_eq!(mine.rcvbuf_bytes, Some(1 << 20));
    }

    #[test]
    fn the_leg_over_the_link_is_picked_in_one_place() {
        assert_eq!(LinkLeg::Server.pick(1, 2), 2);
        assert_eq!(LinkLeg::Client.pick(1, 2), 1);
        let gateway = Link {
            leg: LinkLeg::Client,
            ..GEO_UPLINK
        };
        assert_eq!(gateway.send_bps(), Some(50_000_000));
        assert_eq!(gateway.receive_bps(), Some(10_000_000));
    }

    #[test]
    fn an_explicit_initcwnd_wins_over_the_links_window() {
        assert_eq!(route_windows(Some(GEO_UPLINK), None), Some((518, 2590)));
        assert_eq!(route_windows(Some(GEO_UPLINK), Some(64)), Some((64, 64)));
        assert_eq!(route_windows(None, None), None);
    }

    #[test]
    fn link_figures_come_as_a_set() {
        let rates_only = Figures {
            uplink_bps: Some(8_000),
            ..Figures::default()
        };
        let e = rates_only.checked().unwrap_err();
        assert!(e.contains("need --rtt"), "{e}");
        let rtt_only = Figures {
            rtt: Some(Duration::from_millis(600)),
            ..Figures::default()
        };
        let e = rtt_only.checked().unwrap_err();
        assert!(e.contains("--rtt needs --uplink or --downlink"), "{e}");
        let leg_only = Figures {
            leg: Some(LinkLeg::Client),
            ..Figures::default()
        };
        assert!(!leg_only.given());
    }
}
