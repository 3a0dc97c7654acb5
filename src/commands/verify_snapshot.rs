//! `verify-snapshot`: reads a completed snapshot back with the EBS direct read APIs and
//! compares every block with an image; it keeps the snapshot's block map as read (without
//! `--file`, that is all it does: a lost map rebuilt, for `--parent`). Read-only in AWS.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::aws::calls::{Call, Op, Resource};
use crate::aws::ebs_read;
use crate::commands::driver::{Account, Command, Emit, Output};
use crate::error::{aws, Error, Result};
use crate::image::{self, Disk, ImageInfo};

#[derive(Debug, Clone)]
pub struct VerifySnapshotOptions {
    /// The image the snapshot should hold (raw or VMDK); without one, only the map.
    pub file: Option<PathBuf>,
    pub snapshot: String,
    /// Blocks read at once.
    pub blocks_in_flight: usize,
}

/// The snapshot, as EC2 and EBS describe it.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    info: Option<ImageInfo>,
    volume_size_gib: i32,
    encrypted: bool,
    /// The blocks it holds, with their tokens.
    listed: std::collections::BTreeMap<i32, String>,
}

/// The JSON line.
#[derive(Debug, Serialize)]
struct Verified<'a> {
    snapshot: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    blocks_compared: u64,
    blocks_differing: usize,
    /// The first differing blocks (at most 20).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    differing: Vec<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    block_map: Option<String>,
    status: Status,
}

/// What the read found.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    /// Every block equals the file's.
    Verified,
    /// No file: the snapshot was read for its block map.
    Mapped,
    /// Some blocks are not the file's.
    Differs,
}

impl Command for VerifySnapshotOptions {
    type Connection = Account;
    type Local = Option<ImageInfo>;
    type Plan = Plan;

    fn validate(&self) -> Result<Option<ImageInfo>> {
        crate::aws::images::check_snapshot_id("--snapshot", &self.snapshot)?;
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let info = image::inspect(file)?;
        image::check_direct(file, &info, None)?;
        Ok(Some(info))
    }

    async fn plan(&self, a: &Account, info: Option<ImageInfo>) -> Result<Plan> {
        use aws_sdk_ec2::types::SnapshotState;
        let id = &self.snapshot;
        let what = format!("reading snapshot {id}");
        let described = a
            .ctx
            .ec2()
            .describe_snapshots()
            .snapshot_ids(id)
            .send()
            .await
            .map_err(|e| {
                let err = aws(Op::Ec2DescribeSnapshots, &what, e);
                match err.code() {
                    Some("InvalidSnapshot.NotFound") => Error::Invalid(format!(
                        "snapshot {id} does not exist in {}; check --snapshot and --region",
                        a.ctx.region
                    )),
                    _ => err,
                }
            })?;
        let snapshot = described.snapshots().first().ok_or_else(|| {
            Error::Invalid(format!("snapshot {id} does not exist in {}", a.ctx.region))
        })?;
        if snapshot.state() != Some(&SnapshotState::Completed) {
            return Err(Error::Invalid(format!(
                "snapshot {id} is {}: EBS reads only completed snapshots; rerun once it is completed",
                snapshot.state().map_or("in an unknown state", |s| s.as_str())
            )));
        }
        let volume_size_gib = snapshot.volume_size().unwrap_or_default();
        if let (Some(info), Some(file)) = (&info, &self.file) {
            let image_gib = info.virtual_size_gib().unwrap_or(0);
            if image_gib > volume_size_gib as u64 {
                return Err(Error::Invalid(format!(
                    "{} is a {image_gib} GiB disk, larger than snapshot {id} ({volume_size_gib} GiB): it is another image",
                    file.display()
                )));
            }
        }
        let listed = ebs_read::list_blocks(&a.clients().ebs, id).await?;
        Ok(Plan {
            info,
            volume_size_gib,
            encrypted: snapshot.encrypted().unwrap_or(false),
            listed,
        })
    }

    /// The reads that follow the plan's (nothing it does changes anything).
    fn check(&self, a: &Account, _: &Plan) -> Vec<Call> {
        let snapshot = Resource::Snapshot(Some(self.snapshot.clone()));
        vec![Call::new(
            Op::EbsGetSnapshotBlock,
            &a.ctx.region,
            vec![snapshot],
        )]
    }

    /// Reads only: an AccessDenied names its action.
    fn policy(&self, _: &Account, _: &Plan, _: &[Call]) -> Option<String> {
        None
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        let disk = match (&self.file, &plan.info) {
            (Some(path), Some(info)) => {
                let (path, info) = (path.clone(), info.clone());
                Some(Arc::new(
                    crate::blocking::run(move || Disk::open(&path, &info)).await?,
                ))
            }
            _ => None,
        };
        let compared = ebs_read::compare(
            &a.clients().ebs,
            &self.snapshot,
            plan.volume_size_gib,
            plan.encrypted,
            &plan.listed,
            disk,
            self.blocks_in_flight,
        )
        .await?;
        let file = self.file.as_ref().map(|f| f.display().to_string());
        let shown = file.clone().unwrap_or_default();
        let id = &self.snapshot;
        if !compared.differing.is_empty() {
            let first: Vec<String> = compared
                .differing
                .iter()
                .take(20)
                .map(i32::to_string)
                .collect();
            emit(Output::json(&Verified {
                snapshot: id,
                file: file.clone(),
                blocks_compared: compared.compared,
                blocks_differing: compared.differing.len(),
                differing: compared.differing.iter().take(20).copied().collect(),
                block_map: None,
                status: Status::Differs,
            }));
            return Err(Error::Conflict(format!(
                "snapshot {id} is not {shown}: {} of {} blocks differ (first: {}); publish the image again with --force",
                compared.differing.len(),
                compared.compared,
                first.join(", ")
            )));
        }
        // What was read is what the snapshot holds: its map, for a later --parent.
        let map = compared.map;
        let dir = crate::aws::ebs_journal::cache_dir();
        let region = a.ctx.region.clone();
        let kept = match dir {
            Some(dir) => crate::blocking::run(move || map.save(&dir, &region))
                .await
                .map(|p| p.display().to_string())
                .map_err(|e| tracing::warn!("{e}"))
                .ok(),
            None => None,
        };
        emit(Output::json(&Verified {
            snapshot: id,
            file,
            blocks_compared: compared.compared,
            blocks_differing: 0,
            differing: vec![],
            block_map: kept.clone(),
            status: match self.file {
                Some(_) => Status::Verified,
                None => Status::Mapped,
            },
        }));
        let kept = kept.map_or(String::new(), |p| format!("; its block map is in {p}"));
        emit(Output::Summary(match &self.file {
            Some(_) => format!(
                "verify-snapshot: {id} holds {shown}: {} blocks read back equal{kept}",
                compared.compared
            ),
            None => format!(
                "verify-snapshot: read the {} blocks of {id}{kept}",
                compared.compared
            ),
        }));
        Ok(())
    }
}
