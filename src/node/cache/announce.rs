//! A cache shard's housekeeping: forgetting retired file versions, and announcing the
//! blocks it holds to p2p registries upstream (Have), one bounded round at a time.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::file::CachedFile;
use super::role::CacheRole;
use crate::pure::protocol::{limits, BlockRange};
use crate::runtime::{self};

/// How often a cache shard looks for retired file versions to forget.
pub(super) const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// The least time an announce round may take before it is cut short (otherwise
/// twice the interval).
pub(super) const ANNOUNCE_MIN_DEADLINE: Duration = Duration::from_secs(10);

/// Files one shard announces per round at most (see [`CacheRole::announce_held`]).
pub(super) const MAX_ANNOUNCED_FILES: usize = 4096;

/// Runs of held blocks announced per file at most (16 Have frames).
pub(super) const MAX_ANNOUNCED_RANGES: usize = 16 * limits::MAX_RANGES;

impl CacheRole {
    /// Runs for the life of a cache shard: every `HOUSEKEEPING_INTERVAL`, forgets
    /// the file versions that were retired (replaced at the origin, gone there) or
    /// dropped: their blocks leave the disk LRU and their data file is closed.
    /// Every `--announce-interval` it also announces the blocks held (see
    /// `CacheRole::announce_held`).
    pub async fn housekeeping(self: Rc<Self>) {
        let every = self.cfg.announce_interval;
        let mut last_announce = Instant::now();
        loop {
            runtime::sleep(HOUSEKEEPING_INTERVAL.min(every)).await;
            self.forget_retired().await;
            let idle = !self.announcing.get();
            if idle && last_announce.elapsed() >= every {
                last_announce = Instant::now();
                // Its own task, one round at a time, each with a deadline: a slow
                // upstream delays the next announce, never the housekeeping above.
                let me = self.clone();
                me.announcing.set(true);
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
                    me.announcing.set(false);
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
    pub(super) async fn announce_held(self: &Rc<Self>) {
        let mut files: Vec<Arc<CachedFile>> = self
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
            let up = match self.pool.get(to).await {
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
}
