//! Benchmarks live in `benches/` (criterion); the load benchmark is `scripts/load-bench.sh`.
//! This library holds what they share.

use control_plane::config::{CompiledConfig, parse_yaml};

pub mod compare_runs;
pub mod false_denials;

/// A configuration whose limits never bind, so benchmarks measure admitted decisions (the
/// largest limits the configuration accepts: the rules one below the budget, as a rule at the
/// budget over the same window could never bind and is refused).
pub fn bench_config() -> CompiledConfig {
    let yaml = r#"
default_tier: free
tiers:
  - name: free
    requests_per_window: 1000000
    window_size_seconds: 60
    endpoints:
      /api/v1/request: 999999
      /api/v1/admin/*: 999999
"#;
    match parse_yaml(yaml).and_then(CompiledConfig::compile) {
        Ok(cfg) => cfg,
        Err(err) => panic!("bench config: {err}"),
    }
}
