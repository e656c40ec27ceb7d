//! Which shard owns what: block stripes of a file spread over the shards, and a file's
//! metadata on one shard. Pure functions of ids, so every shard (and the bench) agrees.

/// Consecutive blocks kept on one shard, so read-ahead from disk stays sequential while
/// a single hot title still spreads over every core.
pub const STRIPE_BLOCKS: u64 = 4;

/// The shard that owns block `index` of file `file_id`.
pub fn owner_of(file_id: u64, index: u64, shards: usize) -> usize {
    let stripe = index / STRIPE_BLOCKS;
    (mix64(file_id ^ stripe.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % shards as u64) as usize
}

/// splitmix64's finaliser: cheap, and spreads consecutive stripes evenly.
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The shard that owns a file's metadata: its catalog entry and its info fetches.
pub fn meta_owner(file_id: u64, shards: usize) -> usize {
    (mix64(file_id ^ 0x6d65_7461) % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_spreads_stripes_over_shards() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[owner_of(42, i, 4)] += 1;
        }
        for c in counts {
            assert!(c > 700, "{counts:?}");
        }
        // A stripe stays on one shard.
        assert_eq!(owner_of(7, 0, 8), owner_of(7, STRIPE_BLOCKS - 1, 8));
        assert_eq!(owner_of(7, 5, 1), 0);
    }
}
