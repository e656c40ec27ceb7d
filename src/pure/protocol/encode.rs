//! Frame encoder: validates a [`Frame`] against the v1 rules and appends its bytes.
//!
//! Validation runs before the first byte is written, so a rejected frame leaves the
//! output buffer untouched and a half-written frame can never desynchronise a stream.

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};

use super::frame::*;
use super::limits::*;
use super::rules::*;
use super::wire::MAGIC;

/// A frame the encoder refused: sending it would break a v1 rule the peer checks.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    /// A field or count is over (or under) one of the [`limits`](super::limits).
    #[error("cannot encode SPP frame: {0}")]
    LimitExceeded(&'static str),
    /// A field is malformed in a way no limit describes.
    #[error("cannot encode SPP frame: {0}")]
    Invalid(&'static str),
}

use EncodeError::{Invalid, LimitExceeded};

/// Appends the encoding of `frame` to `out`. On error appends nothing.
///
/// Data payloads and Info digests are copied into `out`; to send a cached block without
/// copying it, write [`encode_data_header`] and then the block (writev).
pub fn encode(frame: &Frame, out: &mut BytesMut) -> Result<(), EncodeError> {
    encode_with(frame, out, true)
}

/// Appends an Info frame without its digests, which the caller sends right after
/// it (`info.digests`, e.g. a slice of a mapped index, is never copied). The header's
/// lengths count the digests. On error appends nothing.
pub fn encode_info_head(info: &Info, out: &mut BytesMut) -> Result<(), EncodeError> {
    let frame = Frame::Info(info.clone());
    encode_with(&frame, out, false)
}

/// The payload length `frame` encodes to, or why the encoder refuses it: the checks of
/// [`encode`] without writing anything.
pub fn encoded_payload_len(frame: &Frame) -> Result<usize, EncodeError> {
    let len = payload_len(frame)?;
    // payload_len is exact for fixed-size types; this catches variable ones (Locate can
    // hold more locations * ranges than fit the control limit).
    let Some((_, min, max)) = payload_bounds(frame.frame_type()) else {
        return Err(Invalid("frame type has no v1 encoding"));
    };
    if len > max {
        return Err(LimitExceeded(
            "payload is over the frame type's limit (e.g. a Locate with too many ranges in total)",
        ));
    }
    debug_assert!(len >= min, "payload_len below the type minimum");
    Ok(len)
}

fn encode_with(frame: &Frame, out: &mut BytesMut, info_digests: bool) -> Result<(), EncodeError> {
    let len = encoded_payload_len(frame)?;
    let ty = frame.frame_type();
    let len32 = u32::try_from(len).map_err(|_| LimitExceeded("payload length over u32"))?;

    let tail = match frame {
        Frame::Info(i) if !info_digests => i.digests.len(),
        _ => 0,
    };
    out.reserve(FRAME_HEADER_LEN + len - tail);
    let start = out.len();
    out.put_u8(ty);
    out.put_u8(0);
    out.put_u32(len32);
    write_payload(frame, out, info_digests);
    debug_assert_eq!(
        out.len() - start + tail,
        FRAME_HEADER_LEN + len,
        "payload_len disagrees with write_payload"
    );
    Ok(())
}

/// Header of a Data frame whose payload is written separately (writev / two writes) so
/// a cached block is never copied into a frame buffer.
///
/// # Panics
/// If `payload_len > MAX_BLOCK_BYTES` or `block >= MAX_BLOCKS_PER_FILE`: callers send
/// blocks of a validated file, so either is a bug on our side, and emitting the header
/// anyway would make the peer drop the connection. Use [`try_encode_data_header`] when
/// the values are not already known good.
pub fn encode_data_header(req_id: u32, block: u64, payload_len: usize) -> [u8; DATA_HEADER_LEN] {
    match try_encode_data_header(req_id, block, payload_len) {
        Ok(h) => h,
        Err(e) => panic!("encode_data_header: {e}"),
    }
}

/// [`encode_data_header`] that reports bad values instead of panicking.
pub fn try_encode_data_header(
    req_id: u32,
    block: u64,
    payload_len: usize,
) -> Result<[u8; DATA_HEADER_LEN], EncodeError> {
    if payload_len > MAX_BLOCK_BYTES as usize {
        return Err(LimitExceeded("Data payload is over MAX_BLOCK_BYTES"));
    }
    check_data_block(block).map_err(LimitExceeded)?;
    check_req_id(req_id).map_err(Invalid)?;
    // Cannot truncate: bounded by MAX_DATA_PAYLOAD_BYTES, which fits a u32 (limits.rs).
    let len = (DATA_FIXED_BYTES + payload_len) as u32;
    let mut h = [0u8; DATA_HEADER_LEN];
    h[0] = frame_type::DATA;
    h[1] = 0;
    h[2..6].copy_from_slice(&len.to_be_bytes());
    h[6..10].copy_from_slice(&req_id.to_be_bytes());
    h[10..18].copy_from_slice(&block.to_be_bytes());
    Ok(h)
}

fn addr_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    }
}

fn holds_len(holds: &Holds) -> Result<usize, EncodeError> {
    match holds {
        Holds::All => Ok(1),
        Holds::Ranges(r) => {
            check_ranges(r).map_err(LimitExceeded)?;
            Ok(1 + 2 + r.len() * RANGE_BYTES)
        }
    }
}

/// Checks every rule the decoder checks and returns the exact payload length.
fn payload_len(frame: &Frame) -> Result<usize, EncodeError> {
    if let (Some(id), false) = (frame.req_id(), matches!(frame, Frame::Error(_))) {
        check_req_id(id).map_err(Invalid)?;
    }
    Ok(match frame {
        Frame::Hello(_) => HELLO_BYTES,
        Frame::InfoRequest(r) => {
            if r.file.host.len() > MAX_HOST_BYTES {
                return Err(LimitExceeded("FileRef.host is over MAX_HOST_BYTES"));
            }
            if r.file.path.len() > MAX_PATH_BYTES {
                return Err(LimitExceeded("FileRef.path is over MAX_PATH_BYTES"));
            }
            INFO_REQUEST_FIXED_BYTES + r.file.host.len() + r.file.path.len()
        }
        Frame::Info(i) => {
            if i.digests.len() % i.algo.len() != 0 {
                return Err(Invalid("Info.digests is not a whole number of digests"));
            }
            let count = i.digests.len() / i.algo.len();
            check_block_size(i.block_size).map_err(LimitExceeded)?;
            check_file_size(i.size).map_err(LimitExceeded)?;
            check_digest_range(i.size, i.block_size, i.digest_start, count as u64)
                .map_err(LimitExceeded)?;
            INFO_FIXED_BYTES + i.digests.len()
        }
        Frame::LocateRequest(r) => {
            check_locate_request(r.first_block, r.block_count).map_err(LimitExceeded)?;
            LOCATE_REQUEST_BYTES
        }
        Frame::Locate(l) => {
            if l.locations.len() > MAX_LOCATIONS {
                return Err(LimitExceeded(
                    "Locate has more than MAX_LOCATIONS locations",
                ));
            }
            let mut len = LOCATE_FIXED_BYTES;
            for loc in &l.locations {
                // Bounded: 64 locations * (19 + 1 + 4099) bytes, far from overflow.
                len += addr_len(&loc.addr) + 1 + holds_len(&loc.holds)?;
            }
            len
        }
        Frame::Get(g) => {
            check_get(g.first_block, g.block_count).map_err(LimitExceeded)?;
            GET_BYTES
        }
        Frame::Data(d) => {
            if d.payload.len() > MAX_BLOCK_BYTES as usize {
                return Err(LimitExceeded("Data payload is over MAX_BLOCK_BYTES"));
            }
            check_data_block(d.block).map_err(LimitExceeded)?;
            DATA_FIXED_BYTES + d.payload.len()
        }
        Frame::Cancel { .. } => CANCEL_BYTES,
        Frame::Have(h) | Frame::Holdings(h) => {
            check_ranges(&h.ranges).map_err(LimitExceeded)?;
            HAVE_FIXED_BYTES + h.ranges.len() * RANGE_BYTES
        }
        Frame::PeerReport(r) => 4 + 8 + 1 + addr_len(&r.peer),
        Frame::Ping(_) | Frame::Pong(_) => PING_BYTES,
        Frame::Error(e) => {
            // ErrorMessage's constructors cut every message to fit; checked anyway,
            // since an over-long message would not fit its 16-bit length.
            if e.message.len() > MAX_ERROR_MESSAGE_BYTES {
                return Err(LimitExceeded(
                    "Error message is over MAX_ERROR_MESSAGE_BYTES",
                ));
            }
            ERROR_FIXED_BYTES + e.message.len()
        }
    })
}

/// Writes the payload of a frame `payload_len` accepted. Infallible: every length it
/// casts was bounded there.
fn write_payload(frame: &Frame, out: &mut BytesMut, info_digests: bool) {
    match frame {
        Frame::Hello(h) => {
            out.put_slice(&MAGIC);
            out.put_u16(h.version);
            out.put_u8(h.role.to_u8());
            out.put_u16(h.listen_port);
            out.put_u32(h.capabilities);
        }
        Frame::InfoRequest(r) => {
            out.put_u32(r.req_id);
            out.put_u8(r.file.host.len() as u8);
            out.put_slice(r.file.host.as_bytes());
            out.put_u16(r.file.port);
            out.put_u16(r.file.path.len() as u16);
            out.put_slice(r.file.path.as_bytes());
            out.put_u64(r.digest_start);
            out.put_u32(r.digest_count);
        }
        Frame::Info(i) => {
            out.put_u32(i.req_id);
            out.put_u32(i.handle);
            out.put_u64(i.size);
            out.put_u32(i.block_size);
            out.put_u8(i.algo.id());
            out.put_u64(i.version);
            out.put_i64(i.mtime_unix_secs);
            out.put_u64(i.digest_start);
            out.put_u32(i.digest_count() as u32);
            if info_digests {
                out.put_slice(&i.digests);
            }
        }
        Frame::LocateRequest(r) => {
            out.put_u32(r.req_id);
            out.put_u32(r.handle);
            out.put_u64(r.first_block);
            out.put_u64(r.block_count);
        }
        Frame::Locate(l) => {
            out.put_u32(l.req_id);
            out.put_u16(l.locations.len() as u16);
            for loc in &l.locations {
                write_addr(&loc.addr, out);
                out.put_u8(loc.role.to_u8());
                match &loc.holds {
                    Holds::All => out.put_u8(0),
                    Holds::Ranges(r) => {
                        out.put_u8(1);
                        write_ranges(r, out);
                    }
                }
            }
        }
        Frame::Get(g) => {
            out.put_u32(g.req_id);
            out.put_u32(g.handle);
            out.put_u64(g.version);
            out.put_u64(g.first_block);
            out.put_u32(g.block_count);
        }
        Frame::Data(d) => {
            out.put_u32(d.req_id);
            out.put_u64(d.block);
            out.put_slice(&d.payload);
        }
        Frame::Cancel { req_id } => out.put_u32(*req_id),
        Frame::Have(h) | Frame::Holdings(h) => {
            out.put_u32(h.handle);
            out.put_u64(h.version);
            write_ranges(&h.ranges, out);
        }
        Frame::PeerReport(r) => {
            out.put_u32(r.handle);
            out.put_u64(r.version);
            out.put_u8(r.problem.to_u8());
            write_addr(&r.peer, out);
        }
        Frame::Ping(v) | Frame::Pong(v) => out.put_u64(*v),
        Frame::Error(e) => {
            out.put_u32(e.req_id);
            out.put_u16(e.code.to_u16());
            out.put_u16(e.message.len() as u16);
            out.put_slice(e.message.as_bytes());
        }
    }
}

fn write_addr(addr: &SocketAddr, out: &mut BytesMut) {
    match addr {
        SocketAddr::V4(a) => {
            out.put_u8(4);
            out.put_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.put_u8(6);
            out.put_slice(&a.ip().octets());
        }
    }
    out.put_u16(addr.port());
}

fn write_ranges(ranges: &[BlockRange], out: &mut BytesMut) {
    out.put_u16(ranges.len() as u16);
    for r in ranges {
        out.put_u64(r.start);
        out.put_u64(r.count);
    }
}
