//! Property checks for the fuzz targets in `fuzz_targets/` and for the proptest fallback in
//! `tests/fallback.rs` (also `tests/tests/fuzz_regressions.rs` in the workspace, which
//! compiles `input.rs` and `control_plane.rs` itself).
//!
//! Every check takes the raw fuzz input (bytes), decodes it as documented on the function,
//! and panics when a property does not hold: a panic is what libFuzzer reports as a crash.
//!
//! | target            | check                                   |
//! |-------------------|-----------------------------------------|
//! | `filter_evidence` | [`filter::check_evidence`]              |
//! | `filter_response` | [`filter::check_response`]              |
//! | `filter_config`   | [`filter::check_config`]                |
//! | `path_rules`      | [`control_plane::check_path_rules`]     |
//! | `decision`        | [`decision`]                            |
//! | `config_yaml`     | [`control_plane::check_config_yaml`]    |
//! | `config_json`     | [`control_plane::check_config_json`]    |

pub mod control_plane;
pub mod filter;
pub mod input;
pub mod router;

use rate_limit_filter::config::HeaderSets;
use rate_limit_filter::evidence::MAX_PATH_BYTES;
use rate_limit_filter::response::{
    self, CallBody, CallResult, MAX_DECISION_RESPONSE_BYTES, Outcome,
};
use rl_wire::{DecisionResponse, Verdict};

/// The names of every target, in the order `scripts/fuzz.sh` runs them.
pub const TARGETS: [&str; 7] = [
    "filter_evidence",
    "filter_response",
    "filter_config",
    "path_rules",
    "decision",
    "config_yaml",
    "config_json",
];

/// Runs the check of `target` on one input.
pub fn check(target: &str, data: &[u8]) {
    match target {
        "filter_evidence" => filter::check_evidence(data),
        "filter_response" => filter::check_response(data),
        "filter_config" => filter::check_config(data),
        "path_rules" => control_plane::check_path_rules(data),
        "decision" => decision(data),
        "config_yaml" => control_plane::check_config_yaml(data),
        "config_json" => control_plane::check_config_json(data),
        other => panic!("unknown target {other:?}"),
    }
}

/// `decision`: [`control_plane::check_decision`] through the real router, and then every
/// answer to a request the filter could have sent must be one the filter can use: within its
/// read limit, mapped to the verdict's outcome, never to its failure policy.
pub fn decision(data: &[u8]) {
    let exchanges = control_plane::check_decision(data, router::RouterEndpoint::new);
    for exchange in exchanges {
        let Some(request) = exchange.request else {
            continue;
        };
        if request.path.len() > MAX_PATH_BYTES || request.path.contains(['?', '#']) {
            continue; // not something the filter sends
        }
        assert!(
            exchange.body.len() <= MAX_DECISION_RESPONSE_BYTES,
            "answer of {} bytes to a request the filter could send (path of {} bytes); the \
             filter refuses answers over {MAX_DECISION_RESPONSE_BYTES} bytes",
            exchange.body.len(),
            request.path.len()
        );
        let answer: DecisionResponse = serde_json::from_slice(&exchange.body).unwrap();
        for fail_open in [false, true] {
            let decision = response::decide(
                CallResult::Response {
                    status: Some(b"200"),
                    body: CallBody::from_read(exchange.body.len(), Some(&exchange.body)),
                },
                fail_open,
                HeaderSets::ALL,
            );
            assert_eq!(decision.error, None, "{answer:?}");
            let want = match answer.verdict {
                Verdict::Allow => Outcome::Allowed,
                Verdict::Deny => Outcome::Denied,
                Verdict::Whitelisted => Outcome::Whitelisted,
                other => panic!("unexpected verdict {other:?} from the in-memory store"),
            };
            assert_eq!(decision.outcome, want);
        }
    }
}
