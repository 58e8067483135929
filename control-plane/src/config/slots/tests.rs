use super::*;

#[test]
fn the_default_is_a_sixtieth_of_the_window_when_that_is_whole() {
    for (seconds, slot) in [(3, 50), (60, 1_000), (3_600, 60_000), (86_400, 1_440_000)] {
        assert_eq!(default_precision_ms(seconds), slot, "{seconds} s");
    }
}

#[test]
fn otherwise_the_default_is_the_nearest_valid_slot() {
    // 1000 / 60 = 16.7 ms: 20 ms (50 slots) is nearer than 10 ms (100 slots).
    assert_eq!(default_precision_ms(1), 20);
    // 2000 / 60 = 33.3 ms: 40 ms (50 slots) beats 25 ms (80 slots).
    assert_eq!(default_precision_ms(2), 40);
    // 10000 / 60 = 166.7 ms: 200 ms (50 slots) beats 125 ms (80 slots).
    assert_eq!(default_precision_ms(10), 200);
}

#[test]
fn every_default_is_valid_for_every_window_length() {
    for seconds in 1..=86_400 {
        let slot = default_precision_ms(seconds);
        check_precision(seconds, slot).unwrap_or_else(|e| panic!("{seconds} s: {slot}: {e}"));
        // Nothing valid is nearer to W/60 (compared scaled by 60, in integers).
        let window_ms = seconds * 1_000;
        let distance = |g: u64| (g * DEFAULT_SLOTS).abs_diff(window_ms);
        for slots in MIN_SLOTS..=MAX_SLOTS {
            if window_ms.is_multiple_of(slots) {
                assert!(distance(window_ms / slots) >= distance(slot), "{seconds} s");
            }
        }
    }
}

#[test]
fn precision_bounds() {
    // 60 s = 60000 ms: 10 slots of 6000 ms up to 120 slots of 500 ms.
    for ok in [500, 1_000, 6_000, 750] {
        check_precision(60, ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let err = check_precision(60, 0).unwrap_err();
    assert!(err.starts_with("must be > 0"), "{err}");
    let err = check_precision(60, 7).unwrap_err();
    assert!(
        err.contains("60000 / 7 is not a whole number")
            && err.contains("default")
            && err.contains("1000"),
        "{err}"
    );
    let err = check_precision(60, 400).unwrap_err();
    assert!(
        err.contains("10 to 120 slots, got 150 slots of 400 ms"),
        "{err}"
    );
    let err = check_precision(60, 12_000).unwrap_err();
    assert!(err.contains("got 5 slots of 12000 ms"), "{err}");
    let err = check_precision(60, 120_000).unwrap_err();
    assert!(err.contains("is not a whole number"), "{err}");
}

#[test]
fn precision_ms_is_the_written_one_else_the_default() {
    assert_eq!(precision_ms(60, Some(500)), 500);
    assert_eq!(precision_ms(60, None), 1_000);
}
