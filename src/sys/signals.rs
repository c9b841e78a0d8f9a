//! Signals become bytes in a pipe that the event loop polls: the handler
//! does nothing but write(2), which is async-signal-safe.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use super::cvt;

static WRITE_END: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = WRITE_END.load(Ordering::Relaxed);
    let byte = sig as u8;
    // SAFETY: write(2) on a pipe fd from a signal handler is allowed; a full
    // pipe just loses this byte (non-blocking), and the loop is awake anyway.
    // The handler may interrupt code between a failing call and its read
    // of errno, so errno is put back as it was.
    unsafe {
        let errno = libc::__errno_location();
        let saved = *errno;
        libc::write(fd, (&raw const byte).cast(), 1);
        *errno = saved;
    }
}

pub struct SignalPipe {
    read_end: RawFd,
}

impl SignalPipe {
    /// Installs handlers for `signals` and ignores SIGPIPE (a vanished peer
    /// is an error return, not a death).
    pub fn install(signals: &[libc::c_int]) -> io::Result<SignalPipe> {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2 writes.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
        WRITE_END.store(fds[1], Ordering::Relaxed);
        for &sig in signals {
            // SAFETY: a zeroed sigaction with a valid handler and empty mask
            // is a complete, valid argument.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                cvt(libc::sigaction(sig, &sa, std::ptr::null_mut()))?;
            }
        }
        // SAFETY: setting a disposition to SIG_IGN has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        Ok(SignalPipe { read_end: fds[0] })
    }

    pub fn fd(&self) -> RawFd {
        self.read_end
    }

    /// The next pending signal number, if any.
    pub fn next(&self) -> Option<libc::c_int> {
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into a local.
        let n = unsafe { libc::read(self.read_end, (&raw mut byte).cast(), 1) };
        (n == 1).then_some(libc::c_int::from(byte))
    }
}
