//! poll(2) over a caller-owned set.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

pub use libc::pollfd as PollFd;
pub const IN: libc::c_short = libc::POLLIN;
pub const OUT: libc::c_short = libc::POLLOUT;
pub const ERR: libc::c_short = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;

pub fn entry(fd: RawFd, events: libc::c_short) -> PollFd {
    PollFd {
        fd,
        events,
        revents: 0,
    }
}

/// Waits for readiness; EINTR (a signal arrived) is a normal wake-up.
pub fn poll(set: &mut [PollFd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        Some(d) => {
            d.as_millis().min(60_000) as libc::c_int + i32::from(d.subsec_nanos() % 1_000_000 != 0)
        }
    };
    // SAFETY: the pointer and length describe the caller's live slice.
    let r = unsafe { libc::poll(set.as_mut_ptr(), set.len() as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}
