//! Envoy's rate-limit service protocol (`envoy.service.ratelimit.v3.RateLimitService`), the
//! way in for Envoy's native `envoy.filters.http.ratelimit` filter, on a listener of its own
//! (`RATE_LIMIT_GRPC_LISTEN`), with the gRPC health service.
//!
//! One `ShouldRateLimit` call is one request: its descriptors give the evidence
//! ([`descriptors`]) and the [`Decider`](crate::decision::Decider) decides it once, as it
//! decides a call of the filter's JSON endpoint; [`reply`] turns the decision into the
//! protocol's answer.

pub mod descriptors;
pub mod reply;

use std::future::Future;
use std::time::Instant;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use rl_wire::DECISION_SECRET_HEADER;
use tokio::net::TcpListener;
use tonic::metadata::MetadataMap;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::http::{self, AppState, SecretMatch};

/// The gRPC rate-limit service over the control plane's shared state.
#[derive(Clone)]
pub struct RateLimitGrpc {
    state: AppState,
}

impl RateLimitGrpc {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// When a decision secret is configured, the call must carry it (or, while rotating, the
    /// previous one) in the metadata entry named like the filter's header.
    fn authorize(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(secrets) = &self.state.decision_secrets else {
            return Ok(());
        };
        let presented = metadata
            .get(DECISION_SECRET_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        match secrets.check(presented) {
            SecretMatch::Current => Ok(()),
            SecretMatch::Previous => {
                self.state.metrics.previous_secret_used();
                Ok(())
            }
            SecretMatch::Neither => Err(Status::unauthenticated(format!(
                "missing or wrong decision secret (metadata {DECISION_SECRET_HEADER})"
            ))),
        }
    }
}

#[tonic::async_trait]
impl RateLimitService for RateLimitGrpc {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        self.authorize(request.metadata())?;
        let call = request.into_inner();
        let config = self.state.config.current();
        let evidence = descriptors::evidence(config.rate_limit_service(), &call)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        if !evidence.ignored_keys.is_empty() {
            // Names only: values carry keys and tokens.
            tracing::debug!(keys = ?evidence.ignored_keys, "descriptor entries ignored");
        }
        let descriptors = call.descriptors.len();
        // `hits_addend` weights the request (it takes that many times its endpoint rule's
        // cost, 1 without one); a count no window can ever hold is refused without counting.
        if evidence.cost > 1
            && let Some(limit) = self.state.decider.lowest_limit(&evidence.request)
            && evidence.cost > limit
        {
            return Ok(Response::new(reply::over_cost(
                evidence.cost,
                limit,
                descriptors,
            )));
        }
        let started = Instant::now();
        // Envoy's rate-limit filter cannot give a concurrency slot back: no leases here.
        let decision = self
            .state
            .decider
            .decide_hits_without_leases(&evidence.request, evidence.cost)
            .await;
        http::decision::record(&self.state, &decision, started.elapsed());
        reply::reply(&decision.response, descriptors)
            .map(Response::new)
            .map_err(|reply::Unavailable| {
                Status::unavailable("rate limiting is temporarily unavailable")
            })
    }
}

/// Serves the rate-limit service and the gRPC health service on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<RateLimitServiceServer<RateLimitGrpc>>()
        .await;
    // TCP_NODELAY: answers are small writes on a shared HTTP/2 connection (see the HTTP
    // listener in `server.rs`).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    // Graceful shutdown waits for every client to close its connection; a client that keeps
    // an idle HTTP/2 connection open (Envoy does) would hold the process up. Calls in flight
    // get `DRAIN` to finish once the signal came, then the server stops.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = Server::builder()
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
        .add_service(health_service)
        .add_service(RateLimitServiceServer::new(RateLimitGrpc::new(state)))
        .serve_with_incoming_shutdown(incoming, async move {
            let mut rx = stop_rx;
            let _ = rx.wait_for(|stop| *stop).await;
        });
    let drained = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        served = server => served,
        () = drained => Ok(()),
    }
}

/// Calls a client may cancel before the service has picked them up. Envoy cancels the call
/// of every downstream request that goes away, so clients leaving at once while the service
/// is busy send a burst of resets; h2's default (20, a guard against rapid-reset floods from
/// the open internet) would then close the connection under every call still waiting on it.
/// The listener serves Envoys only; the bound still caps what a flood can queue.
const MAX_PENDING_ACCEPT_RESETS: usize = 10_000;

/// How long calls in flight may take to finish after the shutdown signal.
const DRAIN: std::time::Duration = std::time::Duration::from_millis(500);
