//! Tests of `p2pd get`'s command line: forms, defaults, `spp://` URLs and refusals.

use std::path::PathBuf;

use super::helpers::*;
use crate::cli::{defaults::*, values::*};

#[test]
fn get_forms_and_defaults() {
    let cfg = get(&["spp://origin.example.com/movies/a.mp4"]);
    assert_eq!(cfg.url, "spp://origin.example.com/movies/a.mp4");
    assert_eq!(cfg.output, None);
    assert_eq!(cfg.timeout_ms, DEFAULT_GET_TIMEOUT_MS);
    assert!(!cfg.quiet);
    assert_eq!(cfg.debug_level, 0);

    let cfg = get(&[
        "-o",
        "out.bin",
        "--timeout",
        "5",
        "-q",
        "-dd",
        "spp://h:9/x",
    ]);
    assert_eq!(cfg.output, Some(PathBuf::from("out.bin")));
    assert_eq!((cfg.timeout_ms, cfg.quiet, cfg.debug_level), (5, true, 2));

    let cfg = get(&["spp://h/x", "--output", "o", "--quiet", "--debug"]);
    assert_eq!(cfg.output, Some(PathBuf::from("o")));
    assert!(cfg.quiet);
    assert_eq!(cfg.debug_level, 1);

    assert_eq!(get(&["spp://h/x", "-o", "-"]).output, None);
}

#[test]
fn spp_urls() {
    let u = SppUrl::parse("spp://origin/a/b.mp4").unwrap();
    assert_eq!(
        u.origin,
        HostPort {
            host: "origin".into(),
            port: DEFAULT_PORT
        }
    );
    assert_eq!(u.path, "/a/b.mp4");
    let u = SppUrl::parse("spp://[::1]:2222/x").unwrap();
    assert_eq!(
        u.origin,
        HostPort {
            host: "::1".into(),
            port: 2222
        }
    );
    let u = SppUrl::parse("spp://10.0.0.1:3/x%20y").unwrap();
    assert_eq!(
        (u.origin.host.as_str(), u.path.as_str()),
        ("10.0.0.1", "/x%20y")
    );
}

#[test]
fn get_refusals() {
    for bad in [
        "x",
        "http://h/x",
        "spp://h",
        "spp://h/",
        "spp:///x",
        "spp:/x",
        "spp://h:99999/x",
    ] {
        let e = err(&["get", bad]);
        assert_eq!(
            e.message,
            format!("p2pd get: '{bad}' is not an spp:// URL (expected spp://host[:port]/path)")
        );
        assert_usage(&e, "spp://");
    }
    assert_usage(&err(&["get", "spp://h/x", "--timeout", "0"]), "--timeout");
    assert_usage(
        &err(&["get", "spp://h/x", "--timeout", "soon"]),
        "--timeout",
    );
    assert_usage(&err(&["get"]), "<URL>");
}

#[test]
fn server_options_with_get_are_refused() {
    let (_dir, path) = publish_dir();
    assert_usage(&err(&["-p", &path, "get", "spp://h/x"]), "get");
    assert_usage(&err(&["get", "spp://h/x", "-p", &path]), "'-p'");
    assert_usage(&err(&["-P", "1", "get", "spp://h/x"]), "p2pd: ");
}
