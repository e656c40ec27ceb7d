//! Fuzz target bodies: one function per target of the `fuzz/` crate, taking the raw
//! input bytes. They live in the library so that the libFuzzer binaries are one-liners
//! and the normal test suite (`tests/it/fuzz_corpus.rs`) replays the committed corpus
//! and the regression inputs without libFuzzer.
//!
//! Each body asserts properties, not only the absence of panics: a failed assertion is
//! a finding. Bodies are pure and quick (no sockets, threads or sleeps), and every
//! input, however long, does bounded work.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Component, Path};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::BytesMut;

use crate::pure::http::range::{if_range_allows, resolve_range, RangeSpec};
use crate::pure::http::request::{parse_request, HttpError, Method, Request, Target};
use crate::pure::http::response::{
    content_type_for, etag_for, etag_matches, http_date, not_modified_since, write_error,
};
use crate::pure::http::MAX_HEAD_BYTES;
use crate::pure::pathsafe::{normalize_plain_path, normalize_request_path, MAX_REQUEST_PATH_BYTES};
use crate::pure::protocol::limits::{
    MAX_BLOCKS_PER_FILE, MAX_BLOCK_BYTES, MAX_FILE_BYTES, MAX_FRAME_BYTES, MAX_LOCATIONS,
    MAX_RANGES,
};
use crate::pure::protocol::{
    encode, payload_bounds, try_encode_data_header, BlockRange, DecodeError, Decoder, Frame, Holds,
    Locate, PeerProblem, DATA_HEADER_LEN, FRAME_HEADER_LEN,
};
use crate::pure::registry::{self, Bounds, Registry};

/// Reads the input as a stream of small values; past its end every read is 0, so any
/// input is a complete program.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.u8();
        }
        out
    }
}

// ---------------------------------------------------------------------------------
// SPP decoder
// ---------------------------------------------------------------------------------

/// What decoding a stream gave: the frames, the error that ended it (if any), and how
/// many input bytes the frames took.
#[derive(Debug, PartialEq)]
struct Decoded {
    frames: Vec<Frame>,
    error: Option<DecodeError>,
    consumed: usize,
}

/// The SPP decoder on arbitrary bytes. The first byte chooses how the rest arrives:
/// below 128, in chunks of `b + 1` bytes; from 128 on, in two parts split at a point
/// proportional to `b - 128`. The same bytes in one piece must decode to the same
/// frames and the same error. Every frame re-encodes to exactly the bytes it was read
/// from and decodes back to itself; the decoder never asks for more room than the
/// announced frame type allows, and collections it returns are sized by the bytes that
/// arrived, never by a count field alone.
pub fn spp_decode(data: &[u8]) {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let chunks: Vec<usize> = if mode < 128 {
        vec![usize::from(mode) + 1]
    } else {
        let split = stream.len() * usize::from(mode - 128) / 127;
        vec![split.max(1), stream.len().max(1)]
    };
    let chunked = decode_stream(stream, &chunks);
    let whole = decode_stream(stream, &[stream.len().max(1)]);
    assert_eq!(
        chunked, whole,
        "decoding depends on how the bytes arrive (chunks {chunks:?})"
    );
}

/// Feeds `stream` to a decoder in `chunks` (cycled, the last size repeating), checking
/// every frame and the `wanted` contract at each step.
fn decode_stream(stream: &[u8], chunks: &[usize]) -> Decoded {
    let mut d = Decoder::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0usize;
    let mut sizes = chunks
        .iter()
        .copied()
        .chain(std::iter::repeat(chunks.last().copied().unwrap_or(1)));
    loop {
        loop {
            let before = fed - buf.len();
            match d.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let after = fed - buf.len();
                    check_frame(&frame, &stream[before..after]);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    // A failed decoder stays failed, and wants nothing more.
                    assert_eq!(d.decode(&mut buf), Err(e.clone()));
                    assert_eq!(d.wanted(&buf), 0);
                    let _ = e.to_string();
                    return Decoded {
                        frames,
                        error: Some(e),
                        consumed: before,
                    };
                }
            }
        }
        let wanted = d.wanted(&buf);
        assert!(wanted > 0, "needs more bytes but wants none");
        assert!(
            buf.len() + wanted <= MAX_FRAME_BYTES,
            "wants past MAX_FRAME_BYTES"
        );
        if buf.len() >= FRAME_HEADER_LEN {
            let (_, _, max) = payload_bounds(buf[0]).expect("an accepted header has a type");
            assert!(
                buf.len() + wanted <= FRAME_HEADER_LEN + max,
                "wants past the frame type's limit"
            );
        }
        if fed == stream.len() {
            return Decoded {
                frames,
                error: None,
                consumed: fed - buf.len(),
            };
        }
        let n = sizes.next().unwrap_or(1).clamp(1, stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
    }
}

/// One decoded frame, read from `wire`: canonical, round-trips, sized by its bytes.
fn check_frame(frame: &Frame, wire: &[u8]) {
    let mut out = BytesMut::new();
    encode(frame, &mut out).expect("a decoded frame encodes");
    assert_eq!(&out[..], wire, "the encoding is not canonical");
    let mut again = out.clone();
    assert_eq!(Decoder::new().decode(&mut again), Ok(Some(frame.clone())));
    assert!(again.is_empty());
    assert!(!frame.name().is_empty());
    if !matches!(frame, Frame::Error(_)) {
        assert_ne!(frame.req_id(), Some(0), "request id 0 outside an Error");
    }
    // What a count field promised may only be allocated for entries that arrived:
    // a range takes 16 bytes on the wire, a location at least 9.
    let (ranges_room, locations_room) = (wire.len() / 16, wire.len() / 9);
    match frame {
        Frame::Data(f) => {
            assert!(f.payload.len() <= MAX_BLOCK_BYTES as usize);
            let head = try_encode_data_header(f.req_id, f.block, f.payload.len())
                .expect("a decoded Data header encodes");
            assert_eq!(&head[..], &wire[..DATA_HEADER_LEN]);
        }
        Frame::Info(f) => {
            assert_eq!(f.digests.len(), f.digest_count() * f.algo.len());
            assert!(f.block_count() <= MAX_BLOCKS_PER_FILE);
            assert!(f.size <= MAX_FILE_BYTES);
            if f.digest_count() > 0 {
                assert!(f.digest(f.digest_count() - 1).is_some());
            }
            assert!(f.digest(f.digest_count()).is_none());
        }
        Frame::Have(h) | Frame::Holdings(h) => {
            assert!(h.ranges.len() <= MAX_RANGES);
            assert!(h.ranges.capacity() <= ranges_room.min(MAX_RANGES));
        }
        Frame::Locate(l) => {
            assert!(l.locations.len() <= MAX_LOCATIONS);
            assert!(l.locations.capacity() <= locations_room.min(MAX_LOCATIONS));
            for loc in &l.locations {
                if let Holds::Ranges(r) = &loc.holds {
                    assert!(r.capacity() <= ranges_room.min(MAX_RANGES));
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------
// HTTP request heads
// ---------------------------------------------------------------------------------

/// `parse_request` on arbitrary bytes, then on the heads pipelined after the first.
/// A parsed head is self-contained (the bytes after it change nothing, and any shorter
/// prefix of it is incomplete, never an error); each parsed request then goes through
/// what the server does with one, without I/O: path normalization, authority, range
/// resolution against several sizes, If-Range, keep-alive.
pub fn http_request(data: &[u8]) {
    // A data-derived file size: the last 8 bytes, so edits of the head move it rarely.
    let tail = &data[data.len().saturating_sub(8)..];
    let size = tail.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)) % (MAX_FILE_BYTES + 1);
    let mut at = 0;
    // Each head takes at least one byte, so this ends; the cap bounds the work.
    for _ in 0..64 {
        let buf = &data[at..];
        match parse_request(buf) {
            Ok(Some((req, head_len))) => {
                assert!(head_len > 0 && head_len <= buf.len().min(MAX_HEAD_BYTES));
                let head = &buf[..head_len];
                assert_eq!(
                    parse_request(head),
                    Ok(Some((req.clone(), head_len))),
                    "a head depends on the bytes after it"
                );
                for cut in [head_len - 1, head_len / 2] {
                    assert_eq!(
                        parse_request(&head[..cut]),
                        Ok(None),
                        "a prefix of a complete head is not incomplete (cut {cut})"
                    );
                }
                check_request(&req, size);
                at += head_len;
            }
            Ok(None) => {
                assert!(buf.len() < MAX_HEAD_BYTES, "incomplete at the head limit");
                break;
            }
            Err(e) => {
                assert!(matches!(e.status(), 400 | 431 | 505));
                let _ = e.to_string();
                break;
            }
        }
    }
}

/// What the server derives from one request, with its invariants.
fn check_request(req: &Request, size: u64) {
    let path = req.path();
    assert!(
        path.starts_with('/'),
        "request path {path:?} is not absolute"
    );
    if let Target::Absolute { scheme, host, .. } = &req.target {
        assert_eq!(scheme, "http");
        assert!(!host.is_empty());
    }
    if let Some((host, _port)) = req.authority() {
        assert!(!host.is_empty());
        assert_eq!(host, host.to_ascii_lowercase(), "host is not lowercased");
        assert!(!host.contains(['[', ']', '/', '@', ' ']), "host {host:?}");
    }
    if let Ok(rel) = normalize_request_path(path) {
        check_safe_path(&rel);
    }
    if let Ok(rel) = normalize_plain_path(path) {
        check_safe_path(&rel);
    }
    // keep_alive: "close" always wins; HTTP/1.0 needs "keep-alive".
    if req.connection_close {
        assert!(!req.keep_alive());
    } else {
        assert_eq!(
            req.keep_alive(),
            req.minor_version >= 1 || req.connection_keep_alive
        );
    }
    // GET and HEAD never carry a body the server would not read.
    if matches!(req.method, Method::Get | Method::Head) {
        assert!(!req.chunked && req.content_length.unwrap_or(0) == 0);
    }
    let _ = req.has_query_flag("direct");
    let _ = content_type_for(path);
    for size in [0, 1, 4096, size] {
        check_range(req.range.as_deref(), size);
    }
    let version = size.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
    let etag = etag_for(version);
    let mtime = (size % (1 << 36)) as i64;
    let last_modified = http_date(UNIX_EPOCH + Duration::from_secs(mtime as u64));
    if req.if_range.is_none() {
        assert!(if_range_allows(None, &etag, &last_modified));
    }
    assert!(if_range_allows(Some(&etag), &etag, &last_modified));
    assert!(if_range_allows(Some(&last_modified), &etag, &last_modified));
    let _ = if_range_allows(req.if_range.as_deref(), &etag, &last_modified);
    if let Some(inm) = &req.if_none_match {
        let _ = etag_matches(inm, &etag);
    }
    if let Some(ims) = &req.if_modified_since {
        let _ = not_modified_since(ims, mtime);
    }
}

/// A normalized path joined onto a root stays under it: relative, plain names only.
fn check_safe_path(rel: &str) {
    assert!(!rel.is_empty());
    assert!(rel.len() <= MAX_REQUEST_PATH_BYTES);
    assert!(!rel.starts_with('/'), "{rel:?} is absolute");
    assert!(
        !rel.contains(['\0', '\\']),
        "{rel:?} has NUL or a backslash"
    );
    for segment in rel.split('/') {
        assert!(
            !matches!(segment, "" | "." | ".."),
            "{rel:?} has segment {segment:?}"
        );
    }
    let root = Path::new("/srv/published");
    let joined = root.join(rel);
    assert!(joined.starts_with(root));
    assert!(
        Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{rel:?} has a component that is not a name"
    );
    // Normalizing again changes nothing.
    assert_eq!(normalize_plain_path(rel).as_deref(), Ok(rel));
}

/// A resolved range lies inside the resource; no Range header means the whole.
fn check_range(header: Option<&str>, size: u64) -> RangeSpec {
    let spec = resolve_range(header, size);
    match spec {
        RangeSpec::Full => {}
        RangeSpec::Partial {
            start,
            end_inclusive,
        } => {
            assert!(header.is_some());
            assert!(
                start <= end_inclusive && end_inclusive < size,
                "range {start}-{end_inclusive} outside a {size}-byte file"
            );
        }
        RangeSpec::Unsatisfiable => assert!(header.is_some()),
    }
    spec
}

// ---------------------------------------------------------------------------------
// HTTP connection
// ---------------------------------------------------------------------------------

/// One HTTP connection as the server runs it, without the socket: bytes arrive in
/// data-derived chunks into a buffer, heads are parsed off its front as they complete
/// (pipelining), each is answered, and the connection ends at an error, at a request
/// that does not keep it alive, or when the bytes run out. Whatever the chunking, the
/// requests and the ending must be those of parsing the whole stream at once; every
/// response head the server would write parses as HTTP and states a Content-Length
/// (and Content-Range) that matches what it sends.
///
/// Input: byte 0 the chunk size, bytes 1..9 the served file's size, byte 9
/// its mtime and version seed; the rest is the stream.
pub fn http_connection(data: &[u8]) {
    let mut input = Input::new(data);
    // 1..=32 bytes, or multiples of 32 up to 7 KiB: re-parsing a growing head after
    // every 1-byte read is quadratic, so long heads get larger chunks.
    let chunk = match input.u8() {
        b @ 0..32 => usize::from(b) + 1,
        b => usize::from(b - 31) * 32,
    };
    let size = input.u64() % (MAX_FILE_BYTES + 1);
    let seed = input.u8();
    let stream = input.data;
    let file = SyntheticFile {
        size,
        version: u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        mtime: i64::from(seed) * 86_400 * 97,
        is_cache: seed & 1 == 1,
        allowed_hosts: seed & 2 == 2,
    };
    let chunked = serve_connection(stream, chunk, &file);
    let whole = serve_connection(stream, stream.len().max(1), &file);
    assert_eq!(chunked, whole, "the connection depends on how bytes arrive");
}

struct SyntheticFile {
    size: u64,
    version: u64,
    mtime: i64,
    /// Served by a cache (a file's identity is its URL).
    is_cache: bool,
    /// `-A cdn.example.com`.
    allowed_hosts: bool,
}

/// How a simulated connection went: each request's response (status, body length),
/// then how it ended.
#[derive(Debug, PartialEq)]
struct ConnectionLog {
    responses: Vec<(u16, u64)>,
    ended: Ending,
}

#[derive(Debug, PartialEq)]
enum Ending {
    /// Out of bytes with `n` buffered (an incomplete head, or nothing).
    Eof(usize),
    /// A request without keep-alive was answered.
    Close,
    /// A bad head was answered with this status.
    Error(u16),
    /// The request cap of this simulation was reached.
    Cap,
}

/// The server's read loop (`server::http::serve`) over `stream` delivered in `chunk`
/// byte pieces.
fn serve_connection(stream: &[u8], chunk: usize, file: &SyntheticFile) -> ConnectionLog {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut responses = Vec::new();
    let ended = loop {
        if responses.len() >= 64 {
            break Ending::Cap;
        }
        match parse_request(&buf) {
            Ok(Some((req, head_len))) => {
                let _ = buf.split_to(head_len);
                let keep_alive = req.keep_alive();
                responses.push(respond(&req, keep_alive, file));
                if !keep_alive {
                    break Ending::Close;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                let status = e.status();
                check_error_response(&e, status);
                break Ending::Error(status);
            }
        }
        if fed == stream.len() {
            break Ending::Eof(buf.len());
        }
        let n = chunk.min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
    };
    ConnectionLog { responses, ended }
}

/// The head the server writes for a parse error, as `serve` writes it.
fn check_error_response(e: &HttpError, status: u16) {
    let mut out = BytesMut::new();
    write_error(&mut out, status, &e.to_string(), false, false);
    let (got, len, _) = parse_response(&out);
    assert_eq!(got, status);
    let head_len = out.len() - len as usize;
    assert!(out[head_len..].starts_with(status.to_string().as_bytes()));
}

/// The answer `server::http::respond` gives a request for `file` (published under
/// every path; on a cache, `is_cache`, under every URL): the node's own pure rules,
/// `http::plan::route` and `http::plan::file_answer`, with every head checked as a
/// client would read it. Returns (status, body bytes).
fn respond(req: &Request, keep_alive: bool, file: &SyntheticFile) -> (u16, u64) {
    use crate::pure::http::plan::{file_answer, method_not_allowed, route, FileFacts, Route};
    check_request(req, file.size);
    let head_only = matches!(req.method, Method::Head);
    let allowed = if file.allowed_hosts {
        vec!["cdn.example.com".to_string()]
    } else {
        vec![]
    };
    let (host, path) = match route(req, file.is_cache, &allowed) {
        Route::MethodNotAllowed => {
            let out = method_not_allowed(keep_alive);
            let (status, len, _) = parse_response(&out);
            assert_eq!(status, 405);
            return (405, len);
        }
        Route::Error { status, message } => {
            return error_response(status, message, keep_alive, head_only)
        }
        // Operator endpoints are answered by the node itself (no file).
        Route::Operator(op) => {
            assert!(req.path().ends_with(op));
            return (200, 0);
        }
        Route::File {
            host,
            path,
            head_only: h,
            ..
        } => {
            assert_eq!(h, head_only);
            (host, path)
        }
    };
    check_safe_path(&path);
    assert!(
        !file.is_cache || !host.is_empty(),
        "a cache file without a host"
    );
    if file.allowed_hosts {
        assert!(host.eq_ignore_ascii_case("cdn.example.com"));
    }
    let facts = FileFacts {
        size: file.size,
        version: file.version,
        mtime_unix_secs: file.mtime,
        content_type: content_type_for(&path),
    };
    let answer = file_answer(req, &facts, keep_alive, head_only);
    let (status, length, content_range) = parse_response(&answer.head);
    assert_eq!(status, answer.status);
    match status {
        304 => assert!(answer.body.is_none()),
        416 => {
            assert!(answer.body.is_none());
            assert_eq!(content_range, Some(format!("bytes */{}", file.size)));
        }
        200 | 206 => {
            // The stated length is the body's, also for HEAD (which sends none).
            let (start, end_excl) = match &answer.body {
                Some(r) => (r.start, r.end),
                None => {
                    assert!(head_only || length == 0);
                    return (status, 0);
                }
            };
            assert!(start < end_excl && end_excl <= file.size);
            assert_eq!(length, end_excl - start);
            match (status, content_range) {
                (200, None) => assert_eq!((start, end_excl), (0, file.size)),
                (206, Some(cr)) => {
                    let (span, total) = cr
                        .strip_prefix("bytes ")
                        .and_then(|r| r.split_once('/'))
                        .expect("Content-Range is bytes a-b/size");
                    let (a, b) = span.split_once('-').expect("a-b");
                    let (a, b): (u64, u64) =
                        (a.parse().expect("a number"), b.parse().expect("a number"));
                    assert_eq!(
                        (a, b + 1, total),
                        (start, end_excl, file.size.to_string().as_str())
                    );
                }
                other => panic!("status and Content-Range disagree: {other:?}"),
            }
        }
        other => panic!("a file answered {other}"),
    }
    (status, answer.body.map_or(0, |r| r.end - r.start))
}

/// A complete error response's head must parse; returns (status, body bytes).
fn error_response(status: u16, msg: &str, keep_alive: bool, head_only: bool) -> (u16, u64) {
    let mut out = BytesMut::new();
    write_error(&mut out, status, msg, keep_alive, head_only);
    let (got, len, _) = parse_response(&out);
    assert_eq!(got, status);
    (status, if head_only { 0 } else { len })
}

/// Parses a response head (and checks any body that follows has the stated length):
/// (status, Content-Length, Content-Range).
fn parse_response(bytes: &[u8]) -> (u16, u64, Option<String>) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("response head does not parse: {other:?}"),
    };
    let status = resp.code.expect("a status");
    let mut length = None;
    let mut range = None;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).expect("header values are text");
        if h.name.eq_ignore_ascii_case("content-length") {
            assert!(length.is_none(), "two Content-Lengths");
            length = Some(value.parse::<u64>().expect("Content-Length is a number"));
        } else if h.name.eq_ignore_ascii_case("content-range") {
            range = Some(value.to_string());
        }
    }
    let body = (bytes.len() - head_len) as u64;
    let length = match (status, length) {
        (304, None) => 0,
        (416, None) => 0,
        (_, Some(n)) => n,
        (s, None) => panic!("{s} response without Content-Length"),
    };
    assert!(
        body == 0 || body == length,
        "body of {body} bytes, stated {length}"
    );
    (status, length, range)
}

// ---------------------------------------------------------------------------------
// p2p registry
// ---------------------------------------------------------------------------------

/// Subnets the registry target draws its `-N` locality from.
const SUBNETS: [&str; 5] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "192.168.0.0/16",
    "fd00::/8",
    "2001:db8::/32",
];

/// The p2p registry driven by a sequence of operations read from the input: Have,
/// Holdings, Locate, PeerReport, expiry, removals and time passing (forwards only),
/// with peers of both families and IPv4-mapped IPv6 addresses. Most inputs make the
/// registry's bounds (files, peers per file, bans) small, so the code that makes room
/// runs often; the rest keep the real ones. After every operation its bounds must hold; every Locate answer is bounded, nearest first, within
/// the asked span, free of the requester, of removed and banned peers and of silent
/// ones, keeps `-N` sites apart (an IPv4-mapped address counts as its IPv4 address) and
/// encodes as a Locate frame.
pub fn registry(data: &[u8]) {
    let mut input = Input::new(data);
    let expiry = match input.u8() % 4 {
        0 => registry::PEER_EXPIRY,
        1 => Duration::from_secs(1),
        2 => Duration::from_millis(1000 + u64::from(input.u32())),
        _ => Duration::from_millis(1000 + u64::from(input.u16())),
    };
    let locality: Vec<ipnet::IpNet> = {
        let pick = input.u8();
        SUBNETS
            .iter()
            .enumerate()
            .filter(|(i, _)| pick & (1 << i) != 0)
            .map(|(_, s)| s.parse().expect("valid subnet"))
            .collect()
    };
    let start = Instant::now();
    let mut now = start;
    let (small, banned) = (input.u8(), input.u8());
    let bounds = if small >= 0xc0 {
        Bounds::default()
    } else {
        Bounds {
            files: usize::from(small & 7) + 1,
            peers_per_file: usize::from(small >> 3 & 7) + 1,
            banned: usize::from(banned & 15) + 1,
        }
    };
    let mut reg = Registry::with_bounds(expiry, bounds);
    let mut model = Model {
        expiry,
        bounds,
        ..Model::default()
    };
    // Ops are at least one byte each; the cap bounds the work of long inputs.
    for _ in 0..512 {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        match op % 10 {
            0 | 1 => {
                let file = file_of(input.u8());
                let peer = model.peer(&mut input);
                let ranges = ranges_of(&mut input);
                let replace = op % 10 == 1;
                let accepted = if replace {
                    reg.holdings(file, peer, &ranges, now)
                } else {
                    reg.have(file, peer, &ranges, now)
                };
                model.recorded(file, peer, &ranges, accepted, now, replace);
            }
            2 | 3 => {
                let file = file_of(input.u8());
                let requester = model.ip(&mut input);
                let first = input.u64() % MAX_BLOCKS_PER_FILE;
                let count = match input.u8() % 3 {
                    0 => u64::from(input.u8()) + 1,
                    1 => u64::from(input.u32()) + 1,
                    _ => MAX_BLOCKS_PER_FILE,
                }
                .min(MAX_BLOCKS_PER_FILE - first);
                let answer = reg.locate(file, first, count, requester, &locality, now);
                model.check_locate(&answer, file, first, count, requester, &locality, now);
            }
            4 => {
                let file = file_of(input.u8());
                let peer = model.peer(&mut input);
                let problem = if input.u8() & 1 == 0 {
                    PeerProblem::Unreachable
                } else {
                    PeerProblem::BadData
                };
                let (files, peers) = (reg.files(), reg.peers());
                let listed = model.listed(file, peer);
                let removed = reg.report(file, peer, problem, now);
                if !removed {
                    // Reports about peers not listed change nothing.
                    assert_eq!((reg.files(), reg.peers()), (files, peers));
                    assert!(!listed, "a listed peer's report was ignored");
                } else {
                    model.reported(peer, problem, now);
                }
            }
            5 => {
                reg.expire(now);
                model.expired(now);
            }
            6 | 7 => {
                let ms = match input.u8() % 4 {
                    0 => u64::from(input.u8()),
                    1 => u64::from(input.u16()),
                    2 => expiry.as_millis() as u64,
                    _ => u64::from(input.u32()),
                };
                now += Duration::from_millis(ms);
            }
            8 => {
                let peer = model.peer(&mut input);
                reg.remove_peer(peer);
                model.forget(peer);
            }
            _ => {
                // A little time passes.
                now += Duration::from_millis(u64::from(input.u8()) * 10);
            }
        }
        if let Err(e) = reg.check_bounds() {
            panic!("registry out of its bounds after op {op}: {e}");
        }
        assert!(reg.files() <= registry::MAX_FILES);
        assert!(reg.banned(now) <= registry::MAX_BANNED);
    }
}

/// A small set of file versions, so operations meet.
fn file_of(b: u8) -> registry::FileVersion {
    (u64::from(b % 6), u64::from(b / 6 % 2))
}

/// Up to 8 ranges, each valid on the wire (count >= 1, ending by MAX_BLOCKS_PER_FILE),
/// mostly small so they touch and merge.
fn ranges_of(input: &mut Input<'_>) -> Vec<BlockRange> {
    let n = input.u8();
    let many = n >= 250;
    let n = if many { 80 } else { usize::from(n % 9) };
    (0..n)
        .map(|i| {
            let (start, count) = if many {
                (i as u64 * 3 + u64::from(input.u8() % 2), 1)
            } else {
                match input.u8() % 4 {
                    0 => (u64::from(input.u8()), u64::from(input.u8() % 16) + 1),
                    1 => (u64::from(input.u16()), u64::from(input.u16()) + 1),
                    2 => (input.u64() % MAX_BLOCKS_PER_FILE, u64::MAX),
                    _ => (input.u64() % MAX_BLOCKS_PER_FILE, input.u64()),
                }
            };
            let count = count.clamp(1, MAX_BLOCKS_PER_FILE - start);
            BlockRange { start, count }
        })
        .collect()
}

/// What the target knows about the registry's contents, from the operations it made.
#[derive(Default)]
struct Model {
    expiry: Duration,
    /// Per file version and peer: when it last reported blocks that were recorded.
    seen: HashMap<SocketAddr, HashMap<registry::FileVersion, Instant>>,
    /// Peers removed by a report and not recorded since.
    removed: HashSet<SocketAddr>,
    /// Reported peers and until when their reports are refused.
    bans: HashMap<SocketAddr, Instant>,
    /// Every address used, so later operations can name them again.
    addrs: Vec<SocketAddr>,
    bounds: Bounds,
    /// A bound was passed: the registry may have dropped entries or bans the model
    /// still has.
    overflowed: bool,
}

impl Model {
    /// An address: a fresh one of some family, or one used before.
    fn ip(&mut self, input: &mut Input<'_>) -> IpAddr {
        let tag = input.u8();
        let v4 = |a: [u8; 2]| Ipv4Addr::new(10, a[0] % 3, 0, a[1] % 8);
        match tag % 8 {
            0 => IpAddr::V4(v4(input.bytes())),
            1 => IpAddr::V6(v4(input.bytes()).to_ipv6_mapped()),
            2 => IpAddr::V4(Ipv4Addr::new(192, 168, 0, input.u8() % 8)),
            3 => IpAddr::V6(Ipv6Addr::new(
                0xfd00,
                0,
                0,
                0,
                0,
                0,
                0,
                u16::from(input.u8() % 8),
            )),
            4 => IpAddr::V4(Ipv4Addr::from(input.bytes::<4>())),
            5 => IpAddr::V6(Ipv6Addr::from(input.bytes::<16>())),
            _ => match self.addrs.len() {
                0 => IpAddr::V4(Ipv4Addr::LOCALHOST),
                n => {
                    let a = self.addrs[usize::from(input.u8()) % n].ip();
                    // The same host in the other form, sometimes.
                    match (a, tag & 0x80 != 0) {
                        (IpAddr::V4(v4), true) => IpAddr::V6(v4.to_ipv6_mapped()),
                        (IpAddr::V6(v6), true) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
                        _ => a,
                    }
                }
            },
        }
    }

    /// A peer's SPP address: mostly one used before, so reports meet listed peers.
    fn peer(&mut self, input: &mut Input<'_>) -> SocketAddr {
        let pick = input.u8();
        if pick < 160 && !self.addrs.is_empty() {
            return self.addrs[usize::from(pick) % self.addrs.len()];
        }
        let addr = SocketAddr::new(self.ip(input), 7000 + u16::from(input.u8() % 3));
        if self.addrs.len() < 64 {
            self.addrs.push(addr);
        }
        addr
    }

    fn banned(&self, peer: SocketAddr, now: Instant) -> bool {
        self.bans.get(&peer).is_some_and(|&until| until > now)
    }

    fn recorded(
        &mut self,
        file: registry::FileVersion,
        peer: SocketAddr,
        ranges: &[BlockRange],
        accepted: bool,
        now: Instant,
        replace: bool,
    ) {
        // A report within its ban is refused, unless the ban list overflowed (then
        // the ban that ended first was dropped, which the model does not follow).
        if self.banned(peer, now) && !self.overflowed {
            assert!(!accepted, "a banned peer's report was recorded");
        }
        if !self.banned(peer, now) {
            assert!(accepted, "a report of a peer not banned was refused");
        }
        if !accepted {
            return;
        }
        let files = self.seen.entry(peer).or_default();
        if replace {
            files.remove(&file);
        }
        if !ranges.is_empty() {
            files.insert(file, now);
            self.removed.remove(&peer);
        }
        // Past a bound the registry made room (dropped a file or a file's oldest
        // peer): from then on the model no longer knows exactly what it lists.
        let files: HashSet<_> = self.seen.values().flat_map(HashMap::keys).collect();
        let peers_of_file = self.seen.values().filter(|f| f.contains_key(&file)).count();
        self.overflowed |=
            files.len() > self.bounds.files || peers_of_file > self.bounds.peers_per_file;
        if self.seen.get(&peer).is_some_and(HashMap::is_empty) {
            self.seen.remove(&peer);
        }
    }

    /// Whether the registry must list `peer` for `file`: it was recorded and not
    /// removed since, and no bound has made the registry drop entries (which the model
    /// does not follow).
    fn listed(&self, file: registry::FileVersion, peer: SocketAddr) -> bool {
        !self.overflowed && self.seen.get(&peer).is_some_and(|f| f.contains_key(&file))
    }

    fn reported(&mut self, peer: SocketAddr, problem: PeerProblem, now: Instant) {
        let periods = match problem {
            PeerProblem::Unreachable => 1,
            PeerProblem::BadData => registry::BAD_DATA_BAN_EXPIRIES,
        };
        let until = now + self.expiry * periods;
        let e = self.bans.entry(peer).or_insert(until);
        *e = (*e).max(until);
        self.overflowed |= self.bans.len() > self.bounds.banned;
        self.removed.insert(peer);
        self.seen.remove(&peer);
    }

    fn expired(&mut self, now: Instant) {
        let expiry = self.expiry;
        self.bans.retain(|_, until| *until > now);
        for files in self.seen.values_mut() {
            files.retain(|_, at| now.saturating_duration_since(*at) < expiry);
        }
        self.seen.retain(|_, files| !files.is_empty());
    }

    fn forget(&mut self, peer: SocketAddr) {
        self.seen.remove(&peer);
    }

    #[allow(clippy::too_many_arguments)]
    fn check_locate(
        &self,
        answer: &[crate::pure::protocol::Location],
        file: registry::FileVersion,
        first: u64,
        count: u64,
        requester: IpAddr,
        locality: &[ipnet::IpNet],
        now: Instant,
    ) {
        assert!(answer.len() <= registry::MAX_PEERS_PER_ANSWER);
        assert!(answer.len() <= MAX_LOCATIONS);
        let requester = requester.to_canonical();
        let site = locality.iter().find(|n| n.contains(&requester));
        let end = first + count;
        let mut addrs = HashSet::new();
        let mut last_prefix = u32::MAX;
        for loc in answer {
            let ip = loc.addr.ip().to_canonical();
            assert!(addrs.insert(loc.addr), "{} twice in one answer", loc.addr);
            assert_ne!(ip, requester, "the requester {requester} is handed itself");
            assert!(
                !self.removed.contains(&loc.addr),
                "removed {} handed out",
                loc.addr
            );
            // (Unless the ban list overflowed: then a ban was dropped to make room.)
            assert!(
                self.overflowed || !self.banned(loc.addr, now),
                "banned {} handed out",
                loc.addr
            );
            let seen = self.seen.get(&loc.addr).and_then(|f| f.get(&file));
            assert!(
                seen.is_some_and(|&at| now.saturating_duration_since(at) < self.expiry),
                "{} handed out but not heard from within the expiry",
                loc.addr
            );
            match site {
                Some(n) => assert!(n.contains(&ip), "{ip} handed across sites to {requester}"),
                None => assert!(
                    !locality.iter().any(|n| n.contains(&ip)),
                    "site peer {ip} handed to {requester} outside every site"
                ),
            }
            let prefix = registry::common_prefix(requester, ip);
            assert!(prefix <= last_prefix, "answer is not nearest first");
            last_prefix = prefix;
            let Holds::Ranges(ranges) = &loc.holds else {
                panic!("a peer holds ranges, not the whole file");
            };
            assert!(!ranges.is_empty() && ranges.len() <= registry::MAX_RANGES_PER_PEER);
            let mut prev_end = None;
            for r in ranges {
                assert!(r.count >= 1 && r.start >= first && r.start + r.count <= end);
                assert!(
                    prev_end.is_none_or(|p| p < r.start),
                    "ranges not disjoint/sorted"
                );
                prev_end = Some(r.start + r.count);
            }
        }
        let frame = Frame::Locate(Locate {
            req_id: 1,
            locations: answer.to_vec(),
        });
        let mut out = BytesMut::new();
        encode(&frame, &mut out).expect("a Locate answer encodes");
    }
}

// ---------------------------------------------------------------------------------
// SPP session (the serving side's connection rules)
// ---------------------------------------------------------------------------------

/// A file as the session sees it: (version, blocks).
#[derive(Clone, Debug, PartialEq)]
struct SessionFile(u64, u64);

impl crate::pure::protocol::session::SessionFile for SessionFile {
    fn version(&self) -> u64 {
        self.0
    }
    fn block_count(&self) -> u64 {
        self.1
    }
    fn same(&self, other: &Self) -> bool {
        self == other
    }
}

/// Characters of 1 to 4 bytes, to build hosts and paths whose quoted forms are cut at
/// every byte of a character.
const WIDE: [&str; 5] = ["a", "é", "€", "😀", "/"];

/// A string of `len` (up to `max`) characters picked by the input.
fn wide_text(inp: &mut Input<'_>, max: usize) -> String {
    let len = usize::from(inp.u16()) % (max + 1);
    let kind = inp.u8();
    let mut s = String::new();
    while s.len() < len {
        let c = if kind < 64 {
            WIDE[usize::from(kind) % WIDE.len()]
        } else {
            WIDE[usize::from(inp.u8()) % WIDE.len()]
        };
        if s.len() + c.len() > max {
            break;
        }
        s.push_str(c);
    }
    s
}

/// One client frame built from the input (structure-aware, so that deep states are
/// reached), if it is one the encoder accepts (so one a server can receive).
fn session_frame(inp: &mut Input<'_>, handles: u32) -> Option<Frame> {
    use crate::pure::protocol::limits::{MAX_HOST_BYTES, MAX_PATH_BYTES};
    use crate::pure::protocol::{
        FileRef, Get, Have, Hello, InfoRequest, LocateRequest, PeerReport, Role,
    };
    let handle = |inp: &mut Input<'_>| u32::from(inp.u8()) % (handles + 2);
    let f = match inp.u8() % 12 {
        0 => Frame::Hello(Hello {
            version: u16::from(inp.u8() % 3),
            role: Role::Client,
            listen_port: inp.u16(),
            capabilities: inp.u32(),
        }),
        1..=3 => Frame::InfoRequest(InfoRequest {
            req_id: u32::from(inp.u8()),
            file: FileRef {
                host: wide_text(inp, MAX_HOST_BYTES),
                port: inp.u16(),
                path: wide_text(inp, MAX_PATH_BYTES),
            },
            digest_start: u64::from(inp.u16()),
            digest_count: inp.u32(),
        }),
        4 => Frame::LocateRequest(LocateRequest {
            req_id: u32::from(inp.u8()),
            handle: handle(inp),
            first_block: u64::from(inp.u16()),
            block_count: u64::from(inp.u8()) + 1,
        }),
        5 | 6 => Frame::Get(Get {
            req_id: u32::from(inp.u8()),
            handle: handle(inp),
            version: u64::from(inp.u8() % 3),
            first_block: u64::from(inp.u16()),
            block_count: u32::from(inp.u8()) + 1,
        }),
        7 => Frame::Cancel {
            req_id: u32::from(inp.u8()),
        },
        8 => {
            let h = Have {
                handle: handle(inp),
                version: u64::from(inp.u8() % 3),
                ranges: (0..inp.u8() % 4)
                    .map(|_| BlockRange {
                        start: u64::from(inp.u16()),
                        count: u64::from(inp.u8()) + 1,
                    })
                    .collect(),
            };
            if inp.u8().is_multiple_of(2) {
                Frame::Have(h)
            } else {
                Frame::Holdings(h)
            }
        }
        9 => Frame::PeerReport(PeerReport {
            handle: handle(inp),
            version: u64::from(inp.u8() % 3),
            problem: if inp.u8().is_multiple_of(2) {
                PeerProblem::Unreachable
            } else {
                PeerProblem::BadData
            },
            peer: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, inp.u8() % 4)), 1111),
        }),
        10 => Frame::Ping(inp.u64()),
        _ => Frame::Locate(Locate {
            req_id: 1,
            locations: vec![],
        }),
    };
    // Only frames that can be on the wire (the decoder, fuzzed on its own by
    // `spp_decode`, gives back exactly what encodes).
    crate::pure::protocol::encoded_payload_len(&f).ok()?;
    Some(f)
}

/// The serving side's SPP rules (`protocol::session`) driven by generated frames, for
/// an origin, a cache whose requester may make it fetch, and one whose requester may
/// not, with and without `-A` and `-i`; hosts and paths of every length up to the
/// protocol's limits in characters of 1 to 4 bytes. A simulated driver resolves Info
/// requests (files named "a" and "b" exist; others are refused quoting the URL, as
/// `content::Refusal` does), finishes Gets and answers at input-chosen moments.
/// Every frame the session asks to send must encode (error messages cut on a
/// character boundary), nothing is answered before the Hello exchange, nothing after
/// a close, and the per-connection bounds (outstanding requests, handles, handed-out
/// peers, counted reports) hold after every step.
pub fn spp_session(data: &[u8]) {
    use crate::error::Refusal;
    use crate::pure::protocol::session::{
        Event, Session, SessionConfig, MAX_HANDED_OUT, MAX_HANDLES_PER_CONNECTION,
        MAX_REPORTS_PER_CONNECTION,
    };
    use crate::pure::protocol::{ErrorFrame, Hello, Role, PROTOCOL_VERSION};
    let mut inp = Input::new(data);
    let mode = inp.u8();
    // 0: origin; 1: cache, requester may fetch; 2: cache, remote requester.
    let role = mode % 3;
    let config = SessionConfig {
        hello: Hello {
            version: PROTOCOL_VERSION,
            role: if role == 0 { Role::Origin } else { Role::Lhc },
            listen_port: 1111,
            capabilities: 0,
        },
        allowed_hosts: if mode & 4 != 0 {
            vec!["cdn.example.com".into()]
        } else {
            vec![]
        },
        p2p: mode & 8 != 0,
    };
    let mut s: Session<SessionFile> =
        Session::new(config, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)));
    // Requests the simulated driver still has to finish: Gets (req_id) and answers.
    let mut gets: Vec<u32> = Vec::new();
    let mut answers = 0usize;
    let check_sendable = |f: &Frame| {
        let mut out = BytesMut::new();
        assert!(
            encode(f, &mut out).is_ok(),
            "the session asked to send {f:?}, which does not encode"
        );
    };
    let mut steps = 0;
    while !inp.is_empty() && steps < 4096 {
        steps += 1;
        let was_open = s.is_open();
        // Sometimes the driver catches up first: answers written, Gets finished.
        match inp.u8() % 8 {
            0 if answers > 0 => {
                answers -= 1;
                s.answer_done();
            }
            1 if !gets.is_empty() => {
                let id = gets.remove(0);
                if inp.u8().is_multiple_of(4) {
                    s.get_failed(id);
                    assert!(s.is_stopped(id));
                }
                s.finish_get(id);
            }
            2 => s.handed(
                (0..inp.u8() % 4)
                    .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)), 1111)),
            ),
            _ => {}
        }
        let Some(frame) = session_frame(&mut inp, s.handles() as u32) else {
            continue;
        };
        let is_hello = matches!(frame, Frame::Hello(_));
        match s.on_frame(frame) {
            Event::Nothing => {}
            Event::Send(f) => {
                check_sendable(&f);
                if let Frame::Hello(h) = &f {
                    assert!(!was_open && is_hello && h.version >= 1);
                } else {
                    assert!(was_open, "answered before the Hello exchange: {f:?}");
                }
            }
            Event::SendAndClose(f) => {
                check_sendable(&f);
                assert!(matches!(f, Frame::Error(_)));
                assert!(s.is_closed());
            }
            Event::Resolve {
                req_id,
                host,
                port,
                path,
                digest_count,
                ..
            } => {
                assert!(was_open);
                assert!(digest_count <= crate::pure::protocol::limits::MAX_DIGESTS_PER_INFO);
                assert!(!path.contains("..") && !path.contains('\0'));
                let found = match (role, path.as_str()) {
                    (2, _) => Err(Refusal::Forbidden(format!(
                        "{host}:{port}/{path} is not cached here, and this node fetches only for its own clients"
                    ))),
                    (_, "a") => Ok(SessionFile(1, 16)),
                    (_, "b") => Ok(SessionFile(2, 4096)),
                    _ => Err(Refusal::NotFound(format!("{host}:{port}/{path}"))),
                };
                let found = found.map_err(|r| {
                    Frame::Error(ErrorFrame::new(req_id, r.spp_code(), r.to_string()))
                });
                if let Err(f) = &found {
                    check_sendable(f);
                }
                match s.info_resolved(req_id, found) {
                    Ok(h) => assert!((h as usize) < s.handles()),
                    Err(f) => check_sendable(&f),
                }
                answers += 1;
            }
            Event::Locate { .. } => answers += 1,
            Event::Stream {
                req_id,
                file,
                first,
                count,
            } => {
                assert!(first + u64::from(count) <= file.1);
                gets.push(req_id);
            }
            Event::Have { ranges, .. } => {
                assert!(ranges.len() <= MAX_RANGES);
            }
            Event::Report { .. } => {
                if inp.u8().is_multiple_of(2) {
                    s.report_counted();
                }
            }
        }
        assert!(s.outstanding() <= crate::pure::protocol::limits::MAX_OUTSTANDING_REQUESTS);
        assert_eq!(s.outstanding(), gets.len() + answers);
        assert!(s.handles() <= MAX_HANDLES_PER_CONNECTION);
        assert!(s.handed_out_count() <= MAX_HANDED_OUT);
        assert!(s.reports_counted() <= MAX_REPORTS_PER_CONNECTION);
        if s.is_closed() {
            // Nothing more is looked at.
            let later = session_frame(&mut inp, 0).map(|f| s.on_frame(f));
            assert!(matches!(later, None | Some(Event::Nothing)));
            break;
        }
    }
}
