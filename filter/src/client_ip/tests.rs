use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn trusted(list: &[&str]) -> TrustedProxies {
    TrustedProxies::new(list.iter().map(|s| IpNet::parse(s).unwrap()).collect())
}

fn resolve(peer: &str, xff: &[&str], real_ip: Option<&str>, proxies: &[&str]) -> Option<IpAddr> {
    let xff: Vec<&[u8]> = xff.iter().map(|s| s.as_bytes()).collect();
    resolve_client_ip(
        parse_source_address(peer.as_bytes()),
        &xff,
        real_ip.map(str::as_bytes),
        &trusted(proxies),
    )
}

#[test]
fn ipnet_parses_addresses_and_blocks() {
    assert_eq!(
        IpNet::parse("10.0.0.0/8").unwrap().to_string(),
        "10.0.0.0/8"
    );
    assert_eq!(
        IpNet::parse("10.1.2.3/8").unwrap().to_string(),
        "10.0.0.0/8"
    );
    assert_eq!(IpNet::parse("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
    assert_eq!(IpNet::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
    assert_eq!(
        IpNet::parse("2001:db8::/32").unwrap().to_string(),
        "2001:db8::/32"
    );
    assert_eq!(IpNet::parse("::1").unwrap().to_string(), "::1/128");
    assert_eq!(IpNet::parse("::/0").unwrap().to_string(), "::/0");
    assert_eq!(
        IpNet::parse("::ffff:10.0.0.0/104").unwrap().to_string(),
        "10.0.0.0/8"
    );
    assert_eq!(
        IpNet::parse("::ffff:10.0.0.1").unwrap().to_string(),
        "10.0.0.1/32"
    );
}

#[test]
fn ipnet_rejects_garbage() {
    for bad in [
        "",
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "10.0.0.0/-1",
        "10.0.0.0/8/8",
        "10.0.0.256",
        "localhost",
        " 10.0.0.1",
        "10.0.0.1:80",
        "[::1]",
        "fe80::1%eth0",
        "10.0.0.0/0008",
    ] {
        assert!(IpNet::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn ipnet_membership() {
    let net = IpNet::parse("192.168.0.0/16").unwrap();
    assert!(net.contains(ip("192.168.255.1")));
    assert!(!net.contains(ip("192.169.0.1")));
    assert!(
        !net.contains(ip("::ffff:192.168.0.1")),
        "callers canonicalise first"
    );
    let v6 = IpNet::parse("2001:db8::/32").unwrap();
    assert!(v6.contains(ip("2001:db8:1::5")));
    assert!(!v6.contains(ip("2001:db9::5")));
    assert!(!v6.contains(ip("10.0.0.1")));
    assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    assert!(!IpNet::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
}

#[test]
fn source_address_forms() {
    assert_eq!(
        parse_source_address(b"127.0.0.1:5555"),
        Some(ip("127.0.0.1"))
    );
    assert_eq!(parse_source_address(b"[::1]:5555"), Some(ip("::1")));
    assert_eq!(
        parse_source_address(b"[::ffff:1.2.3.4]:80"),
        Some(ip("1.2.3.4"))
    );
    assert_eq!(parse_source_address(b"10.0.0.7"), Some(ip("10.0.0.7")));
    assert_eq!(
        parse_source_address(b"2001:db8::1"),
        Some(ip("2001:db8::1"))
    );
    assert_eq!(parse_source_address(b"/tmp/envoy.sock"), None);
    assert_eq!(parse_source_address(b""), None);
    assert_eq!(parse_source_address(b"\xff\xfe"), None);
}

#[test]
fn forged_headers_ignored_without_trusted_proxies() {
    assert_eq!(
        resolve("203.0.113.9:4000", &["1.1.1.1"], Some("2.2.2.2"), &[]),
        Some(ip("203.0.113.9"))
    );
}

#[test]
fn forged_headers_ignored_from_untrusted_peer() {
    assert_eq!(
        resolve(
            "203.0.113.9:4000",
            &["1.1.1.1, 10.0.0.1"],
            Some("2.2.2.2"),
            &["10.0.0.0/8"]
        ),
        Some(ip("203.0.113.9"))
    );
}

#[test]
fn trusted_peer_single_entry() {
    assert_eq!(
        resolve("10.0.0.1:4000", &["198.51.100.7"], None, &["10.0.0.0/8"]),
        Some(ip("198.51.100.7"))
    );
}

#[test]
fn trusted_peer_takes_rightmost_untrusted_entry() {
    // The client wrote 6.6.6.6 itself; 198.51.100.7 is what the trusted proxy saw.
    assert_eq!(
        resolve(
            "10.0.0.1:4000",
            &["6.6.6.6, 198.51.100.7"],
            None,
            &["10.0.0.0/8"]
        ),
        Some(ip("198.51.100.7"))
    );
}

#[test]
fn trusted_hops_are_skipped() {
    assert_eq!(
        resolve(
            "10.0.0.1:4000",
            &["6.6.6.6,198.51.100.7 , 10.0.0.2,\t10.0.0.3"],
            None,
            &["10.0.0.0/8"]
        ),
        Some(ip("198.51.100.7"))
    );
}

#[test]
fn several_header_values_are_one_list() {
    assert_eq!(
        resolve(
            "10.0.0.1:4000",
            &["6.6.6.6", "198.51.100.7, 10.0.0.9"],
            None,
            &["10.0.0.0/8"]
        ),
        Some(ip("198.51.100.7"))
    );
    assert_eq!(
        resolve(
            "10.0.0.1:4000",
            &["6.6.6.6, 10.0.0.9", "10.0.0.8"],
            None,
            &["10.0.0.0/8"]
        ),
        Some(ip("6.6.6.6"))
    );
}

#[test]
fn unreadable_hop_falls_back_to_peer() {
    for xff in [
        "6.6.6.6, garbage",
        "6.6.6.6, 198.51.100.7:8080",
        "6.6.6.6, [2001:db8::1]",
        "6.6.6.6, 198.51.100.7 x",
        "6.6.6.6, 198.51.100. 7",
        "6.6.6.6,",
        "6.6.6.6, ,10.0.0.2",
        "unknown",
    ] {
        assert_eq!(
            resolve("10.0.0.1:4000", &[xff], None, &["10.0.0.0/8"]),
            Some(ip("10.0.0.1")),
            "{xff:?}"
        );
    }
    // Garbage left of the first untrusted hop is never looked at.
    assert_eq!(
        resolve(
            "10.0.0.1:4000",
            &["garbage, 198.51.100.7"],
            None,
            &["10.0.0.0/8"]
        ),
        Some(ip("198.51.100.7"))
    );
}

#[test]
fn non_utf8_hop_falls_back_to_peer() {
    let xff: [&[u8]; 1] = [b"6.6.6.6, \xff\xfe"];
    let got = resolve_client_ip(Some(ip("10.0.0.1")), &xff, None, &trusted(&["10.0.0.0/8"]));
    assert_eq!(got, Some(ip("10.0.0.1")));
}

#[test]
fn empty_forwarded_for_counts_as_absent() {
    assert_eq!(
        resolve("10.0.0.1:1", &[""], None, &["10.0.0.0/8"]),
        Some(ip("10.0.0.1"))
    );
    assert_eq!(
        resolve("10.0.0.1:1", &[" , "], None, &["10.0.0.0/8"]),
        Some(ip("10.0.0.1"))
    );
    assert_eq!(
        resolve("10.0.0.1:1", &[""], Some("198.51.100.7"), &["10.0.0.0/8"]),
        Some(ip("198.51.100.7"))
    );
}

#[test]
fn ipv6_entries() {
    assert_eq!(
        resolve(
            "[2001:db8::1]:443",
            &["2001:db8:ffff::42, 2001:db8::2"],
            None,
            &["2001:db8::/64"]
        ),
        Some(ip("2001:db8:ffff::42"))
    );
    assert_eq!(
        resolve("[::1]:443", &["2001:DB8::0:42"], None, &["::1"]).map(|a| a.to_string()),
        Some("2001:db8::42".to_string())
    );
}

#[test]
fn all_trusted_uses_leftmost() {
    assert_eq!(
        resolve("10.0.0.1:1", &["10.0.0.5, 10.0.0.6"], None, &["10.0.0.0/8"]),
        Some(ip("10.0.0.5"))
    );
}

#[test]
fn real_ip_fallback() {
    assert_eq!(
        resolve("10.0.0.1:1", &[], Some("198.51.100.7"), &["10.0.0.0/8"]),
        Some(ip("198.51.100.7"))
    );
    assert_eq!(
        resolve("10.0.0.1:1", &[], Some(" 198.51.100.7 "), &["10.0.0.0/8"]),
        Some(ip("198.51.100.7"))
    );
    assert_eq!(
        resolve("10.0.0.1:1", &[], Some("not-an-ip"), &["10.0.0.0/8"]),
        Some(ip("10.0.0.1"))
    );
    assert_eq!(
        resolve("10.0.0.1:1", &[], Some("198.51.100.7:80"), &["10.0.0.0/8"]),
        Some(ip("10.0.0.1"))
    );
    assert_eq!(
        resolve("10.0.0.1:1", &[], None, &["10.0.0.0/8"]),
        Some(ip("10.0.0.1"))
    );
    // X-Forwarded-For, when present, wins over X-Real-IP.
    assert_eq!(
        resolve(
            "10.0.0.1:1",
            &["198.51.100.8"],
            Some("198.51.100.7"),
            &["10.0.0.0/8"]
        ),
        Some(ip("198.51.100.8"))
    );
}

#[test]
fn real_ip_behind_envoy_that_appended_the_peer() {
    // Proxy 10.0.0.1 sent only X-Real-IP; Envoy (use_remote_address) appended 10.0.0.1.
    assert_eq!(
        resolve(
            "10.0.0.1:1",
            &["10.0.0.1"],
            Some("198.51.100.7"),
            &["10.0.0.0/8"]
        ),
        Some(ip("198.51.100.7"))
    );
    assert_eq!(
        resolve("10.0.0.1:1", &["10.0.0.1"], Some("junk"), &["10.0.0.0/8"]),
        Some(ip("10.0.0.1"))
    );
    assert_eq!(
        resolve("10.0.0.1:1", &["10.0.0.1"], None, &["10.0.0.0/8"]),
        Some(ip("10.0.0.1"))
    );
    // Any other hop in the list means X-Forwarded-For was really sent: it wins.
    assert_eq!(
        resolve(
            "10.0.0.1:1",
            &["10.0.0.2, 10.0.0.1"],
            Some("198.51.100.7"),
            &["10.0.0.0/8"]
        ),
        Some(ip("10.0.0.2"))
    );
    assert_eq!(
        resolve(
            "10.0.0.1:1",
            &["198.51.100.8, 10.0.0.1"],
            Some("198.51.100.7"),
            &["10.0.0.0/8"]
        ),
        Some(ip("198.51.100.8"))
    );
    // Untrusted peers never get here.
    assert_eq!(
        resolve(
            "203.0.113.1:1",
            &["203.0.113.1"],
            Some("198.51.100.7"),
            &["10.0.0.0/8"]
        ),
        Some(ip("203.0.113.1"))
    );
}

#[test]
fn ipv4_mapped_addresses_become_ipv4() {
    assert_eq!(
        resolve("[::ffff:10.0.0.1]:1", &[], None, &[]),
        Some(ip("10.0.0.1"))
    );
    // A mapped peer matches an IPv4 trusted block, and a mapped entry is reported as IPv4.
    assert_eq!(
        resolve(
            "[::ffff:10.0.0.1]:1",
            &["::ffff:198.51.100.7"],
            None,
            &["10.0.0.0/8"]
        ),
        Some(ip("198.51.100.7"))
    );
    // A mapped entry in trusted_proxies matches the IPv4 form.
    assert_eq!(
        resolve("10.0.0.1:1", &["198.51.100.7"], None, &["::ffff:10.0.0.1"]),
        Some(ip("198.51.100.7"))
    );
}

#[test]
fn missing_or_unparseable_source() {
    let xff: [&[u8]; 1] = [b"198.51.100.7"];
    assert_eq!(
        resolve_client_ip(None, &xff, None, &trusted(&["0.0.0.0/0"])),
        None
    );
    assert_eq!(
        resolve("not an address", &["198.51.100.7"], None, &["0.0.0.0/0"]),
        None
    );
}
