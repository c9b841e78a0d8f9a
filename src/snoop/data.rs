//! Segments from the sender toward the wireless host: cache and forward.

use std::time::Instant;

use crate::wire::ip::IpRepr;
use crate::wire::tcp::{Segment, flags, seq_le, seq_lt};

use super::cache::NewSegment;
use super::flow::{Flow, Recovery};
use super::{IDLE_TIMEOUT, Snoop, SnoopVerdict, key_toward, payload_len};

/// A data segment from the sender, as far as caching goes.
struct Arrival<'a> {
    /// Its sequence span `[seq, end)`, FIN included.
    seq: u32,
    end: u32,
    fin: bool,
    /// The whole IP packet; `None` if the capture was cut short.
    packet: Option<&'a [u8]>,
}

impl Snoop {
    /// Every case accepts: the sender's packets always go on. What differs
    /// is whether a copy is kept.
    pub(super) fn on_data(
        &mut self,
        pkt: &[u8],
        ip: &IpRepr,
        seg: &Segment<'_>,
        now: Instant,
    ) -> SnoopVerdict {
        let key = key_toward(ip, seg);
        let mut found = self.flows.find(&key);
        if self.close_on_reset_or_syn(found, seg) {
            return SnoopVerdict::Accept;
        }
        let fin = u32::from(seg.has(flags::FIN));
        let span = (payload_len(ip, seg) as u32).wrapping_add(fin);
        let seq = seg.seq();
        let end = seq.wrapping_add(span);
        let finished = found
            .and_then(|i| self.flows.get(i))
            .filter(|f| f.finished)
            .map(|f| (f.high_seq, f.reset));
        if let (Some(idx), Some((high, reset))) = (found, finished) {
            if reset {
                // Data in flight when the connection was reset.
                return SnoopVerdict::Accept;
            }
            if span == 0 || seq_le(end, high) {
                // The finished connection's last ACKs and stragglers: its
                // linger time runs from the close, nothing here renews it.
                if span != 0 {
                    self.counters.sender_retransmits_acked += 1;
                }
                return SnoopVerdict::Accept;
            }
            // New data after the host closed its side (the sender's half
            // of the connection goes on): a new flow.
            self.flows.remove(idx);
            found = None;
        }
        if span == 0 {
            // A pure ACK for the host's own data: nothing to cache.
            if let Some(f) = found.and_then(|i| self.flows.get_mut(i)) {
                f.last_seen = now;
            }
            return SnoopVerdict::Accept;
        }
        let idx = match found {
            Some(idx) => idx,
            None => match self.admit(Flow::new(key, seq, now)) {
                Some(idx) => {
                    self.counters.flows_total += 1;
                    self.wake_by(now + IDLE_TIMEOUT);
                    idx
                }
                None => {
                    self.counters.passed_full += 1;
                    return SnoopVerdict::Accept;
                }
            },
        };
        // The whole IP packet must be in hand to be sent again.
        let packet = pkt.get(..ip.l4_offset + ip.l4_len);
        self.cache_segment(
            idx,
            Arrival {
                seq,
                end,
                fin: fin != 0,
                packet,
            },
            now,
        );
        SnoopVerdict::Accept
    }

    /// A slot for a new flow; when the table is full, a finished flow's
    /// memory gives way first.
    fn admit(&mut self, flow: Flow) -> Option<u16> {
        if self.flows.len() == self.flows.capacity() {
            let lingering = self.flows.position(|f| f.finished)?;
            self.flows.remove(lingering);
        }
        self.flows.insert(flow)
    }

    fn cache_segment(&mut self, idx: u16, arrival: Arrival<'_>, now: Instant) {
        let Arrival {
            seq,
            end,
            fin,
            packet,
        } = arrival;
        let Some(flow) = self.flows.get_mut(idx) else {
            return;
        };
        flow.last_seen = now;
        if fin {
            flow.fin_end = Some(end);
        }
        if flow.last_ack.is_some_and(|a| seq_le(end, a)) {
            // The host has it already (its ACK was lost upstream, or the
            // sender timed out): forward, the sender's recovery is its own.
            self.counters.sender_retransmits_acked += 1;
            flow.stats.sender_retransmits += 1;
            return;
        }
        if self.cache.overlaps(&flow.segments, seq, end) {
            // The sender retransmits what Snoop holds: its own recovery is
            // under way, so local suppression ends and dup ACKs are counted
            // afresh (as in the paper); a hole already left to the sender
            // stays its own. Karn: these segments give no RTT sample.
            self.counters.sender_retransmits += 1;
            flow.stats.sender_retransmits += 1;
            if matches!(flow.recovery, Recovery::Local { .. }) {
                flow.recovery = Recovery::Open;
            }
            let mut cur = flow.segments.head;
            while let Some(s) = self.cache.get_mut(cur) {
                if !seq_lt(s.seq, end) {
                    break;
                }
                if seq_lt(seq, s.end) {
                    s.retransmitted = true;
                    s.last_sent = now;
                }
                cur = s.next;
            }
            return;
        }
        // Below the highest sequence seen: it fills a gap from a loss
        // before the router (or reordering); it may be a retransmission.
        let fills_gap = seq_lt(seq, flow.high_seq);
        if seq_lt(flow.high_seq, end) {
            flow.high_seq = end;
        }
        let Some(packet) = packet else {
            self.counters.unparsed += 1;
            return;
        };
        let meta = NewSegment {
            seq,
            end,
            now,
            retransmitted: fills_gap,
        };
        if self
            .cache
            .insert(&mut flow.segments, packet, meta)
            .is_none()
        {
            self.counters.passed_full += 1;
            return;
        }
        flow.stats.cached += 1;
        self.counters.segments_cached += 1;
        if flow.rto_at.is_none() {
            let at = now + flow.rtt.backed_off(flow.backoff);
            flow.rto_at = Some(at);
            self.wake_by(at);
        }
    }
}
