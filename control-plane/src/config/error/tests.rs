use super::*;

#[test]
fn display_prefixes_the_path_when_there_is_one() {
    let e = ConfigError::invalid("tiers[1].endpoints./api/v1/x", "must be > 0");
    assert_eq!(e.to_string(), "tiers[1].endpoints./api/v1/x: must be > 0");
    assert_eq!(e.path(), "tiers[1].endpoints./api/v1/x");
    let e = ConfigError::parse("", "configuration document is empty");
    assert_eq!(e.to_string(), "configuration document is empty");
    assert_eq!(e.path(), "");
}

#[test]
fn io_errors_have_no_field_path() {
    let e = ConfigError::Io {
        path: "/nope.yaml".into(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    };
    assert_eq!(e.path(), "");
    assert!(e.to_string().starts_with("cannot read /nope.yaml: "));
}
