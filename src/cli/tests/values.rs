//! Tests of option values with rules of their own: sizes and host:port.

use crate::cli::{defaults::*, values::*};

#[test]
fn sizes() {
    assert_eq!(parse_size_bytes("256k"), Ok(262_144));
    assert_eq!(parse_size_bytes("256K"), Ok(262_144));
    assert_eq!(parse_size_bytes("512"), Ok(512));
    assert_eq!(parse_size_bytes("1G"), Ok(1 << 30));
    assert_eq!(parse_size_bytes("1T"), Ok(1 << 40));
    assert_eq!(parse_size_bytes("1.5M"), Ok(1_572_864));
    assert_eq!(parse_size_bytes("256KiB"), Ok(262_144));
    for bad in ["12x", "", "k", "-1", "1.5.5M"] {
        let e = parse_size_bytes(bad).expect_err(bad);
        assert!(e.contains(&format!("'{bad}'")) && !e.contains('\n'), "{e}");
    }
}

#[test]
fn host_port_forms() {
    let hp = |h: &str, p: u16| HostPort {
        host: h.to_string(),
        port: p,
    };
    assert_eq!(HostPort::parse("host"), Ok(hp("host", DEFAULT_PORT)));
    assert_eq!(HostPort::parse("host:2"), Ok(hp("host", 2)));
    assert_eq!(HostPort::parse("1.2.3.4:5"), Ok(hp("1.2.3.4", 5)));
    assert_eq!(HostPort::parse("[::1]"), Ok(hp("::1", DEFAULT_PORT)));
    assert_eq!(
        HostPort::parse("[2001:DB8::1]:443"),
        Ok(hp("2001:db8::1", 443))
    );
    assert_eq!(HostPort::parse("fe80::2"), Ok(hp("fe80::2", DEFAULT_PORT)));
    assert_eq!("a.b-c_d:7".parse::<HostPort>(), Ok(hp("a.b-c_d", 7)));

    assert_eq!(hp("host", 2).to_string(), "host:2");
    assert_eq!(hp("::1", 1111).to_string(), "[::1]:1111");
    for s in ["h:1", "[::1]:9"] {
        assert_eq!(HostPort::parse(s).unwrap().to_string(), s);
    }

    for bad in [
        "",
        "host:",
        "host:0",
        "host:x",
        "host:70000",
        "a b",
        "[::1",
        "[::1]x",
        "[x]:1",
        ":1",
        "a:b:c",
        "h/x",
    ] {
        let e = HostPort::parse(bad).expect_err(bad);
        assert!(e.contains(&format!("'{bad}'")) && !e.contains('\n'), "{e}");
    }
}
