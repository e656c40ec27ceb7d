//! Tests of the node's options on an origin: defaults, every option's accepted forms
//! and the refusals of bad values.

use std::net::IpAddr;
use std::path::PathBuf;

use super::helpers::*;
use crate::cli::{config::*, defaults::*, validate::*, values::*};
use crate::pure::digest::DigestAlgo;

#[test]
fn defaults() {
    let (_dir, path) = publish_dir();
    let Ok(Command::Serve(cfg)) = parse(&["-p", &path]) else {
        panic!("-p alone must run an origin");
    };
    let canonical = std::fs::canonicalize(&path).unwrap();
    assert_eq!(cfg.publish_dir(), Some(canonical.as_path()));
    assert_eq!(
        cfg.role,
        NodeRole::Origin {
            publish_dir: canonical.clone()
        }
    );
    assert!(cfg.cache().is_none());
    assert_eq!(cfg.block_size_bytes, DEFAULT_BLOCK_SIZE_BYTES);
    assert_eq!(cfg.digest, DigestAlgo::Sha256);
    assert!(cfg.mirrors.is_empty());
    assert!(cfg.allowed_hosts.is_empty());
    assert_eq!(cfg.memory_cache_bytes, DEFAULT_MEMORY_CACHE_BYTES);
    assert_eq!(cfg.port, DEFAULT_PORT);
    assert_eq!(cfg.bind, IpAddr::from([0, 0, 0, 0]));
    assert_eq!(cfg.threads, default_threads());
    assert!(cfg.threads >= 1 && cfg.threads <= MAX_THREADS);
    assert_eq!(cfg.index_dir, None);
    assert!(!cfg.playlist);
    assert!(!cfg.start_cold);
    assert_eq!(cfg.debug_level, 0);
    assert_eq!(cfg.rescan_interval_ms, DEFAULT_RESCAN_INTERVAL_MS);
    assert_eq!(cfg.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert!(!cfg.verify_reads);
    assert!(!cfg.buffered_reads);
    assert_eq!(cfg.info_ttl_ms, DEFAULT_INFO_TTL_MS);
    assert_eq!(cfg.upstream_timeout_ms, DEFAULT_UPSTREAM_TIMEOUT_MS);
    assert_eq!(cfg.upload_rate_bytes_per_s, None);
}

#[test]
fn upload_rate_takes_sizes_per_second_on_every_role() {
    assert_eq!(
        serve(&["--upload-rate", "10M"]).upload_rate_bytes_per_s,
        Some(10 << 20)
    );
    assert_eq!(
        cache(&["--upload-rate=16k"]).upload_rate_bytes_per_s,
        Some(16 * 1024)
    );
    let e = serve_err(&["--upload-rate", "1k"]);
    assert_eq!(
        e.message,
        "p2pd: --upload-rate: 1k is below the minimum of 16k bytes per second (one of the smallest blocks)"
    );
    assert_usage(&serve_err(&["--upload-rate", "fast"]), "--upload-rate");
}

#[test]
fn publish_short_and_long_are_canonical() {
    let (dir, _) = publish_dir();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    // A path with "." and ".." components canonicalizes to the directory itself.
    let winding = dir.path().join("sub/../sub/.");
    let winding = winding.to_str().unwrap();
    for opt in ["-p", "--publish"] {
        let Ok(Command::Serve(cfg)) = parse(&[opt, winding]) else {
            panic!("{opt}");
        };
        assert_eq!(
            cfg.publish_dir(),
            Some(std::fs::canonicalize(&sub).unwrap().as_path())
        );
    }
    let Ok(Command::Serve(cfg)) = parse(&[&format!("--publish={winding}")]) else {
        panic!("--publish=");
    };
    assert_eq!(
        cfg.publish_dir(),
        Some(std::fs::canonicalize(&sub).unwrap().as_path())
    );
}

#[test]
fn allow_host_forms() {
    for opt in ["-A", "--allow-host"] {
        let cfg = serve(&[opt, "CDN.Example.com", opt, "10.0.0.1", opt, "[::1]"]);
        assert_eq!(cfg.allowed_hosts, ["cdn.example.com", "10.0.0.1", "::1"]);
    }
    assert_usage(&serve_err(&["-A", "a b"]), "-A/--allow-host");
    assert_usage(&serve_err(&["--allow-host", ""]), "-A/--allow-host");
}

#[test]
fn block_size_forms() {
    assert_eq!(serve(&["-b", "1M"]).block_size_bytes, 1024 * 1024);
    assert_eq!(serve(&["--block-size", "64k"]).block_size_bytes, 64 * 1024);
    assert_eq!(
        serve(&["--block-size=16384"]).block_size_bytes,
        MIN_BLOCK_SIZE_BYTES
    );
    assert_eq!(serve(&["-b16M"]).block_size_bytes, MAX_BLOCK_SIZE_BYTES);
}

#[test]
fn block_size_refusals() {
    let e = serve_err(&["-b", "5000"]);
    assert_eq!(
        e.message,
        "p2pd: -b/--block-size: 5000 is not a multiple of 4 KiB"
    );
    assert_usage(&e, "-b/--block-size");
    assert_usage(&serve_err(&["-b", "5k"]), "5120 bytes");
    assert_usage(
        &serve_err(&["--block-size", "8k"]),
        "outside 16 KiB..16 MiB",
    );
    assert_usage(&serve_err(&["-b", "32M"]), "outside 16 KiB..16 MiB");
    assert_usage(&serve_err(&["-b", "1T"]), "outside 16 KiB..16 MiB");
    assert_usage(
        &serve_err(&["-b", "12x"]),
        "-b/--block-size: '12x' is not a size",
    );
}

#[test]
fn debug_forms() {
    assert_eq!(serve(&["-d"]).debug_level, 1);
    assert_eq!(serve(&["-dd"]).debug_level, 2);
    assert_eq!(serve(&["--debug", "--debug", "-d"]).debug_level, 3);
}

#[test]
fn mirror_forms() {
    for opt in ["-l", "--mirror"] {
        let cfg = serve(&[
            opt,
            "m1.example.com:2222",
            opt,
            "[2001:db8::1]:80",
            opt,
            "m2",
        ]);
        assert_eq!(
            cfg.mirrors,
            [
                HostPort {
                    host: "m1.example.com".into(),
                    port: 2222
                },
                HostPort {
                    host: "2001:db8::1".into(),
                    port: 80
                },
                HostPort {
                    host: "m2".into(),
                    port: DEFAULT_PORT
                },
            ]
        );
    }
    assert_usage(&serve_err(&["-l", "m1:x"]), "-l/--mirror");
    assert_usage(&serve_err(&["--mirror", "a b:1"]), "-l/--mirror");
}

#[test]
fn memory_cache_forms() {
    assert_eq!(serve(&["-M", "1G"]).memory_cache_bytes, 1 << 30);
    assert_eq!(serve(&["--memory-cache-size", "0"]).memory_cache_bytes, 0);
    assert_usage(
        &serve_err(&["-M", "12x"]),
        "-M/--memory-cache-size: '12x' is not a size",
    );
}

#[test]
fn digest_forms() {
    assert_eq!(serve(&["-m", "sha512"]).digest, DigestAlgo::Sha512);
    assert_eq!(
        serve(&["--digest", "SHA512-256"]).digest,
        DigestAlgo::Sha512_256
    );
    let e = serve_err(&["-m", "md5"]);
    assert_usage(&e, "p2pd: -m/--digest: unknown digest algorithm 'md5'");
    for algo in crate::pure::digest::ALL_ALGOS {
        assert!(
            e.message.contains(algo.name()),
            "{e:?} lists {}",
            algo.name()
        );
    }
}

#[test]
fn port_forms() {
    assert_eq!(serve(&["-P", "8080"]).port, 8080);
    assert_eq!(serve(&["--port", "0"]).port, 0);
    assert_eq!(serve(&["--port=65535"]).port, 65535);
    assert_usage(&serve_err(&["-P", "x"]), "--port");
    assert_usage(&serve_err(&["--port", "65536"]), "--port");
}

#[test]
fn flag_forms() {
    assert!(serve(&["-T"]).playlist);
    assert!(serve(&["--playlist"]).playlist);
    assert!(serve(&["-Z"]).start_cold);
    assert!(serve(&["--cold"]).start_cold);
    let cfg = serve(&["-dTZ"]);
    assert!(cfg.playlist && cfg.start_cold && cfg.debug_level == 1);
}

#[test]
fn long_only_options() {
    let cfg = serve(&[
        "--bind",
        "::1",
        "--threads",
        "3",
        "--index-dir",
        "/var/lib/p2pd",
        "--rescan-interval",
        "100",
        "--max-connections",
        "1",
    ]);
    assert_eq!(cfg.bind, "::1".parse::<IpAddr>().unwrap());
    assert_eq!(cfg.threads, 3);
    assert_eq!(cfg.index_dir, Some(PathBuf::from("/var/lib/p2pd")));
    assert_eq!(cfg.rescan_interval_ms, MIN_RESCAN_INTERVAL_MS);
    assert_eq!(cfg.max_connections, 1);
    assert_eq!(serve(&["--threads", "1024"]).threads, MAX_THREADS);

    assert_usage(&serve_err(&["--bind", "x"]), "--bind");
    assert_usage(
        &serve_err(&["--threads", "0"]),
        "p2pd: --threads: 0 is outside",
    );
    assert_usage(&serve_err(&["--threads", "1025"]), "--threads");
    assert_usage(&serve_err(&["--threads=-1"]), "--threads");
    assert_usage(
        &serve_err(&["--rescan-interval", "99"]),
        "p2pd: --rescan-interval:",
    );
    assert_usage(
        &serve_err(&["--max-connections", "0"]),
        "p2pd: --max-connections:",
    );
    assert_usage(&serve_err(&["--index-dir", ""]), "--index-dir");
}

#[test]
fn publish_refusals() {
    let (dir, _) = publish_dir();
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    let e = err(&["-p", missing]);
    assert_eq!(
        e.message,
        format!("p2pd: -p/--publish: {missing}: no such directory")
    );
    assert_usage(&e, "-p/--publish");

    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let e = err(&["--publish", file.to_str().unwrap()]);
    assert_usage(&e, "-p/--publish");
    assert!(e.message.ends_with("not a directory"), "{e:?}");
}

#[test]
fn publish_with_cache_is_refused() {
    let (_dir, path) = publish_dir();
    let (cdir, cpath) = cache_dir();
    for args in [
        ["-p", &path, "-c", &cpath],
        ["--cache", &cpath, "--publish", &path],
    ] {
        let e = err(&args);
        assert_eq!(
            e.message,
            "p2pd: -p/--publish and -c/--cache cannot be used together \
             (a node is an origin or a cache)"
        );
        assert_usage(&e, "-c/--cache");
    }
    assert!(!cdir.path().join("cache").exists());
}
