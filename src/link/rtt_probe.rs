//! A paced BBR leg over a long link skips BBR's RTT probe.
//!
//! BBR (v1, the kernel's) drops its window to four segments for at least
//! 200 ms and a round trip once its smallest RTT sample is ten seconds
//! old, to drain the queue it may have built and measure the path's RTT
//! again. A sample counts as new only if it is strictly smaller, and a
//! leg's first sample is its handshake, whose segments are too short to
//! queue behind anything: data segments never beat it, so the probe comes
//! every ten seconds. At 600 ms it idles the link for about a second each
//! time (measured: clean GEO 10 MB uploads took 1.16x the link's limit
//! when the probe came after the last byte and 1.32x when it came before).
//! Where link settings cap the leg's pacing at the link's rate, and the
//! leg delivers at that cap, the leg builds no queue of its own, so the
//! probe has nothing to drain. Before it is due the leg's BBR is started
//! afresh (by way of reno, since setting the same algorithm again changes
//! nothing): that takes its smallest RTT from the kernel's own record of
//! the connection's smallest RTT and starts its ten seconds again. A
//! fresh BBR also starts measuring bandwidth again from its startup
//! phase, which the pacing cap holds at the link's rate (or the leg's
//! share of it). A leg that delivers well
//! below its cap is held by something else (a link slower than the
//! settings say, other traffic): its BBR keeps its probe, and a fresh
//! startup would only push into that queue (measured with settings that
//! claim twice the link's rate: 10 MB uploads 10.75 s with the probe,
//! 11.53 s with fresh starts).

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::settings::Link;
use super::tuning::{Congestion, LegOptions, set_congestion};
use crate::sys::socket;

/// Well inside BBR's ten seconds, with the tick (one second, and late
/// when the loop is busy) and the leg's handshake before it was seen.
const EVERY: Duration = Duration::from_secs(7);

/// When one connection's long leg last got a fresh BBR.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProbeClock {
    since: Option<Instant>,
}

impl ProbeClock {
    /// True when the leg's BBR is due to start afresh; the first call
    /// (the first tick that sees the leg connected) starts the clock.
    fn due(&mut self, now: Instant) -> bool {
        match self.since {
            Some(t) if now.saturating_duration_since(t) < EVERY => false,
            Some(_) => {
                self.since = Some(now);
                true
            }
            None => {
                self.since = Some(now);
                false
            }
        }
    }
}

/// Where it applies: BBR on the long leg, paced at no more than the
/// link's rate (link settings on a long link).
pub struct ProbeSkip;

impl ProbeSkip {
    /// `long`: the options in force on the leg over the link.
    pub fn new(link: Link, long: &LegOptions) -> Option<ProbeSkip> {
        let paced_at_rate = long.pacing_bytes_per_s.is_some() && link.is_long();
        (paced_at_rate && long.congestion == Some(Congestion::Bbr)).then_some(ProbeSkip)
    }

    /// Starts the BBR of one connection's long leg (`fd`, paced at `cap`)
    /// afresh if its `clock` says it is due and BBR's bandwidth estimate is
    /// at the cap; true if it did. The caller leaves out connections whose
    /// outgoing leg still connects, and legs handed to cubic (window.rs).
    pub fn look(&self, clock: &mut ProbeClock, fd: RawFd, cap: u32, now: Instant) -> bool {
        if !clock.due(now) {
            return false;
        }
        let bandwidth = socket::bbr_bandwidth(fd).ok().flatten().unwrap_or(0);
        if !at_cap(bandwidth, cap) {
            return false;
        }
        match restart_bbr(fd) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("could not start a long leg's BBR afresh: {e}");
                false
            }
        }
    }
}

/// BBR's estimate (payload bytes per second) is at least three quarters
/// of the cap (which also counts headers): the leg sends at its cap and
/// the link carries it.
fn at_cap(bandwidth: u64, cap: u32) -> bool {
    cap > 0 && bandwidth >= u64::from(cap) * 3 / 4
}

fn restart_bbr(fd: RawFd) -> std::io::Result<()> {
    set_congestion(fd, &Congestion::Reno)?;
    set_congestion(fd, &Congestion::Bbr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_starts_at_first_sight_and_comes_due_every_seven_seconds() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_millis(s * 1000 + 3);
        let mut clock = ProbeClock::default();
        let due: Vec<u64> = (0..30).filter(|&s| clock.due(at(s))).collect();
        assert_eq!(due, [7, 14, 21, 28]);
        // A late tick pushes the next one back, never two in a row.
        let mut clock = ProbeClock::default();
        assert!(!clock.due(at(0)));
        assert!(clock.due(at(9)));
        assert!(!clock.due(at(10)));
        assert!(clock.due(at(16)));
    }

    #[test]
    fn only_a_leg_that_delivers_at_its_cap_starts_afresh() {
        // 10 Mbit/s cap: BBR measured 9.5 Mbit/s of payload.
        assert!(at_cap(1_187_000, 1_250_000));
        // Settings that claim twice the link's rate.
        assert!(!at_cap(1_187_000, 2_500_000));
        // No cap set yet, or no estimate yet.
        assert!(!at_cap(1_187_000, 0));
        assert!(!at_cap(0, 1_250_000));
    }

    #[test]
    fn a_fresh_bbr_is_still_bbr_and_back_in_its_startup_phase() {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut b, _) = listener.accept().unwrap();
        let fd = a.as_raw_fd();
        if set_congestion(fd, &Congestion::Bbr).is_err() {
            // Named, not silent: a kernel without BBR cannot run this.
            eprintln!("SKIPPED: no tcp_bbr in this kernel");
            return;
        }
        // Paced like a long leg, so BBR finds a bandwidth that stops
        // growing and leaves its startup (at most 16 MB, 0.8 s).
        super::super::tuning::set_pacing_cap(fd, 20_000_000).unwrap();
        let sink = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while b.read(&mut buf).is_ok_and(|n| n > 0) {}
        });
        let chunk = vec![7u8; 1 << 16];
        for _ in 0..256 {
            a.write_all(&chunk).unwrap();
            if socket::bbr_gains(fd).unwrap() != Some((739, 739)) {
                break;
            }
        }
        assert_ne!(socket::bbr_gains(fd).unwrap(), Some((739, 739)));
        // Restart on an empty send queue: with megabytes still queued, the
        // fresh BBR sees a bandwidth that stops growing within a few
        // loopback round trips and leaves its startup again before the
        // check (a fast machine did so in CI).
        let acked = || {
            (0..2000).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(5));
                socket::unsent_bytes(fd).unwrap() == 0
            })
        };
        assert!(acked(), "the sink took 10 s to read what was sent");
        restart_bbr(fd).unwrap();
        assert_eq!(socket::congestion(fd).unwrap(), "bbr");
        // BBR sets its gains on the next acknowledgement: its startup
        // gain, 2.89 (in 1/256). 1000 bytes are application-limited, and
        // BBR never leaves startup on an application-limited sample.
        a.write_all(&chunk[..1000]).unwrap();
        assert!(acked());
        assert_eq!(socket::bbr_gains(fd).unwrap(), Some((739, 739)));
        drop(a);
        sink.join().unwrap();
    }
}
