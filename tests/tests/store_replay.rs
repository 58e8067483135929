//! One request, one count: a script call that reaches Redis twice (a client sending it again
//! after losing the reply) records its request once. On a Redis Cluster, whose client retries
//! by itself, the connection is reset between the script and its reply by a proxy; on a
//! single node the same call is sent twice. Then what bounds the record that makes this work.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control_plane::store::keys::{budget_key, rule_key, seen_key};
use control_plane::store::{
    Algorithm, CounterSpec, CounterStore, ManualClock, Outcome, RedisStore, RedisStoreOptions,
    StoreError, replay_horizon,
};
use rl_tests::fixtures::{Config, Tier};
use rl_tests::{
    ControlPlaneBuilder, RedisCluster, RedisServer, TcpProxy, client_from, control_plane_bin,
    post_json,
};
use serde_json::json;

const MINUTE_US: u64 = 60_000_000;
/// Generous: a loaded test machine must not turn a call into a timeout.
const TIMEOUT: Duration = Duration::from_secs(2);

fn spec(key: &str, limit: u64) -> CounterSpec {
    CounterSpec {
        key: key.into(),
        limit,
        window_us: MINUTE_US,
        shadow: false,
        algorithm: Algorithm::Exact,
    }
}

fn store_at(url: &str, cluster: bool, clock: Option<Arc<ManualClock>>) -> RedisStore {
    let options = RedisStoreOptions {
        cluster,
        timeout: TIMEOUT,
        clock: clock.map(|c| c as _),
        ..RedisStoreOptions::default()
    };
    RedisStore::new(url, options).expect("store")
}

fn zcard(conn: &mut redis::Connection, key: &str) -> u64 {
    redis::cmd("ZCARD").arg(key).query(conn).expect("ZCARD")
}

/// redis-rs's cluster client sends a command again when its connection drops before the
/// reply. The proxy in front of the identity's node lets the script run, then closes the
/// connection instead of passing the answer on: the client reconnects and the script runs a
/// second time, with the same arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_retried_after_a_lost_reply_is_counted_once_on_a_cluster() {
    let cluster = RedisCluster::start_masters_behind_proxies();
    let store = store_at(&cluster.urls(), true, None);
    let identity = "ip:10.7.7.7";
    let budget = budget_key(identity, 60, Algorithm::Exact);
    // Connects, and loads the script on the identity's node, so that the call under test is a
    // single EVALSHA; its own counter leaves the budget untouched.
    let warm_up = [spec(
        &rule_key(identity, 60, Algorithm::Exact, "/warm-up"),
        10,
    )];
    let out = store
        .check_and_record(identity, &warm_up)
        .await
        .expect("warm-up call");
    assert!(out.admitted);

    let proxy = cluster.proxy_of_slot(cluster.keyslot(&budget));
    let sent_before = proxy.sent_count(budget.as_bytes());
    proxy.drop_next_reply_to(budget.as_bytes());
    let out = store
        .check_and_record(identity, &[spec(&budget, 10)])
        .await
        .expect("the client retries the call and gets an answer");

    assert_eq!(
        proxy.replies_dropped(),
        1,
        "the proxy lost the script's reply"
    );
    assert_eq!(
        proxy.sent_count(budget.as_bytes()) - sent_before,
        2,
        "the script reached Redis twice: sent, then sent again after the reset"
    );
    let stored = cluster.cli(&["ZCARD", &budget]);
    assert_eq!(stored.trim(), "1", "one request, one entry");
    assert!(out.admitted, "the retried call answers as the first did");
    assert_eq!(
        out.counters[0].count, 1,
        "the answer counts the request once"
    );
}

/// The same through the control plane's decision endpoint: the retried decision is one
/// request less in `remaining`, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_retried_inside_the_cluster_client_is_counted_once() {
    let cluster = RedisCluster::start_masters_behind_proxies();
    let config = Config::new()
        .fail_open(false)
        .tier(Tier::new("free", 10).window(60))
        .yaml();
    let cp = ControlPlaneBuilder::new(control_plane_bin!(), &config)
        .redis(cluster.urls())
        .env("RATE_LIMIT_REDIS_CLUSTER", "true")
        .env(
            "RATE_LIMIT_REDIS_TIMEOUT_MS",
            &TIMEOUT.as_millis().to_string(),
        )
        .start();
    let client = client_from(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let url = cp.url(rl_wire::DECISION_PATH);
    let body = json!({"ip": "10.8.8.8", "method": "GET", "path": "/api/v1/request"});
    let first = post_json(&client, &url, &body).await;
    assert_eq!(first["verdict"], "allow", "{first}");
    assert_eq!(first["counter"]["remaining"], 9, "{first}");

    let budget = budget_key("ip:10.8.8.8", 60, Algorithm::Exact);
    let proxy = cluster.proxy_of_slot(cluster.keyslot(&budget));
    proxy.drop_next_reply_to(budget.as_bytes());
    let second = post_json(&client, &url, &body).await;
    assert_eq!(proxy.replies_dropped(), 1, "the proxy lost the reply");
    assert_eq!(second["verdict"], "allow", "{second}");
    assert_eq!(
        second["counter"]["remaining"], 8,
        "one request, one count: {second}"
    );
    assert_eq!(cluster.cli(&["ZCARD", &budget]).trim(), "2");
}

/// A single node's client does not retry, but anything that sends a call again (a proxy, a
/// future client) is covered by the script: the same call sent twice records once, and both
/// answers say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_call_sent_twice_records_its_request_once() {
    let redis = RedisServer::start();
    let store = store_at(&redis.url(), false, None);
    let identity = "key:twice";
    let counters = [
        spec(&budget_key(identity, 60, Algorithm::Exact), 5),
        spec(&rule_key(identity, 60, Algorithm::Exact, "/x"), 5),
    ];
    let call = store.record_call(identity, &counters);
    let first = store.send(&call).await.expect("first send");
    let again = store.send(&call).await.expect("second send");
    assert!(first.admitted && again.admitted);
    for out in [&first, &again] {
        let counts: Vec<u64> = out.counters.iter().map(|c| c.count).collect();
        assert_eq!(counts, [1, 1], "{out:?}");
    }
    assert_eq!(
        again.counters[0].free_at_us, first.counters[0].free_at_us,
        "the replay reports the entry the first send recorded"
    );
    let mut conn = redis.connection();
    assert_eq!(zcard(&mut conn, &counters[0].key), 1);
    assert_eq!(zcard(&mut conn, &counters[1].key), 1);

    // A new request is a new call, counted on top.
    let next = store
        .check_and_record(identity, &counters)
        .await
        .expect("next request");
    assert_eq!(next.counters[0].count, 2);
    // A full counter does not turn a replay into a denial: its request was admitted.
    for _ in 0..3 {
        store
            .check_and_record(identity, &counters)
            .await
            .expect("fill");
    }
    let replay = store.send(&call).await.expect("replay at the limit");
    assert!(replay.admitted, "{replay:?}");
    assert_eq!(replay.counters[0].count, 5);
    assert_eq!(zcard(&mut conn, &counters[0].key), 5);
}

/// The same for slotted counters, on their own and beside an exact log: the guard brackets the
/// counters, whatever they store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slotted_call_sent_twice_records_its_request_once() {
    let redis = RedisServer::start();
    let store = store_at(&redis.url(), false, None);
    let identity = "key:twice-slotted";
    let slotted = Algorithm::Slotted { slot_us: 1_000_000 };
    let counters = [
        CounterSpec {
            algorithm: slotted,
            ..spec(&budget_key(identity, 60, slotted), 3)
        },
        spec(&rule_key(identity, 60, Algorithm::Exact, "/x"), 5),
    ];
    let call = store.record_call(identity, &counters);
    let first = store.send(&call).await.expect("first send");
    let again = store.send(&call).await.expect("second send");
    assert!(first.admitted && again.admitted);
    for out in [&first, &again] {
        let counts: Vec<u64> = out.counters.iter().map(|c| c.count).collect();
        assert_eq!(counts, [1, 1], "{out:?}");
    }
    assert_eq!(again.counters[0].free_at_us, first.counters[0].free_at_us);
    let mut conn = redis.connection();
    let total: u64 = redis::cmd("HGET")
        .arg(&counters[0].key)
        .arg("t")
        .query(&mut conn)
        .expect("HGET");
    assert_eq!(total, 1);
    for _ in 0..2 {
        store
            .check_and_record(identity, &counters)
            .await
            .expect("fill");
    }
    // At the slotted limit, the replay is still the admitted request it was, counted once.
    let replay = store.send(&call).await.expect("replay at the limit");
    assert!(replay.admitted, "{replay:?}");
    assert_eq!(replay.counters[0].count, 3);
    let denied = store
        .check_and_record(identity, &counters)
        .await
        .expect("over the limit");
    assert!(!denied.admitted);
    assert_eq!(zcard(&mut conn, &counters[1].key), 3);
}

/// What a call that fails after reaching Redis leaves behind: the single-node client reports
/// the lost reply as an error (the control plane then fails open or closed), yet the script ran
/// and the request is counted. Sending the call again does not count it a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_reply_was_lost_stays_recorded_once() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.port());
    let store = store_at(&format!("redis://127.0.0.1:{}/", proxy.port()), false, None);
    let identity = "key:lost";
    let counters = [spec(&budget_key(identity, 60, Algorithm::Exact), 5)];
    // Connects and loads the script.
    store
        .check_and_record(
            "key:other",
            &[spec(&budget_key("key:other", 60, Algorithm::Exact), 5)],
        )
        .await
        .expect("warm-up call");

    let call = store.record_call(identity, &counters);
    proxy.drop_next_reply_to(counters[0].key.as_bytes());
    let lost = store.send(&call).await;
    assert!(
        matches!(lost, Err(StoreError::Backend(_))),
        "a lost reply is an outage to the caller: {lost:?}"
    );
    assert_eq!(proxy.replies_dropped(), 1);
    let mut conn = redis.connection();
    assert_eq!(
        zcard(&mut conn, &counters[0].key),
        1,
        "the request was counted although its call failed"
    );

    let retried = store
        .send(&call)
        .await
        .expect("sent again after reconnecting");
    assert!(retried.admitted);
    assert_eq!(retried.counters[0].count, 1);
    assert_eq!(zcard(&mut conn, &counters[0].key), 1);
}

/// A denied request records nothing and leaves no nonce: sent again once its counter has room,
/// it is judged afresh and recorded, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_call_sent_again_is_judged_afresh_and_recorded_once() {
    let redis = RedisServer::start();
    let store = store_at(&redis.url(), false, None);
    let identity = "key:denied";
    let window = Duration::from_millis(300);
    let counters = [CounterSpec {
        key: budget_key(identity, 60, Algorithm::Exact),
        limit: 1,
        window_us: window.as_micros() as u64,
        shadow: false,
        algorithm: Algorithm::Exact,
    }];
    let first = store
        .check_and_record(identity, &counters)
        .await
        .expect("first request");
    assert!(first.admitted);
    let call = store.record_call(identity, &counters);
    let denied = store.send(&call).await.expect("second request");
    assert!(!denied.admitted, "{denied:?}");

    // Redis's clock decides when the first entry leaves: wait until Redis says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store
        .peek(identity, &counters)
        .await
        .expect("peek")
        .counters[0]
        .count
        > 0
    {
        assert!(Instant::now() < deadline, "the entry never left its window");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admitted = store.send(&call).await.expect("sent again");
    assert!(admitted.admitted, "{admitted:?}");
    assert_eq!(admitted.counters[0].count, 1);
    let replay = store.send(&call).await.expect("sent a third time");
    assert!(replay.admitted);
    assert_eq!(replay.counters[0].count, 1, "recorded once");
}

/// The seen record holds the nonces of recorded requests for at least the replay horizon and
/// at most twice it: it is trimmed and its expiry armed once per horizon (the member "~"
/// marks until when), so older nonces are dropped by the first recording after that, and the
/// key expires with the last of them. Reports and denials add nothing to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seen_record_is_bounded_by_the_replay_horizon() {
    let redis = RedisServer::start();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64;
    let clock = Arc::new(ManualClock::new(now));
    let store = store_at(&redis.url(), false, Some(clock.clone()));
    let identity = "ip:10.9.9.9";
    let seen = seen_key(identity);
    let counters = [spec(&budget_key(identity, 60, Algorithm::Exact), 1_000)];
    let mut conn = redis.connection();

    store.peek(identity, &counters).await.expect("peek");
    let exists: bool = redis::cmd("EXISTS").arg(&seen).query(&mut conn).unwrap();
    assert!(!exists, "a report records no nonce");

    for _ in 0..50 {
        store
            .check_and_record(identity, &counters)
            .await
            .expect("record");
    }
    assert_eq!(nonces(&mut conn, &seen), 50);
    let horizon = replay_horizon(TIMEOUT);
    let ttl_ms: i64 = redis::cmd("PTTL").arg(&seen).query(&mut conn).unwrap();
    assert!(
        ttl_ms > horizon.as_millis() as i64 && ttl_ms as u128 <= 2 * horizon.as_millis() + 1,
        "the record expires between one and two horizons later: PTTL {ttl_ms} ms, horizon \
         {horizon:?}"
    );

    let denied_call = [spec(&rule_key(identity, 60, Algorithm::Exact, "/full"), 0)];
    let denied = store
        .check_and_record(identity, &denied_call)
        .await
        .expect("denied");
    assert!(!denied.admitted);
    assert_eq!(
        nonces(&mut conn, &seen),
        50,
        "a denied request leaves no nonce"
    );

    let h = horizon.as_micros() as u64;
    clock.set(now + h);
    store
        .check_and_record(identity, &counters)
        .await
        .expect("record");
    assert_eq!(
        nonces(&mut conn, &seen),
        51,
        "within the horizon the record was armed for, nothing is trimmed"
    );
    clock.set(now + h + 1);
    store
        .check_and_record(identity, &counters)
        .await
        .expect("record");
    assert_eq!(
        nonces(&mut conn, &seen),
        2,
        "the next recording after it drops the nonces a full horizon old"
    );
}

/// The nonces in a seen record (its members but the marker "~").
fn nonces(conn: &mut redis::Connection, seen: &str) -> usize {
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(seen)
        .arg(0)
        .arg(-1)
        .query(conn)
        .expect("ZRANGE");
    members.iter().filter(|m| *m != "~").count()
}

/// A batch sent twice (a script call that reached Redis twice): each admitted request is
/// recorded once and answers as it did, a denied one is judged afresh and stays unrecorded.
/// `stored` reads a number from Redis (`ZCARD`, `HGET`).
async fn a_batch_sent_twice_records_each_request_once(
    store: &RedisStore,
    stored: &dyn Fn(&[&str]) -> u64,
) {
    let (a, b) = ("key:batch-twice-a", "key:batch-twice-b");
    let a_counters = [
        spec(&budget_key(a, 60, Algorithm::Exact), 2),
        spec(&rule_key(a, 60, Algorithm::Exact, "/x"), 5),
    ];
    let slotted = Algorithm::Slotted { slot_us: 1_000_000 };
    let b_counters = [CounterSpec {
        algorithm: slotted,
        ..spec(&budget_key(b, 60, slotted), 5)
    }];
    let calls = store.record_calls(&[
        (a, &a_counters),
        (b, &b_counters),
        (a, &a_counters),
        (a, &a_counters),
        (b, &b_counters),
    ]);
    let outcomes = |results: Vec<Result<Outcome, StoreError>>| -> Vec<(bool, u64)> {
        results
            .into_iter()
            .map(|r| {
                let out = r.expect("store");
                (out.admitted, out.counters[0].count)
            })
            .collect()
    };
    let first = outcomes(store.send_many(&calls).await);
    assert_eq!(
        first,
        [(true, 1), (true, 1), (true, 2), (false, 2), (true, 2)]
    );
    // A replay reports its counters as they are now: every request of the batch in them.
    let again = outcomes(store.send_many(&calls).await);
    assert_eq!(
        again,
        [(true, 2), (true, 2), (true, 2), (false, 2), (true, 2)],
        "the same batch again: admitted as it was, denied judged afresh, nothing counted twice"
    );
    assert_eq!(stored(&["ZCARD", &budget_key(a, 60, Algorithm::Exact)]), 2);
    assert_eq!(
        stored(&["ZCARD", &rule_key(a, 60, Algorithm::Exact, "/x")]),
        2
    );
    assert_eq!(stored(&["HGET", &budget_key(b, 60, slotted), "t"]), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_twice_records_each_request_once_on_a_single_node() {
    let redis = RedisServer::start();
    let store = store_at(&redis.url(), false, None);
    let stored = |args: &[&str]| -> u64 {
        redis::cmd(args[0])
            .arg(&args[1..])
            .query(&mut redis.connection())
            .expect("query")
    };
    a_batch_sent_twice_records_each_request_once(&store, &stored).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_twice_records_each_request_once_on_a_cluster() {
    let cluster = RedisCluster::start_masters();
    let store = store_at(&cluster.urls(), true, None);
    let stored = |args: &[&str]| -> u64 {
        let reply = cluster.cli(args);
        reply
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{args:?}: {reply}"))
    };
    a_batch_sent_twice_records_each_request_once(&store, &stored).await;
}
