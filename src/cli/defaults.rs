//! Defaults and bounds of the command line's values (ports, sizes, intervals, limits)
//! and the exit status of a command-line error.

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

/// Smallest `--upload-rate`: one of the smallest blocks per second.
pub const MIN_UPLOAD_RATE_BYTES_PER_S: u64 = 16 * 1024;

/// Largest `--read-ahead`, in seconds: ten minutes of a film ahead of its reader.
pub const MAX_READ_AHEAD_SECS: u64 = 600;
/// `--read-ahead` on a client cache when not given (a site cache's is 0).
pub const DEFAULT_CLIENT_READ_AHEAD_SECS: u64 = 20;
