use std::net::SocketAddr;

use clap::Parser;

use super::{Settings, parse_listen};

#[test]
fn a_bare_port_binds_loopback() {
    assert_eq!(
        parse_listen("8082"),
        Ok(SocketAddr::from(([127, 0, 0, 1], 8082)))
    );
}

#[test]
fn an_address_binds_as_given() {
    assert_eq!(
        parse_listen("0.0.0.0:9000"),
        Ok(SocketAddr::from(([0, 0, 0, 0], 9000)))
    );
    assert_eq!(
        parse_listen("[::1]:8082"),
        "[::1]:8082"
            .parse::<SocketAddr>()
            .map_err(|e| e.to_string())
    );
}

#[test]
fn anything_else_is_a_clear_error() {
    let err = parse_listen("localhost:x").unwrap_err();
    assert!(err.contains("neither a port nor an address"), "{err}");
    assert!(parse_listen("70000").is_err());
}

#[test]
fn the_grpc_listener_is_off_by_default() {
    let settings = Settings::try_parse_from(["control-plane"]).unwrap();
    assert_eq!(settings.grpc_listen, None);
    let settings = Settings::try_parse_from(["control-plane", "--grpc-listen", "8082"]).unwrap();
    assert_eq!(
        settings.grpc_listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 8082)))
    );
}
