//! Validation of parsed arguments into a config: role rules (options of the other
//! role refused), the node's and `p2pd get`'s option checks, directories, defaults.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;

use super::args;
use super::{
    config::{CacheConfig, GetConfig, NodeRole, ServeConfig},
    defaults::{
        DEFAULT_CACHE_DIR_NAME, MAX_READ_AHEAD_SECS, MAX_THREADS, MIN_ANNOUNCE_INTERVAL_MS,
        MIN_PEER_EXPIRY_MS, MIN_RESCAN_INTERVAL_MS,
    },
    error::{CliError, GET_PREFIX, PREFIX},
    values::{
        normalize_allowed_host, parse_block_size, parse_disk_cache_size, parse_size_bytes,
        parse_subnet, parse_upload_rate, HostPort, SppUrl,
    },
};
use crate::pure::digest::DigestAlgo;

/// Options that a later release implements: (clap id, option label).
const NOT_YET_SUPPORTED: [(&str, &str); 1] = [("detach", "-D/--detach")];
/// Why the options of [`NOT_YET_SUPPORTED`] are refused.
const NOT_YET_SUPPORTED_WHY: &str = "not supported yet (detaching comes in a later release)";

/// Options that only a cache uses: (clap id, option label, why refused on an origin).
const CACHE_ONLY: [(&str, &str, &str); 3] = [
    (
        "disk_cache_size",
        "-C/--disk-cache-size",
        "applies to caches (-c) only",
    ),
    (
        "recursive_subnet",
        "-n/--recursive-subnet",
        "applies to caches (-c) only",
    ),
    ("parent", "-S/--parent", "applies to caches (-c) only"),
];

/// Options that only an origin uses: (clap id, option label, why refused on a cache).
/// Refused only when given on the command line, since some have defaults.
const ORIGIN_ONLY: [(&str, &str, &str); 7] = [
    (
        "block_size",
        "-b/--block-size",
        "applies to origins (-p) only (a cache uses the block size the origin \
         announces for each file)",
    ),
    (
        "digest",
        "-m/--digest",
        "applies to origins (-p) only (a cache uses the digests the origin announces)",
    ),
    (
        "playlist",
        "-T/--playlist",
        "applies to origins (-p) only (playlists are served for published files)",
    ),
    (
        "index_dir",
        "--index-dir",
        "applies to origins (-p) only (it holds the digest indexes of published files)",
    ),
    (
        "rescan_interval",
        "--rescan-interval",
        "applies to origins (-p) only (it paces the scans of the published directory)",
    ),
    (
        "verify_reads",
        "--verify-reads",
        "applies to origins (-p) only (a cache verifies every block it fetches against \
         the origin's digests)",
    ),
    (
        "buffered_reads",
        "--buffered-reads",
        "applies to origins (-p) only (it chooses how published files are read)",
    ),
];

pub(super) fn validate_serve(
    a: args::ServeArgs,
    matches: &ArgMatches,
    home: Option<&OsStr>,
) -> Result<ServeConfig, CliError> {
    // First every value on its own, so a typo is reported even on a refused option.
    let block_size_bytes =
        parse_block_size(&a.block_size).map_err(|why| CliError::option("-b/--block-size", why))?;
    let memory_cache_bytes = parse_size_bytes(&a.memory_cache_size)
        .map_err(|why| CliError::option("-M/--memory-cache-size", why))?;
    let disk_limit_bytes = a
        .disk_cache_size
        .as_deref()
        .map(parse_disk_cache_size)
        .transpose()
        .map_err(|why| CliError::option("-C/--disk-cache-size", why))?;
    let digest =
        DigestAlgo::from_name(&a.digest).map_err(|e| CliError::option("-m/--digest", e))?;
    let locality = a
        .locality
        .iter()
        .map(|s| parse_subnet(s).map_err(|why| CliError::option("-N/--locality", why)))
        .collect::<Result<Vec<_>, _>>()?;
    let recursive_subnets = a
        .recursive_subnet
        .iter()
        .map(|s| parse_subnet(s).map_err(|why| CliError::option("-n/--recursive-subnet", why)))
        .collect::<Result<Vec<_>, _>>()?;
    let mirrors = a
        .mirror
        .iter()
        .map(|s| HostPort::parse(s).map_err(|why| CliError::option("-l/--mirror", why)))
        .collect::<Result<Vec<_>, _>>()?;
    let parent = a
        .parent
        .as_deref()
        .map(HostPort::parse)
        .transpose()
        .map_err(|why| CliError::option("-S/--parent", why))?;
    let allowed_hosts = a
        .allow_host
        .iter()
        .map(|s| {
            normalize_allowed_host(s)
                .map_err(|why| CliError::option("-A/--allow-host", format!("'{s}': {why}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let threads = match a.threads {
        None => default_threads(),
        Some(n) if (1..=MAX_THREADS).contains(&n) => n,
        Some(n) => {
            return Err(CliError::option(
                "--threads",
                format!("{n} is outside 1..={MAX_THREADS}"),
            ))
        }
    };
    min_ms(
        "--rescan-interval",
        a.rescan_interval,
        MIN_RESCAN_INTERVAL_MS,
    )?;
    if a.max_connections == 0 {
        return Err(CliError::option("--max-connections", "must be at least 1"));
    }
    let upload_rate_bytes_per_s = a
        .upload_rate
        .as_deref()
        .map(parse_upload_rate)
        .transpose()
        .map_err(|why| CliError::option("--upload-rate", why))?;
    min_ms("--peer-expiry", a.peer_expiry, MIN_PEER_EXPIRY_MS)?;
    min_ms(
        "--announce-interval",
        a.announce_interval,
        MIN_ANNOUNCE_INTERVAL_MS,
    )?;
    if a.read_ahead.is_some_and(|s| s > MAX_READ_AHEAD_SECS) {
        return Err(CliError::option(
            "--read-ahead",
            format!("at most {MAX_READ_AHEAD_SECS} seconds"),
        ));
    }
    if a.upstream_timeout == 0 {
        return Err(CliError::option(
            "--upstream-timeout",
            "must be at least 1 ms",
        ));
    }
    if matches!(&a.index_dir, Some(d) if d.as_os_str().is_empty()) {
        return Err(CliError::option("--index-dir", "empty path"));
    }

    // Then the role: origin and cache are exclusive, and each refuses the other's
    // options (and those of a later release), naming the first one given.
    if a.publish.is_some() && a.cache.is_some() {
        return Err(CliError::usage(format!(
            "{PREFIX}: -p/--publish and -c/--cache cannot be used together \
             (a node is an origin or a cache)"
        )));
    }
    let is_origin = a.publish.is_some();
    let refused = NOT_YET_SUPPORTED
        .iter()
        .map(|&(id, label)| (id, label, NOT_YET_SUPPORTED_WHY))
        .chain(
            if is_origin {
                &CACHE_ONLY[..]
            } else {
                &ORIGIN_ONLY[..]
            }
            .iter()
            .copied(),
        );
    if let Some((label, why)) = first_given(matches, refused) {
        return Err(CliError::option(label, why));
    }
    if !is_origin && a.cache.is_none() && !recursive_subnets.is_empty() {
        return Err(CliError::option(
            "-n/--recursive-subnet",
            "makes a site cache, which needs -c DIR (without -p and -c this node is a \
             client cache in $HOME/.p2pd_cache)",
        ));
    }
    if let Some(parent) = &parent {
        if names_this_node(parent, a.bind, a.port) {
            return Err(CliError::option(
                "-S/--parent",
                format!(
                    "{parent} names this node itself (--bind {}, -P {}); a parent is \
                     the next node up",
                    a.bind, a.port
                ),
            ));
        }
    }

    // Last the directories, so that a refused command line creates nothing.
    let role = match a.publish {
        Some(publish) => NodeRole::Origin {
            publish_dir: check_publish_dir(&publish)
                .map_err(|why| CliError::option("-p/--publish", why))?,
        },
        None => {
            let dir = match a.cache {
                Some(dir) => check_cache_dir(&dir),
                None => default_cache_dir(home).and_then(|dir| {
                    check_cache_dir(&dir)
                        .map_err(|why| format!("{why} (the default without -p or -c)"))
                }),
            }
            .map_err(|why| CliError::option("-c/--cache", why))?;
            NodeRole::Cache(CacheConfig {
                dir,
                recursive_subnets,
                parent,
                disk_limit_bytes,
            })
        }
    };

    Ok(ServeConfig {
        role,
        block_size_bytes,
        digest,
        mirrors,
        allowed_hosts,
        memory_cache_bytes,
        port: a.port,
        bind: a.bind,
        threads,
        index_dir: a.index_dir,
        playlist: a.playlist,
        start_cold: a.cold,
        debug_level: a.debug,
        rescan_interval_ms: a.rescan_interval,
        max_connections: a.max_connections,
        verify_reads: a.verify_reads,
        buffered_reads: a.buffered_reads,
        info_ttl_ms: a.info_ttl,
        read_ahead_secs: a.read_ahead,
        upstream_timeout_ms: a.upstream_timeout,
        upload_rate_bytes_per_s,
        p2p: a.p2p,
        locality,
        peer_expiry_ms: a.peer_expiry,
        announce_interval_ms: a.announce_interval,
    })
}

pub(super) fn validate_get(a: args::GetArgs) -> Result<GetConfig, CliError> {
    SppUrl::parse(&a.url).map_err(|why| CliError::usage(format!("{GET_PREFIX}: {why}")))?;
    if a.timeout == 0 {
        return Err(CliError::usage(format!(
            "{GET_PREFIX}: --timeout: must be at least 1 ms"
        )));
    }
    let output = a.output.filter(|p| p.as_os_str() != "-");
    if matches!(&output, Some(p) if p.as_os_str().is_empty()) {
        return Err(CliError::usage(format!(
            "{GET_PREFIX}: -o/--output: empty path"
        )));
    }
    Ok(GetConfig {
        url: a.url,
        output,
        timeout_ms: a.timeout,
        quiet: a.quiet,
        debug_level: a.debug,
    })
}

/// Of `candidates` (clap id, option label, why refused), the label and reason of the
/// one given first on the command line (defaults do not count).
fn first_given<'a>(
    matches: &ArgMatches,
    candidates: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> Option<(&'a str, &'a str)> {
    candidates
        .into_iter()
        .filter(|(id, _, _)| matches.value_source(id) == Some(ValueSource::CommandLine))
        .min_by_key(|(id, _, _)| matches.index_of(id).unwrap_or(usize::MAX))
        .map(|(_, label, why)| (label, why))
}

/// `-p`: an existing directory, returned canonical so later path checks compare like
/// with like (symlinks resolved once, here).
fn check_publish_dir(dir: &Path) -> Result<PathBuf, String> {
    let shown = dir.display();
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{shown}: no such directory"))
        }
        Err(e) => return Err(format!("{shown}: {e}")),
    };
    if !meta.is_dir() {
        return Err(format!("{shown}: not a directory"));
    }
    std::fs::canonicalize(dir).map_err(|e| format!("{shown}: {e}"))
}

/// `-c`: a directory, created (with its parents) if missing, returned canonical.
fn check_cache_dir(dir: &Path) -> Result<PathBuf, String> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => return Err(format!("{shown}: not a directory")),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{shown}: cannot create: {e}"))?
        }
        Err(e) => return Err(format!("{shown}: {e}")),
    }
    std::fs::canonicalize(dir).map_err(|e| format!("{shown}: {e}"))
}

/// The client cache's directory when neither -p nor -c is given: `$HOME/.p2pd_cache`.
/// `home` is `$HOME`; unset, empty or relative, there is no default.
pub(super) fn default_cache_dir(home: Option<&OsStr>) -> Result<PathBuf, String> {
    let home = home
        .filter(|h| !h.is_empty())
        .map(Path::new)
        .ok_or_else(|| {
            "not given, and HOME is not set for the default $HOME/.p2pd_cache; \
         give -c DIR (or -p DIR to publish)"
                .to_string()
        })?;
    if !home.is_absolute() {
        return Err(format!(
            "not given, and HOME ({}) is not an absolute path for the default \
             $HOME/.p2pd_cache; give -c DIR (or -p DIR to publish)",
            home.display()
        ));
    }
    Ok(home.join(DEFAULT_CACHE_DIR_NAME))
}

/// Whether `-S` `parent` is this node's own listening address on `-P`: the `--bind`
/// address, or with a wildcard `--bind` any loopback address. "localhost" counts as
/// loopback; other host names are not resolved here.
pub(super) fn names_this_node(parent: &HostPort, bind: IpAddr, port: u16) -> bool {
    if parent.port != port {
        return false;
    }
    let host_ip = parent
        .host
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical());
    let is_localhost = parent.host.eq_ignore_ascii_case("localhost");
    let bind = bind.to_canonical();
    if !bind.is_unspecified() {
        let localhost_ips = [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        return host_ip == Some(bind) || (is_localhost && localhost_ips.contains(&bind));
    }
    // A wildcard listens on every loopback address of its family; "::" takes IPv4 too
    // (the server clears IPV6_V6ONLY).
    is_localhost
        || match host_ip {
            Some(ip @ IpAddr::V4(_)) => ip.is_loopback(),
            Some(ip @ IpAddr::V6(_)) => ip.is_loopback() && bind.is_ipv6(),
            None => false,
        }
}

/// One shard per CPU available to us, within 1..=MAX_THREADS.
pub(super) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_THREADS)
}

/// A duration option in milliseconds must be at least `min`.
fn min_ms(option: &'static str, value: u64, min: u64) -> Result<(), CliError> {
    if value < min {
        return Err(CliError::option(
            option,
            format!("{value} ms is below the minimum of {min} ms"),
        ));
    }
    Ok(())
}
