//! The slotted sliding window: the arithmetic of its slots, and the in-memory counter built on
//! it. `sliding_window.lua` implements the same rules on a Redis hash.
//!
//! A window of `W` µs is cut into slots of `g` µs on the store's clock: the slot of an instant
//! `t` is `floor(t / g)`. A counter keeps one count per slot plus the running total. At `t`
//! every slot from `floor((t − W) / g)` (the oldest one that can still overlap `(t − W, t]`,
//! counted whole) up to `t`'s own is counted; a request is admitted only when those counts plus
//! one fit within the limit, so no window `(t − W, t]` ever holds more than `limit` admitted
//! requests. The price: requests in the oldest, partly expired slot still count, so some
//! requests are refused earlier than the exact log would, and the moment a full counter has
//! room again is at most `g` later than the exact log's. Memory: at most `W / g + 2` slots,
//! whatever the limit.

use std::collections::VecDeque;

/// Slot of the instant `t_us`.
pub fn slot_of(t_us: u64, slot_us: u64) -> u64 {
    t_us / slot_us.max(1)
}

/// The oldest slot counted at `now_us`: the one holding `now − W`, which may still overlap
/// the window `(now − W, now]`.
pub fn oldest_counted(now_us: u64, window_us: u64, slot_us: u64) -> u64 {
    slot_of(now_us.saturating_sub(window_us), slot_us)
}

/// When slot `slot` stops being counted: the first instant whose oldest counted slot is
/// after it, `(slot + 1)·g + W`.
pub fn leaves_at(slot: u64, window_us: u64, slot_us: u64) -> u64 {
    slot.saturating_add(1)
        .saturating_mul(slot_us.max(1))
        .saturating_add(window_us)
}

/// When a counter whose live slots are `slots` (oldest first, `(slot, count)`, `total`
/// units in all) has room for `cost` units again under `limit`, or, when it has room, when
/// its oldest units stop being counted: `total + cost − limit` units (one when they fit) must
/// have left, and they leave a slot at a time. `now_us` for an empty counter.
pub fn free_at(
    slots: impl IntoIterator<Item = (u64, u64)>,
    total: u64,
    limit: u64,
    cost: u64,
    now_us: u64,
    window_us: u64,
    slot_us: u64,
) -> u64 {
    if total == 0 {
        return now_us;
    }
    let must_leave = super::must_leave(total, limit, cost);
    let mut left = 0u64;
    let mut newest = None;
    for (slot, count) in slots {
        left = left.saturating_add(count);
        newest = Some(slot);
        if left >= must_leave {
            return leaves_at(slot, window_us, slot_us);
        }
    }
    // Only when `total` overstates the slots: the newest slot is the safe answer.
    newest.map_or(now_us, |slot| leaves_at(slot, window_us, slot_us))
}

/// One slotted counter in memory: its live slots, oldest first, and their total.
#[derive(Debug, Clone)]
pub(crate) struct Slots {
    slots: VecDeque<(u64, u64)>,
    total: u64,
    slot_us: u64,
    window_us: u64,
}

impl Slots {
    pub(crate) fn new(window_us: u64, slot_us: u64) -> Self {
        Self {
            slots: VecDeque::new(),
            total: 0,
            slot_us: slot_us.max(1),
            window_us,
        }
    }

    /// The weights of an exact log's entries (timestamp and weight, any order) that are still
    /// inside the window at `now_us`, by slot: nothing the log counts is lost.
    pub(crate) fn from_log(
        entries: impl IntoIterator<Item = (u64, u64)>,
        now_us: u64,
        window_us: u64,
        slot_us: u64,
    ) -> Self {
        let mut slots = Self::new(window_us, slot_us);
        let horizon = now_us.saturating_sub(window_us);
        let mut stamps: Vec<(u64, u64)> =
            entries.into_iter().filter(|&(t, _)| t > horizon).collect();
        stamps.sort_unstable();
        for (t, weight) in stamps {
            slots.add(slot_of(t, slots.slot_us), weight);
        }
        slots
    }

    /// Drops the slots no longer counted at `now_us` (under the current window).
    pub(crate) fn trim(&mut self, now_us: u64, window_us: u64) {
        self.window_us = window_us;
        let oldest = oldest_counted(now_us, window_us, self.slot_us);
        while let Some(&(slot, count)) = self.slots.front() {
            if slot >= oldest {
                break;
            }
            self.total = self.total.saturating_sub(count);
            self.slots.pop_front();
        }
    }

    /// Units counted (call [`trim`](Self::trim) first).
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    /// Records one request of `cost` units at `now_us`. In the slot of `now_us`, or in the
    /// oldest live slot if that is later (a clock that stepped back): a later slot is counted
    /// longer, never less.
    pub(crate) fn record(&mut self, now_us: u64, cost: u64) {
        let mut slot = slot_of(now_us, self.slot_us);
        if let Some(&(oldest, _)) = self.slots.front() {
            slot = slot.max(oldest);
        }
        self.add(slot, cost);
    }

    /// Takes back `cost` units recorded at `recorded_us`, from the slot they fell in, if that
    /// slot is still counted and holds them (call [`trim`](Self::trim) first). Returns
    /// whether it did.
    pub(crate) fn release(&mut self, recorded_us: u64, cost: u64) -> bool {
        let slot = slot_of(recorded_us, self.slot_us);
        let Ok(i) = self.slots.binary_search_by_key(&slot, |&(s, _)| s) else {
            return false;
        };
        if self.slots[i].1 < cost {
            return false;
        }
        self.slots[i].1 -= cost;
        if self.slots[i].1 == 0 {
            self.slots.remove(i);
        }
        self.total = self.total.saturating_sub(cost);
        true
    }

    fn add(&mut self, slot: u64, count: u64) {
        match self.slots.binary_search_by_key(&slot, |&(s, _)| s) {
            Ok(i) => self.slots[i].1 = self.slots[i].1.saturating_add(count),
            Err(i) => self.slots.insert(i, (slot, count)),
        }
        self.total = self.total.saturating_add(count);
    }

    /// See [`free_at`].
    pub(crate) fn free_at(&self, now_us: u64, limit: u64, cost: u64) -> u64 {
        free_at(
            self.slots.iter().copied(),
            self.total,
            limit,
            cost,
            now_us,
            self.window_us,
            self.slot_us,
        )
    }

    /// When the newest slot stops being counted (0 when empty).
    pub(crate) fn expires_at(&self) -> u64 {
        self.slots.back().map_or(0, |&(slot, _)| {
            leaves_at(slot, self.window_us, self.slot_us)
        })
    }

    /// The slot length this counter was built with.
    pub(crate) fn slot_us(&self) -> u64 {
        self.slot_us
    }

    /// Live slots held (the memory this counter takes grows with it).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests;
