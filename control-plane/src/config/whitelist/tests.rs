use super::*;

#[test]
fn entries_parse() {
    assert_eq!(
        parse_entry("10.1.2.3"),
        Ok(WhitelistEntry::Ip("10.1.2.3".parse().unwrap()))
    );
    assert_eq!(
        parse_entry("ip:::1"),
        Ok(WhitelistEntry::Ip("::1".parse().unwrap()))
    );
    assert_eq!(
        parse_entry("ip:::ffff:10.0.0.1"),
        Ok(WhitelistEntry::Ip("10.0.0.1".parse().unwrap()))
    );
    assert_eq!(
        parse_entry("10.1.2.3/8"),
        Ok(WhitelistEntry::Net("10.0.0.0/8".parse().unwrap()))
    );
    assert_eq!(
        parse_entry("::ffff:10.0.0.0/104"),
        Ok(WhitelistEntry::Net("10.0.0.0/8".parse().unwrap()))
    );
    assert_eq!(
        parse_entry("2001:db8::1/32"),
        Ok(WhitelistEntry::Net("2001:db8::/32".parse().unwrap()))
    );
    assert_eq!(
        parse_entry("key:ops"),
        Ok(WhitelistEntry::Key("ops".into()))
    );
    assert_eq!(
        parse_entry("user:alice"),
        Ok(WhitelistEntry::User("alice".into()))
    );
}

#[test]
fn bad_entries_are_rejected() {
    for (entry, fragment) in [
        ("ip:nope", "not a valid ip:<address>"),
        ("ip:10.0.0.0/8", "not a valid ip:<address>"),
        ("10.0.0.0/33", "not a valid CIDR"),
        ("10.0.0/8", "not a valid CIDR"),
        ("key:", "empty identifier"),
        ("user:", "empty identifier"),
        ("fe80::1%eth0", "not an IP address"),
        ("alice", "not an IP address"),
        ("", "not an IP address"),
        ("token:abc", "not an IP address"),
    ] {
        let err = parse_entry(entry).expect_err(entry);
        assert!(err.contains(fragment), "{entry:?}: {err}");
    }
    let long = format!("user:{}", "u".repeat(257));
    assert!(parse_entry(&long).unwrap_err().contains("longer than 256"));
    let max = format!("user:{}", "u".repeat(256));
    assert!(parse_entry(&max).is_ok());
}
