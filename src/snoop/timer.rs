//! Local retransmission timers and idle expiry, all from `on_timer`.

use std::time::Instant;

use super::flow::{CloseReason, Recovery};
use super::resend::Cause;
use super::{MAX_LOCAL_SENDS, Snoop, Transmit};

impl Snoop {
    /// Runs whatever is due at `now`. Cheap when nothing is, so the event
    /// loop may also call it on its periodic tick.
    pub fn on_timer(&mut self, now: Instant, tx: &mut dyn Transmit) {
        if self.next_wake.is_none_or(|w| now < w) {
            return;
        }
        let mut next: Option<Instant> = None;
        for idx in 0..self.flows.capacity() as u16 {
            let Some(flow) = self.flows.get(idx) else {
                continue;
            };
            if now >= flow.expires_at() {
                self.close(idx, CloseReason::Idle);
                continue;
            }
            if flow.rto_at.is_some_and(|at| now >= at) {
                self.on_local_timeout(idx, now, tx);
            }
            let Some(flow) = self.flows.get(idx) else {
                continue;
            };
            let expires_at = flow.expires_at();
            let due = flow.rto_at.map_or(expires_at, |at| at.min(expires_at));
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        self.next_wake = next;
    }

    /// The oldest unacknowledged segment waited a whole local RTO: send it
    /// again, with exponential backoff, until its retries are spent.
    fn on_local_timeout(&mut self, idx: u16, now: Instant, tx: &mut dyn Transmit) {
        let Some(flow) = self.flows.get_mut(idx) else {
            return;
        };
        let head = flow.segments.head;
        let Some(seg) = self.cache.get(head) else {
            flow.rto_at = None;
            return;
        };
        let hole = flow.last_ack.unwrap_or(seg.seq);
        if flow.last_ack.is_some() && flow.last_window == 0 {
            // The host's window is closed: it drops data by choice, and the
            // sender's window probes deal with that.
            flow.rto_at = Some(now + flow.rtt.backed_off(flow.backoff));
            return;
        }
        if seg.local_sends >= MAX_LOCAL_SENDS {
            // Retries spent: the sender's own timer and dup ACKs take over
            // until a new ACK arrives.
            self.counters.local_recovery_given_up += 1;
            flow.recovery = Recovery::Sender { hole };
            flow.rto_at = None;
            return;
        }
        let sent = self.resend(idx, head, Cause::Timeout, now, tx);
        let Some(flow) = self.flows.get_mut(idx) else {
            return;
        };
        if sent {
            flow.backoff = flow.backoff.saturating_add(1);
            // Dup ACKs that already go to the sender keep going.
            if flow.recovery == Recovery::Open {
                flow.recovery = Recovery::Local { hole };
            }
        }
        // A failed send (socket buffer full) is tried again next time.
        let at = now + flow.rtt.backed_off(flow.backoff);
        flow.rto_at = Some(at);
        self.wake_by(at);
    }
}
