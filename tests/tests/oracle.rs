//! The stores, and the decisions built on them, against an independent exact sliding-window
//! oracle, on every backend (memory, Redis, Redis Cluster).
//!
//! The oracle below is written from the rule alone and shares no code with the product: a
//! request at t is admitted iff every counter that applies has fewer than `limit` admitted
//! entries with timestamps in (t − W, t]; it is then recorded in all of them. Limits and
//! windows may change between requests: entries stay and are judged by the new ones, except
//! that an entry once seen outside its counter's window is gone for good (a later, longer
//! window does not bring it back: a store keeps no more than a window's worth of entries).
//!
//! Timelines are random (proptest): several identities interleaved, bursts in one
//! microsecond, batches, requests exactly W apart, a limit or window change in the middle.
//! The stores run on a manual clock there, Redis included (the script is given the instant);
//! the production path, where Redis reads its own `TIME`, is checked against the oracle fed
//! the instants the store reports.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use control_plane::config::{CompiledConfig, parse_yaml};
use control_plane::decision::Decider;
use control_plane::live_config::{self, SharedConfig};
use control_plane::store::{Clock, CounterSpec, CounterStore, ManualClock, Outcome};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rl_tests::backends::{Backend, BackendKind};
use rl_tests::test_with_all_stores;
use rl_wire::{CounterReport, DecisionRequest, Verdict};

const SECOND: u64 = 1_000_000;

/// One counter of the oracle.
#[derive(Debug, Clone)]
struct OracleCounter {
    limit: u64,
    window: u64,
    admitted: Vec<u64>,
    /// Entries at or before this instant have been seen outside the window.
    forgotten_up_to: u64,
}

impl OracleCounter {
    fn new(limit: u64, window: u64) -> Self {
        Self {
            limit,
            window,
            admitted: Vec::new(),
            forgotten_up_to: 0,
        }
    }

    /// The entries counted at `t`, oldest first.
    fn inside(&self, t: u64) -> Vec<u64> {
        let mut inside: Vec<u64> = self
            .admitted
            .iter()
            .copied()
            .filter(|&a| a <= t && t - a < self.window && a > self.forgotten_up_to)
            .collect();
        inside.sort_unstable();
        inside
    }

    fn has_room(&self, t: u64) -> bool {
        (self.inside(t).len() as u64) < self.limit
    }

    /// A request looked at this counter at `t`.
    fn looked_at(&mut self, t: u64) {
        self.forgotten_up_to = self.forgotten_up_to.max(t.saturating_sub(self.window));
    }

    /// (count, free_at) as the stores report them: the moment the counter has room again
    /// (for a full one), else when its oldest entry leaves; `t` when empty.
    fn state(&self, t: u64) -> (u64, u64) {
        let inside = self.inside(t);
        let count = inside.len() as u64;
        let index = count.saturating_sub(self.limit) as usize;
        (count, inside.get(index).map_or(t, |&a| a + self.window))
    }
}

/// One request through the oracle: whether it is admitted, and every counter's state after.
fn oracle_step(counters: &mut [&mut OracleCounter], t: u64) -> (bool, Vec<(u64, u64)>) {
    let admitted = counters.iter().all(|c| c.has_room(t));
    for c in counters.iter_mut() {
        if admitted {
            c.admitted.push(t);
        }
        c.looked_at(t);
    }
    (admitted, counters.iter().map(|c| c.state(t)).collect())
}

/// The earliest instant from `t` on at which a request needing all of `counters` passes,
/// found by trying every instant at which an entry leaves.
fn earliest_admission(counters: &[&OracleCounter], t: u64) -> u64 {
    let mut candidates: Vec<u64> = counters
        .iter()
        .flat_map(|c| c.inside(t).into_iter().map(move |a| a + c.window))
        .chain([t])
        .collect();
    candidates.sort_unstable();
    candidates
        .into_iter()
        .find(|&at| counters.iter().all(|c| c.has_room(at)))
        .expect("every entry leaves eventually")
}

fn would_admit(counters: &[&OracleCounter], at: u64) -> bool {
    counters.iter().all(|c| c.has_room(at))
}

/// Manual clocks start at the real time, so instants are on the Unix-epoch scale as in
/// production (16-digit µs timestamps through the script's number formatting).
fn real_now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Proptest cases per scenario: every case on Redis is a few dozen round trips.
fn runner(backend: &Backend) -> TestRunner {
    let cases = match backend.kind() {
        BackendKind::Memory => 256,
        BackendKind::Redis | BackendKind::RedisCluster => 128,
    };
    TestRunner::new(Config {
        cases,
        ..Config::default()
    })
}

const WINDOW: u64 = 10 * SECOND;

fn gap() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(0u64),
        1 => Just(1),
        2 => Just(WINDOW - 1),
        2 => Just(WINDOW),
        1 => Just(WINDOW + 1),
        4 => 0..WINDOW / 3,
        1 => 0..3 * WINDOW,
    ]
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    budget: u64,
    rule: u64,
}

/// The rule's limit never exceeds the budget (the configuration enforces it).
fn limits() -> impl Strategy<Value = Limits> {
    (1u64..=5)
        .prop_flat_map(|budget| (Just(budget), 1..=budget))
        .prop_map(|(budget, rule)| Limits { budget, rule })
}

/// One request: whose, and whether the endpoint rule applies besides the budget.
#[derive(Debug, Clone, Copy)]
struct Call {
    who: usize,
    with_rule: bool,
}

/// Requests at one instant, `gap` µs after the previous step: one goes alone, several go
/// as one batch, in order.
#[derive(Debug, Clone)]
struct Step {
    gap: u64,
    calls: Vec<Call>,
}

/// New limits for every identity and a new window, in force from step `at` on.
#[derive(Debug, Clone)]
struct Change {
    at: usize,
    limits: Vec<Limits>,
    window: u64,
}

#[derive(Debug, Clone)]
struct Timeline {
    limits: Vec<Limits>,
    steps: Vec<Step>,
    change: Option<Change>,
}

fn step(identities: usize) -> impl Strategy<Value = Step> {
    let call = (0..identities, any::<bool>()).prop_map(|(who, with_rule)| Call { who, with_rule });
    let size = prop_oneof![3 => Just(1usize), 1 => 2usize..=4];
    (gap(), size)
        .prop_flat_map(move |(gap, size)| (Just(gap), prop::collection::vec(call.clone(), size)))
        .prop_map(|(gap, calls)| Step { gap, calls })
}

/// Windows after a change: shorter, the same (only limits change), longer.
fn new_window() -> impl Strategy<Value = u64> {
    prop_oneof![Just(4 * SECOND), Just(WINDOW), Just(25 * SECOND)]
}

fn timeline(with_change: bool) -> impl Strategy<Value = Timeline> {
    (1usize..=3).prop_flat_map(move |identities| {
        let change = if with_change {
            (
                any::<prop::sample::Index>(),
                prop::collection::vec(limits(), identities),
                new_window(),
            )
                .prop_map(Some)
                .boxed()
        } else {
            Just(None).boxed()
        };
        (
            prop::collection::vec(limits(), identities),
            prop::collection::vec(step(identities), 1..40),
            change,
        )
            .prop_map(|(limits, steps, change)| Timeline {
                change: change.map(|(at, limits, window)| Change {
                    at: at.index(steps.len()),
                    limits,
                    window,
                }),
                limits,
                steps,
            })
    })
}

/// The oracle's counters of one identity.
struct Who {
    budget: OracleCounter,
    rule: OracleCounter,
}

impl Who {
    fn new(limits: Limits, window: u64) -> Self {
        Self {
            budget: OracleCounter::new(limits.budget, window),
            rule: OracleCounter::new(limits.rule, window),
        }
    }

    fn change(&mut self, limits: Limits, window: u64) {
        (self.budget.limit, self.budget.window) = (limits.budget, window);
        (self.rule.limit, self.rule.window) = (limits.rule, window);
    }

    fn step(&mut self, with_rule: bool, t: u64) -> (bool, Vec<(u64, u64)>) {
        if with_rule {
            oracle_step(&mut [&mut self.budget, &mut self.rule], t)
        } else {
            oracle_step(&mut [&mut self.budget], t)
        }
    }

    fn specs(&self, tag: &str, with_rule: bool) -> Vec<CounterSpec> {
        let spec = |key: String, c: &OracleCounter| CounterSpec {
            key,
            limit: c.limit,
            window_us: c.window,
        };
        let mut specs = vec![spec(format!("rl:{{{tag}}}:b"), &self.budget)];
        if with_rule {
            specs.push(spec(format!("rl:{{{tag}}}:e:/r"), &self.rule));
        }
        specs
    }
}

/// Replays a timeline through `store` on `clock` and compares every outcome with the oracle.
fn replay(
    tl: &Timeline,
    store: &dyn CounterStore,
    clock: &ManualClock,
    rt: &tokio::runtime::Runtime,
    case: u64,
) -> Result<(), TestCaseError> {
    let tags: Vec<String> = (0..tl.limits.len())
        .map(|i| format!("case-{case}-id-{i}"))
        .collect();
    let mut oracle: Vec<Who> = tl.limits.iter().map(|&l| Who::new(l, WINDOW)).collect();
    let mut t = clock.now_us();
    for (i, step) in tl.steps.iter().enumerate() {
        if let Some(change) = tl.change.as_ref().filter(|c| c.at == i) {
            for (who, &limits) in oracle.iter_mut().zip(&change.limits) {
                who.change(limits, change.window);
            }
        }
        t += step.gap;
        clock.set(t);
        let specs: Vec<Vec<CounterSpec>> = step
            .calls
            .iter()
            .map(|c| oracle[c.who].specs(&tags[c.who], c.with_rule))
            .collect();
        let outcomes: Vec<Outcome> = if specs.len() == 1 {
            vec![
                rt.block_on(store.check_and_record(&tags[step.calls[0].who], &specs[0]))
                    .map_err(|e| TestCaseError::fail(format!("step {i}: {e}")))?,
            ]
        } else {
            let calls: Vec<(&str, &[CounterSpec])> = step
                .calls
                .iter()
                .zip(&specs)
                .map(|(c, s)| (tags[c.who].as_str(), s.as_slice()))
                .collect();
            rt.block_on(store.check_and_record_many(&calls))
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(|e| TestCaseError::fail(format!("step {i}: {e}")))?
        };
        for (j, (call, got)) in step.calls.iter().zip(outcomes).enumerate() {
            let (admitted, states) = oracle[call.who].step(call.with_rule, t);
            prop_assert_eq!(got.now_us, t, "step {} call {}", i, j);
            prop_assert_eq!(got.admitted, admitted, "step {} call {} ({:?})", i, j, call);
            let got_states: Vec<(u64, u64)> = got
                .counters
                .iter()
                .map(|c| (c.count, c.free_at_us))
                .collect();
            prop_assert_eq!(got_states, states, "step {} call {} ({:?})", i, j, call);
        }
    }
    Ok(())
}

fn run_timelines(backend: &Backend, with_change: bool) {
    let rt = runtime();
    let _entered = rt.enter();
    let clock = Arc::new(ManualClock::new(real_now_us()));
    // One Redis store for all cases (fresh keys per case); a fresh memory store per case.
    // The clock runs on from case to case.
    let shared =
        (backend.kind() != BackendKind::Memory).then(|| backend.store_with_clock(clock.clone()));
    let case = Cell::new(0);
    runner(backend)
        .run(&timeline(with_change), |tl| {
            case.set(case.get() + 1);
            let store = shared
                .clone()
                .unwrap_or_else(|| backend.store_with_clock(clock.clone()));
            replay(&tl, store.as_ref(), &clock, &rt, case.get())
        })
        .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
}

test_with_all_stores!(
    blocking: random_timelines_match_the_oracle,
    a_limit_or_window_change_mid_timeline_matches_the_oracle,
    retry_after_and_reset_match_the_oracle,
);

test_with_all_stores!(
    the_production_clock_matches_the_oracle,
    a_denial_after_a_lowered_limit_names_when_the_counter_has_room_again,
);

/// Interleaved identities, bursts, batches, exact boundaries.
fn random_timelines_match_the_oracle(backend: &Backend) {
    run_timelines(backend, false);
}

/// The same with new limits and a new window for every identity at a random step.
fn a_limit_or_window_change_mid_timeline_matches_the_oracle(backend: &Backend) {
    run_timelines(backend, true);
}

/// A tiny deterministic generator (xorshift), so a failure replays.
fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// The production path: no clock is given, so Redis reads its own `TIME` inside the script
/// (in memory: the monotonic clock). The oracle judges each request at the instant the store
/// reports. Windows of tens of µs to a few ms are crossed by the calls' own latency, so no
/// test sleeps; half-way through, every limit is lowered.
async fn the_production_clock_matches_the_oracle(backend: &Backend) {
    let store = backend.store();
    let mut rng = xorshift(7);
    let windows = [40, 400, 4_000];
    let mut oracle: Vec<Who> = (0..3)
        .map(|i| {
            let limits = Limits {
                budget: rng() % 4 + 2,
                rule: rng() % 2 + 1,
            };
            Who::new(limits, windows[i])
        })
        .collect();
    let tags: Vec<String> = (0..3).map(|i| format!("live-{i}")).collect();
    let mut last = [0u64; 3];
    let steps = 900;
    for step in 0..steps {
        if step == steps / 2 {
            for (who, window) in oracle.iter_mut().zip(windows) {
                let lowered = Limits {
                    budget: who.budget.limit - 1,
                    rule: 1,
                };
                who.change(lowered, window);
            }
        }
        let who = (rng() % 3) as usize;
        let with_rule = rng().is_multiple_of(3);
        let specs = oracle[who].specs(&tags[who], with_rule);
        let got = store
            .check_and_record(&tags[who], &specs)
            .await
            .unwrap_or_else(|e| panic!("{}: step {step}: {e}", backend.name()));
        assert!(
            got.now_us >= last[who],
            "{}: the store's clock went backwards",
            backend.name()
        );
        last[who] = got.now_us;
        let (admitted, states) = oracle[who].step(with_rule, got.now_us);
        let got_states: Vec<(u64, u64)> = got
            .counters
            .iter()
            .map(|c| (c.count, c.free_at_us))
            .collect();
        assert_eq!(
            (got.admitted, got_states),
            (admitted, states),
            "{}: step {step}, identity {who}, at {}",
            backend.name(),
            got.now_us
        );
    }
}

// ---- Decisions: what the client is told (limit, remaining, Retry-After, Reset) ----

fn config(limits: Limits, window_seconds: u64) -> CompiledConfig {
    let yaml = format!(
        "default_tier: t\ntiers:\n  - name: t\n    requests_per_window: {}\n    \
         window_size_seconds: {window_seconds}\n    endpoints:\n      /r: {}\n",
        limits.budget, limits.rule
    );
    CompiledConfig::compile(parse_yaml(&yaml).expect("yaml")).expect("valid config")
}

fn request(ip: &str, path: &str) -> DecisionRequest {
    DecisionRequest {
        ip: ip.into(),
        method: "GET".into(),
        path: path.into(),
        ..Default::default()
    }
}

fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(SECOND)
}

/// Checks one answer against the oracle's counters of the request (already stepped).
fn check_answer(
    counters: &[&OracleCounter],
    admitted: bool,
    t: u64,
    verdict: Verdict,
    report: Option<&CounterReport>,
    window_seconds: u64,
) -> Result<(), TestCaseError> {
    let report = report.ok_or_else(|| TestCaseError::fail("no counter in the answer"))?;
    prop_assert_eq!(report.window, window_seconds);
    let remaining = |c: &OracleCounter| c.limit.saturating_sub(c.inside(t).len() as u64);
    if admitted {
        prop_assert_eq!(verdict, Verdict::Allow);
        prop_assert_eq!(report.retry_after, None);
        // The counter with the least remaining (ties: the lower limit) is described.
        let least = counters
            .iter()
            .map(|c| (remaining(c), c.limit))
            .min()
            .expect("a counter");
        prop_assert_eq!((report.remaining, report.limit), least);
        let resets: Vec<u64> = counters
            .iter()
            .filter(|c| (remaining(c), c.limit) == least)
            .map(|c| ceil_secs(c.inside(t)[0] + c.window))
            .collect();
        prop_assert!(
            resets.contains(&report.reset),
            "reset {} is not when the described counter's oldest entry leaves ({:?})",
            report.reset,
            resets
        );
        prop_assert!(report.reset * SECOND > t);
        prop_assert!(report.reset <= ceil_secs(t + window_seconds * SECOND));
        return Ok(());
    }
    prop_assert_eq!(verdict, Verdict::Deny);
    prop_assert_eq!(report.remaining, 0);
    let lowest_full_limit = counters
        .iter()
        .filter(|c| !c.has_room(t))
        .map(|c| c.limit)
        .min();
    prop_assert_eq!(Some(report.limit), lowest_full_limit);
    let free_at = earliest_admission(counters, t);
    let retry_after = report
        .retry_after
        .ok_or_else(|| TestCaseError::fail("a deny without Retry-After"))?;
    prop_assert!(retry_after >= 1);
    // Retry-After is the wait until the counter really has room, rounded up; Reset is that
    // instant, rounded up to a Unix second; both within one window.
    prop_assert_eq!(
        retry_after,
        ceil_secs(free_at - t),
        "free at +{} µs",
        free_at - t
    );
    prop_assert_eq!(report.reset, ceil_secs(free_at));
    prop_assert!(retry_after <= window_seconds);
    prop_assert!(report.reset <= ceil_secs(t + window_seconds * SECOND));
    prop_assert!(
        (report.reset * SECOND).abs_diff(t + retry_after * SECOND) < SECOND,
        "Reset {} and Retry-After {} round different instants (now {} µs)",
        report.reset,
        retry_after,
        t
    );
    // Waiting as told is enough, and not longer than needed.
    prop_assert!(would_admit(counters, t + retry_after * SECOND));
    prop_assert!(would_admit(counters, report.reset * SECOND));
    if retry_after > 1 {
        prop_assert!(!would_admit(counters, t + (retry_after - 1) * SECOND));
    }
    if (report.reset - 1) * SECOND >= t {
        prop_assert!(!would_admit(counters, (report.reset - 1) * SECOND));
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct DecisionTimeline {
    limits: Limits,
    window_seconds: u64,
    /// (gap µs, requests at that instant: (ip index, to the rule's path?)).
    steps: Vec<(u64, Vec<(usize, bool)>)>,
    /// New limits and window from step `at` on.
    change: (usize, Limits, u64),
}

fn decision_timeline() -> impl Strategy<Value = DecisionTimeline> {
    let window = prop_oneof![Just(1u64), Just(2), Just(5)];
    let gap = prop_oneof![
        2 => Just(0u64),
        1 => Just(1),
        3 => 0..2 * SECOND,
        1 => 0..12 * SECOND,
    ];
    let requests = prop::collection::vec((0..3usize, any::<bool>()), 1..=3);
    (
        limits(),
        window.clone(),
        prop::collection::vec((gap, requests), 1..40),
        (any::<prop::sample::Index>(), limits(), window),
    )
        .prop_map(
            |(limits, window_seconds, steps, (at, new_limits, new_window))| DecisionTimeline {
                limits,
                window_seconds,
                change: (at.index(steps.len()), new_limits, new_window),
                steps,
            },
        )
}

/// Every answer's limit, remaining, Retry-After and Reset against the oracle, on random
/// timelines of three clients with a change of limits and window (often a lowered limit:
/// entries above the new limit) in the middle. Several requests at one instant go as a batch.
fn retry_after_and_reset_match_the_oracle(backend: &Backend) {
    let rt = runtime();
    let _entered = rt.enter();
    let clock = Arc::new(ManualClock::new(real_now_us()));
    let shared =
        (backend.kind() != BackendKind::Memory).then(|| backend.store_with_clock(clock.clone()));
    let case = Cell::new(0u64);
    runner(backend)
        .run(&decision_timeline(), |tl| {
            case.set(case.get() + 1);
            let case = case.get();
            let store = shared
                .clone()
                .unwrap_or_else(|| backend.store_with_clock(clock.clone()));
            let live: SharedConfig = live_config::shared(config(tl.limits, tl.window_seconds));
            let decider = Decider::new(live.clone(), store, clock.clone());
            let ips: Vec<String> = (0..3)
                .map(|i| format!("10.{}.{}.{}", case / 256 % 256, case % 256, i + 1))
                .collect();
            let mut window_seconds = tl.window_seconds;
            let mut oracle: Vec<Who> = (0..3)
                .map(|_| Who::new(tl.limits, window_seconds * SECOND))
                .collect();
            let mut t = clock.now_us();
            for (i, (gap, requests)) in tl.steps.iter().enumerate() {
                let (at, new_limits, new_window) = tl.change;
                if i == at {
                    live.store(Arc::new(config(new_limits, new_window)));
                    window_seconds = new_window;
                    for who in &mut oracle {
                        who.change(new_limits, new_window * SECOND);
                    }
                }
                t += gap;
                clock.set(t);
                let batch: Vec<DecisionRequest> = requests
                    .iter()
                    .map(|&(who, to_rule)| {
                        request(&ips[who], if to_rule { "/r" } else { "/other" })
                    })
                    .collect();
                let decisions = if batch.len() == 1 {
                    vec![rt.block_on(decider.decide(&batch[0]))]
                } else {
                    rt.block_on(decider.decide_batch(&batch))
                };
                for (&(who, to_rule), decision) in requests.iter().zip(decisions) {
                    let answer = decision.response;
                    let (admitted, _) = oracle[who].step(to_rule, t);
                    let who = &oracle[who];
                    let counters: Vec<&OracleCounter> = if to_rule {
                        vec![&who.budget, &who.rule]
                    } else {
                        vec![&who.budget]
                    };
                    check_answer(
                        &counters,
                        admitted,
                        t,
                        answer.verdict,
                        answer.counter.as_ref(),
                        window_seconds,
                    )
                    .map_err(|e| TestCaseError::fail(format!("step {i}: {e} ({answer:?})")))?;
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
}

/// Five requests one second apart under a budget of 5 in 10 s, then the budget drops to 2:
/// the denial names the moment four entries have left (not the oldest one), and that moment
/// is exact.
async fn a_denial_after_a_lowered_limit_names_when_the_counter_has_room_again(backend: &Backend) {
    // A quarter past a whole second: Reset (whole seconds) and Retry-After (from now) round
    // differently.
    let start = real_now_us().div_ceil(SECOND) * SECOND + SECOND / 4;
    let clock = Arc::new(ManualClock::new(start));
    let store = backend.store_with_clock(clock.clone());
    let at = |limits| config(limits, 10);
    let live = live_config::shared(at(Limits { budget: 5, rule: 5 }));
    let decider = Decider::new(live.clone(), store, clock.clone());
    let decide = async || {
        decider
            .decide(&request("10.0.0.1", "/other"))
            .await
            .response
    };
    for i in 0..5 {
        clock.set(start + i * SECOND);
        assert_eq!(decide().await.verdict, Verdict::Allow, "{}", backend.name());
    }
    live.store(Arc::new(at(Limits { budget: 2, rule: 2 })));
    clock.set(start + 5 * SECOND);
    let denied = decide().await;
    assert_eq!(denied.verdict, Verdict::Deny, "{}", backend.name());
    let report = denied.counter.expect("counter");
    let room_at = start + 3 * SECOND + 10 * SECOND;
    assert_eq!(
        (report.limit, report.remaining, report.retry_after),
        (2, 0, Some(8)),
        "{}: four entries must leave, the fourth at +13 s",
        backend.name()
    );
    assert_eq!(report.reset, ceil_secs(room_at));

    clock.set(room_at - 1);
    let last_moment = decide().await;
    assert_eq!(last_moment.verdict, Verdict::Deny, "{}", backend.name());
    let report = last_moment.counter.expect("counter");
    assert_eq!(
        (report.retry_after, report.reset),
        (Some(1), ceil_secs(room_at))
    );

    clock.set(room_at);
    let allowed = decide().await;
    assert_eq!(allowed.verdict, Verdict::Allow, "{}", backend.name());
    let report = allowed.counter.expect("counter");
    assert_eq!((report.limit, report.remaining), (2, 0));
    assert_eq!(
        report.reset,
        ceil_secs(start + 4 * SECOND + 10 * SECOND),
        "the oldest entry left is the fifth"
    );
}
