//! The state of a cache shard ([`CacheRole`]) and its configuration; the behaviour is
//! in the sibling files, each adding one job's methods.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{LocalBoxFuture, Shared};

use super::file::CachedFile;
use super::sources::FileSources;
use crate::disk::FileKey;
use crate::error::Refusal;
use crate::metrics::Metrics;
use crate::metrics::ShardMetrics;
use crate::node::router::Router;
use crate::pure::lru::{BlockKey, ByteLru};
use crate::pure::protocol::Location;
use crate::runtime::DataFile;
use crate::upstream::pool::{UpstreamConfig, UpstreamPool};

/// What every shard of a cache node shares, fixed at start-up.
#[derive(Debug)]
pub struct CacheRoleConfig {
    /// The `-c` directory (locked by the node's [`StoreDir`](crate::disk::StoreDir)).
    pub dir: PathBuf,
    /// `-S`, resolved once at start-up: every miss goes there.
    pub parent: Option<SocketAddr>,
    /// How long a file's info is trusted before the upstream is asked again.
    pub info_ttl: Duration,
    /// How often the blocks held are announced to the upstream (p2p registries).
    /// How far ahead of each HTTP reader, at its pace, the cache fetches (zero: only
    /// what is asked for).
    pub read_ahead: Duration,
    /// `--read-ahead` was given: fetch ahead whatever the sources (by default only
    /// when peers are among them).
    pub read_ahead_always: bool,
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

/// A file version this shard holds blocks of, as [`CacheRole::known`] remembers it.
pub(super) struct KnownFile {
    pub(super) file: Weak<CachedFile>,
    pub(super) block_count: u64,
}

/// A host name's addresses and when they were looked up.
pub(super) type Resolved = (Vec<SocketAddr>, Instant);

pub(super) type LookupFuture = Shared<LocalBoxFuture<'static, Result<Arc<CachedFile>, Refusal>>>;

/// The upstream's Locate answer for a whole file version, shared by every downstream
/// Locate relayed within [`RELAY_FRESH`](super::locate::RELAY_FRESH) (the ones that arrive while it is asked wait
/// for it).
pub(super) struct Relayed {
    pub(super) asked: Instant,
    pub(super) answer: Shared<LocalBoxFuture<'static, Rc<Vec<Location>>>>,
}

/// A shard's cache-role state.
pub struct CacheRole {
    /// The shard this state belongs to, of how many.
    pub id: usize,
    pub shards: usize,
    pub(super) metrics: Metrics,
    /// The shard's way to the others (metadata and block owners, peer reports).
    pub(super) router: Rc<Router>,
    pub cfg: Arc<CacheRoleConfig>,
    pub(super) pool: UpstreamPool,
    /// Files whose metadata this shard owns, by URL identity.
    pub(super) catalog: RefCell<HashMap<FileKey, Arc<CachedFile>>>,
    /// The one info fetch in flight per file.
    pub(super) lookups: RefCell<HashMap<FileKey, LookupFuture>>,
    /// Blocks of this shard on disk, least recently used first; the value finds the
    /// file to punch the block out of.
    pub(super) disk: RefCell<ByteLru<Weak<CachedFile>>>,
    /// Blocks written to disk right now: served from here until their bit is set.
    pub(super) writing: RefCell<HashMap<BlockKey, Bytes>>,
    /// Bytes on disk that the LRU does not count: blocks being written and blocks
    /// being punched out. With the LRU's bytes they never exceed the shard's limit, so
    /// the disk use stays within `-C` at every moment, not only between writes.
    pub(super) reserved_bytes: Cell<u64>,
    pub(super) write_bytes_in_flight: Cell<u64>,
    /// When a failed disk write was last logged.
    pub(super) last_write_warning: Cell<Option<Instant>>,
    pub(super) data_files: RefCell<HashMap<(u64, u64), Rc<DataFile>>>,
    /// Per file version this shard fetches blocks of: its sources and their measured
    /// state.
    pub(super) sources: RefCell<HashMap<(u64, u64), FileSources>>,
    /// The file versions with blocks in this shard's disk LRU, so that a retired
    /// version's blocks leave the accounting and its data file is closed (a deleted
    /// file's space is freed only when the last descriptor goes).
    pub(super) known: RefCell<HashMap<(u64, u64), KnownFile>>,
    pub(super) dns: RefCell<HashMap<(String, u16), Resolved>>,
    /// An announce round is running (see [`CacheRole::housekeeping`]).
    pub(super) announcing: Cell<bool>,
    /// Upstream Locate answers being relayed, per file version.
    pub(super) relayed: RefCell<HashMap<(u64, u64), Relayed>>,
}

impl CacheRole {
    pub fn new(
        cfg: Arc<CacheRoleConfig>,
        id: usize,
        shards: usize,
        metrics: Metrics,
        router: Rc<Router>,
    ) -> CacheRole {
        let limit = cfg.disk_limit_per_shard_bytes.unwrap_or(u64::MAX);
        CacheRole {
            id,
            shards,
            metrics,
            router,
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

    /// This shard's metrics.
    pub fn m(&self) -> &ShardMetrics {
        self.metrics.shard(self.id)
    }

    /// Files whose metadata this shard holds now.
    pub fn files(&self) -> usize {
        self.catalog.borrow().len()
    }
}
