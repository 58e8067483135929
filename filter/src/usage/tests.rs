use super::*;

fn usage(max_charge: Option<u64>, count_statuses: &[u16]) -> Usage {
    Usage {
        handle: "h".into(),
        max_charge,
        count_statuses: count_statuses.to_vec(),
    }
}

fn body_items(body: &[u8]) -> Vec<UsageItem> {
    serde_json::from_slice::<UsageRequest>(body)
        .expect("a usage request")
        .items
}

#[test]
fn charge_values() {
    assert_eq!(parse_charge(b"1532"), Some(1532));
    assert_eq!(parse_charge(b" 0 "), Some(0));
    assert_eq!(parse_charge(b"18446744073709551615"), Some(u64::MAX));
    for bad in [
        &b""[..],
        b" ",
        b"-3",
        b"+3",
        b"1.5",
        b"1,2",
        b"12abc",
        b"0x10",
        b"18446744073709551616",
        b"123456789012345678901",
        "١٢".as_bytes(),
    ] {
        assert_eq!(
            parse_charge(bad),
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn a_charge_is_cut_to_max_charge_and_sent_when_the_stream_ends() {
    let mut book = UsageBook::default();
    book.hold(1, &usage(Some(100), &[]));
    assert_eq!(book.charge(1, b"1532"), ChargeRead::Taken(100));
    assert!(!book.has_pending());
    assert!(book.end(1));
    let (body, reports) = book.due().expect("a call");
    assert_eq!(
        body_items(&body),
        [UsageItem {
            handle: "h".into(),
            charge: 100,
            release: false
        }]
    );
    assert_eq!(book.sent(Some(7), reports), 0);
    assert!(book.is_call(7));
    assert_eq!(book.answered(7, true), 0);
    assert!(!book.has_pending() && !book.is_call(7));
}

#[test]
fn a_trailer_replaces_the_header_and_invalid_values_are_ignored() {
    let mut book = UsageBook::default();
    book.hold(1, &usage(Some(1000), &[]));
    assert_eq!(book.charge(1, b"10"), ChargeRead::Taken(10));
    assert_eq!(book.charge(1, b"ten"), ChargeRead::Invalid);
    assert_eq!(book.charge(1, b"42"), ChargeRead::Taken(42));
    assert!(book.end(1));
    let (body, _) = book.due().expect("a call");
    assert_eq!(body_items(&body)[0].charge, 42);
}

#[test]
fn a_charge_without_max_charge_or_without_a_handle_is_unused() {
    let mut book = UsageBook::default();
    assert_eq!(book.charge(1, b"5"), ChargeRead::Unused);
    book.hold(2, &usage(None, &[401]));
    assert_eq!(book.charge(2, b"5"), ChargeRead::Unused);
    book.status(2, 401);
    // A counted status and no charge: nothing to report.
    assert!(!book.end(2));
    assert!(book.due().is_none());
}

#[test]
fn a_status_not_counted_or_no_response_releases() {
    let mut book = UsageBook::default();
    book.hold(1, &usage(None, &[401, 403]));
    book.hold(2, &usage(None, &[401, 403]));
    book.hold(3, &usage(None, &[401, 403]));
    book.status(1, 200);
    book.status(2, 403);
    // 3: reset before any response.
    assert!(book.end(1));
    assert!(!book.end(2));
    assert!(book.end(3));
    book.orphan(&usage(None, &[401]));
    book.orphan(&usage(Some(5), &[]));
    let (body, _) = book.due().expect("a call");
    let items = body_items(&body);
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|i| i.release && i.charge == 0));
}

#[test]
fn a_failed_call_is_retried_then_dropped_and_counted() {
    let mut book = UsageBook::default();
    book.hold(1, &usage(Some(9), &[]));
    book.charge(1, b"3");
    book.end(1);
    let mut dropped = 0;
    for attempt in 0..MAX_USAGE_ATTEMPTS {
        let (_, reports) = book.due().expect("still pending");
        dropped += if attempt % 2 == 0 {
            book.sent(Some(u32::from(attempt)), reports);
            book.answered(u32::from(attempt), false)
        } else {
            book.sent(None, reports)
        };
    }
    assert_eq!(dropped, 1);
    assert!(book.due().is_none());
}

#[test]
fn a_call_carries_at_most_the_bound_and_the_rest_follows() {
    let mut book = UsageBook::default();
    for serial in 0..(MAX_USAGE_PER_CALL as u64 + 3) {
        book.hold(serial, &usage(Some(9), &[]));
        book.charge(serial, b"1");
        book.end(serial);
    }
    let (_, first) = book.due().expect("first");
    assert_eq!(first.len(), MAX_USAGE_PER_CALL);
    let (_, rest) = book.due().expect("rest");
    assert_eq!(rest.len(), 3);
    assert!(book.due().is_none());
}

#[test]
fn status_and_charge_are_read_from_the_response_pairs() {
    let pairs: Vec<(&[u8], &[u8])> = vec![
        (b":status", b"401"),
        (b"content-type", b"text/plain"),
        (b"X-Tokens", b"17"),
        (b"x-tokens", b"99"),
    ];
    assert_eq!(
        from_response(&pairs, "x-tokens"),
        (Some(401), Some(&b"17"[..]))
    );
    assert_eq!(
        from_response(&pairs, "x-ratelimit-charge"),
        (Some(401), None)
    );
    let odd: Vec<(&[u8], &[u8])> = vec![(b":status", b"abc")];
    assert_eq!(from_response(&odd, "x-tokens"), (None, None));
    assert_eq!(from_response(&[], "x-tokens"), (None, None));
}
