//! `grant` / `revoke`: launch permissions on AMIs in one region or many, and with
//! `--snapshot` the create-volume permissions on their root snapshots. [`plan`] checks the
//! AMIs exist (and finds their snapshots); [`apply`] emits one line per AMI
//! `{"region":…,"image":…,"snapshot":…}` and fails naming the AMIs it could not change.

use crate::aws::ami::{self, Change, Sharing};
use crate::aws::calls::{Call, Op, Resource};
use crate::aws::config::AwsContext;
use crate::aws::images::{ImageSelection, RegionalImage, Selected};
use crate::aws::permissions::{self, Changed};
use crate::aws::regions::{failure_summary, fan_out};
use crate::aws::Status;
use crate::commands::driver::{Account, Command, Emit, Output};
use crate::commands::needs::{self, For};
use crate::commands::REGION_CONCURRENCY;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct GrantOptions {
    pub change: Change,
    pub users: Vec<String>,
    pub public: bool,
    pub organizations: Vec<String>,
    pub organizational_units: Vec<String>,
    /// Also the root snapshots' create-volume permissions.
    pub snapshot: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub change: Change,
    pub sharing: Sharing,
    /// Each AMI with its region and, with `--snapshot`, its root snapshot.
    pub images: Vec<Changed>,
    /// AMIs that could not be looked up: named in the end, without holding up the others.
    pub failed: Vec<(RegionalImage, String)>,
}

/// Whom to change, checked without AWS.
pub(crate) fn sharing(opts: &GrantOptions) -> Result<Sharing> {
    ami::validate_account_ids("--user", &opts.users)?;
    ami::validate_org_arns("--organization", &opts.organizations, "organization")?;
    ami::validate_org_arns("--organizational-unit", &opts.organizational_units, "ou")?;
    if opts.users.is_empty()
        && !opts.public
        && opts.organizations.is_empty()
        && opts.organizational_units.is_empty()
    {
        return Err(Error::Invalid(
            "name whom to change: --user, --public, --organization or --organizational-unit".into(),
        ));
    }
    Ok(Sharing {
        public: opts.public,
        launch_users: opts.users.clone(),
        organizations: opts.organizations.clone(),
        organizational_units: opts.organizational_units.clone(),
        snapshot_users: if opts.snapshot {
            opts.users.clone()
        } else {
            vec![]
        },
    })
}

/// Whether the AMI's launch permissions and the snapshot's volume permissions are not yet
/// as `change` of `sharing` asks: read back, so a rerun changes nothing. A read refused
/// for want of permission (ore's policy) counts as "not yet", and is said at the end.
async fn to_change(
    ec2: &aws_sdk_ec2::Client,
    image: &str,
    snapshot: Option<&str>,
    sharing: &Sharing,
    change: Change,
) -> Result<(bool, bool)> {
    use crate::aws::unchecked::or_make_again;
    let launch = or_make_again(
        ami::read_launch(ec2, image).await.map(|now| match change {
            Change::Grant => sharing.launch_missing(&now),
            Change::Revoke => sharing.launch_present(&now),
        }),
        &format!("whether {image} already is as asked (ec2:DescribeImageAttribute)"),
    )?;
    let volume = match (snapshot, sharing.volume_permissions().is_empty()) {
        (Some(snapshot), false) => or_make_again(
            ami::read_volume(ec2, snapshot)
                .await
                .map(|now| match change {
                    Change::Grant => sharing.volume_missing(&now),
                    Change::Revoke => sharing.volume_present(&now),
                }),
            &format!("whether {snapshot} already is as asked (ec2:DescribeSnapshotAttribute)"),
        )?,
        _ => false,
    };
    Ok((launch, volume))
}

/// Checks that every AMI exists in its region (and finds its root snapshot), and what of
/// its permissions is not yet as asked.
pub(crate) async fn plan(
    ctx: &AwsContext,
    opts: &GrantOptions,
    targets: Vec<RegionalImage>,
) -> Result<Plan> {
    let sharing = &sharing(opts)?;
    let mut images = vec![];
    let failed = fan_out(
        targets,
        REGION_CONCURRENCY,
        |target| async move {
            let ec2 = ctx.in_region(&target.region).ec2();
            if opts.public && opts.change == Change::Grant {
                ami::check_public_sharing(&ec2, &target.region, opts.snapshot).await?;
            }
            let image = ami::describe_image(&ec2, &target.region, &target.image_id).await?;
            let snapshot = opts
                .snapshot
                .then(|| ami::root_snapshot_of(&image))
                .flatten();
            let (launch, volume) = to_change(
                &ec2,
                &target.image_id,
                snapshot.as_deref(),
                sharing,
                opts.change,
            )
            .await?;
            Ok(Changed {
                snapshot,
                region: target.region,
                image: target.image_id,
                status: Status::of(launch || volume),
                launch,
                volume,
            })
        },
        |_, changed| images.push(changed),
    )
    .await;
    Ok(Plan {
        change: opts.change,
        sharing: sharing.clone(),
        images,
        failed: failed
            .into_iter()
            .map(|(i, e)| (i, e.to_string()))
            .collect(),
    })
}

/// The calls [`apply`] will make.
pub(crate) fn check(plan: &Plan) -> Vec<Call> {
    let mut calls = vec![];
    for target in &plan.images {
        let image = Resource::Image(Some(target.image.clone()));
        if target.launch {
            calls.push(Call::new(
                Op::Ec2ModifyImageAttribute,
                &target.region,
                vec![image],
            ));
        }
        if let (Some(s), true) = (&target.snapshot, target.volume) {
            let snapshot = Resource::Snapshot(Some(s.clone()));
            let call = Call::new(
                Op::Ec2ModifySnapshotAttribute,
                &target.region,
                vec![snapshot],
            );
            calls.push(match plan.change {
                Change::Grant => plan.sharing.on(call),
                Change::Revoke => call,
            });
        }
    }
    calls
}

/// Every operation `grant` and `revoke` may make.
pub(crate) const MAY_CALL: &[Op] = &[
    Op::Ec2DescribeImages,
    Op::Ec2DescribeImageAttribute,
    Op::Ec2DescribeSnapshotAttribute,
    Op::Ec2GetImageBlockPublicAccessState,
    Op::Ec2GetSnapshotBlockPublicAccessState,
    Op::Ec2ModifyImageAttribute,
    Op::Ec2ModifySnapshotAttribute,
    Op::IamSimulatePrincipalPolicy,
];

/// Changes every AMI's permissions; `emit` gets each one's line as it is done.
pub(crate) async fn apply(
    ctx: &AwsContext,
    plan: &Plan,
    mut emit: impl FnMut(serde_json::Value),
) -> Result<()> {
    let done = fan_out(
        plan.images.clone(),
        REGION_CONCURRENCY,
        |target| async move {
            let ec2 = ctx.in_region(&target.region).ec2();
            permissions::change_image(&ec2, &target, &plan.sharing, plan.change).await?;
            Ok(target)
        },
        |_, changed| emit(serde_json::json!(changed)),
    )
    .await;
    let mut failures: Vec<(String, String)> = plan
        .failed
        .iter()
        .map(|(i, e)| (i.to_string(), e.clone()))
        .collect();
    failures.extend(
        done.into_iter()
            .map(|(i, e)| (i.to_string(), e.to_string())),
    );
    if failures.is_empty() {
        return Ok(());
    }
    let verb = match plan.change {
        Change::Grant => "granting",
        Change::Revoke => "revoking",
    };
    let count = plan.images.len() + plan.failed.len();
    let context = format!("{verb} permissions on {count} AMIs");
    Err(failure_summary(context, &failures))
}

/// `grant` or `revoke`, on the AMIs given.
#[derive(Debug, Clone)]
pub struct Permissions {
    pub opts: GrantOptions,
    pub images: ImageSelection,
}

impl Command for Permissions {
    type Connection = Account;
    type Local = Selected;
    type Plan = Plan;

    fn validate(&self) -> Result<Selected> {
        sharing(&self.opts)?;
        self.images.read()
    }

    async fn plan(&self, a: &Account, images: Selected) -> Result<Plan> {
        plan(&a.ctx, &self.opts, images.in_region(&a.ctx.region)).await
    }

    fn check(&self, _: &Account, plan: &Plan) -> Vec<Call> {
        check(plan)
    }

    fn policy(&self, _: &Account, _: &Plan, calls: &[Call]) -> Option<String> {
        let line = needs::fix_line(For::Grant, None, None);
        Some(crate::aws::preflight::with_sharing(&line, calls))
    }

    /// Each AMI (and snapshot) and whom it would be shared with, or no longer.
    fn describe(&self, _: &Account, plan: &Plan, _: &[Call]) -> Vec<String> {
        let whom = plan.sharing.describe().unwrap_or_default();
        let how = match plan.change {
            Change::Grant => "share",
            Change::Revoke => "stop sharing",
        };
        plan.images
            .iter()
            .filter(|i| i.launch || i.volume)
            .map(|i| {
                let what = match (&i.snapshot, i.launch, i.volume) {
                    (Some(s), true, true) => format!("{} and its snapshot {s}", i.image),
                    (Some(s), false, true) => format!("snapshot {s} of {}", i.image),
                    _ => i.image.clone(),
                };
                format!("would {how} {what} in {} with {whom}", i.region)
            })
            .collect()
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        apply(&a.ctx, plan, |line| emit(Output::Json(line))).await?;
        let (verb, to) = match plan.change {
            Change::Grant => ("granted", "to"),
            Change::Revoke => ("revoked", "from"),
        };
        let whom = plan.sharing.describe().unwrap_or_default();
        let changed = plan
            .images
            .iter()
            .filter(|i| i.status == Status::Changed)
            .count();
        let already = plan.images.len() - changed;
        let command = match plan.change {
            Change::Grant => "grant",
            Change::Revoke => "revoke",
        };
        emit(Output::Summary(match (changed, already) {
            (0, 0) => format!("{command}: nothing to do: no AMI was named"),
            (0, n) => {
                format!("{command}: nothing to do: the {n} AMIs already were as asked for {whom}")
            }
            (n, 0) => format!("{verb} launch permission {to} {whom} on {n} AMIs"),
            (n, m) => format!(
                "{verb} launch permission {to} {whom} on {n} AMIs; {m} already were as asked"
            ),
        }));
        Ok(())
    }
}
