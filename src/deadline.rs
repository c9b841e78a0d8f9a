//! Timers as data: one deadline per key in a binary min-heap, sized at
//! start. The loop sleeps until the earliest one (uloop keeps a sorted
//! list; a heap keeps setting a deadline at O(log n) with thousands of
//! connections). Each key is armed at most once, so the heap never holds
//! more than the keys it was made for and never allocates after start.

use std::time::Instant;

/// A thing that can wait for a deadline, with its place among the keys
/// (`0..keys` of the `Deadlines` it is armed in).
pub trait Keyed: Copy {
    fn key(self) -> usize;
}

/// Marks a key that is not armed.
const UNARMED: u32 = u32::MAX;

pub struct Deadlines<T> {
    /// Armed items, earliest first at the root.
    heap: Vec<(Instant, T)>,
    /// By key: where the item sits in `heap`, or UNARMED.
    place: Vec<u32>,
}

impl<T: Keyed> Deadlines<T> {
    /// Room for keys `0..keys`.
    pub fn new(keys: usize) -> Deadlines<T> {
        Deadlines {
            heap: Vec::with_capacity(keys),
            place: vec![UNARMED; keys],
        }
    }

    /// When `item` is armed for, if it is.
    pub fn get(&self, item: T) -> Option<Instant> {
        let at = *self.place.get(item.key())?;
        (at != UNARMED).then(|| self.heap[at as usize].0)
    }

    /// Arms `item` for `at`, replacing its earlier deadline. A key past
    /// the capacity is a caller's bug: debug builds stop on it, a release
    /// build ignores it (never a grown heap).
    pub fn set(&mut self, item: T, at: Instant) {
        let key = item.key();
        let Some(&place) = self.place.get(key) else {
            debug_assert!(false, "deadline key {key} out of range");
            return;
        };
        let i = if place == UNARMED {
            self.heap.push((at, item));
            self.heap.len() - 1
        } else {
            self.heap[place as usize] = (at, item);
            place as usize
        };
        self.place[key] = i as u32;
        let i = self.sift_up(i);
        self.sift_down(i);
    }

    /// Arms `item` for `at` unless it is already armed for no later: for
    /// a deadline that only moves later as work is done (idleness), the
    /// early wake-up finds it moved and arms it again, which costs less
    /// than moving it on every event.
    pub fn set_by(&mut self, item: T, at: Instant) {
        if self.get(item).is_none_or(|armed| armed > at) {
            self.set(item, at);
        }
    }

    /// Arms `item` for `at`, or disarms it for None.
    pub fn set_opt(&mut self, item: T, at: Option<Instant>) {
        match at {
            Some(at) => self.set(item, at),
            None => self.cancel(item),
        }
    }

    pub fn cancel(&mut self, item: T) {
        let key = item.key();
        let Some(&place) = self.place.get(key) else {
            return;
        };
        if place == UNARMED {
            return;
        }
        let i = place as usize;
        self.place[key] = UNARMED;
        let last = self.heap.len() - 1;
        if i != last {
            self.heap.swap(i, last);
            self.heap.pop();
            self.place[self.heap[i].1.key()] = i as u32;
            let i = self.sift_up(i);
            self.sift_down(i);
        } else {
            self.heap.pop();
        }
    }

    /// The earliest deadline: how long the loop may sleep.
    pub fn next(&self) -> Option<Instant> {
        self.heap.first().map(|&(at, _)| at)
    }

    /// Disarms and returns the earliest item if its deadline is at or
    /// before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        let &(at, item) = self.heap.first()?;
        if at > now {
            return None;
        }
        self.cancel(item);
        Some(item)
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.place[self.heap[a].1.key()] = a as u32;
        self.place[self.heap[b].1.key()] = b as u32;
    }

    fn sift_up(&mut self, mut i: usize) -> usize {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].0 <= self.heap[i].0 {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
        i
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < self.heap.len() && self.heap[l].0 < self.heap[least].0 {
                least = l;
            }
            if r < self.heap.len() && self.heap[r].0 < self.heap[least].0 {
                least = r;
            }
            if least == i {
                return;
            }
            self.swap(i, least);
            i = least;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    impl Keyed for usize {
        fn key(self) -> usize {
            self
        }
    }

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn items_come_due_earliest_first_and_only_once_due() {
        let t = Instant::now();
        let mut d = Deadlines::<usize>::new(8);
        for (key, at) in [(3, 30), (1, 10), (7, 70), (2, 20)] {
            d.set(key, ms(t, at));
        }
        assert_eq!(d.next(), Some(ms(t, 10)));
        assert_eq!(d.pop_due(ms(t, 5)), None);
        assert_eq!(d.pop_due(ms(t, 25)), Some(1));
        assert_eq!(d.pop_due(ms(t, 25)), Some(2));
        assert_eq!(d.pop_due(ms(t, 25)), None);
        assert_eq!(d.next(), Some(ms(t, 30)));
        assert_eq!(d.get(1), None);
        assert_eq!(d.get(7), Some(ms(t, 70)));
    }

    #[test]
    fn setting_again_moves_a_deadline_either_way_and_cancel_disarms() {
        let t = Instant::now();
        let mut d = Deadlines::<usize>::new(4);
        d.set(0, ms(t, 10));
        d.set(1, ms(t, 20));
        d.set(0, ms(t, 30));
        assert_eq!(d.next(), Some(ms(t, 20)));
        d.set(0, ms(t, 5));
        assert_eq!(d.next(), Some(ms(t, 5)));
        d.cancel(0);
        d.cancel(0);
        assert_eq!(d.next(), Some(ms(t, 20)));
        d.set_opt(1, None);
        assert_eq!(d.next(), None);
        assert_eq!(d.pop_due(ms(t, 99)), None);
    }

    #[test]
    fn set_by_only_brings_a_deadline_forward() {
        let t = Instant::now();
        let mut d = Deadlines::<usize>::new(2);
        d.set_by(0, ms(t, 50));
        assert_eq!(d.get(0), Some(ms(t, 50)));
        d.set_by(0, ms(t, 80));
        assert_eq!(d.get(0), Some(ms(t, 50)));
        d.set_by(0, ms(t, 10));
        assert_eq!(d.get(0), Some(ms(t, 10)));
    }

    #[test]
    fn rearming_never_grows_the_heap_and_unknown_keys_read_as_unarmed() {
        let t = Instant::now();
        let mut d = Deadlines::<usize>::new(16);
        let room = d.heap.capacity();
        for round in 0..4 {
            for key in 0..16 {
                d.set(key, ms(t, (key * 7 + round) as u64 % 13));
            }
        }
        assert_eq!(d.heap.capacity(), room);
        assert_eq!(d.get(99), None);
        d.cancel(99);
    }

    /// Random sets, cancels and pops against a plain table.
    #[test]
    fn agrees_with_a_plain_table_under_random_use() {
        let t = Instant::now();
        let mut d = Deadlines::<usize>::new(32);
        let mut model: [Option<Instant>; 32] = [None; 32];
        let mut seed = 0x2545_f491_u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let mut now = t;
        for _ in 0..20_000 {
            let r = next();
            let key = (r % 32) as usize;
            let at = ms(t, u64::from(next() % 1000));
            match r / 32 % 5 {
                0 | 1 => {
                    d.set(key, at);
                    model[key] = Some(at);
                }
                2 => {
                    d.set_by(key, at);
                    model[key] = Some(model[key].map_or(at, |m| m.min(at)));
                }
                3 => {
                    d.cancel(key);
                    model[key] = None;
                }
                _ => {
                    now += Duration::from_millis(u64::from(next() % 50));
                    let expect = model.iter().flatten().min().copied();
                    assert_eq!(d.next(), expect);
                    match d.pop_due(now) {
                        Some(k) => {
                            assert_eq!(model[k], expect);
                            assert!(model[k].is_some_and(|m| m <= now));
                            model[k] = None;
                        }
                        None => assert!(expect.is_none_or(|e| e > now)),
                    }
                }
            }
            for (k, m) in model.iter().enumerate() {
                assert_eq!(d.get(k), *m);
            }
        }
    }
}
