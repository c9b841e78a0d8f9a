//! The link settings: the slow link's figures as the user gives them, and
//! the policy they put in force on the leg that crosses it (pacing,
//! congestion control, send buffer, the routes' initial window).
//!
//! Kept in one file, apart from the parser, so that the link's code can
//! move on its own; what it needs from the system comes in `System`.

use std::time::Duration;

use super::System;
use super::model::{Config, ConfigError, LegOptions, err};

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

/// The slow link's figures as the user knows them (like SQM's settings),
/// named from the user's side: uplink is what the user sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub uplink_bps: Option<u64>,
    pub downlink_bps: Option<u64>,
    pub rtt: Duration,
    pub leg: LinkLeg,
}

/// Link settings with at least this RTT choose BBR for the long leg.
const BBR_MIN_RTT: Duration = Duration::from_millis(200);

/// Segment size the window figures assume: a 1500-byte MTU with TCP
/// timestamps.
const LINK_MSS: u64 = 1448;

impl Link {
    /// The rate pepwrt sends at over the link, and the rate it receives.
    pub fn send_bps(&self) -> Option<u64> {
        match self.leg {
            LinkLeg::Server => self.uplink_bps,
            LinkLeg::Client => self.downlink_bps,
        }
    }

    pub fn receive_bps(&self) -> Option<u64> {
        match self.leg {
            LinkLeg::Server => self.downlink_bps,
            LinkLeg::Client => self.uplink_bps,
        }
    }

    /// A link long enough for BBR, and paced at exactly its rate.
    pub fn is_long(&self) -> bool {
        self.rtt >= BBR_MIN_RTT
    }

    /// Bandwidth-delay product in bytes.
    pub fn bdp_bytes(&self, bps: u64) -> u64 {
        let bits = u128::from(bps) * self.rtt.as_micros() / 1_000_000;
        (bits / 8).min(u128::from(u64::MAX)) as u64
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

    /// The long leg's options: paced at the link's rate, and a send
    /// buffer of two BDPs (one in flight, one to refill it while the
    /// first is acknowledged) unless the user set one.
    pub(super) fn apply(&self, cfg: &mut Config, system: &System) {
        let leg = match self.leg {
            LinkLeg::Server => &mut cfg.server_leg,
            LinkLeg::Client => &mut cfg.client_leg,
        };
        // BBR holds the link's rate through random loss (a 1 % loss GEO
        // link: 3.3x direct, cubic 2.6x) and also wins on a clean one, but
        // BBR (v1) caps its window at twice the smallest RTT it has seen:
        // where the RTT steps up, as at LEO handovers (40 to 100 ms), that
        // cap cuts its rate for seconds (LEO uploads 0.8x direct). So BBR
        // on long links, the kernel's default (cubic) on short ones,
        // unless the user chose.
        if leg.congestion.is_none() && self.is_long() {
            leg.congestion = Some("bbr".to_string());
            cfg.bbr_by_link = true;
        }
        if let Some(bps) = self.send_bps() {
            // The cap is the link's rate on long links; short ones get a
            // quarter more: after an outage or an RTT step (LEO handovers)
            // a leg capped at exactly the link's rate cannot catch up
            // (measured: LEO 1 MB uploads 0.74x direct at 1.0x, 1.0x at
            // 1.25x; on a clean GEO link 1.25x cost 3 %).
            let rate = bps / 8;
            let headroom = if self.is_long() { 0 } else { rate / 4 };
            leg.pacing_bytes_per_s = Some(rate + headroom);
            // Send buffer autotuning starts at two initial windows and
            // follows the RTT when it grows (queues, LEO handovers); a
            // fixed buffer would not. So it is fixed only where
            // autotuning's ceiling (tcp_wmem) cannot reach two BDPs.
            let two_bdp = self.two_bdp(bps);
            let ceiling = system.autotuning_ceiling_bytes;
            if ceiling.is_some_and(|max| max < u64::from(two_bdp)) {
                leg.sndbuf_bytes.get_or_insert(two_bdp);
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
        // it is for two-ended setups to ask for (--server-rcvbuf on the
        // router, --client-rcvbuf on the gateway).
    }

    /// Two BDPs in bytes, within what a socket buffer can take.
    fn two_bdp(&self, bps: u64) -> u32 {
        (2 * self.bdp_bytes(bps)).clamp(64 * 1024, 1 << 30) as u32
    }
}

/// Link figures as given on the command line; `finish` turns them into
/// a `Link`, or refuses an incomplete set.
#[derive(Debug, Default)]
pub(super) struct LinkArgs {
    pub uplink_bps: Option<u64>,
    pub downlink_bps: Option<u64>,
    pub rtt: Option<Duration>,
    pub leg: Option<LinkLeg>,
}

impl LinkArgs {
    pub fn finish(self) -> Result<Option<Link>, ConfigError> {
        let rates = self.uplink_bps.is_some() || self.downlink_bps.is_some();
        match (rates, self.rtt) {
            // --link-leg alone changes nothing: UCI may always pass it.
            (false, None) => Ok(None),
            (false, Some(_)) => err("--rtt needs --uplink or --downlink (the link's rates)"),
            (true, None) => err(
                "--uplink/--downlink need --rtt (the link's round-trip time, e.g. 600ms) to size the window",
            ),
            (true, Some(rtt)) => Ok(Some(Link {
                uplink_bps: self.uplink_bps,
                downlink_bps: self.downlink_bps,
                rtt,
                leg: self.leg.unwrap_or(LinkLeg::Server),
            })),
        }
    }
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

impl Config {
    pub fn link_in_force(&self) -> Option<LinkInForce> {
        let link = self.link?;
        let leg = self.long_leg_options()?;
        Some(LinkInForce {
            link,
            pacing_bytes_per_s: leg.pacing_bytes_per_s,
            sndbuf_bytes: leg.sndbuf_bytes,
            rcvbuf_bytes: leg.rcvbuf_bytes,
            route_initcwnd: self.initcwnd.map(u32::from).or(link.initcwnd()),
        })
    }

    /// The options of the leg that sends over the slow link, where link
    /// settings name one.
    pub fn long_leg_options(&self) -> Option<&LegOptions> {
        Some(match self.link?.leg {
            LinkLeg::Server => &self.server_leg,
            LinkLeg::Client => &self.client_leg,
        })
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

    fn applied(link: Link, system: System) -> Config {
        let mut cfg = Config {
            link: Some(link),
            ..Config::default()
        };
        link.apply(&mut cfg, &system);
        cfg
    }

    #[test]
    fn the_long_leg_is_paced_at_the_link_rate_with_bbr() {
        assert_eq!(GEO_UPLINK.bdp_bytes(10_000_000), 750_000);
        assert_eq!(GEO_UPLINK.initcwnd(), Some(518));
        let c = applied(GEO_UPLINK, System::default());
        assert_eq!(c.server_leg.pacing_bytes_per_s, Some(1_250_000));
        assert_eq!(c.server_leg.congestion.as_deref(), Some("bbr"));
        assert!(c.bbr_by_link);
        // The receive buffer is left to autotuning.
        assert_eq!(c.server_leg.rcvbuf_bytes, None);
        assert_eq!(c.client_leg.pacing_bytes_per_s, None);
    }

    #[test]
    fn the_send_buffer_is_fixed_only_where_autotuning_cannot_reach_two_bdp() {
        let roomy = System {
            autotuning_ceiling_bytes: Some(4 << 20),
        };
        assert_eq!(applied(GEO_UPLINK, roomy).server_leg.sndbuf_bytes, None);
        let tight = System {
            autotuning_ceiling_bytes: Some(1 << 20),
        };
        let c = applied(GEO_UPLINK, tight);
        assert_eq!(c.server_leg.sndbuf_bytes, Some(1_500_000));
        // Unknown: autotuning is left alone.
        let c = applied(GEO_UPLINK, System::default());
        assert_eq!(c.server_leg.sndbuf_bytes, None);
    }

    #[test]
    fn a_short_link_keeps_the_kernels_congestion_control_with_headroom() {
        let short = Link {
            uplink_bps: Some(16_000_000),
            downlink_bps: None,
            rtt: Duration::from_millis(40),
            leg: LinkLeg::Server,
        };
        let c = applied(short, System::default());
        assert_eq!(c.server_leg.congestion, None);
        assert_eq!(c.server_leg.pacing_bytes_per_s, Some(2_500_000));
        assert!(!c.bbr_by_link);
    }

    #[test]
    fn link_figures_come_as_a_set() {
        let rates_only = LinkArgs {
            uplink_bps: Some(1),
            ..LinkArgs::default()
        };
        let e = rates_only.finish().unwrap_err().to_string();
        assert!(e.contains("need --rtt"), "{e}");
        let rtt_only = LinkArgs {
            rtt: Some(Duration::from_millis(600)),
            ..LinkArgs::default()
        };
        let e = rtt_only.finish().unwrap_err().to_string();
        assert!(e.contains("--rtt needs --uplink or --downlink"), "{e}");
        let leg_only = LinkArgs {
            leg: Some(LinkLeg::Client),
            ..LinkArgs::default()
        };
        assert_eq!(leg_only.finish(), Ok(None));
    }
}
