//! Every numeric bound of SPP v1, in one place, with its unit in its name.
//!
//! The decoder enforces these on every frame it reads and the encoder on every frame it
//! writes, so a peer can never make us allocate or compute past them. Changing any value
//! here changes the wire protocol: see "Versioning" in `docs/PROTOCOL.md`.

use crate::pure::digest::MAX_DIGEST_BYTES;

/// Frame header: type u8, flags u8 (must be 0 in v1), payload length u32 big-endian.
pub const FRAME_HEADER_LEN: usize = 6;
/// Frame header plus the fixed Data fields (req_id u32, block u64): what
/// [`encode_data_header`](super::encode_data_header) writes before a block's bytes.
pub const DATA_HEADER_LEN: usize = FRAME_HEADER_LEN + DATA_FIXED_BYTES;

/// Longest host name in a file reference (its length travels in one byte).
pub const MAX_HOST_BYTES: usize = 255;
/// Longest path in a file reference.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest message in an Error frame.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;
/// Largest payload of every frame type except Info and Data. Most types have a tighter,
/// exact bound (see [`payload_bounds`](super::payload_bounds)); this one binds Locate.
pub const MAX_CONTROL_PAYLOAD_BYTES: usize = 64 * 1024;
/// Most digests one Info frame carries; longer files are described in several ranges.
pub const MAX_DIGESTS_PER_INFO: u32 = 16384;
/// Largest block size an origin may publish (`-b`).
pub const MAX_BLOCK_BYTES: u32 = 16 * 1024 * 1024;
/// Smallest block size an origin may publish (`-b`).
pub const MIN_BLOCK_BYTES: u32 = 16 * 1024;
/// Block sizes are a multiple of this, so blocks stay page aligned in stores.
pub const BLOCK_ALIGN_BYTES: u32 = 4096;
/// Most blocks one Get may ask for.
pub const MAX_BLOCKS_PER_GET: u32 = 1024;
/// Most locations in one Locate answer.
pub const MAX_LOCATIONS: usize = 64;
/// Most block ranges in one Holds list or Have frame.
pub const MAX_RANGES: usize = 256;
/// Largest file SPP can describe: 16 TiB.
pub const MAX_FILE_BYTES: u64 = 1 << 44;
/// Most blocks any file can have (largest file in the smallest blocks): 2^30. Every block
/// index is below this, so `first + count` on block numbers can never overflow a u64.
pub const MAX_BLOCKS_PER_FILE: u64 = MAX_FILE_BYTES / MIN_BLOCK_BYTES as u64;
/// Most requests (InfoRequest, LocateRequest, Get) a peer may have unanswered on one
/// connection. Not checked by the codec (it has no notion of a session): the connection
/// handler answers the excess with Error Busy.
pub const MAX_OUTSTANDING_REQUESTS: usize = 256;
/// File handles one connection may hold (a server refuses more; a client replaces a
/// connection that has asked for this many).
pub const MAX_HANDLES_PER_CONNECTION: usize = 1024;
/// Guidance for connection handlers: a connection with no frame in either direction
/// for this long is closed. The codec itself has no clock.
pub const IDLE_TIMEOUT_SECS: u64 = 60;

/// Fixed part of an Info payload, before the digests.
pub const INFO_FIXED_BYTES: usize = 4 + 4 + 8 + 4 + 1 + 8 + 8 + 8 + 4;
/// Fixed part of a Data payload (req_id u32, block u64), before the block bytes.
pub const DATA_FIXED_BYTES: usize = 4 + 8;
/// Largest Info payload: the fixed part and the most digests of the longest algorithm.
pub const MAX_INFO_PAYLOAD_BYTES: usize =
    INFO_FIXED_BYTES + MAX_DIGESTS_PER_INFO as usize * MAX_DIGEST_BYTES;
/// Largest Data payload: the fixed part and one largest block.
pub const MAX_DATA_PAYLOAD_BYTES: usize = DATA_FIXED_BYTES + MAX_BLOCK_BYTES as usize;
/// Largest frame of any type, header included: a reader never needs more buffer.
pub const MAX_FRAME_BYTES: usize = FRAME_HEADER_LEN + MAX_DATA_PAYLOAD_BYTES;

// The length field is a u32 and the codec casts between it and usize: keep every
// bound representable in both, on every target we build for.
const _: () = assert!(MAX_DATA_PAYLOAD_BYTES <= u32::MAX as usize);
const _: () = assert!(MAX_INFO_PAYLOAD_BYTES <= u32::MAX as usize);
const _: () = assert!(MAX_INFO_PAYLOAD_BYTES <= MAX_DATA_PAYLOAD_BYTES);
const _: () = assert!(MIN_BLOCK_BYTES.is_multiple_of(BLOCK_ALIGN_BYTES));
const _: () = assert!(MAX_BLOCK_BYTES.is_multiple_of(BLOCK_ALIGN_BYTES));
