use serde_json::Value;

use super::*;

fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the document serialises")
}

/// The schema named `name`, its `$ref` followed.
fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    schema
}

/// The names of every `$ref` under `value`.
fn refs(value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    found.push(r.rsplit('/').next().unwrap_or_default().to_string());
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    found
}

#[test]
fn the_configuration_document_is_described_field_by_field() {
    let doc = document();
    let config = &doc["paths"]["/api/v1/rate-limit/config"];
    // GET answers it inside ConfigDocument; PUT takes it.
    let get = &config["get"]["responses"]["200"];
    assert!(refs(get).contains(&"ConfigDocument".to_string()), "{get}");
    assert!(refs(schema(&doc, "ConfigDocument")).contains(&"RateLimitConfig".to_string()));
    let put = &config["put"]["requestBody"];
    assert!(refs(put).contains(&"RateLimitConfig".to_string()), "{put}");
    for (name, fields) in [
        ("RateLimitConfig", &["default_tier", "tiers", "shadow"][..]),
        (
            "TierConfig",
            &[
                "name",
                "limits",
                "endpoints",
                "algorithm",
                "window_size_seconds",
            ][..],
        ),
        (
            "WindowConfig",
            &["limit", "window_seconds", "algorithm", "precision_ms"][..],
        ),
        ("RuleConfig", &["limits", "shadow", "cost"][..]),
    ] {
        let properties = &schema(&doc, name)["properties"];
        for field in fields {
            assert!(properties[field].is_object(), "{name}.{field} missing");
        }
    }
    // A rule's cost: optional, at least 1, 1 by default.
    let rule = schema(&doc, "RuleConfig");
    let cost = &rule["properties"]["cost"];
    assert_eq!(
        (cost["minimum"].as_f64(), cost["default"].as_f64()),
        (Some(1.0), Some(1.0)),
        "{cost}"
    );
    let required = rule["required"].as_array().expect("required fields");
    assert!(!required.contains(&"cost".into()), "{required:?}");
}

#[test]
fn the_algorithm_is_exact_or_slotted_wherever_it_appears() {
    let doc = document();
    let algorithm = schema(&doc, "CounterAlgorithm");
    assert_eq!(
        algorithm["enum"],
        serde_json::json!(["exact", "slotted"]),
        "{algorithm}"
    );
    for (name, field) in [
        ("TierConfig", "algorithm"),
        ("WindowConfig", "algorithm"),
        ("CounterStatus", "algorithm"),
    ] {
        let property = &schema(&doc, name)["properties"][field];
        assert!(
            refs(property).contains(&"CounterAlgorithm".to_string()),
            "{name}.{field}: {property}"
        );
    }
    let status = schema(&doc, "CounterStatus");
    assert!(status["properties"]["precision_ms"].is_object(), "{status}");
    let required = status["required"].as_array().expect("required fields");
    assert!(required.contains(&"algorithm".into()), "{required:?}");
    assert!(!required.contains(&"precision_ms".into()), "{required:?}");
    // The window's precision is described with its bounds and its default.
    let precision = &schema(&doc, "WindowConfig")["properties"]["precision_ms"];
    let text = precision.to_string();
    assert!(text.contains("10 to 120") && text.contains("60"), "{text}");
}
