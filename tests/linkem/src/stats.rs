//! Counters per direction, shared with the main thread for the report.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub lost: AtomicU64,
    pub queue_full: AtomicU64,
    pub outage: AtomicU64,
    pub line_full: AtomicU64,
    pub oversize: AtomicU64,
    pub send_errors: AtomicU64,
    /// Frames sent more than 1 ms after their due time, and the worst
    /// lateness: how far the host let the emulator fall behind.
    pub late: AtomicU64,
    pub late_max_us: AtomicU64,
}

impl Stats {
    pub fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Relaxed);
    }

    pub fn late_by(&self, ns: u64) {
        if ns > 1_000_000 {
            Self::bump(&self.late, 1);
        }
        self.late_max_us.fetch_max(ns / 1000, Relaxed);
    }

    /// One JSON object, for scripts and tests to parse.
    pub fn json(&self, name: &str) -> String {
        let g = |c: &AtomicU64| c.load(Relaxed);
        format!(
            "{{\"dir\":\"{name}\",\"received\":{},\"sent\":{},\"sent_bytes\":{},\"lost\":{},\"queue_full\":{},\"outage\":{},\"line_full\":{},\"oversize\":{},\"send_errors\":{},\"late\":{},\"late_max_us\":{}}}",
            g(&self.received),
            g(&self.sent),
            g(&self.sent_bytes),
            g(&self.lost),
            g(&self.queue_full),
            g(&self.outage),
            g(&self.line_full),
            g(&self.oversize),
            g(&self.send_errors),
            g(&self.late),
            g(&self.late_max_us)
        )
    }
}
