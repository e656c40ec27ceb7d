//! A shard's inbox: the requests other shards send it over the router (a block it
//! owns, a cached file's metadata, a ping, a peer report to pass on), each served on
//! its own task, with the answer sent back over the router.

use std::rc::Rc;

use super::router::RouterMsg;
use super::shard::{Shard, ShardRole};
use crate::error::Refusal;
use crate::runtime::{self, Receivers};

/// Starts one task per peer shard that serves its requests and delivers its answers.
pub fn serve(shard: Rc<Shard>, mut receivers: Receivers<RouterMsg>) {
    for (_peer, rx) in receivers.streams() {
        let shard = shard.clone();
        runtime::spawn_detached(async move {
            while let Some(msg) = rx.recv().await {
                let Some(request) = shard.router.settle(msg) else {
                    continue;
                };
                match request {
                    RouterMsg::Read {
                        req,
                        from,
                        content,
                        index,
                        may_fetch,
                    } => {
                        answer(&shard, from, async move |shard: Rc<Shard>| {
                            let result = shard.local_block(content, index, may_fetch).await;
                            RouterMsg::Done { req, result }
                        });
                    }
                    RouterMsg::Lookup {
                        req,
                        from,
                        key,
                        may_fetch,
                    } => {
                        answer(&shard, from, async move |shard: Rc<Shard>| {
                            let result = match &shard.role {
                                ShardRole::Cache(cache) => cache.local_lookup(key, may_fetch).await,
                                // Only a cache's shards look files up by URL; an origin
                                // holds no cached copy of anything.
                                ShardRole::Origin(_) => Err(Refusal::NotFound(key.url())),
                            };
                            RouterMsg::LookupDone { req, result }
                        });
                    }
                    RouterMsg::Ping { req, from } => {
                        answer(&shard, from, async move |_| RouterMsg::Pong { req });
                    }
                    RouterMsg::Stall { ms } => {
                        std::thread::sleep(std::time::Duration::from_millis(ms));
                    }
                    RouterMsg::ReportPeer {
                        to,
                        file,
                        version,
                        peer,
                        problem,
                    } => {
                        // Reports come from a cache's fetches; an origin fetches nothing.
                        if let ShardRole::Cache(cache) = &shard.role {
                            cache.report_peer_here(to, &file, version, peer, problem);
                        }
                    }
                    // Answers were settled above.
                    RouterMsg::Done { .. }
                    | RouterMsg::LookupDone { .. }
                    | RouterMsg::Pong { .. } => {}
                }
            }
        });
    }
}

/// Serves one request on its own task and sends what `work` produces back to shard
/// `from`, so a slow request never holds up the others from that shard.
fn answer<F>(shard: &Rc<Shard>, from: usize, work: F)
where
    F: AsyncFnOnce(Rc<Shard>) -> RouterMsg + 'static,
{
    let shard = shard.clone();
    runtime::spawn_detached(async move {
        let reply = work(shard.clone()).await;
        shard.router.reply(from, reply).await;
    });
}
