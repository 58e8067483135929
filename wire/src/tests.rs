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
        }),
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
    let req = BatchDecisionRequest {
        requests: vec![DecisionRequest::default(); 2],
    };
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
