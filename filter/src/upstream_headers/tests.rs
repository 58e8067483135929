use super::*;
use crate::response::{HEADER_LIMIT, HEADER_REMAINING, HEADER_RESET, HEADER_TIER};

/// The response of an upstream with a limiter of its own.
const UPSTREAM: [&[u8]; 11] = [
    b":status",
    b"content-type",
    b"x-ratelimit-limit",
    b"x-ratelimit-remaining",
    b"x-ratelimit-reset",
    b"x-ratelimit-tier",
    b"x-ratelimit-used",
    b"ratelimit",
    b"ratelimit-policy",
    b"ratelimit-policy",
    b"retry-after",
];

fn ours(names: &[&'static str]) -> Vec<(&'static str, String)> {
    names.iter().map(|n| (*n, "1".to_string())).collect()
}

fn text(names: Vec<&[u8]>) -> Vec<String> {
    names
        .into_iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

#[test]
fn with_our_four_headers_only_the_upstreams_others_go() {
    let all = ours(&[HEADER_LIMIT, HEADER_REMAINING, HEADER_RESET, HEADER_TIER]);
    assert_eq!(text(to_remove(UPSTREAM, &all)), ["x-ratelimit-used"]);
}

#[test]
fn with_only_the_tier_the_other_three_go() {
    assert_eq!(
        text(to_remove(UPSTREAM, &ours(&[HEADER_TIER]))),
        [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "x-ratelimit-used"
        ]
    );
}

#[test]
fn without_headers_of_ours_every_x_ratelimit_header_goes() {
    assert_eq!(
        text(to_remove(UPSTREAM, &[])),
        [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "x-ratelimit-tier",
            "x-ratelimit-used"
        ]
    );
}

#[test]
fn ietf_fields_and_retry_after_always_stay() {
    for kept in [
        b"ratelimit".as_slice(),
        b"ratelimit-policy",
        b"retry-after",
        b"x-ratelimit",
        b"x-ratelimits-limit",
        b"ratelimit-limit",
        b"x-rate-limit-limit",
    ] {
        assert!(to_remove([kept], &[]).is_empty(), "{kept:?}");
    }
}

#[test]
fn names_match_whatever_their_case_and_repeated_lines_go_once() {
    let present: [&[u8]; 4] = [
        b"X-RateLimit-Used",
        b"x-ratelimit-used",
        b"X-RATELIMIT-TIER",
        b"x-ratelimit-\xff",
    ];
    let removed = to_remove(present, &ours(&[HEADER_TIER]));
    assert_eq!(
        removed,
        [
            b"X-RateLimit-Used".as_slice(),
            b"x-ratelimit-\xff".as_slice()
        ]
    );
}
