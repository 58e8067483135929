//! An open-loop load generator for the load benchmark's fixed-rate runs (SC-002): requests
//! leave on a fixed schedule (request `i` at `i / rate` seconds from the start), whatever the
//! answers, and each one's latency is counted from the time it was *scheduled*, not from the
//! time it could be sent. A stall therefore shows in the figures of every request it delayed,
//! instead of lowering the rate the generator manages to send (coordinated omission). Each
//! request carries the next API key of a list, so many identities share the load.
//!
//! The generator is generic over a [`Target`] so its timing is tested with a fake one on
//! tokio's paused clock; [`HttpTarget`] is the real one (HTTP/1.1 over a fixed number of
//! keep-alive connections). The `open_loop` binary runs it and prints one `LOADBENCH` JSON line
//! (`benches/src/load/tools.rs` reads it).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// When each request is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate: f64,
    count: u64,
}

impl Schedule {
    /// `rate` requests per second for `duration`.
    pub fn new(rate: f64, duration: Duration) -> Result<Schedule, String> {
        if !rate.is_finite() || rate <= 0.0 {
            return Err(format!("rate must be a positive number, got {rate}"));
        }
        // The small term keeps 0.1 × 10 s from rounding down to 0.99999 requests.
        let count = (rate * duration.as_secs_f64() + 1e-9).floor() as u64;
        Ok(Schedule { rate, count })
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When request `i` is due, from the start.
    pub fn offset(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// How long the schedule runs.
    pub fn span(&self) -> Duration {
        Duration::from_secs_f64(self.count as f64 / self.rate)
    }
}

/// Where requests go. `send` answers the HTTP status of request number `request`.
pub trait Target: Clone + Send + Sync + 'static {
    type Conn: Send + 'static;
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, String>> + Send;
    fn send(
        &self,
        conn: &mut Self::Conn,
        request: u64,
    ) -> impl Future<Output = Result<u16, String>> + Send;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Connections (and so requests in flight) at most; further due requests wait for one,
    /// and that wait counts in their latency.
    pub connections: usize,
    /// How long one request may take once sent; also how long the generator waits for the
    /// last ones after the schedule ends.
    pub timeout: Duration,
}

/// What a run measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Requests the schedule held.
    pub scheduled: u64,
    /// Requests answered (any status), with their latencies.
    pub answered: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub connect_errors: u64,
    /// Connections that failed while a request was on them.
    pub io_errors: u64,
    /// Requests not answered within the timeout once sent.
    pub timeouts: u64,
    /// Requests still waiting for a connection, or in flight, when the generator gave up
    /// (the schedule's end plus the timeout).
    pub unfinished: u64,
    /// Latency of every answered request and of every timeout (then at least the timeout),
    /// from its scheduled time, in µs, ascending once the run is over.
    pub latencies_us: Vec<u64>,
    /// From the start to the last answer (or to when the generator gave up).
    pub elapsed: Duration,
    /// How late the generator itself handed a request over, at worst (a busy machine).
    pub max_dispatch_lag: Duration,
}

impl Report {
    /// Nearest-rank percentile (`q` in (0, 1]) of the latencies, in µs.
    pub fn percentile(&self, q: f64) -> Option<u64> {
        percentile(&self.latencies_us, q)
    }

    /// Answers per second over the whole run (below the rate when the target falls behind).
    pub fn achieved_rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.answered as f64 / secs
        } else {
            0.0
        }
    }

    pub fn errors(&self) -> u64 {
        self.connect_errors + self.io_errors + self.timeouts + self.unfinished
    }

    /// The line the `open_loop` binary prints (load_bench reads it).
    pub fn to_json(&self) -> serde_json::Value {
        let us = |q: f64| self.percentile(q).unwrap_or(0);
        let mean = if self.latencies_us.is_empty() {
            0.0
        } else {
            self.latencies_us.iter().sum::<u64>() as f64 / self.latencies_us.len() as f64
        };
        serde_json::json!({
            "scheduled": self.scheduled,
            "answered": self.answered,
            "statuses": self.statuses.iter().map(|(s, n)| (s.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "connect_errors": self.connect_errors,
            "io_errors": self.io_errors,
            "timeouts": self.timeouts,
            "unfinished": self.unfinished,
            "elapsed_us": self.elapsed.as_micros() as u64,
            "achieved_rate": self.achieved_rate(),
            "mean_us": mean,
            "p50_us": us(0.50),
            "p95_us": us(0.95),
            "p99_us": us(0.99),
            "max_us": self.latencies_us.last().copied().unwrap_or(0),
            "max_dispatch_lag_us": self.max_dispatch_lag.as_micros() as u64,
        })
    }
}

/// Nearest-rank percentile of ascending `sorted` values.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() || !(q > 0.0 && q <= 1.0) {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[derive(Debug, Clone, Copy)]
struct Job {
    index: u64,
    due: Instant,
}

fn lock(report: &Mutex<Report>) -> std::sync::MutexGuard<'_, Report> {
    report.lock().unwrap_or_else(PoisonError::into_inner)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Runs `schedule` against `target`.
pub async fn run<T: Target>(target: T, schedule: Schedule, settings: Settings) -> Report {
    let report = Arc::new(Mutex::new(Report {
        scheduled: schedule.len(),
        ..Report::default()
    }));
    let (tx, rx) = mpsc::unbounded_channel::<Job>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..settings.connections.max(1) {
        let (target, rx, report) = (target.clone(), rx.clone(), report.clone());
        workers.spawn(worker(target, rx, report, start, settings.timeout));
    }

    // The schedule: nothing here waits for an answer.
    let mut max_lag = Duration::ZERO;
    for index in 0..schedule.len() {
        let due = start + schedule.offset(index);
        tokio::time::sleep_until(due).await;
        max_lag = max_lag.max(Instant::now().saturating_duration_since(due));
        if tx.send(Job { index, due }).is_err() {
            break;
        }
    }
    drop(tx);

    let give_up = start + schedule.span() + settings.timeout;
    let drained = tokio::time::timeout_at(give_up, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        workers.abort_all();
        while workers.join_next().await.is_some() {}
    }
    let end = Instant::now();
    let mut report = lock(&report).clone();
    let done = report.answered + report.connect_errors + report.io_errors + report.timeouts;
    report.unfinished = report.scheduled.saturating_sub(done);
    report.latencies_us.sort_unstable();
    report.max_dispatch_lag = max_lag;
    if drained.is_err() || report.elapsed.is_zero() {
        report.elapsed = end - start;
    }
    report
}

async fn worker<T: Target>(
    target: T,
    jobs: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    report: Arc<Mutex<Report>>,
    start: Instant,
    timeout: Duration,
) {
    let mut conn: Option<T::Conn> = None;
    loop {
        let job = jobs.lock().await.recv().await;
        let Some(job) = job else {
            return;
        };
        if conn.is_none() {
            match tokio::time::timeout(timeout, target.connect()).await {
                Ok(Ok(c)) => conn = Some(c),
                Ok(Err(_)) | Err(_) => {
                    lock(&report).connect_errors += 1;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        let outcome = tokio::time::timeout(timeout, target.send(c, job.index)).await;
        let now = Instant::now();
        let latency = micros(now.saturating_duration_since(job.due));
        let mut r = lock(&report);
        match outcome {
            Ok(Ok(status)) => {
                r.answered += 1;
                *r.statuses.entry(status).or_default() += 1;
                r.latencies_us.push(latency);
                r.elapsed = r.elapsed.max(now - start);
            }
            Ok(Err(_)) => {
                r.io_errors += 1;
                conn = None;
            }
            Err(_) => {
                r.timeouts += 1;
                r.latencies_us.push(latency);
                conn = None;
            }
        }
    }
}

/// `GET` of one path over HTTP/1.1 keep-alive connections, with the next API key of a list in
/// a header on each request.
#[derive(Clone)]
pub struct HttpTarget {
    addr: SocketAddr,
    host: HeaderValue,
    path: String,
    header: HeaderName,
    keys: Arc<Vec<HeaderValue>>,
}

impl HttpTarget {
    /// `url`: `http://<ip>:<port>/<path>`.
    pub fn new(url: &str, header: &str, keys: Vec<String>) -> Result<HttpTarget, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("url {url}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("url {url}: only http:// is supported"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("url {url}: no host"))?;
        let addr: SocketAddr = authority
            .as_str()
            .parse()
            .map_err(|e| format!("url {url}: host must be <ip>:<port>: {e}"))?;
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        let header =
            HeaderName::from_bytes(header.as_bytes()).map_err(|e| format!("{header}: {e}"))?;
        let keys = keys
            .iter()
            .filter(|k| !k.is_empty())
            .map(|k| HeaderValue::from_str(k).map_err(|e| format!("key {k:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("no keys".into());
        }
        let path = uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        Ok(HttpTarget {
            addr,
            host,
            path,
            header,
            keys: Arc::new(keys),
        })
    }

    /// The key request number `request` carries: the list in turn.
    pub fn key(&self, request: u64) -> &HeaderValue {
        &self.keys[(request % self.keys.len() as u64) as usize]
    }
}

impl Target for HttpTarget {
    type Conn = SendRequest<Empty<Bytes>>;

    async fn connect(&self) -> Result<Self::Conn, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(sender)
    }

    async fn send(&self, conn: &mut Self::Conn, request: u64) -> Result<u16, String> {
        conn.ready().await.map_err(|e| e.to_string())?;
        let req = hyper::Request::get(self.path.as_str())
            .header(HOST, self.host.clone())
            .header(self.header.clone(), self.key(request).clone())
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = conn.send_request(req).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    }
}

/// The `open_loop` binary's options.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub url: String,
    pub keys: std::path::PathBuf,
    pub header: String,
    pub rate: f64,
    pub duration: Duration,
    pub connections: usize,
    pub timeout: Duration,
}

pub const USAGE: &str = "\
open_loop: requests at a fixed rate, latency from each request's scheduled time
  --url URL            http://<ip>:<port>/<path> (required)
  --keys FILE          API keys, one per line, sent in turn (required)
  --header NAME        header carrying the key (default x-api-key)
  --rate N             requests per second (required)
  --duration SECS      length of the schedule (default 10)
  --connections N      connections, so requests in flight at most (default 100)
  --timeout SECS       per request, and the wait for the last ones (default 5)
Prints one line: LOADBENCH {json}.
";

impl Args {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let mut url = None;
        let mut keys = None;
        let mut rate = None;
        let mut parsed = Args {
            url: String::new(),
            keys: Default::default(),
            header: "x-api-key".into(),
            rate: 0.0,
            duration: Duration::from_secs(10),
            connections: 100,
            timeout: Duration::from_secs(5),
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = |v: &str| -> Result<f64, String> {
                v.parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n > 0.0)
                    .ok_or_else(|| format!("{flag}: not a positive number: {v}"))
            };
            match flag.as_str() {
                "--url" => url = Some(value),
                "--keys" => keys = Some(std::path::PathBuf::from(value)),
                "--header" => parsed.header = value,
                "--rate" => rate = Some(number(&value)?),
                "--duration" => parsed.duration = Duration::from_secs_f64(number(&value)?),
                "--connections" => parsed.connections = number(&value)?.round().max(1.0) as usize,
                "--timeout" => parsed.timeout = Duration::from_secs_f64(number(&value)?),
                other => return Err(format!("unknown option {other}")),
            }
        }
        parsed.url = url.ok_or("--url is required")?;
        parsed.keys = keys.ok_or("--keys is required")?;
        parsed.rate = rate.ok_or("--rate is required")?;
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests;
