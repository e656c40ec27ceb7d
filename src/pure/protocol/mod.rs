//! SPP v1, the block protocol: sans-I/O frame types, encoder and decoder.
//!
//! No sockets, no clock, no async: the connection handlers own I/O and deadlines, this
//! module owns the bytes. `docs/PROTOCOL.md` is the specification; its test vectors are
//! checked by this module's tests, so the two cannot drift apart.
//!
//! - `frame`: the frame types as Rust values.
//! - `limits`: every numeric bound, named with its unit.
//! - `rules`: the checks encoder and decoder share.
//! - `encode` / `decode`: the two directions.
//! - `wire`: the magic, the version and its negotiation, and telling SPP from HTTP.

mod decode;
mod encode;
mod frame;
pub mod limits;
mod rules;
pub mod session;
mod wire;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use decode::{DecodeError, Decoder};
pub use encode::{
    encode, encode_data_header, encode_info_head, encoded_payload_len, try_encode_data_header,
    EncodeError,
};
pub use frame::*;
pub use limits::{DATA_HEADER_LEN, FRAME_HEADER_LEN};
pub use rules::{payload_bounds, type_name};
pub use wire::{negotiate_version, sniff, Sniffed, MAGIC, PROTOCOL_VERSION};
