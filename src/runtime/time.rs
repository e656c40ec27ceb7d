//! Time on a shard: sleeping, and running a future with a deadline ([`Elapsed`]).

use std::future::Future;
use std::time::Duration;

/// A [`timeout`] ran out before its future finished.
#[derive(Debug, thiserror::Error)]
#[error("timed out")]
pub struct Elapsed;

/// Sleeps for `d` (other tasks of the shard run meanwhile).
pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await
}

/// Runs `fut` for at most `d`.
pub async fn timeout<T, F: Future<Output = T>>(d: Duration, fut: F) -> Result<T, Elapsed> {
    futures_lite::future::or(async { Ok(fut.await) }, async {
        sleep(d).await;
        Err(Elapsed)
    })
    .await
}
