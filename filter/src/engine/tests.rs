use super::*;
use crate::batch::{MAX_BATCH_SIZE, MAX_SINGLE_IN_FLIGHT};
use crate::response::{
    CONTROL_PLANE_ERRORS_METRIC, CallBody, METRIC_NAMES, Outcome, UNAUTHORIZED_METRIC,
    unavailable_reply,
};
use rl_wire::{BatchDecisionRequest, DecisionRequest};

const ROOT: u32 = 1;

fn configured(fail_open: bool) -> Engine {
    let mut engine = Engine::new(ROOT);
    let raw = format!(r#"{{"cluster":"cp","fail_open":{fail_open}}}"#);
    engine.configure(PluginConfig::from_json(raw.as_bytes()).unwrap());
    engine
}

/// A decision body naming the request by its client IP.
fn body(context: u32) -> Vec<u8> {
    format!(r#"{{"ip":"10.0.0.{context}","method":"GET","path":"/"}}"#).into_bytes()
}

/// Host time (Unix ms) of the requests of a test, unless it says otherwise.
const NOW: u64 = 1_700_000_000_000;

fn headers(engine: &mut Engine, context: u32) -> Vec<Effect> {
    headers_at(engine, context, NOW)
}

fn headers_at(engine: &mut Engine, context: u32, now_ms: u64) -> Vec<Effect> {
    engine.on_request_headers(context, |_| body(context), || now_ms)
}

fn count(outcome: Outcome) -> Effect {
    Effect::Count(outcome.metric_index())
}

fn single_call(context: u32) -> Effect {
    Effect::Dispatch(Call {
        context,
        path: DECISION_PATH,
        body: body(context),
        deadline_ms: None,
    })
}

/// Starts a request that gets a call of its own, dispatched with `token`.
fn start_single(engine: &mut Engine, context: u32, token: u32) {
    assert_eq!(headers(engine, context), vec![single_call(context)]);
    assert_eq!(engine.request_flow(context), Flow::Pause);
    assert_eq!(engine.dispatched(Some(token)), vec![]);
    assert_eq!(engine.request_flow(context), Flow::Pause);
}

const ALLOW: &str = r#"{"verdict":"allow","tier":"free","counter":{"limit":10,"remaining":9,"reset":100,"window":60,"endpoint":"/"}}"#;
const DENY: &str = r#"{"verdict":"deny","tier":"free","counter":{"limit":10,"remaining":0,"reset":100,"retry_after":5,"window":60,"endpoint":"/"}}"#;
const WHITELISTED: &str = r#"{"verdict":"whitelisted"}"#;

fn ok(body: &str) -> CallResult<'_> {
    CallResult::Response {
        status: Some(b"200"),
        body: CallBody::Bytes(body.as_bytes()),
    }
}

/// What Envoy delivers when `timeout_ms` passes without an answer.
fn timed_out() -> CallResult<'static> {
    CallResult::Response {
        status: Some(b"504"),
        body: CallBody::Bytes(b"upstream request timeout"),
    }
}

fn batch_body(answers: &[&str]) -> String {
    format!(r#"{{"responses":[{}]}}"#, answers.join(","))
}

/// The effects of a decision made without the control plane's answer.
fn failed(context: u32, error: ControlPlaneError, fail_open: bool, paused: bool) -> Vec<Effect> {
    let mut effects = if fail_open {
        vec![count(Outcome::FailedOpen)]
    } else {
        vec![count(Outcome::FailedClosed)]
    };
    effects.push(Effect::Count(CONTROL_PLANE_ERRORS_METRIC));
    effects.push(Effect::LogError(error));
    if !fail_open {
        effects.push(Effect::Reply(context, unavailable_reply()));
    } else if paused {
        effects.push(Effect::Resume(context));
    }
    effects
}

/// Fills the single-call slots (contexts 2, 3; tokens 100, 101), then queues `queued` requests
/// (contexts 10, 11, ...). The tick is armed by the first queued one.
fn fill_and_queue(engine: &mut Engine, queued: u32) -> Vec<u32> {
    for i in 0..MAX_SINGLE_IN_FLIGHT as u32 {
        start_single(engine, 2 + i, 100 + i);
    }
    let contexts: Vec<u32> = (10..10 + queued).collect();
    for (i, &context) in contexts.iter().enumerate() {
        let effects = headers(engine, context);
        if i == 0 {
            assert_eq!(effects, vec![Effect::SetTick(KICK_TICK_MS)]);
            engine.tick_set(KICK_TICK_MS);
        } else {
            assert_eq!(effects, vec![], "the tick is armed already");
        }
        assert_eq!(engine.request_flow(context), Flow::Pause);
    }
    contexts
}

/// The batch call that is `effects`' last effect.
fn batch(effects: &[Effect]) -> &Call {
    let Some(Effect::Dispatch(call)) = effects.last() else {
        panic!("no batch call last in {effects:?}");
    };
    assert_eq!(call.context, ROOT, "batches go out from the root context");
    assert_eq!(call.path, BATCH_DECISION_PATH);
    call
}

/// The IPs of the requests in the batch call that is `effects`' last effect.
fn batch_call(effects: &[Effect]) -> Vec<String> {
    let parsed: BatchDecisionRequest = serde_json::from_slice(&batch(effects).body).unwrap();
    parsed.requests.into_iter().map(|r| r.ip).collect()
}

fn ips(contexts: &[u32]) -> Vec<String> {
    contexts.iter().map(|c| format!("10.0.0.{c}")).collect()
}

/// Ticks and dispatches the queue as one batch call with `token`.
fn send_batch(engine: &mut Engine, token: u32) -> Vec<String> {
    let effects = engine.on_tick(0);
    assert_eq!(effects[0], Effect::SetTick(0));
    engine.tick_set(0);
    let sent = batch_call(&effects);
    assert_eq!(
        engine.dispatched(Some(token)),
        vec![Effect::Count(BATCH_CALLS_METRIC)]
    );
    assert_eq!(engine.answer_limit(token), Some(MAX_BATCH_RESPONSE_BYTES));
    sent
}

// ---------------------------------------------------------------------------------------------
// One request, one call

#[test]
fn without_configuration_requests_pass_and_nothing_is_asked() {
    let mut engine = Engine::new(ROOT);
    assert!(engine.config().is_none());
    let effects = engine.on_request_headers(
        2,
        |_| panic!("no evidence without a config"),
        || panic!("no clock without a config"),
    );
    assert_eq!(effects, vec![]);
    assert_eq!(engine.request_flow(2), Flow::Continue);
    assert_eq!(engine.response_headers(2), None);
    assert_eq!(engine.on_tick(0), vec![Effect::SetTick(0)]);
    engine.on_done(2);
}

#[test]
fn an_allowed_request_waits_for_its_call_then_resumes_with_headers() {
    let mut engine = configured(true);
    assert_eq!(engine.root(), ROOT);
    start_single(&mut engine, 2, 7);
    assert_eq!(engine.answer_limit(7), Some(MAX_DECISION_RESPONSE_BYTES));
    let effects = engine.on_call_response(7, ok(ALLOW));
    assert_eq!(effects, vec![count(Outcome::Allowed), Effect::Resume(2)]);
    assert_eq!(engine.request_flow(2), Flow::Continue);
    let forwarded = engine.response_headers(2).cloned().unwrap_or_default();
    let names: Vec<&str> = forwarded.replace.iter().map(|h| h.0).collect();
    assert_eq!(forwarded.append, vec![], "an answer without policies");
    assert_eq!(
        names,
        [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "x-ratelimit-tier"
        ]
    );
    // The call is settled: a second delivery of its token changes nothing.
    assert_eq!(engine.answer_limit(7), None);
    assert_eq!(engine.on_call_response(7, ok(DENY)), vec![]);
    engine.on_done(2);
    assert!(engine.streams.is_empty());
    assert!(engine.singles.is_empty());
    assert_eq!(engine.response_headers(2), None);
}

#[test]
fn a_denied_request_is_answered_and_stays_paused() {
    let mut engine = configured(true);
    start_single(&mut engine, 2, 7);
    let effects = engine.on_call_response(7, ok(DENY));
    let [Effect::Count(index), Effect::Reply(2, reply)] = effects.as_slice() else {
        panic!("{effects:?}");
    };
    assert_eq!(*index, Outcome::Denied.metric_index());
    assert_eq!(reply.status, 429);
    assert_eq!(engine.request_flow(2), Flow::Pause);
    assert_eq!(
        engine.response_headers(2),
        None,
        "our own reply is left alone"
    );
}

#[test]
fn without_callout_requests_pass_with_fixed_headers_after_their_evidence() {
    let mut engine = Engine::new(ROOT);
    let raw = br#"{"cluster":"cp","benchmark_no_callout":true}"#;
    engine.configure(PluginConfig::from_json(raw).unwrap());
    let fixed: Vec<(&str, String)> = NO_CALLOUT_HEADERS
        .iter()
        .map(|(n, v)| (*n, v.to_string()))
        .collect();
    // Far more requests at once than ever get a call of their own: none queues, none asks.
    let contexts: Vec<u32> = (2..2 + 4 * MAX_SINGLE_IN_FLIGHT as u32 + 70).collect();
    let mut resolved = 0;
    for &context in &contexts {
        let effects = engine.on_request_headers(
            context,
            |_| {
                resolved += 1;
                body(context)
            },
            || panic!("nothing queues, so no clock"),
        );
        assert_eq!(effects, vec![], "context {context}");
        assert_eq!(engine.request_flow(context), Flow::Continue);
        assert_eq!(
            engine.response_headers(context),
            Some(&ResponseHeaders {
                replace: fixed.clone(),
                append: Vec::new(),
            })
        );
    }
    assert_eq!(
        resolved,
        contexts.len(),
        "every request's evidence is resolved"
    );
    assert_eq!(engine.coalescer.queued(), 0);
    assert!(engine.singles.is_empty() && engine.batches.is_empty());
    assert_eq!(
        engine.on_tick(0),
        vec![Effect::SetTick(0)],
        "no batch to send"
    );
    // Headers handled twice change nothing.
    assert_eq!(
        engine.on_request_headers(2, |_| panic!("asked twice"), || NOW),
        vec![]
    );
    for &context in &contexts {
        engine.on_done(context);
        assert_eq!(engine.response_headers(context), None);
    }
    assert!(engine.streams.is_empty());
}

#[test]
fn headers_handled_twice_ask_once() {
    let mut engine = configured(true);
    start_single(&mut engine, 2, 7);
    let effects = engine.on_request_headers(2, |_| panic!("asked twice"), || NOW);
    assert_eq!(effects, vec![]);
    assert_eq!(engine.request_flow(2), Flow::Pause);
}

#[test]
fn every_failure_of_a_single_call_follows_fail_open() {
    for fail_open in [true, false] {
        let cases: [(CallResult<'_>, ControlPlaneError); 5] = [
            (CallResult::Reset, ControlPlaneError::Reset),
            (timed_out(), ControlPlaneError::Status(504)),
            (
                ok("<html>garbage</html>"),
                ControlPlaneError::Malformed("expected value at line 1 column 1".to_string()),
            ),
            (
                CallResult::Response {
                    status: Some(b"200"),
                    body: CallBody::TooLarge(MAX_DECISION_RESPONSE_BYTES + 1),
                },
                ControlPlaneError::BodyTooLarge(MAX_DECISION_RESPONSE_BYTES + 1),
            ),
            (
                ok(r#"{"verdict":"deny"}"#),
                ControlPlaneError::DenyWithoutCounter,
            ),
        ];
        for (result, error) in cases {
            let mut engine = configured(fail_open);
            start_single(&mut engine, 2, 7);
            let effects = engine.on_call_response(7, result);
            assert_eq!(effects, failed(2, error, fail_open, true), "{fail_open}");
            let flow = if fail_open {
                Flow::Continue
            } else {
                Flow::Pause
            };
            assert_eq!(engine.request_flow(2), flow);
            // Forwarded unchecked: none of ours, and the upstream's go. Refused: our reply.
            let forwarded = fail_open.then(ResponseHeaders::default);
            assert_eq!(engine.response_headers(2), forwarded.as_ref());
            assert_eq!(engine.coalescer.route(), Route::Single, "slot freed");
        }
    }
}

#[test]
fn a_401_is_counted_as_unauthorized_and_follows_fail_open() {
    let unauthorized = CallResult::Response {
        status: Some(b"401"),
        body: CallBody::Bytes(br#"{"error":{"code":"unauthorized"}}"#),
    };
    for fail_open in [true, false] {
        let mut engine = configured(fail_open);
        start_single(&mut engine, 2, 7);
        let mut want = failed(2, ControlPlaneError::Unauthorized, fail_open, true);
        // `failed` counts a control-plane error; a 401 has its own counter instead.
        want[1] = Effect::Count(UNAUTHORIZED_METRIC);
        assert_eq!(
            engine.on_call_response(7, unauthorized),
            want,
            "{fail_open}"
        );
    }
}

#[test]
fn a_refused_dispatch_decides_within_the_headers_callback() {
    for fail_open in [true, false] {
        let mut engine = configured(fail_open);
        assert_eq!(headers(&mut engine, 2), vec![single_call(2)]);
        let effects = engine.dispatched(None);
        // Not paused yet: the headers callback's return carries a fail-open decision.
        assert_eq!(
            effects,
            failed(2, ControlPlaneError::DispatchFailed, fail_open, false)
        );
        let flow = if fail_open {
            Flow::Continue
        } else {
            Flow::Pause
        };
        assert_eq!(engine.request_flow(2), flow);
        assert!(engine.singles.is_empty());
        assert_eq!(engine.coalescer.route(), Route::Single, "slot freed");
    }
}

#[test]
fn unknown_tokens_and_stray_reports_change_nothing() {
    let mut engine = configured(true);
    start_single(&mut engine, 2, 7);
    assert_eq!(engine.answer_limit(8), None);
    assert_eq!(engine.on_call_response(8, ok(DENY)), vec![]);
    assert_eq!(engine.dispatched(Some(9)), vec![], "nothing was dispatched");
    assert_eq!(engine.dispatched(None), vec![]);
    assert_eq!(engine.request_flow(2), Flow::Pause);
    assert_eq!(
        engine.on_call_response(7, ok(ALLOW)),
        vec![count(Outcome::Allowed), Effect::Resume(2)]
    );
}

#[test]
fn a_stream_that_ends_while_waiting_frees_its_slot_and_ignores_its_answer() {
    let mut engine = configured(false);
    start_single(&mut engine, 2, 7);
    start_single(&mut engine, 3, 8);
    engine.on_done(2);
    assert_eq!(engine.request_flow(2), Flow::Continue, "forgotten");
    assert_eq!(engine.answer_limit(7), None);
    assert_eq!(engine.on_call_response(7, ok(DENY)), vec![]);
    // One slot is free again: the next request does not queue.
    assert_eq!(headers(&mut engine, 4), vec![single_call(4)]);
}

#[test]
fn a_stream_gone_before_its_dispatch_was_reported_frees_its_slot() {
    let mut engine = configured(true);
    assert_eq!(headers(&mut engine, 2), vec![single_call(2)]);
    engine.on_done(2);
    assert_eq!(engine.dispatched(Some(7)), vec![]);
    assert_eq!(engine.answer_limit(7), None);
    assert_eq!(engine.coalescer.route(), Route::Single);
    let mut engine = configured(false);
    assert_eq!(headers(&mut engine, 2), vec![single_call(2)]);
    engine.on_done(2);
    assert_eq!(engine.dispatched(None), vec![], "nobody left to answer");
}

#[test]
fn call_headers_carry_the_authority_and_the_secret() {
    let config = PluginConfig::from_json(
        br#"{"cluster":"cp","authority":"rl.internal","decision_secret":"s3cret"}"#,
    )
    .unwrap();
    assert_eq!(
        call_headers(&config, DECISION_PATH),
        vec![
            (":method", "POST"),
            (":path", DECISION_PATH),
            (":authority", "rl.internal"),
            ("content-type", "application/json"),
            (DECISION_SECRET_HEADER, "s3cret"),
        ]
    );
    let config = PluginConfig::from_json(br#"{"cluster":"cp"}"#).unwrap();
    let headers = call_headers(&config, BATCH_DECISION_PATH);
    assert_eq!(headers.len(), 4);
    assert!(headers.contains(&(":authority", "cp")));
}

#[test]
fn error_lines_name_the_cluster_and_the_policy() {
    let open = PluginConfig::from_json(br#"{"cluster":"cp"}"#).unwrap();
    let line = error_log_line(&open, &ControlPlaneError::Reset, 4);
    assert_eq!(
        line,
        "rate-limit-filter: control plane cluster `cp`: decision call was reset; \
         requests pass unchecked (fail_open); 4 similar errors not logged"
    );
    let closed = PluginConfig::from_json(br#"{"cluster":"cp","fail_open":false}"#).unwrap();
    let line = error_log_line(&closed, &ControlPlaneError::Status(504), 0);
    assert!(
        line.contains("HTTP 504") && line.contains("requests get 503"),
        "{line}"
    );
}

// ---------------------------------------------------------------------------------------------
// Coalescing

#[test]
fn requests_beyond_the_single_calls_queue_and_leave_in_one_batch_from_the_root() {
    let mut engine = configured(true);
    let queued = fill_and_queue(&mut engine, 3);
    assert_eq!(send_batch(&mut engine, 50), ips(&queued));
    let answer = batch_body(&[ALLOW, DENY, WHITELISTED]);
    let effects = engine.on_call_response(50, ok(&answer));
    let [
        Effect::Count(allowed),
        Effect::Resume(10),
        Effect::Count(denied),
        Effect::Reply(11, reply),
        Effect::Count(whitelisted),
        Effect::Resume(12),
    ] = effects.as_slice()
    else {
        panic!("{effects:?}");
    };
    assert_eq!(
        [*allowed, *denied, *whitelisted],
        [
            Outcome::Allowed.metric_index(),
            Outcome::Denied.metric_index(),
            Outcome::Whitelisted.metric_index()
        ]
    );
    assert_eq!(reply.status, 429);
    assert_eq!(engine.request_flow(10), Flow::Continue);
    assert_eq!(
        engine.response_headers(10).map(|h| h.replace.len()),
        Some(4)
    );
    assert_eq!(engine.request_flow(11), Flow::Pause);
    assert_eq!(engine.request_flow(12), Flow::Continue);
    assert_eq!(
        engine.response_headers(12),
        Some(&ResponseHeaders::default())
    );
    assert_eq!(engine.response_headers(11), None);
    assert_eq!(engine.coalescer.queued(), 0);
    assert_eq!(engine.coalescer.batches_in_flight(), 0);
    // The single calls are still in flight: the next request queues again, with a new tick.
    assert_eq!(
        headers(&mut engine, 20),
        vec![Effect::SetTick(KICK_TICK_MS)]
    );
}

#[test]
fn a_refused_tick_is_asked_for_again_by_the_next_queued_request() {
    let mut engine = configured(true);
    for context in [2, 3] {
        start_single(&mut engine, context, context);
    }
    assert_eq!(
        headers(&mut engine, 10),
        vec![Effect::SetTick(KICK_TICK_MS)]
    );
    // Not reported as set (the host refused it).
    assert_eq!(
        headers(&mut engine, 11),
        vec![Effect::SetTick(KICK_TICK_MS)]
    );
    engine.tick_set(KICK_TICK_MS);
    assert_eq!(headers(&mut engine, 12), vec![]);
}

#[test]
fn requests_arriving_while_a_batch_is_in_flight_leave_with_its_answer() {
    let mut engine = configured(true);
    let first = fill_and_queue(&mut engine, 1);
    send_batch(&mut engine, 50);
    // No tick while a batch is in flight: its answer sends the new queue.
    for context in [20, 21] {
        assert_eq!(headers(&mut engine, context), vec![]);
    }
    let effects = engine.on_call_response(50, ok(&batch_body(&[ALLOW])));
    assert_eq!(
        effects[..2],
        [count(Outcome::Allowed), Effect::Resume(first[0])]
    );
    assert_eq!(batch_call(&effects), ips(&[20, 21]));
    assert_eq!(effects.len(), 3, "{effects:?}");
    assert_eq!(
        engine.dispatched(Some(51)),
        vec![Effect::Count(BATCH_CALLS_METRIC)]
    );
    let effects = engine.on_call_response(51, ok(&batch_body(&[ALLOW, ALLOW])));
    assert_eq!(
        effects,
        vec![
            count(Outcome::Allowed),
            Effect::Resume(20),
            count(Outcome::Allowed),
            Effect::Resume(21)
        ]
    );
}

#[test]
fn a_long_queue_leaves_in_several_batches_one_dispatch_at_a_time() {
    let mut engine = configured(true);
    let queued = fill_and_queue(&mut engine, MAX_BATCH_SIZE as u32 + 2);
    let effects = engine.on_tick(0);
    assert_eq!(batch_call(&effects), ips(&queued[..MAX_BATCH_SIZE]));
    let effects = engine.dispatched(Some(50));
    assert_eq!(effects[0], Effect::Count(BATCH_CALLS_METRIC));
    assert_eq!(batch_call(&effects), ips(&queued[MAX_BATCH_SIZE..]));
    assert_eq!(
        engine.dispatched(Some(51)),
        vec![Effect::Count(BATCH_CALLS_METRIC)]
    );
    assert_eq!(engine.coalescer.batches_in_flight(), 2);
    assert_eq!(engine.answer_limit(51), Some(MAX_BATCH_RESPONSE_BYTES));
}

#[test]
fn a_refused_batch_fails_its_members_and_the_queue_goes_on() {
    for fail_open in [true, false] {
        let mut engine = configured(fail_open);
        let queued = fill_and_queue(&mut engine, MAX_BATCH_SIZE as u32 + 1);
        let effects = engine.on_tick(0);
        assert_eq!(batch_call(&effects).len(), MAX_BATCH_SIZE);
        let effects = engine.dispatched(None);
        let mut expected = Vec::new();
        for &context in &queued[..MAX_BATCH_SIZE] {
            expected.extend(failed(
                context,
                ControlPlaneError::DispatchFailed,
                fail_open,
                true,
            ));
        }
        assert_eq!(effects[..effects.len() - 1], expected[..]);
        assert_eq!(batch_call(&effects), ips(&queued[MAX_BATCH_SIZE..]));
        assert_eq!(
            engine.coalescer.batches_in_flight(),
            1,
            "the refused one ended"
        );
        let effects = engine.dispatched(None);
        let last = queued[MAX_BATCH_SIZE];
        assert_eq!(
            effects,
            failed(last, ControlPlaneError::DispatchFailed, fail_open, true)
        );
        assert_eq!(engine.coalescer.batches_in_flight(), 0);
        assert_eq!(engine.coalescer.queued(), 0);
    }
}

#[test]
fn every_failure_of_a_batch_call_fails_every_member_alike() {
    for fail_open in [true, false] {
        let one = batch_body(&[ALLOW]);
        let cases: [(CallResult<'_>, ControlPlaneError); 5] = [
            (CallResult::Reset, ControlPlaneError::Reset),
            (timed_out(), ControlPlaneError::Status(504)),
            (
                ok("<html>"),
                ControlPlaneError::Malformed("expected value at line 1 column 1".to_string()),
            ),
            (
                ok(&one),
                ControlPlaneError::Malformed(
                    "batch answer has 1 decisions for 2 requests".to_string(),
                ),
            ),
            (
                CallResult::Response {
                    status: None,
                    body: CallBody::Empty,
                },
                ControlPlaneError::MissingStatus,
            ),
        ];
        for (result, error) in cases {
            let mut engine = configured(fail_open);
            let queued = fill_and_queue(&mut engine, 2);
            send_batch(&mut engine, 50);
            let effects = engine.on_call_response(50, result);
            let mut expected = failed(queued[0], error.clone(), fail_open, true);
            expected.extend(failed(queued[1], error, fail_open, true));
            assert_eq!(effects, expected);
            let flow = if fail_open {
                Flow::Continue
            } else {
                Flow::Pause
            };
            assert_eq!(engine.request_flow(queued[0]), flow);
            assert_eq!(engine.coalescer.batches_in_flight(), 0);
        }
    }
}

#[test]
fn one_unusable_decision_in_a_batch_fails_that_member_only() {
    let mut engine = configured(false);
    let queued = fill_and_queue(&mut engine, 2);
    send_batch(&mut engine, 50);
    let answer = batch_body(&[r#"{"verdict":"deny"}"#, ALLOW]);
    let effects = engine.on_call_response(50, ok(&answer));
    let mut expected = failed(
        queued[0],
        ControlPlaneError::DenyWithoutCounter,
        false,
        true,
    );
    expected.extend([count(Outcome::Allowed), Effect::Resume(queued[1])]);
    assert_eq!(effects, expected);
}

#[test]
fn members_gone_while_queued_are_left_out() {
    let mut engine = configured(true);
    let queued = fill_and_queue(&mut engine, 3);
    engine.on_done(queued[1]);
    assert_eq!(send_batch(&mut engine, 50), ips(&[queued[0], queued[2]]));

    // All gone: the tick sends nothing.
    let mut engine = configured(true);
    let queued = fill_and_queue(&mut engine, 2);
    for context in queued {
        engine.on_done(context);
    }
    assert_eq!(engine.on_tick(0), vec![Effect::SetTick(0)]);
    assert_eq!(engine.coalescer.queued(), 0);
    assert_eq!(engine.coalescer.batches_in_flight(), 0);
}

#[test]
fn members_gone_while_their_batch_is_in_flight_are_skipped() {
    let mut engine = configured(true);
    let queued = fill_and_queue(&mut engine, 3);
    send_batch(&mut engine, 50);
    engine.on_done(queued[1]);
    let effects = engine.on_call_response(50, ok(&batch_body(&[ALLOW, DENY, ALLOW])));
    assert_eq!(
        effects,
        vec![
            count(Outcome::Allowed),
            Effect::Resume(queued[0]),
            count(Outcome::Allowed),
            Effect::Resume(queued[2])
        ]
    );
}

#[test]
fn a_reused_context_id_is_not_taken_for_the_ended_member() {
    let mut engine = configured(true);
    let queued = fill_and_queue(&mut engine, 1);
    send_batch(&mut engine, 50);
    engine.on_done(queued[0]);
    // A new stream with the same id queues behind the batch in flight.
    assert_eq!(headers(&mut engine, queued[0]), vec![]);
    let effects = engine.on_call_response(50, ok(&batch_body(&[DENY])));
    // The old member's deny is not applied to the new stream; the new one leaves now.
    assert_eq!(batch_call(&effects), ips(&queued));
    assert_eq!(effects.len(), 1, "{effects:?}");
    assert_eq!(engine.request_flow(queued[0]), Flow::Pause);
}

#[test]
fn single_answers_never_send_the_queue() {
    // The SDK delivers a single call's answer on the stream's context: a batch dispatched
    // there would die with that stream.
    let mut engine = configured(true);
    fill_and_queue(&mut engine, 2);
    let effects = engine.on_call_response(100, ok(ALLOW));
    assert_eq!(effects, vec![count(Outcome::Allowed), Effect::Resume(2)]);
    assert_eq!(engine.coalescer.queued(), 2, "still waiting for the tick");
}

#[test]
fn a_batch_gets_what_is_left_of_its_longest_waiting_request() {
    let mut engine = configured(true);
    let config = engine.config().unwrap();
    assert_eq!(config.timeout, Duration::from_millis(250));
    for context in [2, 3] {
        start_single(&mut engine, context, context);
    }
    assert_eq!(
        headers_at(&mut engine, 9, NOW - 50),
        vec![Effect::SetTick(KICK_TICK_MS)]
    );
    engine.tick_set(KICK_TICK_MS);
    assert_eq!(headers_at(&mut engine, 10, NOW), vec![]);
    assert_eq!(headers_at(&mut engine, 11, NOW + 100), vec![]);
    // The oldest is gone: the next oldest sets the deadline.
    engine.on_done(9);
    let effects = engine.on_tick(0);
    let call = batch(&effects);
    assert_eq!(call.deadline_ms, Some(NOW + 250));
    assert_eq!(
        call.timeout(&config, || NOW + 1),
        Duration::from_millis(249)
    );
    assert_eq!(
        engine.dispatched(Some(50)),
        vec![Effect::Count(BATCH_CALLS_METRIC)]
    );

    // Queued behind the batch in flight, which takes its whole timeout: the next batch gets
    // what is left of this request's own 250 ms, not another 250.
    assert_eq!(headers_at(&mut engine, 20, NOW + 150), vec![]);
    let effects = engine.on_call_response(50, timed_out());
    let call = batch(&effects);
    assert_eq!(call.deadline_ms, Some(NOW + 400));
    assert_eq!(
        call.timeout(&config, || NOW + 250),
        Duration::from_millis(150)
    );
}

#[test]
fn call_timeouts_stay_within_the_configured_one() {
    let config = PluginConfig::from_json(br#"{"cluster":"cp","timeout_ms":300}"#).unwrap();
    let single = Call {
        context: 2,
        path: DECISION_PATH,
        body: Vec::new(),
        deadline_ms: None,
    };
    let timeout = single.timeout(&config, || panic!("a single call needs no clock"));
    assert_eq!(timeout, Duration::from_millis(300));
    let ms = Duration::from_millis;
    assert_eq!(time_left(1_000, 900, ms(300)), ms(100));
    // Past its deadline, a call still gets the shortest timeout (the host takes no zero).
    assert_eq!(time_left(1_000, 1_000, ms(300)), ms(1));
    assert_eq!(time_left(1_000, 5_000, ms(300)), ms(1));
    // The wall clock went back: never more than the configured timeout.
    assert_eq!(time_left(1_000, 0, ms(300)), ms(300));
    assert_eq!(time_left(u64::MAX, 0, Duration::MAX), ms(u64::MAX));
}

// ---------------------------------------------------------------------------------------------
// A simulated host: random events, checked against what must always hold

/// xorshift64: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[derive(Debug, Default)]
struct Sim {
    /// Streams the host knows: paused (its headers callback returned Pause) and decided.
    live: BTreeMap<u32, (bool, bool)>,
    /// Calls in flight: (token, context they were dispatched from, requests in the body).
    calls: Vec<(u32, u32, Vec<String>)>,
    next_token: u32,
    tick: u32,
    /// Host time, and when each request (by IP) arrived.
    now: u64,
    arrived: BTreeMap<String, u64>,
    decided: usize,
    counted: usize,
}

impl Sim {
    /// Carries out effects like the glue, for an event handled on context `origin`.
    fn perform(&mut self, engine: &mut Engine, origin: u32, effects: Vec<Effect>, rng: &mut Rng) {
        let mut todo = VecDeque::from(effects);
        while let Some(effect) = todo.pop_front() {
            match effect {
                Effect::Dispatch(call) => {
                    if call.path == BATCH_DECISION_PATH {
                        assert_eq!(origin, ROOT, "batch dispatched from a stream event");
                        assert_eq!(call.context, ROOT);
                        let batch: BatchDecisionRequest =
                            serde_json::from_slice(&call.body).unwrap();
                        let oldest = batch.requests.iter().map(|r| self.arrived[&r.ip]).min();
                        // Each request's wait is bounded from its arrival.
                        assert_eq!(call.deadline_ms, oldest.map(|t| t + 250));
                    } else {
                        assert_eq!(call.context, origin, "single dispatched for another");
                        assert_eq!(call.deadline_ms, None);
                    }
                    let token = (rng.below(8) != 0).then(|| {
                        self.next_token += 1;
                        let requests = if call.path == BATCH_DECISION_PATH {
                            let batch: BatchDecisionRequest =
                                serde_json::from_slice(&call.body).unwrap();
                            batch.requests.into_iter().map(|r| r.ip).collect()
                        } else {
                            let single: DecisionRequest =
                                serde_json::from_slice(&call.body).unwrap();
                            vec![single.ip]
                        };
                        self.calls.push((self.next_token, call.context, requests));
                        self.next_token
                    });
                    for effect in engine.dispatched(token).into_iter().rev() {
                        todo.push_front(effect);
                    }
                }
                Effect::SetTick(period) => {
                    self.tick = period;
                    engine.tick_set(period);
                }
                Effect::Count(index) => {
                    assert!(index < METRIC_NAMES.len());
                    if ![
                        CONTROL_PLANE_ERRORS_METRIC,
                        BATCH_CALLS_METRIC,
                        UNAUTHORIZED_METRIC,
                    ]
                    .contains(&index)
                    {
                        self.counted += 1;
                    }
                }
                Effect::LogError(_) | Effect::Warn(_) => {}
                Effect::Resume(context) | Effect::Reply(context, _) => {
                    let resume = matches!(effect, Effect::Resume(_));
                    let Some((paused, decided)) = self.live.get_mut(&context) else {
                        panic!("{effect:?} for a stream that ended");
                    };
                    assert!(!*decided, "decided twice: {context}");
                    assert!(!resume || *paused, "resumed a stream that is not paused");
                    *decided = true;
                    self.decided += 1;
                }
            }
        }
    }

    fn answer(&mut self, engine: &mut Engine, index: usize, rng: &mut Rng) {
        let (token, context, requests) = self.calls.remove(index);
        let allow: Vec<&str> = requests.iter().map(|_| ALLOW).collect();
        let batch = batch_body(&allow);
        let body = if context == ROOT {
            batch.as_str()
        } else {
            ALLOW
        };
        let result = match rng.below(4) {
            0 => CallResult::Reset,
            1 => timed_out(),
            2 => ok("garbage"),
            _ => ok(body),
        };
        let effects = engine.on_call_response(token, result);
        self.perform(engine, context, effects, rng);
    }
}

#[test]
fn random_traffic_decides_every_request_exactly_once() {
    for (seed, fail_open) in [
        (0x9e37_79b9_7f4a_7c15, true),
        (0x2545_f491_4f6c_dd1d, false),
    ] {
        let mut rng = Rng(seed);
        let mut engine = configured(fail_open);
        let mut sim = Sim::default();
        let mut next_context = 2;
        for _ in 0..5_000 {
            sim.now += rng.below(3) as u64;
            match rng.below(10) {
                0..=3 => {
                    let context = next_context;
                    next_context += 1;
                    sim.live.insert(context, (false, false));
                    sim.arrived.insert(format!("10.0.0.{context}"), sim.now);
                    let effects = headers_at(&mut engine, context, sim.now);
                    sim.perform(&mut engine, context, effects, &mut rng);
                    let entry = sim.live.get_mut(&context).unwrap();
                    match engine.request_flow(context) {
                        // Forwarded by the callback's return (a refused dispatch, fail open).
                        Flow::Continue => {
                            assert!(fail_open && !entry.1, "{context}: {entry:?}");
                            entry.1 = true;
                            sim.decided += 1;
                        }
                        Flow::Pause => entry.0 = true,
                    }
                }
                4..=6 if !sim.calls.is_empty() => {
                    let index = rng.below(sim.calls.len());
                    sim.answer(&mut engine, index, &mut rng);
                }
                7 if sim.tick != 0 => {
                    let effects = engine.on_tick(0);
                    sim.perform(&mut engine, ROOT, effects, &mut rng);
                }
                8 if !sim.live.is_empty() => {
                    let keys: Vec<u32> = sim.live.keys().copied().collect();
                    let context = keys[rng.below(keys.len())];
                    sim.live.remove(&context);
                    engine.on_done(context);
                    // Envoy cancels the calls of an ended stream.
                    sim.calls.retain(|(_, from, _)| *from != context);
                }
                _ => {}
            }
        }
        // Drain: every call answered, every tick fired; then nobody is left waiting.
        while !sim.calls.is_empty() || sim.tick != 0 {
            if sim.calls.is_empty() {
                let effects = engine.on_tick(0);
                sim.perform(&mut engine, ROOT, effects, &mut rng);
            } else {
                sim.answer(&mut engine, 0, &mut rng);
            }
        }
        for (context, (_, decided)) in &sim.live {
            assert!(*decided, "stream {context} never decided");
        }
        assert_eq!(sim.counted, sim.decided, "one outcome counted per decision");
        assert!(
            sim.decided > 500,
            "the run exercised little: {}",
            sim.decided
        );
        assert_eq!(engine.coalescer.queued(), 0);
        assert_eq!(engine.coalescer.batches_in_flight(), 0);
        assert!(engine.singles.is_empty() && engine.batches.is_empty());
        for context in sim.live.keys() {
            engine.on_done(*context);
        }
        assert!(engine.streams.is_empty(), "streams kept after they ended");
    }
}

#[test]
fn the_configured_header_sets_reach_single_and_batched_answers() {
    const WITH_POLICIES: &str = r#"{"verdict":"allow","tier":"free","counter":{"limit":10,"remaining":9,"reset":100,"window":60,"endpoint":"/","policy":"free-60s","reset_after":30},"policies":[{"name":"free-60s","limit":10,"window":60}]}"#;
    let ietf = vec![
        ("ratelimit-policy", r#""free-60s";q=10;w=60"#.to_string()),
        ("ratelimit", r#""free-60s";r=9;t=30"#.to_string()),
    ];
    let mut engine = Engine::new(ROOT);
    let raw = r#"{"cluster":"cp","headers":["ietf"]}"#;
    engine.configure(PluginConfig::from_json(raw.as_bytes()).unwrap());
    start_single(&mut engine, 2, 7);
    engine.on_call_response(7, ok(WITH_POLICIES));
    let want = ResponseHeaders {
        replace: vec![],
        append: ietf,
    };
    assert_eq!(engine.response_headers(2), Some(&want));

    // Every single-call slot taken: the next request goes in a batch.
    for i in 0..MAX_SINGLE_IN_FLIGHT as u32 {
        start_single(&mut engine, 10 + i, 20 + i);
    }
    assert_eq!(headers(&mut engine, 4), vec![Effect::SetTick(KICK_TICK_MS)]);
    engine.tick_set(KICK_TICK_MS);
    let effects = engine.on_tick(0);
    assert!(
        matches!(effects.as_slice(), [Effect::SetTick(0), Effect::Dispatch(call)] if call.path == BATCH_DECISION_PATH),
        "{effects:?}"
    );
    engine.dispatched(Some(9));
    let batch = format!(r#"{{"responses":[{WITH_POLICIES}]}}"#);
    engine.on_call_response(9, ok(&batch));
    assert_eq!(engine.request_flow(4), Flow::Continue);
    assert_eq!(engine.response_headers(4), Some(&want));
}

// ---------------------------------------------------------------------------------------
// The deny cache

mod deny_cache_in_the_engine {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use super::*;
    use crate::deny_cache::{BUCKETS, CacheHost, SALT_KEY, bucket_key};
    use crate::response::LOCAL_DENIED_METRIC;

    const MS: u64 = 1_000_000;

    #[derive(Default)]
    struct Shared {
        data: BTreeMap<String, (Vec<u8>, u32)>,
        cas: u32,
        now_ns: u64,
        no_randomness: bool,
    }

    /// Shared data and a clock the test moves, as the host gives them to every worker.
    #[derive(Clone, Default)]
    struct FakeHost(Rc<RefCell<Shared>>);

    impl CacheHost for FakeHost {
        fn now_ns(&mut self) -> Option<u64> {
            Some(self.0.borrow().now_ns)
        }
        fn get(&mut self, key: &str) -> Option<(Vec<u8>, Option<u32>)> {
            let shared = self.0.borrow();
            shared.data.get(key).map(|(v, cas)| (v.clone(), Some(*cas)))
        }
        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
            let mut shared = self.0.borrow_mut();
            if let (Some(cas), Some((_, current))) = (cas, shared.data.get(key))
                && cas != *current
            {
                return false;
            }
            shared.cas += 1;
            let next = shared.cas;
            shared.data.insert(key.to_string(), (value.to_vec(), next));
            true
        }
        fn random(&mut self, buf: &mut [u8]) -> bool {
            buf.fill(0x5a);
            !self.0.borrow().no_randomness
        }
    }

    impl FakeHost {
        fn advance(&self, ms: u64) {
            self.0.borrow_mut().now_ns += ms * MS;
        }
        fn keys(&self) -> Vec<String> {
            self.0.borrow().data.keys().cloned().collect()
        }
    }

    fn cached_engine(host: &FakeHost) -> Engine {
        let mut engine = Engine::with_cache(ROOT, Box::new(host.clone()));
        let raw = br#"{"cluster":"cp","fail_open":true}"#;
        engine.set_cache_scope(raw);
        engine.configure(PluginConfig::from_json(raw).unwrap());
        engine
    }

    fn deny_for(ms: Option<u64>) -> String {
        let answer: Value = serde_json::from_str(DENY).unwrap();
        let mut answer = answer;
        if let Some(ms) = ms {
            answer["deny_for_ms"] = ms.into();
        }
        answer["counter"]["policy"] = "free-60s".into();
        answer.to_string()
    }

    use serde_json::Value;

    /// A request with evidence `evidence`; `context` names the stream.
    fn request(engine: &mut Engine, context: u32, evidence: &[u8]) -> Vec<Effect> {
        let evidence = evidence.to_vec();
        engine.on_request_headers(context, move |_| evidence, || NOW)
    }

    fn is_local_429(effects: &[Effect], context: u32) -> bool {
        effects.len() == 3
            && effects[0] == count(Outcome::Denied)
            && matches!(&effects[1], Effect::Reply(c, r) if *c == context && r.status == 429)
            && effects[2] == Effect::Count(LOCAL_DENIED_METRIC)
    }

    fn dispatches(effects: &[Effect]) -> bool {
        effects.iter().any(|e| matches!(e, Effect::Dispatch(_)))
    }

    /// A single call for `context` with `evidence`, answered `answer`.
    fn single_answered(
        engine: &mut Engine,
        context: u32,
        evidence: &[u8],
        token: u32,
        answer: &str,
    ) {
        let effects = request(engine, context, evidence);
        assert!(dispatches(&effects), "{effects:?}");
        assert_eq!(engine.dispatched(Some(token)), vec![]);
        engine.on_call_response(token, ok(answer));
        engine.on_done(context);
    }

    const A: &[u8] = br#"{"ip":"10.0.0.1","api_key":"k1","method":"GET","path":"/a"}"#;
    const A_OTHER_PATH: &[u8] = br#"{"ip":"10.0.0.1","api_key":"k1","method":"GET","path":"/b"}"#;
    const A_OTHER_KEY: &[u8] = br#"{"ip":"10.0.0.1","api_key":"k2","method":"GET","path":"/a"}"#;

    #[test]
    fn a_cacheable_denial_answers_the_same_evidence_until_deny_for_ms() {
        let host = FakeHost::default();
        let mut engine = cached_engine(&host);
        single_answered(&mut engine, 2, A, 7, &deny_for(Some(500)));
        host.advance(200);
        let effects = request(&mut engine, 3, A);
        assert!(is_local_429(&effects, 3), "{effects:?}");
        assert_eq!(engine.request_flow(3), Flow::Pause);
        let Effect::Reply(_, reply) = &effects[1] else {
            unreachable!()
        };
        let retry = reply
            .headers
            .iter()
            .find(|(n, _)| *n == "retry-after")
            .unwrap();
        assert_eq!(retry.1, "5");
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        engine.on_done(3);
        // The same 429 as the control plane's answer gave, headers and body.
        let direct = response::decide(ok(&deny_for(Some(500))), true, HeaderSets::ALL);
        assert_eq!(direct.action, Action::Reply(reply.clone()));
        // Past deny_for_ms (from the dispatch): ask again. Local denials wait, so it queues.
        host.advance(300);
        let effects = request(&mut engine, 4, A);
        assert_eq!(effects, vec![Effect::SetTick(KICK_TICK_MS)]);
    }

    #[test]
    fn another_path_or_key_still_asks() {
        let host = FakeHost::default();
        let mut engine = cached_engine(&host);
        single_answered(&mut engine, 2, A, 7, &deny_for(Some(500)));
        for (context, evidence) in [(3, A_OTHER_PATH), (4, A_OTHER_KEY)] {
            let effects = request(&mut engine, context, evidence);
            assert!(dispatches(&effects), "{effects:?}");
        }
    }

    #[test]
    fn deny_for_ms_is_capped_at_one_second() {
        let host = FakeHost::default();
        let mut engine = cached_engine(&host);
        single_answered(&mut engine, 2, A, 7, &deny_for(Some(60_000)));
        host.advance(999);
        assert!(is_local_429(&request(&mut engine, 3, A), 3));
        host.advance(1);
        assert!(!is_local_429(&request(&mut engine, 4, A), 4));
    }

    #[test]
    fn a_denial_without_deny_for_ms_or_an_allow_is_not_cached() {
        let host = FakeHost::default();
        let mut engine = cached_engine(&host);
        single_answered(&mut engine, 2, A, 7, &deny_for(None));
        single_answered(&mut engine, 3, A, 8, ALLOW);
        let effects = request(&mut engine, 4, A);
        assert!(dispatches(&effects), "{effects:?}");
        assert_eq!(
            host.keys(),
            vec![SALT_KEY.to_string()],
            "nothing but the salt"
        );
    }

    #[test]
    fn local_denials_leave_with_the_next_batch_call() {
        let host = FakeHost::default();
        let mut engine = cached_engine(&host);
        single_answered(&mut engine, 2, A, 7, &deny_for(Some(500)));
        for context in 3..6 {
            assert!(is_local_429(&request(&mut engine, context, A), context));
            engine.on_done(context);
        }
        // Another request queues so that a batch carries the report.
        assert_eq!(
            request(&mut engine, 6, A_OTHER_KEY),
            vec![Effect::SetTick(KICK_TICK_MS)]
        );
        engine.tick_set(KICK_TICK_MS);
        let effects = engine.on_tick(0);
        let call = batch(&effects);
        let sent: BatchDecisionRequest = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(sent.requests.len(), 1);
        assert_eq!(sent.local_denials.len(), 1);
        let d = &sent.local_denials[0];
        assert_eq!(
            (
                d.tier.as_deref(),
                d.endpoint.as_str(),
                d.policy.as_deref(),
                d.count
            ),
            (Some("free"), "/", Some("free-60s"), 3)
        );
        // Dispatched: reported once; the next request takes a single call again.
        engine.dispatched(Some(50));
        engine.on_call_response(50, ok(&batch_body(&[ALLOW])));
        let effects = request(&mut engine, 7, A_OTHER_PATH);
        assert!(dispatches(&effects), "{effects:?}");
    }

    #[test]
    fn a_refused_batch_keeps_its_report_for_the_next() {
        let host = FakeHost::default();
        let mut engine = cached_engine(&host);
        single_answered(&mut engine, 2, A, 7, &deny_for(Some(500)));
        assert!(is_local_429(&request(&mut engine, 3, A), 3));
        request(&mut engine, 4, A_OTHER_KEY);
        engine.tick_set(KICK_TICK_MS);
        let effects = engine.on_tick(0);
        assert!(!batch(&effects).body.is_empty());
        engine.dispatched(None);
        request(&mut engine, 5, A_OTHER_PATH);
        let effects = engine.on_tick(0);
        let sent: BatchDecisionRequest = serde_json::from_slice(&batch(&effects).body).unwrap();
        assert_eq!(sent.local_denials[0].count, 1);
    }

    #[test]
    fn batch_answers_are_cached_per_member_from_the_batch_dispatch() {
        let host = FakeHost::default();
        let mut engine = cached_engine(&host);
        let contexts = fill_and_queue(&mut engine, 2);
        let effects = engine.on_tick(0);
        assert!(dispatches(&effects));
        host.advance(100);
        engine.dispatched(Some(50));
        let deny = deny_for(Some(300));
        engine.on_call_response(50, ok(&batch_body(&[&deny, &deny])));
        // The members' evidence is `body(context)`.
        for context in &contexts {
            engine.on_done(*context);
        }
        host.advance(150);
        let evidence = body(contexts[0]);
        let again = request(&mut engine, 90, &evidence);
        assert!(is_local_429(&again, 90), "{again:?}");
        // 300 ms from the dispatch, not from the answer.
        host.advance(50);
        let evidence = body(contexts[1]);
        assert!(!is_local_429(&request(&mut engine, 91, &evidence), 91));
    }

    #[test]
    fn corrupt_bucket_bytes_are_ignored() {
        let host = FakeHost::default();
        let mut engine = cached_engine(&host);
        single_answered(&mut engine, 2, A, 7, &deny_for(Some(500)));
        let keys = host.keys();
        let bucket = keys.iter().find(|k| *k != SALT_KEY).unwrap().clone();
        host.0
            .borrow_mut()
            .data
            .get_mut(&bucket)
            .unwrap()
            .0
            .truncate(20);
        let effects = request(&mut engine, 3, A);
        assert!(dispatches(&effects), "{effects:?}");
    }

    #[test]
    fn without_randomness_there_is_no_cache() {
        let host = FakeHost::default();
        host.0.borrow_mut().no_randomness = true;
        let mut engine = cached_engine(&host);
        single_answered(&mut engine, 2, A, 7, &deny_for(Some(500)));
        assert!(dispatches(&request(&mut engine, 3, A)));
        assert!(host.keys().is_empty());
    }

    #[test]
    fn rotating_keys_only_overwrite_the_fixed_buckets() {
        let host = FakeHost::default();
        let mut engine = cached_engine(&host);
        for i in 0..3_000u32 {
            let evidence =
                format!(r#"{{"ip":"10.0.0.1","api_key":"fake-{i}","method":"GET","path":"/"}}"#);
            single_answered(
                &mut engine,
                2,
                evidence.as_bytes(),
                7 + i,
                &deny_for(Some(500)),
            );
        }
        let allowed: std::collections::BTreeSet<String> = (0..BUCKETS)
            .map(bucket_key)
            .chain([SALT_KEY.to_string()])
            .collect();
        let keys = host.keys();
        assert!(keys.len() <= BUCKETS + 1);
        assert!(keys.iter().all(|k| allowed.contains(k)), "{keys:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrency leases

use crate::leases::MAX_RELEASE_ATTEMPTS;

const LEASE_TTL_MS: u64 = 3_000;

fn allow_with_lease(id: &str) -> String {
    format!(
        r#"{{"verdict":"allow","tier":"free","counter":{{"limit":10,"remaining":9,"reset":100,"window":60,"endpoint":"/"}},"lease":{{"id":"{id}","ttl_ms":{LEASE_TTL_MS}}}}}"#
    )
}

/// The lease call that is `effect`, parsed.
fn lease_call(effect: &Effect) -> rl_wire::LeasesRequest {
    let Effect::Dispatch(call) = effect else {
        panic!("not a call: {effect:?}");
    };
    assert_eq!(
        call.context, ROOT,
        "lease calls go out from the root context"
    );
    assert_eq!(call.path, LEASES_PATH);
    serde_json::from_slice(&call.body).unwrap()
}

fn releases(ids: &[&str]) -> rl_wire::LeasesRequest {
    rl_wire::LeasesRequest {
        renew: Vec::new(),
        release: ids.iter().map(|id| id.to_string()).collect(),
    }
}

/// A request of context 2 admitted with lease `id` (its call's token 7); the lease tick runs.
fn admitted_with_lease(engine: &mut Engine, id: &str) {
    start_single(engine, 2, 7);
    let effects = engine.on_call_response(7, ok(&allow_with_lease(id)));
    assert_eq!(
        effects,
        vec![
            count(Outcome::Allowed),
            Effect::Resume(2),
            Effect::SetTick(LEASE_TICK_MS)
        ]
    );
    engine.tick_set(LEASE_TICK_MS);
    assert_eq!(engine.leases().held(), 1);
}

#[test]
fn a_lease_is_released_from_the_root_as_soon_as_its_stream_ends() {
    let mut engine = configured(true);
    admitted_with_lease(&mut engine, "L1");
    // The response completed (or the stream was reset: the host reports both as done).
    assert_eq!(engine.on_done(2), vec![Effect::SetTick(KICK_TICK_MS)]);
    engine.tick_set(KICK_TICK_MS);
    assert_eq!(engine.leases().pending_releases(), 1);
    let effects = engine.on_tick(NOW);
    assert_eq!(effects[0], Effect::SetTick(0), "nothing held any more");
    assert_eq!(effects.len(), 2, "{effects:?}");
    assert_eq!(lease_call(&effects[1]), releases(&["L1"]));
    engine.tick_set(0);
    assert_eq!(engine.dispatched(Some(40)), vec![]);
    assert_eq!(engine.answer_limit(40), Some(MAX_LEASES_RESPONSE_BYTES));
    assert_eq!(
        engine.on_call_response(40, ok(r#"{"renewed":0,"released":1}"#)),
        vec![]
    );
    assert!(engine.leases().is_idle());
    assert_eq!(engine.answer_limit(40), None);
    // A stream that held no lease ends without waking the tick.
    start_single(&mut engine, 3, 8);
    engine.on_call_response(8, ok(ALLOW));
    assert_eq!(engine.on_done(3), vec![]);
}

#[test]
fn leases_in_flight_are_renewed_a_third_of_their_life_after_the_last_renewal() {
    let mut engine = configured(true);
    admitted_with_lease(&mut engine, "L1");
    // The first tick that sees the lease schedules its renewal.
    assert_eq!(engine.on_tick(NOW), vec![Effect::SetTick(LEASE_TICK_MS)]);
    let period = LEASE_TTL_MS / 3;
    assert_eq!(
        engine.on_tick(NOW + period - 1),
        vec![Effect::SetTick(LEASE_TICK_MS)]
    );
    let effects = engine.on_tick(NOW + period);
    assert_eq!(effects[0], Effect::SetTick(LEASE_TICK_MS));
    assert_eq!(
        lease_call(&effects[1]),
        rl_wire::LeasesRequest {
            renew: vec!["L1".into()],
            release: Vec::new(),
        }
    );
    assert_eq!(engine.dispatched(Some(41)), vec![]);
    assert_eq!(
        engine.on_call_response(41, ok(r#"{"renewed":1,"released":0}"#)),
        vec![]
    );
    // Next renewal a third of a lease later.
    assert_eq!(
        engine.on_tick(NOW + 2 * period - 1),
        vec![Effect::SetTick(LEASE_TICK_MS)]
    );
    assert_eq!(engine.on_tick(NOW + 2 * period).len(), 2);
}

#[test]
fn a_failed_release_is_tried_again_a_bounded_number_of_times() {
    let mut engine = configured(true);
    admitted_with_lease(&mut engine, "L1");
    engine.on_done(2);
    let mut token = 60;
    for attempt in 0..MAX_RELEASE_ATTEMPTS {
        let effects = engine.on_tick(NOW);
        assert_eq!(
            lease_call(&effects[1]),
            releases(&["L1"]),
            "attempt {attempt}"
        );
        engine.tick_set(0);
        if attempt == 0 {
            // The host refused the dispatch: the release waits for the next tick.
            assert_eq!(
                engine.dispatched(None),
                vec![Effect::SetTick(LEASE_TICK_MS)]
            );
        } else {
            assert_eq!(engine.dispatched(Some(token)), vec![]);
            let effects = engine.on_call_response(token, timed_out());
            if attempt + 1 < MAX_RELEASE_ATTEMPTS {
                assert_eq!(effects, vec![Effect::SetTick(LEASE_TICK_MS)]);
            } else {
                assert_eq!(effects, vec![], "given up: the lease expires on its own");
            }
            token += 1;
        }
        engine.tick_set(LEASE_TICK_MS);
    }
    assert!(engine.leases().is_idle());
    assert_eq!(engine.on_tick(NOW), vec![Effect::SetTick(0)]);
}

#[test]
fn a_batched_member_gone_before_its_answer_gives_its_lease_back() {
    let mut engine = configured(true);
    let queued = fill_and_queue(&mut engine, 2);
    send_batch(&mut engine, 50);
    engine.on_done(queued[1]);
    let answers = batch_body(&[&allow_with_lease("A"), &allow_with_lease("B")]);
    let effects = engine.on_call_response(50, ok(&answers));
    assert_eq!(
        effects,
        vec![
            count(Outcome::Allowed),
            Effect::Resume(queued[0]),
            Effect::SetTick(LEASE_TICK_MS)
        ]
    );
    engine.tick_set(LEASE_TICK_MS);
    assert_eq!(engine.leases().held(), 1);
    let effects = engine.on_tick(NOW);
    assert_eq!(lease_call(&effects[1]), releases(&["B"]));
}

#[test]
fn a_tick_kept_for_leases_sends_no_batch_while_one_is_in_flight() {
    let mut engine = configured(true);
    admitted_with_lease(&mut engine, "L1");
    // Context 2 holds the lease, its call is done: fill the other single slot and queue.
    start_single(&mut engine, 3, 8);
    start_single(&mut engine, 4, 9);
    assert_eq!(
        headers(&mut engine, 10),
        vec![Effect::SetTick(KICK_TICK_MS)]
    );
    engine.tick_set(KICK_TICK_MS);
    let effects = engine.on_tick(NOW);
    assert_eq!(effects[0], Effect::SetTick(LEASE_TICK_MS));
    assert_eq!(batch_call(&effects), ips(&[10]));
    engine.tick_set(LEASE_TICK_MS);
    assert_eq!(
        engine.dispatched(Some(50)),
        vec![Effect::Count(BATCH_CALLS_METRIC)]
    );
    // Another request queues behind the batch in flight; the lease tick leaves it there.
    assert_eq!(headers(&mut engine, 11), vec![]);
    assert_eq!(
        engine.on_tick(NOW + 1),
        vec![Effect::SetTick(LEASE_TICK_MS)]
    );
    // The batch's answer sends it.
    let effects = engine.on_call_response(50, ok(&batch_body(&[ALLOW])));
    assert_eq!(batch_call(&effects), ips(&[11]));
}

// Usage after the response: charges and releases

use crate::response::{CHARGES_INVALID_METRIC, USAGE_DROPPED_METRIC};
use crate::usage::MAX_USAGE_ATTEMPTS;

fn allow_with_usage(handle: &str, max_charge: Option<u64>, statuses: &[u16]) -> String {
    let usage = rl_wire::Usage {
        handle: handle.to_string(),
        max_charge,
        count_statuses: statuses.to_vec(),
    };
    format!(
        r#"{{"verdict":"allow","tier":"free","counter":{{"limit":10,"remaining":9,"reset":100,"window":60,"endpoint":"/"}},"usage":{}}}"#,
        serde_json::to_string(&usage).unwrap()
    )
}

/// The usage call that is `effect`, parsed.
fn usage_call(effect: &Effect) -> Vec<rl_wire::UsageItem> {
    let Effect::Dispatch(call) = effect else {
        panic!("not a call: {effect:?}");
    };
    assert_eq!(call.context, ROOT, "usage calls go out from the root");
    assert_eq!(call.path, USAGE_PATH);
    serde_json::from_slice::<rl_wire::UsageRequest>(&call.body)
        .unwrap()
        .items
}

fn item(handle: &str, charge: u64, release: bool) -> rl_wire::UsageItem {
    rl_wire::UsageItem {
        handle: handle.to_string(),
        charge,
        release,
    }
}

/// A request of context 2 admitted with a usage handle (its call's token 7).
fn admitted_with_usage(engine: &mut Engine, answer: &str) {
    start_single(engine, 2, 7);
    let effects = engine.on_call_response(7, ok(answer));
    assert_eq!(effects, vec![count(Outcome::Allowed), Effect::Resume(2)]);
    assert_eq!(engine.usage().open(), 1);
}

#[test]
fn a_charge_leaves_from_the_root_when_the_stream_ends_cut_to_max_charge() {
    let mut engine = configured(true);
    admitted_with_usage(&mut engine, &allow_with_usage("H1", Some(500), &[]));
    engine.on_response_status(2, 200);
    assert_eq!(engine.on_charge(2, b"1532"), vec![]);
    assert_eq!(engine.on_done(2), vec![Effect::SetTick(KICK_TICK_MS)]);
    engine.tick_set(KICK_TICK_MS);
    let effects = engine.on_tick(NOW);
    assert_eq!(effects[0], Effect::SetTick(0));
    assert_eq!(usage_call(&effects[1]), vec![item("H1", 500, false)]);
    engine.tick_set(0);
    assert_eq!(engine.dispatched(Some(40)), vec![]);
    assert_eq!(engine.answer_limit(40), Some(MAX_USAGE_RESPONSE_BYTES));
    assert_eq!(
        engine.on_call_response(40, ok(r#"{"charged":500,"released":0}"#)),
        vec![]
    );
    assert_eq!(engine.answer_limit(40), None);
    assert!(!engine.usage().has_pending());
}

#[test]
fn an_invalid_charge_is_counted_and_ignored() {
    let mut engine = configured(true);
    admitted_with_usage(&mut engine, &allow_with_usage("H1", Some(500), &[]));
    assert_eq!(
        engine.on_charge(2, b"-5"),
        vec![Effect::Count(CHARGES_INVALID_METRIC)]
    );
    // Nothing to report: the stream ends without waking the tick.
    assert_eq!(engine.on_done(2), vec![]);
    // A charge for a stream the engine does not know changes nothing.
    assert_eq!(engine.on_charge(99, b"5"), vec![]);
}

#[test]
fn a_status_the_rule_does_not_count_releases_and_a_counted_one_keeps() {
    let mut engine = configured(true);
    admitted_with_usage(&mut engine, &allow_with_usage("OK", None, &[401, 403]));
    engine.on_response_status(2, 200);
    engine.on_done(2);
    start_single(&mut engine, 3, 8);
    engine.on_call_response(8, ok(&allow_with_usage("FAIL", None, &[401, 403])));
    engine.on_response_status(3, 401);
    engine.on_done(3);
    // A reset: no response status at all.
    start_single(&mut engine, 4, 9);
    engine.on_call_response(9, ok(&allow_with_usage("RESET", None, &[401, 403])));
    engine.on_done(4);
    engine.tick_set(KICK_TICK_MS);
    let effects = engine.on_tick(NOW);
    assert_eq!(
        usage_call(&effects[1]),
        vec![item("OK", 0, true), item("RESET", 0, true)]
    );
}

#[test]
fn a_batched_member_gone_before_its_answer_releases_its_unit() {
    let mut engine = configured(true);
    let queued = fill_and_queue(&mut engine, 2);
    send_batch(&mut engine, 50);
    engine.on_done(queued[1]);
    let answers = batch_body(&[
        &allow_with_usage("A", None, &[401]),
        &allow_with_usage("B", None, &[401]),
    ]);
    let effects = engine.on_call_response(50, ok(&answers));
    assert_eq!(
        effects,
        vec![
            count(Outcome::Allowed),
            Effect::Resume(queued[0]),
            Effect::SetTick(LEASE_TICK_MS)
        ]
    );
    engine.tick_set(LEASE_TICK_MS);
    let effects = engine.on_tick(NOW);
    assert_eq!(usage_call(&effects[1]), vec![item("B", 0, true)]);
}

#[test]
fn an_undeliverable_report_is_retried_then_dropped_counted_and_logged() {
    let mut engine = configured(true);
    admitted_with_usage(&mut engine, &allow_with_usage("H1", Some(9), &[]));
    engine.on_charge(2, b"3");
    engine.on_done(2);
    for (token, attempt) in (60..).zip(0..MAX_USAGE_ATTEMPTS) {
        let effects = engine.on_tick(NOW);
        assert_eq!(usage_call(&effects[1]), vec![item("H1", 3, false)]);
        engine.tick_set(0);
        assert_eq!(engine.dispatched(Some(token)), vec![]);
        let effects = engine.on_call_response(token, timed_out());
        if attempt + 1 < MAX_USAGE_ATTEMPTS {
            assert_eq!(effects, vec![Effect::SetTick(LEASE_TICK_MS)]);
        } else {
            assert_eq!(effects.len(), 2, "{effects:?}");
            assert_eq!(effects[0], Effect::Count(USAGE_DROPPED_METRIC));
            assert!(matches!(&effects[1], Effect::Warn(line) if line.contains("dropped")));
        }
        engine.tick_set(LEASE_TICK_MS);
    }
    assert!(!engine.usage().has_pending());
    assert_eq!(engine.on_tick(NOW), vec![Effect::SetTick(0)]);
}
