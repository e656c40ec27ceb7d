//! The SPP client side. [`connection`] is one connection driven by one task (`p2pd get`,
//! the bench); [`pool`] is a shard's set of multiplexed connections that a cache's fills
//! share; [`range`] drives a block range over several sources at once, with
//! [`crate::pure::sched`] deciding which source gets which block; [`attempt`] is one
//! block from one source, the step `p2pd get` and the caches share.

pub mod attempt;
pub mod connection;
pub mod pool;
pub mod range;
