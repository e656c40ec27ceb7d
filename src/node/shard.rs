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
use super::cache::CacheRole;
use super::content::Content;
use super::origin::reads::OriginRole;
use super::router::Router;
use crate::error::BlockError;
use crate::metrics::{Metrics, ShardMetrics};
use crate::pure::lru::{BlockCache, BlockKey};
use crate::pure::placement::owner_of;
use crate::pure::ratelimit::TokenBucket;
use crate::runtime;

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
/// Blocks one shard produces at once at most (disk reads, upstream fetches). Each
/// runs in its own task to its end or its deadline, whether or not anyone still waits
/// for it, so requesters that hang up cannot leave work behind without bound: beyond
/// it a new production is refused ([`BlockError::Busy`]). Far above what viewers need
/// (a connection reads 8 blocks ahead: 512 streaming connections' worth of misses on
/// one shard at once).
pub const MAX_INFLIGHT_BLOCKS_PER_SHARD: usize = 4096;

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
    Origin(Rc<OriginRole>),
    Cache(Rc<CacheRole>),
}

pub struct Shard {
    pub id: usize,
    pub shards: usize,
    pub metrics: Metrics,
    pub router: Rc<Router>,
    pub role: ShardRole,
    cache: RefCell<BlockCache>,
    /// One production (disk read, upstream fetch) per missing block, however many
    /// requesters wait for it; each runs in its own task and removes its entry when it
    /// ends. At most [`MAX_INFLIGHT_BLOCKS_PER_SHARD`] entries.
    inflight: RefCell<HashMap<BlockKey, Production>>,
    next_production: std::cell::Cell<u64>,
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
        router: Rc<Router>,
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
            ShardRole::Origin(_) => (READAHEAD_BLOCKS, READAHEAD_BYTES),
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
                return Err(BlockError::Busy(MAX_INFLIGHT_BLOCKS_PER_SHARD));
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
        match (&self.role, content.clone()) {
            (ShardRole::Origin(origin), Content::Published(entry)) => {
                let origin = origin.clone();
                async move { origin.load(&entry, index).await }.boxed_local()
            }
            (ShardRole::Cache(cache), Content::Cached(file)) => cache
                .clone()
                .fill_block(file, index, may_fetch)
                .boxed_local(),
            // A node has one role and makes its Content itself (`Context::resolve`),
            // so the pairs above are the only ones that occur.
            (_, content) => {
                let name = content.name().to_string();
                async move { Err(BlockError::Io(format!("{name}: content of another role"))) }
                    .boxed_local()
            }
        }
    }
}
