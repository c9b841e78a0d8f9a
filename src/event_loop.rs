//! The one loop: owns the readiness set, the periodic tick and signals,
//! and dispatches readiness to admission, the listeners, the connections,
//! the control socket and Snoop. No other module waits.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::admission::SynQueue;
use crate::config::{Config, LinkLeg};
use crate::control::{Control, Format};
use crate::error::StartError;
use crate::learn::LinkEstimate;
use crate::pool::{ConnId, Pool};
use crate::relay::{Conn, End, Handover, Intake, LinkShare, ProbeSkip, Ready, Step};
use crate::snoop::SnoopRuntime;
use crate::stats::{Counters, Report};
use crate::sys::poll::{self, Events, Poller};
use crate::sys::signals::SignalPipe;
use crate::sys::socket;
use crate::token::Token;

/// Housekeeping interval: timeouts are in seconds, so a one-second tick
/// bounds their error without a timer per connection.
const TICK: Duration = Duration::from_secs(1);
/// After SIGTERM, live connections get this long to finish (procd sends
/// SIGKILL after 5 s).
const DRAIN: Duration = Duration::from_secs(3);
/// How often connections that wait for their last acknowledgements are
/// looked at (they hold their slot until then).
const CLOSING_CHECK: Duration = Duration::from_millis(10);
/// Packets and accepts handled per wake-up before connections get a turn.
const BUDGET: usize = 256;

/// The status report over the proxy's state. A macro, not a method, so
/// that it borrows only these fields and the control socket stays free to
/// write the report out.
macro_rules! report {
    ($p:expr, $now:expr) => {
        Report {
            counters: &$p.counters,
            syn_dropped: $p.syns.as_ref().map_or(0, SynQueue::dropped),
            snoop: $p.snoop.as_ref().map(SnoopRuntime::engine),
            pool: &$p.pool,
            started: $p.started,
            buffer_bytes: $p.cfg.buffer_bytes,
            link: $p.cfg.link_in_force(),
            learned: $p.learned.estimate(),
            now: $now,
        }
    };
}

pub struct Proxy {
    cfg: Config,
    pool: Pool<Conn>,
    poller: Poller,
    /// Each slot's registered interest (client, server), index for index.
    watched: Vec<[Events; 2]>,
    intake: Intake,
    /// The link's rate shared between long legs, with link settings.
    share: Option<LinkShare>,
    /// Hands long legs held back by the peer's window from BBR to cubic.
    handover: Option<Handover>,
    /// Keeps paced BBR long legs from idling for BBR's RTT probe.
    probe_skip: Option<ProbeSkip>,
    /// Which leg crosses the long link, and what those legs measured.
    long_leg: LinkLeg,
    learned: LinkEstimate,
    syns: Option<SynQueue>,
    snoop: Option<SnoopRuntime>,
    control: Control,
    signals: SignalPipe,
    counters: Counters,
    started: Instant,
    stop_at: Option<Instant>,
    /// Connections waiting for their last acknowledgements; looked at
    /// every CLOSING_CHECK, since no readiness says when they come.
    closing: Vec<ConnId>,
}

impl Proxy {
    pub fn start(cfg: Config) -> Result<Proxy, StartError> {
        // The status report is rendered in place; reserve what a full table
        // needs so reporting does not allocate.
        let report = 4096 + 256 * usize::from(cfg.max_conns);
        // First, so that a second pepwrt is told so before anything else.
        let control = Control::bind(&cfg.control_path, report)?;
        let intake = Intake::open(&cfg)?;
        let syns = SynQueue::open(&cfg)?;
        let snoop = match &cfg.snoop {
            Some(s) => Some(SnoopRuntime::start(&cfg, s)?),
            None => None,
        };
        let signals =
            SignalPipe::install(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1])
                .map_err(|e| StartError::new(format!("signal handlers: {e}")))?;
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
        let poller = Poller::new(BUDGET).map_err(|e| StartError::new(format!("epoll: {e}")))?;
        log::info!(
            "started: queue {}, port {}, {} connections of 2 x {} bytes ({} KiB of buffers)",
            cfg.queue,
            cfg.port,
            cfg.max_conns,
            cfg.buffer_bytes,
            u64::from(cfg.max_conns) * 2 * u64::from(cfg.buffer_bytes) / 1024
        );
        let pool_capacity = pool.capacity();
        let mut proxy = Proxy {
            watched: vec![[0; 2]; pool_capacity],
            pool,
            poller,
            intake,
            share: LinkShare::new(&cfg),
            handover: Handover::new(&cfg),
            probe_skip: ProbeSkip::new(&cfg),
            long_leg: cfg.link.map_or(LinkLeg::Server, |l| l.leg),
            learned: LinkEstimate::default(),
            syns: Some(syns),
            snoop,
            control,
            signals,
            counters: Counters::default(),
            started: Instant::now(),
            stop_at: None,
            closing: Vec::with_capacity(pool_capacity),
            cfg,
        };
        proxy
            .register_fixed()
            .map_err(|e| StartError::new(format!("epoll: {e}")))?;
        Ok(proxy)
    }

    /// Registers the sockets that live as long as the proxy.
    fn register_fixed(&mut self) -> io::Result<()> {
        let mut fixed: Vec<(RawFd, Token)> = vec![
            (self.signals.fd(), Token::Signals),
            (self.control.listener_fd(), Token::Control),
        ];
        if let Some(q) = &self.syns {
            fixed.push((q.fd(), Token::SynQueue));
        }
        if let Some(sn) = &self.snoop {
            fixed.push((sn.fd(), Token::Snoop));
        }
        for (fd, token) in fixed {
            self.poller.watch(fd, 0, poll::IN, token.encode())?;
        }
        self.watch_listeners(poll::IN);
        Ok(())
    }

    fn watch_listeners(&mut self, events: Events) {
        let old = if events == 0 { poll::IN } else { 0 };
        for (i, fd) in self.intake.fds() {
            let token = Token::Listener(i).encode();
            if let Err(e) = self.poller.watch(fd, old, events, token) {
                log::warn!("listener: {e}");
            }
        }
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
            if self
                .stop_at
                .is_some_and(|stop| self.pool.active_count() == 0 || now >= stop)
            {
                self.close_all(End::Shutdown, now);
                log::info!("stopped");
                return Ok(());
            }
            self.check_closing(now);
            let snoop_due = self.snoop.as_mut().and_then(|sn| sn.on_timer(now));
            let mut wake = snoop_due.map_or(next_tick, |d| d.min(next_tick));
            if let Some(share) = &mut self.share {
                share.on_timer(&mut self.pool, now);
                wake = share.due().map_or(wake, |d| d.min(wake));
            }
            if !self.closing.is_empty() {
                wake = wake.min(now + CLOSING_CHECK);
            }
            let mut batch = [0u64; BUDGET];
            let mut ready = [0 as Events; BUDGET];
            let mut n = 0;
            for ev in self.poller.wait(wake.saturating_duration_since(now))? {
                batch[n] = ev.token;
                ready[n] = ev.events;
                n += 1;
            }
            let now = Instant::now();
            for (&raw, &events) in batch[..n].iter().zip(&ready[..n]) {
                let Some(token) = Token::decode(raw, &self.pool) else {
                    continue;
                };
                self.dispatch(token, events, now);
            }
        }
    }

    fn dispatch(&mut self, token: Token, events: Events, now: Instant) {
        match token {
            Token::Signals => self.on_signals(now),
            Token::SynQueue => {
                if let Some(q) = &mut self.syns {
                    let (cfg, pool, counters) = (&self.cfg, &mut self.pool, &mut self.counters);
                    q.serve(cfg, pool, counters, BUDGET, true, now);
                }
            }
            Token::Snoop => {
                if let Some(sn) = &mut self.snoop {
                    sn.on_packets(BUDGET, now);
                }
            }
            Token::Control => {
                self.control.accept(now);
                self.sync_control();
            }
            Token::Session(i) => {
                let report = report!(self, now);
                self.control
                    .on_ready(i, &mut |f, out| report.render(f, out));
                self.sync_control();
            }
            Token::Listener(l) => self.on_accept(l, now),
            Token::Client(id) => self.on_conn(
                id,
                Ready {
                    client: events,
                    server: 0,
                },
                now,
            ),
            Token::Server(id) => self.on_conn(
                id,
                Ready {
                    client: 0,
                    server: events,
                },
                now,
            ),
        }
    }

    fn sync_control(&mut self) {
        let wants = self.control.wants_clients();
        let fd = self.control.listener_fd();
        let token = Token::Control.encode();
        let (old, new) = if wants { (0, poll::IN) } else { (poll::IN, 0) };
        // Re-adding an fd already there fails with EEXIST, which is fine.
        let _ = self.poller.watch(fd, old, new, token);
        self.control
            .sync(&self.poller, |i| Token::Session(i).encode());
    }

    fn on_signals(&mut self, now: Instant) {
        while let Some(sig) = self.signals.next() {
            match sig {
                libc::SIGTERM | libc::SIGINT => self.begin_stop(now),
                libc::SIGHUP => {
                    crate::logger::reopen();
                    log::info!("log reopened");
                }
                libc::SIGUSR1 => {
                    let mut text = String::new();
                    report!(self, now).render(Format::Text, &mut text);
                    for line in text.lines() {
                        log::info!("{line}");
                    }
                }
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
            self.pool.active_count(),
            DRAIN.as_secs()
        );
        // SYNs already queued pass unsplit (closing the queue would drop
        // them); handshakes already in the backlog are taken in and get the
        // drain time like the rest.
        if let Some(q) = &mut self.syns {
            let (cfg, pool, counters) = (&self.cfg, &mut self.pool, &mut self.counters);
            q.serve(cfg, pool, counters, usize::MAX, false, now);
        }
        if let Some(sn) = &mut self.snoop {
            sn.release();
        }
        self.syns = None;
        self.snoop = None;
        for i in 0..self.intake.fds().count() {
            self.on_accept(i, now);
        }
        self.intake.close();
        self.stop_at = Some(now + DRAIN);
    }

    fn on_accept(&mut self, which: usize, now: Instant) {
        let accepted = self.intake.accept(which, &self.cfg, &mut self.pool, now);
        self.counters.on_accepted(&accepted);
        if let (Some(share), false) = (&mut self.share, accepted.new.is_empty()) {
            share.apply(&mut self.pool, now);
        }
        for &id in &accepted.new {
            self.watched[id.index()] = [0; 2];
            self.sync_conn(id);
        }
        if accepted.paused {
            self.watch_listeners(0);
        }
    }

    /// Brings a connection's registration up to date with what it wants.
    fn sync_conn(&mut self, id: ConnId) {
        let Some(live) = self.pool.live(id) else {
            return;
        };
        let want = live.conn.interest(live.up, live.down);
        let (client, server) = live.conn.fds();
        let old = self.watched[id.index()];
        let tokens = [Token::Client(id), Token::Server(id)];
        let mut now_watched = old;
        for (k, (fd, events)) in [(client, want.0), (server, want.1)].into_iter().enumerate() {
            match self.poller.watch(fd, old[k], events, tokens[k].encode()) {
                Ok(()) => now_watched[k] = events,
                Err(e) => log::warn!("watching a connection: {e}"),
            }
        }
        self.watched[id.index()] = now_watched;
    }

    fn on_conn(&mut self, id: ConnId, ready: Ready, now: Instant) {
        let Some(live) = self.pool.live(id) else {
            return;
        };
        match live.conn.run(ready, live.up, live.down, now) {
            Step::Done(end) => self.finish(id, end, now),
            Step::Continue => {
                if live.conn.is_closing() && !self.closing.contains(&id) {
                    self.closing.push(id);
                }
                self.sync_conn(id);
            }
        }
    }

    /// Ends the connections whose last acknowledgements came.
    fn check_closing(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.closing.len() {
            let id = self.closing[i];
            let step = self.pool.live(id).map(|live| {
                let idle = self.cfg.idle_timeout;
                (
                    live.conn.check_timers(now, idle, live.up, live.down),
                    live.conn.is_closing(),
                )
            });
            match step {
                Some((Step::Continue, true)) => i += 1,
                Some((Step::Done(end), _)) => {
                    self.closing.swap_remove(i);
                    self.finish(id, end, now);
                }
                _ => {
                    self.closing.swap_remove(i);
                }
            }
        }
    }

    /// Logs the connection's close line, adds its bytes, frees its slot
    /// (closing its sockets, which leaves the readiness set with them).
    fn finish(&mut self, id: ConnId, end: End, now: Instant) {
        let Some(conn) = self.pool.release(id) else {
            return;
        };
        self.watched[id.index()] = [0; 2];
        self.intake
            .forget_decision(&conn.tuple, self.cfg.mark_mask());
        self.counters.on_end(&conn, end);
        log::info!("{}", conn.close_line(end, now));
    }

    fn tick(&mut self, now: Instant) {
        if self.intake.resume() {
            self.watch_listeners(poll::IN);
        }
        self.pool.expire_reservations(now);
        if let Some(q) = &mut self.syns {
            q.settle();
        }
        if let Some(share) = &mut self.share {
            share.apply(&mut self.pool, now);
        }
        self.watch_long_legs(now);
        let report = report!(self, now);
        self.control
            .expire(now, &mut |f, out| report.render(f, out));
        self.sync_control();
        let idle = self.cfg.idle_timeout;
        let mut cursor = 0;
        while let Some(id) = self.pool.next_active(&mut cursor) {
            let Some(live) = self.pool.live(id) else {
                continue;
            };
            match live.conn.check_timers(now, idle, live.up, live.down) {
                Step::Done(end) => self.finish(id, end, now),
                Step::Continue => self.sync_conn(id),
            }
        }
    }

    /// Each live connection's leg over the long link, once a tick: what
    /// it measured feeds the link estimate, a leg the peer's window holds
    /// back may leave BBR (relay/window.rs), and a paced BBR leg starts
    /// its BBR afresh before the RTT probe is due (relay/rtt_probe.rs).
    fn watch_long_legs(&mut self, now: Instant) {
        let mut cursor = 0;
        while let Some(id) = self.pool.next_active(&mut cursor) {
            let Some(live) = self.pool.live(id) else {
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
                self.counters.handed_to_cubic += 1;
            }
            if let Some(skip) = &self.probe_skip
                && skip.look(live.conn, fd, now)
            {
                self.counters.rtt_probes_skipped += 1;
            }
        }
    }

    fn close_all(&mut self, end: End, now: Instant) {
        let mut cursor = 0;
        while let Some(id) = self.pool.next_active(&mut cursor) {
            if let Some(live) = self.pool.live(id) {
                live.conn.abort(end);
            }
            self.finish(id, end, now);
        }
    }
}
