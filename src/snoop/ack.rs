//! ACKs from the wireless host: free what they cover, answer duplicate
//! ACKs for a radio loss with local retransmissions and keep those from
//! the sender; pass those for a congestion loss (congestion.rs).

use std::time::{Duration, Instant};

use crate::duration::LikeDebug;
use crate::wire::ip::IpRepr;
use crate::wire::tcp::{Segment, flags, seq_le, seq_lt};

use super::congestion::LossCause;
use super::flow::{CloseReason, Recovery};
use super::resend::Cause;
use super::sack::{MAX_HOLES_PER_ACK, sack_option};
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
        // Whether the host was waiting for a hole before this ACK (a
        // recovery under way, or data SACKed above its cumulative ACK).
        let held = flow.recovery != Recovery::Open || flow.sack_high.is_some();
        let prior = flow.recovery;
        self.note_sack(idx, seg, ack, now);
        let Some(flow) = self.flows.get(idx) else {
            return SnoopVerdict::Accept;
        };
        let verdict = match flow.last_ack {
            Some(last) if ack == last => self.on_same_ack(idx, ip, seg, now, tx),
            // Older than what the host acknowledged before: reordered on
            // the way back. Harmless to the sender.
            Some(last) if seq_lt(ack, last) => SnoopVerdict::Accept,
            _ => {
                self.on_new_ack(idx, ack, seg.window(), held, now);
                self.on_partial_ack(idx, ip, seg, prior, now, tx)
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

    /// The host's cumulative ACK moved to `ack`; `held` if it had been
    /// waiting for a hole.
    fn on_new_ack(&mut self, idx: u16, ack: u32, window: u16, held: bool, now: Instant) {
        let Some(flow) = self.flows.get_mut(idx) else {
            return;
        };
        // The youngest segment this ACK covers gives the sample: older ones
        // waited for it in the host's delayed-ACK timer. Karn's rule skips
        // anything sent twice. An ACK that fills a hole gives the local
        // timers a sample (the time a segment takes to be acknowledged in
        // practice), but not the queue's view (see congestion.rs).
        let mut sample: Option<Duration> = None;
        self.cache.release_acked(&mut flow.segments, ack, |s| {
            if !s.retransmitted {
                sample = Some(now.saturating_duration_since(s.cached_at));
            }
        });
        if let Some(rtt) = sample {
            flow.rtt.sample(rtt, now);
            if !held {
                flow.congestion.sample(rtt, now);
            }
        }
        if let Recovery::Local { hole } = flow.recovery
            && seq_lt(hole, ack)
        {
            flow.congestion.copy_delivered();
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
        let sack = sack_option(seg).is_some();
        let recovery = flow.recovery;
        let guard = flow.rtt.retransmit_guard();
        let verdict = match recovery {
            Recovery::Sender { hole } if hole == ack => SnoopVerdict::Accept,
            Recovery::Congestion { hole } if hole == ack => {
                self.counters.dupacks_passed_congestion += 1;
                self.resend_lost_retransmissions(idx, ack, sack, now, tx);
                SnoopVerdict::Accept
            }
            Recovery::Local { hole } if hole == ack => {
                match self.cache.find_containing(&flow.segments, ack) {
                    Some(s) => self.on_local_hole(idx, s, ack, sack, now, tx),
                    None => self.leave_to_sender(idx, ack, "cached copy gone"),
                }
            }
            // With SACK a hole shows as data held above it. A dup ACK that
            // SACKs nothing above `ack` reports a duplicate (a D-SACK, RFC
            // 2883: a local copy and the sender's own retransmission both
            // arrived): nothing is missing, and taking it for a hole sends
            // a copy of a segment still on its way, whose duplicate brings
            // the next such ACK. The sender gets it: its SACK scoreboard
            // learns of the duplicate and enters no recovery.
            _ if sack && flow.sack_high.is_none() => SnoopVerdict::Accept,
            _ => self.on_new_hole(idx, ack, sack, now, tx),
        };
        if verdict == SnoopVerdict::Drop {
            // With SACK the host names the other holes too; fill them now
            // rather than one round trip per hole.
            self.resend_sack_holes(idx, ack, guard, now, tx);
            // A dup ACK carrying SACK blocks is dropped like a plain one.
            // The sender would use its blocks to enter its own recovery
            // (RFC 6675 counts SACKed bytes just like dup ACKs, RACK marks
            // a segment lost once one sent after it is SACKed) and halve
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

    /// The host's cumulative ACK moved up to `ack` but still SACKs data
    /// above it: a copy filled one hole and the ACK stops at the next. It
    /// is that hole's first dup ACK in all but name, and passed on it
    /// starts the sender's recovery just the same: its RACK marks the
    /// segment lost at once when data sent a quarter of a round trip
    /// after it has been SACKed (at once whatever the gap, until the
    /// sender has seen reordering). Measured at 2 % loss with SACK: runs
    /// whose sender had seen few D-SACKs kept its window near 25 segments
    /// through one recovery a second, about a third of the throughput of
    /// runs with the same losses whose sender tolerated the gap. So it is
    /// judged like a dup ACK: held back while the hole is repaired from
    /// here, passed for congestion or a hole only the sender can fill.
    ///
    /// Not while the sender recovers on its own (`prior`, the recovery
    /// before this ACK, is the sender's or congestion's): there partial
    /// ACKs are what clocks its recovery out, and the next hole of the
    /// same overflow is congestion too. Not either when the segment right
    /// behind the hole crossed a full queue: where the first hole of an
    /// overflow was taken for a radio loss, this ACK is what tells the
    /// sender (measured on a 64 KB queue at 0 % loss: without this check
    /// 127-161 such ACKs a run were held, 0.77-0.95x direct; with it
    /// 0.98-1.00x). Only a pure ACK is held: the host's own data and FIN
    /// always pass.
    fn on_partial_ack(
        &mut self,
        idx: u16,
        ip: &IpRepr,
        seg: &Segment<'_>,
        prior: Recovery,
        now: Instant,
        tx: &mut dyn Transmit,
    ) -> SnoopVerdict {
        let Some(flow) = self.flows.get_mut(idx) else {
            return SnoopVerdict::Accept;
        };
        let ours = matches!(prior, Recovery::Open | Recovery::Local { .. });
        let pure = payload_len(ip, seg) == 0 && !seg.has(flags::FIN);
        if !ours || !pure || flow.sack_high.is_none() || sack_option(seg).is_none() {
            return SnoopVerdict::Accept;
        }
        let ack = seg.ack();
        // The segment right behind the hole: if it crossed a full queue,
        // the hole is that queue's drop (the neighbour rule of
        // congestion.rs, from the sample it gave when first SACKed).
        let behind = self.cache.iter(&flow.segments).find(|(_, c)| c.sacked);
        let overflow = behind.is_some_and(|(_, c)| {
            let crossed = Duration::from_micros(c.sacked_after_us.into());
            c.sacked_after_us > 0 && flow.congestion.crossed_at_top(crossed, now)
        });
        if overflow {
            return self.leave_to_congestion(idx, ack);
        }
        let guard = flow.rtt.retransmit_guard();
        let copied = self
            .cache
            .find_containing(&flow.segments, ack)
            .filter(|&s| self.cache.get(s).is_some_and(|c| c.local_sends > 0));
        let verdict = match copied {
            // Its copy went out with an earlier dup ACK's SACK holes.
            Some(s) => {
                flow.recovery = Recovery::Local { hole: ack };
                self.on_local_hole(idx, s, ack, true, now, tx)
            }
            None => self.on_new_hole(idx, ack, true, now, tx),
        };
        if verdict == SnoopVerdict::Drop {
            // As for a dup ACK (on_same_ack).
            self.resend_sack_holes(idx, ack, guard, now, tx);
            self.counters.partial_acks_held += 1;
        }
        verdict
    }

    /// The first dup ACK for the hole at `ack`: congestion goes to the
    /// sender untouched (see `congestion.rs`); a radio loss of a cached
    /// segment is repaired from here and its dup ACKs are kept back.
    fn on_new_hole(
        &mut self,
        idx: u16,
        ack: u32,
        sack: bool,
        now: Instant,
        tx: &mut dyn Transmit,
    ) -> SnoopVerdict {
        let Some(flow) = self.flows.get_mut(idx) else {
            return SnoopVerdict::Accept;
        };
        if flow.congestion.classify(sack, &flow.rtt, now) == LossCause::Congestion {
            log::debug!(
                "snoop: hole at {ack} taken for congestion: queue delay {}, srtt {}, {}",
                LikeDebug(flow.congestion.queue_delay(now)),
                LikeDebug(flow.rtt.srtt()),
                flow.congestion.evidence(now)
            );
            // No local copy either: it would join the queue that dropped
            // the original, and the sender's backoff is what empties it.
            self.counters.dupacks_passed_congestion += 1;
            return self.leave_to_congestion(idx, ack);
        }
        let Some(s) = self.cache.find_containing(&flow.segments, ack) else {
            // Not cached (lost before the router, or the cache was full):
            // only the sender can repair it.
            return self.leave_to_sender(idx, ack, "not cached");
        };
        if self.resend(idx, s, Cause::DupAck, now, tx) {
            if let Some(f) = self.flows.get_mut(idx) {
                f.recovery = Recovery::Local { hole: ack };
            }
            SnoopVerdict::Drop
        } else {
            self.leave_to_sender(idx, ack, "copy not sent or retries spent")
        }
    }

    /// A further dup ACK for a hole whose local copy (cache slot `s`) is
    /// on its way. Dup ACKs from packets sent before the copy keep coming
    /// for about one round trip. With SACK the copy is lost once the host
    /// SACKs a segment sent after it; without, once dup ACKs still come
    /// after the retransmit guard (about a round trip). A lost copy is
    /// evidence of a full queue
    /// (congestion.rs learns from it), and the loss is judged again: a
    /// radio loss gets another copy while dup ACKs stay suppressed, within
    /// the copy's retries and only with SACK; congestion, retries spent,
    /// or a host without SACK, goes to the sender, as suppressing longer
    /// would only run into its retransmission timer.
    fn on_local_hole(
        &mut self,
        idx: u16,
        s: u32,
        ack: u32,
        sack: bool,
        now: Instant,
        tx: &mut dyn Transmit,
    ) -> SnoopVerdict {
        let Some(flow) = self.flows.get_mut(idx) else {
            return SnoopVerdict::Accept;
        };
        let guard = flow.rtt.retransmit_guard();
        let sacked_sent_at = flow.sacked_sent_at;
        let lost = self.cache.get(s).is_some_and(|c| {
            if sack {
                // Exact: the host has SACKed a segment sent after the copy.
                sacked_sent_at.is_some_and(|t| t > c.last_sent)
            } else {
                now >= c.last_sent + guard
            }
        });
        if !lost {
            return SnoopVerdict::Drop;
        }
        let queue_delay = flow.congestion.queue_delay(now);
        flow.congestion.copy_lost(queue_delay, now);
        log::debug!(
            "snoop: local copy at {ack} lost too: queue delay {}",
            LikeDebug(queue_delay)
        );
        if !sack {
            // Without SACK every retry stalls the sender's ACK clock for
            // another round trip: it recovers the hole itself (the copy
            // still goes, it may be first).
            self.resend(idx, s, Cause::DupAck, now, tx);
            return self.leave_to_sender(idx, ack, "copy lost too, no SACK");
        }
        if flow.congestion.classify(sack, &flow.rtt, now) == LossCause::Congestion {
            self.counters.dupacks_passed_congestion += 1;
            return self.leave_to_congestion(idx, ack);
        }
        if self.resend(idx, s, Cause::DupAck, now, tx) {
            SnoopVerdict::Drop
        } else {
            self.leave_to_sender(idx, ack, "copy lost too, retries spent")
        }
    }

    /// During the sender's recovery from a congestion loss: a hole whose
    /// repair the sender sent through here is still missing at the host
    /// although data sent after it has arrived (with SACK), or a round trip
    /// later (without): the radio lost the retransmission. The congestion
    /// has been told (the sender has backed off); a copy from here spares
    /// it a timeout, which a lossy hop makes likely, and repairs a radio
    /// loss. With SACK every such hole below the highest SACKed edge
    /// counts, a few per ACK; without, the one at the cumulative ACK.
    fn resend_lost_retransmissions(
        &mut self,
        idx: u16,
        ack: u32,
        sack: bool,
        now: Instant,
        tx: &mut dyn Transmit,
    ) {
        let Some(flow) = self.flows.get(idx) else {
            return;
        };
        let mut lost = [0u32; MAX_HOLES_PER_ACK];
        let mut n = 0;
        if sack {
            let (Some(top), Some(delivered)) = (flow.sack_high, flow.sacked_sent_at) else {
                return;
            };
            for (i, c) in self.cache.iter(&flow.segments) {
                if n == lost.len() || !seq_lt(c.seq, top) {
                    break;
                }
                if !c.sacked && c.retransmitted && delivered > c.last_sent {
                    lost[n] = i;
                    n += 1;
                }
            }
        } else {
            let guard = flow.rtt.retransmit_guard();
            if let Some(s) = self.cache.find_containing(&flow.segments, ack) {
                let gone = self
                    .cache
                    .get(s)
                    .is_some_and(|c| c.retransmitted && now >= c.last_sent + guard);
                if gone {
                    lost[0] = s;
                    n = 1;
                }
            }
        }
        for &s in &lost[..n] {
            self.resend(idx, s, Cause::DupAck, now, tx);
        }
        if n > 0 {
            log::debug!("snoop: {n} retransmissions of the sender's lost too, sent again");
        }
    }

    /// The hole at `hole` is a full queue's drop: its ACKs pass from now
    /// on, and no copy goes into that queue (see `on_new_hole`).
    fn leave_to_congestion(&mut self, idx: u16, hole: u32) -> SnoopVerdict {
        self.counters.losses_congestion += 1;
        if let Some(f) = self.flows.get_mut(idx) {
            f.recovery = Recovery::Congestion { hole };
        }
        SnoopVerdict::Accept
    }

    /// The hole at `hole` is the sender's to repair (`why`, for the
    /// debug log): its dup ACKs pass from now on.
    fn leave_to_sender(&mut self, idx: u16, hole: u32, why: &str) -> SnoopVerdict {
        log::debug!("snoop: hole at {hole} left to the sender: {why}");
        if let Some(f) = self.flows.get_mut(idx) {
            f.recovery = Recovery::Sender { hole };
        }
        SnoopVerdict::Accept
    }
}
