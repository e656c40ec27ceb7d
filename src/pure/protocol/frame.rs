//! The SPP v1 frame types as Rust values: what a frame means, not how it is laid out
//! (that is `encode.rs` / `decode.rs`, and `docs/PROTOCOL.md` for people).

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;

use super::limits::MAX_ERROR_MESSAGE_BYTES;
use crate::pure::digest::DigestAlgo;

/// Frame type bytes. Responses are their request's type with the high bit set, so a
/// packet dump reads at a glance.
pub mod frame_type {
    pub const HELLO: u8 = 0x01;
    pub const INFO_REQUEST: u8 = 0x02;
    pub const LOCATE_REQUEST: u8 = 0x03;
    pub const GET: u8 = 0x04;
    pub const CANCEL: u8 = 0x05;
    pub const HAVE: u8 = 0x06;
    pub const PING: u8 = 0x07;
    pub const PEER_REPORT: u8 = 0x08;
    pub const HOLDINGS: u8 = 0x09;
    pub const ERROR: u8 = 0x7F;
    pub const INFO: u8 = 0x82;
    pub const LOCATE: u8 = 0x83;
    pub const DATA: u8 = 0x84;
    pub const PONG: u8 = 0x87;
}

/// Hello capability bits: optional features a node announces; a sender uses one only
/// towards a node whose Hello announced it.
pub mod capability {
    /// The sender accepts PeerReport frames (p2pd sets it with `-i`).
    pub const PEER_REPORT: u32 = 1 << 0;
    /// The sender keeps a p2p registry (`-i`): it records Have reports and hands
    /// peers out. Other nodes ignore Haves, so senders may skip them.
    pub const P2P_REGISTRY: u32 = 1 << 1;
    /// The sender accepts Holdings frames (p2pd sets it with `-i`).
    pub const HOLDINGS: u32 = 1 << 2;
    /// Every bit this code knows.
    pub const ALL: u32 = PEER_REPORT | P2P_REGISTRY | HOLDINGS;
}

/// What a node is, announced in Hello and in Locate answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Origin = 0,
    Scc = 1,
    Lhc = 2,
    Client = 3,
}

impl Role {
    pub fn to_u8(self) -> u8 {
        self as u8
    }

    /// `None` for a byte no v1 role has.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Role::Origin),
            1 => Some(Role::Scc),
            2 => Some(Role::Lhc),
            3 => Some(Role::Client),
            _ => None,
        }
    }
}

/// Why a request (or the whole connection) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    NotFound,
    Forbidden,
    NotCachedHere,
    Busy,
    UpstreamFailed,
    BadRequest,
    VersionChanged,
    Internal,
    UnsupportedVersion,
    /// A code this version does not know: kept, so newer peers' codes survive a relay.
    Other(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::NotFound => 1,
            ErrorCode::Forbidden => 2,
            ErrorCode::NotCachedHere => 3,
            ErrorCode::Busy => 4,
            ErrorCode::UpstreamFailed => 5,
            ErrorCode::BadRequest => 6,
            ErrorCode::VersionChanged => 7,
            ErrorCode::Internal => 8,
            ErrorCode::UnsupportedVersion => 9,
            ErrorCode::Other(n) => n,
        }
    }

    /// Never fails: unknown codes become `Other(n)`. Note `Other(1)` therefore decodes
    /// as `NotFound`: construct `Other` only for codes outside 1..=9.
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => ErrorCode::NotFound,
            2 => ErrorCode::Forbidden,
            3 => ErrorCode::NotCachedHere,
            4 => ErrorCode::Busy,
            5 => ErrorCode::UpstreamFailed,
            6 => ErrorCode::BadRequest,
            7 => ErrorCode::VersionChanged,
            8 => ErrorCode::Internal,
            9 => ErrorCode::UnsupportedVersion,
            n => ErrorCode::Other(n),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorCode::NotFound => "not found",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotCachedHere => "not cached here",
            ErrorCode::Busy => "busy",
            ErrorCode::UpstreamFailed => "upstream failed",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::VersionChanged => "version changed",
            ErrorCode::Internal => "internal error",
            ErrorCode::UnsupportedVersion => "unsupported version",
            ErrorCode::Other(n) => return write!(f, "error {n}"),
        };
        f.write_str(s)
    }
}

/// URL identity of a file: `spp://host:port/path` (path without its leading '/').
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileRef {
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// `count` blocks starting at block `start`. On the wire `count >= 1` and
/// `start + count <= MAX_BLOCKS_PER_FILE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockRange {
    pub start: u64,
    pub count: u64,
}

/// Which blocks of a file a location has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holds {
    All,
    Ranges(Vec<BlockRange>),
}

/// A node that has (some of) a file. IPv6 flow info and scope id are not sent: they
/// decode as 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub addr: SocketAddr,
    pub role: Role,
    pub holds: Holds,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub role: Role,
    /// Port this node accepts SPP on (0: it accepts none, e.g. a plain client).
    pub listen_port: u16,
    /// Feature bits ([`capability`]); receivers ignore bits they do not know.
    pub capabilities: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoRequest {
    pub req_id: u32,
    pub file: FileRef,
    pub digest_start: u64,
    /// Digests wanted from `digest_start` on; 0 asks for metadata only. The answer may
    /// hold fewer (at most MAX_DIGESTS_PER_INFO, never past the last block).
    pub digest_count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    pub req_id: u32,
    /// Per-connection name of the file, used by Get, LocateRequest and Have.
    pub handle: u32,
    pub size: u64,
    pub block_size: u32,
    pub algo: DigestAlgo,
    pub version: u64,
    pub mtime_unix_secs: i64,
    pub digest_start: u64,
    /// `count * algo.len()` bytes, the digests of blocks `digest_start..digest_start+count`.
    pub digests: Bytes,
}

impl Info {
    /// Number of digests carried. `digests.len()` is a multiple of `algo.len()` in every
    /// frame the decoder returns or the encoder accepts.
    pub fn digest_count(&self) -> usize {
        self.digests.len() / self.algo.len()
    }

    /// Digest of block `digest_start + i`, if this frame carries it.
    pub fn digest(&self, i: usize) -> Option<&[u8]> {
        let len = self.algo.len();
        let start = i.checked_mul(len)?;
        self.digests.get(start..start.checked_add(len)?)
    }

    /// The file's blocks.
    pub fn geometry(&self) -> crate::pure::geometry::FileGeometry {
        crate::pure::geometry::FileGeometry::new(self.size, self.block_size)
    }

    /// Number of blocks of the file (the last may be short).
    pub fn block_count(&self) -> u64 {
        self.geometry().block_count()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocateRequest {
    pub req_id: u32,
    pub handle: u32,
    pub first_block: u64,
    pub block_count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locate {
    pub req_id: u32,
    pub locations: Vec<Location>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Get {
    pub req_id: u32,
    pub handle: u32,
    /// The file version from Info; a mismatch is answered with Error VersionChanged.
    pub version: u64,
    pub first_block: u64,
    pub block_count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data {
    pub req_id: u32,
    pub block: u64,
    pub payload: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Have {
    pub handle: u32,
    pub version: u64,
    pub ranges: Vec<BlockRange>,
}

/// Why a client reports a peer it was handed in a Locate answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerProblem {
    /// No connection could be made to it (refused, no route, no answer in time).
    Unreachable,
    /// It sent a block that failed the origin's digest.
    BadData,
}

impl PeerProblem {
    pub fn to_u8(self) -> u8 {
        match self {
            PeerProblem::Unreachable => 1,
            PeerProblem::BadData => 2,
        }
    }

    /// `None` for a byte v1 does not define.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(PeerProblem::Unreachable),
            2 => Some(PeerProblem::BadData),
            _ => None,
        }
    }

    /// Name for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            PeerProblem::Unreachable => "unreachable",
            PeerProblem::BadData => "bad_data",
        }
    }
}

/// "The peer at `peer`, which you handed me for this file, is unreachable or bad":
/// sent only to a node whose Hello announced [`capability::PEER_REPORT`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerReport {
    /// The file (from Info on this connection) the peer was fetched for.
    pub handle: u32,
    pub version: u64,
    pub problem: PeerProblem,
    pub peer: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorFrame {
    /// The failed request, or 0 for the whole connection (which then closes).
    pub req_id: u32,
    pub code: ErrorCode,
    pub message: ErrorMessage,
}

impl ErrorFrame {
    /// An Error frame; the message is cut to fit (see [`ErrorMessage`]).
    pub fn new(req_id: u32, code: ErrorCode, message: impl Into<ErrorMessage>) -> Self {
        ErrorFrame {
            req_id,
            code,
            message: message.into(),
        }
    }
}

/// The text of an Error frame: at most [`MAX_ERROR_MESSAGE_BYTES`] of UTF-8, cut on a
/// character boundary. Its only constructors cut, and its text cannot be changed
/// afterwards, so no message put on the wire can be too long or end inside a
/// character, however long the path, host or upstream error it quotes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorMessage(String);

impl ErrorMessage {
    /// Cuts `text` to at most [`MAX_ERROR_MESSAGE_BYTES`] on a character boundary.
    pub fn new(text: impl Into<String>) -> Self {
        let mut text = text.into();
        text.truncate(floor_char_boundary(&text, MAX_ERROR_MESSAGE_BYTES));
        ErrorMessage(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The largest index `<= max` that is a character boundary of `s` (`s.len()` when it
/// is shorter): where `s` may be cut to fit `max` bytes without panicking.
pub fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    // A UTF-8 character is at most 4 bytes: a boundary is at most 3 bytes back.
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

impl From<String> for ErrorMessage {
    fn from(s: String) -> Self {
        ErrorMessage::new(s)
    }
}

impl From<&str> for ErrorMessage {
    fn from(s: &str) -> Self {
        ErrorMessage::new(floor_slice(s))
    }
}

/// `s` cut to at most [`MAX_ERROR_MESSAGE_BYTES`], without copying the rest.
fn floor_slice(s: &str) -> &str {
    &s[..floor_char_boundary(s, MAX_ERROR_MESSAGE_BYTES)]
}

impl std::ops::Deref for ErrorMessage {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ErrorMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    InfoRequest(InfoRequest),
    Info(Info),
    LocateRequest(LocateRequest),
    Locate(Locate),
    Get(Get),
    Data(Data),
    Cancel {
        req_id: u32,
    },
    Have(Have),
    /// Same layout as Have; it starts the sender's complete list of the blocks it
    /// holds of the file version: what it reported before is replaced, and Haves
    /// that follow add to it. Sent only to a node that announced
    /// [`capability::HOLDINGS`].
    Holdings(Have),
    PeerReport(PeerReport),
    Ping(u64),
    Pong(u64),
    Error(ErrorFrame),
}

impl Frame {
    /// The frame type byte this frame is sent with.
    pub fn frame_type(&self) -> u8 {
        use frame_type as t;
        match self {
            Frame::Hello(_) => t::HELLO,
            Frame::InfoRequest(_) => t::INFO_REQUEST,
            Frame::Info(_) => t::INFO,
            Frame::LocateRequest(_) => t::LOCATE_REQUEST,
            Frame::Locate(_) => t::LOCATE,
            Frame::Get(_) => t::GET,
            Frame::Data(_) => t::DATA,
            Frame::Cancel { .. } => t::CANCEL,
            Frame::Have(_) => t::HAVE,
            Frame::Holdings(_) => t::HOLDINGS,
            Frame::PeerReport(_) => t::PEER_REPORT,
            Frame::Ping(_) => t::PING,
            Frame::Pong(_) => t::PONG,
            Frame::Error(_) => t::ERROR,
        }
    }

    /// Name for logs and error messages.
    pub fn name(&self) -> &'static str {
        super::type_name(self.frame_type()).unwrap_or("?")
    }

    /// The request this frame starts, answers or cancels; `None` for frames outside
    /// any request (Hello, Have, Holdings, PeerReport, Ping, Pong). An Error's 0 means the whole
    /// connection.
    pub fn req_id(&self) -> Option<u32> {
        match self {
            Frame::InfoRequest(f) => Some(f.req_id),
            Frame::Info(f) => Some(f.req_id),
            Frame::LocateRequest(f) => Some(f.req_id),
            Frame::Locate(f) => Some(f.req_id),
            Frame::Get(f) => Some(f.req_id),
            Frame::Data(f) => Some(f.req_id),
            Frame::Cancel { req_id } => Some(*req_id),
            Frame::Error(f) => Some(f.req_id),
            Frame::Hello(_)
            | Frame::Have(_)
            | Frame::Holdings(_)
            | Frame::PeerReport(_)
            | Frame::Ping(_)
            | Frame::Pong(_) => None,
        }
    }
}
