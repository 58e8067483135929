//! Metric series follow the configuration: after a change removes a tier or an endpoint
//! rule, the Prometheus series labelled with it (`rate_limit_requests_total`,
//! `rate_limit_throttled_total`) and its keys in the JSON metrics are gone, while the
//! series of what stayed keep counting. Through the real path: Envoy, the filter, the
//! control plane's `/metrics`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rl_tests::admin::{Admin, eventually};
use rl_tests::fixtures::{Config, Tier};
use rl_tests::{StackBuilder, client_from, control_plane_bin, get};
use serde_json::Value;

const ADMIN_KEY: &str = "metric-series-admin-key-0123";
const PARTNER_KEY: &str = "metric-series-partner-key-0001";

/// `free` (default): 100 per minute, `/api/v1/request` 1, `/api/v1/keep` 50; `premium`
/// with `/api/v1/premium`, and the partner's key on it.
fn before() -> Config {
    Config::new()
        .tier(
            Tier::new("free", 100)
                .endpoint("/api/v1/request", 1)
                .endpoint("/api/v1/keep", 50),
        )
        .tier(Tier::new("premium", 100).endpoint("/api/v1/premium", 50))
        .api_key("partner", "premium", PARTNER_KEY)
}

/// `premium` and the `/api/v1/request` rule removed.
fn after() -> Config {
    Config::new().tier(Tier::new("free", 100).endpoint("/api/v1/keep", 50))
}

fn from(last: u8) -> reqwest::Client {
    client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

/// Sample lines (not comments) of a Prometheus text.
fn samples(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

fn value(text: &str, series: &str) -> Option<f64> {
    samples(text)
        .into_iter()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

fn keys(json: &Value, field: &str) -> Vec<String> {
    json[field]
        .as_object()
        .unwrap_or_else(|| panic!("{field} in {json}"))
        .keys()
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_a_removed_tier_or_rule_are_dropped() {
    let stack = StackBuilder::new(control_plane_bin!(), &before().yaml())
        .control_plane_env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start();
    let cp = &stack.control_plane;
    let admin = Admin::new(ADMIN_KEY);
    let client = from(61);
    let statuses = [
        get(&client, &stack.url("/api/v1/request"), &[])
            .await
            .status,
        get(&client, &stack.url("/api/v1/request"), &[])
            .await
            .status,
        get(&client, &stack.url("/api/v1/keep"), &[]).await.status,
        get(
            &client,
            &stack.url("/api/v1/premium"),
            &[("x-api-key", PARTNER_KEY)],
        )
        .await
        .status,
    ];
    assert_eq!(statuses, [200, 429, 200, 200]);

    let scrape = async || {
        let text = from(1)
            .get(cp.url("/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        let json: Value = from(1)
            .get(cp.url("/api/v1/rate-limit/metrics"))
            .send()
            .await
            .expect("JSON metrics")
            .json()
            .await
            .expect("JSON");
        (text, json)
    };
    let (text, json) = scrape().await;
    for series in [
        r#"rate_limit_requests_total{tier="free",endpoint="/api/v1/request",decision="allowed"}"#,
        r#"rate_limit_throttled_total{tier="free",endpoint="/api/v1/request"}"#,
        r#"rate_limit_requests_total{tier="free",endpoint="/api/v1/keep",decision="allowed"}"#,
        r#"rate_limit_requests_total{tier="premium",endpoint="/api/v1/premium",decision="allowed"}"#,
    ] {
        assert_eq!(value(&text, series), Some(1.0), "{series} in\n{text}");
    }
    assert_eq!(json["by_tier"]["premium"], 0);
    assert_eq!(json["by_endpoint"]["/api/v1/request"], 1);

    let put = admin.put_yaml(cp, &after().yaml()).await;
    assert_eq!(put.status, 200, "{put:?}");
    // No rule on /api/v1/request any more (the filter's deny cache may answer the request it
    // saw denied for the rest of that second).
    eventually(
        Duration::from_secs(3),
        "the request is admitted under the new configuration",
        async || {
            get(&client, &stack.url("/api/v1/request"), &[])
                .await
                .status
                == 200
        },
    )
    .await;

    let (text, json) = scrape().await;
    for gone in [
        r#"tier="premium""#,
        r#"endpoint="/api/v1/request""#,
        r#"endpoint="/api/v1/premium""#,
    ] {
        let left: Vec<&str> = samples(&text)
            .into_iter()
            .filter(|l| l.contains(gone))
            .collect();
        assert!(
            left.is_empty(),
            "series with {gone} outlived the change: {left:#?}"
        );
    }
    // What the change kept keeps counting; new traffic goes where the new config says.
    for (series, want) in [
        (
            r#"rate_limit_requests_total{tier="free",endpoint="/api/v1/keep",decision="allowed"}"#,
            1.0,
        ),
        (
            r#"rate_limit_requests_total{tier="free",endpoint="other",decision="allowed"}"#,
            1.0,
        ),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series} in\n{text}");
    }
    assert_eq!(keys(&json, "by_tier"), ["free"], "{json}");
    assert_eq!(
        keys(&json, "by_endpoint"),
        ["/api/v1/keep", "other"],
        "{json}"
    );
    // Totals are the replica's since start, whatever the configuration.
    assert_eq!(json["total_requests"], 5, "{json}");
    assert_eq!(json["throttled_requests"], 1, "{json}");
}
