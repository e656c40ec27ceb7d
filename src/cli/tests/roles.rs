//! Tests of the role rules: options of the other role, and of a later release, refused
//! in one line naming the option given first, and still validated.

use std::net::IpAddr;

use super::helpers::*;
use crate::cli::defaults::*;

#[test]
fn cache_tuning_options() {
    for cfg in [
        cache(&["--info-ttl", "0", "--upstream-timeout", "1"]),
        serve(&["--info-ttl", "0", "--upstream-timeout", "1"]),
    ] {
        assert_eq!((cfg.info_ttl_ms, cfg.upstream_timeout_ms), (0, 1));
    }
    let cfg = cache(&["--info-ttl=60000", "--upstream-timeout=2500"]);
    assert_eq!((cfg.info_ttl_ms, cfg.upstream_timeout_ms), (60_000, 2500));

    let e = cache_err(&["--upstream-timeout", "0"]);
    assert_eq!(e.message, "p2pd: --upstream-timeout: must be at least 1 ms");
    assert_usage(
        &serve_err(&["--upstream-timeout", "0"]),
        "--upstream-timeout",
    );
    assert_usage(&cache_err(&["--info-ttl=-1"]), "--info-ttl");
    assert_usage(&cache_err(&["--info-ttl", "soon"]), "--info-ttl");
    assert_usage(
        &cache_err(&["--upstream-timeout", "x"]),
        "--upstream-timeout",
    );
}

#[test]
fn shared_options_work_on_caches() {
    let cfg = cache(&[
        "-A",
        "cdn.example.com",
        "-l",
        "m1:2",
        "-M",
        "1G",
        "-P",
        "8080",
        "--bind",
        "::1",
        "--threads",
        "2",
        "--max-connections",
        "5",
        "-dZ",
    ]);
    assert_eq!(cfg.allowed_hosts, ["cdn.example.com"]);
    assert_eq!(cfg.mirrors.len(), 1);
    assert_eq!(cfg.memory_cache_bytes, 1 << 30);
    assert_eq!((cfg.port, cfg.threads, cfg.max_connections), (8080, 2, 5));
    assert_eq!(cfg.bind, "::1".parse::<IpAddr>().unwrap());
    assert!(cfg.start_cold && cfg.debug_level == 1);
}

#[test]
fn cache_only_options_on_an_origin_are_refused() {
    let cases: [(&[&str], &[&str], &str); 3] = [
        (
            &["-C", "1G"],
            &["--disk-cache-size", "1G"],
            "-C/--disk-cache-size",
        ),
        (
            &["-n", "10.0.0.0/8"],
            &["--recursive-subnet", "::/0"],
            "-n/--recursive-subnet",
        ),
        (&["-S", "parent:1"], &["--parent", "[::1]"], "-S/--parent"),
    ];
    for (short, long, label) in cases {
        for args in [short, long] {
            let e = serve_err(args);
            assert_eq!(
                e.message,
                format!("p2pd: {label}: applies to caches (-c) only"),
                "{args:?}"
            );
            assert_usage(&e, label);
        }
    }
}

#[test]
fn origin_only_options_on_a_cache_are_refused() {
    let cases: [(&[&str], &[&str], &str, &str); 7] = [
        (
            &["-b", "1M"],
            &["--block-size", "256k"],
            "-b/--block-size",
            "block size the origin announces",
        ),
        (
            &["-m", "sha512"],
            &["--digest", "sha256"],
            "-m/--digest",
            "digests the origin announces",
        ),
        (&["-T"], &["--playlist"], "-T/--playlist", "published files"),
        (
            &["--index-dir", "/tmp/i"],
            &["--index-dir=/tmp/i"],
            "--index-dir",
            "digest indexes",
        ),
        (
            &["--rescan-interval", "2000"],
            &["--rescan-interval=500"],
            "--rescan-interval",
            "published directory",
        ),
        (
            &["--verify-reads"],
            &["--verify-reads"],
            "--verify-reads",
            "verifies every block",
        ),
        (
            &["--buffered-reads"],
            &["--buffered-reads"],
            "--buffered-reads",
            "published files",
        ),
    ];
    let home = tempfile::tempdir().unwrap();
    for (short, long, label, reason) in cases {
        for args in [short, long] {
            let e = cache_err(args);
            let prefix = format!("p2pd: {label}: applies to origins (-p) only (");
            assert!(e.message.starts_with(&prefix), "{args:?}: {e:?}");
            assert_usage(&e, reason);
            // The implicit client cache (no -p, no -c) refuses them as well, and
            // creates nothing.
            let Err(e) = parse_home(args, Some(home.path())) else {
                panic!("{args:?} without -p and -c");
            };
            assert!(e.message.starts_with(&prefix), "{args:?}: {e:?}");
        }
    }
    assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0);
}

#[test]
fn later_release_options_are_refused() {
    for args in [&["-D"][..], &["--detach"][..]] {
        for e in [serve_err(args), cache_err(args)] {
            assert_eq!(
                e.message,
                "p2pd: -D/--detach: not supported yet (detaching comes in a later release)",
                "{args:?}"
            );
            assert_usage(&e, "-D/--detach");
        }
    }
}

#[test]
fn p2p_mode_and_locality_on_origins_and_caches() {
    for cfg in [
        serve(&["-i", "-N", "10.1.0.0/16"]),
        cache(&["--p2p", "--locality", "10.1.0.0/16", "-N", "::1/128"]),
    ] {
        assert!(cfg.p2p);
        assert_eq!(cfg.locality[0].to_string(), "10.1.0.0/16");
    }
    let cfg = serve(&[]);
    assert!(!cfg.p2p && cfg.locality.is_empty());
    assert_eq!(cfg.peer_expiry_ms, DEFAULT_PEER_EXPIRY_MS);
    assert_eq!(serve(&["-i", "--peer-expiry", "5000"]).peer_expiry_ms, 5000);
    assert_eq!(
        serve_err(&["--peer-expiry", "10"]).message,
        "p2pd: --peer-expiry: 10 ms is below the minimum of 1000 ms"
    );
    assert_eq!(cfg.announce_interval_ms, DEFAULT_ANNOUNCE_INTERVAL_MS);
    assert_eq!(
        serve(&["--announce-interval", "1500"]).announce_interval_ms,
        1500
    );
    assert_eq!(
        serve_err(&["--announce-interval", "99"]).message,
        "p2pd: --announce-interval: 99 ms is below the minimum of 100 ms"
    );
}

#[test]
fn first_refused_option_given_is_named() {
    assert_usage(&serve_err(&["-N", "10.0.0.0/8", "-i", "-D"]), "-D/--detach");
    assert_usage(&serve_err(&["--detach", "-S", "p:1"]), "-D/--detach");
    assert_usage(&serve_err(&["-S", "p:1", "--detach"]), "-S/--parent");
    assert_usage(
        &serve_err(&["-C", "1G", "-n", "::/0"]),
        "-C/--disk-cache-size",
    );
    assert_usage(&cache_err(&["-T", "-i"]), "-T/--playlist");
    assert_usage(&cache_err(&["-i", "-T"]), "-T/--playlist");
    assert_usage(
        &cache_err(&["--verify-reads", "-b", "1M"]),
        "--verify-reads",
    );
    // Within one cluster of flags clap reports them in the order of the definitions;
    // either way one of them is named.
    assert_usage(&serve_err(&["-dDiTZ"]), "not supported yet");
    assert_usage(&cache_err(&["-dTZ"]), "-T/--playlist");
    // Role rules come before the self-parent check.
    assert_usage(
        &cache_err(&["-S", "127.0.0.1", "-b", "1M"]),
        "-b/--block-size",
    );
}

#[test]
fn refused_options_are_still_validated() {
    let e = serve_err(&["-n", "10.0.0.0/33"]);
    assert_eq!(
        e.message,
        "p2pd: -n/--recursive-subnet: '10.0.0.0/33' is not a subnet in CIDR form"
    );
    assert_usage(&e, "-n/--recursive-subnet");
    assert_usage(
        &serve_err(&["-N", "10.1.0.0"]),
        "-N/--locality: '10.1.0.0' is not a subnet",
    );
    assert_usage(
        &serve_err(&["-C", "12x"]),
        "-C/--disk-cache-size: '12x' is not a size",
    );
    assert_usage(&serve_err(&["-C", "1k"]), "below the minimum of 64 KiB");
    assert_usage(&serve_err(&["-S", "p:99999"]), "-S/--parent");
    assert_usage(&cache_err(&["-b", "5000"]), "not a multiple of 4 KiB");
    assert_usage(&cache_err(&["-m", "md5"]), "unknown digest algorithm");
    assert_usage(
        &cache_err(&["--rescan-interval", "99"]),
        "below the minimum",
    );
    assert_usage(&cache_err(&["--index-dir", ""]), "--index-dir");
}
