//! The one place that calls glommio: executors, tasks, timers, sockets, DMA files and
//! cross-shard channels. Everything else uses these wrappers (by their
//! `crate::runtime::X` paths, re-exported here), so moving to another thread-per-core
//! runtime touches this folder only.
//!
//! Files: `exec` (executors, spawning, tasks), `request_budget` (the shard's budget for
//! request work and its turns), `time` (sleep, timeout), `net` (sockets, TCP options,
//! unsent bytes), `file` (`BlockFile`, `DataFile`, the direct-I/O probe), `verify` (digest checks
//! that yield), `tests`.

mod exec;
mod file;
mod net;
mod request_budget;
#[cfg(test)]
mod tests;
mod time;
mod verify;

pub use exec::{
    blocking, preflight, run_pool, run_shards, run_single, spawn, spawn_background, spawn_detached,
    yield_if_needed, Background, MIN_MEMLOCK_BYTES,
};
pub use file::{settle_direct_io, BlockFile, DataFile, DIRECT_IO_ALIGN_BYTES};
pub use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
pub use glommio::net::{TcpListener, TcpStream};
pub use glommio::Task;
pub use net::{
    connect, connect_from, limit_unsent, listener_from_std, read_some, socket_closed, unsent_bytes,
    write_all_parts,
};
pub use request_budget::{
    charge_request, charged, polled, request_owner, request_turn, spawn_request, RequestOwner,
};
pub use time::{sleep, timeout, Elapsed};
pub use verify::verify_block;
