//! One direction's buffer between a connection's two legs. On a slot with
//! pipes the bytes go socket to pipe to socket with splice(2) and never
//! enter user space; on a slot without (the open-file limit did not cover
//! its pipes) they go through a ring, read and written as before.
//!
//! Memory is fixed at start either way: a pipe's size is set when the pool
//! is made, and splice only moves the kernel's own pages (the ones the
//! bytes arrived in) from one socket's queue into the pipe and on to the
//! other's, holding at most the pipe's slots of them.

use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;

use super::conn::Side;
use crate::config::{Config, FastOpen};
use crate::pool::Pool;
use crate::ring::{Fill, Ring};
use crate::sys::pipe::{self, Pipe};

/// The client's first bytes a fast open's SYN may carry: they go with an
/// ordinary write (whether a splice into a socket whose SYN waits for
/// data carries it in the SYN differs between kernels); one segment's
/// worth is all a SYN takes.
const FIRST_BYTES: usize = 4096;

/// Open files per connection: two sockets, and two pipes of two ends.
const FILES_PER_CONN: u64 = 6;
/// Open files per connection relayed through user space.
const FILES_PER_RING_CONN: u64 = 2;

/// Pipe slots (pages) per byte of --buffer: a slot holds what one packet
/// brought (1448 bytes on an Ethernet link without receive offloads), so
/// a pipe of `buffer` bytes of pages would hold about a third of --buffer.
const PIPE_SCALE: usize = 4;

/// The pool of `cfg.max_conns` slots, after raising the open-file limit
/// for their sockets and pipes; and the files wanted.
pub fn pool_for<C>(cfg: &Config) -> (Pool<C>, u64) {
    let want = FILES_PER_CONN * u64::from(cfg.max_conns) + 32;
    let have = match crate::sys::raise_nofile(want) {
        Ok(have) if have < want => {
            log::warn!(
                "open-file limit {have} is below the {want} that --max-conns {} needs; raise it (procd: limits nofile)",
                cfg.max_conns
            );
            have
        }
        Ok(have) => have,
        Err(e) => {
            log::warn!("open-file limit: {e}");
            0
        }
    };
    let first = match cfg.outgoing_fast_open() {
        FastOpen::Off => 0,
        _ => FIRST_BYTES,
    };
    let spliced = spliced_within(cfg.max_conns, have);
    let pool = Pool::with_pipes(cfg.max_conns, cfg.buffer_bytes as usize, spliced, first);
    if pool.spliced() < pool.capacity() {
        log::warn!(
            "{} of {} connections relay through user space: no open files for their pipes",
            pool.capacity() - pool.spliced(),
            pool.capacity()
        );
    }
    (pool, want)
}

/// How many of `conns` slots get pipes within `files` open files (32 kept
/// for the proxy's own): all when the limit allows, else as many as fit
/// beside two sockets for every slot.
fn spliced_within(conns: u16, files: u64) -> u16 {
    let left = files.saturating_sub(32 + FILES_PER_RING_CONN * u64::from(conns));
    let extra = FILES_PER_CONN - FILES_PER_RING_CONN;
    (left / extra).min(u64::from(conns)) as u16
}

struct Spliced {
    pipe: Pipe,
    /// Bytes in the pipe.
    inside: usize,
    /// At most this many bytes in the pipe (--buffer).
    budget: usize,
    /// The pipe refused more (its slots full of small packets) while the
    /// source had bytes: reading waits until some leave.
    jammed: bool,
}

pub struct Channel {
    /// Bytes in user space, always ahead of any in the pipe: all of this
    /// direction's on a slot without pipes; on one with, a fast open's
    /// first bytes (written into the SYN).
    head: Ring,
    spliced: Option<Spliced>,
}

impl Channel {
    /// Through user space, `bytes` of ring.
    pub fn ring(bytes: usize) -> Channel {
        Channel {
            head: Ring::with_capacity(bytes),
            spliced: None,
        }
    }

    /// Through a pipe holding up to `budget` bytes, with `head` bytes of
    /// ring for a fast open's first bytes.
    pub fn spliced(budget: usize, head: usize) -> io::Result<Channel> {
        let pipe = Pipe::new()?;
        // A request past pipe-max-size (unprivileged) keeps the default
        // size: ask for less until it is granted.
        let mut want = budget.saturating_mul(PIPE_SCALE);
        while pipe.resize(want)? < want && want > budget {
            want /= 2;
        }
        Ok(Channel {
            head: Ring::with_capacity(head),
            spliced: Some(Spliced {
                pipe,
                inside: 0,
                budget,
                jammed: false,
            }),
        })
    }

    pub fn is_spliced(&self) -> bool {
        self.spliced.is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.spliced.as_ref().is_none_or(|s| s.inside == 0)
    }

    /// Whether the head alone is empty (a fast open's SYN goes bare).
    pub fn head_is_empty(&self) -> bool {
        self.head.is_empty()
    }

    /// Whether to read the source: not while the buffer is full, and once
    /// full, not until a quarter is free again (high and low watermarks),
    /// so a slow reader throttles a fast writer through TCP's own flow
    /// control. `first`: a fast open's first bytes, which go to the head.
    pub fn wants_read(&self, first: bool) -> bool {
        match &self.spliced {
            Some(_) if first => self.head.free() > 0,
            Some(s) => !s.jammed && (s.inside == 0 || s.budget - s.inside >= s.budget / 4),
            None => {
                let r = &self.head;
                r.is_empty() || r.free() >= r.capacity() / 4
            }
        }
    }

    /// Takes what `src` has, up to the buffer's room; `first`: into the
    /// head (a fast open's first bytes).
    pub fn fill_from(&mut self, src: &TcpStream, first: bool) -> io::Result<Fill> {
        let s = match &mut self.spliced {
            Some(s) if !first => s,
            _ => return self.head.fill_from(&mut &*src),
        };
        let fd = src.as_raw_fd();
        let mut total = 0;
        // Bounded: every pass adds bytes or returns.
        while s.inside < s.budget {
            match pipe::splice(fd, s.pipe.write.as_raw_fd(), s.budget - s.inside) {
                Ok(0) => return Ok(Fill::Eof(total)),
                Ok(n) => {
                    s.inside += n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Nothing to read, or no slot left in the pipe: only
                    // the second leaves bytes in the socket.
                    s.jammed = total == 0 && s.inside > 0 && pipe::unread(fd).unwrap_or(0) > 0;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Fill::Open(total))
    }

    /// Passes on what it holds until `dst` takes no more.
    pub fn drain_into(&mut self, dst: &TcpStream) -> io::Result<usize> {
        let mut total = self.head.drain_into(&mut &*dst)?;
        let Some(s) = &mut self.spliced else {
            return Ok(total);
        };
        if !self.head.is_empty() {
            return Ok(total);
        }
        let fd = dst.as_raw_fd();
        while s.inside > 0 {
            match pipe::splice(s.pipe.read.as_raw_fd(), fd, s.inside) {
                // An empty pipe (cannot happen: `inside` counts what it
                // holds): believe the pipe.
                Ok(0) => {
                    s.inside = pipe::unread(s.pipe.read.as_raw_fd()).unwrap_or(0);
                    break;
                }
                Ok(n) => {
                    s.inside -= n;
                    s.jammed = false;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// A fast open's first write: the head only, into the SYN.
    pub fn drain_head_into(&mut self, dst: &TcpStream) -> io::Result<usize> {
        self.head.drain_into(&mut &*dst)
    }

    /// Empties the buffer for the slot's next connection (dropping what a
    /// reset left behind).
    pub fn clear(&mut self) {
        self.head.clear();
        if let Some(s) = &mut self.spliced {
            if s.inside > 0 {
                pipe::discard(s.pipe.read.as_raw_fd(), s.inside);
            }
            s.inside = 0;
            s.jammed = false;
        }
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

/// Reads and drops whatever a reset's survivor still sends; false once it
/// has closed or failed.
pub(super) fn discard_input(mut sock: &TcpStream) -> bool {
    let mut sink = [0u8; 2048];
    for _ in 0..64 {
        match sock.read(&mut sink) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// Reads from `src` into `ch`, noting EOF; a read error fails `src`.
/// `first`: a fast open's first bytes, into the head.
pub(super) fn pull(
    src: &TcpStream,
    ch: &mut Channel,
    flow: &mut OneWay,
    first: bool,
) -> Result<usize, ()> {
    if flow.eof || !ch.wants_read(first) {
        return Ok(0);
    }
    let n = match ch.fill_from(src, first).map_err(drop)? {
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
    ring: &mut Channel,
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
        moved += pull(src, ring, flow, false).map_err(|()| from)?;
    }
    if !ring.is_empty() {
        moved += ring.drain_into(dst).map_err(|_| to)?;
    }
    if flow.eof && ring.is_empty() && !flow.shut {
        match dst.shutdown(Shutdown::Write) {
            Ok(()) => flow.shut = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => flow.shut = true,
            Err(_) => return Err(to),
        }
    }
    Ok(moved)
}
