//! The NFQUEUE adapter: binds a queue, exposes its fd to the poll loop and
//! hands each queued packet to a callback that returns its verdict.

use std::io;
use std::os::fd::RawFd;

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
pub enum Verdict {
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

impl NfQueue {
    /// Binds queue `num`, copying `copy_range` bytes of each packet, with
    /// fail-open so a full queue lets packets through instead of dropping.
    pub fn open(num: u16, copy_range: u16, max_len: u32) -> Result<NfQueue, OpenError> {
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
        // Only now: the configuration calls above wait for netlink ACKs.
        queue.set_nonblocking(true);
        Ok(NfQueue { queue, fd, num })
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Gives every waiting packet its verdict, until the socket is empty
    /// (one datagram may carry several packets, invisible to poll) or
    /// `budget` packets are done. Returns how many were handled.
    pub fn drain(
        &mut self,
        budget: usize,
        mut decide: impl FnMut(&Queued<'_>) -> Verdict,
    ) -> usize {
        let mut done = 0;
        while done < budget {
            let mut msg = match self.queue.recv() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOSPC) | Some(libc::EINTR) | Some(libc::ENOBUFS)
                    ) =>
                {
                    log::warn!("NFQUEUE {}: {e}; continuing", self.num);
                    continue;
                }
                Err(e) => {
                    log::error!("NFQUEUE {}: receive failed: {e}", self.num);
                    break;
                }
            };
            let verdict = decide(&Queued {
                payload: msg.get_payload(),
                mark: msg.get_nfmark(),
                indev: msg.get_indev(),
                outdev: msg.get_outdev(),
            });
            match verdict {
                Verdict::Accept => msg.set_verdict(nfq::Verdict::Accept),
                Verdict::Drop => msg.set_verdict(nfq::Verdict::Drop),
                Verdict::RepeatWithMark(mark) => {
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
