//! Unit tests that change network settings run in a network namespace of
//! their own thread, so they touch nothing of the machine's.

use std::io;

/// Moves the calling thread into a new network namespace with its loopback
/// up. Needs root; the tests that need it say so when it is missing.
pub fn enter_private_netns() -> io::Result<()> {
    // SAFETY: unshare(2) affects only the calling thread here (no
    // CLONE_FS/CLONE_FILES), and takes no pointers.
    super::cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
    // A child forked from this thread starts in this thread's namespace.
    let up = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()?;
    if !up.success() {
        return Err(io::Error::other("ip link set lo up failed"));
    }
    Ok(())
}
