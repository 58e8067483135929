use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::google::protobuf::UInt64Value;

use super::{DescriptorError, MAX_IGNORED_KEYS, evidence};
use crate::config::RateLimitServiceConfig;

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).to_string(),
                value: (*v).to_string(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

fn call(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: "rate_limit".into(),
        descriptors,
        hits_addend: 0,
    }
}

#[test]
fn default_keys_give_every_piece_of_evidence() {
    let got = evidence(
        &RateLimitServiceConfig::default(),
        &call(vec![
            descriptor(&[("remote_address", "203.0.113.7")]),
            descriptor(&[("x-api-key", "k-1"), ("authorization", "Bearer t")]),
            descriptor(&[
                (":path", "/api/v1/search?q=secret#frag"),
                (":method", "GET"),
            ]),
        ]),
    )
    .unwrap();
    assert_eq!(got.request.ip, "203.0.113.7");
    assert_eq!(got.request.api_key.as_deref(), Some("k-1"));
    assert_eq!(got.request.authorization.as_deref(), Some("Bearer t"));
    assert_eq!(got.request.path, "/api/v1/search");
    assert_eq!(got.request.method, "GET");
    assert_eq!(got.cost, 1);
    assert!(got.ignored_keys.is_empty());
}

#[test]
fn configured_keys_replace_the_defaults() {
    let mut service = RateLimitServiceConfig {
        domain: "edge".into(),
        ..RateLimitServiceConfig::default()
    };
    service.descriptor_keys.api_key = "api_key".into();
    let got = evidence(
        &service,
        &RateLimitRequest {
            domain: "edge".into(),
            ..call(vec![descriptor(&[
                ("api_key", "k"),
                ("x-api-key", "other"),
            ])])
        },
    )
    .unwrap();
    assert_eq!(got.request.api_key.as_deref(), Some("k"));
    assert_eq!(got.ignored_keys, vec!["x-api-key".to_string()]);
}

#[test]
fn unknown_keys_are_ignored_and_named_without_values() {
    let mut entries: Vec<(String, String)> = (0..20)
        .map(|i| (format!("k{i}"), format!("secret-{i}")))
        .collect();
    entries.push(("k0".into(), "again".into()));
    let refs: Vec<(&str, &str)> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let got = evidence(
        &RateLimitServiceConfig::default(),
        &call(vec![descriptor(&refs)]),
    )
    .unwrap();
    assert_eq!(got.ignored_keys.len(), MAX_IGNORED_KEYS);
    assert_eq!(got.ignored_keys[0], "k0");
    assert!(got.ignored_keys.iter().all(|k| !k.contains("secret")));
    assert_eq!(got.request.ip, "");
}

#[test]
fn the_same_entry_twice_is_one_piece_of_evidence() {
    let d = descriptor(&[("remote_address", "198.51.100.1")]);
    let got = evidence(
        &RateLimitServiceConfig::default(),
        &call(vec![d.clone(), d]),
    )
    .unwrap();
    assert_eq!(got.request.ip, "198.51.100.1");
}

#[test]
fn two_values_for_one_piece_of_evidence_are_refused() {
    let err = evidence(
        &RateLimitServiceConfig::default(),
        &call(vec![
            descriptor(&[("remote_address", "198.51.100.1")]),
            descriptor(&[("remote_address", "198.51.100.2")]),
        ]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        DescriptorError::Conflict {
            key: "remote_address".into()
        }
    );
    assert!(!err.to_string().contains("198.51"));
}

#[test]
fn wrong_domain_and_no_descriptors_are_refused() {
    let service = RateLimitServiceConfig::default();
    let mut wrong = call(vec![descriptor(&[("remote_address", "198.51.100.1")])]);
    wrong.domain = "other".into();
    assert!(matches!(
        evidence(&service, &wrong),
        Err(DescriptorError::WrongDomain { .. })
    ));
    assert_eq!(
        evidence(&service, &call(Vec::new())),
        Err(DescriptorError::NoDescriptors)
    );
}

#[test]
fn the_cost_is_the_largest_hits_addend() {
    let service = RateLimitServiceConfig::default();
    let mut c = call(vec![descriptor(&[("remote_address", "198.51.100.1")])]);
    c.hits_addend = 3;
    assert_eq!(evidence(&service, &c).unwrap().cost, 3);
    c.descriptors[0].hits_addend = Some(UInt64Value { value: 1_000_000 });
    assert_eq!(evidence(&service, &c).unwrap().cost, 1_000_000);
    c.hits_addend = 0;
    c.descriptors[0].hits_addend = Some(UInt64Value { value: 0 });
    assert_eq!(evidence(&service, &c).unwrap().cost, 1);
}

#[test]
fn long_paths_are_cut_on_a_character_boundary() {
    let path = format!("/{}", "é".repeat(rl_wire::MAX_PATH_BYTES));
    let got = evidence(
        &RateLimitServiceConfig::default(),
        &call(vec![descriptor(&[(":path", &path)])]),
    )
    .unwrap();
    assert!(got.request.path.len() <= rl_wire::MAX_PATH_BYTES);
    assert!(path.starts_with(&got.request.path));
}
