//! `delete-image`: deregister AMIs and delete their snapshots. [`plan`] finds each AMI (in
//! one region, in every region by its name with `--all-regions`, or as `--image` /
//! `--images-from` name them) and the snapshots to delete; [`apply`] prints one line per
//! AMI, what it removed and what it left. With `--allow-missing` a rerun after a partial
//! cleanup is fine.

use serde::Serialize;

use crate::aws::ami::{self, SnapshotChoice};
use crate::aws::calls::{Call, Op, Resource};
use crate::aws::config::AwsContext;
use crate::aws::images::{ImageSelection, Selected};
use crate::aws::regions::{failure_summary, fan_out, gather, regions_or_own};
use crate::commands::driver::{Account, Command, Emit, Output};
use crate::commands::needs::{self, For};
use crate::commands::REGION_CONCURRENCY;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// The AMI; without it, only `snapshot` (an id) is deleted, as ore allows.
    pub ami: Option<String>,
    /// A snapshot id, or `detectFromAMI`.
    pub snapshot: Option<String>,
    pub allow_missing: bool,
    /// Delete every snapshot each AMI maps with it.
    pub with_snapshots: bool,
    /// The AMI's copies too: this account's AMIs of its name in every enabled region.
    pub all_regions: bool,
    /// AMIs in any region (`--image REGION=AMI`, `--images-from` copy-regions' output).
    pub images: ImageSelection,
}

/// What the flags ask for, checked without AWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Asked {
    pub snapshots: SnapshotChoice,
    /// `--image` / `--images-from`, read.
    pub images: Option<Selected>,
}

/// One AMI (or, with `--snapshot` alone, one snapshot) to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub region: String,
    /// The AMI, when it exists.
    pub image: Option<String>,
    /// The snapshots to delete.
    pub snapshots: Vec<String>,
    /// The AMI's snapshots left, as ore leaves them without `--snapshot`.
    pub kept: Vec<String>,
    /// What was named but is not there (`--allow-missing`).
    pub missing: Vec<String>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = self.image.as_ref().or(self.snapshots.first());
        let what = what
            .or(self.missing.first())
            .map_or("nothing", String::as_str);
        write!(f, "{what} in {}", self.region)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub targets: Vec<Target>,
    /// `--all-regions`: the AMI its copies are found by (their name is its name). Removed
    /// last, and only once every copy is, so that a rerun after a failure finds them again.
    pub anchor: Option<Target>,
    /// Where AMIs were looked for.
    pub regions: Vec<String>,
    /// Which snapshots go with each AMI.
    pub choice: SnapshotChoice,
    /// Regions that could not be looked at (`--all-regions`): named in the end.
    pub failed: Vec<(String, String)>,
    pub allow_missing: bool,
}

/// The flags, checked without AWS. Reads `--images-from` (it may be stdin: this blocks).
pub(crate) fn asked(opts: &DeleteOptions) -> Result<Asked> {
    if let Some(ami) = &opts.ami {
        crate::aws::images::check_image_id("--ami", ami)?;
    }
    let listed = !opts.images.images.is_empty() || opts.images.images_from.is_some();
    if listed && (opts.ami.is_some() || opts.snapshot.is_some() || opts.all_regions) {
        return Err(Error::Invalid(
            "--image and --images-from name the AMIs themselves: drop --ami, --snapshot and --all-regions (add --with-snapshots to delete their snapshots)".into(),
        ));
    }
    if opts.all_regions && opts.ami.is_none() {
        return Err(Error::Invalid(
            "--all-regions deletes the copies of --ami (this account's AMIs of its name in every enabled region): pass --ami ami-…".into(),
        ));
    }
    if opts.with_snapshots && opts.snapshot.is_some() {
        return Err(Error::Invalid(
            "--with-snapshots deletes every snapshot of each AMI: drop --snapshot".into(),
        ));
    }
    let snapshots = match (opts.snapshot.as_deref(), &opts.ami) {
        _ if opts.with_snapshots => SnapshotChoice::All,
        (None, None) if listed => SnapshotChoice::None,
        (None, None) => {
            return Err(Error::Invalid(
                "nothing to delete: pass --ami ami-… (and --snapshot or --with-snapshots), --snapshot snap-…, or --image / --images-from".into(),
            ))
        }
        (None, Some(_)) => SnapshotChoice::None,
        (Some("detectFromAMI"), Some(_)) => SnapshotChoice::FromImage,
        (Some("detectFromAMI"), None) => {
            return Err(Error::Invalid(
                "--snapshot detectFromAMI reads the snapshot off --ami: pass --ami too".into(),
            ))
        }
        (Some(_), Some(_)) if opts.all_regions => {
            return Err(Error::Invalid(
                "--snapshot snap-… names one snapshot in one region: with --all-regions use --with-snapshots (or detectFromAMI)".into(),
            ))
        }
        (Some(id), _) => {
            crate::aws::images::check_snapshot_id("--snapshot (or detectFromAMI)", id)?;
            SnapshotChoice::Id(id.to_string())
        }
    };
    let images = match listed {
        true => Some(opts.images.read()?),
        false => None,
    };
    if opts.with_snapshots && opts.ami.is_none() && images.is_none() {
        return Err(Error::Invalid(
            "--with-snapshots deletes the snapshots of AMIs: pass --ami, --image or --images-from"
                .into(),
        ));
    }
    Ok(Asked { snapshots, images })
}

/// The target for one AMI as EC2 describes it (or `None`: it does not exist).
async fn target(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    image: Option<&aws_sdk_ec2::types::Image>,
    choice: &SnapshotChoice,
) -> Result<Target> {
    let id = image.and_then(|i| i.image_id()).map(str::to_owned);
    let all = image.map(ami::snapshots_of).unwrap_or_default();
    let root = image.and_then(ami::root_snapshot_of);
    let (snapshots, kept) = match choice {
        SnapshotChoice::None => (vec![], all),
        SnapshotChoice::All => (all, vec![]),
        SnapshotChoice::FromImage => {
            let kept = all
                .into_iter()
                .filter(|s| Some(s) != root.as_ref())
                .collect();
            (root.into_iter().collect(), kept)
        }
        SnapshotChoice::Id(snapshot) => {
            let kept = all.into_iter().filter(|s| s != snapshot).collect();
            (vec![snapshot.clone()], kept)
        }
    };
    for snapshot in &snapshots {
        // EC2 refuses to delete the snapshot of a registered AMI (DeleteSnapshot API
        // reference): say which AMI holds it before anything is deregistered.
        let users = ami::images_using_snapshot(ec2, snapshot).await?;
        if let Some(other) = users.iter().find(|u| Some(*u) != id.as_ref()) {
            return Err(Error::Invalid(format!(
                "snapshot {snapshot} in {region} is used by AMI {other}, and EC2 refuses to delete the snapshot of a registered AMI; remove both: imgpub aws delete-image --region {region} --ami {other} --snapshot {snapshot}"
            )));
        }
    }
    Ok(Target {
        region: region.to_string(),
        image: id,
        snapshots,
        kept,
        missing: vec![],
    })
}

/// An AMI that is not there: an error naming it, unless `--allow-missing`. A snapshot named
/// by its id is still deleted.
fn missing(
    opts: &DeleteOptions,
    region: &str,
    id: &str,
    choice: &SnapshotChoice,
) -> Result<Target> {
    if !opts.allow_missing {
        return Err(Error::Invalid(format!(
            "AMI {id} does not exist in {region}; pass --allow-missing if that is fine"
        )));
    }
    tracing::info!("AMI {id} does not exist in {region}; nothing to deregister");
    Ok(Target {
        region: region.to_string(),
        image: None,
        snapshots: match choice {
            SnapshotChoice::Id(snapshot) => vec![snapshot.clone()],
            _ => vec![],
        },
        kept: vec![],
        missing: vec![id.to_string()],
    })
}

/// Looks every AMI up (read-only); a missing one is an error unless `--allow-missing`.
/// `account` is the caller's: `--all-regions` deletes only this account's AMIs.
pub(crate) async fn plan(
    ctx: &AwsContext,
    account: &str,
    opts: &DeleteOptions,
    asked: Asked,
) -> Result<Plan> {
    let own = ctx.region.clone();
    let mut plan = Plan {
        targets: vec![],
        anchor: None,
        regions: vec![own.clone()],
        choice: asked.snapshots.clone(),
        failed: vec![],
        allow_missing: opts.allow_missing,
    };
    let choice = &asked.snapshots;
    if let Some(selected) = asked.images {
        let images = selected.in_region(&own);
        let regions: std::collections::BTreeSet<String> =
            images.iter().map(|i| i.region.clone()).collect();
        plan.regions = regions.into_iter().collect();
        for image in images {
            let ec2 = ctx.in_region(&image.region).ec2();
            match ami::find_image(&ec2, &image.region, &image.image_id).await? {
                Some(found) => {
                    let t = target(&ec2, &image.region, Some(&found), choice).await?;
                    plan.targets.push(t);
                }
                None => {
                    let t = missing(opts, &image.region, &image.image_id, choice)?;
                    plan.targets.push(t);
                }
            }
        }
        return Ok(plan);
    }
    let ec2 = ctx.ec2();
    let found = match &opts.ami {
        Some(id) => ami::find_image(&ec2, &own, id).await?,
        None => None,
    };
    match (&found, &opts.ami, opts.all_regions) {
        (Some(image), Some(id), true) => {
            // The copies are found by name among this account's AMIs: the AMI named must be
            // this account's too, or another account's name would pick ours.
            if image.owner_id() != Some(account) {
                return Err(Error::Invalid(format!(
                    "AMI {id} belongs to account {}, not this one ({account}): --all-regions deletes this account's copies of its own AMI",
                    image.owner_id().unwrap_or("unknown")
                )));
            }
            let name = image.name().unwrap_or_default().to_string();
            let regions = regions_or_own(&ec2, &own, &[], true).await?;
            let others: Vec<String> = regions.iter().filter(|r| **r != own).cloned().collect();
            let (mut targets, failed) = gather(others, REGION_CONCURRENCY, |region| {
                let name = &name;
                async move {
                    let ec2 = ctx.in_region(&region).ec2();
                    match ami::image_named(&ec2, ami::Owner::This, name).await? {
                        Some(copy) => Ok(vec![target(&ec2, &region, Some(&copy), choice).await?]),
                        None => Ok(vec![]),
                    }
                }
            })
            .await;
            targets.sort_by(|a, b| a.region.cmp(&b.region));
            plan.targets = targets;
            plan.anchor = Some(target(&ec2, &own, Some(image), choice).await?);
            plan.regions = regions;
            plan.failed = failed;
        }
        // Without the AMI there is no name to find its copies by.
        (None, Some(id), true) => {
            return Err(Error::Invalid(format!(
                "AMI {id} does not exist in {own}, and --all-regions finds its copies by its name: delete them with --image REGION=ami-… for each, or --images-from with copy-regions' output"
            )))
        }
        (None, Some(id), false) => plan.targets.push(missing(opts, &own, id, choice)?),
        _ => plan
            .targets
            .push(target(&ec2, &own, found.as_ref(), choice).await?),
    }
    Ok(plan)
}

/// The calls [`apply`] will make.
pub(crate) fn check(plan: &Plan) -> Vec<Call> {
    let mut calls = vec![];
    for t in plan.targets.iter().chain(&plan.anchor) {
        if let Some(id) = &t.image {
            let image = vec![Resource::Image(Some(id.clone()))];
            calls.push(Call::new(Op::Ec2DeregisterImage, &t.region, image));
        }
        for id in &t.snapshots {
            let snapshot = vec![Resource::Snapshot(Some(id.clone()))];
            calls.push(Call::new(Op::Ec2DeleteSnapshot, &t.region, snapshot));
        }
    }
    calls
}

/// Every operation `delete-image` may make.
pub(crate) const MAY_CALL: &[Op] = &[
    Op::Ec2DescribeRegions,
    Op::Ec2DescribeImages,
    Op::Ec2DeregisterImage,
    Op::Ec2DeleteSnapshot,
    Op::IamSimulatePrincipalPolicy,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Status {
    /// The AMI was deregistered, or a snapshot deleted.
    Deleted,
    /// Nothing named was there any more (`--allow-missing`).
    Missing,
}

/// One line of output: what was removed in one region, and what was left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Removed {
    pub region: String,
    /// The AMI deregistered.
    pub image: Option<String>,
    /// The (first) snapshot deleted.
    pub snapshot: Option<String>,
    /// More snapshots deleted with the AMI (`--with-snapshots`, an AMI of several volumes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub more_snapshots: Vec<String>,
    /// The AMI's snapshots left (no `--snapshot` or `--with-snapshots`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
    /// What was named but was not there (`--allow-missing`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    pub status: Status,
}

async fn remove(ctx: &AwsContext, t: &Target, allow_missing: bool) -> Result<Removed> {
    let ec2 = ctx.in_region(&t.region).ec2();
    let image = match &t.image {
        Some(id) => {
            ami::deregister_image(&ec2, id, None, allow_missing)
                .await?
                .image
        }
        None => None,
    };
    let mut deleted = vec![];
    let mut missing = t.missing.clone();
    for (k, id) in t.snapshots.iter().enumerate() {
        match ami::delete_snapshot(&ec2, id, allow_missing).await {
            Ok(Some(id)) => deleted.push(id),
            Ok(None) => missing.push(id.clone()),
            Err(e) => {
                // The AMI is gone now: a rerun cannot read its snapshots off it any more.
                let left: Vec<String> = t.snapshots[k..]
                    .iter()
                    .map(|s| {
                        format!(
                            "imgpub aws delete-image --region {} --snapshot {s}",
                            t.region
                        )
                    })
                    .collect();
                let done = image
                    .as_ref()
                    .map_or(String::new(), |i| format!("{i} is deregistered; "));
                return Err(e.with_hint(&format!(
                    "{done}delete what is left with: {}",
                    left.join("; ")
                )));
            }
        }
    }
    let status = match image.is_some() || !deleted.is_empty() {
        true => Status::Deleted,
        false => Status::Missing,
    };
    let mut deleted = deleted.into_iter();
    Ok(Removed {
        region: t.region.clone(),
        image,
        snapshot: deleted.next(),
        more_snapshots: deleted.collect(),
        kept: t.kept.clone(),
        missing,
        status,
    })
}

/// Removes every target (the anchor last), printing a line for each; fails naming what
/// could not be looked at or removed.
pub(crate) async fn apply(
    ctx: &AwsContext,
    plan: &Plan,
    mut emit: impl FnMut(&Removed),
) -> Result<Vec<Removed>> {
    let mut all = vec![];
    let failed = fan_out(
        plan.targets.clone(),
        REGION_CONCURRENCY,
        |t| async move { remove(ctx, &t, plan.allow_missing).await },
        |_, removed: Removed| {
            emit(&removed);
            all.push(removed);
        },
    )
    .await;
    let mut failures = plan.failed.clone();
    failures.extend(
        failed
            .into_iter()
            .map(|(t, e)| (t.to_string(), e.to_string())),
    );
    if let Some(anchor) = &plan.anchor {
        match failures.is_empty() {
            true => match remove(ctx, anchor, plan.allow_missing).await {
                Ok(removed) => {
                    emit(&removed);
                    all.push(removed);
                }
                Err(e) => failures.push((anchor.to_string(), e.to_string())),
            },
            false => failures.push((
                anchor.to_string(),
                "kept until its copies are gone: they are found by its name".into(),
            )),
        }
    }
    if failures.is_empty() {
        return Ok(all);
    }
    let context = format!("deleting AMIs in {} regions", plan.regions.len());
    Err(failure_summary(context, &failures))
}

/// `n` things, in words: "1 AMI", "3 AMIs".
fn plural(n: usize, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// What was deleted, and the snapshots left when only the AMI was asked for.
fn summary(plan: &Plan, removed: &[Removed]) -> String {
    let images: Vec<&Removed> = removed.iter().filter(|r| r.image.is_some()).collect();
    let snapshots: usize = removed
        .iter()
        .map(|r| r.snapshot.iter().count() + r.more_snapshots.len())
        .sum();
    let kept: Vec<(&str, &str)> = removed
        .iter()
        .flat_map(|r| r.kept.iter().map(|s| (r.region.as_str(), s.as_str())))
        .collect();
    let regions: std::collections::BTreeSet<&str> = removed
        .iter()
        .filter(|r| r.status == Status::Deleted)
        .map(|r| r.region.as_str())
        .collect();
    let whole = match plan.regions.as_slice() {
        [one] => one.clone(),
        more => format!("{} regions", more.len()),
    };
    let mut line = match (images.as_slice(), snapshots, removed) {
        (_, _, []) | ([], 0, _) => {
            return format!("delete-image: nothing to do in {whole}: nothing named exists")
        }
        ([one], n, [_]) => {
            let id = one.image.as_deref().unwrap_or_default();
            let mut line = format!("delete-image: deregistered {id}");
            if let Some(s) = &one.snapshot {
                line.push_str(&format!(" and deleted snapshot {s}"));
            }
            if n > 1 {
                line.push_str(&format!(" and {} more", n - 1));
            }
            format!("{line} in {}", one.region)
        }
        ([], _, [one]) => format!(
            "delete-image: deleted snapshot {} in {}",
            one.snapshot.as_deref().unwrap_or_default(),
            one.region
        ),
        (images, n, _) => format!(
            "delete-image: deregistered {} and deleted {} in {} of {whole}",
            plural(images.len(), "AMI"),
            plural(n, "snapshot"),
            regions.len()
        ),
    };
    match kept.as_slice() {
        [] => {}
        [(region, snapshot)] => line.push_str(&format!(
            "; kept its snapshot {snapshot}{}: delete it with `imgpub aws delete-image --region {region} --snapshot {snapshot}`",
            match plan.choice {
                SnapshotChoice::None => " (without --snapshot, as ore)",
                _ => "",
            }
        )),
        more => line.push_str(&format!(
            "; kept their {} snapshots (without --with-snapshots, as ore): each line's \"kept\" names them",
            more.len()
        )),
    }
    line
}

impl Command for DeleteOptions {
    type Connection = Account;
    type Local = Asked;
    type Plan = Plan;

    fn validate(&self) -> Result<Asked> {
        asked(self)
    }

    async fn plan(&self, a: &Account, asked: Asked) -> Result<Plan> {
        plan(&a.ctx, &a.identity.account, self, asked).await
    }

    fn check(&self, _: &Account, plan: &Plan) -> Vec<Call> {
        check(plan)
    }

    fn policy(&self, a: &Account, plan: &Plan, _: &[Call]) -> Option<String> {
        let region = match plan.regions.as_slice() {
            [one] if *one == a.ctx.region => Some(one.as_str()),
            _ => None,
        };
        Some(needs::fix_line(For::Delete, None, region))
    }

    /// Each AMI, the snapshots that would go with it and those that would stay.
    fn describe(&self, _: &Account, plan: &Plan, _: &[Call]) -> Vec<String> {
        let mut lines = vec![];
        for t in plan.targets.iter().chain(&plan.anchor) {
            let mut done = vec![];
            if let Some(image) = &t.image {
                done.push(format!("deregister {image}"));
            }
            if !t.snapshots.is_empty() {
                done.push(format!("delete snapshot {}", t.snapshots.join(", ")));
            }
            if done.is_empty() {
                continue;
            }
            let mut line = format!("would {} in {}", done.join(" and "), t.region);
            if !t.kept.is_empty() {
                line.push_str(&format!("; its snapshot {} stays", t.kept.join(", ")));
            }
            lines.push(line);
        }
        lines
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        let removed = apply(&a.ctx, plan, |r| emit(Output::json(r))).await?;
        emit(Output::Summary(summary(plan, &removed)));
        Ok(())
    }
}
