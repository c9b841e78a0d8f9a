//! Dropping root after start-up: pepwrt keeps running as an ordinary user
//! with only the two capabilities its steady state needs.
//!
//! CAP_NET_ADMIN: NFQUEUE verdicts (nfnetlink checks it on every message),
//! IP_TRANSPARENT binds of the outgoing legs, SO_*BUFFORCE and congestion
//! control beyond the allowed list. CAP_NET_RAW: Snoop's raw socket sends.

use std::ffi::CString;
use std::io;

use super::cvt;

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
/// _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The uid and primary gid of `user`.
pub fn lookup(user: &str) -> Result<(libc::uid_t, libc::gid_t), String> {
    let name = CString::new(user).map_err(|_| format!("--user: '{user}' is not a user name"))?;
    // SAFETY: getpwnam returns NULL or a pointer to static storage that
    // stays valid until the next getpw* call; we copy the ids at once, and
    // pepwrt has one thread.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(format!("--user: no user '{user}' on this system"));
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// Switches to `user` (its uid and primary gid, no supplementary groups)
/// keeping CAP_NET_ADMIN and CAP_NET_RAW, and forbids regaining more.
pub fn drop_to(user: &str) -> Result<(), String> {
    let (uid, gid) = lookup(user)?;
    let step = |what: &str, r: io::Result<libc::c_int>| {
        r.map(drop)
            .map_err(|e| format!("dropping privileges ({what}): {e}"))
    };
    // SAFETY: prctl/setgroups/setgid/setuid with plain integer arguments
    // (and a null list for setgroups with a count of 0).
    unsafe {
        step(
            "keep capabilities",
            cvt(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0)),
        )?;
        step("groups", cvt(libc::setgroups(0, std::ptr::null())))?;
        step("gid", cvt(libc::setgid(gid)))?;
        step("uid", cvt(libc::setuid(uid)))?;
    }
    let keep = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW);
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: keep,
            permitted: keep,
            inheritable: 0,
        },
        CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads one header and two data structs of the v3
    // layout, which these repr(C) types match.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    step("capabilities", cvt(r as libc::c_int))?;
    // SAFETY: plain prctl with integer arguments.
    step(
        "no new privileges",
        cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }),
    )?;
    Ok(())
}
