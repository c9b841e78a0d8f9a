//! Per-leg socket options from the command line (and, for the leg over
//! the long link, from the link settings: see settings.rs), and setting
//! them on the legs' sockets.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

use crate::sys::socket::{
    self, IPPROTO_TCP, SO_RCVBUF, SO_RCVBUFFORCE, SO_SNDBUF, SO_SNDBUFFORCE, SOL_SOCKET,
    TCP_MAXSEG, TCP_NODELAY, TCP_QUICKACK,
};

/// A congestion control by kind: the link's code decides on BBR by this,
/// never by comparing names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Congestion {
    Bbr,
    Cubic,
    Reno,
    /// Any other the kernel may offer (its module loads on first use).
    Other(String),
}

impl Congestion {
    pub fn from_name(name: &str) -> Congestion {
        match name {
            "bbr" => Congestion::Bbr,
            "cubic" => Congestion::Cubic,
            "reno" => Congestion::Reno,
            other => Congestion::Other(other.to_string()),
        }
    }

    /// The kernel's name for it (TCP_CONGESTION).
    pub fn name(&self) -> &str {
        match self {
            Congestion::Bbr => "bbr",
            Congestion::Cubic => "cubic",
            Congestion::Reno => "reno",
            Congestion::Other(name) => name,
        }
    }
}

impl fmt::Display for Congestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Socket options for one leg of a split connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegOptions {
    pub congestion: Option<Congestion>,
    pub nodelay: bool,
    pub quickack: bool,
    pub sndbuf_bytes: Option<u32>,
    pub rcvbuf_bytes: Option<u32>,
    pub mss: Option<u16>,
    /// SO_MAX_PACING_RATE in bytes per second: set from the link's rate
    /// on the leg that sends over the long link.
    pub pacing_bytes_per_s: Option<u64>,
}

/// Sets a leg's congestion control.
pub fn set_congestion(fd: RawFd, cc: &Congestion) -> io::Result<()> {
    socket::set_congestion(fd, cc.name())
}

/// Options that must be in place before the handshake (window scale and
/// MSS are negotiated in the SYN): set on the listener or before connect.
pub fn before_handshake(fd: RawFd, leg: &LegOptions, mss: Option<u16>) -> io::Result<()> {
    if let Some(cc) = &leg.congestion {
        set_congestion(fd, cc).map_err(|e| with_context(e, "TCP_CONGESTION", cc.name()))?;
    }
    if let Some(b) = leg.sndbuf_bytes {
        socket::set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, b)?;
    }
    if let Some(b) = leg.rcvbuf_bytes {
        socket::set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, b)?;
    }
    if let Some(m) = leg.mss.or(mss) {
        socket::set_int(fd, IPPROTO_TCP, TCP_MAXSEG, i32::from(m))?;
    }
    after_handshake(fd, leg)
}

/// Options that apply to a connected socket.
pub fn after_handshake(fd: RawFd, leg: &LegOptions) -> io::Result<()> {
    if leg.nodelay {
        socket::set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1)?;
    }
    if leg.quickack {
        socket::set_int(fd, IPPROTO_TCP, TCP_QUICKACK, 1)?;
    }
    if let Some(rate) = leg.pacing_bytes_per_s {
        // Also turns on TCP's own pacing (Linux 4.20 and later), so no fq
        // qdisc is needed: a first flight of a whole BDP leaves at the
        // link's rate instead of as one burst into the modem's queue.
        // Legs sending together share the rate (see share.rs).
        set_pacing_cap(fd, rate.min(u64::from(u32::MAX)) as u32)?;
    }
    Ok(())
}

/// Caps a socket's pacing rate (bytes per second).
pub fn set_pacing_cap(fd: RawFd, rate: u32) -> io::Result<()> {
    let rate = rate.min(i32::MAX as u32) as i32;
    socket::set_int(fd, SOL_SOCKET, libc::SO_MAX_PACING_RATE, rate)
}

fn with_context(e: io::Error, what: &str, value: &str) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) => {
            " (not available in this kernel: load its module, e.g. kmod-tcp-bbr on OpenWrt)"
        }
        Some(libc::EPERM) => {
            " (not allowed: add it to net.ipv4.tcp_allowed_congestion_control or run with CAP_NET_ADMIN)"
        }
        _ => "",
    };
    io::Error::new(e.kind(), format!("{what} {value}: {e}{hint}"))
}
