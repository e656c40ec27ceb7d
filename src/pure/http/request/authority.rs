//! Host and port as a Host header or an absolute target gives them: `host`,
//! `host:port`, `[v6]` or `[v6]:port`.

/// Longest port number, in digits, accepted in a Host header or absolute target.
const MAX_PORT_DIGITS: usize = 5;

/// Parses `host`, `host:port`, `[v6]` or `[v6]:port` into a lowercased host without
/// brackets and an optional port. An empty port ("host:") means the default, as RFC
/// 3986 allows. Returns None for anything else, including an empty host.
pub(super) fn parse_authority(s: &str) -> Option<(String, Option<u16>)> {
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
