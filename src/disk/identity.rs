//! The identity of a cached file ([`FileKey`]: host, port, path, and its stable id) and
//! what the origin said about one version of it ([`FileMeta`]).

use sha2::{Digest as _, Sha256};

use crate::pure::digest::DigestAlgo;

/// The identity of a cached file: the URL's host (lowercased), port, and path
/// (normalized, without leading '/').
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl FileKey {
    /// Lowercases the host (ASCII: host names compare case-insensitively), drops the
    /// brackets around an IPv6 literal (so `[::1]` and `::1` name the same file), and
    /// strips one leading '/' from the path. The path is otherwise taken as given: the
    /// caller has already normalized it (`pathsafe`).
    pub fn new(host: &str, port: u16, path: &str) -> FileKey {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        FileKey {
            host: host.to_ascii_lowercase(),
            port,
            path: path.strip_prefix('/').unwrap_or(path).to_string(),
        }
    }

    /// Stable 64-bit id: the first 8 bytes (big-endian) of SHA-256 of `host:port/path`.
    /// Picks the owning shard and names memory-cache blocks, so it must never change
    /// between releases.
    pub fn file_id(&self) -> u64 {
        let mut h = Sha256::new();
        h.update(self.host.as_bytes());
        h.update(b":");
        h.update(self.port.to_string().as_bytes());
        h.update(b"/");
        h.update(self.path.as_bytes());
        let d = h.finalize();
        u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    /// `spp://host:port/path`, with an IPv6 host in brackets.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("spp://[{}]:{}/{}", self.host, self.port, self.path)
        } else {
            format!("spp://{}:{}/{}", self.host, self.port, self.path)
        }
    }
}

/// What the origin said about one version of a file (from its Info frame).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub size: u64,
    pub block_size: u32,
    pub algo: DigestAlgo,
    pub version: u64,
    pub mtime_unix_secs: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_key_is_normalised() {
        let k = FileKey::new("CDN.Example.COM", 1111, "/movies/a.mp4");
        assert_eq!(k.host, "cdn.example.com");
        assert_eq!(k.path, "movies/a.mp4");
        assert_eq!(k, FileKey::new("cdn.example.com", 1111, "movies/a.mp4"));
        // Only one leading slash is stripped.
        assert_eq!(FileKey::new("h", 1, "//x").path, "/x");
        assert_eq!(k.url(), "spp://cdn.example.com:1111/movies/a.mp4");
        let v6 = FileKey::new("[::1]", 8080, "/a");
        assert_eq!(v6.host, "::1");
        assert_eq!(v6, FileKey::new("::1", 8080, "a"));
        assert_eq!(v6.url(), "spp://[::1]:8080/a");
    }

    #[test]
    fn file_id_is_stable() {
        // SHA-256("cdn.example.com:1111/movies/a.mp4") starts with these 8 bytes; a
        // change here reshuffles every cache's shard ownership and names.
        let k = FileKey::new("cdn.example.com", 1111, "/movies/a.mp4");
        let mut out = [0u8; crate::pure::digest::MAX_DIGEST_BYTES];
        let d = DigestAlgo::Sha256.digest_into(b"cdn.example.com:1111/movies/a.mp4", &mut out);
        assert_eq!(k.file_id().to_be_bytes(), d[..8]);
        assert_eq!(k.file_id(), 0x828f_f47d_afa6_99b6);
        assert_ne!(
            k.file_id(),
            FileKey::new("cdn.example.com", 1112, "movies/a.mp4").file_id()
        );
    }
}
