//! The on-disk cache store of the cache roles (`-c DIR`): file identities, one
//! memory-mapped index per cached file version (the origin's digests and a have-bitmap)
//! and the cache directory that holds them with their data files.
//!
//! Pure std file I/O and `memmap2`: nothing here awaits, so the module can be used from
//! shards (for short calls) and from plain threads alike. Reading and writing block data
//! is the caller's (direct I/O through `runtime`); this module says where the data lives
//! and which blocks are claimed to be there.
//!
//! Crash rules, which every caller relies on:
//! - An index appears under its final name only complete and synced ([`CacheIndex::create`]).
//! - A block's bit is set only after its data write completed (the caller's job), and a
//!   set bit is only a claim: after a restart the caller re-verifies a block against its
//!   digest when it first reads it from disk, because the bitmap page may reach the disk
//!   before the data does.
//! - An index that fails any check is deleted with its data file, never trusted
//!   ([`StoreDir::open`]).

pub mod cache_dir;
pub mod cache_index;
pub mod identity;
pub mod origin_index;

pub use cache_dir::StoreDir;
pub use cache_index::{paths_for, CacheIndex, StoreError};
pub use identity::{FileKey, FileMeta};
