//! Blocking work (file reads, stdin, fsync) run off the async runtime: below both the
//! stages in `aws` and the commands that use it.

use crate::error::{Error, Result};

/// Runs `work` on the runtime's blocking pool.
pub(crate) async fn run<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::io("a blocking task", std::io::Error::other(e)))?
}

/// Runs short blocking work (a small file written) from code that cannot await: on a
/// multi-threaded runtime the thread's other tasks move elsewhere meanwhile.
pub(crate) fn now<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}
