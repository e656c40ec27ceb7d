//! Test content and the files tests publish, damage and count.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{wait_until, Node, ORIGIN_BLOCK};

/// How far the clock must be past a file's modification time before a write is sure
/// to stamp a later one: file systems take times from a coarse clock (one tick, a few
/// milliseconds, behind).
const COARSE_CLOCK: Duration = Duration::from_millis(20);

/// Deterministic test content: a byte pattern that differs per file and per position.
pub fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes `data` to `dir/rel`, making the directories on the way.
pub fn write_file(dir: &Path, rel: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, data).unwrap();
    p
}

/// Replaces `dir/rel` with `data` so that its modification time moves on too, as an
/// edit some time after the last one would: waits until the clock is past the old time
/// first.
pub fn rewrite_file(dir: &Path, rel: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(rel);
    let before = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
    if let Some(before) = before {
        wait_until(Duration::from_secs(5), || {
            SystemTime::now() > before + COARSE_CLOCK
        });
    }
    write_file(dir, rel, data);
    let after = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
    assert!(
        before.is_none() || after > before,
        "{}: modification time {after:?} after a rewrite, {before:?} before",
        p.display()
    );
    p
}

/// Files under `dir` (recursively) whose name ends in `suffix`, sorted.
pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                Ok(t) if t.is_file() && p.to_string_lossy().ends_with(suffix) => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Disk space allocated to the files under `dir` whose name ends in `suffix`, as `du`
/// counts it (st_blocks * 512: holes are free, preallocated space counts). Files that
/// vanish while counting count as 0.
pub fn allocated_bytes(dir: &Path, suffix: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    files_with_suffix(dir, suffix)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Once `origin` has indexed `path` (a copy of `data`), flips byte `at` of every block
/// of it in place, keeping its size, inode and modification time: the origin still
/// vouches for the old digests and serves corrupted blocks under them.
pub fn corrupt_every_block_in_place(origin: &Node, path: &Path, data: &[u8], at: usize) {
    use std::os::unix::fs::FileExt;
    origin.wait_for("the file indexed", |n| {
        n.metric("p2pd_files_published") >= 1
    });
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    for b in 0..data.len().div_ceil(ORIGIN_BLOCK) {
        let i = b * ORIGIN_BLOCK + at;
        f.write_all_at(&[data[i] ^ 0x5a], i as u64).unwrap();
    }
    f.set_modified(mtime).unwrap();
    f.sync_all().unwrap();
}
