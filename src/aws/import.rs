//! ImportSnapshot and its polling. A rerun reuses a finished snapshot tagged with the name, or
//! a task with the name as description that is still running or finished, instead of
//! importing again; a stable ClientToken makes the call itself idempotent.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, ImportSnapshotTask, SnapshotDiskContainer, UserBucket};
use aws_sdk_ec2::Client;
use sha2::{Digest, Sha256};

use crate::aws::calls::Op;
use crate::aws::poll::{poll_until, Grid, Look};
use crate::aws::propagation::{naming, Age};
use crate::aws::s3::S3Object;
use crate::aws::tags::tag;
use crate::error::{aws, Error, ErrorKind, Result};
use crate::image::ObjectFormat;

/// How long to wait between tries while the region is at its concurrent-import limit.
const LIMIT_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub(crate) struct ImportRequest {
    /// Becomes the task description and the snapshot's `Name` tag.
    pub name: String,
    pub object: S3Object,
    pub format: ObjectFormat,
    pub role_name: String,
    /// Identifies the object's content (its ETag), so a changed image gets a new import.
    pub object_etag: String,
    pub encryption: Encryption,
    pub timeout: Duration,
}

/// How the imported snapshot is encrypted (`--encrypted`, `--kms-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Encryption {
    None,
    /// The account's default EBS key.
    DefaultKey,
    /// This KMS key (id, alias or ARN).
    Key(String),
}

impl Encryption {
    pub(crate) fn is_encrypted(&self) -> bool {
        !matches!(self, Encryption::None)
    }

    /// For the client token: another encryption is another import (`""`: not encrypted).
    pub(crate) fn token_part(&self) -> &str {
        match self {
            Encryption::None => "",
            Encryption::DefaultKey => "encrypted",
            Encryption::Key(key) => key,
        }
    }
}

impl ImportRequest {
    /// The same inputs give the same token, so a repeated call returns the same task.
    pub(crate) fn client_token(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.name.as_str(),
            &self.object.bucket,
            &self.object.key,
            self.format.as_str(),
            &self.object_etag,
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        // Only when encrypted, so an unencrypted import keeps the token earlier versions gave.
        if let Some(part) = Some(self.encryption.token_part()).filter(|p| !p.is_empty()) {
            h.update(part.as_bytes());
            h.update([0]);
        }
        format!("imgpub-{}", &hex::encode(h.finalize())[..48])
    }
}

/// A completed snapshot of ours tagged `Name=<name>`.
pub(crate) async fn find_snapshot_by_name(ec2: &Client, name: &str) -> Result<Option<String>> {
    let out = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(Filter::builder().name("tag:Name").values(name).build())
        .filters(Filter::builder().name("status").values("completed").build())
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DescribeSnapshots,
                format!("looking for a snapshot named {name}"),
                e,
            )
        })?;
    let mut found: Vec<_> = out
        .snapshots()
        .iter()
        .filter_map(|s| Some((s.start_time().copied(), s.snapshot_id()?.to_string())))
        .collect();
    found.sort_by_key(|s| std::cmp::Reverse(s.0));
    if found.len() > 1 {
        tracing::warn!(
            "{} snapshots are named {name}; using the newest, {}",
            found.len(),
            found[0].1
        );
    }
    Ok(found.into_iter().next().map(|(_, id)| id))
}

/// A snapshot's size in GiB.
pub(crate) async fn snapshot_size_gib(ec2: &Client, id: &str, age: Age) -> Result<i32> {
    let what = format!("reading the size of {id}");
    let out = naming(age, &what, || async {
        ec2.describe_snapshots()
            .snapshot_ids(id)
            .send()
            .await
            .map_err(|e| aws(Op::Ec2DescribeSnapshots, &what, e))
    })
    .await?;
    out.snapshots()
        .first()
        .and_then(|s| s.volume_size())
        .ok_or_else(|| Error::missing(Op::Ec2DescribeSnapshots, "VolumeSize"))
}

/// Whether a snapshot still exists (a finished import's may have been deleted since).
async fn snapshot_exists(ec2: &Client, id: &str) -> Result<bool> {
    match ec2.describe_snapshots().snapshot_ids(id).send().await {
        Ok(out) => Ok(!out.snapshots().is_empty()),
        Err(e) => match aws(Op::Ec2DescribeSnapshots, format!("looking for {id}"), e) {
            err if err.kind() == Some(ErrorKind::NotFound) => Ok(false),
            err => Err(err),
        },
    }
}

/// What an import task looks like to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskState {
    Running {
        /// `pending`, `active`, … as AWS says it.
        status: Option<String>,
        progress: Option<String>,
        message: Option<String>,
    },
    Completed {
        snapshot_id: String,
    },
    Failed {
        message: String,
        /// AWS refused the image itself (`StatusMessage: "ClientError: …"`): importing the
        /// same object again cannot work.
        image_rejected: bool,
    },
}

fn task_state(task: &aws_sdk_ec2::types::ImportSnapshotTask) -> TaskState {
    let detail = task.snapshot_task_detail();
    let status = detail.and_then(|d| d.status());
    let message = detail.and_then(|d| d.status_message()).map(str::to_owned);
    match status {
        Some("completed") => match detail.and_then(|d| d.snapshot_id()) {
            Some(id) => TaskState::Completed {
                snapshot_id: id.to_string(),
            },
            None => TaskState::Failed {
                message: "the task completed without a snapshot id".into(),
                image_rejected: false,
            },
        },
        Some(status @ ("deleting" | "deleted" | "cancelling" | "cancelled")) => {
            // The status message's prefix is AWS's fault class (ClientError, ServerError).
            let image_rejected = message
                .as_deref()
                .is_some_and(|m| m.starts_with("ClientError"));
            TaskState::Failed {
                message: message.unwrap_or_else(|| format!("the task was {status}")),
                image_rejected,
            }
        }
        // What AWS says while it works (the step is in the message: validating,
        // converting, …), or nothing yet.
        None | Some("pending" | "active") => TaskState::Running {
            status: status.map(str::to_owned),
            progress: detail.and_then(|d| d.progress()).map(str::to_owned),
            message,
        },
        // Not a state AWS documents: waiting on it could last until the timeout for
        // nothing.
        Some(other) => TaskState::Failed {
            message: format!(
                "the task is in state {other:?}{}, which imgpub does not know; see `aws ec2 describe-import-snapshot-tasks --import-task-ids {}`",
                message.map(|m| format!(" ({m})")).unwrap_or_default(),
                task.import_task_id().unwrap_or("…")
            ),
            image_rejected: false,
        },
    }
}

/// The tasks of the account in this region whose description is `name` (AWS lists tasks
/// for about a week).
async fn tasks_named(ec2: &Client, name: &str) -> Result<Vec<ImportSnapshotTask>> {
    let mut pages = ec2.describe_import_snapshot_tasks().into_paginator().send();
    let mut tasks = vec![];
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            aws(
                Op::Ec2DescribeImportSnapshotTasks,
                "listing import snapshot tasks",
                e,
            )
        })?;
        tasks.extend(
            page.import_snapshot_tasks()
                .iter()
                .filter(|t| t.description() == Some(name))
                .cloned(),
        );
    }
    Ok(tasks)
}

/// The size of the image (the S3 object) that a finished task named `name` made `snapshot`
/// from, when AWS still lists the task.
pub(crate) async fn imported_image_size(
    ec2: &Client,
    name: &str,
    snapshot: &str,
) -> Result<Option<u64>> {
    Ok(tasks_named(ec2, name).await?.iter().find_map(|task| {
        let detail = task.snapshot_task_detail()?;
        (detail.snapshot_id() == Some(snapshot))
            .then(|| detail.disk_image_size().map(|s| s as u64))
            .flatten()
    }))
}

/// A task of ours with `name` as its description that is running or has finished well.
pub(crate) async fn find_task_by_name(
    ec2: &Client,
    name: &str,
) -> Result<Option<(String, TaskState)>> {
    let mut best = None;
    for task in tasks_named(ec2, name).await? {
        let state = task_state(&task);
        let id = task
            .import_task_id()
            .ok_or_else(|| Error::missing(Op::Ec2DescribeImportSnapshotTasks, "ImportTaskId"))?
            .to_string();
        match state {
            TaskState::Failed { .. } => {}
            TaskState::Completed { .. } => best = Some((id, state)),
            TaskState::Running { .. } if best.is_none() => best = Some((id, state)),
            TaskState::Running { .. } => {}
        }
    }
    Ok(best)
}

/// Starts the import; while the region is at its concurrent-import limit, waits and tries
/// again until the `deadline`.
async fn start_import(ec2: &Client, req: &ImportRequest, deadline: Instant) -> Result<String> {
    let url = req.object.to_string();
    loop {
        let result = ec2
            .import_snapshot()
            .description(&req.name)
            .role_name(&req.role_name)
            .client_token(req.client_token())
            .set_encrypted(req.encryption.is_encrypted().then_some(true))
            .set_kms_key_id(match &req.encryption {
                Encryption::Key(key) => Some(key.clone()),
                _ => None,
            })
            .disk_container(
                SnapshotDiskContainer::builder()
                    .format(req.format.as_str())
                    .user_bucket(
                        UserBucket::builder()
                            .s3_bucket(&req.object.bucket)
                            .s3_key(&req.object.key)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(out) => {
                let id = out
                    .import_task_id()
                    .ok_or_else(|| Error::missing(Op::Ec2ImportSnapshot, "ImportTaskId"))?
                    .to_string();
                tracing::info!("importing {url} as a snapshot: task {id}");
                return Ok(id);
            }
            Err(e) => {
                let err = aws(
                    Op::Ec2ImportSnapshot,
                    format!("starting the import of {url}"),
                    e,
                );
                match err.code() {
                    Some("ResourceLimitExceeded") if Instant::now() + LIMIT_WAIT < deadline => {
                        tracing::warn!(
                            "the region is at its limit of concurrent imports; trying again in {}s",
                            LIMIT_WAIT.as_secs()
                        );
                        tokio::time::sleep(LIMIT_WAIT).await;
                    }
                    // What EC2 answers for a role it cannot use, among other parameters.
                    Some("InvalidParameter") => {
                        return Err(err.with_hint(&format!(
                            "if it is the role: check that {} exists and trusts VM Import/Export, or create it with `imgpub aws initialize --bucket {}`",
                            req.role_name, req.object.bucket
                        )))
                    }
                    _ => return Err(err),
                }
            }
        }
    }
}

/// Polls the task until it finishes or the `deadline` passes (`timeout` is the whole
/// wait's, for the message); returns the snapshot id, or AWS's reason for ending it.
async fn wait_for_import(
    ec2: &Client,
    task_id: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<String> {
    let timed_out = || {
        format!(
            "not finished within the import timeout ({}s, the wait for a free import slot included); it keeps running in AWS, and a rerun of the same command picks it up",
            timeout.as_secs()
        )
    };
    let what = format!("import task {task_id}");
    poll_until(&what, Grid::Steady, deadline, timed_out, |_| async {
        let out = ec2
            .describe_import_snapshot_tasks()
            .import_task_ids(task_id)
            .send()
            .await
            .map_err(|e| {
                aws(
                    Op::Ec2DescribeImportSnapshotTasks,
                    format!("checking import task {task_id}"),
                    e,
                )
            })?;
        let task = out.import_snapshot_tasks().first().ok_or_else(|| {
            Error::failed(
                format!("checking import task {task_id}"),
                ErrorKind::NotFound,
                None,
                "AWS no longer lists the task",
            )
        })?;
        match task_state(task) {
            TaskState::Completed { snapshot_id } => {
                tracing::info!("import task {task_id} finished: snapshot {snapshot_id}");
                Ok(Look::Done {
                    said: format!("completed: {snapshot_id}"),
                    value: snapshot_id,
                })
            }
            TaskState::Failed {
                message,
                image_rejected,
            } => {
                let kind = if image_rejected {
                    ErrorKind::ImageRejected
                } else {
                    ErrorKind::TaskFailed
                };
                Err(Error::failed(
                    format!("import task {task_id}"),
                    kind,
                    None,
                    format!("AWS ended the import: {message}"),
                ))
            }
            TaskState::Running {
                status,
                progress,
                message,
            } => {
                // `active: converting`, `pending`, …
                let state = match (status, message) {
                    (Some(s), Some(m)) => format!("{s}: {m}"),
                    (Some(one), None) | (None, Some(one)) => one,
                    (None, None) => "running".to_string(),
                };
                let percent = progress.as_deref().and_then(|p| p.trim().parse().ok());
                Ok(Look::Going { state, percent })
            }
        }
    })
    .await
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImportOutcome {
    pub snapshot_id: String,
    /// The task this run started or waited for; `None` when a finished snapshot was reused.
    pub task_id: Option<String>,
    /// Whether this run started the import.
    pub started: bool,
}

/// The snapshot for `req.name`: a running or finished task's, or a new import (always a new
/// one when `fresh`). The snapshot is tagged `Name=<name>` plus `tags`.
pub(crate) async fn import_snapshot(
    ec2: &Client,
    req: &ImportRequest,
    tags: &[(String, String)],
    fresh: bool,
) -> Result<ImportOutcome> {
    // One deadline for the whole wait: a free import slot, then the import.
    let deadline = Instant::now() + req.timeout;
    let mut all_tags = vec![("Name".to_string(), req.name.clone())];
    all_tags.extend(tags.iter().cloned());
    let earlier = if fresh {
        None
    } else {
        find_task_by_name(ec2, &req.name).await?
    };
    let (task_id, started) = match earlier {
        Some((id, TaskState::Completed { snapshot_id }))
            if snapshot_exists(ec2, &snapshot_id).await? =>
        {
            tracing::info!(
                "import task {id} for {} already finished: snapshot {snapshot_id}",
                req.name
            );
            tag(ec2, &snapshot_id, &all_tags, Age::Known).await?;
            return Ok(ImportOutcome {
                snapshot_id,
                task_id: Some(id),
                started: false,
            });
        }
        Some((id, TaskState::Completed { snapshot_id })) => {
            // Deleted since (delete-image): import again. The same token would return that
            // finished task, so this import's names the snapshot it replaces (and a rerun
            // finds it again by that).
            tracing::warn!(
                "import task {id} for {} finished, but its snapshot {snapshot_id} has been deleted since; importing again",
                req.name
            );
            let again = ImportRequest {
                object_etag: format!("{}-replacing-{snapshot_id}", req.object_etag),
                ..req.clone()
            };
            (start_import(ec2, &again, deadline).await?, true)
        }
        Some((id, _)) => {
            tracing::info!(
                "import task {id} for {} is already running; waiting for it",
                req.name
            );
            (id, false)
        }
        None => (start_import(ec2, req, deadline).await?, true),
    };
    let snapshot_id = wait_for_import(ec2, &task_id, deadline, req.timeout).await?;
    tag(ec2, &snapshot_id, &all_tags, Age::New).await?;
    Ok(ImportOutcome {
        snapshot_id,
        task_id: Some(task_id),
        started,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::SnapshotTaskDetail;

    fn task(status: Option<&str>) -> ImportSnapshotTask {
        ImportSnapshotTask::builder()
            .import_task_id("import-snap-1")
            .snapshot_task_detail(
                SnapshotTaskDetail::builder()
                    .set_status(status.map(str::to_string))
                    .status_message("converting")
                    .build(),
            )
            .build()
    }

    #[test]
    fn a_task_in_a_state_aws_does_not_document_ends_the_wait() {
        for running in [None, Some("pending"), Some("active")] {
            assert!(
                matches!(task_state(&task(running)), TaskState::Running { .. }),
                "{running:?}"
            );
        }
        match task_state(&task(Some("paused"))) {
            TaskState::Failed {
                message,
                image_rejected: false,
            } => assert!(
                message.contains("\"paused\"") && message.contains("import-snap-1"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
