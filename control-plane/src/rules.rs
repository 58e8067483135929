//! Endpoint rules: path normalisation and longest-match lookup (docs/PRODUCT.md §2 "Endpoint rules", §5).
//!
//! Every request path is normalised once and then matched against the tier's rules. Rules are
//! written in normalised form (validation enforces it), so matching is plain string work.

use std::collections::HashMap;

/// Normalised path used for rule matching and endpoint keys.
///
/// Steps, in order:
/// 1. drop the query (from the first `?`) and the fragment (from the first `#`);
/// 2. read `%2F`, `%5C` (either case) and a literal `\` as `/`; percent-decode escapes of
///    unreserved characters (ALPHA / DIGIT / `-` `.` `_` `~`) and uppercase the hex of every
///    other escape, so `%3f` and `%3F` are one path; invalid escapes (`%zz`, a truncated `%4`)
///    are kept literally. Decoding happens once: `%252F` stays `%252F`;
/// 3. collapse runs of `/` and resolve `.` / `..` segments (RFC 3986 `remove_dot_segments`;
///    `..` above the root stays at the root). A decoded `%2E` counts as a dot;
/// 4. keep a trailing slash: `/x` and `/x/` are different paths.
///
/// Escaped slashes and backslashes are slashes here because upstream servers disagree on
/// them (many decode `%2F` before routing, some read `\` as `/`): a rule must not be
/// dodged by a spelling the upstream resolves to the rule's path. Where an upstream does
/// tell them apart, the request is counted under the rule of the path with plain slashes:
/// an extra count for that upstream, never a missed one. The shipped Envoy configurations redirect such requests before the filter
/// (docs/INTEGRATION.md), so there upstream and rules see the same path.
///
/// Input that is empty or does not start with `/` is treated as if it did. Runs in linear time
/// and never panics.
///
/// One subtlety keeps the function idempotent: a literal `%` from an invalid escape followed by
/// an escape that decodes to a hex digit (`%%36%31`) would form a new, valid escape once decoded
/// (`%61`), which a second pass would decode again. Such escapes are kept encoded instead.
pub fn normalize_path(raw: &str) -> String {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let decoded = decode_escapes(&raw[..end]);
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

/// `/` and `\`: both separate segments for the purpose of rule matching.
fn is_separator(b: u8) -> bool {
    matches!(b, b'/' | b'\\')
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

fn decode_escapes(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    // Byte offset in `out` of the most recent literal `%` (one that starts no valid escape).
    let mut stray: Option<usize> = None;
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            out.push_str(&path[run_start..i]);
            out.push('/');
            i += 1;
            run_start = i;
            continue;
        }
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        // Everything before `i` is copied verbatim; slicing at a `%` or `\` (ASCII) is always
        // on a character boundary, so multi-byte UTF-8 sequences pass through untouched.
        out.push_str(&path[run_start..i]);
        let hi = bytes.get(i + 1).copied().and_then(hex_value);
        let lo = bytes.get(i + 2).copied().and_then(hex_value);
        match (hi, lo) {
            (Some(hi), Some(lo)) => {
                let value = (hi << 4) | lo;
                if is_separator(value) {
                    out.push('/');
                } else if is_unreserved(value)
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
struct Rule<T> {
    pattern: String,
    value: T,
}

impl<T> Rule<T> {
    /// The literal a path must equal (exact rule) or start with (prefix rule, trailing `/`
    /// included).
    fn literal(&self) -> &str {
        self.pattern.strip_suffix('*').unwrap_or(&self.pattern)
    }
}

/// A tier's endpoint rules, ready for per-request lookups. `T` is what a rule carries (its
/// windows, in the configuration).
#[derive(Clone, Debug)]
pub struct RuleSet<T> {
    /// Every rule, in the order given (config order: the endpoint map is sorted).
    rules: Vec<Rule<T>>,
    /// Exact path → index into `rules`.
    exact: HashMap<String, usize>,
    /// Indices of prefix rules, longest literal first, so the first hit is the longest.
    prefixes: Vec<usize>,
}

impl<T> Default for RuleSet<T> {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            exact: HashMap::new(),
            prefixes: Vec::new(),
        }
    }
}

impl<T> RuleSet<T> {
    /// Builds a rule set from already validated `(pattern, value)` pairs. A pattern ending in
    /// `/*` is a prefix rule; anything else is an exact path.
    pub fn new(rules: impl IntoIterator<Item = (String, T)>) -> RuleSet<T> {
        let mut set = RuleSet::default();
        for (pattern, value) in rules {
            let index = set.rules.len();
            if pattern.ends_with("/*") {
                set.prefixes.push(index);
            } else {
                set.exact.insert(pattern.clone(), index);
            }
            set.rules.push(Rule { pattern, value });
        }
        let rules = &set.rules;
        set.prefixes
            .sort_by_key(|&i| std::cmp::Reverse(rules[i].literal().len()));
        set
    }

    /// Longest matching rule for a normalised path: returns (rule pattern as configured, its
    /// value).
    ///
    /// An exact rule matches only its own path; `P/*` matches every path starting with `P/`.
    /// Length is that of the matched literal, and an exact hit always wins: it is as long as
    /// the whole path, which no prefix literal can exceed, and ties go to the exact rule.
    pub fn longest_match(&self, normalized: &str) -> Option<(&str, &T)> {
        let index = self.exact.get(normalized).copied().or_else(|| {
            self.prefixes
                .iter()
                .copied()
                .find(|&i| normalized.starts_with(self.rules[i].literal()))
        })?;
        let rule = &self.rules[index];
        Some((rule.pattern.as_str(), &rule.value))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every pattern, in the order the rules were given.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.pattern.as_str())
    }

    /// Every rule with its value, in configuration order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &T)> {
        self.rules.iter().map(|r| (r.pattern.as_str(), &r.value))
    }
}

#[cfg(test)]
mod tests;
