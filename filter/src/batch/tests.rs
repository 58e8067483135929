use super::*;
use crate::response::{Action, CallBody, Outcome};
use rl_wire::{BatchDecisionRequest, DecisionResponse, Verdict};

fn single(ip: &str) -> Vec<u8> {
    format!(r#"{{"ip":"{ip}","method":"GET","path":"/"}}"#).into_bytes()
}

#[test]
fn first_calls_go_alone_then_requests_queue() {
    let mut c = Coalescer::<u32>::default();
    for _ in 0..MAX_SINGLE_IN_FLIGHT {
        assert_eq!(c.route(), Route::Single);
    }
    assert_eq!(c.route(), Route::Queue);
    c.push(1, single("10.0.0.1"));
    assert!(c.needs_kick());
    c.single_done();
    // A free slot does not overtake the queue.
    assert_eq!(c.route(), Route::Queue);
    c.push(2, single("10.0.0.2"));
    let batch = c.take_batch(|_| true).unwrap();
    assert_eq!(batch.members, vec![1, 2]);
    let parsed: BatchDecisionRequest = serde_json::from_slice(&batch.body).unwrap();
    assert_eq!(parsed.requests.len(), 2);
    assert_eq!(parsed.requests[1].ip, "10.0.0.2");
    assert_eq!(c.batches_in_flight(), 1);
    assert!(!c.needs_kick());
    assert!(c.take_batch(|_| true).is_none());
    c.batch_done();
    assert_eq!(c.route(), Route::Single);
}

#[test]
fn no_single_call_leaves_while_a_batch_is_in_flight() {
    let mut c = Coalescer::<u32>::default();
    c.push(1, single("10.0.0.1"));
    assert!(c.take_batch(|_| true).is_some());
    // Both single slots are free, the queue is empty: the batch's answer sends this one.
    assert_eq!(c.route(), Route::Queue);
    c.push(2, single("10.0.0.2"));
    assert!(!c.needs_kick(), "the batch in flight sends the queue");
    c.batch_done();
    assert!(c.needs_kick());
    let next = c.take_batch(|_| true).unwrap();
    assert_eq!(next.members, vec![2]);
    c.batch_done();
    assert_eq!(c.route(), Route::Single, "nothing in flight: alone at once");
}

#[test]
fn batches_respect_the_size_caps_and_skip_ended_streams() {
    let mut c = Coalescer::<usize>::default();
    for i in 0..MAX_BATCH_SIZE + 3 {
        c.push(i, single("10.0.0.1"));
    }
    let first = c.take_batch(|m| *m != 0).unwrap();
    assert_eq!(first.members.len(), MAX_BATCH_SIZE);
    assert_eq!(first.members[0], 1);
    let second = c.take_batch(|_| true).unwrap();
    assert_eq!(second.members.len(), 2);
    assert_eq!(c.queued(), 0);

    let big = vec![b' '; MAX_DECISION_REQUEST_BYTES];
    let mut c = Coalescer::<usize>::default();
    for i in 0..MAX_BATCH_SIZE {
        let mut body = single("10.0.0.1");
        body.extend_from_slice(&big);
        c.push(i, body);
    }
    let batch = c.take_batch(|_| true).unwrap();
    assert!(batch.body.len() <= MAX_BATCH_BODY_BYTES);
    assert!(batch.members.len() < MAX_BATCH_SIZE);
    assert!(serde_json::from_slice::<BatchDecisionRequest>(&batch.body).is_ok());
}

fn ok(body: &str) -> CallResult<'_> {
    CallResult::Response {
        status: Some(b"200"),
        body: CallBody::Bytes(body.as_bytes()),
    }
}

#[test]
fn answers_are_split_in_order() {
    let answer = BatchDecisionResponse {
        responses: vec![
            DecisionResponse {
                verdict: Verdict::Whitelisted,
                tier: None,
                counter: None,
                policies: Vec::new(),
                shadow_denied: false,
                deny_for_ms: None,
                lease: None,
                usage: None,
            },
            DecisionResponse {
                verdict: Verdict::Deny,
                tier: None,
                counter: None,
                policies: Vec::new(),
                shadow_denied: false,
                deny_for_ms: None,
                lease: None,
                usage: None,
            },
        ],
    };
    let json = serde_json::to_string(&answer).unwrap();
    let decisions = decide(ok(&json), 2, false, HeaderSets::ALL);
    assert_eq!(decisions[0].outcome, Outcome::Whitelisted);
    assert!(decisions[0].error.is_none());
    // A deny without counter fails that member alone.
    assert_eq!(decisions[1].outcome, Outcome::FailedClosed);
    assert_eq!(
        decisions[1].error,
        Some(ControlPlaneError::DenyWithoutCounter)
    );
}

#[test]
fn every_batch_failure_fails_every_member() {
    let one = r#"{"responses":[{"verdict":"allow"}]}"#;
    let cases: Vec<CallResult<'_>> = vec![
        CallResult::DispatchFailed,
        CallResult::Reset,
        CallResult::Response {
            status: Some(b"504"),
            body: CallBody::Empty,
        },
        CallResult::Response {
            status: None,
            body: CallBody::Bytes(one.as_bytes()),
        },
        CallResult::Response {
            status: Some(b"200"),
            body: CallBody::Empty,
        },
        CallResult::Response {
            status: Some(b"200"),
            body: CallBody::TooLarge(MAX_BATCH_RESPONSE_BYTES + 1),
        },
        ok("garbage"),
        ok(r#"{"verdict":"allow"}"#),
        ok(one),
    ];
    for fail_open in [true, false] {
        for case in &cases {
            let decisions = decide(*case, 2, fail_open, HeaderSets::ALL);
            assert_eq!(decisions.len(), 2, "{case:?}");
            for d in decisions {
                assert!(d.error.is_some(), "{case:?}");
                let expected = if fail_open {
                    Outcome::FailedOpen
                } else {
                    Outcome::FailedClosed
                };
                assert_eq!(d.outcome, expected);
                assert_eq!(d, response::failure(d.error.clone().unwrap(), fail_open));
                if fail_open {
                    assert!(matches!(d.action, Action::Resume { .. }));
                }
            }
        }
    }
}
