use super::*;

#[test]
fn escapes_quotes_and_controls() {
    assert_eq!(serde_json_escape("a\"b\\c\n"), "a\\\"b\\\\c\\u000a");
}
