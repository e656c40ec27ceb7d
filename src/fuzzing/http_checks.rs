//! Checks shared by the HTTP fuzz targets (`http_request`, `http_connection`): what
//! the server derives from a parsed request (safe path, range), with its invariants.

use std::path::{Component, Path};
use std::time::{Duration, UNIX_EPOCH};

use crate::pure::http::range::{if_range_allows, resolve_range, RangeSpec};
use crate::pure::http::request::{Method, Request, Target};
use crate::pure::http::response::{
    content_type_for, etag_for, etag_matches, http_date, not_modified_since,
};
use crate::pure::pathsafe::{normalize_plain_path, normalize_request_path, MAX_REQUEST_PATH_BYTES};

/// What the server derives from one request, with its invariants.
pub(super) fn check_request(req: &Request, size: u64) {
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
pub(super) fn check_safe_path(rel: &str) {
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
