//! Inputs the fuzz targets found, as plain tests of the product. Both findings are fixed; the
//! tests stay as regressions, and the same inputs sit in `fuzz/corpus/<target>/regression-*`.
//!
//! ```sh
//! cargo test --manifest-path fuzz/Cargo.toml --no-default-features --test regressions
//! ```

use rate_limit_filter::client_ip::TrustedProxies;
use rate_limit_filter::config::{HeaderSets, PluginConfig};
use rate_limit_filter::evidence::{
    MAX_PATH_BYTES, RawRequest, decision_request, encode_decision_request,
};
use rate_limit_filter::response::{
    self, CallBody, CallResult, MAX_DECISION_RESPONSE_BYTES, Outcome,
};
use rl_fuzz::control_plane::check_decision;
use rl_fuzz::router::RouterEndpoint;

/// `filter_config` (`regression-cluster-as-authority`): without `authority`, the cluster name
/// becomes the `:authority` of every decision call unchecked, while an explicit `authority`
/// must be printable ASCII without spaces. A cluster name such as `rate limit` is accepted
/// and then every decision call carries an invalid `:authority`.
#[test]
fn default_authority_is_a_valid_authority() {
    if let Ok(config) = PluginConfig::from_json(br#"{"cluster":"rate limit"}"#) {
        assert!(
            config.authority.bytes().all(|b| b.is_ascii_graphic()),
            "accepted, with :authority {:?}",
            config.authority
        );
    }
}

/// `decision` (`regression-control-char-path`): a client path of control characters that the
/// filter forwards unshortened (its request is 16,379 bytes) gets an answer over the filter's
/// 16 KiB read limit, because the answer echoes the path and JSON escapes each control
/// character as six bytes. The filter then applies its `fail_open` to a request the control
/// plane counted or denied.
#[test]
fn the_filter_can_read_the_answer_to_any_request_it_sends() {
    let path = format!("/{}", "\u{1}".repeat(2722));
    assert!(path.len() <= MAX_PATH_BYTES);
    let raw = RawRequest {
        source_address: Some(b"198.51.100.1:40000"),
        method: Some(b"GET"),
        path: Some(path.as_bytes()),
        ..RawRequest::default()
    };
    let body = encode_decision_request(decision_request(&raw, &TrustedProxies::default()));
    assert!(body.ends_with(b"\"}"), "sent unshortened");
    let mut input = vec![0u8];
    input.extend_from_slice(&body);
    let exchanges = check_decision(&input, RouterEndpoint::new);
    let answer = &exchanges[0].body;
    let decision = response::decide(
        CallResult::Response {
            status: Some(b"200"),
            body: CallBody::from_read(
                answer.len(),
                CallBody::should_read(answer.len()).then_some(&answer[..]),
            ),
        },
        true,
        HeaderSets::ALL,
    );
    assert_eq!(
        decision.outcome,
        Outcome::Allowed,
        "answer of {} bytes (limit {MAX_DECISION_RESPONSE_BYTES}): {:?}",
        answer.len(),
        decision.error
    );
}
