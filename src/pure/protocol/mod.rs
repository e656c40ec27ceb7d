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

mod decode;
mod encode;
mod frame;
pub mod limits;
mod rules;
pub mod session;

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
pub use rules::{payload_bounds, type_name};

/// First 4 bytes of the Hello payload: tells SPP from anything else on the port.
pub const MAGIC: [u8; 4] = *b"SPP\x01";
/// The version this code speaks, sent in Hello.
pub const PROTOCOL_VERSION: u16 = 1;
/// Frame header: type u8, flags u8 (must be 0 in v1), payload length u32 big-endian.
pub const FRAME_HEADER_LEN: usize = 6;
/// Frame header plus the fixed Data fields (req_id u32, block u64): what
/// [`encode_data_header`] writes before a block's bytes.
pub const DATA_HEADER_LEN: usize = FRAME_HEADER_LEN + limits::DATA_FIXED_BYTES;

/// The version to answer a peer's Hello with: the highest both speak, or `None` (answer
/// Error UnsupportedVersion and close). A peer announcing version N may speak any
/// version up to N; this code speaks only 1, so any N >= 1 gives 1.
pub fn negotiate_version(peer_version: u16) -> Option<u16> {
    (peer_version >= 1).then_some(PROTOCOL_VERSION.min(peer_version))
}

/// What a connection on the shared port speaks, told from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    Http,
    Spp,
}

/// HTTP requests start with a method in ASCII capitals (`GET`, `HEAD`, ...); every SPP
/// frame type byte is outside `A..=Z` (an SPP stream starts with Hello, 0x01). Anything
/// that is not HTTP goes to the SPP decoder, which rejects garbage (BadMagic & co).
pub fn sniff(first_byte: u8) -> Sniffed {
    if first_byte.is_ascii_uppercase() {
        Sniffed::Http
    } else {
        Sniffed::Spp
    }
}
