//! Background traffic for fault tests: a few concurrent loops sending requests and recording
//! every answer with its time and latency, so a test can judge each phase of an outage.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::sync::{Mutex, MutexGuard};

/// One answered (or failed) request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the request was sent, relative to the start of the load.
    pub sent: Duration,
    pub latency: Duration,
    /// HTTP status; 0 when the request itself failed (connection error).
    pub status: u16,
    pub rate_limit_headers: bool,
    pub retry_after: Option<String>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

/// Ignores poisoning: a panicking load task must not hide the samples from the test.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Load {
    /// `loops` concurrent senders, each sending a request to `url` then sleeping `pause`.
    pub fn start(client: reqwest::Client, url: String, loops: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let tasks = (0..loops)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                let (stop, samples) = (stop.clone(), samples.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let sent = started.elapsed();
                        let t = Instant::now();
                        let sample = match client.get(&url).send().await {
                            Ok(r) => Sample {
                                sent,
                                latency: t.elapsed(),
                                status: r.status().as_u16(),
                                rate_limit_headers: r
                                    .headers()
                                    .keys()
                                    .any(|k| k.as_str().starts_with("x-ratelimit-")),
                                retry_after: r
                                    .headers()
                                    .get("retry-after")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string),
                            },
                            Err(_) => Sample {
                                sent,
                                latency: t.elapsed(),
                                status: 0,
                                rate_limit_headers: false,
                                retry_after: None,
                            },
                        };
                        lock(&samples).push(sample);
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            samples,
            tasks,
            started,
        }
    }

    /// Time since the load started (to mark phases).
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let mut samples = lock(&self.samples).clone();
        samples.sort_by_key(|s| s.sent);
        samples
    }
}

/// Samples sent within `[from, to)`.
pub fn between(samples: &[Sample], from: Duration, to: Duration) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| s.sent >= from && s.sent < to)
        .collect()
}
