//! Command line of p2pd: parsing and validation into [`Command`], and the p2pd.8 man page.
//!
//! clap does the tokenising and type checks; everything with rules of its own (sizes,
//! block-size alignment, subnets, host:port, roles, options of later releases) is checked
//! here so that every refusal is ONE line naming the option, as the spec demands.
//!
//! The role comes from `-p` and `-c` (spec section 2): `-p DIR` is an origin; `-c DIR`
//! is a cache, a site cache (SCC) with `-n`, a client cache (LHC) without; neither is
//! an LHC in `$HOME/.p2pd_cache`. Options of the other role are refused, not ignored.
//! Nothing here exits the process or panics: `main` decides what to print and how to exit.

mod args;
mod man;
#[cfg(test)]
mod tests;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use crate::pure::digest::DigestAlgo;

pub use man::man_page;

/// TCP port for SPP and HTTP when `-P` (or a URL / host:port) does not name one.
pub const DEFAULT_PORT: u16 = 1111;
/// Block size an origin publishes with when `-b` is not given.
pub const DEFAULT_BLOCK_SIZE_BYTES: u32 = 256 * 1024;
/// Smallest `-b`: below it per-block overhead (digest, frame header) dominates.
pub const MIN_BLOCK_SIZE_BYTES: u32 = 16 * 1024;
/// Largest `-b`: one block must fit comfortably in every shard's buffers.
pub const MAX_BLOCK_SIZE_BYTES: u32 = 16 * 1024 * 1024;
/// `-b` must be a multiple of this, so blocks stay aligned for direct I/O.
pub const BLOCK_SIZE_ALIGN_BYTES: u32 = 4 * 1024;
/// Memory cache for hot blocks when `-M` is not given.
pub const DEFAULT_MEMORY_CACHE_BYTES: u64 = 256 * 1024 * 1024;
/// How often the published directory is rescanned when `--rescan-interval` is not given.
pub const DEFAULT_RESCAN_INTERVAL_MS: u64 = 2000;
/// Smallest `--rescan-interval`: a tighter loop would spend the cores on `stat` calls.
pub const MIN_RESCAN_INTERVAL_MS: u64 = 100;
/// Connection limit per node, shared out among shards, when `--max-connections` is absent.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Smallest `-C`: four blocks of the smallest block size (16 KiB). Blocks are stored
/// whole, so a smaller limit could hardly hold any; a file's blocks may still be larger
/// (up to 16 MiB), which the cache must cope with.
pub const MIN_DISK_CACHE_BYTES: u64 = 64 * 1024;
/// How long a cache trusts a file's info (its version) before asking the upstream
/// again, when `--info-ttl` is not given.
pub const DEFAULT_INFO_TTL_MS: u64 = 2000;
/// Deadline for connecting to an upstream node and for each answer from it, when
/// `--upstream-timeout` is not given.
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 10_000;
/// How long a p2p registry remembers a silent peer, when `--peer-expiry` is not given.
pub const DEFAULT_PEER_EXPIRY_MS: u64 = 120_000;
/// Smallest `--peer-expiry`: peers report every fraction of a second while they fetch.
pub const MIN_PEER_EXPIRY_MS: u64 = 1000;
/// How often a cache announces the blocks it holds, when `--announce-interval` is not
/// given: a quarter of the default expiry, so a registry hears every holder several
/// times before it would forget it.
pub const DEFAULT_ANNOUNCE_INTERVAL_MS: u64 = 30_000;
/// Smallest `--announce-interval`.
pub const MIN_ANNOUNCE_INTERVAL_MS: u64 = 100;
/// The client cache's directory, under `$HOME`, when neither `-p` nor `-c` is given.
pub const DEFAULT_CACHE_DIR_NAME: &str = ".p2pd_cache";
/// `p2pd get` timeout for connecting and for every wait, when `--timeout` is not given.
pub const DEFAULT_GET_TIMEOUT_MS: u64 = 10_000;
/// Most `--threads`: one shard per core, and no machine p2pd targets has more.
pub const MAX_THREADS: usize = 1024;
/// Exit status for every command-line error, as BSD sysexits-style tools use.
pub const USAGE_EXIT_CODE: i32 = 2;

/// Prefix of every error line about the node's command line.
const PREFIX: &str = "p2pd";
/// Prefix of every error line about `p2pd get`'s own arguments.
const GET_PREFIX: &str = "p2pd get";
/// Longest DNS name (RFC 1035), for host name checks.
const MAX_HOST_NAME_LEN: usize = 253;

/// A node address as given to `-l` or `-S`: a host name or IP address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP address; IPv6 addresses are kept without brackets.
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// `host`, `host:port`, `[v6]`, `[v6]:port`, `1.2.3.4:5`; default port 1111.
    /// A bare IPv6 address (`::1`) is accepted too and gets the default port.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("'{s}' is not host[:port] ({why})");
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("missing ']' after the IPv6 address"))?;
            let addr = Ipv6Addr::from_str(inside)
                .map_err(|_| bad("not an IPv6 address inside the brackets"))?;
            let port = if after.is_empty() {
                DEFAULT_PORT
            } else if let Some(p) = after.strip_prefix(':') {
                parse_connect_port(p).map_err(|why| bad(&why))?
            } else {
                return Err(bad("unexpected text after ']'"));
            };
            return Ok(HostPort {
                host: addr.to_string(),
                port,
            });
        }
        // More than one ':' without brackets can only be a bare IPv6 address.
        if s.matches(':').count() > 1 {
            let addr = Ipv6Addr::from_str(s)
                .map_err(|_| bad("write IPv6 addresses as [addr] or [addr]:port"))?;
            return Ok(HostPort {
                host: addr.to_string(),
                port: DEFAULT_PORT,
            });
        }
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, parse_connect_port(p).map_err(|why| bad(&why))?),
            None => (s, DEFAULT_PORT),
        };
        check_host_name(host).map_err(|why| bad(&why))?;
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostPort::parse(s)
    }
}

/// What a node is, from `-p` / `-c` / `-n` (spec section 2).
#[derive(Debug, Clone, PartialEq)]
pub enum NodeRole {
    /// `-p DIR`, canonicalized; exists and is a directory.
    Origin { publish_dir: PathBuf },
    /// `-c DIR` (SCC with -n, LHC without), or neither -p nor -c (LHC in
    /// `$HOME/.p2pd_cache`).
    Cache(CacheConfig),
}

/// A cache node's own settings (SCC or LHC).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// `-c DIR`, or `$HOME/.p2pd_cache` when neither -p nor -c is given. Created during
    /// validation if missing, then canonicalized; exists and is a directory.
    pub dir: PathBuf,
    /// `-n` subnets (repeatable). Empty = LHC: recursive fetches only for requesters on
    /// the local machine; non-empty = SCC: recursive fetches for requesters inside one
    /// of them. Everyone may get blocks the cache already holds (subject to `-A`).
    pub recursive_subnets: Vec<ipnet::IpNet>,
    /// `-S host:port` (port defaults to 1111): all misses go to it first instead of the
    /// URL's host. Never this node's own `--bind` address and `-P` port.
    pub parent: Option<HostPort>,
    /// `-C size`, >= [`MIN_DISK_CACHE_BYTES`] (None = no limit beyond the disk).
    pub disk_limit_bytes: Option<u64>,
}

impl CacheConfig {
    /// True for a site cache (SCC, some `-n`), false for a client cache (LHC).
    pub fn is_site_cache(&self) -> bool {
        !self.recursive_subnets.is_empty()
    }
}

/// Everything a node (origin, SCC or LHC) needs from its command line.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Origin or cache, with the role's own settings.
    pub role: NodeRole,
    /// `-b`
    pub block_size_bytes: u32,
    /// `-m`
    pub digest: DigestAlgo,
    /// `-l` (repeatable)
    pub mirrors: Vec<HostPort>,
    /// `-A` (repeatable), lowercased
    pub allowed_hosts: Vec<String>,
    /// `-M`
    pub memory_cache_bytes: u64,
    /// `-P` (0 = pick a free port; allowed, for tests)
    pub port: u16,
    /// `--bind ADDR`, default 0.0.0.0 (all)
    pub bind: IpAddr,
    /// `--threads N`, default the available parallelism; 1..=1024
    pub threads: usize,
    /// `--index-dir DIR` (None = default chosen by the server)
    pub index_dir: Option<PathBuf>,
    /// `-T`
    pub playlist: bool,
    /// `-Z`
    pub start_cold: bool,
    /// `-d` count (`-dd` = 2)
    pub debug_level: u8,
    /// `--rescan-interval MS`, >= 100
    pub rescan_interval_ms: u64,
    /// `--max-connections N`, >= 1
    pub max_connections: usize,
    /// `--verify-reads`: hash every block read from disk, not only trust the index's
    /// file identity.
    pub verify_reads: bool,
    /// `--buffered-reads`: page-cache reads instead of direct I/O.
    pub buffered_reads: bool,
    /// `--info-ttl MS`: how long a cache trusts a file's info (its version) before
    /// asking the upstream again; 0 = revalidate on every request.
    pub info_ttl_ms: u64,
    /// `--upstream-timeout MS`, >= 1: deadline for connecting to an upstream node and
    /// for each answer from it.
    pub upstream_timeout_ms: u64,
    /// `--upload-rate`: most bytes per second of file data sent, None = no limit.
    pub upload_rate_bytes_per_s: Option<u64>,
    /// `-i`: record the peers that report blocks (Have) and hand them out in Locate
    /// answers (origins and caches).
    pub p2p: bool,
    /// `-N`: a requester inside one of these subnets is handed peers of that subnet
    /// only (and one outside them no peer inside).
    pub locality: Vec<ipnet::IpNet>,
    /// `--peer-expiry MS`, >= 1000: a peer silent this long is forgotten (`-i`).
    pub peer_expiry_ms: u64,
    /// `--announce-interval MS`, >= 100: caches announce what they hold this often.
    pub announce_interval_ms: u64,
}

impl ServeConfig {
    /// The published directory when this node is an origin.
    pub fn publish_dir(&self) -> Option<&Path> {
        match &self.role {
            NodeRole::Origin { publish_dir } => Some(publish_dir),
            NodeRole::Cache(_) => None,
        }
    }

    /// The cache settings when this node is a cache (SCC or LHC).
    pub fn cache(&self) -> Option<&CacheConfig> {
        match &self.role {
            NodeRole::Origin { .. } => None,
            NodeRole::Cache(cache) => Some(cache),
        }
    }
}

/// Everything `p2pd get` needs from its command line.
#[derive(Debug, Clone)]
pub struct GetConfig {
    /// Validated: scheme spp, has a host, path non-empty; port defaults 1111
    /// (see [`SppUrl::parse`] to take it apart).
    pub url: String,
    /// `-o/--output FILE` (None = stdout; `-o -` is stdout too)
    pub output: Option<PathBuf>,
    /// `--timeout MS` (connect and every wait), >= 1
    pub timeout_ms: u64,
    /// `-q/--quiet`: no progress bar
    pub quiet: bool,
    /// `-d`
    pub debug_level: u8,
}

/// An `spp://host[:port]/path` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SppUrl {
    /// Host and port (1111 when the URL names none).
    pub origin: HostPort,
    /// The path as written in the URL (percent-encoding kept), starting with '/'.
    pub path: String,
}

impl SppUrl {
    /// Parses and validates an spp:// URL: scheme spp, a host, a path other than "/".
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not an spp:// URL (expected spp://host[:port]/path)");
        let url = url::Url::parse(s).map_err(|_| bad())?;
        if url.scheme() != "spp" {
            return Err(bad());
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err(bad()),
        };
        let path = url.path();
        if path.is_empty() || path == "/" {
            return Err(bad());
        }
        Ok(SppUrl {
            origin: HostPort {
                host,
                port: url.port().unwrap_or(DEFAULT_PORT),
            },
            path: path.to_string(),
        })
    }
}

/// What the command line asks for.
// Built once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Command {
    Serve(ServeConfig),
    Get(GetConfig),
    /// Hidden `p2pd man`: print [`man_page`].
    Man,
}

/// A command line that cannot be run, or `--help`/`--version` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// ONE line, no trailing newline (the full help text for `--help`/`--version`).
    pub message: String,
    /// 2 for usage errors, 0 for `--help`/`--version`.
    pub exit_code: i32,
    /// True for `--help`/`--version` output (print to stdout, exit 0).
    pub to_stdout: bool,
}

impl CliError {
    fn usage(message: String) -> Self {
        CliError {
            message,
            exit_code: USAGE_EXIT_CODE,
            to_stdout: false,
        }
    }

    /// `p2pd: -b/--block-size: <why>`
    fn option(option: &str, why: impl fmt::Display) -> Self {
        Self::usage(format!("{PREFIX}: {option}: {why}"))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Parses and validates argv (including `argv[0]`). Never panics and never exits the process itself.
///
/// A node's cache directory is created here when validation passes (`-c DIR`, or
/// `$HOME/.p2pd_cache` when neither -p nor -c is given).
pub fn parse_args<I, T>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    parse_args_with_home(args, std::env::var_os("HOME").as_deref())
}

/// [`parse_args`] with the home directory given instead of read from `$HOME`, so tests
/// need not change the process environment.
fn parse_args_with_home<I, T>(args: I, home: Option<&OsStr>) -> Result<Command, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = args::Cli::command()
        .try_get_matches_from(args)
        .map_err(from_clap_error)?;
    let parsed = args::Cli::from_arg_matches(&matches).map_err(from_clap_error)?;
    match parsed.command {
        Some(args::SubCmd::Get(get)) => validate_get(get).map(Command::Get),
        Some(args::SubCmd::Man) => Ok(Command::Man),
        None => validate_serve(parsed.serve, &matches, home).map(Command::Serve),
    }
}

/// Parses sizes with k/M/G/T suffixes as powers of 1024 ("256k", "1G", "512", "1.5M"), via parse-size.
pub fn parse_size_bytes(s: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim())
        .map_err(|_| {
            format!(
                "'{s}' is not a size (a number with an optional k, M, G or T suffix, \
                 powers of 1024, e.g. 256k or 1.5M)"
            )
        })
}

/// Turns clap's report into our one line; `--help`/`--version` pass through whole.
fn from_clap_error(err: clap::Error) -> CliError {
    let text = err.render().to_string();
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => CliError {
            message: text.trim_end().to_string(),
            exit_code: 0,
            to_stdout: true,
        },
        _ => CliError::usage(format!("{PREFIX}: {}", one_line(&text))),
    }
}

/// The first paragraph of clap's report, without "error: ", joined into one line:
/// the usage and "For more information" parts after the first blank line are dropped.
fn one_line(report: &str) -> String {
    let words: Vec<&str> = report
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .flat_map(|line| line.split_whitespace())
        .collect();
    let joined = words.join(" ");
    match joined.strip_prefix("error: ") {
        Some(rest) => rest.to_string(),
        None => joined,
    }
}

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

fn validate_serve(
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
        upstream_timeout_ms: a.upstream_timeout,
        upload_rate_bytes_per_s,
        p2p: a.p2p,
        locality,
        peer_expiry_ms: a.peer_expiry,
        announce_interval_ms: a.announce_interval,
    })
}

fn validate_get(a: args::GetArgs) -> Result<GetConfig, CliError> {
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

/// `-b`: size syntax, a multiple of 4 KiB, within [16 KiB, 16 MiB].
fn parse_block_size(s: &str) -> Result<u32, String> {
    let bytes = parse_size_bytes(s)?;
    // Show the byte count too when the operator wrote a suffix.
    let shown = if s.trim() == bytes.to_string() {
        bytes.to_string()
    } else {
        format!("{s} ({bytes} bytes)")
    };
    if bytes % u64::from(BLOCK_SIZE_ALIGN_BYTES) != 0 {
        return Err(format!("{shown} is not a multiple of 4 KiB"));
    }
    if bytes < u64::from(MIN_BLOCK_SIZE_BYTES) || bytes > u64::from(MAX_BLOCK_SIZE_BYTES) {
        return Err(format!("{shown} is outside 16 KiB..16 MiB"));
    }
    u32::try_from(bytes).map_err(|_| format!("{shown} is outside 16 KiB..16 MiB"))
}

/// `-C`: size syntax, at least [`MIN_DISK_CACHE_BYTES`].
fn parse_disk_cache_size(s: &str) -> Result<u64, String> {
    let bytes = parse_size_bytes(s)?;
    if bytes < MIN_DISK_CACHE_BYTES {
        let shown = if s.trim() == bytes.to_string() {
            bytes.to_string()
        } else {
            format!("{s} ({bytes} bytes)")
        };
        return Err(format!(
            "{shown} is below the minimum of 64 KiB (the cache must have room for whole blocks)"
        ));
    }
    Ok(bytes)
}

/// Smallest `--upload-rate`: one of the smallest blocks per second.
pub const MIN_UPLOAD_RATE_BYTES_PER_S: u64 = 16 * 1024;

fn parse_upload_rate(s: &str) -> Result<u64, String> {
    let rate = parse_size_bytes(s)?;
    if rate < MIN_UPLOAD_RATE_BYTES_PER_S {
        return Err(format!(
            "{s} is below the minimum of 16k bytes per second (one of the smallest blocks)"
        ));
    }
    Ok(rate)
}

/// `-n`/`-N`: a subnet in CIDR form ("10.0.0.0/8", "2001:db8::/32").
fn parse_subnet(s: &str) -> Result<ipnet::IpNet, String> {
    ipnet::IpNet::from_str(s).map_err(|_| format!("'{s}' is not a subnet in CIDR form"))
}

/// A port a node can be reached on: 1..=65535.
fn parse_connect_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be connected to".to_string()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("'{p}' is not a port number")),
    }
}

/// A DNS name or IPv4 address as it may appear in a URL's host.
fn check_host_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty host".to_string());
    }
    if host.len() > MAX_HOST_NAME_LEN {
        return Err(format!("host longer than {MAX_HOST_NAME_LEN} characters"));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if !host.chars().all(valid) {
        return Err("a host name has only letters, digits, '-', '.' and '_'".to_string());
    }
    Ok(())
}

/// `-A`: a host name or IPv4 address, lowercased (hosts compare case-insensitively), or
/// an IPv6 address with or without brackets, kept in canonical form without them as
/// [`HostPort`] does.
fn normalize_allowed_host(s: &str) -> Result<String, String> {
    let unbracketed = s
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(addr) = Ipv6Addr::from_str(unbracketed) {
        return Ok(addr.to_string());
    }
    check_host_name(s)?;
    Ok(s.to_ascii_lowercase())
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
fn default_cache_dir(home: Option<&OsStr>) -> Result<PathBuf, String> {
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
fn names_this_node(parent: &HostPort, bind: IpAddr, port: u16) -> bool {
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
fn default_threads() -> usize {
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
