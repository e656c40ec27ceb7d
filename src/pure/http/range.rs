//! Range requests: resolving a Range header against a resource size, and the If-Range
//! precondition that decides whether the Range applies at all.
//!
//! Pure code: no I/O. The syntax is parsed by the http-range-header crate; the decision
//! of what to serve is made here, so that every doubtful case falls back to the whole
//! resource, which RFC 9110 section 14.2 always allows ("a server MAY ignore the Range
//! header field").

use http_range_header::{parse_range_header, SyntacticallyCorrectRange};

/// What to serve for a request, given its Range header and the resource size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// 200 with the whole resource.
    Full,
    /// 206 with bytes `start..=end_inclusive` (always within the resource).
    Partial { start: u64, end_inclusive: u64 },
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Resolves a Range header against a resource of `size` bytes.
///
/// - Absent, malformed (including "bytes=5-2"), non-"bytes" units, or more than one
///   range: [`RangeSpec::Full`]. RFC 9110 section 14.2 lets a server ignore Range, and
///   for several ranges that is what we do: players ask for one range, multipart/
///   byteranges responses are rarely understood, and many overlapping ranges are a
///   known amplification attack.
/// - A number too large for u64: [`RangeSpec::Full`]. No resource is that big, so the
///   client is confused or probing; the whole resource is a safe answer.
/// - "bytes=a-b": b is clamped to size-1. "bytes=a-": to the end.
/// - "bytes=-n": the last n bytes; n > size means the whole resource (as a Partial),
///   n == 0 is Unsatisfiable.
/// - A start >= size, or any range at all on a 0-byte resource: Unsatisfiable.
pub fn resolve_range(header: Option<&str>, size: u64) -> RangeSpec {
    let Some(header) = header else {
        return RangeSpec::Full;
    };
    // The crate refuses trailing whitespace; httparse already trims it, but a caller
    // with a value from elsewhere should get the same answer.
    let Ok(parsed) = parse_range_header(header.trim_matches([' ', '\t'])) else {
        return RangeSpec::Full;
    };
    let ranges = parsed.into_ranges();
    let [range] = ranges.as_slice() else {
        return RangeSpec::Full;
    };
    // The crate reports a number that overflows u64 as u64::MAX. A literal u64::MAX is
    // no more plausible as a byte position, so both are treated as overflow.
    let overflowed = |n: u64| n == u64::MAX;
    match *range {
        SyntacticallyCorrectRange::FromStart(start) => {
            if overflowed(start) {
                RangeSpec::Full
            } else if start >= size {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Partial {
                    start,
                    end_inclusive: size - 1,
                }
            }
        }
        SyntacticallyCorrectRange::FromLast(suffix) => {
            if overflowed(suffix) {
                RangeSpec::Full
            } else if suffix == 0 || size == 0 {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Partial {
                    start: size - suffix.min(size),
                    end_inclusive: size - 1,
                }
            }
        }
        SyntacticallyCorrectRange::Indexed(start, end) => {
            if overflowed(start) || overflowed(end) {
                RangeSpec::Full
            } else if start >= size {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Partial {
                    start,
                    end_inclusive: end.min(size - 1),
                }
            }
        }
    }
}

/// If-Range: the range applies only when the validator matches our strong ETag or
/// equals our Last-Modified date exactly. No If-Range at all means the range applies.
///
/// The ETag comparison is strong (RFC 9110 section 13.1.5): a weak tag never matches.
/// Dates are compared as instants when both parse, so a client echoing our date in
/// another HTTP-date format still matches; otherwise the texts must be identical.
pub fn if_range_allows(if_range: Option<&str>, etag: &str, last_modified: &str) -> bool {
    let Some(validator) = if_range else {
        return true;
    };
    let validator = validator.trim_matches([' ', '\t']);
    if validator.starts_with("W/") || validator.starts_with('"') {
        return !etag.starts_with("W/") && validator == etag;
    }
    match (
        httpdate::parse_http_date(validator),
        httpdate::parse_http_date(last_modified),
    ) {
        (Ok(theirs), Ok(ours)) => theirs == ours,
        _ => validator == last_modified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn partial(start: u64, end_inclusive: u64) -> RangeSpec {
        RangeSpec::Partial {
            start,
            end_inclusive,
        }
    }

    #[test]
    fn absent_or_ignored_ranges_are_full() {
        for header in [
            None,
            Some(""),
            Some("bytes="),
            Some("bytes"),
            Some("items=0-5"),
            Some("bytes=5-2"),
            Some("bytes=a-b"),
            Some("bytes=-"),
            Some("bytes=0-1,2-3"),
            Some("bytes=0-1, 2-3"),
            Some("bytes=0-1, bytes=2-3"),
            Some("bytes=--1"),
            Some("bytes=+1-2"),
            Some("bytes=1"),
            Some("bytes=99999999999999999999999-"),
            Some("bytes=0-99999999999999999999999"),
            Some("bytes=-99999999999999999999999"),
            Some("bytes=18446744073709551615-"),
            Some("bytes=0-1000000000000000000000000000000000000000000000000"),
        ] {
            assert_eq!(resolve_range(header, 100), RangeSpec::Full, "{header:?}");
        }
    }

    #[test]
    fn simple_ranges() {
        assert_eq!(resolve_range(Some("bytes=0-0"), 100), partial(0, 0));
        assert_eq!(resolve_range(Some("bytes=0-99"), 100), partial(0, 99));
        assert_eq!(resolve_range(Some("bytes=10-19"), 100), partial(10, 19));
        assert_eq!(resolve_range(Some("bytes=99-99"), 100), partial(99, 99));
        assert_eq!(resolve_range(Some("Bytes=1-2"), 100), partial(1, 2));
        assert_eq!(resolve_range(Some(" bytes=1-2 "), 100), partial(1, 2));
        assert_eq!(resolve_range(Some("bytes=1-2,"), 100), partial(1, 2));
    }

    #[test]
    fn end_is_clamped() {
        assert_eq!(resolve_range(Some("bytes=10-1000"), 100), partial(10, 99));
        assert_eq!(
            resolve_range(Some("bytes=0-18446744073709551614"), 100),
            partial(0, 99)
        );
    }

    #[test]
    fn open_ended_ranges() {
        assert_eq!(resolve_range(Some("bytes=0-"), 100), partial(0, 99));
        assert_eq!(resolve_range(Some("bytes=99-"), 100), partial(99, 99));
        assert_eq!(
            resolve_range(Some("bytes=100-"), 100),
            RangeSpec::Unsatisfiable
        );
    }

    #[test]
    fn suffix_ranges() {
        assert_eq!(resolve_range(Some("bytes=-1"), 100), partial(99, 99));
        assert_eq!(resolve_range(Some("bytes=-10"), 100), partial(90, 99));
        assert_eq!(resolve_range(Some("bytes=-100"), 100), partial(0, 99));
        assert_eq!(resolve_range(Some("bytes=-1000"), 100), partial(0, 99));
        assert_eq!(
            resolve_range(Some("bytes=-0"), 100),
            RangeSpec::Unsatisfiable
        );
    }

    #[test]
    fn start_past_end_is_unsatisfiable() {
        assert_eq!(
            resolve_range(Some("bytes=100-200"), 100),
            RangeSpec::Unsatisfiable
        );
        assert_eq!(
            resolve_range(Some("bytes=100-100"), 100),
            RangeSpec::Unsatisfiable
        );
    }

    #[test]
    fn empty_resource() {
        for header in ["bytes=0-0", "bytes=0-", "bytes=-1", "bytes=-0", "bytes=5-9"] {
            assert_eq!(
                resolve_range(Some(header), 0),
                RangeSpec::Unsatisfiable,
                "{header}"
            );
        }
        assert_eq!(resolve_range(None, 0), RangeSpec::Full);
        assert_eq!(resolve_range(Some("bytes=5-2"), 0), RangeSpec::Full);
    }

    #[test]
    fn one_byte_resource() {
        assert_eq!(resolve_range(Some("bytes=0-0"), 1), partial(0, 0));
        assert_eq!(resolve_range(Some("bytes=-1"), 1), partial(0, 0));
        assert_eq!(resolve_range(Some("bytes=-5"), 1), partial(0, 0));
        assert_eq!(resolve_range(Some("bytes=1-"), 1), RangeSpec::Unsatisfiable);
    }

    #[test]
    fn huge_resources() {
        let size = u64::MAX - 1;
        assert_eq!(
            resolve_range(Some("bytes=-1"), size),
            partial(size - 1, size - 1)
        );
        assert_eq!(resolve_range(Some("bytes=0-"), size), partial(0, size - 1));
    }

    const ETAG: &str = "\"00000000000000ff\"";
    const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

    #[test]
    fn if_range_etags() {
        assert!(if_range_allows(None, ETAG, DATE));
        assert!(if_range_allows(Some(ETAG), ETAG, DATE));
        assert!(if_range_allows(Some(" \"00000000000000ff\" "), ETAG, DATE));
        assert!(!if_range_allows(Some("W/\"00000000000000ff\""), ETAG, DATE));
        assert!(!if_range_allows(Some("\"00000000000000fe\""), ETAG, DATE));
        assert!(!if_range_allows(Some("\"x\""), "W/\"x\"", DATE));
        assert!(!if_range_allows(Some("\"x\", \"y\""), "\"x\"", DATE));
    }

    #[test]
    fn if_range_dates() {
        assert!(if_range_allows(Some(DATE), ETAG, DATE));
        assert!(if_range_allows(
            Some("Sunday, 06-Nov-94 08:49:37 GMT"),
            ETAG,
            DATE
        ));
        assert!(!if_range_allows(
            Some("Sun, 06 Nov 1994 08:49:38 GMT"),
            ETAG,
            DATE
        ));
        assert!(!if_range_allows(Some("garbage"), ETAG, DATE));
        assert!(!if_range_allows(Some(""), ETAG, DATE));
    }

    proptest! {
        #[test]
        fn partial_ranges_lie_within_the_resource(header in "[bBytes=0-9, -]{0,24}", size in 0u64..1000) {
            match resolve_range(Some(&header), size) {
                RangeSpec::Partial { start, end_inclusive } => {
                    prop_assert!(start <= end_inclusive);
                    prop_assert!(end_inclusive < size);
                }
                RangeSpec::Full | RangeSpec::Unsatisfiable => {}
            }
        }

        #[test]
        fn arbitrary_headers_never_panic(header in any::<String>(), size in any::<u64>()) {
            let _ = resolve_range(Some(&header), size);
            let _ = if_range_allows(Some(&header), ETAG, DATE);
        }
    }
}
