//! Pipes and splice(2): the relay moves a connection's bytes socket to
//! pipe to socket inside the kernel, never through user space; and the
//! peek at a client's first bytes that a fast open's SYN carries.

use std::io;
use std::os::fd::RawFd;

/// A pipe's two ends, both non-blocking. Pipes are made at start and
/// live as long as the process: the ends are never closed (no drop code).
#[derive(Clone, Copy)]
pub struct Pipe {
    pub read: RawFd,
    pub write: RawFd,
}

impl Pipe {
    /// A pipe of at least `bytes` (the kernel rounds up to a power of two
    /// of pages), or of the most an unprivileged process may ask for
    /// (pipe-max-size, 1 MiB unless raised) if that is less, or of the
    /// default size if even that is refused (an unprivileged user past
    /// pipe-user-pages-soft). None: no pipe (out of open files).
    pub fn new(bytes: usize) -> Option<Pipe> {
        let mut fds = [-1; 2];
        // SAFETY: pipe2 fills the two-element array on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return None;
        }
        for want in [bytes, bytes.min(1 << 20)] {
            let want = libc::c_int::try_from(want).unwrap_or(libc::c_int::MAX);
            // SAFETY: fcntl with integer arguments on our own descriptor.
            if unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, want) } >= 0 {
                break;
            }
        }
        Some(Pipe {
            read: fds[0],
            write: fds[1],
        })
    }

    /// The pipe's size in bytes.
    #[cfg(test)]
    pub fn size(&self) -> usize {
        // SAFETY: as above.
        unsafe { libc::fcntl(self.write, libc::F_GETPIPE_SZ) as usize }
    }
}

/// A copy of up to `buf.len()` bytes waiting in socket `fd`, left there
/// (0: none, or an error, which the next read meets).
pub fn peek(fd: RawFd, buf: &mut [u8]) -> usize {
    // SAFETY: recv writes at most buf.len() bytes into buf.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n.max(0) as usize
}

/// Drops up to `len` bytes waiting in TCP socket `fd` without copying
/// them (MSG_TRUNC): after `peek` found them, or what a reset's survivor
/// still sends. Ok(0): the socket's stream ended.
pub fn skip(fd: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: with MSG_TRUNC a TCP socket writes nothing to the buffer.
    let n = unsafe {
        libc::recv(
            fd,
            std::ptr::null_mut(),
            len,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Moves up to `len` bytes from `from` to `to`, one of which is a pipe,
/// without waiting: Ok(0) is the end of `from`'s stream (a socket's FIN);
/// WouldBlock means nothing to read, or no room to write.
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    loop {
        // SAFETY: splice reads and writes only kernel objects behind the
        // descriptors; the null offsets mean "the current position".
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads and drops up to `len` bytes from the pipe `fd` (what a reset
/// connection left in it).
pub fn discard(fd: RawFd, mut len: usize) {
    let mut sink = [0u8; 4096];
    while len > 0 {
        // SAFETY: reads into our own buffer of the given length.
        let n = unsafe { libc::read(fd, sink.as_mut_ptr().cast(), sink.len()) };
        if n <= 0 {
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        len = len.saturating_sub(n as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn bytes_cross_socket_pipe_socket_in_order() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (d, _) = l.accept().unwrap();
        let p = Pipe::new(256 * 1024).unwrap();
        assert!(p.size() >= 256 * 1024);
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        a.write_all(&data).unwrap();
        drop(a);
        // b -> pipe -> d, until b's FIN and an empty pipe.
        let (mut eof, mut inside) = (false, 0);
        for _ in 0..100_000 {
            if !eof {
                match splice(b.as_raw_fd(), p.write, 8192) {
                    Ok(0) => eof = true,
                    Ok(n) => inside += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
            if inside > 0 {
                inside -= splice(p.read, d.as_raw_fd(), inside).unwrap();
            }
            if eof && inside == 0 {
                break;
            }
        }
        drop(d);
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
    }
}
