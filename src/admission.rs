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

/// A decision and whether it repeats an earlier one for the same
/// connection (a retransmitted SYN), which counters should not count twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub repeat: bool,
}

/// How many recently passed connections are remembered, so that their
/// retransmitted SYNs are passed again even if a slot has freed meanwhile
/// (a split retransmission would answer with a second, competing SYN-ACK).
const PASS_MEMORY: usize = 64;

/// Decides SYNs; owns the memory of recent passes (fixed size).
pub struct Admission {
    passed: [Option<(FourTuple, Decision, Instant)>; PASS_MEMORY],
    next: usize,
}

impl Admission {
    pub fn new() -> Admission {
        Admission {
            passed: [None; PASS_MEMORY],
            next: 0,
        }
    }

    fn recent_pass(&self, tuple: &FourTuple, now: Instant) -> Option<Decision> {
        self.passed
            .iter()
            .flatten()
            .find(|(t, _, until)| t == tuple && *until > now)
            .map(|(_, d, _)| *d)
    }

    fn remember_pass(&mut self, tuple: FourTuple, decision: Decision, now: Instant) {
        self.passed[self.next] = Some((tuple, decision, now + RESERVATION));
        self.next = (self.next + 1) % PASS_MEMORY;
    }

    pub fn decide(&mut self, cfg: &Config, pool: &mut Pool, pkt: &[u8], now: Instant) -> Verdict {
        let fresh = |decision| Verdict {
            decision,
            repeat: false,
        };
        let Some(syn) = parse_syn(pkt) else {
            return fresh(Decision::Malformed);
        };
        if let Some(decision) = self.recent_pass(&syn.tuple, now) {
            return Verdict {
                decision,
                repeat: true,
            };
        }
        let decision = if excluded(cfg, &syn) {
            Decision::PassPolicy
        } else {
            match pool.reserve(syn, now + RESERVATION) {
                Ok((_, new)) => {
                    return Verdict {
                        decision: Decision::Split,
                        repeat: !new,
                    };
                }
                Err(_) => Decision::PassFull,
            }
        };
        self.remember_pass(syn.tuple, decision, now);
        fresh(decision)
    }
}

/// The SYN's endpoints and options, if it is a well-formed initial SYN.
fn parse_syn(pkt: &[u8]) -> Option<SynInfo> {
    let (ip, seg) = wire::parse_tcp(pkt).ok()?;
    if !seg.has(flags::SYN) || seg.has(flags::ACK) || seg.has(flags::RST) {
        return None;
    }
    let options = SynOptions::parse(&seg).ok()?;
    // An MSS the kernel would refuse for the outgoing leg is not copied.
    let options = SynOptions {
        mss: options.mss.filter(|m| MSS_RANGE.contains(m)),
        ..options
    };
    Some(SynInfo {
        tuple: FourTuple {
            client: SocketAddr::new(ip.src, seg.src_port()),
            server: SocketAddr::new(ip.dst, seg.dst_port()),
        },
        tos: ip.tos,
        options,
    })
}

/// Policy: connections pepwrt must not or cannot split.
fn excluded(cfg: &Config, syn: &SynInfo) -> bool {
    let server = syn.tuple.server;
    syn.options.signed
        || cfg.exclude_ports.contains(&server.port())
        || (server.is_ipv6() && !cfg.ipv6)
        || server.ip().is_loopback()
        || server.ip().is_multicast()
        || server.ip().is_unspecified()
        || server.port() == 0
        // The rules cannot tell such a connection's handshake from traffic
        // for our own listener (see rules.rs), so it is never split.
        || server.port() == cfg.port
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

    fn decide(cfg: &Config, pool: &mut Pool, pkt: &[u8]) -> Decision {
        Admission::new()
            .decide(cfg, pool, pkt, Instant::now())
            .decision
    }

    #[test]
    fn syn_is_split_while_slots_last_then_passed() {
        let cfg = Config {
            max_conns: 1,
            ..Config::default()
        };
        let mut pool = Pool::new(1, 4096);
        let mut adm = Admission::new();
        let now = Instant::now();
        let pkt = syn_packet();
        let first = adm.decide(&cfg, &mut pool, &pkt, now);
        assert_eq!(
            first,
            Verdict {
                decision: Decision::Split,
                repeat: false
            }
        );
        // Same SYN again (retransmission): same reservation, not counted.
        let again = adm.decide(&cfg, &mut pool, &pkt, now);
        assert_eq!(
            again,
            Verdict {
                decision: Decision::Split,
                repeat: true
            }
        );
        let mut other = pkt.clone();
        other[20] = 0x11; // another source port
        assert_eq!(
            adm.decide(&cfg, &mut pool, &other, now).decision,
            Decision::PassFull
        );
    }

    #[test]
    fn a_passed_syn_retransmitted_after_a_slot_frees_is_passed_again() {
        let cfg = Config::default();
        let mut pool = Pool::new(1, 4096);
        let mut adm = Admission::new();
        let now = Instant::now();
        let mut holder = syn_packet();
        holder[20] = 0x11;
        assert_eq!(
            adm.decide(&cfg, &mut pool, &holder, now).decision,
            Decision::Split
        );
        let pkt = syn_packet();
        assert_eq!(
            adm.decide(&cfg, &mut pool, &pkt, now).decision,
            Decision::PassFull
        );
        pool.expire_reservations(now + RESERVATION);
        let v = adm.decide(&cfg, &mut pool, &pkt, now + Duration::from_secs(1));
        assert_eq!(
            v,
            Verdict {
                decision: Decision::PassFull,
                repeat: true
            }
        );
        // Long after, the same tuple is a new connection.
        let later = adm.decide(&cfg, &mut pool, &pkt, now + RESERVATION * 2);
        assert_eq!(later.decision, Decision::Split);
    }

    #[test]
    fn excluded_port_passes() {
        let cfg = Config {
            exclude_ports: vec![80],
            ..Config::default()
        };
        let mut pool = Pool::new(1, 4096);
        assert_eq!(decide(&cfg, &mut pool, &syn_packet()), Decision::PassPolicy);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn garbage_and_non_syn_are_malformed_never_a_panic() {
        let cfg = Config::default();
        let mut pool = Pool::new(1, 4096);
        let pkt = syn_packet();
        for cut in 0..pkt.len() {
            assert_eq!(
                decide(&cfg, &mut pool, &pkt[..cut]),
                Decision::Malformed,
                "cut at {cut}"
            );
        }
        let mut ack = pkt.clone();
        ack[33] = flags::ACK;
        assert_eq!(decide(&cfg, &mut pool, &ack), Decision::Malformed);
        // Every single-byte corruption: some parse, none panic.
        for i in 0..pkt.len() {
            let mut bad = pkt.clone();
            bad[i] ^= 0xff;
            let _ = decide(&cfg, &mut pool, &bad);
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
        assert_eq!(decide(&cfg, &mut pool, &pkt), Decision::PassPolicy);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn connections_to_our_own_port_pass() {
        let cfg = Config {
            port: 80,
            ..Config::default()
        };
        let mut pool = Pool::new(1, 4096);
        assert_eq!(decide(&cfg, &mut pool, &syn_packet()), Decision::PassPolicy);
    }

    #[test]
    fn out_of_range_mss_is_not_copied() {
        let mut pkt = syn_packet();
        pkt[20 + 22..20 + 24].copy_from_slice(&40000u16.to_be_bytes());
        let syn = parse_syn(&pkt).unwrap();
        assert_eq!(syn.options.mss, None);
        assert_eq!(parse_syn(&syn_packet()).unwrap().options.mss, Some(1460));
    }

    #[test]
    fn marks_keep_foreign_bits() {
        let cfg = Config::default();
        assert_eq!(mark_for(&cfg, Decision::Split, 0x5), 0x30005);
        assert_eq!(mark_for(&cfg, Decision::PassFull, 0x10005), 0x20005);
    }
}
