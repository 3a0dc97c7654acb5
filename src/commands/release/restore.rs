//! `release restore RECORD…`: a pruned release brought back from the Recycle Bin, as its
//! record says it was. For each AMI of the record: its snapshot out of the bin first (EC2
//! restores an AMI only once its snapshots are back), then the AMI; then it is made
//! launchable again (prune disabled it), its deprecation cancelled (prune deprecated it),
//! and shared as the record says (disabling had made it private). An AMI found in EC2 but
//! disabled gets the same repair. What is neither in EC2 nor in the bin (its retention ran
//! out, or it was deleted where no rule kept it) is named, and the run exits 1.

use std::path::PathBuf;

use aws_sdk_ec2::types::{Filter, ImageState};
use serde::Serialize;

use crate::aws::ami::{self, Change, Sharing};
use crate::aws::calls::{Call, Op, Resource};
use crate::aws::propagation::Age;
use crate::aws::recycle_bin;
use crate::commands::driver::{Account, Command, Emit, Output};
use crate::commands::release::record::Record;
use crate::error::{aws, Error, Result};

/// `imgpub release restore RECORD…`.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub records: Vec<PathBuf>,
}

/// Where one AMI of a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Found {
    /// In EC2 and launchable: nothing to do.
    Available,
    /// In EC2, disabled (prune's second stage).
    Disabled,
    /// In the Recycle Bin (its snapshot in the bin too, or already back).
    InBin,
    /// Neither: its retention ran out, or no rule kept it.
    Gone,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Target {
    pub release: String,
    pub image: String,
    pub region: String,
    pub ami: String,
    pub snapshot: String,
    pub found: Found,
    /// The snapshot is in the bin (restored first).
    #[serde(skip)]
    pub snapshot_in_bin: bool,
    #[serde(skip)]
    pub sharing: Sharing,
}

#[derive(Debug)]
pub(crate) struct Plan {
    pub targets: Vec<Target>,
}

async fn plan(a: &Account, records: &[Record]) -> Result<Plan> {
    let mut by_region: std::collections::BTreeMap<String, Vec<Target>> = Default::default();
    for record in records {
        let users = record.shared_with.clone().unwrap_or_default();
        let sharing = Sharing {
            public: record.public == Some(true),
            launch_users: users.clone(),
            snapshot_users: users,
            ..Sharing::default()
        };
        for image in &record.images {
            for (region, copy) in &image.regions {
                by_region.entry(region.clone()).or_default().push(Target {
                    release: record.release.clone(),
                    image: image.name.clone(),
                    region: region.clone(),
                    ami: copy.ami.clone(),
                    snapshot: copy.snapshot.clone(),
                    found: Found::Gone,
                    snapshot_in_bin: false,
                    sharing: sharing.clone(),
                });
            }
        }
    }
    let mut targets = vec![];
    for (region, mut here) in by_region {
        let ec2 = a.ctx.in_region(&region).ec2();
        let ids: Vec<String> = here.iter().map(|t| t.ami.clone()).collect();
        let snaps: Vec<String> = here.iter().map(|t| t.snapshot.clone()).collect();
        // By filter, not by id: an id that is gone is an answer, not an error.
        let images = ec2
            .describe_images()
            .owners("self")
            .include_deprecated(true)
            .include_disabled(true)
            .filters(
                Filter::builder()
                    .name("image-id")
                    .set_values(Some(ids.clone()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws(Op::Ec2DescribeImages, format!("in {region}"), e))?;
        let binned = recycle_bin::images_in_bin(&ec2, &region, &ids).await?;
        let binned_snapshots = recycle_bin::snapshots_in_bin(&ec2, &region, &snaps).await?;
        for t in &mut here {
            let state = images
                .images()
                .iter()
                .find(|i| i.image_id() == Some(t.ami.as_str()))
                .and_then(|i| i.state());
            t.found = match state {
                Some(ImageState::Disabled) => Found::Disabled,
                Some(_) => Found::Available,
                None if binned.contains(&t.ami) => Found::InBin,
                None => Found::Gone,
            };
            t.snapshot_in_bin = binned_snapshots.contains(&t.snapshot);
        }
        targets.extend(here);
    }
    Ok(Plan { targets })
}

/// The calls for one AMI to be brought back.
fn calls(t: &Target) -> Vec<Call> {
    let image = || vec![Resource::Image(Some(t.ami.clone()))];
    let mut calls = vec![];
    if matches!(t.found, Found::Available | Found::Gone) {
        return calls;
    }
    if t.snapshot_in_bin {
        calls.push(Call::new(
            Op::Ec2RestoreSnapshotFromRecycleBin,
            &t.region,
            vec![Resource::Snapshot(Some(t.snapshot.clone()))],
        ));
    }
    if t.found == Found::InBin {
        calls.push(Call::new(
            Op::Ec2RestoreImageFromRecycleBin,
            &t.region,
            image(),
        ));
    }
    // Whether a disabled AMI comes back from the bin disabled AWS does not say: enabled
    // when it is.
    calls.push(Call::new(Op::Ec2EnableImage, &t.region, image()));
    calls.push(Call::new(
        Op::Ec2DisableImageDeprecation,
        &t.region,
        image(),
    ));
    if t.sharing.describe().is_some() {
        calls.push(
            t.sharing
                .on(Call::new(Op::Ec2ModifyImageAttribute, &t.region, image())),
        );
        calls.push(t.sharing.on(Call::new(
            Op::Ec2ModifySnapshotAttribute,
            &t.region,
            vec![Resource::Snapshot(Some(t.snapshot.clone()))],
        )));
    }
    calls
}

/// Every operation `release restore` may make.
pub(crate) const MAY_CALL: &[Op] = &[
    Op::Ec2DescribeImages,
    Op::Ec2ListImagesInRecycleBin,
    Op::Ec2ListSnapshotsInRecycleBin,
    Op::Ec2RestoreSnapshotFromRecycleBin,
    Op::Ec2RestoreImageFromRecycleBin,
    Op::Ec2EnableImage,
    Op::Ec2DisableImageDeprecation,
    Op::Ec2ModifyImageAttribute,
    Op::Ec2ModifySnapshotAttribute,
    Op::Ec2GetImageBlockPublicAccessState,
    Op::Ec2GetSnapshotBlockPublicAccessState,
    Op::IamSimulatePrincipalPolicy,
];

async fn restore(a: &Account, t: &Target) -> Result<Vec<&'static str>> {
    let ec2 = a.ctx.in_region(&t.region).ec2();
    let mut done = vec![];
    if t.snapshot_in_bin {
        recycle_bin::restore_snapshot(&ec2, &t.region, &t.snapshot).await?;
        done.push("snapshot-restored");
    }
    if t.found == Found::InBin {
        recycle_bin::restore_image(&ec2, &t.region, &t.ami).await?;
        done.push("image-restored");
    }
    let now = ec2
        .describe_images()
        .image_ids(&t.ami)
        .include_deprecated(true)
        .include_disabled(true)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DescribeImages,
                format!("{} in {}", t.ami, t.region),
                e,
            )
        })?;
    let image = now.images().first();
    if image.and_then(|i| i.state()) == Some(&ImageState::Disabled) {
        ami::enable_image(&ec2, &t.ami).await?;
        done.push("enabled");
    }
    if image.and_then(|i| i.deprecation_time()).is_some() {
        ami::undeprecate(&ec2, &t.ami).await?;
        done.push("undeprecated");
    }
    if t.sharing.describe().is_some() {
        ami::share(
            &ec2,
            Some(&t.ami),
            Some(&t.snapshot),
            &t.sharing,
            Change::Grant,
            Age::Known,
        )
        .await?;
        done.push("shared");
    }
    Ok(done)
}

/// One line per AMI: where it was and what the run did.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    target: &'a Target,
    done: Vec<&'static str>,
}

impl Command for RestoreOptions {
    type Connection = Account;
    type Local = Vec<Record>;
    type Plan = Plan;

    fn validate(&self) -> Result<Vec<Record>> {
        if self.records.is_empty() {
            return Err(Error::Invalid(
                "name at least one release record (RECORD.json, as `release apply` or `release verify` writes it)".into(),
            ));
        }
        self.records.iter().map(|p| Record::read(p)).collect()
    }

    fn region(&self, records: &Vec<Record>) -> Option<String> {
        records.first().map(|r| r.source_region.clone())
    }

    async fn plan(&self, a: &Account, records: Vec<Record>) -> Result<Plan> {
        plan(a, &records).await
    }

    fn check(&self, _: &Account, plan: &Plan) -> Vec<Call> {
        plan.targets.iter().flat_map(calls).collect()
    }

    fn policy(&self, _: &Account, plan: &Plan, _: &[Call]) -> Option<String> {
        let mut line =
            crate::commands::needs::fix_line(crate::commands::needs::For::Restore, None, None);
        let mut regions: Vec<&str> = plan.targets.iter().map(|t| t.region.as_str()).collect();
        regions.sort();
        regions.dedup();
        if plan.targets.iter().any(|t| t.sharing.public) {
            line.push_str(" --public");
        }
        let mut users: Vec<&str> = plan
            .targets
            .iter()
            .flat_map(|t| t.sharing.launch_users.iter().map(String::as_str))
            .collect();
        users.sort();
        users.dedup();
        if !users.is_empty() {
            line.push_str(&format!(" --share-with {}", users.join(",")));
        }
        line.push_str(&format!(" --regions {}", regions.join(",")));
        Some(line)
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        let mut failures = vec![];
        let mut restored = 0;
        for t in &plan.targets {
            let done = match t.found {
                Found::Available => vec![],
                Found::Gone => {
                    failures.push(format!(
                        "{} ({}) in {}: neither in EC2 nor in the Recycle Bin (its retention ran out, or no Recycle Bin rule kept it: `imgpub aws initialize --recycle-bin DAYS` makes one)",
                        t.ami, t.image, t.region
                    ));
                    vec![]
                }
                Found::Disabled | Found::InBin => match restore(a, t).await {
                    Ok(done) => {
                        restored += 1;
                        done
                    }
                    Err(e) => {
                        failures.push(format!("{} in {}: {e}", t.ami, t.region));
                        vec![]
                    }
                },
            };
            emit(Output::json(&Line { target: t, done }));
        }
        emit(Output::Summary(format!(
            "release restore: {restored} AMIs brought back, {} already available, {} not restorable",
            plan.targets
                .iter()
                .filter(|t| t.found == Found::Available)
                .count(),
            failures.len()
        )));
        match failures.is_empty() {
            true => Ok(()),
            false => Err(Error::Incomplete {
                detail: format!("not restored: {}", failures.join("; ")),
                best_effort_only: false,
            }),
        }
    }
}
