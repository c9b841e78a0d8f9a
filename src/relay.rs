//! One split connection: the client leg pepwrt accepted, the server leg it
//! opened, and the rules for moving bytes, EOFs and resets between them.
//! Time comes in as an argument; nothing here reads the clock.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::pool::FourTuple;
use crate::ring::{Fill, Ring};
use crate::sys::poll;
use crate::sys::socket;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the outgoing connect; client bytes are already buffered.
    Connecting {
        deadline: Instant,
    },
    Relaying,
}

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

/// Readiness of a connection's two sockets from one poll.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ready {
    pub client: libc::c_short,
    pub server: libc::c_short,
}

/// One direction of the relay: which socket bytes come from and go to,
/// and how far the close has got.
#[derive(Debug, Clone, Copy, Default)]
struct Flow {
    /// The source sent FIN.
    eof: bool,
    /// We passed the FIN on (shutdown(SHUT_WR) on the destination).
    shut: bool,
    bytes: u64,
}

pub struct Conn {
    pub client: TcpStream,
    pub server: TcpStream,
    pub tuple: FourTuple,
    pub phase: Phase,
    up: Flow,
    down: Flow,
    pub started: Instant,
    pub last_active: Instant,
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
        now: Instant,
    ) -> Conn {
        Conn {
            client,
            server,
            tuple,
            phase: Phase::Connecting {
                deadline: connect_deadline,
            },
            up: Flow::default(),
            down: Flow::default(),
            started: now,
            last_active: now,
        }
    }

    pub fn bytes_up(&self) -> u64 {
        self.up.bytes
    }
    pub fn bytes_down(&self) -> u64 {
        self.down.bytes
    }

    pub fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Connecting { .. } => "connecting",
            Phase::Relaying if self.up.eof || self.down.eof => "half-closed",
            Phase::Relaying => "relay",
        }
    }

    /// Poll events wanted on (client, server). Reading a side stops while
    /// the ring it fills is full and resumes once a quarter is free again
    /// (high and low watermarks), so a slow reader throttles a fast writer
    /// through TCP's own flow control.
    pub fn interest(&self, up: &Ring, down: &Ring) -> (libc::c_short, libc::c_short) {
        let wants_read =
            |f: &Flow, r: &Ring| !f.eof && (r.is_empty() || r.free() >= r.capacity() / 4);
        let mut client = 0;
        let mut server = 0;
        if wants_read(&self.up, up) {
            client |= poll::IN;
        }
        if !down.is_empty() {
            client |= poll::OUT;
        }
        match self.phase {
            Phase::Connecting { .. } => server |= poll::OUT,
            Phase::Relaying => {
                if wants_read(&self.down, down) {
                    server |= poll::IN;
                }
                if !up.is_empty() {
                    server |= poll::OUT;
                }
            }
        }
        (client, server)
    }

    /// Moves what it can in both directions and decides whether the
    /// connection is over.
    pub fn run(&mut self, ready: Ready, up: &mut Ring, down: &mut Ring, now: Instant) -> Step {
        if let Phase::Connecting { .. } = self.phase {
            if ready.server == 0 {
                // Buffer early client bytes (they leave once connected).
                if ready.client & (poll::IN | poll::ERR) != 0 {
                    if let Err(end) = pull(&mut self.client, up, &mut self.up, End::ClientReset) {
                        return self.abort(end, up, down);
                    }
                }
                return Step::Continue;
            }
            if let Err(e) = socket::take_error(self.server.as_raw_fd()) {
                return self.abort(End::ConnectFailed(e.raw_os_error().unwrap_or(0)), up, down);
            }
            self.phase = Phase::Relaying;
        }
        let before = self.up.bytes + self.down.bytes;
        let client_in = ready.client & (poll::IN | poll::ERR) != 0;
        let server_in = ready.server & (poll::IN | poll::ERR) != 0;
        if let Err(end) = relay_one(
            &mut self.client,
            &mut self.server,
            up,
            &mut self.up,
            client_in,
            End::ClientReset,
            End::ServerReset,
        ) {
            return self.abort(end, up, down);
        }
        if let Err(end) = relay_one(
            &mut self.server,
            &mut self.client,
            down,
            &mut self.down,
            server_in,
            End::ServerReset,
            End::ClientReset,
        ) {
            return self.abort(end, up, down);
        }
        if self.up.bytes + self.down.bytes != before {
            self.last_active = now;
        }
        if self.up.shut && self.down.shut {
            return Step::Done(End::Closed);
        }
        Step::Continue
    }

    /// Deadlines: a connect that takes too long, or a connection idle too long.
    pub fn check_timers(
        &mut self,
        now: Instant,
        idle: Duration,
        up: &mut Ring,
        down: &mut Ring,
    ) -> Step {
        match self.phase {
            Phase::Connecting { deadline } if deadline <= now => {
                self.abort(End::ConnectTimeout, up, down)
            }
            _ if now.duration_since(self.last_active) >= idle => {
                self.abort(End::IdleTimeout, up, down)
            }
            _ => Step::Continue,
        }
    }

    /// Ends the connection abortively: a reset (or failure) on one side is
    /// passed on as a reset to the other, after one last non-blocking
    /// attempt to deliver what that side is still owed.
    pub fn abort(&mut self, end: End, up: &mut Ring, down: &mut Ring) -> Step {
        match end {
            End::ClientReset => {
                let _ = up.drain_into(&mut self.server);
            }
            End::ServerReset => {
                let _ = down.drain_into(&mut self.client);
            }
            _ => {}
        }
        socket::set_abortive_close(&self.client);
        socket::set_abortive_close(&self.server);
        Step::Done(end)
    }
}

/// Reads from `src` into `ring`, noting EOF; a read error is `src_fail`.
fn pull(src: &mut TcpStream, ring: &mut Ring, flow: &mut Flow, src_fail: End) -> Result<(), End> {
    if flow.eof || ring.free() == 0 {
        return Ok(());
    }
    match ring.fill_from(src) {
        Ok(Fill::Open(n)) => flow.bytes += n as u64,
        Ok(Fill::Eof(n)) => {
            flow.bytes += n as u64;
            flow.eof = true;
        }
        Err(_) => return Err(src_fail),
    }
    Ok(())
}

/// One direction: read what is ready, write what is buffered (at once: the
/// destination is usually writable, which saves a poll round), and pass a
/// FIN on once every byte before it has been written.
fn relay_one(
    src: &mut TcpStream,
    dst: &mut TcpStream,
    ring: &mut Ring,
    flow: &mut Flow,
    readable: bool,
    src_fail: End,
    dst_fail: End,
) -> Result<(), End> {
    if readable {
        pull(src, ring, flow, src_fail)?;
    }
    if !ring.is_empty() {
        ring.drain_into(dst).map_err(|_| dst_fail)?;
    }
    if flow.eof && ring.is_empty() && !flow.shut {
        match dst.shutdown(Shutdown::Write) {
            Ok(()) => flow.shut = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => flow.shut = true,
            Err(_) => return Err(dst_fail),
        }
    }
    Ok(())
}
