use super::*;

#[test]
fn without_a_current_secret_none_is_required() {
    assert!(matches!(DecisionSecrets::new(None, None), Ok(None)));
    assert!(matches!(DecisionSecrets::new(Some(""), None), Ok(None)));
    assert!(matches!(DecisionSecrets::new(Some(""), Some("")), Ok(None)));
}

#[test]
fn a_previous_secret_alone_is_refused_naming_both_variables() {
    for current in [None, Some("")] {
        let Err(err) = DecisionSecrets::new(current, Some("s3cret-old")) else {
            panic!("accepted a previous secret without a current one");
        };
        let text = err.to_string();
        assert!(
            text.contains("RATE_LIMIT_DECISION_SECRET_PREVIOUS"),
            "{text}"
        );
        assert!(text.contains("RATE_LIMIT_DECISION_SECRET "), "{text}");
        assert!(!text.contains("s3cret-old"), "{text}");
    }
}

fn secrets(current: &str, previous: Option<&str>) -> DecisionSecrets {
    match DecisionSecrets::new(Some(current), previous) {
        Ok(Some(secrets)) => secrets,
        _ => panic!("secrets refused"),
    }
}

#[test]
fn only_the_current_secret_passes_without_a_previous_one() {
    let s = secrets("new-secret", None);
    assert_eq!(s.check(b"new-secret"), SecretMatch::Current);
    for wrong in [
        &b""[..],
        b"new-secre",
        b"new-secretx",
        b"NEW-SECRET",
        b"old-secret",
    ] {
        assert_eq!(s.check(wrong), SecretMatch::Neither, "{wrong:?}");
    }
}

#[test]
fn the_previous_secret_passes_too_and_nothing_else() {
    let s = secrets("new-secret", Some("old"));
    assert_eq!(s.check(b"new-secret"), SecretMatch::Current);
    assert_eq!(s.check(b"old"), SecretMatch::Previous);
    for wrong in [&b""[..], b"ol", b"oldx", b"new-secretold", b"new-secret "] {
        assert_eq!(s.check(wrong), SecretMatch::Neither, "{wrong:?}");
    }
    // An empty previous value is unset.
    let s = secrets("new-secret", Some(""));
    assert_eq!(s.check(b""), SecretMatch::Neither);
}

#[test]
fn a_previous_secret_equal_to_the_current_one_counts_as_current() {
    let s = secrets("same", Some("same"));
    assert_eq!(s.check(b"same"), SecretMatch::Current);
}
