//! Request heads: parsing one HTTP/1.x request head (with httparse) into a [`Request`]
//! holding only what p2pd acts on, and the errors that map to 400, 431 and 505.
//!
//! Pure code: no I/O. Nothing here panics on input; every malformed head becomes an
//! [`HttpError`] the server turns into a short error response.
//!
//! Files: `parse` (the head as a whole), `head` (what is kept of it), `target` and
//! `authority` (its target and host), `error` ([`HttpError`]), `tests`.

mod authority;
mod error;
mod head;
mod parse;
mod target;
#[cfg(test)]
mod tests;

pub use error::HttpError;
pub use head::{Method, Request, Target};
pub use parse::{parse_request, MAX_HEADERS, MAX_HEAD_BYTES};
