//! Finding the netlink socket that nfq 0.2.5 opens but does not expose.

use std::io;
use std::os::fd::RawFd;

fn sockopt_int(fd: RawFd, opt: libc::c_int) -> Option<libc::c_int> {
    let mut val: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: val and len are valid for writes of the sizes passed.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut val).cast(), &mut len) };
    (r == 0).then_some(val)
}

/// All open fds that are NETLINK_NETFILTER sockets.
pub fn netfilter_sockets() -> io::Result<Vec<RawFd>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        else {
            continue;
        };
        if sockopt_int(fd, libc::SO_DOMAIN) == Some(libc::AF_NETLINK)
            && sockopt_int(fd, libc::SO_PROTOCOL) == Some(libc::NETLINK_NETFILTER)
        {
            found.push(fd);
        }
    }
    Ok(found)
}
