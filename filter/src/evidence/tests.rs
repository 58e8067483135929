use super::*;
use crate::client_ip::IpNet;

#[test]
fn credentials() {
    assert_eq!(credential(None, 10), None);
    assert_eq!(credential(Some(b""), 10), None);
    assert_eq!(credential(Some(b"abc"), 10), Some("abc".into()));
    assert_eq!(credential(Some(b"\xff\xfekey"), 10), None);
    let exact = vec![b'k'; MAX_API_KEY_BYTES];
    assert_eq!(
        credential(Some(&exact), MAX_API_KEY_BYTES).map(|s| s.len()),
        Some(1024)
    );
    let over = vec![b'k'; MAX_API_KEY_BYTES + 1];
    assert_eq!(credential(Some(&over), MAX_API_KEY_BYTES), None);
}

#[test]
fn oversized_or_invalid_credentials_are_absent_in_the_request() {
    let key = vec![b'k'; MAX_API_KEY_BYTES + 1];
    let auth = vec![b'a'; MAX_AUTHORIZATION_BYTES + 1];
    let raw = RawRequest {
        source_address: Some(b"192.0.2.1:1234"),
        api_key: Some(&key),
        authorization: Some(&auth),
        ..Default::default()
    };
    let req = decision_request(&raw, &TrustedProxies::default());
    assert_eq!(req.api_key, None);
    assert_eq!(req.authorization, None);
    assert_eq!(req.ip, "192.0.2.1");

    let auth_ok = vec![b'a'; MAX_AUTHORIZATION_BYTES];
    let raw = RawRequest {
        api_key: Some(b"\xc3\x28"),
        authorization: Some(&auth_ok),
        ..Default::default()
    };
    let req = decision_request(&raw, &TrustedProxies::default());
    assert_eq!(req.api_key, None);
    assert_eq!(
        req.authorization.map(|a| a.len()),
        Some(MAX_AUTHORIZATION_BYTES)
    );
}

#[test]
fn path_drops_query_and_fragment() {
    assert_eq!(request_path(b"/api/v1/request?x=1&y=2"), "/api/v1/request");
    assert_eq!(request_path(b"/api/v1/request#frag?x"), "/api/v1/request");
    assert_eq!(request_path(b"/a?b#c"), "/a");
    assert_eq!(request_path(b"?only"), "");
    assert_eq!(
        request_path(b"/api//v1/./x"),
        "/api//v1/./x",
        "normalised by the control plane"
    );
    assert_eq!(request_path(b""), "");
    assert_eq!(request_path(b"/bad\xffbyte"), "/bad\u{fffd}byte");
}

#[test]
fn path_truncated_on_char_boundary() {
    let ascii = vec![b'a'; MAX_PATH_BYTES + 10];
    assert_eq!(request_path(&ascii).len(), MAX_PATH_BYTES);

    // "é" is two bytes: with an odd prefix the cut would fall inside one.
    let mut raw = b"/".to_vec();
    while raw.len() < MAX_PATH_BYTES + 10 {
        raw.extend_from_slice("é".as_bytes());
    }
    let path = request_path(&raw);
    assert_eq!(path.len(), MAX_PATH_BYTES - 1);
    assert!(path.ends_with('é'));

    // Three-byte chars, and a query that starts beyond the cut.
    let mut raw = b"/".to_vec();
    while raw.len() < MAX_PATH_BYTES + 10 {
        raw.extend_from_slice("€".as_bytes());
    }
    raw.extend_from_slice(b"?q=1");
    let path = request_path(&raw);
    assert!(path.len() <= MAX_PATH_BYTES && path.len() > MAX_PATH_BYTES - 3);
    assert!(path.ends_with('€'));
}

#[test]
fn method_is_bounded() {
    let long = vec![b'M'; 500];
    let raw = RawRequest {
        method: Some(&long),
        ..Default::default()
    };
    assert_eq!(
        decision_request(&raw, &TrustedProxies::default())
            .method
            .len(),
        MAX_METHOD_BYTES
    );
}

#[test]
fn builds_request_from_raw_headers() {
    let trusted = TrustedProxies::new(vec![IpNet::parse("10.0.0.0/8").unwrap()]);
    let raw = RawRequest {
        source_address: Some(b"10.0.0.1:5555"),
        forwarded_for: vec![b"6.6.6.6, 198.51.100.7"],
        real_ip: None,
        api_key: Some(b"key-123"),
        authorization: Some(b"Bearer abc.def.ghi"),
        method: Some(b"GET"),
        path: Some(b"/api/v1/request?x=1"),
    };
    let req = decision_request(&raw, &trusted);
    assert_eq!(
        req,
        DecisionRequest {
            ip: "198.51.100.7".into(),
            api_key: Some("key-123".into()),
            authorization: Some("Bearer abc.def.ghi".into()),
            method: "GET".into(),
            path: "/api/v1/request".into(),
        }
    );
}

#[test]
fn missing_source_gives_empty_ip() {
    let req = decision_request(&RawRequest::default(), &TrustedProxies::default());
    assert_eq!(req.ip, "");
    let raw = RawRequest {
        source_address: Some(b"garbage"),
        ..Default::default()
    };
    assert_eq!(decision_request(&raw, &TrustedProxies::default()).ip, "");
}

#[test]
fn encoding_round_trips_normal_requests() {
    let req = DecisionRequest {
        ip: "198.51.100.7".into(),
        api_key: Some("k\"ey".into()),
        authorization: None,
        method: "GET".into(),
        path: "/a".into(),
    };
    let body = encode_decision_request(req.clone());
    assert_eq!(
        serde_json::from_slice::<DecisionRequest>(&body).unwrap(),
        req
    );
}

#[test]
fn worst_case_sizes_fit_without_escaping() {
    let req = DecisionRequest {
        ip: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".into(),
        api_key: Some("k".repeat(MAX_API_KEY_BYTES)),
        authorization: Some("a".repeat(MAX_AUTHORIZATION_BYTES)),
        method: "M".repeat(MAX_METHOD_BYTES),
        path: "p".repeat(MAX_PATH_BYTES),
    };
    let body = encode_decision_request(req.clone());
    assert!(body.len() <= MAX_DECISION_REQUEST_BYTES);
    assert_eq!(
        serde_json::from_slice::<DecisionRequest>(&body).unwrap(),
        req
    );
}

#[test]
fn escaping_blowup_drops_credentials_before_the_path() {
    let req = DecisionRequest {
        ip: "198.51.100.7".into(),
        api_key: Some("\\".repeat(MAX_API_KEY_BYTES)),
        authorization: Some("\"".repeat(MAX_AUTHORIZATION_BYTES)),
        method: "GET".into(),
        path: "/x".into(),
    };
    let body = encode_decision_request(req);
    assert!(body.len() <= MAX_DECISION_REQUEST_BYTES);
    let got: DecisionRequest = serde_json::from_slice(&body).unwrap();
    assert_eq!(got.authorization, None);
    assert_eq!(got.api_key.map(|k| k.len()), Some(MAX_API_KEY_BYTES));
    assert_eq!(got.path, "/x");
}

#[test]
fn control_characters_everywhere_still_fit() {
    let nasty = "\u{1}";
    let req = DecisionRequest {
        ip: "198.51.100.7".into(),
        api_key: Some(nasty.repeat(MAX_API_KEY_BYTES)),
        authorization: Some(nasty.repeat(MAX_AUTHORIZATION_BYTES)),
        method: nasty.repeat(MAX_METHOD_BYTES),
        path: nasty.repeat(MAX_PATH_BYTES),
    };
    let body = encode_decision_request(req);
    assert!(body.len() <= MAX_DECISION_REQUEST_BYTES, "{}", body.len());
    let got: DecisionRequest = serde_json::from_slice(&body).unwrap();
    assert_eq!(got.ip, "198.51.100.7");
    assert_eq!(got.api_key, None);
    assert_eq!(got.authorization, None);
    assert!(!got.path.is_empty());
}
