//! What a node serves, behind one type: a file an origin publishes, or a file a cache
//! holds (some or all of its blocks) on behalf of an origin. The SPP and HTTP servers
//! and the shards stream either the same way; only where a missing block comes from
//! differs (the origin's disk, or the cache's disk and then its upstream).

use std::sync::Arc;

use crate::node::cache::CachedFile;
use crate::node::origin::publisher::FileEntry;
use crate::pure::digest::DigestAlgo;

/// A served file. Cloning copies a pointer.
#[derive(Clone, Debug)]
pub enum Content {
    /// A file under the origin's `-p` directory, with its digest index.
    Published(Arc<FileEntry>),
    /// A file a cache holds blocks of, with the origin's info and digests.
    Cached(Arc<CachedFile>),
}

impl Content {
    /// Names the file among the node's files (with `version`, names its blocks).
    pub fn file_id(&self) -> u64 {
        match self {
            Content::Published(e) => e.file_id,
            Content::Cached(c) => c.file_id,
        }
    }

    /// The origin's content version.
    pub fn version(&self) -> u64 {
        match self {
            Content::Published(e) => e.version(),
            Content::Cached(c) => c.meta().version,
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Content::Published(e) => e.size(),
            Content::Cached(c) => c.meta().size,
        }
    }

    pub fn block_size(&self) -> u32 {
        match self {
            Content::Published(e) => e.index.block_size,
            Content::Cached(c) => c.meta().block_size,
        }
    }

    pub fn algo(&self) -> DigestAlgo {
        match self {
            Content::Published(e) => e.index.algo,
            Content::Cached(c) => c.meta().algo,
        }
    }

    pub fn block_count(&self) -> u64 {
        match self {
            Content::Published(e) => e.index.block_count,
            Content::Cached(c) => c.index.block_count(),
        }
    }

    /// The file's blocks.
    pub fn geometry(&self) -> crate::pure::geometry::FileGeometry {
        match self {
            Content::Published(e) => e.index.geometry(),
            Content::Cached(c) => c.index.geometry(),
        }
    }

    /// Length of block `idx` (the last block may be short).
    pub fn block_len(&self, idx: u64) -> usize {
        match self {
            Content::Published(e) => e.index.block_len(idx),
            Content::Cached(c) => c.index.block_len(idx),
        }
    }

    /// The origin's digest of block `idx` (`idx` < block_count).
    pub fn digest(&self, idx: u64) -> &[u8] {
        match self {
            Content::Published(e) => e.index.digest(idx),
            Content::Cached(c) => c.index.digest(idx),
        }
    }

    /// The digests of blocks `start..start+count`, clamped to the file's blocks.
    pub fn digests(&self, start: u64, count: u64) -> &[u8] {
        match self {
            Content::Published(e) => e.index.digests(start, count),
            Content::Cached(c) => c.index.digests(start, count),
        }
    }

    /// The origin's modification time, seconds since the Unix epoch.
    pub fn mtime_unix_secs(&self) -> i64 {
        match self {
            Content::Published(e) => e.mtime_unix_secs(),
            Content::Cached(c) => c.meta().mtime_unix_secs,
        }
    }

    /// The path, for content types and logs.
    pub fn name(&self) -> &str {
        match self {
            Content::Published(e) => &e.rel_path,
            Content::Cached(c) => &c.key.path,
        }
    }

    /// The same file version (not merely equal metadata).
    pub fn same(&self, other: &Content) -> bool {
        match (self, other) {
            (Content::Published(a), Content::Published(b)) => Arc::ptr_eq(a, b),
            (Content::Cached(a), Content::Cached(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}
