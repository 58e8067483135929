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
    // The name of a grouped IPv6 client is a range, as is any `ip:<network>/<len>`.
    assert_eq!(
        parse_entry("ip:2001:db8:1:2::/64"),
        Ok(WhitelistEntry::Net("2001:db8:1:2::/64".parse().unwrap()))
    );
    assert_eq!(
        parse_entry("ip:2001:db8:1:2::7/64"),
        Ok(WhitelistEntry::Net("2001:db8:1:2::/64".parse().unwrap()))
    );
    assert_eq!(
        parse_entry("ip:10.1.0.0/16"),
        Ok(WhitelistEntry::Net("10.1.0.0/16".parse().unwrap()))
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
        ("ip:10.0.0.0/33", "not a valid ip:<network>/<len>"),
        ("ip:2001:db8::/129", "not a valid ip:<network>/<len>"),
        ("ip:2001:db8::/", "not a valid ip:<network>/<len>"),
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

fn whitelist(entries: &[&str]) -> Whitelist {
    let mut list = Whitelist::default();
    for entry in entries {
        list.insert(parse_entry(entry).unwrap());
    }
    list
}

#[test]
fn a_grouped_client_is_whitelisted_when_a_range_covers_its_group() {
    let list = whitelist(&[
        "ip:2001:db8:1:2::/64",
        "2001:db8:ff00::/40",
        "2001:db8:9::5",
    ]);
    for (identity, whitelisted) in [
        ("ip:2001:db8:1:2::/64", true),
        ("ip:2001:db8:1:3::/64", false),
        // Inside a wider range.
        ("ip:2001:db8:ff01:2::/64", true),
        // Wider than the whitelisted range: only part of the group is whitelisted.
        ("ip:2001:db8:1::/48", false),
        // One whitelisted address does not whitelist its whole group.
        ("ip:2001:db8:9::/64", false),
        ("ip:2001:db8:9::5", true),
        ("ip:2001:db8:1:2::/nope", false),
    ] {
        assert_eq!(list.contains_identity(identity), whitelisted, "{identity}");
    }
    // Addresses of the group match the entry as client IPs too.
    assert!(list.contains_ip("2001:db8:1:2:abcd::1".parse().unwrap()));
    assert!(!list.contains_ip("2001:db8:1:3::1".parse().unwrap()));
}
