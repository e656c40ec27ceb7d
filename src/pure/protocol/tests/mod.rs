//! Unit tests: the test vectors of `docs/PROTOCOL.md`, one test per limit, and the
//! header-first error reporting the connection handlers rely on; one file per topic,
//! with shared helpers in `helpers`.

mod decoding;
mod helpers;
mod limits;
mod rules;
mod vectors;
