//! Command line of p2pd: parsing and validation into [`Command`], and the p2pd.8 man page.
//!
//! clap does the tokenising and type checks; everything with rules of its own (sizes,
//! block-size alignment, subnets, host:port, roles, options of later releases) is checked
//! here so that every refusal is ONE line naming the option, as the spec demands.
//! Nothing here exits the process or panics: `main` decides what to print and how to exit.

mod cli;
mod man;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use crate::digest::DigestAlgo;

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
    /// "host", "host:port", "[v6]", "[v6]:port", "1.2.3.4:5"; default port 1111.
    /// A bare IPv6 address ("::1") is accepted too and gets the default port.
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

/// Everything a node (this release: the origin) needs from its command line.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `-p`, canonicalized; exists and is a directory.
    pub publish_dir: PathBuf,
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

    /// "p2pd: -b/--block-size: <why>"
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

/// Parses and validates argv (including argv[0]). Never panics and never exits the process itself.
pub fn parse_args<I, T>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = cli::Cli::command()
        .try_get_matches_from(args)
        .map_err(from_clap_error)?;
    let parsed = cli::Cli::from_arg_matches(&matches).map_err(from_clap_error)?;
    match parsed.command {
        Some(cli::SubCmd::Get(get)) => validate_get(get).map(Command::Get),
        Some(cli::SubCmd::Man) => Ok(Command::Man),
        None => validate_serve(parsed.serve, &matches).map(Command::Serve),
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

/// Options that a later release implements, in the order they are reported when the
/// command line gives none of them earlier than another: (clap id, option label).
const NOT_YET_SUPPORTED: [(&str, &str); 7] = [
    ("cache", "-c/--cache"),
    ("disk_cache_size", "-C/--disk-cache-size"),
    ("recursive_subnet", "-n/--recursive-subnet"),
    ("parent", "-S/--parent"),
    ("p2p", "-i/--p2p"),
    ("locality", "-N/--locality"),
    ("detach", "-D/--detach"),
];

fn validate_serve(a: cli::ServeArgs, matches: &ArgMatches) -> Result<ServeConfig, CliError> {
    // First every value on its own, so a typo is reported even on a refused option.
    let block_size_bytes =
        parse_block_size(&a.block_size).map_err(|why| CliError::option("-b/--block-size", why))?;
    let memory_cache_bytes = parse_size_bytes(&a.memory_cache_size)
        .map_err(|why| CliError::option("-M/--memory-cache-size", why))?;
    if let Some(s) = &a.disk_cache_size {
        parse_size_bytes(s).map_err(|why| CliError::option("-C/--disk-cache-size", why))?;
    }
    let digest =
        DigestAlgo::from_name(&a.digest).map_err(|e| CliError::option("-m/--digest", e))?;
    for s in &a.locality {
        parse_subnet(s).map_err(|why| CliError::option("-N/--locality", why))?;
    }
    for s in &a.recursive_subnet {
        parse_subnet(s).map_err(|why| CliError::option("-n/--recursive-subnet", why))?;
    }
    let mirrors = a
        .mirror
        .iter()
        .map(|s| HostPort::parse(s).map_err(|why| CliError::option("-l/--mirror", why)))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(s) = &a.parent {
        HostPort::parse(s).map_err(|why| CliError::option("-S/--parent", why))?;
    }
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
    if a.rescan_interval < MIN_RESCAN_INTERVAL_MS {
        return Err(CliError::option(
            "--rescan-interval",
            format!(
                "{} ms is below the minimum of {MIN_RESCAN_INTERVAL_MS} ms",
                a.rescan_interval
            ),
        ));
    }
    if a.max_connections == 0 {
        return Err(CliError::option("--max-connections", "must be at least 1"));
    }
    if matches!(&a.index_dir, Some(d) if d.as_os_str().is_empty()) {
        return Err(CliError::option("--index-dir", "empty path"));
    }

    // Then the role: origin and cache are exclusive, and only the origin exists yet.
    if a.publish.is_some() && a.cache.is_some() {
        return Err(CliError::usage(format!(
            "{PREFIX}: -p/--publish and -c/--cache cannot be used together \
             (a node is an origin or a cache)"
        )));
    }
    if let Some(label) = first_given(matches, &NOT_YET_SUPPORTED) {
        return Err(CliError::option(
            label,
            "not supported yet (this release runs the origin role only)",
        ));
    }
    let Some(publish) = a.publish else {
        return Err(CliError::usage(format!(
            "{PREFIX}: the client cache role (no -p) is not supported yet; \
             publish a directory with -p DIR"
        )));
    };
    let publish_dir =
        check_publish_dir(&publish).map_err(|why| CliError::option("-p/--publish", why))?;

    Ok(ServeConfig {
        publish_dir,
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
    })
}

fn validate_get(a: cli::GetArgs) -> Result<GetConfig, CliError> {
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

/// The label of the option from `candidates` that appears first on the command line.
fn first_given<'a>(matches: &ArgMatches, candidates: &[(&str, &'a str)]) -> Option<&'a str> {
    candidates
        .iter()
        .filter(|(id, _)| matches.value_source(id) == Some(ValueSource::CommandLine))
        .min_by_key(|(id, _)| matches.index_of(id).unwrap_or(usize::MAX))
        .map(|(_, label)| *label)
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

/// One shard per CPU available to us, within 1..=MAX_THREADS.
fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_THREADS)
}
