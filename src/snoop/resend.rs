//! Local retransmissions: a cached copy sent again toward the host, within
//! its retry budget, whatever asked for it (dup ACKs, SACK holes, the
//! local timer).

use std::time::Instant;

use super::{MAX_LOCAL_SENDS, Snoop, Transmit};

/// Why a cached segment goes out again, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    DupAck,
    Timeout,
}

impl Snoop {
    /// Sends one cached segment again, within its retry budget. False if it
    /// is spent (local recovery gives up) or the send failed.
    pub(super) fn resend(
        &mut self,
        idx: u16,
        seg_idx: u32,
        cause: Cause,
        now: Instant,
        tx: &mut dyn Transmit,
    ) -> bool {
        let spent = self
            .cache
            .get(seg_idx)
            .is_none_or(|s| s.local_sends >= MAX_LOCAL_SENDS);
        if spent {
            self.counters.local_recovery_given_up += 1;
            return false;
        }
        let sent = match self.cache.copy_out(seg_idx, &mut self.scratch) {
            Some(packet) => tx.send(packet),
            None => false,
        };
        if !sent {
            self.counters.transmit_failed += 1;
            return false;
        }
        if let Some(s) = self.cache.get_mut(seg_idx) {
            s.local_sends += 1;
            s.last_sent = now;
            s.retransmitted = true;
        }
        match cause {
            Cause::DupAck => self.counters.local_retransmits_dupack += 1,
            Cause::Timeout => self.counters.local_retransmits_timeout += 1,
        }
        let Some(f) = self.flows.get_mut(idx) else {
            return true;
        };
        f.stats.local_retransmits += 1;
        if cause == Cause::DupAck && f.segments.head == seg_idx {
            // The copy of the hole at the cumulative ACK: sent again if it
            // goes unanswered for about a round trip of the hop, rather than
            // the local RTO (rtt.rs, copy_timeout). The timer's own copies
            // back off from the RTO as before.
            let at = now + f.rtt.copy_timeout();
            if f.rto_at.is_none_or(|r| at < r) {
                f.rto_at = Some(at);
                self.wake_by(at);
            }
        }
        true
    }
}
