//! What a run could not check because its credentials may not read it: the permissions ore
//! needed are enough for imgpub, which uses the extra reads when they are allowed. Each
//! stage notes what it skipped; the binary says it once, at the end.

use std::future::Future;
use std::sync::Mutex;

tokio::task_local! {
    /// The notes of the run under way: a task-local, so runs side by side (a release's
    /// accounts) each say their own.
    static SKIPPED: Mutex<Vec<String>>;
}

/// Notes a check skipped for want of permission: `what` names it and the action.
pub(crate) fn note(what: impl Into<String>) {
    let what = what.into();
    tracing::debug!("not checked: {what}");
    // Outside a run (a library call of its own) the debug line is all.
    let _ = SKIPPED.try_with(|skipped| {
        let mut skipped = skipped.lock().unwrap_or_else(|e| e.into_inner());
        if !skipped.contains(&what) {
            skipped.push(what);
        }
    });
}

/// A read that tells whether a setting still has to be made: refused for want of
/// permission, it is noted (`what`) and the setting made again, as ore would.
pub(crate) fn or_make_again(
    read: crate::error::Result<bool>,
    what: &str,
) -> crate::error::Result<bool> {
    match read {
        Err(e) if e.kind() == Some(crate::error::ErrorKind::AccessDenied) => {
            note(what);
            Ok(true)
        }
        other => other,
    }
}

/// Runs `run`, and returns with its result everything it noted, once each.
pub(crate) async fn collect<F: Future>(run: F) -> (F::Output, Vec<String>) {
    SKIPPED
        .scope(Mutex::new(vec![]), async {
            let out = run.await;
            let notes =
                SKIPPED.with(|s| std::mem::take(&mut *s.lock().unwrap_or_else(|e| e.into_inner())));
            (out, notes)
        })
        .await
}
