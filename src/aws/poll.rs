//! The one way imgpub waits on AWS (an import, a copy, a snapshot's completion): look, show
//! how it is going, and look again on a fixed grid (the time a look takes does not stretch
//! it) until the work ends, fails, or the deadline passes.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::progress::Wait;

/// How often a wait asks how it is going once it is under way: the end is noticed within
/// `POLL` at a steady, low rate of describe calls.
pub(crate) const POLL: Duration = Duration::from_secs(5);

/// When the looks come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grid {
    /// Every [`POLL`] from the first look: work that takes minutes (imports, copies).
    Steady,
    /// 250 ms after the first look, then twice as long each time up to [`POLL`]: work that
    /// usually ends in moments (a snapshot's completion after its last block).
    QuickStart,
}

/// What one look found.
#[derive(Debug)]
pub(crate) enum Look<T> {
    /// Still going: its state for the progress line, and how far, when known.
    Going { state: String, percent: Option<u64> },
    /// Done: the result, and the word the progress line ends with.
    Done { value: T, said: String },
}

/// Calls `look` (with the number of the look, from 1) on `grid` until it is done or fails;
/// shows the progress under `what`. Past `deadline`, fails as [`ErrorKind::Timeout`] with
/// `timed_out` as its detail (what goes on in AWS, and what a rerun does).
pub(crate) async fn poll_until<T, F, Fut>(
    what: &str,
    grid: Grid,
    deadline: Instant,
    timed_out: impl FnOnce() -> String,
    mut look: F,
) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<Look<T>>>,
{
    let wait = Wait::new(what);
    let mut next = Instant::now();
    let mut step = match grid {
        Grid::Steady => POLL,
        Grid::QuickStart => Duration::from_millis(250),
    };
    for n in 1.. {
        next += step;
        step = (step * 2).min(POLL);
        match look(n).await? {
            Look::Done { value, said } => {
                wait.finish(&said);
                return Ok(value);
            }
            Look::Going { state, percent } => wait.update(&state, percent),
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep_until(next.min(deadline).into()).await;
    }
    Err(Error::failed(what, ErrorKind::Timeout, None, timed_out()))
}
