use super::*;

#[test]
fn request_omits_absent_credentials() {
    let req = DecisionRequest {
        ip: "10.0.0.1".into(),
        method: "GET".into(),
        path: "/a?b".into(),
        ..Default::default()
    };
    let json = serde_json::to_string(&req).unwrap();
    assert_eq!(json, r#"{"ip":"10.0.0.1","method":"GET","path":"/a?b"}"#);
    assert_eq!(serde_json::from_str::<DecisionRequest>(&json).unwrap(), req);
}

#[test]
fn response_round_trips_and_rejects_unknown_verdicts() {
    let resp = DecisionResponse {
        verdict: Verdict::Deny,
        tier: Some("free".into()),
        counter: Some(CounterReport {
            limit: 100,
            remaining: 0,
            reset: 1_700_000_060,
            retry_after: Some(59),
            window: 60,
            endpoint: "/api/v1/request".into(),
            reset_at: Some("2023-11-14T22:14:20Z".into()),
            policy: None,
            reset_after: None,
            units: false,
        }),
        policies: Vec::new(),
        shadow_denied: false,
        deny_for_ms: None,
        lease: None,
        usage: None,
    };
    let json = serde_json::to_string(&resp).unwrap();
    assert_eq!(
        serde_json::from_str::<DecisionResponse>(&json).unwrap(),
        resp
    );
    assert!(serde_json::from_str::<DecisionResponse>(r#"{"verdict":"maybe"}"#).is_err());
}

#[test]
fn batch_shapes_round_trip() {
    let mut req = BatchDecisionRequest {
        requests: vec![DecisionRequest::default(); 2],
        local_denials: Vec::new(),
    };
    let json = serde_json::to_string(&req).unwrap();
    assert!(!json.contains("local_denials"), "{json}");
    assert_eq!(
        serde_json::from_str::<BatchDecisionRequest>(&json).unwrap(),
        req
    );
    req.local_denials.push(LocalDenials {
        tier: Some("free".into()),
        endpoint: "/api/v1/request".into(),
        policy: Some("free-60s".into()),
        count: 3,
    });
    let json = serde_json::to_string(&req).unwrap();
    assert_eq!(
        serde_json::from_str::<BatchDecisionRequest>(&json).unwrap(),
        req
    );
    let json = r#"{"responses":[{"verdict":"allow"},{"verdict":"whitelisted"}]}"#;
    let resp: BatchDecisionResponse = serde_json::from_str(json).unwrap();
    assert_eq!(resp.responses[1].verdict, Verdict::Whitelisted);
}

#[test]
fn only_deny_and_unavailable_block() {
    assert!(Verdict::Allow.admits());
    assert!(Verdict::Whitelisted.admits());
    assert!(Verdict::Disabled.admits());
    assert!(Verdict::FailedOpen.admits());
    assert!(!Verdict::Deny.admits());
    assert!(!Verdict::Unavailable.admits());
}

#[test]
fn error_body_omits_absent_parts_and_round_trips() {
    let plain = ErrorBody::new("unauthorized", "missing key");
    let json = serde_json::to_string(&plain).unwrap();
    assert_eq!(
        json,
        r#"{"error":{"code":"unauthorized","message":"missing key"}}"#
    );
    assert_eq!(serde_json::from_str::<ErrorBody>(&json).unwrap(), plain);

    let mut deny = ErrorBody::new("rate_limit_exceeded", "Rate limit exceeded");
    deny.error.details = Some(DenyDetails {
        limit: 100,
        window_size: 60,
        reset_at: "2023-11-14T22:14:20Z".into(),
        retry_after_seconds: 59,
        tier: None,
        endpoint: "/api/v1/request".into(),
    });
    let json = serde_json::to_value(&deny).unwrap();
    assert_eq!(json["error"]["details"]["tier"], serde_json::Value::Null);
    assert!(json["error"].get("field").is_none());
    assert_eq!(serde_json::from_value::<ErrorBody>(json).unwrap(), deny);
}

/// The decision answer as the first release's filter reads it: a frozen copy of its types.
/// During a rolling upgrade such filters talk to upgraded control planes.
mod first_release {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq, Eq)]
    #[serde(rename_all = "snake_case")]
    pub enum Verdict {
        Allow,
        Deny,
        Unavailable,
        Whitelisted,
        Disabled,
        FailedOpen,
    }

    #[derive(Debug, Deserialize)]
    pub struct DecisionResponse {
        pub verdict: Verdict,
        #[serde(default)]
        pub tier: Option<String>,
        #[serde(default)]
        pub counter: Option<CounterReport>,
    }

    #[derive(Debug, Deserialize)]
    pub struct CounterReport {
        pub limit: u64,
        pub remaining: u64,
        pub reset: u64,
        #[serde(default)]
        pub retry_after: Option<u64>,
        pub window: u64,
        pub endpoint: String,
        #[serde(default)]
        pub reset_at: Option<String>,
    }
}

fn shadowed_answer_with_every_new_field() -> DecisionResponse {
    DecisionResponse {
        verdict: Verdict::Allow,
        tier: Some("free".into()),
        counter: Some(CounterReport {
            limit: 10,
            remaining: 0,
            reset: 1_700_000_001,
            retry_after: None,
            window: 1,
            endpoint: "/api/v1/search".into(),
            reset_at: None,
            policy: Some("free-1s".into()),
            reset_after: Some(1),
            units: true,
        }),
        policies: vec![
            PolicyReport {
                name: "free-1s".into(),
                limit: 10,
                window: 1,
            },
            PolicyReport {
                name: "free-60s".into(),
                limit: 100,
                window: 60,
            },
        ],
        shadow_denied: true,
        deny_for_ms: None,
        lease: None,
        usage: None,
    }
}

#[test]
fn a_first_release_filter_reads_answers_with_the_new_fields() {
    let json = serde_json::to_string(&shadowed_answer_with_every_new_field()).unwrap();
    let old: first_release::DecisionResponse = serde_json::from_str(&json).unwrap();
    // It admits, as shadow mode wants, and still describes the binding window.
    assert_eq!(old.verdict, first_release::Verdict::Allow);
    let counter = old.counter.unwrap();
    assert_eq!(
        (counter.limit, counter.remaining, counter.window),
        (10, 0, 1)
    );
    assert_eq!((counter.reset, counter.retry_after), (1_700_000_001, None));
    assert_eq!(
        (counter.endpoint.as_str(), counter.reset_at),
        ("/api/v1/search", None)
    );
    assert_eq!(old.tier.as_deref(), Some("free"));
}

#[test]
fn answers_with_fields_of_a_later_release_still_parse() {
    let mut value = serde_json::to_value(shadowed_answer_with_every_new_field()).unwrap();
    value["a_later_field"] = serde_json::json!({"x": [1, 2]});
    value["counter"]["another_one"] = serde_json::json!(true);
    let parsed: DecisionResponse = serde_json::from_value(value).unwrap();
    assert_eq!(parsed, shadowed_answer_with_every_new_field());
}

#[test]
fn new_fields_are_left_out_when_unset() {
    let json = serde_json::to_string(&DecisionResponse {
        verdict: Verdict::Whitelisted,
        tier: None,
        counter: None,
        policies: Vec::new(),
        shadow_denied: false,
        deny_for_ms: None,
        lease: None,
        usage: None,
    })
    .unwrap();
    assert_eq!(json, r#"{"verdict":"whitelisted"}"#);
}

#[test]
fn a_lease_travels_with_an_admitted_answer_and_lease_calls_omit_empty_lists() {
    let mut answer = shadowed_answer_with_every_new_field();
    answer.lease = Some(Lease {
        id: "0123|rl:{ip:10.0.0.1}:c".into(),
        ttl_ms: 30_000,
    });
    let json = serde_json::to_value(&answer).unwrap();
    assert_eq!(json["lease"]["ttl_ms"], 30_000);
    let back: DecisionResponse = serde_json::from_value(json).unwrap();
    assert_eq!(back, answer);
    // A first-release filter ignores the lease (it expires on its own).
    let old: first_release::DecisionResponse =
        serde_json::from_str(&serde_json::to_string(&answer).unwrap()).unwrap();
    assert_eq!(old.verdict, first_release::Verdict::Allow);

    let only_releases = LeasesRequest {
        renew: Vec::new(),
        release: vec!["a".into()],
    };
    assert_eq!(
        serde_json::to_string(&only_releases).unwrap(),
        r#"{"release":["a"]}"#
    );
    let parsed: LeasesRequest = serde_json::from_str(r#"{"renew":["b"]}"#).unwrap();
    assert_eq!(parsed.renew, ["b"]);
    assert!(parsed.release.is_empty());
}
