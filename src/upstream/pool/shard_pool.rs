//! [`UpstreamPool`]: a shard's upstream connections, one per address, opened on demand
//! and replaced when broken, idle or full of handles; peer reports without repeats.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::{FutureExt, LocalBoxFuture, Shared};

use super::{
    config::{UpstreamConfig, MAX_UPSTREAMS_PER_SHARD},
    upstream::Upstream,
};
use crate::pure::protocol::{FileRef, PeerProblem};
use crate::runtime::{self};
use crate::upstream::connection::FetchError;

type Connecting = Shared<LocalBoxFuture<'static, Result<Rc<Upstream>, Rc<FetchError>>>>;

enum Entry {
    Ready(Rc<Upstream>),
    /// One connect per address at a time, however many requests wait for it.
    Connecting(Connecting),
}

/// A shard's upstream connections, one per address.
pub struct UpstreamPool {
    cfg: UpstreamConfig,
    conns: RefCell<HashMap<SocketAddr, Entry>>,
    /// When each (peer, problem) was last reported, so a peer that keeps failing is
    /// reported once per [`PEER_REPORT_REPEAT`].
    reported: RefCell<HashMap<(SocketAddr, PeerProblem), Instant>>,
}

/// The same peer and problem are reported at most once per this interval.
pub const PEER_REPORT_REPEAT: Duration = Duration::from_secs(10);
/// (peer, problem) pairs a pool remembers reporting, at most.
const MAX_REPORTED: usize = 1024;

impl UpstreamPool {
    pub fn new(cfg: UpstreamConfig) -> UpstreamPool {
        UpstreamPool {
            cfg,
            conns: RefCell::new(HashMap::new()),
            reported: RefCell::new(HashMap::new()),
        }
    }

    /// Whether the open connection to `addr` (none is opened) has a p2p registry at
    /// the other end.
    pub fn is_registry(&self, addr: SocketAddr) -> bool {
        matches!(self.conns.borrow().get(&addr), Some(Entry::Ready(up)) if up.registry)
    }

    /// Reports `peer` as unreachable or bad to the node at `to` that handed it out for
    /// `file` (see [`Upstream::report_peer`]), unless it was reported for the same
    /// problem within [`PEER_REPORT_REPEAT`]. Returns whether a report was sent.
    pub async fn report_peer(
        &self,
        to: SocketAddr,
        file: &FileRef,
        version: u64,
        peer: SocketAddr,
        problem: PeerProblem,
    ) -> bool {
        if peer == to {
            return false;
        }
        {
            let mut reported = self.reported.borrow_mut();
            let now = Instant::now();
            if reported
                .get(&(peer, problem))
                .is_some_and(|t| now.duration_since(*t) < PEER_REPORT_REPEAT)
            {
                return false;
            }
            if reported.len() >= MAX_REPORTED {
                reported.retain(|_, t| now.duration_since(*t) < PEER_REPORT_REPEAT);
                if reported.len() >= MAX_REPORTED {
                    reported.clear();
                }
            }
            reported.insert((peer, problem), now);
        }
        let sent = runtime::timeout(self.cfg.timeout, async {
            match self.get(to).await {
                Ok(up) => up.report_peer(file, version, peer, problem).await,
                Err(_) => false,
            }
        })
        .await
        .unwrap_or_default();
        if sent {
            tracing::info!(%peer, problem = problem.name(), to = %to, "reported a peer");
        }
        sent
    }

    /// Whether a usable connection to `addr` is open (not being made, broken or
    /// absent).
    pub fn is_connected(&self, addr: SocketAddr) -> bool {
        matches!(self.conns.borrow().get(&addr), Some(Entry::Ready(up)) if up.usable())
    }

    /// A usable connection to `addr`: the open one, or a new one.
    pub async fn get(&self, addr: SocketAddr) -> Result<Rc<Upstream>, FetchError> {
        let connecting = {
            let mut conns = self.conns.borrow_mut();
            match conns.get(&addr) {
                Some(Entry::Ready(up)) if up.usable() => return Ok(up.clone()),
                Some(Entry::Connecting(f)) => f.clone(),
                _ => {
                    if conns.len() >= MAX_UPSTREAMS_PER_SHARD && !conns.contains_key(&addr) {
                        let victim = conns
                            .iter()
                            .filter_map(|(a, e)| match e {
                                Entry::Ready(up) => Some((*a, up.last_used.get())),
                                Entry::Connecting(_) => None,
                            })
                            .min_by_key(|(_, t)| *t)
                            .map(|(a, _)| a);
                        if let Some(v) = victim {
                            conns.remove(&v);
                        }
                    }
                    let cfg = self.cfg.clone();
                    let f = async move {
                        Upstream::connect(addr, &cfg)
                            .await
                            .map(Rc::new)
                            .map_err(Rc::new)
                    }
                    .boxed_local()
                    .shared();
                    conns.insert(addr, Entry::Connecting(f.clone()));
                    f
                }
            }
        };
        let r = connecting.await;
        let mut conns = self.conns.borrow_mut();
        // The first waiter to wake files the result; later ones find it filed.
        if matches!(conns.get(&addr), Some(Entry::Connecting(_))) {
            match &r {
                Ok(up) => {
                    conns.insert(addr, Entry::Ready(up.clone()));
                }
                Err(_) => {
                    conns.remove(&addr);
                }
            }
        }
        r.map_err(|e| FetchError::clone(&e))
    }
}
