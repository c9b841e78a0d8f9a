//! Opening a split connection: the transparent listeners that accept the
//! client leg, and for each accepted client its slot and the outgoing leg
//! to the real server.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use super::conn::{Conn, End};
use crate::config::{Config, OutgoingSource};
use crate::error::StartError;
use crate::link::{Opened, tuning};
use crate::pool::{ConnId, Pool};
use crate::sys::Described;
use crate::sys::conntrack::Conntrack;
use crate::sys::socket;
use crate::tuple::FourTuple;

/// Pending handshakes per listener.
const BACKLOG: i32 = 1024;

/// Pepwrt's side of the client's handshake: the transparent listeners,
/// and what accepting from them needs.
pub struct Intake {
    listeners: Vec<TcpListener>,
    /// Conntrack, for free source ports and for forgetting decisions.
    ct: Option<Conntrack>,
    ports: SourcePorts,
    /// Accepting failed for lack of fds or memory: the listeners stay
    /// unwatched until the next tick instead of waking the loop in vain.
    paused: bool,
}

/// What one round of accepting did.
pub struct Accepted {
    /// The connections now live, to be watched.
    pub new: heapless::Vec<ConnId, ACCEPT_BUDGET>,
    /// Clients reset instead of relayed, to be counted.
    pub refused: heapless::Vec<RefusalCount, ACCEPT_BUDGET>,
    /// Accepting ran out of fds or memory: stop watching the listeners.
    pub paused: bool,
}

impl Accepted {
    /// The new connections' legs, for the link.
    pub fn legs<'a>(&'a self, pool: &'a Pool<Conn>) -> impl Iterator<Item = Opened> + 'a {
        let conn = |id: ConnId| pool.conn(id).map(|c| c.opened(id));
        self.new.iter().filter_map(move |&id| conn(id))
    }
}

/// Accepts per wake-up before the loop serves others.
pub const ACCEPT_BUDGET: usize = 64;

impl Intake {
    /// The IPv4 and (if enabled and available) IPv6 transparent listeners.
    pub fn open(cfg: &Config) -> Result<Intake, StartError> {
        let mut addrs = vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), cfg.port)];
        if cfg.ipv6 {
            addrs.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), cfg.port));
        }
        if cfg.listener_fast_open() {
            enable_fast_open_server();
        }
        let mut listeners = Vec::new();
        for addr in addrs {
            let leg = &cfg.client_leg;
            match socket::transparent_listener(addr, BACKLOG, |fd| {
                if cfg.listener_fast_open() {
                    socket::set_fast_open_listener(fd, BACKLOG)?;
                }
                tuning::before_handshake(fd, leg, None)
            }) {
                Ok(l) => listeners.push(l),
                Err(e) if addr.is_ipv6() && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                    log::warn!("IPv6 is not available in this kernel; intercepting IPv4 only");
                }
                Err(e) => return Err(StartError::listener(addr, &e)),
            }
        }
        Ok(Intake {
            listeners,
            ct: open_conntrack(),
            ports: SourcePorts::new(cfg.outgoing_source == OutgoingSource::Client),
            paused: false,
        })
    }

    /// The listeners' fds, by index.
    pub fn fds(&self) -> impl Iterator<Item = (usize, RawFd)> + '_ {
        self.listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.as_raw_fd()))
    }

    /// Ends a pause; whether there was one (then watch the listeners again).
    pub fn resume(&mut self) -> bool {
        std::mem::replace(&mut self.paused, false)
    }

    /// A split connection ended: its conntrack entry forgets the decision
    /// (the rules' `mask` bits), so that a new connection on the same
    /// 4-tuple, which conntrack may count as the old one reopened, is
    /// decided afresh instead of inheriting it.
    pub fn forget_decision(&mut self, tuple: &FourTuple, mask: u32) {
        if let Some(ct) = &mut self.ct
            && let Err(e) = ct.clear_mark(tuple.client, tuple.server, mask)
        {
            log::debug!("conntrack: clearing a mark: {e}");
        }
    }

    /// Stops accepting for good: the listeners close.
    pub fn close(&mut self) {
        self.listeners.clear();
    }

    /// Accepts what listener `which` has waiting, up to ACCEPT_BUDGET.
    pub fn accept(
        &mut self,
        which: usize,
        cfg: &Config,
        pool: &mut Pool<Conn>,
        now: Instant,
    ) -> Accepted {
        let mut done = Accepted {
            new: heapless::Vec::new(),
            refused: heapless::Vec::new(),
            paused: false,
        };
        let Some(listener) = self.listeners.get(which) else {
            return done;
        };
        for _ in 0..ACCEPT_BUDGET {
            let (client, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The client gave up before we got to it: next one.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO)) => {
                    continue;
                }
                Err(e) => {
                    // Out of fds or memory: the backlog waits.
                    log::warn!(
                        "accept: {}; pausing new connections for a second",
                        Described(&e)
                    );
                    self.paused = true;
                    done.paused = true;
                    break;
                }
            };
            let ct = self.ct.as_mut();
            match take(cfg, pool, ct, &mut self.ports, client, peer, now) {
                Ok(id) => {
                    let _ = done.new.push(id);
                }
                Err(refusal) => {
                    let _ = done.refused.push(match refusal {
                        Refusal::ConnectFailed(_) => RefusalCount::ConnectFailed,
                        Refusal::NotAdmitted | Refusal::NoSlot => RefusalCount::NotRelayed,
                    });
                    match refusal {
                        Refusal::NotAdmitted => log::debug!("{peer}: {refusal}"),
                        _ => log::info!("{peer}: {refusal}"),
                    }
                }
            }
        }
        done
    }
}

/// Turns on the server bit of net.ipv4.tcp_fastopen (per network
/// namespace; pepwrt is still root here): without it the kernel ignores
/// a listener's fast open settings and the zero-round-trip SYNs' data is
/// sent again after the handshake, a round trip later.
fn enable_fast_open_server() {
    const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_fastopen";
    let bits = std::fs::read_to_string(SYSCTL).ok();
    let bits = bits.and_then(|t| t.trim().parse::<u32>().ok()).unwrap_or(1);
    if bits & 2 == 0 && std::fs::write(SYSCTL, (bits | 2).to_string()).is_err() {
        log::warn!("--zero-rtt: cannot set the server bit (2) of net.ipv4.tcp_fastopen");
    }
}

/// How long an outgoing leg that opens with the client's first bytes
/// waits for them before it opens with an empty SYN (a protocol where the
/// server speaks first): a LAN round trip or two, Wi-Fi's included, and
/// far less than the link's round trip it saves.
const FIRST_BYTES_WAIT: Duration = Duration::from_millis(10);

/// A ctnetlink socket, if the kernel answers on it: a look-up of a tuple
/// nobody uses tells (and loads its module while pepwrt is still root).
fn open_conntrack() -> Option<Conntrack> {
    let nobody = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    match Conntrack::open().and_then(|mut ct| ct.exists(nobody, nobody).map(|_| ct)) {
        Ok(ct) => Some(ct),
        Err(e) => {
            log::warn!(
                "conntrack netlink unavailable ({e}): install kmod-nf-conntrack-netlink; without it outgoing ports are left to the kernel (they may clash with a client's unsplit connections) and a reused 4-tuple may inherit an ended connection's decision"
            );
            None
        }
    }
}

/// Ports tried for one outgoing leg before leaving the choice to the
/// kernel.
const PORT_PROBES: u16 = 64;

/// Source ports for outgoing legs that leave from the client's address.
/// The kernel would pick one knowing only the router's own sockets, and
/// might pick the port of one of the client's own unsplit connections to
/// the same server: then the two would share one conntrack entry and the
/// server would answer the wrong one. Conntrack knows every connection
/// that crosses the router, so a port it has no entry for is free.
struct SourcePorts {
    /// Whether outgoing legs leave from the client's address.
    needed: bool,
    low: u16,
    span: u16,
    /// xorshift state for the ports tried.
    seed: u32,
}

impl SourcePorts {
    fn new(needed: bool) -> SourcePorts {
        let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| {
                // Parsed as u64 like every other number (one parser less).
                let mut it = r
                    .split_whitespace()
                    .map(|p| p.parse::<u64>().ok().and_then(|v| u16::try_from(v).ok()));
                Some((it.next()??, it.next()??))
            })
            .filter(|(l, h)| l <= h)
            .unwrap_or((32768, 60999));
        let seed = std::process::id().wrapping_mul(2_654_435_761) | 1;
        SourcePorts {
            needed,
            low,
            span: high - low,
            seed,
        }
    }

    /// A port from `client`'s address toward `server` that no connection
    /// uses, tried at random (a random try finds a free port even where
    /// most are taken), each try spending one of `tries`; none when
    /// conntrack cannot tell or the tries are spent.
    fn next_free(
        &mut self,
        ct: Option<&mut Conntrack>,
        client: IpAddr,
        server: SocketAddr,
        tries: &mut u16,
    ) -> Option<u16> {
        let ct = ct.filter(|_| self.needed)?;
        while *tries > 0 {
            *tries -= 1;
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 17;
            self.seed ^= self.seed << 5;
            let port = self.low + (self.seed % (u32::from(self.span) + 1)) as u16;
            match ct.exists(SocketAddr::new(client, port), server) {
                Ok(false) => return Some(port),
                Ok(true) => {}
                Err(e) => {
                    log::debug!("conntrack look-up: {e}");
                    return None;
                }
            }
        }
        None
    }
}

/// Which counter a refusal goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCount {
    /// Not admitted, or no slot left: `refused`.
    NotRelayed,
    /// The outgoing connect failed: `connect_failed`.
    ConnectFailed,
}

/// Why an accepted client got a reset instead of a relay.
#[derive(Debug)]
pub enum Refusal {
    /// A connection to the listener's own port: not one the rules diverted
    /// (pepwrt is never an open proxy).
    NotAdmitted,
    /// Its reservation ran out and the pool is full.
    NoSlot,
    /// The outgoing connect failed at once.
    ConnectFailed(io::Error),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotAdmitted => f.write_str("refused: not admitted"),
            Refusal::NoSlot => {
                f.write_str("reset: its handshake outlived its reservation and the pool is full")
            }
            Refusal::ConnectFailed(e) => {
                write!(f, "connect failed at once: {}", crate::sys::Described(e))
            }
        }
    }
}

/// Gives an accepted client its slot and starts the outgoing leg; on
/// refusal the client is reset.
fn take(
    cfg: &Config,
    pool: &mut Pool<Conn>,
    mut ct: Option<&mut Conntrack>,
    ports: &mut SourcePorts,
    client: TcpStream,
    peer: SocketAddr,
    now: Instant,
) -> Result<ConnId, Refusal> {
    let refuse = |why| {
        socket::set_abortive_close(&client);
        why
    };
    let Ok(local) = client.local_addr() else {
        return Err(refuse(Refusal::NotAdmitted));
    };
    let tuple = FourTuple {
        client: peer,
        server: local,
    };
    // Only TPROXY gives an accepted socket a local port other than the
    // listener's, and admission never splits connections to that port; so
    // a client on another port was admitted, even if its handshake took
    // longer than its reservation.
    let claim = match pool.claim(&tuple) {
        Some(c) => c,
        None if local.port() == cfg.port => return Err(refuse(Refusal::NotAdmitted)),
        None => pool
            .claim_late(now)
            .ok_or_else(|| refuse(Refusal::NoSlot))?,
    };
    let _ = client.set_nonblocking(true);
    if let Err(e) = tuning::after_handshake(client.as_raw_fd(), &cfg.client_leg) {
        log::debug!("client leg options: {e}");
    }
    let leg = &cfg.server_leg;
    let fast_open = cfg.outgoing_fast_open();
    let (tos, mss) = claim.syn.map_or((0, None), |s| (s.tos, s.options.mss));
    let setup = |fd: RawFd| {
        // The client's DSCP travels on; the server leg's MSS is what the
        // client asked for unless configured.
        if let Err(e) = socket::set_tos(fd, local.is_ipv4(), tos) {
            log::debug!("copying TOS: {e}");
        }
        tuning::before_handshake(fd, leg, mss)
    };
    let connect = |src| socket::connect(local, src, fast_open, setup);
    let server = match cfg.outgoing_source {
        OutgoingSource::Router => connect(None),
        OutgoingSource::Client => {
            // A port conntrack has no entry for; if the router's own
            // sockets hold it (EADDRINUSE, EADDRNOTAVAIL), the next one.
            let mut chosen = None;
            let mut tries = PORT_PROBES;
            while let Some(port) = ports.next_free(ct.as_deref_mut(), peer.ip(), local, &mut tries)
            {
                match connect(Some(SocketAddr::new(peer.ip(), port))) {
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EADDRINUSE | libc::EADDRNOTAVAIL)
                        ) => {}
                    done => {
                        chosen = Some(done);
                        break;
                    }
                }
            }
            chosen.unwrap_or_else(|| connect(Some(SocketAddr::new(peer.ip(), 0))))
        }
    };
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            pool.release(claim.id);
            return Err(refuse(Refusal::ConnectFailed(e)));
        }
    };
    // With fast open the SYN waits for the first write: it carries the
    // client's first bytes if they come soon enough.
    let first_bytes_by = fast_open.then(|| now + FIRST_BYTES_WAIT);
    let conn = Conn::new(
        client,
        server,
        tuple,
        now + cfg.connect_timeout,
        first_bytes_by,
        now,
    );
    match pool.activate(claim.id, conn) {
        Ok(()) => Ok(claim.id),
        // Cannot happen: the claim is this call's own.
        Err(mut conn) => {
            conn.abort(End::Shutdown);
            Err(Refusal::NoSlot)
        }
    }
}
