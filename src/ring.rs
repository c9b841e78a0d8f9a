//! A byte ring buffer over storage allocated once, filled from and drained
//! into sockets with vectored I/O (one syscall covers the wrap).

use std::io::{self, IoSlice, IoSliceMut, Read, Write};

pub struct Ring {
    buf: Box<[u8]>,
    head: usize,
    len: usize,
}

/// What one fill from a socket ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Stopped because the socket had nothing more (EAGAIN) or the ring is full.
    Open(usize),
    /// The peer sent FIN after these bytes.
    Eof(usize),
}

impl Ring {
    /// Allocates and touches every page now, so the memory is committed at
    /// start: the process's RSS with a full pool is its RSS at start (a
    /// zeroed allocation is otherwise mapped lazily, page by page, as
    /// traffic first reaches it).
    pub fn with_capacity(bytes: usize) -> Ring {
        let mut buf = vec![0u8; bytes].into_boxed_slice();
        for at in (0..buf.len()).step_by(4096) {
            // black_box: a store of the value already there must still
            // happen, to fault the page in.
            *std::hint::black_box(&mut buf[at]) = 0;
        }
        Ring {
            buf,
            head: 0,
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn free(&self) -> usize {
        self.capacity() - self.len
    }
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Reads from `src` until it would block, reaches EOF, or the ring is full.
    pub fn fill_from(&mut self, src: &mut impl Read) -> io::Result<Fill> {
        let mut total = 0;
        // Bounded: every pass either adds bytes, or returns.
        while self.free() > 0 {
            if self.len == 0 {
                self.head = 0; // keep the free space in one piece when we can
            }
            let cap = self.capacity();
            let tail = (self.head + self.len) % cap;
            let (a, b) = if tail >= self.head {
                let (front, back) = self.buf.split_at_mut(tail);
                (back, &mut front[..self.head])
            } else {
                (&mut self.buf[tail..self.head], &mut [][..])
            };
            let mut parts = [IoSliceMut::new(a), IoSliceMut::new(b)];
            match src.read_vectored(&mut parts) {
                Ok(0) => return Ok(Fill::Eof(total)),
                Ok(n) => {
                    self.len += n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Fill::Open(total))
    }

    /// Writes to `dst` until it would block or the ring is empty.
    pub fn drain_into(&mut self, dst: &mut impl Write) -> io::Result<usize> {
        let mut total = 0;
        while self.len > 0 {
            let cap = self.capacity();
            let first = self.len.min(cap - self.head);
            let a = &self.buf[self.head..self.head + first];
            let b = &self.buf[..self.len - first];
            match dst.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.head = (self.head + n) % cap;
                    self.len -= n;
                    total += n;
                }
                // InProgress: a fast-open socket still in its handshake.
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc::EINPROGRESS) =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.len == 0 {
            self.head = 0;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `chunk` bytes per call from `data`,
    /// then WouldBlock, then optionally EOF.
    struct Trickle<'a> {
        data: &'a [u8],
        chunk: usize,
        eof: bool,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                return if self.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = buf.len().min(self.chunk).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// A writer that accepts at most `room` bytes, then WouldBlock.
    struct Narrow {
        out: Vec<u8>,
        room: usize,
    }
    impl Write for Narrow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.out.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_come_out_in_order_across_the_wrap() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut ring = Ring::with_capacity(64);
        let mut src = Trickle {
            data: &data,
            chunk: 13,
            eof: true,
        };
        let mut dst = Narrow {
            out: Vec::new(),
            room: 0,
        };
        let mut eof = false;
        for _ in 0..10_000 {
            if !eof {
                eof = matches!(ring.fill_from(&mut src).unwrap(), Fill::Eof(_));
            }
            dst.room += 29; // the peer drains a little at a time
            ring.drain_into(&mut dst).unwrap();
            if eof && ring.is_empty() {
                break;
            }
        }
        assert_eq!(dst.out, data);
    }

    #[test]
    fn full_ring_stops_reading_without_losing_bytes() {
        let data = [5u8; 100];
        let mut ring = Ring::with_capacity(32);
        let mut src = Trickle {
            data: &data,
            chunk: 100,
            eof: false,
        };
        assert_eq!(ring.fill_from(&mut src).unwrap(), Fill::Open(32));
        assert_eq!(ring.free(), 0);
        assert_eq!(ring.fill_from(&mut src).unwrap(), Fill::Open(0));
        assert_eq!(src.data.len(), 68);
    }

    #[test]
    fn eof_reports_the_last_bytes() {
        let mut ring = Ring::with_capacity(32);
        let mut src = Trickle {
            data: b"bye",
            chunk: 8,
            eof: true,
        };
        assert_eq!(ring.fill_from(&mut src).unwrap(), Fill::Eof(3));
        assert_eq!(ring.len(), 3);
    }
}
