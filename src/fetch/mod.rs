//! Fetching from upstream nodes over SPP. [`client`] is one connection driven by one
//! task (`p2pd get`, the bench); [`upstream`] is a shard's pool of multiplexed
//! connections that a cache's fills share. Source selection over several upstreams
//! builds on these.

pub mod client;
pub mod sched;
pub mod upstream;
