//! Opening a split connection: the transparent listeners that accept the
//! client leg, and for each accepted client its slot and the outgoing leg
//! to the real server.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

use super::Conn;
use crate::config::{Config, OutgoingSource};
use crate::error::StartError;
use crate::pool::{ConnId, Pool};
use crate::sys::socket;
use crate::tuning;
use crate::tuple::FourTuple;

/// Pending handshakes per listener.
const BACKLOG: i32 = 1024;

/// The IPv4 and (if enabled and available) IPv6 transparent listeners.
pub fn listeners(cfg: &Config) -> Result<Vec<TcpListener>, StartError> {
    let mut addrs = vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), cfg.port)];
    if cfg.ipv6 {
        addrs.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), cfg.port));
    }
    let mut out = Vec::new();
    for addr in addrs {
        let leg = &cfg.client_leg;
        match socket::transparent_listener(addr, BACKLOG, |fd| {
            tuning::before_handshake(fd, leg, None)
        }) {
            Ok(l) => out.push(l),
            Err(e) if addr.is_ipv6() && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                log::warn!("IPv6 is not available in this kernel; intercepting IPv4 only");
            }
            Err(e) => return Err(StartError::listener(addr, &e)),
        }
    }
    Ok(out)
}

/// Why an accepted client got a reset instead of a relay.
#[derive(Debug)]
pub enum Refusal {
    /// A connection to the listener's own port: not one the rules diverted
    /// (pepwrt is never an open proxy).
    NotAdmitted,
    /// Its reservation ran out and the pool is full.
    NoSlot,
    /// The outgoing connect failed at once.
    ConnectFailed(io::Error),
}

/// Gives an accepted client its slot and starts the outgoing leg; on
/// refusal the client is reset.
pub fn take(
    cfg: &Config,
    pool: &mut Pool,
    client: TcpStream,
    peer: SocketAddr,
    now: Instant,
) -> Result<ConnId, Refusal> {
    let refuse = |why| {
        socket::set_abortive_close(&client);
        why
    };
    let Ok(local) = client.local_addr() else {
        return Err(refuse(Refusal::NotAdmitted));
    };
    let tuple = FourTuple {
        client: peer,
        server: local,
    };
    // Only TPROXY gives an accepted socket a local port other than the
    // listener's, and admission never splits connections to that port; so
    // a client on another port was admitted, even if its handshake took
    // longer than its reservation.
    let claim = match pool.claim(&tuple) {
        Some(c) => c,
        None if local.port() == cfg.port => return Err(refuse(Refusal::NotAdmitted)),
        None => pool
            .claim_late(now)
            .ok_or_else(|| refuse(Refusal::NoSlot))?,
    };
    let _ = client.set_nonblocking(true);
    if let Err(e) = tuning::after_handshake(client.as_raw_fd(), &cfg.client_leg) {
        log::debug!("client leg options: {e}");
    }
    let src = match cfg.outgoing_source {
        OutgoingSource::Client => Some(peer.ip()),
        OutgoingSource::Router => None,
    };
    let leg = &cfg.server_leg;
    let server = socket::connect(local, src, cfg.server_fastopen, |fd| {
        // The client's DSCP travels on; the server leg's MSS is what the
        // client asked for unless configured.
        let (tos, mss) = claim.syn.map_or((0, None), |s| (s.tos, s.options.mss));
        if let Err(e) = socket::set_tos(fd, local.is_ipv4(), tos) {
            log::debug!("copying TOS: {e}");
        }
        tuning::before_handshake(fd, leg, mss)
    });
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            pool.release(claim.id);
            return Err(refuse(Refusal::ConnectFailed(e)));
        }
    };
    let conn = Conn::new(client, server, tuple, now + cfg.connect_timeout, now);
    match pool.activate(claim.id, conn) {
        Ok(()) => Ok(claim.id),
        // Cannot happen: the claim is this call's own.
        Err(mut conn) => {
            conn.abort(super::End::Shutdown);
            Err(Refusal::NoSlot)
        }
    }
}
