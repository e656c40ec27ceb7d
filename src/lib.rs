//! p2pd: a video-on-demand content distribution daemon (origin, site cache, client
//! proxy) speaking the SPP block protocol between nodes and HTTP to players.
//!
//! The modules are layers, each using only those listed before it: [`panics`], [`pure`]
//! (no I/O, no clock, no async), [`cli`], [`disk`], [`runtime`] (the only glommio
//! user), [`metrics`], [`error`], [`upstream`] (the SPP client side), [`node`] (shards,
//! the origin and cache roles), [`server`] (the front ends), [`get`] and [`entry`], with
//! [`bench`](mod@bench) and `fuzzing` on top. `tests/it/layout` checks it; `ARCHITECTURE.md` has
//! the bird's-eye view and the code map.

pub mod bench;
pub mod cli;
pub mod disk;
pub mod entry;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod get;
pub mod metrics;
pub mod node;
pub mod panics;
pub mod pure;
pub mod runtime;
pub mod server;
pub mod upstream;
