//! The index of one cached file version: the origin's info and block digests (immutable
//! once written) and a have-bitmap of the blocks in its data file, memory-mapped and
//! shared by every shard.
//!
//! Layout (little-endian; [`HEADER_LEN`] bytes of header, then the key, the digests and
//! the bitmap):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `P2PDCIX1` |
//! | 8 | 4 | format version (1) |
//! | 12 | 1 | digest algorithm id (see `digest::DigestAlgo::id`) |
//! | 13 | 1 | reserved, 0 |
//! | 14 | 2 | port of the file's URL |
//! | 16 | 4 | block size in bytes (16 KiB..16 MiB, a multiple of 4 KiB) |
//! | 20 | 2 | host length `h` in bytes (1..=255) |
//! | 22 | 2 | path length `p` in bytes (0..=4096) |
//! | 24 | 8 | file size in bytes (at most `protocol::limits::MAX_FILE_BYTES`) |
//! | 32 | 8 | origin mtime, seconds since the epoch (signed) |
//! | 40 | 8 | content version |
//! | 48 | 8 | block count `n` = ceil(size / block size) |
//! | 56 | 40 | reserved, 0 |
//! | 96 | 32 | SHA-256 of bytes 0..96 then 128..`b` (key, digests, padding) |
//! | 128 | h | host (UTF-8, lowercase) |
//! | 128+h | p | path (UTF-8, as in `FileKey::path`) |
//! | 128+h+p | n×len | the digests, `len` per the algorithm |
//! | | 0..7 | zero padding to a multiple of 8 |
//! | `b` | ceil(n/64)×8 | have-bitmap: u64 words, bit `i % 64` of word `i / 64` is block `i` |
//!
//! Everything before the bitmap is written once, when the index is created, and never
//! again, so the checksum covers all of it but itself. The bitmap changes at run time
//! and is not covered: a set bit is only a claim, which the caller re-verifies against
//! the digest. The file's length is exact: anything else is damage. The file's name must
//! be the one [`paths_for`] gives its key and version, so a renamed file is damage too.
//!
//! Limits: every length comes from the protocol's (`protocol::limits`), so the largest
//! index (16 TiB in 16 KiB blocks with SHA-512) is 64 GiB of digests and 128 MiB of
//! bitmap; the header is checked against them and the file's length before anything is
//! mapped.
//!
//! Concurrency: shards own different blocks but bits of one word may belong to
//! different shards, so the bitmap is touched only with atomic operations on the shared
//! (MAP_SHARED) mapping, through a pointer taken from [`MmapRaw`](memmap2::MmapRaw), never through a
//! `&[u8]` of the bitmap.
//!
//! Files: `format` (the layout above, header and checksum), `files` (file names and
//! directory durability), `index` ([`CacheIndex`]), `error` ([`StoreError`]), `tests`.

mod error;
mod files;
mod format;
mod index;
#[cfg(test)]
pub(crate) mod tests;

pub use error::StoreError;
pub(crate) use files::sync_dir;
pub use files::{data_path_of, paths_for, DATA_EXT, INDEX_EXT, TMP_MARKER};
pub use format::{FORMAT_VERSION, HEADER_LEN, MAGIC};
pub use index::CacheIndex;
