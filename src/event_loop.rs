//! The one loop: owns the readiness set, the deadlines and signals, and
//! dispatches readiness and deadlines to admission, the listeners, the
//! connections, the link, the control socket and Snoop. No other module
//! waits: each says what it wants to read or write, and when it next
//! needs the loop without a readiness event.

use std::time::{Duration, Instant};

use crate::admission::SynQueue;
use crate::config::Config;
use crate::control::Control;
use crate::deadline::{Deadlines, Keyed};
use crate::error::StartError;
use crate::link::LinkRuntime;
use crate::pool::{ConnId, Pool};
use crate::relay::{Conn, End, Intake, Ready, Step};
use crate::shutdown::{self, Drain, Request};
use crate::snoop::SnoopRuntime;
use crate::stats::{Counters, Report};
use crate::sys::poll::{self, Events, Poller};
use crate::sys::signals::SignalPipe;
use crate::token::Token;

/// Housekeeping interval: reservations, the SYN queue's loss count, the
/// link's look at the long legs, control sessions' deadlines.
const TICK: Duration = Duration::from_secs(1);
/// Packets, accepts or deadlines handled per wake-up before others' turn.
const BUDGET: usize = 256;

/// What a deadline wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Tick,
    /// The link's own timer (sharing its rate between sending legs).
    Link,
    Snoop,
    /// The drain's end.
    Stop,
    /// A connection's timeout, or its next look for acknowledgements.
    Conn(ConnId),
}

/// Wakes before the connections' own, one each.
const FIXED_WAKES: usize = 4;

impl Keyed for Wake {
    fn key(self) -> usize {
        match self {
            Wake::Tick => 0,
            Wake::Link => 1,
            Wake::Snoop => 2,
            Wake::Stop => 3,
            Wake::Conn(id) => FIXED_WAKES + id.index(),
        }
    }
}

/// The connections and what serves them, apart from the loop's machinery:
/// a status report borrows them while the control socket writes.
struct State {
    cfg: Config,
    pool: Pool<Conn>,
    link: LinkRuntime,
    syns: Option<SynQueue>,
    snoop: Option<SnoopRuntime>,
    counters: Counters,
    started: Instant,
}

impl State {
    fn report(&self, now: Instant) -> Report<'_> {
        Report {
            counters: &self.counters,
            syn_dropped: self.syns.as_ref().map_or(0, SynQueue::dropped),
            snoop: self.snoop.as_ref().map(SnoopRuntime::engine),
            pool: &self.pool,
            started: self.started,
            buffer_bytes: self.cfg.buffer_bytes,
            link: self.link.in_force(),
            learned: self.link.estimate(),
            now,
        }
    }
}

pub struct Proxy {
    st: State,
    poller: Poller,
    timers: Deadlines<Wake>,
    intake: Intake,
    control: Control,
    signals: SignalPipe,
    drain: Drain,
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
        let snoop = cfg.snoop.as_ref().map(|s| SnoopRuntime::start(&cfg, s));
        let snoop = snoop.transpose()?;
        let signals = SignalPipe::install(&shutdown::SIGNALS)
            .map_err(|e| StartError::new(format!("signal handlers: {e}")))?;
        // Two sockets per connection, and the pipes lent to them.
        let (pool, want) = crate::relay::pool_for(&cfg);
        let epoll = |e| StartError::new(format!("epoll: {e}"));
        // Sockets beyond the open-file limit cannot exist; the poller serves
        // any beyond its table, only less cheaply.
        let mut poller = Poller::new(want as usize, BUDGET).map_err(epoll)?;
        // The sockets that live as long as the proxy.
        let fixed = [
            Some((signals.fd(), Token::Signals)),
            Some((syns.fd(), Token::SynQueue)),
            snoop.as_ref().map(|sn| (sn.fd(), Token::Snoop)),
        ];
        for (fd, token) in fixed.into_iter().flatten() {
            poller.set(fd, poll::IN, token.encode()).map_err(epoll)?;
        }
        log::info!(
            "started: queue {}, port {}, {} connections, {} pipes of up to {} bytes",
            cfg.queue,
            cfg.port,
            pool.capacity(),
            pool.pipes().1,
            cfg.buffer_bytes,
        );
        let mut proxy = Proxy {
            timers: Deadlines::new(FIXED_WAKES + pool.capacity()),
            st: State {
                link: LinkRuntime::new(cfg.link_setup(), pool.capacity()),
                pool,
                syns: Some(syns),
                snoop,
                counters: Counters::default(),
                started: Instant::now(),
                cfg,
            },
            poller,
            intake,
            control,
            signals,
            drain: Drain::default(),
        };
        proxy.watch_listeners(poll::IN);
        Ok(proxy)
    }

    fn watch_listeners(&mut self, events: Events) {
        for (i, fd) in self.intake.fds() {
            if let Err(e) = self.poller.set(fd, events, Token::Listener(i).encode()) {
                log::warn!("listener: {e}");
            }
        }
    }

    /// Runs until a stop signal and the drain that follows.
    pub fn run(&mut self) -> std::io::Result<()> {
        self.timers.set(Wake::Tick, Instant::now() + TICK);
        loop {
            let now = Instant::now();
            // Bounded, so a deadline that keeps coming due cannot hold the loop.
            for _ in 0..BUDGET {
                let Some(wake) = self.timers.pop_due(now) else {
                    break;
                };
                self.on_deadline(wake, now);
            }
            self.wake_waiters(now);
            if self.drain.is_over(self.st.pool.active_count(), now) {
                self.close_all(now);
                log::info!("stopped");
                return Ok(());
            }
            self.sync_control();
            let next = self.timers.next().unwrap_or(now + TICK);
            let n = self.poller.wait(next.saturating_duration_since(now))?;
            let now = Instant::now();
            for i in 0..n {
                let ev = self.poller.event(i);
                if let Some(token) = Token::decode(ev.token, &self.st.pool) {
                    self.dispatch(token, ev.events, now);
                }
            }
        }
    }

    fn on_deadline(&mut self, wake: Wake, now: Instant) {
        match wake {
            Wake::Tick => self.tick(now),
            Wake::Link => self.timers.set_opt(Wake::Link, self.st.link.on_timer(now)),
            Wake::Snoop => {
                let due = self.st.snoop.as_mut().and_then(|sn| sn.on_timer(now));
                self.timers.set_opt(Wake::Snoop, due);
            }
            // The loop checks the drain after every round of deadlines.
            Wake::Stop => {}
            Wake::Conn(id) => self.on_conn(id, None, now),
        }
    }

    fn dispatch(&mut self, token: Token, events: Events, now: Instant) {
        match token {
            Token::Signals => self.on_signals(now),
            Token::SynQueue => self.serve_syns(BUDGET, true, now),
            Token::Snoop => {
                let due = self
                    .st
                    .snoop
                    .as_mut()
                    .and_then(|sn| sn.on_packets(BUDGET, now));
                self.timers.set_opt(Wake::Snoop, due);
            }
            Token::Control => self.control.accept(now),
            Token::Session(i) => {
                let st = &self.st;
                let render = &mut |f, out: &mut String| st.report(now).render(f, out);
                self.control.on_ready(i, &mut self.poller, render);
            }
            Token::Listener(l) => self.on_accept(l, now),
            Token::Client(id) => self.on_conn(id, Some([events, 0]), now),
            Token::Server(id) => self.on_conn(id, Some([0, events]), now),
        }
    }

    /// Admission on up to `budget` queued SYNs, counting what it decided.
    fn serve_syns(&mut self, budget: usize, split: bool, now: Instant) {
        if let Some(q) = &mut self.st.syns {
            let decided = q.serve(&self.st.cfg, &mut self.st.pool, budget, split, now);
            self.st.counters.on_decided(&decided);
        }
    }

    /// Once a round, before waiting: what the control sessions want now.
    fn sync_control(&mut self) {
        let token = |s: Option<usize>| s.map_or(Token::Control, Token::Session).encode();
        self.control.sync(&mut self.poller, token);
    }

    fn on_signals(&mut self, now: Instant) {
        while let Some(sig) = self.signals.next() {
            match Request::from_signal(sig) {
                Some(Request::Stop) => self.begin_stop(now),
                Some(Request::ReopenLog) => {
                    crate::logger::reopen();
                    log::info!("log reopened");
                }
                Some(Request::LogStatus) => self.st.report(now).log(),
                None => {}
            }
        }
    }

    /// Stops taking new connections (shutdown.rs says how); live
    /// connections get the drain's time to finish.
    fn begin_stop(&mut self, now: Instant) {
        let Some(until) = self.drain.begin(now) else {
            return;
        };
        log::info!(
            "stopping: no new connections, {} live ones get {} s to finish",
            self.st.pool.active_count(),
            shutdown::DRAIN.as_secs()
        );
        // SYNs already queued pass unsplit (closing the queue would drop
        // them); handshakes already in the backlog are taken in and get the
        // drain time like the rest.
        self.serve_syns(usize::MAX, false, now);
        if let Some(q) = self.st.syns.take() {
            self.poller.forget(q.fd());
        }
        if let Some(mut sn) = self.st.snoop.take() {
            sn.release();
            self.poller.forget(sn.fd());
        }
        self.timers.cancel(Wake::Snoop);
        for i in 0..self.intake.fds().count() {
            self.on_accept(i, now);
        }
        self.watch_listeners(0);
        self.intake.close();
        self.timers.set(Wake::Stop, until);
    }

    fn on_accept(&mut self, which: usize, now: Instant) {
        let st = &mut self.st;
        let accepted = self.intake.accept(which, &st.cfg, &mut st.pool, now);
        st.counters.on_accepted(&accepted);
        if !accepted.new.is_empty() {
            self.timers
                .set_opt(Wake::Link, st.link.opened(accepted.legs(&st.pool), now));
        }
        for &id in &accepted.new {
            self.sync_conn(id, now);
        }
        if accepted.paused {
            self.watch_listeners(0);
        }
    }

    /// Gives back a connection's empty pipes, brings its registration up
    /// to date with what it wants to read and write, and its deadline with
    /// when it next needs the loop.
    fn sync_conn(&mut self, id: ConnId, now: Instant) {
        self.st.pool.settle(id);
        let Some(live) = self.st.pool.live(id) else {
            return;
        };
        if let Some(at) = live.conn.due(now, self.st.cfg.idle_timeout) {
            self.timers.set_by(Wake::Conn(id), at);
        }
        let (client, server) = live.conn.interest(live.up, live.down);
        let (client_fd, server_fd) = live.conn.fds();
        let sockets = [
            (client_fd, client, Token::Client(id)),
            (server_fd, server, Token::Server(id)),
        ];
        for (fd, events, token) in sockets {
            if let Err(e) = self.poller.set(fd, events, token.encode()) {
                log::warn!("watching a connection: {e}");
            }
        }
    }

    /// Runs a connection on readiness of (client, server), or on its
    /// deadline (None).
    fn on_conn(&mut self, id: ConnId, ready: Option<[Events; 2]>, now: Instant) {
        let ready = ready.map(|r| self.st.pool.lend(id, r));
        let Some(live) = self.st.pool.live(id) else {
            return;
        };
        let step = match ready {
            Some([client, server]) => {
                let ready = Ready { client, server };
                live.conn.run(ready, live.up, live.down, now)
            }
            None => (live.conn).check_timers(now, self.st.cfg.idle_timeout, live.up, live.down),
        };
        match step {
            Step::Done(end) => self.finish(id, end, now),
            Step::Continue => self.sync_conn(id, now),
        }
    }

    /// Runs the connections in line for a pipe, oldest first, while one is free.
    fn wake_waiters(&mut self, now: Instant) {
        while let Some(id) = self.st.pool.next_waiter() {
            self.on_conn(id, Some([0, 0]), now);
        }
    }

    /// Logs the connection's close line, adds its bytes, frees its slot
    /// (closing its sockets, which leaves the readiness set with them).
    fn finish(&mut self, id: ConnId, end: End, now: Instant) {
        let Some(mut conn) = self.st.pool.release(id) else {
            return;
        };
        if end == End::Shutdown {
            conn.abort(end);
        }
        let (client_fd, server_fd) = conn.fds();
        self.poller.forget(client_fd);
        self.poller.forget(server_fd);
        self.timers.cancel(Wake::Conn(id));
        self.st.link.closed(id);
        self.intake
            .forget_decision(&conn.tuple, self.st.cfg.mark_mask());
        self.st.counters.on_end(&conn, end);
        log::info!("{}", conn.close_line(end, now));
    }

    fn tick(&mut self, now: Instant) {
        self.timers.set(Wake::Tick, now + TICK);
        if self.intake.resume() {
            self.watch_listeners(poll::IN);
        }
        self.st.pool.expire_reservations(now);
        if let Some(q) = &mut self.st.syns {
            q.settle();
        }
        let ticked = self.st.link.tick(now);
        self.st.counters.on_link_tick(&ticked);
        self.timers.set_opt(Wake::Link, ticked.due);
        let st = &self.st;
        let render = &mut |f, out: &mut String| st.report(now).render(f, out);
        self.control.expire(now, &mut self.poller, render);
    }

    /// Resets what is left once the drain is over.
    fn close_all(&mut self, now: Instant) {
        let mut cursor = 0;
        while let Some(id) = self.st.pool.next_active(&mut cursor) {
            self.finish(id, End::Shutdown, now);
        }
    }
}
