use super::*;

fn lease(id: &str, ttl_ms: u64) -> Lease {
    Lease {
        id: id.into(),
        ttl_ms,
    }
}

fn parsed(body: &[u8]) -> LeasesRequest {
    serde_json::from_slice(body).unwrap()
}

#[test]
fn nothing_is_due_for_a_book_without_leases() {
    let mut book = LeaseBook::default();
    assert!(book.is_idle());
    assert_eq!(book.due(0), None);
    assert!(!book.end(1));
}

#[test]
fn an_ended_request_releases_its_lease_once() {
    let mut book = LeaseBook::default();
    book.hold(7, &lease("a", 3000));
    assert!(!book.is_idle());
    assert!(book.end(7));
    assert!(!book.end(7));
    let (body, releases) = book.due(0).unwrap();
    assert_eq!(parsed(&body).release, ["a"]);
    assert!(parsed(&body).renew.is_empty());
    book.sent(Some(1), releases);
    assert!(book.is_call(1));
    book.answered(1, true);
    assert!(!book.is_call(1));
    assert!(book.is_idle());
    assert_eq!(book.due(10_000), None);
}

#[test]
fn renewals_come_every_third_of_a_lease_from_the_first_tick() {
    let mut book = LeaseBook::default();
    book.hold(1, &lease("a", 30_000));
    book.hold(2, &lease("b", 3_000));
    assert_eq!(book.due(100), None, "first sight: renewals scheduled");
    assert_eq!(book.due(1_099), None);
    let (body, releases) = book.due(1_100).unwrap();
    assert!(releases.is_empty());
    assert_eq!(parsed(&body).renew, ["b"]);
    let (body, _) = book.due(10_100).unwrap();
    assert_eq!(parsed(&body).renew, ["a", "b"]);
}

#[test]
fn one_call_carries_at_most_the_wire_bound_releases_first() {
    let mut book = LeaseBook::default();
    for serial in 0..(MAX_LEASES_PER_CALL as u64 + 10) {
        book.hold(serial, &lease(&format!("l{serial}"), 3_000));
    }
    assert_eq!(book.due(0), None);
    for serial in 0..5 {
        book.end(serial);
    }
    let (body, releases) = book.due(1_000).unwrap();
    let request = parsed(&body);
    assert_eq!(releases.len(), 5);
    assert_eq!(
        request.release.len() + request.renew.len(),
        MAX_LEASES_PER_CALL
    );
    // The rest of the renewals go on the next tick.
    let (body, _) = book.due(1_000).unwrap();
    assert_eq!(parsed(&body).renew.len(), 10);
}

#[test]
fn undelivered_releases_are_retried_then_dropped() {
    let mut book = LeaseBook::default();
    book.orphan(&lease("a", 3000));
    for attempt in 0..MAX_RELEASE_ATTEMPTS {
        let (_, releases) = book.due(0).unwrap();
        assert_eq!(releases.len(), 1, "attempt {attempt}");
        book.sent(Some(u32::from(attempt)), releases);
        book.answered(u32::from(attempt), false);
    }
    assert!(book.is_idle());
    // A refused dispatch counts as an attempt too.
    book.orphan(&lease("b", 3000));
    let (_, releases) = book.due(0).unwrap();
    book.sent(None, releases);
    assert_eq!(book.pending_releases(), 1);
    // An answer for a call the book does not know changes nothing.
    book.answered(99, false);
    assert_eq!(book.pending_releases(), 1);
}
