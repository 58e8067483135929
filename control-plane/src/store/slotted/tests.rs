use super::*;

const G: u64 = 1_000;
const W: u64 = 10 * G;

#[test]
fn slots_are_absolute_on_the_clock() {
    assert_eq!(slot_of(0, G), 0);
    assert_eq!(slot_of(G - 1, G), 0);
    assert_eq!(slot_of(G, G), 1);
    assert_eq!(slot_of(1_733_000_000_123_456, 1_000), 1_733_000_000_123);
    // A zero slot length is not a valid configuration; it must still not divide by zero.
    assert_eq!(slot_of(5, 0), 5);
}

#[test]
fn the_oldest_counted_slot_holds_now_minus_the_window() {
    // At t = 25 G − 1 the window is (15 G − 1, 25 G − 1]: slot 14 still overlaps it.
    assert_eq!(oldest_counted(25 * G - 1, W, G), 14);
    // At t = 25 G the window is (15 G, 25 G]: slot 15 is counted whole although 15 G is out.
    assert_eq!(oldest_counted(25 * G, W, G), 15);
    assert_eq!(
        oldest_counted(W / 2, W, G),
        0,
        "before the epoch's first window"
    );
}

#[test]
fn a_slot_leaves_once_the_oldest_counted_slot_is_past_it() {
    for slot in [0, 7, 1_733_000_000] {
        let at = leaves_at(slot, W, G);
        assert_eq!(oldest_counted(at - 1, W, G), slot);
        assert_eq!(oldest_counted(at, W, G), slot + 1);
    }
    assert_eq!(
        leaves_at(u64::MAX, W, G),
        u64::MAX,
        "saturates, never wraps"
    );
}

#[test]
fn free_at_is_when_enough_requests_have_left() {
    let slots = [(3, 2), (5, 1), (9, 4)];
    // Not full: the oldest slot's requests leave first.
    assert_eq!(free_at(slots, 7, 8, 1, 0, W, G), leaves_at(3, W, G));
    // Exactly full: one request must leave, the oldest slot's.
    assert_eq!(free_at(slots, 7, 7, 1, 0, W, G), leaves_at(3, W, G));
    // Three over the limit of 4: four must leave, the first two slots hold three.
    assert_eq!(free_at(slots, 7, 4, 1, 0, W, G), leaves_at(9, W, G));
    assert_eq!(free_at(slots, 7, 5, 1, 0, W, G), leaves_at(5, W, G));
    assert_eq!(free_at([], 0, 5, 1, 42, W, G), 42, "empty: now");
    // A total larger than the slots (never kept so): the newest slot.
    assert_eq!(free_at([(3, 1)], 9, 1, 1, 0, W, G), leaves_at(3, W, G));
}

#[test]
fn free_at_waits_for_the_units_a_request_costs() {
    let slots = [(3, 2), (5, 1), (9, 4)];
    // 7 of 10 held: a cost of 3 fits, so the oldest slot is what leaves next.
    assert_eq!(free_at(slots, 7, 10, 3, 0, W, G), leaves_at(3, W, G));
    // A cost of 5 needs 2 units out: the oldest slot's two.
    assert_eq!(free_at(slots, 7, 10, 5, 0, W, G), leaves_at(3, W, G));
    // A cost of 6 needs 3: slot 5's as well.
    assert_eq!(free_at(slots, 7, 10, 6, 0, W, G), leaves_at(5, W, G));
    // Recorded with its weight, in one slot.
    let mut counter = Slots::new(W, G);
    counter.record(0, 5);
    counter.record(G, 1);
    assert_eq!((counter.count(), counter.len()), (6, 2));
    assert_eq!(counter.free_at(G, 8, 3), leaves_at(0, W, G));
    // An exact log's weights carry over.
    let converted = Slots::from_log([(G, 4), (2 * G, 2)], 2 * G, W, G);
    assert_eq!(converted.count(), 6);
}

#[test]
fn a_counter_counts_its_live_slots_and_drops_the_rest() {
    let mut slots = Slots::new(W, G);
    for t in [0, 10, G, 2 * G + 5, 2 * G + 6] {
        slots.record(t, 1);
    }
    assert_eq!((slots.count(), slots.len()), (5, 3));
    // Slot 0 is counted until W + G.
    slots.trim(W + G - 1, W);
    assert_eq!(slots.count(), 5);
    slots.trim(W + G, W);
    assert_eq!(slots.count(), 3);
    assert_eq!(slots.free_at(W + G, 3, 1), leaves_at(1, W, G));
    assert_eq!(slots.free_at(W + G, 1, 1), leaves_at(2, W, G));
    assert_eq!(slots.expires_at(), leaves_at(2, W, G));
    slots.trim(leaves_at(2, W, G), W);
    assert_eq!((slots.count(), slots.len()), (0, 0));
    assert_eq!(slots.expires_at(), 0);
}

#[test]
fn memory_is_bounded_by_the_slots_of_a_window() {
    let mut slots = Slots::new(W, G);
    let mut t = 5 * W;
    for _ in 0..100_000 {
        slots.trim(t, W);
        slots.record(t, 1);
        t += 37;
        assert!(slots.len() as u64 <= W / G + 1);
    }
}

#[test]
fn a_clock_that_steps_back_records_in_the_oldest_live_slot() {
    let mut slots = Slots::new(W, G);
    slots.record(20 * G, 1);
    slots.record(3 * G, 1);
    assert_eq!(
        slots.len(),
        1,
        "not in an earlier slot, which would leave sooner"
    );
    assert_eq!(slots.free_at(20 * G, 1, 1), leaves_at(20, W, G));
}

#[test]
fn an_exact_log_converts_without_losing_a_counted_request() {
    let now = 30 * G + 500;
    // now − W = 20 G + 500: the entry at it has left the exact window, the ones after stay.
    let entries = [
        20 * G + 499,
        20 * G + 500,
        20 * G + 501,
        25 * G,
        30 * G,
        25 * G + 1,
    ];
    let slots = Slots::from_log(entries.map(|t| (t, 1)), now, W, G);
    assert_eq!(slots.count(), 4);
    assert_eq!(slots.len(), 3);
    assert_eq!(slots.free_at(now, 4, 1), leaves_at(20, W, G));
    assert_eq!(slots.free_at(now, 2, 1), leaves_at(25, W, G));
}

#[test]
fn counts_up_to_the_largest_slotted_limit_do_not_overflow() {
    let max = u64::from(u32::MAX);
    let mut slots = Slots::new(W, G);
    slots.add(7, max - 1);
    slots.record(7 * G, 1);
    assert_eq!(slots.count(), max);
    assert_eq!(slots.free_at(7 * G, max, 1), leaves_at(7, W, G));
    slots.add(8, u64::MAX);
    assert_eq!(slots.count(), u64::MAX, "saturates");
    slots.trim(leaves_at(7, W, G), W);
    assert_eq!(slots.count(), u64::MAX - max);
}
