use super::*;

#[test]
fn opens_after_threshold_and_fails_fast() {
    let b = Breaker::new(3, Duration::from_secs(60));
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
    let b = Breaker::new(2, Duration::from_secs(60));
    b.try_acquire().unwrap().record(false);
    b.try_acquire().unwrap().record(true);
    b.try_acquire().unwrap().record(false);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn half_open_lets_one_probe_through() {
    let b = Breaker::new(1, Duration::from_millis(1));
    b.try_acquire().unwrap().record(false);
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let probe = b.try_acquire().expect("probe");
    assert!(b.try_acquire().is_none(), "only one probe at a time");
    probe.record(false);
    assert_eq!(b.state(), BreakerState::Open);
    std::thread::sleep(Duration::from_millis(5));
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
    let b = Breaker::new(1, Duration::from_millis(1));
    b.try_acquire().unwrap().record(false);
    std::thread::sleep(Duration::from_millis(5));
    drop(b.try_acquire().expect("probe"));
    assert!(b.try_acquire().is_some());
}
