//! The decision call through the control plane's real HTTP router (body limit, handler,
//! metrics), for the `decision` target. Not shared with the workspace tests, which lack the
//! HTTP crates; they use [`crate::control_plane::DirectEndpoint`].

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use control_plane::config_sync::ConfigManager;
use control_plane::decision::Decider;
use control_plane::http::{AppState, router};
use control_plane::metrics::Metrics;
use control_plane::store::MemoryStore;
use tower::ServiceExt;

use crate::control_plane::{DecisionEndpoint, block_on, decision_config_yaml};

/// What the router needs besides the decider, shared by every input of a process: the
/// decision handler uses neither for its answer.
fn shared() -> &'static (Arc<Metrics>, Arc<ConfigManager>) {
    static SHARED: OnceLock<(Arc<Metrics>, Arc<ConfigManager>)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let metrics = Arc::new(Metrics::new(Arc::new(MemoryStore::new())));
        let file = std::env::temp_dir().join(format!("rl-fuzz-config-{}.yaml", std::process::id()));
        std::fs::write(&file, decision_config_yaml()).expect("write the fuzz config file");
        let manager = block_on(ConfigManager::start(&file, None, metrics.clone()))
            .expect("the fuzz config loads");
        let _ = std::fs::remove_file(&file);
        (metrics, manager)
    })
}

pub struct RouterEndpoint {
    router: Router,
}

impl RouterEndpoint {
    pub fn new(decider: Arc<Decider>) -> Self {
        let (metrics, config) = shared().clone();
        let state = AppState {
            decider,
            metrics,
            config,
            admin_key: None,
            decision_secrets: None,
        };
        RouterEndpoint {
            router: router(state),
        }
    }
}

impl DecisionEndpoint for RouterEndpoint {
    fn call(&mut self, body: Vec<u8>) -> (u16, Vec<u8>) {
        let request = Request::post(rl_wire::DECISION_PATH)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("request");
        block_on(async {
            let response = self
                .router
                .clone()
                .oneshot(request)
                .await
                .expect("infallible");
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("response body");
            (status, body.to_vec())
        })
    }
}
