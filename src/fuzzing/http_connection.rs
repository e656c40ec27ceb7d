//! The `http_connection` fuzz target: one HTTP connection as the server runs it,
//! without the socket, against a synthetic file; responses are checked as HTTP.

use bytes::BytesMut;

use super::http_checks::{check_request, check_safe_path};
use super::input::Input;
use crate::pure::http::request::{parse_request, HttpError, Method, Request};
use crate::pure::http::response::{content_type_for, write_error};
use crate::pure::protocol::limits::MAX_FILE_BYTES;

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
