//! One parsed request head as p2pd keeps it: [`Request`], its [`Method`] and
//! [`Target`], and what the server asks of it (keep-alive, query flags, authority, path).

use super::authority::parse_authority;

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
