//! What keeps a node serving and says whether it does: a connection's panic contained
//! and counted, the shards' liveness for `/_p2pd/health`, and the test-only hooks.

use std::rc::Rc;
use std::time::Duration;

use crate::metrics::ShardMetrics;
use crate::node::shard::Shard;

/// Runs work done for one connection under the panic policy (see `panics`): a panic
/// in it closes that connection only (its future is dropped), is counted in
/// `p2pd_panics_total` and logged once with its backtrace; `None` then.
pub(crate) async fn contained<T>(
    shard: &Shard,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    match crate::panics::contain(fut).await {
        Ok(v) => Some(v),
        Err(p) => {
            ShardMetrics::add(&shard.m().panics, 1);
            tracing::error!(shard = shard.id, panic = %p.0, "panic contained; the connection is closed and the shard goes on");
            None
        }
    }
}

/// How long `/_p2pd/health` waits for each shard to answer.
pub const HEALTH_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The shards that do not answer a ping within [`HEALTH_PING_TIMEOUT`] (all asked at
/// once); this shard answers by running this.
pub(crate) async fn silent_shards(shard: &Rc<Shard>) -> Vec<usize> {
    let pings = (0..shard.shards)
        .filter(|&i| i != shard.id)
        .map(|i| async move { (i, shard.router.ping(i, HEALTH_PING_TIMEOUT).await) });
    futures::future::join_all(pings)
        .await
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(i, _)| i)
        .collect()
}

/// Whether the test-only hooks are on (`P2PD_TEST_HOOKS=1` in the environment): the
/// endpoints under `/_p2pd/test/` that force a panic or a stall, for the tests of
/// the panic policy and of health. Off in every normal run.
pub fn test_hooks_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("P2PD_TEST_HOOKS").is_ok_and(|v| v == "1"))
}
