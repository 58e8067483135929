//! Limits have an upper bound, checked by validation: 10^6 per window for the exact
//! sliding log, whose memory grows with the limit. The memory a saturated counter takes
//! in Redis is measured here, through the real script, and docs/OPERATIONS.md must state
//! it (within a tolerance: allocators and Redis versions differ a little).

use std::time::{Duration, Instant};

use control_plane::store::{
    Algorithm, CounterSpec, CounterStore, RedisStore, RedisStoreOptions, keys,
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

/// Rows `| limit | memory | … |` of the table whose header starts with `| saturated counter`.
fn documented_sizes(doc: &str) -> Vec<(u64, f64)> {
    let mut lines = doc
        .lines()
        .skip_while(|l| !l.starts_with("| saturated counter"))
        .skip(2);
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
    let documented = documented_sizes(&doc);
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
