//! The segment cache: one byte arena allocated at start, cut into fixed
//! chunks, and a slab of segment records that point into it.
//!
//! Fixed chunks instead of variable byte ranges: segments of many flows are
//! freed in any order, and a free list of equal chunks cannot fragment. A
//! segment's chunks are chained, so only a local retransmission copies it
//! out (into one scratch buffer) to make it contiguous again.

use std::time::Instant;

use crate::wire::tcp::{seq_le, seq_lt};

/// 256 bytes: a 1500-byte packet wastes 36 bytes, a bare FIN at most 196.
pub const CHUNK_BYTES: usize = 256;
/// Chunks per segment record (see `Cache::new`).
const CHUNKS_PER_RECORD: usize = 4;
/// End of a chunk chain, a segment list or a free list.
pub const NIL: u32 = u32::MAX;
/// The largest packet kept (NFQUEUE hands over at most 64 KiB).
pub const MAX_PACKET: usize = 65535;

/// One cached data segment: the whole IP packet as it left for the host.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    /// Sequence space it covers, FIN included: `[seq, end)`.
    pub seq: u32,
    pub end: u32,
    /// Next segment of the same flow, in sequence order, or `NIL`.
    pub next: u32,
    pub cached_at: Instant,
    /// Last time a copy went out, locally or from the sender.
    pub last_sent: Instant,
    /// Local retransmissions of this segment so far.
    pub local_sends: u8,
    /// Sent more than once (by the sender or by us): Karn's rule keeps its
    /// ACK out of the RTT estimate.
    pub retransmitted: bool,
    /// The host reported it in a SACK block: it arrived.
    pub sacked: bool,
    /// Microseconds from caching to the first SACK that named it (its
    /// crossing of the hop, queue included); 0 when unknown (sent twice,
    /// or not SACKed).
    pub sacked_after_us: u32,
    packet_len: u16,
    first_chunk: u32,
}

/// What the caller knows about a segment to cache.
#[derive(Debug, Clone, Copy)]
pub struct NewSegment {
    pub seq: u32,
    pub end: u32,
    pub now: Instant,
    pub retransmitted: bool,
}

/// Head and tail of one flow's segment list (sorted by sequence number).
#[derive(Debug, Clone, Copy)]
pub struct SegList {
    pub head: u32,
    tail: u32,
}

impl Default for SegList {
    fn default() -> Self {
        SegList {
            head: NIL,
            tail: NIL,
        }
    }
}

impl SegList {
    pub fn is_empty(&self) -> bool {
        self.head == NIL
    }
}

pub struct Cache {
    arena: Box<[u8]>,
    /// Per chunk: the next chunk of the same segment, or `NIL`.
    chunk_next: Box<[u32]>,
    /// Free chunks, used as a stack; its capacity is the chunk count, so
    /// pushes never reallocate.
    free_chunks: Vec<u32>,
    segments: Box<[Option<Segment>]>,
    free_segments: Vec<u32>,
    /// Packet bytes held (without chunk slack), for the status report.
    used_bytes: usize,
}

impl Cache {
    /// Allocates everything the cache will ever use. One segment record
    /// per `CHUNKS_PER_RECORD` chunks: a record costs about 64 bytes, and
    /// full-sized data segments take six chunks each; a flow of tiny
    /// segments runs out of records first and passes uncached, which is
    /// all a full cache ever means.
    pub fn new(cache_bytes: usize) -> Cache {
        let chunks = (cache_bytes / CHUNK_BYTES).min(NIL as usize - 1);
        let records = chunks.div_ceil(CHUNKS_PER_RECORD);
        Cache {
            arena: vec![0u8; chunks * CHUNK_BYTES].into_boxed_slice(),
            chunk_next: vec![NIL; chunks].into_boxed_slice(),
            free_chunks: (0..chunks as u32).rev().collect(),
            segments: vec![None; records].into_boxed_slice(),
            free_segments: (0..records as u32).rev().collect(),
            used_bytes: 0,
        }
    }

    pub fn capacity_bytes(&self) -> usize {
        self.arena.len()
    }

    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len() - self.free_segments.len()
    }

    pub fn get(&self, idx: u32) -> Option<&Segment> {
        self.segments.get(idx as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, idx: u32) -> Option<&mut Segment> {
        self.segments.get_mut(idx as usize)?.as_mut()
    }

    /// Copies `packet` in and links it into `list` in sequence order.
    /// `None` when the arena or the segment slab is full: the caller lets
    /// the packet pass uncached.
    pub fn insert(&mut self, list: &mut SegList, packet: &[u8], meta: NewSegment) -> Option<u32> {
        if packet.is_empty() || packet.len() > MAX_PACKET {
            return None;
        }
        let needed = packet.len().div_ceil(CHUNK_BYTES);
        if self.free_chunks.len() < needed || self.free_segments.is_empty() {
            return None;
        }
        let idx = self.free_segments.pop()?;
        let first_chunk = self.store_bytes(packet);
        self.used_bytes += packet.len();
        self.segments[idx as usize] = Some(Segment {
            seq: meta.seq,
            end: meta.end,
            next: NIL,
            cached_at: meta.now,
            last_sent: meta.now,
            local_sends: 0,
            retransmitted: meta.retransmitted,
            sacked: false,
            sacked_after_us: 0,
            packet_len: packet.len() as u16,
            first_chunk,
        });
        self.link(list, idx, meta.seq);
        Some(idx)
    }

    /// Copies bytes into a chain of free chunks (the caller checked there
    /// are enough) and returns the first.
    fn store_bytes(&mut self, packet: &[u8]) -> u32 {
        let mut first = NIL;
        let mut prev = NIL;
        for piece in packet.chunks(CHUNK_BYTES) {
            let Some(c) = self.free_chunks.pop() else {
                break;
            };
            let at = c as usize * CHUNK_BYTES;
            self.arena[at..at + piece.len()].copy_from_slice(piece);
            self.chunk_next[c as usize] = NIL;
            if prev == NIL {
                first = c;
            } else {
                self.chunk_next[prev as usize] = c;
            }
            prev = c;
        }
        first
    }

    /// Inserts after the last segment that starts at or before `seq`:
    /// appends in O(1) for in-order data, walks only for reordering.
    fn link(&mut self, list: &mut SegList, idx: u32, seq: u32) {
        let tail_seq = self.get(list.tail).map(|t| t.seq);
        match tail_seq {
            None => {
                list.head = idx;
                list.tail = idx;
                return;
            }
            Some(t) if seq_le(t, seq) => {
                self.set_next(list.tail, idx);
                list.tail = idx;
                return;
            }
            Some(_) => {}
        }
        let mut prev = NIL;
        let mut cur = list.head;
        while let Some(s) = self.get(cur) {
            if seq_lt(seq, s.seq) {
                break;
            }
            prev = cur;
            cur = s.next;
        }
        self.set_next(idx, cur);
        if prev == NIL {
            list.head = idx;
        } else {
            self.set_next(prev, idx);
        }
    }

    fn set_next(&mut self, idx: u32, next: u32) {
        if let Some(s) = self.get_mut(idx) {
            s.next = next;
        }
    }

    fn release(&mut self, idx: u32) {
        let Some(seg) = self.segments.get_mut(idx as usize).and_then(Option::take) else {
            return;
        };
        self.used_bytes -= usize::from(seg.packet_len);
        let mut c = seg.first_chunk;
        while c != NIL {
            let next = self.chunk_next[c as usize];
            self.free_chunks.push(c);
            c = next;
        }
        self.free_segments.push(idx);
    }

    /// Frees every segment whose whole span lies below `ack`, from the head
    /// on. Calls `acked` with each before it goes (for the RTT sample).
    pub fn release_acked(&mut self, list: &mut SegList, ack: u32, mut acked: impl FnMut(&Segment)) {
        while let Some(s) = self.get(list.head).copied() {
            if !seq_le(s.end, ack) {
                break;
            }
            acked(&s);
            self.release(list.head);
            list.head = s.next;
        }
        if list.head == NIL {
            list.tail = NIL;
        }
    }

    /// Frees a whole flow's list.
    pub fn release_all(&mut self, list: &mut SegList) {
        let mut cur = list.head;
        while let Some(s) = self.get(cur).copied() {
            self.release(cur);
            cur = s.next;
        }
        *list = SegList::default();
    }

    /// Segments of `list` in sequence order, as (index, record).
    pub fn iter<'a>(&'a self, list: &SegList) -> impl Iterator<Item = (u32, &'a Segment)> + 'a {
        let mut cur = list.head;
        std::iter::from_fn(move || {
            let idx = cur;
            let s = self.get(idx)?;
            cur = s.next;
            Some((idx, s))
        })
    }

    /// The segment that holds sequence number `seq`, if cached.
    pub fn find_containing(&self, list: &SegList, seq: u32) -> Option<u32> {
        self.iter(list)
            .take_while(|(_, s)| seq_le(s.seq, seq))
            .find(|(_, s)| seq_lt(seq, s.end))
            .map(|(i, _)| i)
    }

    /// Whether any cached segment shares sequence space with `[seq, end)`.
    pub fn overlaps(&self, list: &SegList, seq: u32, end: u32) -> bool {
        self.iter(list)
            .take_while(|(_, s)| seq_lt(s.seq, end))
            .any(|(_, s)| seq_lt(seq, s.end))
    }

    /// Reassembles a segment's packet into `out`; the bytes written.
    pub fn copy_out<'o>(&self, idx: u32, out: &'o mut [u8]) -> Option<&'o [u8]> {
        let s = self.get(idx)?;
        let len = usize::from(s.packet_len);
        let dst = out.get_mut(..len)?;
        let mut c = s.first_chunk;
        for piece in dst.chunks_mut(CHUNK_BYTES) {
            let at = (c as usize).checked_mul(CHUNK_BYTES)?;
            piece.copy_from_slice(self.arena.get(at..at + piece.len())?);
            c = *self.chunk_next.get(c as usize)?;
        }
        Some(&out[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(seq: u32, len: u32, now: Instant) -> NewSegment {
        NewSegment {
            seq,
            end: seq.wrapping_add(len),
            now,
            retransmitted: false,
        }
    }

    #[test]
    fn packets_survive_the_chunk_chain_byte_for_byte() {
        let mut c = Cache::new(8 * CHUNK_BYTES);
        let mut list = SegList::default();
        let pkt: Vec<u8> = (0..1500u32).map(|i| (i * 7) as u8).collect();
        let now = Instant::now();
        let i = c.insert(&mut list, &pkt, meta(1, 1460, now)).unwrap();
        let mut out = vec![0u8; MAX_PACKET];
        assert_eq!(c.copy_out(i, &mut out).unwrap(), &pkt[..]);
        assert_eq!(c.used_bytes(), 1500);
    }

    #[test]
    fn full_arena_refuses_and_freeing_gives_it_back() {
        let mut c = Cache::new(6 * CHUNK_BYTES);
        let mut list = SegList::default();
        let now = Instant::now();
        let pkt = [0u8; 1000]; // 4 chunks
        assert!(c.insert(&mut list, &pkt, meta(0, 100, now)).is_some());
        assert!(c.insert(&mut list, &pkt, meta(100, 100, now)).is_none());
        c.release_acked(&mut list, 100, |_| {});
        assert!(list.is_empty());
        assert_eq!((c.segment_count(), c.used_bytes()), (0, 0));
        assert!(c.insert(&mut list, &pkt, meta(100, 100, now)).is_some());
    }

    #[test]
    fn out_of_order_inserts_keep_sequence_order_across_wrap() {
        let mut c = Cache::new(16 * CHUNK_BYTES);
        let mut list = SegList::default();
        let now = Instant::now();
        let base = u32::MAX - 150;
        for off in [200u32, 0, 300, 100] {
            c.insert(
                &mut list,
                &[1u8; 40],
                meta(base.wrapping_add(off), 100, now),
            )
            .unwrap();
        }
        let seqs: Vec<u32> = c
            .iter(&list)
            .map(|(_, s)| s.seq.wrapping_sub(base))
            .collect();
        assert_eq!(seqs, vec![0, 100, 200, 300]);
        assert!(c.find_containing(&list, base.wrapping_add(250)).is_some());
        assert!(c.find_containing(&list, base.wrapping_add(400)).is_none());
        assert!(c.overlaps(&list, base.wrapping_add(350), base.wrapping_add(450)));
        assert!(!c.overlaps(&list, base.wrapping_add(400), base.wrapping_add(500)));
        c.release_acked(&mut list, base.wrapping_add(200), |_| {});
        assert_eq!(c.segment_count(), 2);
        c.release_all(&mut list);
        assert_eq!(c.segment_count(), 0);
    }

    #[test]
    fn tiny_segments_run_out_of_records_before_bytes() {
        let mut c = Cache::new(8 * CHUNK_BYTES);
        let mut list = SegList::default();
        let now = Instant::now();
        assert!(c.insert(&mut list, &[0u8; 60], meta(0, 20, now)).is_some());
        assert!(c.insert(&mut list, &[0u8; 60], meta(20, 20, now)).is_some());
        assert!(c.insert(&mut list, &[0u8; 60], meta(40, 20, now)).is_none());
    }

    #[test]
    fn a_zero_sized_cache_refuses_everything() {
        let mut c = Cache::new(10);
        let mut list = SegList::default();
        assert!(
            c.insert(&mut list, &[0u8; 10], meta(0, 10, Instant::now()))
                .is_none()
        );
    }
}
