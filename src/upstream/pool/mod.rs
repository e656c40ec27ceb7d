//! A shard's connections to its upstream nodes (the `-S` parent, or the URL's host):
//! one multiplexed SPP connection per upstream address, shared by every request of the
//! shard, never by two shards. Requests are pipelined; a reader task hands each answer
//! to the request that waits for it (by request id), a writer task sends requests in
//! order. Every request has a deadline; a connection that broke, closed, or stayed
//! silent past a deadline is dropped and the next request opens a new one.
//!
//! Nothing here verifies blocks: the caller checks every block against the origin's
//! digest before anyone sees it.
//!
//! Files: `upstream` (one connection and its requests), `reports` (its p2p reports),
//! `io_tasks` (its reader and writer), `state` (what they share), `shard_pool` (the
//! shard's set of connections), `config` (settings and bounds).

mod config;
mod io_tasks;
mod reports;
mod shard_pool;
mod state;
mod upstream;

pub use config::{
    UpstreamConfig, MAX_HANDLES_PER_CONNECTION, MAX_INFO_DIGEST_BYTES, MAX_PENDING_PER_CONNECTION,
    MAX_UPSTREAMS_PER_SHARD,
};
pub use shard_pool::{UpstreamPool, PEER_REPORT_REPEAT};
pub use upstream::Upstream;
