//! The shared test harness: real `p2pd` processes on loopback addresses of their own,
//! waited for with deadlines and killed on drop; raw HTTP and SPP clients; polling
//! waits; builders for the set-ups tests repeat.
//!
//! - `net`: the address allocator (one fresh 127.x.y.z per simulated host)
//! - `node`: a running `p2pd`, its metrics and log, and failure diagnostics
//! - `setup`: builders for an origin publishing files and a cache
//! - `run`: one-shot commands (`p2pd get`, curl, ffmpeg) with deadlines
//! - `http`, `spp`: minimal blocking clients
//! - `wait`: polling instead of fixed sleeps
//! - `files`: test content and the files tests publish and inspect
//! - `alone`: tests that measure run alone
//!
//! Tests import everything with `use crate::harness::*`.

mod alone;
mod files;
mod http;
mod net;
mod node;
mod run;
mod setup;
mod spp;
mod wait;

use std::time::Duration;

pub use alone::*;
pub use files::*;
pub use http::*;
pub use net::*;
pub use node::*;
pub use run::*;
pub use setup::*;
pub use spp::*;
pub use wait::*;

/// The `p2pd` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_p2pd");
/// How long a node may take to print its startup line.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);
/// How long a test waits for one answer, or for a node to reach a state.
pub const IO_DEADLINE: Duration = Duration::from_secs(20);
