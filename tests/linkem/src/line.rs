//! The delay line: frames in flight, in delivery order, in a fixed ring
//! of fixed-size slots allocated once, so memory is bounded by
//! `capacity * SLOT` whatever the traffic does.

/// Room for an Ethernet frame with a VLAN tag and then some.
pub const SLOT: usize = 2048;

pub struct Line {
    data: Vec<u8>,
    /// (delivery time, length) per slot.
    meta: Vec<(u64, u16)>,
    head: usize,
    len: usize,
}

impl Line {
    pub fn new(capacity: usize) -> Line {
        // Zeroed allocation: pages are only touched (and count in RSS)
        // once frames actually fill them.
        Line {
            data: vec![0; capacity * SLOT],
            meta: vec![(0, 0); capacity],
            head: 0,
            len: 0,
        }
    }

    pub fn is_full(&self) -> bool {
        self.len == self.meta.len()
    }

    /// The slot the next frame is received into, before it is committed.
    pub fn spare(&mut self) -> &mut [u8] {
        let i = (self.head + self.len) % self.meta.len();
        &mut self.data[i * SLOT..(i + 1) * SLOT]
    }

    /// Keeps the frame just written into `spare()`.
    pub fn commit(&mut self, at: u64, len: usize) {
        debug_assert!(!self.is_full() && len <= SLOT);
        let i = (self.head + self.len) % self.meta.len();
        self.meta[i] = (at, len as u16);
        self.len += 1;
    }

    /// Delivery time of the oldest frame.
    pub fn next_due(&self) -> Option<u64> {
        (self.len > 0).then(|| self.meta[self.head].0)
    }

    /// The oldest frame, if due by `now`; `pop` releases it.
    pub fn due(&self, now: u64) -> Option<&[u8]> {
        let (at, len) = self.meta[self.head];
        (self.len > 0 && at <= now)
            .then(|| &self.data[self.head * SLOT..self.head * SLOT + len as usize])
    }

    pub fn pop(&mut self) {
        self.head = (self.head + 1) % self.meta.len();
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_wraps_and_bounds() {
        let mut l = Line::new(2);
        for round in 0..5u8 {
            l.spare()[0] = round;
            l.commit(10, 1);
            assert!(l.due(9).is_none());
            assert_eq!(l.due(10), Some(&[round][..]));
            l.pop();
        }
        l.commit(1, 1);
        l.commit(2, 1);
        assert!(l.is_full());
        assert_eq!(l.next_due(), Some(1));
    }
}
