//! `delete-image`: deregister an AMI and delete its snapshot. [`plan`] finds the AMI (and,
//! with `detectFromAMI`, its snapshot); [`apply`] prints `{"image":…,"snapshot":…}`, what
//! it removed. With `--allow-missing` a rerun after a partial cleanup is fine.

use crate::aws::ami::{self, Deleted, SnapshotChoice};
use crate::aws::calls::{Call, Op, Resource};
use crate::commands::driver::{Account, Command, Emit, Output};
use crate::commands::needs::{self, For};
use crate::commands::Clients;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct DeleteOptions {
    /// The AMI; without it, only `snapshot` (an id) is deleted, as ore allows.
    pub ami: Option<String>,
    /// A snapshot id, or `detectFromAMI`.
    pub snapshot: Option<String>,
    pub allow_missing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub region: String,
    /// The AMI, when it exists.
    pub image: Option<String>,
    /// The snapshot to delete.
    pub snapshot: Option<String>,
    /// The AMI's snapshot, left as ore leaves it without `--snapshot`.
    pub kept: Option<String>,
    pub allow_missing: bool,
}

/// The flags, checked without AWS.
pub(crate) fn snapshot_choice(opts: &DeleteOptions) -> Result<SnapshotChoice> {
    if let Some(ami) = &opts.ami {
        crate::aws::images::check_image_id("--ami", ami)?;
    }
    Ok(match (opts.snapshot.as_deref(), &opts.ami) {
        (None, None) => {
            return Err(Error::Invalid(
                "nothing to delete: pass --ami ami-… (and --snapshot), or --snapshot snap-…".into(),
            ))
        }
        (None, Some(_)) => SnapshotChoice::None,
        (Some("detectFromAMI"), Some(_)) => SnapshotChoice::FromImage,
        (Some("detectFromAMI"), None) => {
            return Err(Error::Invalid(
                "--snapshot detectFromAMI reads the snapshot off --ami: pass --ami too".into(),
            ))
        }
        (Some(id), _) => {
            crate::aws::images::check_snapshot_id("--snapshot (or detectFromAMI)", id)?;
            SnapshotChoice::Id(id.to_string())
        }
    })
}

/// Looks the AMI up; a missing one is an error unless `--allow-missing`.
pub(crate) async fn plan(c: &Clients, opts: &DeleteOptions) -> Result<Plan> {
    let choice = snapshot_choice(opts)?;
    let found = match &opts.ami {
        Some(id) => {
            let found = ami::find_image(&c.ec2, &c.region, id).await?;
            if found.is_none() {
                if !opts.allow_missing {
                    return Err(Error::Invalid(format!(
                        "AMI {id} does not exist in this region; pass --allow-missing if that is fine"
                    )));
                }
                tracing::info!("AMI {id} does not exist; nothing to deregister");
            }
            found
        }
        None => None,
    };
    let kept = match (&choice, &found) {
        (SnapshotChoice::None, Some(image)) => ami::root_snapshot_of(image),
        _ => None,
    };
    let snapshot = match (choice, &found) {
        (SnapshotChoice::None, _) => None,
        (SnapshotChoice::Id(id), _) => Some(id),
        (SnapshotChoice::FromImage, Some(image)) => ami::root_snapshot_of(image),
        (SnapshotChoice::FromImage, None) => None,
    };
    if let Some(snapshot) = &snapshot {
        // EC2 refuses to delete the root snapshot of a registered AMI (DeleteSnapshot API
        // reference): say which AMI holds it before anything is deregistered.
        let deregistered = found.as_ref().and(opts.ami.as_deref());
        let users = ami::images_using_snapshot(&c.ec2, snapshot).await?;
        if let Some(other) = users.iter().find(|id| Some(id.as_str()) != deregistered) {
            return Err(Error::Invalid(format!(
                "snapshot {snapshot} is used by AMI {other}, and EC2 refuses to delete the snapshot of a registered AMI; remove both: imgpub aws delete-image --ami {other} --snapshot {snapshot}"
            )));
        }
    }
    Ok(Plan {
        region: c.region.clone(),
        image: found.and(opts.ami.clone()),
        snapshot,
        kept,
        allow_missing: opts.allow_missing,
    })
}

/// The calls [`apply`] will make.
pub(crate) fn check(plan: &Plan) -> Vec<Call> {
    let mut calls = vec![];
    if let Some(id) = &plan.image {
        let image = vec![Resource::Image(Some(id.clone()))];
        calls.push(Call::new(Op::Ec2DeregisterImage, &plan.region, image));
    }
    if let Some(id) = &plan.snapshot {
        let snapshot = vec![Resource::Snapshot(Some(id.clone()))];
        calls.push(Call::new(Op::Ec2DeleteSnapshot, &plan.region, snapshot));
    }
    calls
}

/// Every operation `delete-image` may make.
pub(crate) const MAY_CALL: &[Op] = &[
    Op::Ec2DescribeImages,
    Op::Ec2DeregisterImage,
    Op::Ec2DeleteSnapshot,
    Op::IamSimulatePrincipalPolicy,
];

pub(crate) async fn apply(c: &Clients, plan: &Plan) -> Result<Deleted> {
    match &plan.image {
        Some(id) => {
            ami::deregister_image(&c.ec2, id, plan.snapshot.as_deref(), plan.allow_missing).await
        }
        None => Ok(Deleted {
            image: None,
            snapshot: match &plan.snapshot {
                Some(id) => ami::delete_snapshot(&c.ec2, id, plan.allow_missing).await?,
                None => None,
            },
        }),
    }
}

/// What was deleted, and the snapshot left when only the AMI was asked for.
fn summary(plan: &Plan, deleted: &Deleted) -> String {
    let region = &plan.region;
    let mut done = vec![];
    if let Some(image) = &deleted.image {
        done.push(format!("deregistered {image}"));
    }
    if let Some(snapshot) = &deleted.snapshot {
        done.push(format!("deleted snapshot {snapshot}"));
    }
    let mut line = match done.is_empty() {
        true => format!("delete-image: nothing to do in {region}: nothing named exists"),
        false => format!("delete-image: {} in {region}", done.join(" and ")),
    };
    if let Some(kept) = &plan.kept {
        line.push_str(&format!(
            "; kept its snapshot {kept} (without --snapshot, as ore): delete it with `imgpub aws delete-image --region {region} --snapshot {kept}`"
        ));
    }
    line
}

impl Command for DeleteOptions {
    type Connection = Account;
    type Local = ();
    type Plan = Plan;

    fn validate(&self) -> Result<()> {
        snapshot_choice(self).map(drop)
    }

    async fn plan(&self, a: &Account, (): ()) -> Result<Plan> {
        plan(&a.clients(), self).await
    }

    fn check(&self, _: &Account, plan: &Plan) -> Vec<Call> {
        check(plan)
    }

    fn policy(&self, a: &Account, _: &Plan, _: &[Call]) -> Option<String> {
        Some(needs::fix_line(For::Delete, None, Some(&a.ctx.region)))
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        let deleted = apply(&a.clients(), plan).await?;
        emit(Output::json(&deleted));
        emit(Output::Summary(summary(plan, &deleted)));
        Ok(())
    }
}
