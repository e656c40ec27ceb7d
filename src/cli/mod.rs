//! Command line of p2pd: parsing and validation into [`Command`], and the p2pd.8 man page.
//!
//! clap does the tokenising and type checks; everything with rules of its own (sizes,
//! block-size alignment, subnets, host:port, roles, options of later releases) is checked
//! here so that every refusal is ONE line naming the option, as the spec demands.
//!
//! The role comes from `-p` and `-c` (spec section 2): `-p DIR` is an origin; `-c DIR`
//! is a cache, a site cache (SCC) with `-n`, a client cache (LHC) without; neither is
//! an LHC in `$HOME/.p2pd_cache`. Options of the other role are refused, not ignored.
//! Nothing here exits the process or panics: `main` decides what to print and how to exit.
//!
//! Files: `args` (the clap definitions), `parse` (the entry point), `validate` (the
//! checks), `values` (option values with rules of their own), `config` (what a valid
//! command line yields), `defaults` (defaults and bounds), `error` ([`CliError`]),
//! `man` (the man page).

mod args;
mod config;
mod defaults;
mod error;
mod man;
mod parse;
#[cfg(test)]
mod tests;
mod validate;
mod values;

pub use config::{CacheConfig, Command, GetConfig, NodeRole, ServeConfig};
pub use defaults::{
    BLOCK_SIZE_ALIGN_BYTES, DEFAULT_ANNOUNCE_INTERVAL_MS, DEFAULT_BLOCK_SIZE_BYTES,
    DEFAULT_CACHE_DIR_NAME, DEFAULT_CLIENT_READ_AHEAD_SECS, DEFAULT_GET_TIMEOUT_MS,
    DEFAULT_INFO_TTL_MS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MEMORY_CACHE_BYTES,
    DEFAULT_PEER_EXPIRY_MS, DEFAULT_PORT, DEFAULT_RESCAN_INTERVAL_MS, DEFAULT_UPSTREAM_TIMEOUT_MS,
    MAX_BLOCK_SIZE_BYTES, MAX_READ_AHEAD_SECS, MAX_THREADS, MIN_ANNOUNCE_INTERVAL_MS,
    MIN_BLOCK_SIZE_BYTES, MIN_DISK_CACHE_BYTES, MIN_PEER_EXPIRY_MS, MIN_RESCAN_INTERVAL_MS,
    MIN_UPLOAD_RATE_BYTES_PER_S, USAGE_EXIT_CODE,
};
pub use error::CliError;
pub use man::man_page;
pub use parse::parse_args;
pub use values::{parse_size_bytes, HostPort, SppUrl};
