use super::*;

#[test]
fn the_evidence_headers_are_all_raw_request_reads() {
    let pairs: Vec<(&[u8], &[u8])> = EVIDENCE_HEADERS
        .iter()
        .chain(&["x-api-key"])
        .map(|name| (name.as_bytes(), &b"v"[..]))
        .collect();
    let raw = raw_request(&pairs, "x-api-key", None);
    assert_eq!(raw.forwarded_for, vec![&b"v"[..]]);
    for field in [
        raw.real_ip,
        raw.api_key,
        raw.authorization,
        raw.method,
        raw.path,
    ] {
        assert_eq!(field, Some(&b"v"[..]));
    }
}

#[test]
fn round_trips_and_finds_the_evidence() {
    let bytes = serialize(&[
        (":method", "GET"),
        (":path", "/a?b"),
        ("x-forwarded-for", "1.2.3.4"),
        ("x-api-key", "k"),
        ("x-forwarded-for", "5.6.7.8"),
        ("x-empty", ""),
    ]);
    let pairs = parse(&bytes).unwrap();
    assert_eq!(pairs.len(), 6);
    assert_eq!(pairs[5], (&b"x-empty"[..], &b""[..]));
    let raw = raw_request(&pairs, "X-Api-Key", Some(b"9.9.9.9:1"));
    assert_eq!(raw.method, Some(&b"GET"[..]));
    assert_eq!(raw.path, Some(&b"/a?b"[..]));
    assert_eq!(raw.api_key, Some(&b"k"[..]));
    assert_eq!(raw.authorization, None);
    assert_eq!(raw.real_ip, None);
    assert_eq!(raw.forwarded_for, vec![&b"1.2.3.4"[..]]);
    assert_eq!(raw.source_address, Some(&b"9.9.9.9:1"[..]));
    assert_eq!(parse(&[]), Some(vec![]));
    assert_eq!(parse(&serialize(&[])), Some(vec![]));
}

#[test]
fn malformed_maps_are_refused_without_panicking() {
    let bytes = serialize(&[("a", "1"), ("bb", "22")]);
    for cut in 1..bytes.len() - 1 {
        let _ = parse(&bytes[..cut]);
    }
    assert_eq!(parse(&bytes[..bytes.len() - 2]), None);
    assert_eq!(parse(&[255, 255, 255, 255]), None);
    assert_eq!(parse(&[1, 0, 0]), None);
    let mut long = bytes.clone();
    long[4] = 200;
    assert_eq!(parse(&long), None);
    let mut huge = bytes;
    huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(parse(&huge), None);
}
