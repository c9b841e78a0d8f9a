//! The one loop: owns the poll set, the periodic tick and signals, and
//! dispatches readiness to admission, the listeners, the connections, the
//! control socket and Snoop. No other module polls.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::admission::{self, Admission, Decision};
use crate::config::{Config, OutgoingSource};
use crate::nfqueue::{self, NfQueue};
use crate::pool::{ConnId, FourTuple, Pool, SlotState};
use crate::relay::{Conn, End, Ready, Step};
use crate::snoop::{self, Snoop};
use crate::stats::{Counters, Report};
use crate::sys::Errno;
use crate::sys::poll::{self, PollFd};
use crate::sys::raw::RawSender;
use crate::sys::signals::SignalPipe;
use crate::sys::socket;
use crate::tuning;

/// Housekeeping interval: timeouts are in seconds, so a one-second tick
/// bounds their error without a timer per connection.
const TICK: Duration = Duration::from_secs(1);
/// After SIGTERM, live connections get this long to finish (procd sends
/// SIGKILL after 5 s).
const DRAIN: Duration = Duration::from_secs(3);
/// Packets and accepts handled per wake-up before connections get a turn.
const BUDGET: usize = 256;
/// A SYN's IPv6 headers with extension headers and all TCP options fit.
const SYN_COPY_RANGE: u16 = 256;

#[derive(Debug, Clone, Copy)]
enum Token {
    Signals,
    SynQueue,
    Control,
    Listener(usize),
    /// The client socket of a connection; its server socket follows it.
    Conn(ConnId),
    ConnServer,
    Snoop,
}

pub struct Proxy {
    cfg: Config,
    pool: Pool,
    listeners: Vec<TcpListener>,
    queue: Option<NfQueue>,
    admission: Admission,
    snoop: Option<SnoopRuntime>,
    control: Control,
    signals: SignalPipe,
    counters: Counters,
    started: Instant,
    pollset: PollSet,
    report: String,
    stop_at: Option<Instant>,
    /// Set when accept failed for lack of resources; cleared each tick.
    accept_paused: bool,
}

/// The poll set and, index for index, what each entry is for. Both are
/// sized for a full pool at start and never grow.
struct PollSet {
    fds: Vec<PollFd>,
    tokens: Vec<Token>,
}

impl PollSet {
    fn with_capacity(n: usize) -> PollSet {
        PollSet {
            fds: Vec::with_capacity(n),
            tokens: Vec::with_capacity(n),
        }
    }
    fn clear(&mut self) {
        self.fds.clear();
        self.tokens.clear();
    }
    fn add(&mut self, fd: std::os::fd::RawFd, events: libc::c_short, token: Token) {
        // poll reports errors and hangups even for no events, which would
        // wake us again and again for a socket we cannot serve yet (its
        // ring is full); a negative fd is skipped altogether.
        let fd = if events == 0 { -1 } else { fd };
        self.fds.push(poll::entry(fd, events));
        self.tokens.push(token);
    }
}

/// Snoop's queue, engine and the raw socket its retransmissions leave by.
struct SnoopRuntime {
    queue: NfQueue,
    engine: Snoop,
    tx: RawSender,
}

/// Snoop caches whole data segments, so its queue copies whole packets.
const SNOOP_COPY_RANGE: u16 = 0xffff;

impl SnoopRuntime {
    fn start(cfg: &Config, s: &crate::config::SnoopConfig) -> Result<SnoopRuntime, StartError> {
        let engine = Snoop::new(s).map_err(start_error)?;
        let tx = RawSender::open(cfg.snoop_mark(), cfg.ipv6).map_err(|e| {
            start_error(format!(
                "snoop: raw socket for local retransmissions: {e} (needs CAP_NET_RAW)"
            ))
        })?;
        let queue = NfQueue::open(s.queue, SNOOP_COPY_RANGE, 4096).map_err(queue_error)?;
        log::info!(
            "snoop: queue {}, {} flows, {} KiB segment cache",
            s.queue,
            s.flows,
            s.cache_bytes / 1024
        );
        Ok(SnoopRuntime { queue, engine, tx })
    }

    /// Every queued packet gets its verdict here: packets Snoop does not
    /// track, or cannot parse, are accepted unchanged.
    fn on_packets(&mut self, now: Instant) {
        let engine = &mut self.engine;
        let tx = &mut self.tx;
        self.queue.drain(BUDGET, |pkt| {
            let Ok(ip) = crate::wire::ip::parse(pkt.payload) else {
                return nfqueue::Verdict::Accept;
            };
            let Some(dir) = engine.classify(&ip, pkt.indev, pkt.outdev) else {
                return nfqueue::Verdict::Accept;
            };
            match engine.on_packet(pkt.payload, dir, now, tx) {
                snoop::Verdict::Accept => nfqueue::Verdict::Accept,
                snoop::Verdict::Drop => nfqueue::Verdict::Drop,
            }
        });
    }
}

/// A startup failure, worded for the admin, with its exit code.
pub struct StartError {
    pub message: String,
    pub exit_code: u8,
}

fn start_error(message: String) -> StartError {
    StartError {
        message,
        exit_code: 1,
    }
}

fn queue_error(e: crate::nfqueue::OpenError) -> StartError {
    StartError {
        exit_code: e.exit_code(),
        message: e.message,
    }
}

fn listener_error(addr: SocketAddr, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => format!(
            "port {} is in use by another program: stop it or choose another --port",
            addr.port()
        ),
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "transparent sockets need root or CAP_NET_ADMIN".to_string()
        }
        _ => format!("listener on {addr}: {e}"),
    }
}

/// The status socket; its file goes when pepwrt does.
struct Control {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the control socket, refusing to steal one a live pepwrt answers
/// on; a stale file from a crashed run is replaced.
fn bind_control(path: &Path) -> Result<Control, String> {
    if UnixStream::connect(path).is_ok() {
        return Err(format!(
            "another pepwrt is running (its control socket {} answers)",
            path.display()
        ));
    }
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    // Status shows every client's address: root's alone.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("control socket {}: {e}", path.display()))?;
    let control = Control {
        listener,
        path: path.to_path_buf(),
    };
    control
        .listener
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    Ok(control)
}

impl Proxy {
    pub fn start(cfg: Config) -> Result<Proxy, StartError> {
        // First, so that a second pepwrt is told so before anything else.
        let control = bind_control(&cfg.control_path).map_err(start_error)?;
        let mut listeners = Vec::new();
        let mut addrs = vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), cfg.port)];
        if cfg.ipv6 {
            addrs.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), cfg.port));
        }
        for addr in addrs {
            let leg = &cfg.client_leg;
            match socket::transparent_listener(addr, 1024, |fd| {
                tuning::before_handshake(fd, leg, None)
            }) {
                Ok(l) => listeners.push(l),
                Err(e) if addr.is_ipv6() && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                    log::warn!("IPv6 is not available in this kernel; intercepting IPv4 only");
                }
                Err(e) => return Err(start_error(listener_error(addr, &e))),
            }
        }
        let queue = NfQueue::open(cfg.queue, SYN_COPY_RANGE, 1024).map_err(queue_error)?;
        let snoop = match &cfg.snoop {
            Some(s) => Some(SnoopRuntime::start(&cfg, s)?),
            None => None,
        };
        let signals =
            SignalPipe::install(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1])
                .map_err(|e| start_error(format!("signal handlers: {e}")))?;
        let want = 2 * u64::from(cfg.max_conns) + 32;
        match crate::sys::raise_nofile(want) {
            Ok(have) if have < want => log::warn!(
                "open-file limit {have} is below the {want} that --max-conns {} needs; raise it (procd: limits nofile)",
                cfg.max_conns
            ),
            Ok(_) => {}
            Err(e) => log::warn!("open-file limit: {e}"),
        }
        let pool = Pool::new(cfg.max_conns, cfg.buffer_bytes as usize);
        let fds = 8 + 2 * usize::from(cfg.max_conns);
        // The status report is rebuilt in place; reserve what a full table
        // needs so reporting does not allocate either.
        let report = String::with_capacity(4096 + 256 * usize::from(cfg.max_conns));
        log::info!(
            "started: queue {}, port {}, {} connections of 2 x {} bytes ({} KiB of buffers)",
            cfg.queue,
            cfg.port,
            cfg.max_conns,
            cfg.buffer_bytes,
            u64::from(cfg.max_conns) * 2 * u64::from(cfg.buffer_bytes) / 1024
        );
        Ok(Proxy {
            cfg,
            pool,
            listeners,
            queue: Some(queue),
            admission: Admission::new(),
            snoop,
            control,
            signals,
            counters: Counters::default(),
            started: Instant::now(),
            pollset: PollSet::with_capacity(fds),
            report,
            stop_at: None,
            accept_paused: false,
        })
    }

    /// Runs until a stop signal and the drain that follows.
    pub fn run(&mut self) -> io::Result<()> {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
            if let Some(stop) = self.stop_at {
                if self.pool.active_ids().next().is_none() || now >= stop {
                    self.close_all(End::Shutdown, now);
                    log::info!("stopped");
                    return Ok(());
                }
            }
            let mut wake = next_tick;
            if let Some(sn) = &mut self.snoop {
                if sn.engine.next_deadline().is_some_and(|d| d <= now) {
                    sn.engine.on_timer(now, &mut sn.tx);
                }
                if let Some(d) = sn.engine.next_deadline() {
                    wake = wake.min(d);
                }
            }
            self.build_pollset();
            poll::poll(
                &mut self.pollset.fds,
                Some(wake.saturating_duration_since(now)),
            )?;
            let now = Instant::now();
            for i in 0..self.pollset.fds.len() {
                let revents = self.pollset.fds[i].revents;
                if revents == 0 {
                    continue;
                }
                match self.pollset.tokens[i] {
                    Token::Signals => self.on_signals(now),
                    Token::SynQueue => self.on_syns(now),
                    Token::Control => self.on_control(now),
                    Token::Listener(l) => self.on_accept(l, now),
                    Token::Conn(id) => {
                        let ready = Ready {
                            client: revents,
                            server: self.pollset.fds[i + 1].revents,
                        };
                        self.on_conn(id, ready, now);
                    }
                    Token::ConnServer => {
                        if self.pollset.fds[i - 1].revents == 0 {
                            if let Token::Conn(id) = self.pollset.tokens[i - 1] {
                                self.on_conn(
                                    id,
                                    Ready {
                                        client: 0,
                                        server: revents,
                                    },
                                    now,
                                );
                            }
                        }
                    }
                    Token::Snoop => {
                        if let Some(sn) = &mut self.snoop {
                            sn.on_packets(now);
                        }
                    }
                }
            }
        }
    }

    fn build_pollset(&mut self) {
        let set = &mut self.pollset;
        set.clear();
        set.add(self.signals.fd(), poll::IN, Token::Signals);
        set.add(self.control.listener.as_raw_fd(), poll::IN, Token::Control);
        if let Some(q) = &self.queue {
            set.add(q.fd(), poll::IN, Token::SynQueue);
        }
        if let Some(sn) = &self.snoop {
            set.add(sn.queue.fd(), poll::IN, Token::Snoop);
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if !self.accept_paused {
                set.add(l.as_raw_fd(), poll::IN, Token::Listener(i));
            }
        }
        for (i, slot) in self.pool.slots().iter().enumerate() {
            let SlotState::Active(conn) = &slot.state else {
                continue;
            };
            let (c, s) = conn.interest(&slot.up, &slot.down);
            let id = ConnId {
                slot: i as u16,
                generation: slot.generation,
            };
            set.add(conn.client.as_raw_fd(), c, Token::Conn(id));
            set.add(conn.server.as_raw_fd(), s, Token::ConnServer);
        }
    }

    fn on_signals(&mut self, now: Instant) {
        while let Some(sig) = self.signals.next() {
            match sig {
                libc::SIGTERM | libc::SIGINT => self.begin_stop(now),
                libc::SIGHUP => {
                    crate::logger::reopen();
                    log::info!("log reopened");
                }
                libc::SIGUSR1 => self.log_stats(now),
                _ => {}
            }
        }
    }

    /// Stops taking new connections: the queue is unbound (queue bypass
    /// lets new SYNs through unsplit) and the listeners close; live
    /// connections get DRAIN to finish.
    fn begin_stop(&mut self, now: Instant) {
        if self.stop_at.is_some() {
            return;
        }
        log::info!(
            "stopping: no new connections, {} live ones get {} s to finish",
            self.pool.active_ids().count(),
            DRAIN.as_secs()
        );
        // SYNs already queued pass unsplit (closing the queue would drop
        // them); handshakes already in the backlog are taken in and get the
        // drain time like the rest.
        if let Some(q) = &mut self.queue {
            let (cfg, counters) = (&self.cfg, &mut self.counters);
            q.drain(usize::MAX, |pkt| {
                counters.passed_policy += 1;
                nfqueue::Verdict::RepeatWithMark(admission::mark_for(
                    cfg,
                    Decision::PassPolicy,
                    pkt.mark,
                ))
            });
        }
        if let Some(sn) = &mut self.snoop {
            sn.queue.drain(usize::MAX, |_| nfqueue::Verdict::Accept);
        }
        self.queue = None;
        self.snoop = None;
        for i in 0..self.listeners.len() {
            self.on_accept(i, now);
        }
        self.listeners.clear();
        self.stop_at = Some(now + DRAIN);
    }

    /// The status report over the proxy's state, rendered into the
    /// preallocated buffer (taken out and put back, keeping its capacity).
    fn render_report(&mut self, now: Instant, json: bool) {
        let mut out = std::mem::take(&mut self.report);
        out.clear();
        let snoop_json = self
            .snoop
            .as_ref()
            .map(|sn| move |out: &mut String| sn.engine.write_status_json(out));
        let report = Report {
            counters: &self.counters,
            pool: &self.pool,
            started: self.started,
            now,
            buffer_bytes: self.cfg.buffer_bytes,
            snoop: snoop_json.as_ref().map(|f| f as &dyn Fn(&mut String)),
            link: self.cfg.link_in_force(),
        };
        if json {
            report.write_json(&mut out);
        } else {
            report.write_text(&mut out);
        }
        self.report = out;
    }

    fn log_stats(&mut self, now: Instant) {
        self.render_report(now, false);
        for line in self.report.lines() {
            log::info!("{line}");
        }
    }

    fn on_syns(&mut self, now: Instant) {
        let Some(queue) = &mut self.queue else { return };
        let (cfg, pool, counters, admission) = (
            &self.cfg,
            &mut self.pool,
            &mut self.counters,
            &mut self.admission,
        );
        queue.drain(BUDGET, |pkt| {
            let verdict = admission.decide(cfg, pool, pkt.payload, now);
            let counter = match verdict.decision {
                Decision::Split => &mut counters.split,
                Decision::PassFull => &mut counters.passed_full,
                Decision::PassPolicy => &mut counters.passed_policy,
                Decision::Malformed => &mut counters.malformed,
            };
            *counter += u64::from(!verdict.repeat);
            match verdict.decision {
                Decision::Malformed => nfqueue::Verdict::Accept,
                d => nfqueue::Verdict::RepeatWithMark(admission::mark_for(cfg, d, pkt.mark)),
            }
        });
    }

    fn on_accept(&mut self, which: usize, now: Instant) {
        for _ in 0..BUDGET {
            let Some(listener) = self.listeners.get(which) else {
                return;
            };
            let (client, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The client gave up before we got to it: next one.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO)) => {
                    continue;
                }
                Err(e) => {
                    // Out of fds or memory: the listener stays readable, so
                    // stop polling it until the next tick instead of
                    // spinning; the backlog waits.
                    log::warn!(
                        "accept: {}; pausing new connections for a second",
                        Errno::of(&e)
                    );
                    self.accept_paused = true;
                    return;
                }
            };
            self.admit(client, peer, now);
        }
    }

    /// Pairs an accepted client with its reservation and starts the
    /// outgoing leg.
    fn admit(&mut self, client: TcpStream, peer: SocketAddr, now: Instant) {
        let Ok(local) = client.local_addr() else {
            return;
        };
        let tuple = FourTuple {
            client: peer,
            server: local,
        };
        let Some((id, syn)) = self.pool.claim(&tuple) else {
            // Not a SYN pepwrt admitted: a direct connection to the
            // listener, or a late one. Never an open proxy.
            self.counters.refused += 1;
            log::debug!("refused {peer} -> {local}: not admitted");
            socket::set_abortive_close(&client);
            return;
        };
        let _ = client.set_nonblocking(true);
        if let Err(e) = tuning::after_handshake(client.as_raw_fd(), &self.cfg.client_leg) {
            log::debug!("client leg options: {e}");
        }
        let src = match self.cfg.outgoing_source {
            OutgoingSource::Client => Some(peer.ip()),
            OutgoingSource::Router => None,
        };
        let leg = &self.cfg.server_leg;
        let server = socket::connect(local, src, self.cfg.server_fastopen, |fd| {
            // The client's DSCP travels on; the server leg's MSS is what the
            // client asked for unless configured.
            if let Err(e) = socket::set_tos(fd, local.is_ipv4(), syn.tos) {
                log::debug!("copying TOS: {e}");
            }
            tuning::before_handshake(fd, leg, syn.options.mss)
        });
        let server = match server {
            Ok(s) => s,
            Err(e) => {
                self.counters.connect_failed += 1;
                log::info!(
                    "{peer} -> {local}: connect failed at once: {}",
                    Errno::of(&e)
                );
                socket::set_abortive_close(&client);
                self.pool.release(id);
                return;
            }
        };
        let deadline = now + self.cfg.connect_timeout;
        if let Some(slot) = self.pool.get_mut(id) {
            slot.state = SlotState::Active(Conn::new(client, server, tuple, deadline, now));
            self.counters.total += 1;
        }
    }

    fn on_conn(&mut self, id: ConnId, ready: Ready, now: Instant) {
        let Some(slot) = self.pool.get_mut(id) else {
            return;
        };
        let SlotState::Active(conn) = &mut slot.state else {
            return;
        };
        let step = conn.run(ready, &mut slot.up, &mut slot.down, now);
        if let Step::Done(end) = step {
            self.finish(id, end, now);
        }
    }

    /// Logs the connection's close line, adds its bytes, frees its slot.
    fn finish(&mut self, id: ConnId, end: End, now: Instant) {
        let Some(slot) = self.pool.get_mut(id) else {
            return;
        };
        let SlotState::Active(conn) = &slot.state else {
            return;
        };
        self.counters.bytes_up += conn.bytes_up();
        self.counters.bytes_down += conn.bytes_down();
        if let End::ConnectFailed(_) | End::ConnectTimeout = end {
            self.counters.connect_failed += 1;
        }
        log::info!(
            "{} -> {}: {}{} after {:.1} s, {} bytes up, {} bytes down",
            conn.tuple.client,
            conn.tuple.server,
            end.describe(),
            Reason(end),
            now.duration_since(conn.started).as_secs_f64(),
            conn.bytes_up(),
            conn.bytes_down()
        );
        self.pool.release(id);
    }

    fn tick(&mut self, now: Instant) {
        tuning::rebalance(&self.cfg);
        self.accept_paused = false;
        self.pool.expire_reservations(now);
        let idle = self.cfg.idle_timeout;
        for i in 0..self.pool.capacity() {
            let Some(id) = self.pool.active_id_at(i) else {
                continue;
            };
            let Some(slot) = self.pool.get_mut(id) else {
                continue;
            };
            let SlotState::Active(conn) = &mut slot.state else {
                continue;
            };
            if let Step::Done(end) = conn.check_timers(now, idle, &mut slot.up, &mut slot.down) {
                self.finish(id, end, now);
            }
        }
    }

    fn close_all(&mut self, end: End, now: Instant) {
        for i in 0..self.pool.capacity() {
            let Some(id) = self.pool.active_id_at(i) else {
                continue;
            };
            if let Some(slot) = self.pool.get_mut(id) {
                if let SlotState::Active(conn) = &mut slot.state {
                    conn.abort(end);
                }
            }
            self.finish(id, end, now);
        }
    }

    /// Answers one status request: the client writes `json` or `text` and
    /// reads the report until EOF. Bounded by short socket timeouts, as
    /// the control socket is root's alone.
    fn on_control(&mut self, now: Instant) {
        let Ok((mut stream, _)) = self.control.listener.accept() else {
            return;
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
        let _ = stream.set_write_timeout(Some(Duration::from_millis(250)));
        let mut req = [0u8; 16];
        let n = stream.read(&mut req).unwrap_or(0);
        self.render_report(now, req[..n].starts_with(b"json"));
        let _ = stream.write_all(self.report.as_bytes());
    }
}

/// The reason behind a failed connect, for the close line (": No route to host").
struct Reason(End);

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            End::ConnectFailed(e) => write!(f, ": {}", crate::sys::Errno(e)),
            _ => Ok(()),
        }
    }
}

/// `pepwrt status`: asks the running daemon for its report.
pub fn query_status(path: &Path, json: bool) -> Result<String, String> {
    let mut s = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            format!(
                "pepwrt is not running (no control socket at {})",
                path.display()
            )
        }
        io::ErrorKind::PermissionDenied => {
            format!("{}: permission denied (run as root)", path.display())
        }
        _ => format!("{}: {e}", path.display()),
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(if json { b"json\n" } else { b"text\n" })
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("reading status: {e}"))?;
    Ok(out)
}
