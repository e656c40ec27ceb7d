//! Builders for the set-ups tests repeat: an origin publishing files from a directory
//! of its own, and a cache (a client cache and proxy unless its arguments say
//! otherwise). Each keeps its directories as long as it lives and dereferences to its
//! [`Node`].
//!
//! ```ignore
//! let origin = Origin::builder().file("f.bin", &data).args(&["-i"]).start();
//! let cache = Cache::builder().args(&["-M", "1M"]).start();
//! ```

use std::net::IpAddr;
use std::ops::{Deref, DerefMut};
use std::path::Path;

use tempfile::TempDir;

use super::{host, start_origin_on, write_file, Node};

/// Where a node listens: a fresh address and any free port unless told otherwise.
fn listen_at(at: Option<(IpAddr, u16)>) -> (IpAddr, u16) {
    at.unwrap_or_else(|| (host(), 0))
}

/// An origin (`-p`, 16 KiB blocks, two shards) publishing a directory of its own, with
/// its indexes in another (see [`start_origin_on`]).
pub struct Origin {
    pub node: Node,
    dir: TempDir,
    _idx: TempDir,
}

/// What an [`Origin`] publishes and how it runs.
#[derive(Default)]
pub struct OriginBuilder {
    files: Vec<(String, Vec<u8>)>,
    args: Vec<String>,
    at: Option<(IpAddr, u16)>,
}

impl Origin {
    pub fn builder() -> OriginBuilder {
        OriginBuilder::default()
    }

    /// The published directory (to add, change or remove files while it runs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl OriginBuilder {
    /// Publishes `data` as `rel` (directories made on the way).
    pub fn file(mut self, rel: &str, data: &[u8]) -> Self {
        self.files.push((rel.to_string(), data.to_vec()));
        self
    }

    /// Extra arguments (`-i`, `--rescan-interval 200`, ...).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Listens on `ip:port` (0: any free port) instead of a fresh address.
    pub fn on(mut self, ip: IpAddr, port: u16) -> Self {
        self.at = Some((ip, port));
        self
    }

    pub fn start(self) -> Origin {
        let (dir, idx) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for (rel, data) in &self.files {
            write_file(dir.path(), rel, data);
        }
        let (ip, port) = listen_at(self.at);
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let node = start_origin_on(ip, port, dir.path(), idx.path(), &args);
        Origin {
            node,
            dir,
            _idx: idx,
        }
    }
}

/// A cache (`-c DIR`, two shards) on a directory of its own: a client cache and HTTP
/// proxy, or with `-n` a site cache, `-S` a parent, `-C`/`-M` limits, `-A` hosts.
pub struct Cache {
    pub node: Node,
    dir: TempDir,
}

/// How a [`Cache`] runs.
#[derive(Default)]
pub struct CacheBuilder {
    args: Vec<String>,
    at: Option<(IpAddr, u16)>,
}

impl Cache {
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// The cache directory (its data and index files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl CacheBuilder {
    /// Extra arguments (`-n SUBNET`, `-S PARENT`, `-C 512k`, ...).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Listens on `ip:port` (0: any free port) instead of a fresh address.
    pub fn on(mut self, ip: IpAddr, port: u16) -> Self {
        self.at = Some((ip, port));
        self
    }

    pub fn start(self) -> Cache {
        let dir = tempfile::tempdir().unwrap();
        let (ip, port) = listen_at(self.at);
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let node = start_cache_on(ip, port, dir.path(), &args);
        Cache { node, dir }
    }
}

/// A cache (`-c DIR`, two shards) on `ip:port` with `extra` arguments.
pub fn start_cache_on(ip: IpAddr, port: u16, dir: &Path, extra: &[&str]) -> Node {
    let mut args = vec!["-c", dir.to_str().unwrap(), "--threads", "2"];
    args.extend_from_slice(extra);
    Node::start_on(ip, port, &args)
}

impl Deref for Origin {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl DerefMut for Origin {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.node
    }
}

impl Deref for Cache {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl DerefMut for Cache {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.node
    }
}
