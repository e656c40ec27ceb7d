//! A shard: one executor's state. It owns a slice of the block space (see
//! [`owner_of`]): the memory-cache entries of its blocks and their single in-flight
//! disk read. Other shards reach those blocks through the [`router`](crate::node::router).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use futures::future::{FutureExt, LocalBoxFuture, Shared};
use futures::stream::{Stream, StreamExt};

use super::budget;
use super::cache;
use super::content::{Content, UpstreamError};
use crate::metrics::{Metrics, ShardMetrics};
use crate::node::origin::publisher::{FileEntry, Publisher};
use crate::node::router::Router;
use crate::pure::lru::{BlockCache, BlockKey};
use crate::pure::ratelimit::TokenBucket;
use crate::runtime::{self, BlockFile};

/// Consecutive blocks kept on one shard, so read-ahead from disk stays sequential while
/// a single hot title still spreads over every core.
pub const STRIPE_BLOCKS: u64 = 4;
/// Blocks a connection of an origin produces ahead of the one it is writing, at most;
/// fewer when they would be over [`READAHEAD_BYTES`].
pub const READAHEAD_BLOCKS: usize = 4;
/// The same on a cache: a missing block costs an upstream round trip, not a disk read,
/// so more are kept in flight to stream at the upstream's rate.
pub const CACHE_READAHEAD_BLOCKS: usize = 8;
/// Bytes an origin connection produces ahead at most (a block at least): 4 blocks of
/// 256 KiB, 1 of 16 MiB.
pub const READAHEAD_BYTES: u64 = 1 << 20;
/// The same on a cache.
pub const CACHE_READAHEAD_BYTES: u64 = 2 << 20;
/// Open media files kept per shard.
pub const MAX_OPEN_FILES_PER_SHARD: usize = 256;
/// Blocks one shard produces at once at most (disk reads, upstream fetches). Each
/// runs in its own task to its end or its deadline, whether or not anyone still waits
/// for it, so requesters that hang up cannot leave work behind without bound: beyond
/// it a new production is refused ([`BlockError::Busy`]). Far above what viewers need
/// (a connection reads 8 blocks ahead: 512 streaming connections' worth of misses on
/// one shard at once).
pub const MAX_INFLIGHT_BLOCKS_PER_SHARD: usize = 4096;

/// Why a block could not be produced.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockError {
    #[error("read failed: {0}")]
    Io(String),
    /// The bytes on disk no longer match the published digest (file changed).
    #[error("content changed on disk")]
    Changed,
    #[error("shard unavailable")]
    ShardGone,
    /// A cache does not hold the block and the requester may not make it fetch.
    #[error("not cached here")]
    NotCached,
    /// A cache could not get the block from its upstream.
    #[error("{0}")]
    Upstream(UpstreamError),
    /// The shard already produces [`MAX_INFLIGHT_BLOCKS_PER_SHARD`] blocks: try later.
    #[error("busy: {MAX_INFLIGHT_BLOCKS_PER_SHARD} blocks already in production on this shard")]
    Busy,
}

pub use crate::upstream::verify_block;

/// The shard that owns block `index` of file `file_id`.
pub fn owner_of(file_id: u64, index: u64, shards: usize) -> usize {
    let stripe = index / STRIPE_BLOCKS;
    (mix64(file_id ^ stripe.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % shards as u64) as usize
}

/// splitmix64's finaliser: cheap, and spreads consecutive stripes evenly.
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// How blocks are read from published files.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadPolicy {
    /// `--verify-reads`: hash every block read from disk (otherwise the file's
    /// identity is checked against its index on every read).
    pub verify: bool,
    /// `--buffered-reads`: page-cache reads instead of direct I/O.
    pub buffered: bool,
}

/// Most time a connection waits for room in the shard's pinned-bytes budget.
pub const PIN_WAIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A block (or why it could not be produced) and its pin in the shard's budget.
pub struct PinnedBlock {
    pub block: Result<Bytes, BlockError>,
    _pin: budget::Pin,
}

type LoadFuture = Shared<LocalBoxFuture<'static, Result<Bytes, BlockError>>>;

/// A block being produced: its shared result, and whether it may fetch from an
/// upstream (a cache's requester who may not make it fetch gets only what it holds).
struct Production {
    future: LoadFuture,
    may_fetch: bool,
    /// Tells this production from a later one of the same block in the map.
    id: u64,
}

/// What a shard does besides streaming: publish (origin) or cache (SCC, LHC).
pub enum ShardRole {
    Origin {
        publisher: Publisher,
        reads: ReadPolicy,
    },
    Cache(Box<cache::Fill>),
}

pub struct Shard {
    pub id: usize,
    pub shards: usize,
    pub metrics: Metrics,
    pub router: Router,
    pub role: ShardRole,
    cache: RefCell<BlockCache>,
    /// One production (disk read, upstream fetch) per missing block, however many
    /// requesters wait for it; each runs in its own task and removes its entry when it
    /// ends. At most [`MAX_INFLIGHT_BLOCKS_PER_SHARD`] entries.
    inflight: RefCell<HashMap<BlockKey, Production>>,
    next_production: std::cell::Cell<u64>,
    files: RefCell<HashMap<(u64, u64), Rc<BlockFile>>>,
    /// `--upload-rate`, this shard's share: file data sent over SPP and HTTP.
    upload: Option<RefCell<TokenBucket>>,
    /// Block bytes this shard's connection writers may hold (see `budget`).
    pub pins: Rc<budget::PinBudget>,
}

impl Shard {
    /// Waits until `bytes` of file data may be sent under `--upload-rate`.
    pub async fn upload_throttle(&self, bytes: usize) {
        let Some(bucket) = &self.upload else { return };
        let wait = bucket.borrow_mut().take(bytes as u64, Instant::now());
        if !wait.is_zero() {
            ShardMetrics::add(&self.m().upload_throttled_ms, wait.as_millis() as u64);
            runtime::sleep(wait).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        shards: usize,
        cache_bytes: u64,
        metrics: Metrics,
        router: Router,
        role: ShardRole,
        upload_rate_bytes_per_s: Option<u64>,
        block_size_bytes: u32,
    ) -> Rc<Shard> {
        Rc::new(Shard {
            pins: budget::PinBudget::new(block_size_bytes, metrics.clone(), id),
            id,
            shards,
            metrics,
            router,
            role,
            cache: RefCell::new(BlockCache::new(cache_bytes)),
            inflight: RefCell::new(HashMap::new()),
            next_production: std::cell::Cell::new(0),
            files: RefCell::new(HashMap::new()),
            upload: upload_rate_bytes_per_s
                .map(|rate| RefCell::new(TokenBucket::new(rate, Instant::now()))),
        })
    }

    pub fn m(&self) -> &ShardMetrics {
        self.metrics.shard(self.id)
    }

    /// A verified block, from whichever shard owns it. `may_fetch` says whether the
    /// requester may make this node fetch a missing block from its upstream (caches).
    pub async fn block(
        self: &Rc<Self>,
        content: &Content,
        index: u64,
        may_fetch: bool,
    ) -> Result<Bytes, BlockError> {
        let owner = owner_of(content.file_id(), index, self.shards);
        if owner == self.id {
            self.local_block(content.clone(), index, may_fetch).await
        } else {
            ShardMetrics::add(&self.m().router_forwarded, 1);
            self.router
                .read(owner, content.clone(), index, may_fetch)
                .await
        }
    }

    /// Blocks of `block_size` bytes produced ahead of the one a connection writes:
    /// [`READAHEAD_BLOCKS`] (a cache [`CACHE_READAHEAD_BLOCKS`]) or fewer, so that
    /// they stay within [`READAHEAD_BYTES`] ([`CACHE_READAHEAD_BYTES`]); one at least.
    pub fn readahead_window(&self, block_size: u32) -> usize {
        let (blocks, bytes) = match self.role {
            ShardRole::Origin { .. } => (READAHEAD_BLOCKS, READAHEAD_BYTES),
            ShardRole::Cache(_) => (CACHE_READAHEAD_BLOCKS, CACHE_READAHEAD_BYTES),
        };
        let fit = bytes / u64::from(block_size.max(1));
        (fit as usize).clamp(1, blocks)
    }

    /// Blocks `range` of a file in order for `writer`'s connection, with up to
    /// [`Shard::readahead_window`] produced ahead of the one being consumed, each
    /// pinned in the shard's budget until the item is dropped (the shared streaming
    /// path of HTTP; SPP's writer does the same across Gets). `Err(WriteFail)` ends
    /// the stream: the connection was shed or found no room in time.
    pub fn blocks_in_order(
        self: &Rc<Self>,
        content: &Content,
        range: std::ops::Range<u64>,
        may_fetch: bool,
        writer: Rc<budget::Writer>,
    ) -> impl Stream<Item = (u64, Result<PinnedBlock, budget::WriteFail>)> + 'static {
        let (shard, content) = (self.clone(), content.clone());
        let window = self.readahead_window(content.block_size());
        futures::stream::iter(range)
            .map(move |i| {
                let (shard, content, writer) = (shard.clone(), content.clone(), writer.clone());
                let ticket = writer.ticket();
                async move {
                    (
                        i,
                        shard
                            .pinned_block(&writer, ticket, &content, i, may_fetch)
                            .await,
                    )
                }
            })
            .buffered(window)
    }

    /// Block `index` of `content` for `writer`'s connection: a pin for its length
    /// taken in `ticket` order (see `budget`), then the block.
    pub async fn pinned_block(
        self: &Rc<Self>,
        writer: &budget::Writer,
        ticket: u64,
        content: &Content,
        index: u64,
        may_fetch: bool,
    ) -> Result<PinnedBlock, budget::WriteFail> {
        let len = content.block_len(index) as u64;
        let pin = writer.pin(ticket, len, PIN_WAIT_TIMEOUT).await?;
        let block = self.block(content, index, may_fetch).await;
        Ok(PinnedBlock { block, _pin: pin })
    }

    /// A block this shard owns: memory cache, else one shared read (the origin's disk;
    /// for a cache, its disk and then its upstream). The read runs in its own task:
    /// requesters that go away (a player hanging up) neither cancel it nor leave it
    /// half done; it ends, fills the memory cache and leaves the in-flight map by
    /// itself.
    pub async fn local_block(
        self: &Rc<Self>,
        content: Content,
        index: u64,
        may_fetch: bool,
    ) -> Result<Bytes, BlockError> {
        let key = BlockKey {
            file_id: content.file_id(),
            version: content.version(),
            index,
        };
        if let Some(b) = self.cache.borrow_mut().get(&key) {
            ShardMetrics::add(&self.m().memory_cache_hits, 1);
            return Ok(b);
        }
        // A requester who may make a cache fetch does not join a production started by
        // one who may not (its answer may be "not cached"): it starts its own, which
        // takes the block's place in the map.
        let published = matches!(content, Content::Published(_));
        let existing = self
            .inflight
            .borrow()
            .get(&key)
            .filter(|p| p.may_fetch || !may_fetch || published)
            .map(|p| p.future.clone());
        let fut = match existing {
            Some(f) => f,
            None => self.start_production(key, &content, may_fetch)?,
        };
        fut.await
    }

    /// Starts the one production of block `key` in its own task and files it in the
    /// in-flight map (in place of one that may not fetch), unless the map is full.
    fn start_production(
        self: &Rc<Self>,
        key: BlockKey,
        content: &Content,
        may_fetch: bool,
    ) -> Result<LoadFuture, BlockError> {
        {
            let inflight = self.inflight.borrow();
            if inflight.len() >= MAX_INFLIGHT_BLOCKS_PER_SHARD && !inflight.contains_key(&key) {
                ShardMetrics::add(&self.m().productions_refused, 1);
                return Err(BlockError::Busy);
            }
        }
        ShardMetrics::add(&self.m().memory_cache_misses, 1);
        let id = self.next_production.get();
        self.next_production.set(id.wrapping_add(1));
        let produce = self.produce(content, key.index, may_fetch);
        let me = self.clone();
        let task = runtime::spawn_background(async move {
            let r = produce.await;
            {
                let mut inflight = me.inflight.borrow_mut();
                if inflight.get(&key).is_some_and(|p| p.id == id) {
                    inflight.remove(&key);
                }
            }
            if let Ok(b) = &r {
                me.remember(key, b.clone());
            }
            r
        });
        let future = async move {
            // None: the task panicked or the shard is stopping.
            task.await.unwrap_or(Err(BlockError::ShardGone))
        }
        .boxed_local()
        .shared();
        self.inflight.borrow_mut().insert(
            key,
            Production {
                future: future.clone(),
                may_fetch,
                id,
            },
        );
        Ok(future)
    }

    /// Puts a verified block in the memory cache.
    fn remember(&self, key: BlockKey, block: Bytes) {
        let mut c = self.cache.borrow_mut();
        c.insert(key, block);
        self.m()
            .memory_cache_bytes
            .store(c.used_bytes() as i64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The one read that produces a block missing from the memory cache.
    fn produce(
        self: &Rc<Self>,
        content: &Content,
        index: u64,
        may_fetch: bool,
    ) -> LocalBoxFuture<'static, Result<Bytes, BlockError>> {
        let me = self.clone();
        match content.clone() {
            Content::Published(entry) => async move { me.load(&entry, index).await }.boxed_local(),
            Content::Cached(file) => me.fill_block(file, index, may_fetch).boxed_local(),
        }
    }

    /// The publisher, on an origin.
    pub fn publisher(&self) -> Option<&Publisher> {
        match &self.role {
            ShardRole::Origin { publisher, .. } => Some(publisher),
            ShardRole::Cache(_) => None,
        }
    }

    fn reads(&self) -> ReadPolicy {
        match &self.role {
            ShardRole::Origin { reads, .. } => *reads,
            ShardRole::Cache(_) => ReadPolicy::default(),
        }
    }

    async fn open_file(&self, entry: &FileEntry) -> Result<Rc<BlockFile>, BlockError> {
        let k = (entry.file_id, entry.version());
        if let Some(f) = self.files.borrow().get(&k) {
            return Ok(f.clone());
        }
        let f = Rc::new(
            BlockFile::open(&entry.abs_path, !self.reads().buffered)
                .await
                .map_err(|e| BlockError::Io(e.to_string()))?,
        );
        let mut files = self.files.borrow_mut();
        if files.len() >= MAX_OPEN_FILES_PER_SHARD {
            // Dropping an Rc closes the file once no read uses it any more.
            files.clear();
        }
        files.insert(k, f.clone());
        Ok(f)
    }

    /// Reads a block from disk, making sure it is the content the index vouches for:
    /// the open file must still be the indexed one (same size, modification time and
    /// inode, checked on every read, so a file edited in place is caught here), and
    /// with `--verify-reads` the block must also match its digest.
    async fn load(&self, entry: &FileEntry, index: u64) -> Result<Bytes, BlockError> {
        let file = self.open_file(entry).await?;
        let len = entry.index.block_len(index);
        let offset = entry.index.geometry().block_offset(index);
        let data = file
            .read_block(offset, len)
            .await
            .map_err(|e| BlockError::Io(e.to_string()))?;
        ShardMetrics::add(&self.m().disk_read_bytes, data.len() as u64);
        // The identity is taken after the read: a write that raced with it has already
        // moved the modification time.
        let same_file = file.source_stat().is_ok_and(|now| now == entry.index.stat);
        if data.len() != len || !same_file {
            tracing::warn!(path = %entry.rel_path, block = index, "published file changed on disk; re-indexing");
            return Err(self.changed(entry));
        }
        if self.reads().verify
            && !verify_block(entry.index.algo, &data, entry.index.digest(index)).await
        {
            ShardMetrics::add(&self.m().digest_failures, 1);
            tracing::warn!(path = %entry.rel_path, block = index, "block on disk does not match its digest; re-indexing");
            return Err(self.changed(entry));
        }
        Ok(data)
    }

    /// Forgets the open file of a changed entry and asks for it to be re-indexed.
    fn changed(&self, entry: &FileEntry) -> BlockError {
        self.files
            .borrow_mut()
            .remove(&(entry.file_id, entry.version()));
        if let Some(p) = self.publisher() {
            p.report_stale(&entry.rel_path, entry.version());
        }
        BlockError::Changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_spreads_stripes_over_shards() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[owner_of(42, i, 4)] += 1;
        }
        for c in counts {
            assert!(c > 700, "{counts:?}");
        }
        // A stripe stays on one shard.
        assert_eq!(owner_of(7, 0, 8), owner_of(7, STRIPE_BLOCKS - 1, 8));
        assert_eq!(owner_of(7, 5, 1), 0);
    }
}
