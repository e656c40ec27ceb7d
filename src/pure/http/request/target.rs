//! Request targets: origin-form (`/path?query`) and absolute-form
//! (`http://host[:port]/path`) taken apart; other forms are refused.

use super::{
    authority::parse_authority,
    error::{malformed, HttpError},
    head::Target,
};

/// Splits a request target into origin-form or absolute-form. Asterisk-form ("*", for
/// OPTIONS) and authority-form (for CONNECT) are not served and so are Malformed.
pub(super) fn parse_target(raw: &str) -> Result<Target, HttpError> {
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
