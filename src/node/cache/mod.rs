//! The cache role of a shard (SCC, LHC), [`CacheRole`]: file info for the files whose
//! metadata this shard owns (lookups, revalidation with the upstream, replacing a
//! changed version), and for the blocks it owns the fill path: memory cache, then the
//! cache's disk (verified on every read), then one upstream fetch (verified before
//! anyone sees it), written back with direct I/O under a per-shard byte limit with LRU
//! eviction.
//!
//! Ownership is the origin's: block `i` of a file belongs to
//! [`owner_of`](crate::pure::placement::owner_of); a file's metadata (its catalog entry
//! and its single in-flight info fetch) belongs to
//! [`meta_owner`](crate::pure::placement::meta_owner). Other shards ask through the
//! router.
//!
//! [`role`] holds the state; each other file adds one job's methods to it.

pub mod announce;
pub mod catalog;
pub mod disk_lru;
pub mod file;
pub mod fill;
pub mod locate;
pub mod playback;
pub mod role;
pub mod sources;

pub use file::CachedFile;
pub use role::{CacheRole, CacheRoleConfig};
