use std::path::PathBuf;

use super::*;
use crate::configs::{Programs, table};
use crate::tools::LoadResult;
use crate::verdicts::{Evidence, all};

fn options() -> Options {
    let mut o = crate::parse_options(["--envoy", "/e", "--redis-server", "/r"].map(String::from))
        .unwrap()
        .unwrap();
    o.conns = vec![100];
    o
}

fn run(variant: &str, repeat: u32, rps: f64, p95: f64) -> RunRecord {
    RunRecord {
        variant: variant.into(),
        repeat,
        phase: Phase::A,
        connections: 100,
        load: LoadResult {
            requests: (rps * 15.0) as u64,
            rps,
            p95_ms: p95,
            ..LoadResult::default()
        },
        cpu_us_per_request: [("envoy".to_string(), 70.0 + repeat as f64)].into(),
        ..RunRecord::default()
    }
}

#[test]
fn the_report_says_what_was_measured_and_every_start_counts() {
    let opts = options();
    let variants: Vec<Variant> = table(&Programs {
        control_plane: PathBuf::from("/cp"),
        wasm: PathBuf::from("/f.wasm"),
        envoy_concurrency: 2,
    })
    .into_iter()
    .filter(|v| v.name == "1" || v.name == "4")
    .collect();
    // Configuration 4's starts differ: the tables show their median and range, not the
    // first start's figures.
    let records = vec![
        run("1", 1, 20_000.0, 8.0),
        run("4", 1, 10_000.0, 17.0),
        run("1", 2, 22_000.0, 8.2),
        run("4", 2, 12_000.0, 16.0),
        run("1", 3, 21_000.0, 8.1),
        run("4", 3, 14_000.0, 15.0),
    ];
    let cells = Cells::new(&records);
    let verdicts = all(&Evidence {
        variants: &variants,
        cells: &cells,
        conns: &opts.conns,
        rates: &opts.rates,
        rate_conns: opts.rate_conns,
        ceiling: 21_000.0,
    });
    let provenance = Provenance {
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        dirty: true,
        changes: vec![" M README.md".into()],
        started_at: "2026-12-01T10:00:00Z".into(),
        cpus: 2,
        envoy: "envoy 1.40".into(),
        redis_server: "Redis 7".into(),
        wrk: "wrk 4.1.0".into(),
    };
    let memory = vec![
        CounterMemory {
            algorithm: Counters::Exact,
            limit: 100,
            admitted: 100,
            denied_after: true,
            key: "rl:{key:m100}:b".into(),
            redis_type: "zset".into(),
            encoding: "listpack".into(),
            entries: Some(100),
            bytes: Some(6_216),
        },
        CounterMemory {
            algorithm: Counters::Slotted,
            limit: 100_000,
            admitted: 100_000,
            denied_after: true,
            key: "rl:{key:s100000}:b:3600s60000".into(),
            redis_type: "hash".into(),
            encoding: "listpack".into(),
            entries: Some(4),
            bytes: Some(96),
        },
    ];
    let round = vec!["1".to_string(), "4".to_string()];
    let text = render(&Input {
        opts: &opts,
        provenance: &provenance,
        variants: &variants,
        round: &round,
        records: &records,
        cells: &cells,
        verdicts: &verdicts,
        memory: Some(&memory),
        failures: &["configuration 3 start 2: Envoy did not start".to_string()],
        ceiling: 21_000.0,
        ceiling_source: "measured",
        elapsed: Duration::from_secs(1_800),
    });
    for expected in [
        "`0123456789abcdef0123456789abcdef01234567` **with uncommitted changes** (1 paths: `M README.md`)",
        "round: 1, 4",
        "| throughput | 4 | phase a, 100 connections |",
        "| 0.57 × (repeats 0.50–0.67) | **pass** |",
        "| 4 / 1 | 100 | 12,000 (10,000–14,000) | 21,000 (20,000–22,000) | **0.57** | 0.55 (0.50–0.67) |",
        "| 4 | a (10,000 identities) | 100 | 3 | 12,000 (10,000–14,000) | 0.57 | ",
        "16.0 (15.0–17.0)",
        "| exact | 100 | 100 | yes | zset (listpack) | 100 | 6,216 | 62.2 |",
        "| slotted | 100,000 | 100,000 | yes | hash (listpack) | 4 | 96 | 0.0 |",
        "| 4 | 12,000 | 72.0 |",
        "- configuration 3 start 2: Envoy did not start",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn numbers() {
    assert_eq!(thousands(1_234_567.4), "1,234,567");
    assert_eq!(thousands(-1_000.0), "-1,000");
    assert_eq!(thousands(999.0), "999");
    assert_eq!(
        (ms(123.4), ms(12.34), ms(1.234)),
        ("123".into(), "12.3".into(), "1.23".into())
    );
    let s = crate::summary::spread([1.0, 2.0, 3.0]);
    assert_eq!(spread_text(s, |x| format!("{x:.0}")), "2 (1–3)");
    assert_eq!(
        spread_text(crate::summary::spread([5.0]), |x| format!("{x:.0}")),
        "5"
    );
    assert_eq!(spread_text(None, |x| format!("{x}")), "n/a");
}

#[test]
fn redis_cpu_per_decision_is_shown_for_each_configuration_on_redis() {
    use crate::measure::RedisCommands;
    use crate::record::RedisRun;
    let opts = options();
    let variants: Vec<Variant> = table(&Programs {
        control_plane: PathBuf::from("/cp"),
        wasm: PathBuf::from("/f.wasm"),
        envoy_concurrency: 2,
    })
    .into_iter()
    .filter(|v| ["1", "3", "4", "4s"].contains(&v.name.as_str()))
    .collect();
    // `cpu_us` of redis-server and the decisions of each start: 4 at 30 and 20 µs per
    // decision, 4s at 12 and 14 (and 3, on memory, not shown).
    let on_redis =
        |variant: &str, repeat: u32, cpu_us: f64, decisions: f64, calls: f64| RunRecord {
            decisions: Some(decisions),
            redis: Some(RedisRun {
                commands: RedisCommands {
                    script_calls: calls,
                    ..RedisCommands::default()
                },
                cpu_us,
            }),
            ..run(variant, repeat, 10_000.0, 10.0)
        };
    let records = vec![
        run("1", 1, 20_000.0, 8.0),
        on_redis("4", 1, 3_000_000.0, 100_000.0, 10_000.0),
        on_redis("4", 2, 2_000_000.0, 100_000.0, 10_000.0),
        on_redis("4s", 1, 1_200_000.0, 100_000.0, 5_000.0),
        on_redis("4s", 2, 1_400_000.0, 100_000.0, 5_000.0),
        RunRecord {
            decisions: Some(100_000.0),
            ..run("3", 1, 10_000.0, 10.0)
        },
    ];
    let cells = Cells::new(&records);
    let provenance = Provenance::default();
    let round: Vec<String> = variants.iter().map(|v| v.name.clone()).collect();
    let text = render(&Input {
        opts: &opts,
        provenance: &provenance,
        variants: &variants,
        round: &round,
        records: &records,
        cells: &cells,
        verdicts: &[],
        memory: None,
        failures: &[],
        ceiling: 20_000.0,
        ceiling_source: "measured",
        elapsed: Duration::from_secs(60),
    });
    for expected in [
        "### Redis CPU per decision",
        "Target for slotted windows: ≤ 15 µs.",
        "| 4 | exact log | phase a, 100 connections | 100,000 | 25.0 (20.0–30.0) | 0.100 | — |",
        "| 4s | slotted | phase a, 100 connections | 100,000 | 13.0 (12.0–14.0) | 0.050 | ≤ 15: met |",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains("| 3 | exact log |"),
        "a configuration on memory has no Redis row:\n{text}"
    );

    // Over the target: by how much.
    let records = vec![on_redis("4s", 1, 2_000_000.0, 100_000.0, 5_000.0)];
    let cells = Cells::new(&records);
    let text = render(&Input {
        records: &records,
        cells: &cells,
        opts: &opts,
        provenance: &provenance,
        variants: &variants,
        round: &round,
        verdicts: &[],
        memory: None,
        failures: &[],
        ceiling: 20_000.0,
        ceiling_source: "measured",
        elapsed: Duration::from_secs(60),
    });
    assert!(
        text.contains("| 20.0 | 0.050 | ≤ 15: 5.0 over |"),
        "missing the distance in:\n{text}"
    );
}
