//! Response heads and small bodies: status lines, headers, error responses, media
//! types, validators (ETag, dates), conditional-request checks and the `-T` playlist.
//!
//! Pure code: no I/O. The only clock read is the `Date` header in [`write_head`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};

/// Media type of the `-T` playlist, which lists an SPP URL and an HTTP fallback.
pub const PLAYLIST_CONTENT_TYPE: &str = "application/x-spp-playlist";

/// Media type for anything we cannot name.
const OCTET_STREAM: &str = "application/octet-stream";

/// Media type of the bodies of [`write_error`].
const ERROR_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// Seconds from the Unix epoch to 10000-01-01T00:00:00Z. httpdate panics at or past
/// this instant (IMF-fixdate has four-digit years), so later times are clamped below it.
const HTTP_DATE_LIMIT_UNIX_SECS: u64 = 253_402_300_800;

/// The standard reason phrase for `status`, or "Unknown" for codes we do not know.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Appends text to a head with CR and LF removed. Header values sometimes come from
/// file names or upstream responses; a stray line break there would let them inject
/// headers or a whole response, so it is dropped rather than trusted.
fn put_header_text(out: &mut BytesMut, text: &str) {
    if text.bytes().any(|b| b == b'\r' || b == b'\n') {
        for b in text.bytes().filter(|&b| b != b'\r' && b != b'\n') {
            out.put_u8(b);
        }
    } else {
        out.put_slice(text.as_bytes());
    }
}

fn put_header(out: &mut BytesMut, name: &str, value: &str) {
    put_header_text(out, name);
    out.put_slice(b": ");
    put_header_text(out, value);
    out.put_slice(b"\r\n");
}

/// Appends "HTTP/1.1 {status} {reason}\r\n", a "Server: p2pd/<CARGO_PKG_VERSION>" and
/// "Date:" header, the given headers, "Connection: keep-alive|close", and the final
/// "\r\n" to `out`.
pub fn write_head(out: &mut BytesMut, status: u16, headers: &[(&str, &str)], keep_alive: bool) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.to_string().as_bytes());
    out.put_u8(b' ');
    out.put_slice(reason_phrase(status).as_bytes());
    out.put_slice(b"\r\n");
    put_header(out, "Server", concat!("p2pd/", env!("CARGO_PKG_VERSION")));
    put_header(out, "Date", &http_date(SystemTime::now()));
    for (name, value) in headers {
        put_header(out, name, value);
    }
    put_header(
        out,
        "Connection",
        if keep_alive { "keep-alive" } else { "close" },
    );
    out.put_slice(b"\r\n");
}

/// A complete short error response: text/plain body `<status> <reason>: <message>\n`
/// with Content-Length. For HEAD (`head_only`) no body but the same Content-Length.
pub fn write_error(
    out: &mut BytesMut,
    status: u16,
    message: &str,
    keep_alive: bool,
    head_only: bool,
) {
    write_error_with_headers(out, status, message, &[], keep_alive, head_only);
}

/// [`write_error`] with extra headers, for errors that need one: `Content-Range` on
/// 416, `Allow` on 405.
pub fn write_error_with_headers(
    out: &mut BytesMut,
    status: u16,
    message: &str,
    extra_headers: &[(&str, &str)],
    keep_alive: bool,
    head_only: bool,
) {
    let body = format!("{status} {}: {message}\n", reason_phrase(status));
    let length = body.len().to_string();
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(extra_headers.len() + 2);
    headers.push(("Content-Type", ERROR_CONTENT_TYPE));
    headers.push(("Content-Length", &length));
    headers.extend_from_slice(extra_headers);
    write_head(out, status, &headers, keep_alive);
    if !head_only {
        out.put_slice(body.as_bytes());
    }
}

/// Media type from the file extension via mime_guess, with the video/audio/playlist
/// types CDNs serve made right (mime_guess lacks some and names others differently
/// from what players expect); unknown -> application/octet-stream.
pub fn content_type_for(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some((_, ext)) = name.rsplit_once('.') else {
        return OCTET_STREAM;
    };
    if ext.is_empty() {
        return OCTET_STREAM;
    }
    const OVERRIDES: &[(&str, &str)] = &[
        ("mpg", "video/mpeg"),
        ("mpeg", "video/mpeg"),
        ("mp4", "video/mp4"),
        ("m4v", "video/mp4"),
        ("ts", "video/mp2t"),
        ("m3u8", "application/vnd.apple.mpegurl"),
        ("mpd", "application/dash+xml"),
        ("mkv", "video/x-matroska"),
        ("webm", "video/webm"),
        ("mov", "video/quicktime"),
        ("avi", "video/x-msvideo"),
        ("mp3", "audio/mpeg"),
        ("m4a", "audio/mp4"),
        ("flv", "video/x-flv"),
    ];
    if let Some((_, mime)) = OVERRIDES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(ext))
    {
        return mime;
    }
    mime_guess::from_ext(ext)
        .first_raw()
        .unwrap_or(OCTET_STREAM)
}

/// Strong ETag from the content version: "\"<16 lowercase hex digits>\"".
pub fn etag_for(version: u64) -> String {
    format!("\"{version:016x}\"")
}

/// IMF-fixdate via httpdate ("Sun, 06 Nov 1994 08:49:37 GMT"). Times before 1970 or
/// after 9999 (a file's mtime can be anything) are clamped, since httpdate cannot
/// represent them and would panic.
pub fn http_date(t: SystemTime) -> String {
    let latest = UNIX_EPOCH + Duration::from_secs(HTTP_DATE_LIMIT_UNIX_SECS - 1);
    let clamped = t.clamp(UNIX_EPOCH, latest);
    httpdate::fmt_http_date(clamped)
}

/// The opaque tags of an entity-tag list ("W/" prefixes removed), in order. Parsing
/// stops at the first element that is not an entity-tag, since the rest of a broken
/// list cannot be trusted.
fn entity_tags(list: &str) -> impl Iterator<Item = &str> {
    let mut rest = list;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let unprefixed = rest.strip_prefix("W/").unwrap_or(rest);
        let quoted = unprefixed.strip_prefix('"')?;
        let close = quoted.find('"')?;
        let tag = &quoted[..close];
        rest = &quoted[close + 1..];
        Some(tag)
    })
}

/// If-None-Match matching (weak comparison, "*" and comma lists): true when the
/// request's list names our `etag`, so the answer is 304 (or 412 for unsafe methods).
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if if_none_match.trim_matches([' ', '\t']) == "*" {
        return true;
    }
    let Some(ours) = entity_tags(etag).next() else {
        return false;
    };
    entity_tags(if_none_match).any(|theirs| theirs == ours)
}

/// If-Modified-Since: true when the resource is NOT modified since the given date
/// (seconds resolution). Unparseable date -> false, so the full response is sent.
pub fn not_modified_since(if_modified_since: &str, last_modified_unix_secs: i64) -> bool {
    let Ok(since) = httpdate::parse_http_date(if_modified_since.trim_matches([' ', '\t'])) else {
        return false;
    };
    let Ok(since) = since.duration_since(UNIX_EPOCH) else {
        return false;
    };
    let Ok(since_secs) = i64::try_from(since.as_secs()) else {
        return false;
    };
    last_modified_unix_secs <= since_secs
}

/// The -T playlist body (PLS): the SPP URL first for clients that speak SPP, then the
/// HTTP URL as a fallback.
pub fn playlist_body(spp_url: &str, http_url: &str, length_bytes: u64) -> String {
    format!(
        "[playlist]\nnumberofentries=2\n\
         File1={spp_url}\nTitle1=spp url, for supporting clients\nLength1={length_bytes}\n\
         File2={http_url}\nTitle2=http fallback url\nLength2={length_bytes}\n\
         Version=2\n"
    )
}

/// "bytes start-end/size", the Content-Range of a 206.
pub fn content_range(start: u64, end_inclusive: u64, size: u64) -> String {
    format!("bytes {start}-{end_inclusive}/{size}")
}

/// "bytes */size", the Content-Range of a 416.
pub fn content_range_unsatisfied(size: u64) -> String {
    format!("bytes */{size}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(out: &BytesMut) -> &str {
        std::str::from_utf8(out).expect("heads are ASCII")
    }

    #[test]
    fn head_layout() {
        let mut out = BytesMut::new();
        write_head(
            &mut out,
            206,
            &[("Content-Length", "10"), ("Content-Range", "bytes 0-9/100")],
            true,
        );
        let head = text(&out);
        assert!(head.starts_with("HTTP/1.1 206 Partial Content\r\n"));
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(
            lines[1],
            concat!("Server: p2pd/", env!("CARGO_PKG_VERSION"))
        );
        assert!(lines[2].starts_with("Date: "));
        assert!(lines[2].ends_with(" GMT"));
        assert_eq!(lines[3], "Content-Length: 10");
        assert_eq!(lines[4], "Content-Range: bytes 0-9/100");
        assert_eq!(lines[5], "Connection: keep-alive");
        assert!(head.ends_with("Connection: keep-alive\r\n\r\n"));
        assert_eq!(head.matches("\r\n\r\n").count(), 1);

        let mut out = BytesMut::new();
        write_head(&mut out, 200, &[], false);
        assert!(text(&out).ends_with("\r\nConnection: close\r\n\r\n"));
    }

    #[test]
    fn header_injection_is_defused() {
        let mut out = BytesMut::new();
        write_head(&mut out, 200, &[("X-Name", "a\r\nSet-Cookie: x")], true);
        let head = text(&out);
        assert!(head.contains("X-Name: aSet-Cookie: x\r\n"));
        assert!(!head.contains("\r\nSet-Cookie"));
    }

    #[test]
    fn error_responses() {
        let mut out = BytesMut::new();
        write_error(&mut out, 404, "no such file", true, false);
        let response = text(&out);
        let body = "404 Not Found: no such file\n";
        assert!(response.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(response.contains("Content-Type: text/plain; charset=utf-8\r\n"));
        assert!(response.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(response.ends_with(&format!("Connection: keep-alive\r\n\r\n{body}")));

        let mut head = BytesMut::new();
        write_error(&mut head, 404, "no such file", false, true);
        let head = text(&head);
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(head.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn error_with_extra_headers() {
        let mut out = BytesMut::new();
        let range = content_range_unsatisfied(100);
        write_error_with_headers(
            &mut out,
            416,
            "range outside the file",
            &[("Content-Range", &range)],
            true,
            false,
        );
        let response = text(&out);
        assert!(response.starts_with("HTTP/1.1 416 Range Not Satisfiable\r\n"));
        assert!(response.contains("Content-Range: bytes */100\r\n"));
        assert!(response.ends_with("416 Range Not Satisfiable: range outside the file\n"));
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(304), "Not Modified");
        assert_eq!(reason_phrase(416), "Range Not Satisfiable");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(505), "HTTP Version Not Supported");
        assert_eq!(reason_phrase(999), "Unknown");
    }

    #[test]
    fn media_types() {
        for (path, mime) in [
            ("a.mpg", "video/mpeg"),
            ("a.mpeg", "video/mpeg"),
            ("dir/a.MP4", "video/mp4"),
            ("a.m4v", "video/mp4"),
            ("seg/001.ts", "video/mp2t"),
            ("index.m3u8", "application/vnd.apple.mpegurl"),
            ("manifest.mpd", "application/dash+xml"),
            ("a.mkv", "video/x-matroska"),
            ("a.webm", "video/webm"),
            ("a.mov", "video/quicktime"),
            ("a.avi", "video/x-msvideo"),
            ("a.mp3", "audio/mpeg"),
            ("a.m4a", "audio/mp4"),
            ("a.flv", "video/x-flv"),
            ("index.html", "text/html"),
            ("a.json", "application/json"),
            ("noext", OCTET_STREAM),
            ("trailingdot.", OCTET_STREAM),
            ("dir.d/noext", OCTET_STREAM),
            ("a.unknownext", OCTET_STREAM),
            ("", OCTET_STREAM),
        ] {
            assert_eq!(content_type_for(path), mime, "{path}");
        }
    }

    #[test]
    fn etags() {
        assert_eq!(etag_for(0), "\"0000000000000000\"");
        assert_eq!(etag_for(0xabc), "\"0000000000000abc\"");
        assert_eq!(etag_for(u64::MAX), "\"ffffffffffffffff\"");
    }

    #[test]
    fn etag_matching() {
        let etag = etag_for(7);
        assert!(etag_matches("*", &etag));
        assert!(etag_matches(" * ", &etag));
        assert!(etag_matches(&etag, &etag));
        assert!(etag_matches("W/\"0000000000000007\"", &etag));
        assert!(etag_matches("\"a\", \"0000000000000007\"", &etag));
        assert!(etag_matches("\"a\",W/\"0000000000000007\"", &etag));
        assert!(etag_matches(
            "\"0000000000000007\"",
            "W/\"0000000000000007\""
        ));
        assert!(!etag_matches("\"0000000000000008\"", &etag));
        assert!(!etag_matches("", &etag));
        assert!(!etag_matches("0000000000000007", &etag));
        assert!(!etag_matches("\"0000000000000007", &etag));
        // A comma inside a tag is part of the tag, not a separator.
        assert!(etag_matches("\"a,b\", \"0000000000000007\"", &etag));
        assert!(!etag_matches("\"a,\"0000000000000007\"", &etag));
    }

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        // Out-of-range times are clamped, not a panic.
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(http_date(before), "Thu, 01 Jan 1970 00:00:00 GMT");
        let after = UNIX_EPOCH + Duration::from_secs(HTTP_DATE_LIMIT_UNIX_SECS + 10);
        assert_eq!(http_date(after), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn modified_since() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert!(not_modified_since(date, 784_111_777));
        assert!(not_modified_since(date, 784_111_776));
        assert!(not_modified_since(date, -5));
        assert!(!not_modified_since(date, 784_111_778));
        assert!(not_modified_since(
            "Sunday, 06-Nov-94 08:49:37 GMT",
            784_111_777
        ));
        assert!(not_modified_since("Sun Nov  6 08:49:37 1994", 784_111_777));
        assert!(!not_modified_since("yesterday", 0));
        assert!(!not_modified_since("", 0));
    }

    #[test]
    fn playlist() {
        assert_eq!(
            playlist_body("spp://h:1/a.mp4", "http://h:2/a.mp4", 1234),
            "[playlist]\nnumberofentries=2\nFile1=spp://h:1/a.mp4\nTitle1=spp url, for supporting clients\nLength1=1234\nFile2=http://h:2/a.mp4\nTitle2=http fallback url\nLength2=1234\nVersion=2\n"
        );
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range(0, 9, 100), "bytes 0-9/100");
        assert_eq!(content_range(99, 99, 100), "bytes 99-99/100");
        assert_eq!(content_range_unsatisfied(0), "bytes */0");
    }

    proptest! {
        #[test]
        fn arbitrary_conditionals_never_panic(value in any::<String>(), secs in any::<i64>()) {
            let _ = etag_matches(&value, &etag_for(1));
            let _ = not_modified_since(&value, secs);
            let _ = content_type_for(&value);
        }

        #[test]
        fn any_time_formats(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            if let Some(t) = UNIX_EPOCH.checked_add(Duration::new(secs, nanos)) {
                let formatted = http_date(t);
                prop_assert!(httpdate::parse_http_date(&formatted).is_ok());
            }
        }
    }
}
