//! `ensure-public`: AMIs carrying the given tags that are no longer public (or whose
//! snapshot is not) are made public again. [`plan`] finds them in every region;
//! [`apply`] fixes them, one line per AMI.

use crate::aws::ami::Sharing;
use crate::aws::calls::{Call, Op, Resource};
use crate::aws::config::{validate_region, AwsContext};
use crate::aws::permissions::{self, MadePublic, NotPublic, Selection};
use crate::aws::regions::{failure_summary, fan_out, gather, regions_or_own};
use crate::aws::Status;
use crate::commands::driver::{Account, Command, Emit, Output};
use crate::commands::needs::{self, For};
use crate::commands::REGION_CONCURRENCY;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct EnsurePublicOptions {
    pub tags: Vec<String>,
    /// One AMI instead of the tagged ones (in the command's region).
    pub ami: Option<String>,
    pub regions: Vec<String>,
    pub all_regions: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub regions: Vec<String>,
    /// The available AMIs selected, public or not.
    pub checked: usize,
    /// What is not public, per AMI.
    pub found: Vec<MadePublic>,
    /// Regions that could not be looked at: named in the end, without holding up the others.
    pub failed: Vec<(String, String)>,
}

/// The flags, checked without AWS.
pub(crate) fn validate(opts: &EnsurePublicOptions) -> Result<Selection> {
    let selection = permissions::selection(&opts.tags, opts.ami.as_deref())?;
    opts.regions.iter().try_for_each(|r| validate_region(r))?;
    if opts.ami.is_some() && (opts.all_regions || !opts.regions.is_empty()) {
        return Err(Error::Invalid(
            "--ami names an AMI in the command's region (--region); drop the other regions".into(),
        ));
    }
    Ok(selection)
}

/// Finds, in every region, the tagged AMIs that are not public.
pub(crate) async fn plan(ctx: &AwsContext, opts: &EnsurePublicOptions) -> Result<Plan> {
    let selection = validate(opts)?;
    let regions = regions_or_own(&ctx.ec2(), &ctx.region, &opts.regions, opts.all_regions).await?;
    // One AMI in one region: its lookup's error is the run's (an AMI that is not there is
    // bad input, not a region to retry).
    if let (Selection::Image(_), [region]) = (&selection, regions.as_slice()) {
        let ec2 = ctx.in_region(region).ec2();
        let looked = permissions::find_not_public(&ec2, region, &selection).await?;
        return Ok(Plan {
            regions,
            checked: looked.checked,
            found: looked.not_public,
            failed: vec![],
        });
    }
    let (found, failed) = gather(regions.clone(), REGION_CONCURRENCY, |region| {
        let selection = &selection;
        async move {
            let ec2 = ctx.in_region(&region).ec2();
            permissions::find_not_public(&ec2, &region, selection)
                .await
                .map(|looked| vec![looked])
        }
    })
    .await;
    Ok(Plan {
        regions,
        checked: found.iter().map(|l| l.checked).sum(),
        found: found.into_iter().flat_map(|l| l.not_public).collect(),
        failed,
    })
}

/// The calls [`apply`] will make.
pub(crate) fn check(plan: &Plan) -> Vec<Call> {
    calls(&plan.found)
}

/// The calls that make `found` public (`release watch --fix` makes them too).
pub(crate) fn calls<'a>(found: impl IntoIterator<Item = &'a MadePublic>) -> Vec<Call> {
    let mut calls = vec![];
    for image in found {
        if image.fixed.contains(&NotPublic::Image) {
            let id = Resource::Image(Some(image.image.clone()));
            calls.push(Call::new(
                Op::Ec2ModifyImageAttribute,
                &image.region,
                vec![id],
            ));
        }
        if let (Some(s), true) = (&image.snapshot, image.fixed.contains(&NotPublic::Snapshot)) {
            let id = Resource::Snapshot(Some(s.clone()));
            let public = Sharing {
                public: true,
                ..Sharing::default()
            };
            calls.push(public.on(Call::new(
                Op::Ec2ModifySnapshotAttribute,
                &image.region,
                vec![id],
            )));
        }
    }
    calls
}

/// Every operation `ensure-public` may make.
pub(crate) const MAY_CALL: &[Op] = &[
    Op::Ec2DescribeRegions,
    Op::Ec2DescribeImages,
    Op::Ec2DescribeSnapshotAttribute,
    Op::Ec2ModifyImageAttribute,
    Op::Ec2ModifySnapshotAttribute,
];

/// One line of output: an AMI made public.
#[derive(serde::Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    made: &'a MadePublic,
    status: Status,
}

/// Makes each AMI the plan found public and emits it; fails naming the regions that could
/// not be checked or fixed.
pub(crate) async fn apply(
    ctx: &AwsContext,
    plan: &Plan,
    mut emit: impl FnMut(serde_json::Value),
) -> Result<()> {
    let mut failures = plan.failed.clone();
    let done = fan_out(
        plan.regions.clone(),
        REGION_CONCURRENCY,
        |region| async move {
            let ec2 = ctx.in_region(&region).ec2();
            let mut fixed = vec![];
            for image in plan.found.iter().filter(|f| f.region == region) {
                fixed.push(permissions::make_public(&ec2, image).await?);
            }
            Ok(fixed)
        },
        |_, fixed| {
            fixed.iter().for_each(|made| {
                emit(serde_json::json!(Line {
                    made,
                    status: Status::Changed
                }))
            })
        },
    )
    .await;
    failures.extend(done.into_iter().map(|(r, e)| (r, e.to_string())));
    if failures.is_empty() {
        return Ok(());
    }
    let context = format!("checking tagged AMIs in {} regions", plan.regions.len());
    Err(failure_summary(context, &failures))
}

/// What was looked at and what was made public: a typo in a tag matches nothing, and says
/// so.
fn summary(opts: &EnsurePublicOptions, plan: &Plan) -> String {
    let selected = match &opts.ami {
        Some(id) => format!("AMI {id}"),
        None => format!("AMIs tagged {}", opts.tags.join(" ")),
    };
    let regions = match plan.regions.len() {
        1 => plan.regions[0].clone(),
        n => format!("{n} regions"),
    };
    match (plan.found.len(), plan.checked) {
        (_, 0) => format!("ensure-public: nothing to do: no available {selected} in {regions}"),
        (0, checked) => format!(
            "ensure-public: nothing to do: the {checked} available {selected} in {regions} are all public"
        ),
        (n, checked) => format!(
            "ensure-public: made {n} of the {checked} available {selected} in {regions} public"
        ),
    }
}

impl Command for EnsurePublicOptions {
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

    /// With `--public`: the snapshots it shares with everyone need it.
    fn policy(&self, _: &Account, _: &Plan, calls: &[Call]) -> Option<String> {
        let line = needs::fix_line(For::EnsurePublic, None, None);
        Some(crate::aws::preflight::with_sharing(&line, calls))
    }

    /// Each AMI by name, and what of it would be made public.
    fn describe(&self, _: &Account, plan: &Plan, _: &[Call]) -> Vec<String> {
        plan.found
            .iter()
            .map(|f| {
                let what: Vec<String> = f
                    .fixed
                    .iter()
                    .map(|n| match (n, &f.snapshot) {
                        (NotPublic::Image, _) => format!("AMI {}", f.image),
                        (NotPublic::Snapshot, Some(s)) => format!("its snapshot {s}"),
                        (NotPublic::Snapshot, None) => "its snapshot".to_string(),
                    })
                    .collect();
                format!(
                    "would make {} public ({} in {})",
                    what.join(" and "),
                    f.name,
                    f.region
                )
            })
            .collect()
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        apply(&a.ctx, plan, |line| emit(Output::Json(line))).await?;
        emit(Output::Summary(summary(self, plan)));
        Ok(())
    }
}
