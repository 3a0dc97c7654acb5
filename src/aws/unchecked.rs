//! What a run could not check because its credentials may not read it: the permissions ore
//! needed are enough for imgpub, which uses the extra reads when they are allowed. Each
//! stage notes what it skipped; the binary says it once, at the end.

use std::sync::Mutex;

static SKIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Notes a check skipped for want of permission: `what` names it and the action.
pub(crate) fn note(what: impl Into<String>) {
    let what = what.into();
    tracing::debug!("not checked: {what}");
    let mut skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    if !skipped.contains(&what) {
        skipped.push(what);
    }
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

/// Everything noted so far, once.
pub(crate) fn take() -> Vec<String> {
    std::mem::take(&mut *SKIPPED.lock().unwrap_or_else(|e| e.into_inner()))
}
