//! Unit tests of request-head parsing: target forms, hosts, bodies and lengths refused,
//! keep-alive, conditionals, query flags, versions, the head's limits and malformed heads.

use proptest::prelude::*;

use super::{error::*, head::*, parse::*};

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
