//! A node's shards and their roles: the shard core (memory cache, single flight,
//! throttle, pinned-bytes budget), the cross-shard router, the content a shard serves,
//! and the two roles, [`origin`] (publishing a directory) and [`cache`] (SCC and LHC).

pub mod budget;
pub mod cache;
pub mod content;
pub mod inbox;
pub mod origin;
pub mod readahead;
pub mod router;
pub mod shard;
