//! `gc`: what ore's `gc` does. It terminates this account's EC2 instances that carry every
//! `--tag` (default `CreatedBy=mantle`, the tag kola puts on its test machines) and were
//! launched longer ago than `--duration`, in one region or many. It touches no AMI.
//!
//! `gc --images` instead deletes the tagged AMIs (and their root snapshots) older than
//! `--duration`: never by default, because a cron job written for ore's `gc` must not lose
//! its images. Public AMIs are kept unless `--include-public`: someone may launch them.
//!
//! [`plan`] finds what to collect; [`apply`] collects it, one JSON line per instance or AMI.

use std::time::{Duration, SystemTime};

use aws_sdk_ec2::types::Filter;

use crate::aws::ami::{self, Deleted};
use crate::aws::calls::{Call, Op, Resource};
use crate::aws::config::{validate_region, AwsContext};
use crate::aws::instances::{self, OldInstance};
use crate::aws::regions::{failure_summary, fan_out, gather, regions_or_own};
use crate::commands::driver::{Account, Command, Emit, Output};
use crate::commands::needs::{self, For};
use crate::commands::REGION_CONCURRENCY;
use crate::error::{aws, Error, Result};

/// What `gc` collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collect {
    /// ore's meaning: instances (kola's test machines).
    Instances,
    /// AMIs and their root snapshots (`--images`).
    Images { include_public: bool },
}

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// What was launched or created longer ago than this is garbage.
    pub duration: Duration,
    /// KEY=VALUE tags everything collected carries (default ore's `CreatedBy=mantle`).
    pub tags: Vec<String>,
    pub collect: Collect,
    pub regions: Vec<String>,
    pub all_regions: bool,
}

/// The tag kola puts on what it launches, and ore's `gc` selects by.
pub(crate) const ORE_TAG: (&str, &str) = ("CreatedBy", "mantle");

/// One AMI to delete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Garbage {
    pub region: String,
    pub image: String,
    pub name: Option<String>,
    pub created: String,
    pub snapshot: Option<String>,
}

/// What the plan found, of the kind asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    Instances(Vec<OldInstance>),
    Images(Vec<Garbage>),
}

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub regions: Vec<String>,
    pub found: Found,
    /// Regions that could not be looked at, named in the end.
    pub failed: Vec<(String, String)>,
}

/// The tags to select by, checked without AWS.
pub(crate) fn validate(opts: &GcOptions) -> Result<Vec<(String, String)>> {
    opts.regions.iter().try_for_each(|r| validate_region(r))?;
    if opts.tags.is_empty() {
        return Ok(vec![(ORE_TAG.0.to_string(), ORE_TAG.1.to_string())]);
    }
    // EC2's tag filters read `*` and `?` as wildcards: `--tag 'Name=*'` would select every
    // named instance.
    for tag in &opts.tags {
        if tag.contains(['*', '?']) {
            return Err(Error::Invalid(format!(
                "--tag {tag:?} has a wildcard (* or ?); gc selects by exact tags: name them exactly"
            )));
        }
    }
    crate::aws::tags::parse("--tag", &opts.tags)
}

/// Finds, in every region, the tagged instances (or AMIs) older than the cutoff.
pub(crate) async fn plan(ctx: &AwsContext, opts: &GcOptions) -> Result<Plan> {
    let tags = validate(opts)?;
    let regions = regions_or_own(&ctx.ec2(), &ctx.region, &opts.regions, opts.all_regions).await?;
    let cutoff = SystemTime::now()
        .checked_sub(opts.duration)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let tags = &tags;
    let (found, failed) = match opts.collect {
        Collect::Instances => {
            let (found, failed) =
                gather(regions.clone(), REGION_CONCURRENCY, |region| async move {
                    let ec2 = ctx.in_region(&region).ec2();
                    instances::old_instances(&ec2, &region, tags, cutoff).await
                })
                .await;
            (Found::Instances(found), failed)
        }
        Collect::Images { include_public } => {
            let (found, failed) =
                gather(regions.clone(), REGION_CONCURRENCY, |region| async move {
                    let ec2 = ctx.in_region(&region).ec2();
                    find_garbage(&ec2, &region, tags, cutoff, include_public).await
                })
                .await;
            (Found::Images(found), failed)
        }
    };
    Ok(Plan {
        regions,
        found,
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

/// The calls [`apply`] will make. TerminateInstances is checked with the tags of the
/// instances it ends, as IAM sees them: one call per region and set of tags (a policy
/// condition reads only those), naming every instance of that set.
pub(crate) fn check(plan: &Plan) -> Vec<Call> {
    let mut calls: Vec<Call> = vec![];
    match &plan.found {
        Found::Instances(found) => {
            let mut sets: std::collections::BTreeMap<_, Vec<Resource>> = Default::default();
            for i in found {
                let mut tags = i.tags.clone();
                tags.sort();
                sets.entry((i.region.clone(), tags))
                    .or_default()
                    .push(Resource::Instance(i.instance.clone()));
            }
            for ((region, tags), instances) in sets {
                let mut call = Call::new(Op::Ec2TerminateInstances, &region, instances);
                call.context = tags
                    .into_iter()
                    .map(|(k, v)| (format!("aws:ResourceTag/{k}"), vec![v]))
                    .collect();
                calls.push(call);
            }
        }
        Found::Images(found) => {
            for g in found {
                let image = vec![Resource::Image(Some(g.image.clone()))];
                calls.push(Call::new(Op::Ec2DeregisterImage, &g.region, image));
                if let Some(s) = &g.snapshot {
                    let snapshot = vec![Resource::Snapshot(Some(s.clone()))];
                    calls.push(Call::new(Op::Ec2DeleteSnapshot, &g.region, snapshot));
                }
            }
        }
    }
    calls
}

/// Every operation `gc` may make (instances; `--images` needs `--for delete`'s).
pub(crate) const MAY_CALL: &[Op] = &[
    Op::Ec2DescribeRegions,
    Op::Ec2DescribeInstances,
    Op::Ec2TerminateInstances,
    Op::IamSimulatePrincipalPolicy,
];

/// What one collected instance's JSON line says.
#[derive(Debug, Clone, serde::Serialize)]
struct Terminated<'a> {
    #[serde(flatten)]
    instance: &'a OldInstance,
    /// `terminated`.
    status: &'static str,
}

/// What one collected AMI's JSON line says.
#[derive(Debug, Clone, serde::Serialize)]
struct Collected<'a> {
    #[serde(flatten)]
    image: &'a Garbage,
    /// `deleted`.
    status: &'static str,
}

/// Terminates each instance (or deletes each AMI and its snapshot), one line for each that
/// went, and goes on past one that cannot: the error names every one left (a rerun finds
/// them again).
pub(crate) async fn apply(
    ctx: &AwsContext,
    plan: &Plan,
    mut emit: impl FnMut(serde_json::Value),
) -> Result<()> {
    let mut failures = plan.failed.clone();
    match &plan.found {
        Found::Instances(found) => {
            let done = fan_out(
                regions_with(&plan.regions, found.iter().map(|i| &i.region)),
                REGION_CONCURRENCY,
                |region| async move {
                    let ec2 = ctx.in_region(&region).ec2();
                    let ids: Vec<String> = found
                        .iter()
                        .filter(|i| i.region == region)
                        .map(|i| i.instance.clone())
                        .collect();
                    Ok(instances::terminate(&ec2, &region, &ids).await)
                },
                |region, ended: instances::Terminations| {
                    for (id, _) in &ended.done {
                        if let Some(instance) = found.iter().find(|i| &i.instance == id) {
                            emit(serde_json::json!(Terminated {
                                instance,
                                status: "terminated"
                            }))
                        }
                    }
                    failures.extend(
                        ended
                            .failed
                            .into_iter()
                            .map(|(id, e)| (format!("{region} {id}"), e.to_string())),
                    );
                },
            )
            .await;
            failures.extend(done.into_iter().map(|(r, e)| (r, e.to_string())));
        }
        Found::Images(found) => {
            let done = fan_out(
                regions_with(&plan.regions, found.iter().map(|g| &g.region)),
                REGION_CONCURRENCY,
                |region| async move {
                    let ec2 = ctx.in_region(&region).ec2();
                    let mut outcomes: Vec<(&Garbage, Result<Deleted>)> = vec![];
                    for g in found.iter().filter(|g| g.region == region) {
                        let gone =
                            ami::deregister_image(&ec2, &g.image, g.snapshot.as_deref(), true)
                                .await;
                        outcomes.push((g, gone));
                    }
                    Ok(outcomes)
                },
                |region, outcomes| {
                    for (image, outcome) in outcomes {
                        match outcome {
                            Ok(_) => emit(serde_json::json!(Collected {
                                image,
                                status: "deleted"
                            })),
                            Err(e) => {
                                failures.push((format!("{region} {}", image.image), e.to_string()))
                            }
                        }
                    }
                },
            )
            .await;
            failures.extend(done.into_iter().map(|(r, e)| (r, e.to_string())));
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    let what = match plan.found {
        Found::Instances(_) => "terminating old instances",
        Found::Images(_) => "collecting old AMIs",
    };
    let context = format!("{what} in {} regions", plan.regions.len());
    Err(failure_summary(context, &failures))
}

/// The regions of `regions` that something was found in.
fn regions_with<'a>(regions: &[String], found: impl Iterator<Item = &'a String>) -> Vec<String> {
    let found: std::collections::BTreeSet<&String> = found.collect();
    regions
        .iter()
        .filter(|r| found.contains(r))
        .cloned()
        .collect()
}

/// What was ended, or what was looked at when nothing was.
fn summary(opts: &GcOptions, plan: &Plan) -> String {
    let tags = match opts.tags.is_empty() {
        true => format!("{}={}", ORE_TAG.0, ORE_TAG.1),
        false => opts.tags.join(" "),
    };
    let regions = match plan.regions.len() {
        1 => plan.regions[0].clone(),
        n => format!("{n} regions"),
    };
    let age = crate::units::show_duration(opts.duration);
    let (n, what, done) = match &plan.found {
        Found::Instances(found) => (found.len(), "instances", "terminated"),
        Found::Images(found) => (found.len(), "AMIs", "deregistered (with their snapshots)"),
    };
    match n {
        0 => format!("gc: nothing to do: no {what} tagged {tags} older than {age} in {regions}"),
        n => format!("gc: {done} {n} {what} tagged {tags} older than {age} in {regions}"),
    }
}

impl Command for GcOptions {
    type Connection = Account;
    type Local = ();
    type Plan = Plan;

    fn validate(&self) -> Result<()> {
        validate(self).map(drop)
    }

    async fn plan(&self, a: &Account, (): ()) -> Result<Plan> {
        plan(&a.ctx, self).await
    }

    fn check(&self, _: &Account, plan: &Plan) -> Vec<Call> {
        check(plan)
    }

    /// Deleting AMIs is what `--for delete` grants; gc's own policy only terminates, and
    /// only what carries its tags.
    fn policy(&self, _: &Account, _: &Plan, _: &[Call]) -> Option<String> {
        Some(match self.collect {
            Collect::Instances => self
                .tags
                .iter()
                .fold(needs::fix_line(For::Gc, None, None), |line, tag| {
                    format!("{line} --gc-tag {tag}")
                }),
            Collect::Images { .. } => needs::fix_line(For::Delete, None, None),
        })
    }

    /// Each instance or AMI by name and age.
    fn describe(&self, _: &Account, plan: &Plan, _: &[Call]) -> Vec<String> {
        match &plan.found {
            Found::Instances(all) => all
                .iter()
                .map(|i| {
                    format!(
                        "would terminate {} ({}, {}, launched {}) in {}",
                        i.instance,
                        i.name.as_deref().unwrap_or("no Name tag"),
                        i.state,
                        i.launched,
                        i.region
                    )
                })
                .collect(),
            Found::Images(all) => all
                .iter()
                .map(|g| {
                    let snapshot = g
                        .snapshot
                        .as_ref()
                        .map_or(String::new(), |s| format!(" and delete its snapshot {s}"));
                    format!(
                        "would deregister {} ({}, created {}){snapshot} in {}",
                        g.image,
                        g.name.as_deref().unwrap_or("no name"),
                        g.created,
                        g.region
                    )
                })
                .collect(),
        }
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        apply(&a.ctx, plan, |line| emit(Output::Json(line))).await?;
        emit(Output::Summary(summary(self, plan)));
        Ok(())
    }
}
