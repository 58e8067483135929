//! The control plane's host clock does not matter: with Redis, time comes from the Redis
//! server (`TIME` in the script); in memory, from a monotonic clock. The control plane runs
//! under libfaketime (Debian `faketime`), started days off and then jumped by hours.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rl_tests::fixtures::one_tier;
use rl_tests::{
    ControlPlane, ControlPlaneBuilder, RedisServer, client_from, control_plane_bin, post_json,
};
use serde_json::{Value, json};

fn libfaketime() -> PathBuf {
    for candidate in [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ] {
        if Path::new(candidate).is_file() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "libfaketime not found: install it with `apt-get install -y faketime` (scripts/setup.sh does)"
    );
}

/// `YYYY-MM-DD` of a Unix time.
fn time_prefix(unix: u64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .expect("valid time")
        .date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A control plane whose wall clock is whatever `clock_file` says (libfaketime syntax,
/// re-read on every call); its monotonic clock is left alone, as a real clock step would.
fn faked(redis: Option<&RedisServer>, clock_file: &Path) -> ControlPlane {
    let mut builder = ControlPlaneBuilder::new(control_plane_bin!(), &one_tier(3, 60).yaml())
        .env("LD_PRELOAD", &libfaketime().to_string_lossy())
        .env("FAKETIME_TIMESTAMP_FILE", &clock_file.to_string_lossy())
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    if let Some(redis) = redis {
        builder = builder.redis(redis.url());
    }
    builder.start()
}

/// The `retry_after` of a denial taken after `earlier`'s: real time only moves it down, by
/// whole seconds, so it is the same or one less when a second boundary passed in between. A
/// clock step that leaked into the window would move it by hours or days.
fn assert_retry_after_kept(earlier: &Value, later: &Value, what: &str) {
    let seconds = |v: &Value| {
        v["counter"]["retry_after"]
            .as_u64()
            .unwrap_or_else(|| panic!("no retry_after in {v}"))
    };
    let (earlier, later) = (seconds(earlier), seconds(later));
    assert!(
        later <= earlier && earlier - later <= 1,
        "{what}: retry_after {earlier} s became {later} s"
    );
}

async fn decide(cp: &ControlPlane) -> Value {
    let body = json!({"ip": "10.9.9.9", "method": "GET", "path": "/"});
    let client = client_from(IpAddr::V4(Ipv4Addr::LOCALHOST));
    post_json(&client, &cp.url(rl_wire::DECISION_PATH), &body).await
}

/// Three admitted, then denied; the clock jumps by hours; still denied, nothing reset.
async fn decisions_survive_clock_jumps(redis: Option<&RedisServer>) -> (Value, Value) {
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("faketime");
    std::fs::write(&clock, "-3d\n").unwrap();
    let cp = faked(redis, &clock);
    // The control plane really runs 3 days behind: its own log timestamps say so.
    let first: Value = serde_json::from_str(&cp.output.lines()[0]).unwrap();
    let logged = first["timestamp"].as_str().unwrap().to_string();
    let real_day = time_prefix(unix_now());
    let fake_day = time_prefix(unix_now() - 3 * 86_400);
    assert!(
        logged.starts_with(&fake_day)
            || logged.starts_with(&time_prefix(unix_now() - 3 * 86_400 + 3600)),
        "log timestamp {logged} is not 3 days behind {real_day}"
    );
    for _ in 0..3 {
        assert_eq!(decide(&cp).await["verdict"], "allow");
    }
    let before = decide(&cp).await;
    assert_eq!(before["verdict"], "deny");
    // A step of the wall clock, forwards and back: the window is unaffected.
    std::fs::write(&clock, "+5h\n").unwrap();
    let after_forward = decide(&cp).await;
    assert_eq!(
        after_forward["verdict"], "deny",
        "a forward jump must not expire the window"
    );
    assert_retry_after_kept(&before, &after_forward, "after a forward jump");
    std::fs::write(&clock, "-10d\n").unwrap();
    let after_back = decide(&cp).await;
    assert_eq!(
        after_back["verdict"], "deny",
        "a backward jump must not extend it either"
    );
    assert_retry_after_kept(&after_forward, &after_back, "after a backward jump");
    (before, after_back)
}

#[tokio::test]
async fn redis_backend_judges_by_the_redis_clock() {
    let redis = RedisServer::start();
    let (before, after) = decisions_survive_clock_jumps(Some(&redis)).await;
    // Reset times come from Redis: real time, not the control plane's fake clock.
    let now = unix_now();
    for v in [&before, &after] {
        let reset = v["counter"]["reset"].as_u64().unwrap();
        assert!(
            reset > now && reset <= now + 61,
            "reset {reset} vs real now {now}"
        );
    }
}

#[tokio::test]
async fn memory_backend_runs_on_a_monotonic_clock() {
    let (before, _) = decisions_survive_clock_jumps(None).await;
    // Its Unix times are anchored to the (fake) wall clock at start: 3 days behind.
    let reset = before["counter"]["reset"].as_u64().unwrap();
    assert!(reset < unix_now() - 2 * 86_400, "reset {reset}");
}
