//! Per-flow state and the fixed flow table (slab + chained hash buckets).

use std::net::IpAddr;
use std::time::Instant;

use super::cache::SegList;
use super::congestion::CongestionWatch;
use super::rtt::RttEstimator;
use super::{IDLE_TIMEOUT, LINGER};

/// End of a hash chain or free list.
const NIL: u16 = u16::MAX;

/// A flow, oriented the way its data goes: from the distant sender to the
/// wireless host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    pub sender: IpAddr,
    pub sender_port: u16,
    pub host: IpAddr,
    pub host_port: u16,
}

impl FlowKey {
    /// FNV-1a over addresses and ports: cheap, and good enough for a table
    /// an outsider can only fill (never overflow: it is bounded by slots).
    fn hash(&self) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
        };
        for (addr, port) in [(self.sender, self.sender_port), (self.host, self.host_port)] {
            match addr {
                IpAddr::V4(a) => eat(&a.octets()),
                IpAddr::V6(a) => eat(&a.octets()),
            }
            eat(&port.to_be_bytes());
        }
        h
    }
}

/// Where loss recovery of the hole at the host's cumulative ACK stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// No hole known.
    Open,
    /// A local copy of the segment at `hole` is on its way; the host's dup
    /// ACKs for it are dropped.
    Local { hole: u32 },
    /// The segment at `hole` is not cached or ran out of local retries:
    /// dup ACKs pass so the sender recovers it itself.
    Sender { hole: u32 },
    /// The segment at `hole` was dropped by a full queue: dup ACKs pass and
    /// nothing is sent from here, so the sender backs off and repairs it.
    Congestion { hole: u32 },
}

/// Why a flow left the table, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    FinAcked,
    HostFin,
    Reset,
    Idle,
    Reused,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::FinAcked => "fin acked",
            CloseReason::HostFin => "host closed, all acked",
            CloseReason::Reset => "reset",
            CloseReason::Idle => "idle",
            CloseReason::Reused => "port reused",
        }
    }

    /// Whether the flow's four-tuple is remembered for a while after it
    /// closed: after an orderly end or a reset, when stragglers are still
    /// in flight. A new SYN or idleness end it at once.
    pub fn lingers(self) -> bool {
        matches!(
            self,
            CloseReason::FinAcked | CloseReason::HostFin | CloseReason::Reset
        )
    }
}

/// What one flow did, logged when it closes.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlowStats {
    pub cached: u32,
    pub local_retransmits: u32,
    pub dupacks_suppressed: u32,
    pub sender_retransmits: u32,
}

#[derive(Debug, Clone)]
pub struct Flow {
    pub key: FlowKey,
    hash_next: u16,
    pub segments: SegList,
    /// End of the highest sequence seen from the sender (its snd.nxt as far
    /// as the router knows).
    pub high_seq: u32,
    /// The host's cumulative ACK and window, once one was seen.
    pub last_ack: Option<u32>,
    pub last_window: u16,
    pub recovery: Recovery,
    /// Highest right edge the host has SACKed above its cumulative ACK.
    pub sack_high: Option<u32>,
    /// When the last-sent segment the host has SACKed so far went toward
    /// it (sent once only). A copy sent before that and still missing was
    /// lost: the queue toward the host keeps order (RACK, RFC 8985).
    pub sacked_sent_at: Option<Instant>,
    pub rtt: RttEstimator,
    pub congestion: CongestionWatch,
    /// Local retransmission timer; armed while segments are cached.
    pub rto_at: Option<Instant>,
    /// Timeouts in a row without a new ACK.
    pub backoff: u8,
    pub last_seen: Instant,
    /// Sequence number just past the sender's FIN, once seen.
    pub fin_end: Option<u32>,
    /// Finished (FIN acknowledged, or the host closed with everything
    /// acknowledged): the cache is freed and the slot only remembers the
    /// four-tuple for `LINGER`, so the sender's late retransmissions pass
    /// without starting a new flow.
    pub finished: bool,
    /// Finished by a reset: the sender's data still in flight (a window of
    /// it, answered by the host's resets one by one) are stragglers too,
    /// whatever their sequence numbers, until a SYN reuses the ports.
    /// Without this each segment started a flow that the next reset
    /// closed: a log line per segment.
    pub reset: bool,
    pub stats: FlowStats,
}

impl Flow {
    pub fn new(key: FlowKey, high_seq: u32, now: Instant) -> Flow {
        Flow {
            key,
            hash_next: NIL,
            segments: SegList::default(),
            high_seq,
            last_ack: None,
            last_window: 0,
            recovery: Recovery::Open,
            sack_high: None,
            sacked_sent_at: None,
            rtt: RttEstimator::default(),
            congestion: CongestionWatch::default(),
            rto_at: None,
            backoff: 0,
            last_seen: now,
            fin_end: None,
            finished: false,
            reset: false,
            stats: FlowStats::default(),
        }
    }

    /// When the flow is forgotten if nothing more is heard of it.
    pub fn expires_at(&self) -> Instant {
        self.last_seen + if self.finished { LINGER } else { IDLE_TIMEOUT }
    }
}

pub struct FlowTable {
    slots: Box<[Option<Flow>]>,
    /// Free slot numbers as a stack; capacity fixed at start.
    free: Vec<u16>,
    /// First slot of each hash chain; the length is a power of two.
    buckets: Box<[u16]>,
}

impl FlowTable {
    pub fn new(capacity: u16) -> FlowTable {
        // NIL is u16::MAX, so at most 65535 slots: 0..=65534.
        let n = capacity.min(NIL - 1) as usize;
        let buckets = n.max(1).next_power_of_two();
        FlowTable {
            slots: vec![None; n].into_boxed_slice(),
            free: (0..n as u16).rev().collect(),
            buckets: vec![NIL; buckets].into_boxed_slice(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn bucket(&self, key: &FlowKey) -> usize {
        key.hash() as usize & (self.buckets.len() - 1)
    }

    pub fn find(&self, key: &FlowKey) -> Option<u16> {
        let mut cur = *self.buckets.get(self.bucket(key))?;
        while let Some(f) = self.get(cur) {
            if f.key == *key {
                return Some(cur);
            }
            cur = f.hash_next;
        }
        None
    }

    /// Takes a free slot; `None` when the table is full.
    pub fn insert(&mut self, mut flow: Flow) -> Option<u16> {
        let b = self.bucket(&flow.key);
        let idx = self.free.pop()?;
        flow.hash_next = self.buckets[b];
        self.buckets[b] = idx;
        self.slots[idx as usize] = Some(flow);
        Some(idx)
    }

    /// Unlinks and returns a flow; its segments are the caller's to free.
    pub fn remove(&mut self, idx: u16) -> Option<Flow> {
        let key = self.get(idx)?.key;
        let b = self.bucket(&key);
        let next = self.get(idx)?.hash_next;
        if self.buckets[b] == idx {
            self.buckets[b] = next;
        } else {
            let mut cur = self.buckets[b];
            while let Some(f) = self.get_mut(cur) {
                if f.hash_next == idx {
                    f.hash_next = next;
                    break;
                }
                cur = f.hash_next;
            }
        }
        self.free.push(idx);
        self.slots.get_mut(idx as usize)?.take()
    }

    /// The first slot whose flow satisfies `pred`.
    pub fn position(&self, pred: impl Fn(&Flow) -> bool) -> Option<u16> {
        let at = self
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(&pred))?;
        Some(at as u16)
    }

    pub fn count(&self, pred: impl Fn(&Flow) -> bool) -> usize {
        self.slots
            .iter()
            .filter(|s| s.as_ref().is_some_and(&pred))
            .count()
    }

    pub fn get(&self, idx: u16) -> Option<&Flow> {
        self.slots.get(idx as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, idx: u16) -> Option<&mut Flow> {
        self.slots.get_mut(idx as usize)?.as_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            sender: "198.18.1.2".parse().unwrap(),
            sender_port: 80,
            host: "fd00::2".parse().unwrap(),
            host_port: port,
        }
    }

    #[test]
    fn insert_find_remove_with_collisions() {
        // Two buckets for three flows: chains are walked and relinked.
        let mut t = FlowTable::new(2);
        let now = Instant::now();
        let a = t.insert(Flow::new(key(1), 0, now)).unwrap();
        let b = t.insert(Flow::new(key(2), 0, now)).unwrap();
        assert!(t.insert(Flow::new(key(3), 0, now)).is_none());
        assert_eq!(
            (t.find(&key(1)), t.find(&key(2)), t.find(&key(3))),
            (Some(a), Some(b), None)
        );
        assert!(t.remove(a).is_some());
        assert_eq!((t.find(&key(1)), t.find(&key(2))), (None, Some(b)));
        let c = t.insert(Flow::new(key(3), 0, now)).unwrap();
        assert_eq!(t.find(&key(3)), Some(c));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn many_flows_in_few_buckets_stay_reachable() {
        let mut t = FlowTable::new(100);
        let now = Instant::now();
        for p in 0..100 {
            t.insert(Flow::new(key(p), 0, now)).unwrap();
        }
        for p in (0..100).step_by(3) {
            let i = t.find(&key(p)).unwrap();
            t.remove(i).unwrap();
        }
        for p in 0..100 {
            assert_eq!(t.find(&key(p)).is_some(), p % 3 != 0, "port {p}");
        }
    }
}
