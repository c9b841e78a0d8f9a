//! The NFQUEUE adapter: binds a queue, exposes its fd to the poll loop,
//! hands each queued packet to a callback that returns its verdict, and
//! counts the packets the kernel could not deliver to it.

use std::io;
use std::os::fd::RawFd;

use crate::error::StartError;
use crate::sys::netlink;

/// A queued packet as the callback sees it.
pub struct Queued<'a> {
    pub payload: &'a [u8],
    pub mark: u32,
    pub indev: u32,
    pub outdev: u32,
}

/// What to do with a queued packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueVerdict {
    Accept,
    Drop,
    /// Run the hook again from its start with this packet mark (how a SYN
    /// reaches the TPROXY rule, or passes, after its decision).
    RepeatWithMark(u32),
}

pub struct NfQueue {
    queue: nfq::Queue,
    fd: RawFd,
    num: u16,
    ids: IdGaps,
}

/// The kernel numbers the packets it hands to the socket in order; a gap
/// is packets that never reached us because the socket was full (with
/// fail-open the kernel let them through without a verdict).
#[derive(Debug, Default)]
struct IdGaps {
    next: Option<u32>,
    dropped: u64,
    /// The kernel's last id as `settle` read it before.
    kernel_last: Option<u32>,
}

impl IdGaps {
    fn note(&mut self, id: u32) {
        if let Some(expected) = self.next {
            let gap = id.wrapping_sub(expected);
            // A gap of half the id space is a restarted sequence, not a loss.
            if gap < u32::MAX / 2 {
                self.dropped += u64::from(gap);
            }
        }
        self.next = Some(id.wrapping_add(1));
    }

    /// `kernel_last`: the last id the kernel gave out, read once a tick.
    /// A gap shows only when a later packet arrives, so the packets lost
    /// at the end of a burst would wait for the next burst to be counted.
    /// Ids the kernel gave out before the previous tick that never came
    /// are lost: nothing stays in flight to an emptied socket that long.
    fn settle(&mut self, kernel_last: u32) {
        if self.kernel_last == Some(kernel_last) {
            // A fresh queue numbers from 1.
            let expected = self.next.unwrap_or(1);
            let lost = kernel_last.wrapping_sub(expected).wrapping_add(1);
            if lost < u32::MAX / 2 {
                self.dropped += u64::from(lost);
                self.next = Some(kernel_last.wrapping_add(1));
            }
        }
        self.kernel_last = Some(kernel_last);
    }
}

/// Queue `num`'s last packet id from the kernel's table
/// (/proc/net/netfilter/nfnetlink_queue, one line per bound queue:
/// number, peer, waiting, copy mode, copy range, dropped, user dropped,
/// last id, 1). `None` where the table is absent, unreadable, or longer
/// than the buffer (about 60 queues): read into the stack, as the loop
/// allocates nothing once running.
fn kernel_last_id(num: u16) -> Option<u32> {
    use std::io::Read;
    let mut buf = [0u8; 4096];
    let mut file = std::fs::File::open("/proc/net/netfilter/nfnetlink_queue").ok()?;
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    if len == buf.len() {
        return None;
    }
    parse_last_id(std::str::from_utf8(&buf[..len]).ok()?, num)
}

fn parse_last_id(table: &str, num: u16) -> Option<u32> {
    table.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        // Parsed as u64 like every other number (one parser less).
        if fields.next()?.parse::<u64>().ok()? != u64::from(num) {
            return None;
        }
        fields.nth(6)?.parse().ok()
    })
}

/// What went wrong opening a queue, worded for the admin.
#[derive(Debug)]
pub struct OpenError {
    pub message: String,
    /// The kernel lacks queue support (exit 3), as opposed to the queue
    /// being in use or another failure (exit 1).
    pub missing_support: bool,
}

impl OpenError {
    fn new(num: u16, e: &io::Error) -> OpenError {
        let (message, missing_support) = match e.raw_os_error() {
            // The kernel answers EPERM both without CAP_NET_ADMIN and when
            // another process holds the queue.
            Some(libc::EPERM) if !crate::sys::is_root() => (
                format!("NFQUEUE {num}: permission denied: run as root or with CAP_NET_ADMIN"),
                false,
            ),
            Some(libc::EPERM | libc::EBUSY) => (
                format!(
                    "NFQUEUE {num} is already bound by another process (another pepwrt?); choose another --queue"
                ),
                false,
            ),
            Some(libc::EINVAL | libc::ENOENT | libc::EPROTONOSUPPORT | libc::EOPNOTSUPP) => (
                format!(
                    "NFQUEUE {num}: the kernel has no nfnetlink_queue support: install kmod-nfnetlink-queue (OpenWrt) or load nfnetlink_queue ({e})"
                ),
                true,
            ),
            _ => (format!("NFQUEUE {num}: {e}"), false),
        };
        OpenError {
            message,
            missing_support,
        }
    }

    fn other(message: String) -> OpenError {
        OpenError {
            message,
            missing_support: false,
        }
    }

    /// The exit code `run` and `check` use for it.
    pub fn exit_code(&self) -> u8 {
        if self.missing_support { 3 } else { 1 }
    }
}

impl From<OpenError> for StartError {
    fn from(e: OpenError) -> StartError {
        StartError {
            exit_code: e.exit_code(),
            message: e.message,
        }
    }
}

impl NfQueue {
    /// Binds queue `num`, copying `copy_range` bytes of each packet, with
    /// fail-open so a full queue lets packets through instead of dropping.
    /// The socket gets `rcvbuf` bytes, enough for a burst of SYNs; it is
    /// smaller than the queue's `max_len` packets could need, so overflow
    /// happens at the socket, where the gap in packet ids counts it (the
    /// kernel counts fail-open passes at the queue nowhere).
    pub fn open(
        num: u16,
        copy_range: u16,
        max_len: u32,
        rcvbuf: u32,
    ) -> Result<NfQueue, OpenError> {
        let before = netlink::netfilter_sockets()
            .map_err(|e| OpenError::other(format!("listing open sockets: {e}")))?;
        let mut queue = nfq::Queue::open().map_err(|e| OpenError::new(num, &e))?;
        let after = netlink::netfilter_sockets()
            .map_err(|e| OpenError::other(format!("listing open sockets: {e}")))?;
        // nfq 0.2.5 keeps its netlink fd private; it is the one socket that
        // appeared during open(). Replace with AsRawFd once a release has it.
        let new: Vec<RawFd> = after
            .into_iter()
            .filter(|fd| !before.contains(fd))
            .collect();
        let [fd] = new[..] else {
            return Err(OpenError::other(format!(
                "NFQUEUE {num}: could not identify the queue's netlink socket ({} candidates)",
                new.len()
            )));
        };
        queue.bind(num).map_err(|e| OpenError::new(num, &e))?;
        queue
            .set_copy_range(num, copy_range)
            .map_err(|e| OpenError::new(num, &e))?;
        queue
            .set_queue_max_len(num, max_len)
            .map_err(|e| OpenError::new(num, &e))?;
        queue
            .set_fail_open(num, true)
            .map_err(|e| OpenError::new(num, &e))?;
        crate::sys::socket::set_receive_buffer(fd, rcvbuf).map_err(|e| {
            OpenError::other(format!(
                "NFQUEUE {num}: receive buffer of {rcvbuf} bytes: {e}"
            ))
        })?;
        // Only now: the configuration calls above wait for netlink ACKs.
        queue.set_nonblocking(true);
        Ok(NfQueue {
            queue,
            fd,
            num,
            ids: IdGaps::default(),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Packets the kernel numbered but could not deliver.
    pub fn dropped(&self) -> u64 {
        self.ids.dropped
    }

    /// Once a tick, with the socket just drained: counts the packets lost
    /// at the end of a burst (see `IdGaps::settle`). Packets still waiting
    /// in the socket (a drain that ran out of budget) are left for the
    /// next tick.
    pub fn settle(&mut self) {
        if crate::sys::poll::readable_now(self.fd).is_ok_and(|ready| !ready)
            && let Some(last) = kernel_last_id(self.num)
        {
            self.ids.settle(last);
        }
    }

    /// Gives every waiting packet its verdict, until the socket is empty
    /// (one datagram may carry several packets, invisible to poll) or
    /// `budget` packets are done. Returns how many were handled.
    pub fn drain(
        &mut self,
        budget: usize,
        mut decide: impl FnMut(&Queued<'_>) -> QueueVerdict,
    ) -> usize {
        let mut done = 0;
        while done < budget {
            let mut msg = match self.queue.recv() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ENOBUFS: the socket overflowed; the id gap counts what
                // was lost.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOSPC) | Some(libc::EINTR) | Some(libc::ENOBUFS)
                    ) =>
                {
                    log::debug!("NFQUEUE {}: {e}; continuing", self.num);
                    continue;
                }
                Err(e) => {
                    log::error!("NFQUEUE {}: receive failed: {e}", self.num);
                    break;
                }
            };
            self.ids.note(msg.get_packet_id());
            let verdict = decide(&Queued {
                payload: msg.get_payload(),
                mark: msg.get_nfmark(),
                indev: msg.get_indev(),
                outdev: msg.get_outdev(),
            });
            match verdict {
                QueueVerdict::Accept => msg.set_verdict(nfq::Verdict::Accept),
                QueueVerdict::Drop => msg.set_verdict(nfq::Verdict::Drop),
                QueueVerdict::RepeatWithMark(mark) => {
                    msg.set_nfmark(mark);
                    msg.set_verdict(nfq::Verdict::Repeat);
                }
            }
            if let Err(e) = self.queue.verdict(msg) {
                log::warn!("NFQUEUE {}: verdict not delivered: {e}", self.num);
            }
            done += 1;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_gaps_count_lost_packets() {
        let mut ids = IdGaps::default();
        for id in [5, 6, 9, 10, 14] {
            ids.note(id);
        }
        assert_eq!(ids.dropped, 2 + 3);
        // Wrapping around the id space is no loss.
        let mut ids = IdGaps::default();
        ids.note(u32::MAX);
        ids.note(0);
        assert_eq!(ids.dropped, 0);
    }

    #[test]
    fn ids_lost_at_the_end_of_a_burst_count_a_tick_later() {
        let mut ids = IdGaps::default();
        ids.note(1);
        ids.note(2);
        // The kernel gave out 3 and 4; not yet counted: they may be on
        // their way.
        ids.settle(4);
        assert_eq!(ids.dropped, 0);
        // A tick later they are lost, once.
        ids.settle(4);
        assert_eq!(ids.dropped, 2);
        ids.settle(4);
        assert_eq!(ids.dropped, 2);
        // A packet that came in between is no loss.
        ids.settle(5);
        ids.note(5);
        ids.settle(5);
        assert_eq!(ids.dropped, 2);
        // A fresh queue whose first packets were all lost.
        let mut ids = IdGaps::default();
        ids.settle(3);
        ids.settle(3);
        assert_eq!(ids.dropped, 3);
        // Nothing given out yet.
        let mut ids = IdGaps::default();
        ids.settle(0);
        ids.settle(0);
        assert_eq!(ids.dropped, 0);
    }

    #[test]
    fn the_kernels_table_gives_the_last_id() {
        let table = "    0  12345     0 2  256     0     0      17  1\n 3135  23456     2 2  256     4     5  123456  1\n";
        assert_eq!(parse_last_id(table, 3135), Some(123456));
        assert_eq!(parse_last_id(table, 0), Some(17));
        assert_eq!(parse_last_id(table, 7), None);
        assert_eq!(parse_last_id("", 0), None);
    }
}
