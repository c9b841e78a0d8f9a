//! How local retransmissions leave: a trait, so the state machine can be
//! tested with a recording wire, and its implementation by the OS layer's
//! raw sockets (which know nothing of Snoop).

use crate::sys::raw::RawSender;

/// Sends Snoop's local retransmissions.
pub trait Transmit {
    /// Sends one whole IP packet (v4 or v6) unchanged toward the wireless
    /// host; false if it could not be sent now.
    fn send(&mut self, ip_packet: &[u8]) -> bool;
}

impl Transmit for RawSender {
    /// A packet the kernel did not take whole (a full interface queue, or
    /// any other error) is a `false`: Snoop then leaves recovery to the
    /// sender, which is what a full queue should do anyway.
    fn send(&mut self, ip_packet: &[u8]) -> bool {
        match self.send_packet(ip_packet) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("snoop: local retransmission not sent: {e}");
                false
            }
        }
    }
}
