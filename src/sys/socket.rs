//! TCP sockets with the options std does not offer: transparent bind,
//! congestion control, fast open, abortive close.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use super::cvt;

fn domain(addr: &SocketAddr) -> libc::c_int {
    if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    }
}

/// A socket address in the C layout, and its length.
fn raw_addr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&raw mut storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Owns a raw socket until it is handed to a std type, closing it on error.
struct Pending(RawFd);

impl Drop for Pending {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: we own this fd and nobody else has seen it.
            unsafe { libc::close(self.0) };
        }
    }
}

impl Pending {
    fn tcp(family: libc::c_int) -> io::Result<Pending> {
        let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: plain socket(2) call.
        Ok(Pending(cvt(unsafe { libc::socket(family, ty, 0) })?))
    }
    fn take(mut self) -> RawFd {
        std::mem::replace(&mut self.0, -1)
    }
}

pub fn set_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: val lives across the call and its size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&raw const val).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

pub fn get_int(fd: RawFd, level: libc::c_int, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut val: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: val and len are valid for writes of the sizes passed.
    cvt(unsafe { libc::getsockopt(fd, level, opt, (&raw mut val).cast(), &mut len) })?;
    Ok(val)
}

/// Sets the congestion control algorithm (the kernel loads its module if
/// the process may).
pub fn set_congestion(fd: RawFd, name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A TCP option the kernel fills into `buf`; how many bytes it wrote.
fn tcp_option_bytes(fd: RawFd, opt: libc::c_int, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is writable for len bytes; the kernel writes at most len
    // and stores how many it wrote.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            opt,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    Ok((len as usize).min(buf.len()))
}

/// The socket's congestion control algorithm.
#[cfg(test)]
pub fn congestion(fd: RawFd) -> io::Result<String> {
    let mut name = [0u8; 16];
    let len = tcp_option_bytes(fd, libc::TCP_CONGESTION, &mut name)?;
    let name = &name[..len];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// struct tcp_bbr_info from TCP_CC_INFO: bw_lo, bw_hi (bytes per
/// second), min_rtt, pacing_gain, cwnd_gain; None if the socket does not
/// run BBR.
fn bbr_info(fd: RawFd) -> io::Result<Option<[u32; 5]>> {
    let mut buf = [0u8; 20];
    if tcp_option_bytes(fd, libc::TCP_CC_INFO, &mut buf)? < buf.len() {
        return Ok(None);
    }
    let mut info = [0u32; 5];
    for (field, bytes) in info.iter_mut().zip(buf.chunks_exact(4)) {
        *field = u32::from_ne_bytes(bytes.try_into().unwrap_or_default());
    }
    Ok(Some(info))
}

/// The bandwidth BBR estimates for the socket (bytes per second).
pub fn bbr_bandwidth(fd: RawFd) -> io::Result<Option<u64>> {
    Ok(bbr_info(fd)?.map(|i| u64::from(i[1]) << 32 | u64::from(i[0])))
}

/// BBR's pacing and window gains (in 1/256).
#[cfg(test)]
pub fn bbr_gains(fd: RawFd) -> io::Result<Option<(u32, u32)>> {
    Ok(bbr_info(fd)?.map(|i| (i[3], i[4])))
}

/// Sets IP_TRANSPARENT or IPV6_TRANSPARENT, which lets a socket accept
/// connections for, and bind to, addresses that are not the router's.
fn set_transparent(fd: RawFd, family: libc::c_int) -> io::Result<()> {
    if family == libc::AF_INET {
        set_int(fd, libc::SOL_IP, libc::IP_TRANSPARENT, 1)
    } else {
        set_int(fd, libc::SOL_IPV6, libc::IPV6_TRANSPARENT, 1)
    }
}

/// A non-blocking transparent listener for TPROXY, on all addresses.
pub fn transparent_listener(
    addr: SocketAddr,
    backlog: i32,
    setup: impl Fn(RawFd) -> io::Result<()>,
) -> io::Result<TcpListener> {
    let family = domain(&addr);
    let s = Pending::tcp(family)?;
    set_int(s.0, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if family == libc::AF_INET6 {
        set_int(s.0, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    set_transparent(s.0, family)?;
    setup(s.0)?;
    let (sa, len) = raw_addr(&addr);
    // SAFETY: sa/len come from raw_addr for this family.
    cvt(unsafe { libc::bind(s.0, (&raw const sa).cast(), len) })?;
    // SAFETY: plain listen(2) on our socket.
    cvt(unsafe { libc::listen(s.0, backlog) })?;
    // SAFETY: the fd is a bound, listening TCP socket we own exclusively.
    Ok(unsafe { TcpListener::from_raw_fd(s.take()) })
}

/// Starts a non-blocking connect to `dst`, from `src` if given
/// (transparently: `src` need not be local); port 0 lets connect() choose
/// the port. `setup` applies socket options before the SYN leaves. Fast
/// open defers the SYN to the first write.
pub fn connect(
    dst: SocketAddr,
    src: Option<SocketAddr>,
    fastopen: bool,
    setup: impl FnOnce(RawFd) -> io::Result<()>,
) -> io::Result<TcpStream> {
    let family = domain(&dst);
    let s = Pending::tcp(family)?;
    setup(s.0)?;
    if let Some(src) = src {
        set_transparent(s.0, family)?;
        if src.port() == 0 {
            // Let connect() choose the port for the whole 4-tuple, so many
            // connections can share the client's address without running
            // out of ports at bind time.
            set_int(s.0, libc::SOL_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
        } else {
            // The same address and port may serve other servers: connect()
            // still refuses a 4-tuple in use.
            set_int(s.0, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        }
        let (sa, len) = raw_addr(&src);
        // SAFETY: sa/len come from raw_addr.
        cvt(unsafe { libc::bind(s.0, (&raw const sa).cast(), len) })?;
    }
    if fastopen {
        set_int(s.0, libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT, 1)?;
    }
    let (sa, len) = raw_addr(&dst);
    // SAFETY: sa/len come from raw_addr.
    let r = unsafe { libc::connect(s.0, (&raw const sa).cast(), len) };
    if r == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    // SAFETY: the fd is a TCP socket we own exclusively.
    Ok(unsafe { TcpStream::from_raw_fd(s.take()) })
}

/// A buffer beyond net.core.[rw]mem_max when we may: the FORCE variant
/// (CAP_NET_ADMIN, which pepwrt has) ignores that cap; without the
/// capability the plain option still gets what the sysctl allows.
pub fn set_buffer(fd: RawFd, force: libc::c_int, plain: libc::c_int, bytes: u32) -> io::Result<()> {
    let val = bytes.min(i32::MAX as u32) as i32;
    set_int(fd, libc::SOL_SOCKET, force, val).or_else(|_| set_int(fd, libc::SOL_SOCKET, plain, val))
}
/// SO_MAX_PACING_RATE's value for a rate in bits per second (`None`: not
/// paced): the kernel counts bytes per second.
pub fn pacing_rate(bits_per_s: Option<u64>) -> Option<u64> {
    let bits = bits_per_s?;
    Some(bits / 8)
}

/// A receive buffer of `bytes`, see `set_buffer`.
pub fn set_receive_buffer(fd: RawFd, bytes: u32) -> io::Result<()> {
    set_buffer(fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, bytes)
}

/// The pending error of a socket (how a non-blocking connect ended).
pub fn take_error(fd: RawFd) -> io::Result<()> {
    match get_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)? {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// What TCP_INFO tells about a leg: what holds it back, what it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegInfo {
    /// Microseconds the socket has had data to send (tcpi_busy_time).
    pub busy_us: u64,
    /// The peer's receive window in bytes (tcpi_snd_wnd).
    pub peer_window: u32,
    /// The latest delivery rate sample, bytes per second.
    pub delivery_rate: u64,
    /// The smallest RTT seen, microseconds (0: none yet).
    pub min_rtt_us: u32,
}

/// `LegInfo` of a TCP socket; None on kernels before 5.4, whose TCP_INFO
/// ends before tcpi_snd_wnd.
pub fn leg_info(fd: RawFd) -> io::Result<Option<LegInfo>> {
    // Offsets in struct tcp_info (include/uapi/linux/tcp.h), stable since
    // the fields were added: min RTT (4.6), delivery rate (4.9), busy time
    // (4.10), snd_wnd (5.4).
    const MIN_RTT: usize = 148;
    const DELIVERY_RATE: usize = 160;
    const BUSY_TIME: usize = 168;
    const SND_WND: usize = 228;
    let mut buf = [0u8; 256];
    if tcp_option_bytes(fd, libc::TCP_INFO, &mut buf)? < SND_WND + 4 {
        return Ok(None);
    }
    let u64_at = |at: usize| u64::from_ne_bytes(buf[at..at + 8].try_into().unwrap_or_default());
    let u32_at = |at: usize| u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap_or_default());
    Ok(Some(LegInfo {
        busy_us: u64_at(BUSY_TIME),
        peer_window: u32_at(SND_WND),
        delivery_rate: u64_at(DELIVERY_RATE),
        min_rtt_us: u32_at(MIN_RTT),
    }))
}

/// The socket's handshake is still under way (SYN sent or received;
/// tcpi_state, TCP_INFO's first byte). False where TCP_INFO fails.
pub fn is_connecting(fd: RawFd) -> bool {
    const TCP_SYN_SENT: u8 = 2;
    const TCP_SYN_RECV: u8 = 3;
    let mut buf = [0u8; 8];
    tcp_option_bytes(fd, libc::TCP_INFO, &mut buf)
        .is_ok_and(|n| n > 0 && matches!(buf[0], TCP_SYN_SENT | TCP_SYN_RECV))
}

/// Data in SYNs without a cookie for a listener: a fast open queue of
/// `qlen` (TCP_FASTOPEN) and no cookie asked (TCP_FASTOPEN_NO_COOKIE).
/// The kernel still needs the server bit (2) of net.ipv4.tcp_fastopen.
/// (A connecting socket sends data in its first SYN where its route says
/// `fastopen_no_cookie`: see `pepwrt rules`.)
pub fn set_fast_open_listener(fd: RawFd, qlen: i32) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_FASTOPEN, qlen)?;
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_FASTOPEN_NO_COOKIE, 1)
}

/// The socket's SYN carried data that the other side took (tcpi_options'
/// TCPI_OPT_SYN_DATA, set on both ends of a fast open).
pub fn syn_data_acked(fd: RawFd) -> bool {
    const TCPI_OPT_SYN_DATA: u8 = 32;
    let mut buf = [0u8; 8];
    tcp_option_bytes(fd, libc::TCP_INFO, &mut buf).is_ok_and(|n| n > 5)
        && buf[5] & TCPI_OPT_SYN_DATA != 0
}

/// Bytes in the send queue not yet acknowledged by the peer (SIOCOUTQ).
pub fn unsent_bytes(fd: RawFd) -> io::Result<i32> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int to the pointer given.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) })?;
    Ok(n)
}

/// The peer has acknowledged every byte written (and the handshake):
/// SIOCOUTQ reports 0 during a handshake whatever the socket holds, and a
/// fast open socket holds data then.
pub fn all_acked(fd: RawFd) -> bool {
    !is_connecting(fd) && unsent_bytes(fd).is_ok_and(|n| n == 0)
}

/// Makes the next close send RST instead of FIN (relaying a reset).
pub fn set_abortive_close(s: &TcpStream) {
    set_linger(s, true);
}

/// Makes the next close orderly again: queued bytes and the FIN still go
/// out after it.
pub fn set_graceful_close(s: &TcpStream) {
    set_linger(s, false);
}

fn set_linger(s: &TcpStream, abortive: bool) {
    let lg = libc::linger {
        l_onoff: i32::from(abortive),
        l_linger: 0,
    };
    // SAFETY: lg lives across the call and its size is passed.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const lg).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// Copies the client's DSCP/ECN byte to the outgoing leg.
pub fn set_tos(fd: RawFd, ipv4: bool, tos: u8) -> io::Result<()> {
    if ipv4 {
        set_int(fd, libc::IPPROTO_IP, libc::IP_TOS, libc::c_int::from(tos))
    } else {
        set_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_TCLASS,
            libc::c_int::from(tos),
        )
    }
}

pub use libc::{
    IPPROTO_TCP, SO_RCVBUF, SO_RCVBUFFORCE, SO_SNDBUF, SO_SNDBUFFORCE, SOL_SOCKET, TCP_MAXSEG,
    TCP_NODELAY, TCP_QUICKACK,
};
