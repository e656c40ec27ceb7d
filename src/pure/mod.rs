//! Everything that needs no I/O, no clock and no async: the wire protocols, block maths,
//! placement, source scheduling, the peer registry, the byte LRU, digests, rate limits
//! and path checks. Time comes in as arguments, so all of it is unit- and fuzz-testable.

pub mod digest;
pub mod geometry;
pub mod http;
pub mod lru;
pub mod pathsafe;
pub mod placement;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod sched;
