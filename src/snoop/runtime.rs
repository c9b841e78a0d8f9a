//! Snoop at work: its queue, the engine, and the raw socket its local
//! retransmissions leave by; every queued packet gets its verdict here.

use std::os::fd::RawFd;
use std::time::Instant;

use super::{Snoop, SnoopVerdict};
use crate::config::{Config, SnoopConfig};
use crate::error::StartError;
use crate::nfqueue::{NfQueue, QueueVerdict};
use crate::sys::raw::RawSender;

/// Snoop caches whole data segments, so its queue copies whole packets.
const COPY_RANGE: u16 = 0xffff;
/// Packets the kernel may hold for Snoop at once, and the socket for them.
const QUEUE_LEN: u32 = 4096;
const SOCKET_BYTES: u32 = 4 << 20;

pub struct SnoopRuntime {
    queue: NfQueue,
    engine: Snoop,
    tx: RawSender,
}

impl SnoopRuntime {
    pub fn start(cfg: &Config, s: &SnoopConfig) -> Result<SnoopRuntime, StartError> {
        let engine = Snoop::new(s).map_err(StartError::new)?;
        let tx = RawSender::open(cfg.snoop_mark(), cfg.ipv6).map_err(|e| {
            StartError::new(format!(
                "snoop: raw socket for local retransmissions: {e} (needs CAP_NET_RAW)"
            ))
        })?;
        let queue = NfQueue::open(s.queue, COPY_RANGE, QUEUE_LEN, SOCKET_BYTES)?;
        super::place::log_start(s);
        log::info!(
            "snoop: queue {}, {} flows, {} KiB segment cache",
            s.queue,
            s.flows,
            s.cache_bytes / 1024
        );
        Ok(SnoopRuntime { queue, engine, tx })
    }

    pub fn fd(&self) -> RawFd {
        self.queue.fd()
    }

    pub fn engine(&self) -> &Snoop {
        &self.engine
    }

    /// Verdicts for up to `budget` queued packets: packets Snoop does not
    /// track, or cannot parse, are accepted unchanged. Returns when the
    /// local timer is next due.
    pub fn on_packets(&mut self, budget: usize, now: Instant) -> Option<Instant> {
        let (engine, tx) = (&mut self.engine, &mut self.tx);
        self.queue.drain(budget, |pkt| {
            match engine.on_packet(pkt.payload, pkt.indev, pkt.outdev, now, tx) {
                SnoopVerdict::Accept => QueueVerdict::Accept,
                SnoopVerdict::Drop => QueueVerdict::Drop,
            }
        });
        self.engine.next_deadline()
    }

    /// Runs the local timer if it is due; when it is next due.
    pub fn on_timer(&mut self, now: Instant) -> Option<Instant> {
        if self.engine.next_deadline().is_some_and(|d| d <= now) {
            self.engine.on_timer(now, &mut self.tx);
        }
        self.engine.next_deadline()
    }

    /// Lets every waiting packet go unchanged (pepwrt is stopping).
    pub fn release(&mut self) {
        self.queue.drain(usize::MAX, |_| QueueVerdict::Accept);
    }
}
