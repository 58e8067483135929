use super::*;

fn with(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append(header::IF_MATCH, HeaderValue::from_str(v).expect("value"));
    }
    headers
}

fn parsed(values: &[&str]) -> Result<Precondition, IfMatchError> {
    if_match(&with(values), 7)
}

#[test]
fn the_etag_is_the_quoted_version() {
    assert_eq!(etag(42), "\"42\"");
}

#[test]
fn no_header_and_a_star_are_unconditional() {
    assert_eq!(parsed(&[]), Ok(Precondition::None));
    assert_eq!(parsed(&["*"]), Ok(Precondition::None));
    assert_eq!(parsed(&[" * "]), Ok(Precondition::None));
}

#[test]
fn strong_tags_name_versions() {
    assert_eq!(parsed(&["\"7\""]), Ok(Precondition::VersionIn(vec![7])));
    assert_eq!(
        parsed(&["\"3\", \"7\"", "\"9\""]),
        Ok(Precondition::VersionIn(vec![3, 7, 9]))
    );
    assert_eq!(
        parsed(&["\"3\",\"7\""]),
        Ok(Precondition::VersionIn(vec![3, 7]))
    );
}

#[test]
fn weak_and_foreign_tags_match_nothing() {
    for value in [
        "W/\"7\"",
        "\"abc\"",
        "\"\"",
        "\"7a\"",
        "\"99999999999999999999999\"",
    ] {
        assert_eq!(
            parsed(&[value]),
            Ok(Precondition::VersionIn(vec![])),
            "{value}"
        );
    }
    assert_eq!(
        parsed(&["W/\"7\", \"8\""]),
        Ok(Precondition::VersionIn(vec![8]))
    );
    // An opaque tag may hold a comma.
    assert_eq!(
        parsed(&["\"a,b\", \"8\""]),
        Ok(Precondition::VersionIn(vec![8]))
    );
}

#[test]
fn malformed_values_are_errors_that_show_the_form() {
    for value in ["7", "\"7", "\"7\"\"8\"", "*, \"7\"", "", " , "] {
        let err = parsed(&[value]).expect_err(value);
        assert!(err.to_string().contains("\"7\""), "{err}");
    }
}
