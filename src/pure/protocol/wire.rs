//! What identifies SPP on the wire: the Hello magic, the protocol version and its
//! negotiation, and telling an SPP connection from an HTTP one by its first byte.

/// First 4 bytes of the Hello payload: tells SPP from anything else on the port.
pub const MAGIC: [u8; 4] = *b"SPP\x01";
/// The version this code speaks, sent in Hello.
pub const PROTOCOL_VERSION: u16 = 1;
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
