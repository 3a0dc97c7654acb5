//! EC2 is eventually consistent: "If you run a command to modify or describe a resource
//! immediately after its creation, its ID might not have propagated throughout the system,
//! and you will get an error responding that the resource does not exist" (EC2 Developer
//! Guide, "Eventual consistency in the Amazon EC2 API", which advises retrying with
//! backoff). A call naming an AMI or snapshot this run has just made goes through
//! [`naming`] with [`Age::New`]: its NotFound is asked again for up to [`PATIENCE`]. One
//! named by the user or found by a describe call is [`Age::Known`]: its NotFound is final.
//! IAM is eventually consistent too ("Changes that I make are not always immediately
//! visible", IAM User Guide): a role IAM says exists may read as NoSuchEntity for a while.

use std::future::Future;
use std::time::Duration;

use crate::error::Result;

/// How long a new resource may stay unknown before its NotFound is taken as final.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);
const FIRST_WAIT: Duration = Duration::from_secs(1);
const LONGEST_WAIT: Duration = Duration::from_secs(8);

/// The codes EC2 answers for an AMI or snapshot it does not know (yet), and IAM for a role
/// or user.
const UNKNOWN: &[&str] = &[
    "InvalidAMIID.NotFound",
    "InvalidSnapshot.NotFound",
    "NoSuchEntity",
];

/// How long ago the resource a call names was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Age {
    /// Named by the user, or found by an earlier describe call.
    Known,
    /// Made by this run a moment ago: maybe not visible everywhere yet.
    New,
}

/// Runs `call`; for a [`Age::New`] resource, again after a growing wait while EC2 answers
/// that it does not know it, for up to [`PATIENCE`]. Any other answer is returned as it is.
pub(crate) async fn naming<T, F, Fut>(age: Age, what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let (mut wait, mut waited) = (FIRST_WAIT, Duration::ZERO);
    loop {
        match call().await {
            Err(e)
                if age == Age::New
                    && UNKNOWN.contains(&e.code().unwrap_or(""))
                    && waited < PATIENCE =>
            {
                tracing::debug!("{what}: not visible yet ({e}); asking again in {wait:?}");
                tokio::time::sleep(wait).await;
                waited += wait;
                wait = (wait * 2).min(LONGEST_WAIT);
            }
            other => return other,
        }
    }
}
