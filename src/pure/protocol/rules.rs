//! The validity rules shared by encoder and decoder: per-type payload bounds and field
//! checks. Keeping them in one place is what makes "every frame the encoder accepts,
//! the decoder accepts" hold by construction.

use super::frame::{frame_type as t, BlockRange};
use super::limits::*;
use crate::pure::geometry::FileGeometry;

/// Hello payload: magic, version, role, listen_port, capabilities.
pub(crate) const HELLO_BYTES: usize = 4 + 2 + 1 + 2 + 4;
/// InfoRequest payload without its two strings.
pub(crate) const INFO_REQUEST_FIXED_BYTES: usize = 4 + 1 + 2 + 2 + 8 + 4;
pub(crate) const LOCATE_REQUEST_BYTES: usize = 4 + 4 + 8 + 8;
/// Locate payload without its locations: req_id, count.
pub(crate) const LOCATE_FIXED_BYTES: usize = 4 + 2;
pub(crate) const GET_BYTES: usize = 4 + 4 + 8 + 8 + 4;
pub(crate) const CANCEL_BYTES: usize = 4;
/// Have payload without its ranges: handle, version, count.
pub(crate) const HAVE_FIXED_BYTES: usize = 4 + 8 + 2;
pub(crate) const RANGE_BYTES: usize = 8 + 8;
pub(crate) const PING_BYTES: usize = 8;
/// PeerReport payload: handle, version, problem, then an IPv4 (7) or IPv6 (19) address.
pub(crate) const PEER_REPORT_MIN_BYTES: usize = 4 + 8 + 1 + 7;
pub(crate) const PEER_REPORT_MAX_BYTES: usize = 4 + 8 + 1 + 19;
/// Error payload without its message: req_id, code, message length.
pub(crate) const ERROR_FIXED_BYTES: usize = 4 + 2 + 2;
/// Smallest Location on the wire: IPv4 address, role, holds tag All.
pub(crate) const MIN_LOCATION_BYTES: usize = 1 + 4 + 2 + 1 + 1;

/// Name and inclusive payload length bounds `(name, min, max)` of a frame type, or
/// `None` for a type v1 does not define. The decoder checks a header's length against
/// these before any payload byte arrives.
pub fn payload_bounds(ty: u8) -> Option<(&'static str, usize, usize)> {
    Some(match ty {
        t::HELLO => ("Hello", HELLO_BYTES, HELLO_BYTES),
        t::INFO_REQUEST => (
            "InfoRequest",
            INFO_REQUEST_FIXED_BYTES,
            INFO_REQUEST_FIXED_BYTES + MAX_HOST_BYTES + MAX_PATH_BYTES,
        ),
        t::INFO => ("Info", INFO_FIXED_BYTES, MAX_INFO_PAYLOAD_BYTES),
        t::LOCATE_REQUEST => ("LocateRequest", LOCATE_REQUEST_BYTES, LOCATE_REQUEST_BYTES),
        t::LOCATE => ("Locate", LOCATE_FIXED_BYTES, MAX_CONTROL_PAYLOAD_BYTES),
        t::GET => ("Get", GET_BYTES, GET_BYTES),
        t::DATA => ("Data", DATA_FIXED_BYTES, MAX_DATA_PAYLOAD_BYTES),
        t::CANCEL => ("Cancel", CANCEL_BYTES, CANCEL_BYTES),
        t::HAVE => (
            "Have",
            HAVE_FIXED_BYTES,
            HAVE_FIXED_BYTES + MAX_RANGES * RANGE_BYTES,
        ),
        t::HOLDINGS => (
            "Holdings",
            HAVE_FIXED_BYTES,
            HAVE_FIXED_BYTES + MAX_RANGES * RANGE_BYTES,
        ),
        t::PEER_REPORT => ("PeerReport", PEER_REPORT_MIN_BYTES, PEER_REPORT_MAX_BYTES),
        t::PING => ("Ping", PING_BYTES, PING_BYTES),
        t::PONG => ("Pong", PING_BYTES, PING_BYTES),
        t::ERROR => (
            "Error",
            ERROR_FIXED_BYTES,
            ERROR_FIXED_BYTES + MAX_ERROR_MESSAGE_BYTES,
        ),
        _ => return None,
    })
}

/// Name of a frame type, `None` if v1 does not define it.
pub fn type_name(ty: u8) -> Option<&'static str> {
    payload_bounds(ty).map(|(name, _, _)| name)
}

// Every control frame fits the control limit; only Info and Data may be larger.
const _: () = assert!(
    INFO_REQUEST_FIXED_BYTES + MAX_HOST_BYTES + MAX_PATH_BYTES <= MAX_CONTROL_PAYLOAD_BYTES
);
const _: () = assert!(HAVE_FIXED_BYTES + MAX_RANGES * RANGE_BYTES <= MAX_CONTROL_PAYLOAD_BYTES);
const _: () = assert!(ERROR_FIXED_BYTES + MAX_ERROR_MESSAGE_BYTES <= MAX_CONTROL_PAYLOAD_BYTES);

/// Request ids name a request in every frame about it; 0 is kept for Error frames about
/// the whole connection, so an Error can never be mistaken for a request's answer.
pub(crate) fn check_req_id(req_id: u32) -> Result<(), &'static str> {
    if req_id != 0 {
        Ok(())
    } else {
        Err("req_id 0 is reserved for connection-wide Error frames")
    }
}

pub(crate) fn check_block_size(block_size: u32) -> Result<(), &'static str> {
    if (MIN_BLOCK_BYTES..=MAX_BLOCK_BYTES).contains(&block_size)
        && block_size.is_multiple_of(BLOCK_ALIGN_BYTES)
    {
        Ok(())
    } else {
        Err("Info.block_size is not a multiple of 4096 in MIN_BLOCK_BYTES..=MAX_BLOCK_BYTES")
    }
}

pub(crate) fn check_file_size(size: u64) -> Result<(), &'static str> {
    if size <= MAX_FILE_BYTES {
        Ok(())
    } else {
        Err("Info.size is over MAX_FILE_BYTES")
    }
}

/// The digests an Info carries must be of blocks the file has. An empty range may
/// start anywhere (a metadata-only answer echoes the requested start).
pub(crate) fn check_digest_range(
    size: u64,
    block_size: u32,
    start: u64,
    count: u64,
) -> Result<(), &'static str> {
    if count > u64::from(MAX_DIGESTS_PER_INFO) {
        return Err("Info digest count is over MAX_DIGESTS_PER_INFO");
    }
    if count == 0 {
        return Ok(());
    }
    match start.checked_add(count) {
        Some(end) if end <= FileGeometry::new(size, block_size).block_count() => Ok(()),
        _ => Err("Info digests go past the last block of the file"),
    }
}

/// A non-empty run of blocks that fits in the largest possible file. Bounding block
/// numbers by MAX_BLOCKS_PER_FILE keeps every later `start + count` from overflowing.
pub(crate) fn span_ok(first: u64, count: u64) -> bool {
    count >= 1
        && first
            .checked_add(count)
            .is_some_and(|end| end <= MAX_BLOCKS_PER_FILE)
}

pub(crate) fn check_range(r: &BlockRange) -> Result<(), &'static str> {
    if span_ok(r.start, r.count) {
        Ok(())
    } else {
        Err("block range is empty or ends past MAX_BLOCKS_PER_FILE")
    }
}

pub(crate) fn check_ranges(ranges: &[BlockRange]) -> Result<(), &'static str> {
    if ranges.len() > MAX_RANGES {
        return Err("more than MAX_RANGES block ranges");
    }
    ranges.iter().try_for_each(check_range)
}

pub(crate) fn check_locate_request(first: u64, count: u64) -> Result<(), &'static str> {
    if span_ok(first, count) {
        Ok(())
    } else {
        Err("LocateRequest block span is empty or ends past MAX_BLOCKS_PER_FILE")
    }
}

pub(crate) fn check_get(first: u64, count: u32) -> Result<(), &'static str> {
    if !(1..=MAX_BLOCKS_PER_GET).contains(&count) {
        return Err("Get.block_count is not in 1..=MAX_BLOCKS_PER_GET");
    }
    if !span_ok(first, u64::from(count)) {
        return Err("Get block span ends past MAX_BLOCKS_PER_FILE");
    }
    Ok(())
}

pub(crate) fn check_data_block(block: u64) -> Result<(), &'static str> {
    if block < MAX_BLOCKS_PER_FILE {
        Ok(())
    } else {
        Err("Data.block is not below MAX_BLOCKS_PER_FILE")
    }
}
