//! Limits have an upper bound, checked by validation: 10^6 per window for the exact
//! sliding log, whose memory grows with the limit; 2^32 − 1 for a slotted counter, whose
//! memory does not. The memory a saturated counter takes in Redis is measured here, through
//! the real script, and docs/OPERATIONS.md must state it (within a tolerance: allocators and
//! Redis versions differ a little); a slotted counter must stay within 2 KiB at every limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use control_plane::store::{
    Algorithm, Clock, CounterSpec, CounterStore, ManualClock, RedisStore, RedisStoreOptions, keys,
};
use rl_tests::admin::Admin;
use rl_tests::fixtures::{Config, Rule, Tier};
use rl_tests::{ControlPlane, ControlPlaneBuilder, RedisServer, control_plane_bin, repo_root};

const ADMIN_KEY: &str = "limit-bounds-admin-key-0123";
/// The bound of the exact sliding log.
const EXACT_LOG_BOUND: u64 = control_plane::config::MAX_EXACT_LOG_LIMIT;

#[tokio::test]
async fn limits_above_the_exact_log_bound_are_refused() {
    let cp = ControlPlaneBuilder::new(
        control_plane_bin!(),
        &Config::new().tier(Tier::new("free", 10)).yaml(),
    )
    .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
    .start();
    let admin = Admin::new(ADMIN_KEY);
    let over = EXACT_LOG_BOUND + 1;
    let cases = [
        (
            Config::new().tier(Tier::new("free", over)),
            "tiers[0].requests_per_window",
        ),
        (
            Config::new().tier(Tier::unlimited("free").endpoint("/x", over)),
            "tiers[0].endpoints./x",
        ),
        (
            Config::new().tier(Tier::new("free", u64::MAX)),
            "tiers[0].requests_per_window",
        ),
        (
            Config::new().tier(Tier::windows("free", &[(10, 1), (over, 60)])),
            "tiers[0].limits[1].limit",
        ),
        (
            Config::new().tier(Tier::unlimited("free").rule("/x", Rule::new(&[(over, 1)]))),
            "tiers[0].endpoints./x.limits[0].limit",
        ),
    ];
    for (config, field) in cases {
        let put = admin.put_yaml(&cp, &config.yaml()).await;
        assert_eq!(put.status, 400, "{put:?}");
        assert_eq!(put.body["error"]["field"], field, "{put:?}");
        let message = put.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("1000000"), "the bound is named: {message}");
    }
    // The bound on every window: the rule's over a longer window than the tier's, so that the
    // tier's does not make it useless.
    let at_bound = Config::new().tier(
        Tier::windows("free", &[(EXACT_LOG_BOUND, 60)])
            .window(120)
            .endpoint("/x", EXACT_LOG_BOUND),
    );
    let put = admin.put_yaml(&cp, &at_bound.yaml()).await;
    assert_eq!(put.status, 200, "{put:?}");

    // A file over the bound is refused at start, naming the field.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("over.yaml");
    std::fs::write(&file, Config::new().tier(Tier::new("free", over)).yaml()).expect("write");
    let path = file.to_string_lossy().to_string();
    let mut proc = ControlPlane::spawn_raw(
        control_plane_bin!(),
        &["--config", &path, "--listen", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(proc.wait_exit(Duration::from_secs(20)), Some(1));
    let text = proc.output.text();
    assert!(
        text.contains("tiers[0].requests_per_window") && text.contains("1000000"),
        "{text}"
    );
}

/// Bytes of the identity's counter keys (`MEMORY USAGE`, all elements counted). The seen
/// record of recent requests (`keys::seen_key`) is left out: it holds only the requests of
/// the last replay horizon, whatever the limit, and docs/OPERATIONS.md states its cost apart.
fn memory_of(redis: &RedisServer, identity: &str) -> u64 {
    let mut conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(keys::identity_pattern(identity))
        .query(&mut conn)
        .expect("KEYS");
    let seen = keys::seen_key(identity);
    assert!(!keys.is_empty(), "no key for {identity}");
    keys.iter()
        .filter(|key| **key != seen)
        .map(|key| {
            redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0)
                .query::<u64>(&mut conn)
                .expect("MEMORY USAGE")
        })
        .sum()
}

/// Sends `limit + 1` requests for one identity through the store (the last one denied:
/// the counter is saturated) and returns the bytes its keys take.
async fn saturate(redis: &RedisServer, store: &RedisStore, limit: u64) -> u64 {
    let identity = format!("ip:198.51.100.{}", limit.ilog10());
    let counters = [CounterSpec {
        key: keys::budget_key(&identity, 86_400, Algorithm::Exact),
        limit,
        // The longest window: nothing leaves it during the test.
        window_us: 86_400_000_000,
        shadow: false,
        algorithm: Algorithm::Exact,
    }];
    let started = Instant::now();
    let (mut sent, mut admitted) = (0, 0);
    while sent <= limit {
        let n = (limit + 1 - sent).min(2_000) as usize;
        let calls: Vec<(&str, &[CounterSpec])> =
            (0..n).map(|_| (identity.as_str(), &counters[..])).collect();
        for result in store.check_and_record_many(&calls).await {
            if result.expect("store call").admitted {
                admitted += 1;
            }
        }
        sent += n as u64;
    }
    assert_eq!(admitted, limit, "exactly the limit admitted");
    let bytes = memory_of(redis, &identity);
    eprintln!(
        "limit {limit}: {bytes} bytes ({:.1} per entry), saturated in {:?}",
        bytes as f64 / limit as f64,
        started.elapsed()
    );
    bytes
}

/// `12.3 KiB` → bytes.
fn parse_size(cell: &str) -> Option<f64> {
    let cell = cell.trim().trim_start_matches('≈').trim();
    let (number, unit) = cell.split_once(' ')?;
    let number: f64 = number.replace(',', "").parse().ok()?;
    let scale = match unit.trim() {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number * scale)
}

/// Rows `| limit | memory | … |` of the table whose header starts with `header`.
fn documented_sizes(doc: &str, header: &str) -> Vec<(u64, f64)> {
    let mut lines = doc.lines().skip_while(|l| !l.starts_with(header)).skip(2);
    let mut rows = Vec::new();
    for line in lines.by_ref().take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        let limit: u64 = cells[0]
            .trim()
            .trim_matches('`')
            .replace(',', "")
            .parse()
            .unwrap_or_else(|_| panic!("limit cell in {line}"));
        let size = parse_size(cells[1]).unwrap_or_else(|| panic!("size cell in {line}"));
        rows.push((limit, size));
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_memory_of_a_saturated_counter_is_measured() {
    let redis = RedisServer::start();
    let options = RedisStoreOptions {
        // Batches of thousands of calls: generous, this is not about latency.
        timeout: Duration::from_secs(60),
        ..RedisStoreOptions::default()
    };
    let store = RedisStore::new(&redis.url(), options).expect("store");
    let doc_path = repo_root().join("docs/OPERATIONS.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/OPERATIONS.md");
    let documented = documented_sizes(&doc, "| saturated counter");
    let limits: Vec<u64> = documented.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        limits,
        [100, 10_000, EXACT_LOG_BOUND],
        "docs/OPERATIONS.md: a `| saturated counter |` table with these limits"
    );
    for (limit, stated) in documented {
        let measured = saturate(&redis, &store, limit).await as f64;
        let ratio = stated / measured;
        assert!(
            (0.8..=1.25).contains(&ratio),
            "docs/OPERATIONS.md states {stated} bytes for a saturated counter of {limit}; \
             measured {measured}"
        );
    }
}

/// The largest limit of a slotted counter.
const SLOTTED_BOUND: u64 = u32::MAX as u64;
/// A slotted counter's memory in Redis at any limit (the target).
const SLOTTED_CEILING: u64 = 2_048;

/// The finest precision a window may have, 120 slots (here 500 ms in 60 s): the most fields.
const SLOTTED_WINDOW_US: u64 = 60_000_000;
const SLOTTED_SLOT_US: u64 = 500_000;

fn slotted_counter(identity: &str, limit: u64) -> [CounterSpec; 1] {
    let algorithm = Algorithm::Slotted {
        slot_us: SLOTTED_SLOT_US,
    };
    [CounterSpec {
        key: keys::budget_key(identity, 60, algorithm),
        limit,
        window_us: SLOTTED_WINDOW_US,
        shadow: false,
        algorithm,
    }]
}

/// Saturates a slotted counter of `limit` with real requests through the script, spread over
/// every slot its window counts (121: the most fields a counter holds), on a manual clock
/// that steps one slot at a time; one more request is denied. Returns its bytes.
async fn saturate_slotted(
    redis: &RedisServer,
    store: &RedisStore,
    clock: &ManualClock,
    limit: u64,
) -> u64 {
    let identity = format!("ip:198.51.101.{}", limit.ilog10());
    let counters = slotted_counter(&identity, limit);
    let slots = SLOTTED_WINDOW_US / SLOTTED_SLOT_US + 1;
    let start = clock.now_us().div_ceil(SLOTTED_SLOT_US) * SLOTTED_SLOT_US;
    let started = Instant::now();
    let mut admitted = 0;
    for slot in 0..slots {
        clock.set(start + slot * SLOTTED_SLOT_US);
        let share = limit / slots + u64::from(slot < limit % slots);
        let mut sent = 0;
        while sent < share {
            let n = (share - sent).min(2_000) as usize;
            let calls: Vec<(&str, &[CounterSpec])> =
                (0..n).map(|_| (identity.as_str(), &counters[..])).collect();
            for result in store.check_and_record_many(&calls).await {
                admitted += u64::from(result.expect("store call").admitted);
            }
            sent += n as u64;
        }
    }
    let over = store
        .check_and_record(&identity, &counters)
        .await
        .expect("store call");
    assert!(!over.admitted, "saturated at {limit}");
    assert_eq!((admitted, over.counters[0].count), (limit, limit));
    let bytes = memory_of(redis, &identity);
    eprintln!(
        "slotted, limit {limit}: {bytes} bytes, saturated in {:?}",
        started.elapsed()
    );
    bytes
}

/// The largest limit cannot be reached one request at a time (4.3 billion calls): the hash is
/// written as the script leaves it after such traffic (121 slots, the counts summing to the
/// limit, its total and lowest slot), and a request through the script must then be refused
/// with the whole limit counted, so the script reads the state as its own. Returns its bytes.
async fn saturate_slotted_at_the_bound(
    redis: &RedisServer,
    store: &RedisStore,
    clock: &ManualClock,
) -> u64 {
    let identity = "ip:198.51.101.255";
    let counters = slotted_counter(identity, SLOTTED_BOUND);
    let slots = SLOTTED_WINDOW_US / SLOTTED_SLOT_US + 1;
    let now = clock.now_us();
    let newest = now / SLOTTED_SLOT_US;
    let mut fields: Vec<(String, u64)> = (0..slots)
        .map(|i| {
            let slot = newest + 1 - slots + i;
            let share = SLOTTED_BOUND / slots + u64::from(i < SLOTTED_BOUND % slots);
            ((slot % 4096).to_string(), share)
        })
        .collect();
    fields.push(("l".into(), newest + 1 - slots));
    fields.push(("t".into(), SLOTTED_BOUND));
    let mut conn = redis.connection();
    let mut hset = redis::cmd("HSET");
    hset.arg(&counters[0].key);
    for (field, value) in &fields {
        hset.arg(field).arg(value);
    }
    hset.query::<u64>(&mut conn).expect("HSET");
    let out = store
        .check_and_record(identity, &counters)
        .await
        .expect("store call");
    assert!(!out.admitted);
    assert_eq!(out.counters[0].count, SLOTTED_BOUND);
    let bytes = memory_of(redis, identity);
    eprintln!("slotted, limit {SLOTTED_BOUND}: {bytes} bytes (state written)");
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_slotted_counter_takes_under_2_kib_at_every_limit() {
    let redis = RedisServer::start();
    let clock = Arc::new(ManualClock::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_micros() as u64,
    ));
    let options = RedisStoreOptions {
        timeout: Duration::from_secs(60),
        clock: Some(clock.clone() as Arc<dyn Clock>),
        ..RedisStoreOptions::default()
    };
    let store = RedisStore::new(&redis.url(), options).expect("store");
    let doc_path = repo_root().join("docs/OPERATIONS.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/OPERATIONS.md");
    let documented = documented_sizes(&doc, "| saturated slotted counter");
    let limits: Vec<u64> = documented.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        limits,
        [100, 1_000, 10_000, 100_000, SLOTTED_BOUND],
        "docs/OPERATIONS.md: a `| saturated slotted counter |` table with these limits"
    );
    for (limit, stated) in documented {
        let measured = if limit == SLOTTED_BOUND {
            saturate_slotted_at_the_bound(&redis, &store, &clock).await
        } else {
            saturate_slotted(&redis, &store, &clock, limit).await
        };
        assert!(
            measured <= SLOTTED_CEILING,
            "a saturated slotted counter of {limit} takes {measured} bytes"
        );
        let ratio = stated / measured as f64;
        assert!(
            (0.8..=1.25).contains(&ratio),
            "docs/OPERATIONS.md states {stated} bytes for a saturated slotted counter of \
             {limit}; measured {measured}"
        );
    }
}
