//! The fill path of a block this shard owns: a write in progress, the disk (verified),
//! else one fetch from the file's sources with failover, verified before anyone sees
//! it; and the Have and PeerReport hints that go upstream with it.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{self, Either, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};

use super::file::CachedFile;
use super::locate::LOCATE_ON_MISS;
use super::role::CacheRole;
use super::sources::{
    merge_sources, sched_config, AttemptContext, Chosen, Ended, FileSources, Pick, SourceSlot,
    MAX_FILES_WITH_SOURCES, MAX_SOURCES_PER_FILE, RACE_CHECK,
};
use crate::error::{BlockError, FetchError, Refusal, UpstreamError, UpstreamErrorKind};
use crate::metrics::ShardMetrics;
use crate::pure::lru::BlockKey;
use crate::pure::protocol::{ErrorCode, FileRef, PeerProblem};
use crate::pure::sched::SourceClass;
use crate::runtime::verify_block;
use crate::runtime::{self, DataFile};
use crate::upstream::attempt::{self, Deadlines, Expected};
use crate::upstream::range::Located;

/// Sources tried for one block before its fetch fails.
pub(super) const MAX_ATTEMPTS_PER_BLOCK: usize = 6;

/// A peer is late with a block a reader waits on once it has taken this many times
/// what the scheduler expected of it, and [`PEER_LATE_MIN`] more: a server is asked
/// too.
pub(super) const PEER_LATE_FACTOR: f64 = 1.5;
/// See [`PEER_LATE_FACTOR`].
pub(super) const PEER_LATE_MIN: Duration = Duration::from_millis(100);

/// When the peers asked for a block are late with it, `chosen` one more of them (as
/// before when it is a server).
fn peer_late_at(before: Option<Instant>, chosen: &Chosen) -> Option<Instant> {
    if chosen.class != SourceClass::Peer {
        return before;
    }
    let due = Instant::now() + chosen.expected.mul_f64(PEER_LATE_FACTOR) + PEER_LATE_MIN;
    Some(before.map_or(due, |d| d.max(due)))
}

/// How long a fetch waits before asking again for a source, when every source that
/// may have its block is busy with other blocks.
pub(super) const SOURCE_WAIT: Duration = Duration::from_millis(10);

/// The most one block fetch may take in all, in upstream timeouts (`--upstream-timeout`):
/// every attempt, waiting for a free source, connecting, verifying. A single source
/// gets its whole timeout and a second try; several get as many failover attempts as
/// fit. Fetches run on whether or not anyone still waits for them, so each must end.
pub(super) const FETCH_DEADLINE_TIMEOUTS: u32 = 2;

/// The deadline of one block fetch (see [`FETCH_DEADLINE_TIMEOUTS`]).
pub(super) fn fetch_deadline(upstream_timeout: Duration) -> Duration {
    upstream_timeout * FETCH_DEADLINE_TIMEOUTS
}

/// Blocks at most this long are copied out of the connection's read buffer before
/// they are kept (see [`own_allocation`]).
pub(super) const COPY_BLOCKS_UP_TO_BYTES: usize = 128 * 1024;

/// A fetched block in an allocation of its own. A block decoded from an upstream
/// connection is a slice of the connection's read buffer, which holds several small
/// frames (at least 64 KiB): kept in the memory cache, each 16 KiB block held its
/// whole buffer, and a cache with `-M 32M` grew to 200 MiB and more. Copying a small
/// block costs far less than the digest check it just passed.
pub(super) fn own_allocation(data: Bytes) -> Bytes {
    if data.len() <= COPY_BLOCKS_UP_TO_BYTES {
        Bytes::copy_from_slice(&data)
    } else {
        data
    }
}

impl CacheRole {
    /// Produces a block of a cached file on its owning shard: from a write in
    /// progress, from disk (verified; a bad copy is dropped), or from the upstream
    /// when the requester may make us fetch.
    pub async fn fill_block(
        self: Rc<Self>,
        file: Arc<CachedFile>,
        index: u64,
        may_fetch: bool,
    ) -> Result<Bytes, BlockError> {
        let key = BlockKey {
            file_id: file.file_id,
            version: file.meta().version,
            index,
        };
        if let Some(b) = self.writing.borrow().get(&key) {
            return Ok(b.clone());
        }
        if file.index.has(index) {
            match self.read_stored(&file, index).await {
                Ok(b) => {
                    ShardMetrics::add(&self.m().disk_cache_hits, 1);
                    self.disk.borrow_mut().get(&key);
                    return Ok(b);
                }
                Err(why) => {
                    ShardMetrics::add(&self.m().disk_cache_corrupt, 1);
                    ShardMetrics::add(&self.m().digest_failures, 1);
                    tracing::warn!(url = %file.key.url(), block = index, why, "cached block is damaged; dropping it");
                    file.index.clear(index);
                    let removed = self.disk.borrow_mut().remove(&key);
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
        let deadline = fetch_deadline(self.cfg.upstream.timeout);
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
            self.writing.borrow_mut().insert(key, data.clone());
            let me = self.clone();
            let (f, d) = (file.clone(), data.clone());
            runtime::spawn_detached(async move {
                me.store_block(&f, key, d).await;
                me.writing.borrow_mut().remove(&key);
            });
        }
        Ok(data)
    }

    /// Reads a stored block and checks it against the origin's digest: the cache's
    /// disk is not trusted (a crash, a flipped bit, a torn write are all caught here).
    pub(super) async fn read_stored(
        &self,
        file: &Arc<CachedFile>,
        index: u64,
    ) -> Result<Bytes, &'static str> {
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
    pub(super) async fn block_sources(
        &self,
        file: &Arc<CachedFile>,
    ) -> Result<Vec<Located>, Refusal> {
        let mut out: Vec<Located> = self
            .upstream_addrs(&file.key)
            .await?
            .into_iter()
            .map(Located::server)
            .collect();
        // Below a parent only peers join it: the servers above stay shielded.
        let parent = self.cfg.parent.is_some();
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
    /// stalls or sends a bad block loses the block to the next one, and one that sent
    /// a bad block is not asked again for this file. A block late at its source is
    /// raced to a second one (the first verified copy wins, the other is cancelled).
    /// After a peer failed it, the block's next attempt goes to a server, and it fails
    /// only once a server has failed it too (or there is none): a viewer is not cut
    /// off while a server can serve. When every source that may have the block is
    /// busy with others, it waits for one. The caller bounds the whole of it
    /// ([`fetch_deadline`]); each attempt's place at its source is given back however
    /// the attempt ends ([`SourceSlot`]).
    pub(super) async fn fetch_block(
        self: &Rc<Self>,
        file: &Arc<CachedFile>,
        index: u64,
    ) -> Result<Bytes, BlockError> {
        let sources = self.block_sources(file).await.map_err(BlockError::from)?;
        let upstream = sources.first().map(|l| l.addr);
        // p2p: no peer is known to hold this block; peers ahead in the film may have
        // it by now, so ask the registry again (in the background) for the next ones.
        if upstream.is_some_and(|u| self.pool.is_registry(u))
            && !sources
                .iter()
                .any(|l| l.class == SourceClass::Peer && l.has(index))
        {
            self.refresh_located(file, LOCATE_ON_MISS);
        }
        let ctx = AttemptContext {
            file,
            index,
            key: (file.file_id, file.meta().version),
            deadlines: (
                Deadlines::new(self.cfg.upstream.timeout, sources.len() > 1),
                Deadlines::new(self.cfg.upstream.timeout, false),
            ),
            upstream,
            // Peers found bad or unreachable are reported to the node that named
            // them, over the connection that was handed them (that shard's).
            report_to: {
                let located = file.located.load();
                match located.from {
                    Some(from) => Some((from, located.by_shard)),
                    None => upstream.map(|u| (u, self.id)),
                }
            },
        };
        let any_server = sources.iter().any(|l| l.class == SourceClass::Server);
        let block_bytes = file.index.block_len(index) as u64;
        let (mut attempts, mut server_tried, mut peer_failed) = (0, false, false);
        // When the peers asked for it are late with it (past what the scheduler
        // expected of them, with a margin).
        let mut peers_late: Option<Instant> = None;
        let mut last: Option<BlockError> = None;
        let mut running = FuturesUnordered::new();
        loop {
            if running.is_empty() {
                if attempts >= MAX_ATTEMPTS_PER_BLOCK && (server_tried || !any_server) {
                    break;
                }
                let only = (peer_failed && any_server).then_some(SourceClass::Server);
                let need_by = file.playback.deadline(index, block_bytes, Instant::now());
                match self.pick_source(ctx.key, &sources, index, (only, need_by)) {
                    Pick::Source(chosen) => {
                        tracing::trace!(block = index, to = %chosen.addr, class = ?chosen.class, slack_ms = ?need_by.map(|d| d.saturating_duration_since(Instant::now()).as_millis()), peers_holding = sources.iter().filter(|l| l.class == SourceClass::Peer && l.has(index)).count(), expected_ms = chosen.expected.as_millis() as u64, "block asked of a source");
                        attempts += 1;
                        server_tried |= chosen.class == SourceClass::Server;
                        peers_late = peer_late_at(peers_late, &chosen);
                        running.push(self.attempt(&ctx, chosen).boxed_local());
                    }
                    Pick::Busy => {
                        runtime::sleep(SOURCE_WAIT).await;
                        continue;
                    }
                    Pick::NoSource => break,
                }
            }
            let tick = runtime::sleep(RACE_CHECK);
            match future::select(running.next(), std::pin::pin!(tick)).await {
                Either::Left((Some(end), _)) => match end {
                    Ended::Done(data) => return Ok(data),
                    Ended::Changed => return Err(BlockError::Changed),
                    Ended::Failed { error, peer } => {
                        peer_failed |= peer;
                        last = Some(error);
                    }
                },
                Either::Left((None, _)) => {}
                // Late at its source: a second source may deliver it sooner.
                Either::Right(_) => {
                    // A reader waits on it, and the peers asked for it are late with
                    // it: a server is asked too (a slow peer's queue never holds a
                    // viewer up).
                    let now = Instant::now();
                    let waited_on = file
                        .playback
                        .deadline(index, block_bytes, now)
                        .is_some_and(|d| d <= now);
                    let late = peers_late.is_some_and(|d| d <= now);
                    if waited_on && late && any_server && !server_tried {
                        let urgent = (Some(SourceClass::Server), Some(now));
                        if let Pick::Source(chosen) =
                            self.pick_source(ctx.key, &sources, index, urgent)
                        {
                            tracing::debug!(block = index, to = %chosen.addr, "a reader waits on a block a peer has not sent; asking a server too");
                            attempts += 1;
                            server_tried = true;
                            running.push(self.attempt(&ctx, chosen).boxed_local());
                        }
                    } else if running.len() == 1 {
                        if let Some(chosen) = self.race_source(ctx.key, &sources, index) {
                            peers_late = peer_late_at(peers_late, &chosen);
                            attempts += 1;
                            server_tried |= chosen.class == SourceClass::Server;
                            running.push(self.attempt(&ctx, chosen).boxed_local());
                        }
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| BlockError::Io("no upstream".into())))
    }

    /// One attempt of a block fetch at the source `chosen`: the request (given up
    /// when the scheduler takes the block from this source), the check, and what
    /// follows from its outcome (metrics, the Have, a report about a bad peer).
    async fn attempt(self: &Rc<Self>, ctx: &AttemptContext<'_>, chosen: Chosen) -> Ended {
        let Chosen {
            src,
            addr,
            class,
            cancelled,
            expected: takes,
        } = chosen;
        let (file, index) = (ctx.file, ctx.index);
        let fref = file.file_ref();
        let version = ctx.key.1;
        let slot = SourceSlot {
            sources: &self.sources,
            file: ctx.key,
            src,
            index,
            open: true,
        };
        let started = Instant::now();
        let expected = Expected {
            len: file.index.block_len(index),
            algo: file.meta().algo,
            digest: file.index.digest(index),
        };
        // A peer given up on (another source won a race for the block, or the block
        // was taken from it) before its connection was made is followed up.
        let mut follow_up = (class == SourceClass::Peer).then(|| PeerFollowUp {
            role: self.clone(),
            peer: addr,
            started,
            file: file.clone(),
            version,
            report_to: ctx.report_to,
            armed: true,
        });
        // A busy origin's 3 s attempts failed blocks and cut players off: servers get
        // the whole timeout (see `AttemptContext`).
        let deadlines = match class {
            SourceClass::Server => ctx.deadlines.1,
            SourceClass::Peer => ctx.deadlines.0.queued(takes, self.cfg.upstream.timeout),
        };
        let request = attempt::request(&self.pool, (addr, class), &fref, version, index, deadlines);
        let r = match future::select(std::pin::pin!(request), cancelled).await {
            Either::Left((r, _)) => {
                // Its own outcome, reported below like any other; a peer whose
                // connection broke is followed up too (it may have died).
                if let Some(f) = follow_up.as_mut() {
                    f.armed = matches!(&r, Err(FetchError::Closed { .. }))
                        || matches!(&r, Err(e) if e.is_connect_timeout());
                }
                r
            }
            Either::Right(_) => {
                // Taken away: the source stalled past the scheduler's timeout, or
                // failed another block and lost all of its blocks.
                slot.taken_away();
                ShardMetrics::add(&self.m().upstream_errors, 1);
                tracing::debug!(upstream = %addr, url = %file.key.url(), block = index, "block taken from a stalled or failed source; trying another");
                let error = FetchError::Timeout {
                    addr,
                    what: "block data",
                    ms: started.elapsed().as_millis() as u64,
                };
                return Ended::Failed {
                    error: BlockError::Upstream(error.to_upstream_error()),
                    peer: class == SourceClass::Peer,
                };
            }
        };
        let r = match r {
            Ok(data) => attempt::check(addr, index, data, expected).await,
            Err(e) => Err(e),
        };
        let e = match r {
            Ok(data) => {
                tracing::trace!(block = index, from = %addr, ms = started.elapsed().as_millis() as u64, "block verified");
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
                // p2p: tell the node that hands out locations that this one now
                // holds the block (batched; sent only to a p2p registry).
                if let Some(u) = ctx.upstream {
                    self.report_have(u, &fref, version, index);
                }
                return Ended::Done(own_allocation(data));
            }
            Err(e) => e,
        };
        if let FetchError::Remote {
            code: ErrorCode::VersionChanged,
            ..
        } = e
        {
            // The origin has a new version: the next lookup fetches its info.
            slot.failed(e.source_failure(class));
            file.validated_ms.store(0, Relaxed);
            return Ended::Changed;
        }
        ShardMetrics::add(&self.m().upstream_errors, 1);
        if let FetchError::Digest { .. } = e {
            ShardMetrics::add(&self.m().digest_failures, 1);
            tracing::warn!(upstream = %addr, url = %file.key.url(), block = index, "block from upstream failed its digest check; discarded, and the source is not used again for this file");
        } else {
            tracing::debug!(upstream = %addr, url = %file.key.url(), block = index, error = %e, "block fetch failed; trying another source");
        }
        // A connection not made in time is left to the follow-up's verdict.
        if class == SourceClass::Peer && !e.is_connect_timeout() {
            if let Some(problem) = e.peer_problem() {
                file.forget_located(addr);
                self.report_peer(ctx.report_to, &fref, version, addr, problem);
            }
        }
        slot.failed(e.source_failure(class));
        Ended::Failed {
            error: BlockError::Upstream(e.to_upstream_error()),
            peer: class == SourceClass::Peer,
        }
    }

    /// Tells `to`, soon and batched, that this node now holds block `index` (p2p: the
    /// node that hands out locations), in the background: a connection to make never
    /// delays the block, nor eats into its fetch's deadline.
    pub(super) fn report_have(
        self: &Rc<Self>,
        to: SocketAddr,
        file: &FileRef,
        version: u64,
        index: u64,
    ) {
        let (me, file) = (self.clone(), file.clone());
        runtime::spawn_detached(async move {
            if let Ok(up) = me.pool.get(to).await {
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
    pub(super) fn report_peer(
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
            if me.pool.report_peer(to, &file, version, peer, problem).await {
                ShardMetrics::add(&me.m().peer_reports_sent, 1);
            }
        });
    }

    /// The source to ask for block `index` of file version `key` among `sources`
    /// (of class `only`, if given), needed by `need_by` (the file's readers'
    /// deadline for it, if any reader is before it); the scheduler is (re)built when the sources
    /// changed, or when every source was dropped (a source that recovered gets
    /// another chance). Requests outstanding past the stall timeout are taken from
    /// their sources first, as `p2pd get` does.
    pub(super) fn pick_source(
        &self,
        key: (u64, u64),
        sources: &[Located],
        index: u64,
        (only, need_by): (Option<SourceClass>, Option<Instant>),
    ) -> Pick {
        let mut all = self.sources.borrow_mut();
        let cfg = sched_config(self.cfg.upstream.timeout);
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
        let why = tracing::enabled!(tracing::Level::TRACE)
            .then(|| entry.sched.explain(index, need_by, now));
        let src = match entry.sched.pick_block_of(index, need_by, only, now) {
            Some(s) => s,
            None if entry.sched.stuck_on(index) => {
                *entry = FileSources::new(sources, cfg);
                match entry.sched.pick_block_of(index, need_by, only, now) {
                    Some(s) => s,
                    None if entry.sched.stuck_on(index) => return Pick::NoSource,
                    None => return Pick::Busy,
                }
            }
            None if only.is_some_and(|o| {
                !sources
                    .iter()
                    .enumerate()
                    .any(|(i, l)| l.class == o && !entry.sched.source(i).dropped && l.has(index))
            }) =>
            {
                return Pick::NoSource
            }
            None => return Pick::Busy,
        };
        if let Some(why) = why.filter(|w| w.contains("peer")) {
            tracing::trace!(block = index, chosen = src, %why, "sources weighed");
        }
        Pick::Source(entry.chosen(src, index))
    }

    /// A second source for block `index`, when the scheduler finds it late at the
    /// one it is asked of (see `Scheduler::race`).
    pub(super) fn race_source(
        &self,
        key: (u64, u64),
        sources: &[Located],
        index: u64,
    ) -> Option<Chosen> {
        let mut all = self.sources.borrow_mut();
        let entry = all.get_mut(&key).filter(|e| e.sources == sources)?;
        let src = entry.sched.race(index, Instant::now())?;
        tracing::debug!(to = %entry.sources[src].addr, block = index, "block late at its source; racing it");
        Some(entry.chosen(src, index))
    }
}

/// How long a peer has to connect before it is reported unreachable: past TCP's
/// second SYN retransmission (1 s, then 2 s more). An attempt moves on sooner
/// ([`attempt::PEER_CONNECT_TIMEOUT`]); only the report waits.
const PEER_VERDICT: Duration = Duration::from_millis(4000);

/// A peer attempt that ended while the peer's connection was still being made
/// (another source won a race for the block, the block was taken from it, or the
/// connect deadline passed), or whose connection broke: a connection is followed to
/// [`PEER_VERDICT`] (at least half a connect deadline) in the background, and if it
/// is not made by then the peer is reported unreachable and left out of the file's
/// sources. A viewer does not wait for the verdict.
struct PeerFollowUp {
    role: Rc<CacheRole>,
    peer: SocketAddr,
    started: Instant,
    file: Arc<CachedFile>,
    version: u64,
    report_to: Option<(SocketAddr, usize)>,
    /// Cleared when the attempt reached its own outcome.
    armed: bool,
}

impl Drop for PeerFollowUp {
    fn drop(&mut self) {
        if !self.armed || self.role.pool.is_connected(self.peer) {
            return;
        }
        let (role, peer, file, version, report_to) = (
            self.role.clone(),
            self.peer,
            self.file.clone(),
            self.version,
            self.report_to,
        );
        // Two SYN retransmissions from the attempt's start (a lost SYN or answer on a
        // congested uplink is not an unreachable peer), or that long from now for a
        // peer whose connection broke (a fresh connection is what is checked).
        let left = PEER_VERDICT
            .saturating_sub(self.started.elapsed())
            .max(attempt::PEER_CONNECT_TIMEOUT / 2);
        runtime::spawn_detached(async move {
            let made = matches!(runtime::timeout(left, role.pool.get(peer)).await, Ok(Ok(_)));
            if !made {
                tracing::debug!(%peer, "peer given up on did not connect in time; reporting it");
                file.forget_located(peer);
                role.report_peer(
                    report_to,
                    &file.file_ref(),
                    version,
                    peer,
                    PeerProblem::Unreachable,
                );
            }
        });
    }
}
