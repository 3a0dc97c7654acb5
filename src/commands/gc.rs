//! `gc`: delete this account's AMIs (and their root snapshots) that carry every given tag
//! and are older than `--duration`, in one region or many. [`plan`] finds them (all
//! `--dry-run` does); [`apply`] deletes them, one JSON line per AMI.
//!
//! ore's `gc` terminates the test instances kola tagged `CreatedBy=mantle`; imgpub launches
//! no instances, so its `gc` collects what it makes, images, with ore's flag and tag as the
//! default selection. Public AMIs are kept unless `--include-public`: someone may launch them.

use std::time::{Duration, SystemTime};

use aws_sdk_ec2::types::Filter;

use crate::aws::ami::{self, Deleted};
use crate::aws::calls::{Call, Op, Resource};
use crate::aws::config::{validate_region, AwsContext};
use crate::aws::regions::{failure_summary, fan_out, gather, regions_or_own};
use crate::commands::REGION_CONCURRENCY;
use crate::error::{aws, Error, Result};

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// AMIs created longer ago than this are garbage.
    pub duration: Duration,
    /// KEY=VALUE tags every collected AMI carries (default ore's `CreatedBy=mantle`).
    pub tags: Vec<String>,
    pub include_public: bool,
    pub regions: Vec<String>,
    pub all_regions: bool,
}

/// One AMI to delete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Garbage {
    pub region: String,
    pub image: String,
    pub name: Option<String>,
    pub created: String,
    pub snapshot: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub regions: Vec<String>,
    pub garbage: Vec<Garbage>,
    /// Regions that could not be looked at, named in the end.
    pub failed: Vec<(String, String)>,
}

/// The tags to select by, checked without AWS.
pub fn validate(opts: &GcOptions) -> Result<Vec<(String, String)>> {
    opts.regions.iter().try_for_each(|r| validate_region(r))?;
    if opts.tags.is_empty() {
        return Ok(vec![("CreatedBy".to_string(), "mantle".to_string())]);
    }
    crate::aws::tags::parse("--tag", &opts.tags)
}

/// Finds, in every region, the tagged AMIs older than the cutoff.
pub async fn plan(ctx: &AwsContext, opts: &GcOptions) -> Result<Plan> {
    let tags = validate(opts)?;
    let regions = regions_or_own(&ctx.ec2(), &ctx.region, &opts.regions, opts.all_regions).await?;
    let cutoff = SystemTime::now()
        .checked_sub(opts.duration)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let (garbage, failed) = gather(regions.clone(), REGION_CONCURRENCY, |region| {
        let tags = &tags;
        async move {
            let ec2 = ctx.in_region(&region).ec2();
            find_garbage(&ec2, &region, tags, cutoff, opts.include_public).await
        }
    })
    .await;
    Ok(Plan {
        regions,
        garbage,
        failed,
    })
}

async fn find_garbage(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    tags: &[(String, String)],
    cutoff: SystemTime,
    include_public: bool,
) -> Result<Vec<Garbage>> {
    let filters = tags
        .iter()
        .map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build())
        .collect();
    let out = ec2
        .describe_images()
        .owners("self")
        .include_deprecated(true)
        .set_filters(Some(filters))
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DescribeImages,
                format!("listing this account's tagged AMIs in {region}"),
                e,
            )
        })?;
    let mut found = vec![];
    for image in out.images() {
        let created = image
            .creation_date()
            .ok_or_else(|| Error::missing(Op::Ec2DescribeImages, "CreationDate"))?;
        let at = aws_smithy_types::DateTime::from_str(
            created,
            aws_smithy_types::date_time::Format::DateTime,
        )
        .map_err(|_| Error::missing(Op::Ec2DescribeImages, "a valid CreationDate"))?;
        let old = SystemTime::try_from(at).is_ok_and(|t| t < cutoff);
        if !old || (image.public() == Some(true) && !include_public) {
            continue;
        }
        found.push(Garbage {
            region: region.to_string(),
            image: ami::image_id_of(image)?,
            name: image.name().map(str::to_owned),
            created: created.to_string(),
            snapshot: ami::root_snapshot_of(image),
        });
    }
    Ok(found)
}

/// The calls [`apply`] will make.
pub fn check(plan: &Plan) -> Vec<Call> {
    let mut calls = vec![];
    for g in &plan.garbage {
        let image = vec![Resource::Image(Some(g.image.clone()))];
        calls.push(Call::new(Op::Ec2DeregisterImage, &g.region, image));
        if let Some(s) = &g.snapshot {
            let snapshot = vec![Resource::Snapshot(Some(s.clone()))];
            calls.push(Call::new(Op::Ec2DeleteSnapshot, &g.region, snapshot));
        }
    }
    calls
}

/// Every operation `gc` may make.
pub const MAY_CALL: &[Op] = &[
    Op::Ec2DescribeRegions,
    Op::Ec2DescribeImages,
    Op::Ec2DeregisterImage,
    Op::Ec2DeleteSnapshot,
    Op::IamSimulatePrincipalPolicy,
];

/// What one deleted AMI's JSON line says.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Collected {
    pub region: String,
    pub name: Option<String>,
    #[serde(flatten)]
    pub deleted: Deleted,
}

/// With `dry_run`, emits what the plan found and deletes nothing; otherwise deletes each AMI
/// and its snapshot (a rerun after a partial run finds the rest), one line each.
pub async fn apply(
    ctx: &AwsContext,
    plan: &Plan,
    dry_run: bool,
    mut emit: impl FnMut(serde_json::Value),
) -> Result<()> {
    let mut failures = plan.failed.clone();
    if dry_run {
        plan.garbage
            .iter()
            .for_each(|g| emit(serde_json::json!({"dry_run": true, "garbage": g})));
    } else {
        let done = fan_out(
            plan.regions.clone(),
            REGION_CONCURRENCY,
            |region| async move {
                let ec2 = ctx.in_region(&region).ec2();
                let mut deleted = vec![];
                for g in plan.garbage.iter().filter(|g| g.region == region) {
                    let gone =
                        ami::deregister_image(&ec2, &g.image, g.snapshot.as_deref(), true).await?;
                    deleted.push(Collected {
                        region: region.clone(),
                        name: g.name.clone(),
                        deleted: gone,
                    });
                }
                Ok(deleted)
            },
            |_, deleted| deleted.iter().for_each(|d| emit(serde_json::json!(d))),
        )
        .await;
        failures.extend(done.into_iter().map(|(r, e)| (r, e.to_string())));
    }
    if failures.is_empty() {
        return Ok(());
    }
    let context = format!("collecting old AMIs in {} regions", plan.regions.len());
    Err(failure_summary(context, &failures))
}
