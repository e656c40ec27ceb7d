//! The origin's published directory: the catalog of files with their digest indexes,
//! kept current by a coordinator thread and hasher threads outside the reactors.
//!
//! Shards read the catalog through a lock-free snapshot ([`arc_swap::ArcSwap`]) and ask
//! the coordinator over a `crossbeam-channel` for a file they do not find (added since
//! the last scan) or whose bytes no longer match their digests (changed under us). The
//! coordinator answers with a `futures` oneshot, which a glommio task can await.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{select, Receiver, Sender};
use futures::channel::oneshot;
use sha2::{Digest as _, Sha256};

use crate::disk::origin_index::{FileIndex, IndexError, SourceStat};
pub use crate::metrics::PublishStats;
use crate::pure::digest::DigestAlgo;

/// Requests the coordinator queues at most; shards get `Busy` beyond it.
pub const MAX_PENDING_REQUESTS: usize = 4096;
/// How often the catalog snapshot is republished at most while hashing is under way.
const SNAPSHOT_INTERVAL_MS: u64 = 100;

/// One published file, immutable: a changed file gets a new entry with a new version.
#[derive(Debug)]
pub struct FileEntry {
    /// Relative path with '/' separators: the name clients use.
    pub rel_path: String,
    pub abs_path: PathBuf,
    /// Stable id of the path (not of the content); with `index.version` it names blocks.
    pub file_id: u64,
    pub index: FileIndex,
}

impl FileEntry {
    pub fn version(&self) -> u64 {
        self.index.version
    }
    pub fn size(&self) -> u64 {
        self.index.size()
    }
    pub fn mtime_unix_secs(&self) -> i64 {
        self.index.stat.mtime_unix_secs()
    }
}

pub type Catalog = HashMap<String, Arc<FileEntry>>;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("not found")]
    NotFound,
    #[error("too many requests waiting for the indexer")]
    Busy,
    #[error("indexing failed: {0}")]
    Failed(String),
}

type Reply = oneshot::Sender<Result<Arc<FileEntry>, LookupError>>;

enum Request {
    /// Find (indexing it first if needed) the file at a normalized relative path.
    Lookup { rel_path: String, reply: Reply },
    /// A shard read bytes that do not match this version's digests: re-check the file.
    Stale { rel_path: String, version: u64 },
}

struct Job {
    rel_path: String,
    abs_path: PathBuf,
    stat: SourceStat,
    /// Hash the file again even if its index looks current: a block was found not to
    /// match its digest although the file's identity did not change.
    rebuild: bool,
}

struct JobDone {
    rel_path: String,
    result: Result<FileEntry, IndexError>,
}

/// What the publisher needs to know.
#[derive(Clone, Debug)]
pub struct PublishConfig {
    pub root: PathBuf,
    pub index_dir: PathBuf,
    pub block_size: u32,
    pub algo: DigestAlgo,
    pub rescan_interval: Duration,
    pub hasher_threads: usize,
    pub start_cold: bool,
}

/// Handle shards keep: cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Publisher {
    catalog: Arc<ArcSwap<Catalog>>,
    requests: Sender<Request>,
    pub stats: Arc<PublishStats>,
}

/// Stable 64-bit id of a relative path.
pub fn file_id_of(rel_path: &str) -> u64 {
    let d = Sha256::digest(rel_path.as_bytes());
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

fn index_path_for(index_dir: &Path, rel_path: &str) -> PathBuf {
    index_dir.join(format!(
        "{}.idx",
        hex::encode(&Sha256::digest(rel_path.as_bytes())[..16])
    ))
}

/// The default index directory for a publish directory: under the user's state
/// directory, keyed by the publish directory, and so never inside it.
pub fn default_index_dir(root: &Path) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    let key = hex::encode(&Sha256::digest(root.as_os_str().as_encoded_bytes())[..8]);
    base.join("p2pd").join("index").join(key)
}

impl Publisher {
    /// Prepares the index directory and starts the coordinator and hasher threads.
    /// The first scan runs in the background; lookups of files it has not reached yet
    /// are indexed first.
    pub fn start(cfg: PublishConfig) -> Result<Publisher, String> {
        fs::create_dir_all(&cfg.index_dir).map_err(|e| {
            format!(
                "--index-dir: cannot create {}: {e}",
                cfg.index_dir.display()
            )
        })?;
        if cfg.start_cold {
            if let Ok(rd) = fs::read_dir(&cfg.index_dir) {
                for e in rd.flatten() {
                    if e.path().extension().is_some_and(|x| x == "idx") {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        let catalog = Arc::new(ArcSwap::from_pointee(Catalog::new()));
        let (req_tx, req_rx) = crossbeam_channel::bounded(MAX_PENDING_REQUESTS);
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
        let (prio_tx, prio_rx) = crossbeam_channel::unbounded::<Job>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<JobDone>();
        let stats = Arc::new(PublishStats::default());
        for n in 0..cfg.hasher_threads.max(1) {
            let (job_rx, prio_rx, done_tx, cfg) = (
                job_rx.clone(),
                prio_rx.clone(),
                done_tx.clone(),
                cfg.clone(),
            );
            let stats = stats.clone();
            std::thread::Builder::new()
                .name(format!("p2pd-hash-{n}"))
                .spawn(move || hasher_loop(cfg, prio_rx, job_rx, done_tx, stats))
                .map_err(|e| format!("cannot start hasher thread: {e}"))?;
        }
        let coord = Coordinator {
            cfg,
            catalog: catalog.clone(),
            map: Catalog::new(),
            dirty: false,
            queued: HashSet::new(),
            waiters: HashMap::new(),
            job_tx,
            prio_tx,
        };
        std::thread::Builder::new()
            .name("p2pd-publish".into())
            .spawn(move || coord.run(req_rx, done_rx))
            .map_err(|e| format!("cannot start publisher thread: {e}"))?;
        Ok(Publisher {
            catalog,
            requests: req_tx,
            stats,
        })
    }

    /// The entry for a normalized relative path if the catalog has it.
    pub fn get(&self, rel_path: &str) -> Option<Arc<FileEntry>> {
        self.catalog.load().get(rel_path).cloned()
    }

    /// Number of files currently published.
    pub fn file_count(&self) -> usize {
        self.catalog.load().len()
    }

    /// Like [`get`](Self::get), but a file not in the catalog yet is looked for on disk
    /// and indexed. The caller bounds the wait with its own deadline.
    pub async fn lookup(&self, rel_path: &str) -> Result<Arc<FileEntry>, LookupError> {
        if let Some(e) = self.get(rel_path) {
            return Ok(e);
        }
        let (tx, rx) = oneshot::channel();
        self.requests
            .try_send(Request::Lookup {
                rel_path: rel_path.to_string(),
                reply: tx,
            })
            .map_err(|_| LookupError::Busy)?;
        rx.await
            .unwrap_or(Err(LookupError::Failed("publisher stopped".into())))
    }

    /// Reports that `version` of a file failed a digest check on read.
    pub fn report_stale(&self, rel_path: &str, version: u64) {
        let _ = self.requests.try_send(Request::Stale {
            rel_path: rel_path.to_string(),
            version,
        });
    }
}

fn hasher_loop(
    cfg: PublishConfig,
    prio: Receiver<Job>,
    normal: Receiver<Job>,
    done: Sender<JobDone>,
    stats: Arc<PublishStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        // Requested files go before the background scan's backlog.
        let job = match prio.try_recv() {
            Ok(j) => j,
            Err(_) => select! {
                recv(prio) -> j => match j { Ok(j) => j, Err(_) => return },
                recv(normal) -> j => match j { Ok(j) => j, Err(_) => return },
            },
        };
        let ix_path = index_path_for(&cfg.index_dir, &job.rel_path);
        let reuse = if job.rebuild {
            Ok(None)
        } else {
            FileIndex::open_if_current(&ix_path, &job.stat, cfg.block_size, cfg.algo)
        };
        let result = match reuse {
            Ok(Some(ix)) => {
                tracing::debug!(path = %job.rel_path, "reusing digest index");
                stats.index_reuses.fetch_add(1, Relaxed);
                Ok(ix)
            }
            _ => {
                let t = Instant::now();
                let r = FileIndex::build(&job.abs_path, &ix_path, cfg.block_size, cfg.algo);
                if let Ok(ix) = &r {
                    stats.index_builds.fetch_add(1, Relaxed);
                    tracing::info!(path = %job.rel_path, bytes = ix.size(), ms = t.elapsed().as_millis() as u64, "indexed");
                }
                r
            }
        };
        let result = result.map(|index| FileEntry {
            file_id: file_id_of(&job.rel_path),
            rel_path: job.rel_path.clone(),
            abs_path: job.abs_path.clone(),
            index,
        });
        if done
            .send(JobDone {
                rel_path: job.rel_path,
                result,
            })
            .is_err()
        {
            return;
        }
    }
}

struct Coordinator {
    cfg: PublishConfig,
    catalog: Arc<ArcSwap<Catalog>>,
    /// The coordinator's own copy; snapshots of it are published to `catalog`.
    map: Catalog,
    dirty: bool,
    /// Paths with a job queued or running, so a file is never hashed twice at once.
    queued: HashSet<String>,
    waiters: HashMap<String, Vec<Reply>>,
    job_tx: Sender<Job>,
    prio_tx: Sender<Job>,
}

impl Coordinator {
    fn run(mut self, requests: Receiver<Request>, done: Receiver<JobDone>) {
        let rescan = crossbeam_channel::tick(self.cfg.rescan_interval);
        let snapshot = crossbeam_channel::tick(Duration::from_millis(SNAPSHOT_INTERVAL_MS));
        self.scan();
        loop {
            select! {
                recv(requests) -> r => match r {
                    Ok(r) => self.request(r),
                    Err(_) => return,
                },
                recv(done) -> d => if let Ok(d) = d { self.finished(d) },
                recv(rescan) -> _ => self.scan(),
                recv(snapshot) -> _ => self.publish(),
            }
            if self.queued.is_empty() {
                self.publish();
            }
        }
    }

    fn publish(&mut self) {
        if self.dirty {
            self.catalog.store(Arc::new(self.map.clone()));
            self.dirty = false;
        }
    }

    /// Resolves a relative path to a regular file inside the root, following symlinks
    /// only while they stay inside it. `None` for anything else.
    fn resolve(&self, rel_path: &str) -> Option<(PathBuf, SourceStat)> {
        let joined = self.cfg.root.join(rel_path);
        let real = fs::canonicalize(&joined).ok()?;
        if !real.starts_with(&self.cfg.root) || real.starts_with(&self.cfg.index_dir) {
            return None;
        }
        let meta = fs::metadata(&real).ok()?;
        meta.is_file()
            .then(|| (real, SourceStat::from_metadata(&meta)))
    }

    fn enqueue(&mut self, rel_path: String, abs_path: PathBuf, stat: SourceStat, urgent: bool) {
        self.enqueue_job(rel_path, abs_path, stat, urgent, false)
    }

    fn enqueue_job(
        &mut self,
        rel_path: String,
        abs_path: PathBuf,
        stat: SourceStat,
        urgent: bool,
        rebuild: bool,
    ) {
        if !self.queued.insert(rel_path.clone()) {
            return;
        }
        let job = Job {
            rel_path,
            abs_path,
            stat,
            rebuild,
        };
        let _ = if urgent {
            self.prio_tx.send(job)
        } else {
            self.job_tx.send(job)
        };
    }

    fn request(&mut self, r: Request) {
        match r {
            Request::Lookup { rel_path, reply } => {
                if let Some(e) = self.map.get(&rel_path) {
                    let _ = reply.send(Ok(e.clone()));
                    return;
                }
                let Some((abs, stat)) = self.resolve(&rel_path) else {
                    let _ = reply.send(Err(LookupError::NotFound));
                    return;
                };
                self.waiters
                    .entry(rel_path.clone())
                    .or_default()
                    .push(reply);
                self.enqueue(rel_path, abs, stat, true);
            }
            Request::Stale { rel_path, version } => {
                let current = self.map.get(&rel_path).map(|e| e.version());
                if current == Some(version) {
                    match self.resolve(&rel_path) {
                        Some((abs, stat)) => self.enqueue_job(rel_path, abs, stat, true, true),
                        None => self.remove(&rel_path),
                    }
                }
            }
        }
    }

    fn remove(&mut self, rel_path: &str) {
        if self.map.remove(rel_path).is_some() {
            tracing::info!(path = %rel_path, "unpublished (removed)");
            self.dirty = true;
        }
    }

    fn finished(&mut self, d: JobDone) {
        self.queued.remove(&d.rel_path);
        let waiters = self.waiters.remove(&d.rel_path).unwrap_or_default();
        match d.result {
            Ok(entry) => {
                let entry = Arc::new(entry);
                if let Some(old) = self.map.get(&d.rel_path) {
                    if old.version() != entry.version() {
                        tracing::info!(path = %d.rel_path, old = format_args!("{:016x}", old.version()),
                            new = format_args!("{:016x}", entry.version()), "content changed: new version");
                    }
                }
                self.map.insert(d.rel_path.clone(), entry.clone());
                self.dirty = true;
                for w in waiters {
                    let _ = w.send(Ok(entry.clone()));
                }
            }
            Err(IndexError::SourceChanged(_)) => {
                // Being written right now: try again on the next scan, or at once for a waiter.
                if !waiters.is_empty() {
                    if let Some((abs, stat)) = self.resolve(&d.rel_path) {
                        self.waiters.insert(d.rel_path.clone(), waiters);
                        self.enqueue(d.rel_path, abs, stat, true);
                        return;
                    }
                }
                for w in waiters {
                    let _ = w.send(Err(LookupError::NotFound));
                }
            }
            Err(e) => {
                tracing::warn!(path = %d.rel_path, error = %e, "cannot publish");
                self.remove(&d.rel_path);
                for w in waiters {
                    let _ = w.send(Err(LookupError::Failed(e.to_string())));
                }
            }
        }
    }

    /// Walks the root: new or changed files are (re)indexed, vanished ones unpublished.
    fn scan(&mut self) {
        let mut seen = HashSet::new();
        let mut found = VecDeque::new();
        let walker = walkdir::WalkDir::new(&self.cfg.root)
            .follow_links(false)
            .into_iter();
        let index_dir = self.cfg.index_dir.clone();
        for entry in walker
            .filter_entry(|e| !e.path().starts_with(&index_dir))
            .flatten()
        {
            let Ok(rel) = entry.path().strip_prefix(&self.cfg.root) else {
                continue;
            };
            let Some(rel) = rel.to_str() else { continue };
            if rel.is_empty() || entry.file_type().is_dir() {
                continue;
            }
            // Symlinks are published only when they resolve to a file inside the root.
            let Some((abs, stat)) = self.resolve(rel) else {
                continue;
            };
            let rel = rel.to_string();
            seen.insert(rel.clone());
            found.push_back((rel, abs, stat));
        }
        for (rel, abs, stat) in found {
            let unchanged = self.map.get(&rel).is_some_and(|e| e.index.stat == stat);
            if !unchanged {
                self.enqueue(rel, abs, stat, false);
            }
        }
        let gone: Vec<String> = self
            .map
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.remove(&k);
        }
    }
}
