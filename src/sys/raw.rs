//! Raw IP sockets that send whole packets as they are (Snoop's local
//! retransmissions use them: copies of packets the router forwarded
//! before).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::cvt;
use super::socket::set_int;

/// Sends IPv4 and IPv6 packets with their own headers, under the snoop
/// mark (the rules exempt marked packets from conntrack, so NAT and state
/// tracking leave the copies exactly as cached).
pub struct RawSender {
    v4: OwnedFd,
    /// `None` when the kernel has no IPv6.
    v6: Option<OwnedFd>,
}

/// A non-blocking raw socket of `family` that takes whole IP packets.
fn open_raw(family: libc::c_int, mark: u32) -> io::Result<OwnedFd> {
    let ty = libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain socket(2) call. IPPROTO_RAW implies IP_HDRINCL for
    // IPv4: the packet we pass is sent with its own header.
    let fd = cvt(unsafe { libc::socket(family, ty, libc::IPPROTO_RAW) })?;
    // SAFETY: fd was just returned by socket(2) and nothing else owns it;
    // OwnedFd closes it on every error path below.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int(fd, libc::SOL_SOCKET, libc::SO_MARK, mark as libc::c_int)?;
    if family == libc::AF_INET6 {
        // IPv6 raw sockets build their own header unless told otherwise.
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_HDRINCL, 1)?;
    }
    Ok(owned)
}

impl RawSender {
    /// Needs CAP_NET_RAW (and CAP_NET_ADMIN for the mark).
    pub fn open(mark: u32, ipv6: bool) -> io::Result<RawSender> {
        let v4 = open_raw(libc::AF_INET, mark)?;
        let v6 = if ipv6 {
            match open_raw(libc::AF_INET6, mark) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    log::warn!(
                        "snoop: no IPv6 raw socket ({e}); IPv6 flows get no local retransmissions"
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(RawSender { v4, v6 })
    }

    /// Sends one whole IPv4 or IPv6 packet, by the version in its first
    /// byte, to its own destination address. EAGAIN/ENOBUFS (the
    /// interface queue is full) comes back as the error; a packet sent
    /// only in part is an error too.
    pub fn send_packet(&self, ip_packet: &[u8]) -> io::Result<()> {
        let sent = match ip_packet.first().map(|b| b >> 4) {
            Some(4) => self.send_v4(ip_packet),
            Some(6) => self.send_v6(ip_packet),
            _ => Err(io::ErrorKind::InvalidInput.into()),
        }?;
        if sent == ip_packet.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "packet sent in part",
            ))
        }
    }

    fn send_v4(&self, pkt: &[u8]) -> io::Result<usize> {
        let dst = pkt.get(16..20).ok_or(io::ErrorKind::InvalidInput)?;
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]]),
            },
            sin_zero: [0; 8],
        };
        send_to(&self.v4, pkt, &addr)
    }

    fn send_v6(&self, pkt: &[u8]) -> io::Result<usize> {
        let fd = self.v6.as_ref().ok_or(io::ErrorKind::Unsupported)?;
        let dst = pkt.get(24..40).ok_or(io::ErrorKind::InvalidInput)?;
        let mut octets = [0u8; 16];
        octets.copy_from_slice(dst);
        // SAFETY: sockaddr_in6 is plain old data; all-zero is valid (port 0
        // is what raw IPPROTO_RAW sockets expect, scope 0 for global
        // and ULA destinations).
        let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        addr.sin6_addr.s6_addr = octets;
        send_to(fd, pkt, &addr)
    }
}

/// sendto(2) of `pkt` to the socket address `addr` (a `sockaddr_in` or
/// `sockaddr_in6`, matching the socket's family).
fn send_to<A>(fd: &OwnedFd, pkt: &[u8], addr: &A) -> io::Result<usize> {
    // SAFETY: pkt and addr are valid for the lengths passed and outlive
    // the call; the fd is ours and open; the kernel checks that the
    // address length fits the socket's family.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (addr as *const A).cast(),
            size_of::<A>() as libc::socklen_t,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The index of a network interface, `None` if it does not exist. Builds
/// the C string on the stack: called again every few seconds, and the
/// daemon does not allocate after start.
pub fn interface_index(name: &str) -> Option<u32> {
    let mut buf = [0u8; libc::IFNAMSIZ];
    if name.is_empty() || name.len() >= buf.len() || name.as_bytes().contains(&0) {
        return None;
    }
    buf[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: buf is NUL-terminated (its last byte stays 0) and lives
    // across the call; if_nametoindex only reads it.
    let index = unsafe { libc::if_nametoindex(buf.as_ptr().cast()) };
    (index != 0).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_an_index_and_nonsense_has_none() {
        assert!(interface_index("lo").is_some());
        assert_eq!(interface_index("pepwrt-nosuch"), None);
        assert_eq!(interface_index(""), None);
        assert_eq!(interface_index("a-name-far-too-long-for-linux"), None);
        assert_eq!(interface_index("lo\0x"), None);
    }
}
