//! Outgrowing one Redis: the control plane on a 3-master, 3-replica Redis Cluster.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use control_plane::store::Algorithm;
use control_plane::store::keys::{budget_key, rule_key};
use rl_tests::fixtures::{Config, Tier};
use rl_tests::{
    ControlPlane, ControlPlaneBuilder, RedisCluster, client_from, control_plane_bin, post_json,
};
use serde_json::{Value, json};

/// Fail-closed, `limit` per minute (and twice that per hour) for the identity, and `limit`
/// per two minutes for `/api/v1/request`: three windows, each its own key, one slot.
fn config(limit: u64) -> String {
    Config::new()
        .fail_open(false)
        .tier(
            Tier::windows("free", &[(limit, 60), (2 * limit, 3600)])
                .window(120)
                .endpoint("/api/v1/request", limit),
        )
        .yaml()
}

const ADMIN_KEY: &str = "cluster-admin-key-0123456789";

fn client() -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

async fn decide(cp: &ControlPlane, ip: &str) -> Value {
    let body = json!({"ip": ip, "method": "GET", "path": "/api/v1/request"});
    post_json(&client(), &cp.url(rl_wire::DECISION_PATH), &body).await
}

fn start_control_plane(cluster: &RedisCluster, config: &str) -> ControlPlane {
    ControlPlaneBuilder::new(control_plane_bin!(), config)
        .redis(cluster.urls())
        .env("RATE_LIMIT_REDIS_CLUSTER", "true")
        .env("RATE_LIMIT_REDIS_TIMEOUT_MS", "300")
        .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exact_limits_on_a_cluster_with_each_identity_in_one_slot() {
    let cluster = RedisCluster::start();
    let cp = start_control_plane(&cluster, &config(100));
    // Every window of an identity hashes to one slot (else the script would fail CROSSSLOT).
    let budget = budget_key("ip:10.1.1.1", 60, Algorithm::Exact);
    let hourly = budget_key("ip:10.1.1.1", 3600, Algorithm::Exact);
    let rule = rule_key("ip:10.1.1.1", 120, Algorithm::Exact, "/api/v1/request");
    assert_eq!(cluster.keyslot(&budget), cluster.keyslot(&rule));
    assert_eq!(cluster.keyslot(&budget), cluster.keyslot(&hourly));

    let url = cp.url(rl_wire::DECISION_PATH);
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                // Two identities, in different slots most likely: 150 requests each.
                let ip = if i % 2 == 0 { "10.1.1.1" } else { "10.2.2.2" };
                let body = json!({"ip": ip, "method": "GET", "path": "/api/v1/request"});
                let v = post_json(&client(), &url, &body).await;
                (ip, v["verdict"] == "allow")
            })
        })
        .collect();
    let (mut a, mut b) = (0, 0);
    for task in tasks {
        let (ip, allowed) = task.await.unwrap();
        if allowed {
            if ip == "10.1.1.1" { a += 1 } else { b += 1 }
        }
    }
    assert_eq!((a, b), (100, 100));
    for key in [&budget, &hourly, &rule] {
        let stored = cluster.cli(&["ZCARD", key]);
        assert_eq!(stored.trim(), "100", "{key}");
    }

    // Configuration versions live in the cluster too.
    let (status, doc) = {
        let r = client()
            .get(cp.url("/api/v1/rate-limit/config"))
            .header("x-api-key", ADMIN_KEY)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200);
    assert!(doc["version"].as_u64().unwrap() >= 1, "{doc}");
}

/// What a failover may lose is bounded by replication: Redis Cluster replicates
/// asynchronously, so a write the replica has not received when its master dies is gone, and
/// nothing more. The test measures what the replica holds before the kill, so the count it
/// expects afterwards is known exactly rather than derived from what it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_failover_of_an_identity_slot() {
    let mut cluster = RedisCluster::start();
    let limit = 100_000;
    let cp = start_control_plane(&cluster, &config(limit));
    let ip = "10.3.3.3";
    let budget = budget_key(&format!("ip:{ip}"), 60, Algorithm::Exact);
    let sent_before = 200u64;
    for _ in 0..sent_before {
        assert_eq!(decide(&cp, ip).await["verdict"], "allow");
    }
    let slot = cluster.keyslot(&budget);
    let master = cluster.master_of(slot);
    let replica = cluster.replica_of(master);
    assert_eq!(cluster.zcard_at(master, &budget), sent_before);
    // Replication normally catches up within milliseconds; wait until it has, so that no
    // write is in flight at the kill and none may be lost.
    let deadline = Instant::now() + Duration::from_secs(10);
    let replicated = loop {
        let held = cluster.zcard_at(replica, &budget);
        if held == sent_before {
            break held;
        }
        assert!(
            Instant::now() < deadline,
            "the replica holds {held} of {sent_before} entries after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cluster.kill9(master);
    let killed = Instant::now();

    let mut refused = 0u64;
    let recovered = loop {
        let v = decide(&cp, ip).await;
        if v["verdict"] == "allow" {
            break (killed.elapsed(), v);
        }
        assert_eq!(
            v["verdict"], "unavailable",
            "fail-closed while the slot has no master: {v}"
        );
        refused += 1;
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no recovery after failover:\n{}",
            cp.output.tail(30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (took, answer) = recovered;
    let new_master = cluster.master_of(slot);
    assert_eq!(new_master, replica, "the slot's replica took over");
    let remaining = answer["counter"]["remaining"].as_u64().unwrap();
    let counted = limit - remaining; // includes this request
    let stored = cluster.zcard_at(new_master, &budget);
    eprintln!(
        "failover: first correct decision {took:?} after kill -9 of the slot's master \
         ({refused} refused meanwhile); the new master holds {stored}, the replica held \
         {replicated} at the kill"
    );
    assert_eq!(counted, stored, "the answer reports what the store holds");
    // Everything the replica held survives, and the admitted request is counted on top.
    assert!(
        stored > replicated,
        "{} counts lost in the failover",
        replicated + 1 - stored
    );
    // A refused call can still have been recorded if the new master answered it after the
    // control plane's timeout; nothing else may add to the count.
    assert!(
        stored <= replicated + 1 + refused,
        "{stored} counted: more than the {replicated} replicated, this request and the \
         {refused} refused"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}

/// On a cluster a batch is one script call per group of requests whose keys share a slot
/// (a script may not touch several slots), and each request is answered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_script_call_per_slot_group() {
    use control_plane::store::keys::seen_key;
    use control_plane::store::{CounterSpec, CounterStore, RedisStore, RedisStoreOptions};

    let cluster = RedisCluster::start_masters();
    let store = RedisStore::new(
        &cluster.urls(),
        RedisStoreOptions {
            cluster: true,
            timeout: Duration::from_secs(2),
            ..RedisStoreOptions::default()
        },
    )
    .expect("store");
    let identities: Vec<String> = (0..12).map(|i| format!("ip:10.12.0.{i}")).collect();
    let specs: Vec<Vec<CounterSpec>> = identities
        .iter()
        .map(|id| {
            [
                budget_key(id, 60, Algorithm::Exact),
                rule_key(id, 60, Algorithm::Exact, "/x"),
            ]
            .into_iter()
            .map(|key| CounterSpec {
                key,
                limit: 3,
                window_us: 60_000_000,
                shadow: false,
                algorithm: Algorithm::Exact,
            })
            .collect()
        })
        .collect();
    // Loads the script on every node the batch reaches.
    for (id, specs) in identities.iter().zip(&specs) {
        store
            .check_and_record(id, &specs[..1])
            .await
            .expect("warm-up");
    }
    let mut slots: Vec<u16> = identities
        .iter()
        .map(|id| cluster.keyslot(&seen_key(id)))
        .collect();
    slots.sort_unstable();
    slots.dedup();
    let calls: Vec<(&str, &[CounterSpec])> = (0..48)
        .map(|i| (identities[i % 12].as_str(), specs[i % 12].as_slice()))
        .collect();
    let before = cluster.command_calls("evalsha");
    let results = store.check_and_record_many(&calls).await;
    let after = cluster.command_calls("evalsha");
    assert_eq!(
        after - before,
        slots.len() as u64,
        "one script call per slot group"
    );
    for (i, result) in results.into_iter().enumerate() {
        let out = result.unwrap_or_else(|e| panic!("request {i}: {e}"));
        // The budget holds the warm-up request: 2 more fit, then the rule's limit is moot.
        let nth = (i / 12) as u64 + 1;
        assert_eq!(out.admitted, nth <= 2, "request {i}");
        assert_eq!(out.counters[0].count, (nth + 1).min(3), "request {i}");
        assert_eq!(out.counters[1].count, nth.min(2), "request {i}");
    }
}
