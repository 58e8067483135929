//! A TCP proxy on a free loopback port that forwards bytes both ways, and on command loses one
//! reply: it forwards a client's command, waits for the server's answer, and then closes both
//! connections instead of passing the answer on. The server has done the work; the client sees
//! a dropped connection (and, if it retries, sends the same command again).
//!
//! Plain threads, so it works whatever runtime the test uses; a transcript of what clients
//! sent lets a test count the commands that reached the server.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

pub struct TcpProxy {
    port: u16,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Set by [`TcpProxy::drop_next_reply_to`]; taken by the first command that contains it.
    armed: Mutex<Option<Vec<u8>>>,
    replies_dropped: AtomicU64,
    /// Everything clients sent, one entry per connection.
    transcripts: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
    /// Both sockets of every connection, to close them when the proxy stops.
    sockets: Mutex<Vec<TcpStream>>,
    stopped: AtomicBool,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards every connection to
    /// `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                match TcpStream::connect(("127.0.0.1", target_port)) {
                    Ok(server) => accepting.clone().relay(client, server),
                    // The target is down: the client sees its connection closed.
                    Err(_) => drop(client),
                }
            }
        });
        TcpProxy { port, shared }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next command a client sends that contains `pattern` is forwarded, and its
    /// connection is closed as soon as the server starts answering: the answer is lost.
    /// Once only.
    pub fn drop_next_reply_to(&self, pattern: &[u8]) {
        *lock(&self.shared.armed) = Some(pattern.to_vec());
    }

    /// Answers dropped so far.
    pub fn replies_dropped(&self) -> u64 {
        self.shared.replies_dropped.load(Ordering::SeqCst)
    }

    /// How many times `pattern` occurs in what clients sent through this proxy.
    pub fn sent_count(&self, pattern: &[u8]) -> usize {
        lock(&self.shared.transcripts)
            .iter()
            .map(|t| occurrences(&lock(t), pattern))
            .sum()
    }
}

impl Shared {
    fn relay(self: Arc<Self>, client: TcpStream, server: TcpStream) {
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(client_in), Ok(server_in)) = (client.try_clone(), server.try_clone()) else {
            return;
        };
        {
            let mut sockets = lock(&self.sockets);
            for socket in [&client, &server] {
                if let Ok(copy) = socket.try_clone() {
                    sockets.push(copy);
                }
            }
        }
        let transcript = Arc::new(Mutex::new(Vec::new()));
        lock(&self.transcripts).push(transcript.clone());
        let drop_reply = Arc::new(AtomicBool::new(false));

        let upstream = (self.clone(), drop_reply.clone());
        let (mut to_server, mut to_client) = (server, client);
        thread::spawn(move || {
            let (shared, drop_reply) = upstream;
            let mut from_client = client_in;
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = match from_client.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let chunk = &buf[..n];
                {
                    let mut t = lock(&transcript);
                    let start = t.len();
                    t.extend_from_slice(chunk);
                    // Look at the stream, not the chunk: a pattern split over two reads counts.
                    let mut armed = lock(&shared.armed);
                    if let Some(pattern) = armed.as_deref() {
                        let from = start.saturating_sub(pattern.len().saturating_sub(1));
                        if occurrences(&t[from..], pattern) > 0 {
                            *armed = None;
                            // Before forwarding: the answer cannot overtake the flag.
                            drop_reply.store(true, Ordering::SeqCst);
                        }
                    }
                }
                if to_server.write_all(chunk).is_err() {
                    break;
                }
            }
            let _ = to_server.shutdown(Shutdown::Write);
        });

        let downstream = self;
        thread::spawn(move || {
            let mut from_server = server_in;
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = match from_server.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if drop_reply.load(Ordering::SeqCst) {
                    downstream.replies_dropped.fetch_add(1, Ordering::SeqCst);
                    let _ = to_client.shutdown(Shutdown::Both);
                    let _ = from_server.shutdown(Shutdown::Both);
                    return;
                }
                if to_client.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to_client.shutdown(Shutdown::Write);
        });
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        for socket in lock(&self.shared.sockets).drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // Wakes the accepting thread, which then sees `stopped`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || haystack.len() < needle.len() {
        return 0;
    }
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}
