//! Asking conntrack (over ctnetlink) whether a connection's tuple is
//! already in use: the kernel picks a transparent socket's port knowing
//! only the router's own sockets, not the client's forwarded connections.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::cvt;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_MARK: u16 = 8;
const CTA_MARK_MASK: u16 = 21;

/// A ctnetlink socket for tuple look-ups.
pub struct Conntrack {
    fd: OwnedFd,
    seq: u32,
}

/// A netlink request built in a fixed buffer: header, nfgenmsg, then
/// attributes, nested ones patched with their length when closed.
struct Request {
    buf: [u8; 128],
    len: usize,
}

impl Request {
    fn new(family: u8, msg: u16, flags: u16, seq: u32) -> Request {
        let mut r = Request {
            buf: [0; 128],
            len: 16,
        };
        let ty = (NFNL_SUBSYS_CTNETLINK << 8) | msg;
        let flags = libc::NLM_F_REQUEST as u16 | flags;
        r.buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        r.buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        r.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        r.put(&[family, 0, 0, 0]);
        r
    }

    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len().next_multiple_of(4);
    }

    fn header(&mut self, len: u16, ty: u16) {
        let at = self.len;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self.buf[at + 2..at + 4].copy_from_slice(&ty.to_ne_bytes());
        self.len += 4;
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        self.header((4 + payload.len()) as u16, ty);
        self.put(payload);
    }

    /// Opens a nested attribute; returns where its header is.
    fn open(&mut self, ty: u16) -> usize {
        let at = self.len;
        self.header(0, ty | NLA_F_NESTED);
        at
    }

    fn close(&mut self, at: usize) {
        let len = (self.len - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(&mut self) -> &[u8] {
        let len = self.len as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        &self.buf[..self.len]
    }
}

impl Conntrack {
    pub fn open() -> io::Result<Conntrack> {
        let ty = libc::SOCK_RAW | libc::SOCK_CLOEXEC;
        // SAFETY: plain socket(2) call.
        let fd = cvt(unsafe { libc::socket(libc::AF_NETLINK, ty, libc::NETLINK_NETFILTER) })?;
        // SAFETY: the fd was just created and is ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Conntrack { fd, seq: 1 })
    }

    /// Whether conntrack holds a TCP connection with this tuple, in either
    /// direction.
    pub fn exists(&mut self, src: SocketAddr, dst: SocketAddr) -> io::Result<bool> {
        self.ask(IPCTNL_MSG_CT_GET, 0, src, dst, None)
    }

    /// Clears the `mask` bits of a TCP connection's conntrack mark, if the
    /// connection is still known (a gone one is no error).
    pub fn clear_mark(&mut self, src: SocketAddr, dst: SocketAddr, mask: u32) -> io::Result<()> {
        // Without NLM_F_CREATE this changes an entry and never makes one;
        // the kernel sets mark = (mark & !MARK_MASK) ^ MARK.
        self.ask(
            IPCTNL_MSG_CT_NEW,
            libc::NLM_F_ACK as u16,
            src,
            dst,
            Some(mask),
        )
        .map(drop)
    }

    /// One request about the TCP tuple src -> dst (with, for a change of
    /// mark, the bits to clear); the answer as `answer` reads it.
    fn ask(
        &mut self,
        msg: u16,
        flags: u16,
        src: SocketAddr,
        dst: SocketAddr,
        clear: Option<u32>,
    ) -> io::Result<bool> {
        self.seq = self.seq.wrapping_add(1);
        let family = if src.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let mut r = Request::new(family as u8, msg, flags, self.seq);
        let tuple = r.open(CTA_TUPLE_ORIG);
        let ip = r.open(CTA_TUPLE_IP);
        match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                r.attr(CTA_IP_V4_SRC, &s.octets());
                r.attr(CTA_IP_V4_DST, &d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                r.attr(CTA_IP_V6_SRC, &s.octets());
                r.attr(CTA_IP_V6_DST, &d.octets());
            }
            _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
        r.close(ip);
        let proto = r.open(CTA_TUPLE_PROTO);
        r.attr(CTA_PROTO_NUM, &[libc::IPPROTO_TCP as u8]);
        r.attr(CTA_PROTO_SRC_PORT, &src.port().to_be_bytes());
        r.attr(CTA_PROTO_DST_PORT, &dst.port().to_be_bytes());
        r.close(proto);
        r.close(tuple);
        if let Some(mask) = clear {
            r.attr(CTA_MARK, &0u32.to_be_bytes());
            r.attr(CTA_MARK_MASK, &mask.to_be_bytes());
        }
        let msg = r.finish();
        // SAFETY: a zeroed sockaddr_nl with its family set addresses the
        // kernel (pid 0).
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: msg and `to` are valid for the lengths passed.
        cvt(unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            ) as libc::c_int
        })?;
        self.answer()
    }

    /// Reads the kernel's answer to the last request: a conntrack entry
    /// (found) or an error message (ENOENT: not found). The kernel answers
    /// within the send, so nothing here waits.
    fn answer(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 4096];
        for _ in 0..8 {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let msg = &buf[..n as usize];
            if msg.len() < 16 {
                return Err(io::Error::from(io::ErrorKind::InvalidData));
            }
            let ty = u16::from_ne_bytes([msg[4], msg[5]]);
            let seq = u32::from_ne_bytes([msg[8], msg[9], msg[10], msg[11]]);
            if seq != self.seq {
                continue;
            }
            if ty == libc::NLMSG_ERROR as u16 {
                let code = msg
                    .get(16..20)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                return match -code {
                    0 | libc::ENOENT => Ok(false),
                    e => Err(io::Error::from_raw_os_error(e)),
                };
            }
            return Ok(true);
        }
        Err(io::Error::from(io::ErrorKind::InvalidData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_nest_the_tuple_with_lengths_and_padding() {
        let mut r = Request::new(libc::AF_INET as u8, IPCTNL_MSG_CT_GET, 0, 7);
        let t = r.open(CTA_TUPLE_ORIG);
        let ip = r.open(CTA_TUPLE_IP);
        r.attr(CTA_IP_V4_SRC, &[198, 18, 0, 2]);
        r.close(ip);
        let p = r.open(CTA_TUPLE_PROTO);
        r.attr(CTA_PROTO_NUM, &[6]);
        r.close(p);
        r.close(t);
        let msg = r.finish().to_vec();
        // 16 header + 4 nfgenmsg + 4 tuple + (4 ip + 8 addr) + (4 proto + 8 num).
        assert_eq!(msg.len(), 48);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 48);
        assert_eq!(u16::from_ne_bytes(msg[20..22].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes(msg[22..24].try_into().unwrap()), 0x8001);
        assert_eq!(u16::from_ne_bytes(msg[24..26].try_into().unwrap()), 12);
        assert_eq!(&msg[28..32], &[8, 0, 1, 0]);
        assert_eq!(&msg[32..36], &[198, 18, 0, 2]);
        // The one-byte protocol number is padded to four.
        assert_eq!(&msg[40..44], &[5, 0, 1, 0]);
        assert_eq!(msg[44], 6);
    }
}
