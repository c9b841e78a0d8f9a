//! One direction's buffer between a connection's two legs: a pipe, lent
//! from the pool while the direction has bytes in flight. Bytes go socket
//! to pipe to socket with splice(2) and never enter user space (two copies
//! through user space were the relay's cost per byte).
//!
//! Memory is fixed at start: the pool's pipes are made and sized then and
//! never closed, and splice only moves the kernel's own pages (the ones
//! the bytes arrived in) from one socket's queue into the pipe and on to
//! the other's: at most --buffer bytes, in at most the pipe's slots of
//! pages. An idle connection holds no pipe, only its two sockets.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;

use crate::sys::pipe::{self, Pipe};

/// Pipe slots (pages) per page of --buffer: a slot holds what one packet
/// brought (1448 bytes on an Ethernet link without receive offloads), so
/// a pipe of `buffer` bytes of pages would hold about a third of --buffer.
const PIPE_SCALE: usize = 4;

/// What one fill from a socket ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Stopped because the socket had nothing more (EAGAIN) or the buffer
    /// is full.
    Open(usize),
    /// The peer sent FIN after these bytes.
    Eof(usize),
}

/// A connection's leg: the client's, which pepwrt accepted, or the
/// server's, which it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

pub struct Channel {
    /// Lent while bytes are in flight.
    pipe: Option<Pipe>,
    /// Bytes in the pipe.
    inside: usize,
    /// At most this many bytes in the pipe (--buffer).
    budget: usize,
    /// The pipe refused more (its slots full of small packets) while the
    /// source had bytes: reading waits until some leave.
    jammed: bool,
    /// The source was readable and no pipe was free: not read (nor
    /// polled) until the pool lends one.
    pub waiting: bool,
}

impl Channel {
    /// A direction holding up to `budget` bytes once lent a pipe.
    pub fn new(budget: usize) -> Channel {
        Channel {
            pipe: None,
            inside: 0,
            budget,
            jammed: false,
            waiting: false,
        }
    }

    /// A direction that keeps its own pipe (the state machine's tests,
    /// which run without the pool).
    #[cfg(test)]
    pub fn with_pipe(budget: usize) -> Channel {
        let mut ch = Channel::new(budget);
        ch.lend(Channel::pipe_for(budget).unwrap());
        ch
    }

    /// A pipe for directions of `budget` bytes; None if the kernel
    /// refuses one (out of open files).
    pub fn pipe_for(budget: usize) -> Option<Pipe> {
        Pipe::new(budget.saturating_mul(PIPE_SCALE))
    }

    pub fn has_pipe(&self) -> bool {
        self.pipe.is_some()
    }

    pub fn lend(&mut self, pipe: Pipe) {
        self.pipe = Some(pipe);
        self.waiting = false;
    }

    /// The pipe, once empty: it goes back to the pool.
    pub fn give_back(&mut self) -> Option<Pipe> {
        if self.inside > 0 {
            return None;
        }
        self.pipe.take()
    }

    pub fn is_empty(&self) -> bool {
        self.inside == 0
    }

    /// Whether to read the source: not while waiting for a pipe, nor while
    /// the buffer is full, and once full, not until a quarter is free again
    /// (high and low watermarks), so a slow reader throttles a fast writer
    /// through TCP's own flow control.
    pub fn wants_read(&self) -> bool {
        !self.waiting
            && !self.jammed
            && (self.inside == 0 || self.budget - self.inside >= self.budget / 4)
    }

    /// Takes what `src` has, up to the buffer's room; called when `src`
    /// is readable.
    pub fn fill_from(&mut self, src: &TcpStream) -> io::Result<Fill> {
        let fd = src.as_raw_fd();
        let mut total = 0;
        let Some(p) = &self.pipe else {
            return Ok(Fill::Open(0));
        };
        // Bounded: every pass adds bytes or returns.
        while self.inside < self.budget {
            let room = self.budget - self.inside;
            match pipe::splice(fd, p.write, room) {
                Ok(0) => return Ok(Fill::Eof(total)),
                Ok(n) => {
                    self.inside += n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Nothing more to read, or no slot left in the pipe.
                    // Called on readiness, a first read that finds
                    // nothing found the pipe full. (If not, reading
                    // waits only until the pipe's bytes leave.)
                    self.jammed = total == 0 && self.inside > 0;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Fill::Open(total))
    }

    /// Passes on what it holds until `dst` takes no more.
    pub fn drain_into(&mut self, dst: &TcpStream) -> io::Result<usize> {
        let mut total = 0;
        let Some(p) = &self.pipe else {
            return Ok(0);
        };
        let (from, to) = (p.read, dst.as_raw_fd());
        while self.inside > 0 {
            match pipe::splice(from, to, self.inside) {
                // An empty pipe (cannot happen: `inside` counts what it
                // holds): believe the pipe.
                Ok(0) => self.inside = 0,
                Ok(n) => {
                    self.inside -= n;
                    self.jammed = false;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Empties the buffer for the slot's next connection (dropping what a
    /// reset left behind); its pipe, if any, goes back to the pool.
    pub fn clear(&mut self) -> Option<Pipe> {
        if let Some(p) = &self.pipe {
            pipe::discard(p.read, self.inside);
        }
        self.inside = 0;
        self.jammed = false;
        self.waiting = false;
        self.pipe.take()
    }
}

/// One direction of the relay: how far its close has got, and its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct OneWay {
    /// The source sent FIN.
    pub eof: bool,
    /// We passed the FIN on (shutdown(SHUT_WR) on the destination).
    pub shut: bool,
    pub bytes: u64,
}

/// A fast-open write that sent only the SYN, or a connect still under way.
pub(super) fn in_progress(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::EINPROGRESS)
}

/// Drops whatever a reset's survivor still sends; false once it has
/// closed or failed.
pub(super) fn discard_input(sock: &TcpStream) -> bool {
    match pipe::skip(sock.as_raw_fd(), 1 << 30) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}

/// Reads from `src` into `ch`, noting EOF; a read error fails `src`.
pub(super) fn pull(src: &TcpStream, ch: &mut Channel, flow: &mut OneWay) -> Result<usize, ()> {
    if flow.eof || !ch.wants_read() {
        return Ok(0);
    }
    let n = match ch.fill_from(src).map_err(drop)? {
        Fill::Open(n) => n,
        Fill::Eof(n) => {
            flow.eof = true;
            n
        }
    };
    flow.bytes += n as u64;
    Ok(n)
}

/// One direction, from side `from`: read what is ready, write what is
/// buffered (at once: the destination is usually writable, which saves a
/// poll round), and pass a FIN on once every byte before it has been
/// written. Returns bytes moved (read plus written), or the side that failed.
pub(super) fn relay_one(
    src: &TcpStream,
    dst: &TcpStream,
    ch: &mut Channel,
    flow: &mut OneWay,
    readable: bool,
    from: Side,
) -> Result<usize, Side> {
    let to = match from {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    };
    let mut moved = 0;
    if readable {
        moved += pull(src, ch, flow).map_err(|()| from)?;
    }
    if !ch.is_empty() {
        moved += ch.drain_into(dst).map_err(|_| to)?;
    }
    if flow.eof && ch.is_empty() && !flow.shut {
        match dst.shutdown(Shutdown::Write) {
            Ok(()) => flow.shut = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => flow.shut = true,
            Err(_) => return Err(to),
        }
    }
    Ok(moved)
}
