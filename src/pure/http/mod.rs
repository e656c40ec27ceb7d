//! HTTP/1.x for players and proxies, the pure half: request-head parsing, Range
//! resolution and response-head writing. No I/O and no clock except the `Date` header.
//!
//! The server loop lives elsewhere; it feeds bytes to [`parse_request`], decides what
//! to send, and uses the writers here to produce the bytes.

pub mod plan;
pub mod range;
pub mod request;
pub mod response;

pub use range::{if_range_allows, resolve_range, RangeSpec};
pub use request::{parse_request, HttpError, Method, Request, Target, MAX_HEADERS, MAX_HEAD_BYTES};
pub use response::{
    content_range, content_range_unsatisfied, content_type_for, etag_for, etag_matches, http_date,
    not_modified_since, playlist_body, reason_phrase, write_error, write_error_with_headers,
    write_head, PLAYLIST_CONTENT_TYPE,
};
