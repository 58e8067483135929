use super::*;

fn run(variant: &str, phase: &str, conns: u64, rps: f64, envoy: f64, extra: &str) -> String {
    format!(
        r#"{{"variant":"{variant}","phase":"{phase}","connections":{conns},
            "load":{{"rps":{rps},"requests":1000}},
            "cpu_us_per_request":{{"envoy":{envoy},"control_plane":5.0}}{extra}}}"#
    )
}

fn results(commit: &str, runs: &[String]) -> String {
    format!(
        r#"{{"provenance":{{"commit":"{commit}"}},"runs":[{}]}}"#,
        runs.join(",")
    )
}

#[test]
fn stages_are_medians_against_passthrough_of_the_same_run() {
    let before = results(
        "aaa",
        &[
            run("1", "a", 100, 30_000.0, 40.0, ""),
            run("1", "a", 100, 34_000.0, 44.0, ""),
            run("1", "a", 1000, 1.0, 1.0, ""),
            run("1", "b", 100, 1.0, 1.0, ""),
            run(
                "4",
                "a",
                100,
                12_000.0,
                80.0,
                r#","decisions":500,"redis":{"cpu_us":10000,"script_calls":50,"commands":8000}"#,
            ),
        ],
    );
    let after = results(
        "bbb",
        &[
            run("1", "a", 100, 32_000.0, 42.0, ""),
            run("4", "a", 100, 16_000.0, 70.0, r#","decisions":1000"#),
            run("9", "a", 100, 1.0, 1.0, ""),
        ],
    );
    let (b, a) = (parse(&before, 100).unwrap(), parse(&after, 100).unwrap());
    let table = render(&b, &a, 100);
    assert!(table.contains("before: commit `aaa`") || table.contains("Before: commit `aaa`"));
    assert!(table.contains("| stage | source | 1 before | 1 after | 4 before | 4 after |"));
    // Configuration 9 was measured by one run only.
    assert!(!table.contains("9 before"), "{table}");
    let row = |name: &str| -> String {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row {name}: {table}"))
            .to_string()
    };
    // Passthrough's median of 30,000 and 34,000 is 32,000: 12,000 / 32,000.
    assert!(
        row("ratio to configuration 1").ends_with("| 1.00 | 1.00 | 0.38 | 0.50 |"),
        "{table}"
    );
    assert!(
        row("filter + callout over configuration 1 (CPU µs)").ends_with("| 38.0 | 28.0 |"),
        "{table}"
    );
    // 5 µs per request, 1,000 requests, 500 decisions: 10 µs per decision.
    assert!(
        row("control plane (CPU µs per decision)").ends_with("| 10.0 | 5.0 |"),
        "{table}"
    );
    assert!(
        row("Redis (CPU µs per decision)").ends_with("| 20.0 | n/a |"),
        "{table}"
    );
    assert!(
        row("Redis commands per request").ends_with("| 8.00 | n/a |"),
        "{table}"
    );
}

#[test]
fn unusable_files_are_refused_with_the_reason() {
    assert!(parse("{", 100).unwrap_err().contains("not JSON"));
    assert!(parse("{}", 100).unwrap_err().contains("runs"));
    let no_rps = r#"{"runs":[{"variant":"1","phase":"a","connections":100,"load":{}}]}"#;
    assert!(parse(no_rps, 100).unwrap_err().contains("load.rps"));
}
