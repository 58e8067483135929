use super::*;

use crate::configs::{Programs, table};

fn bootstrap(name: &str) -> String {
    let variant = table(&Programs {
        control_plane: "/cp".into(),
        wasm: "/path/to/filter.wasm".into(),
        envoy_concurrency: 2,
    })
    .into_iter()
    .find(|v| v.name == name)
    .unwrap();
    let ports = EnvoyPorts {
        admin: 1001,
        listener: 1002,
        upstream: 1003,
    };
    envoy_bootstrap(&variant, &ports, 1004)
}

/// A `{{PLACEHOLDER}}` left outside the comments.
fn unfilled(bootstrap: &str) -> Option<&str> {
    bootstrap
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find(|l| l.contains("{{"))
}

/// The plugin configuration inside a bootstrap (the block after `value: |`).
fn plugin_config(bootstrap: &str) -> serde_json::Value {
    let start = bootstrap.find("value: |").expect("a plugin configuration") + "value: |".len();
    let end = bootstrap[start..].find("vm_config").unwrap() + start;
    serde_json::from_str(bootstrap[start..end].trim()).expect("the plugin configuration is JSON")
}

#[test]
fn each_configuration_gets_its_filter() {
    let passthrough = bootstrap("1");
    assert!(!passthrough.contains("envoy.filters.http.wasm"));
    assert_eq!(unfilled(&passthrough), None);
    assert!(passthrough.contains("port_value: 1003"));

    let ours = bootstrap("4");
    let plugin = plugin_config(&ours);
    assert_eq!(plugin["cluster"], "rate_limit_control_plane");
    assert!(plugin.get("benchmark_no_callout").is_none());
    assert!(ours.contains("\"/path/to/filter.wasm\""));
    assert_eq!(unfilled(&ours), None);

    let floor = bootstrap("w");
    assert_eq!(plugin_config(&floor)["benchmark_no_callout"], true);
    assert_eq!(unfilled(&floor), None);

    assert!(bootstrap("2").contains("envoy.filters.http.local_ratelimit"));
}

#[test]
fn a_charging_configuration_charges_every_response_on_the_route() {
    let charging = bootstrap("4c");
    assert_eq!(unfilled(&charging), None);
    assert!(
        charging.contains(
            "response_headers_to_add: [{header: {key: x-ratelimit-charge, value: \"1\"}}]"
        ),
        "{charging}"
    );
    assert_eq!(
        plugin_config(&charging)["cluster"],
        "rate_limit_control_plane"
    );
    assert!(!bootstrap("4").contains("response_headers_to_add"));
}
