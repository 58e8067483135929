//! Outgrowing one Redis: the control plane on a 3-master, 3-replica Redis Cluster.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use rl_tests::{
    ControlPlane, ControlPlaneBuilder, RedisCluster, client_from, control_plane_bin, post_json,
};
use serde_json::{Value, json};

const CONFIG: &str = r#"
default_tier: free
fail_open: false
tiers:
  - name: free
    requests_per_window: 100
    window_size_seconds: 60
    endpoints:
      /api/v1/request: 100
"#;

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
    let cp = start_control_plane(&cluster, CONFIG);
    // Both counters of an identity hash to one slot (else the script would fail CROSSSLOT).
    let budget = control_plane::store::keys::budget_key("ip:10.1.1.1");
    let rule = control_plane::store::keys::rule_key("ip:10.1.1.1", "/api/v1/request");
    assert_eq!(cluster.keyslot(&budget), cluster.keyslot(&rule));

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
    let stored = cluster.cli(&["ZCARD", &budget]);
    assert_eq!(stored.trim(), "100");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_failover_of_an_identity_slot() {
    let mut cluster = RedisCluster::start();
    let config = CONFIG
        .replace("requests_per_window: 100", "requests_per_window: 100000")
        .replace("/api/v1/request: 100", "/api/v1/request: 100000");
    let cp = start_control_plane(&cluster, &config);
    let ip = "10.3.3.3";
    let sent_before = 200u64;
    for _ in 0..sent_before {
        assert_eq!(decide(&cp, ip).await["verdict"], "allow");
    }
    // Let asynchronous replication catch up, as it normally has within milliseconds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slot = cluster.keyslot(&control_plane::store::keys::budget_key(&format!("ip:{ip}")));
    let master = cluster.master_of(slot);
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
    let remaining = answer["counter"]["remaining"].as_u64().unwrap();
    let counted = 100_000 - remaining; // includes this request
    let lost = (sent_before + 1).saturating_sub(counted);
    eprintln!(
        "failover: first correct decision {took:?} after kill -9 of the slot's master \
         ({refused} refused meanwhile); counts lost: {lost} of {sent_before}"
    );
    assert!(lost <= sent_before, "counted {counted}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let new_master = cluster.master_of(slot);
    assert_ne!(new_master, master);
}
