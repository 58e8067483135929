use super::*;

fn rows() -> Vec<Variant> {
    table(&Programs {
        control_plane: PathBuf::from("/cp"),
        wasm: PathBuf::from("/f.wasm"),
        envoy_concurrency: 2,
    })
}

fn no_files(path: &str) -> Result<String, String> {
    Err(format!("no file {path}"))
}

#[test]
fn the_table_names_each_configuration_once_and_passthrough_runs_every_phase() {
    let rows = rows();
    let mut names: Vec<&str> = rows.iter().map(|v| v.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), TABLE.len());
    for name in DEFAULT_ROUND {
        assert!(names.contains(name), "{name}");
    }
    let passthrough = rows.iter().find(|v| v.name == "1").unwrap();
    assert_eq!(passthrough.filter, FilterKind::None);
    for phase in [Phase::A, Phase::B, Phase::C, Phase::Fixed] {
        assert!(passthrough.runs(phase), "{phase:?}");
        // Every configuration with exact counters and a control plane runs what the
        // verdicts judge; slotted counters, throughput and hot identities only; charging,
        // the fixed rate only (a charge changes what the admission checks expect).
        for v in rows
            .iter()
            .filter(|v| v.uses_control_plane() && !v.charging)
        {
            let judged = (v.counters == Counters::Exact && v.filter == FilterKind::Wasm)
                || matches!(phase, Phase::A | Phase::B);
            assert_eq!(v.runs(phase), judged, "{} {phase:?}", v.name);
        }
    }
    let charging: Vec<&Variant> = rows.iter().filter(|v| v.charging).collect();
    assert_eq!(charging.len(), 1);
    assert_eq!(charging[0].name, "4c");
    assert_eq!(charging[0].phases, [Phase::Fixed]);
    assert_eq!(
        (charging[0].filter, charging[0].store),
        (FilterKind::Wasm, StoreKind::Redis)
    );
    let floor = rows.iter().find(|v| v.name == "w").unwrap();
    assert_eq!(floor.filter, FilterKind::WasmNoCallout);
    assert!(!floor.uses_control_plane());
}

#[test]
fn a_variant_derives_from_a_row() {
    let rows = rows();
    let read = |path: &str| Ok(format!("# {path}"));
    let v = parse_variant(
        "name=4x,base=4,cp-bin=/other,cp-env=TOKIO_WORKER_THREADS=1,cp-arg=--x,cluster-extra=h2.yaml,counters=slotted",
        &rows,
        read,
    )
    .unwrap();
    assert_eq!(v.name, "4x");
    assert_eq!(v.store, StoreKind::Redis);
    assert_eq!(v.control_plane, PathBuf::from("/other"));
    assert_eq!(v.cp_env, [("TOKIO_WORKER_THREADS".into(), "1".into())]);
    assert_eq!(v.cp_args, ["--x"]);
    assert_eq!(v.cluster_extra, "# h2.yaml\n");
    assert_eq!(v.counters, Counters::Slotted);
    assert!(v.label.ends_with("(4x)"));

    for (spec, error) in [
        ("base=4", "name= is required"),
        ("name=x", "base= is required"),
        ("name=x,base=9", "base must be one of"),
        ("name=4,base=3", "already a configuration"),
        ("name=x,base=4,nope=1", "unknown field nope"),
        ("name=x,base=4,oops", "is not key=value"),
        ("name=x,base=4,envoy-concurrency=0", "envoy-concurrency"),
        ("name=x,base=4,filter-yaml=f.yaml", "no file f.yaml"),
        ("name=x,base=4,counters=fixed", "counters=exact|slotted"),
    ] {
        let err = parse_variant(spec, &rows, no_files).unwrap_err();
        assert!(err.contains(error), "{spec}: {err}");
    }
}

#[test]
fn repeats_are_interleaved_and_numbered() {
    let rows = rows();
    let by_name = |n: &str| rows.iter().find(|v| v.name == n).unwrap();
    let round = [by_name("1"), by_name("4"), by_name("3")];
    let order: Vec<(String, u32)> = interleave(&round, 3)
        .into_iter()
        .map(|(v, n)| (v.name.clone(), n))
        .collect();
    let want: Vec<(String, u32)> = [
        ("1", 1),
        ("4", 1),
        ("3", 1),
        ("1", 2),
        ("4", 2),
        ("3", 2),
        ("1", 3),
        ("4", 3),
        ("3", 3),
    ]
    .iter()
    .map(|(n, r)| (n.to_string(), *r))
    .collect();
    assert_eq!(order, want);
    // Listed twice in a round: two repeats per round, numbered on.
    let order: Vec<u32> = interleave(&[by_name("1"), by_name("1")], 2)
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(order, [1, 2, 3, 4]);
}
