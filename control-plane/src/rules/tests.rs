use super::*;
use proptest::prelude::*;

#[test]
fn brief_examples_normalise_to_the_same_path() {
    for raw in [
        "/api/v1/request",
        "/api/v1/request?x=1",
        "/api/v1//request",
        "/api/v1/./request",
        "/api/v1/foo/../request",
        "/api/%761/request",
        "//api/v1/request#frag",
    ] {
        assert_eq!(normalize_path(raw), "/api/v1/request", "input {raw:?}");
    }
}

#[test]
fn escaped_slashes_and_backslashes_are_slashes() {
    for raw in [
        "/api/v1%2Frequest",
        "/api/v1%2frequest",
        "/api/v1%5Crequest",
        "/api/v1%5crequest",
        "/api/v1\\request",
        "/api%2Fv1%2F%2Frequest",
        "/api\\v1/%5C%2F\\request",
        "/api/x%2F..%2Fv1%2Frequest",
        "%2Fapi/v1/request",
        "\\api/v1/request",
    ] {
        assert_eq!(normalize_path(raw), "/api/v1/request", "input {raw:?}");
    }
    assert_eq!(normalize_path("/x%2F"), "/x/");
    assert_eq!(normalize_path("/x\\"), "/x/");
}

#[test]
fn decoding_happens_once() {
    assert_eq!(normalize_path("/a%252Fb"), "/a%252Fb");
    assert_eq!(normalize_path("/a%255Cb"), "/a%255Cb");
    // A stray `%` and an escaped slash do not form a new escape.
    assert_eq!(normalize_path("/a%%2Fb"), "/a%/b");
    assert_eq!(normalize_path(&normalize_path("/a%%2Fb")), "/a%/b");
}

#[test]
fn unreserved_escapes_are_decoded() {
    assert_eq!(normalize_path("/%7Euser/%41%2d%5F%2e"), "/~user/A-_.");
}

#[test]
fn reserved_and_non_ascii_escapes_stay_encoded() {
    assert_eq!(normalize_path("/a%3fb%c3%a9"), "/a%3Fb%C3%A9");
    assert_eq!(normalize_path("/a%2e%2E%25%3A"), "/a..%25%3A");
    assert_eq!(normalize_path("/caf\u{e9}"), "/caf\u{e9}");
}

#[test]
fn trailing_slash_is_kept() {
    assert_eq!(normalize_path("/x/"), "/x/");
    assert_eq!(normalize_path("/x"), "/x");
    assert_eq!(normalize_path("/x//"), "/x/");
    assert_eq!(normalize_path("/x/."), "/x/");
    assert_eq!(normalize_path("/x/y/.."), "/x/");
}

#[test]
fn dot_segments_are_resolved() {
    assert_eq!(normalize_path("/a/b/./c/../d"), "/a/b/d");
    assert_eq!(normalize_path("/a/%2E%2E/b"), "/b");
    assert_eq!(normalize_path("/a/.%2e/b"), "/b");
    assert_eq!(normalize_path("/a/%2E/b"), "/a/b");
    // Not dot segments: more dots, or dots with other characters.
    assert_eq!(normalize_path("/a/.../b/.c/d."), "/a/.../b/.c/d.");
}

#[test]
fn dot_dot_above_the_root_stays_at_the_root() {
    assert_eq!(normalize_path("/../../a"), "/a");
    assert_eq!(normalize_path("/.."), "/");
    assert_eq!(normalize_path("/a/../../.."), "/");
}

#[test]
fn invalid_escapes_stay_literal() {
    assert_eq!(normalize_path("/a%zz"), "/a%zz");
    assert_eq!(normalize_path("/a%4"), "/a%4");
    assert_eq!(normalize_path("/a%"), "/a%");
    assert_eq!(normalize_path("/a%%4A"), "/a%J");
    assert_eq!(normalize_path("/a%%41"), "/a%%41");
}

#[test]
fn stray_percent_never_forms_a_new_escape() {
    let once = normalize_path("/%%36%31");
    assert_eq!(once, "/%%361");
    assert_eq!(normalize_path(&once), once);
    let once = normalize_path("/%4%31");
    assert_eq!(once, "/%4%31");
    assert_eq!(normalize_path(&once), once);
}

#[test]
fn empty_and_relative_inputs_are_rooted() {
    assert_eq!(normalize_path(""), "/");
    assert_eq!(normalize_path("?q=1"), "/");
    assert_eq!(normalize_path("api/x"), "/api/x");
    assert_eq!(normalize_path("*"), "/*");
    assert_eq!(normalize_path("#"), "/");
}

#[test]
fn fragment_before_query_cuts_there() {
    assert_eq!(normalize_path("/a#b?c"), "/a");
    assert_eq!(normalize_path("/a?b#c"), "/a");
}

#[test]
fn very_long_inputs_are_handled() {
    let slashes = "/".repeat(1_000_000);
    assert_eq!(normalize_path(&slashes), "/");
    let dots = "/..".repeat(300_000);
    assert_eq!(normalize_path(&dots), "/");
    let segments = "/a".repeat(300_000);
    assert_eq!(normalize_path(&segments), segments);
    let escapes = "%2e%".repeat(200_000);
    let once = normalize_path(&escapes);
    assert_eq!(normalize_path(&once), once);
}

#[test]
fn rule_patterns_accepted() {
    for p in [
        "/",
        "/*",
        "/api/v1/request",
        "/api/v1/admin/*",
        "/api/v1/x/",
        "/a%3Fb",
        "/a%zz",
    ] {
        assert_eq!(check_rule_pattern(p), Ok(()), "{p}");
    }
}

#[test]
fn rule_patterns_rejected() {
    let cases = [
        ("", "must start with '/'"),
        ("api/v1", "must start with '/'"),
        ("/api v1", "whitespace"),
        ("/api\tv1", "whitespace"),
        ("/api\u{1}", "control"),
        ("/api?x=1", "'?'"),
        ("/api#x", "'#'"),
        ("/api/*/x", "'*' is only allowed"),
        ("/api*", "'*' is only allowed"),
        ("/api/**", "'*' is only allowed"),
        ("*", "must start with '/'"),
        ("/api//v1", "write \"/api/v1\""),
        ("/api/./v1", "write \"/api/v1\""),
        ("/api/../v1", "write \"/v1\""),
        ("/api/%7Ev1", "write \"/api/~v1\""),
        ("/api/%2fv1", "write \"/api/v1\""),
        ("/a%2Fb", "write \"/a/b\""),
        ("/a%5cb", "write \"/a/b\""),
        ("/a\\b", "write \"/a/b\""),
        ("/a%3fb", "write \"/a%3Fb\""),
        ("/api//*", "write \"/api/*\""),
        ("/api/../*", "write \"/*\""),
        ("/api/%41/*", "write \"/api/A/*\""),
    ];
    for (pattern, fragment) in cases {
        let err = check_rule_pattern(pattern).expect_err(pattern);
        assert!(err.contains(fragment), "{pattern:?}: {err}");
    }
}

fn rules(pairs: &[(&str, u64)]) -> Rules {
    Rules(RuleSet::new(pairs.iter().map(|&(p, l)| (p.to_string(), l))))
}

/// A rule set whose lookups answer with the value copied out, for short assertions.
struct Rules(RuleSet<u64>);

impl Rules {
    fn longest_match(&self, path: &str) -> Option<(&str, u64)> {
        self.0.longest_match(path).map(|(p, &l)| (p, l))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn patterns(&self) -> impl Iterator<Item = &str> {
        self.0.patterns()
    }
}

#[test]
fn exact_rules_match_only_their_path() {
    let set = rules(&[("/api/v1/request", 50)]);
    assert_eq!(
        set.longest_match("/api/v1/request"),
        Some(("/api/v1/request", 50))
    );
    assert_eq!(set.longest_match("/api/v1/request/x"), None);
    assert_eq!(set.longest_match("/api/v1/requests"), None);
}

#[test]
fn x_and_x_slash_differ() {
    let set = rules(&[("/x", 1), ("/x/", 2)]);
    assert_eq!(set.longest_match("/x"), Some(("/x", 1)));
    assert_eq!(set.longest_match("/x/"), Some(("/x/", 2)));
}

#[test]
fn prefix_rules_match_below_the_prefix_only() {
    let set = rules(&[("/api/v1/admin/*", 5)]);
    assert_eq!(
        set.longest_match("/api/v1/admin/"),
        Some(("/api/v1/admin/*", 5))
    );
    assert_eq!(
        set.longest_match("/api/v1/admin/x/y"),
        Some(("/api/v1/admin/*", 5))
    );
    assert_eq!(set.longest_match("/api/v1/admin"), None);
    assert_eq!(set.longest_match("/api/v1/administrator"), None);
}

#[test]
fn longest_rule_wins() {
    let set = rules(&[
        ("/*", 1),
        ("/api/*", 2),
        ("/api/v1/*", 3),
        ("/api/v1/admin", 4),
    ]);
    assert_eq!(set.longest_match("/api/v1/x"), Some(("/api/v1/*", 3)));
    assert_eq!(set.longest_match("/api/v2/x"), Some(("/api/*", 2)));
    assert_eq!(set.longest_match("/other"), Some(("/*", 1)));
    assert_eq!(set.longest_match("/"), Some(("/*", 1)));
    assert_eq!(
        set.longest_match("/api/v1/admin"),
        Some(("/api/v1/admin", 4))
    );
    // A prefix longer than an exact rule wins when both could apply.
    let set = rules(&[("/api/", 1), ("/api/v1/*", 2)]);
    assert_eq!(set.longest_match("/api/v1/x"), Some(("/api/v1/*", 2)));
}

#[test]
fn tie_goes_to_the_exact_rule() {
    let set = rules(&[("/api/*", 1), ("/api/", 2)]);
    assert_eq!(set.longest_match("/api/"), Some(("/api/", 2)));
    assert_eq!(set.longest_match("/api/x"), Some(("/api/*", 1)));
}

#[test]
fn catch_all_matches_everything() {
    let set = rules(&[("/*", 7)]);
    for path in ["/", "/a", "/a/b/", "/%3F"] {
        assert_eq!(set.longest_match(path), Some(("/*", 7)), "{path}");
    }
}

#[test]
fn empty_set_and_patterns() {
    let empty = Rules(RuleSet::default());
    assert!(empty.is_empty());
    assert_eq!(empty.longest_match("/"), None);
    let set = rules(&[("/b", 1), ("/a/*", 2)]);
    assert!(!set.is_empty());
    assert_eq!(set.patterns().collect::<Vec<_>>(), ["/b", "/a/*"]);
}

fn path_like() -> impl Strategy<Value = String> {
    // Weighted towards the characters that drive normalisation.
    let piece = prop_oneof![
        Just("/".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%".to_string()),
        Just("%2e".to_string()),
        Just("%2E".to_string()),
        Just("%2f".to_string()),
        Just("%2F".to_string()),
        Just("%5c".to_string()),
        Just("%5C".to_string()),
        Just("\\".to_string()),
        Just("%25".to_string()),
        Just("%3".to_string()),
        Just("?".to_string()),
        Just("#".to_string()),
        "[0-9a-fA-F]",
        "[a-z~_-]{1,3}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

fn check_normal_form(n: &str) {
    assert!(n.starts_with('/'), "{n:?}");
    assert!(!n.contains("//"), "{n:?}");
    assert!(!n.contains('?'), "{n:?}");
    assert!(!n.contains('#'), "{n:?}");
    assert!(
        n.split('/').all(|s| s != "." && s != ".."),
        "dot segment in {n:?}"
    );
    assert!(!n.contains('\\'), "backslash in {n:?}");
    let upper = n.to_ascii_uppercase();
    assert!(
        !upper.contains("%2F") && !upper.contains("%5C"),
        "escaped separator in {n:?}"
    );
}

proptest! {
    #[test]
    fn normalisation_is_idempotent_and_canonical(raw in path_like()) {
        let once = normalize_path(&raw);
        check_normal_form(&once);
        prop_assert_eq!(normalize_path(&once), once);
    }

    #[test]
    fn normalisation_never_panics_on_arbitrary_strings(raw in any::<String>()) {
        let once = normalize_path(&raw);
        check_normal_form(&once);
        prop_assert_eq!(normalize_path(&once), once);
    }

    #[test]
    fn lossy_strings_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let raw = String::from_utf8_lossy(&bytes);
        let once = normalize_path(&raw);
        check_normal_form(&once);
        prop_assert_eq!(normalize_path(&once), once);
    }

    #[test]
    fn normalised_paths_are_valid_exact_patterns(raw in path_like()) {
        let n = normalize_path(&raw);
        if !n.contains('*') && !n.chars().any(|c| c.is_whitespace() || c.is_control()) {
            prop_assert_eq!(check_rule_pattern(&n), Ok(()));
        }
    }
}

// Properties that pin what normalisation keeps, not only the shape of its output: a function
// mapping every path to "/" has that shape and is idempotent, and must still fail here.

/// A segment normalisation leaves alone: unreserved characters, neither `.` nor `..`.
fn plain_segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,7}"
}

/// A normalised path from plain segments, with or without a trailing slash.
fn clean_path() -> impl Strategy<Value = String> {
    (prop::collection::vec(plain_segment(), 0..6), any::<bool>()).prop_map(|(segments, slash)| {
        let mut path: String = segments.iter().map(|s| format!("/{s}")).collect();
        if path.is_empty() || slash {
            path.push('/');
        }
        path
    })
}

/// How a client may write a `/`: plainly, percent-encoded in either case, or as a backslash.
const SEPARATORS: [&str; 6] = ["/", "%2F", "%2f", "\\", "%5C", "%5c"];

/// One segment as a client may write it (the normal form, then the noisy form): extra
/// slashes before it, each in any spelling of a slash, a `./` or `other/../` detour, and some
/// characters percent-encoded in upper or lower case hex.
fn written_segment() -> impl Strategy<Value = (String, String)> {
    (
        plain_segment(),
        prop::collection::vec(0..SEPARATORS.len(), 1..4),
        0..3u8,
        plain_segment(),
        prop::collection::vec((any::<bool>(), any::<bool>()), 8),
    )
        .prop_map(|(segment, slashes, detour, other, encodings)| {
            let mut noisy: String = slashes.iter().map(|&i| SEPARATORS[i]).collect();
            match detour {
                1 => noisy.push_str("./"),
                2 => noisy.push_str(&format!("{other}/../")),
                _ => {}
            }
            for (c, &(encode, lower)) in segment.chars().zip(&encodings) {
                match (encode, lower) {
                    (false, _) => noisy.push(c),
                    (true, false) => noisy.push_str(&format!("%{:02X}", u32::from(c))),
                    (true, true) => noisy.push_str(&format!("%{:02x}", u32::from(c))),
                }
            }
            (format!("/{segment}"), noisy)
        })
}

/// A path and the same path as a client may write it, trailing slash, query and fragment
/// included.
fn path_and_a_spelling() -> impl Strategy<Value = (String, String)> {
    (
        prop::collection::vec(written_segment(), 0..6),
        any::<bool>(),
        0..3usize,
        0..3u8,
        "[a-z0-9=&/.%]{0,8}",
    )
        .prop_map(|(segments, slash, slash_form, suffix, extra)| {
            let mut clean: String = segments.iter().map(|(c, _)| c.as_str()).collect();
            let mut noisy: String = segments.iter().map(|(_, n)| n.as_str()).collect();
            if slash {
                noisy.push_str(["/", "//", "/."][slash_form]);
            }
            if clean.is_empty() || slash {
                clean.push('/');
            }
            match suffix {
                1 => noisy.push_str(&format!("?{extra}")),
                2 => noisy.push_str(&format!("#{extra}")),
                _ => {}
            }
            (clean, noisy)
        })
}

proptest! {
    #[test]
    fn a_normalised_path_is_left_as_it_is(path in clean_path()) {
        prop_assert_eq!(normalize_path(&path), path);
    }

    #[test]
    fn every_spelling_of_a_path_normalises_to_it((clean, noisy) in path_and_a_spelling()) {
        prop_assert_eq!(normalize_path(&noisy), clean, "written as {:?}", noisy);
    }

    #[test]
    fn different_paths_stay_different(a in clean_path(), b in clean_path()) {
        prop_assume!(a != b);
        prop_assert_ne!(normalize_path(&a), normalize_path(&b));
    }

    #[test]
    fn a_plain_segment_appended_is_kept(raw in path_like(), segment in plain_segment()) {
        let normalized = normalize_path(&raw);
        let base = normalized.strip_suffix('/').unwrap_or(&normalized);
        let longer = format!("{base}/{segment}");
        prop_assert_eq!(normalize_path(&longer), longer);
    }
}
