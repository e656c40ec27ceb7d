//! Fuzz target bodies: one function per target of the `fuzz/` crate, taking the raw
//! input bytes. They live in the library so that the libFuzzer binaries are one-liners
//! and the normal test suite (`tests/it/fuzz_corpus.rs`) replays the committed corpus
//! and the regression inputs without libFuzzer.
//!
//! Each body asserts properties, not only the absence of panics: a failed assertion is
//! a finding. Bodies are pure and quick (no sockets, threads or sleeps), and every
//! input, however long, does bounded work.
//!
//! One file per target (named as the target), plus `input` (the byte reader the
//! structure-aware targets share) and `http_checks` (the request checks both HTTP
//! targets share). Each target is re-exported here as `fuzzing::<target>`.

mod http_checks;
mod input;

mod http_connection;
mod http_request;
mod registry;
mod spp_decode;
mod spp_session;

pub use http_connection::http_connection;
pub use http_request::http_request;
pub use registry::registry;
pub use spp_decode::spp_decode;
pub use spp_session::spp_session;
