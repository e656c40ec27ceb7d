//! What a node serves, behind one type: a file an origin publishes, or a file a cache
//! holds (some or all of its blocks) on behalf of an origin. The SPP and HTTP servers
//! and the shards stream either the same way; only where a missing block comes from
//! differs (the origin's disk, or the cache's disk and then its upstream).

use std::sync::Arc;

use crate::node::cache::CachedFile;
use crate::node::origin::publisher::FileEntry;
use crate::pure::digest::DigestAlgo;
use crate::pure::protocol::ErrorCode;

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

/// How an upstream failed, as far as the downstream needs to know: what to answer
/// (SPP error code, HTTP status) and whether trying again later may help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// No connection could be made, or it broke.
    Unreachable,
    /// The upstream did not answer in time.
    TimedOut,
    /// The upstream refused us (forbidden, not cached there).
    Refused,
    /// The upstream does not have the file.
    NotFound,
    /// Anything else: bad data, protocol errors, internal errors upstream.
    Failed,
}

/// An upstream failure with a message for logs and error bodies.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UpstreamError {
    pub kind: UpstreamErrorKind,
    pub message: String,
}

/// Why a file cannot be served to a requester: one type for both servers, which turn
/// it into an SPP error code or an HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not found: {0}")]
    NotFound(String),
    /// The requester may not have it (`-A`, or not allowed to make this node fetch).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Not held here, and this node will not fetch it for this requester.
    #[error("not cached here: {0}")]
    NotCached(String),
    /// Try again later (indexing, limits).
    #[error("busy: {0}")]
    Busy(String),
    #[error("upstream: {0}")]
    Upstream(UpstreamError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Refusal {
    /// The SPP error code for this refusal.
    pub fn spp_code(&self) -> ErrorCode {
        match self {
            Refusal::NotFound(_) => ErrorCode::NotFound,
            Refusal::Forbidden(_) => ErrorCode::Forbidden,
            Refusal::NotCached(_) => ErrorCode::NotCachedHere,
            Refusal::Busy(_) => ErrorCode::Busy,
            Refusal::Upstream(u) => match u.kind {
                UpstreamErrorKind::Refused => ErrorCode::Forbidden,
                UpstreamErrorKind::NotFound => ErrorCode::NotFound,
                _ => ErrorCode::UpstreamFailed,
            },
            Refusal::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The HTTP status for this refusal (a proxy's: 502/504 for upstream trouble).
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::NotFound(_) => 404,
            Refusal::Forbidden(_) | Refusal::NotCached(_) => 403,
            Refusal::Busy(_) => 503,
            Refusal::Upstream(u) => match u.kind {
                UpstreamErrorKind::Refused => 403,
                UpstreamErrorKind::NotFound => 404,
                UpstreamErrorKind::TimedOut => 504,
                UpstreamErrorKind::Unreachable | UpstreamErrorKind::Failed => 502,
            },
            Refusal::Internal(_) => 500,
        }
    }
}
