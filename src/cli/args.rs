//! The clap definitions of p2pd's command line: the one source for `--help` and p2pd.8.
//!
//! Values that need more than a type check (sizes, subnets, host:port, digest names)
//! are taken as text here and validated in `validate.rs`, so that every error names
//! its option as `-b/--block-size` in one line instead of clap's multi-line report.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, ColorChoice, Parser, Subcommand};

use super::defaults::{
    DEFAULT_ANNOUNCE_INTERVAL_MS, DEFAULT_GET_TIMEOUT_MS, DEFAULT_INFO_TTL_MS,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_PEER_EXPIRY_MS, DEFAULT_PORT, DEFAULT_RESCAN_INTERVAL_MS,
    DEFAULT_UPSTREAM_TIMEOUT_MS,
};

/// Widest help output, so `--help` stays readable on very wide terminals.
const MAX_HELP_WIDTH_COLUMNS: usize = 100;

/// One bracketed item of a synopsis: the option as typed, and its argument's name.
pub(super) type SynopsisItem = (&'static str, Option<&'static str>);

/// The node's synopsis: the original man page's, verbatim, then our long-only options.
pub(super) const SERVE_SYNOPSIS: [SynopsisItem; 25] = [
    ("-dDiTZ", None),
    ("-A", Some("hostname")),
    ("-b", Some("blocksize")),
    ("-C", Some("diskcachesize")),
    ("-c", Some("cachedirectory")),
    ("-l", Some("mirroraddress:port")),
    ("-M", Some("memorycachesize")),
    ("-m", Some("digestname")),
    ("-N", Some("subnet")),
    ("-n", Some("subnet")),
    ("-P", Some("portnumber")),
    ("-p", Some("publiccontentdirectory")),
    ("-S", Some("proxyaddress:port")),
    ("--bind", Some("ADDR")),
    ("--threads", Some("N")),
    ("--index-dir", Some("DIR")),
    ("--rescan-interval", Some("MS")),
    ("--max-connections", Some("N")),
    ("--verify-reads", None),
    ("--buffered-reads", None),
    ("--info-ttl", Some("MS")),
    ("--upstream-timeout", Some("MS")),
    ("--upload-rate", Some("BYTES/S")),
    ("--peer-expiry", Some("MS")),
    ("--announce-interval", Some("MS")),
];

/// `p2pd get`'s synopsis after its URL.
pub(super) const GET_SYNOPSIS: [SynopsisItem; 4] = [
    ("-o", Some("FILE")),
    ("--timeout", Some("MS")),
    ("-q", None),
    ("-d", None),
];

/// Width the usage lines are wrapped to in `--help` and error reports.
const USAGE_WIDTH_COLUMNS: usize = 90;

/// `[-A hostname]` for one synopsis item.
fn bracketed(item: &SynopsisItem) -> String {
    match item.1 {
        Some(value) => format!("[{} {value}]", item.0),
        None => format!("[{}]", item.0),
    }
}

/// Words after `lead`, wrapped, continuation lines aligned under the first word.
fn wrapped(lead: &str, words: &[String], indent: usize) -> String {
    let mut out = String::from(lead);
    let hanging = indent + lead.len() + 1;
    let mut col = indent + lead.len();
    for word in words {
        if col + 1 + word.len() > USAGE_WIDTH_COLUMNS {
            out.push('\n');
            out.push_str(&" ".repeat(hanging));
            col = hanging;
        } else {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.len();
    }
    out
}

/// Indent of usage text after clap's "Usage: ".
const USAGE_INDENT_COLUMNS: usize = "Usage: ".len();

/// The `get` usage line.
fn get_usage() -> String {
    let mut words = vec!["URL".to_string()];
    words.extend(GET_SYNOPSIS.iter().map(bracketed));
    wrapped("p2pd get", &words, USAGE_INDENT_COLUMNS)
}

/// The node's usage lines followed by the `get` line, for the top-level `--help`.
fn usage() -> String {
    let words: Vec<String> = SERVE_SYNOPSIS.iter().map(bracketed).collect();
    format!(
        "{}\n{}{}",
        wrapped("p2pd", &words, USAGE_INDENT_COLUMNS),
        " ".repeat(USAGE_INDENT_COLUMNS),
        get_usage()
    )
}

const ABOUT: &str =
    "Video-on-demand content distribution daemon: origin, site cache and client proxy";

const LONG_ABOUT: &str = "\
p2pd builds a content distribution network for large video-on-demand files. The same \
binary runs as an origin server (-p publishes a directory), as a site or ISP cache \
(-c with -n) and as a client-side cache and HTTP proxy on the viewer's machine (-c \
without -n, or neither -p nor -c).

Between nodes p2pd speaks SPP, a block protocol in which every block of a file is \
verified against a message digest published by the origin. Media players and browsers \
speak plain HTTP to any node, directly or through it as an http_proxy. SPP and HTTP share \
one TCP port (default 1111); the first bytes of a connection decide which one it speaks.

Files are named spp://host[:port]/path; http://host:port/path names the same file over \
HTTP.

The origin, site cache and client cache/proxy roles work, and so does p2p mode (-i, \
-N). Detaching (-D) comes in a later release: it is parsed, then refused with a \
message, never silently ignored. So are the options of the other role: an origin \
refuses -C, -n and -S; a cache refuses -b, -m, -T, --index-dir, --rescan-interval, \
--verify-reads and --buffered-reads.

A cache fetches a block it does not hold (a recursive fetch) from its parent (-S) or \
the URL's host, verifies it and keeps it. A site cache (-n) does so for requesters inside \
its -n subnets, a client cache only for requesters on its own machine; every cache \
serves the blocks it already holds to anyone (subject to -A).

p2pd stays in the foreground and logs to standard error, as systemd expects. A bad \
command line exits with status 2 and one line naming the option.";

/// The whole command line: server options, or one subcommand.
#[derive(Parser, Debug)]
#[command(
    name = "p2pd",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    override_usage = usage(),
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true,
    color = ColorChoice::Never,
    max_term_width = MAX_HELP_WIDTH_COLUMNS,
)]
pub(super) struct Cli {
    #[command(flatten)]
    pub(super) serve: ServeArgs,

    #[command(subcommand)]
    pub(super) command: Option<SubCmd>,
}

/// The subcommands; without one, p2pd runs a node.
// The doc comments here are clap's help text (and the man page's), not rustdoc:
// `spp://host[:port]/path` stays as the user reads it.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Subcommand, Debug)]
pub(super) enum SubCmd {
    /// Fetch spp://host[:port]/path, verifying every block against the origin's digests
    #[command(
        long_about = "Fetch one file named spp://host[:port]/path from a p2pd node \
        (default port 1111) and write it to standard output or to -o FILE. Every block \
        is verified against the digest the origin published before it is written; a \
        block that does not verify, a missing file or a timeout ends the fetch with a \
        non-zero exit status and one line on standard error.",
        override_usage = get_usage()
    )]
    Get(GetArgs),

    /// Print the p2pd.8 man page (roff) to standard output
    #[command(hide = true)]
    Man,
}

/// Options of `p2pd get`.
// The doc comments here are clap's help text, not rustdoc (see `SubCmd`).
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Args, Debug)]
pub(super) struct GetArgs {
    /// The file to fetch: spp://host[:port]/path
    #[arg(value_name = "URL")]
    pub(super) url: String,

    /// Write the file to FILE instead of standard output
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        long_help = "Write the file to FILE instead of standard output ('-' also means \
        standard output). FILE is written as blocks arrive and verify."
    )]
    pub(super) output: Option<PathBuf>,

    /// Give up after MS milliseconds without progress
    #[arg(
        long = "timeout",
        value_name = "MS",
        default_value_t = DEFAULT_GET_TIMEOUT_MS,
        long_help = "Give up when connecting, or any single wait for an answer, takes \
        longer than MS milliseconds. At least 1. With other sources to fail over to, one \
        attempt at a block ends after at most 3 s (a peer's connection after 1.5 s) and \
        the block is asked of another."
    )]
    pub(super) timeout: u64,

    /// Do not draw a progress bar
    #[arg(
        short = 'q',
        long = "quiet",
        long_help = "Do not draw a progress bar on standard error (none is drawn when \
        standard error is not a terminal either)."
    )]
    pub(super) quiet: bool,

    /// Debug logging; -dd for trace
    #[arg(short = 'd', long = "debug", action = ArgAction::Count)]
    pub(super) debug: u8,
}

/// Options of a node (origin, SCC or LHC), in the man page's order.
#[derive(Args, Debug)]
pub(super) struct ServeArgs {
    /// Accept only URLs whose host is HOSTNAME (repeatable)
    #[arg(
        short = 'A',
        long = "allow-host",
        value_name = "hostname",
        action = ArgAction::Append,
        long_help = "Request filtering: only URLs whose host is one of the given names \
        are accepted, compared case-insensitively. Repeatable. Without -A any host is \
        accepted. Used on caches so that they serve one CDN only and are no open proxy."
    )]
    pub(super) allow_host: Vec<String>,

    /// Block size used when publishing (multiple of 4k, 16k..16M)
    #[arg(
        short = 'b',
        long = "block-size",
        value_name = "blocksize",
        default_value = "256k",
        long_help = "Block size used when publishing files (origin). A multiple of \
        4 KiB between 16 KiB and 16 MiB. Sizes take k, M, G and T suffixes (powers of \
        1024), e.g. 256k or 1M. Caches and clients use whatever block size the origin \
        announces for a file. Origins only."
    )]
    pub(super) block_size: String,

    /// Disk cache limit for caches (LRU eviction beyond it)
    #[arg(
        short = 'C',
        long = "disk-cache-size",
        value_name = "diskcachesize",
        long_help = "Disk cache limit for caches; the least recently used blocks are \
        evicted beyond it. Default: no limit beyond the disk. Sizes take k, M, G and T \
        suffixes (powers of 1024); at least 64k. Caches only."
    )]
    pub(super) disk_cache_size: Option<String>,

    /// Cache directory (site cache or client cache role)
    #[arg(
        short = 'c',
        long = "cache",
        value_name = "cachedirectory",
        long_help = "Cache directory: makes this node a site cache (SCC, with -n) or a \
        client cache and HTTP proxy (LHC, without -n). Created if missing. Without -p \
        and -c the node is a client cache in $HOME/.p2pd_cache. A client cache fetches \
        recursively (asks upstream for blocks it does not hold) only for requesters on \
        the local machine: those connecting from the address they connect to, or from \
        127.0.0.1 or ::1. Everyone may get the blocks it already holds. Cannot be used together \
        with -p."
    )]
    pub(super) cache: Option<PathBuf>,

    /// Debug logging; -dd for trace
    #[arg(
        short = 'd',
        long = "debug",
        action = ArgAction::Count,
        long_help = "Debug logging to standard error; -dd for trace logging."
    )]
    pub(super) debug: u8,

    /// Detach and run in the background
    #[arg(
        short = 'D',
        long = "detach",
        long_help = "Detach and run in the background, with a pid file and logs to a \
        file or syslog. Without -D p2pd stays in the foreground, as systemd expects. Not \
        supported yet."
    )]
    pub(super) detach: bool,

    /// p2p mode: hand out clients that hold blocks as extra sources
    #[arg(
        short = 'i',
        long = "p2p",
        long_help = "p2p mode: nodes that fetched blocks from this node and reported \
        them are added to the locations handed to later requesters for those blocks, so \
        viewers serve each other. Works on origins and caches."
    )]
    pub(super) p2p: bool,

    /// Mirror or recursive cache listed in every location answer (repeatable)
    #[arg(
        short = 'l',
        long = "mirror",
        value_name = "mirroraddress:port",
        action = ArgAction::Append,
        long_help = "Another node that can serve every published file: a mirror with \
        full copies, or a cache that fetches recursively. Listed in every location \
        answer. The port defaults to 1111; IPv6 addresses are written [addr]:port. \
        Repeatable."
    )]
    pub(super) mirror: Vec<String>,

    /// Memory cache for hot blocks, shared out among the cores
    #[arg(
        short = 'M',
        long = "memory-cache-size",
        value_name = "memorycachesize",
        default_value = "256M",
        long_help = "Memory cache for hot blocks, shared out among the cores. Sizes \
        take k, M, G and T suffixes (powers of 1024)."
    )]
    pub(super) memory_cache_size: String,

    /// Digest algorithm for published blocks
    #[arg(
        short = 'm',
        long = "digest",
        value_name = "digestname",
        default_value = "sha256",
        long_help = "Digest algorithm for the blocks the origin publishes: sha256, \
        sha224, sha384, sha512 or sha512-256. An unknown name is refused with the list \
        of accepted ones. Origins only: caches use the digests the origin announces."
    )]
    pub(super) digest: String,

    /// p2p locality: requesters in SUBNET get peers from SUBNET only (repeatable)
    #[arg(
        short = 'N',
        long = "locality",
        value_name = "subnet",
        action = ArgAction::Append,
        long_help = "Locality for p2p mode: when any -N is given, a requester inside one \
        of these subnets (CIDR, e.g. 10.1.0.0/16) is only handed peers from the same \
        subnet, so traffic stays inside a site. Repeatable."
    )]
    pub(super) locality: Vec<String>,

    /// Subnet whose nodes may make recursive requests; makes a site cache (repeatable)
    #[arg(
        short = 'n',
        long = "recursive-subnet",
        value_name = "subnet",
        action = ArgAction::Append,
        long_help = "Subnet (CIDR, e.g. 192.168.0.0/16) whose nodes may make recursive \
        requests, i.e. ask for blocks this node must fetch upstream first; makes a -c \
        node a site cache (it needs -c DIR). -n 0.0.0.0/0 lets anyone. Repeatable. \
        Without -n a cache is a client cache: it fetches recursively only for \
        requesters on the local machine (those connecting from the address they connect \
        to, or from 127.0.0.1 or ::1). Everyone may get the blocks a cache already holds. \
        Caches only."
    )]
    pub(super) recursive_subnet: Vec<String>,

    /// TCP port for SPP and HTTP
    #[arg(
        short = 'P',
        long = "port",
        value_name = "portnumber",
        default_value_t = DEFAULT_PORT,
        long_help = "TCP port on which both SPP and HTTP are served. 0 picks a free \
        port."
    )]
    pub(super) port: u16,

    /// Publish the files under this directory (origin role)
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "publiccontentdirectory",
        long_help = "Publish the files under this directory (origin role). Files added \
        later appear without a restart; changed files get new digests. The directory \
        must exist. Cannot be used together with -c."
    )]
    pub(super) publish: Option<PathBuf>,

    /// Parent node: all misses go to it first
    #[arg(
        short = 'S',
        long = "parent",
        value_name = "proxyaddress:port",
        long_help = "Parent: the node one step up the hierarchy. All misses go to it \
        first instead of the URL's host (the URL's host is still the file's identity). \
        The port defaults to 1111; IPv6 addresses are written [addr]:port. It must not \
        be this node itself. Caches only."
    )]
    pub(super) parent: Option<String>,

    /// Answer HTTP requests for published files with an SPP playlist
    #[arg(
        short = 'T',
        long = "playlist",
        long_help = "HTTP requests for an existing published file are answered with an \
        application/x-spp-playlist instead of the file. Origins only."
    )]
    pub(super) playlist: bool,

    /// Start cold: discard caches and stored digest indexes at startup
    #[arg(
        short = 'Z',
        long = "cold",
        long_help = "Start cold: discard the cache contents and the stored digest \
        indexes at startup, so every published file is hashed again."
    )]
    pub(super) cold: bool,

    /// Address to listen on (default: all addresses)
    #[arg(
        long = "bind",
        value_name = "ADDR",
        default_value = "0.0.0.0",
        long_help = "IP address to listen on; 0.0.0.0 listens on every IPv4 address, \
        :: on every IPv6 (and, where the system allows, IPv4) address."
    )]
    pub(super) bind: IpAddr,

    /// Number of cores (shards) to run on (default: all)
    #[arg(
        long = "threads",
        value_name = "N",
        long_help = "Number of executor threads (shards), each pinned to one core. \
        Default: the number of CPUs available to p2pd. Between 1 and 1024."
    )]
    pub(super) threads: Option<usize>,

    /// Where digest indexes are stored
    #[arg(
        long = "index-dir",
        value_name = "DIR",
        long_help = "Directory where the digest indexes of published files are stored \
        so that a restart need not hash every file again. Created if missing. Default: \
        chosen by the server (outside the published directory). Origins only."
    )]
    pub(super) index_dir: Option<PathBuf>,

    /// How often the published directory is rescanned, in ms
    #[arg(
        long = "rescan-interval",
        value_name = "MS",
        default_value_t = DEFAULT_RESCAN_INTERVAL_MS,
        long_help = "How often, in milliseconds, the published directory is scanned \
        for added, changed and removed files. At least 100. Origins only."
    )]
    pub(super) rescan_interval: u64,

    /// Most simultaneous connections, for the whole node
    #[arg(
        long = "max-connections",
        value_name = "N",
        default_value_t = DEFAULT_MAX_CONNECTIONS,
        long_help = "Most simultaneous client connections for the whole node, shared \
        out among the shards; beyond it new connections are closed at once. At least 1."
    )]
    pub(super) max_connections: usize,

    /// Check every block read from a published file against its digest
    #[arg(
        long = "verify-reads",
        long_help = "Check every block an origin reads from a published file against \
        its digest before serving it (costs one hash per block read from disk). By \
        default the origin trusts a published file while its size, modification time \
        and inode still match its index, checked on every read, as BitTorrent seeders \
        do; SPP receivers verify every block anyway. Use this where silent disk \
        corruption is a concern. Origins only (caches verify every block they fetch)."
    )]
    pub(super) verify_reads: bool,

    /// Read published files through the page cache instead of with direct I/O
    #[arg(
        long = "buffered-reads",
        long_help = "Read published files through the kernel's page cache, with its \
        read-ahead, instead of with direct I/O (O_DIRECT). Direct I/O is the default: \
        the memory cache (-M) holds the hot blocks and the page cache would only hold \
        them twice. Some virtual disks serve O_DIRECT reads much more slowly than \
        page-cache reads with large read-ahead; perf/run.sh shows which is faster on \
        a machine. Origins only."
    )]
    pub(super) buffered_reads: bool,

    /// How long a cache trusts a file's info (version), in ms
    #[arg(
        long = "info-ttl",
        value_name = "MS",
        default_value_t = DEFAULT_INFO_TTL_MS,
        long_help = "How long, in milliseconds, a cache trusts a file's info (its size, \
        block size, digests and version) before asking the upstream node again: a \
        shorter time notices a file changed at the origin sooner, a longer one saves \
        round trips. 0 asks again on every request. Matters to caches; an origin accepts it and ignores it."
    )]
    pub(super) info_ttl: u64,

    /// Seconds of a file a cache fetches ahead of each HTTP reader
    #[arg(
        long = "read-ahead",
        value_name = "SECS",
        long_help = "How many seconds of a file, at the pace its reader reads it, a cache \
        fetches ahead of each HTTP reader (a player) before the reader asks for them, so \
        the blocks far ahead can come from slower peers and the player finds them held. \
        At most 600; 0 fetches only what is asked for. Default: 20 on a client cache, \
        for files with peers among their sources only (from servers alone it would \
        compete with every reader's own requests), and 0 on a site cache (-n), whose \
        readers are many; given explicitly it applies whatever the sources. Matters to \
        caches; an origin accepts it and ignores it."
    )]
    pub(super) read_ahead: Option<u64>,

    /// Deadline for upstream connects and answers, in ms
    #[arg(
        long = "upstream-timeout",
        value_name = "MS",
        default_value_t = DEFAULT_UPSTREAM_TIMEOUT_MS,
        long_help = "Deadline, in milliseconds, for connecting to an upstream node (the \
        parent, the URL's host or another source) and for each answer from it; beyond \
        it the cache tries another source or answers \"upstream failed\". At least 1. \
        Matters to caches; an origin accepts it and ignores it."
    )]
    pub(super) upstream_timeout: u64,

    /// Most bytes per second this node sends to others (all connections together)
    #[arg(
        long = "upload-rate",
        value_name = "BYTES/S",
        long_help = "Most bytes per second of file data this node sends to others over \
        SPP and HTTP, all connections together (shared out among the shards), so a node \
        can limit what it contributes, e.g. a viewer's machine serving peers. Sizes take \
        k, M, G and T suffixes (powers of 1024), e.g. 512k or 10M; at least 16k. \
        Default: no limit."
    )]
    pub(super) upload_rate: Option<String>,

    /// p2p mode: forget a peer not heard from for this long, in ms
    #[arg(
        long = "peer-expiry",
        value_name = "MS",
        default_value_t = DEFAULT_PEER_EXPIRY_MS,
        long_help = "p2p mode (-i): a peer that has not reported blocks for this many \
        milliseconds is forgotten and no longer handed out. At least 1000."
    )]
    pub(super) peer_expiry: u64,

    /// Caches: announce the blocks held to the upstream this often, in ms
    #[arg(
        long = "announce-interval",
        value_name = "MS",
        default_value_t = DEFAULT_ANNOUNCE_INTERVAL_MS,
        long_help = "Caches (-c): every this many milliseconds, tell the upstream node         again which blocks of each file this node holds (Have), so a p2p registry (-i)         there keeps handing it out while it holds them, fetching or not. Registries         forget a peer after their --peer-expiry (120000 by default): keep this well         below it. At least 100."
    )]
    pub(super) announce_interval: u64,
}
