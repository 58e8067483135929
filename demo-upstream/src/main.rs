//! `demo-upstream [ADDR]` (default `127.0.0.1:8081`, or `DEMO_UPSTREAM_LISTEN`).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("DEMO_UPSTREAM_LISTEN").ok())
        .unwrap_or_else(|| "127.0.0.1:8081".to_string());
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("demo-upstream: cannot listen on {addr}: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!("demo-upstream listening on {addr}");
    // Ctrl-C or SIGTERM (docker stop, systemd, run-stack.sh's cleanup).
    let shutdown = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            if let Ok(mut term) = signal(SignalKind::terminate()) {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
        }
        let _ = tokio::signal::ctrl_c().await;
    };
    match demo_upstream::serve(listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("demo-upstream: {err}");
            ExitCode::FAILURE
        }
    }
}
