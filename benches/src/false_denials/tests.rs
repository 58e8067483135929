use super::*;

#[test]
fn the_exact_rule_counts_the_half_open_window() {
    let mut history: VecDeque<u64> = [0, 10, 20].into();
    // (10, 25]: the request at 10 has left, the one at 20 has not.
    assert_eq!(in_window(&mut history, 25, 15), 1);
    assert_eq!(history, [20]);
    assert_eq!(in_window(&mut history, 34, 15), 1);
    assert_eq!(in_window(&mut history, 35, 15), 0);
}

#[test]
fn arrivals_are_ordered_bounded_and_at_the_rate() {
    let times = arrivals(
        42,
        1_000,
        1_000 + 10_000 * SECOND_US,
        1.0 / SECOND_US as f64,
    );
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert!(
        times
            .iter()
            .all(|&t| (1_000..1_000 + 10_000 * SECOND_US).contains(&t))
    );
    // 10,000 expected; a Poisson count's standard deviation is 100.
    assert!((9_500..=10_500).contains(&times.len()), "{}", times.len());
    assert_eq!(
        times,
        arrivals(
            42,
            1_000,
            1_000 + 10_000 * SECOND_US,
            1.0 / SECOND_US as f64
        )
    );
}

fn scenario(slots: u64, load: f64) -> Scenario {
    Scenario {
        limit: 100,
        window_seconds: 60,
        slots,
        load,
    }
}

#[tokio::test]
async fn slotted_counters_never_exceed_the_limit_and_deny_early_only_sometimes() {
    for load in [0.5, 1.0, 3.0] {
        let tally = run(scenario(10, load), 7, 20).await.expect("runs");
        assert!(tally.max_admitted_in_window <= 100, "{load}: {tally:?}");
        assert!(
            tally.false_denied <= tally.slotted_denied,
            "{load}: {tally:?}"
        );
        assert!(tally.requests > 0, "{load}: {tally:?}");
    }
    // At three times the limit the exact rule admits about a third; coarse slots deny some
    // requests it would admit.
    let tally = run(scenario(10, 3.0), 7, 20).await.expect("runs");
    let exact = Tally::share(tally.exact_denied, tally.requests);
    assert!((0.6..0.72).contains(&exact), "{exact}: {tally:?}");
    assert!(tally.false_denied > 0, "{tally:?}");
}

#[tokio::test]
async fn a_window_that_is_not_whole_slots_is_refused() {
    let err = run(scenario(7, 1.0), 1, 1)
        .await
        .expect_err("60 s in 7 slots");
    assert!(err.contains("whole number of slots"), "{err}");
}
