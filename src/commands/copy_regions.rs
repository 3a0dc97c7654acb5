//! `copy-regions` (ore's `copy-image`): CopyImage to other regions, a bounded number at a
//! time, each copy given the source's tags and permissions. [`plan`] describes the source
//! and looks in every target region for what an earlier run copied; [`apply`] prints one
//! line per region as it finishes and ends with an error naming the regions that failed.

use std::time::Duration;

use crate::aws::ami;
use crate::aws::calls::{Call, Op};
use crate::aws::config::{validate_region, AwsContext};
use crate::aws::copy::{self, Copied, InRegion, Source};
use crate::aws::regions::{failure_summary, fan_out, target_regions};
use crate::commands::driver::{Account, Command, Emit, Output};
use crate::commands::needs::{self, For};
use crate::commands::REGION_CONCURRENCY;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub image: String,
    pub regions: Vec<String>,
    pub all_regions: bool,
    /// Copies in flight at once.
    pub concurrency: usize,
    pub timeout: Duration,
}

/// The source and what each target region has of it.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub source: Source,
    pub targets: Vec<(String, InRegion)>,
    /// The source region was among the targets: its line names the source itself, as
    /// ore's (a script builds its region → AMI map from the lines).
    pub source_line: Option<Copied>,
    /// Regions that could not be looked at: named in the end, without holding up the others.
    pub failed: Vec<(String, String)>,
    pub concurrency: usize,
    pub timeout: Duration,
}

/// The flags, checked without AWS.
pub(crate) fn validate(opts: &CopyOptions) -> Result<()> {
    crate::aws::images::check_image_id("--image", &opts.image)?;
    if opts.regions.is_empty() && !opts.all_regions {
        return Err(Error::Invalid(
            "name the target regions, or pass --all-regions".into(),
        ));
    }
    opts.regions.iter().try_for_each(|r| validate_region(r))
}

/// Describes the source in the command's region and looks for its name in every target.
pub(crate) async fn plan(ctx: &AwsContext, opts: &CopyOptions) -> Result<Plan> {
    validate(opts)?;
    let ec2 = ctx.ec2();
    let mut regions = target_regions(&ec2, &opts.regions, opts.all_regions).await?;
    let source_listed = regions.contains(&ctx.region);
    regions.retain(|r| *r != ctx.region);
    let source = copy::describe_source(&ec2, &ctx.region, &opts.image).await?;
    let source_line = match (source_listed, &source.snapshot) {
        (false, _) => None,
        (true, Some(snapshot)) => Some(Copied {
            ami: source.image_id.clone(),
            snapshot: snapshot.clone(),
        }),
        (true, None) => {
            tracing::info!(
                "{}: the source AMI has no EBS root snapshot; no line for its own region",
                ctx.region
            );
            None
        }
    };
    let mut targets = vec![];
    let failed = fan_out(
        regions,
        REGION_CONCURRENCY,
        |region| {
            let source = &source;
            async move {
                let here = ctx.in_region(&region);
                let ec2 = here.ec2();
                // The copies are shared as the source is: public there too.
                if source.sharing.public {
                    ami::check_public_sharing(&ec2, &region, true).await?;
                }
                let found = copy::find_in_region(&ec2, source).await?;
                if source.sharing.public && !matches!(found, InRegion::Present(_)) {
                    // A copy made there would be encrypted, and so could not be public.
                    ami::check_new_snapshots_unencrypted(&ec2, &region).await?;
                }
                let adding = match &found {
                    InRegion::Present(earlier) => earlier.lacks.launch,
                    _ => true,
                };
                if source.sharing.public && adding {
                    let quotas = here.service_quotas();
                    ami::check_public_ami_quota(&ec2, &quotas, &region, 1).await?;
                }
                Ok(found)
            }
        },
        |region, found| targets.push((region.clone(), found)),
    )
    .await;
    targets.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Plan {
        source,
        targets,
        source_line,
        failed: failed
            .into_iter()
            .map(|(r, e)| (r, e.to_string()))
            .collect(),
        concurrency: opts.concurrency,
        timeout: opts.timeout,
    })
}

/// The calls [`apply`] will make in each target region.
pub(crate) fn check(plan: &Plan) -> Vec<Call> {
    plan.targets
        .iter()
        .flat_map(|(region, found)| copy::calls(&plan.source, region, found))
        .collect()
}

/// Every operation `copy-regions` may make.
pub(crate) const MAY_CALL: &[Op] = &[
    Op::Ec2DescribeRegions,
    Op::Ec2DescribeImages,
    Op::Ec2GetImageBlockPublicAccessState,
    Op::Ec2GetSnapshotBlockPublicAccessState,
    Op::Ec2GetEbsEncryptionByDefault,
    Op::ServiceQuotasGetServiceQuota,
    Op::Ec2DescribeImageAttribute,
    Op::Ec2DescribeSnapshots,
    Op::Ec2DescribeSnapshotAttribute,
    Op::Ec2DeregisterImage,
    Op::Ec2DeleteSnapshot,
    Op::Ec2CopyImage,
    Op::Ec2CreateTags,
    Op::Ec2EnableImageDeprecation,
    // A release's `protect = true` (granted with `policy --protect` only).
    Op::Ec2EnableImageDeregistrationProtection,
    Op::Ec2ModifyImageAttribute,
    Op::Ec2ModifySnapshotAttribute,
    Op::IamSimulatePrincipalPolicy,
];

/// Copies to every target, `concurrency` at a time; `emit` gets each finished region's line
/// `{"REGION":{"ami":…,"snapshot":…}}` at once. Fails naming every region that failed,
/// after all successes were emitted.
pub(crate) async fn apply(
    ctx: &AwsContext,
    plan: &Plan,
    mut emit: impl FnMut(serde_json::Value),
) -> Result<()> {
    if let Some(line) = &plan.source_line {
        emit(serde_json::json!({ &plan.source.region: line }));
    }
    let regions: Vec<String> = plan.targets.iter().map(|(r, _)| r.clone()).collect();
    let done = fan_out(
        regions,
        plan.concurrency,
        |region| async move {
            let ec2 = ctx.in_region(&region).ec2();
            let found = plan
                .targets
                .iter()
                .find(|(r, _)| *r == region)
                .map_or(&InRegion::Absent, |(_, found)| found);
            copy::copy_to_region(&ec2, &plan.source, &region, found, plan.timeout).await
        },
        |region, copied: Copied| emit(serde_json::json!({ region: copied })),
    )
    .await;
    let mut failures = plan.failed.clone();
    failures.extend(done.into_iter().map(|(r, e)| (r, e.to_string())));
    if failures.is_empty() {
        return Ok(());
    }
    let context = format!(
        "copying {} to {} regions",
        plan.source.image_id,
        plan.targets.len() + plan.failed.len()
    );
    Err(failure_summary(context, &failures))
}

/// How many regions got a new copy, and how many had one already.
fn summary(plan: &Plan) -> String {
    let source = format!("{} ({})", plan.source.image_id, plan.source.region);
    let earlier: Vec<&copy::Earlier> = plan
        .targets
        .iter()
        .filter_map(|(_, found)| match found {
            InRegion::Present(earlier) => Some(&**earlier),
            _ => None,
        })
        .collect();
    let present = earlier.len();
    let fixes = earlier.iter().filter(|e| e.lacks.any()).count();
    let copied = plan.targets.len() - present;
    let fixed = match fixes {
        0 => String::new(),
        n => format!(" ({n} of them given the source's tags, deprecation or sharing again)"),
    };
    match (copied, present) {
        (0, 0) => {
            format!("copy-regions: nothing to do: no region to copy {source} to besides its own")
        }
        (0, n) if fixes == 0 => {
            format!("copy-regions: nothing to do: {n} regions already have {source}")
        }
        (0, n) => format!(
            "copy-regions: gave {fixes} of the {n} regions that have {source} its tags, deprecation or sharing again"
        ),
        (copied, present) => {
            format!("copy-regions: copied {source} to {copied} regions; {present} already had it{fixed}")
        }
    }
}

/// The plan in words: the AMI by name, where it would be copied, and what each copy gets.
fn describe(plan: &Plan) -> Vec<String> {
    let s = &plan.source;
    let tags: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut gets = vec![format!("tags {}", tags.join(" "))];
    if let Some(whom) = s.sharing.describe() {
        gets.push(format!("shared with {whom}"));
    }
    if let Some(at) = s.deprecate_at {
        let at = at.fmt(aws_smithy_types::date_time::Format::DateTime);
        gets.push(format!("deprecated at {}", at.unwrap_or_default()));
    }
    let mut lines = vec![];
    for (region, found) in &plan.targets {
        match found {
            InRegion::Absent => lines.push(format!(
                "would copy {} ({}, {}) to {region}: {}",
                s.name,
                s.image_id,
                s.region,
                gets.join(", ")
            )),
            InRegion::Failed(old) => lines.push(format!(
                "would deregister the failed copy {} in {region} and copy {} ({}) again: {}",
                old.image_id,
                s.name,
                s.image_id,
                gets.join(", ")
            )),
            InRegion::Present(earlier) if earlier.lacks.any() => lines.push(format!(
                "would give the copy {} in {region} the source's {}",
                earlier.found.image_id,
                gets.join(", ")
            )),
            InRegion::Present(_) => {}
        }
    }
    lines
}

impl Command for CopyOptions {
    type Connection = Account;
    type Local = ();
    type Plan = Plan;

    fn validate(&self) -> Result<()> {
        validate(self)
    }

    async fn plan(&self, a: &Account, (): ()) -> Result<Plan> {
        plan(&a.ctx, self).await
    }

    fn check(&self, _: &Account, plan: &Plan) -> Vec<Call> {
        check(plan)
    }

    /// With the sharing the copies carry (also for a refusal later in the run).
    fn policy(&self, _: &Account, _: &Plan, calls: &[Call]) -> Option<String> {
        let line = needs::fix_line(For::Copy, None, None);
        Some(crate::aws::preflight::with_sharing(&line, calls))
    }

    fn describe(&self, _: &Account, plan: &Plan, _: &[Call]) -> Vec<String> {
        describe(plan)
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        apply(&a.ctx, plan, |line| emit(Output::Json(line))).await?;
        emit(Output::Summary(summary(plan)));
        Ok(())
    }
}
