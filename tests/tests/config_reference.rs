//! docs/CONFIGURATION.md against the code, so the reference cannot drift: every flag and
//! `RATE_LIMIT_*` variable of `control-plane --help`, every field of the configuration file
//! schema and every field of the filter's plugin configuration is documented with the default
//! the code applies, every stat of the filter is listed, and the document names nothing the
//! code does not have.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use control_plane::config::{
    ApiKeyConfig, CounterAlgorithm, DescriptorKeys, EndpointRule, JwtConfig, RateLimitConfig,
    RateLimitServiceConfig, RuleConfig, TierConfig, WindowConfig, parse_json,
};
use rate_limit_filter::config::{ConfigError as PluginError, MAX_TIMEOUT_MS, PluginConfig};
use rate_limit_filter::engine::NO_CALLOUT_HEADERS;
use rate_limit_filter::response::METRIC_NAMES;
use rl_tests::{ControlPlane, control_plane_bin, repo_root};
use serde_json::{Value, json};

const DOC: &str = "docs/CONFIGURATION.md";

fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The text of the `## {heading}` section.
fn section(doc: &str, heading: &str) -> String {
    let start = doc
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("{DOC} has no section `## {heading}`"));
    let rest = &doc[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

/// The first Markdown table of a section: (header cells, rows of cells).
fn table(section: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let lines: Vec<Vec<String>> = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert!(lines.len() > 2, "no table in:\n{section}");
    let header = lines[0].clone();
    let rows = lines[2..].to_vec();
    for row in &rows {
        assert_eq!(row.len(), header.len(), "malformed table row {row:?}");
    }
    (header, rows)
}

/// Every `code` span of a cell.
fn codes(cell: &str) -> Vec<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

fn column(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("table has no `{name}` column: {header:?}"))
}

/// Rows keyed by the code span of their first cell.
fn rows_by_name(rows: &[Vec<String>]) -> BTreeMap<String, Vec<String>> {
    rows.iter()
        .map(|row| {
            let name = codes(&row[0])
                .into_iter()
                .next()
                .unwrap_or_else(|| panic!("first cell without a `name`: {row:?}"));
            (name, row.clone())
        })
        .collect()
}

/// What the documentation must say in a row's default cell.
#[derive(Debug, Clone, PartialEq)]
enum Expected {
    /// This value, as a code span.
    Value(String),
    Required,
    RequiredUnless,
    Unset,
    /// A flag without a value: off unless given.
    Switch,
}

fn check_default(what: &str, cell: &str, want: &Expected) {
    let ok = match want {
        Expected::Value(v) => codes(cell).contains(v),
        Expected::Required => cell == "required",
        Expected::RequiredUnless => cell.starts_with("required unless"),
        Expected::Unset => cell.starts_with("unset"),
        Expected::Switch => codes(cell).contains(&"false".to_string()),
    };
    assert!(
        ok,
        "{DOC}: the default of {what} is documented as {cell:?}; the code says {want:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The control-plane process

struct CliOption {
    flag: String,
    /// Takes no value (`--redis-cluster`, not `--listen <LISTEN>`).
    switch: bool,
    env: Option<String>,
    default: Option<String>,
}

/// The options of `control-plane --help`.
fn help_options() -> Vec<CliOption> {
    let mut proc = ControlPlane::spawn_raw(control_plane_bin!(), &["--help"], &[]);
    assert_eq!(
        proc.wait_exit(Duration::from_secs(20)),
        Some(0),
        "control-plane --help failed"
    );
    // `wait_exit` joined the output readers: the text is complete.
    let help = proc.output.text();
    assert!(help.contains("Options:"), "{help}");
    // One block per option: option lines are indented less than their descriptions.
    let mut blocks: Vec<String> = Vec::new();
    for line in help
        .lines()
        .skip_while(|l| !l.starts_with("Options:"))
        .skip(1)
    {
        let indent = line.len() - line.trim_start().len();
        if line.trim_start().starts_with('-') && indent < 8 {
            blocks.push(String::new());
        }
        if let Some(block) = blocks.last_mut() {
            block.push(' ');
            block.push_str(line.trim());
        }
    }
    let between = |text: &str, open: &str, close: &[char]| {
        let start = text.find(open)? + open.len();
        let end = text[start..].find(close)?;
        Some(text[start..start + end].trim().to_string())
    };
    blocks
        .iter()
        .map(|block| {
            let block = block.split_whitespace().collect::<Vec<_>>().join(" ");
            let flag = block
                .split([' ', ','])
                .find(|w| w.starts_with("--"))
                .unwrap_or_else(|| panic!("no --flag in {block}"))
                .to_string();
            let head = block.split('[').next().unwrap_or_default();
            CliOption {
                switch: !head.split(" ").take(3).any(|w| w.starts_with('<')),
                flag,
                env: between(&block, "[env: ", &['=', ']']),
                default: between(&block, "[default: ", &[']']),
            }
        })
        .filter(|o| o.flag != "--help" && o.flag != "--version")
        .collect()
}

#[test]
fn every_flag_and_variable_is_documented_with_its_default() {
    let options = help_options();
    assert!(options.len() >= 8, "too few options parsed from --help");
    let doc = read(DOC);
    let (header, rows) = table(&section(&doc, "Control-plane process"));
    let (var_col, default_col) = (column(&header, "variable"), column(&header, "default"));
    let rows = rows_by_name(&rows);
    for option in &options {
        let row = rows
            .get(&option.flag)
            .unwrap_or_else(|| panic!("{DOC}: flag {} is not documented", option.flag));
        let env = option
            .env
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no RATE_LIMIT_* variable", option.flag));
        assert!(env.starts_with("RATE_LIMIT_"), "{env}");
        assert_eq!(
            codes(&row[var_col]),
            std::slice::from_ref(env),
            "{DOC}: variable of {}",
            option.flag
        );
        let want = match &option.default {
            Some(value) => Expected::Value(value.clone()),
            None if option.switch => Expected::Switch,
            None => Expected::Unset,
        };
        check_default(&option.flag, &row[default_col], &want);
    }
    let flags: BTreeSet<&str> = options.iter().map(|o| o.flag.as_str()).collect();
    for name in rows.keys() {
        assert!(
            flags.contains(name.as_str()),
            "{DOC} documents {name}, which control-plane --help does not have"
        );
    }
}

/// `RATE_LIMIT_*` words in a text.
fn variables_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("RATE_LIMIT_") {
        let word: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        // `RATE_LIMIT_*` and the like name the family, not a variable.
        if word.len() > "RATE_LIMIT_".len() {
            found.insert(word.trim_end_matches('_').to_string());
        }
        rest = &rest[i + "RATE_LIMIT_".len()..];
    }
    found
}

#[test]
fn the_docs_name_no_variable_the_binary_does_not_have() {
    let known: BTreeSet<String> = help_options().into_iter().filter_map(|o| o.env).collect();
    let mut files = vec!["README.md".to_string()];
    let docs = std::fs::read_dir(repo_root().join("docs")).expect("docs/");
    for entry in docs.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            files.push(format!("docs/{name}"));
        }
    }
    for file in &files {
        for var in variables_in(&read(file)) {
            assert!(
                known.contains(&var),
                "{file} mentions {var}, which control-plane --help does not know ({known:?})"
            );
        }
    }
    // Every variable appears in the reference.
    let documented = variables_in(&read(DOC));
    for var in &known {
        assert!(documented.contains(var), "{DOC} does not mention {var}");
    }
}

// ---------------------------------------------------------------------------------------
// The configuration file

/// The segment standing for an endpoint rule's pattern in a field path: the keys of
/// `tiers[].endpoints` are user data, not fields, but a rule in object form has fields.
const PATTERN: &str = "<pattern>";

/// Field paths of a serialised configuration (`tiers[].name`, `jwt.issuer`,
/// `tiers[].endpoints.<pattern>.limits`) with their values.
fn field_paths(value: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key.starts_with('/') {
                    // A shorthand rule is a number: `tiers[].endpoints` documents it.
                    if child.is_object() {
                        field_paths(child, &format!("{prefix}.{PATTERN}"), out);
                    }
                    continue;
                }
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                out.insert(path.clone(), child.clone());
                field_paths(child, &path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                field_paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

fn paths_of(config: &RateLimitConfig) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    field_paths(
        &serde_json::to_value(config).expect("serialise"),
        "",
        &mut out,
    );
    out
}

/// A configuration with every field set: a field added to the schema breaks this literal,
/// which is the point.
fn fully_populated() -> RateLimitConfig {
    let window = WindowConfig {
        limit: 5,
        window_seconds: 1,
        algorithm: Some(CounterAlgorithm::Slotted),
        precision_ms: Some(20),
    };
    RateLimitConfig {
        enabled: true,
        default_tier: "free".into(),
        fail_open: true,
        shadow: true,
        tiers: vec![TierConfig {
            name: "free".into(),
            requests_per_window: Some(10),
            limits: Some(vec![window]),
            unlimited: true,
            window_size_seconds: 60,
            algorithm: Some(CounterAlgorithm::Slotted),
            endpoints: BTreeMap::from([
                ("/api/v1/request".to_string(), EndpointRule::Limit(5)),
                (
                    "/api/v1/search".to_string(),
                    EndpointRule::Rule(RuleConfig {
                        limits: vec![window],
                        shadow: true,
                        cost: 2,
                        max_charge: Some(100),
                        count_statuses: vec![401],
                    }),
                ),
            ]),
            shadow: true,
            description: Some("d".into()),
            max_concurrent: Some(4),
        }],
        whitelist: vec!["10.0.0.0/8".into()],
        ipv6_prefix_length: 64,
        api_keys: vec![ApiKeyConfig {
            id: "k".into(),
            tier: "free".into(),
            key: Some("0123456789abcdef".into()),
            key_sha256: Some("00".repeat(32)),
        }],
        jwt: Some(JwtConfig {
            hs256_secret: Some("s".repeat(32)),
            rs256_public_key_pem: Some("pem".into()),
            user_claim: "sub".into(),
            tier_claim: Some("tier".into()),
            issuer: Some("i".into()),
            audience: Some("a".into()),
        }),
        rate_limit_service: Some(RateLimitServiceConfig {
            domain: "edge".into(),
            descriptor_keys: DescriptorKeys::default(),
        }),
    }
}

fn render(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(o) if o.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

/// Removes a field path (`[]` meaning the first element, [`PATTERN`] the rule `/r`) from a
/// JSON document.
fn remove_path(doc: &mut Value, path: &str) {
    let mut node = doc;
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        node = match part.strip_suffix("[]") {
            Some(name) => &mut node[name][0],
            None if *part == PATTERN => &mut node["/r"],
            None => &mut node[*part],
        };
    }
    let last = parts[parts.len() - 1];
    node.as_object_mut()
        .unwrap_or_else(|| panic!("{path}: parent is not an object"))
        .remove(last)
        .unwrap_or_else(|| panic!("{path} is not in the document"));
}

fn parse(doc: &Value) -> Result<RateLimitConfig, String> {
    parse_json(doc.to_string().as_bytes()).map_err(|e| e.to_string())
}

/// The default of every field, as the code applies it.
fn config_defaults() -> BTreeMap<String, Expected> {
    let base = json!({"default_tier": "t", "tiers": [{"name": "t", "requests_per_window": 1}]});
    let base_supplied = [
        "default_tier",
        "tiers",
        "tiers[].name",
        "tiers[].requests_per_window",
    ];
    let mut full = base.clone();
    full["api_keys"] = json!([{"id": "k", "tier": "t", "key": "0123456789abcdef"}]);
    full["jwt"] = json!({"hs256_secret": "s".repeat(32)});
    // An empty section: the parser fills in every field of it.
    full["rate_limit_service"] = json!({});
    // Parsing alone: `limits` beside `requests_per_window` is for validation to refuse.
    full["tiers"][0]["limits"] = json!([{"limit": 1, "window_seconds": 1}]);
    full["tiers"][0]["endpoints"] = json!({"/r": {"limits": [{"limit": 1, "window_seconds": 1}]}});
    let full_supplied: Vec<&str> = base_supplied
        .iter()
        .copied()
        .chain([
            "api_keys",
            "api_keys[].id",
            "api_keys[].tier",
            "api_keys[].key",
            "jwt",
            "jwt.hs256_secret",
            "rate_limit_service",
            "tiers[].limits",
            "tiers[].limits[].limit",
            "tiers[].limits[].window_seconds",
            "tiers[].endpoints",
            "tiers[].endpoints.<pattern>.limits",
            "tiers[].endpoints.<pattern>.limits[].limit",
            "tiers[].endpoints.<pattern>.limits[].window_seconds",
        ])
        .collect();

    let mut defaults = BTreeMap::new();
    // Fields the parser fills in when absent, with the value it fills in.
    for (doc, supplied) in [(&base, &base_supplied[..]), (&full, &full_supplied[..])] {
        let parsed = parse(doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
        for (path, value) in paths_of(&parsed) {
            if !supplied.contains(&path.as_str()) {
                defaults.insert(path, Expected::Value(render(&value)));
            }
        }
    }
    // Fields the parser insists on.
    for path in &full_supplied {
        let mut doc = full.clone();
        remove_path(&mut doc, path);
        let want = match parse(&doc) {
            Err(e) if e.contains("missing field") => Expected::Required,
            Err(e) => panic!("removing {path}: unexpected error {e}"),
            Ok(_) if *path == "tiers[].requests_per_window" => Expected::RequiredUnless,
            // Optional: its default, if any, was found above.
            Ok(_) => Expected::Unset,
        };
        defaults.entry(path.to_string()).or_insert(want);
    }
    // Fields serialised only when not at their default.
    let parsed = parse(&base).unwrap();
    let tier = &parsed.tiers[0];
    assert!(tier.endpoints.is_empty());
    defaults.insert(
        "tiers[].unlimited".into(),
        Expected::Value(tier.unlimited.to_string()),
    );
    defaults.insert("tiers[].endpoints".into(), Expected::Value("{}".into()));
    defaults.insert("shadow".into(), Expected::Value(parsed.shadow.to_string()));
    defaults.insert(
        "tiers[].shadow".into(),
        Expected::Value(tier.shadow.to_string()),
    );
    let parsed = parse(&full).unwrap();
    let EndpointRule::Rule(rule) = &parsed.tiers[0].endpoints["/r"] else {
        panic!("the object form parses as a rule");
    };
    defaults.insert(
        "tiers[].endpoints.<pattern>.shadow".into(),
        Expected::Value(rule.shadow.to_string()),
    );
    defaults.insert(
        "tiers[].endpoints.<pattern>.cost".into(),
        Expected::Value(rule.cost.to_string()),
    );
    // Everything else is optional without a value (`Option`, skipped when `None`).
    for path in paths_of(&fully_populated()).into_keys() {
        defaults.entry(path).or_insert(Expected::Unset);
    }
    defaults
}

#[test]
fn every_config_file_field_is_documented_with_its_default() {
    let defaults = config_defaults();
    assert!(defaults.len() >= 20, "{defaults:?}");
    assert_eq!(defaults["enabled"], Expected::Value("true".into()));
    assert_eq!(defaults["shadow"], Expected::Value("false".into()));
    assert_eq!(
        defaults["tiers[].endpoints.<pattern>.limits[].window_seconds"],
        Expected::Required
    );
    assert_eq!(defaults["tiers[].limits"], Expected::Unset);
    assert_eq!(
        defaults["tiers[].window_size_seconds"],
        Expected::Value("60".into())
    );
    assert_eq!(defaults["default_tier"], Expected::Required);

    let doc = read(DOC);
    let (header, rows) = table(&section(&doc, "Configuration file"));
    let default_col = column(&header, "default");
    let rows = rows_by_name(&rows);
    for (path, want) in &defaults {
        let row = rows
            .get(path)
            .unwrap_or_else(|| panic!("{DOC}: config field `{path}` is not documented"));
        check_default(path, &row[default_col], want);
    }
    for name in rows.keys() {
        assert!(
            defaults.contains_key(name),
            "{DOC} documents config field `{name}`, which the schema does not have"
        );
    }
}

#[test]
fn the_sample_configuration_uses_only_documented_fields() {
    let sample = control_plane::config::parse_yaml(&rl_tests::sample_config()).expect("sample");
    sample.validate().expect("the sample is valid");
    let defaults = config_defaults();
    for path in paths_of(&sample).into_keys() {
        assert!(defaults.contains_key(&path), "{path}");
    }
}

/// The configuration examples of the documents (```yaml blocks with `tiers:`) are valid
/// configurations: shown as they are, after `default_tier: free` where they leave it out.
#[test]
fn the_configuration_examples_of_the_documents_are_valid() {
    let mut checked = 0;
    for file in ["README.md", DOC] {
        let text = read(file);
        for block in text.split("```yaml\n").skip(1) {
            let block = block.split("```").next().unwrap_or_default();
            if !block.contains("tiers:") {
                continue;
            }
            let doc = if block.contains("default_tier:") {
                block.to_string()
            } else {
                format!("default_tier: free\n{block}")
            };
            let parsed = control_plane::config::parse_yaml(&doc)
                .unwrap_or_else(|e| panic!("{file}: example does not parse: {e}\n{doc}"));
            control_plane::config::CompiledConfig::compile(parsed)
                .unwrap_or_else(|e| panic!("{file}: example is invalid: {e}\n{doc}"));
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} examples found");
}

// ---------------------------------------------------------------------------------------
// The filter plugin configuration

/// The fields the filter accepts, as its own error message lists them.
fn plugin_fields() -> Vec<String> {
    let err = PluginConfig::from_json(br#"{"cluster":"c","no_such_field_":1}"#)
        .expect_err("an unknown field is refused");
    assert_eq!(err, PluginError::UnknownField("no_such_field_".into()));
    let text = err.to_string();
    let list = text
        .split_once("(known fields: ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected message {text}"));
    list.split(", ").map(str::to_string).collect()
}

#[test]
fn every_plugin_field_is_documented_with_its_default() {
    let fields = plugin_fields();
    assert!(fields.contains(&"cluster".to_string()), "{fields:?}");
    assert_eq!(
        PluginConfig::from_json(b"{}").unwrap_err(),
        PluginError::Missing("cluster")
    );
    let d = PluginConfig::from_json(br#"{"cluster":"c"}"#).expect("only cluster is required");

    let doc = read(DOC);
    let plugin_section = section(&doc, "Filter plugin configuration");
    let (header, rows) = table(&plugin_section);
    let default_col = column(&header, "default");
    let rows = rows_by_name(&rows);
    for field in &fields {
        let row = rows
            .get(field)
            .unwrap_or_else(|| panic!("{DOC}: plugin field `{field}` is not documented"));
        let cell = &row[default_col];
        match field.as_str() {
            "cluster" => check_default(field, cell, &Expected::Required),
            "authority" => {
                assert_eq!(d.authority, d.cluster);
                assert!(
                    codes(cell).contains(&"cluster".to_string()),
                    "{DOC}: authority defaults to the cluster name, documented as {cell:?}"
                );
            }
            "timeout_ms" => {
                let ms = d.timeout.as_millis().to_string();
                check_default(field, cell, &Expected::Value(ms));
                let range = format!("1–{MAX_TIMEOUT_MS}");
                assert!(
                    row.iter().any(|c| c.contains(&range)),
                    "{DOC}: timeout_ms range {range} not documented"
                );
            }
            "fail_open" => check_default(field, cell, &Expected::Value(d.fail_open.to_string())),
            "api_key_header" => {
                check_default(field, cell, &Expected::Value(d.api_key_header.clone()))
            }
            "trusted_proxies" => {
                assert!(d.trusted_proxies.is_empty());
                check_default(field, cell, &Expected::Value("[]".into()));
            }
            "decision_secret" => {
                assert!(d.decision_secret.is_none());
                check_default(field, cell, &Expected::Unset);
            }
            "benchmark_no_callout" => {
                assert!(!d.benchmark_no_callout);
                check_default(field, cell, &Expected::Value("false".into()));
                let meaning = row.join(" | ");
                assert!(
                    meaning.contains("benchmarking aid"),
                    "{DOC}: benchmark_no_callout must say it is a benchmarking aid"
                );
                for (_, value) in NO_CALLOUT_HEADERS {
                    assert!(
                        meaning.contains(value),
                        "{DOC}: the fixed header value {value} of benchmark_no_callout"
                    );
                }
            }
            "charge_header" => {
                check_default(field, cell, &Expected::Value(d.charge_header.clone()))
            }
            "headers" => {
                // The documented default, read as a plugin configuration, is the code's.
                let documented = codes(cell).into_iter().next().unwrap_or_default();
                let raw = format!(r#"{{"cluster":"c","headers":{documented}}}"#);
                let parsed = PluginConfig::from_json(raw.as_bytes()).map(|c| c.headers);
                assert_eq!(
                    parsed,
                    Ok(d.headers),
                    "{DOC}: the default of headers is documented as {cell:?}"
                );
            }
            other => panic!(
                "new plugin field `{other}`: document it in {DOC} and teach this test its default"
            ),
        }
    }
    for name in rows.keys() {
        assert!(
            fields.contains(name),
            "{DOC} documents plugin field `{name}`, which the filter does not accept"
        );
    }
    // The example in the section is a valid plugin configuration.
    let example = plugin_section
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```json example");
    PluginConfig::from_json(example.as_bytes())
        .unwrap_or_else(|e| panic!("{DOC}: the example is refused: {e}"));
}

// ---------------------------------------------------------------------------------------
// The filter's stats

#[test]
fn every_filter_stat_is_documented() {
    let doc = read(DOC);
    let (_, rows) = table(&section(&doc, "Filter stats"));
    let documented: BTreeSet<String> = rows_by_name(&rows).into_keys().collect();
    let defined: BTreeSet<String> = METRIC_NAMES
        .iter()
        .map(|name| {
            name.strip_prefix("rate_limit_filter.")
                .unwrap_or_else(|| panic!("stat {name} outside rate_limit_filter."))
                .to_string()
        })
        .collect();
    assert_eq!(
        documented, defined,
        "{DOC}: the `Filter stats` table against the filter's METRIC_NAMES"
    );
}

// ---------------------------------------------------------------------------------------
// Links between the documents

/// GitHub's anchor for a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

#[test]
fn links_between_the_documents_resolve() {
    let root = repo_root();
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.push(root.join("examples/README.md"));
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, _) in text.match_indices("](") {
            let Some(target) = text[i + 2..].split(')').next() else {
                continue;
            };
            if target.starts_with("http") || target.starts_with('<') || target.contains(' ') {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
            let linked = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            assert!(
                linked.exists(),
                "{}: link to {target}: no such file",
                file.display()
            );
            if !anchor.is_empty() {
                let headings = anchors(&std::fs::read_to_string(&linked).unwrap());
                assert!(
                    headings.contains(anchor),
                    "{}: link to {target}: no such heading (have {headings:?})",
                    file.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} links found");
}
