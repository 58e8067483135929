//! Scale out on one Redis: three control-plane replicas behind each of two Envoys.

use std::net::{IpAddr, Ipv4Addr};

use rl_tests::envoy::EnvoyBuilder;
use rl_tests::fixtures::one_tier;
use rl_tests::{
    ControlPlaneBuilder, RedisServer, Upstream, client_from, control_plane_bin, get, get_json,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exact_limit_across_three_replicas_and_two_envoys() {
    let redis = RedisServer::start();
    let config = one_tier(100, 60).yaml();
    let replicas: Vec<_> = (0..3)
        .map(|_| {
            ControlPlaneBuilder::new(control_plane_bin!(), &config)
                .redis(redis.url())
                .start()
        })
        .collect();
    let upstream = Upstream::start();
    let envoys: Vec<_> = (0..2)
        .map(|_| {
            let mut builder = EnvoyBuilder::new(replicas[0].addr(), upstream.addr());
            for cp in &replicas[1..] {
                builder = builder.add_control_plane(cp.addr());
            }
            builder.start()
        })
        .collect();
    // One client identity (its API-less IP) through both Envoys at once: 600 requests.
    let client = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 111)));
    let tasks: Vec<_> = (0..600)
        .map(|i| {
            let client = client.clone();
            let url = envoys[i % 2].url("/api/v1/request");
            tokio::spawn(async move {
                let reply = get(&client, &url, &[]).await;
                (reply.status, reply.has_rate_limit_headers())
            })
        })
        .collect();
    let (mut ok, mut limited, mut other) = (0, 0, 0);
    for task in tasks {
        match task.await.unwrap() {
            (200, true) => ok += 1,
            (429, true) => limited += 1,
            answer => {
                eprintln!("unexpected answer {answer:?}");
                other += 1
            }
        }
    }
    if other > 0 {
        for envoy in &envoys {
            eprintln!("{}", envoy.log());
            let stats =
                rl_tests::envoy::admin_get(envoy.admin(), "/stats?filter=rate_limit_control_plane")
                    .unwrap_or_default();
            eprintln!(
                "{}",
                stats
                    .lines()
                    .filter(|l| !l.ends_with(": 0"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    assert_eq!((ok, limited, other), (100, 500, 0));
    // Every replica took part.
    for cp in &replicas {
        let m = get_json(
            &client_from(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            &cp.url("/api/v1/rate-limit/metrics"),
        )
        .await;
        assert!(m["total_requests"].as_u64().unwrap() > 0, "{m}");
    }
}
