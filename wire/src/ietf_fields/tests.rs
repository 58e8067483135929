use super::*;

use sfv::{BareItem, List, ListEntry, Parser};

fn policy(name: &str, limit: u64, window: u64) -> PolicyReport {
    PolicyReport {
        name: name.into(),
        limit,
        window,
    }
}

fn counter(policy: Option<&str>, remaining: u64) -> CounterReport {
    CounterReport {
        limit: 100,
        remaining,
        reset: 1_700_000_060,
        retry_after: None,
        window: 60,
        endpoint: "/api/v1/search".into(),
        reset_at: None,
        policy: policy.map(str::to_owned),
        reset_after: Some(37),
        units: false,
    }
}

/// A field value parsed as an RFC 9651 List: per member, its sf-string and its integer
/// parameters in order. Panics on anything else.
fn parse(value: &str) -> Vec<(String, Vec<(String, i64)>)> {
    let list: List = Parser::new(value)
        .parse()
        .unwrap_or_else(|e| panic!("{value:?} is not a structured List: {e}"));
    list.into_iter()
        .map(|entry| {
            let ListEntry::Item(item) = entry else {
                panic!("{value:?}: an inner list");
            };
            let BareItem::String(name) = item.bare_item else {
                panic!("{value:?}: an item that is not a string");
            };
            let params = item
                .params
                .into_iter()
                .map(|(key, value)| {
                    let n = value
                        .as_integer()
                        .unwrap_or_else(|| panic!("{key:?} is not an integer"));
                    (key.as_str().to_owned(), i64::from(n))
                })
                .collect();
            (name.as_str().to_owned(), params)
        })
        .collect()
}

fn item(name: &str, params: &[(&str, i64)]) -> (String, Vec<(String, i64)>) {
    (
        name.to_owned(),
        params.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
    )
}

fn field<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn one_window() {
    let headers = fields(
        &[policy("free-60s", 100, 60)],
        Some(&counter(Some("free-60s"), 49)),
        Some(37),
    );
    assert_eq!(
        headers.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [HEADER_RATELIMIT_POLICY, HEADER_RATELIMIT]
    );
    assert_eq!(
        parse(field(&headers, HEADER_RATELIMIT_POLICY).unwrap()),
        [item("free-60s", &[("q", 100), ("w", 60)])]
    );
    assert_eq!(
        parse(field(&headers, HEADER_RATELIMIT).unwrap()),
        [item("free-60s", &[("r", 49), ("t", 37)])]
    );
}

#[test]
fn several_windows_keep_their_order_and_the_binding_one_is_named() {
    let policies = [
        policy("free-1s", 10, 1),
        policy("free-60s", 100, 60),
        policy("free-/api/v1/search-60s", 30, 60),
    ];
    let headers = fields(
        &policies,
        Some(&counter(Some("free-/api/v1/search-60s"), 0)),
        Some(12),
    );
    assert_eq!(
        parse(field(&headers, HEADER_RATELIMIT_POLICY).unwrap()),
        [
            item("free-1s", &[("q", 10), ("w", 1)]),
            item("free-60s", &[("q", 100), ("w", 60)]),
            item("free-/api/v1/search-60s", &[("q", 30), ("w", 60)]),
        ]
    );
    assert_eq!(
        parse(field(&headers, HEADER_RATELIMIT).unwrap()),
        [item("free-/api/v1/search-60s", &[("r", 0), ("t", 12)])]
    );
    // The exact text, as the draft writes it.
    assert_eq!(
        field(&headers, HEADER_RATELIMIT_POLICY),
        Some(r#""free-1s";q=10;w=1, "free-60s";q=100;w=60, "free-/api/v1/search-60s";q=30;w=60"#)
    );
}

#[test]
fn without_policies_there_are_no_fields() {
    // A control plane of the first release names no policies, even with a counter.
    assert_eq!(
        fields(&[], Some(&counter(Some("free-60s"), 5)), Some(3)),
        vec![]
    );
    assert_eq!(fields(&[], None, None), vec![]);
}

#[test]
fn without_a_binding_policy_only_the_policies_are_sent() {
    let policies = [policy("free-60s", 100, 60)];
    for counter in [None, Some(counter(None, 5))] {
        let headers = fields(&policies, counter.as_ref(), Some(3));
        assert_eq!(
            headers.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            [HEADER_RATELIMIT_POLICY]
        );
    }
}

#[test]
fn an_unknown_reset_leaves_out_t_only() {
    let headers = fields(
        &[policy("free-60s", 100, 60)],
        Some(&counter(Some("free-60s"), 5)),
        None,
    );
    assert_eq!(
        parse(field(&headers, HEADER_RATELIMIT).unwrap()),
        [item("free-60s", &[("r", 5)])]
    );
}

#[test]
fn odd_ascii_names_are_escaped_and_read_back_as_sent() {
    for name in [
        r#"free-/api/v1/"quoted"-1s"#,
        r"free-/api\v1\x-60s",
        r#"\"#,
        r#"""#,
        "",
        "tier with spaces-/a,b;c=d-60s",
        "free-/api/v1/%C3%A9t%C3%A9-60s",
        "~!@#$%^&*()_+`{}|:<>?[]'",
    ] {
        let headers = fields(
            &[policy(name, 7, 60), policy("other-1s", 1, 1)],
            Some(&counter(Some(name), 6)),
            Some(2),
        );
        assert_eq!(
            parse(field(&headers, HEADER_RATELIMIT_POLICY).unwrap()),
            [
                item(name, &[("q", 7), ("w", 60)]),
                item("other-1s", &[("q", 1), ("w", 1)])
            ],
            "{name:?}"
        );
        assert_eq!(
            parse(field(&headers, HEADER_RATELIMIT).unwrap()),
            [item(name, &[("r", 6), ("t", 2)])],
            "{name:?}"
        );
    }
    assert_eq!(
        policy_field(&[policy(r#"a"b\c"#, 1, 1)]).as_deref(),
        Some(r#""a\"b\\c";q=1;w=1"#)
    );
}

#[test]
fn what_a_structured_field_cannot_carry_is_left_out() {
    // A name outside printable ASCII (the control plane never forms one) or a number beyond
    // 15 digits: that item goes, the others stay.
    let policies = [
        policy("tab\there-60s", 1, 60),
        policy("été-60s", 1, 60),
        policy("nl\r\nset-cookie: x-60s", 1, 60),
        policy("huge-60s", MAX_SF_INTEGER + 1, 60),
        policy("ok-60s", MAX_SF_INTEGER, 60),
    ];
    let value = policy_field(&policies).unwrap();
    assert_eq!(
        parse(&value),
        [item(
            "ok-60s",
            &[("q", i64::try_from(MAX_SF_INTEGER).unwrap()), ("w", 60)]
        )]
    );
    assert_eq!(policy_field(&policies[..4]), None);
    let headers = fields(
        &policies[..3],
        Some(&counter(Some("tab\there-60s"), 1)),
        Some(1),
    );
    assert_eq!(headers, vec![], "nothing writable, no field");
    assert_eq!(ratelimit_field("ok", MAX_SF_INTEGER + 1, Some(1)), None);
    assert_eq!(ratelimit_field("ok", 1, Some(MAX_SF_INTEGER + 1)), None);
    assert_eq!(
        ratelimit_field("ok", 0, Some(0)).as_deref(),
        Some(r#""ok";r=0;t=0"#)
    );
}
