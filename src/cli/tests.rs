//! Unit tests for the command line: every option's forms, defaults, the roles and their
//! rules, each refusal, the one-line error rule, sizes, host:port, `get` URLs, help
//! output and the man page.
//!
//! No test reads or changes `$HOME`: command lines are parsed with an explicit home
//! directory (none, or a temporary one), so the client cache's default directory is
//! never created in the real home.

use super::*;

/// A directory to publish, alive as long as the returned guard.
fn publish_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_string_lossy().into_owned();
    (dir, path)
}

/// Parses `args` as if `$HOME` were unset.
fn parse(args: &[&str]) -> Result<Command, CliError> {
    parse_home(args, None)
}

/// Parses `args` as if `$HOME` were `home`.
fn parse_home(args: &[&str], home: Option<&Path>) -> Result<Command, CliError> {
    parse_args_with_home(
        std::iter::once("p2pd").chain(args.iter().copied()),
        home.map(Path::as_os_str),
    )
}

/// A cache directory that does not exist yet, inside a fresh temporary directory.
fn cache_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cache").to_string_lossy().into_owned();
    (dir, path)
}

/// Parses a node command line with `-c <fresh dir>` in front of `args`.
fn cache(args: &[&str]) -> ServeConfig {
    let (_dir, path) = cache_dir();
    let mut all = vec!["-c", path.as_str()];
    all.extend_from_slice(args);
    match parse(&all) {
        Ok(Command::Serve(cfg)) => cfg,
        other => panic!("{args:?}: expected a cache config, got {other:?}"),
    }
}

/// The cache part of a cache node's config.
fn cache_of(cfg: &ServeConfig) -> &CacheConfig {
    cfg.cache()
        .unwrap_or_else(|| panic!("not a cache: {:?}", cfg.role))
}

/// Same as [`err`] with `-c <fresh dir>` in front; the directory must not be created.
fn cache_err(args: &[&str]) -> CliError {
    let (dir, path) = cache_dir();
    let mut all = vec!["-c", path.as_str()];
    all.extend_from_slice(args);
    let e = err(&all);
    assert!(
        !dir.path().join("cache").exists(),
        "{args:?}: a refused command line created the cache directory"
    );
    e
}

/// Parses a node command line that publishes a fresh directory plus `args`.
fn serve(args: &[&str]) -> ServeConfig {
    let (_dir, path) = publish_dir();
    let mut all = vec!["-p", path.as_str()];
    all.extend_from_slice(args);
    match parse(&all) {
        Ok(Command::Serve(cfg)) => cfg,
        other => panic!("{args:?}: expected a node config, got {other:?}"),
    }
}

fn get(args: &[&str]) -> GetConfig {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    match parse(&all) {
        Ok(Command::Get(cfg)) => cfg,
        other => panic!("{args:?}: expected a get config, got {other:?}"),
    }
}

fn err(args: &[&str]) -> CliError {
    match parse(args) {
        Err(e) => e,
        Ok(cmd) => panic!("{args:?}: expected an error, got {cmd:?}"),
    }
}

/// Same as [`err`] with `-p <fresh dir>` in front.
fn serve_err(args: &[&str]) -> CliError {
    let (_dir, path) = publish_dir();
    let mut all = vec!["-p", path.as_str()];
    all.extend_from_slice(args);
    err(&all)
}

/// A usage error: exit 2, stderr, one line starting "p2pd", containing `needle`.
fn assert_usage(e: &CliError, needle: &str) {
    assert_eq!(e.exit_code, 2, "{e:?}");
    assert!(!e.to_stdout, "{e:?}");
    assert!(e.message.starts_with("p2pd"), "{e:?}");
    assert!(!e.message.contains('\n'), "not one line: {:?}", e.message);
    assert!(!e.message.ends_with(' '), "{e:?}");
    assert!(
        e.message.contains(needle),
        "{:?} lacks {needle:?}",
        e.message
    );
}

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

#[test]
fn clap_errors_are_one_line() {
    let e = serve_err(&["-P", "x"]);
    assert_eq!(
        e.message,
        "p2pd: invalid value 'x' for '--port <portnumber>': invalid digit found in string"
    );
    assert_usage(&serve_err(&["-x"]), "'-x'");
    assert_usage(&serve_err(&["--no-such-option"]), "--no-such-option");
    assert_usage(&serve_err(&["stray"]), "'stray'");
    assert_usage(&serve_err(&["-b"]), "--block-size");
    assert_usage(&serve_err(&["-P", "1", "-P", "2"]), "--port");
}

#[test]
fn help_and_version_go_to_stdout() {
    for args in [&["--help"][..], &["-h"], &["get", "--help"], &["get", "-h"]] {
        let e = err(args);
        assert_eq!((e.exit_code, e.to_stdout), (0, true), "{args:?}");
        assert!(e.message.contains("Usage: p2pd"), "{args:?}: {}", e.message);
        assert!(!e.message.ends_with('\n'));
    }
    let long = err(&["--help"]).message;
    for opt in [
        "--publish",
        "--block-size",
        "--max-connections",
        "--cache",
        "--recursive-subnet",
        "--parent",
        "--disk-cache-size",
        "--info-ttl",
        "--upstream-timeout",
        "-dDiTZ",
        "p2pd get URL",
    ] {
        assert!(long.contains(opt), "--help lacks {opt}");
    }
    assert!(
        !long.contains("origin role only"),
        "--help still says only the origin runs"
    );
    let short = err(&["-h"]).message;
    assert!(short.contains("[--info-ttl MS]") && short.contains("[--upstream-timeout MS]"));
    assert!(!long.contains("\u{1b}["), "no colour codes in help");
    assert!(err(&["get", "--help"]).message.contains("--timeout"));
    for args in [["--version"], ["-V"]] {
        let e = err(&args);
        assert_eq!((e.exit_code, e.to_stdout), (0, true));
        assert_eq!(e.message, format!("p2pd {}", env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn man_subcommand_is_hidden() {
    assert!(matches!(parse(&["man"]), Ok(Command::Man)));
    assert!(!err(&["--help"]).message.contains("man "));
}

#[test]
fn man_page_lists_every_option() {
    let page = String::from_utf8(man_page()).expect("utf-8");
    assert!(page.starts_with(".ie"), "preamble first");
    assert!(page.contains(".TH p2pd 8"));
    assert_eq!(page.matches(".ds Aq").count(), 2, "preamble once");
    for long in [
        "allow\\-host",
        "block\\-size",
        "disk\\-cache\\-size",
        "cache",
        "debug",
        "detach",
        "p2p",
        "mirror",
        "memory\\-cache\\-size",
        "digest",
        "locality",
        "recursive\\-subnet",
        "port",
        "publish",
        "parent",
        "playlist",
        "cold",
        "bind",
        "threads",
        "index\\-dir",
        "rescan\\-interval",
        "max\\-connections",
        "verify\\-reads",
        "buffered\\-reads",
        "info\\-ttl",
        "upstream\\-timeout",
        "output",
        "timeout",
        "quiet",
    ] {
        assert!(
            page.contains(&format!("\\fB\\-\\-{long}\\fR")),
            "man page lacks --{long}"
        );
    }
    assert!(page.contains("[\\fB\\-dDiTZ\\fR]"));
    assert!(page.contains("[\\fB\\-\\-upstream\\-timeout\\fR\\ \\fIMS\\fR]"));
    assert!(!page.contains("origin role only"));
    assert!(
        !page.contains("p2pd\\-man"),
        "hidden subcommand stays hidden"
    );
}

/// The committed docs/p2pd.8 must be what the definitions render; run with
/// `P2PD_WRITE_MAN=1 cargo test man_page_is_current` to regenerate it.
#[test]
fn man_page_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/p2pd.8");
    let rendered = man_page();
    if std::env::var_os("P2PD_WRITE_MAN").is_some() {
        std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/docs")).unwrap();
        std::fs::write(path, &rendered).unwrap();
    }
    let committed = std::fs::read(path).unwrap_or_default();
    assert!(
        committed == rendered,
        "{path} is out of date: run P2PD_WRITE_MAN=1 cargo test man_page_is_current"
    );
}
