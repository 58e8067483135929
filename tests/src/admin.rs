//! The control plane's admin API as the tests use it: the configuration document with its
//! version and `ETag`, PUTs with or without `If-Match`, and waiting for a condition.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{ControlPlane, client_from};

/// An answer of the admin API.
#[derive(Debug, Clone)]
pub struct AdminReply {
    pub status: u16,
    /// The `ETag` header, as sent (quotes included).
    pub etag: Option<String>,
    /// The JSON body (`Null` when there is none or it is not JSON).
    pub body: Value,
}

impl AdminReply {
    /// `version` of a configuration document.
    pub fn version(&self) -> u64 {
        self.body["version"]
            .as_u64()
            .unwrap_or_else(|| panic!("no version in {self:?}"))
    }

    /// `error.code` of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// A client of the admin API holding its key.
pub struct Admin {
    key: String,
    client: reqwest::Client,
}

impl Admin {
    pub fn new(key: &str) -> Admin {
        Admin {
            key: key.to_string(),
            client: client_from(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        }
    }

    async fn reply(response: reqwest::Response) -> AdminReply {
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.json().await.unwrap_or(Value::Null);
        AdminReply { status, etag, body }
    }

    /// `GET path` with the key.
    pub async fn get(&self, cp: &ControlPlane, path: &str) -> AdminReply {
        let response = self
            .client
            .get(cp.url(path))
            .header("x-api-key", &self.key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        Self::reply(response).await
    }

    /// What the window `policy` of `identifier` counts now (requests, or units), from the
    /// status endpoint, which records nothing; 0 while nothing is counted for the identifier
    /// (404: e.g. its requests are still on their way).
    pub async fn window_count(&self, cp: &ControlPlane, identifier: &str, policy: &str) -> u64 {
        let report = self
            .get(cp, &format!("/api/v1/rate-limit/status/{identifier}"))
            .await;
        if report.status == 404 {
            return 0;
        }
        assert_eq!(report.status, 200, "{report:?}");
        report.body["counters"]
            .as_array()
            .and_then(|counters| counters.iter().find(|c| c["policy"] == policy))
            .and_then(|c| c["count"].as_u64())
            .unwrap_or_else(|| panic!("no window {policy} for {identifier}: {report:?}"))
    }

    /// `GET /api/v1/rate-limit/config`.
    pub async fn config(&self, cp: &ControlPlane) -> AdminReply {
        self.get(cp, "/api/v1/rate-limit/config").await
    }

    /// `PUT /api/v1/rate-limit/config` with a JSON body and, when given, `If-Match`.
    pub async fn put_config(
        &self,
        cp: &ControlPlane,
        body: &Value,
        if_match: Option<&str>,
    ) -> AdminReply {
        let mut request = self
            .client
            .put(cp.url("/api/v1/rate-limit/config"))
            .header("x-api-key", &self.key)
            .json(body);
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT config: {e}"));
        Self::reply(response).await
    }

    /// `PUT /api/v1/rate-limit/config` with a YAML body.
    pub async fn put_yaml(&self, cp: &ControlPlane, yaml: &str) -> AdminReply {
        let response = self
            .client
            .put(cp.url("/api/v1/rate-limit/config"))
            .header("x-api-key", &self.key)
            .header("content-type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT config: {e}"));
        Self::reply(response).await
    }
}

/// Polls `check` every 100 ms until it holds, returning how long that took; panics naming
/// `what` after `within`.
pub async fn eventually<F: AsyncFnMut() -> bool>(
    within: Duration,
    what: &str,
    mut check: F,
) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within {within:?}");
}
