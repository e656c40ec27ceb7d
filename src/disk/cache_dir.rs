//! The cache directory (`-c DIR`): the lock that keeps a second p2pd out of it, and the
//! start-up sweep that loads every index worth keeping and deletes everything else the
//! store wrote (temporary files, damaged or superseded indexes, data without an index).
//!
//! Files in the directory: `LOCK` (our pid; flocked while we run), `*.idx` and `*.data`
//! named by [`paths_for`](super::paths_for), and transient `*.idx.tmp-PID-N` while an
//! index is being created. Anything else is not ours and is left alone.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::cache_index::{data_path_of, sync_dir, CacheIndex, DATA_EXT, INDEX_EXT, TMP_MARKER};
use super::identity::FileKey;

/// Name of the lock file inside the cache directory.
pub const LOCK_FILE_NAME: &str = "LOCK";
/// Most bytes read from a lock file to learn the holder's pid (a pid and a newline).
const MAX_LOCK_FILE_BYTES: u64 = 32;

/// An open cache directory. Holds an exclusive `flock` on `<dir>/LOCK` for as long as
/// it lives, so two daemons never sweep or write the same store.
#[derive(Debug)]
pub struct StoreDir {
    path: PathBuf,
    /// Kept open only for its lock: closing the file releases it.
    _lock: File,
}

impl StoreDir {
    /// Creates `dir` if missing, locks it (a second p2pd gets an error naming the
    /// holder's pid), removes leftover temporary files, and then either, with
    /// `start_cold`, removes every index and data file, or loads every index and
    /// discards (index and data file) the ones that fail to load (damaged, or
    /// unreadable: it is only a cache), the older versions of a file
    /// held in several versions (the index file with the newest mtime wins), and data
    /// files without an index. Claims the data file cannot back (it is missing, or too
    /// short for a block) are withdrawn. Errors are one line naming the directory.
    pub fn open(dir: &Path, start_cold: bool) -> Result<(StoreDir, Vec<CacheIndex>), String> {
        let shown = dir.display();
        fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create cache directory {shown}: {e}"))?;
        let lock = take_lock(dir)?;
        let store = StoreDir {
            path: dir.to_path_buf(),
            _lock: lock,
        };
        let remove_err = |p: &Path, e: io::Error| {
            format!(
                "cache directory {shown}: cannot remove {}: {e}",
                p.display()
            )
        };

        let mut index_files = Vec::new();
        let mut data_files = Vec::new();
        let entries =
            fs::read_dir(dir).map_err(|e| format!("cannot read cache directory {shown}: {e}"))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read cache directory {shown}: {e}"))?;
            // Only regular files are ours; the type comes from the directory entry and
            // symlinks are not followed.
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.contains(TMP_MARKER) {
                // An index whose creation a crash interrupted: never renamed into
                // place, so never trusted; only its space is reclaimed here.
                tracing::debug!(path = %path.display(), "removing leftover temporary file");
                remove_if_present(&path).map_err(|e| remove_err(&path, e))?;
            } else if path.extension() == Some(OsStr::new(INDEX_EXT)) {
                index_files.push(path);
            } else if path.extension() == Some(OsStr::new(DATA_EXT)) {
                data_files.push(path);
            }
        }

        if start_cold {
            for p in index_files.iter().chain(&data_files) {
                remove_if_present(p).map_err(|e| remove_err(p, e))?;
            }
            sync_dir_quietly(dir);
            return Ok((store, Vec::new()));
        }

        // Load every index; anything that fails a check goes, with its data.
        let mut by_key: HashMap<FileKey, Vec<(CacheIndex, SystemTime)>> = HashMap::new();
        for p in index_files {
            let data = data_path_of(&p);
            let loaded = CacheIndex::open(&p).and_then(|ix| {
                let mtime = fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .map_err(|source| super::cache_index::StoreError::Io {
                        path: p.clone(),
                        source,
                    })?;
                Ok((ix, mtime))
            });
            match loaded {
                Ok((ix, mtime)) => by_key
                    .entry(ix.key().clone())
                    .or_default()
                    .push((ix, mtime)),
                Err(e) => {
                    tracing::warn!("discarding cache index: {e}");
                    Self::remove_files(&p, &data).map_err(|e| remove_err(&p, e))?;
                }
            }
        }

        // One version per file: the most recently written index wins (ties go to the
        // higher version, so the choice never depends on directory order).
        let mut kept = Vec::new();
        for (_, mut versions) in by_key {
            versions.sort_by_key(|(ix, mtime)| (*mtime, ix.meta().version));
            let Some((newest, _)) = versions.pop() else {
                continue;
            };
            for (old, _) in versions {
                tracing::debug!(path = %old.index_path().display(), "discarding superseded cache index");
                Self::remove_files(old.index_path(), old.data_path())
                    .map_err(|e| remove_err(old.index_path(), e))?;
            }
            kept.push(newest);
        }

        // Data nobody indexes is unreachable: reclaim it.
        let indexed: HashSet<&Path> = kept.iter().map(|ix| ix.data_path()).collect();
        for p in data_files.iter().filter(|p| !indexed.contains(p.as_path())) {
            tracing::debug!(path = %p.display(), "removing data file without an index");
            remove_if_present(p).map_err(|e| remove_err(p, e))?;
        }

        for ix in &kept {
            withdraw_unbacked_claims(ix);
        }
        sync_dir_quietly(dir);
        kept.sort_by(|a, b| a.index_path().cmp(b.index_path()));
        Ok((store, kept))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes an index and then its data file (a replaced version, or a file gone at
    /// the origin). The index goes first so that a crash in between leaves an orphan
    /// data file, which the next start removes, never an index without its data.
    /// Files already gone are not an error.
    pub fn remove_files(index_path: &Path, data_path: &Path) -> io::Result<()> {
        remove_if_present(index_path)?;
        remove_if_present(data_path)
    }
}

fn remove_if_present(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes the sweep's removals durable. Failing only means a removed file may come back
/// after a crash, to be swept again: worth a log line, not a refusal to start.
fn sync_dir_quietly(dir: &Path) {
    if let Err(e) = sync_dir(dir) {
        tracing::warn!("cache directory {}: cannot sync: {e}", dir.display());
    }
}

/// Clears the bits of blocks the data file cannot hold: all of them when it is missing,
/// those past its end when it is short. The digest check on read would refuse them
/// anyway; clearing them now keeps them out of what this node announces as held.
fn withdraw_unbacked_claims(ix: &CacheIndex) {
    if ix.held_count() == 0 {
        return;
    }
    let data_len = match fs::metadata(ix.data_path()) {
        Ok(m) if m.is_file() => m.len(),
        _ => {
            tracing::debug!(path = %ix.index_path().display(), "data file missing: clearing its claims");
            ix.clear_all();
            return;
        }
    };
    for (start, count) in ix.held_ranges(0, ix.block_count(), usize::MAX) {
        for i in start..start + count {
            if ix.block_offset(i) + ix.block_len(i) as u64 > data_len {
                ix.clear(i);
            }
        }
    }
}

/// Opens `<dir>/LOCK` and takes an exclusive, non-blocking flock on it, then records our
/// pid in it for the error message of the next one who tries.
fn take_lock(dir: &Path) -> Result<File, String> {
    let path = dir.join(LOCK_FILE_NAME);
    let shown = dir.display();
    // Not truncated on open: until we hold the lock, the pid in it is the holder's.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a file descriptor `file` owns and keeps open; no memory involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let pid = read_pid(&mut file).map_or_else(|| "unknown".to_string(), |p| p.to_string());
            return Err(format!(
                "cache directory {shown} is in use by another p2pd (pid {pid})"
            ));
        }
        return Err(format!("cannot lock cache directory {shown}: {e}"));
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(file)
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.take(MAX_LOCK_FILE_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::cache_index::tests::{digests_for, key, meta};
    use crate::disk::{paths_for, FileMeta};
    use std::time::Duration;

    fn create(dir: &Path, k: &FileKey, m: &FileMeta) -> CacheIndex {
        CacheIndex::create(dir, k, m, &digests_for(m)).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn set_mtime(p: &Path, secs_ago: u64) {
        let f = File::options().write(true).open(p).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs_ago))
            .unwrap();
    }

    #[test]
    fn a_second_open_is_refused_while_the_first_lives() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("cache/sub");
        let (first, loaded) = StoreDir::open(&dir, false).unwrap();
        assert!(loaded.is_empty());
        assert_eq!(first.path(), dir);
        // flock belongs to the open file description, so a second open in the same
        // process conflicts just as another process would.
        let err = StoreDir::open(&dir, false).unwrap_err();
        let want = format!(
            "cache directory {} is in use by another p2pd (pid {})",
            dir.display(),
            std::process::id()
        );
        assert_eq!(err, want);
        drop(first);
        let (_again, _) = StoreDir::open(&dir, false).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join(LOCK_FILE_NAME)).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn an_unusable_directory_is_one_line_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let err = StoreDir::open(&file, false).unwrap_err();
        assert!(
            err.contains(&file.display().to_string()) && !err.contains('\n'),
            "{err}"
        );
    }

    #[test]
    fn reopen_loads_good_indexes_with_their_bits() {
        let d = tempfile::tempdir().unwrap();
        let m = meta(16384 * 3, 7);
        let ix = create(d.path(), &key(), &m);
        fs::write(ix.data_path(), vec![0u8; 16384 * 3]).unwrap();
        ix.set(0);
        ix.set(2);
        drop(ix);
        let (_s, loaded) = StoreDir::open(d.path(), false).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].key(), &key());
        assert_eq!(loaded[0].meta(), &m);
        assert_eq!(loaded[0].held_ranges(0, 3, 8), vec![(0, 1), (2, 1)]);
    }

    #[test]
    fn crash_leftovers_and_damage_are_swept() {
        let d = tempfile::tempdir().unwrap();
        let k = key();
        let good_meta = meta(16384 * 2, 1);
        let good = create(d.path(), &k, &good_meta);
        fs::write(good.data_path(), vec![0u8; 16384 * 2]).unwrap();
        drop(good);

        // A crash mid-create: a partial index under a temporary name, never renamed.
        let other = FileKey::new("cdn.example.com", 1111, "b.mp4");
        let (final_idx, _) = paths_for(d.path(), &other, 9);
        let tmp = d.path().join(format!(
            "{}{TMP_MARKER}4242-0",
            final_idx.file_name().unwrap().to_string_lossy()
        ));
        fs::write(&tmp, b"P2PDCIX1 half an index").unwrap();

        // Damaged indexes of other files, each with a data file: truncated by one
        // byte, a flipped byte in the header, the key and the digests.
        let mut damaged = Vec::new();
        for (n, how) in ["truncate", "header", "key", "digests"].iter().enumerate() {
            let k = FileKey::new("cdn.example.com", 1111, &format!("damaged{n}.mp4"));
            let m = meta(16384 * 2, 3);
            let ix = create(d.path(), &k, &m);
            let (ip, dp) = (ix.index_path().to_path_buf(), ix.data_path().to_path_buf());
            drop(ix);
            fs::write(&dp, vec![0u8; 16384 * 2]).unwrap();
            let mut raw = fs::read(&ip).unwrap();
            match *how {
                "truncate" => {
                    raw.pop();
                }
                "header" => raw[40] ^= 1,
                "key" => raw[130] ^= 1,
                _ => raw[200] ^= 1,
            }
            fs::write(&ip, &raw).unwrap();
            damaged.push((ip, dp));
        }

        // A data file whose index is gone, and a file that is not ours.
        let (_, orphan) = paths_for(d.path(), &other, 5);
        fs::write(&orphan, b"orphan").unwrap();
        fs::write(d.path().join("README"), b"operator's note").unwrap();

        let (_s, loaded) = StoreDir::open(d.path(), false).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].key(), &k);
        let (gi, gd) = paths_for(d.path(), &k, 1);
        let mut want = vec![
            gd.file_name().unwrap().to_string_lossy().into_owned(),
            gi.file_name().unwrap().to_string_lossy().into_owned(),
            LOCK_FILE_NAME.to_string(),
            "README".to_string(),
        ];
        want.sort();
        assert_eq!(names(d.path()), want);
        assert!(
            !final_idx.exists(),
            "an interrupted create never leaves a final index"
        );
        for (ip, dp) in damaged {
            assert!(!ip.exists() && !dp.exists());
        }
    }

    #[test]
    fn start_cold_wipes_every_index_and_data_file() {
        let d = tempfile::tempdir().unwrap();
        let ix = create(d.path(), &key(), &meta(16384, 1));
        fs::write(ix.data_path(), vec![0u8; 16384]).unwrap();
        drop(ix);
        fs::write(d.path().join(format!("x.idx{TMP_MARKER}1-1")), b"t").unwrap();
        fs::write(d.path().join("README"), b"keep").unwrap();
        let (_s, loaded) = StoreDir::open(d.path(), true).unwrap();
        assert!(loaded.is_empty());
        assert_eq!(
            names(d.path()),
            vec!["LOCK".to_string(), "README".to_string()]
        );
    }

    #[test]
    fn of_two_versions_the_newest_index_stays() {
        let d = tempfile::tempdir().unwrap();
        let k = key();
        let v1 = create(d.path(), &k, &meta(16384, 1));
        let v2 = create(d.path(), &k, &meta(16384 * 2, 2));
        for ix in [&v1, &v2] {
            fs::write(ix.data_path(), vec![0u8; 16384 * 2]).unwrap();
        }
        // The older version number was written last: the mtime decides, not the number.
        set_mtime(v2.index_path(), 100);
        set_mtime(v1.index_path(), 10);
        let (p1, p2) = (v1.index_path().to_path_buf(), v2.index_path().to_path_buf());
        let d2 = v2.data_path().to_path_buf();
        drop((v1, v2));
        let (_s, loaded) = StoreDir::open(d.path(), false).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].meta().version, 1);
        assert!(p1.exists() && !p2.exists() && !d2.exists());
    }

    #[test]
    fn claims_the_data_file_cannot_back_are_withdrawn() {
        let d = tempfile::tempdir().unwrap();
        let missing = create(d.path(), &key(), &meta(16384 * 3, 1));
        let short_key = FileKey::new("cdn.example.com", 1111, "short.mp4");
        // Three blocks, the last one short (1000 bytes).
        let short = create(d.path(), &short_key, &meta(16384 * 2 + 1000, 1));
        for i in 0..3 {
            missing.set(i);
            short.set(i);
        }
        // The last block needs 1000 bytes past 32 KiB; only 999 are there.
        fs::write(short.data_path(), vec![0u8; 16384 * 2 + 999]).unwrap();
        drop((missing, short));
        let (_s, loaded) = StoreDir::open(d.path(), false).unwrap();
        let by = |k: &FileKey| loaded.iter().find(|ix| ix.key() == k).unwrap();
        assert_eq!(by(&key()).held_count(), 0);
        assert_eq!(by(&short_key).held_ranges(0, 3, 8), vec![(0, 2)]);
    }

    #[test]
    fn remove_files_ignores_what_is_already_gone() {
        let d = tempfile::tempdir().unwrap();
        let ix = create(d.path(), &key(), &meta(16384, 1));
        let (ip, dp) = (ix.index_path().to_path_buf(), ix.data_path().to_path_buf());
        drop(ix);
        StoreDir::remove_files(&ip, &dp).unwrap();
        assert!(!ip.exists());
        StoreDir::remove_files(&ip, &dp).unwrap();
    }
}
