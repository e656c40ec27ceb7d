//! p2pd: a video-on-demand content distribution daemon (origin, site cache, client
//! proxy) speaking the SPP block protocol between nodes and HTTP to players.
//!
//! See `ARCHITECTURE.md` for the bird's-eye view and the code map.

pub mod bench;
pub mod cache;
pub mod cli;
pub mod config;
pub mod content;
pub mod digest;
pub mod fetch;
#[doc(hidden)]
pub mod fuzzing;
pub mod geometry;
pub mod get;
pub mod http;
pub mod index;
pub mod metrics;
pub mod panics;
pub mod pathsafe;
pub mod peers;
pub mod protocol;
pub mod publish;
pub mod ratelimit;
pub mod router;
pub mod runtime;
pub mod server;
pub mod shard;
pub mod store;
