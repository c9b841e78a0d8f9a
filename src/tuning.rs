//! Per-leg socket options from the command line (and, for the leg over
//! the long link, from the link settings: see `config::Link`).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use crate::config::{Config, LegOptions, LinkLeg};
use crate::sys::socket::{
    self, IPPROTO_TCP, SO_RCVBUF, SO_RCVBUFFORCE, SO_SNDBUF, SO_SNDBUFFORCE, SOL_SOCKET,
    TCP_MAXSEG, TCP_NODELAY, TCP_QUICKACK,
};

/// Options that must be in place before the handshake (window scale and
/// MSS are negotiated in the SYN): set on the listener or before connect.
pub fn before_handshake(fd: RawFd, leg: &LegOptions, mss: Option<u16>) -> io::Result<()> {
    if let Some(cc) = &leg.congestion {
        socket::set_congestion(fd, cc).map_err(|e| with_context(e, "TCP_CONGESTION", cc))?;
    }
    if let Some(b) = leg.sndbuf_bytes {
        set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, b)?;
    }
    if let Some(b) = leg.rcvbuf_bytes {
        set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, b)?;
    }
    if let Some(m) = leg.mss.or(mss) {
        socket::set_int(fd, IPPROTO_TCP, TCP_MAXSEG, i32::from(m))?;
    }
    after_handshake(fd, leg)
}

/// Options that apply to a connected socket.
pub fn after_handshake(fd: RawFd, leg: &LegOptions) -> io::Result<()> {
    if leg.nodelay {
        socket::set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1)?;
    }
    if leg.quickack {
        socket::set_int(fd, IPPROTO_TCP, TCP_QUICKACK, 1)?;
    }
    if let Some(rate) = leg.pacing_bytes_per_s {
        // Also turns on TCP's own pacing (Linux 4.20 and later), so no fq
        // qdisc is needed: a first flight of a whole BDP leaves at the
        // link's rate instead of as one burst into the modem's queue.
        // Legs that start together share the rate (see `Shares`).
        set_cap(fd, rate)?;
        SHARES.with(|s| s.borrow_mut().add(fd, rate, Instant::now()));
    }
    Ok(())
}

/// Called once a second: long legs that finished sending give their
/// share of the link back to the others.
pub fn rebalance(cfg: &Config) {
    let leg = match cfg.link.map(|l| l.leg) {
        Some(LinkLeg::Server) => &cfg.server_leg,
        Some(LinkLeg::Client) => &cfg.client_leg,
        None => return,
    };
    if let Some(rate) = leg.pacing_bytes_per_s {
        SHARES.with(|s| s.borrow_mut().rebalance(rate, Instant::now()));
    }
}

/// Long legs tracked for sharing; more are paced at the full rate.
const SHARED_LEGS: usize = 1024;

/// A leg counts as sending for this long after it opened, whatever its
/// queue says: legs that open together (a web page's objects) have not
/// queued anything yet when the next one opens.
const YOUNG_MS: u32 = 2000;

thread_local! {
    // All zero bits, so the table costs no bytes in the binary (.tbss).
    static SHARES: RefCell<Shares> = const { RefCell::new(Shares::new()) };
    /// What `SharedLeg::opened_ms` counts from.
    static EPOCH: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Milliseconds since this thread first asked (wraps after 49 days;
/// only differences are used).
fn now_ms(now: Instant) -> u32 {
    let epoch = EPOCH.with(|e| {
        let t = e.get().unwrap_or(now);
        e.set(Some(t));
        t
    });
    now.saturating_duration_since(epoch).as_millis() as u32
}

/// The link's rate split between the long legs that are sending. With a
/// BDP initial window each leg would start at the whole link's rate: 32
/// legs opening at once (a web page) would send 32 BDPs into a queue
/// that holds about one, and lose most of it. So every leg's pacing cap
/// is the link's rate divided by the number of legs sending or just
/// opened; a leg's queue going empty, or its socket closing, hands its
/// share back at the next tick. Fixed size, no allocation.
struct Shares {
    legs: [SharedLeg; SHARED_LEGS],
    len: usize,
}

#[derive(Clone, Copy)]
struct SharedLeg {
    fd: RawFd,
    /// The cap last set, as the kernel reports it back: a closed fd
    /// reused by another socket reports something else.
    cap: u32,
    opened_ms: u32,
}

const NO_LEG: SharedLeg = SharedLeg {
    fd: 0,
    cap: 0,
    opened_ms: 0,
};

impl Shares {
    const fn new() -> Shares {
        Shares {
            legs: [NO_LEG; SHARED_LEGS],
            len: 0,
        }
    }

    /// A new long leg: it and every leg still sending get an equal share.
    fn add(&mut self, fd: RawFd, rate: u64, now: Instant) {
        self.prune();
        // A reused fd number is a new socket: its old entry goes.
        if let Some(i) = self.legs[..self.len].iter().position(|l| l.fd == fd) {
            self.remove(i);
        }
        // Beyond the table a leg keeps the full rate it was given.
        if self.len < SHARED_LEGS {
            self.legs[self.len] = SharedLeg {
                fd,
                cap: 0,
                opened_ms: now_ms(now),
            };
            self.len += 1;
        }
        self.share(rate, now);
    }

    fn rebalance(&mut self, rate: u64, now: Instant) {
        self.prune();
        self.share(rate, now);
    }

    /// Drops legs whose socket closed (or whose fd now belongs to another
    /// socket, which reports another cap or no send queue at all).
    fn prune(&mut self) {
        let mut i = 0;
        while i < self.len {
            let l = self.legs[i];
            let ours = l.cap == 0 || pacing_cap(l.fd) == Some(l.cap);
            if ours && socket::unsent_bytes(l.fd).is_ok() {
                i += 1;
            } else {
                self.remove(i);
            }
        }
    }

    fn remove(&mut self, i: usize) {
        self.len -= 1;
        self.legs[i] = self.legs[self.len];
        self.legs[self.len] = NO_LEG;
    }

    fn share(&mut self, rate: u64, now: Instant) {
        let now = now_ms(now);
        let sending = |l: &SharedLeg| {
            now.wrapping_sub(l.opened_ms) < YOUNG_MS
                || socket::unsent_bytes(l.fd).is_ok_and(|n| n > 0)
        };
        let n = self.legs[..self.len].iter().filter(|l| sending(l)).count();
        let each = share_of(rate, n);
        for l in &mut self.legs[..self.len] {
            if l.cap != each && set_cap(l.fd, u64::from(each)).is_ok() {
                l.cap = each;
            }
        }
    }
}

/// One leg's share of `rate` among `n` legs sending, in the kernel's
/// 32-bit form; never below 8 kB/s, so no leg stalls.
fn share_of(rate: u64, n: usize) -> u32 {
    let n = n.max(1) as u64;
    (rate / n).clamp(8_000, u64::from(u32::MAX >> 1)) as u32
}

fn set_cap(fd: RawFd, rate: u64) -> io::Result<()> {
    let rate = rate.min(i32::MAX as u64) as i32;
    socket::set_int(fd, SOL_SOCKET, libc::SO_MAX_PACING_RATE, rate)
}

fn pacing_cap(fd: RawFd) -> Option<u32> {
    socket::get_int(fd, SOL_SOCKET, libc::SO_MAX_PACING_RATE)
        .ok()
        .map(|v| v as u32)
}

/// A long link needs buffers beyond net.core.[rw]mem_max: the FORCE
/// variant (CAP_NET_ADMIN, which pepwrt has) ignores that cap; without the
/// capability the plain option still gets what the sysctl allows.
fn set_buffer(fd: RawFd, force: libc::c_int, plain: libc::c_int, bytes: u32) -> io::Result<()> {
    let val = bytes.min(i32::MAX as u32) as i32;
    socket::set_int(fd, SOL_SOCKET, force, val)
        .or_else(|_| socket::set_int(fd, SOL_SOCKET, plain, val))
}

fn with_context(e: io::Error, what: &str, value: &str) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) => {
            " (not available in this kernel: load its module, e.g. kmod-tcp-bbr on OpenWrt)"
        }
        Some(libc::EPERM) => {
            " (not allowed: add it to net.ipv4.tcp_allowed_congestion_control or run with CAP_NET_ADMIN)"
        }
        _ => "",
    };
    io::Error::new(e.kind(), format!("{what} {value}: {e}{hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legs_sending_together_split_the_rate() {
        assert_eq!(share_of(1_250_000, 0), 1_250_000);
        assert_eq!(share_of(1_250_000, 1), 1_250_000);
        assert_eq!(share_of(1_250_000, 32), 39_062);
        assert_eq!(share_of(1_250_000, 1000), 8_000);
    }

    #[test]
    fn closed_legs_hand_their_share_back() {
        use std::net::{TcpListener, TcpStream};
        use std::os::fd::AsRawFd;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let b = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        // qemu-user (the cross builds' unit tests) does not pass this
        // option on to the kernel: nothing to check there.
        if set_cap(a.as_raw_fd(), 123_000).is_err() || pacing_cap(a.as_raw_fd()) != Some(123_000) {
            return;
        }
        let mut s = Shares::new();
        let t = Instant::now();
        s.add(a.as_raw_fd(), 1_000_000, t);
        assert_eq!(pacing_cap(a.as_raw_fd()), Some(1_000_000));
        s.add(b.as_raw_fd(), 1_000_000, t);
        assert_eq!(pacing_cap(a.as_raw_fd()), Some(500_000));
        assert_eq!(pacing_cap(b.as_raw_fd()), Some(500_000));
        // b closes; a is alone again at the next rebalance.
        drop(b);
        s.rebalance(1_000_000, t);
        assert_eq!(s.len, 1);
        assert_eq!(pacing_cap(a.as_raw_fd()), Some(1_000_000));
        // Once young legs have sent everything, they are not counted.
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        s.add(c.as_raw_fd(), 1_000_000, t);
        assert_eq!(pacing_cap(c.as_raw_fd()), Some(500_000));
        s.rebalance(
            1_000_000,
            t + std::time::Duration::from_millis(u64::from(YOUNG_MS)),
        );
        assert_eq!(pacing_cap(c.as_raw_fd()), Some(1_000_000));
    }
}
