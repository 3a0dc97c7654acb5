//! EC2 is eventually consistent: "If you run a command to modify or describe a resource
//! immediately after its creation, its ID might not have propagated throughout the system,
//! and you will get an error responding that the resource does not exist" (EC2 Developer
//! Guide, "Eventual consistency in the Amazon EC2 API", which advises retrying with
//! backoff). Calls naming an AMI or snapshot imgpub has just made or found go through
//! [`until_seen`].

use std::future::Future;
use std::time::Duration;

use crate::error::{ErrorKind, Result};

/// How long a resource may stay unknown before its NotFound is taken as final.
const PATIENCE: Duration = Duration::from_secs(60);
const FIRST_WAIT: Duration = Duration::from_secs(1);
const LONGEST_WAIT: Duration = Duration::from_secs(8);

/// Runs `call`, and again after a growing wait while it answers NotFound, for up to
/// [`PATIENCE`]; any other answer, or a NotFound that lasts, is returned as it is.
pub(crate) async fn until_seen<T, F, Fut>(what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let (mut wait, mut waited) = (FIRST_WAIT, Duration::ZERO);
    loop {
        match call().await {
            Err(e) if e.kind() == Some(ErrorKind::NotFound) && waited < PATIENCE => {
                tracing::debug!("{what}: not visible yet ({e}); asking again in {wait:?}");
                tokio::time::sleep(wait).await;
                waited += wait;
                wait = (wait * 2).min(LONGEST_WAIT);
            }
            other => return other,
        }
    }
}
