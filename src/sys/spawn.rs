//! Runs a helper program (the firewall's own dry run) with fork and exec.
//!
//! std::process::Command costs about 40 KB of a static router binary for
//! what `pepwrt check` needs once: a program, its input on stdin, its
//! output and whether it succeeded.

use super::{cvt, write_all};
use std::ffi::CString;
use std::io;

/// What the program did: whether it exited 0, and what it printed on
/// stdout and stderr together.
pub struct Ran {
    pub success: bool,
    pub output: Vec<u8>,
}

/// The exit status a child uses when exec itself failed (as shells do for
/// a command not found).
const EXEC_FAILED: i32 = 127;

/// Runs `argv` (looked up on PATH) with `input` on its stdin. The input
/// must fit a pipe's buffer (64 KB on Linux; rulesets are far smaller):
/// it is written before the output is read.
pub fn run(argv: &[&str], input: &[u8]) -> io::Result<Ran> {
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(*a).map_err(|_| io::ErrorKind::InvalidInput.into()))
        .collect::<io::Result<_>>()?;
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    // SAFETY: the child only calls async-signal-safe functions (dup2,
    // close, execvp, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above; every descriptor is one of ours.
        unsafe {
            libc::dup2(in_r, 0);
            libc::dup2(out_w, 1);
            libc::dup2(out_w, 2);
            for fd in [in_r, in_w, out_r, out_w] {
                libc::close(fd);
            }
            libc::execvp(ptrs[0], ptrs.as_ptr());
            libc::_exit(EXEC_FAILED);
        }
    }
    close(in_r);
    close(out_w);
    if pid < 0 {
        close(in_w);
        close(out_r);
        return Err(io::Error::last_os_error());
    }
    // A child that exits without reading makes the write fail with EPIPE
    // (SIGPIPE is ignored by the daemon's signal setup, and check's
    // caller sees the exit status anyway).
    let _ = write_all(in_w, input);
    close(in_w);
    let mut output = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads into our own buffer of the given length.
        let n = unsafe { libc::read(out_r, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            output.extend_from_slice(&buf[..n as usize]);
        } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    close(out_r);
    let mut status = 0;
    // SAFETY: waits for our own child, writing its status into `status`.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == EXEC_FAILED && output.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} could not be run (not installed?)", argv[0]),
        ));
    }
    Ok(Ran {
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        output,
    })
}

fn pipe() -> io::Result<(libc::c_int, libc::c_int)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into our array.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

fn close(fd: libc::c_int) {
    // SAFETY: closes a descriptor this module opened and owns.
    unsafe { libc::close(fd) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_status_come_back() {
        let r = run(&["sh", "-c", "cat; echo oops >&2; exit 3"], b"in\n").unwrap();
        assert!(!r.success);
        assert_eq!(r.output, b"in\noops\n");
        assert!(run(&["true"], b"").unwrap().success);
    }

    #[test]
    fn a_missing_program_is_not_found() {
        let e = run(&["pepwrt-no-such-tool"], b"").err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
