//! One model of what goes wrong between nodes, decided once: [`FetchError`] is what an
//! upstream request ran into, with the address it came from; its methods say how it
//! counts for the source (for the scheduler), whether another address or source may
//! do better, what to report about a peer, and what `p2pd get` exits with.
//! [`UpstreamError`] is what a downstream is told about it, [`Refusal`] why a file
//! cannot be served and [`BlockError`] why a block cannot; each maps to an SPP error
//! code and an HTTP status here and nowhere else.

use std::net::SocketAddr;

use crate::pure::protocol::{ErrorCode, PeerProblem};
use crate::pure::sched::{Failure, SourceClass};

/// Exit codes of `p2pd get`, so scripts can tell failures apart.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const NOT_FOUND: i32 = 3;
    pub const CONNECT: i32 = 4;
    pub const TIMEOUT: i32 = 5;
    pub const INTEGRITY: i32 = 6;
}

/// Why a fetch failed, with where it came from, so callers can decide to retry
/// elsewhere (upstream faults) or give up (the file does not exist).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("timed out after {ms} ms waiting for {what} from {addr}")]
    Timeout {
        addr: SocketAddr,
        what: &'static str,
        ms: u64,
    },
    #[error("{addr} answered: {code}: {message}")]
    Remote {
        addr: SocketAddr,
        code: ErrorCode,
        message: String,
    },
    #[error("{addr} broke the protocol: {message}")]
    Protocol { addr: SocketAddr, message: String },
    #[error("{addr} closed the connection")]
    Closed { addr: SocketAddr },
    #[error("block {block} from {addr} failed its {algo} digest check")]
    Digest {
        addr: SocketAddr,
        block: u64,
        algo: &'static str,
    },
    #[error("connection to {addr} failed: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What a [`FetchError::Timeout`] names when the connection itself was not made.
pub const CONNECT_WHAT: &str = "the connection";

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
    /// The shard already produces this many blocks, its limit
    /// (`MAX_INFLIGHT_BLOCKS_PER_SHARD`): try later.
    #[error("busy: {0} blocks already in production on this shard")]
    Busy(usize),
}

/// A copy for every request one failure fails (io errors keep their kind and message).
impl Clone for FetchError {
    fn clone(&self) -> FetchError {
        let io = |s: &std::io::Error| std::io::Error::new(s.kind(), s.to_string());
        match self {
            FetchError::Connect { addr, source } => FetchError::Connect {
                addr: *addr,
                source: io(source),
            },
            FetchError::Timeout { addr, what, ms } => FetchError::Timeout {
                addr: *addr,
                what,
                ms: *ms,
            },
            FetchError::Remote {
                addr,
                code,
                message,
            } => FetchError::Remote {
                addr: *addr,
                code: *code,
                message: message.clone(),
            },
            FetchError::Protocol { addr, message } => FetchError::Protocol {
                addr: *addr,
                message: message.clone(),
            },
            FetchError::Closed { addr } => FetchError::Closed { addr: *addr },
            FetchError::Digest { addr, block, algo } => FetchError::Digest {
                addr: *addr,
                block: *block,
                algo,
            },
            FetchError::Io { addr, source } => FetchError::Io {
                addr: *addr,
                source: io(source),
            },
        }
    }
}

impl FetchError {
    /// The node the failure came from.
    pub fn addr(&self) -> SocketAddr {
        match self {
            FetchError::Connect { addr, .. }
            | FetchError::Timeout { addr, .. }
            | FetchError::Remote { addr, .. }
            | FetchError::Protocol { addr, .. }
            | FetchError::Closed { addr }
            | FetchError::Digest { addr, .. }
            | FetchError::Io { addr, .. } => *addr,
        }
    }

    /// What the downstream is told.
    pub fn to_upstream_error(&self) -> UpstreamError {
        let kind = match self {
            FetchError::Connect { .. } | FetchError::Closed { .. } | FetchError::Io { .. } => {
                UpstreamErrorKind::Unreachable
            }
            FetchError::Timeout { .. } => UpstreamErrorKind::TimedOut,
            FetchError::Remote { code, .. } => match code {
                ErrorCode::Forbidden | ErrorCode::NotCachedHere => UpstreamErrorKind::Refused,
                ErrorCode::NotFound => UpstreamErrorKind::NotFound,
                _ => UpstreamErrorKind::Failed,
            },
            FetchError::Protocol { .. } | FetchError::Digest { .. } => UpstreamErrorKind::Failed,
        };
        UpstreamError {
            kind,
            message: self.to_string(),
        }
    }

    /// Whether asking the next address of the same upstream may help: it could not
    /// be reached, was too slow, or was overloaded or failing itself.
    pub fn retry_next_address(&self) -> bool {
        matches!(
            self,
            FetchError::Connect { .. }
                | FetchError::Closed { .. }
                | FetchError::Io { .. }
                | FetchError::Timeout { .. }
                | FetchError::Remote {
                    code: ErrorCode::Busy | ErrorCode::UpstreamFailed | ErrorCode::Internal,
                    ..
                }
        )
    }

    /// How a failed block request counts for a source of `class` (for the
    /// scheduler): a peer that refused the connection is dropped for the file at
    /// once; a server's connection failure only closes what it had outstanding.
    pub fn source_failure(&self, class: SourceClass) -> Failure {
        // A peer that did not connect in time only fails the attempt (see
        // `is_connect_timeout`).
        if class == SourceClass::Peer && matches!(self, FetchError::Connect { .. }) {
            return Failure::Unreachable;
        }
        match self {
            FetchError::Remote { code, .. } => match code {
                ErrorCode::NotCachedHere | ErrorCode::NotFound | ErrorCode::Forbidden => {
                    Failure::NotHeld
                }
                // Another version there: nothing it has is of use for this one.
                ErrorCode::VersionChanged => Failure::BadBlock,
                _ => Failure::Error,
            },
            FetchError::Connect { .. } | FetchError::Closed { .. } | FetchError::Io { .. } => {
                Failure::Closed
            }
            FetchError::Timeout { .. } => Failure::Error,
            FetchError::Protocol { .. } | FetchError::Digest { .. } => Failure::BadBlock,
        }
    }

    /// Whether no connection was made within the attempt's connect deadline: on a
    /// congested uplink a lost SYN or answer is sent again after 1 s and 3 s, so
    /// this alone does not prove a peer unreachable (see `node::cache::fill`'s
    /// follow-up, which gives it the time of two retransmissions).
    pub fn is_connect_timeout(&self) -> bool {
        matches!(self, FetchError::Timeout { what, .. } if *what == CONNECT_WHAT)
    }

    /// What to tell the node that handed out a peer that failed like this (a
    /// PeerReport): it sent a bad block, or it cannot be reached at all (the
    /// connection could not be made, or not in time). Nothing for other failures.
    pub fn peer_problem(&self) -> Option<PeerProblem> {
        match self {
            FetchError::Digest { .. } => Some(PeerProblem::BadData),
            FetchError::Connect { .. } => Some(PeerProblem::Unreachable),
            FetchError::Timeout { what, .. } if *what == CONNECT_WHAT => {
                Some(PeerProblem::Unreachable)
            }
            _ => None,
        }
    }

    /// The exit code of `p2pd get` failing with this.
    pub fn exit_code(&self) -> i32 {
        match self {
            FetchError::Remote {
                code: ErrorCode::NotFound,
                ..
            } => exit::NOT_FOUND,
            FetchError::Connect { .. } => exit::CONNECT,
            FetchError::Timeout { .. } => exit::TIMEOUT,
            FetchError::Digest { .. } => exit::INTEGRITY,
            _ => exit::FAILED,
        }
    }
}

impl From<Refusal> for BlockError {
    fn from(r: Refusal) -> BlockError {
        match r {
            Refusal::Upstream(u) => BlockError::Upstream(u),
            other => BlockError::Io(other.to_string()),
        }
    }
}

impl BlockError {
    /// The SPP error code and message that answer a Get whose block `idx` failed so.
    pub fn spp_answer(&self, idx: u64) -> (ErrorCode, String) {
        match self {
            BlockError::Changed => (
                ErrorCode::VersionChanged,
                "the file changed on the origin; ask for its info again".to_string(),
            ),
            BlockError::NotCached => (
                ErrorCode::NotCachedHere,
                format!("block {idx} is not cached here, and this node will not fetch it for you"),
            ),
            BlockError::Upstream(u) => (
                Refusal::Upstream(u.clone()).spp_code(),
                format!("block {idx}: upstream: {u}"),
            ),
            BlockError::Busy(_) => (ErrorCode::Busy, format!("block {idx}: {self}")),
            BlockError::Io(_) | BlockError::ShardGone => (ErrorCode::Internal, self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
