//! Where a cached file's blocks are: asking the upstream (Locate) for its mirrors and
//! peers, and answering downstream Locates (this node, then what the upstream said,
//! relayed at most once a second per file).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{FutureExt, LocalBoxFuture};

use super::file::{now_ms, CachedFile, LocatedSet};
use super::role::{CacheRole, Relayed};
use super::sources::MAX_SOURCES_PER_FILE;
use crate::error::Refusal;
use crate::pure::protocol::{limits, BlockRange, Holds, Location};
use crate::runtime::{self};
use crate::upstream::range::{class_of, Located};

/// Most locations relayed from the upstream in one Locate answer.
pub(super) const MAX_RELAYED_LOCATIONS: usize = 32;

/// How often a cache asks its upstream again where a file's blocks are.
pub(super) const LOCATE_REFRESH: Duration = Duration::from_secs(30);

/// How soon it asks again when it needs a block no known peer holds, from a p2p
/// registry: peers a little ahead in the same film hold more by now.
pub(super) const LOCATE_ON_MISS: Duration = Duration::from_secs(1);

/// How long it waits for that answer.
pub(super) const LOCATE_WAIT: Duration = Duration::from_secs(2);

/// How long an upstream's Locate answer is relayed again rather than asked anew: a
/// flood of downstream Locates costs the upstream one round trip per file and second,
/// not one each (a cache relaying each was a free amplifier against its upstream).
/// Peers report blocks in batches a few seconds apart, so the answer is as fresh.
pub(super) const RELAY_FRESH: Duration = Duration::from_secs(1);

/// Whole-file answers a shard keeps at most (older ones are dropped first).
pub(super) const MAX_RELAYED_FILES: usize = 256;

impl CacheRole {
    /// Asks the upstream, in the background, which other nodes serve `file` (its
    /// mirrors, peers in p2p mode), when that was not asked within
    /// [`LOCATE_REFRESH`]: fetches fail over to them, and prefer peers.
    pub(super) fn refresh_located(self: &Rc<Self>, file: &Arc<CachedFile>, min_age: Duration) {
        if let Some(locate) = self.locate_task(file, min_age) {
            runtime::spawn_detached(locate);
        }
    }

    /// The Locate round trip for `file` if the last one is older than `min_age`
    /// (through the parent, if any).
    pub(super) fn locate_task(
        self: &Rc<Self>,
        file: &Arc<CachedFile>,
        min_age: Duration,
    ) -> Option<LocalBoxFuture<'static, ()>> {
        let last = file.located_ms.load(Relaxed);
        if last != 0 && now_ms().saturating_sub(last) < min_age.as_millis() as u64 {
            return None;
        }
        file.located_ms.store(now_ms(), Relaxed);
        let (me, file) = (self.clone(), file.clone());
        Some(
            async move {
                let r = me.locate_whole_file(&file).await;
                let own = me.cfg.own_addrs.clone();
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

    /// The upstream's Locate answer for all of `file` within [`LOCATE_WAIT`], with
    /// the address of the upstream that gave it.
    pub(super) async fn locate_whole_file(
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
    pub(super) async fn relayed_locations(
        self: &Rc<Self>,
        file: &Arc<CachedFile>,
    ) -> Rc<Vec<Location>> {
        let key = (file.file_id, file.meta().version);
        let now = Instant::now();
        let cached = self
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
                let mut relayed = self.relayed.borrow_mut();
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
    pub async fn locations(
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
        let own = self.cfg.own_addrs.clone();
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
