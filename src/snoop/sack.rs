//! SACK (RFC 2018) from the wireless host: a scoreboard kept on the cached
//! segments, and the holes it shows.
//!
//! An ACK carries at most three or four blocks, the most recent first, so
//! with many holes most SACKed data is not named in any one ACK. What a
//! block once covered is therefore remembered on the segment itself
//! (`Segment::sacked`), as a sender's scoreboard does (RFC 6675).

use std::time::{Duration, Instant};

use crate::wire::tcp::{Segment, TcpOption, sack_blocks, seq_le, seq_lt};

use super::resend::Cause;
use super::{Snoop, Transmit};

/// Holes resent per duplicate ACK beyond the one at the cumulative ACK:
/// the holes of one ACK's blocks, without a burst into a queue that may
/// be what lost them.
pub(super) const MAX_HOLES_PER_ACK: usize = 4;

/// The raw blocks of a segment's SACK option, if it has one.
pub(super) fn sack_option<'a>(seg: &Segment<'a>) -> Option<&'a [u8]> {
    seg.options().find_map(|o| match o {
        Ok(TcpOption::Sack(b)) => Some(b),
        _ => None,
    })
}

impl Snoop {
    /// Marks the cached segments the ACK's SACK blocks cover and raises the
    /// flow's highest SACKed edge. Blocks must lie above the cumulative ACK
    /// and within what the sender sent; a D-SACK block below the ACK
    /// names a duplicate, not a hole.
    ///
    /// The youngest segment a block covers for the first time gives the
    /// queue's view an RTT sample (congestion.rs): a SACK tells when a
    /// segment arrived even while a hole below it holds the cumulative
    /// ACK, which is most of the time on a lossy hop.
    pub(super) fn note_sack(&mut self, idx: u16, seg: &Segment<'_>, ack: u32, now: Instant) {
        let Some(flow) = self.flows.get_mut(idx) else {
            return;
        };
        if flow.sack_high.is_some_and(|h| seq_le(h, ack)) {
            flow.sack_high = None;
        }
        let Some(blocks) = sack_option(seg) else {
            return;
        };
        let high_seq = flow.high_seq;
        let mut youngest: Option<Instant> = None;
        for (left, right) in sack_blocks(blocks) {
            if !(seq_lt(ack, right) && seq_lt(left, right) && seq_le(right, high_seq)) {
                continue;
            }
            if flow.sack_high.is_none_or(|h| seq_lt(h, right)) {
                flow.sack_high = Some(right);
            }
            let mut cur = flow.segments.head;
            while let Some(s) = self.cache.get_mut(cur) {
                if !seq_lt(s.seq, right) {
                    break;
                }
                if seq_le(left, s.seq) && seq_le(s.end, right) && !s.sacked {
                    s.sacked = true;
                    if !s.retransmitted {
                        let crossed = now.saturating_duration_since(s.cached_at);
                        s.sacked_after_us = crossed.as_micros().clamp(1, u32::MAX.into()) as u32;
                        if youngest.is_none_or(|y| y < s.cached_at) {
                            youngest = Some(s.cached_at);
                        }
                    }
                }
                cur = s.next;
            }
        }
        if let Some(at) = youngest {
            flow.congestion
                .sample_sacked(now.saturating_duration_since(at), now);
            if flow.sacked_sent_at.is_none_or(|t| t < at) {
                flow.sacked_sent_at = Some(at);
            }
        }
    }

    /// Resends cached segments above the hole at `ack` that the host has
    /// not SACKed, below its highest SACKed edge. A block above a segment
    /// proves its original lost (the hop does not reorder much); a local
    /// copy gets `guard` (about a round trip) to arrive before it counts
    /// as lost too.
    pub(super) fn resend_sack_holes(
        &mut self,
        idx: u16,
        ack: u32,
        guard: Duration,
        now: Instant,
        tx: &mut dyn Transmit,
    ) {
        let Some(flow) = self.flows.get(idx) else {
            return;
        };
        let Some(top) = flow.sack_high else { return };
        let mut holes = [0u32; MAX_HOLES_PER_ACK];
        let mut n = 0;
        for (i, s) in self.cache.iter(&flow.segments) {
            if n == holes.len() || !seq_lt(s.seq, top) {
                break;
            }
            let above_ack = seq_lt(ack, s.seq);
            let due = s.local_sends == 0 || now >= s.last_sent + guard;
            if above_ack && !s.sacked && due {
                holes[n] = i;
                n += 1;
            }
        }
        for &i in &holes[..n] {
            self.resend(idx, i, Cause::DupAck, now, tx);
        }
    }
}
