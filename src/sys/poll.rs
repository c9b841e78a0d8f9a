//! The loop's readiness set, on epoll(7). Interest is registered once per
//! socket and changed only when it changes, so a wake-up costs what is
//! ready, not what is open: a thousand idle connections cost a busy one
//! nothing (poll(2) walked every socket on every wake-up).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::cvt;

/// Readiness bits: the same values as poll(2)'s.
pub type Events = u32;
pub const IN: Events = libc::EPOLLIN as Events;
pub const OUT: Events = libc::EPOLLOUT as Events;
pub const ERR: Events = (libc::EPOLLERR | libc::EPOLLHUP) as Events;

/// One ready entry: the token it was registered with and what is ready.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub token: u64,
    pub events: Events,
}

pub struct Poller {
    epfd: OwnedFd,
    ready: Vec<libc::epoll_event>,
}

impl Poller {
    /// `batch`: the most events one wait returns (the rest wait for the
    /// next, level-triggered, so none is lost).
    pub fn new(batch: usize) -> io::Result<Poller> {
        // SAFETY: plain epoll_create1(2) call.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: the fd was just created and is ours alone.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let empty = libc::epoll_event { events: 0, u64: 0 };
        Ok(Poller {
            epfd,
            ready: vec![empty; batch.max(1)],
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: Events, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev lives across the call; the kernel copies it.
        cvt(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// Changes a socket's interest from `old` to `new` (0: not watched at
    /// all, since errors and hang-ups are reported even for no events and
    /// would wake the loop for a socket it cannot serve yet).
    pub fn watch(&self, fd: RawFd, old: Events, new: Events, token: u64) -> io::Result<()> {
        match (old, new) {
            (a, b) if a == b => Ok(()),
            (0, _) => self.ctl(libc::EPOLL_CTL_ADD, fd, new, token),
            (_, 0) => self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0),
            _ => self.ctl(libc::EPOLL_CTL_MOD, fd, new, token),
        }
    }

    /// Waits for readiness; EINTR (a signal arrived) is a normal, empty
    /// wake-up.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<impl Iterator<Item = Event> + '_> {
        let ms = timeout.as_millis().min(60_000) as libc::c_int
            + i32::from(!timeout.subsec_nanos().is_multiple_of(1_000_000));
        // SAFETY: the pointer and length describe our own buffer.
        let r = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.ready.as_mut_ptr(),
                self.ready.len() as libc::c_int,
                ms,
            )
        };
        let n = if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            0
        } else {
            r as usize
        };
        Ok(self.ready[..n].iter().map(|e| Event {
            token: e.u64,
            events: e.events,
        }))
    }
}

/// Whether `fd` has something to read now (poll(2) without waiting).
pub fn readable_now(fd: RawFd) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout never blocks.
    let n = cvt(unsafe { libc::poll(&raw mut pfd, 1, 0) })?;
    Ok(n > 0 && pfd.revents & libc::POLLIN != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn reports_registered_readiness_with_its_token_and_forgets_removed_fds() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut p = Poller::new(4).unwrap();
        p.watch(b.as_raw_fd(), 0, IN, 7).unwrap();
        assert_eq!(p.wait(Duration::ZERO).unwrap().count(), 0);
        a.write_all(b"x").unwrap();
        let got: Vec<Event> = p.wait(Duration::from_secs(1)).unwrap().collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].token, 7);
        assert_ne!(got[0].events & IN, 0);
        p.watch(b.as_raw_fd(), IN, 0, 7).unwrap();
        assert_eq!(p.wait(Duration::ZERO).unwrap().count(), 0);
    }
}
