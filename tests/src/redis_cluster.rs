//! A private Redis Cluster from Debian's redis-server: 3 masters with 3 replicas for the
//! scale-out and failover tests, or 3 masters alone for the store tests, optionally each behind
//! a [`TcpProxy`] that the node announces, so that every client connection passes through it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{Output, Proc};
use crate::tcp_proxy::TcpProxy;
use crate::{prereq, redis_server};

pub struct RedisCluster {
    nodes: Vec<Node>,
    _dir: TempDir,
}

struct Node {
    port: u16,
    proc: Option<Proc>,
    /// In front of the node, and the address the node announces to clients.
    proxy: Option<TcpProxy>,
}

/// A free port whose cluster bus port (+10000) is valid too.
fn cluster_port() -> u16 {
    loop {
        let port = crate::free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn redis_cli() -> std::path::PathBuf {
    let server = prereq::redis_server();
    let beside = server.with_file_name("redis-cli");
    if beside.is_file() {
        return beside;
    }
    panic!(
        "redis-cli not found next to {}: install it with `apt-get install -y redis-tools` \
         (it comes with redis-server)",
        server.display()
    );
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(redis_cli())
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).to_string()
}

impl RedisCluster {
    /// Starts six nodes (3 masters, 3 replicas) and forms the cluster; waits until every
    /// node reports `ok` and every replica is in sync.
    pub fn start() -> RedisCluster {
        Self::start_nodes(6, 1, false)
    }

    /// Three masters without replicas: a real cluster (slots spread over three nodes,
    /// redirections, one node per identity) that starts faster, for tests that kill nothing.
    pub fn start_masters() -> RedisCluster {
        Self::start_nodes(3, 0, false)
    }

    /// Three masters, each behind its own [`TcpProxy`]: the nodes announce the proxies' ports
    /// (`cluster-announce-port`), so a cluster client reaches every node through them and a
    /// test can lose a node's reply ([`proxy_of_slot`](Self::proxy_of_slot)). The cluster bus
    /// between the nodes stays direct.
    pub fn start_masters_behind_proxies() -> RedisCluster {
        Self::start_nodes(3, 0, true)
    }

    fn start_nodes(count: usize, replicas: usize, proxied: bool) -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for i in 0..count {
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            nodes.push(Self::launch_on_a_free_port(&node_dir, proxied));
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut create = Command::new(redis_cli());
        create.arg("--cluster").arg("create").args(&addrs).args([
            "--cluster-replicas",
            &replicas.to_string(),
            "--cluster-yes",
        ]);
        // The nodes' own addresses: `CLUSTER MEET` reaches the bus at the real port + 10000.
        let out = create.output().expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.wait_ok(Duration::from_secs(30));
        cluster
    }

    /// A port (or its bus port, or the proxy's) can be taken between choosing and binding
    /// it, by a test running beside this one or by the proxy itself: try a few.
    fn launch_on_a_free_port(dir: &Path, proxied: bool) -> Node {
        let mut last = String::new();
        for _ in 0..5 {
            let port = cluster_port();
            let proxy = proxied.then(|| TcpProxy::start(port));
            match Self::launch(dir, port, proxy) {
                Ok(node) => return node,
                Err(output) => last = output,
            }
        }
        panic!("redis-server (cluster node) did not start:\n{last}");
    }

    /// The node once it answers, or the server's last output when it exits.
    fn launch(dir: &Path, port: u16, proxy: Option<TcpProxy>) -> Result<Node, String> {
        let mut cmd = redis_server::command(port);
        if let Some(proxy) = &proxy {
            cmd.arg("--cluster-announce-port")
                .arg(proxy.port().to_string());
        }
        cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--appendonly", "no", "--save", ""])
            // Replicas sync at once (the default waits 5 s before a diskless sync).
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir);
        let mut proc = Proc::spawn("redis-server", cmd, Output::default());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // Only an answer from our own process counts (another test may hold the port).
            let answering = redis_server::process_id_in(&cli(port, &["INFO", "server"]));
            if answering.is_some() && answering == proc.pid() {
                return Ok(Node {
                    port,
                    proc: Some(proc),
                    proxy,
                });
            }
            if !proc.is_running() {
                return Err(proc.output.tail(20));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("cluster node on {port} did not start");
    }

    fn wait_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            // State ok everywhere, and every replica in sync (else it cannot take over).
            let all_ok = self.live_ports().iter().all(|&p| {
                let replication = cli(p, &["INFO", "replication"]);
                cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            });
            if all_ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cluster did not reach state ok");
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.proc.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// Seed URLs, comma-separated (what `RATE_LIMIT_REDIS_URL` takes in cluster mode): the
    /// proxies of a cluster behind proxies.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let port = n.proxy.as_ref().map_or(n.port, TcpProxy::port);
                format!("redis://127.0.0.1:{port}/")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Hash slot of a key.
    pub fn keyslot(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        cli(port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("keyslot")
    }

    /// Port of the live master serving `slot`, as a live node sees it (the port it announces:
    /// its proxy's, behind proxies). Right after a failover that node may still name the dead
    /// master, or none: it is asked again for a few seconds.
    pub fn master_of(&self, slot: u16) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(10);
        let live = self.live_ports();
        let announced: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.proc.is_some())
            .map(|n| n.proxy.as_ref().map_or(n.port, TcpProxy::port))
            .collect();
        loop {
            let nodes = cli(live[0], &["CLUSTER", "NODES"]);
            if let Some(port) = master_in(&nodes, slot).filter(|p| announced.contains(p)) {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no master serves slot {slot}:\n{nodes}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The proxy in front of the master serving `slot` (a cluster started
    /// [behind proxies](Self::start_masters_behind_proxies)).
    pub fn proxy_of_slot(&self, slot: u16) -> &TcpProxy {
        // The nodes announce their proxies' ports, so that is what `CLUSTER NODES` lists.
        let announced = self.master_of(slot);
        self.nodes
            .iter()
            .filter_map(|n| n.proxy.as_ref())
            .find(|p| p.port() == announced)
            .unwrap_or_else(|| panic!("no proxy on {announced}, the master of slot {slot}"))
    }

    /// Port of the replica of the master on `master`, as a live node sees it.
    pub fn replica_of(&self, master: u16) -> u16 {
        let nodes = cli(self.live_ports()[0], &["CLUSTER", "NODES"]);
        let port_of = |fields: &[&str]| -> Option<u16> {
            let addr = fields.get(1)?.split('@').next()?;
            addr.rsplit(':').next()?.parse().ok()
        };
        let rows: Vec<Vec<&str>> = nodes
            .lines()
            .map(|l| l.split_whitespace().collect())
            .filter(|f: &Vec<&str>| f.len() >= 8)
            .collect();
        let master_id = rows
            .iter()
            .find(|f| port_of(f) == Some(master))
            .map(|f| f[0])
            .unwrap_or_else(|| panic!("no node on port {master}:\n{nodes}"));
        rows.iter()
            .find(|f| f[2].contains("slave") && f[3] == master_id)
            .and_then(|f| port_of(f))
            .unwrap_or_else(|| panic!("the master on {master} has no replica:\n{nodes}"))
    }

    /// `ZCARD key` as the node on `port` itself holds it, replica or master (a replica
    /// answers for its master's slots after `READONLY` instead of redirecting).
    pub fn zcard_at(&self, port: u16, key: &str) -> u64 {
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("connect to cluster node {port}: {e}"));
        redis::cmd("READONLY")
            .query::<()>(&mut conn)
            .unwrap_or_else(|e| panic!("READONLY on {port}: {e}"));
        redis::cmd("ZCARD")
            .arg(key)
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("ZCARD {key} on {port}: {e}"))
    }

    /// `kill -9` of the node on `port`.
    pub fn kill9(&mut self, port: u16) {
        for node in &mut self.nodes {
            if node.port == port
                && let Some(mut proc) = node.proc.take()
            {
                proc.kill9();
            }
        }
    }

    /// How many times the live nodes have run `command` (lower case, e.g. `evalsha`), summed
    /// over their `INFO commandstats`.
    pub fn command_calls(&self, command: &str) -> u64 {
        self.live_ports()
            .into_iter()
            .map(|port| {
                crate::redis_server::command_calls_in(
                    &cli(port, &["INFO", "commandstats"]),
                    command,
                )
            })
            .sum()
    }

    /// `redis-cli` against any live node, for assertions.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        cli(self.live_ports()[0], &all)
    }
}

/// The master serving `slot` in a `CLUSTER NODES` listing (nodes marked failing skipped).
fn master_in(nodes: &str, slot: u16) -> Option<u16> {
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
            continue;
        }
        let owns = fields[8..].iter().any(|range| {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
        });
        if owns {
            let addr = fields[1].split('@').next().unwrap_or_default();
            return addr.rsplit(':').next().and_then(|p| p.parse().ok());
        }
    }
    None
}
