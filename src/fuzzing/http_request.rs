//! The `http_request` fuzz target: `parse_request` on arbitrary bytes, pipelined heads
//! included, each parsed request checked as the server would use it.

use super::http_checks::check_request;
use crate::pure::http::request::parse_request;
use crate::pure::http::MAX_HEAD_BYTES;
use crate::pure::protocol::limits::MAX_FILE_BYTES;

/// `parse_request` on arbitrary bytes, then on the heads pipelined after the first.
/// A parsed head is self-contained (the bytes after it change nothing, and any shorter
/// prefix of it is incomplete, never an error); each parsed request then goes through
/// what the server does with one, without I/O: path normalization, authority, range
/// resolution against several sizes, If-Range, keep-alive.
pub fn http_request(data: &[u8]) {
    // A data-derived file size: the last 8 bytes, so edits of the head move it rarely.
    let tail = &data[data.len().saturating_sub(8)..];
    let size = tail.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)) % (MAX_FILE_BYTES + 1);
    let mut at = 0;
    // Each head takes at least one byte, so this ends; the cap bounds the work.
    for _ in 0..64 {
        let buf = &data[at..];
        match parse_request(buf) {
            Ok(Some((req, head_len))) => {
                assert!(head_len > 0 && head_len <= buf.len().min(MAX_HEAD_BYTES));
                let head = &buf[..head_len];
                assert_eq!(
                    parse_request(head),
                    Ok(Some((req.clone(), head_len))),
                    "a head depends on the bytes after it"
                );
                for cut in [head_len - 1, head_len / 2] {
                    assert_eq!(
                        parse_request(&head[..cut]),
                        Ok(None),
                        "a prefix of a complete head is not incomplete (cut {cut})"
                    );
                }
                check_request(&req, size);
                at += head_len;
            }
            Ok(None) => {
                assert!(buf.len() < MAX_HEAD_BYTES, "incomplete at the head limit");
                break;
            }
            Err(e) => {
                assert!(matches!(e.status(), 400 | 431 | 505));
                let _ = e.to_string();
                break;
            }
        }
    }
}
