//! What the link settings do while connections run, as the loop sees it:
//! a few events (a leg opened, the one-second tick, the link's own timer,
//! a leg closed), each answered with when the link next needs the loop.
//! Behind them: the link's rate shared between long legs (share.rs), the
//! BBR-to-cubic handover (window.rs), the RTT-probe skip (rtt_probe.rs)
//! and what the long legs measured (learn.rs).
//!
//! What the link keeps of each connection sits in a table beside the
//! pool, one entry per slot, allocated at start.

use std::os::fd::RawFd;
use std::time::Instant;

use super::learn::{Estimate, LinkEstimate};
use super::rtt_probe::{ProbeClock, ProbeSkip};
use super::settings::{LinkInForce, LinkLeg, Setup};
use super::share::LinkShare;
use super::tuning;
use super::window::{Handover, WindowWatch};
use crate::pool::ConnId;
use crate::sys::socket;
use crate::tuple::FourTuple;

/// A connection whose legs just opened, as the relay hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub id: ConnId,
    pub tuple: FourTuple,
    /// The accepted leg's socket and the outgoing one's.
    pub client_fd: RawFd,
    pub server_fd: RawFd,
}

/// One connection's leg over the link, and what the link keeps of it.
#[derive(Debug, Clone, Copy)]
pub(super) struct LongLeg {
    pub id: ConnId,
    pub tuple: FourTuple,
    pub fd: RawFd,
    /// The outgoing leg's socket: while it connects, the connection is
    /// left alone.
    pub outgoing_fd: RawFd,
    pub opened: Instant,
    /// The pacing cap last set on the leg (0: none yet).
    pub cap: u32,
    /// Whether the peer's receive window holds the leg back.
    pub window: WindowWatch,
    /// When the leg last got a fresh BBR.
    pub probe: ProbeClock,
}

impl LongLeg {
    /// Caps the leg's pacing rate (bytes per second), if it changed.
    pub fn cap_rate(&mut self, cap: u32) {
        if cap != self.cap && tuning::set_pacing_cap(self.fd, cap).is_ok() {
            self.cap = cap;
        }
    }
}

pub struct LinkRuntime {
    /// The link's rate shared between long legs, with link settings.
    share: Option<LinkShare>,
    /// Hands long legs held back by the peer's window from BBR to cubic.
    handover: Option<Handover>,
    /// Keeps paced BBR long legs from idling for BBR's RTT probe.
    probe_skip: Option<ProbeSkip>,
    /// Which leg crosses the long link, and what those legs measured.
    long: LinkLeg,
    learned: LinkEstimate,
    in_force: Option<LinkInForce>,
    /// One entry per pool slot.
    legs: Vec<Option<LongLeg>>,
}

/// What one tick did, for the counters, and when the link next needs the
/// loop.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkTicked {
    pub handed_to_cubic: u64,
    pub rtt_probes_skipped: u64,
    pub due: Option<Instant>,
}

impl LinkRuntime {
    /// The table has one entry for each of the pool's `slots`.
    pub fn new(setup: Setup, slots: usize) -> LinkRuntime {
        let (link, long) = (setup.link, &setup.long);
        let bbr_by_link = setup.bbr_by_link;
        LinkRuntime {
            share: link.and_then(|l| LinkShare::new(l, long)),
            handover: link.and_then(|l| Handover::new(l, bbr_by_link)),
            probe_skip: link.and_then(|l| ProbeSkip::new(l, long)),
            long: link.map_or(LinkLeg::Server, |l| l.leg),
            learned: LinkEstimate::default(),
            in_force: link.map(|l| LinkInForce::new(l, long, setup.initcwnd)),
            legs: vec![None; slots],
        }
    }

    /// What the link settings put in force, for the status report.
    pub fn in_force(&self) -> Option<LinkInForce> {
        self.in_force
    }

    /// The link as the long legs measured it, once they have.
    pub fn estimate(&self) -> Option<Estimate> {
        self.learned.estimate()
    }

    /// When the link next needs the loop (besides the tick).
    pub fn due(&self) -> Option<Instant> {
        self.share.as_ref().and_then(LinkShare::due)
    }

    /// New connections' legs opened: the rate is shared out again.
    pub fn opened(
        &mut self,
        legs: impl IntoIterator<Item = Opened>,
        now: Instant,
    ) -> Option<Instant> {
        for o in legs {
            let Some(entry) = self.legs.get_mut(o.id.index()) else {
                continue;
            };
            *entry = Some(LongLeg {
                id: o.id,
                tuple: o.tuple,
                fd: self.long.pick(o.client_fd, o.server_fd),
                outgoing_fd: o.server_fd,
                opened: now,
                cap: 0,
                window: WindowWatch::default(),
                probe: ProbeClock::default(),
            });
        }
        self.share_out(now)
    }

    /// A connection closed (before its sockets do): it leaves the table,
    /// and hands its share back when the shares are next worked out.
    pub fn closed(&mut self, id: ConnId) {
        if let Some(entry) = self.legs.get_mut(id.index())
            && entry.is_some_and(|leg| leg.id == id)
        {
            *entry = None;
        }
    }

    /// The link's own deadline came: the shares are worked out again if
    /// they are due.
    pub fn on_timer(&mut self, now: Instant) -> Option<Instant> {
        if self.share.as_ref().is_some_and(|s| s.is_due(now)) {
            return self.share_out(now);
        }
        self.due()
    }

    /// Gives every connection's long leg its share of the link's rate.
    fn share_out(&mut self, now: Instant) -> Option<Instant> {
        if let Some(share) = &mut self.share {
            let legs = self.legs.iter().flatten();
            let sending = legs
                .filter(|l| share.is_sending(l.opened, l.fd, now))
                .count();
            let each = share.share_out(sending, now);
            for leg in self.legs.iter_mut().flatten() {
                leg.cap_rate(each);
            }
        }
        self.due()
    }

    /// Once a tick: the rate is shared out again, and each connection's
    /// leg over the long link is looked at: what it measured feeds the
    /// link estimate, a leg the peer's window holds back may leave BBR
    /// (window.rs), and a paced BBR leg starts its BBR afresh before the
    /// RTT probe is due (rtt_probe.rs).
    pub fn tick(&mut self, now: Instant) -> LinkTicked {
        let mut done = LinkTicked {
            due: self.share_out(now),
            ..LinkTicked::default()
        };
        for leg in self.legs.iter_mut().flatten() {
            let Ok(Some(info)) = socket::leg_info(leg.fd) else {
                continue;
            };
            self.learned.observe(&info, now);
            if let Some(handover) = &self.handover
                && handover.look(&mut leg.window, leg.fd, &leg.tuple, info)
            {
                done.handed_to_cubic += 1;
            }
            // Connections whose outgoing leg still connects, and legs
            // handed to cubic, keep BBR's probe.
            if let Some(skip) = &self.probe_skip
                && !socket::is_connecting(leg.outgoing_fd)
                && !leg.window.handed_over()
                && skip.look(&mut leg.probe, leg.fd, leg.cap, now)
            {
                done.rtt_probes_skipped += 1;
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;
    use crate::link::{LegOptions, Link};
    use crate::pool::Pool;

    /// The pacing cap the kernel holds for a socket.
    fn pacing_cap(fd: RawFd) -> i32 {
        socket::get_int(fd, libc::SOL_SOCKET, libc::SO_MAX_PACING_RATE).unwrap()
    }

    /// A connected pair of loopback sockets, as a connection's two legs.
    fn legs() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let out = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        (accepted, out)
    }

    #[test]
    fn long_legs_sending_together_share_the_links_rate_and_closing_hands_it_back() {
        assert_eq!(super::super::share::share_of(1_250_000, 0), 1_250_000);
        assert_eq!(super::super::share::share_of(1_250_000, 32), 39_062);
        assert_eq!(super::super::share::share_of(1_250_000, 1000), 8_000);
        let link = Link {
            uplink_bps: Some(8_000_000),
            downlink_bps: None,
            rtt: Duration::from_millis(600),
            leg: LinkLeg::Server,
        };
        let long = LegOptions {
            pacing_bytes_per_s: Some(1_000_000),
            ..LegOptions::default()
        };
        let setup = Setup {
            link: Some(link),
            long,
            ..Setup::default()
        };
        let mut rt = LinkRuntime::new(setup, 4);
        let now = Instant::now();
        // qemu-user (the cross builds' unit tests) does not pass this option
        // on to the kernel: nothing to check there.
        let probe = legs();
        let fd = probe.1.as_raw_fd();
        if tuning::set_pacing_cap(fd, 123_000).is_err() || pacing_cap(fd) != 123_000 {
            eprintln!("SKIPPED: SO_MAX_PACING_RATE does not reach a kernel here");
            return;
        }
        // The pool only hands out the slots' handles here.
        let mut slots: Pool<()> = Pool::new(4, 16);
        let mut open = |rt: &mut LinkRuntime, at: Instant| {
            let (client, server) = legs();
            let id = slots.claim_late(at).unwrap().id;
            assert!(slots.activate(id, ()).is_ok());
            let opened = Opened {
                id,
                tuple: FourTuple {
                    client: client.peer_addr().unwrap(),
                    server: server.peer_addr().unwrap(),
                },
                client_fd: client.as_raw_fd(),
                server_fd: server.as_raw_fd(),
            };
            let due = rt.opened([opened], at);
            (id, opened.server_fd, due, (client, server))
        };
        let (a, a_fd, due, _a) = open(&mut rt, now);
        // One leg has the whole rate: nothing to work out again.
        assert_eq!(due, None);
        assert_eq!(rt.tick(now).due, None);
        assert_eq!(pacing_cap(a_fd), 1_000_000);
        let (_b, b_fd, due, _b_legs) = open(&mut rt, now);
        assert_eq!((pacing_cap(a_fd), pacing_cap(b_fd)), (500_000, 500_000));
        // Two legs sending: worked out again once a link RTT.
        assert_eq!(due, Some(now + Duration::from_millis(600)));
        // a closes: b has the link to itself when the shares are due.
        rt.closed(a);
        rt.on_timer(now + Duration::from_millis(599));
        assert_eq!(pacing_cap(b_fd), 500_000);
        assert_eq!(rt.on_timer(now + Duration::from_millis(600)), None);
        assert_eq!(pacing_cap(b_fd), 1_000_000);
        // Past its youth, an idle leg no longer counts as sending.
        let (_c, c_fd, _, _c_legs) = open(&mut rt, now);
        assert_eq!(pacing_cap(c_fd), 500_000);
        rt.tick(now + Duration::from_secs(3));
        assert_eq!(pacing_cap(c_fd), 1_000_000);
    }

    #[test]
    fn a_stale_close_leaves_the_slots_new_connection_in_the_table() {
        let mut rt = LinkRuntime::new(Setup::default(), 1);
        let mut slots: Pool<()> = Pool::new(1, 16);
        let now = Instant::now();
        let (client, server) = legs();
        let take = |slots: &mut Pool<()>| {
            let id = slots.claim_late(now).unwrap().id;
            assert!(slots.activate(id, ()).is_ok());
            id
        };
        let old = take(&mut slots);
        slots.release(old);
        let new = take(&mut slots);
        let opened = Opened {
            id: new,
            tuple: FourTuple {
                client: client.local_addr().unwrap(),
                server: server.local_addr().unwrap(),
            },
            client_fd: client.as_raw_fd(),
            server_fd: server.as_raw_fd(),
        };
        rt.opened([opened], now);
        rt.closed(old);
        assert!(rt.legs[0].is_some_and(|leg| leg.id == new));
        rt.closed(new);
        assert!(rt.legs[0].is_none());
    }
}
