//! Request heads: parsing one HTTP/1.x request head (with httparse) into a [`Request`]
//! holding only what p2pd acts on, and the errors that map to 400, 431 and 505.
//!
//! Pure code: no I/O. Nothing here panics on input; every malformed head becomes an
//! [`HttpError`] the server turns into a short error response.

use httparse::Status;

/// Largest request head, in bytes, that we buffer. A head still incomplete at this size
/// is answered with 431; honest players and proxies send a few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most header fields accepted in one request head; more is answered with 431.
pub const MAX_HEADERS: usize = 64;

/// Longest port number, in digits, accepted in a Host header or absolute target.
const MAX_PORT_DIGITS: usize = 5;

/// The request method. Only GET and HEAD are served; anything else is kept by name so
/// the server can answer 405/501 and log what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other(String),
}

/// The request target, in the two forms p2pd accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// "/path?query" (path still percent-encoded)
    Origin { path: String, query: Option<String> },
    /// `http://host[:port]/path?query` as sent to a proxy (port None when absent).
    ///
    /// `scheme` is always "http" (lowercase); `host` is lowercased with IPv6 brackets
    /// removed; `path` is still percent-encoded and is "/" when the target had none.
    Absolute {
        scheme: String,
        host: String,
        port: Option<u16>,
        path: String,
        query: Option<String>,
    },
}

/// One parsed request head: the fields p2pd acts on, nothing more.
///
/// Header fields that may repeat (Range, If-None-Match, ...) are combined with ", " in
/// the order received, as RFC 9110 section 5.3 describes; for fields that are not lists
/// the combined value is then simply invalid and treated as such by its consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub target: Target,
    pub minor_version: u8,
    /// Host header value as sent (surrounding whitespace removed).
    pub host: Option<String>,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    /// "Connection: close" present (token list, case-insensitive).
    pub connection_close: bool,
    /// "Connection: keep-alive" present.
    pub connection_keep_alive: bool,
    pub content_length: Option<u64>,
    pub chunked: bool,
}

impl Request {
    /// HTTP/1.1 keeps the connection unless "close"; HTTP/1.0 only with "keep-alive".
    pub fn keep_alive(&self) -> bool {
        if self.connection_close {
            return false;
        }
        self.minor_version >= 1 || self.connection_keep_alive
    }

    /// The query string contains the bare flag `name` (e.g. "direct" in "?direct" or
    /// "?a=1&direct"). "direct=1" does not count: a flag is a name alone.
    pub fn has_query_flag(&self, name: &str) -> bool {
        if name.is_empty() {
            return false;
        }
        let query = match &self.target {
            Target::Origin { query, .. } | Target::Absolute { query, .. } => query,
        };
        query
            .as_deref()
            .is_some_and(|q| q.split('&').any(|part| part == name))
    }

    /// Host name and port the request names: the absolute target's, else the Host
    /// header's (port None if absent). Lowercased host, IPv6 brackets removed.
    ///
    /// RFC 9112 section 3.2.2 says an absolute target wins over the Host header.
    pub fn authority(&self) -> Option<(String, Option<u16>)> {
        match &self.target {
            Target::Absolute { host, port, .. } => Some((host.clone(), *port)),
            Target::Origin { .. } => self.host.as_deref().and_then(parse_authority),
        }
    }

    /// The still-percent-encoded path of the target, whichever form it came in.
    pub fn path(&self) -> &str {
        match &self.target {
            Target::Origin { path, .. } | Target::Absolute { path, .. } => path,
        }
    }
}

/// Why a request head was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    /// Answered with 431.
    #[error("request head too large")]
    HeadTooLarge,
    /// Answered with 400.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// Answered with 505.
    #[error("unsupported HTTP version")]
    Version,
}

impl HttpError {
    /// The status code the server answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge => 431,
            HttpError::Malformed(_) => 400,
            HttpError::Version => 505,
        }
    }
}

fn malformed(why: &str) -> HttpError {
    HttpError::Malformed(why.to_string())
}

/// Parses one request head from the front of `buf` using httparse.
///
/// - `Ok(None)`: the head is incomplete; read more and call again.
/// - `Ok(Some((req, head_len)))`: the head is the first `head_len` bytes of `buf`; any
///   bytes after it belong to the next (pipelined) request.
/// - `Err(HeadTooLarge)` once `buf` holds [`MAX_HEAD_BYTES`] or more without a complete
///   head, or the head has more than [`MAX_HEADERS`] fields.
///
/// Requests with a body (content_length > 0 or any Transfer-Encoding) are Malformed for
/// GET/HEAD: this server never reads request bodies, and a body it did not read would be
/// taken for the next request (request smuggling). Duplicate Host or duplicate
/// Content-Length headers are Malformed for the same reason. Absolute targets with a
/// scheme other than http are Malformed.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
    // Parsing at most MAX_HEAD_BYTES bounds the work and makes the limit exact: a head
    // that only completes past the limit is reported as too large, never parsed.
    let window = &buf[..buf.len().min(MAX_HEAD_BYTES)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(window) {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) if buf.len() >= MAX_HEAD_BYTES => return Err(HttpError::HeadTooLarge),
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::Version) => return Err(HttpError::Version),
        // 431 is "Request Header Fields Too Large", which covers too many fields too.
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    let (Some(method), Some(raw_target), Some(minor_version)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        // httparse fills all three for a complete head; this is only defence in depth.
        return Err(malformed("incomplete request line"));
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_string()),
    };
    let target = parse_target(raw_target)?;

    let mut req = Request {
        method,
        target,
        minor_version,
        host: None,
        range: None,
        if_range: None,
        if_none_match: None,
        if_modified_since: None,
        connection_close: false,
        connection_keep_alive: false,
        content_length: None,
        chunked: false,
    };
    let mut transfer_codings: Vec<String> = Vec::new();
    let mut saw_transfer_encoding = false;

    for header in parsed.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            if req.host.is_some() {
                return Err(malformed("duplicate Host header"));
            }
            let value = header_text(header.value, "Host")?;
            // An empty Host is allowed (RFC 9112 section 3.2) but names nothing.
            if !value.is_empty() && parse_authority(value).is_none() {
                return Err(malformed("invalid Host header"));
            }
            req.host = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("content-length") {
            if req.content_length.is_some() {
                return Err(malformed("duplicate Content-Length header"));
            }
            let value = header_text(header.value, "Content-Length")?;
            req.content_length = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            saw_transfer_encoding = true;
            let value = header_text(header.value, "Transfer-Encoding")?;
            transfer_codings.extend(list_tokens(value).map(str::to_ascii_lowercase));
        } else if name.eq_ignore_ascii_case("connection") {
            let value = header_text(header.value, "Connection")?;
            for token in list_tokens(value) {
                if token.eq_ignore_ascii_case("close") {
                    req.connection_close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    req.connection_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("range") {
            combine(&mut req.range, header_text(header.value, "Range")?);
        } else if name.eq_ignore_ascii_case("if-range") {
            combine(&mut req.if_range, header_text(header.value, "If-Range")?);
        } else if name.eq_ignore_ascii_case("if-none-match") {
            combine(
                &mut req.if_none_match,
                header_text(header.value, "If-None-Match")?,
            );
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            combine(
                &mut req.if_modified_since,
                header_text(header.value, "If-Modified-Since")?,
            );
        }
    }

    if saw_transfer_encoding {
        // Both length mechanisms at once is the classic smuggling vector (RFC 9112
        // section 6.1 allows rejecting it), and HTTP/1.0 has no Transfer-Encoding.
        if req.content_length.is_some() {
            return Err(malformed("both Transfer-Encoding and Content-Length"));
        }
        if minor_version == 0 {
            return Err(malformed("Transfer-Encoding in an HTTP/1.0 request"));
        }
        // Without chunked as the final coding the body length cannot be known
        // (RFC 9112 section 6.3), so the connection could not be kept in sync.
        if transfer_codings.last().map(String::as_str) != Some("chunked") {
            return Err(malformed("Transfer-Encoding does not end in chunked"));
        }
        req.chunked = true;
    }
    let has_body = req.chunked || req.content_length.is_some_and(|n| n > 0);
    if has_body && matches!(req.method, Method::Get | Method::Head) {
        return Err(malformed("request bodies are not accepted"));
    }
    Ok(Some((req, head_len)))
}

/// A header value as text, surrounding whitespace removed. Values we act on must be
/// UTF-8 (in practice ASCII); obs-text in them is refused rather than guessed at.
fn header_text<'a>(value: &'a [u8], name: &str) -> Result<&'a str, HttpError> {
    std::str::from_utf8(value)
        .map(|v| v.trim_matches([' ', '\t']))
        .map_err(|_| HttpError::Malformed(format!("{name} header is not valid text")))
}

/// Appends a repeated header field's value the way RFC 9110 section 5.3 combines them.
fn combine(slot: &mut Option<String>, value: &str) {
    match slot {
        Some(existing) => {
            existing.push_str(", ");
            existing.push_str(value);
        }
        None => *slot = Some(value.to_string()),
    }
}

/// The non-empty elements of a comma-separated header list, whitespace removed.
fn list_tokens(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(|t| t.trim_matches([' ', '\t']))
        .filter(|t| !t.is_empty())
}

/// Content-Length is 1*DIGIT; signs, lists ("5, 5") and overflow are all refused since
/// a misread length desynchronises the connection.
fn parse_content_length(value: &str) -> Result<u64, HttpError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("invalid Content-Length"));
    }
    value
        .parse::<u64>()
        .map_err(|_| malformed("Content-Length out of range"))
}

/// Splits a request target into origin-form or absolute-form. Asterisk-form ("*", for
/// OPTIONS) and authority-form (for CONNECT) are not served and so are Malformed.
fn parse_target(raw: &str) -> Result<Target, HttpError> {
    // A fragment is never part of a request target (RFC 9112 section 3.2); a client
    // sending one is confused, and guessing what it meant gains nothing.
    if raw.contains('#') {
        return Err(malformed("fragment in request target"));
    }
    if raw.starts_with('/') {
        let (path, query) = split_query(raw);
        return Ok(Target::Origin { path, query });
    }
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Err(malformed("unsupported request target form"));
    };
    if !is_scheme(scheme) {
        return Err(malformed("invalid request target scheme"));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(malformed("only http:// absolute targets are accepted"));
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    if authority.contains('@') {
        // RFC 9110 section 4.2.4 deprecates userinfo in http URIs; it is mostly used to
        // disguise the real host.
        return Err(malformed("userinfo in request target"));
    }
    let Some((host, port)) = parse_authority(authority) else {
        return Err(malformed("invalid host in request target"));
    };
    let (path, query) = split_query(path_and_query);
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    Ok(Target::Absolute {
        scheme: "http".to_string(),
        host,
        port,
        path,
        query,
    })
}

fn split_query(s: &str) -> (String, Option<String>) {
    match s.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (s.to_string(), None),
    }
}

/// scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 3986 section 3.1).
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Parses `host`, `host:port`, `[v6]` or `[v6]:port` into a lowercased host without
/// brackets and an optional port. An empty port ("host:") means the default, as RFC
/// 3986 allows. Returns None for anything else, including an empty host.
fn parse_authority(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(bracketed) = s.strip_prefix('[') {
        let (inner, after) = bracketed.split_once(']')?;
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (inner, port)
    } else {
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if !host_ok {
            return None;
        }
        (host, port)
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(parse_port(p)?),
    };
    Some((host.to_ascii_lowercase(), port))
}

fn parse_port(p: &str) -> Option<u16> {
    if p.len() > MAX_PORT_DIGITS || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_ok(text: &str) -> (Request, usize) {
        match parse_request(text.as_bytes()) {
            Ok(Some(r)) => r,
            other => panic!("expected a request from {text:?}, got {other:?}"),
        }
    }

    fn parse_err(text: &str) -> HttpError {
        match parse_request(text.as_bytes()) {
            Err(e) => e,
            other => panic!("expected an error from {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn simple_get() {
        let text = "GET /movies/a%20b.mp4?direct HTTP/1.1\r\nHost: Example.COM:8080\r\nRange: bytes=0-99\r\n\r\n";
        let (req, len) = parse_ok(text);
        assert_eq!(len, text.len());
        assert_eq!(req.method, Method::Get);
        assert_eq!(
            req.target,
            Target::Origin {
                path: "/movies/a%20b.mp4".into(),
                query: Some("direct".into())
            }
        );
        assert_eq!(req.path(), "/movies/a%20b.mp4");
        assert_eq!(req.minor_version, 1);
        assert_eq!(req.host.as_deref(), Some("Example.COM:8080"));
        assert_eq!(req.range.as_deref(), Some("bytes=0-99"));
        assert_eq!(req.authority(), Some(("example.com".into(), Some(8080))));
        assert!(req.keep_alive());
        assert!(req.has_query_flag("direct"));
        assert!(!req.has_query_flag("dir"));
        assert!(!req.has_query_flag(""));
    }

    #[test]
    fn incomplete_heads_ask_for_more() {
        for text in [
            "",
            "GET",
            "GET / HTTP/1.1\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert_eq!(parse_request(text.as_bytes()), Ok(None), "{text:?}");
        }
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let first = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
        let second = "HEAD /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
        let buf = format!("{first}{second}");
        let (req, len) = parse_ok(&buf);
        assert_eq!(len, first.len());
        assert_eq!(req.path(), "/a");
        let (req2, len2) = parse_ok(&buf[len..]);
        assert_eq!(len2, second.len());
        assert_eq!(req2.method, Method::Head);
        assert_eq!(req2.path(), "/b");
        assert!(!req2.keep_alive());
    }

    #[test]
    fn absolute_form_with_and_without_port() {
        let (req, _) =
            parse_ok("GET http://Origin.Example:8081/v/a.mp4?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(
            req.target,
            Target::Absolute {
                scheme: "http".into(),
                host: "origin.example".into(),
                port: Some(8081),
                path: "/v/a.mp4".into(),
                query: Some("x=1".into()),
            }
        );
        assert_eq!(req.authority(), Some(("origin.example".into(), Some(8081))));
        assert_eq!(req.path(), "/v/a.mp4");

        let (req, _) = parse_ok("GET HTTP://origin.example/a.mp4 HTTP/1.1\r\n\r\n");
        assert_eq!(req.authority(), Some(("origin.example".into(), None)));
        assert_eq!(req.path(), "/a.mp4");

        let (req, _) = parse_ok("GET http://origin.example HTTP/1.1\r\n\r\n");
        assert_eq!(req.path(), "/");
        let (req, _) = parse_ok("GET http://origin.example?direct HTTP/1.1\r\n\r\n");
        assert_eq!(req.path(), "/");
        assert!(req.has_query_flag("direct"));
        let (req, _) = parse_ok("GET http://origin.example:/a HTTP/1.1\r\n\r\n");
        assert_eq!(req.authority(), Some(("origin.example".into(), None)));
        let (req, _) = parse_ok("GET http://[::1]:9000/a HTTP/1.1\r\n\r\n");
        assert_eq!(req.authority(), Some(("::1".into(), Some(9000))));
    }

    #[test]
    fn bad_absolute_targets() {
        for target in [
            "https://origin/a",
            "ftp://origin/a",
            "http:///a",
            "http://user@origin/a",
            "http://origin:99999/a",
            "http://origin:8x/a",
            "http://[::1/a",
            "http://[zz]/a",
            "1http://origin/a",
            "origin.example:443",
            "*",
            "/a#frag",
        ] {
            let err = parse_err(&format!("GET {target} HTTP/1.1\r\n\r\n"));
            assert!(matches!(err, HttpError::Malformed(_)), "{target}: {err:?}");
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn ipv6_host_header() {
        let (req, _) = parse_ok("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n");
        assert_eq!(req.host.as_deref(), Some("[::1]:8080"));
        assert_eq!(req.authority(), Some(("::1".into(), Some(8080))));
        let (req, _) = parse_ok("GET / HTTP/1.1\r\nHost: [2001:DB8::1]\r\n\r\n");
        assert_eq!(req.authority(), Some(("2001:db8::1".into(), None)));
        let (req, _) = parse_ok("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        assert_eq!(req.authority(), Some(("127.0.0.1".into(), None)));
        let (req, _) = parse_ok("GET / HTTP/1.1\r\nHost:\r\n\r\n");
        assert_eq!(req.host.as_deref(), Some(""));
        assert_eq!(req.authority(), None);
        let (req, _) = parse_ok("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(req.authority(), None);
    }

    #[test]
    fn bad_host_headers() {
        for host in ["[::1", "[::1]x", "a:b", "a b", "[]", "a:1:2", "a/b", "u@h"] {
            let err = parse_err(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
            assert!(matches!(err, HttpError::Malformed(_)), "{host}: {err:?}");
        }
    }

    #[test]
    fn duplicate_host_or_content_length() {
        let err = parse_err("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n");
        assert_eq!(err, HttpError::Malformed("duplicate Host header".into()));
        let err = parse_err("POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            err,
            HttpError::Malformed("duplicate Content-Length header".into())
        );
    }

    #[test]
    fn bodies_are_refused_on_get_and_head() {
        for text in [
            "GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "HEAD / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ] {
            assert_eq!(
                parse_err(text),
                HttpError::Malformed("request bodies are not accepted".into()),
                "{text:?}"
            );
        }
        let (req, _) = parse_ok("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(req.content_length, Some(0));
    }

    #[test]
    fn other_methods_report_their_body() {
        let (req, _) = parse_ok("POST /x HTTP/1.1\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(req.method, Method::Other("POST".into()));
        assert_eq!(req.content_length, Some(12));
        let (req, _) = parse_ok("PUT /x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert!(req.chunked);
        // Method names are case-sensitive (RFC 9110 section 9.1).
        let (req, _) = parse_ok("get / HTTP/1.1\r\n\r\n");
        assert_eq!(req.method, Method::Other("get".into()));
    }

    #[test]
    fn ambiguous_lengths_are_refused() {
        for text in [
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        ] {
            assert!(
                matches!(parse_err(text), HttpError::Malformed(_)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn connection_tokens_and_keep_alive() {
        let (req, _) = parse_ok("GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n");
        assert!(req.connection_close);
        assert!(!req.keep_alive());
        let (req, _) = parse_ok("GET / HTTP/1.0\r\n\r\n");
        assert!(!req.keep_alive());
        let (req, _) = parse_ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(req.connection_keep_alive);
        assert!(req.keep_alive());
        let (req, _) =
            parse_ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n");
        assert!(!req.keep_alive());
        let (req, _) = parse_ok("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n");
        assert!(req.keep_alive());
        // "closed" is not "close".
        let (req, _) = parse_ok("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n");
        assert!(req.keep_alive());
    }

    #[test]
    fn conditional_headers_and_repeats() {
        let (req, _) = parse_ok(
            "GET / HTTP/1.1\r\nIf-None-Match: \"a\"\r\nif-none-match: W/\"b\"\r\nIf-Range: \"x\"\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
        );
        assert_eq!(req.if_none_match.as_deref(), Some("\"a\", W/\"b\""));
        assert_eq!(req.if_range.as_deref(), Some("\"x\""));
        assert_eq!(
            req.if_modified_since.as_deref(),
            Some("Sun, 06 Nov 1994 08:49:37 GMT")
        );
        let (req, _) = parse_ok("GET / HTTP/1.1\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n");
        assert_eq!(req.range.as_deref(), Some("bytes=0-1, bytes=2-3"));
    }

    #[test]
    fn query_flags() {
        let (req, _) = parse_ok("GET /a?a=1&direct&b HTTP/1.1\r\n\r\n");
        assert!(req.has_query_flag("direct"));
        assert!(req.has_query_flag("b"));
        assert!(!req.has_query_flag("a"));
        let (req, _) = parse_ok("GET /a?direct=1 HTTP/1.1\r\n\r\n");
        assert!(!req.has_query_flag("direct"));
        let (req, _) = parse_ok("GET /a HTTP/1.1\r\n\r\n");
        assert!(!req.has_query_flag("direct"));
        let (req, _) = parse_ok("GET /a? HTTP/1.1\r\n\r\n");
        assert_eq!(
            req.target,
            Target::Origin {
                path: "/a".into(),
                query: Some(String::new())
            }
        );
    }

    #[test]
    fn versions() {
        assert_eq!(parse_err("GET / HTTP/2.0\r\n\r\n"), HttpError::Version);
        assert_eq!(parse_err("GET / HTTP/1.2\r\n\r\n"), HttpError::Version);
        assert_eq!(HttpError::Version.status(), 505);
        let (req, _) = parse_ok("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(req.minor_version, 0);
    }

    #[test]
    fn head_too_large() {
        let mut text = String::from("GET / HTTP/1.1\r\n");
        // One long field rather than many, so that MAX_HEADERS is not what trips.
        text.push_str("X-Filler: ");
        text.push_str(&"a".repeat(MAX_HEAD_BYTES));
        text.push_str("\r\n");
        assert_eq!(parse_err(&text), HttpError::HeadTooLarge);
        assert_eq!(HttpError::HeadTooLarge.status(), 431);
        // Just under the limit and incomplete: read more.
        assert_eq!(
            parse_request(&text.as_bytes()[..MAX_HEAD_BYTES - 1]),
            Ok(None)
        );
        // Complete, but only past the limit: still too large.
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse_err(&long), HttpError::HeadTooLarge);
        // Endless blank lines never complete a head.
        assert_eq!(
            parse_err(&"\r\n".repeat(MAX_HEAD_BYTES)),
            HttpError::HeadTooLarge
        );
    }

    #[test]
    fn too_many_headers() {
        let mut text = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            text.push_str(&format!("X-{i}: v\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(parse_err(&text), HttpError::HeadTooLarge);
    }

    #[test]
    fn garbage_and_obs_fold_are_errors() {
        for text in [
            "GET / HTTP/1.1\r\nX-A: a\r\n  folded\r\n\r\n",
            "GET / HTTP/1.1\r\n: novalue\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
            "\x00\x01\x02 / HTTP/1.1\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\n\r\n",
        ] {
            let result = parse_request(text.as_bytes());
            assert!(
                matches!(result, Err(HttpError::Malformed(_))),
                "{text:?}: {result:?}"
            );
        }
    }

    #[test]
    fn bare_lf_line_ends_are_tolerated() {
        // RFC 9112 section 2.2 lets a recipient accept a bare LF as a line terminator,
        // and httparse does.
        let text = "GET /a HTTP/1.1\nHost: a\n\nGET /b HTTP/1.1\n\n";
        let (req, len) = parse_ok(text);
        assert_eq!(req.path(), "/a");
        assert_eq!(len, "GET /a HTTP/1.1\nHost: a\n\n".len());
    }

    #[test]
    fn non_utf8_values_we_use_are_refused() {
        let mut text = b"GET / HTTP/1.1\r\nRange: bytes=\xff\r\n\r\n".to_vec();
        assert!(matches!(parse_request(&text), Err(HttpError::Malformed(_))));
        // ...but headers we ignore may carry obs-text.
        text = b"GET / HTTP/1.1\r\nX-Name: caf\xe9\r\n\r\n".to_vec();
        assert!(matches!(parse_request(&text), Ok(Some(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_request(&buf);
        }

        #[test]
        fn arbitrary_head_lines_never_panic(
            target in "[ -~]{0,40}",
            name in "[ -~]{0,20}",
            value in "[ -~\\x80-\\xff]{0,40}",
        ) {
            let text = format!("GET {target} HTTP/1.1\r\n{name}: {value}\r\nHost: {value}\r\n\r\n");
            if let Ok(Some((req, len))) = parse_request(text.as_bytes()) {
                prop_assert!(len <= text.len());
                let _ = req.authority();
                let _ = req.keep_alive();
                let _ = req.has_query_flag("direct");
            }
        }

        #[test]
        fn complete_head_len_is_within_the_buffer(extra in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
            let head = buf.len();
            buf.extend_from_slice(&extra);
            let parsed = parse_request(&buf);
            prop_assert!(matches!(parsed, Ok(Some((_, n))) if n == head));
        }
    }
}
