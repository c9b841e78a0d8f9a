//! The fixed pool of connection slots: each slot owns its two ring
//! buffers for the life of the process, and is free, reserved for a SYN
//! that pepwrt admitted, or holding a live split connection.

use std::net::SocketAddr;
use std::time::Instant;

use crate::relay::Conn;
use crate::ring::Ring;
use crate::wire::tcp::SynOptions;

/// A connection's endpoints as the client sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FourTuple {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// What the admitted SYN told us, kept for the outgoing leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynInfo {
    pub tuple: FourTuple,
    pub tos: u8,
    pub options: SynOptions,
}

/// A slot handle that goes stale when the slot is freed and reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId {
    pub slot: u16,
    pub generation: u16,
}

impl ConnId {
    /// One number for logs and the status table.
    pub fn as_u32(self) -> u32 {
        (u32::from(self.slot) << 16) | u32::from(self.generation)
    }
}

pub enum SlotState {
    Free,
    Reserved { syn: SynInfo, until: Instant },
    Active(Conn),
}

pub struct Slot {
    pub generation: u16,
    pub state: SlotState,
    pub up: Ring,
    pub down: Ring,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

pub struct Pool {
    slots: Vec<Slot>,
    /// Indices of free slots; capacity fixed at start, so push never grows.
    free: Vec<u16>,
}

impl Pool {
    /// Allocates every slot and buffer now: memory use is known before the
    /// first connection.
    pub fn new(slots: u16, buffer_bytes: usize) -> Pool {
        let slots: Vec<Slot> = (0..slots)
            .map(|_| Slot {
                generation: 0,
                state: SlotState::Free,
                up: Ring::with_capacity(buffer_bytes),
                down: Ring::with_capacity(buffer_bytes),
            })
            .collect();
        let free = (0..slots.len() as u16).rev().collect();
        Pool { slots, free }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn id(&self, slot: u16) -> ConnId {
        ConnId {
            slot,
            generation: self.slots[usize::from(slot)].generation,
        }
    }

    fn find_reserved(&self, tuple: &FourTuple) -> Option<u16> {
        self.slots
            .iter()
            .position(
                |s| matches!(&s.state, SlotState::Reserved { syn, .. } if syn.tuple == *tuple),
            )
            .map(|i| i as u16)
    }

    /// Reserves a slot for an admitted SYN until `until`. A retransmitted SYN
    /// finds its earlier reservation and extends it.
    pub fn reserve(&mut self, syn: SynInfo, until: Instant) -> Result<(ConnId, bool), Full> {
        let (slot, new) = match self.find_reserved(&syn.tuple) {
            Some(s) => (s, false),
            None => (self.free.pop().ok_or(Full)?, true),
        };
        self.slots[usize::from(slot)].state = SlotState::Reserved { syn, until };
        Ok((self.id(slot), new))
    }

    /// Takes the reservation for an accepted connection, if pepwrt admitted it.
    pub fn claim(&mut self, tuple: &FourTuple) -> Option<(ConnId, SynInfo)> {
        let slot = self.find_reserved(tuple)?;
        match self.slots[usize::from(slot)].state {
            SlotState::Reserved { syn, .. } => Some((self.id(slot), syn)),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Slot> {
        let s = self.slots.get_mut(usize::from(id.slot))?;
        (s.generation == id.generation).then_some(s)
    }

    /// Frees a slot: its handle goes stale and its buffers are emptied.
    pub fn release(&mut self, id: ConnId) {
        let Some(s) = self.get_mut(id) else { return };
        s.state = SlotState::Free;
        s.up.clear();
        s.down.clear();
        s.generation = s.generation.wrapping_add(1);
        self.free.push(id.slot);
    }

    /// Frees reservations whose SYN never became a connection.
    pub fn expire_reservations(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        for i in 0..self.slots.len() {
            if matches!(self.slots[i].state, SlotState::Reserved { until, .. } if until <= now) {
                let id = self.id(i as u16);
                self.release(id);
                expired += 1;
            }
        }
        expired
    }

    /// The handle of slot `i` if it holds a live connection.
    pub fn active_id_at(&self, i: usize) -> Option<ConnId> {
        let s = self.slots.get(i)?;
        matches!(s.state, SlotState::Active(_)).then_some(ConnId {
            slot: i as u16,
            generation: s.generation,
        })
    }

    /// Handles of the slots holding live connections, in slot order.
    pub fn active_ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.state, SlotState::Active(_)))
            .map(|(i, s)| ConnId {
                slot: i as u16,
                generation: s.generation,
            })
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn syn(port: u16) -> SynInfo {
        SynInfo {
            tuple: FourTuple {
                client: format!("198.18.0.2:{port}").parse().unwrap(),
                server: "198.18.1.2:80".parse().unwrap(),
            },
            tos: 0,
            options: SynOptions::default(),
        }
    }

    #[test]
    fn pool_full_refuses_reservation() {
        let now = Instant::now();
        let mut p = Pool::new(2, 4096);
        p.reserve(syn(1), now).unwrap();
        p.reserve(syn(2), now).unwrap();
        assert_eq!(p.reserve(syn(3), now), Err(Full));
        assert_eq!(p.in_use(), 2);
    }

    #[test]
    fn retransmitted_syn_reuses_its_reservation() {
        let now = Instant::now();
        let mut p = Pool::new(2, 4096);
        let (a, new_a) = p.reserve(syn(1), now).unwrap();
        let (b, new_b) = p.reserve(syn(1), now + Duration::from_secs(1)).unwrap();
        assert_eq!(a, b);
        assert!(new_a && !new_b);
        assert_eq!(p.in_use(), 1);
    }

    #[test]
    fn released_slot_handles_go_stale() {
        let now = Instant::now();
        let mut p = Pool::new(1, 4096);
        let (a, _) = p.reserve(syn(1), now).unwrap();
        p.release(a);
        assert!(p.get_mut(a).is_none());
        let (b, _) = p.reserve(syn(2), now).unwrap();
        assert_eq!(a.slot, b.slot);
        assert_ne!(a.generation, b.generation);
    }

    #[test]
    fn claim_finds_only_admitted_tuples_and_reservations_expire() {
        let now = Instant::now();
        let mut p = Pool::new(4, 4096);
        p.reserve(syn(1), now + Duration::from_secs(5)).unwrap();
        assert!(p.claim(&syn(9).tuple).is_none());
        assert!(p.claim(&syn(1).tuple).is_some());
        assert_eq!(p.expire_reservations(now), 0);
        assert_eq!(p.expire_reservations(now + Duration::from_secs(6)), 1);
        assert_eq!(p.in_use(), 0);
    }
}
