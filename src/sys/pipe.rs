//! Pipes and splice(2): the relay moves a connection's bytes socket to
//! pipe to socket inside the kernel, never through user space.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

/// A pipe's two ends, both non-blocking.
pub struct Pipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [-1; 2];
        // SAFETY: pipe2 fills the two-element array on success.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
        // SAFETY: both descriptors are new and ours alone.
        Ok(unsafe {
            Pipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        })
    }

    /// Asks the kernel for a pipe of at least `bytes` (it rounds up to a
    /// power of two of pages); returns the size it has afterwards, which
    /// stays the default (16 pages) when the request was refused: above
    /// /proc/sys/fs/pipe-max-size, or an unprivileged user past
    /// pipe-user-pages-soft.
    pub fn resize(&self, bytes: usize) -> io::Result<usize> {
        let fd = self.write.as_raw_fd();
        let want = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: fcntl with integer arguments on our own descriptor.
        let set = cvt(unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, want) });
        match set {
            Ok(n) => Ok(n as usize),
            // SAFETY: as above.
            Err(e) => match cvt(unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) }) {
                Ok(n) if e.raw_os_error() == Some(libc::EPERM) => Ok(n as usize),
                _ => Err(e),
            },
        }
    }
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

/// Bytes waiting to be read: a socket's receive queue, a pipe's content.
pub fn unread(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    cvt(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) })?;
    Ok(n.max(0) as usize)
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

    #[test]
    fn bytes_cross_socket_pipe_socket_in_order() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (d, _) = l.accept().unwrap();
        let p = Pipe::new().unwrap();
        assert!(p.resize(64 * 1024).unwrap() >= 64 * 1024);
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        a.write_all(&data).unwrap();
        drop(a);
        // b -> pipe -> d, until b's FIN and an empty pipe.
        let (mut eof, mut inside) = (false, 0);
        for _ in 0..100_000 {
            if !eof {
                match splice(b.as_raw_fd(), p.write.as_raw_fd(), 8192) {
                    Ok(0) => eof = true,
                    Ok(n) => inside += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(unread(p.read.as_raw_fd()).unwrap(), inside);
            if inside > 0 {
                inside -= splice(p.read.as_raw_fd(), d.as_raw_fd(), inside).unwrap();
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
