//! The loop's readiness set, on epoll(7). Interest is registered once per
//! socket and changed only when it changes (the poller remembers it), so
//! a wake-up costs what is ready, not what is open: a thousand idle
//! connections cost a busy one nothing (poll(2) walked every socket on
//! every wake-up).

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

/// The readiness set and what each socket in it is registered for, so a
/// caller says only what it wants now and the set changes only when that
/// differs.
pub struct Poller {
    epfd: OwnedFd,
    ready: Vec<libc::epoll_event>,
    /// By fd: the interest registered (0: not in the set). Sized at start;
    /// an fd past it is still served, with a system call each time.
    registered: Vec<Events>,
    /// Entries the last wait filled in.
    got: usize,
}

impl Poller {
    /// `fds`: the fd numbers whose interest is remembered (the open-file
    /// limit bounds them). `batch`: the most events one wait returns (the
    /// rest wait for the next, level-triggered, so none is lost).
    pub fn new(fds: usize, batch: usize) -> io::Result<Poller> {
        // SAFETY: plain epoll_create1(2) call.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: the fd was just created and is ours alone.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let empty = libc::epoll_event { events: 0, u64: 0 };
        Ok(Poller {
            epfd,
            ready: vec![empty; batch.max(1)],
            registered: vec![0; fds],
            got: 0,
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: Events, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev lives across the call; the kernel copies it.
        cvt(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// What `fd` is registered for (0: not in the set), as far as known.
    pub fn registered(&self, fd: RawFd) -> Option<Events> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.registered.get(i).copied())
    }

    /// Registers `fd` for `events` with `token`, or takes it out of the set
    /// for 0 (errors and hang-ups are reported even for no events, and
    /// would wake the loop for a socket it cannot serve yet). Nothing
    /// happens when that is what it is registered for already; the token
    /// of a registered fd changes only with its events.
    pub fn set(&mut self, fd: RawFd, events: Events, token: u64) -> io::Result<()> {
        let known = self.registered(fd);
        if known == Some(events) {
            return Ok(());
        }
        let result = match (known, events) {
            (_, 0) => self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0).or_else(gone),
            (Some(0), _) => self.add_or_mod(libc::EPOLL_CTL_ADD, fd, events, token),
            _ => self.add_or_mod(libc::EPOLL_CTL_MOD, fd, events, token),
        };
        if let (Ok(()), Some(slot)) = (&result, self.slot(fd)) {
            *slot = events;
        }
        result
    }

    /// `fd` is about to close, which takes it out of the set: its number
    /// may come back as a new socket, registered afresh.
    pub fn forget(&mut self, fd: RawFd) {
        if let Some(slot) = self.slot(fd) {
            *slot = 0;
        }
    }

    fn slot(&mut self, fd: RawFd) -> Option<&mut Events> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.registered.get_mut(i))
    }

    /// ADD or MOD, trying the other when the set disagrees (an fd past
    /// the table, whose registration is not remembered).
    fn add_or_mod(&self, op: libc::c_int, fd: RawFd, events: Events, token: u64) -> io::Result<()> {
        match self.ctl(op, fd, events, token) {
            Err(e) if op == libc::EPOLL_CTL_ADD && e.raw_os_error() == Some(libc::EEXIST) => {
                self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
            }
            Err(e) if op == libc::EPOLL_CTL_MOD && e.raw_os_error() == Some(libc::ENOENT) => {
                self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
            }
            done => done,
        }
    }

    /// Waits for readiness and returns how many entries are ready (read
    /// them with `event`, which leaves the poller free to change the set
    /// meanwhile); EINTR (a signal arrived) is a normal, empty wake-up.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<usize> {
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
        self.got = 0;
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            self.got = r as usize;
        }
        Ok(self.got)
    }

    /// Entry `i` of the last wait (an empty one past its end).
    pub fn event(&self, i: usize) -> Event {
        let e = self.ready[..self.got].get(i);
        Event {
            token: e.map_or(0, |e| e.u64),
            events: e.map_or(0, |e| e.events),
        }
    }

    /// The entries of the last wait.
    pub fn events(&self) -> impl Iterator<Item = Event> + '_ {
        (0..self.got).map(|i| self.event(i))
    }
}

/// Removing an fd that is not in the set leaves it out of the set.
fn gone(e: io::Error) -> io::Result<()> {
    match e.raw_os_error() {
        Some(libc::ENOENT) => Ok(()),
        _ => Err(e),
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

    /// Room for any fd the test may get: other tests in the same process
    /// (pipe pools, sockets) hold fds at the same time, so a test's own
    /// can be numbered far above the handful it opens.
    const FDS: usize = 1 << 16;

    fn tokens(p: &mut Poller) -> Vec<u64> {
        p.wait(Duration::ZERO).unwrap();
        p.events().map(|e| e.token).collect()
    }

    #[test]
    fn reports_registered_readiness_with_its_token_and_forgets_removed_fds() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut p = Poller::new(FDS, 4).unwrap();
        p.set(b.as_raw_fd(), IN, 7).unwrap();
        assert_eq!(p.registered(b.as_raw_fd()), Some(IN));
        assert!(tokens(&mut p).is_empty());
        a.write_all(b"x").unwrap();
        assert_eq!(p.wait(Duration::from_secs(1)).unwrap(), 1);
        let got: Vec<Event> = p.events().collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].token, 7);
        assert_ne!(got[0].events & IN, 0);
        p.set(b.as_raw_fd(), 0, 7).unwrap();
        assert_eq!(p.registered(b.as_raw_fd()), Some(0));
        assert!(tokens(&mut p).is_empty());
    }

    #[test]
    fn interest_changes_in_place_and_repeats_cost_nothing() {
        let (_a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let mut p = Poller::new(FDS, 4).unwrap();
        p.set(fd, IN, 1).unwrap();
        p.set(fd, IN, 1).unwrap();
        assert!(tokens(&mut p).is_empty());
        // A connected socket with room to write is writable at once.
        p.set(fd, IN | OUT, 2).unwrap();
        assert_eq!(p.registered(fd), Some(IN | OUT));
        assert_eq!(tokens(&mut p), [2]);
        // Behind the poller's back: the set and the table disagree, and
        // the next change still lands.
        p.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0).unwrap();
        p.set(fd, OUT, 3).unwrap();
        assert_eq!(tokens(&mut p), [3]);
    }

    #[test]
    fn a_closed_fd_forgotten_is_registered_afresh_when_its_number_returns() {
        let mut p = Poller::new(FDS, 4).unwrap();
        let (_a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        p.set(fd, OUT, 1).unwrap();
        p.forget(fd);
        // A new socket under the old number (dup2 closes the old one).
        let (_c, d) = UnixStream::pair().unwrap();
        // SAFETY: both fds are open; dup2 closes b's socket and puts a
        // copy of d's under its number, so b must not close it again.
        assert_eq!(unsafe { libc::dup2(d.as_raw_fd(), fd) }, fd);
        std::mem::forget(b);
        p.set(fd, OUT, 2).unwrap();
        assert_eq!(tokens(&mut p), [2]);
    }

    #[test]
    fn fds_past_the_table_are_still_served() {
        let (_a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        let mut p = Poller::new(0, 4).unwrap();
        assert_eq!(p.registered(fd), None);
        p.set(fd, IN, 1).unwrap();
        p.set(fd, OUT, 2).unwrap();
        assert_eq!(tokens(&mut p), [2]);
        p.set(fd, 0, 2).unwrap();
        p.set(fd, 0, 2).unwrap();
        assert!(tokens(&mut p).is_empty());
    }
}
