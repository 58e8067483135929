//! How a fuzz input (plain bytes) is cut into the fields of a structured input.
//!
//! The same decoding serves libFuzzer and the proptest fallback, so a corpus file means the
//! same thing to both, and corpus files stay readable and easy to write by hand: fields are
//! lines (or records), not length prefixes that a single mutation would misalign.
//!
//! A field starting with `~` followed by one byte `n` expands to the rest of the field
//! repeated `n * 64 + 1` times (capped at [`MAX_EXPANDED`] bytes). That lets small inputs
//! reach the size limits (16 KiB decision bodies, 8 KiB `Authorization` values) that the
//! interesting edge cases sit at.

use std::borrow::Cow;

/// Largest field an expansion produces.
pub const MAX_EXPANDED: usize = 24 * 1024;

/// Splits `data` at every `sep` byte (a trailing separator yields a last empty field).
pub fn fields(data: &[u8], sep: u8) -> Vec<&[u8]> {
    data.split(|&b| b == sep).collect()
}

/// Splits off the first `n` fields separated by `sep`; the remainder (separators included) is
/// returned as is. Missing fields are `None`.
pub fn split_head(data: &[u8], sep: u8, n: usize) -> (Vec<Option<&[u8]>>, &[u8]) {
    let mut head = Vec::with_capacity(n);
    let mut rest = Some(data);
    for _ in 0..n {
        match rest {
            Some(r) => match r.iter().position(|&b| b == sep) {
                Some(i) => {
                    head.push(Some(&r[..i]));
                    rest = Some(&r[i + 1..]);
                }
                None => {
                    head.push(Some(r));
                    rest = None;
                }
            },
            None => head.push(None),
        }
    }
    (head, rest.unwrap_or_default())
}

/// The field, or its expansion when it starts with `~` and a count byte.
pub fn expand(field: &[u8]) -> Cow<'_, [u8]> {
    match field {
        [b'~', count, pattern @ ..] if !pattern.is_empty() => {
            let times = usize::from(*count) * 64 + 1;
            let total = (pattern.len() * times).min(MAX_EXPANDED);
            Cow::Owned(pattern.iter().copied().cycle().take(total).collect())
        }
        _ => Cow::Borrowed(field),
    }
}

/// Lossy UTF-8, as the filter does with path and method bytes.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_rest() {
        let (head, rest) = split_head(b"a\nb\nc\nd", b'\n', 2);
        assert_eq!(head, vec![Some(&b"a"[..]), Some(&b"b"[..])]);
        assert_eq!(rest, b"c\nd");
        let (head, rest) = split_head(b"a", b'\n', 3);
        assert_eq!(head, vec![Some(&b"a"[..]), None, None]);
        assert_eq!(rest, b"");
    }

    #[test]
    fn expansion() {
        assert_eq!(&*expand(b"abc"), b"abc");
        assert_eq!(&*expand(b"~"), b"~");
        assert_eq!(&*expand(b"~\x00"), b"~\x00");
        assert_eq!(&*expand(b"~\x00ab"), b"ab");
        assert_eq!(expand(b"~\x01ab").len(), 130);
        assert_eq!(expand(b"~\xffabcdef").len(), MAX_EXPANDED);
    }
}
