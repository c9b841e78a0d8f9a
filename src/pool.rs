//! The fixed pool of connection slots and of the pipes lent to their
//! directions. A slot is free, reserved for a SYN that pepwrt admitted, or
//! holding a live split connection (`C`: the relay's connection; the pool
//! never looks inside it). Only the pool changes a slot's state, and only
//! the pool makes handles to slots.
//!
//! Pipes are made at start and never closed. A direction borrows one when
//! its source is readable and gives it back once empty; one whose
//! destination is slow keeps its bytes, and its pipe, until they leave.
//! When none is free, the direction is not read (the kernel keeps the
//! bytes, TCP slows the sender) and its slot waits in line; a pipe that
//! comes back goes to the slot longest in line, so none starves.

use std::time::Instant;

use crate::channel::Channel;
use crate::sys::pipe::Pipe;
use crate::sys::poll::{self, Events};
use crate::tuple::{FourTuple, SynInfo};

/// A slot handle that goes stale when the slot is freed and reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId {
    slot: u16,
    generation: u16,
}

impl ConnId {
    /// One number for logs, the status table and event tokens.
    pub fn as_u32(self) -> u32 {
        (u32::from(self.slot) << 16) | u32::from(self.generation)
    }

    /// The slot's position, for tables kept beside the pool.
    pub fn index(self) -> usize {
        usize::from(self.slot)
    }
}

enum State<C> {
    Free,
    /// An admitted SYN's slot, waiting for its handshake to reach the
    /// listener.
    Reserved {
        syn: SynInfo,
        until: Instant,
    },
    /// Taken by an accepted connection whose outgoing leg is being opened.
    Claimed,
    Active(C),
}

struct Slot<C> {
    generation: u16,
    state: State<C>,
    up: Channel,
    down: Channel,
    /// In line for a pipe (at most once).
    queued: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// The slot an admitted SYN holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub id: ConnId,
    /// False when a retransmitted SYN found its earlier reservation.
    pub new: bool,
}

/// The slot an accepted connection takes, with its SYN's details when the
/// reservation was still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub id: ConnId,
    pub syn: Option<SynInfo>,
}

/// A live connection and its two buffers, borrowed from its slot.
pub struct Live<'a, C> {
    pub conn: &'a mut C,
    pub up: &'a mut Channel,
    pub down: &'a mut Channel,
}

pub struct Pool<C> {
    slots: Vec<Slot<C>>,
    /// Indices of free slots; capacity fixed at start, so push never grows.
    free: Vec<u16>,
    active: usize,
    /// Every pipe, made at start; the first `spare` are not lent.
    pipes: Vec<Pipe>,
    spare: usize,
    /// Slots in line for a pipe, oldest at `head`: a ring as long as the
    /// pool, which a slot enters at most once.
    line: Vec<u16>,
    head: usize,
    queued: usize,
    /// The slot `next_waiter` called: it may take a pipe before the line.
    woken: Option<u16>,
}

impl<C> Pool<C> {
    /// Makes every slot, and `pipes` pipes for directions of up to
    /// `buffer_bytes`, now: memory use is known before the first
    /// connection. Fewer pipes if the kernel refuses more (open files).
    pub fn make(slots: u16, pipes: u16, buffer_bytes: usize) -> Pool<C> {
        let n = usize::from(slots);
        let slots: Vec<_> = (0..n)
            .map(|_| Slot {
                generation: 0,
                state: State::Free,
                up: Channel::new(buffer_bytes),
                down: Channel::new(buffer_bytes),
                queued: false,
            })
            .collect();
        let mut pool = Pool {
            free: (0..n as u16).rev().collect(),
            slots,
            active: 0,
            spare: 0,
            pipes: Vec::with_capacity(usize::from(pipes)),
            // Any numbers: a slot is written before it is read.
            line: (0..n as u16).rev().collect(),
            head: 0,
            queued: 0,
            woken: None,
        };
        while pool.pipes.len() < usize::from(pipes) {
            let Some(pipe) = Channel::pipe_for(buffer_bytes) else {
                break;
            };
            pool.pipes.push(pipe);
        }
        pool.spare = pool.pipes.len();
        pool
    }

    /// A pipe back from a direction.
    fn put_back(&mut self, back: Option<Pipe>) {
        if let Some(p) = back {
            self.pipes[self.spare] = p;
            self.spare += 1;
        }
    }

    /// A pool of slots with no pipes (tests of the slots alone).
    pub fn new(slots: u16, buffer_bytes: usize) -> Pool<C> {
        Pool::make(slots, 0, buffer_bytes)
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Pipes lent, and made.
    pub fn pipes(&self) -> (usize, usize) {
        (self.pipes.len() - self.spare, self.pipes.len())
    }

    /// Before live connection `id` runs on `ready` (client, server): lends
    /// a pipe to each direction whose source is readable, or was when it
    /// found none free, and has none. None free, or others in line first:
    /// the direction waits, unread, and its slot gets in line.
    pub fn lend(&mut self, id: ConnId, mut ready: [Events; 2]) -> [Events; 2] {
        let first = self.woken.take() == Some(id.slot) || self.queued == 0;
        // Readiness comes only for live connections (`Token::decode`), and
        // `next_waiter` wakes only those.
        let s = &mut self.slots[id.index()];
        let (pipes, spare) = (&self.pipes, &mut self.spare);
        let waits = lend_one(pipes, spare, &mut s.up, &mut ready[0], first)
            | lend_one(pipes, spare, &mut s.down, &mut ready[1], first);
        if waits && !s.queued {
            s.queued = true;
            let at = self.head + self.queued;
            let wrap = if at < self.line.len() {
                0
            } else {
                self.line.len()
            };
            self.line[at - wrap] = id.slot;
            self.queued += 1;
        }
        ready
    }

    /// After a connection ran: its directions' empty pipes go back.
    pub fn settle(&mut self, id: ConnId) {
        if let Some(s) = self.slot_mut(id) {
            let back = [s.up.give_back(), s.down.give_back()];
            self.put_back(back[0]);
            self.put_back(back[1]);
        }
    }

    /// Slots in line for a pipe.
    pub fn waiting(&self) -> usize {
        self.queued
    }

    /// While a pipe is free: the slot longest in line for one, out of the
    /// line. It runs next (`lend` with no readiness lends to
    /// its waiting directions), before those behind it. Calling this until
    /// None ends: each call serves a waiting direction (one of the same
    /// slot left without a pipe goes back in line) or a stale entry,
    /// and no direction starts to wait meanwhile: only readiness makes one
    /// wait.
    pub fn next_waiter(&mut self) -> Option<ConnId> {
        if self.spare > 0 && self.queued > 0 {
            let slot = self.line[self.head];
            self.head += 1;
            if self.head == self.line.len() {
                self.head = 0;
            }
            self.queued -= 1;
            self.slots[usize::from(slot)].queued = false;
            // A slot freed or reused since still wakes: its run finds no
            // live connection, or nothing waiting, and does nothing.
            self.woken = Some(slot);
            return Some(self.id(usize::from(slot)));
        }
        None
    }

    /// Slots holding live connections.
    pub fn active_count(&self) -> usize {
        self.active
    }

    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn id(&self, slot: usize) -> ConnId {
        ConnId {
            slot: slot as u16,
            generation: self.slots[slot].generation,
        }
    }

    fn slot_mut(&mut self, id: ConnId) -> Option<&mut Slot<C>> {
        let s = self.slots.get_mut(id.index())?;
        (s.generation == id.generation).then_some(s)
    }

    fn find_reserved(&self, tuple: &FourTuple) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| matches!(&s.state, State::Reserved { syn, .. } if syn.tuple == *tuple))
    }

    /// A free slot, taking back a reservation that ran out if none is free
    /// (so a flood of SYNs that never complete holds slots only briefly).
    fn take_free(&mut self, now: Instant) -> Option<usize> {
        if let Some(i) = self.free.pop() {
            return Some(usize::from(i));
        }
        let i = self
            .slots
            .iter()
            .position(|s| matches!(s.state, State::Reserved { until, .. } if until <= now))?;
        let s = &mut self.slots[i];
        s.generation = s.generation.wrapping_add(1);
        Some(i)
    }

    /// Reserves a slot for an admitted SYN until `until`. A retransmitted
    /// SYN finds its earlier reservation and extends it.
    pub fn reserve(
        &mut self,
        syn: SynInfo,
        until: Instant,
        now: Instant,
    ) -> Result<Reservation, Full> {
        let (slot, new) = match self.find_reserved(&syn.tuple) {
            Some(s) => (s, false),
            None => (self.take_free(now).ok_or(Full)?, true),
        };
        self.slots[slot].state = State::Reserved { syn, until };
        Ok(Reservation {
            id: self.id(slot),
            new,
        })
    }

    /// Takes the reservation of an accepted connection, if it is still
    /// there.
    pub fn claim(&mut self, tuple: &FourTuple) -> Option<Claim> {
        let slot = self.find_reserved(tuple)?;
        let State::Reserved { syn, .. } = self.slots[slot].state else {
            return None;
        };
        self.slots[slot].state = State::Claimed;
        Some(Claim {
            id: self.id(slot),
            syn: Some(syn),
        })
    }

    /// A slot for an accepted connection whose reservation ran out (its
    /// handshake took long): any free one.
    pub fn claim_late(&mut self, now: Instant) -> Option<Claim> {
        let slot = self.take_free(now)?;
        self.slots[slot].state = State::Claimed;
        Some(Claim {
            id: self.id(slot),
            syn: None,
        })
    }

    /// Puts a live connection into its claimed slot. A stale handle hands
    /// the connection back (boxed: a path that never runs need not make
    /// every call's result large).
    pub fn activate(&mut self, id: ConnId, conn: C) -> Result<(), Box<C>> {
        let Some(s) = self.slot_mut(id) else {
            return Err(Box::new(conn));
        };
        if !matches!(s.state, State::Claimed) {
            return Err(Box::new(conn));
        }
        s.state = State::Active(conn);
        self.active += 1;
        Ok(())
    }

    /// Frees a slot: its handle goes stale and its buffers are emptied. The
    /// connection it held, if any, is handed back for its last words.
    pub fn release(&mut self, id: ConnId) -> Option<C> {
        let s = self.slot_mut(id)?;
        let state = std::mem::replace(&mut s.state, State::Free);
        let back = [s.up.clear(), s.down.clear()];
        s.generation = s.generation.wrapping_add(1);
        self.put_back(back[0]);
        self.put_back(back[1]);
        self.free.push(id.slot);
        match state {
            State::Active(conn) => {
                self.active -= 1;
                Some(conn)
            }
            _ => None,
        }
    }

    /// Frees reservations whose SYN never became a connection.
    pub fn expire_reservations(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        for i in 0..self.slots.len() {
            if matches!(self.slots[i].state, State::Reserved { until, .. } if until <= now) {
                self.release(self.id(i));
                expired += 1;
            }
        }
        expired
    }

    pub fn live(&mut self, id: ConnId) -> Option<Live<'_, C>> {
        let s = self.slot_mut(id)?;
        match &mut s.state {
            State::Active(conn) => Some(Live {
                conn,
                up: &mut s.up,
                down: &mut s.down,
            }),
            _ => None,
        }
    }

    pub fn conn(&self, id: ConnId) -> Option<&C> {
        let s = self.slots.get(id.index())?;
        match &s.state {
            State::Active(conn) if s.generation == id.generation => Some(conn),
            _ => None,
        }
    }

    /// The handle `as_u32` gave, if that connection is still live.
    pub fn id_from_u32(&self, raw: u32) -> Option<ConnId> {
        let id = ConnId {
            slot: (raw >> 16) as u16,
            generation: raw as u16,
        };
        self.conn(id).map(|_| id)
    }

    /// The next live connection at or after `*cursor`, moving the cursor
    /// past it: a walk over live slots that lets the caller change the pool
    /// between steps.
    pub fn next_active(&self, cursor: &mut usize) -> Option<ConnId> {
        while *cursor < self.slots.len() {
            let i = *cursor;
            *cursor += 1;
            if matches!(self.slots[i].state, State::Active(_)) {
                return Some(self.id(i));
            }
        }
        None
    }

    /// Live connections with their handles, in slot order.
    pub fn active(&self) -> impl Iterator<Item = (ConnId, &C)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.state {
                State::Active(conn) => Some((self.id(i), conn)),
                _ => None,
            })
    }
}

/// Lends `ch` a pipe if its source is readable (`ev`), or was when none
/// was free, and it has none, and it may take one (`first`); whether it
/// waits for one.
fn lend_one(
    pipes: &[Pipe],
    spare: &mut usize,
    ch: &mut Channel,
    ev: &mut Events,
    first: bool,
) -> bool {
    if !ch.has_pipe() && (*ev & (poll::IN | poll::ERR) != 0 || ch.waiting) {
        if first && *spare > 0 {
            *spare -= 1;
            ch.lend(pipes[*spare]);
            *ev |= poll::IN;
        } else {
            ch.waiting = true;
        }
    }
    ch.waiting
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tcp::SynOptions;
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

    const LATER: Duration = Duration::from_secs(3);

    #[test]
    fn pool_full_refuses_reservation() {
        let now = Instant::now();
        let mut p = Pool::<()>::new(2, 4096);
        p.reserve(syn(1), now + LATER, now).unwrap();
        p.reserve(syn(2), now + LATER, now).unwrap();
        assert_eq!(p.reserve(syn(3), now + LATER, now), Err(Full));
        assert_eq!(p.in_use(), 2);
    }

    #[test]
    fn retransmitted_syn_reuses_its_reservation() {
        let now = Instant::now();
        let mut p = Pool::<()>::new(2, 4096);
        let a = p.reserve(syn(1), now + LATER, now).unwrap();
        let b = p.reserve(syn(1), now + LATER, now).unwrap();
        assert_eq!(a.id, b.id);
        assert!(a.new && !b.new);
        assert_eq!(p.in_use(), 1);
    }

    #[test]
    fn a_full_pool_takes_back_reservations_that_ran_out() {
        let now = Instant::now();
        let mut p = Pool::<()>::new(1, 4096);
        let old = p.reserve(syn(1), now + LATER, now).unwrap();
        assert_eq!(p.reserve(syn(2), now + LATER, now), Err(Full));
        let new = p.reserve(syn(2), now + LATER * 2, now + LATER).unwrap();
        assert!(new.new);
        assert_ne!(old.id, new.id);
        assert!(p.claim(&syn(1).tuple).is_none());
    }

    #[test]
    fn released_slot_handles_go_stale() {
        let now = Instant::now();
        let mut p = Pool::<()>::new(1, 4096);
        let a = p.reserve(syn(1), now + LATER, now).unwrap().id;
        assert!(p.release(a).is_none());
        assert!(p.release(a).is_none());
        let b = p.reserve(syn(2), now + LATER, now).unwrap().id;
        assert_eq!(a.slot, b.slot);
        assert_ne!(a.generation, b.generation);
        assert_eq!(p.in_use(), 1);
    }

    #[test]
    fn claim_finds_only_admitted_tuples_and_reservations_expire() {
        let now = Instant::now();
        let mut p = Pool::<()>::new(4, 4096);
        p.reserve(syn(1), now + Duration::from_secs(5), now)
            .unwrap();
        p.reserve(syn(2), now + Duration::from_secs(5), now)
            .unwrap();
        assert!(p.claim(&syn(9).tuple).is_none());
        let c = p.claim(&syn(1).tuple).unwrap();
        assert_eq!(c.syn, Some(syn(1)));
        // A claimed slot is no longer a reservation.
        assert!(p.claim(&syn(1).tuple).is_none());
        assert_eq!(p.expire_reservations(now), 0);
        assert_eq!(p.expire_reservations(now + Duration::from_secs(6)), 1);
        assert_eq!(p.in_use(), 1);
    }

    #[test]
    fn late_claims_take_any_free_slot_and_never_a_live_one() {
        let now = Instant::now();
        let mut p = Pool::<()>::new(1, 4096);
        let c = p.claim_late(now).unwrap();
        assert_eq!(c.syn, None);
        assert!(p.claim_late(now).is_none());
        assert!(p.reserve(syn(1), now + LATER, now + LATER * 9).is_err());
    }

    fn live_slot(p: &mut Pool<()>) -> ConnId {
        let c = p.claim_late(Instant::now()).unwrap();
        p.activate(c.id, ()).unwrap();
        c.id
    }

    #[test]
    fn pipes_go_to_the_slot_longest_in_line_and_a_slot_waits_once() {
        const IN: Events = poll::IN;
        let mut p = Pool::<()>::make(3, 1, 4096);
        let (a, b, c) = (live_slot(&mut p), live_slot(&mut p), live_slot(&mut p));
        assert_eq!(p.lend(a, [IN, 0]), [IN, 0]);
        assert_eq!(p.pipes(), (1, 1));
        // No pipe left: both of b's directions wait, b is in line once.
        p.lend(b, [IN, IN]);
        p.lend(c, [0, IN]);
        p.lend(b, [IN, IN]);
        assert_eq!(p.waiting(), 2);
        assert_eq!(p.next_waiter(), None, "none is free");
        // A's pipe held nothing: back, and b is first in line.
        p.settle(a);
        assert_eq!(p.pipes(), (0, 1));
        // Someone not in line does not get it before those in line.
        assert_eq!(p.lend(a, [IN, 0]), [IN, 0]);
        assert_eq!(p.pipes(), (0, 1));
        assert_eq!(p.next_waiter(), Some(b));
        // Woken with no readiness: b's first direction gets the pipe (and
        // reads), its second goes back in line, behind c and a.
        assert_eq!(p.lend(b, [0, 0]), [IN, 0]);
        p.settle(b);
        let order: Vec<_> = std::iter::from_fn(|| {
            let id = p.next_waiter()?;
            let got = p.lend(id, [0, 0]);
            p.settle(id);
            Some((id, got))
        })
        .take(10)
        .collect();
        assert_eq!(order, [(c, [0, IN]), (a, [IN, 0]), (b, [0, IN])]);
        assert_eq!((p.waiting(), p.pipes()), (0, (0, 1)));
    }

    #[test]
    fn a_released_slot_gives_its_pipes_back_and_leaves_the_line() {
        let mut p = Pool::<()>::make(2, 1, 4096);
        let (a, b) = (live_slot(&mut p), live_slot(&mut p));
        p.lend(a, [poll::IN, 0]);
        p.lend(b, [poll::IN, 0]);
        assert_eq!(p.waiting(), 1);
        p.release(b);
        p.release(a);
        assert_eq!(p.pipes(), (0, 1));
        // b's entry is stale: it wakes a slot with no live connection,
        // whose run lends nothing, and the line is empty.
        let stale = p.next_waiter().unwrap();
        assert!(p.live(stale).is_none());
        assert_eq!(p.lend(stale, [0, 0]), [0, 0]);
        assert_eq!((p.waiting(), p.pipes()), (0, (0, 1)));
        assert_eq!(p.next_waiter(), None);
    }
}
