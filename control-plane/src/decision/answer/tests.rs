use super::*;
use crate::config::Window;
use crate::decision::budget_spec;

#[test]
fn ties_go_to_the_lower_limit_then_to_the_longer_wait() {
    let window = |limit, seconds, policy: &str| Window {
        limit,
        length: std::time::Duration::from_secs(seconds),
        shadow: false,
        policy: policy.into(),
        algorithm: crate::store::Algorithm::Exact,
    };
    let windows = [
        window(10, 1, "t-1s"),
        window(10, 60, "t-60s"),
        window(20, 600, "t-600s"),
    ];
    let applied: Vec<Applied<'_>> = windows
        .iter()
        .map(|w| Applied {
            spec: budget_spec("ip:10.0.0.1", w),
            window: w,
            rule: None,
        })
        .collect();
    let state = |count, free_at_us| CounterState {
        count,
        free_at_us,
        full: false,
    };
    let pick = |states: [CounterState; 3]| {
        let judged: Vec<Judged<'_, '_>> = applied.iter().zip(states.iter()).collect();
        binding(&judged).unwrap().0.window.policy.clone()
    };
    // Least remaining wins (1, 5, 19 left).
    assert_eq!(pick([state(9, 5), state(5, 6), state(1, 7)]), "t-1s");
    // Equal remaining (5, 1, 1): the lower limit.
    assert_eq!(pick([state(5, 5), state(9, 6), state(19, 7)]), "t-60s");
    // Equal remaining and limit (5, 5, 20): the longer wait.
    assert_eq!(pick([state(5, 9), state(5, 6), state(0, 7)]), "t-1s");
    assert_eq!(pick([state(5, 5), state(5, 6), state(0, 7)]), "t-60s");
    // All equal: the first in configuration order.
    assert_eq!(pick([state(5, 6), state(5, 6), state(0, 7)]), "t-1s");
}
