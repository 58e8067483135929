use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use proptest::prelude::*;
use rl_wire::{DecisionRequest, Verdict};

use super::*;
use crate::config::parse_yaml;
use crate::decision::Decider;
use crate::live_config;
use crate::store::{Algorithm, CounterStore, ManualClock, MemoryStore, StoreError};

const T0: u64 = 1_700_000_000_000_000;
const S: u64 = 1_000_000;

fn compiled(yaml: &str) -> Arc<CompiledConfig> {
    Arc::new(CompiledConfig::compile(parse_yaml(yaml).unwrap()).unwrap())
}

const ONE: &str = "default_tier: t\ntiers:\n  - name: t\n    requests_per_window: 3\n    window_size_seconds: 60\n";

fn spec(key: &str, limit: u64, shadow: bool) -> CounterSpec {
    CounterSpec {
        key: key.into(),
        limit,
        window_us: 60 * S,
        shadow,
        algorithm: Algorithm::Exact,
    }
}

fn state(count: u64, full: bool, free_at_us: u64) -> CounterState {
    CounterState {
        count,
        full,
        free_at_us,
    }
}

/// A cache that follows `cfg` (a first lookup adopts the configuration).
fn cache_for(cfg: &Arc<CompiledConfig>, capacity: usize) -> DenyCache {
    let cache = DenyCache::new(capacity);
    assert!(cache.lookup(cfg, &[], 1, T0).is_none());
    cache
}

#[test]
fn deny_for_ms_rounds_down_and_is_absent_under_a_millisecond() {
    assert_eq!(deny_for_ms(T0 + 1_999, T0), Some(1));
    assert_eq!(deny_for_ms(T0 + 2_000, T0), Some(2));
    assert_eq!(deny_for_ms(T0 + 999, T0), None);
    assert_eq!(deny_for_ms(T0, T0 + 5), None);
}

#[test]
fn a_full_counter_denies_only_requests_that_need_it() {
    let cfg = compiled(ONE);
    let cache = cache_for(&cfg, 16);
    let budget = spec("rl:{ip:1}:b:60", 10, false);
    let rule_a = spec("rl:{ip:1}:e:60:/a", 2, false);
    let rule_b = spec("rl:{ip:1}:e:60:/b", 2, false);
    // Denied by rule /a (full until T0 + 30 s); the budget had room.
    let denied = Outcome {
        admitted: false,
        now_us: T0,
        counters: vec![state(4, false, T0 + 50 * S), state(2, true, T0 + 30 * S)],
    };
    cache.learn(&cfg, &[budget.clone(), rule_a.clone()], 1, &denied, T0);
    let hit = cache
        .lookup(&cfg, &[budget.clone(), rule_a.clone()], 1, T0 + S / 2)
        .expect("the same counters: a denial");
    assert!(!hit.admitted);
    assert_eq!(hit.now_us, T0 + S / 2);
    assert_eq!(hit.counters[1], state(2, true, T0 + 30 * S));
    assert!(!hit.counters[0].full);
    // The identity's other endpoint: its rule counter is unknown, the store must decide.
    assert!(
        cache
            .lookup(&cfg, &[budget.clone(), rule_b], 1, T0)
            .is_none()
    );
    // The budget alone had room: nothing to deny.
    assert!(cache.lookup(&cfg, &[budget], 1, T0).is_none());
}

#[test]
fn knowledge_expires_at_the_moment_of_room_and_after_its_horizon() {
    let cfg = compiled(ONE);
    let cache = cache_for(&cfg, 16);
    let short = spec("rl:{ip:1}:b:60", 1, false);
    let out = |free_at| Outcome {
        admitted: false,
        now_us: T0,
        counters: vec![state(1, true, free_at)],
    };
    cache.learn(&cfg, std::slice::from_ref(&short), 1, &out(T0 + S / 4), T0);
    assert!(
        cache
            .lookup(&cfg, std::slice::from_ref(&short), 1, T0 + S / 4 - 1)
            .is_some()
    );
    assert!(
        cache
            .lookup(&cfg, std::slice::from_ref(&short), 1, T0 + S / 4)
            .is_none(),
        "room again at free_at"
    );
    // Full for a minute, but known for KNOWLEDGE_US only.
    cache.learn(&cfg, std::slice::from_ref(&short), 1, &out(T0 + 60 * S), T0);
    assert!(
        cache
            .lookup(&cfg, std::slice::from_ref(&short), 1, T0 + KNOWLEDGE_US - 1)
            .is_some()
    );
    assert!(
        cache
            .lookup(&cfg, std::slice::from_ref(&short), 1, T0 + KNOWLEDGE_US)
            .is_none()
    );
}

#[test]
fn the_local_deadline_is_the_remaining_time_from_the_call_start_never_the_store_clock() {
    let cfg = compiled(ONE);
    let cache = cache_for(&cfg, 16);
    let c = spec("rl:{ip:1}:b:60", 1, false);
    // The store's clock is far from ours; 300 ms remain.
    let store_now = 5_000_000;
    let out = Outcome {
        admitted: false,
        now_us: store_now,
        counters: vec![state(1, true, store_now + 300_000)],
    };
    cache.learn(&cfg, std::slice::from_ref(&c), 1, &out, T0);
    let hit = cache
        .lookup(&cfg, std::slice::from_ref(&c), 1, T0 + 100_000)
        .expect("full");
    assert_eq!(hit.now_us, store_now + 100_000, "now on the store's clock");
    assert_eq!(hit.counters[0].free_at_us, store_now + 300_000);
    assert!(
        cache
            .lookup(&cfg, std::slice::from_ref(&c), 1, T0 + 300_000)
            .is_none()
    );
}

#[test]
fn an_admitted_request_that_fills_a_counter_is_learnt_and_shadow_counters_never() {
    let cfg = compiled(ONE);
    let cache = cache_for(&cfg, 16);
    let enforced = spec("rl:{ip:1}:b:60", 2, false);
    let shadow = spec("rl:{ip:1}:e:60:/s", 1, true);
    let specs = [enforced.clone(), shadow.clone()];
    let filled = Outcome {
        admitted: true,
        now_us: T0,
        counters: vec![state(2, false, T0 + 10 * S), state(1, true, T0 + 20 * S)],
    };
    cache.learn(&cfg, &specs, 1, &filled, T0);
    let hit = cache
        .lookup(&cfg, &specs, 1, T0 + 1)
        .expect("filled by this request");
    assert_eq!(hit.counters[0], state(2, true, T0 + 10 * S));
    assert!(!hit.counters[1].full, "a shadow counter takes no part");
    assert!(cache.lookup(&cfg, &[shadow], 1, T0 + 1).is_none());
    assert_eq!(cache.len(), 1);
}

#[test]
fn what_is_known_for_one_cost_says_nothing_for_another() {
    let cfg = compiled(ONE);
    let cache = cache_for(&cfg, 16);
    let budget = spec("rl:{ip:1}:b:60", 10, false);
    let rule = spec("rl:{ip:1}:e:60:/x", 10, false);
    let specs = [budget.clone(), rule.clone()];
    // A request of cost 5 found the rule at 7 of 10: full for 5 until T0 + 20 s; the budget
    // had room for it.
    let denied = Outcome {
        admitted: false,
        now_us: T0,
        counters: vec![state(7, false, T0 + 40 * S), state(7, true, T0 + 20 * S)],
    };
    cache.learn(&cfg, &specs, 5, &denied, T0);
    let hit = cache
        .lookup(&cfg, &specs, 5, T0 + 1)
        .expect("cost 5: a denial");
    assert_eq!(hit.counters[1], state(10, true, T0 + 20 * S));
    // A request of cost 1 may fit: unknown, the store decides.
    assert!(cache.lookup(&cfg, &specs, 1, T0 + 1).is_none());
    // A cost-1 request on the budget alone recorded there: its level rose, so the room known
    // for cost 5 no longer holds, and a cost-5 request on both counters asks the store.
    let admitted = Outcome {
        admitted: true,
        now_us: T0 + 2,
        counters: vec![state(9, false, T0 + 40 * S)],
    };
    cache.learn(&cfg, std::slice::from_ref(&budget), 1, &admitted, T0 + 2);
    assert!(cache.lookup(&cfg, &specs, 5, T0 + 3).is_none());
    // The rule's fullness for cost 5 is still known (its level did not change).
    let rule_only = cache
        .lookup(&cfg, std::slice::from_ref(&rule), 5, T0 + 3)
        .expect("the rule alone is still full for 5");
    assert_eq!(rule_only.counters[0].free_at_us, T0 + 20 * S);
}

#[test]
fn an_older_outcome_never_overwrites_a_newer_one() {
    let cfg = compiled(ONE);
    let cache = cache_for(&cfg, 16);
    let c = spec("rl:{ip:1}:b:60", 1, false);
    let full = Outcome {
        admitted: true,
        now_us: T0 + 10,
        counters: vec![state(1, false, T0 + 10 * S)],
    };
    let older_room = Outcome {
        admitted: true,
        now_us: T0 + 5,
        counters: vec![state(0, false, T0 + 5)],
    };
    cache.learn(&cfg, std::slice::from_ref(&c), 1, &full, T0);
    cache.learn(&cfg, std::slice::from_ref(&c), 1, &older_room, T0);
    assert!(
        cache
            .lookup(&cfg, std::slice::from_ref(&c), 1, T0 + 20)
            .is_some()
    );
}

#[test]
fn a_configuration_change_empties_the_cache_and_old_outcomes_are_not_learnt() {
    let cfg = compiled(ONE);
    let cache = cache_for(&cfg, 16);
    let c = spec("rl:{ip:1}:b:60", 1, false);
    let out = Outcome {
        admitted: false,
        now_us: T0,
        counters: vec![state(1, true, T0 + 10 * S)],
    };
    cache.learn(&cfg, std::slice::from_ref(&c), 1, &out, T0);
    assert_eq!(cache.len(), 1);
    // The same text compiled again is a new configuration all the same.
    let next = compiled(ONE);
    assert!(
        cache
            .lookup(&next, std::slice::from_ref(&c), 1, T0)
            .is_none()
    );
    assert!(cache.is_empty());
    // An outcome decided under the previous configuration arrives late.
    cache.learn(&cfg, std::slice::from_ref(&c), 1, &out, T0);
    assert!(cache.is_empty());
    assert!(
        cache
            .lookup(&next, std::slice::from_ref(&c), 1, T0)
            .is_none()
    );
}

#[test]
fn a_changed_limit_or_window_for_the_same_key_is_unknown() {
    let cfg = compiled(ONE);
    let cache = cache_for(&cfg, 16);
    let c = spec("rl:{ip:1}:b:60", 1, false);
    let out = Outcome {
        admitted: false,
        now_us: T0,
        counters: vec![state(1, true, T0 + 10 * S)],
    };
    cache.learn(&cfg, std::slice::from_ref(&c), 1, &out, T0);
    let mut raised = c.clone();
    raised.limit = 2;
    assert!(cache.lookup(&cfg, &[raised], 1, T0).is_none());
    let mut longer = c;
    longer.window_us *= 2;
    assert!(cache.lookup(&cfg, &[longer], 1, T0).is_none());
}

#[test]
fn rotating_counters_never_grow_the_cache_past_its_cap() {
    let cfg = compiled(ONE);
    let cache = cache_for(&cfg, 8);
    let mut now = T0;
    for i in 0..1_000u64 {
        let c = spec(&format!("rl:{{key:{i}}}:b:60"), 1, false);
        let out = Outcome {
            admitted: false,
            now_us: now,
            counters: vec![state(1, true, now + 60 * S)],
        };
        cache.learn(&cfg, &[c], 1, &out, now);
        assert!(cache.len() <= 8, "{} entries", cache.len());
        now += 10_000;
    }
    assert_eq!(cache.len(), 8);
    // Past their horizon the old entries are swept for new ones.
    now += KNOWLEDGE_US;
    let fresh = spec("rl:{key:fresh}:b:60", 1, false);
    let out = Outcome {
        admitted: false,
        now_us: now,
        counters: vec![state(1, true, now + 60 * S)],
    };
    cache.learn(&cfg, std::slice::from_ref(&fresh), 1, &out, now);
    assert!(cache.lookup(&cfg, &[fresh], 1, now + 1).is_some());
}

#[test]
fn a_full_cache_refuses_new_counters_while_its_entries_are_live() {
    let cfg = compiled(ONE);
    let cache = cache_for(&cfg, 2);
    let learn = |name: &str| {
        let c = spec(name, 1, false);
        let out = Outcome {
            admitted: false,
            now_us: T0,
            counters: vec![state(1, true, T0 + 60 * S)],
        };
        cache.learn(&cfg, std::slice::from_ref(&c), 1, &out, T0);
        cache.lookup(&cfg, &[c], 1, T0 + 1).is_some()
    };
    assert!(learn("a"));
    assert!(learn("b"));
    assert!(!learn("c"), "refused at the cap");
    assert!(learn("a"), "known entries still update");
}

// The cache inside the decision.

/// A memory store that counts the calls reaching it.
struct Counting {
    inner: MemoryStore,
    calls: AtomicU64,
    fail: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl CounterStore for Counting {
    async fn check_and_record_weighted(
        &self,
        shard: &str,
        counters: &[CounterSpec],
        cost: u64,
    ) -> Result<Outcome, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Timeout(1));
        }
        self.inner
            .check_and_record_weighted(shard, counters, cost)
            .await
    }

    async fn peek(&self, shard: &str, counters: &[CounterSpec]) -> Result<Outcome, StoreError> {
        self.inner.peek(shard, counters).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "counting"
    }
}

const RULED: &str = r#"
default_tier: free
fail_open: false
tiers:
  - name: free
    limits:
      - {limit: 4, window_seconds: 1}
      - {limit: 20, window_seconds: 60}
    endpoints:
      /a:
        limits: [{limit: 2, window_seconds: 1}, {limit: 5, window_seconds: 30}]
      /b: 3
      /s:
        limits: [{limit: 1, window_seconds: 2}]
        shadow: true
      /c:
        limits: [{limit: 6, window_seconds: 2}]
        cost: 3
"#;

fn setup(
    yaml: &str,
    capacity: usize,
) -> (
    Arc<ManualClock>,
    Arc<Counting>,
    Decider,
    live_config::SharedConfig,
) {
    let clock = Arc::new(ManualClock::new(T0));
    let store = Arc::new(Counting {
        inner: MemoryStore::with_clock(clock.clone()),
        calls: AtomicU64::new(0),
        fail: Default::default(),
    });
    let live = live_config::shared(CompiledConfig::compile(parse_yaml(yaml).unwrap()).unwrap());
    let decider = Decider::with_deny_cache(live.clone(), store.clone(), clock.clone(), capacity);
    (clock, store, decider, live)
}

fn req(who: &str, path: &str) -> DecisionRequest {
    DecisionRequest {
        ip: "10.0.0.1".into(),
        api_key: Some(who.into()),
        method: "GET".into(),
        path: path.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_full_rule_is_answered_from_the_cache_and_the_other_endpoint_still_asks() {
    let (clock, store, d, _live) = setup(RULED, DEFAULT_CAPACITY);
    // The same decisions without a cache, on a store of their own.
    let plain = Decider::with_deny_cache(
        live_config::shared(CompiledConfig::compile(parse_yaml(RULED).unwrap()).unwrap()),
        Arc::new(MemoryStore::with_clock(clock.clone())),
        clock.clone(),
        0,
    );
    let both = async |path: &str| {
        let a = d.decide(&req("k", path)).await;
        let b = plain.decide(&req("k", path)).await;
        assert!(!b.cached);
        assert_eq!(a.response, b.response, "{path}");
        a
    };
    for _ in 0..2 {
        assert_eq!(both("/a").await.response.verdict, Verdict::Allow);
    }
    // The second request filled /a's 1 s window: learnt from its outcome.
    let calls = store.calls.load(Ordering::SeqCst);
    clock.advance(1_000);
    let denied = both("/a").await;
    assert!(denied.cached);
    assert_eq!(denied.response.verdict, Verdict::Deny);
    assert_eq!(
        denied.response.deny_for_ms,
        Some(999),
        "free 1 s after the first request, 1 ms later"
    );
    clock.advance(100_000);
    assert_eq!(both("/a").await.response.deny_for_ms, Some(899));
    assert_eq!(store.calls.load(Ordering::SeqCst), calls, "no store call");
    // The other endpoint of the same identity is admitted by the store.
    let other = both("/b").await;
    assert_eq!(other.response.verdict, Verdict::Allow);
    assert!(!other.cached);
    assert_eq!(store.calls.load(Ordering::SeqCst), calls + 1);
    // Once /a's window has room, the store decides again.
    clock.advance(900_000);
    let room = both("/a").await;
    assert_eq!(room.response.verdict, Verdict::Allow);
    assert!(!room.cached);
}

#[tokio::test]
async fn a_store_error_empties_the_cache() {
    let (clock, store, d, _live) = setup(RULED, DEFAULT_CAPACITY);
    for _ in 0..3 {
        d.decide(&req("k", "/a")).await;
    }
    assert!(!d.deny_cache().is_empty());
    store.fail.store(true, Ordering::SeqCst);
    let failed = d.decide(&req("k", "/b")).await;
    assert_eq!(failed.response.verdict, Verdict::Unavailable);
    assert!(d.deny_cache().is_empty());
    store.fail.store(false, Ordering::SeqCst);
    clock.advance(1);
    assert!(
        !d.decide(&req("k", "/a")).await.cached,
        "asks the store again"
    );
}

#[tokio::test]
async fn a_configuration_swap_empties_the_cache() {
    let (_clock, _store, d, live) = setup(RULED, DEFAULT_CAPACITY);
    for _ in 0..3 {
        d.decide(&req("k", "/a")).await;
    }
    assert!(d.decide(&req("k", "/a")).await.cached);
    live.store(Arc::new(
        CompiledConfig::compile(parse_yaml(RULED).unwrap()).unwrap(),
    ));
    let after = d.decide(&req("k", "/a")).await;
    assert!(!after.cached);
    assert_eq!(
        after.response.verdict,
        Verdict::Deny,
        "the store still says full"
    );
}

#[tokio::test]
async fn rotating_api_keys_never_grow_the_decision_cache_past_its_cap() {
    let (clock, _store, d, _live) = setup(RULED, 50);
    for i in 0..2_000 {
        let who = format!("fake-{i}");
        for _ in 0..3 {
            d.decide(&req(&who, "/a")).await;
        }
        assert!(d.deny_cache().len() <= 50, "{}", d.deny_cache().len());
        clock.advance(100);
    }
}

// Property: with and without the cache, the same answers and the same counters.

#[derive(Debug, Clone)]
struct Step {
    gap_us: u64,
    /// (identity, path) of each request; more than one goes as a batch.
    requests: Vec<(usize, usize)>,
}

const PATHS: [&str; 5] = ["/a", "/b", "/s", "/other", "/c"];

const CHANGED: &str = r#"
default_tier: free
fail_open: false
tiers:
  - name: free
    limits:
      - {limit: 3, window_seconds: 1}
    endpoints:
      /a:
        limits: [{limit: 1, window_seconds: 1}]
        shadow: true
      /b: 2
      /c:
        limits: [{limit: 2, window_seconds: 1}]
        cost: 2
"#;

fn steps() -> impl Strategy<Value = (Vec<Step>, usize)> {
    let gap = prop_oneof![
        4 => 0u64..2_000,
        3 => 0u64..300_000,
        1 => 0u64..3_000_000,
    ];
    let request = (0usize..2, 0usize..PATHS.len());
    let step = (gap, prop::collection::vec(request, 1..5))
        .prop_map(|(gap_us, requests)| Step { gap_us, requests });
    (prop::collection::vec(step, 1..120), 0usize..150)
}

fn timeline_matches(
    steps: &[Step],
    change_at: usize,
    hits: &AtomicU64,
) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (clock, with_store, with, with_live) = setup(RULED, DEFAULT_CAPACITY);
    let without_store = Arc::new(MemoryStore::with_clock(clock.clone()));
    let without_live =
        live_config::shared(CompiledConfig::compile(parse_yaml(RULED).unwrap()).unwrap());
    // Capacity 0: nothing is ever learnt, every request goes to the store.
    let without = Decider::with_deny_cache(
        without_live.clone(),
        without_store.clone(),
        clock.clone(),
        0,
    );
    let who = ["k0", "k1"];
    for (i, step) in steps.iter().enumerate() {
        if i == change_at {
            for live in [&with_live, &without_live] {
                live.store(Arc::new(
                    CompiledConfig::compile(parse_yaml(CHANGED).unwrap()).unwrap(),
                ));
            }
        }
        clock.advance(step.gap_us);
        let batch: Vec<DecisionRequest> = step
            .requests
            .iter()
            .map(|&(w, p)| req(who[w], PATHS[p]))
            .collect();
        let (a, b) = if batch.len() == 1 {
            (
                vec![rt.block_on(with.decide(&batch[0]))],
                vec![rt.block_on(without.decide(&batch[0]))],
            )
        } else {
            (
                rt.block_on(with.decide_batch(&batch)),
                rt.block_on(without.decide_batch(&batch)),
            )
        };
        for (j, (a, b)) in a.iter().zip(&b).enumerate() {
            if a.cached {
                hits.fetch_add(1, Ordering::Relaxed);
            }
            prop_assert!(!b.cached);
            prop_assert_eq!(&a.response, &b.response, "step {} request {}", i, j);
            prop_assert_eq!(&a.shadow_denial, &b.shadow_denial);
        }
        // The same counters recorded: every counter of every identity and path reads the
        // same in both stores.
        for w in who {
            for p in PATHS {
                let r = req(w, p);
                let sa = counters(&with_live, &with_store.inner, &r, &rt);
                let sb = counters(&without_live, without_store.as_ref(), &r, &rt);
                prop_assert_eq!(sa, sb, "counters of {} {} after step {}", w, p, i);
            }
        }
    }
    Ok(())
}

/// Every counter `r` needs, read without recording.
fn counters(
    live: &live_config::SharedConfig,
    store: &dyn CounterStore,
    r: &DecisionRequest,
    rt: &tokio::runtime::Runtime,
) -> Option<Vec<CounterState>> {
    let cfg = live.load();
    match crate::decision::plan(&cfg, r) {
        crate::decision::Plan::Count(c) => rt
            .block_on(store.peek(&c.who.id, &c.specs))
            .ok()
            .map(|o| o.counters),
        crate::decision::Plan::Done(_) => None,
    }
}

#[test]
fn with_or_without_the_cache_every_answer_and_counter_is_the_same() {
    let hits = AtomicU64::new(0);
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |((steps, change_at) in steps())| {
        timeline_matches(&steps, change_at, &hits)?;
    });
    assert!(
        hits.load(Ordering::Relaxed) > 0,
        "the timelines never answered from the cache: the property was not exercised"
    );
}
