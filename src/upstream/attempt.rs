//! One attempt: one block from one source, the step `p2pd get` and the caches share.
//! It connects (a peer within [`PEER_CONNECT_TIMEOUT`]) and asks for the block within
//! one deadline ([`Deadlines`]) ([`request`]), then checks its length and digest
//! ([`check`]); [`one_block`] is the two in a row. What goes wrong comes
//! back as a [`FetchError`] whose methods (see [`crate::error`]) say how it counts for
//! the source and what to report about a peer. Choosing the source, cancelling an
//! attempt that another source overtook, and reporting are the callers'.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use super::pool::UpstreamPool;
use crate::error::{FetchError, CONNECT_WHAT};
use crate::pure::digest::DigestAlgo;
use crate::pure::protocol::FileRef;
use crate::pure::sched::SourceClass;
use crate::runtime::{self, verify_block};

/// The most a connection (and handshake) to a peer may take before the peer counts as
/// unreachable: two round trips of a slow intercontinental path, with room to spare.
/// A viewer's machine that does not answer within this is taken for gone (NAT,
/// firewall, asleep): no need to wait out the attempt.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// With other sources to fail over to, the most one attempt may take.
pub const FAILOVER_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// What a timed-out attempt names when it had its connection.
const DATA_WHAT: &str = "block data";

/// The deadlines of one attempt: the same for `p2pd get` and the caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// Connecting to a peer (servers get the whole attempt).
    pub peer_connect: Duration,
    /// The whole attempt: connecting, asking, receiving.
    pub attempt: Duration,
}

impl Deadlines {
    /// With `alternatives` (other sources can take over) an attempt gets at most
    /// [`FAILOVER_ATTEMPT_TIMEOUT`]; a single source gets all of `timeout` (it may
    /// itself be fetching from further up).
    pub fn new(timeout: Duration, alternatives: bool) -> Deadlines {
        Deadlines {
            peer_connect: PEER_CONNECT_TIMEOUT.min(timeout),
            attempt: if alternatives {
                timeout.min(FAILOVER_ATTEMPT_TIMEOUT)
            } else {
                timeout
            },
        }
    }
}

impl Deadlines {
    /// These deadlines for a request that waits in its source's queue: one the
    /// scheduler expects in `expected` gets twice that if longer than its attempt,
    /// up to `cap`. A peer shared by several viewers serves a queue in turn; cutting
    /// the requests behind the first at a fixed 3 s failed them, and the peer was
    /// dropped for the file though it was serving all along.
    pub fn queued(self, expected: Duration, cap: Duration) -> Deadlines {
        Deadlines {
            attempt: self.attempt.max((expected * 2).min(cap)),
            ..self
        }
    }
}

/// What a block must be to count: its length and the origin's digest of it.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    pub len: usize,
    pub algo: DigestAlgo,
    pub digest: &'a [u8],
}

/// Block `index` of version `version` of `file` from the source at `addr`, verified
/// against `expected`: [`request`], then [`check`].
pub async fn one_block(
    pool: &UpstreamPool,
    source: (SocketAddr, SourceClass),
    file: &FileRef,
    version: u64,
    index: u64,
    expected: Expected<'_>,
    deadlines: Deadlines,
) -> Result<Bytes, FetchError> {
    let data = request(pool, source, file, version, index, deadlines).await?;
    check(source.0, index, data, expected).await
}

/// The request half of an attempt: block `index` of version `version` of `file` from
/// the source at `addr`, within `deadlines`. An attempt past its deadline is
/// [`FetchError::Timeout`] naming the connection when it never got one (the source is
/// unreachable, not merely slow with this block). Callers that may cancel an attempt
/// (another source overtook it) race this half only: a block that arrived is checked
/// whatever happens meanwhile.
pub async fn request(
    pool: &UpstreamPool,
    (addr, class): (SocketAddr, SourceClass),
    file: &FileRef,
    version: u64,
    index: u64,
    deadlines: Deadlines,
) -> Result<Bytes, FetchError> {
    let connected = Cell::new(false);
    let request = runtime::timeout(deadlines.attempt, async {
        let up = if class == SourceClass::Peer {
            runtime::timeout(deadlines.peer_connect, pool.get(addr))
                .await
                .unwrap_or(Err(FetchError::Timeout {
                    addr,
                    what: CONNECT_WHAT,
                    ms: deadlines.peer_connect.as_millis() as u64,
                }))?
        } else {
            pool.get(addr).await?
        };
        connected.set(true);
        up.block(file, version, index).await
    });
    request.await.unwrap_or_else(|_| {
        Err(FetchError::Timeout {
            addr,
            what: if connected.get() {
                DATA_WHAT
            } else {
                CONNECT_WHAT
            },
            ms: deadlines.attempt.as_millis() as u64,
        })
    })
}

/// The check half of an attempt: `data`, block `index` from `addr`, is what `expected`
/// says, or [`FetchError::Digest`] (wrong length or digest; the source is not to be
/// trusted with this file).
pub async fn check(
    addr: SocketAddr,
    index: u64,
    data: Bytes,
    expected: Expected<'_>,
) -> Result<Bytes, FetchError> {
    if data.len() != expected.len || !verify_block(expected.algo, &data, expected.digest).await {
        return Err(FetchError::Digest {
            addr,
            block: index,
            algo: expected.algo.name(),
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests;
