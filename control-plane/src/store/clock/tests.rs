use super::*;

#[test]
fn monotonic_clock_is_near_wall_clock_and_never_decreases() {
    let clock = MonotonicClock::new();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let a = clock.now_us();
    let b = clock.now_us();
    assert!(b >= a);
    assert!(a.abs_diff(wall) < 5_000_000);
}

#[test]
fn manual_clock_moves_only_when_told() {
    let clock = ManualClock::new(10);
    assert_eq!(clock.now_us(), 10);
    clock.advance(5);
    assert_eq!(clock.now_us(), 15);
    clock.set(100);
    assert_eq!(clock.now_us(), 100);
}
