use super::*;

#[test]
fn a_handle_reads_back_as_written() {
    let handle = Handle::new(
        1_700_000_000_123_456,
        3,
        "free",
        "/api/v1/login",
        "ip:1.2.3.4",
    );
    let text = handle.encode().expect("short enough");
    let back = Handle::parse(&text).expect("parses");
    assert_eq!(back, handle);
    assert_eq!(back.recorded_us(), 1_700_000_000_123_456);
    assert_eq!(back.cost(), 3);
    assert_eq!(back.identity(), "ip:1.2.3.4");
    assert_eq!(back.once('c').len(), 33);
    assert_ne!(back.once('c'), back.once('r'));
}

#[test]
fn anything_else_is_refused() {
    let good = Handle::new(1, 1, "t", "/x", "id");
    let text = good.encode().expect("encodes");
    for bad in [
        String::new(),
        "not json".to_string(),
        "[]".to_string(),
        text.replace("u1", "u2"),
        serde_json::to_string(&Handle(
            "u1".into(),
            1,
            1,
            "ZZ".into(),
            "t".into(),
            "/x".into(),
            "id".into(),
        ))
        .expect("json"),
        serde_json::to_string(&Handle(
            "u1".into(),
            1,
            0,
            good.3.clone(),
            "t".into(),
            "/x".into(),
            "id".into(),
        ))
        .expect("json"),
        serde_json::to_string(&Handle(
            "u1".into(),
            1,
            1,
            good.3.to_uppercase(),
            "t".into(),
            "/x".into(),
            "id".into(),
        ))
        .expect("json"),
        serde_json::to_string(&Handle(
            "u1".into(),
            1,
            1,
            good.3.clone(),
            "t".into(),
            "/x".into(),
            String::new(),
        ))
        .expect("json"),
        "x".repeat(MAX_USAGE_HANDLE_BYTES + 1),
    ] {
        assert!(Handle::parse(&bad).is_none(), "{bad:?}");
    }
}

#[test]
fn an_identity_too_long_for_a_handle_gets_none() {
    let long = "k".repeat(MAX_USAGE_HANDLE_BYTES);
    assert!(Handle::new(1, 1, "t", "/x", &long).encode().is_none());
}
