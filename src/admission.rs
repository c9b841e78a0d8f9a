//! SYN admission: the queue that captures first SYNs, and for each one
//! the decision, split (reserve a slot) or pass. A decision sticks to its
//! connection through conntrack's mark (see rules.rs), so a retransmitted
//! SYN never comes back here for a second opinion. pepwrt never drops or
//! resets a connection because it is busy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::StartError;
use crate::nfqueue::{NfQueue, QueueVerdict};
use crate::pool::Pool;
use crate::tuple::{FourTuple, SynInfo};
use crate::wire::{
    self,
    tcp::{SynOptions, flags},
};

/// How long an admitted SYN holds its slot waiting for its handshake to
/// reach the listener. The handshake is with the router itself, a LAN
/// round trip away, so this covers a lost SYN-ACK and its resend at 1 s;
/// after it, a full pool takes the slot back, so SYNs that never complete
/// (spoofed ones) cannot keep the pool full. A handshake that completes
/// later still gets any free slot.
pub const RESERVATION: Duration = Duration::from_secs(3);

/// What TCP_MAXSEG accepts (Linux: 88 to MAX_TCP_WINDOW).
pub const MSS_RANGE: std::ops::RangeInclusive<u16> = 88..=32767;

/// A SYN copies this much: IPv6 headers with extension headers and all
/// TCP options fit.
const SYN_COPY_RANGE: u16 = 256;
/// SYNs the kernel may hold for us at once; more than the socket holds, so
/// that overflow is counted (see NfQueue::open).
const SYN_QUEUE_LEN: u32 = 4096;
/// About 1500 queued SYNs: a burst of a thousand connects fits.
const SYN_SOCKET_BYTES: u32 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Split,
    PassFull,
    PassPolicy,
    /// Not a parseable TCP SYN: accepted unchanged, counted.
    Malformed,
}

/// A decision and whether it repeats an earlier one for the same
/// connection (a retransmitted SYN that found its reservation), which
/// counters should not count twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynVerdict {
    pub decision: Decision,
    pub repeat: bool,
}

/// What one round of serving the queue decided, for the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decided {
    pub split: u64,
    pub passed_full: u64,
    pub passed_policy: u64,
    pub malformed: u64,
    /// Repeats of an earlier decision, counted only here.
    pub repeats: u64,
}

impl Decided {
    pub fn add(&mut self, verdict: SynVerdict) {
        if verdict.repeat {
            self.repeats += 1;
            return;
        }
        *match verdict.decision {
            Decision::Split => &mut self.split,
            Decision::PassFull => &mut self.passed_full,
            Decision::PassPolicy => &mut self.passed_policy,
            Decision::Malformed => &mut self.malformed,
        } += 1;
    }
}

/// Decides one queued SYN.
pub fn decide<C>(cfg: &Config, pool: &mut Pool<C>, pkt: &[u8], now: Instant) -> SynVerdict {
    let fresh = |decision| SynVerdict {
        decision,
        repeat: false,
    };
    let Some(syn) = parse_syn(pkt) else {
        return fresh(Decision::Malformed);
    };
    if excluded(cfg, &syn) {
        return fresh(Decision::PassPolicy);
    }
    match pool.reserve(syn, now + RESERVATION, now) {
        Ok(r) => SynVerdict {
            decision: Decision::Split,
            repeat: !r.new,
        },
        Err(_) => fresh(Decision::PassFull),
    }
}

/// The SYN queue: every packet in it gets a verdict, here and nowhere else.
pub struct SynQueue {
    queue: NfQueue,
}

impl SynQueue {
    pub fn open(cfg: &Config) -> Result<SynQueue, StartError> {
        let queue = NfQueue::open(cfg.queue, SYN_COPY_RANGE, SYN_QUEUE_LEN, SYN_SOCKET_BYTES)?;
        Ok(SynQueue { queue })
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        self.queue.fd()
    }

    /// SYNs the kernel let through unseen because the socket was full.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }

    /// Once a tick: counts SYNs lost at the end of a burst.
    pub fn settle(&mut self) {
        self.queue.settle();
    }

    /// Decides up to `budget` waiting SYNs; `split` false passes them all
    /// (pepwrt is stopping). Returns what it decided.
    pub fn serve<C>(
        &mut self,
        cfg: &Config,
        pool: &mut Pool<C>,
        budget: usize,
        split: bool,
        now: Instant,
    ) -> Decided {
        let mut decided = Decided::default();
        self.queue.drain(budget, |pkt| {
            let verdict = if split {
                decide(cfg, pool, pkt.payload, now)
            } else {
                SynVerdict {
                    decision: Decision::PassPolicy,
                    repeat: false,
                }
            };
            decided.add(verdict);
            match verdict.decision {
                Decision::Malformed => QueueVerdict::Accept,
                d => QueueVerdict::RepeatWithMark(mark_for(cfg, d, pkt.mark)),
            }
        });
        decided
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

    fn decision(cfg: &Config, pool: &mut Pool<()>, pkt: &[u8]) -> Decision {
        decide(cfg, pool, pkt, Instant::now()).decision
    }

    #[test]
    fn syn_is_split_while_slots_last_then_passed() {
        let cfg = Config {
            max_conns: 1,
            ..Config::default()
        };
        let mut pool = Pool::<()>::new(1, 4096);
        let now = Instant::now();
        let pkt = syn_packet();
        let first = decide(&cfg, &mut pool, &pkt, now);
        assert_eq!(
            first,
            SynVerdict {
                decision: Decision::Split,
                repeat: false
            }
        );
        // Same SYN again (retransmission): same reservation, not counted.
        let again = decide(&cfg, &mut pool, &pkt, now);
        assert_eq!(
            again,
            SynVerdict {
                decision: Decision::Split,
                repeat: true
            }
        );
        let mut other = pkt.clone();
        other[20] = 0x11; // another source port
        assert_eq!(
            decide(&cfg, &mut pool, &other, now).decision,
            Decision::PassFull
        );
        // Once the first reservation ran out, the pool takes it back.
        let later = now + RESERVATION;
        assert_eq!(
            decide(&cfg, &mut pool, &other, later).decision,
            Decision::Split
        );
    }

    #[test]
    fn a_round_counts_each_decision_once_and_repeats_apart() {
        let mut d = Decided::default();
        let v = |decision, repeat| SynVerdict { decision, repeat };
        d.add(v(Decision::Split, false));
        d.add(v(Decision::Split, true));
        d.add(v(Decision::PassFull, false));
        d.add(v(Decision::PassPolicy, false));
        d.add(v(Decision::Malformed, false));
        let want = Decided {
            split: 1,
            passed_full: 1,
            passed_policy: 1,
            malformed: 1,
            repeats: 1,
        };
        assert_eq!(d, want);
    }

    #[test]
    fn excluded_port_passes() {
        let cfg = Config {
            exclude_ports: vec![80],
            ..Config::default()
        };
        let mut pool = Pool::<()>::new(1, 4096);
        assert_eq!(
            decision(&cfg, &mut pool, &syn_packet()),
            Decision::PassPolicy
        );
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn garbage_and_non_syn_are_malformed_never_a_panic() {
        let cfg = Config::default();
        let mut pool = Pool::<()>::new(1, 4096);
        let pkt = syn_packet();
        for cut in 0..pkt.len() {
            assert_eq!(
                decision(&cfg, &mut pool, &pkt[..cut]),
                Decision::Malformed,
                "cut at {cut}"
            );
        }
        let mut ack = pkt.clone();
        ack[33] = flags::ACK;
        assert_eq!(decision(&cfg, &mut pool, &ack), Decision::Malformed);
        // Every single-byte corruption: some parse, none panic.
        for i in 0..pkt.len() {
            let mut bad = pkt.clone();
            bad[i] ^= 0xff;
            let _ = decision(&cfg, &mut pool, &bad);
        }
    }

    #[test]
    fn signed_syns_pass() {
        let cfg = Config::default();
        let mut pool = Pool::<()>::new(1, 4096);
        let mut pkt = syn_packet();
        // The timestamps option (kind 8, length 10) becomes a TCP-AO
        // option of the same length.
        let at = 20 + 26;
        assert_eq!(pkt[at], 8);
        pkt[at] = 29;
        assert_eq!(decision(&cfg, &mut pool, &pkt), Decision::PassPolicy);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn connections_to_our_own_port_pass() {
        let cfg = Config {
            port: 80,
            ..Config::default()
        };
        let mut pool = Pool::<()>::new(1, 4096);
        assert_eq!(
            decision(&cfg, &mut pool, &syn_packet()),
            Decision::PassPolicy
        );
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
