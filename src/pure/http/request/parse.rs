//! [`parse_request`]: one request head from the front of a buffer (with httparse)
//! into a [`Request`], within the head's size and field-count limits.

use httparse::Status;

use super::{
    authority::parse_authority,
    error::{malformed, HttpError},
    head::{Method, Request},
    target::parse_target,
};

/// Largest request head, in bytes, that we buffer. A head still incomplete at this size
/// is answered with 431; honest players and proxies send a few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most header fields accepted in one request head; more is answered with 431.
pub const MAX_HEADERS: usize = 64;

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
