//! Tests of cache nodes: their defaults, the cache directory (given, or the client
//! cache's default under `$HOME`), `-C`, `-n` and `-S` (which must not name this node).

use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::helpers::*;
use crate::cli::{config::*, defaults::*, validate::*, values::*};
use crate::pure::digest::DigestAlgo;

#[test]
fn cache_defaults() {
    let (dir, path) = cache_dir();
    let Ok(Command::Serve(cfg)) = parse(&["-c", &path]) else {
        panic!("-c alone must run a cache");
    };
    let made = dir.path().join("cache");
    assert!(made.is_dir(), "-c DIR is created");
    let c = cache_of(&cfg);
    assert_eq!(c.dir, std::fs::canonicalize(&made).unwrap());
    assert!(c.recursive_subnets.is_empty());
    assert!(!c.is_site_cache(), "without -n a cache is a client cache");
    assert_eq!(c.parent, None);
    assert_eq!(c.disk_limit_bytes, None);
    assert_eq!(cfg.publish_dir(), None);
    assert_eq!(cfg.role, NodeRole::Cache(c.clone()));
    // The shared options keep their defaults.
    assert_eq!(cfg.block_size_bytes, DEFAULT_BLOCK_SIZE_BYTES);
    assert_eq!(cfg.digest, DigestAlgo::Sha256);
    assert_eq!(cfg.memory_cache_bytes, DEFAULT_MEMORY_CACHE_BYTES);
    assert_eq!(cfg.port, DEFAULT_PORT);
    assert_eq!(cfg.index_dir, None);
    assert!(!cfg.playlist && !cfg.verify_reads && !cfg.buffered_reads);
    assert_eq!(cfg.rescan_interval_ms, DEFAULT_RESCAN_INTERVAL_MS);
    assert_eq!(cfg.info_ttl_ms, DEFAULT_INFO_TTL_MS);
    assert_eq!(cfg.upstream_timeout_ms, DEFAULT_UPSTREAM_TIMEOUT_MS);
}

#[test]
fn cache_dir_forms() {
    let tmp = tempfile::tempdir().unwrap();
    // Missing parents are created too; the result is canonical.
    let deep = tmp.path().join("a/b/c");
    let winding = tmp.path().join("a/../a/b/c/.");
    for (opt, path) in [("-c", &deep), ("--cache", &winding)] {
        let Ok(Command::Serve(cfg)) = parse(&[opt, path.to_str().unwrap()]) else {
            panic!("{opt}");
        };
        assert_eq!(cache_of(&cfg).dir, std::fs::canonicalize(&deep).unwrap());
    }
    // An existing directory is taken as it is, contents kept.
    std::fs::write(deep.join("kept"), b"x").unwrap();
    let arg = format!("--cache={}", deep.display());
    let Ok(Command::Serve(cfg)) = parse(&[&arg]) else {
        panic!("--cache=");
    };
    assert_eq!(cache_of(&cfg).dir, std::fs::canonicalize(&deep).unwrap());
    assert!(deep.join("kept").exists());
}

#[test]
fn cache_dir_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let f = file.to_str().unwrap();
    let e = err(&["-c", f]);
    assert_eq!(e.message, format!("p2pd: -c/--cache: {f}: not a directory"));
    assert_usage(&e, "-c/--cache");

    // Cannot be created: a parent is a file.
    let under = file.join("sub");
    let u = under.to_str().unwrap();
    let e = err(&["--cache", u]);
    assert_usage(&e, &format!("-c/--cache: {u}: "));

    assert_usage(&err(&["-c", ""]), "--cache");
}

#[test]
fn no_role_is_a_client_cache_in_home() {
    let home = tempfile::tempdir().unwrap();
    for args in [&[][..], &["-d", "-P", "2000", "-S", "site-cache"]] {
        let Ok(Command::Serve(cfg)) = parse_home(args, Some(home.path())) else {
            panic!("{args:?}: no -p and no -c must run a client cache");
        };
        let made = home.path().join(".p2pd_cache");
        assert!(made.is_dir(), "$HOME/.p2pd_cache is created");
        let c = cache_of(&cfg);
        assert_eq!(c.dir, std::fs::canonicalize(&made).unwrap());
        assert!(!c.is_site_cache());
    }
    // -c wins over the default: nothing is created in the home directory.
    let home = tempfile::tempdir().unwrap();
    let (_dir, path) = cache_dir();
    let Ok(Command::Serve(cfg)) = parse_home(&["-c", &path], Some(home.path())) else {
        panic!("-c");
    };
    assert_eq!(cache_of(&cfg).dir, std::fs::canonicalize(&path).unwrap());
    assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0);
}

#[test]
fn no_role_without_home_is_refused() {
    for home in [None, Some(Path::new("")), Some(Path::new("relative/home"))] {
        let e = match parse_home(&[], home) {
            Err(e) => e,
            Ok(cmd) => panic!("HOME {home:?}: expected an error, got {cmd:?}"),
        };
        assert_usage(&e, "p2pd: -c/--cache: not given, and HOME ");
        assert_usage(&e, "give -c DIR");
    }
    assert!(!Path::new("relative/home").exists());

    // $HOME/.p2pd_cache exists but is a file.
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join(".p2pd_cache"), b"x").unwrap();
    let Err(e) = parse_home(&[], Some(home.path())) else {
        panic!("a file as the default cache directory");
    };
    assert_usage(&e, "-c/--cache: ");
    assert_usage(
        &e,
        ".p2pd_cache: not a directory (the default without -p or -c)",
    );
}

#[test]
fn default_cache_dir_is_under_home() {
    assert_eq!(
        default_cache_dir(Some(OsStr::new("/home/viewer"))),
        Ok(PathBuf::from("/home/viewer/.p2pd_cache"))
    );
    assert_eq!(
        default_cache_dir(Some(OsStr::new("/"))),
        Ok(PathBuf::from("/.p2pd_cache"))
    );
    for bad in [None, Some(OsStr::new("")), Some(OsStr::new("home"))] {
        let e = default_cache_dir(bad).expect_err("no default");
        assert!(e.contains("give -c DIR") && !e.contains('\n'), "{e}");
    }
}

#[test]
fn disk_cache_size_forms() {
    for opt in ["-C", "--disk-cache-size"] {
        let cfg = cache(&[opt, "1G"]);
        assert_eq!(cache_of(&cfg).disk_limit_bytes, Some(1 << 30));
    }
    let c = cache(&["-C", "64k"]);
    assert_eq!(cache_of(&c).disk_limit_bytes, Some(MIN_DISK_CACHE_BYTES));
    let c = cache(&["-C65536"]);
    assert_eq!(cache_of(&c).disk_limit_bytes, Some(65_536));
    let c = cache(&["-C", "1.5T"]);
    assert_eq!(cache_of(&c).disk_limit_bytes, Some(3 << 39));

    let e = cache_err(&["-C", "1k"]);
    assert_eq!(
        e.message,
        "p2pd: -C/--disk-cache-size: 1k (1024 bytes) is below the minimum of 64 KiB \
         (the cache must have room for whole blocks)"
    );
    assert_usage(&e, "-C/--disk-cache-size");
    assert_usage(
        &cache_err(&["-C", "65535"]),
        "-C/--disk-cache-size: 65535 is below the minimum",
    );
    assert_usage(&cache_err(&["-C", "0"]), "below the minimum");
    assert_usage(
        &cache_err(&["-C", "lots"]),
        "-C/--disk-cache-size: 'lots' is not a size",
    );
}

#[test]
fn recursive_subnet_forms() {
    let want: Vec<ipnet::IpNet> = ["10.0.0.0/8", "2001:db8::/32", "0.0.0.0/0"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    for opt in ["-n", "--recursive-subnet"] {
        let cfg = cache(&[opt, "10.0.0.0/8", opt, "2001:db8::/32", opt, "0.0.0.0/0"]);
        let c = cache_of(&cfg);
        assert_eq!(c.recursive_subnets, want);
        assert!(c.is_site_cache(), "-n makes a site cache");
    }
    // A host address with a prefix is kept as written; matching uses the prefix.
    let cfg = cache(&["-n", "192.168.1.7/24"]);
    let net = cache_of(&cfg).recursive_subnets[0];
    assert_eq!(net.to_string(), "192.168.1.7/24");
    assert!(net.contains(&"192.168.1.200".parse::<IpAddr>().unwrap()));

    let e = cache_err(&["-n", "10.0.0.0/33"]);
    assert_eq!(
        e.message,
        "p2pd: -n/--recursive-subnet: '10.0.0.0/33' is not a subnet in CIDR form"
    );
    assert_usage(&cache_err(&["-n", "10.0.0.1"]), "-n/--recursive-subnet");
}

#[test]
fn recursive_subnet_needs_cache_dir() {
    let home = tempfile::tempdir().unwrap();
    let Err(e) = parse_home(&["-n", "10.0.0.0/8"], Some(home.path())) else {
        panic!("-n without -c");
    };
    assert_eq!(
        e.message,
        "p2pd: -n/--recursive-subnet: makes a site cache, which needs -c DIR (without -p \
         and -c this node is a client cache in $HOME/.p2pd_cache)"
    );
    assert_usage(&e, "-n/--recursive-subnet");
    assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0);
}

#[test]
fn parent_forms() {
    let hp = |h: &str, p: u16| {
        Some(HostPort {
            host: h.to_string(),
            port: p,
        })
    };
    let cfg = cache(&["-S", "origin.example.com"]);
    assert_eq!(
        cache_of(&cfg).parent,
        hp("origin.example.com", DEFAULT_PORT)
    );
    let cfg = cache(&["--parent", "[2001:db8::1]:8080"]);
    assert_eq!(cache_of(&cfg).parent, hp("2001:db8::1", 8080));
    let cfg = cache(&["--parent=10.0.0.1:2222"]);
    assert_eq!(cache_of(&cfg).parent, hp("10.0.0.1", 2222));

    assert_usage(&cache_err(&["-S", "p:99999"]), "-S/--parent: 'p:99999'");
    assert_usage(&cache_err(&["-S", "p:0"]), "-S/--parent");
    assert_usage(&cache_err(&["--parent", "a b"]), "-S/--parent");
}

#[test]
fn parent_must_not_be_this_node() {
    // A specific --bind: that address on -P.
    let e = cache_err(&["--bind", "127.0.0.1", "-P", "7000", "-S", "127.0.0.1:7000"]);
    assert_eq!(
        e.message,
        "p2pd: -S/--parent: 127.0.0.1:7000 names this node itself (--bind 127.0.0.1, \
         -P 7000); a parent is the next node up"
    );
    assert_usage(&e, "-S/--parent");
    for args in [
        &["--bind", "10.1.2.3", "-S", "10.1.2.3"][..],
        &["--bind", "::1", "-P", "9", "-S", "[::1]:9"],
        &["--bind", "127.0.0.1", "-S", "LOCALHOST"],
        // Default --bind 0.0.0.0 and -P 1111: loopback on 1111 is this node.
        &["-S", "127.0.0.1"],
        &["-S", "127.0.0.9:1111"],
        &["-S", "localhost"],
        // "::" also takes IPv4 (the server clears IPV6_V6ONLY).
        &["--bind", "::", "-S", "[::1]"],
        &["--bind", "::", "-S", "127.0.0.1"],
    ] {
        assert_usage(&cache_err(args), "-S/--parent: ");
        assert_usage(&cache_err(args), "names this node itself");
    }

    // Other ports, other addresses, and names that need resolving are accepted.
    for args in [
        &["--bind", "127.0.0.1", "-P", "7000", "-S", "127.0.0.1:7001"][..],
        &["--bind", "127.0.0.1", "-S", "127.0.0.2"],
        &["--bind", "127.0.0.2", "-S", "localhost"],
        &["--bind", "10.1.2.3", "-S", "127.0.0.1"],
        &["-S", "[::1]"],
        &["-S", "10.0.0.1"],
        &["-S", "parent.example.com"],
        &["-P", "0", "-S", "127.0.0.1"],
    ] {
        assert!(cache_of(&cache(args)).parent.is_some(), "{args:?}");
    }
}

#[test]
fn names_this_node_rules() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let hp = |s: &str| HostPort::parse(s).unwrap();
    assert!(names_this_node(&hp("10.0.0.1:5"), ip("10.0.0.1"), 5));
    assert!(!names_this_node(&hp("10.0.0.1:5"), ip("10.0.0.1"), 6));
    assert!(!names_this_node(&hp("10.0.0.2:5"), ip("10.0.0.1"), 5));
    // IPv4-mapped forms compare as IPv4.
    assert!(names_this_node(
        &hp("[::ffff:10.0.0.1]:5"),
        ip("10.0.0.1"),
        5
    ));
    assert!(names_this_node(&hp("10.0.0.1:5"), ip("::ffff:10.0.0.1"), 5));
    // Wildcards: loopback of the family (both for "::", which is dual-stack).
    assert!(names_this_node(&hp("127.1.2.3:5"), ip("0.0.0.0"), 5));
    assert!(!names_this_node(&hp("[::1]:5"), ip("0.0.0.0"), 5));
    assert!(names_this_node(&hp("[::1]:5"), ip("::"), 5));
    assert!(names_this_node(&hp("127.0.0.1:5"), ip("::"), 5));
    assert!(names_this_node(&hp("localhost:5"), ip("::"), 5));
    assert!(!names_this_node(&hp("10.0.0.1:5"), ip("0.0.0.0"), 5));
    assert!(!names_this_node(&hp("myself:5"), ip("0.0.0.0"), 5));
}
