//! Fetching ahead of a cache's readers: as a reader (a player over HTTP) moves
//! through a cached file whose sources include peers (p2p mode), the blocks up to
//! `--read-ahead` seconds ahead of it at its pace (20 on a client cache) are fetched
//! before it asks, each with the deadline its position gives (see
//! `node::cache::playback`): far blocks can come from slow peers, near ones from the
//! sources that make them, and the player finds them held. Nothing is fetched ahead
//! while a reader is starting (its first 2 MiB or second): blocks sent ahead by peers
//! would share its downlink with the ones its player waits for.

use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::node::content::Content;
use crate::node::shard::{Shard, ShardRole};
use crate::runtime;

impl Shard {
    /// Reader `addr` (allowed to make this cache fetch) needs block `next` of
    /// `content` next: its position is noted (its blocks' deadlines), and what it
    /// will need soon and this cache lacks is fetched ahead for it, within the file's
    /// bound on fetches ahead in flight; as each of those ends, the next is started.
    /// Each fetch is the block's one production (a viewer asking for it meanwhile
    /// joins it) and runs in the background to its end or its deadline.
    pub fn read_ahead(self: &Rc<Self>, content: &Content, addr: IpAddr, next: u64) {
        self.fetch_ahead(content, addr, Some(next));
    }

    /// [`read_ahead`](Self::read_ahead) for a reader seen at block `next`, or (None)
    /// where it was last seen.
    fn fetch_ahead(self: &Rc<Self>, content: &Content, addr: IpAddr, next: Option<u64>) {
        let (Content::Cached(file), ShardRole::Cache(role)) = (content, &self.role) else {
            return;
        };
        let blk = u64::from(content.block_size());
        // Within a quarter of the disk limit: what is fetched ahead must still be
        // there when the reader comes to it (the blocks it read are evicted first).
        let room = role
            .cfg
            .disk_limit_per_shard_bytes
            .map_or(u64::MAX, |l| l.saturating_mul(self.shards as u64) / 4);
        // By default only with peers to take the far blocks from: from servers alone,
        // fetching ahead competes with every reader's own requests (on a 50 Mbit/s
        // origin with twelve 8 Mbit/s viewers it cut three players off). An operator
        // who set `--read-ahead` gets it whatever the sources.
        let ahead_for = if file.has_peers() || role.cfg.read_ahead_always {
            role.cfg.read_ahead
        } else {
            Duration::ZERO
        };
        let geometry = (content.block_count(), blk);
        let limits = (ahead_for, room);
        let now = Instant::now();
        let ahead = match next {
            Some(n) => file.playback.consumed((addr, n), geometry, limits, now),
            None => file.playback.more(addr, geometry, limits, now),
        };
        // A reader still starting gets nothing fetched ahead yet; once its startup
        // is over, even if it has not read since, what it will need is.
        if !ahead_for.is_zero() {
            if let Some(wait) = file.playback.startup_left(addr, blk, now) {
                let (shard, content) = (self.clone(), content.clone());
                runtime::spawn_detached(async move {
                    runtime::sleep(wait).await;
                    shard.fetch_ahead(&content, addr, None);
                });
            }
        }
        let mut j = ahead.start;
        while j < ahead.end {
            if !file.index.has(j) {
                if !file.playback.claim() {
                    break;
                }
                let (shard, content, f) = (self.clone(), content.clone(), file.clone());
                runtime::spawn_detached(async move {
                    if let Err(e) = shard.block(&content, j, true).await {
                        tracing::debug!(block = j, error = %e, "fetch ahead failed");
                    }
                    f.playback.release();
                    // A spawned task runs at once until it waits: a block that was at
                    // hand would start the next fetch ahead on this stack, and so on
                    // for every block held. Yield first.
                    futures_lite::future::yield_now().await;
                    shard.fetch_ahead(&content, addr, None);
                });
            }
            j += 1;
        }
        if !ahead.is_empty() {
            file.playback.ahead_stopped(addr, j);
        }
    }
}
