//! AF_PACKET sockets: one receives every frame arriving on an
//! interface (never the ones we send), the other transmits raw frames.

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn ifindex(name: &str) -> io::Result<i32> {
    let c = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"))?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface `{name}`"),
        ));
    }
    Ok(idx as i32)
}

fn address(ifindex: i32, protocol: u16) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex;
    sll
}

fn set_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: fd is open; the option value is a c_int of the given size.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &value as *const _ as *const libc::c_void,
            mem::size_of::<libc::c_int>() as u32,
        )
    })
    .map(drop)
}

/// Protocol 0 at creation: the socket receives nothing until bind
/// names the interface, so it never sees another interface's frames.
fn open(ifindex: i32, bind_protocol: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })?;
    // SAFETY: fd was just created and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sll = address(ifindex, bind_protocol);
    // Bypassing the qdisc keeps our own timing the only shaping.
    set_int(
        fd.as_raw_fd(),
        libc::SOL_PACKET,
        libc::PACKET_QDISC_BYPASS,
        1,
    )?;
    // SAFETY: sll is a valid sockaddr_ll of the given length.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const _ as *const libc::sockaddr,
            mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    })?;
    Ok(fd)
}

pub struct Receiver {
    fd: OwnedFd,
}

impl Receiver {
    pub fn open(ifindex: i32, rcvbuf: usize) -> io::Result<Receiver> {
        let fd = open(ifindex, libc::ETH_P_ALL as u16)?;
        let raw = fd.as_raw_fd();
        // Our own transmissions on this interface must not loop back in.
        set_int(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
        // Bursts wait in the socket until the pump reads them; a larger
        // buffer keeps a 100 Mbit/s burst from being dropped here.
        set_int(
            raw,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            rcvbuf as libc::c_int,
        )
        .or_else(|_| {
            set_int(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                rcvbuf as libc::c_int,
            )
        })?;
        // Arrival time from the kernel: a late wake-up of the pump must
        // not count as link delay.
        set_int(raw, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
        // Frames for the peer's MAC must be taken too: we are a wire.
        // SAFETY: packet_mreq is plain data.
        let mut mreq: libc::packet_mreq = unsafe { mem::zeroed() };
        mreq.mr_ifindex = ifindex;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        // SAFETY: mreq is a valid packet_mreq of the given length.
        check(unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                &mreq as *const _ as *const libc::c_void,
                mem::size_of::<libc::packet_mreq>() as u32,
            )
        })?;
        Ok(Receiver { fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// One frame into `buf`: Ok(None) when nothing is waiting, else its
    /// full length (which may exceed `buf`: MSG_TRUNC reports it) and
    /// the kernel's CLOCK_REALTIME arrival stamp, if it gave one.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<(usize, Option<u64>)>> {
        loop {
            // SAFETY: plain data, zero is valid.
            let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
            let mut control = [0u64; 8];
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            // SAFETY: plain data, zero is valid.
            let mut msg: libc::msghdr = unsafe { mem::zeroed() };
            msg.msg_name = &mut from as *mut _ as *mut libc::c_void;
            msg.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = mem::size_of_val(&control);
            // SAFETY: every pointer in msg is valid for its length.
            let n = unsafe {
                libc::recvmsg(
                    self.fd.as_raw_fd(),
                    &mut msg,
                    libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            // Belt and braces for kernels without PACKET_IGNORE_OUTGOING.
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            return Ok(Some((n as usize, arrival_stamp(&msg))));
        }
    }
}

/// The SCM_TIMESTAMPNS control message, as ns since the epoch.
fn arrival_stamp(msg: &libc::msghdr) -> Option<u64> {
    // SAFETY: msg was filled by recvmsg; the CMSG macros stay within
    // msg_control/msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

pub struct Sender {
    fd: OwnedFd,
    ifindex: i32,
}

impl Sender {
    /// Bound with protocol 0, so it never queues received frames.
    pub fn open(ifindex: i32) -> io::Result<Sender> {
        Ok(Sender {
            fd: open(ifindex, 0)?,
            ifindex,
        })
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let ethertype = if frame.len() >= 14 {
            u16::from_be_bytes([frame[12], frame[13]])
        } else {
            0
        };
        let to = address(self.ifindex, ethertype);
        loop {
            // SAFETY: frame and to are valid for the lengths passed.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr() as *const libc::c_void,
                    frame.len(),
                    0,
                    &to as *const _ as *const libc::sockaddr,
                    mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}
