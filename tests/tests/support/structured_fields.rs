//! The IETF rate-limit fields (`RateLimit-Policy`, `RateLimit`) read the way a client reads
//! them: as RFC 9651 structured-field Lists, parsed by `sfv`, never by string matching.
//! Included with `#[path]` by the test files that need it (`sfv` is a dev-dependency).

#![allow(dead_code)]

use sfv::{BareItem, List, ListEntry, Parser};

/// One List member as the rate-limit fields use it: its sf-string (the policy's name) and its
/// integer parameters, in order.
pub type Member = (String, Vec<(String, i64)>);

/// A member, for comparisons.
pub fn member(name: &str, params: &[(&str, i64)]) -> Member {
    (
        name.to_owned(),
        params.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
    )
}

/// A List field given as its field lines, in order, combined the way HTTP combines repeated
/// lines of one field (RFC 9110: joined with commas). Panics (with the lines) when the result
/// is not a List of strings with integer parameters.
pub fn list<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Vec<Member> {
    let lines: Vec<&[u8]> = lines.into_iter().collect();
    let combined = lines.join(&b", "[..]);
    let shown = || {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>()
    };
    let parsed: List = Parser::new(&combined)
        .parse()
        .unwrap_or_else(|e| panic!("{:?} is not a structured-field List: {e}", shown()));
    parsed
        .into_iter()
        .map(|entry| {
            let ListEntry::Item(item) = entry else {
                panic!("{:?}: an inner list", shown());
            };
            let BareItem::String(name) = item.bare_item else {
                panic!("{:?}: a member that is not an sf-string", shown());
            };
            let params = item
                .params
                .into_iter()
                .map(|(key, value)| {
                    let n = value
                        .as_integer()
                        .unwrap_or_else(|| panic!("{:?}: {key:?} is not an integer", shown()));
                    (key.as_str().to_owned(), i64::from(n))
                })
                .collect();
            (name.as_str().to_owned(), params)
        })
        .collect()
}
