//! Block geometry of a file: how many blocks it has, how long each is, where each starts
//! and which blocks a byte range touches. The one place this arithmetic is done.
//!
//! Every answer is total: a block size of 0 gives no blocks rather than a division by
//! zero, and a block past the end is empty, so no value from the network or the disk
//! can make this panic or overflow.

use std::ops::Range;

/// A file of `size` bytes cut into blocks of `block_size` bytes (the last may be short).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileGeometry {
    size: u64,
    block_size: u32,
}

impl FileGeometry {
    pub const fn new(size: u64, block_size: u32) -> FileGeometry {
        FileGeometry { size, block_size }
    }

    pub const fn size(&self) -> u64 {
        self.size
    }

    pub const fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Number of blocks (0 for an empty file or a block size of 0).
    pub const fn block_count(&self) -> u64 {
        if self.block_size == 0 {
            return 0;
        }
        self.size.div_ceil(self.block_size as u64)
    }

    /// Where block `idx` starts in the file (`idx × block_size`, saturating).
    pub const fn block_offset(&self, idx: u64) -> u64 {
        idx.saturating_mul(self.block_size as u64)
    }

    /// Length of block `idx`: the block size, less for the last block, 0 past the end.
    pub const fn block_len(&self, idx: u64) -> usize {
        let start = self.block_offset(idx);
        if start >= self.size {
            return 0;
        }
        let left = self.size - start;
        let bs = self.block_size as u64;
        (if left < bs { left } else { bs }) as usize
    }

    /// The bytes of block `idx` in the file (empty past the end).
    pub const fn block_bytes(&self, idx: u64) -> Range<u64> {
        let start = self.block_offset(idx);
        start..start.saturating_add(self.block_len(idx) as u64)
    }

    /// The blocks that hold any byte of `bytes` (empty for an empty range or a block
    /// size of 0); bytes past the end of the file are in no block.
    pub const fn blocks_of(&self, bytes: Range<u64>) -> Range<u64> {
        let end = if bytes.end < self.size {
            bytes.end
        } else {
            self.size
        };
        if self.block_size == 0 || bytes.start >= end {
            return 0..0;
        }
        let bs = self.block_size as u64;
        bytes.start / bs..(end - 1) / bs + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lengths_and_offsets_of_full_and_short_blocks() {
        let g = FileGeometry::new(10_000, 4096);
        assert_eq!(g.block_count(), 3);
        assert_eq!(
            (0..4).map(|i| g.block_len(i)).collect::<Vec<_>>(),
            [4096, 4096, 1808, 0]
        );
        assert_eq!(g.block_offset(2), 8192);
        assert_eq!(g.block_bytes(2), 8192..10_000);
        assert_eq!(g.block_bytes(3), 12_288..12_288);
        let exact = FileGeometry::new(8192, 4096);
        assert_eq!((exact.block_count(), exact.block_len(1)), (2, 4096));
        let empty = FileGeometry::new(0, 4096);
        assert_eq!((empty.block_count(), empty.block_len(0)), (0, 0));
    }

    #[test]
    fn hostile_values_give_answers_not_panics() {
        let zero = FileGeometry::new(1 << 40, 0);
        assert_eq!((zero.block_count(), zero.block_len(5)), (0, 0));
        assert_eq!(zero.blocks_of(0..100), 0..0);
        let g = FileGeometry::new(u64::MAX, 16 << 20);
        assert_eq!(g.block_offset(u64::MAX), u64::MAX);
        assert_eq!(g.block_len(u64::MAX), 0);
        assert_eq!(g.block_count(), u64::MAX.div_ceil(16 << 20));
    }

    #[test]
    fn a_byte_range_touches_the_blocks_that_hold_its_bytes() {
        let g = FileGeometry::new(10_000, 4096);
        assert_eq!(g.blocks_of(0..10_000), 0..3);
        assert_eq!(g.blocks_of(4095..4097), 0..2);
        assert_eq!(g.blocks_of(4096..8192), 1..2);
        assert_eq!(g.blocks_of(9_999..20_000), 2..3);
        assert_eq!(g.blocks_of(10_000..20_000), 0..0);
        assert_eq!(g.blocks_of(5..5), 0..0);
    }
}
