//! The stores, and the decisions built on them, against an independent exact sliding-window
//! oracle, on every backend (memory, Redis, Redis Cluster).
//!
//! The oracle below is written from the rule alone and shares no code with the product: a
//! request at t is admitted iff every enforced counter that applies has fewer than `limit`
//! admitted entries with timestamps in (t − W, t]; it is then recorded in every enforced
//! counter, and in every shadow counter that has room (a shadow counter refuses nothing and
//! never holds more than its limit). A request sees several counters: each window of its
//! identity's budget and, when the endpoint rule applies, each window of the rule. Limits and
//! windows may change between requests: entries stay and are judged by the new ones, except
//! that an entry once seen outside its counter's window is gone for good (a later, longer
//! window does not bring it back: a store keeps no more than a window's worth of entries).
//!
//! Timelines are random (proptest): several identities interleaved, bursts in one
//! microsecond, batches, requests exactly W apart, a limit or window change in the middle.
//! The stores run on a manual clock there, Redis included (the script is given the instant);
//! the production path, where Redis reads its own `TIME`, is checked against the oracle fed
//! the instants the store reports.
//!
//! Slotted counters (at the end) are checked against a slot model of their own and, on their
//! own history, against the exact rule's bound.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use control_plane::config::{CompiledConfig, parse_yaml};
use control_plane::decision::Decider;
use control_plane::live_config::{self, SharedConfig};
use control_plane::store::{Algorithm, Clock, CounterSpec, CounterStore, ManualClock, Outcome};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rl_tests::backends::{Backend, BackendKind};
use rl_tests::test_with_all_stores;
use rl_wire::{DecisionResponse, Verdict};

const SECOND: u64 = 1_000_000;

/// One counter of the oracle.
#[derive(Debug, Clone)]
struct OracleCounter {
    limit: u64,
    window: u64,
    shadow: bool,
    admitted: Vec<u64>,
    /// Entries at or before this instant have been seen outside the window.
    forgotten_up_to: u64,
}

impl OracleCounter {
    fn new(limit: u64, window: u64, shadow: bool) -> Self {
        Self {
            limit,
            window,
            shadow,
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

/// A counter's state after a request: (count, free_at, full before the request).
type State = (u64, u64, bool);

/// One request through the oracle: whether it is admitted, and every counter's state after.
fn oracle_step(counters: &mut [&mut OracleCounter], t: u64) -> (bool, Vec<State>) {
    let full: Vec<bool> = counters.iter().map(|c| !c.has_room(t)).collect();
    let admitted = counters
        .iter()
        .zip(&full)
        .all(|(c, &full)| c.shadow || !full);
    for (c, &full) in counters.iter_mut().zip(&full) {
        if admitted && !full {
            c.admitted.push(t);
        }
        c.looked_at(t);
    }
    let states = counters
        .iter()
        .zip(&full)
        .map(|(c, &full)| {
            let (count, free_at) = c.state(t);
            (count, free_at, full)
        })
        .collect();
    (admitted, states)
}

/// Whether a request needing all of `counters` passes at `at` (shadow counters refuse
/// nothing).
fn would_admit(counters: &[&OracleCounter], at: u64) -> bool {
    counters.iter().all(|c| c.shadow || c.has_room(at))
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
        .find(|&at| would_admit(counters, at))
        .expect("every entry leaves eventually")
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

// ---- The stores: check-and-record against the oracle ----

/// One window of a counter: its limit, its length as a multiple of the base window, and
/// whether it is a shadow one.
#[derive(Debug, Clone, Copy)]
struct WindowLimit {
    limit: u64,
    factor: u64,
    shadow: bool,
}

/// The windows of one identity: its budget's (all requests) and its rule's (some).
#[derive(Debug, Clone)]
struct Limits {
    budget: Vec<WindowLimit>,
    rule: Vec<WindowLimit>,
}

fn window_limit() -> impl Strategy<Value = WindowLimit> {
    (1u64..=5, 1u64..=3, prop::bool::weighted(0.25)).prop_map(|(limit, factor, shadow)| {
        WindowLimit {
            limit,
            factor,
            shadow,
        }
    })
}

/// One to three budget windows, one or two rule windows, of any limits: a store judges
/// whatever it is given (the configuration's rules are the decisions' business, below).
fn limits() -> impl Strategy<Value = Limits> {
    (
        prop::collection::vec(window_limit(), 1..=3),
        prop::collection::vec(window_limit(), 1..=2),
    )
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

/// New windows for every identity and a new base window, in force from step `at` on.
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

/// Base windows after a change: shorter, the same (only limits change), longer.
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

/// The oracle's counters of one identity, by storage key: the `i`-th budget window is
/// `…:b<i>`, the `i`-th rule window `…:e<i>`. A change keeps the key of each position, so
/// its entries stay and are judged by the new limit and window; a position a change adds is
/// a new, empty counter.
struct Who {
    budget: Vec<OracleCounter>,
    rule: Vec<OracleCounter>,
    /// How many of each are in force.
    in_force: (usize, usize),
}

fn set(counters: &mut Vec<OracleCounter>, windows: &[WindowLimit], base: u64) {
    for (i, w) in windows.iter().enumerate() {
        match counters.get_mut(i) {
            Some(c) => (c.limit, c.window, c.shadow) = (w.limit, w.factor * base, w.shadow),
            None => counters.push(OracleCounter::new(w.limit, w.factor * base, w.shadow)),
        }
    }
}

impl Who {
    fn new(limits: &Limits, base: u64) -> Self {
        let mut who = Who {
            budget: Vec::new(),
            rule: Vec::new(),
            in_force: (0, 0),
        };
        who.change(limits, base);
        who
    }

    fn change(&mut self, limits: &Limits, base: u64) {
        set(&mut self.budget, &limits.budget, base);
        set(&mut self.rule, &limits.rule, base);
        self.in_force = (limits.budget.len(), limits.rule.len());
    }

    /// The counters a request sees, budget windows first, with their key suffixes.
    fn counters(&mut self, with_rule: bool) -> Vec<(String, &mut OracleCounter)> {
        let (b, r) = self.in_force;
        let budget = self.budget[..b]
            .iter_mut()
            .enumerate()
            .map(|(i, c)| (format!("b{i}"), c));
        let rule = self.rule[..r]
            .iter_mut()
            .enumerate()
            .filter(|_| with_rule)
            .map(|(i, c)| (format!("e{i}"), c));
        budget.chain(rule).collect()
    }

    fn step(&mut self, with_rule: bool, t: u64) -> (bool, Vec<State>) {
        let mut counters: Vec<&mut OracleCounter> = self
            .counters(with_rule)
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        oracle_step(&mut counters, t)
    }

    fn specs(&mut self, tag: &str, with_rule: bool) -> Vec<CounterSpec> {
        self.counters(with_rule)
            .into_iter()
            .map(|(suffix, c)| CounterSpec {
                key: format!("rl:{{{tag}}}:{suffix}"),
                limit: c.limit,
                window_us: c.window,
                shadow: c.shadow,
                algorithm: Algorithm::Exact,
            })
            .collect()
    }
}

fn states_of(outcome: &Outcome) -> Vec<State> {
    outcome
        .counters
        .iter()
        .map(|c| (c.count, c.free_at_us, c.full))
        .collect()
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
    let mut oracle: Vec<Who> = tl.limits.iter().map(|l| Who::new(l, WINDOW)).collect();
    let mut t = clock.now_us();
    for (i, step) in tl.steps.iter().enumerate() {
        if let Some(change) = tl.change.as_ref().filter(|c| c.at == i) {
            for (who, limits) in oracle.iter_mut().zip(&change.limits) {
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
            prop_assert_eq!(
                states_of(&got),
                states,
                "step {} call {} ({:?})",
                i,
                j,
                call
            );
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

/// Interleaved identities, bursts, batches, exact boundaries, several windows per counter,
/// shadow windows.
fn random_timelines_match_the_oracle(backend: &Backend) {
    run_timelines(backend, false);
}

/// The same with new windows for every identity at a random step.
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
    let bases = [40, 400, 4_000];
    let mut limits: Vec<Limits> = (0..3)
        .map(|_| Limits {
            budget: vec![
                WindowLimit {
                    limit: rng() % 4 + 2,
                    factor: 1,
                    shadow: false,
                },
                WindowLimit {
                    limit: rng() % 4 + 4,
                    factor: 3,
                    shadow: rng().is_multiple_of(2),
                },
            ],
            rule: vec![WindowLimit {
                limit: rng() % 2 + 1,
                factor: 2,
                shadow: false,
            }],
        })
        .collect();
    let mut oracle: Vec<Who> = limits
        .iter()
        .zip(bases)
        .map(|(l, base)| Who::new(l, base))
        .collect();
    let tags: Vec<String> = (0..3).map(|i| format!("live-{i}")).collect();
    let mut last = [0u64; 3];
    let steps = 900;
    for step in 0..steps {
        if step == steps / 2 {
            for ((who, limits), base) in oracle.iter_mut().zip(&mut limits).zip(bases) {
                for w in limits.budget.iter_mut().chain(&mut limits.rule) {
                    w.limit = (w.limit - 1).max(1);
                }
                who.change(limits, base);
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
        assert_eq!(
            (got.admitted, states_of(&got)),
            (admitted, states),
            "{}: step {step}, identity {who}, at {}",
            backend.name(),
            got.now_us
        );
    }
}

// ---- Decisions: what the client is told (policies, limit, remaining, Retry-After, Reset) ----

/// The windows of a tier `t` and of its rule `/r`, all lengths multiples of the base window
/// `W`: the tier's `short` per W and `long` per 3W, the rule's `rule_short` per W and
/// `rule_long` per 4W. Generated so that no window can never bind (what validation asks):
/// a longer window has a higher limit than a shorter one it applies with.
#[derive(Debug, Clone, Copy)]
struct Windows {
    short: u64,
    long: Option<u64>,
    rule_short: Option<u64>,
    rule_long: Option<u64>,
    tier_shadow: bool,
    rule_shadow: bool,
}

fn windows() -> impl Strategy<Value = Windows> {
    (1u64..=4)
        .prop_flat_map(|short| {
            let long = prop::option::of((short + 1)..=short + 4);
            // Below the tier's short limit, or none (then the rule has a long window).
            let rule_short = if short > 1 {
                prop::option::of(1..short).boxed()
            } else {
                Just(None).boxed()
            };
            (Just(short), long, rule_short)
        })
        .prop_flat_map(|(short, long, rule_short)| {
            let above = rule_short.map_or(1, |r| r + 1);
            // Often the limit of a tier window: ties that the longer wait must break.
            let tier_limits: Vec<u64> = [Some(short), long]
                .into_iter()
                .flatten()
                .filter(|&l| l >= above)
                .collect();
            let limit = if tier_limits.is_empty() {
                (above..=above + 4).boxed()
            } else {
                prop_oneof![
                    1 => above..=above + 4,
                    2 => prop::sample::select(tier_limits),
                ]
                .boxed()
            };
            let rule_long = match rule_short {
                Some(_) => prop::option::of(limit).boxed(),
                None => limit.prop_map(Some).boxed(),
            };
            (
                Just((short, long, rule_short)),
                rule_long,
                prop::bool::weighted(0.15),
                prop::bool::weighted(0.3),
            )
        })
        .prop_map(
            |((short, long, rule_short), rule_long, tier_shadow, rule_shadow)| Windows {
                short,
                long,
                rule_short,
                rule_long,
                tier_shadow,
                rule_shadow,
            },
        )
}

/// Which of [`Windows`] a request sees, in the answer's order: (kind, factor, limit).
fn applied(w: &Windows, to_rule: bool) -> Vec<(char, u64, u64)> {
    let mut out = vec![('b', 1, w.short)];
    out.extend(w.long.map(|l| ('b', 3, l)));
    if to_rule {
        out.extend(w.rule_short.map(|l| ('e', 1, l)));
        out.extend(w.rule_long.map(|l| ('e', 4, l)));
    }
    out
}

fn config(w: &Windows, base: u64) -> CompiledConfig {
    let list = |pairs: &[(u64, u64)]| {
        let items: Vec<String> = pairs
            .iter()
            .map(|(l, s)| format!("{{limit: {l}, window_seconds: {s}}}"))
            .collect();
        format!("[{}]", items.join(", "))
    };
    let mut tier = vec![(w.short, base)];
    tier.extend(w.long.map(|l| (l, 3 * base)));
    let mut rule = Vec::new();
    rule.extend(w.rule_short.map(|l| (l, base)));
    rule.extend(w.rule_long.map(|l| (l, 4 * base)));
    let yaml = format!(
        "default_tier: t\ntiers:\n  - name: t\n    limits: {}\n    shadow: {}\n    endpoints:\n      /r: {{limits: {}, shadow: {}}}\n",
        list(&tier),
        w.tier_shadow,
        list(&rule),
        w.rule_shadow
    );
    CompiledConfig::compile(parse_yaml(&yaml).expect("yaml"))
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn request(ip: &str, path: &str) -> rl_wire::DecisionRequest {
    rl_wire::DecisionRequest {
        ip: ip.into(),
        method: "GET".into(),
        path: path.into(),
        ..Default::default()
    }
}

fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(SECOND)
}

/// A window the oracle judged a request by, with its name and length in seconds.
struct Judged<'a> {
    counter: &'a OracleCounter,
    policy: String,
    seconds: u64,
    /// Full before the request.
    full: bool,
}

/// The window an answer must describe among `candidates` at `t` (after the request): the
/// least remaining, then the lower limit, then the longer wait, then the first.
fn described<'a>(candidates: &[&'a Judged<'a>], t: u64) -> &'a Judged<'a> {
    let key = |j: &Judged<'_>| {
        let (count, free_at) = j.counter.state(t);
        (
            j.counter.limit.saturating_sub(count),
            j.counter.limit,
            std::cmp::Reverse(free_at),
        )
    };
    let mut best = candidates[0];
    for &c in &candidates[1..] {
        if key(c) < key(best) {
            best = c;
        }
    }
    best
}

/// Checks one answer against the oracle's windows of the request (already stepped).
fn check_answer(
    judged: &[Judged<'_>],
    admitted: bool,
    t: u64,
    answer: &DecisionResponse,
) -> Result<(), TestCaseError> {
    let report = answer
        .counter
        .as_ref()
        .ok_or_else(|| TestCaseError::fail("no counter in the answer"))?;
    let policies: Vec<(&str, u64, u64)> = answer
        .policies
        .iter()
        .map(|p| (p.name.as_str(), p.limit, p.window))
        .collect();
    let expected: Vec<(&str, u64, u64)> = judged
        .iter()
        .map(|j| (j.policy.as_str(), j.counter.limit, j.seconds))
        .collect();
    prop_assert_eq!(policies, expected, "every window that applied, tier first");
    let counters: Vec<&OracleCounter> = judged.iter().map(|j| j.counter).collect();
    if admitted {
        prop_assert_eq!(answer.verdict, Verdict::Allow);
        prop_assert_eq!(report.retry_after, None);
        let shadow_full = judged.iter().any(|j| j.full && j.counter.shadow);
        prop_assert_eq!(answer.shadow_denied, shadow_full);
        // Every window is a candidate, shadowed ones too: the headers are what enforced
        // limits would send.
        let all: Vec<&Judged<'_>> = judged.iter().collect();
        let bound = described(&all, t);
        let (count, free_at) = bound.counter.state(t);
        prop_assert_eq!(report.policy.as_deref(), Some(bound.policy.as_str()));
        prop_assert_eq!(
            (report.limit, report.remaining, report.window),
            (
                bound.counter.limit,
                bound.counter.limit.saturating_sub(count),
                bound.seconds
            )
        );
        prop_assert_eq!(report.reset, ceil_secs(free_at));
        prop_assert_eq!(report.reset_after, Some(ceil_secs(free_at - t)));
        prop_assert!(report.reset * SECOND > t);
        prop_assert!(report.reset <= ceil_secs(t + bound.seconds * SECOND));
        return Ok(());
    }
    prop_assert_eq!(answer.verdict, Verdict::Deny);
    prop_assert!(!answer.shadow_denied);
    prop_assert_eq!(report.remaining, 0);
    let full: Vec<&Judged<'_>> = judged
        .iter()
        .filter(|j| j.full && !j.counter.shadow)
        .collect();
    prop_assert!(!full.is_empty(), "a denial without a full enforced window");
    let bound = described(&full, t);
    prop_assert_eq!(report.policy.as_deref(), Some(bound.policy.as_str()));
    prop_assert_eq!(
        (report.limit, report.window),
        (bound.counter.limit, bound.seconds)
    );
    let free_at = earliest_admission(&counters, t);
    let retry_after = report
        .retry_after
        .ok_or_else(|| TestCaseError::fail("a deny without Retry-After"))?;
    prop_assert!(retry_after >= 1);
    prop_assert_eq!(report.reset_after, Some(retry_after));
    // Retry-After is the wait until every full window has room, rounded up; Reset is that
    // instant, rounded up to a Unix second; both within the longest full window.
    prop_assert_eq!(
        retry_after,
        ceil_secs(free_at - t),
        "free at +{} µs",
        free_at - t
    );
    prop_assert_eq!(report.reset, ceil_secs(free_at));
    let longest = full.iter().map(|j| j.seconds).max().unwrap_or_default();
    prop_assert!(retry_after <= longest);
    prop_assert!(
        (report.reset * SECOND).abs_diff(t + retry_after * SECOND) < SECOND,
        "Reset {} and Retry-After {} round different instants (now {} µs)",
        report.reset,
        retry_after,
        t
    );
    // Waiting as told is enough, and not longer than needed.
    prop_assert!(would_admit(&counters, t + retry_after * SECOND));
    prop_assert!(would_admit(&counters, report.reset * SECOND));
    if retry_after > 1 {
        prop_assert!(!would_admit(&counters, t + (retry_after - 1) * SECOND));
    }
    if (report.reset - 1) * SECOND >= t {
        prop_assert!(!would_admit(&counters, (report.reset - 1) * SECOND));
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct DecisionTimeline {
    windows: Windows,
    base_seconds: u64,
    /// (gap µs, requests at that instant: (ip index, to the rule's path?)).
    steps: Vec<(u64, Vec<(usize, bool)>)>,
    /// New windows and base window from step `at` on.
    change: (usize, Windows, u64),
}

fn decision_timeline() -> impl Strategy<Value = DecisionTimeline> {
    let base = prop_oneof![Just(1u64), Just(2), Just(5)];
    let gap = prop_oneof![
        2 => Just(0u64),
        1 => Just(1),
        3 => 0..2 * SECOND,
        1 => 0..12 * SECOND,
    ];
    let requests = prop::collection::vec((0..3usize, any::<bool>()), 1..=3);
    (
        windows(),
        base.clone(),
        prop::collection::vec((gap, requests), 1..40),
        (any::<prop::sample::Index>(), windows(), base),
    )
        .prop_map(
            |(windows, base_seconds, steps, (at, new_windows, new_base))| DecisionTimeline {
                windows,
                base_seconds,
                change: (at.index(steps.len()), new_windows, new_base),
                steps,
            },
        )
}

/// The oracle of the decisions: one counter per (identity, kind, window length), as the
/// keys are named. A change that keeps a window's length keeps its count; a new length
/// starts afresh.
#[derive(Default)]
struct Counters(HashMap<(usize, char, u64), OracleCounter>);

impl Counters {
    /// Steps the windows `w` (base `base` s) that a request of `who` sees, and returns
    /// whether it was admitted with the windows as judged.
    fn step(
        &mut self,
        who: usize,
        w: &Windows,
        base: u64,
        to_rule: bool,
        t: u64,
    ) -> (bool, Vec<(char, u64, bool)>) {
        let seen = applied(w, to_rule);
        let mut counters: Vec<&mut OracleCounter> = Vec::new();
        let mut keys = Vec::new();
        for &(kind, factor, limit) in &seen {
            let seconds = factor * base;
            let shadow = w.tier_shadow || (kind == 'e' && w.rule_shadow);
            keys.push((who, kind, seconds));
            let c = self
                .0
                .entry((who, kind, seconds))
                .or_insert_with(|| OracleCounter::new(limit, seconds * SECOND, shadow));
            (c.limit, c.shadow) = (limit, shadow);
        }
        // Borrow each counter once, in order (the keys are distinct).
        let mut rest: Vec<(&(usize, char, u64), &mut OracleCounter)> = self
            .0
            .iter_mut()
            .filter(|(k, _)| keys.contains(k))
            .collect();
        for key in &keys {
            let i = rest.iter().position(|(k, _)| *k == key).expect("inserted");
            counters.push(rest.swap_remove(i).1);
        }
        let (admitted, states) = oracle_step(&mut counters, t);
        let judged = seen
            .iter()
            .zip(states)
            .map(|(&(kind, factor, _), (_, _, full))| (kind, factor * base, full))
            .collect();
        (admitted, judged)
    }
}

/// Every answer's policies, limit, remaining, Retry-After, Reset, shadow flag and binding
/// window against the oracle, on random timelines of three clients under a tier of one or
/// two windows and a rule of one or two, shadowed or not, with a change of windows and base
/// length in the middle (a lowered limit leaves entries above it; a new length starts
/// afresh). Several requests at one instant go as a batch.
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
            let live: SharedConfig = live_config::shared(config(&tl.windows, tl.base_seconds));
            let decider = Decider::new(live.clone(), store, clock.clone());
            let ips: Vec<String> = (0..3)
                .map(|i| format!("10.{}.{}.{}", case / 256 % 256, case % 256, i + 1))
                .collect();
            let (mut windows, mut base) = (tl.windows, tl.base_seconds);
            let mut oracle = Counters::default();
            let mut t = clock.now_us();
            for (i, (gap, requests)) in tl.steps.iter().enumerate() {
                let (at, new_windows, new_base) = tl.change;
                if i == at {
                    live.store(Arc::new(config(&new_windows, new_base)));
                    (windows, base) = (new_windows, new_base);
                }
                t += gap;
                clock.set(t);
                let batch: Vec<rl_wire::DecisionRequest> = requests
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
                    let (admitted, seen) = oracle.step(who, &windows, base, to_rule, t);
                    let judged: Vec<Judged<'_>> = seen
                        .iter()
                        .map(|&(kind, seconds, full)| Judged {
                            counter: &oracle.0[&(who, kind, seconds)],
                            policy: match kind {
                                'b' => format!("t-{seconds}s"),
                                _ => format!("t-/r-{seconds}s"),
                            },
                            seconds,
                            full,
                        })
                        .collect();
                    check_answer(&judged, admitted, t, &answer)
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
    let at = |budget: u64| {
        let yaml = format!(
            "default_tier: t\ntiers:\n  - name: t\n    requests_per_window: {budget}\n    \
             window_size_seconds: 10\n"
        );
        CompiledConfig::compile(parse_yaml(&yaml).expect("yaml")).expect("valid config")
    };
    let live = live_config::shared(at(5));
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
    live.store(Arc::new(at(2)));
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

// ---- Slotted counters: their own slot model, and the exact rule on their history ----
//
// A slotted counter is judged twice. Against a model of its slots written here (not the
// product's code): at t it counts every admitted request whose slot floor(a / g) is at or
// after floor((t − W) / g), so a request is refused exactly when those slots are full, and
// it has room again when enough of its oldest slots have left ((s + 1)·g + W for slot s).
// And against the exact rule, on its own history: after every admission, no counter holds
// more than its limit in (t − W, t] (the slotted window's promise).

/// The slot length of the slotted windows below: windows of 10 to 30 slots.
const SLOT_US: u64 = SECOND;

/// One counter of a timeline, exact or slotted.
#[derive(Debug, Clone)]
enum Model {
    Exact(OracleCounter),
    Slotted(SlotModel),
}

#[derive(Debug, Clone)]
struct SlotModel {
    limit: u64,
    window: u64,
    slot: u64,
    shadow: bool,
    admitted: Vec<u64>,
}

impl SlotModel {
    /// The admitted requests counted at `t`, oldest first.
    fn counted(&self, t: u64) -> Vec<u64> {
        let oldest_slot = t.saturating_sub(self.window) / self.slot;
        let mut counted: Vec<u64> = self
            .admitted
            .iter()
            .copied()
            .filter(|&a| a <= t && a / self.slot >= oldest_slot)
            .collect();
        counted.sort_unstable();
        counted
    }

    fn state(&self, t: u64) -> (u64, u64) {
        let counted = self.counted(t);
        let count = counted.len() as u64;
        let index = count.saturating_sub(self.limit) as usize;
        let free_at = counted
            .get(index)
            .map_or(t, |&a| (a / self.slot + 1) * self.slot + self.window);
        (count, free_at)
    }
}

impl Model {
    fn limit(&self) -> u64 {
        match self {
            Model::Exact(c) => c.limit,
            Model::Slotted(c) => c.limit,
        }
    }

    fn shadow(&self) -> bool {
        match self {
            Model::Exact(c) => c.shadow,
            Model::Slotted(c) => c.shadow,
        }
    }

    fn window(&self) -> u64 {
        match self {
            Model::Exact(c) => c.window,
            Model::Slotted(c) => c.window,
        }
    }

    fn admitted(&self) -> &[u64] {
        match self {
            Model::Exact(c) => &c.admitted,
            Model::Slotted(c) => &c.admitted,
        }
    }

    fn has_room(&self, t: u64) -> bool {
        match self {
            Model::Exact(c) => c.has_room(t),
            Model::Slotted(c) => (c.counted(t).len() as u64) < c.limit,
        }
    }

    fn record(&mut self, t: u64) {
        match self {
            Model::Exact(c) => c.admitted.push(t),
            Model::Slotted(c) => c.admitted.push(t),
        }
    }

    fn state(&self, t: u64) -> (u64, u64) {
        match self {
            Model::Exact(c) => c.state(t),
            Model::Slotted(c) => c.state(t),
        }
    }

    fn set_limit(&mut self, limit: u64, shadow: bool) {
        match self {
            Model::Exact(c) => (c.limit, c.shadow) = (limit, shadow),
            Model::Slotted(c) => (c.limit, c.shadow) = (limit, shadow),
        }
    }

    /// Admitted requests in the exact window (t − W, t].
    fn in_exact_window(&self, t: u64) -> u64 {
        let window = self.window();
        self.admitted()
            .iter()
            .filter(|&&a| a <= t && t - a < window)
            .count() as u64
    }
}

/// One window of a mixed timeline.
#[derive(Debug, Clone, Copy)]
struct MixedWindow {
    limit: u64,
    /// The window is `factor` × 10 s.
    factor: u64,
    shadow: bool,
    slotted: bool,
}

fn mixed_window() -> impl Strategy<Value = MixedWindow> {
    (
        1u64..=6,
        1u64..=3,
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.75),
    )
        .prop_map(|(limit, factor, shadow, slotted)| MixedWindow {
            limit,
            factor,
            shadow,
            slotted,
        })
}

/// Gaps that land on slot and window boundaries (each case starts on a slot boundary), just
/// before and after them, in the same µs, or anywhere.
fn slot_gap() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(0u64),
        1 => Just(1),
        2 => Just(SLOT_US),
        1 => Just(SLOT_US - 1),
        1 => Just(SLOT_US + 1),
        2 => (1u64..=30).prop_map(|n| n * SLOT_US),
        1 => Just(WINDOW - 1),
        1 => Just(WINDOW),
        4 => 0..3 * SLOT_US,
        1 => 0..3 * WINDOW,
    ]
}

#[derive(Debug, Clone)]
struct MixedTimeline {
    /// Per identity: its budget windows and its rule's windows.
    windows: Vec<(Vec<MixedWindow>, Vec<MixedWindow>)>,
    /// (gap µs, requests at that instant: (identity, with the rule)).
    steps: Vec<(u64, Vec<(usize, bool)>)>,
    /// From step `.0` on, every window of every identity takes the limit and shadow flag at
    /// its position in `.1` (its key, hence its count, stays).
    change: Option<(usize, Vec<(u64, bool)>)>,
}

fn mixed_timeline() -> impl Strategy<Value = MixedTimeline> {
    (1usize..=3).prop_flat_map(|identities| {
        let windows = (
            prop::collection::vec(mixed_window(), 1..=3),
            prop::collection::vec(mixed_window(), 1..=2),
        );
        let request = (0..identities, any::<bool>());
        let size = prop_oneof![3 => Just(1usize), 1 => 2usize..=4];
        let step = (slot_gap(), size).prop_flat_map(move |(gap, size)| {
            (Just(gap), prop::collection::vec(request.clone(), size))
        });
        (
            prop::collection::vec(windows, identities),
            prop::collection::vec(step, 1..60),
            prop::option::of((
                any::<prop::sample::Index>(),
                prop::collection::vec((1u64..=6, prop::bool::weighted(0.2)), 5),
            )),
        )
            .prop_map(|(windows, steps, change)| MixedTimeline {
                change: change.map(|(at, limits)| (at.index(steps.len()), limits)),
                windows,
                steps,
            })
    })
}

/// The models of one identity's windows and the specs the store is given: the key names the
/// structure, the window and the slot (as production keys do).
struct MixedWho {
    budget: Vec<Model>,
    rule: Vec<Model>,
}

impl MixedWho {
    fn new(windows: &(Vec<MixedWindow>, Vec<MixedWindow>)) -> Self {
        let model = |w: &MixedWindow| {
            let window = w.factor * WINDOW;
            if w.slotted {
                Model::Slotted(SlotModel {
                    limit: w.limit,
                    window,
                    slot: SLOT_US,
                    shadow: w.shadow,
                    admitted: Vec::new(),
                })
            } else {
                Model::Exact(OracleCounter::new(w.limit, window, w.shadow))
            }
        };
        MixedWho {
            budget: windows.0.iter().map(model).collect(),
            rule: windows.1.iter().map(model).collect(),
        }
    }

    fn counters(&mut self, with_rule: bool) -> Vec<(String, &mut Model)> {
        let budget = self
            .budget
            .iter_mut()
            .enumerate()
            .map(|(i, m)| (format!("b{i}"), m));
        let rule = self
            .rule
            .iter_mut()
            .enumerate()
            .filter(|_| with_rule)
            .map(|(i, m)| (format!("e{i}"), m));
        budget.chain(rule).collect()
    }

    fn specs(&mut self, tag: &str, with_rule: bool) -> Vec<CounterSpec> {
        self.counters(with_rule)
            .into_iter()
            .map(|(suffix, m)| {
                let (algorithm, kind) = match m {
                    Model::Exact(_) => (Algorithm::Exact, "x".to_string()),
                    Model::Slotted(s) => (
                        Algorithm::Slotted { slot_us: s.slot },
                        format!("s{}", s.slot),
                    ),
                };
                CounterSpec {
                    key: format!("rl:{{{tag}}}:{suffix}:{}{kind}", m.window()),
                    limit: m.limit(),
                    window_us: m.window(),
                    shadow: m.shadow(),
                    algorithm,
                }
            })
            .collect()
    }

    /// One request at `t` through the models: admitted iff every enforced counter has room;
    /// recorded in those and in the shadow ones with room.
    fn step(&mut self, with_rule: bool, t: u64) -> (bool, Vec<State>) {
        let mut counters: Vec<&mut Model> = self
            .counters(with_rule)
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        let full: Vec<bool> = counters.iter().map(|m| !m.has_room(t)).collect();
        let admitted = counters
            .iter()
            .zip(&full)
            .all(|(m, &full)| m.shadow() || !full);
        for (m, &full) in counters.iter_mut().zip(&full) {
            if admitted && !full {
                m.record(t);
            }
        }
        let states = counters
            .iter()
            .zip(&full)
            .map(|(m, &full)| {
                let (count, free_at) = m.state(t);
                (count, free_at, full)
            })
            .collect();
        (admitted, states)
    }

    /// The slotted window's promise, by the exact rule: a request recorded at `t` leaves no
    /// more than the limit in (t − W, t] of each counter it was recorded in (a lowered limit
    /// may leave more in the others, as it does in an exact log).
    fn check_exact_bound(
        &mut self,
        with_rule: bool,
        states: &[State],
        admitted: bool,
        t: u64,
    ) -> Result<(), TestCaseError> {
        for ((_, m), &(_, _, full)) in self.counters(with_rule).into_iter().zip(states) {
            // Recorded: admitted, and this counter had room.
            if !admitted || full {
                continue;
            }
            let inside = m.in_exact_window(t);
            prop_assert!(
                inside <= m.limit(),
                "{} admitted in the last {} µs, over the limit {} ({:?})",
                inside,
                m.window(),
                m.limit(),
                m
            );
        }
        Ok(())
    }
}

fn replay_mixed(
    tl: &MixedTimeline,
    store: &dyn CounterStore,
    clock: &ManualClock,
    rt: &tokio::runtime::Runtime,
    case: u64,
) -> Result<(), TestCaseError> {
    let tags: Vec<String> = (0..tl.windows.len())
        .map(|i| format!("slotted-{case}-id-{i}"))
        .collect();
    let mut models: Vec<MixedWho> = tl.windows.iter().map(MixedWho::new).collect();
    // Every case starts on a slot boundary, so the gaps land on boundaries.
    let mut t = (clock.now_us() + WINDOW).div_ceil(SLOT_US) * SLOT_US;
    for (i, (gap, requests)) in tl.steps.iter().enumerate() {
        if let Some((_, limits)) = tl.change.as_ref().filter(|(at, _)| *at == i) {
            for who in &mut models {
                for (m, &(limit, shadow)) in who.budget.iter_mut().chain(&mut who.rule).zip(limits)
                {
                    m.set_limit(limit, shadow);
                }
            }
        }
        t += gap;
        clock.set(t);
        let specs: Vec<Vec<CounterSpec>> = requests
            .iter()
            .map(|&(who, with_rule)| models[who].specs(&tags[who], with_rule))
            .collect();
        let calls: Vec<(&str, &[CounterSpec])> = requests
            .iter()
            .zip(&specs)
            .map(|(&(who, _), s)| (tags[who].as_str(), s.as_slice()))
            .collect();
        let outcomes: Vec<Outcome> = if calls.len() == 1 {
            vec![
                rt.block_on(store.check_and_record(calls[0].0, calls[0].1))
                    .map_err(|e| TestCaseError::fail(format!("step {i}: {e}")))?,
            ]
        } else {
            rt.block_on(store.check_and_record_many(&calls))
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(|e| TestCaseError::fail(format!("step {i}: {e}")))?
        };
        for (j, (&(who, with_rule), got)) in requests.iter().zip(outcomes).enumerate() {
            let (admitted, states) = models[who].step(with_rule, t);
            prop_assert_eq!(got.now_us, t);
            prop_assert_eq!(got.admitted, admitted, "step {} call {}", i, j);
            prop_assert_eq!(states_of(&got), states.clone(), "step {} call {}", i, j);
            if !got.admitted {
                // Refused only when an enforced counter's counted slots (or log) are full.
                let counters = models[who].counters(with_rule);
                prop_assert!(
                    counters
                        .iter()
                        .zip(&states)
                        .any(|((_, m), s)| !m.shadow() && s.2 && s.0 >= m.limit()),
                    "step {} call {}: a denial without a full enforced counter",
                    i,
                    j
                );
            }
            models[who].check_exact_bound(with_rule, &states, admitted, t)?;
        }
    }
    Ok(())
}

/// Slotted counters, alone and beside exact logs in one decision: interleaved identities,
/// bursts in one µs, batches, requests on slot and window boundaries and just off them, a
/// limit change in the middle; every outcome as the slot model says, and never more than the
/// limit in any exact window.
fn slotted_timelines_match_their_model_and_the_exact_bound(backend: &Backend) {
    let rt = runtime();
    let _entered = rt.enter();
    let clock = Arc::new(ManualClock::new(real_now_us()));
    let shared =
        (backend.kind() != BackendKind::Memory).then(|| backend.store_with_clock(clock.clone()));
    let case = Cell::new(0);
    runner(backend)
        .run(&mixed_timeline(), |tl| {
            case.set(case.get() + 1);
            let store = shared
                .clone()
                .unwrap_or_else(|| backend.store_with_clock(clock.clone()));
            replay_mixed(&tl, store.as_ref(), &clock, &rt, case.get())
        })
        .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
}

/// The production path for slotted counters: Redis reads its own `TIME` (memory: the
/// monotonic clock), and the model judges each request at the instant the store reports.
/// Windows of a few hundred µs to a few ms, slots of a tenth of them, are crossed by the
/// calls' own latency; half-way through every limit is lowered.
async fn slotted_counters_on_the_production_clock_match_their_model(backend: &Backend) {
    let store = backend.store();
    let mut rng = xorshift(11);
    let bases = [400u64, 2_000, 6_000];
    let mut models: Vec<MixedWho> = bases
        .iter()
        .map(|&base| {
            let slotted = |limit: u64, factor: u64, shadow: bool| {
                Model::Slotted(SlotModel {
                    limit,
                    window: factor * base,
                    slot: base / 10,
                    shadow,
                    admitted: Vec::new(),
                })
            };
            MixedWho {
                budget: vec![
                    slotted(rng() % 4 + 2, 1, false),
                    Model::Exact(OracleCounter::new(rng() % 4 + 4, 3 * base, false)),
                    slotted(rng() % 4 + 4, 2, rng().is_multiple_of(2)),
                ],
                rule: vec![slotted(rng() % 2 + 1, 2, false)],
            }
        })
        .collect();
    let tags: Vec<String> = (0..3).map(|i| format!("live-slotted-{i}")).collect();
    let mut last = [0u64; 3];
    let steps = 900;
    for step in 0..steps {
        if step == steps / 2 {
            for who in &mut models {
                for m in who.budget.iter_mut().chain(&mut who.rule) {
                    let (limit, shadow) = (m.limit(), m.shadow());
                    m.set_limit((limit - 1).max(1), shadow);
                }
            }
        }
        let who = (rng() % 3) as usize;
        let with_rule = rng().is_multiple_of(3);
        let specs = models[who].specs(&tags[who], with_rule);
        let got = store
            .check_and_record(&tags[who], &specs)
            .await
            .unwrap_or_else(|e| panic!("{}: step {step}: {e}", backend.name()));
        assert!(
            got.now_us >= last[who],
            "{}: the clock went back",
            backend.name()
        );
        last[who] = got.now_us;
        let (admitted, states) = models[who].step(with_rule, got.now_us);
        assert_eq!(
            (got.admitted, states_of(&got)),
            (admitted, states.clone()),
            "{}: step {step}, identity {who}, at {}",
            backend.name(),
            got.now_us
        );
        models[who]
            .check_exact_bound(with_rule, &states, admitted, got.now_us)
            .unwrap_or_else(|e| panic!("{}: step {step}: {e}", backend.name()));
    }
}

test_with_all_stores!(blocking: slotted_timelines_match_their_model_and_the_exact_bound);
test_with_all_stores!(slotted_counters_on_the_production_clock_match_their_model);

// ---- A batch answers what its calls sent one by one answer ----

/// One window of an identity in a batch timeline: limit, shadow, slot length (µs; `None`: an
/// exact log).
type BatchWindow = (u64, bool, Option<u64>);

#[derive(Debug, Clone)]
struct BatchIdentity {
    /// Budget windows of 1, 2 and 4 s, rule windows of 1 and 3 s (each present or not).
    budget: Vec<Option<BatchWindow>>,
    rule: Vec<Option<BatchWindow>>,
}

const BATCH_BUDGET_SECONDS: [u64; 3] = [1, 2, 4];
const BATCH_RULE_SECONDS: [u64; 2] = [1, 3];

#[derive(Debug, Clone)]
struct BatchTimeline {
    identities: Vec<BatchIdentity>,
    /// Per step: the gap before it (µs), then its calls (identity, with the rule).
    steps: Vec<(u64, Vec<(usize, bool)>)>,
}

fn batch_window() -> impl Strategy<Value = Option<BatchWindow>> {
    let slot = prop_oneof![
        2 => Just(None),
        1 => prop::sample::select(vec![250_000u64, 500_000, 1_000_000]).prop_map(Some),
    ];
    prop::option::weighted(0.7, (1u64..5, prop::bool::weighted(0.25), slot))
}

fn batch_identity() -> impl Strategy<Value = BatchIdentity> {
    (
        prop::collection::vec(batch_window(), 3),
        prop::collection::vec(batch_window(), 2),
    )
        .prop_map(|(budget, rule)| BatchIdentity { budget, rule })
}

fn batch_timeline() -> impl Strategy<Value = BatchTimeline> {
    (1usize..5)
        .prop_flat_map(move |n| {
            let gap = prop_oneof![
                Just(0u64),
                1u64..1_000,
                (1u64..8).prop_map(|k| k * 250_000),
                100_000u64..1_500_000,
            ];
            let call = (0..n, prop::bool::ANY);
            let step = (gap, prop::collection::vec(call, 1..=12));
            (
                prop::collection::vec(batch_identity(), n),
                prop::collection::vec(step, 1..25),
            )
        })
        .prop_map(|(identities, steps)| BatchTimeline { identities, steps })
}

fn batch_specs(who: &BatchIdentity, tag: &str, with_rule: bool) -> Vec<CounterSpec> {
    use control_plane::store::keys::{budget_key, rule_key};
    let spec = |key: String, seconds: u64, (limit, shadow, slot): BatchWindow| CounterSpec {
        key,
        limit,
        window_us: seconds * SECOND,
        shadow,
        algorithm: slot.map_or(Algorithm::Exact, |slot_us| Algorithm::Slotted { slot_us }),
    };
    let algorithm = |w: &BatchWindow| {
        w.2.map_or(Algorithm::Exact, |slot_us| Algorithm::Slotted { slot_us })
    };
    let mut specs: Vec<CounterSpec> = BATCH_BUDGET_SECONDS
        .iter()
        .zip(&who.budget)
        .filter_map(|(&s, w)| w.map(|w| spec(budget_key(tag, s, algorithm(&w)), s, w)))
        .collect();
    if specs.is_empty() {
        // Every request has a budget.
        specs.push(spec(
            budget_key(tag, 1, Algorithm::Exact),
            1,
            (2, false, None),
        ));
    }
    if with_rule {
        specs.extend(
            BATCH_RULE_SECONDS
                .iter()
                .zip(&who.rule)
                .filter_map(|(&s, w)| w.map(|w| spec(rule_key(tag, s, algorithm(&w), "/r"), s, w))),
        );
    }
    specs
}

/// Each step's calls go once as a batch and once one by one, at the same instant, on keys of
/// their own (the identities of the batch and of the single calls are distinct): every answer
/// must be the same.
fn batch_and_single_calls(
    tl: &BatchTimeline,
    store: &dyn CounterStore,
    clock: &ManualClock,
    rt: &tokio::runtime::Runtime,
    case: u64,
) -> Result<(), TestCaseError> {
    let tags = |kind: &str| -> Vec<String> {
        (0..tl.identities.len())
            .map(|i| format!("batch-case-{case}-{kind}-{i}"))
            .collect()
    };
    let (batch_tags, single_tags) = (tags("b"), tags("s"));
    let mut t = clock.now_us();
    for (i, (gap, calls)) in tl.steps.iter().enumerate() {
        t += gap;
        clock.set(t);
        let specs = |tags: &[String]| -> Vec<Vec<CounterSpec>> {
            calls
                .iter()
                .map(|&(who, with_rule)| batch_specs(&tl.identities[who], &tags[who], with_rule))
                .collect()
        };
        let (batch_specs, single_specs) = (specs(&batch_tags), specs(&single_tags));
        let batch: Vec<(&str, &[CounterSpec])> = calls
            .iter()
            .zip(&batch_specs)
            .map(|(&(who, _), s)| (batch_tags[who].as_str(), s.as_slice()))
            .collect();
        let batched = rt.block_on(store.check_and_record_many(&batch));
        prop_assert_eq!(batched.len(), calls.len());
        for (j, ((&(who, _), specs), got)) in
            calls.iter().zip(&single_specs).zip(batched).enumerate()
        {
            let single = rt
                .block_on(store.check_and_record(&single_tags[who], specs))
                .map_err(|e| TestCaseError::fail(format!("step {i} call {j} alone: {e}")))?;
            let got = got.map_err(|e| TestCaseError::fail(format!("step {i} call {j}: {e}")))?;
            prop_assert_eq!(&got, &single, "step {} call {} ({:?})", i, j, calls[j]);
        }
    }
    Ok(())
}

/// Random batches (several identities, repeats of one identity, exact and slotted windows,
/// shadow windows, empty and boundary gaps) answer call for call what the same calls sent one
/// by one answer.
fn a_batch_answers_what_its_calls_answer_one_by_one(backend: &Backend) {
    let rt = runtime();
    let _entered = rt.enter();
    let clock = Arc::new(ManualClock::new(real_now_us()));
    let store = backend.store_with_clock(clock.clone());
    let case = Cell::new(0);
    let cases = match backend.kind() {
        BackendKind::Memory => 128,
        BackendKind::Redis | BackendKind::RedisCluster => 48,
    };
    TestRunner::new(Config {
        cases,
        ..Config::default()
    })
    .run(&batch_timeline(), |tl| {
        case.set(case.get() + 1);
        batch_and_single_calls(&tl, store.as_ref(), &clock, &rt, case.get())
    })
    .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
}

test_with_all_stores!(blocking: a_batch_answers_what_its_calls_answer_one_by_one);
