//! Fetching from upstream nodes over SPP. [`client`] is one connection driven by one
//! task (`p2pd get`, the bench); [`upstream`] is a shard's pool of multiplexed
//! connections that a cache's fills share; [`sched`] (pure) decides which source gets
//! which block and [`multi`] drives it over several sources at once.

pub mod client;
pub mod multi;
pub mod sched;
pub mod upstream;

use crate::digest::{DigestAlgo, MAX_DIGEST_BYTES};
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
