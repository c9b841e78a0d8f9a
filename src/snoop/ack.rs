//! ACKs from the wireless host: free what they cover, answer duplicate
//! ACKs with local retransmissions, and keep those from the sender.

use std::time::{Duration, Instant};

use crate::wire::ip::IpRepr;
use crate::wire::tcp::{Segment, flags, seq_le, seq_lt};

use super::flow::{CloseReason, Recovery};
use super::resend::Cause;
use super::rtt::QUEUE_DELAY_LIMIT;
use super::sack::sack_option;
use super::{Snoop, SnoopVerdict, Transmit, key_from, payload_len};

impl Snoop {
    pub(super) fn on_ack(
        &mut self,
        ip: &IpRepr,
        seg: &Segment<'_>,
        now: Instant,
        tx: &mut dyn Transmit,
    ) -> SnoopVerdict {
        let found = self.flows.find(&key_from(ip, seg));
        if self.close_on_reset_or_syn(found, seg) {
            return SnoopVerdict::Accept;
        }
        let Some(idx) = found else {
            return SnoopVerdict::Accept;
        };
        let Some(flow) = self.flows.get_mut(idx) else {
            return SnoopVerdict::Accept;
        };
        if flow.finished {
            // Nothing cached is left to repair, and its linger time runs
            // from the close.
            return SnoopVerdict::Accept;
        }
        flow.last_seen = now;
        if !seg.has(flags::ACK) {
            return SnoopVerdict::Accept;
        }
        let ack = seg.ack();
        self.note_sack(idx, seg, ack);
        let Some(flow) = self.flows.get(idx) else {
            return SnoopVerdict::Accept;
        };
        let verdict = match flow.last_ack {
            Some(last) if ack == last => self.on_same_ack(idx, ip, seg, now, tx),
            // Older than what the host acknowledged before: reordered on
            // the way back. Harmless to the sender.
            Some(last) if seq_lt(ack, last) => SnoopVerdict::Accept,
            _ => {
                self.on_new_ack(idx, ack, seg.window(), now);
                SnoopVerdict::Accept
            }
        };
        if seg.has(flags::FIN) {
            self.on_host_fin(idx, ack);
        }
        verdict
    }

    /// The host closes its side. If it has acknowledged everything the
    /// sender sent, the flow is done as far as Snoop can tell: the
    /// sender's FIN may have passed unseen (a full queue fails open). Data
    /// the sender still sends after a half-close starts a new flow, which
    /// costs nothing but this table slot.
    fn on_host_fin(&mut self, idx: u16, ack: u32) {
        let Some(flow) = self.flows.get(idx) else {
            return;
        };
        if flow.segments.is_empty() && seq_le(flow.high_seq, ack) {
            self.close(idx, CloseReason::HostFin);
        }
    }

    fn on_new_ack(&mut self, idx: u16, ack: u32, window: u16, now: Instant) {
        let Some(flow) = self.flows.get_mut(idx) else {
            return;
        };
        // The youngest segment this ACK covers gives the sample: older ones
        // waited for it in the host's delayed-ACK timer. Karn's rule skips
        // anything sent twice.
        let mut sample: Option<Duration> = None;
        self.cache.release_acked(&mut flow.segments, ack, |s| {
            if !s.retransmitted {
                sample = Some(now.saturating_duration_since(s.cached_at));
            }
        });
        if let Some(rtt) = sample {
            flow.rtt.sample(rtt, now);
        }
        flow.last_ack = Some(ack);
        flow.last_window = window;
        flow.recovery = Recovery::Open;
        flow.backoff = 0;
        if seq_lt(flow.high_seq, ack) {
            // Data that passed before the flow was known.
            flow.high_seq = ack;
        }
        let fin_acked = flow.fin_end.is_some_and(|f| seq_le(f, ack));
        flow.rto_at = if flow.segments.is_empty() {
            None
        } else {
            Some(now + flow.rtt.rto())
        };
        let rto_at = flow.rto_at;
        if fin_acked {
            // Nothing more can come toward the host; its own data, if any,
            // is not Snoop's business.
            self.close(idx, CloseReason::FinAcked);
        } else if let Some(at) = rto_at {
            self.wake_by(at);
        }
    }

    /// The host repeats its cumulative ACK: a window update, data of its
    /// own, or a duplicate ACK that says a segment is missing.
    fn on_same_ack(
        &mut self,
        idx: u16,
        ip: &IpRepr,
        seg: &Segment<'_>,
        now: Instant,
        tx: &mut dyn Transmit,
    ) -> SnoopVerdict {
        let Some(flow) = self.flows.get_mut(idx) else {
            return SnoopVerdict::Accept;
        };
        let ack = seg.ack();
        // RFC 5681's duplicate ACK: no data, no SYN/FIN, same window, and
        // data outstanding. Anything else passes and carries news.
        let duplicate = payload_len(ip, seg) == 0
            && !seg.has(flags::FIN)
            && seg.window() == flow.last_window
            && seq_lt(ack, flow.high_seq);
        if !duplicate {
            flow.last_window = seg.window();
            return SnoopVerdict::Accept;
        }
        // Without SACK, local repair stalls the sender's ACK clock: every
        // dup ACK is held back until the copy has crossed the queue toward
        // the host, one hole after the other. While that queue stands
        // (past the Wi-Fi CoDel target) the stall costs more than the
        // sender's own fast recovery, and the loss is likely the queue's
        // doing (a tail drop, or CoDel): congestion, which the sender must
        // hear of. With SACK the holes of a window are repaired in one
        // round trip, and the SACK blocks of the ACKs that follow still
        // show the sender what was lost; measured, Snoop then wins even
        // over a standing queue (tests/bench/results/snoop.md).
        let congested = sack_option(seg).is_none() && flow.rtt.queue_delay() > QUEUE_DELAY_LIMIT;
        if congested {
            self.counters.dupacks_passed_queue += 1;
        }
        let hole = if congested {
            None
        } else {
            self.cache.find_containing(&flow.segments, ack)
        };
        let recovery = flow.recovery;
        let guard = flow.rtt.retransmit_guard();
        let verdict = match (recovery, hole) {
            (Recovery::Sender { hole: h }, _) if h == ack => SnoopVerdict::Accept,
            // Not cached (lost before the router, or the cache was full) or
            // congestion: only the sender can repair it.
            (_, None) => self.leave_to_sender(idx, ack),
            (Recovery::Local { hole: h }, Some(s)) if h == ack => {
                // The copy is on its way; dup ACKs from packets sent before
                // it keep coming for about one round trip. Later ones mean
                // the copy was lost too: most likely a full queue dropped
                // it, which is congestion. Send another copy, but let the
                // sender hear from now on: suppressing longer would only
                // run into its retransmission timer.
                let stale = self
                    .cache
                    .get(s)
                    .is_some_and(|c| now >= c.last_sent + guard);
                if stale {
                    self.resend(idx, s, Cause::DupAck, now, tx);
                    self.leave_to_sender(idx, ack)
                } else {
                    SnoopVerdict::Drop
                }
            }
            (_, Some(s)) => {
                if self.resend(idx, s, Cause::DupAck, now, tx) {
                    if let Some(f) = self.flows.get_mut(idx) {
                        f.recovery = Recovery::Local { hole: ack };
                    }
                    SnoopVerdict::Drop
                } else {
                    self.leave_to_sender(idx, ack)
                }
            }
        };
        if verdict == SnoopVerdict::Drop {
            // With SACK the host names the other holes too; fill them now
            // rather than one round trip per hole.
            self.resend_sack_holes(idx, ack, guard, now, tx);
            // A dup ACK carrying SACK blocks is dropped like a plain one.
            // The sender would use its blocks to enter its own recovery
            // (RFC 6675 counts SACKed bytes just like dup ACKs) and halve
            // its window for a loss Snoop is already repairing. It loses
            // no information: the cumulative ACK that follows local repair
            // covers everything the blocks named, and if local repair
            // gives up, the next dup ACKs (blocks included) go through.
            self.counters.dupacks_suppressed += 1;
            if let Some(f) = self.flows.get_mut(idx) {
                f.stats.dupacks_suppressed += 1;
            }
        } else {
            self.counters.dupacks_passed += 1;
        }
        verdict
    }

    fn leave_to_sender(&mut self, idx: u16, hole: u32) -> SnoopVerdict {
        if let Some(f) = self.flows.get_mut(idx) {
            f.recovery = Recovery::Sender { hole };
        }
        SnoopVerdict::Accept
    }
}
