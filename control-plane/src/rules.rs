//! Endpoint rules: path normalisation and longest-match lookup (SPEC §2 "Endpoint rules", §5).
//!
//! Every request path is normalised once and then matched against the tier's rules. Rules are
//! written in normalised form (validation enforces it), so matching is plain string work.

use std::collections::HashMap;

/// Normalised path used for rule matching and endpoint keys.
///
/// Steps, in order:
/// 1. drop the query (from the first `?`) and the fragment (from the first `#`);
/// 2. percent-decode escapes of unreserved characters (ALPHA / DIGIT / `-` `.` `_` `~`) and
///    uppercase the hex of every other escape, so `%2f` and `%2F` are one path while `%2F`
///    stays distinct from `/`; invalid escapes (`%zz`, a truncated `%4`) are kept literally;
/// 3. collapse runs of `/` and resolve `.` / `..` segments (RFC 3986 `remove_dot_segments`;
///    `..` above the root stays at the root). A decoded `%2E` counts as a dot;
/// 4. keep a trailing slash: `/x` and `/x/` are different paths.
///
/// Input that is empty or does not start with `/` is treated as if it did. Runs in linear time
/// and never panics.
///
/// One subtlety keeps the function idempotent: a literal `%` from an invalid escape followed by
/// an escape that decodes to a hex digit (`%%36%31`) would form a new, valid escape once decoded
/// (`%61`), which a second pass would decode again. Such escapes are kept encoded instead.
pub fn normalize_path(raw: &str) -> String {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let decoded = decode_unreserved(&raw[..end]);
    remove_dot_segments(&decoded)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    // Byte offset in `out` of the most recent literal `%` (one that starts no valid escape).
    let mut stray: Option<usize> = None;
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        // Everything before `i` is copied verbatim; slicing at a `%` (ASCII) is always on a
        // character boundary, so multi-byte UTF-8 sequences pass through untouched.
        out.push_str(&path[run_start..i]);
        let hi = bytes.get(i + 1).copied().and_then(hex_value);
        let lo = bytes.get(i + 2).copied().and_then(hex_value);
        match (hi, lo) {
            (Some(hi), Some(lo)) => {
                let value = (hi << 4) | lo;
                if is_unreserved(value)
                    && !(value.is_ascii_hexdigit() && completes_stray_escape(&out, stray))
                {
                    out.push(char::from(value));
                } else {
                    out.push('%');
                    out.push(char::from(UPPER_HEX[usize::from(hi)]));
                    out.push(char::from(UPPER_HEX[usize::from(lo)]));
                }
                i += 3;
            }
            _ => {
                stray = Some(out.len());
                out.push('%');
                i += 1;
            }
        }
        run_start = i;
    }
    out.push_str(&path[run_start..]);
    out
}

/// Whether appending one hex digit to `out` would turn the stray `%` into a valid escape.
fn completes_stray_escape(out: &str, stray: Option<usize>) -> bool {
    let Some(pos) = stray else { return false };
    let tail = &out.as_bytes()[pos..];
    match tail.len() {
        1 => true,
        2 => tail[1].is_ascii_hexdigit(),
        _ => false,
    }
}

fn remove_dot_segments(path: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    // A leading empty piece (path starts with `/`) or its absence (relative input) both mean
    // "start at the root", which is exactly what an empty stack represents.
    for segment in path.split('/') {
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                stack.pop();
                trailing_slash = true;
            }
            _ => {
                stack.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for segment in &stack {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

/// Validates a rule pattern as written in config; `Err(message)` explains why.
///
/// A pattern is an exact normalised path (`/api/v1/request`) or a prefix rule `P/*` matching
/// every path below `P/`. Patterns must already be normalised: anything else could never
/// match a normalised request path, so the message names the form to write instead.
pub fn check_rule_pattern(pattern: &str) -> Result<(), String> {
    if !pattern.starts_with('/') {
        return Err("must start with '/'".to_string());
    }
    if let Some(c) = pattern
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "must not contain whitespace or control characters (found {c:?})"
        ));
    }
    if pattern.contains('?') {
        return Err("must not contain '?': query strings are not part of the matched path".into());
    }
    if pattern.contains('#') {
        return Err("must not contain '#': fragments are not part of the matched path".into());
    }
    let (literal, is_prefix) = match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') => (prefix, true),
        _ => (pattern, false),
    };
    if literal.contains('*') {
        return Err("'*' is only allowed as a final \"/*\" (prefix rule)".to_string());
    }
    let normalized = normalize_path(literal);
    if normalized != literal {
        let suggestion = if is_prefix {
            format!("{normalized}*")
        } else {
            normalized
        };
        return Err(format!(
            "is not in normalised form and could never match; write \"{suggestion}\""
        ));
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct Rule {
    pattern: String,
    limit: u64,
}

impl Rule {
    /// The literal a path must equal (exact rule) or start with (prefix rule, trailing `/`
    /// included).
    fn literal(&self) -> &str {
        self.pattern.strip_suffix('*').unwrap_or(&self.pattern)
    }
}

/// A tier's endpoint rules, ready for per-request lookups.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    /// Every rule, in the order given (config order: the endpoint map is sorted).
    rules: Vec<Rule>,
    /// Exact path → index into `rules`.
    exact: HashMap<String, usize>,
    /// Indices of prefix rules, longest literal first, so the first hit is the longest.
    prefixes: Vec<usize>,
}

impl RuleSet {
    /// Builds a rule set from already validated `(pattern, limit)` pairs. A pattern ending in
    /// `/*` is a prefix rule; anything else is an exact path.
    pub fn new(rules: impl IntoIterator<Item = (String, u64)>) -> RuleSet {
        let mut set = RuleSet::default();
        for (pattern, limit) in rules {
            let index = set.rules.len();
            if pattern.ends_with("/*") {
                set.prefixes.push(index);
            } else {
                set.exact.insert(pattern.clone(), index);
            }
            set.rules.push(Rule { pattern, limit });
        }
        let rules = &set.rules;
        set.prefixes
            .sort_by_key(|&i| std::cmp::Reverse(rules[i].literal().len()));
        set
    }

    /// Longest matching rule for a normalised path: returns (rule pattern as configured, limit).
    ///
    /// An exact rule matches only its own path; `P/*` matches every path starting with `P/`.
    /// Length is that of the matched literal, and an exact hit always wins: it is as long as
    /// the whole path, which no prefix literal can exceed, and ties go to the exact rule.
    pub fn longest_match(&self, normalized: &str) -> Option<(&str, u64)> {
        let index = self.exact.get(normalized).copied().or_else(|| {
            self.prefixes
                .iter()
                .copied()
                .find(|&i| normalized.starts_with(self.rules[i].literal()))
        })?;
        let rule = &self.rules[index];
        Some((rule.pattern.as_str(), rule.limit))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every pattern, in the order the rules were given.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.pattern.as_str())
    }

    /// Every rule with its limit, in configuration order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, u64)> {
        self.rules.iter().map(|r| (r.pattern.as_str(), r.limit))
    }
}

#[cfg(test)]
mod tests {
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
    fn encoded_slash_is_kept_and_uppercased() {
        assert_eq!(normalize_path("/a%2Fb"), "/a%2Fb");
        assert_eq!(normalize_path("/a%2fb"), "/a%2Fb");
        assert_ne!(normalize_path("/a%2Fb"), normalize_path("/a/b"));
    }

    #[test]
    fn unreserved_escapes_are_decoded() {
        assert_eq!(normalize_path("/%7Euser/%41%2d%5F%2e"), "/~user/A-_.");
    }

    #[test]
    fn reserved_and_non_ascii_escapes_stay_encoded() {
        assert_eq!(normalize_path("/a%3fb%c3%a9"), "/a%3Fb%C3%A9");
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
            "/a%2Fb",
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
            ("/api/%2fv1", "write \"/api/%2Fv1\""),
            ("/api//*", "write \"/api/*\""),
            ("/api/../*", "write \"/*\""),
            ("/api/%41/*", "write \"/api/A/*\""),
        ];
        for (pattern, fragment) in cases {
            let err = check_rule_pattern(pattern).expect_err(pattern);
            assert!(err.contains(fragment), "{pattern:?}: {err}");
        }
    }

    fn rules(pairs: &[(&str, u64)]) -> RuleSet {
        RuleSet::new(pairs.iter().map(|&(p, l)| (p.to_string(), l)))
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
        for path in ["/", "/a", "/a/b/", "/%2F"] {
            assert_eq!(set.longest_match(path), Some(("/*", 7)), "{path}");
        }
    }

    #[test]
    fn empty_set_and_patterns() {
        let empty = RuleSet::default();
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
}
