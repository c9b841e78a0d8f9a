//! One split connection's state machine: the client leg pepwrt accepted,
//! the server leg it opened, and the rules for moving bytes, EOFs and
//! resets between them. Time comes in as an argument; nothing here reads
//! the clock.

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::channel::{Channel, OneWay, Side, discard_input, in_progress, pull, relay_one};
use crate::link::Opened;
use crate::pool::ConnId;
use crate::sys::poll::{self, Events};
use crate::sys::{pipe, socket};
use crate::tuple::FourTuple;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the outgoing connect; client bytes are already buffered.
    /// With fast open the SYN waits for the client's first bytes until
    /// `first_bytes_by`, then leaves with or without them.
    Connecting {
        deadline: Instant,
        first_bytes_by: Option<Instant>,
    },
    Relaying,
    /// One side reset: the other side still gets every byte pepwrt had
    /// acknowledged for it, then a reset of its own.
    Draining {
        toward: Side,
        end: End,
        deadline: Instant,
    },
    /// Both FINs are passed on; waiting for the peers to acknowledge the
    /// last bytes and FINs (see `Conn::closing`).
    Closing {
        deadline: Instant,
    },
}

/// The most of the client's first bytes a fast open's SYN is offered: a
/// SYN carries at most one segment.
const FIRST_BYTES: usize = 2048;
/// How long a reset's survivor may take to receive what it is owed.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// How long an ended connection waits for its last acknowledgements
/// before it closes the ordinary way (FIN, TIME_WAIT).
const CLOSE_LIMIT: Duration = Duration::from_secs(5);
/// How often an ended connection looks for its last acknowledgements
/// (it holds its slot until then, and no readiness says when they come).
const CLOSE_CHECK: Duration = Duration::from_millis(10);
/// How often a reset's survivor looks whether it has acknowledged all it
/// was owed (no readiness says so either).
const DRAIN_CHECK: Duration = Duration::from_secs(1);

/// Why a connection ended, for the close log line and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides sent FIN and every byte was delivered.
    Closed,
    ClientReset,
    ServerReset,
    ConnectFailed(i32),
    ConnectTimeout,
    IdleTimeout,
    /// pepwrt is stopping.
    Shutdown,
}

impl End {
    pub fn describe(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::ClientReset => "client reset",
            End::ServerReset => "server reset",
            End::ConnectFailed(_) => "connect failed",
            End::ConnectTimeout => "connect timed out",
            End::IdleTimeout => "idle timeout",
            End::Shutdown => "pepwrt stopping",
        }
    }
}

/// A connection's last words for the log, as an admin reads them:
/// `198.18.0.2:45680 -> 198.18.1.2:5001: closed after 2.4 s, 10485760
/// bytes up, 0 bytes down`.
pub struct CloseLine<'a> {
    conn: &'a Conn,
    end: End,
    now: Instant,
}

impl std::fmt::Display for CloseLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.conn;
        write!(
            f,
            "{} -> {}: {}",
            c.tuple.client,
            c.tuple.server,
            self.end.describe()
        )?;
        if let End::ConnectFailed(e) = self.end {
            write!(f, ": {}", crate::sys::Errno(e))?;
        }
        write!(
            f,
            " after {} s, {} bytes up, {} bytes down",
            Seconds(self.now.duration_since(c.started)),
            c.up.bytes,
            c.down.bytes
        )
    }
}

/// A duration in seconds with one decimal, as `{:.1}` prints an `f64`
/// (`2.4`); integer arithmetic keeps float
/// formatting out of the binary (about 10 KB on MIPS).
pub struct Seconds(pub Duration);

impl Seconds {
    /// Whole seconds and tenths, rounded (a table pads the first).
    pub fn split(&self) -> (u64, u64) {
        let rounded = (self.0.subsec_nanos() + 50_000_000) / 100_000_000;
        let tenths = self.0.as_secs() * 10 + u64::from(rounded);
        (tenths / 10, tenths % 10)
    }
}

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (s, tenths) = self.split();
        write!(f, "{s}.{tenths}")
    }
}

/// Readiness of a connection's two sockets from one poll.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ready {
    pub client: Events,
    pub server: Events,
}

pub struct Conn {
    client: TcpStream,
    server: TcpStream,
    pub tuple: FourTuple,
    phase: Phase,
    up: OneWay,
    down: OneWay,
    pub started: Instant,
    last_active: Instant,
}

/// What the event loop should do after a connection ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    Done(End),
}

impl Conn {
    pub fn new(
        client: TcpStream,
        server: TcpStream,
        tuple: FourTuple,
        connect_deadline: Instant,
        first_bytes_by: Option<Instant>,
        now: Instant,
    ) -> Conn {
        // Until the connection ends in order, closing a leg resets it: if
        // pepwrt dies (SIGKILL, a crash), the kernel closes its sockets,
        // and a FIN would tell each peer that a stream cut short was
        // complete. A reset says it was not.
        socket::set_abortive_close(&client);
        socket::set_abortive_close(&server);
        Conn {
            client,
            server,
            tuple,
            phase: Phase::Connecting {
                deadline: connect_deadline,
                first_bytes_by,
            },
            up: OneWay::default(),
            down: OneWay::default(),
            started: now,
            last_active: now,
        }
    }

    /// The client's and the server's socket, for the event loop's set.
    pub fn fds(&self) -> (RawFd, RawFd) {
        (self.client.as_raw_fd(), self.server.as_raw_fd())
    }

    /// The connection's legs, as the link takes them over (`id`: its
    /// slot).
    pub fn opened(&self, id: ConnId) -> Opened {
        let (client_fd, server_fd) = self.fds();
        Opened {
            id,
            tuple: self.tuple,
            client_fd,
            server_fd,
        }
    }

    pub fn close_line(&self, end: End, now: Instant) -> CloseLine<'_> {
        CloseLine {
            conn: self,
            end,
            now,
        }
    }

    pub fn bytes_up(&self) -> u64 {
        self.up.bytes
    }
    pub fn bytes_down(&self) -> u64 {
        self.down.bytes
    }

    /// A leg's SYN carried data the other side took: a zero-round-trip
    /// open (the router's outgoing leg, the gateway's accepted one).
    pub fn opened_with_syn_data(&self) -> bool {
        socket::syn_data_acked(self.client.as_raw_fd())
            || socket::syn_data_acked(self.server.as_raw_fd())
    }

    pub fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Connecting { .. } => "connecting",
            Phase::Relaying if self.up.eof || self.down.eof => "half-closed",
            Phase::Relaying => "relay",
            Phase::Draining { .. } | Phase::Closing { .. } => "closing",
        }
    }

    /// Poll events wanted on (client, server): a side is read while the
    /// buffer it fills wants more (`Channel::wants_read`).
    pub fn interest(&self, up: &Channel, down: &Channel) -> (Events, Events) {
        let wants_read = |f: &OneWay, r: &Channel| !f.eof && r.wants_read();
        let writes = |r: &Channel| if r.is_empty() { 0 } else { poll::OUT };
        let reads = |want: bool| if want { poll::IN } else { 0 };
        match self.phase {
            // A SYN held for the client's first bytes: the socket is
            // writable at once, and nothing is to be written yet.
            Phase::Connecting { first_bytes_by, .. } => (
                reads(wants_read(&self.up, up)),
                if first_bytes_by.is_some() {
                    0
                } else {
                    poll::OUT
                },
            ),
            Phase::Relaying => (
                reads(wants_read(&self.up, up)) | writes(down),
                reads(wants_read(&self.down, down)) | writes(up),
            ),
            // The survivor is read (and the bytes dropped) only to notice
            // when it closes; the side that reset is done.
            // Nothing more to move: `due` times the look for the
            // acknowledgements.
            Phase::Closing { .. } => (0, 0),
            Phase::Draining {
                toward: Side::Server,
                ..
            } => (0, poll::IN | writes(up)),
            Phase::Draining {
                toward: Side::Client,
                ..
            } => (poll::IN | writes(down), 0),
        }
    }

    /// Moves what it can in both directions and decides whether the
    /// connection is over.
    pub fn run(
        &mut self,
        ready: Ready,
        up: &mut Channel,
        down: &mut Channel,
        now: Instant,
    ) -> Step {
        match self.phase {
            Phase::Connecting { .. } => self.connecting(ready, up, down, now),
            Phase::Relaying => self.relaying(ready, up, down, now),
            Phase::Draining { toward, end, .. } => self.draining(toward, end, ready, up, down),
            Phase::Closing { deadline } => self.closing(deadline, now),
        }
    }

    fn connecting(
        &mut self,
        ready: Ready,
        up: &mut Channel,
        down: &mut Channel,
        now: Instant,
    ) -> Step {
        // A SYN held for the client's first bytes: they wait in the
        // client's socket, and the SYN leaves as soon as anything (bytes,
        // a FIN) comes from the client, or at `by` without them.
        if let Phase::Connecting {
            deadline,
            first_bytes_by: Some(by),
        } = self.phase
        {
            if ready.client == 0 && now < by {
                return Step::Continue;
            }
            self.phase = Phase::Connecting {
                deadline,
                first_bytes_by: None,
            };
            return self.send_syn(true);
        }
        // Buffer early client bytes: they leave once connected.
        if ready.client & (poll::IN | poll::ERR) != 0
            && pull(&self.client, up, &mut self.up).is_err()
        {
            // Nothing can reach the server yet.
            return self.abort(End::ClientReset);
        }
        if ready.server == 0 {
            return Step::Continue;
        }
        if let Err(e) = socket::take_error(self.server.as_raw_fd()) {
            if e.raw_os_error() == Some(libc::ECONNRESET) {
                // Reset once established (a refused SYN reports
                // ECONNREFUSED) before this first look at the connected
                // leg: the server may have sent bytes first, which the
                // router's kernel acknowledged for the client (with fast
                // open they come with the handshake). They reach the client
                // before the reset, as on a relaying connection.
                let _ = pull(&self.server, down, &mut self.down);
                return self.on_reset(Side::Server, up, down, now);
            }
            return self.abort(End::ConnectFailed(e.raw_os_error().unwrap_or(0)));
        }
        match self.server.peer_addr() {
            Ok(_) => {
                self.phase = Phase::Relaying;
                self.relaying(
                    Ready {
                        client: 0,
                        server: ready.server,
                    },
                    up,
                    down,
                    now,
                )
            }
            Err(_) => self.send_syn(false),
        }
    }

    /// TCP_FASTOPEN_CONNECT: the SYN waits for the first write, with data
    /// if any (a zero-length write sends a bare SYN: the server speaks
    /// first); a write that only sent the SYN says EINPROGRESS. Bytes the
    /// far end did not take with the SYN go again after the handshake.
    /// The first bytes go with an ordinary write (whether a splice into
    /// such a socket puts data in the SYN differs between kernels): a
    /// copy of the client's first bytes (`with_data`), which leave its
    /// socket once the kernel has taken them for the SYN; what it did not
    /// take follows through the pipe once the leg is connected.
    fn send_syn(&mut self, with_data: bool) -> Step {
        let mut first = [0u8; FIRST_BYTES];
        let client = self.client.as_raw_fd();
        let len = if with_data {
            pipe::peek(client, &mut first)
        } else {
            0
        };
        match (&self.server).write(&first[..len]) {
            Ok(n) => {
                // The SYN carries these: out of the client's socket, so
                // that the pipe does not pass them on again.
                let _ = pipe::skip(client, n);
                self.up.bytes += n as u64;
                Step::Continue
            }
            Err(e) if in_progress(&e) => Step::Continue,
            Err(e) => self.abort(End::ConnectFailed(e.raw_os_error().unwrap_or(0))),
        }
    }

    fn relaying(
        &mut self,
        ready: Ready,
        up: &mut Channel,
        down: &mut Channel,
        now: Instant,
    ) -> Step {
        let client_in = ready.client & (poll::IN | poll::ERR) != 0;
        let server_in = ready.server & (poll::IN | poll::ERR) != 0;
        let moved = relay_one(
            &self.client,
            &self.server,
            up,
            &mut self.up,
            client_in,
            Side::Client,
        )
        .and_then(|a| {
            relay_one(
                &self.server,
                &self.client,
                down,
                &mut self.down,
                server_in,
                Side::Server,
            )
            .map(|b| a + b)
        });
        match moved {
            Ok(0) => {}
            Ok(_) => self.last_active = now,
            Err(failed) => return self.on_reset(failed, up, down, now),
        }
        if self.up.shut && self.down.shut {
            return self.closing(now + CLOSE_LIMIT, now);
        }
        Step::Continue
    }

    /// Both FINs are passed on. Once both peers have acknowledged every
    /// byte and FIN, the legs close with a reset, which the peers no longer
    /// mind: a FIN close would leave the router a TIME_WAIT socket per leg,
    /// and the rules' socket match would hand such a socket the packets of
    /// a later, unsplit connection on the same 4-tuple (a client reusing
    /// its port), which it would answer with stale ACKs. Past the deadline
    /// (a peer that never acknowledges), the legs close the ordinary way.
    fn closing(&mut self, deadline: Instant, now: Instant) -> Step {
        let acked = |s: &TcpStream| socket::all_acked(s.as_raw_fd());
        if acked(&self.client) && acked(&self.server) {
            return Step::Done(End::Closed);
        }
        if deadline <= now {
            socket::set_graceful_close(&self.client);
            socket::set_graceful_close(&self.server);
            return Step::Done(End::Closed);
        }
        self.phase = Phase::Closing { deadline };
        Step::Continue
    }

    /// A reset (or a failed read or write) on side `failed`: the other side
    /// first receives every byte still owed to it, then a reset.
    fn on_reset(
        &mut self,
        failed: Side,
        up: &mut Channel,
        down: &mut Channel,
        now: Instant,
    ) -> Step {
        let (toward, end) = match failed {
            Side::Client => (Side::Server, End::ClientReset),
            Side::Server => (Side::Client, End::ServerReset),
        };
        self.phase = Phase::Draining {
            toward,
            end,
            deadline: now + DRAIN_LIMIT,
        };
        self.draining(
            toward,
            end,
            Ready {
                client: 0,
                server: 0,
            },
            up,
            down,
        )
    }

    fn draining(
        &mut self,
        toward: Side,
        end: End,
        ready: Ready,
        up: &mut Channel,
        down: &mut Channel,
    ) -> Step {
        let (sock, owed, revents) = match toward {
            Side::Server => (&self.server, up, ready.server),
            Side::Client => (&self.client, down, ready.client),
        };
        if revents & (poll::IN | poll::ERR) != 0 && !discard_input(sock) {
            return self.abort(end);
        }
        if owed.drain_into(sock).is_err() {
            return self.abort(end);
        }
        if owed.is_empty() && socket::all_acked(sock.as_raw_fd()) {
            return self.abort(end);
        }
        Step::Continue
    }

    /// Deadlines: a connect that takes too long, a connection idle too
    /// long, a reset's survivor that does not take its bytes; and the
    /// moment a survivor has acknowledged everything (no poll event says so).
    pub fn check_timers(
        &mut self,
        now: Instant,
        idle: Duration,
        up: &mut Channel,
        down: &mut Channel,
    ) -> Step {
        match self.phase {
            // A connect has its own deadline; idleness starts once connected.
            Phase::Connecting { deadline, .. } if deadline <= now => {
                self.abort(End::ConnectTimeout)
            }
            Phase::Connecting {
                first_bytes_by: Some(by),
                ..
            } if by <= now => self.connecting(Ready::default(), up, down, now),
            Phase::Connecting { .. } => Step::Continue,
            Phase::Draining { end, deadline, .. } if deadline <= now => self.abort(end),
            Phase::Draining { toward, end, .. } => {
                self.draining(toward, end, Ready::default(), up, down)
            }
            Phase::Closing { deadline } => self.closing(deadline, now),
            _ if now.duration_since(self.last_active) >= idle => self.abort(End::IdleTimeout),
            _ => Step::Continue,
        }
    }

    /// When `check_timers` should next run, though no readiness comes: a
    /// connect's deadline, the moment the connection would be idle too
    /// long (it moves later with every byte; a check before then finds
    /// that and asks again), or the next look for acknowledgements.
    /// None: never (an idle timeout past what a clock can count).
    pub fn due(&self, now: Instant, idle: Duration) -> Option<Instant> {
        match self.phase {
            Phase::Connecting {
                deadline,
                first_bytes_by,
            } => Some(first_bytes_by.map_or(deadline, |by| by.min(deadline))),
            Phase::Relaying => self.last_active.checked_add(idle),
            Phase::Draining { deadline, .. } => Some(deadline.min(now + DRAIN_CHECK)),
            Phase::Closing { deadline } => Some(deadline.min(now + CLOSE_CHECK)),
        }
    }

    /// Ends the connection with a reset on both sockets.
    pub fn abort(&mut self, end: End) -> Step {
        socket::set_abortive_close(&self.client);
        socket::set_abortive_close(&self.server);
        Step::Done(end)
    }
}
