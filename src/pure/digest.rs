//! Block digest algorithms: names, wire ids, digest lengths and the hashing itself.
//!
//! Pure code: no I/O, no clock. Every block that crosses the network or leaves a store
//! is checked with [`DigestAlgo::verify`] against the digest the origin published.

use sha2::{Digest as _, Sha224, Sha256, Sha384, Sha512, Sha512_256};

/// Longest digest any supported algorithm produces (SHA-512).
pub const MAX_DIGEST_BYTES: usize = 64;

/// A digest algorithm an origin may publish blocks with (`-m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigestAlgo {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    Sha512_256,
}

/// Every algorithm, in the order they are listed to the operator.
pub const ALL_ALGOS: [DigestAlgo; 5] = [
    DigestAlgo::Sha256,
    DigestAlgo::Sha224,
    DigestAlgo::Sha384,
    DigestAlgo::Sha512,
    DigestAlgo::Sha512_256,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error(
        "unknown digest algorithm '{0}' (accepted: sha256, sha224, sha384, sha512, sha512-256)"
    )]
    UnknownName(String),
    #[error("unknown digest algorithm id {0}")]
    UnknownId(u8),
}

impl DigestAlgo {
    /// The name used on the command line (`-m`) and in logs.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgo::Sha224 => "sha224",
            DigestAlgo::Sha256 => "sha256",
            DigestAlgo::Sha384 => "sha384",
            DigestAlgo::Sha512 => "sha512",
            DigestAlgo::Sha512_256 => "sha512-256",
        }
    }

    /// Parses a command-line name, case-insensitively.
    pub fn from_name(name: &str) -> Result<Self, DigestError> {
        let lower = name.to_ascii_lowercase();
        ALL_ALGOS
            .iter()
            .copied()
            .find(|a| a.name() == lower)
            .ok_or_else(|| DigestError::UnknownName(name.to_string()))
    }

    /// The one-byte id used on the wire (SPP) and in index files. Stable forever.
    pub fn id(self) -> u8 {
        match self {
            DigestAlgo::Sha256 => 1,
            DigestAlgo::Sha224 => 2,
            DigestAlgo::Sha384 => 3,
            DigestAlgo::Sha512 => 4,
            DigestAlgo::Sha512_256 => 5,
        }
    }

    pub fn from_id(id: u8) -> Result<Self, DigestError> {
        ALL_ALGOS
            .iter()
            .copied()
            .find(|a| a.id() == id)
            .ok_or(DigestError::UnknownId(id))
    }

    /// Length in bytes of one digest (an algorithm is never "empty", hence no is_empty).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> usize {
        match self {
            DigestAlgo::Sha224 => 28,
            DigestAlgo::Sha256 | DigestAlgo::Sha512_256 => 32,
            DigestAlgo::Sha384 => 48,
            DigestAlgo::Sha512 => 64,
        }
    }

    /// Starts an incremental hash, so long inputs can be hashed in slices between
    /// yields to the reactor.
    pub fn hasher(self) -> Hasher {
        match self {
            DigestAlgo::Sha224 => Hasher::Sha224(Sha224::new()),
            DigestAlgo::Sha256 => Hasher::Sha256(Sha256::new()),
            DigestAlgo::Sha384 => Hasher::Sha384(Sha384::new()),
            DigestAlgo::Sha512 => Hasher::Sha512(Sha512::new()),
            DigestAlgo::Sha512_256 => Hasher::Sha512_256(Sha512_256::new()),
        }
    }

    /// Digest of `data` written into `out[..self.len()]`; returns that slice.
    pub fn digest_into<'a>(self, data: &[u8], out: &'a mut [u8; MAX_DIGEST_BYTES]) -> &'a [u8] {
        let mut h = self.hasher();
        h.update(data);
        h.finish_into(out)
    }

    /// True when `data` hashes to `expected`.
    pub fn verify(self, data: &[u8], expected: &[u8]) -> bool {
        let mut out = [0u8; MAX_DIGEST_BYTES];
        expected.len() == self.len() && self.digest_into(data, &mut out) == expected
    }
}

/// An incremental hasher for one of the [`DigestAlgo`]s.
pub enum Hasher {
    Sha224(Sha224),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
    Sha512_256(Sha512_256),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha224(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Sha512_256(h) => h.update(data),
        }
    }

    /// Finishes the hash into `out` and returns the digest's slice of it.
    pub fn finish_into(self, out: &mut [u8; MAX_DIGEST_BYTES]) -> &[u8] {
        fn put<'a>(out: &'a mut [u8; MAX_DIGEST_BYTES], d: &[u8]) -> &'a [u8] {
            out[..d.len()].copy_from_slice(d);
            &out[..d.len()]
        }
        match self {
            Hasher::Sha224(h) => put(out, &h.finalize()),
            Hasher::Sha256(h) => put(out, &h.finalize()),
            Hasher::Sha384(h) => put(out, &h.finalize()),
            Hasher::Sha512(h) => put(out, &h.finalize()),
            Hasher::Sha512_256(h) => put(out, &h.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_round_trip() {
        for a in ALL_ALGOS {
            assert_eq!(DigestAlgo::from_name(a.name()).unwrap(), a);
            assert_eq!(DigestAlgo::from_id(a.id()).unwrap(), a);
            let mut out = [0u8; MAX_DIGEST_BYTES];
            assert_eq!(a.digest_into(b"abc", &mut out).len(), a.len());
        }
        assert!(DigestAlgo::from_name("md5").is_err());
        assert!(DigestAlgo::from_id(0).is_err());
        assert_eq!(DigestAlgo::from_name("SHA256").unwrap(), DigestAlgo::Sha256);
    }

    #[test]
    fn sha256_known_vector() {
        let mut out = [0u8; MAX_DIGEST_BYTES];
        let d = DigestAlgo::Sha256.digest_into(b"abc", &mut out);
        assert_eq!(
            hex::encode(d),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(DigestAlgo::Sha256.verify(b"abc", d));
        assert!(!DigestAlgo::Sha256.verify(b"abd", d));
        assert!(!DigestAlgo::Sha256.verify(b"abc", &d[..31]));
    }
}
