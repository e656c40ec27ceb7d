//! Frame decoder: turns a byte stream into [`Frame`]s, rejecting anything outside v1.
//!
//! Sans-I/O: the caller reads into a `BytesMut` and calls [`Decoder::decode`] until it
//! returns `Ok(None)`; [`Decoder::wanted`] says how much more to read. The header alone
//! decides whether a frame is acceptable, so a peer cannot make us buffer (let alone
//! allocate) more than the limit of the frame type it announces.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, Bytes, BytesMut};

use super::frame::*;
use super::limits::*;
use super::rules::*;
use super::wire::MAGIC;
use crate::pure::digest::DigestAlgo;

/// Why a byte stream is not valid SPP v1. Every one is fatal to the connection: the
/// stream can no longer be trusted to be in sync.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unknown SPP frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("SPP frame flags must be 0 in v1, got 0x{0:02x}")]
    BadFlags(u8),
    #[error("{kind} frame payload of {len} bytes is over its limit of {max} bytes")]
    TooLong {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("not an SPP stream: Hello does not start with the SPP magic")]
    BadMagic,
    #[error("SPP frame too short: {0} is cut off")]
    Truncated(&'static str),
    #[error("SPP frame has bytes after its last field")]
    TrailingBytes,
    #[error("SPP string field is not valid UTF-8")]
    BadUtf8,
    #[error("SPP frame field out of bounds: {0}")]
    LimitExceeded(&'static str),
    #[error("SPP request id 0 outside an Error frame (0 means the whole connection)")]
    ZeroReqId,
    #[error("unknown digest algorithm id {0} in Info")]
    BadDigestAlgo(u8),
    #[error("unknown role {0}")]
    BadRole(u8),
    #[error("bad address family (must be 4 or 6)")]
    BadAddress,
    #[error("unknown problem {0} in PeerReport (must be 1 or 2)")]
    BadPeerProblem(u8),
    #[error("unknown holds tag {0} in Locate (must be 0 or 1)")]
    BadHoldsTag(u8),
    #[error("Info carries {got} bytes of digests, its count and algorithm need {expected}")]
    DigestBytesMismatch { expected: usize, got: usize },
}

use DecodeError::*;

/// Stream decoder for SPP v1 frames. Once it has returned an error it returns that
/// error forever: the caller sends Error(0, BadRequest) and closes.
#[derive(Debug, Default)]
pub struct Decoder {
    failed: Option<DecodeError>,
}

/// A header that passed every check the header alone allows.
struct Header {
    ty: u8,
    len: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one complete frame off the front of `buf` if there is one. `Ok(None)`:
    /// need more bytes. Data payloads and Info digests are zero-copy
    /// (`split_to().freeze()`): they share `buf`'s allocation. Errors in the header are
    /// reported as soon as the offending byte is in `buf`, before the payload arrives.
    /// After an error the contents of `buf` are unspecified.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = decode_frame(buf);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    /// How many more bytes the caller should make room for to complete the frame in
    /// progress: at most the frame type's limit, since the header was checked against it.
    /// 0 when `buf` already holds a whole frame or the stream is in error (call `decode`).
    pub fn wanted(&self, buf: &BytesMut) -> usize {
        if self.failed.is_some() {
            return 0;
        }
        match check_header(buf) {
            Err(_) => 0,
            Ok(None) => FRAME_HEADER_LEN.saturating_sub(buf.len()),
            Ok(Some(h)) => (FRAME_HEADER_LEN + h.len).saturating_sub(buf.len()),
        }
    }
}

/// Checks whatever part of the header `buf` holds. `Ok(None)`: header incomplete (and
/// fine so far).
fn check_header(buf: &[u8]) -> Result<Option<Header>, DecodeError> {
    let Some(&ty) = buf.first() else {
        return Ok(None);
    };
    let Some((kind, min, max)) = payload_bounds(ty) else {
        return Err(UnknownType(ty));
    };
    match buf.get(1) {
        Some(&0) => {}
        Some(&flags) => return Err(BadFlags(flags)),
        None => return Ok(None),
    }
    let Some(&[a, b, c, d]) = buf.get(2..FRAME_HEADER_LEN) else {
        return Ok(None);
    };
    // A u32 always fits usize on the 32/64-bit targets we build; saturate otherwise so
    // the limit check below still rejects it.
    let len = usize::try_from(u32::from_be_bytes([a, b, c, d])).unwrap_or(usize::MAX);
    if len > max {
        return Err(TooLong { kind, len, max });
    }
    if len < min {
        return Err(Truncated(kind));
    }
    if ty == frame_type::HELLO {
        // Check the magic as far as it has arrived: garbage is told from SPP early.
        let end = buf.len().min(FRAME_HEADER_LEN + MAGIC.len());
        let got = buf.get(FRAME_HEADER_LEN..end).unwrap_or(&[]);
        if MAGIC.get(..got.len()) != Some(got) {
            return Err(BadMagic);
        }
    }
    Ok(Some(Header { ty, len }))
}

fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
    let frame = match take_frame(buf)? {
        Some(f) => f,
        None => return Ok(None),
    };
    if let (Some(id), false) = (frame.req_id(), matches!(frame, Frame::Error(_))) {
        check_req_id(id).map_err(|_| ZeroReqId)?;
    }
    Ok(Some(frame))
}

fn take_frame(buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
    let Some(h) = check_header(buf)? else {
        return Ok(None);
    };
    // Cannot overflow: h.len <= MAX_DATA_PAYLOAD_BYTES.
    let total = FRAME_HEADER_LEN + h.len;
    if buf.len() < total {
        return Ok(None);
    }
    match h.ty {
        // Bulk frames keep their bytes: hand out a view of the buffer, no copy.
        frame_type::DATA => parse_data(buf.split_to(total).freeze()).map(Some),
        frame_type::INFO => parse_info(buf.split_to(total).freeze()).map(Some),
        _ => {
            let frame = parse_control(h.ty, buf.get(FRAME_HEADER_LEN..total).unwrap_or(&[]))?;
            buf.advance(total);
            Ok(Some(frame))
        }
    }
}

/// Bounds-checked big-endian reads over one payload. Every read names the field, so a
/// short frame says what is missing.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(Truncated(field))?;
        let s = self.buf.get(self.pos..end).ok_or(Truncated(field))?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        self.take(N, field)?
            .try_into()
            .map_err(|_| Truncated(field))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_be_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_be_bytes)
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        self.array(field).map(i64::from_be_bytes)
    }

    fn string(&mut self, len: usize, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| BadUtf8)
    }

    fn role(&mut self, field: &'static str) -> Result<Role, DecodeError> {
        let v = self.u8(field)?;
        Role::from_u8(v).ok_or(BadRole(v))
    }

    fn addr(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip: std::net::IpAddr = match self.u8("Location.family")? {
            4 => Ipv4Addr::from(self.array::<4>("Location.address")?).into(),
            6 => Ipv6Addr::from(self.array::<16>("Location.address")?).into(),
            _ => return Err(BadAddress),
        };
        Ok(SocketAddr::new(ip, self.u16("Location.port")?))
    }

    fn ranges(&mut self) -> Result<Vec<BlockRange>, DecodeError> {
        let count = usize::from(self.u16("range count")?);
        if count > MAX_RANGES {
            return Err(LimitExceeded("more than MAX_RANGES block ranges"));
        }
        // Reserve no more than the bytes present could fill: a lying count costs nothing.
        let mut ranges = Vec::with_capacity(count.min(self.remaining() / RANGE_BYTES));
        for _ in 0..count {
            let r = BlockRange {
                start: self.u64("BlockRange.start")?,
                count: self.u64("BlockRange.count")?,
            };
            check_range(&r).map_err(LimitExceeded)?;
            ranges.push(r);
        }
        Ok(ranges)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(TrailingBytes)
        }
    }
}

fn parse_control(ty: u8, payload: &[u8]) -> Result<Frame, DecodeError> {
    let mut r = Reader::new(payload);
    let frame = match ty {
        frame_type::HELLO => {
            if r.array::<4>("Hello.magic")? != MAGIC {
                return Err(BadMagic);
            }
            Frame::Hello(Hello {
                version: r.u16("Hello.version")?,
                role: r.role("Hello.role")?,
                listen_port: r.u16("Hello.listen_port")?,
                capabilities: r.u32("Hello.capabilities")?,
            })
        }
        frame_type::INFO_REQUEST => {
            let req_id = r.u32("InfoRequest.req_id")?;
            let host_len = usize::from(r.u8("FileRef.host length")?);
            let host = r.string(host_len, "FileRef.host")?;
            let port = r.u16("FileRef.port")?;
            let path_len = usize::from(r.u16("FileRef.path length")?);
            if path_len > MAX_PATH_BYTES {
                return Err(LimitExceeded("FileRef.path is over MAX_PATH_BYTES"));
            }
            let path = r.string(path_len, "FileRef.path")?;
            Frame::InfoRequest(InfoRequest {
                req_id,
                file: FileRef { host, port, path },
                digest_start: r.u64("InfoRequest.digest_start")?,
                digest_count: r.u32("InfoRequest.digest_count")?,
            })
        }
        frame_type::LOCATE_REQUEST => {
            let f = LocateRequest {
                req_id: r.u32("LocateRequest.req_id")?,
                handle: r.u32("LocateRequest.handle")?,
                first_block: r.u64("LocateRequest.first_block")?,
                block_count: r.u64("LocateRequest.block_count")?,
            };
            check_locate_request(f.first_block, f.block_count).map_err(LimitExceeded)?;
            Frame::LocateRequest(f)
        }
        frame_type::LOCATE => {
            let req_id = r.u32("Locate.req_id")?;
            let count = usize::from(r.u16("Locate.count")?);
            if count > MAX_LOCATIONS {
                return Err(LimitExceeded(
                    "Locate has more than MAX_LOCATIONS locations",
                ));
            }
            let mut locations = Vec::with_capacity(count.min(r.remaining() / MIN_LOCATION_BYTES));
            for _ in 0..count {
                let addr = r.addr()?;
                let role = r.role("Location.role")?;
                let holds = match r.u8("Location.holds")? {
                    0 => Holds::All,
                    1 => Holds::Ranges(r.ranges()?),
                    tag => return Err(BadHoldsTag(tag)),
                };
                locations.push(Location { addr, role, holds });
            }
            Frame::Locate(Locate { req_id, locations })
        }
        frame_type::GET => {
            let g = Get {
                req_id: r.u32("Get.req_id")?,
                handle: r.u32("Get.handle")?,
                version: r.u64("Get.version")?,
                first_block: r.u64("Get.first_block")?,
                block_count: r.u32("Get.block_count")?,
            };
            check_get(g.first_block, g.block_count).map_err(LimitExceeded)?;
            Frame::Get(g)
        }
        frame_type::CANCEL => Frame::Cancel {
            req_id: r.u32("Cancel.req_id")?,
        },
        frame_type::HAVE => Frame::Have(Have {
            handle: r.u32("Have.handle")?,
            version: r.u64("Have.version")?,
            ranges: r.ranges()?,
        }),
        frame_type::HOLDINGS => Frame::Holdings(Have {
            handle: r.u32("Holdings.handle")?,
            version: r.u64("Holdings.version")?,
            ranges: r.ranges()?,
        }),
        frame_type::PEER_REPORT => {
            let handle = r.u32("PeerReport.handle")?;
            let version = r.u64("PeerReport.version")?;
            let p = r.u8("PeerReport.problem")?;
            let problem = PeerProblem::from_u8(p).ok_or(BadPeerProblem(p))?;
            Frame::PeerReport(PeerReport {
                handle,
                version,
                problem,
                peer: r.addr()?,
            })
        }
        frame_type::PING => Frame::Ping(r.u64("Ping.value")?),
        frame_type::PONG => Frame::Pong(r.u64("Pong.value")?),
        frame_type::ERROR => {
            let req_id = r.u32("Error.req_id")?;
            let code = ErrorCode::from_u16(r.u16("Error.code")?);
            let len = usize::from(r.u16("Error.message length")?);
            if len > MAX_ERROR_MESSAGE_BYTES {
                return Err(LimitExceeded(
                    "Error message is over MAX_ERROR_MESSAGE_BYTES",
                ));
            }
            Frame::Error(ErrorFrame {
                req_id,
                code,
                message: r.string(len, "Error.message")?.into(),
            })
        }
        // Data and Info are routed to their own parsers; anything else failed the header.
        other => return Err(UnknownType(other)),
    };
    r.finish()?;
    Ok(frame)
}

/// `frame` is the whole frame, header included, so the payload is a slice of it.
fn parse_data(frame: Bytes) -> Result<Frame, DecodeError> {
    let mut r = Reader::new(frame.get(FRAME_HEADER_LEN..).unwrap_or(&[]));
    let req_id = r.u32("Data.req_id")?;
    let block = r.u64("Data.block")?;
    check_data_block(block).map_err(LimitExceeded)?;
    // The header check bounded the payload by MAX_BLOCK_BYTES already.
    let payload = frame.slice(FRAME_HEADER_LEN + DATA_FIXED_BYTES..);
    Ok(Frame::Data(Data {
        req_id,
        block,
        payload,
    }))
}

fn parse_info(frame: Bytes) -> Result<Frame, DecodeError> {
    let mut r = Reader::new(frame.get(FRAME_HEADER_LEN..).unwrap_or(&[]));
    let req_id = r.u32("Info.req_id")?;
    let handle = r.u32("Info.handle")?;
    let size = r.u64("Info.size")?;
    let block_size = r.u32("Info.block_size")?;
    let algo_id = r.u8("Info.algo")?;
    let version = r.u64("Info.version")?;
    let mtime_unix_secs = r.i64("Info.mtime")?;
    let digest_start = r.u64("Info.digest_start")?;
    let digest_count = r.u32("Info.digest_count")?;

    check_block_size(block_size).map_err(LimitExceeded)?;
    check_file_size(size).map_err(LimitExceeded)?;
    let algo = DigestAlgo::from_id(algo_id).map_err(|_| BadDigestAlgo(algo_id))?;
    check_digest_range(size, block_size, digest_start, u64::from(digest_count))
        .map_err(LimitExceeded)?;
    // No overflow: digest_count <= MAX_DIGESTS_PER_INFO was just checked.
    let expected = digest_count as usize * algo.len();
    if r.remaining() != expected {
        return Err(DigestBytesMismatch {
            expected,
            got: r.remaining(),
        });
    }
    let digests = frame.slice(FRAME_HEADER_LEN + INFO_FIXED_BYTES..);
    Ok(Frame::Info(Info {
        req_id,
        handle,
        size,
        block_size,
        algo,
        version,
        mtime_unix_secs,
        digest_start,
        digests,
    }))
}
