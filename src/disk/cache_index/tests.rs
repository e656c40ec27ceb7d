//! Unit tests of the cache index: round trips, bits across reopen, refusals of what no
//! index may describe and of every kind of damage, held ranges, concurrent sets; and
//! the key, meta and digests helpers other disk tests build indexes with.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::{error::*, files::*, format::*, index::*};
use crate::disk::identity::{FileKey, FileMeta};
use crate::pure::digest::DigestAlgo;
use crate::pure::geometry::FileGeometry;
use crate::pure::protocol::limits::MAX_FILE_BYTES;

pub(crate) fn key() -> FileKey {
    FileKey::new("Cdn.Example.com", 1111, "/movies/a.mp4")
}

pub(crate) fn meta(size: u64, version: u64) -> FileMeta {
    FileMeta {
        size,
        block_size: 16384,
        algo: DigestAlgo::Sha256,
        version,
        mtime_unix_secs: -5,
    }
}

/// Digests of blocks of a deterministic content (block `i` filled with `i as u8`).
pub(crate) fn digests_for(m: &FileMeta) -> Vec<u8> {
    let g = FileGeometry::new(m.size, m.block_size);
    let mut out = Vec::new();
    let mut buf = [0u8; crate::pure::digest::MAX_DIGEST_BYTES];
    for i in 0..g.block_count() {
        let block = vec![i as u8; g.block_len(i)];
        out.extend_from_slice(m.algo.digest_into(&block, &mut buf));
    }
    out
}

fn make(dir: &Path, size: u64) -> CacheIndex {
    let m = meta(size, 0xabc);
    CacheIndex::create(dir, &key(), &m, &digests_for(&m)).unwrap()
}

fn is_damaged(r: Result<CacheIndex, StoreError>) -> bool {
    matches!(r, Err(StoreError::Damaged { .. }))
}

#[test]
fn create_then_open_round_trips_every_field() {
    let d = tempfile::tempdir().unwrap();
    let m = FileMeta {
        size: 100_000,
        block_size: 32768,
        algo: DigestAlgo::Sha384,
        version: u64::MAX - 3,
        mtime_unix_secs: 1_700_000_000,
    };
    let k = FileKey::new("::1", 8080, "/a/b c.mkv");
    let dg = digests_for(&m);
    let ix = CacheIndex::create(d.path(), &k, &m, &dg).unwrap();
    let (ip, dp) = paths_for(d.path(), &k, m.version);
    assert_eq!(
        (ix.index_path(), ix.data_path()),
        (ip.as_path(), dp.as_path())
    );
    assert!(ip
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .ends_with("-fffffffffffffffc.idx"));
    drop(ix);
    let ix = CacheIndex::open(&ip).unwrap();
    assert_eq!(ix.key(), &k);
    assert_eq!(ix.meta(), &m);
    assert_eq!(ix.block_count(), 4);
    assert_eq!(ix.block_len(0), 32768);
    assert_eq!(ix.block_len(3), 100_000 - 3 * 32768);
    assert_eq!(ix.block_offset(3), 3 * 32768);
    assert_eq!(ix.digests(0, 99), &dg[..]);
    assert_eq!(ix.digest(2), &dg[2 * 48..3 * 48]);
    assert!(m.algo.verify(&[1u8; 32768], ix.digest(1)));
    assert_eq!(ix.digests(3, 5), &dg[3 * 48..]);
    assert!(ix.digests(9, 5).is_empty());
    assert_eq!(ix.held_count(), 0);
    // The file is exactly as long as the layout table says.
    let len = fs::metadata(&ip).unwrap().len() as usize;
    let host_path = 3 + "a/b c.mkv".len();
    assert_eq!(
        len,
        (HEADER_LEN + host_path + 4 * 48).next_multiple_of(8) + 8
    );
}

#[test]
fn bits_survive_drop_and_reopen() {
    let d = tempfile::tempdir().unwrap();
    let ix = make(d.path(), 16384 * 130 + 1); // 131 blocks: three words
    assert!(ix.set(0) && ix.set(64) && ix.set(130) && ix.set(7));
    assert!(!ix.set(7), "second set is not new");
    assert!(ix.clear(7) && !ix.clear(7));
    assert!(ix.has(0) && ix.has(130) && !ix.has(7) && !ix.has(131) && !ix.has(u64::MAX));
    ix.flush_bitmap().unwrap();
    let p = ix.index_path().to_path_buf();
    drop(ix);
    let ix = CacheIndex::open(&p).unwrap();
    assert_eq!(ix.held_count(), 3);
    assert!(ix.has(0) && ix.has(64) && ix.has(130) && !ix.has(1));
    // A mapping of the same file elsewhere sees the same bits at once (MAP_SHARED).
    let other = CacheIndex::open(&p).unwrap();
    ix.set(5);
    assert!(other.has(5));
}

#[test]
fn empty_file_has_no_blocks_and_no_bitmap() {
    let d = tempfile::tempdir().unwrap();
    let ix = make(d.path(), 0);
    assert_eq!((ix.block_count(), ix.held_count()), (0, 0));
    assert!(ix.digests(0, 10).is_empty());
    assert!(ix.held_ranges(0, 10, 10).is_empty());
    assert!(!ix.has(0));
    ix.flush_bitmap().unwrap();
    let p = ix.index_path().to_path_buf();
    drop(ix);
    assert_eq!(CacheIndex::open(&p).unwrap().block_count(), 0);
}

#[test]
fn create_refuses_what_no_index_may_describe() {
    let d = tempfile::tempdir().unwrap();
    let m = meta(40_000, 1);
    let dg = digests_for(&m);
    let invalid = |r: Result<CacheIndex, StoreError>| matches!(r, Err(StoreError::Invalid(_)));
    assert!(invalid(CacheIndex::create(d.path(), &key(), &m, &dg[1..])));
    let bad_bs = FileMeta {
        block_size: 16384 + 512,
        ..m.clone()
    };
    assert!(invalid(CacheIndex::create(d.path(), &key(), &bad_bs, &dg)));
    let huge = FileMeta {
        size: MAX_FILE_BYTES + 1,
        ..m.clone()
    };
    assert!(invalid(CacheIndex::create(d.path(), &key(), &huge, &dg)));
    let long_host = FileKey::new(&"h".repeat(256), 1, "a");
    assert!(invalid(CacheIndex::create(d.path(), &long_host, &m, &dg)));
    let long_path = FileKey::new("h", 1, &"p".repeat(4097));
    assert!(invalid(CacheIndex::create(d.path(), &long_path, &m, &dg)));
    let upper = FileKey {
        host: "H".into(),
        port: 1,
        path: "a".into(),
    };
    assert!(invalid(CacheIndex::create(d.path(), &upper, &m, &dg)));
    // Nothing was left behind, not even a temporary file.
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
}

#[test]
fn any_damage_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let ix = make(d.path(), 16384 * 3);
    ix.set(1);
    let p = ix.index_path().to_path_buf();
    let len = fs::metadata(&p).unwrap().len() as usize;
    drop(ix);
    let good = fs::read(&p).unwrap();
    let digests_at = HEADER_LEN + "cdn.example.com".len() + "movies/a.mp4".len();
    let bitmap_at = len - 8;
    // A flipped byte anywhere before the bitmap: magic, version, algo, sizes,
    // mtime, version, reserved, checksum, key, digests.
    for at in [
        0,
        9,
        12,
        13,
        15,
        17,
        21,
        25,
        33,
        41,
        49,
        60,
        100,
        HEADER_LEN,
        digests_at - 1,
        digests_at,
        bitmap_at - 1,
    ] {
        let mut raw = good.clone();
        raw[at] ^= 0x20;
        fs::write(&p, &raw).unwrap();
        assert!(is_damaged(CacheIndex::open(&p)), "flip at {at} accepted");
    }
    // Truncated by one byte, one byte too long, shorter than a header, empty.
    for raw in [
        &good[..len - 1],
        &[good.as_slice(), &[0]].concat()[..],
        &good[..50],
        &[][..],
    ] {
        fs::write(&p, raw).unwrap();
        assert!(is_damaged(CacheIndex::open(&p)));
    }
    // The bitmap is not covered: a flipped bit there is only a claim.
    let mut raw = good.clone();
    raw[bitmap_at] ^= 1;
    fs::write(&p, &raw).unwrap();
    let ix = CacheIndex::open(&p).unwrap();
    assert!(ix.has(0) && ix.has(1));
    // A valid index under another name (another key or version) is not trusted.
    let moved = d
        .path()
        .join(format!("{}-{:016x}.idx", "0".repeat(32), 0xabc));
    fs::write(&moved, &good).unwrap();
    assert!(is_damaged(CacheIndex::open(&moved)));
    // A missing file is an i/o error, not damage.
    assert!(matches!(
        CacheIndex::open(&d.path().join("nope.idx")),
        Err(StoreError::Io { .. })
    ));
}

#[test]
fn absurd_lengths_are_refused_before_mapping() {
    let d = tempfile::tempdir().unwrap();
    let ix = make(d.path(), 16384 * 3);
    let p = ix.index_path().to_path_buf();
    drop(ix);
    let good = fs::read(&p).unwrap();
    let patch = |at: usize, bytes: &[u8]| {
        let mut raw = good.clone();
        raw[at..at + bytes.len()].copy_from_slice(bytes);
        fs::write(&p, &raw).unwrap();
        assert!(is_damaged(CacheIndex::open(&p)), "patch at {at} accepted");
    };
    patch(24, &u64::MAX.to_le_bytes()); // size
    patch(48, &u64::MAX.to_le_bytes()); // block count
    patch(16, &u32::MAX.to_le_bytes()); // block size
    patch(16, &0u32.to_le_bytes());
    patch(20, &u16::MAX.to_le_bytes()); // host length
    patch(20, &0u16.to_le_bytes());
    patch(22, &u16::MAX.to_le_bytes()); // path length
}

#[test]
fn bits_past_the_last_block_are_cleared_at_open() {
    let d = tempfile::tempdir().unwrap();
    let ix = make(d.path(), 16384 * 3); // 3 blocks, one word
    let p = ix.index_path().to_path_buf();
    drop(ix);
    let mut raw = fs::read(&p).unwrap();
    let at = raw.len() - 8;
    raw[at..].copy_from_slice(&(u64::MAX << 1).to_le_bytes());
    fs::write(&p, &raw).unwrap();
    let ix = CacheIndex::open(&p).unwrap();
    assert_eq!(ix.held_count(), 2);
    assert!(!ix.has(0) && ix.has(1) && ix.has(2) && !ix.has(3));
    assert_eq!(ix.held_ranges(0, 100, 10), vec![(1, 2)]);
    drop(ix);
    let raw = fs::read(&p).unwrap();
    assert_eq!(raw[at..], 0b110u64.to_le_bytes());
}

#[test]
fn held_ranges_runs_and_cap() {
    let d = tempfile::tempdir().unwrap();
    let ix = make(d.path(), 16384 * 200);
    assert!(ix.held_ranges(0, 200, 8).is_empty());
    for i in (3..5).chain(60..130).chain([140]).chain(190..200) {
        ix.set(i);
    }
    let all = vec![(3, 2), (60, 70), (140, 1), (190, 10)];
    assert_eq!(ix.held_ranges(0, 200, 8), all);
    assert_eq!(ix.held_ranges(0, u64::MAX, usize::MAX), all);
    assert_eq!(ix.held_ranges(0, 200, 2), all[..2]);
    assert!(ix.held_ranges(0, 200, 0).is_empty());
    // Windows cut runs at both ends.
    assert_eq!(ix.held_ranges(4, 60, 8), vec![(4, 1), (60, 4)]);
    assert_eq!(ix.held_ranges(64, 64, 8), vec![(64, 64)]);
    assert_eq!(ix.held_ranges(129, 12, 8), vec![(129, 1), (140, 1)]);
    assert_eq!(ix.held_ranges(195, 100, 8), vec![(195, 5)]);
    assert!(ix.held_ranges(200, 10, 8).is_empty());
    assert!(ix.held_ranges(u64::MAX, u64::MAX, 8).is_empty());
    assert_eq!(ix.held_count(), 2 + 70 + 1 + 10);
}

#[test]
fn concurrent_sets_from_many_threads_all_land() {
    const THREADS: u64 = 8;
    const BLOCKS: u64 = 4096;
    let d = tempfile::tempdir().unwrap();
    let ix = Arc::new(make(d.path(), 16384 * BLOCKS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let ix = Arc::clone(&ix);
            // Interleaved: neighbouring bits of every word belong to different
            // threads, so a non-atomic update would lose some.
            std::thread::spawn(move || {
                let mut new = 0;
                for i in (t..BLOCKS).step_by(THREADS as usize) {
                    new += u64::from(ix.set(i));
                }
                new
            })
        })
        .collect();
    let newly: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(newly, BLOCKS);
    assert_eq!(ix.held_count(), BLOCKS);
    assert_eq!(ix.held_ranges(0, BLOCKS, 8), vec![(0, BLOCKS)]);
    // And concurrent clears of every other block leave exactly the rest.
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let ix = Arc::clone(&ix);
            std::thread::spawn(move || {
                for i in (t * 2..BLOCKS).step_by(THREADS as usize * 2) {
                    assert!(ix.clear(i));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(ix.held_count(), BLOCKS / 2);
    assert!((0..BLOCKS).all(|i| ix.has(i) == (i % 2 == 1)));
}

#[test]
fn a_create_replaces_an_index_of_the_same_version_whole() {
    let d = tempfile::tempdir().unwrap();
    let a = make(d.path(), 16384 * 3);
    a.set(2);
    let b = make(d.path(), 16384 * 3);
    assert_eq!(a.index_path(), b.index_path());
    assert_eq!(b.held_count(), 0, "a new index starts with every bit clear");
    // Only the final file remains: no temporary file is left on success.
    let names: Vec<_> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1);
}
