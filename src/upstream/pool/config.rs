//! How this node talks to its upstreams ([`UpstreamConfig`]) and the bounds of a
//! shard's upstream connections.

use std::net::IpAddr;
use std::time::Duration;

use crate::pure::protocol::{limits, Role};

/// Requests one connection carries at once: the upstream refuses more
/// (`limits::MAX_OUTSTANDING_REQUESTS`), so more wait here for a free slot.
pub const MAX_PENDING_PER_CONNECTION: usize = limits::MAX_OUTSTANDING_REQUESTS;
/// File handles a connection asks for before it is replaced by a fresh one: the
/// upstream keeps every handle of a connection until it closes, and holds no more
/// than this.
pub use limits::MAX_HANDLES_PER_CONNECTION;
/// Upstream addresses a shard keeps connections to; past it the least recently used
/// connection is closed.
pub const MAX_UPSTREAMS_PER_SHARD: usize = 256;
/// A connection unused for this long is replaced rather than reused: the upstream
/// closes connections idle for `limits::IDLE_TIMEOUT_SECS`, and a request sent just as
/// it does so would fail for nothing.
pub(super) const REUSE_IDLE_LIMIT: Duration = Duration::from_secs(limits::IDLE_TIMEOUT_SECS - 10);
/// Bytes read from the socket per call (a Data frame needs up to a block more).
pub(super) const READ_CHUNK_BYTES: usize = 256 * 1024;
/// Most digest bytes of one file held while its info is fetched (a 1 TiB file in
/// 256 KiB blocks with SHA-256 needs 128 MiB): a bigger announcement is refused.
pub const MAX_INFO_DIGEST_BYTES: usize = 256 << 20;

/// How this node talks to its upstreams; the same for every shard.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// Our role in the Hello (SCC or LHC).
    pub role: Role,
    /// The port we accept on, announced in the Hello (peers may be handed it).
    pub listen_port: u16,
    /// `--bind`: connections leave from this address when it is a specific one.
    pub bind: Option<IpAddr>,
    /// Deadline for connecting and for each answer.
    pub timeout: Duration,
}
