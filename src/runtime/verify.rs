//! Verifying a block against its digest without holding the reactor: hashed in slices
//! with a chance for other tasks to run between them.

use super::exec::yield_if_needed;
use crate::pure::digest::{DigestAlgo, MAX_DIGEST_BYTES};

/// Bytes hashed between two chances for other tasks to run.
const VERIFY_SLICE_BYTES: usize = 256 * 1024;

/// Checks `data` against `expected`, hashing in slices so a large block does not hold
/// the reactor for long.
pub async fn verify_block(algo: DigestAlgo, data: &[u8], expected: &[u8]) -> bool {
    let mut h = algo.hasher();
    for chunk in data.chunks(VERIFY_SLICE_BYTES) {
        h.update(chunk);
        yield_if_needed().await;
    }
    let mut out = [0u8; MAX_DIGEST_BYTES];
    h.finish_into(&mut out) == expected
}
