//! Per-file digest index: one digest per block of a published file, stored in a file
//! under the index directory and memory-mapped for serving.
//!
//! Layout (little-endian, [`HEADER_LEN`] bytes of header, then `block_count` digests):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `P2PDIDX1` |
//! | 8 | 4 | format version (1) |
//! | 12 | 1 | digest algorithm id (see `digest::DigestAlgo::id`) |
//! | 16 | 4 | block size in bytes |
//! | 24 | 8 | source file size |
//! | 32 | 8 | source mtime, ns since the epoch |
//! | 40 | 8 | source inode |
//! | 48 | 8 | source device |
//! | 56 | 8 | content version |
//! | 64 | 8 | block count |
//! | 72 | 32 | SHA-256 of the digest region, so a damaged index is rebuilt, not trusted |
//! | 128 | n×len | the digests |
//!
//! An index is written to a temporary name, synced, then renamed into place, so a crash
//! leaves either the old index, the new one, or none: never a torn one.

use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use sha2::{Digest as _, Sha256};

use crate::pure::digest::{DigestAlgo, MAX_DIGEST_BYTES};
use crate::pure::geometry::FileGeometry;

pub const MAGIC: &[u8; 8] = b"P2PDIDX1";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 128;
/// Bytes read from the source per `read` call while hashing (one block at most).
const HASH_READ_CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0} changed while it was being hashed")]
    SourceChanged(PathBuf),
    #[error("{0} is too large to publish")]
    TooLarge(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What identifies one state of a source file: a change in any field means the
/// content may have changed and the index must be rebuilt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceStat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ino: u64,
    pub dev: u64,
}

impl SourceStat {
    pub fn from_metadata(m: &Metadata) -> Self {
        SourceStat {
            size: m.len(),
            mtime_ns: m
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        }
    }

    pub fn mtime_unix_secs(&self) -> i64 {
        self.mtime_ns.div_euclid(1_000_000_000)
    }
}

/// The content version: derived from the digests alone, so mirrors holding identical
/// content announce identical versions whatever their mtimes.
pub fn content_version(algo: DigestAlgo, block_size: u32, size: u64, digests: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update([algo.id()]);
    h.update(block_size.to_be_bytes());
    h.update(size.to_be_bytes());
    h.update(digests);
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// A loaded (memory-mapped) index.
pub struct FileIndex {
    map: Mmap,
    pub algo: DigestAlgo,
    pub block_size: u32,
    pub stat: SourceStat,
    pub version: u64,
    pub block_count: u64,
}

impl std::fmt::Debug for FileIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileIndex")
            .field("algo", &self.algo)
            .field("block_size", &self.block_size)
            .field("size", &self.stat.size)
            .field("version", &format_args!("{:016x}", self.version))
            .finish()
    }
}

/// Little-endian integers at `at` in an index header (shared with the cache store's
/// index). Panic on `at` out of range: callers check lengths first.
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl FileIndex {
    /// The digest of block `idx`. Panics only on a programmer error (idx out of range).
    pub fn digest(&self, idx: u64) -> &[u8] {
        assert!(idx < self.block_count, "block {idx} out of range");
        let len = self.algo.len();
        let at = HEADER_LEN + idx as usize * len;
        &self.map[at..at + len]
    }

    /// The digests of blocks `start..start+count`, clamped to the file's blocks.
    pub fn digests(&self, start: u64, count: u64) -> &[u8] {
        let start = start.min(self.block_count);
        let end = start.saturating_add(count).min(self.block_count);
        let len = self.algo.len();
        &self.map[HEADER_LEN + start as usize * len..HEADER_LEN + end as usize * len]
    }

    pub fn size(&self) -> u64 {
        self.stat.size
    }

    /// The file's blocks.
    pub fn geometry(&self) -> FileGeometry {
        FileGeometry::new(self.stat.size, self.block_size)
    }

    /// Length of block `idx` (the last block may be short).
    pub fn block_len(&self, idx: u64) -> usize {
        self.geometry().block_len(idx)
    }

    /// Opens an existing index and checks it still describes `expect` with the wanted
    /// block size and algorithm. `Ok(None)` means missing, stale or damaged: rebuild it.
    pub fn open_if_current(
        index_path: &Path,
        expect: &SourceStat,
        block_size: u32,
        algo: DigestAlgo,
    ) -> Result<Option<FileIndex>, IndexError> {
        let file = match File::open(index_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(index_path)(e)),
        };
        // SAFETY: index files are private to p2pd and only ever replaced by rename, never
        // modified in place, so the mapping's contents cannot change under us.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err(index_path))?;
        Ok(Self::from_map(map, expect, block_size, algo))
    }

    fn from_map(
        map: Mmap,
        expect: &SourceStat,
        block_size: u32,
        algo: DigestAlgo,
    ) -> Option<FileIndex> {
        if map.len() < HEADER_LEN || &map[0..8] != MAGIC || le_u32(&map, 8) != FORMAT_VERSION {
            return None;
        }
        if map[12] != algo.id() || le_u32(&map, 16) != block_size {
            return None;
        }
        let stat = SourceStat {
            size: le_u64(&map, 24),
            mtime_ns: le_u64(&map, 32) as i64,
            ino: le_u64(&map, 40),
            dev: le_u64(&map, 48),
        };
        if stat != *expect {
            return None;
        }
        let count = le_u64(&map, 64);
        if count != FileGeometry::new(stat.size, block_size).block_count() {
            return None;
        }
        let digests_len = (count as usize).checked_mul(algo.len())?;
        if map.len() != HEADER_LEN.checked_add(digests_len)? {
            return None;
        }
        let region = &map[HEADER_LEN..];
        if Sha256::digest(region).as_slice() != &map[72..104] {
            return None;
        }
        let version = le_u64(&map, 56);
        if version != content_version(algo, block_size, stat.size, region) {
            return None;
        }
        Some(FileIndex {
            map,
            algo,
            block_size,
            stat,
            version,
            block_count: count,
        })
    }

    /// Hashes `source` block by block and writes a fresh index at `index_path`.
    /// Runs on a hasher thread, never on a shard's reactor.
    pub fn build(
        source: &Path,
        index_path: &Path,
        block_size: u32,
        algo: DigestAlgo,
    ) -> Result<FileIndex, IndexError> {
        let mut file = File::open(source).map_err(io_err(source))?;
        let before = SourceStat::from_metadata(&file.metadata().map_err(io_err(source))?);
        if before.size > crate::pure::protocol::limits::MAX_FILE_BYTES {
            return Err(IndexError::TooLarge(source.to_path_buf()));
        }
        let count = FileGeometry::new(before.size, block_size).block_count();
        let dlen = algo.len();
        let mut digests = Vec::with_capacity(count as usize * dlen);
        let mut buf = vec![0u8; HASH_READ_CHUNK_BYTES.min(block_size as usize)];
        let mut out = [0u8; MAX_DIGEST_BYTES];
        let mut remaining = before.size;
        while remaining > 0 {
            let mut hasher = algo.hasher();
            let mut left_in_block = remaining.min(u64::from(block_size));
            remaining -= left_in_block;
            while left_in_block > 0 {
                let want = (left_in_block as usize).min(buf.len());
                file.read_exact(&mut buf[..want]).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        IndexError::SourceChanged(source.to_path_buf())
                    } else {
                        io_err(source)(e)
                    }
                })?;
                hasher.update(&buf[..want]);
                left_in_block -= want as u64;
            }
            digests.extend_from_slice(hasher.finish_into(&mut out));
        }
        let after = SourceStat::from_metadata(&fs::metadata(source).map_err(io_err(source))?);
        if after != before {
            return Err(IndexError::SourceChanged(source.to_path_buf()));
        }
        write_index(index_path, &before, block_size, algo, &digests)?;
        match Self::open_if_current(index_path, &before, block_size, algo)? {
            Some(ix) => Ok(ix),
            None => Err(IndexError::Io {
                path: index_path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidData, "index did not read back"),
            }),
        }
    }
}

fn write_index(
    index_path: &Path,
    stat: &SourceStat,
    block_size: u32,
    algo: DigestAlgo,
    digests: &[u8],
) -> Result<(), IndexError> {
    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12] = algo.id();
    header[16..20].copy_from_slice(&block_size.to_le_bytes());
    header[24..32].copy_from_slice(&stat.size.to_le_bytes());
    header[32..40].copy_from_slice(&(stat.mtime_ns as u64).to_le_bytes());
    header[40..48].copy_from_slice(&stat.ino.to_le_bytes());
    header[48..56].copy_from_slice(&stat.dev.to_le_bytes());
    header[56..64]
        .copy_from_slice(&content_version(algo, block_size, stat.size, digests).to_le_bytes());
    header[64..72].copy_from_slice(&(digests.len() as u64 / algo.len() as u64).to_le_bytes());
    header[72..104].copy_from_slice(&Sha256::digest(digests));
    let tmp = index_path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&header)?;
        f.write_all(digests)?;
        f.sync_all()?;
        fs::rename(&tmp, index_path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(index_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(content: &[u8]) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.bin");
        fs::write(&src, content).unwrap();
        let ix = dir.path().join("src.idx");
        (dir, src, ix)
    }

    #[test]
    fn build_then_reopen_and_detect_staleness() {
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let (_d, src, ixp) = setup(&data);
        let ix = FileIndex::build(&src, &ixp, 16384, DigestAlgo::Sha256).unwrap();
        assert_eq!(ix.block_count, 3);
        assert_eq!(ix.block_len(2), 40_000 - 32768);
        assert!(DigestAlgo::Sha256.verify(&data[16384..32768], ix.digest(1)));
        let st = ix.stat;
        let again = FileIndex::open_if_current(&ixp, &st, 16384, DigestAlgo::Sha256)
            .unwrap()
            .unwrap();
        assert_eq!(again.version, ix.version);
        // Other block size, algorithm or stat: stale.
        assert!(
            FileIndex::open_if_current(&ixp, &st, 32768, DigestAlgo::Sha256)
                .unwrap()
                .is_none()
        );
        assert!(
            FileIndex::open_if_current(&ixp, &st, 16384, DigestAlgo::Sha512)
                .unwrap()
                .is_none()
        );
        let moved = SourceStat {
            mtime_ns: st.mtime_ns + 1,
            ..st
        };
        assert!(
            FileIndex::open_if_current(&ixp, &moved, 16384, DigestAlgo::Sha256)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn damaged_index_is_not_trusted() {
        let (_d, src, ixp) = setup(&[7u8; 20_000]);
        let ix = FileIndex::build(&src, &ixp, 16384, DigestAlgo::Sha256).unwrap();
        let st = ix.stat;
        drop(ix);
        let mut raw = fs::read(&ixp).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        fs::write(&ixp, &raw).unwrap();
        assert!(
            FileIndex::open_if_current(&ixp, &st, 16384, DigestAlgo::Sha256)
                .unwrap()
                .is_none()
        );
        fs::write(&ixp, &raw[..50]).unwrap();
        assert!(
            FileIndex::open_if_current(&ixp, &st, 16384, DigestAlgo::Sha256)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn empty_file_has_no_blocks_and_identical_content_same_version() {
        let (_d, src, ixp) = setup(b"");
        let ix = FileIndex::build(&src, &ixp, 16384, DigestAlgo::Sha256).unwrap();
        assert_eq!(ix.block_count, 0);
        assert_eq!(ix.digests(0, 10).len(), 0);
        let (_d2, src2, ixp2) = setup(b"");
        let ix2 = FileIndex::build(&src2, &ixp2, 16384, DigestAlgo::Sha256).unwrap();
        assert_eq!(ix.version, ix2.version);
    }
}
