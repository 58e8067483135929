//! A stand-in control plane, served from a thread of the test process, for answers the real one
//! never gives: it answers both decision endpoints with what the test chose ([`Answer`]), can
//! hold every answer until released, and counts the calls it received. It speaks HTTP/1 and
//! h2c like the real one (Envoy reaches the control plane over HTTP/2).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use rl_wire::{
    BATCH_DECISION_PATH, BatchDecisionRequest, BatchDecisionResponse, CounterReport, DECISION_PATH,
    DecisionResponse, Verdict,
};
use tokio::sync::{oneshot, watch};

/// What every decision call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Answer {
    /// `200` with a body that is not JSON.
    Garbage = 0,
    /// `200` with an allow per request (tier `fake`, limit 1000, 999 remaining).
    Allow = 1,
}

/// The tier name in [`Answer::Allow`] answers.
pub const FAKE_TIER: &str = "fake";

struct Shared {
    answer: AtomicU8,
    /// True while answers are held back.
    held: watch::Sender<bool>,
    singles: AtomicU64,
    batches: AtomicU64,
    batched_requests: AtomicU64,
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
            answer: AtomicU8::new(answer as u8),
            held: watch::channel(false).0,
            singles: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batched_requests: AtomicU64::new(0),
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
        self.shared.answer.store(answer as u8, Ordering::SeqCst);
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
        }),
        policies: Vec::new(),
        shadow_denied: false,
    }
}

/// A proxy's error page with status 200: not a decision.
const GARBAGE: &str = "<html><body>502 Bad Gateway</body></html>";

async fn wait_unless_held(shared: &Shared) {
    let mut held = shared.held.subscribe();
    let _ = held.wait_for(|held| !*held).await;
}

fn answer(shared: &Shared) -> Answer {
    if shared.answer.load(Ordering::SeqCst) == Answer::Allow as u8 {
        Answer::Allow
    } else {
        Answer::Garbage
    }
}

async fn single(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    shared.singles.fetch_add(1, Ordering::SeqCst);
    wait_unless_held(&shared).await;
    let body = match answer(&shared) {
        Answer::Garbage => GARBAGE.to_string(),
        Answer::Allow => serde_json::to_string(&allow()).expect("serialise a decision"),
    };
    (StatusCode::OK, body)
}

async fn batch(State(shared): State<Arc<Shared>>, body: Bytes) -> (StatusCode, String) {
    shared.batches.fetch_add(1, Ordering::SeqCst);
    let requests = serde_json::from_slice::<BatchDecisionRequest>(&body)
        .map(|batch| batch.requests.len())
        .unwrap_or(0);
    shared
        .batched_requests
        .fetch_add(requests as u64, Ordering::SeqCst);
    wait_unless_held(&shared).await;
    let body = match answer(&shared) {
        Answer::Garbage => GARBAGE.to_string(),
        Answer::Allow => serde_json::to_string(&BatchDecisionResponse {
            responses: (0..requests).map(|_| allow()).collect(),
        })
        .expect("serialise a batch answer"),
    };
    (StatusCode::OK, body)
}
