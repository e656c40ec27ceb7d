//! Path safety: turns request paths (HTTP, percent-encoded) and SPP paths (plain) into
//! relative paths that cannot leave the published directory.
//!
//! Pure code: no I/O. The result is only ever joined onto the published root by the
//! caller; this module guarantees the result has no `..` segment, no NUL byte, no
//! backslash, no leading `/` and no empty or `.` segments, so that join stays inside.

use percent_encoding::percent_decode_str;

/// Why a request path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path escapes the published directory")]
    Escape,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path is not valid UTF-8")]
    BadUtf8,
    #[error("empty path")]
    Empty,
    #[error("path too long")]
    TooLong,
}

/// Longest decoded path, in bytes, that we accept (the common `PATH_MAX` on Linux).
pub const MAX_REQUEST_PATH_BYTES: usize = 4096;

/// Longest still-encoded request path, in bytes: every decoded byte takes at most three
/// encoded bytes ("%xx"), so anything longer cannot decode to an acceptable path. Checking
/// this first bounds the work done on hostile input.
pub const MAX_ENCODED_REQUEST_PATH_BYTES: usize = 3 * MAX_REQUEST_PATH_BYTES;

/// Turns the path part of a request target (still percent-encoded, e.g.
/// "/movies/a%20b.mp4") into a relative path with '/' separators ("movies/a b.mp4"),
/// refusing anything that could escape the published directory.
///
/// The path is percent-decoded exactly once: "%252e%252e" becomes the literal name
/// "%2e%2e", which is harmless because nothing downstream decodes it again. The checks
/// for `..`, NUL and backslash run on the decoded text, so encoded forms ("%2e%2e",
/// "..%2f", "%00", "%5c") are caught as well as raw ones.
pub fn normalize_request_path(raw: &str) -> Result<String, PathError> {
    if raw.len() > MAX_ENCODED_REQUEST_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    let decoded: Vec<u8> = percent_decode_str(raw).collect();
    // NUL is checked on the bytes before the UTF-8 check so that "%00" is reported as
    // what it is, whatever else the path contains.
    if decoded.contains(&0) {
        return Err(PathError::Nul);
    }
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::BadUtf8)?;
    normalize_plain_path(&decoded)
}

/// Same as [`normalize_request_path`] for an already-decoded path (used by SPP, whose
/// paths are not percent-encoded).
pub fn normalize_plain_path(path: &str) -> Result<String, PathError> {
    if path.len() > MAX_REQUEST_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    // A backslash is a separator on Windows ("..\\secret"); refusing it outright is
    // simpler and safer than deciding when it is a harmless character in a name.
    if path.contains('\\') {
        return Err(PathError::Escape);
    }
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/') {
        match segment {
            // Empty segments come from a leading '/' or from "//"; "." names the same
            // directory. Both are dropped so the result is canonical.
            "" | "." => {}
            // Refused rather than resolved: resolving ".." against earlier segments
            // would be safe, but no honest client needs it and refusing is simpler to
            // reason about.
            ".." => return Err(PathError::Escape),
            name => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(name);
            }
        }
    }
    if out.is_empty() {
        return Err(PathError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_request_paths_decode() {
        assert_eq!(
            normalize_request_path("/movies/a%20b.mp4").as_deref(),
            Ok("movies/a b.mp4")
        );
        assert_eq!(normalize_request_path("/a.mp4").as_deref(), Ok("a.mp4"));
        assert_eq!(normalize_request_path("a.mp4").as_deref(), Ok("a.mp4"));
        assert_eq!(
            normalize_request_path("/caf%C3%A9/x").as_deref(),
            Ok("café/x")
        );
    }

    #[test]
    fn empty_and_dot_segments_are_dropped() {
        assert_eq!(
            normalize_request_path("//a///./b/.//c").as_deref(),
            Ok("a/b/c")
        );
        assert_eq!(normalize_request_path("/a/%2e/b").as_deref(), Ok("a/b"));
        assert_eq!(normalize_plain_path("./a/").as_deref(), Ok("a"));
    }

    #[test]
    fn empty_results_are_refused() {
        for raw in ["", "/", "//", "/./", "/%2e", "/%2F", "."] {
            assert_eq!(normalize_request_path(raw), Err(PathError::Empty), "{raw}");
        }
    }

    #[test]
    fn dot_dot_in_any_spelling_is_refused() {
        for raw in [
            "/..",
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/a/..",
            "..",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/.%2e/x",
            "/%2e./x",
            "/..%2fetc/passwd",
            "/a/..%2F..%2Fetc",
            "/%2e%2e%2f../x",
            "/a%2f%2e%2e%2fb",
        ] {
            assert_eq!(normalize_request_path(raw), Err(PathError::Escape), "{raw}");
        }
    }

    #[test]
    fn double_encoding_is_decoded_once_only() {
        assert_eq!(
            normalize_request_path("/%252e%252e/x").as_deref(),
            Ok("%2e%2e/x")
        );
        assert_eq!(
            normalize_request_path("/%252e%252e%252fetc").as_deref(),
            Ok("%2e%2e%2fetc")
        );
    }

    #[test]
    fn backslashes_are_refused() {
        for raw in ["/..\\etc", "/a\\b", "/a%5cb", "/a%5C..%5Cb"] {
            assert_eq!(normalize_request_path(raw), Err(PathError::Escape), "{raw}");
        }
        assert_eq!(normalize_plain_path("a\\b"), Err(PathError::Escape));
    }

    #[test]
    fn nul_is_refused() {
        assert_eq!(normalize_request_path("/a%00.mp4"), Err(PathError::Nul));
        assert_eq!(normalize_request_path("/a\0.mp4"), Err(PathError::Nul));
        assert_eq!(normalize_request_path("/%00%ff"), Err(PathError::Nul));
        assert_eq!(normalize_plain_path("a\0b"), Err(PathError::Nul));
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert_eq!(normalize_request_path("/a%ff"), Err(PathError::BadUtf8));
        assert_eq!(normalize_request_path("/%C3"), Err(PathError::BadUtf8));
    }

    #[test]
    fn malformed_escapes_stay_literal() {
        // percent-encoding leaves a '%' not followed by two hex digits as it is.
        assert_eq!(normalize_request_path("/a%zz").as_deref(), Ok("a%zz"));
        assert_eq!(normalize_request_path("/100%").as_deref(), Ok("100%"));
    }

    #[test]
    fn names_that_merely_contain_dots_are_fine() {
        assert_eq!(normalize_request_path("/...").as_deref(), Ok("..."));
        assert_eq!(normalize_request_path("/a..b").as_deref(), Ok("a..b"));
        assert_eq!(normalize_request_path("/..a/b..").as_deref(), Ok("..a/b.."));
        assert_eq!(normalize_request_path("/.hidden").as_deref(), Ok(".hidden"));
    }

    #[test]
    fn length_limits() {
        let ok = format!("/{}", "a".repeat(MAX_REQUEST_PATH_BYTES - 1));
        assert!(normalize_request_path(&ok).is_ok());
        let long = "a".repeat(MAX_REQUEST_PATH_BYTES + 1);
        assert_eq!(normalize_request_path(&long), Err(PathError::TooLong));
        assert_eq!(normalize_plain_path(&long), Err(PathError::TooLong));
        let encoded = "%41".repeat(MAX_REQUEST_PATH_BYTES + 1);
        assert_eq!(normalize_request_path(&encoded), Err(PathError::TooLong));
        let huge = "/".repeat(MAX_ENCODED_REQUEST_PATH_BYTES + 1);
        assert_eq!(normalize_request_path(&huge), Err(PathError::TooLong));
    }

    /// The properties every accepted path must have, whatever the input was.
    fn assert_safe(out: &str) {
        assert!(!out.is_empty());
        assert!(out.len() <= MAX_REQUEST_PATH_BYTES);
        assert!(!out.starts_with('/'));
        assert!(!out.contains('\0'));
        assert!(!out.contains('\\'));
        assert!(out
            .split('/')
            .all(|s| s != ".." && s != "." && !s.is_empty()));
    }

    proptest! {
        #[test]
        fn request_paths_are_always_safe(raw in "[/.%a-fA-F0-9\\\\\\x00a-z]{0,64}") {
            if let Ok(out) = normalize_request_path(&raw) {
                assert_safe(&out);
            }
        }

        #[test]
        fn arbitrary_request_paths_are_always_safe(raw in any::<String>()) {
            if let Ok(out) = normalize_request_path(&raw) {
                assert_safe(&out);
            }
        }

        #[test]
        fn plain_paths_are_always_safe(raw in "[/.a\\\\\\x00]{0,32}") {
            if let Ok(out) = normalize_plain_path(&raw) {
                assert_safe(&out);
            }
        }
    }
}
