//! A stand-in control plane, served from a thread of the test process, for answers the real one
//! never gives (or not yet): it answers both decision endpoints with what the test chose
//! ([`Answer`], e.g. a decision naming several windows, [`windows`]), can hold every answer
//! until released, and counts the calls it received. It speaks HTTP/1 and h2c like the real
//! one (Envoy reaches the control plane over HTTP/2).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use rl_wire::{
    BATCH_DECISION_PATH, BatchDecisionRequest, BatchDecisionResponse, CounterReport, DECISION_PATH,
    DecisionResponse, LocalDenials, PolicyReport, Verdict,
};
use tokio::sync::{oneshot, watch};

/// What every decision call gets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // One answer held at a time: its size does not matter.
pub enum Answer {
    /// `200` with a body that is not JSON.
    Garbage,
    /// `200` with an allow per request (tier `fake`, limit 1000, 999 remaining), in the shape
    /// of the first release: no policies.
    Allow,
    /// `200` with this decision for every request (every member of a batch).
    Decision(DecisionResponse),
}

/// The tier name in [`Answer::Allow`] and [`windows`] answers.
pub const FAKE_TIER: &str = "fake";

/// A decision of tier [`FAKE_TIER`] that names every window in `policies` (name, limit,
/// window seconds), as a control plane that reports them does. The window at `binding`
/// describes the request: `remaining` left, room again in `reset_after` seconds. A deny's
/// Retry-After is `reset_after`, as the control plane makes it.
pub fn windows(
    verdict: Verdict,
    policies: &[(&str, u64, u64)],
    binding: usize,
    remaining: u64,
    reset_after: u64,
) -> DecisionResponse {
    let (name, limit, window) = policies[binding];
    let deny = verdict == Verdict::Deny;
    DecisionResponse {
        verdict,
        tier: Some(FAKE_TIER.to_string()),
        counter: Some(CounterReport {
            limit,
            remaining,
            reset: 1_700_000_000 + reset_after,
            retry_after: deny.then_some(reset_after),
            window,
            endpoint: "/api/v1/request".to_string(),
            reset_at: None,
            policy: Some(name.to_string()),
            reset_after: Some(reset_after),
            units: false,
        }),
        policies: policies
            .iter()
            .map(|(name, limit, window)| PolicyReport {
                name: name.to_string(),
                limit: *limit,
                window: *window,
            })
            .collect(),
        shadow_denied: false,
        deny_for_ms: None,
        lease: None,
        usage: None,
    }
}

struct Shared {
    answer: Mutex<Answer>,
    /// True while answers are held back.
    held: watch::Sender<bool>,
    singles: AtomicU64,
    batches: AtomicU64,
    batched_requests: AtomicU64,
    /// Every `local_denials` entry the batch calls carried, in arrival order.
    local_denials: Mutex<Vec<LocalDenials>>,
}

pub struct FakeControlPlane {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeControlPlane {
    pub fn start(answer: Answer) -> FakeControlPlane {
        let shared = Arc::new(Shared {
            answer: Mutex::new(answer),
            held: watch::channel(false).0,
            singles: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batched_requests: AtomicU64::new(0),
            local_denials: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route(DECISION_PATH, post(single))
            .route(BATCH_DECISION_PATH, post(batch))
            .with_state(shared.clone());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("fake control plane runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind fake control plane");
                let _ = addr_tx.send(listener.local_addr().expect("fake control plane addr"));
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv().expect("fake control plane did not start");
        FakeControlPlane {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_answer(&self, answer: Answer) {
        *self.shared.answer.lock().expect("answer lock") = answer;
    }

    /// Calls received from now on wait for [`release`](Self::release) before being answered.
    pub fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    /// Answers every held call, and the later ones at once.
    pub fn release(&self) {
        self.shared.held.send_replace(false);
    }

    /// Single decision calls received.
    pub fn singles(&self) -> u64 {
        self.shared.singles.load(Ordering::SeqCst)
    }

    /// Batch decision calls received.
    pub fn batches(&self) -> u64 {
        self.shared.batches.load(Ordering::SeqCst)
    }

    /// Every `local_denials` entry the batch calls received carried.
    pub fn local_denials(&self) -> Vec<LocalDenials> {
        self.shared
            .local_denials
            .lock()
            .expect("local denials lock")
            .clone()
    }

    /// Decision calls received, single and batch.
    pub fn calls(&self) -> u64 {
        self.singles() + self.batches()
    }

    /// Requests carried by the batch calls received.
    pub fn batched_requests(&self) -> u64 {
        self.shared.batched_requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeControlPlane {
    fn drop(&mut self) {
        self.release();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Envoy keeps its HTTP/2 connection open, which delays a graceful shutdown; do not
        // wait for it.
        drop(self.thread.take());
    }
}

fn allow() -> DecisionResponse {
    DecisionResponse {
        verdict: Verdict::Allow,
        tier: Some(FAKE_TIER.to_string()),
        counter: Some(CounterReport {
            limit: 1000,
            remaining: 999,
            reset: 1_700_000_060,
            retry_after: None,
            window: 60,
            endpoint: "/".to_string(),
            reset_at: None,
            policy: None,
            reset_after: None,
            units: false,
        }),
        policies: Vec::new(),
        shadow_denied: false,
        deny_for_ms: None,
        lease: None,
        usage: None,
    }
}

/// A proxy's error page with status 200: not a decision.
const GARBAGE: &str = "<html><body>502 Bad Gateway</body></html>";

async fn wait_unless_held(shared: &Shared) {
    let mut held = shared.held.subscribe();
    let _ = held.wait_for(|held| !*held).await;
}

fn answer(shared: &Shared) -> Answer {
    shared.answer.lock().expect("answer lock").clone()
}

/// The decision an answer gives each request; `None`: garbage.
fn decision(answer: Answer) -> Option<DecisionResponse> {
    match answer {
        Answer::Garbage => None,
        Answer::Allow => Some(allow()),
        Answer::Decision(decision) => Some(decision),
    }
}

async fn single(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    shared.singles.fetch_add(1, Ordering::SeqCst);
    wait_unless_held(&shared).await;
    let body = match decision(answer(&shared)) {
        None => GARBAGE.to_string(),
        Some(decision) => serde_json::to_string(&decision).expect("serialise a decision"),
    };
    (StatusCode::OK, body)
}

async fn batch(State(shared): State<Arc<Shared>>, body: Bytes) -> (StatusCode, String) {
    shared.batches.fetch_add(1, Ordering::SeqCst);
    let parsed = serde_json::from_slice::<BatchDecisionRequest>(&body).ok();
    let requests = parsed.as_ref().map_or(0, |batch| batch.requests.len());
    if let Some(batch) = parsed {
        shared
            .local_denials
            .lock()
            .expect("local denials lock")
            .extend(batch.local_denials);
    }
    shared
        .batched_requests
        .fetch_add(requests as u64, Ordering::SeqCst);
    wait_unless_held(&shared).await;
    let body = match decision(answer(&shared)) {
        None => GARBAGE.to_string(),
        Some(decision) => serde_json::to_string(&BatchDecisionResponse {
            responses: vec![decision; requests],
        })
        .expect("serialise a batch answer"),
    };
    (StatusCode::OK, body)
}
