use super::*;

const ENVOY: &str = r#"# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="rate_limit_control_plane",le="0.5"} 10
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="rate_limit_control_plane",le="1"} 30
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="rate_limit_control_plane",le="5"} 40
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="rate_limit_control_plane",le="+Inf"} 40
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="rate_limit_control_plane"} 35.5
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="rate_limit_control_plane"} 40
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="demo_upstream"} 99
"#;

#[test]
fn histogram_deltas_and_quantiles() {
    let after = Prom::parse(ENVOY);
    let before = Prom::default();
    let labels = [("envoy_cluster_name", "rate_limit_control_plane")];
    let h = HistDelta::between(&before, &after, "envoy_cluster_upstream_rq_time", &labels).unwrap();
    assert_eq!(h.count, 40.0);
    assert!((h.mean().unwrap() - 35.5 / 40.0).abs() < 1e-9);
    // Median: 20th of 40, halfway through the (0.5, 1] bucket.
    assert!((h.quantile(0.5).unwrap() - 0.75).abs() < 1e-9);
    assert!((h.quantile(0.25).unwrap() - 0.5).abs() < 1e-9);
    assert_eq!(
        after.sum("envoy_cluster_upstream_rq_time_count", &[]),
        Some(139.0)
    );
    assert_eq!(after.sum("missing", &[]), None);
}

#[test]
fn labels_with_escapes() {
    let p = Prom::parse("m{a=\"x\\\"y\",b=\"2\"} 3\n");
    assert_eq!(p.sum("m", &[("a", "x\"y"), ("b", "2")]), Some(3.0));
}

#[test]
fn redis_command_stats() {
    let info = "# Commandstats\r\ncmdstat_evalsha:calls=1200,usec=30000,usec_per_call=25.00,rejected_calls=0,failed_calls=0\r\ncmdstat_eval:calls=2,usec=90,usec_per_call=45.00\r\ncmdstat_zadd:calls=2404,usec=1,usec_per_call=0.01\r\ncmdstat_ping:calls=3,usec=1,usec_per_call=0.33\r\n";
    assert_eq!(
        redis_commands(info),
        Some(RedisCommands {
            script_calls: 1202.0,
            evalsha_us_per_call: 25.0,
            commands: 3609.0,
        })
    );
    assert_eq!(redis_commands("# Commandstats\r\n"), None);
}

#[test]
fn rss_from_proc_status() {
    let status = "Name:\tcontrol-plane\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
    assert_eq!(parse_rss_kib(status), Some(12_345));
    assert_eq!(parse_rss_kib("Name: x\n"), None);
    assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
}

#[test]
fn own_cpu_is_readable() {
    assert!(process_cpu_us(std::process::id()).is_some());
    assert!(machine_busy_us() > 0.0);
}
