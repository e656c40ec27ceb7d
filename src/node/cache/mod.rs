//! The cache role of a shard (SCC, LHC): file info for the files whose metadata this
//! shard owns (lookups, revalidation with the upstream, replacing a changed version),
//! and for the blocks it owns the fill path: memory cache, then the cache's disk
//! (verified on every read), then one upstream fetch (verified before anyone sees it),
//! written back with direct I/O under a per-shard byte limit with LRU eviction.
//!
//! Ownership is the origin's: block `i` of a file belongs to
//! [`owner_of`]; a file's metadata (its catalog entry and its single
//! in-flight info fetch) belongs to [`meta_owner`]. Other shards ask through the router.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{self, Either, FutureExt, LocalBoxFuture, Shared};

use crate::disk::cache_index::CacheIndex;
use crate::disk::{FileKey, FileMeta, StoreDir};
use crate::metrics::ShardMetrics;
use crate::node::content::{Refusal, UpstreamError, UpstreamErrorKind};
use crate::node::shard::{owner_of, verify_block, BlockError, Shard, ShardRole};
use crate::pure::lru::{BlockKey, ByteLru};
use crate::pure::protocol::{limits, BlockRange, ErrorCode, FileRef, Holds, Location, PeerProblem};
use crate::pure::sched::{Failure, SchedConfig, Scheduler, SourceClass, SourceId};
use crate::runtime::{self, DataFile};
use crate::upstream::connection::{FetchError, RemoteFile, CONNECT_WHAT};
use crate::upstream::pool::{Upstream, UpstreamConfig, UpstreamPool};
use crate::upstream::range::{class_of, failure_kind, unreachable, Located};

/// How long a resolved upstream host name is reused before it is looked up again.
const DNS_TTL: Duration = Duration::from_secs(60);
/// Host names whose addresses a shard remembers at most.
const MAX_DNS_ENTRIES: usize = 4096;
/// Files whose metadata one shard keeps open (index mapped) at most; beyond it the
/// least recently validated ones are closed (their files stay on disk for a restart).
pub const MAX_FILES_PER_SHARD: usize = 65_536;
/// Open data files kept per shard.
const MAX_OPEN_DATA_FILES: usize = 256;
/// Most locations relayed from the upstream in one Locate answer.
const MAX_RELAYED_LOCATIONS: usize = 32;

/// The shard that owns a file's metadata: its catalog entry and its info fetches.
pub fn meta_owner(file_id: u64, shards: usize) -> usize {
    (crate::node::shard::mix64(file_id ^ 0x6d65_7461) % shards as u64) as usize
}

/// Milliseconds since the process started: the clock of info revalidation.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// A Locate answer as a cache keeps it: who answered (the node to report its peers
/// to) and the nodes it named.
#[derive(Debug, Default)]
struct LocatedSet {
    from: Option<SocketAddr>,
    /// The shard whose connection to `from` got the answer: the registry takes
    /// reports about the peers it handed out on that connection only.
    by_shard: usize,
    nodes: Vec<Located>,
}

/// One version of a file a cache holds blocks of: the origin's info and digests and
/// the have-bitmap (memory-mapped), shared by every shard.
pub struct CachedFile {
    pub key: FileKey,
    pub file_id: u64,
    pub index: CacheIndex,
    /// Set when a newer version replaced this one (or the origin dropped the file):
    /// its files are deleted and no block of it is written again.
    retired: AtomicBool,
    /// When the upstream last confirmed this version ([`now_ms`]); 0 = never.
    validated_ms: AtomicU64,
    /// Other nodes that serve this file, from the upstream's Locate answer (its
    /// mirrors, peers in p2p mode), refreshed at each revalidation.
    located: ArcSwap<LocatedSet>,
    /// When `located` was last asked for ([`now_ms`]); 0 = never.
    located_ms: AtomicU64,
}

impl std::fmt::Debug for CachedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedFile")
            .field("url", &self.key.url())
            .field(
                "version",
                &format_args!("{:016x}", self.index.meta().version),
            )
            .finish()
    }
}

impl CachedFile {
    pub fn new(index: CacheIndex) -> CachedFile {
        let key = index.key().clone();
        CachedFile {
            file_id: key.file_id(),
            key,
            index,
            retired: AtomicBool::new(false),
            validated_ms: AtomicU64::new(0),
            located: ArcSwap::from_pointee(LocatedSet::default()),
            located_ms: AtomicU64::new(0),
        }
    }

    /// Drops a peer found unreachable or bad from the file's sources, for every
    /// shard at once (each keeps its own scheduler); a later Locate answer brings it
    /// back only if the registry still names it.
    fn forget_located(&self, addr: SocketAddr) {
        self.located.rcu(|cur| LocatedSet {
            from: cur.from,
            by_shard: cur.by_shard,
            nodes: cur
                .nodes
                .iter()
                .filter(|l| l.addr != addr)
                .cloned()
                .collect(),
        });
    }

    pub fn meta(&self) -> &FileMeta {
        self.index.meta()
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Relaxed)
    }

    fn file_ref(&self) -> FileRef {
        file_ref(&self.key)
    }

    /// Whether every block of `first..end` is on disk (a requester who may not make
    /// us fetch can only be promised those).
    pub fn holds_all(&self, first: u64, end: u64) -> bool {
        (first..end).all(|i| self.index.has(i))
    }
}

fn file_ref(key: &FileKey) -> FileRef {
    FileRef {
        host: key.host.clone(),
        port: key.port,
        path: key.path.clone(),
    }
}

/// What every shard of a cache node shares, fixed at start-up.
#[derive(Debug)]
pub struct FillConfig {
    /// The `-c` directory (locked by the node's [`StoreDir`]).
    pub dir: PathBuf,
    /// `-S`, resolved once at start-up: every miss goes there.
    pub parent: Option<SocketAddr>,
    /// How long a file's info is trusted before the upstream is asked again.
    pub info_ttl: Duration,
    /// How often the blocks held are announced to the upstream (p2p registries).
    pub announce_interval: Duration,
    /// Block bytes this shard may keep on disk (`-C` shared out), None = no limit.
    pub disk_limit_per_shard_bytes: Option<u64>,
    /// Our Hello, source address and deadlines towards upstreams.
    pub upstream: UpstreamConfig,
    /// Addresses that reach this node itself: an upstream among them would be a loop.
    pub own_addrs: Vec<SocketAddr>,
    /// Who may make this node fetch, for messages ("the local machine", "10.0.0.0/8").
    pub who_may_fetch: String,
}

/// The sources of one file version as a shard sees them.
struct FileSources {
    sources: Vec<Located>,
    sched: Scheduler,
    last_pick: Option<SourceId>,
    /// The attempt running for each (block, source) the scheduler counts as
    /// outstanding: dropping the sender takes the block away from that attempt (its
    /// source stalled, closed, sent a bad block, or was dropped), as `p2pd get` cancels
    /// its requests. An outcome reported for a request not in here no longer counts.
    cancels: HashMap<(u64, SourceId), oneshot::Sender<()>>,
}

impl FileSources {
    fn new(sources: &[Located], cfg: SchedConfig) -> FileSources {
        let mut sched = Scheduler::new(cfg, 0, 0);
        for l in sources {
            sched.add_source_of(l.holds.clone(), l.class);
        }
        FileSources {
            sources: sources.to_vec(),
            sched,
            last_pick: None,
            cancels: HashMap::new(),
        }
    }

    /// Block `index` now goes to `src` (picked by the scheduler): the receiver
    /// resolves when it is taken away from that attempt.
    fn started(&mut self, src: SourceId, index: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.cancels.insert((index, src), tx);
        rx
    }

    /// Requests outstanding past the stall timeout count as failures of their sources
    /// and are taken from their attempts.
    fn check_stalls(&mut self, now: Instant) {
        for a in self.sched.check_stalls(now) {
            if self.cancels.remove(&(a.block, a.source)).is_some() {
                tracing::debug!(source = %self.sources[a.source].addr, block = a.block, "block stalled; asking elsewhere");
            }
        }
    }

    /// The attempt at `src` for block `index` failed. Blocks the scheduler takes from
    /// the source with it (it closed, was dropped) are taken from their attempts too.
    /// False when the request had already been taken away (counted then).
    fn failed(&mut self, src: SourceId, index: u64, why: Failure) -> bool {
        if self.cancels.remove(&(index, src)).is_none() {
            return false;
        }
        for a in self.sched.on_failure(src, index, why) {
            self.cancels.remove(&(a.block, a.source));
        }
        true
    }

    /// The attempt at `src` delivered block `index`, verified.
    fn verified(&mut self, src: SourceId, index: u64, bytes: u64, started: Instant) {
        self.cancels.remove(&(index, src));
        for a in self
            .sched
            .on_verified(src, index, bytes, started, Instant::now())
        {
            self.cancels.remove(&(a.block, a.source));
        }
    }
}

/// What [`Shard::pick_source`] found for a block.
enum Pick {
    /// Ask this source; the receiver resolves if the block is taken from it.
    Source {
        src: SourceId,
        addr: SocketAddr,
        class: SourceClass,
        cancelled: oneshot::Receiver<()>,
    },
    /// Every source that may have the block is busy with others: ask again soon.
    Busy,
    /// No source can give it.
    NoSource,
}

/// The place one attempt of a block fetch holds at its source (the scheduler's
/// outstanding count): given back with the attempt's outcome, or, when the attempt is
/// dropped before it has one (the whole fetch's deadline, the shard stopping), as
/// abandoned, so no path can keep it. (An attempt that outlives its own deadline is a
/// stall: reported as a failure of its source.)
struct SourceSlot<'a> {
    sources: &'a RefCell<HashMap<(u64, u64), FileSources>>,
    file: (u64, u64),
    src: SourceId,
    index: u64,
    open: bool,
}

impl SourceSlot<'_> {
    fn report<T>(&mut self, f: impl FnOnce(&mut FileSources) -> T) -> Option<T> {
        self.open = false;
        // Never borrowed across an await; `try_` only so a drop can never panic.
        let mut all = self.sources.try_borrow_mut().ok()?;
        all.get_mut(&self.file).map(f)
    }

    fn failed(mut self, why: Failure) {
        let (src, index) = (self.src, self.index);
        self.report(|s| s.failed(src, index, why));
    }

    fn verified(mut self, bytes: u64, started: Instant) {
        let (src, index) = (self.src, self.index);
        self.report(|s| s.verified(src, index, bytes, started));
    }

    /// The block was taken from this attempt (and counted) already.
    fn taken_away(mut self) {
        self.open = false;
    }
}

impl Drop for SourceSlot<'_> {
    fn drop(&mut self) {
        if self.open {
            let (src, index) = (self.src, self.index);
            self.report(|s| s.failed(src, index, Failure::Abandoned));
        }
    }
}

/// How often a cache asks its upstream again where a file's blocks are.
const LOCATE_REFRESH: Duration = Duration::from_secs(30);
/// How soon it asks again when it needs a block no known peer holds, from a p2p
/// registry: peers a little ahead in the same film hold more by now.
const LOCATE_ON_MISS: Duration = Duration::from_secs(1);
/// How long it waits for that answer.
const LOCATE_WAIT: Duration = Duration::from_secs(2);
/// Sources one file is fetched from at most.
const MAX_SOURCES_PER_FILE: usize = 16;
/// Files whose source state a shard keeps; beyond it the state starts afresh.
const MAX_FILES_WITH_SOURCES: usize = 4096;
/// Sources tried for one block before its fetch fails.
const MAX_ATTEMPTS_PER_BLOCK: usize = 6;
/// How long a fetch waits before asking again for a source, when every source that
/// may have its block is busy with other blocks.
const SOURCE_WAIT: Duration = Duration::from_millis(10);
/// The most one block fetch may take in all, in upstream timeouts (`--upstream-timeout`):
/// every attempt, waiting for a free source, connecting, verifying. A single source
/// gets its whole timeout and a second try; several get as many failover attempts as
/// fit. Fetches run on whether or not anyone still waits for them, so each must end.
const FETCH_DEADLINE_TIMEOUTS: u32 = 2;

/// The deadline of one block fetch (see [`FETCH_DEADLINE_TIMEOUTS`]).
fn fetch_deadline(upstream_timeout: Duration) -> Duration {
    upstream_timeout * FETCH_DEADLINE_TIMEOUTS
}
/// With other sources to fail over to, the most one attempt may take.
const FAILOVER_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// The most a connection (and handshake) to a peer may take before the peer counts as
/// unreachable: two round trips of a slow intercontinental path, with room to spare.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// The scheduler policy for blocks fetched on demand.
fn sched_config(upstream_timeout: Duration) -> SchedConfig {
    SchedConfig {
        stall_timeout: upstream_timeout,
        ..SchedConfig::default()
    }
}

/// A file version this shard holds blocks of, as [`Fill::known`] remembers it.
struct KnownFile {
    file: Weak<CachedFile>,
    block_count: u64,
}

/// Takes a fresher list of a file's sources into its scheduler, matching them by
/// address (Locate answers order peers by how recently they reported, so positions
/// move): known sources get their new holds and keep what was measured and whether
/// they were dropped, new ones are added, and ones no longer named are left holding
/// nothing. False when the list would grow past twice [`MAX_SOURCES_PER_FILE`]: the
/// caller then starts afresh.
fn merge_sources(entry: &mut FileSources, sources: &[Located]) -> bool {
    let added = sources
        .iter()
        .filter(|l| !entry.sources.iter().any(|e| e.addr == l.addr))
        .count();
    if entry.sources.len() + added > 2 * MAX_SOURCES_PER_FILE {
        return false;
    }
    for (i, e) in entry.sources.iter_mut().enumerate() {
        let holds = sources
            .iter()
            .find(|l| l.addr == e.addr)
            .map_or(Holds::Ranges(Vec::new()), |l| l.holds.clone());
        if e.holds != holds {
            entry.sched.set_holds(i, holds.clone());
            e.holds = holds;
        }
    }
    for l in sources {
        if !entry.sources.iter().any(|e| e.addr == l.addr) {
            entry.sched.add_source_of(l.holds.clone(), l.class);
            entry.sources.push(l.clone());
        }
    }
    true
}

/// Block bytes one shard has waiting for or in disk writes at most: a verified block
/// arriving beyond it is served but not stored, so viewers never wait for a disk
/// slower than the network and the memory held by pending writes stays bounded
/// (64 blocks of 256 KiB, or one of the largest, 16 MiB). It is part of a cache's
/// memory bound (ARCHITECTURE.md); a disk that keeps up at line rate needs a few MiB
/// in flight.
const MAX_WRITE_BYTES_IN_FLIGHT: u64 = 16 << 20;

/// Failed disk writes are logged at most once per this interval per shard.
const WRITE_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// How often a cache shard looks for retired file versions to forget.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// The least time an announce round may take before it is cut short (otherwise
/// twice the interval).
const ANNOUNCE_MIN_DEADLINE: Duration = Duration::from_secs(10);
/// Files one shard announces per round at most (see [`Shard::announce_held`]).
const MAX_ANNOUNCED_FILES: usize = 4096;
/// Runs of held blocks announced per file at most (16 Have frames).
const MAX_ANNOUNCED_RANGES: usize = 16 * limits::MAX_RANGES;
/// Blocks looked at between two chances for other tasks to run, while a retired
/// version's blocks are dropped from the accounting.
const PURGE_SLICE_BLOCKS: u64 = 4096;

/// A host name's addresses and when they were looked up.
type Resolved = (Vec<SocketAddr>, Instant);

type LookupFuture = Shared<LocalBoxFuture<'static, Result<Arc<CachedFile>, Refusal>>>;

/// The upstream's Locate answer for a whole file version, shared by every downstream
/// Locate relayed within [`RELAY_FRESH`] (the ones that arrive while it is asked wait
/// for it).
struct Relayed {
    asked: Instant,
    answer: Shared<LocalBoxFuture<'static, Rc<Vec<Location>>>>,
}

/// How long an upstream's Locate answer is relayed again rather than asked anew: a
/// flood of downstream Locates costs the upstream one round trip per file and second,
/// not one each (a cache relaying each was a free amplifier against its upstream).
/// Peers report blocks in batches a few seconds apart, so the answer is as fresh.
const RELAY_FRESH: Duration = Duration::from_secs(1);
/// Whole-file answers a shard keeps at most (older ones are dropped first).
const MAX_RELAYED_FILES: usize = 256;

/// A shard's cache-role state.
pub struct Fill {
    pub cfg: Arc<FillConfig>,
    pool: UpstreamPool,
    /// Files whose metadata this shard owns, by URL identity.
    catalog: RefCell<HashMap<FileKey, Arc<CachedFile>>>,
    /// The one info fetch in flight per file.
    lookups: RefCell<HashMap<FileKey, LookupFuture>>,
    /// Blocks of this shard on disk, least recently used first; the value finds the
    /// file to punch the block out of.
    disk: RefCell<ByteLru<Weak<CachedFile>>>,
    /// Blocks written to disk right now: served from here until their bit is set.
    writing: RefCell<HashMap<BlockKey, Bytes>>,
    /// Bytes on disk that the LRU does not count: blocks being written and blocks
    /// being punched out. With the LRU's bytes they never exceed the shard's limit, so
    /// the disk use stays within `-C` at every moment, not only between writes.
    reserved_bytes: Cell<u64>,
    write_bytes_in_flight: Cell<u64>,
    /// When a failed disk write was last logged.
    last_write_warning: Cell<Option<Instant>>,
    data_files: RefCell<HashMap<(u64, u64), Rc<DataFile>>>,
    /// Per file version this shard fetches blocks of: its sources and their measured
    /// state.
    sources: RefCell<HashMap<(u64, u64), FileSources>>,
    /// The file versions with blocks in this shard's disk LRU, so that a retired
    /// version's blocks leave the accounting and its data file is closed (a deleted
    /// file's space is freed only when the last descriptor goes).
    known: RefCell<HashMap<(u64, u64), KnownFile>>,
    dns: RefCell<HashMap<(String, u16), Resolved>>,
    /// An announce round is running (see [`Shard::announce_held`]).
    announcing: Cell<bool>,
    /// Upstream Locate answers being relayed, per file version.
    relayed: RefCell<HashMap<(u64, u64), Relayed>>,
}

impl Fill {
    pub fn new(cfg: Arc<FillConfig>) -> Fill {
        let limit = cfg.disk_limit_per_shard_bytes.unwrap_or(u64::MAX);
        Fill {
            pool: UpstreamPool::new(cfg.upstream.clone()),
            cfg,
            catalog: RefCell::new(HashMap::new()),
            lookups: RefCell::new(HashMap::new()),
            disk: RefCell::new(ByteLru::new(limit)),
            writing: RefCell::new(HashMap::new()),
            reserved_bytes: Cell::new(0),
            write_bytes_in_flight: Cell::new(0),
            last_write_warning: Cell::new(None),
            data_files: RefCell::new(HashMap::new()),
            known: RefCell::new(HashMap::new()),
            sources: RefCell::new(HashMap::new()),
            dns: RefCell::new(HashMap::new()),
            announcing: Cell::new(false),
            relayed: RefCell::new(HashMap::new()),
        }
    }

    /// Files whose metadata this shard holds now.
    pub fn files(&self) -> usize {
        self.catalog.borrow().len()
    }
}

/// Turns a fetch failure into what the downstream is told.
pub fn upstream_error(e: &FetchError) -> UpstreamError {
    let kind = match e {
        FetchError::Connect { .. } | FetchError::Closed { .. } | FetchError::Io { .. } => {
            UpstreamErrorKind::Unreachable
        }
        FetchError::Timeout { .. } => UpstreamErrorKind::TimedOut,
        FetchError::Remote { code, .. } => match code {
            ErrorCode::Forbidden | ErrorCode::NotCachedHere => UpstreamErrorKind::Refused,
            ErrorCode::NotFound => UpstreamErrorKind::NotFound,
            _ => UpstreamErrorKind::Failed,
        },
        _ => UpstreamErrorKind::Failed,
    };
    UpstreamError {
        kind,
        message: e.to_string(),
    }
}

/// Whether trying the next address of the same upstream may help.
fn try_next(e: &FetchError) -> bool {
    matches!(
        upstream_error(e).kind,
        UpstreamErrorKind::Unreachable | UpstreamErrorKind::TimedOut
    ) || matches!(
        e,
        FetchError::Remote {
            code: ErrorCode::Busy | ErrorCode::UpstreamFailed | ErrorCode::Internal,
            ..
        }
    )
}

impl Shard {
    /// The cache-role state; None on an origin.
    pub fn fill(&self) -> Option<&Fill> {
        match &self.role {
            ShardRole::Cache(f) => Some(f),
            ShardRole::Origin { .. } => None,
        }
    }

    /// Takes the files found in the store at start-up: the ones whose metadata this
    /// shard owns go into its catalog (to be revalidated on first use), and the blocks
    /// it owns into its disk LRU (evicting at once if the limit shrank).
    pub async fn adopt_stored(self: &Rc<Self>, files: &[Arc<CachedFile>]) {
        let Some(fill) = self.fill() else { return };
        let mut evicted = Vec::new();
        for f in files {
            if meta_owner(f.file_id, self.shards) == self.id {
                fill.catalog.borrow_mut().insert(f.key.clone(), f.clone());
            }
            let version = f.meta().version;
            self.remember_known(f);
            for i in 0..f.index.block_count() {
                if f.index.has(i) && owner_of(f.file_id, i, self.shards) == self.id {
                    let key = BlockKey {
                        file_id: f.file_id,
                        version,
                        index: i,
                    };
                    let len = DataFile::aligned(f.index.block_len(i));
                    evicted.extend(
                        fill.disk
                            .borrow_mut()
                            .insert(key, Arc::downgrade(f), len)
                            .into_iter()
                            .map(|(k, w)| (k, w, len)),
                    );
                }
            }
        }
        self.update_disk_gauges();
        for (key, file, len) in evicted {
            self.evict(key, file, len).await;
        }
    }

    /// Notes that this shard holds (or is about to hold) blocks of `file`.
    fn remember_known(&self, file: &Arc<CachedFile>) {
        if let Some(fill) = self.fill() {
            fill.known
                .borrow_mut()
                .entry((file.file_id, file.meta().version))
                .or_insert_with(|| KnownFile {
                    file: Arc::downgrade(file),
                    block_count: file.index.block_count(),
                });
        }
    }

    /// Runs for the life of a cache shard: every `HOUSEKEEPING_INTERVAL`, forgets
    /// the file versions that were retired (replaced at the origin, gone there) or
    /// dropped: their blocks leave the disk LRU and their data file is closed.
    /// Every `--announce-interval` it also announces the blocks held (see
    /// `Shard::announce_held`).
    pub async fn housekeeping(self: Rc<Self>) {
        let Some(every) = self.fill().map(|f| f.cfg.announce_interval) else {
            return;
        };
        let mut last_announce = Instant::now();
        loop {
            runtime::sleep(HOUSEKEEPING_INTERVAL.min(every)).await;
            self.forget_retired().await;
            let idle = self.fill().is_some_and(|f| !f.announcing.get());
            if idle && last_announce.elapsed() >= every {
                last_announce = Instant::now();
                // Its own task, one round at a time, each with a deadline: a slow
                // upstream delays the next announce, never the housekeeping above.
                let me = self.clone();
                if let Some(f) = me.fill() {
                    f.announcing.set(true);
                }
                runtime::spawn_detached(async move {
                    let deadline = (2 * every).max(ANNOUNCE_MIN_DEADLINE);
                    if runtime::timeout(deadline, me.announce_held())
                        .await
                        .is_err()
                    {
                        tracing::debug!(
                            "announcing the blocks held took longer than {deadline:?}; cut short"
                        );
                    }
                    if let Some(f) = me.fill() {
                        f.announcing.set(false);
                    }
                });
            }
        }
    }

    /// Tells the upstream of each file whose metadata this shard owns which of its
    /// blocks this node holds (Have), if that upstream keeps a p2p registry: a viewer
    /// that watched a film an hour ago is still handed out while it holds the blocks,
    /// and forgotten once it stops announcing (gone, or the blocks evicted). At most
    /// [`MAX_ANNOUNCED_FILES`] files per round, the most recently used first; an
    /// upstream that cannot be reached is skipped for the rest of the round.
    async fn announce_held(self: &Rc<Self>) {
        let Some(fill) = self.fill() else { return };
        let mut files: Vec<Arc<CachedFile>> = fill
            .catalog
            .borrow()
            .values()
            .filter(|f| !f.is_retired())
            .cloned()
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.validated_ms.load(Relaxed)));
        files.truncate(MAX_ANNOUNCED_FILES);
        let mut skip: Vec<SocketAddr> = Vec::new();
        for f in files {
            runtime::yield_if_needed().await;
            let held = f
                .index
                .held_ranges(0, f.index.block_count(), MAX_ANNOUNCED_RANGES);
            if held.is_empty() {
                continue;
            }
            let Some(to) = self
                .upstream_addrs(&f.key)
                .await
                .ok()
                .and_then(|a| a.first().copied())
            else {
                continue;
            };
            if skip.contains(&to) {
                continue;
            }
            let up = match fill.pool.get(to).await {
                Ok(up) if up.is_registry() => up,
                _ => {
                    skip.push(to);
                    continue;
                }
            };
            let ranges: Vec<BlockRange> = held
                .into_iter()
                .map(|(start, count)| BlockRange { start, count })
                .collect();
            if !up
                .announce(&f.file_ref(), f.meta().version, &ranges, true)
                .await
            {
                // Busy or failing: the rest of its files wait for the next round.
                skip.push(to);
            }
        }
    }

    async fn forget_retired(&self) {
        let Some(fill) = self.fill() else { return };
        let gone: Vec<((u64, u64), u64)> = fill
            .known
            .borrow()
            .iter()
            .filter(|(_, k)| k.file.upgrade().is_none_or(|f| f.is_retired()))
            .map(|(key, k)| (*key, k.block_count))
            .collect();
        if gone.is_empty() {
            return;
        }
        for ((file_id, version), block_count) in gone {
            fill.known.borrow_mut().remove(&(file_id, version));
            fill.data_files.borrow_mut().remove(&(file_id, version));
            let mut i = 0;
            while i < block_count {
                let end = (i + PURGE_SLICE_BLOCKS).min(block_count);
                {
                    let mut disk = fill.disk.borrow_mut();
                    for index in i..end {
                        if owner_of(file_id, index, self.shards) == self.id {
                            disk.remove(&BlockKey {
                                file_id,
                                version,
                                index,
                            });
                        }
                    }
                }
                i = end;
                runtime::yield_if_needed().await;
            }
        }
        self.update_disk_gauges();
    }

    fn update_disk_gauges(&self) {
        if let Some(fill) = self.fill() {
            let m = self.m();
            m.disk_cache_bytes
                .store(fill.disk.borrow().used_bytes() as i64, Relaxed);
            m.files_cached.store(fill.files() as i64, Relaxed);
        }
    }

    /// The cached file named by `key`, from whichever shard owns its metadata.
    pub async fn lookup_cached(
        self: &Rc<Self>,
        key: FileKey,
        may_fetch: bool,
    ) -> Result<Arc<CachedFile>, Refusal> {
        let owner = meta_owner(key.file_id(), self.shards);
        if owner == self.id {
            self.local_lookup(key, may_fetch).await
        } else {
            ShardMetrics::add(&self.m().router_forwarded, 1);
            self.router.lookup(owner, key, may_fetch).await
        }
    }

    /// A lookup on the metadata owner: the catalog entry if its info is fresh (or the
    /// requester may not make us ask upstream), else one shared revalidation.
    pub async fn local_lookup(
        self: &Rc<Self>,
        key: FileKey,
        may_fetch: bool,
    ) -> Result<Arc<CachedFile>, Refusal> {
        let Some(fill) = self.fill() else {
            return Err(Refusal::Internal("not a cache".into()));
        };
        let existing = fill.catalog.borrow().get(&key).cloned();
        if let Some(f) = &existing {
            let validated = f.validated_ms.load(Relaxed);
            let fresh = validated != 0
                && now_ms().saturating_sub(validated) < fill.cfg.info_ttl.as_millis() as u64;
            if fresh || !may_fetch {
                return Ok(f.clone());
            }
        } else if !may_fetch {
            ShardMetrics::add(&self.m().recursive_refused, 1);
            return Err(Refusal::Forbidden(format!(
                "{} is not cached here, and this node fetches only for {}",
                key.url(),
                fill.cfg.who_may_fetch
            )));
        }
        let pending = fill.lookups.borrow().get(&key).cloned();
        let fut = match pending {
            Some(f) => f,
            None => {
                let me = self.clone();
                let k = key.clone();
                let f = async move {
                    let r = me.revalidate(&k, existing).await;
                    if let Some(fill) = me.fill() {
                        fill.lookups.borrow_mut().remove(&k);
                    }
                    me.update_disk_gauges();
                    r
                }
                .boxed_local()
                .shared();
                fill.lookups.borrow_mut().insert(key, f.clone());
                f
            }
        };
        fut.await
    }

    /// Asks the upstream whether `existing` is still the current version; fetches the
    /// full info (and starts a new version) when it is not or when there is none.
    async fn revalidate(
        self: &Rc<Self>,
        key: &FileKey,
        existing: Option<Arc<CachedFile>>,
    ) -> Result<Arc<CachedFile>, Refusal> {
        let fref = file_ref(key);
        if let Some(f) = &existing {
            let r = self
                .with_upstream(key, |up| {
                    let fref = fref.clone();
                    async move { up.file_meta(&fref).await }
                })
                .await;
            match r {
                Ok(meta) if meta.version == f.meta().version => {
                    f.validated_ms.store(now_ms(), Relaxed);
                    self.refresh_located(f, LOCATE_REFRESH);
                    return Ok(f.clone());
                }
                Ok(_) => {
                    tracing::info!(url = %key.url(), "file changed at the origin; fetching its new info");
                }
                Err(Refusal::Upstream(u)) if u.kind == UpstreamErrorKind::NotFound => {
                    tracing::info!(url = %key.url(), "file gone at the origin; dropping it");
                    self.retire(f);
                    return Err(Refusal::NotFound(key.url()));
                }
                Err(e) => {
                    // Stale-if-error: keep serving what we hold while the upstream is
                    // away, and do not make every request wait for it: trust the old
                    // info for another TTL.
                    tracing::warn!(url = %key.url(), error = %e, "cannot revalidate; serving the cached version");
                    f.validated_ms.store(now_ms(), Relaxed);
                    return Ok(f.clone());
                }
            }
        }
        let info = self
            .with_upstream(key, |up| {
                let fref = fref.clone();
                async move { up.file_info(&fref).await }
            })
            .await?;
        let file = self.start_version(key, info).await?;
        if let Some(old) = existing {
            self.retire(&old);
        }
        // A new file's sources are learned before its first block is asked for, so
        // peers can serve it from the start; later refreshes go on in the background.
        if let Some(locate) = self.locate_task(&file, LOCATE_REFRESH) {
            locate.await;
        }
        Ok(file)
    }

    /// Asks the upstream, in the background, which other nodes serve `file` (its
    /// mirrors, peers in p2p mode), when that was not asked within
    /// [`LOCATE_REFRESH`]: fetches fail over to them, and prefer peers.
    fn refresh_located(self: &Rc<Self>, file: &Arc<CachedFile>, min_age: Duration) {
        if let Some(locate) = self.locate_task(file, min_age) {
            runtime::spawn_detached(locate);
        }
    }

    /// The Locate round trip for `file` if the last one is older than `min_age`
    /// (through the parent, if any).
    fn locate_task(
        self: &Rc<Self>,
        file: &Arc<CachedFile>,
        min_age: Duration,
    ) -> Option<LocalBoxFuture<'static, ()>> {
        self.fill()?;
        let last = file.located_ms.load(Relaxed);
        if last != 0 && now_ms().saturating_sub(last) < min_age.as_millis() as u64 {
            return None;
        }
        file.located_ms.store(now_ms(), Relaxed);
        let (me, file) = (self.clone(), file.clone());
        Some(
            async move {
                let r = me.locate_whole_file(&file).await;
                let own = me.fill().map(|f| f.cfg.own_addrs.clone()).unwrap_or_default();
                if let Ok(Ok((answered, locations))) = r {
                    let found: Vec<Located> = locations
                        .into_iter()
                        .filter(|l| !own.contains(&l.addr))
                        .take(MAX_SOURCES_PER_FILE)
                        .map(|l| Located {
                            addr: l.addr,
                            class: class_of(l.role),
                            holds: l.holds,
                        })
                        .collect();
                    tracing::debug!(url = %file.key.url(), sources = ?found.iter().map(|l| l.addr).collect::<Vec<_>>(), "located the file's sources");
                    file.located.store(Arc::new(LocatedSet {
                        from: Some(answered),
                        by_shard: me.id,
                        nodes: found,
                    }));
                }
            }
            .boxed_local(),
        )
    }

    /// Creates the index of a new file version (on the blocking pool: it writes and
    /// syncs a file) and puts it in the catalog.
    async fn start_version(
        self: &Rc<Self>,
        key: &FileKey,
        info: RemoteFile,
    ) -> Result<Arc<CachedFile>, Refusal> {
        let Some(fill) = self.fill() else {
            return Err(Refusal::Internal("not a cache".into()));
        };
        let meta = FileMeta {
            size: info.size,
            block_size: info.block_size,
            algo: info.algo,
            version: info.version,
            mtime_unix_secs: info.mtime_unix_secs,
        };
        let (dir, k) = (fill.cfg.dir.clone(), key.clone());
        let index = runtime::blocking(move || CacheIndex::create(&dir, &k, &meta, &info.digests))
            .await
            .map_err(|e| Refusal::Internal(format!("cannot create the cache index: {e}")))?;
        let file = Arc::new(CachedFile::new(index));
        file.validated_ms.store(now_ms(), Relaxed);
        let mut catalog = fill.catalog.borrow_mut();
        if catalog.len() >= MAX_FILES_PER_SHARD && !catalog.contains_key(key) {
            // Forget the least recently validated file's metadata; its blocks stay on
            // disk and in the LRU until evicted, and a restart finds it again.
            if let Some(victim) = catalog
                .iter()
                .min_by_key(|(_, f)| f.validated_ms.load(Relaxed))
                .map(|(k, _)| k.clone())
            {
                catalog.remove(&victim);
            }
        }
        catalog.insert(key.clone(), file.clone());
        tracing::debug!(url = %key.url(), version = %format_args!("{:016x}", file.meta().version), blocks = file.index.block_count(), "caching a new file version");
        Ok(file)
    }

    /// Takes a replaced or vanished version out of service and deletes its files.
    fn retire(&self, old: &Arc<CachedFile>) {
        if old.retired.swap(true, Relaxed) {
            return;
        }
        if let Some(fill) = self.fill() {
            let mut catalog = fill.catalog.borrow_mut();
            if catalog.get(&old.key).is_some_and(|f| Arc::ptr_eq(f, old)) {
                catalog.remove(&old.key);
            }
        }
        let (idx, data) = (
            old.index.index_path().to_path_buf(),
            old.index.data_path().to_path_buf(),
        );
        runtime::spawn_detached(async move {
            let _ = runtime::blocking(move || StoreDir::remove_files(&idx, &data)).await;
        });
    }

    /// The addresses misses for `key` go to: the parent, else the URL's host.
    async fn upstream_addrs(&self, key: &FileKey) -> Result<Vec<SocketAddr>, Refusal> {
        let Some(fill) = self.fill() else {
            return Err(Refusal::Internal("not a cache".into()));
        };
        if let Some(p) = fill.cfg.parent {
            return Ok(vec![p]);
        }
        let name = (key.host.clone(), key.port);
        let cached = fill
            .dns
            .borrow()
            .get(&name)
            .filter(|(_, at)| at.elapsed() < DNS_TTL)
            .map(|(a, _)| a.clone());
        let addrs = match cached {
            Some(a) => a,
            None => {
                let resolved = match key.host.parse::<IpAddr>() {
                    Ok(ip) => vec![SocketAddr::new(ip, key.port)],
                    Err(_) => {
                        let n = name.clone();
                        runtime::blocking(move || {
                            n.to_socket_addrs().map(|a| a.collect::<Vec<_>>())
                        })
                        .await
                        .map_err(|e| {
                            Refusal::Upstream(UpstreamError {
                                kind: UpstreamErrorKind::Unreachable,
                                message: format!("cannot resolve {}: {e}", key.host),
                            })
                        })?
                    }
                };
                let mut dns = fill.dns.borrow_mut();
                if dns.len() >= MAX_DNS_ENTRIES {
                    dns.clear();
                }
                dns.insert(name, (resolved.clone(), Instant::now()));
                resolved
            }
        };
        let addrs: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| !fill.cfg.own_addrs.contains(a))
            .collect();
        if addrs.is_empty() {
            return Err(Refusal::Upstream(UpstreamError {
                kind: UpstreamErrorKind::Failed,
                message: format!(
                    "{} names this node itself and no parent (-S) is set",
                    key.url()
                ),
            }));
        }
        Ok(addrs)
    }

    /// Runs `op` against the upstream of `key`, trying its addresses in turn while
    /// they are unreachable or overloaded.
    async fn with_upstream<T, F, Fut>(&self, key: &FileKey, op: F) -> Result<T, Refusal>
    where
        F: Fn(Rc<Upstream>) -> Fut,
        Fut: std::future::Future<Output = Result<T, FetchError>>,
    {
        let Some(fill) = self.fill() else {
            return Err(Refusal::Internal("not a cache".into()));
        };
        let mut last = None;
        for addr in self.upstream_addrs(key).await? {
            let r = match fill.pool.get(addr).await {
                Ok(up) => op(up).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(v) => return Ok(v),
                Err(e) => {
                    ShardMetrics::add(&self.m().upstream_errors, 1);
                    tracing::debug!(upstream = %addr, url = %key.url(), error = %e, "upstream request failed");
                    let next = try_next(&e);
                    last = Some(e);
                    if !next {
                        break;
                    }
                }
            }
        }
        Err(match last {
            Some(e) => Refusal::Upstream(upstream_error(&e)),
            None => Refusal::Internal("no upstream".into()),
        })
    }

    /// Produces a block of a cached file on its owning shard: from a write in
    /// progress, from disk (verified; a bad copy is dropped), or from the upstream
    /// when the requester may make us fetch.
    pub(super) async fn fill_block(
        self: Rc<Self>,
        file: Arc<CachedFile>,
        index: u64,
        may_fetch: bool,
    ) -> Result<Bytes, BlockError> {
        let Some(fill) = self.fill() else {
            return Err(BlockError::Io("not a cache".into()));
        };
        let key = BlockKey {
            file_id: file.file_id,
            version: file.meta().version,
            index,
        };
        if let Some(b) = fill.writing.borrow().get(&key) {
            return Ok(b.clone());
        }
        if file.index.has(index) {
            match self.read_stored(&file, index).await {
                Ok(b) => {
                    ShardMetrics::add(&self.m().disk_cache_hits, 1);
                    fill.disk.borrow_mut().get(&key);
                    return Ok(b);
                }
                Err(why) => {
                    ShardMetrics::add(&self.m().disk_cache_corrupt, 1);
                    ShardMetrics::add(&self.m().digest_failures, 1);
                    tracing::warn!(url = %file.key.url(), block = index, why, "cached block is damaged; dropping it");
                    file.index.clear(index);
                    let removed = fill.disk.borrow_mut().remove(&key);
                    if let Some(w) = removed {
                        let len = DataFile::aligned(file.index.block_len(index));
                        self.evict(key, w, len).await;
                    }
                    self.update_disk_gauges();
                }
            }
        }
        ShardMetrics::add(&self.m().cache_misses, 1);
        if !may_fetch {
            ShardMetrics::add(&self.m().recursive_refused, 1);
            return Err(BlockError::NotCached);
        }
        let deadline = fetch_deadline(fill.cfg.upstream.timeout);
        let data = match runtime::timeout(deadline, self.fetch_block(&file, index)).await {
            Ok(r) => r?,
            Err(_) => {
                ShardMetrics::add(&self.m().upstream_errors, 1);
                tracing::debug!(url = %file.key.url(), block = index, ?deadline, "block fetch ran out of time");
                return Err(BlockError::Upstream(UpstreamError {
                    kind: UpstreamErrorKind::TimedOut,
                    message: format!(
                        "block {index}: no source delivered it within {} ms",
                        deadline.as_millis()
                    ),
                }));
            }
        };
        ShardMetrics::add(&self.m().upstream_fetches, 1);
        ShardMetrics::add(&self.m().upstream_bytes, data.len() as u64);
        if !file.is_retired() {
            fill.writing.borrow_mut().insert(key, data.clone());
            let me = self.clone();
            let (f, d) = (file.clone(), data.clone());
            runtime::spawn_detached(async move {
                me.store_block(&f, key, d).await;
                if let Some(fill) = me.fill() {
                    fill.writing.borrow_mut().remove(&key);
                }
            });
        }
        Ok(data)
    }

    /// Reads a stored block and checks it against the origin's digest: the cache's
    /// disk is not trusted (a crash, a flipped bit, a torn write are all caught here).
    async fn read_stored(&self, file: &Arc<CachedFile>, index: u64) -> Result<Bytes, &'static str> {
        let df = self
            .data_file(file)
            .await
            .map_err(|_| "cannot open the data file")?;
        let len = file.index.block_len(index);
        let data = df
            .read_block(file.index.block_offset(index), len)
            .await
            .map_err(|_| "read error")?;
        ShardMetrics::add(&self.m().disk_read_bytes, data.len() as u64);
        if data.len() != len {
            return Err("short read");
        }
        if !verify_block(file.meta().algo, &data, file.index.digest(index)).await {
            return Err("digest mismatch");
        }
        Ok(data)
    }

    /// The sources a block of `file` may come from: the upstream (the parent, else the
    /// URL's addresses) and the nodes the upstream's Locate answer named: mirrors and
    /// peers without a parent, peers only with one (a hierarchy shields the servers
    /// above it).
    async fn block_sources(&self, file: &Arc<CachedFile>) -> Result<Vec<Located>, Refusal> {
        let mut out: Vec<Located> = self
            .upstream_addrs(&file.key)
            .await?
            .into_iter()
            .map(Located::server)
            .collect();
        // Below a parent only peers join it: the servers above stay shielded.
        let parent = self.fill().is_some_and(|f| f.cfg.parent.is_some());
        for l in file.located.load().nodes.iter() {
            if out.len() >= MAX_SOURCES_PER_FILE {
                break;
            }
            if (!parent || l.class == SourceClass::Peer) && !out.iter().any(|o| o.addr == l.addr) {
                out.push(l.clone());
            }
        }
        Ok(out)
    }

    /// Fetches one block and verifies it, from the best of the file's sources (see
    /// `pure::sched`), failing over to the others: a source that errors, closes,
    /// stalls past the attempt deadline or sends a bad block loses the block to the
    /// next one, and one that sent a bad block is not asked again for this file. When
    /// every source that may have the block is busy with others, it waits for one. The
    /// caller bounds the whole of it ([`fetch_deadline`]); each attempt's place at its
    /// source is given back however the attempt ends ([`SourceSlot`]).
    async fn fetch_block(
        self: &Rc<Self>,
        file: &Arc<CachedFile>,
        index: u64,
    ) -> Result<Bytes, BlockError> {
        let Some(fill) = self.fill() else {
            return Err(BlockError::Io("not a cache".into()));
        };
        let fref = file.file_ref();
        let version = file.meta().version;
        let sources = self
            .block_sources(file)
            .await
            .map_err(refusal_to_block_error)?;
        let upstream = sources.first().map(|l| l.addr);
        // Peers found bad or unreachable are reported to the node that named them,
        // over the connection that was handed them (that shard's).
        let report_to = {
            let located = file.located.load();
            match located.from {
                Some(from) => Some((from, located.by_shard)),
                None => upstream.map(|u| (u, self.id)),
            }
        };
        // p2p: no peer is known to hold this block; peers ahead in the film may have
        // it by now, so ask the registry again (in the background) for the next ones.
        if upstream.is_some_and(|u| fill.pool.is_registry(u))
            && !sources
                .iter()
                .any(|l| l.class == SourceClass::Peer && l.has(index))
        {
            self.refresh_located(file, LOCATE_ON_MISS);
        }
        // One deadline per attempt when others can take over; a single source gets the
        // whole upstream timeout (it may itself be fetching from further up).
        let attempt = if sources.len() > 1 {
            fill.cfg.upstream.timeout.min(FAILOVER_ATTEMPT_TIMEOUT)
        } else {
            fill.cfg.upstream.timeout
        };
        let key = (file.file_id, version);
        let mut last: Option<BlockError> = None;
        let mut attempts = 0;
        while attempts < MAX_ATTEMPTS_PER_BLOCK {
            let (src, addr, class, cancelled) = match self.pick_source(key, &sources, index) {
                Pick::Source {
                    src,
                    addr,
                    class,
                    cancelled,
                } => (src, addr, class, cancelled),
                Pick::Busy => {
                    runtime::sleep(SOURCE_WAIT).await;
                    continue;
                }
                Pick::NoSource => break,
            };
            attempts += 1;
            let slot = SourceSlot {
                sources: &fill.sources,
                file: key,
                src,
                index,
                open: true,
            };
            let started = Instant::now();
            let connected = Cell::new(false);
            let request = runtime::timeout(attempt, async {
                let up = if class == SourceClass::Peer {
                    // A viewer's machine that does not answer within this is taken
                    // for gone (NAT, firewall, asleep): no need to wait out the attempt.
                    runtime::timeout(PEER_CONNECT_TIMEOUT, fill.pool.get(addr))
                        .await
                        .unwrap_or(Err(FetchError::Timeout {
                            addr,
                            what: CONNECT_WHAT,
                            ms: PEER_CONNECT_TIMEOUT.as_millis() as u64,
                        }))?
                } else {
                    fill.pool.get(addr).await?
                };
                connected.set(true);
                up.block(&fref, version, index).await
            });
            let r = match future::select(std::pin::pin!(request), cancelled).await {
                Either::Left((r, _)) => r.unwrap_or_else(|_| {
                    Err(FetchError::Timeout {
                        addr,
                        // Not even a connection (and handshake) within the attempt: the
                        // node is unreachable, not merely slow with this block.
                        what: if connected.get() {
                            "block data"
                        } else {
                            CONNECT_WHAT
                        },
                        ms: attempt.as_millis() as u64,
                    })
                }),
                Either::Right(_) => {
                    // Taken away: the source stalled past the scheduler's timeout, or
                    // failed another block and lost all of its blocks.
                    slot.taken_away();
                    ShardMetrics::add(&self.m().upstream_errors, 1);
                    tracing::debug!(upstream = %addr, url = %file.key.url(), block = index, "block taken from a stalled or failed source; trying another");
                    last = Some(BlockError::Upstream(upstream_error(&FetchError::Timeout {
                        addr,
                        what: "block data",
                        ms: started.elapsed().as_millis() as u64,
                    })));
                    continue;
                }
            };
            let outcome = match r {
                Ok(data) => {
                    let len = file.index.block_len(index);
                    if data.len() == len
                        && verify_block(file.meta().algo, &data, file.index.digest(index)).await
                    {
                        slot.verified(data.len() as u64, started);
                        let m = self.m();
                        m.add_upstream_bytes_from(addr, data.len() as u64);
                        ShardMetrics::add(
                            match class {
                                SourceClass::Peer => &m.peer_bytes,
                                SourceClass::Server => &m.server_bytes,
                            },
                            data.len() as u64,
                        );
                        // p2p: tell the node that hands out locations that this one
                        // now holds the block (batched; sent only to a p2p registry).
                        if let Some(u) = upstream {
                            self.report_have(u, &fref, version, index);
                        }
                        return Ok(own_allocation(data));
                    }
                    ShardMetrics::add(&self.m().digest_failures, 1);
                    ShardMetrics::add(&self.m().upstream_errors, 1);
                    tracing::warn!(upstream = %addr, url = %file.key.url(), block = index, "block from upstream failed its digest check; discarded, and the source is not used again for this file");
                    if class == SourceClass::Peer {
                        file.forget_located(addr);
                        self.report_peer(report_to, &fref, version, addr, PeerProblem::BadData);
                    }
                    last = Some(BlockError::Upstream(UpstreamError {
                        kind: UpstreamErrorKind::Failed,
                        message: format!("block {index} from {addr} failed its digest check"),
                    }));
                    Failure::BadBlock
                }
                Err(FetchError::Remote {
                    code: ErrorCode::VersionChanged,
                    ..
                }) => {
                    // The origin has a new version: the next lookup fetches its info.
                    slot.failed(Failure::NotHeld);
                    file.validated_ms.store(0, Relaxed);
                    return Err(BlockError::Changed);
                }
                Err(e) => {
                    ShardMetrics::add(&self.m().upstream_errors, 1);
                    tracing::debug!(upstream = %addr, url = %file.key.url(), block = index, error = %e, "block fetch failed; trying another source");
                    last = Some(BlockError::Upstream(upstream_error(&e)));
                    if class == SourceClass::Peer && unreachable(&e) {
                        file.forget_located(addr);
                        self.report_peer(report_to, &fref, version, addr, PeerProblem::Unreachable);
                        Failure::Unreachable
                    } else {
                        failure_kind(&e)
                    }
                }
            };
            slot.failed(outcome);
        }
        Err(last.unwrap_or_else(|| BlockError::Io("no upstream".into())))
    }

    /// Tells `to`, soon and batched, that this node now holds block `index` (p2p: the
    /// node that hands out locations), in the background: a connection to make never
    /// delays the block, nor eats into its fetch's deadline.
    fn report_have(self: &Rc<Self>, to: SocketAddr, file: &FileRef, version: u64, index: u64) {
        let (me, file) = (self.clone(), file.clone());
        runtime::spawn_detached(async move {
            let Some(fill) = me.fill() else { return };
            if let Ok(up) = fill.pool.get(to).await {
                up.report_have(&file, version, index);
            }
        });
    }

    /// Tells the node that handed out `peer` (the file's first upstream) that the peer
    /// is unreachable or sent a bad block, in the background: it stops handing the
    /// peer out (p2p mode). At most once per peer and problem every few seconds. The
    /// report goes over the connection of shard `by`, the one the peer was handed to
    /// (the registry ignores reports about peers a connection was not given): from
    /// another shard it is passed there.
    fn report_peer(
        self: &Rc<Self>,
        to: Option<(SocketAddr, usize)>,
        file: &FileRef,
        version: u64,
        peer: SocketAddr,
        problem: PeerProblem,
    ) {
        let Some((to, by)) = to else { return };
        if by != self.id {
            let (me, file) = (self.clone(), file.clone());
            runtime::spawn_detached(async move {
                me.router
                    .report_peer(by, to, file, version, peer, problem)
                    .await;
            });
            return;
        }
        self.report_peer_here(to, file, version, peer, problem);
    }

    /// Reports `peer` as `report_peer` does, over this shard's connection to `to`.
    pub fn report_peer_here(
        self: &Rc<Self>,
        to: SocketAddr,
        file: &FileRef,
        version: u64,
        peer: SocketAddr,
        problem: PeerProblem,
    ) {
        let (me, file) = (self.clone(), file.clone());
        runtime::spawn_detached(async move {
            let Some(fill) = me.fill() else { return };
            if fill
                .pool
                .report_peer(to, &file, version, peer, problem)
                .await
            {
                ShardMetrics::add(&me.m().peer_reports_sent, 1);
            }
        });
    }

    /// The source to ask for block `index` of file version `key` among `sources`;
    /// the scheduler is (re)built when the sources changed, or when every source was
    /// dropped (a source that recovered gets another chance). Requests outstanding
    /// past the stall timeout are taken from their sources first, as `p2pd get` does.
    fn pick_source(&self, key: (u64, u64), sources: &[Located], index: u64) -> Pick {
        let Some(fill) = self.fill() else {
            return Pick::NoSource;
        };
        let mut all = fill.sources.borrow_mut();
        let cfg = sched_config(fill.cfg.upstream.timeout);
        if all.len() >= MAX_FILES_WITH_SOURCES && !all.contains_key(&key) {
            all.clear();
        }
        let entry = all
            .entry(key)
            .or_insert_with(|| FileSources::new(sources, cfg.clone()));
        if entry.sources != sources && !merge_sources(entry, sources) {
            *entry = FileSources::new(sources, cfg.clone());
        }
        let now = Instant::now();
        entry.check_stalls(now);
        let src = match entry.sched.pick_block(index, now) {
            Some(s) => s,
            None if entry.sched.stuck_on(index) => {
                *entry = FileSources::new(sources, cfg);
                match entry.sched.pick_block(index, now) {
                    Some(s) => s,
                    None if entry.sched.stuck_on(index) => return Pick::NoSource,
                    None => return Pick::Busy,
                }
            }
            None => return Pick::Busy,
        };
        let cancelled = entry.started(src, index);
        let chosen = &entry.sources[src];
        let (addr, class) = (chosen.addr, chosen.class);
        if entry.last_pick != Some(src) {
            if let Some(prev) = entry.last_pick {
                tracing::debug!(from = %entry.sources[prev].addr, to = %addr, block = index, "switching source");
            }
            entry.last_pick = Some(src);
        }
        Pick::Source {
            src,
            addr,
            class,
            cancelled,
        }
    }

    /// Writes a verified block to the data file and only then marks it held and puts
    /// it in the LRU. Room is made first (LRU eviction, holes punched) and the write's
    /// bytes are reserved while it is in flight, so the LRU's bytes plus the reserved
    /// ones, which bound what the disk holds, never exceed the limit.
    async fn store_block(self: &Rc<Self>, file: &Arc<CachedFile>, key: BlockKey, data: Bytes) {
        let Some(fill) = self.fill() else { return };
        let len = DataFile::aligned(data.len());
        let limit = fill.cfg.disk_limit_per_shard_bytes.unwrap_or(u64::MAX);
        if len > limit {
            return;
        }
        let pending = fill.write_bytes_in_flight.get();
        if pending + len > MAX_WRITE_BYTES_IN_FLIGHT {
            ShardMetrics::add(&self.m().disk_cache_write_skipped, 1);
            return;
        }
        fill.write_bytes_in_flight.set(pending + len);
        let _in_flight = Release(&fill.write_bytes_in_flight, len);
        self.remember_known(file);
        loop {
            let used = fill.disk.borrow().used_bytes() + fill.reserved_bytes.get();
            if used.saturating_add(len) <= limit {
                break;
            }
            let victim = fill.disk.borrow_mut().pop_lru();
            let Some((k, w, l)) = victim else {
                // Everything within the limit is being written or punched right now.
                ShardMetrics::add(&self.m().disk_cache_write_skipped, 1);
                return;
            };
            self.evict(k, w, l).await;
        }
        if file.is_retired() {
            return;
        }
        fill.reserved_bytes.set(fill.reserved_bytes.get() + len);
        let written = match self.data_file(file).await {
            Ok(df) => {
                df.write_block(file.index.block_offset(key.index), &data)
                    .await
            }
            Err(e) => Err(e),
        };
        fill.reserved_bytes.set(fill.reserved_bytes.get() - len);
        match written {
            Ok(()) if !file.is_retired() => {
                let evicted = fill
                    .disk
                    .borrow_mut()
                    .insert(key, Arc::downgrade(file), len);
                file.index.set(key.index);
                ShardMetrics::add(&self.m().disk_cache_write_bytes, data.len() as u64);
                // Only when the limit changed under us: the reservation kept room.
                for (k, w) in evicted {
                    let l = self.evicted_len(&k, &w);
                    self.evict(k, w, l).await;
                }
            }
            // A retired version's files are deleted: nothing to claim or free.
            Ok(()) => {}
            Err(e) => {
                ShardMetrics::add(&self.m().disk_cache_write_errors, 1);
                // A full or failing disk fails every write: one line per interval, the
                // count in the metrics.
                let now = Instant::now();
                let due = fill
                    .last_write_warning
                    .get()
                    .is_none_or(|t| now.duration_since(t) >= WRITE_WARNING_INTERVAL);
                if due {
                    fill.last_write_warning.set(Some(now));
                    tracing::warn!(url = %file.key.url(), block = key.index, error = %e, "cannot write a block to the cache (the block is still served; further write errors are counted in p2pd_disk_cache_write_errors_total)");
                }
                // A failed write may still have allocated part of the block.
                if let Ok(df) = self.data_file(file).await {
                    let _ = df
                        .punch(file.index.block_offset(key.index), data.len())
                        .await;
                }
            }
        }
        self.update_disk_gauges();
    }

    /// The bytes an LRU entry stood for (its block's on-disk size).
    fn evicted_len(&self, key: &BlockKey, file: &Weak<CachedFile>) -> u64 {
        file.upgrade()
            .filter(|f| key.index < f.index.block_count())
            .map_or(0, |f| DataFile::aligned(f.index.block_len(key.index)))
    }

    /// Evicts a block taken out of the LRU: its `len` bytes stay reserved until its
    /// hole is punched.
    async fn evict(&self, key: BlockKey, file: Weak<CachedFile>, len: u64) {
        let Some(fill) = self.fill() else { return };
        fill.reserved_bytes.set(fill.reserved_bytes.get() + len);
        self.punch(key, file).await;
        fill.reserved_bytes.set(fill.reserved_bytes.get() - len);
    }

    /// Evicts a block: it stops being held at once, then its space is freed.
    async fn punch(&self, key: BlockKey, file: Weak<CachedFile>) {
        ShardMetrics::add(&self.m().disk_cache_evictions, 1);
        let Some(file) = file.upgrade() else { return };
        if file.meta().version != key.version {
            return;
        }
        file.index.clear(key.index);
        if file.is_retired() {
            return;
        }
        if let Ok(df) = self.data_file(&file).await {
            if let Err(e) = df
                .punch(
                    file.index.block_offset(key.index),
                    file.index.block_len(key.index),
                )
                .await
            {
                tracing::warn!(url = %file.key.url(), block = key.index, error = %e, "cannot free an evicted block's space");
            }
        }
    }

    async fn data_file(&self, file: &Arc<CachedFile>) -> std::io::Result<Rc<DataFile>> {
        let Some(fill) = self.fill() else {
            return Err(std::io::Error::other("not a cache"));
        };
        let k = (file.file_id, file.meta().version);
        if let Some(f) = fill.data_files.borrow().get(&k) {
            return Ok(f.clone());
        }
        let df = Rc::new(DataFile::open(file.index.data_path()).await?);
        let mut files = fill.data_files.borrow_mut();
        if files.len() >= MAX_OPEN_DATA_FILES {
            files.clear();
        }
        files.insert(k, df.clone());
        Ok(df)
    }

    /// The upstream's Locate answer for all of `file` within [`LOCATE_WAIT`], with
    /// the address of the upstream that gave it.
    async fn locate_whole_file(
        self: &Rc<Self>,
        file: &Arc<CachedFile>,
    ) -> Result<Result<(SocketAddr, Vec<Location>), Refusal>, runtime::Elapsed> {
        let fref = file.file_ref();
        let (version, blocks) = (file.meta().version, file.index.block_count().max(1));
        runtime::timeout(
            LOCATE_WAIT,
            self.with_upstream(&file.key, |up| {
                let fref = fref.clone();
                async move {
                    let answered = up.addr;
                    up.locate(&fref, version, 0, blocks)
                        .await
                        .map(|l| (answered, l))
                }
            }),
        )
        .await
    }

    /// The upstream's Locate answer for all of `file`, asked at most once per
    /// [`RELAY_FRESH`] per shard (empty when the upstream could not answer in time).
    async fn relayed_locations(self: &Rc<Self>, file: &Arc<CachedFile>) -> Rc<Vec<Location>> {
        let Some(fill) = self.fill() else {
            return Rc::default();
        };
        let key = (file.file_id, file.meta().version);
        let now = Instant::now();
        let cached = fill
            .relayed
            .borrow()
            .get(&key)
            .filter(|r| now.saturating_duration_since(r.asked) < RELAY_FRESH)
            .map(|r| r.answer.clone());
        let answer = match cached {
            Some(a) => a,
            None => {
                let (me, file) = (self.clone(), file.clone());
                let answer = async move {
                    Rc::new(match me.locate_whole_file(&file).await {
                        Ok(Ok((_, l))) => l,
                        _ => Vec::new(),
                    })
                }
                .boxed_local()
                .shared();
                let mut relayed = fill.relayed.borrow_mut();
                if relayed.len() >= MAX_RELAYED_FILES {
                    relayed.retain(|_, r| now.saturating_duration_since(r.asked) < RELAY_FRESH);
                }
                if relayed.len() >= MAX_RELAYED_FILES {
                    if let Some(oldest) =
                        relayed.iter().min_by_key(|(_, r)| r.asked).map(|(k, _)| *k)
                    {
                        relayed.remove(&oldest);
                    }
                }
                relayed.insert(
                    key,
                    Relayed {
                        asked: now,
                        answer: answer.clone(),
                    },
                );
                answer
            }
        };
        answer.await
    }

    /// The Locate answer of a cache: itself first (everything, for a requester it
    /// fetches for; else the ranges it holds), then, for such a requester, the
    /// locations its upstream knows.
    pub async fn cache_locations(
        self: &Rc<Self>,
        file: &Arc<CachedFile>,
        me: Option<Location>,
        first: u64,
        count: u64,
        may_fetch: bool,
    ) -> Vec<Location> {
        let mut out = Vec::new();
        if let Some(mut me) = me {
            if !may_fetch {
                let ranges = file
                    .index
                    .held_ranges(first, count, limits::MAX_RANGES)
                    .into_iter()
                    .map(|(start, count)| BlockRange { start, count })
                    .collect();
                me.holds = Holds::Ranges(ranges);
            }
            out.push(me);
        }
        if !may_fetch {
            return out;
        }
        let relayed = self.relayed_locations(file).await;
        let end = first.saturating_add(count);
        let relayed = relayed.iter().filter_map(|l| match &l.holds {
            Holds::All => Some(l.clone()),
            Holds::Ranges(r) => {
                let inside: Vec<BlockRange> = r
                    .iter()
                    .filter_map(|b| {
                        let (s, t) = (b.start.max(first), b.start.saturating_add(b.count).min(end));
                        (s < t).then_some(BlockRange {
                            start: s,
                            count: t - s,
                        })
                    })
                    .collect();
                (!inside.is_empty()).then_some(Location {
                    addr: l.addr,
                    role: l.role,
                    holds: Holds::Ranges(inside),
                })
            }
        });
        let own = self
            .fill()
            .map(|f| f.cfg.own_addrs.clone())
            .unwrap_or_default();
        for l in relayed.take(MAX_RELAYED_LOCATIONS) {
            if out.len() >= limits::MAX_LOCATIONS {
                break;
            }
            if own.contains(&l.addr) || out.iter().any(|o| o.addr == l.addr) {
                continue;
            }
            out.push(l);
        }
        out
    }
}

/// Blocks at most this long are copied out of the connection's read buffer before
/// they are kept (see [`own_allocation`]).
const COPY_BLOCKS_UP_TO_BYTES: usize = 128 * 1024;

/// A fetched block in an allocation of its own. A block decoded from an upstream
/// connection is a slice of the connection's read buffer, which holds several small
/// frames (at least 64 KiB): kept in the memory cache, each 16 KiB block held its
/// whole buffer, and a cache with `-M 32M` grew to 200 MiB and more. Copying a small
/// block costs far less than the digest check it just passed.
fn own_allocation(data: Bytes) -> Bytes {
    if data.len() <= COPY_BLOCKS_UP_TO_BYTES {
        Bytes::copy_from_slice(&data)
    } else {
        data
    }
}

fn refusal_to_block_error(r: Refusal) -> BlockError {
    match r {
        Refusal::Upstream(u) => BlockError::Upstream(u),
        other => BlockError::Io(other.to_string()),
    }
}

/// Takes `n` back from a counter when dropped, however the holder's task ends.
struct Release<'a>(&'a Cell<u64>, u64);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_server() -> RefCell<HashMap<(u64, u64), FileSources>> {
        let src = Located::server(SocketAddr::from(([127, 0, 0, 1], 1111)));
        let entry = FileSources::new(&[src], sched_config(Duration::from_secs(10)));
        RefCell::new(HashMap::from([((1, 2), entry)]))
    }

    /// Takes a source for `index` as `Shard::pick_source` does.
    fn take(
        all: &RefCell<HashMap<(u64, u64), FileSources>>,
        index: u64,
    ) -> Option<(SourceSlot<'_>, oneshot::Receiver<()>)> {
        let mut map = all.borrow_mut();
        let e = map.get_mut(&(1, 2)).unwrap();
        let src = e.sched.pick_block(index, Instant::now())?;
        let rx = e.started(src, index);
        let slot = SourceSlot {
            sources: all,
            file: (1, 2),
            src,
            index,
            open: true,
        };
        Some((slot, rx))
    }

    fn outstanding(all: &RefCell<HashMap<(u64, u64), FileSources>>) -> usize {
        all.borrow()[&(1, 2)].sched.source(0).outstanding
    }

    #[test]
    fn an_attempt_dropped_before_its_outcome_gives_its_place_back() {
        let all = one_server();
        let max = SchedConfig::default().max_outstanding as u64;
        // Every place at the source taken, as by a player's read-ahead...
        let taken: Vec<_> = (0..max).map(|i| take(&all, i).unwrap()).collect();
        assert!(take(&all, max).is_none(), "the source is full");
        // ...then the attempts dropped mid-way (the fetch's deadline, the task
        // ending): no place is kept, and the source is not blamed.
        drop(taken);
        assert_eq!(outstanding(&all), 0);
        for i in 0..max {
            let (slot, _rx) = take(&all, 100 + i).expect("a free place again");
            slot.verified(1000, Instant::now());
        }
        assert_eq!(outstanding(&all), 0);
        let s = all.borrow()[&(1, 2)].sched.source(0).clone();
        assert_eq!((s.blocks, s.failures_in_row, s.dropped), (max, 0, false));
    }

    #[test]
    fn a_source_that_closes_loses_every_attempt_at_it() {
        let all = one_server();
        let (a, _rx_a) = take(&all, 0).unwrap();
        let (b, mut rx_b) = take(&all, 1).unwrap();
        a.failed(Failure::Closed);
        // The other attempt at the closed source is told to move on...
        assert!(matches!(rx_b.try_recv(), Err(oneshot::Canceled)));
        assert_eq!(outstanding(&all), 0);
        // ...and its own outcome, when it comes, no longer counts.
        b.taken_away();
        assert_eq!(all.borrow()[&(1, 2)].sched.source(0).failures_in_row, 1);
    }

    #[test]
    fn a_stalled_request_is_taken_away_and_counted_once() {
        let all = one_server();
        let (slot, mut rx) = take(&all, 7).unwrap();
        let later = Instant::now() + Duration::from_secs(11);
        all.borrow_mut()
            .get_mut(&(1, 2))
            .unwrap()
            .check_stalls(later);
        assert!(matches!(rx.try_recv(), Err(oneshot::Canceled)));
        assert_eq!(outstanding(&all), 0);
        // The attempt's late failure (or its drop) is not a second one.
        slot.failed(Failure::Error);
        assert_eq!(all.borrow()[&(1, 2)].sched.source(0).failures_in_row, 1);
    }
}
