//! The scripts in examples/, run against a real stack (Envoy, the filter, the control plane,
//! Redis) exactly as a user runs them against scripts/run-stack.sh, only pointed at the
//! stack's ports.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rl_tests::fixtures::{Config, Tier};
use rl_tests::{StackBuilder, client_from, control_plane_bin, get, repo_root};

const ADMIN_KEY: &str = "examples-admin-key-0123456789";
const CLIENT_KEY: &str = "example-client-key-0001";

/// `free`: 5 per minute, `/api/v1/request` 2; the example client's key on `small`, 3 per 3 s.
fn config() -> String {
    Config::new()
        .tier(
            Tier::new("free", 5)
                .window(60)
                .endpoint("/api/v1/request", 2),
        )
        .tier(Tier::new("small", 3).window(3))
        .api_key("example-client", "small", CLIENT_KEY)
        .yaml()
}

fn example(name: &str) -> PathBuf {
    let path = repo_root().join("examples").join(name);
    assert!(path.is_file(), "{} missing", path.display());
    path
}

fn python3() -> &'static str {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "python3 not found: the examples need it (`apt-get install -y python3`)"
    );
    "python3"
}

/// Runs a command with a deadline; returns its output.
fn run(mut cmd: Command, within: Duration) -> Output {
    cmd.env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY");
    let started = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > within {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} still running after {within:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_example_waits_out_429s_and_exhausted_budgets() {
    let stack = StackBuilder::new(control_plane_bin!(), &config())
        .with_redis()
        .start();
    let url = stack.url("/api/v1/request");
    // Use up the key's budget (3 per 3 s) so the example's first request is refused.
    let c = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 81)));
    let key = [("x-api-key", CLIENT_KEY)];
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(&c, &url, &key).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);

    let mut cmd = Command::new(python3());
    cmd.arg(example("client.py"))
        .args(["--url", &url, "--api-key", CLIENT_KEY, "-n", "4"]);
    let started = Instant::now();
    let out = run(cmd, Duration::from_secs(60));
    let took = started.elapsed();
    let (stdout, stderr) = text(&out);
    eprintln!("client.py output:\n{stdout}");
    assert!(
        out.status.success(),
        "client.py failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("request 1: 429") && stdout.contains("Retry-After"),
        "the first request is throttled and waited out:\n{stdout}"
    );
    assert!(
        stdout.contains("X-RateLimit-Reset"),
        "after 3 requests the budget is used up; the client waits for the reset:\n{stdout}"
    );
    assert!(
        stdout.contains("remaining=0/3 tier=small"),
        "the client reports the headers:\n{stdout}"
    );
    assert!(
        stdout.contains("done: 4 requests answered"),
        "every request is eventually answered:\n{stdout}"
    );
    // Two waits of up to one window each; it did not just hammer the server.
    assert!(took >= Duration::from_secs(2), "{took:?}\n{stdout}");

    // Without a server: a clear error and a failure status.
    let mut cmd = Command::new(python3());
    cmd.arg(example("client.py")).args([
        "--url",
        &format!("http://127.0.0.1:{}/", rl_tests::free_port()),
        "-n",
        "1",
    ]);
    let out = run(cmd, Duration::from_secs(30));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
}

fn set_tier(cp_url: &str, key: Option<&str>, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(example("set-tier.sh"))
        .args(args)
        .env("CONTROL_PLANE_URL", cp_url)
        .env_remove("RATE_LIMIT_ADMIN_API_KEY");
    if let Some(key) = key {
        cmd.env("RATE_LIMIT_ADMIN_API_KEY", key);
    }
    let out = run(cmd, Duration::from_secs(30));
    let (stdout, stderr) = text(&out);
    (out.status.code(), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_example_changes_a_tier_live() {
    let stack = StackBuilder::new(control_plane_bin!(), &config())
        .with_redis()
        .control_plane_env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start();
    let cp = stack.control_plane.url("");
    let url = stack.url("/api/v1/health");

    let (code, stdout, stderr) = set_tier(&cp, Some(ADMIN_KEY), &["free", "3"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("tier free: 5 per 60 s -> 3 per 60 s"),
        "{stdout}"
    );
    assert!(stdout.contains("applied: version"), "{stdout}");

    // The new budget is in force through Envoy at once.
    let c = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 82)));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(&c, &url, &[]).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);

    // A change validation refuses: the endpoint rule (2) would exceed the new budget (1).
    let (code, stdout, stderr) = set_tier(&cp, Some(ADMIN_KEY), &["free", "1"]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("tiers[0].endpoints./api/v1/request"),
        "the refusal names the field: {stderr}"
    );
    let (code, _, stderr) = set_tier(&cp, Some(ADMIN_KEY), &["free", "20", "30"]);
    assert_eq!(code, Some(0), "{stderr}");

    // Mistakes fail clearly.
    let (code, _, stderr) = set_tier(&cp, Some(ADMIN_KEY), &["gold", "10"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("no tier 'gold'") && stderr.contains("free, small"),
        "{stderr}"
    );
    let (code, _, stderr) = set_tier(&cp, Some("wrong-key"), &["free", "10"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("401"), "{stderr}");
    let (code, _, stderr) = set_tier(&cp, None, &["free", "10"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("RATE_LIMIT_ADMIN_API_KEY"), "{stderr}");
    let (code, _, stderr) = set_tier(&cp, Some(ADMIN_KEY), &["free"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("usage"), "{stderr}");
}

/// The commands examples/README.md and docs/OPERATIONS.md show, against the sample
/// configuration they are written for.
#[test]
fn the_documented_admin_commands_work_on_the_sample_configuration() {
    let cp = rl_tests::ControlPlaneBuilder::new(control_plane_bin!(), &rl_tests::sample_config())
        .env("RATE_LIMIT_ADMIN_API_KEY", ADMIN_KEY)
        .start();
    let url = cp.url("");
    for args in [
        &["free", "60"][..],
        &["free", "100", "60"],
        &["free", "80"],
        &["premium", "2000", "120"],
    ] {
        let (code, stdout, stderr) = set_tier(&url, Some(ADMIN_KEY), args);
        assert_eq!(code, Some(0), "{args:?}: {stdout}\n{stderr}");
    }
    let (code, _, stderr) = set_tier(&url, Some(ADMIN_KEY), &["free", "20"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("tiers[0].endpoints./api/v1/request"),
        "{stderr}"
    );
    // A tier of several windows is left to the admin API, with a message saying so.
    let (code, _, stderr) = set_tier(&url, Some(ADMIN_KEY), &["enterprise", "5000"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("has several windows (200 per 1 s, 10000 per 60 s"),
        "{stderr}"
    );
    // The unlimited tier can be given a budget: `unlimited` is dropped.
    let (code, stdout, stderr) = set_tier(&url, Some(ADMIN_KEY), &["unlimited", "5000"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("tier unlimited: unlimited per 60 s -> 5000 per 60 s"),
        "{stdout}"
    );
}
