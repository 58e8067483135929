//! Blocking JSON calls to the control plane (status reads after a run, the memory phase's
//! decisions): the orchestrator is sequential, so one small runtime serves them all.

use std::time::Duration;

use serde_json::Value;

pub struct Http {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> Result<Http, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        // No idle connections kept: a control plane is replaced between runs on the same port,
        // and a connection to the old one would fail the first call to the new one.
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Http { runtime, client })
    }

    /// GET `url`: the status and the JSON body (`Null` when the body is not JSON).
    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<(u16, Value), String> {
        let mut request = self.client.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.runtime.block_on(async {
            let response = request
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = response.status().as_u16();
            let body = response
                .bytes()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
        })
    }

    /// POST `body` as JSON to `url`: the status and the JSON answer.
    pub fn post(&self, url: &str, body: &Value) -> Result<(u16, Value), String> {
        let request = self.client.post(url).json(body);
        self.runtime.block_on(async {
            let response = request
                .send()
                .await
                .map_err(|e| format!("POST {url}: {e}"))?;
            let status = response.status().as_u16();
            let body = response
                .bytes()
                .await
                .map_err(|e| format!("POST {url}: {e}"))?;
            Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
        })
    }
}
