//! The SPP client side. [`connection`] is one connection driven by one task (`p2pd get`,
//! the bench); [`pool`] is a shard's set of multiplexed connections that a cache's fills
//! share; [`range`] drives a block range over several sources at once, with
//! [`crate::pure::sched`] deciding which source gets which block.

pub mod attempt;
pub mod connection;
pub mod pool;
pub mod range;

use crate::pure::digest::{DigestAlgo, MAX_DIGEST_BYTES};
use crate::runtime;

/// Bytes hashed between two chances for other tasks to run.
const VERIFY_SLICE_BYTES: usize = 256 * 1024;

/// Checks `data` against `expected`, hashing in slices so a large block does not hold
/// the reactor for long.
pub async fn verify_block(algo: DigestAlgo, data: &[u8], expected: &[u8]) -> bool {
    let mut h = algo.hasher();
    for chunk in data.chunks(VERIFY_SLICE_BYTES) {
        h.update(chunk);
        runtime::yield_if_needed().await;
    }
    let mut out = [0u8; MAX_DIGEST_BYTES];
    h.finish_into(&mut out) == expected
}
