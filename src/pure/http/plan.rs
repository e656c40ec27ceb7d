//! What an HTTP request gets, decided without I/O: which of the node's answers a
//! request head leads to ([`route`]) and, for a file, the response head and the byte
//! range of its body ([`file_answer`]). `server::http` drives these with sockets and
//! the node's files; the fuzzer (`fuzzing::http_connection`) drives them with
//! generated requests.

use std::ops::Range;
use std::time::{Duration, UNIX_EPOCH};

use bytes::BytesMut;

use super::range::{if_range_allows, resolve_range, RangeSpec};
use super::request::{Method, Request, Target};
use super::response::{
    content_range, content_range_unsatisfied, etag_for, etag_matches, http_date,
    not_modified_since, write_error, write_head,
};
use crate::pure::pathsafe::{normalize_request_path, PathError};

/// The port an http:// URL or Host header without one names.
pub const HTTP_DEFAULT_PORT: u16 = 80;

/// What the node answers a request head with.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'r> {
    /// An error status and its message (the connection stays open if keep-alive).
    Error { status: u16, message: &'static str },
    /// 405, with an Allow header.
    MethodNotAllowed,
    /// An operator endpoint under `/_p2pd/` (the rest of the path).
    Operator(&'r str),
    /// The file `host:port/path` (`path` normalized; `host` empty on an origin
    /// without one), with or without its body.
    File {
        host: String,
        port: u16,
        path: String,
        head_only: bool,
    },
}

/// How the node routes a request: whether it is a cache (a file's identity is its
/// URL, so a host is needed; operator endpoints only in origin form), and `-A`.
pub fn route<'r>(req: &'r Request, is_cache: bool, allowed_hosts: &[String]) -> Route<'r> {
    let head_only = match &req.method {
        Method::Get => false,
        Method::Head => true,
        Method::Other(_) => return Route::MethodNotAllowed,
    };
    let raw_path = req.path();
    // RFC 9112 section 3.2: an HTTP/1.1 request in origin form without Host is a 400.
    if req.minor_version >= 1 && req.host.is_none() && matches!(req.target, Target::Origin { .. }) {
        return Route::Error {
            status: 400,
            message: "HTTP/1.1 requests need a Host header",
        };
    }
    // Operator endpoints are the node's own: on a cache only in origin form, so a
    // proxy request for another node's /_p2pd/ path is proxied like any file.
    let own_target = matches!(req.target, Target::Origin { .. }) || !is_cache;
    if let Some(op) = raw_path.strip_prefix("/_p2pd/").filter(|_| own_target) {
        return Route::Operator(op);
    }
    let authority = req.authority();
    let allowed = |h: &str| allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(h));
    if !allowed_hosts.is_empty() && !authority.as_ref().is_some_and(|(h, _)| allowed(h)) {
        return Route::Error {
            status: 403,
            message: "this host is not served here",
        };
    }
    let path = match normalize_request_path(raw_path) {
        Ok(p) => p,
        Err(PathError::Escape) | Err(PathError::Nul) => {
            return Route::Error {
                status: 400,
                message: "bad path",
            }
        }
        Err(_) => {
            return Route::Error {
                status: 404,
                message: "not found",
            }
        }
    };
    // The file's identity is the URL's: the proxy request's absolute target, else the
    // Host header (a missing port is HTTP's default, 80). An origin ignores the host.
    let (host, port) = match authority {
        Some((h, p)) => (h, p.unwrap_or(HTTP_DEFAULT_PORT)),
        None if is_cache => {
            return Route::Error {
                status: 400,
                message: "a cache needs the file's host: send a Host header or an absolute URL",
            }
        }
        None => (String::new(), HTTP_DEFAULT_PORT),
    };
    Route::File {
        host,
        port,
        path,
        head_only,
    }
}

/// What [`file_answer`] needs to know of a file.
#[derive(Clone, Debug)]
pub struct FileFacts<'a> {
    pub size: u64,
    pub version: u64,
    pub mtime_unix_secs: i64,
    pub content_type: &'a str,
}

/// A file's response: its head (a 416's short body included) and the bytes of the
/// file its body carries (`None`: no body to stream).
#[derive(Debug)]
pub struct FileAnswer {
    pub status: u16,
    pub head: BytesMut,
    pub body: Option<Range<u64>>,
}

/// The response to a GET or HEAD of a file: 304 for a conditional request that
/// matches, 206 for a satisfiable single range (unless If-Range says the file
/// changed), 416 for an unsatisfiable one, else 200.
pub fn file_answer(
    req: &Request,
    f: &FileFacts<'_>,
    keep_alive: bool,
    head_only: bool,
) -> FileAnswer {
    let size = f.size;
    let etag = etag_for(f.version);
    let mtime = u64::try_from(f.mtime_unix_secs).unwrap_or(0);
    let last_modified = http_date(UNIX_EPOCH + Duration::from_secs(mtime));
    let common = [
        ("ETag", etag.as_str()),
        ("Last-Modified", last_modified.as_str()),
        ("Accept-Ranges", "bytes"),
    ];
    let not_modified = match (&req.if_none_match, &req.if_modified_since) {
        (Some(inm), _) => etag_matches(inm, &etag),
        (None, Some(ims)) => not_modified_since(ims, f.mtime_unix_secs),
        _ => false,
    };
    let mut head = BytesMut::with_capacity(512);
    if not_modified {
        write_head(&mut head, 304, &common, keep_alive);
        return FileAnswer {
            status: 304,
            head,
            body: None,
        };
    }
    let range = if if_range_allows(req.if_range.as_deref(), &etag, &last_modified) {
        resolve_range(req.range.as_deref(), size)
    } else {
        RangeSpec::Full
    };
    let (status, start, end_excl, crange) = match range {
        RangeSpec::Full => (200, 0, size, None),
        RangeSpec::Partial {
            start,
            end_inclusive,
        } => (
            206,
            start,
            end_inclusive.saturating_add(1),
            Some(content_range(start, end_inclusive, size)),
        ),
        RangeSpec::Unsatisfiable => {
            let cr = content_range_unsatisfied(size);
            let body = "416 Range Not Satisfiable\n";
            let len = body.len().to_string();
            let mut h = common.to_vec();
            h.extend([
                ("Content-Range", cr.as_str()),
                ("Content-Type", "text/plain"),
                ("Content-Length", len.as_str()),
            ]);
            write_head(&mut head, 416, &h, keep_alive);
            if !head_only {
                head.extend_from_slice(body.as_bytes());
            }
            return FileAnswer {
                status: 416,
                head,
                body: None,
            };
        }
    };
    let len = end_excl.saturating_sub(start).to_string();
    let mut h = common.to_vec();
    h.extend([
        ("Content-Type", f.content_type),
        ("Content-Length", len.as_str()),
    ]);
    if let Some(cr) = &crange {
        h.push(("Content-Range", cr.as_str()));
    }
    write_head(&mut head, status, &h, keep_alive);
    let body = (!head_only && start < end_excl).then_some(start..end_excl);
    FileAnswer { status, head, body }
}

/// The 405 response (with Allow).
pub fn method_not_allowed(keep_alive: bool) -> BytesMut {
    let mut out = BytesMut::new();
    let body = "405 Method Not Allowed: only GET and HEAD\n";
    let len = body.len().to_string();
    write_head(
        &mut out,
        405,
        &[
            ("Allow", "GET, HEAD"),
            ("Content-Type", "text/plain"),
            ("Content-Length", &len),
        ],
        keep_alive,
    );
    out.extend_from_slice(body.as_bytes());
    out
}

/// An error response.
pub fn error_answer(status: u16, msg: &str, keep_alive: bool, head_only: bool) -> BytesMut {
    let mut out = BytesMut::new();
    write_error(&mut out, status, msg, keep_alive, head_only);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::http::request::parse_request;

    fn req(raw: &str) -> Request {
        parse_request(raw.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn routes_follow_the_role_and_the_host_rules() {
        let r = req("GET /_p2pd/health HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(route(&r, true, &[]), Route::Operator("health"));
        // A proxy request for another node's operator path is a file on a cache.
        let r = req("GET http://cdn:8080/_p2pd/metrics HTTP/1.1\r\n\r\n");
        assert!(matches!(
            route(&r, true, &[]),
            Route::File { port: 8080, .. }
        ));
        assert_eq!(route(&r, false, &[]), Route::Operator("metrics"));
        let r = req("GET /a.mp4 HTTP/1.1\r\n\r\n");
        assert!(matches!(
            route(&r, false, &[]),
            Route::Error { status: 400, .. }
        ));
        let r = req("GET /a.mp4 HTTP/1.0\r\n\r\n");
        assert!(matches!(
            route(&r, true, &[]),
            Route::Error { status: 400, .. }
        ));
        assert!(matches!(route(&r, false, &[]), Route::File { .. }));
        let r = req("HEAD /a/../../x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(matches!(
            route(&r, false, &[]),
            Route::Error { status: 400, .. }
        ));
        let r = req("DELETE /a HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(route(&r, false, &[]), Route::MethodNotAllowed);
        let allowed = vec!["cdn.example.com".to_string()];
        let r = req("GET /a HTTP/1.1\r\nHost: other\r\n\r\n");
        assert!(matches!(
            route(&r, false, &allowed),
            Route::Error { status: 403, .. }
        ));
        let r = req("HEAD /a HTTP/1.1\r\nHost: CDN.example.com\r\n\r\n");
        match route(&r, true, &allowed) {
            Route::File {
                host,
                port,
                path,
                head_only,
            } => {
                assert_eq!(
                    (host.as_str(), port, path.as_str(), head_only),
                    ("cdn.example.com", 80, "a", true)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_answers_carry_the_range_their_head_states() {
        let f = FileFacts {
            size: 1000,
            version: 7,
            mtime_unix_secs: 1_700_000_000,
            content_type: "video/mp4",
        };
        let a = file_answer(
            &req("GET / HTTP/1.1\r\nHost: h\r\nRange: bytes=100-199\r\n\r\n"),
            &f,
            true,
            false,
        );
        assert_eq!((a.status, a.body), (206, Some(100..200)));
        let head = String::from_utf8(a.head.to_vec()).unwrap();
        assert!(
            head.contains("Content-Range: bytes 100-199/1000")
                && head.contains("Content-Length: 100")
        );
        let a = file_answer(
            &req("GET / HTTP/1.1\r\nHost: h\r\nRange: bytes=5000-\r\n\r\n"),
            &f,
            true,
            false,
        );
        assert_eq!((a.status, a.body), (416, None));
        let a = file_answer(&req("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n"), &f, true, true);
        assert_eq!((a.status, a.body), (200, None));
        let etag = etag_for(7);
        let a = file_answer(
            &req(&format!(
                "GET / HTTP/1.1\r\nHost: h\r\nIf-None-Match: {etag}\r\n\r\n"
            )),
            &f,
            true,
            false,
        );
        assert_eq!((a.status, a.body), (304, None));
        let empty = FileFacts { size: 0, ..f };
        let a = file_answer(
            &req("GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
            &empty,
            true,
            false,
        );
        assert_eq!((a.status, a.body), (200, None));
    }
}
