//! SYN admission: for each queued SYN, split (reserve a slot) or pass.
//! pepwrt never drops or resets a connection because it is busy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::pool::{FourTuple, Pool, SynInfo};
use crate::wire::{
    self,
    tcp::{SynOptions, flags},
};

/// How long an admitted SYN holds its slot waiting for the handshake to
/// reach the listener; covers the client's SYN retransmissions (1 s, 3 s).
pub const RESERVATION: Duration = Duration::from_secs(8);

/// What TCP_MAXSEG accepts (Linux: 88 to MAX_TCP_WINDOW).
pub const MSS_RANGE: std::ops::RangeInclusive<u16> = 88..=32767;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Split,
    PassFull,
    PassPolicy,
    /// Not a parseable TCP SYN: accepted unchanged, counted.
    Malformed,
}

pub fn decide(cfg: &Config, pool: &mut Pool, pkt: &[u8], now: Instant) -> Decision {
    let Ok((ip, seg)) = wire::parse_tcp(pkt) else {
        return Decision::Malformed;
    };
    if !seg.has(flags::SYN) || seg.has(flags::ACK) || seg.has(flags::RST) {
        return Decision::Malformed;
    }
    let Ok(options) = SynOptions::parse(&seg) else {
        return Decision::Malformed;
    };
    let server = SocketAddr::new(ip.dst, seg.dst_port());
    let client = SocketAddr::new(ip.src, seg.src_port());
    if options.signed
        || cfg.exclude_ports.contains(&server.port())
        || (server.is_ipv6() && !cfg.ipv6)
        || server.ip().is_loopback()
        || server.ip().is_multicast()
        || server.ip().is_unspecified()
        || server.port() == 0
        // The rules cannot tell such a connection's handshake from traffic
        // for our own listener (see rules.rs), so it is never split.
        || server.port() == cfg.port
    {
        return Decision::PassPolicy;
    }
    let syn = SynInfo {
        tuple: FourTuple { client, server },
        tos: ip.tos,
        options,
    };
    match pool.reserve(syn, now + RESERVATION) {
        Ok(_) => Decision::Split,
        Err(_) => Decision::PassFull,
    }
}

/// The mark a decided SYN leaves with.
pub fn mark_for(cfg: &Config, decision: Decision, old_mark: u32) -> u32 {
    let base = old_mark & !cfg.mark_mask();
    match decision {
        Decision::Split => base | cfg.decided_mark() | cfg.mark,
        _ => base | cfg.decided_mark(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::tests::V4_HDR;
    use crate::wire::tcp::tests::SYN;

    fn syn_packet() -> Vec<u8> {
        let mut p = V4_HDR.to_vec();
        p.extend_from_slice(&SYN);
        p
    }

    #[test]
    fn syn_is_split_while_slots_last_then_passed() {
        let cfg = Config {
            max_conns: 1,
            ..Config::default()
        };
        let mut pool = Pool::new(1, 4096);
        let now = Instant::now();
        let pkt = syn_packet();
        assert_eq!(decide(&cfg, &mut pool, &pkt, now), Decision::Split);
        // Same SYN again (retransmission): same reservation.
        assert_eq!(decide(&cfg, &mut pool, &pkt, now), Decision::Split);
        let mut other = pkt.clone();
        other[20] = 0x11; // another source port
        assert_eq!(decide(&cfg, &mut pool, &other, now), Decision::PassFull);
    }

    #[test]
    fn excluded_port_passes() {
        let cfg = Config {
            exclude_ports: vec![80],
            ..Config::default()
        };
        let mut pool = Pool::new(1, 4096);
        assert_eq!(
            decide(&cfg, &mut pool, &syn_packet(), Instant::now()),
            Decision::PassPolicy
        );
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn garbage_and_non_syn_are_malformed_never_a_panic() {
        let cfg = Config::default();
        let mut pool = Pool::new(1, 4096);
        let now = Instant::now();
        let pkt = syn_packet();
        for cut in 0..pkt.len() {
            let d = decide(&cfg, &mut pool, &pkt[..cut], now);
            assert_eq!(d, Decision::Malformed, "cut at {cut}");
        }
        let mut ack = pkt.clone();
        ack[33] = flags::ACK;
        assert_eq!(decide(&cfg, &mut pool, &ack, now), Decision::Malformed);
        // Every single-byte corruption: some parse, none panic.
        for i in 0..pkt.len() {
            let mut bad = pkt.clone();
            bad[i] ^= 0xff;
            let _ = decide(&cfg, &mut pool, &bad, now);
        }
    }

    #[test]
    fn signed_syns_pass() {
        let cfg = Config::default();
        let mut pool = Pool::new(1, 4096);
        let mut pkt = syn_packet();
        // The timestamps option (kind 8, length 10) becomes a TCP-AO
        // option of the same length.
        let at = 20 + 26;
        assert_eq!(pkt[at], 8);
        pkt[at] = 29;
        assert_eq!(
            decide(&cfg, &mut pool, &pkt, Instant::now()),
            Decision::PassPolicy
        );
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn connections_to_our_own_port_pass() {
        let cfg = Config {
            port: 80,
            ..Config::default()
        };
        let mut pool = Pool::new(1, 4096);
        assert_eq!(
            decide(&cfg, &mut pool, &syn_packet(), Instant::now()),
            Decision::PassPolicy
        );
    }

    #[test]
    fn marks_keep_foreign_bits() {
        let cfg = Config::default();
        assert_eq!(mark_for(&cfg, Decision::Split, 0x5), 0x30005);
        assert_eq!(mark_for(&cfg, Decision::PassFull, 0x10005), 0x20005);
    }
}
