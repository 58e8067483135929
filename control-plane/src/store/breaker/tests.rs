use super::*;
use crate::store::ManualClock;

const T0: u64 = 1_700_000_000_000_000;

fn breaker(threshold: u32, cooldown: Duration) -> (Arc<ManualClock>, Breaker) {
    let clock = Arc::new(ManualClock::new(T0));
    (clock.clone(), Breaker::new(threshold, cooldown, clock))
}

#[test]
fn opens_after_threshold_and_fails_fast() {
    let (_clock, b) = breaker(3, Duration::from_secs(60));
    for _ in 0..2 {
        b.try_acquire().unwrap().record(false);
        assert_eq!(b.state(), BreakerState::Closed);
    }
    b.try_acquire().unwrap().record(false);
    assert_eq!(b.state(), BreakerState::Open);
    assert!(b.try_acquire().is_none());
    assert_eq!(b.opened_total(), 1);
}

#[test]
fn success_resets_the_failure_count() {
    let (_clock, b) = breaker(2, Duration::from_secs(60));
    b.try_acquire().unwrap().record(false);
    b.try_acquire().unwrap().record(true);
    b.try_acquire().unwrap().record(false);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn stays_open_for_exactly_the_cooldown() {
    let (clock, b) = breaker(1, Duration::from_millis(500));
    b.try_acquire().unwrap().record(false);
    clock.advance(499_999);
    assert_eq!(b.state(), BreakerState::Open);
    assert!(b.try_acquire().is_none());
    clock.advance(1);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(b.try_acquire().is_some());
}

#[test]
fn half_open_lets_one_probe_through() {
    let (clock, b) = breaker(1, Duration::from_millis(1));
    b.try_acquire().unwrap().record(false);
    clock.advance(1_000);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let probe = b.try_acquire().expect("probe");
    assert!(b.try_acquire().is_none(), "only one probe at a time");
    probe.record(false);
    assert_eq!(b.state(), BreakerState::Open, "a failed probe re-opens");
    assert!(b.try_acquire().is_none());
    clock.advance(1_000);
    let probe = b.try_acquire().expect("probe");
    probe.record(true);
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(b.try_acquire().is_some());
    assert_eq!(
        b.opened_total(),
        1,
        "re-opening from half-open is the same outage"
    );
}

#[test]
fn a_cancelled_probe_frees_the_slot() {
    let (clock, b) = breaker(1, Duration::from_millis(1));
    b.try_acquire().unwrap().record(false);
    clock.advance(1_000);
    drop(b.try_acquire().expect("probe"));
    assert!(b.try_acquire().is_some());
}

#[test]
fn a_clock_at_zero_still_opens() {
    let clock = Arc::new(ManualClock::new(0));
    let b = Breaker::new(1, Duration::ZERO, clock.clone());
    b.try_acquire().unwrap().record(false);
    assert_ne!(b.state(), BreakerState::Closed, "0 must not read as closed");
    assert_eq!(b.opened_total(), 1);
}
