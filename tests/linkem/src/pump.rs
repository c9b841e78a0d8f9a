//! One direction of the wire: read frames from one interface, pass them
//! through the link model, hold them in the delay line and write them to
//! the other interface when due. One thread each, so the two directions
//! never wait on each other.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::line::{Line, SLOT};
use crate::model::{Link, Verdict};
use crate::packet::{Receiver, Sender};
use crate::stats::Stats;

/// Upper bound on one sleep, so a stop request is seen quickly.
const MAX_WAIT_NS: u64 = 50_000_000;
/// Frames read per wake-up before looking at the clock again, so a
/// burst of arrivals cannot hold back frames that are due.
const RECV_BATCH: usize = 16;

fn clock(id: libc::clockid_t) -> u64 {
    // SAFETY: ts is a valid out-parameter.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: both clocks used here always exist.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn now_ns() -> u64 {
    clock(libc::CLOCK_MONOTONIC)
}

/// When a frame stamped `real` (CLOCK_REALTIME) arrived, on our
/// monotonic scale; never later than now.
fn arrival_ns(real: Option<u64>) -> u64 {
    let now = now_ns();
    match real {
        Some(stamp) => now - clock(libc::CLOCK_REALTIME).saturating_sub(stamp).min(now),
        None => now,
    }
}

/// A new seed for the random streams, published by the main thread.
#[derive(Default)]
pub struct Reseed {
    /// Bumped after `seed` is stored; a pump that sees a new value
    /// restarts its stream.
    pub generation: AtomicU64,
    pub seed: AtomicU64,
}

impl Reseed {
    pub fn publish(&self, seed: u64) {
        self.seed.store(seed, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

pub struct Pump<'a> {
    pub rx: Receiver,
    pub tx: Sender,
    pub link: Link,
    pub line: Line,
    pub stats: &'a Stats,
    pub realtime: bool,
    pub reseed: &'a Reseed,
    /// Mixed into a published seed so the two directions differ.
    pub salt: u64,
}

impl Pump<'_> {
    pub fn run(mut self, stop: &AtomicBool) {
        // The default 50 us timer slack would blur 120 us frame times.
        // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
        if self.realtime {
            // A busy host (compilers on both cores) delays a normal
            // thread's wake-up by tens of ms, which would show as
            // jitter. Real-time priority lets the pump preempt them; it
            // sleeps between frames, and the kernel's RT throttling
            // bounds it anyway. Without permission, carry on as is.
            let param = libc::sched_param { sched_priority: 10 };
            // SAFETY: 0 means this thread; param is valid.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        }
        let mut generation = self.reseed.generation.load(Ordering::Acquire);
        while !stop.load(Ordering::Relaxed) {
            let now_generation = self.reseed.generation.load(Ordering::Acquire);
            if now_generation != generation {
                generation = now_generation;
                let seed = self.reseed.seed.load(Ordering::Relaxed);
                self.link.reseed(seed ^ self.salt);
            }
            self.deliver_due();
            let now = now_ns();
            let wait = self
                .line
                .next_due()
                .map_or(MAX_WAIT_NS, |at| at.saturating_sub(now).min(MAX_WAIT_NS));
            if wait_readable(self.rx.fd(), wait) {
                self.receive_batch();
            }
        }
    }

    fn deliver_due(&mut self) {
        let now = now_ns();
        while let Some(frame) = self.line.due(now) {
            self.stats
                .late_by(now - self.line.next_due().unwrap_or(now));
            match self.tx.send(frame) {
                Ok(()) => {
                    Stats::bump(&self.stats.sent, 1);
                    Stats::bump(&self.stats.sent_bytes, frame.len() as u64);
                }
                Err(_) => Stats::bump(&self.stats.send_errors, 1),
            }
            self.line.pop();
        }
    }

    fn receive_batch(&mut self) {
        for _ in 0..RECV_BATCH {
            if self.line.is_full() {
                // Still read it, or the socket would hold it forever.
                let mut scratch = [0u8; SLOT];
                match self.rx.recv(&mut scratch) {
                    Ok(Some(_)) => Stats::bump(&self.stats.line_full, 1),
                    _ => return,
                }
                continue;
            }
            let (len, stamp) = match self.rx.recv(self.line.spare()) {
                Ok(Some(got)) => got,
                _ => return,
            };
            Stats::bump(&self.stats.received, 1);
            if len > SLOT {
                Stats::bump(&self.stats.oversize, 1);
                continue;
            }
            match self.link.admit(arrival_ns(stamp), len) {
                Verdict::Deliver(at) => self.line.commit(at, len),
                Verdict::Lost => Stats::bump(&self.stats.lost, 1),
                Verdict::QueueFull => Stats::bump(&self.stats.queue_full, 1),
                Verdict::Outage => Stats::bump(&self.stats.outage, 1),
            }
        }
    }
}

/// Sleeps until `fd` is readable or `wait_ns` passes, at ns resolution.
fn wait_readable(fd: i32, wait_ns: u64) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let d = Duration::from_nanos(wait_ns);
    let ts = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // SAFETY: pfd and ts are valid for the call; no signal mask change.
    let n = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}
