//! One cached file version ([`CachedFile`]): the origin's info and digests and the
//! have-bitmap, when the upstream last confirmed it, the other nodes that serve it,
//! and its readers (their positions and paces: the blocks' deadlines).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

use arc_swap::ArcSwap;

use super::playback::Playback;
use crate::disk::cache_index::CacheIndex;
use crate::disk::{FileKey, FileMeta};
use crate::pure::protocol::FileRef;
use crate::upstream::range::Located;

/// Milliseconds since the process started: the clock of info revalidation.
pub(super) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// A Locate answer as a cache keeps it: who answered (the node to report its peers
/// to) and the nodes it named.
#[derive(Debug, Default)]
pub(super) struct LocatedSet {
    pub(super) from: Option<SocketAddr>,
    /// The shard whose connection to `from` got the answer: the registry takes
    /// reports about the peers it handed out on that connection only.
    pub(super) by_shard: usize,
    pub(super) nodes: Vec<Located>,
}

/// One version of a file a cache holds blocks of: the origin's info and digests and
/// the have-bitmap (memory-mapped), shared by every shard.
pub struct CachedFile {
    pub key: FileKey,
    pub file_id: u64,
    pub index: CacheIndex,
    /// Set when a newer version replaced this one (or the origin dropped the file):
    /// its files are deleted and no block of it is written again.
    pub(super) retired: AtomicBool,
    /// When the upstream last confirmed this version ([`now_ms`]); 0 = never.
    pub(super) validated_ms: AtomicU64,
    /// Other nodes that serve this file, from the upstream's Locate answer (its
    /// mirrors, peers in p2p mode), refreshed at each revalidation.
    pub(super) located: ArcSwap<LocatedSet>,
    /// When `located` was last asked for ([`now_ms`]); 0 = never.
    pub(super) located_ms: AtomicU64,
    /// Where its readers are and how fast they read: its blocks' deadlines.
    pub playback: Playback,
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
            playback: Playback::default(),
        }
    }

    /// Drops a peer found unreachable or bad from the file's sources, for every
    /// shard at once (each keeps its own scheduler); a later Locate answer brings it
    /// back only if the registry still names it.
    pub(super) fn forget_located(&self, addr: SocketAddr) {
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

    /// Whether the upstream's last Locate answer named peers for this file (p2p).
    pub fn has_peers(&self) -> bool {
        self.located
            .load()
            .nodes
            .iter()
            .any(|l| l.class == crate::pure::sched::SourceClass::Peer)
    }

    pub fn meta(&self) -> &FileMeta {
        self.index.meta()
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Relaxed)
    }

    pub(super) fn file_ref(&self) -> FileRef {
        file_ref(&self.key)
    }

    /// Whether every block of `first..end` is on disk (a requester who may not make
    /// us fetch can only be promised those).
    pub fn holds_all(&self, first: u64, end: u64) -> bool {
        (first..end).all(|i| self.index.has(i))
    }
}

pub(super) fn file_ref(key: &FileKey) -> FileRef {
    FileRef {
        host: key.host.clone(),
        port: key.port,
        path: key.path.clone(),
    }
}
