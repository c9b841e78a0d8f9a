//! The only place that calls libc: small safe wrappers, each `unsafe`
//! block with the reason it is sound.

#![allow(unsafe_code)]

pub mod alloc_count;
pub mod netlink;
pub mod poll;
pub mod signals;
pub mod socket;

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
