//! The only place that calls libc: small safe wrappers, each `unsafe`
//! block with the reason it is sound.

#![allow(unsafe_code)]

pub mod alloc_count;
pub mod conntrack;
pub mod netlink;
pub mod pipe;
pub mod poll;
pub mod privileges;
pub mod raw;
pub mod signals;
pub mod socket;
pub mod spawn;
#[cfg(test)]
pub mod testns;

use std::io;

/// Turns a libc return value into an `io::Result`, reading errno on -1.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Whether we run as root (then a permission error means something else).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Raises the open-file limit to at least `want` (two sockets and two
/// pipes per connection plus a few): the hard limit too where allowed
/// (root, CAP_SYS_RESOURCE), else up to it; returns the soft limit in
/// force afterwards.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit to fill.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    // rlim_t is not u64 on every target.
    #[allow(clippy::unnecessary_cast)]
    let (cur, max) = (lim.rlim_cur as u64, lim.rlim_max as u64);
    if cur >= want {
        return Ok(cur);
    }
    if max < want {
        let raised = libc::rlimit {
            rlim_cur: want as libc::rlim_t,
            rlim_max: want as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct; a refusal changes nothing.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(want);
        }
    }
    lim.rlim_cur = want.min(max) as libc::rlim_t;
    // SAFETY: lim holds values within the hard limit.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    Ok(want.min(max))
}

/// An errno that prints its message without allocating (io::Error's
/// Display builds a String), for log lines on paths that run often, such
/// as connects to unreachable hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

/// How an io::Error reads in a log line: an OS error by its errno, without
/// allocating; an error pepwrt worded itself (a socket option that failed,
/// with what to do about it) by those words, never as "errno 0".
pub struct Described<'a>(pub &'a io::Error);

impl std::fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.raw_os_error() {
            Some(n) => Errno(n).fmt(f),
            None => self.0.fmt(f),
        }
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 128];
        // SAFETY: the XSI strerror_r (what libc binds on glibc and musl)
        // writes a NUL-terminated message of at most buf.len() bytes.
        let r = unsafe { libc::strerror_r(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        let len = buf.iter().position(|&b| b == 0).unwrap_or(0);
        match std::str::from_utf8(&buf[..len]) {
            Ok(msg) if r == 0 && !msg.is_empty() => write!(f, "{msg} (errno {})", self.0),
            _ => write!(f, "errno {}", self.0),
        }
    }
}

/// Writes all of `text` to a standard descriptor (1 or 2), unbuffered.
/// std's print machinery (a locked, line-buffered stdout) costs a few KB
/// of a router binary for what the command line writes once; and a
/// reader that went away (`pepwrt status | head`) just ends the output
/// instead of aborting the program.
pub fn write_std(fd: libc::c_int, text: &str) {
    let _ = write_all(fd, text.as_bytes());
}

/// Writes all of `data` to `fd`, again after a signal interrupted it.
pub(crate) fn write_all(fd: libc::c_int, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: writes from our own slice of the given length.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// The command line's output: stdout.
pub fn out(text: &str) {
    write_std(1, text);
}

/// The command line's messages: stderr, one line with the newline added.
pub fn say(line: &str) {
    write_std(2, &format!("{line}\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_read_by_errno_and_worded_ones_by_their_words() {
        let os = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(
            Described(&os)
                .to_string()
                .ends_with(&format!("(errno {})", libc::ECONNREFUSED))
        );
        let worded = io::Error::other("TCP_CONGESTION bbr: not available");
        assert_eq!(
            Described(&worded).to_string(),
            "TCP_CONGESTION bbr: not available"
        );
    }
}
