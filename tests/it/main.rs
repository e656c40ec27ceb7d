//! The integration tests: one test binary (the crate is linked once) that starts real
//! `p2pd` processes on loopback addresses of their own and speaks HTTP and SPP to them.
//! Each module holds the tests of one area; `harness` is what they share.
//!
//! Run one area with `cargo test --test it cache::`, one test by its name.

mod harness;

mod bench;
mod cache;
mod cli;
mod fuzz_corpus;
mod hostile;
mod http_origin;
mod layout;
mod p2p;
mod protocol_alloc;
mod readahead;
mod sources;
mod spp_origin;
mod startup;
