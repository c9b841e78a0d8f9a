//! Berkeley Snoop (Balakrishnan et al., MobiCom 1995) on a forwarding
//! router: local recovery of losses on the last, wireless hop.
//!
//! Every data segment heading to a wireless host is copied into a fixed
//! cache and forwarded. When the host's duplicate ACKs (or a local timer)
//! show that one was lost on the wireless hop, the cached copy is sent
//! again from here, and the duplicate ACKs are kept from the sender, whose
//! congestion control would otherwise take the loss for congestion.
//!
//! Snoop never acknowledges data, never forges or rewrites a packet: it
//! caches, retransmits unchanged copies, and drops duplicate ACKs, and a
//! new ACK that stops at the next hole it repairs (with SACK that ACK
//! starts the sender's recovery just as a dup ACK would; ack.rs).
//!
//! Real congestion must still reach the sender: a drop in a full queue
//! toward the host, repaired here and hidden, leaves the sender's window
//! growing and the queue full, one drop after another. `congestion.rs`
//! tells the two apart from the queue the lost segment's neighbours
//! crossed (the wireless hop's RTT above its minimum, and the level at
//! which local copies were lost too); a congestion loss passes every dup
//! ACK and gets no local copy. A full cache (uncached segments are
//! recovered end to end) and a local copy that runs out of retries pass
//! the dup ACKs too. Reading the backlog of the router's own queue would
//! take a netlink round trip per decision, and the queue that overflows
//! may not be the router's (a bridge, an access point).
//!
//! Time is passed in; nothing here reads the clock, and nothing allocates
//! after `Snoop::new` (the log line of a closing flow aside, whatever the
//! logger does).

mod ack;
mod cache;
mod congestion;
mod data;
mod flow;
pub mod place;
mod resend;
mod rtt;
pub mod rules;
mod runtime;
mod sack;
mod target;
mod timer;
mod transmit;

#[cfg(test)]
mod testpkt;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::config::SnoopConfig;
use crate::wire;

use cache::{Cache, MAX_PACKET};
use flow::{CloseReason, FlowKey, FlowTable};
pub use runtime::SnoopRuntime;
use target::Targets;
pub use transmit::Transmit;

/// What to tell NFQUEUE about a snooped packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnoopVerdict {
    Accept,
    Drop,
}

/// Which way a queued packet crosses the router, relative to the wireless
/// side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    ToWireless,
    FromWireless,
}

/// A flow with no packet for this long is forgotten (its cache freed).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a finished flow is remembered (without its cache). The
/// sender's retransmissions that were in flight when the host acknowledged
/// everything, and its last ACKs, arrive within a few of its RTOs; without
/// this memory each would start a new flow that then sat idle for
/// IDLE_TIMEOUT.
const LINGER: Duration = Duration::from_secs(10);
/// Local copies of one segment before Snoop leaves its recovery to the
/// sender.
const MAX_LOCAL_SENDS: u8 = 3;

/// Totals since start, for `pepwrt status`.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    flows_total: u64,
    segments_cached: u64,
    local_retransmits_dupack: u64,
    local_retransmits_timeout: u64,
    dupacks_suppressed: u64,
    /// New cumulative ACKs that stopped at a hole repaired from here,
    /// dropped like its dup ACKs (ack.rs, on_partial_ack).
    partial_acks_held: u64,
    /// Dup ACKs let through because the hole was not cached or local
    /// recovery gave up.
    dupacks_passed: u64,
    /// Packets that found the flow table or the cache full.
    passed_full: u64,
    /// Holes taken for congestion (a drop in a full queue toward the
    /// host), left to the sender without a local copy.
    losses_congestion: u64,
    /// Dup ACKs let through for those holes.
    dupacks_passed_congestion: u64,
    /// Data the router saw before, still unacknowledged by the host.
    sender_retransmits: u64,
    /// Data the host had already acknowledged.
    sender_retransmits_acked: u64,
    local_recovery_given_up: u64,
    transmit_failed: u64,
    /// Not a TCP packet we could read, or cut short by the copy range.
    unparsed: u64,
}

pub struct Snoop {
    targets: Targets,
    flows: FlowTable,
    cache: Cache,
    /// One contiguous copy of a cached packet, for `Transmit::send`.
    scratch: Box<[u8]>,
    counters: Totals,
    /// Earliest time `on_timer` has work; may be early, never late.
    next_wake: Option<Instant>,
}

impl Snoop {
    /// Allocates the flow table and the segment arena once and resolves
    /// interface targets.
    pub fn new(cfg: &SnoopConfig) -> Result<Snoop, String> {
        if cfg.targets.is_empty() {
            return Err("snoop needs at least one --snoop target".to_string());
        }
        Ok(Snoop {
            targets: Targets::new(&cfg.targets),
            flows: FlowTable::new(cfg.flows),
            cache: Cache::new(cfg.cache_bytes as usize),
            scratch: vec![0u8; MAX_PACKET].into_boxed_slice(),
            counters: Totals::default(),
            next_wake: None,
        })
    }

    /// One queued packet (a whole IP packet) with NFQUEUE's indev and
    /// outdev ifindex (0 when unknown). Parsed once, here: its addresses
    /// and interfaces say whether it is Snoop's and which way it goes (a
    /// packet for no target is accepted untouched). Never panics on any
    /// input.
    pub fn on_packet(
        &mut self,
        pkt: &[u8],
        indev: u32,
        outdev: u32,
        now: Instant,
        tx: &mut dyn Transmit,
    ) -> SnoopVerdict {
        let Ok((ip, seg)) = wire::parse_tcp(pkt) else {
            self.counters.unparsed += 1;
            return SnoopVerdict::Accept;
        };
        let Some(dir) = self.targets.classify(&ip, indev, outdev) else {
            return SnoopVerdict::Accept;
        };
        match dir {
            Crossing::ToWireless => self.on_data(pkt, &ip, &seg, now),
            Crossing::FromWireless => self.on_ack(&ip, &seg, now, tx),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_wake
    }

    /// Appends the status object (no trailing newline) to `out`.
    pub fn write_status_json(&self, out: &mut String) {
        let c = &self.counters;
        let lingering = self.flows.count(|f| f.finished);
        let _ = write!(
            out,
            "{{\"flows\":{},\"flows_lingering\":{},\"max_flows\":{},\"cached_segments\":{},\"cache_bytes_used\":{},\"cache_bytes\":{},\
             \"flows_total\":{},\"local_retransmits_dupack\":{},\"local_retransmits_timeout\":{},\
             \"dupacks_suppressed\":{},\"partial_acks_held\":{},\"passed_full\":{},\"segments_cached\":{},\"losses_congestion\":{},\"dupacks_passed_congestion\":{},\"dupacks_passed\":{},\
             \"sender_retransmits\":{},\"sender_retransmits_acked\":{},\"local_recovery_given_up\":{},\
             \"transmit_failed\":{},\"unparsed\":{}}}",
            self.flows.len() - lingering,
            lingering,
            self.flows.capacity(),
            self.cache.segment_count(),
            self.cache.used_bytes(),
            self.cache.capacity_bytes(),
            c.flows_total,
            c.local_retransmits_dupack,
            c.local_retransmits_timeout,
            c.dupacks_suppressed,
            c.partial_acks_held,
            c.passed_full,
            c.segments_cached,
            c.losses_congestion,
            c.dupacks_passed_congestion,
            c.dupacks_passed,
            c.sender_retransmits,
            c.sender_retransmits_acked,
            c.local_recovery_given_up,
            c.transmit_failed,
            c.unparsed,
        );
    }

    /// Makes sure `on_timer` runs by `at`.
    fn wake_by(&mut self, at: Instant) {
        self.next_wake = Some(self.next_wake.map_or(at, |w| w.min(at)));
    }

    /// A reset ends a flow; a SYN on a known four-tuple starts a new
    /// connection whose sequence space has nothing to do with the cached
    /// one. True if `seg` was either (the caller then accepts it).
    fn close_on_reset_or_syn(&mut self, found: Option<u16>, seg: &wire::tcp::Segment<'_>) -> bool {
        use wire::tcp::flags;
        let why = if seg.has(flags::RST) {
            CloseReason::Reset
        } else if seg.has(flags::SYN) {
            CloseReason::Reused
        } else {
            return false;
        };
        if let Some(idx) = found {
            self.close(idx, why);
        }
        true
    }

    /// Ends a flow: frees its cached segments and logs what it did. After
    /// an orderly end or a reset the slot lingers (see `LINGER`);
    /// otherwise, or if it already lingered, the slot is freed (but a
    /// reset flow stays for the resets its stragglers bring).
    fn close(&mut self, idx: u16, reason: CloseReason) {
        let Some(flow) = self.flows.get_mut(idx) else {
            return;
        };
        if flow.finished {
            if flow.reset && reason == CloseReason::Reset {
                // The host's reset answering a straggler: lingers on.
                return;
            }
            // Logged when it finished; only the slot is left.
            self.flows.remove(idx);
            return;
        }
        self.cache.release_all(&mut flow.segments);
        let k = &flow.key;
        let s = &flow.stats;
        let srtt_ms = flow.rtt.srtt().map_or(0, crate::duration::millis);
        log::info!(
            "snoop: flow {}:{} -> {}:{} closed ({}): {} segments cached, {} local retransmits, \
             {} dup ACKs suppressed, {} sender retransmits, wireless srtt {} ms",
            k.sender,
            k.sender_port,
            k.host,
            k.host_port,
            reason.as_str(),
            s.cached,
            s.local_retransmits,
            s.dupacks_suppressed,
            s.sender_retransmits,
            srtt_ms
        );
        if reason.lingers() {
            // Nothing reads a finished flow's recovery state; its timer
            // must not fire.
            flow.finished = true;
            flow.reset = reason == CloseReason::Reset;
            flow.rto_at = None;
        } else {
            self.flows.remove(idx);
        }
    }
}

/// The flow key of a segment going toward the wireless host.
fn key_toward(ip: &wire::ip::IpRepr, seg: &wire::tcp::Segment<'_>) -> FlowKey {
    FlowKey {
        sender: ip.src,
        sender_port: seg.src_port(),
        host: ip.dst,
        host_port: seg.dst_port(),
    }
}

/// The flow key of a segment coming from the wireless host.
fn key_from(ip: &wire::ip::IpRepr, seg: &wire::tcp::Segment<'_>) -> FlowKey {
    FlowKey {
        sender: ip.dst,
        sender_port: seg.dst_port(),
        host: ip.src,
        host_port: seg.src_port(),
    }
}

/// Payload bytes by the IP length (the capture may hold fewer).
fn payload_len(ip: &wire::ip::IpRepr, seg: &wire::tcp::Segment<'_>) -> usize {
    ip.l4_len.saturating_sub(seg.header_len())
}
