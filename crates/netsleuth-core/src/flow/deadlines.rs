//! The TCP flow engine's expiry queue: `(deadline, slot, connection id)` entries, taken in
//! ascending order, whole capture-seconds at a time by a sweep and one at a time by an eviction.
//!
//! It was one binary heap of every entry (two per connection: the half-open wait queued when a
//! connection starts, stale once it closes, and the linger after its close; ~20,000 on the
//! benchmark capture). Each push of a close's deadline sifted up through it and each entry a sweep
//! took sifted down through ~15 levels, mostly cache misses and mispredicted branches. Here the
//! next 64 seconds are a ring of one small heap per second: a push goes into its second's heap
//! (usually after every entry already there, so it stays where it lands), and a sweep takes the
//! seconds it has passed whole, the second it is in entry by entry, and sorts what it took.
//! Later deadlines (an unanswered SYN's 180 s, an established connection's days) wait in one heap
//! of their own and move into the ring as the sweeps come near them; most never come due (their
//! connection closes first, and the entry goes stale and is dropped by the engine's compaction).
//! On the benchmark capture the flow engine's sweeps took 4.4–4.8 ms instead of 5.2–5.5, 3.9–4.3
//! with `TcpEngine::expire` reading the connections come due before finalising any, and whole
//! runs 4–5 % less time (BENCHMARKS.md, "Per-packet cost, twelfth pass").

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// `(deadline, slot, connection id)`: the engine's entry; ordered by deadline, then slot and id
/// (unique, so the order is total and does not depend on how the entries were stored).
pub(super) type Deadline = (i64, u32, u64);

/// Width of a ring place.
const SECOND_NS: i64 = 1_000_000_000;
/// Seconds the ring holds ahead of its start.
const RING: usize = 64;
/// Entries a drained place keeps room for (6 KiB).
const KEPT_PER_PLACE: usize = 256;

#[derive(Default)]
pub(super) struct Deadlines {
    /// `ring[s % RING]`: the entries of second `s`, for `start <= s < start + RING`; the place of
    /// `start` also holds any entry earlier than it (pushed behind the sweeps: capture time may go
    /// back a little between records).
    ring: Vec<BinaryHeap<Reverse<Deadline>>>,
    /// The earliest second the ring holds (that of the last sweep).
    start: i64,
    /// Entries of `start + RING` seconds or later.
    far: BinaryHeap<Reverse<Deadline>>,
    len: usize,
}

fn second(deadline: i64) -> i64 {
    deadline.div_euclid(SECOND_NS)
}

impl Deadlines {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn clear(&mut self) {
        self.ring.iter_mut().for_each(BinaryHeap::clear);
        self.far.clear();
        self.len = 0;
    }

    pub(super) fn push(&mut self, entry: Deadline) {
        self.len += 1;
        let s = second(entry.0);
        if s >= self.start.saturating_add(RING as i64) {
            self.far.push(Reverse(entry));
        } else {
            self.place(s.max(self.start)).push(Reverse(entry));
        }
    }

    fn place(&mut self, s: i64) -> &mut BinaryHeap<Reverse<Deadline>> {
        if self.ring.is_empty() {
            self.ring.resize_with(RING, BinaryHeap::new);
        }
        &mut self.ring[s.rem_euclid(RING as i64) as usize]
    }

    /// The earliest entry, taken.
    pub(super) fn pop(&mut self) -> Option<Deadline> {
        if !self.ring.is_empty() {
            for s in self.start..self.start.saturating_add(RING as i64) {
                if let Some(Reverse(entry)) = self.place(s).pop() {
                    self.len -= 1;
                    return Some(entry);
                }
            }
        }
        let Reverse(entry) = self.far.pop()?;
        self.len -= 1;
        Some(entry)
    }

    /// Every entry whose deadline is before `now`, taken and appended to `out` in ascending order;
    /// the ring then starts at `now`'s second. `now` does not go back from one call to the next.
    pub(super) fn take_before(&mut self, now: i64, out: &mut Vec<Deadline>) {
        let from = out.len();
        let now_second = second(now);
        if !self.ring.is_empty() {
            let end = now_second
                .min(self.start.saturating_add(RING as i64 - 1))
                .max(self.start);
            for s in self.start..=end {
                let place = self.place(s);
                if s < now_second {
                    // Every entry of a second before `now`'s is before `now`.
                    out.extend(place.drain().map(|Reverse(e)| e));
                    // A place keeps room for a busy second, not for the busiest one ever: 64
                    // of those would hold memory no live connection needs.
                    place.shrink_to(KEPT_PER_PLACE);
                } else {
                    while place.peek().is_some_and(|Reverse(e)| e.0 < now) {
                        out.push(place.pop().expect("peeked").0);
                    }
                }
            }
        }
        while self.far.peek().is_some_and(|Reverse(e)| e.0 < now) {
            out.push(self.far.pop().expect("peeked").0);
        }
        self.len -= out.len() - from;
        if now_second > self.start {
            // The places of the seconds passed are empty; the ring moves on, and far entries now
            // within it come in.
            self.start = now_second;
            let ring_end = self.start.saturating_add(RING as i64);
            while let Some(&Reverse(entry)) = self.far.peek() {
                if second(entry.0) >= ring_end {
                    break;
                }
                self.far.pop();
                self.place(second(entry.0)).push(Reverse(entry));
            }
        }
        out[from..].sort_unstable();
    }

    /// Keep the entries `keep` says to.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Deadline) -> bool) {
        for place in &mut self.ring {
            place.retain(|Reverse(e)| keep(e));
        }
        self.far.retain(|Reverse(e)| keep(e));
        self.len = self.ring.iter().map(BinaryHeap::len).sum::<usize>() + self.far.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: one heap of everything, as the engine had.
    #[derive(Default)]
    struct OneHeap(BinaryHeap<Reverse<Deadline>>);

    impl OneHeap {
        fn take_before(&mut self, now: i64) -> Vec<Deadline> {
            let mut out = Vec::new();
            while self.0.peek().is_some_and(|Reverse(e)| e.0 < now) {
                out.push(self.0.pop().unwrap().0);
            }
            out
        }
    }

    /// A small deterministic generator (no dependency for a test).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    #[test]
    fn takes_what_one_heap_takes_in_the_same_order() {
        for seed in 0..20u64 {
            let mut rng = Lcg(seed);
            let (mut ring, mut heap) = (Deadlines::default(), OneHeap::default());
            let mut now: i64 = -5 * SECOND_NS + (rng.next() % 1000) as i64;
            let mut id = 0u64;
            for _ in 0..400 {
                // Pushes around `now`: a little behind it (capture time going back), the linger
                // (seconds), the half-open wait (minutes), days, and far jumps.
                for _ in 0..rng.next() % 40 {
                    let ahead = match rng.next() % 6 {
                        0 => -((rng.next() % 2_000_000_000) as i64),
                        1 => (rng.next() % 5_000_000_000) as i64,
                        2 => 180 * SECOND_NS + (rng.next() % 3_000_000_000) as i64,
                        3 => 6 * 86_400 * SECOND_NS,
                        4 => (rng.next() % 70) as i64 * SECOND_NS,
                        _ => 0,
                    };
                    let entry = (now.saturating_add(ahead), (rng.next() % 50) as u32, id);
                    id += 1;
                    ring.push(entry);
                    heap.0.push(Reverse(entry));
                }
                match rng.next() % 10 {
                    0 => {
                        // An eviction: the earliest, one at a time.
                        assert_eq!(ring.pop(), heap.0.pop().map(|r| r.0));
                    }
                    1 => {
                        // Compaction drops some.
                        let drop_odd = |e: &Deadline| e.2 % 3 != 1;
                        ring.retain(drop_odd);
                        heap.0.retain(|Reverse(e)| drop_odd(e));
                    }
                    _ => {
                        // A sweep, a second or more later; sometimes a long gap.
                        let step = if rng.next() % 20 == 0 {
                            (rng.next() % 500) as i64 * SECOND_NS
                        } else {
                            SECOND_NS + (rng.next() % 1_500_000_000) as i64
                        };
                        now += step;
                        let mut out = Vec::new();
                        ring.take_before(now, &mut out);
                        assert_eq!(out, heap.take_before(now), "seed {seed}, now {now}");
                    }
                }
                assert_eq!(ring.len(), heap.0.len());
            }
            // Everything, in order, at the end.
            while let Some(e) = heap.0.pop() {
                assert_eq!(ring.pop(), Some(e.0));
            }
            assert_eq!(ring.pop(), None);
            assert_eq!(ring.len(), 0);
        }
    }

    #[test]
    fn extreme_deadlines_neither_overflow_nor_get_lost() {
        let mut d = Deadlines::default();
        for e in [
            (i64::MAX, 1, 1),
            (i64::MIN, 2, 2),
            (0, 3, 3),
            (i64::MAX - 1, 4, 4),
        ] {
            d.push(e);
        }
        let mut out = Vec::new();
        d.take_before(1, &mut out);
        assert_eq!(out, vec![(i64::MIN, 2, 2), (0, 3, 3)]);
        out.clear();
        d.take_before(i64::MAX, &mut out);
        assert_eq!(out, vec![(i64::MAX - 1, 4, 4)]);
        assert_eq!(d.pop(), Some((i64::MAX, 1, 1)));
        assert_eq!(d.len(), 0);
    }
}
