//! The hierarchical timer wheel: 6 levels of 64 slots over a slab, 1 tick = 1 ms.
//!
//! Level `l` slot `s` holds the timers whose deadline shares every bit above `6 * (l + 1)` with
//! the wheel's elapsed tick and has `s` in bits `6l .. 6l + 6`. A timer therefore lives at the
//! level of the most significant bit in which its deadline differs from "now": level 0 holds
//! the next 64 ms one per slot, level 1 the next 4 s in 64 ms slots, and so on up to level 5
//! (64^6 ms, about 2.2 years). The top level also takes deadlines past the end of the current
//! 64^6 window (its slot index wraps), so the horizon — [`HORIZON`] ticks from *now*, about
//! 2.1 years; later deadlines are clamped to it — never shrinks with the runtime's age.
//!
//! Every slot is an intrusive doubly linked list threaded through the slab, so insert and cancel
//! are O(1) and allocation-free once the slab has grown. Each level keeps an `occupied` bitmap;
//! the next expiration is found with a rotate and a `trailing_zeros` per level, never a scan.
//! When time reaches a slot of a higher level, its timers cascade down to lower levels (or fire).

use slab::Slab;
use std::task::Waker;

/// Bits of a tick consumed by one level (64 slots).
const SLOT_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
/// Levels of the wheel.
const LEVELS: usize = 6;
/// The ticks one turn of the top level spans (64^6 ms ≈ 2.2 years).
const TOP_RANGE: u64 = 1 << (SLOT_BITS * LEVELS as u32);
/// The furthest a deadline may lie past the wheel's elapsed tick (≈ 2.1 years): a turn of the
/// top level less one of its slots, so a wrapped top-level slot never aliases the current one.
/// A later deadline is clamped to this rather than rejected.
pub(crate) const HORIZON: u64 = TOP_RANGE - (TOP_RANGE >> SLOT_BITS);
/// "No entry" in the intrusive lists.
const NIL: usize = usize::MAX;

/// Where a timer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Linked into `levels[level].slots[slot]`.
    Linked { level: u8, slot: u8 },
    /// Its deadline has passed and it was fired (its waker, if any, was taken).
    Fired,
}

/// One timer in the slab.
#[derive(Debug)]
struct Entry {
    /// Deadline, in ticks since the wheel's start.
    when: u64,
    /// The task to wake when the deadline passes.
    waker: Option<Waker>,
    place: Place,
    prev: usize,
    next: usize,
}

/// One level: 64 list heads and a bitmap of the non-empty ones.
#[derive(Debug)]
struct Level {
    occupied: u64,
    heads: [usize; SLOTS],
}

/// A hierarchical timer wheel. Single-threaded; owned by one runtime thread.
#[derive(Debug)]
pub(crate) struct Wheel {
    entries: Slab<Entry>,
    levels: [Level; LEVELS],
    /// Every deadline at or before this tick has fired.
    elapsed: u64,
    /// How many timers are linked into a slot (pending): with none, `advance` has no work.
    linked: usize,
}

impl Wheel {
    pub(crate) fn new() -> Self {
        Wheel {
            entries: Slab::new(),
            levels: std::array::from_fn(|_| Level {
                occupied: 0,
                heads: [NIL; SLOTS],
            }),
            elapsed: 0,
            linked: 0,
        }
    }

    /// Whether any timer is pending.
    pub(crate) fn has_pending(&self) -> bool {
        self.linked > 0
    }

    /// A wheel whose elapsed tick is `elapsed` (as after a long uptime).
    #[cfg(test)]
    pub(crate) fn starting_at(elapsed: u64) -> Self {
        let mut wheel = Wheel::new();
        wheel.elapsed = elapsed;
        wheel
    }

    /// Ticks that have been processed.
    #[cfg(test)]
    pub(crate) fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Adds a timer for tick `when`; returns its key. A deadline already past fires at once.
    pub(crate) fn insert(&mut self, when: u64, waker: Option<Waker>) -> usize {
        let key = self.entries.insert(Entry {
            when: self.clamp(when),
            waker,
            place: Place::Fired,
            prev: NIL,
            next: NIL,
        });
        self.place(key);
        key
    }

    /// Removes a timer, pending or fired.
    pub(crate) fn remove(&mut self, key: usize) {
        self.unlink(key);
        self.entries.remove(key);
    }

    /// Moves a timer to a new deadline (re-arming it if it had fired).
    pub(crate) fn reset(&mut self, key: usize, when: u64) {
        self.unlink(key);
        self.entries[key].when = self.clamp(when);
        self.place(key);
    }

    /// `when`, or the horizon if that comes first.
    fn clamp(&self, when: u64) -> u64 {
        when.min(self.elapsed.saturating_add(HORIZON))
    }

    /// Whether the timer has fired.
    pub(crate) fn is_fired(&self, key: usize) -> bool {
        self.entries[key].place == Place::Fired
    }

    /// Stores the waker to wake when the timer fires; keeps the old one when it would wake the
    /// same task (no clone on the hot path).
    pub(crate) fn set_waker(&mut self, key: usize, waker: &Waker) {
        let slot = &mut self.entries[key].waker;
        match slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// The tick at which the next timer must be looked at (fires, or cascades to a lower level),
    /// or `None` when no timer is pending.
    pub(crate) fn next_expiration(&self) -> Option<u64> {
        for (level, lvl) in self.levels.iter().enumerate() {
            if lvl.occupied == 0 {
                continue;
            }
            let shift = SLOT_BITS * level as u32;
            let slot_range = 1u64 << shift;
            let level_range = slot_range << SLOT_BITS;
            let now_slot = ((self.elapsed >> shift) as usize) & (SLOTS - 1);
            let distance = lvl.occupied.rotate_right(now_slot as u32).trailing_zeros() as u64;
            let slot = (now_slot as u64 + distance) & (SLOTS as u64 - 1);
            let level_start = self.elapsed & !(level_range - 1);
            let mut deadline = level_start + slot * slot_range;
            if deadline < self.elapsed {
                if level > 0 && (slot as usize == now_slot || level < LEVELS - 1) {
                    // The occupied slot is the current one (its range started before
                    // `elapsed`): cascade it now.
                    deadline = self.elapsed;
                } else {
                    // A slot behind the current one: it belongs to the level's next turn (the
                    // top level holds deadlines past the end of its window).
                    deadline += level_range;
                }
            }
            return Some(deadline);
        }
        None
    }

    /// Advances to tick `now`, firing every timer whose deadline is at or before it.
    /// `fire` gets each fired timer's key and waker (if one was set).
    pub(crate) fn advance(&mut self, now: u64, mut fire: impl FnMut(usize, Option<Waker>)) {
        if self.linked == 0 {
            self.elapsed = self.elapsed.max(now);
            return;
        }
        while let Some(tick) = self.next_expiration() {
            if tick > now {
                break;
            }
            self.elapsed = self.elapsed.max(tick);
            let level = self.lowest_occupied_level();
            let shift = SLOT_BITS * level as u32;
            let slot = ((tick >> shift) as usize) & (SLOTS - 1);
            // Take the whole slot, then fire or cascade each timer in it.
            let mut key = self.levels[level].heads[slot];
            self.levels[level].heads[slot] = NIL;
            self.levels[level].occupied &= !(1 << slot);
            while key != NIL {
                self.linked -= 1;
                let next = self.entries[key].next;
                let entry = &mut self.entries[key];
                entry.prev = NIL;
                entry.next = NIL;
                entry.place = Place::Fired;
                if entry.when <= self.elapsed {
                    let waker = entry.waker.take();
                    fire(key, waker);
                } else {
                    self.place(key);
                }
                key = next;
            }
        }
        self.elapsed = self.elapsed.max(now);
    }

    fn lowest_occupied_level(&self) -> usize {
        self.levels
            .iter()
            .position(|l| l.occupied != 0)
            .unwrap_or(LEVELS - 1)
    }

    /// Links an unlinked entry into the slot its deadline belongs to, or fires it if due.
    fn place(&mut self, key: usize) {
        let when = self.entries[key].when;
        if when <= self.elapsed {
            let entry = &mut self.entries[key];
            entry.place = Place::Fired;
            if let Some(w) = entry.waker.take() {
                w.wake();
            }
            return;
        }
        // The most significant bit where `when` and `elapsed` differ picks the level.
        let masked = (self.elapsed ^ when) | (SLOTS as u64 - 1);
        let significant = 63 - masked.leading_zeros();
        // A deadline in the next window of the top level differs in a higher bit: it goes to
        // the top level, whose slot index wraps (the horizon keeps it off the current slot).
        let level = ((significant / SLOT_BITS) as usize).min(LEVELS - 1);
        let slot = ((when >> (SLOT_BITS * level as u32)) as usize) & (SLOTS - 1);
        let head = self.levels[level].heads[slot];
        {
            let entry = &mut self.entries[key];
            entry.place = Place::Linked {
                level: level as u8,
                slot: slot as u8,
            };
            entry.prev = NIL;
            entry.next = head;
        }
        if head != NIL {
            self.entries[head].prev = key;
        }
        self.levels[level].heads[slot] = key;
        self.levels[level].occupied |= 1 << slot;
        self.linked += 1;
    }

    /// Unlinks an entry from its slot list (no-op if it had fired).
    fn unlink(&mut self, key: usize) {
        let (place, prev, next) = {
            let e = &self.entries[key];
            (e.place, e.prev, e.next)
        };
        let Place::Linked { level, slot } = place else {
            return;
        };
        let (level, slot) = (level as usize, slot as usize);
        if prev == NIL {
            self.levels[level].heads[slot] = next;
            if next == NIL {
                self.levels[level].occupied &= !(1 << slot);
            }
        } else {
            self.entries[prev].next = next;
        }
        if next != NIL {
            self.entries[next].prev = prev;
        }
        let e = &mut self.entries[key];
        e.prev = NIL;
        e.next = NIL;
        e.place = Place::Fired;
        self.linked -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn fired_until(wheel: &mut Wheel, now: u64) -> Vec<usize> {
        let mut fired = Vec::new();
        wheel.advance(now, |key, _| fired.push(key));
        fired
    }

    #[test]
    fn a_timer_fires_at_its_tick_and_not_one_before() {
        for when in [1u64, 63, 64, 65, 4095, 4096, 4097, 300_000, 1 << 30] {
            let mut wheel = Wheel::new();
            let key = wheel.insert(when, None);
            assert!(
                fired_until(&mut wheel, when - 1).is_empty(),
                "early at {when}"
            );
            assert_eq!(fired_until(&mut wheel, when), vec![key], "late at {when}");
        }
    }

    #[test]
    fn next_expiration_finds_the_earliest_without_a_scan() {
        let mut wheel = Wheel::new();
        wheel.insert(5000, None);
        wheel.insert(70, None);
        let next = wheel.next_expiration().unwrap();
        assert!(next <= 70, "{next}");
        fired_until(&mut wheel, 69);
        assert_eq!(wheel.next_expiration(), Some(70));
    }

    #[test]
    fn deadlines_beyond_the_horizon_are_clamped_not_rejected() {
        let mut wheel = Wheel::new();
        let key = wheel.insert(u64::MAX, None);
        assert!(fired_until(&mut wheel, HORIZON - 1).is_empty());
        assert_eq!(fired_until(&mut wheel, HORIZON), vec![key]);
    }

    #[test]
    fn the_horizon_counts_from_now_not_from_the_start() {
        // Regression (review): deadlines were clamped to an absolute tick, so after 2^36 ms
        // (≈ 795 days) of uptime every new timer fired at once, and a re-armed one never.
        for start in [TOP_RANGE - 1, TOP_RANGE + 5, 3 * TOP_RANGE - 70_000] {
            let mut wheel = Wheel::starting_at(start);
            for delay in [1, 64, 86_400_000, HORIZON - 1, HORIZON] {
                let key = wheel.insert(start + delay, None);
                assert!(!wheel.is_fired(key), "fired at once: {start} + {delay}");
                let mut probe = Wheel::starting_at(start);
                let key = probe.insert(start + delay, None);
                assert!(fired_until(&mut probe, start + delay - 1).is_empty());
                assert_eq!(fired_until(&mut probe, start + delay), vec![key]);
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Cancel(usize),
        Reset(usize, u64),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let delay = prop_oneof![
            4 => 0u64..80,
            4 => 0u64..5_000,
            4 => 0u64..400_000,
            4 => 0u64..30_000_000,
            1 => 0u64..HORIZON,
        ];
        prop_oneof![
            4 => delay.clone().prop_map(Op::Insert),
            1 => any::<usize>().prop_map(Op::Cancel),
            1 => (any::<usize>(), delay.clone()).prop_map(|(k, d)| Op::Reset(k, d)),
            3 => delay.prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// The wheel and a `BTreeMap` reference agree on what fires when.
        #[test]
        fn the_wheel_agrees_with_a_btreemap(
            start in prop_oneof![Just(0u64), TOP_RANGE - 100_000..TOP_RANGE + 100_000, 0..4 * TOP_RANGE],
            ops in proptest::collection::vec(op(), 1..300),
        ) {
            let mut wheel = Wheel::starting_at(start);
            let mut reference: BTreeMap<usize, u64> = BTreeMap::new(); // pending key -> when
            let mut live: Vec<usize> = Vec::new();
            for op in ops {
                let now = wheel.elapsed();
                match op {
                    Op::Insert(d) => {
                        let key = wheel.insert(now + d, None);
                        if d == 0 {
                            prop_assert!(wheel.is_fired(key));
                        } else {
                            reference.insert(key, now + d);
                        }
                        live.push(key);
                    }
                    Op::Cancel(i) if !live.is_empty() => {
                        let key = live.swap_remove(i % live.len());
                        wheel.remove(key);
                        reference.remove(&key);
                    }
                    Op::Reset(i, d) if !live.is_empty() => {
                        let key = live[i % live.len()];
                        wheel.reset(key, now + d);
                        if d == 0 {
                            reference.remove(&key);
                        } else {
                            reference.insert(key, now + d);
                        }
                    }
                    Op::Advance(d) => {
                        let to = now + d;
                        let fired: BTreeSet<usize> = fired_until(&mut wheel, to).into_iter().collect();
                        let due: BTreeSet<usize> = reference
                            .iter()
                            .filter(|(_, when)| **when <= to)
                            .map(|(k, _)| *k)
                            .collect();
                        prop_assert_eq!(&fired, &due);
                        for key in due {
                            reference.remove(&key);
                        }
                    }
                    _ => {}
                }
                prop_assert_eq!(wheel.has_pending(), !reference.is_empty());
                // The next expiration never lies past the earliest pending deadline.
                if let Some(earliest) = reference.values().min() {
                    let next = wheel.next_expiration();
                    prop_assert!(next.is_some_and(|n| n <= *earliest));
                }
            }
        }
    }
}
