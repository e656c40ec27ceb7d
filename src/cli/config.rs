//! What a valid command line yields: [`Command`] with the node's [`ServeConfig`] (its
//! [`NodeRole`] and [`CacheConfig`]) or `p2pd get`'s [`GetConfig`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::values::HostPort;
use crate::pure::digest::DigestAlgo;

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
    /// `-C size`, >= [`MIN_DISK_CACHE_BYTES`](super::defaults::MIN_DISK_CACHE_BYTES) (None = no limit beyond the disk).
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
    /// `--read-ahead SECS`, <= 600: seconds of a file a cache fetches ahead of each
    /// HTTP reader; None = the role's default (20 on a client cache, 0 on a site one).
    pub read_ahead_secs: Option<u64>,
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
    /// (see [`SppUrl::parse`](super::values::SppUrl::parse) to take it apart).
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

/// What the command line asks for.
// Built once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Command {
    Serve(ServeConfig),
    Get(GetConfig),
    /// Hidden `p2pd man`: print [`man_page`](super::man::man_page).
    Man,
}
