//! `release restore RECORD…`: a pruned release brought back from the Recycle Bin, as its
//! record says it was. For each AMI of the record: its snapshot out of the bin first (EC2
//! restores an AMI only once its snapshots are back), then the AMI; then it is made
//! launchable again (prune disabled it), a deprecation that has passed is cancelled (prune
//! deprecated it), and it is shared as the record says (disabling had made it private).
//! An AMI found in EC2 gets whichever of those repairs it still lacks, so a rerun after a
//! run that stopped midway finishes the job. What is neither in EC2 nor restorable from the
//! bin (its retention ran out, no rule kept it, or its snapshot is gone) is named, and the
//! run exits 1.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::SystemTime;

use aws_sdk_ec2::types::{Filter, Image as Ec2Image, ImageState};
use serde::Serialize;

use crate::aws::ami::{self, Change, Sharing};
use crate::aws::calls::{Call, Op, Resource};
use crate::aws::propagation::{naming, Age};
use crate::aws::recycle_bin;
use crate::commands::driver::{Account, Command, Emit, Output};
use crate::commands::release::parse_time;
use crate::commands::release::record::Record;
use crate::error::{aws, Error, Result};

/// `imgpub release restore RECORD…`.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub records: Vec<PathBuf>,
}

/// Where one AMI of a record is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Found {
    /// In EC2, launchable.
    Available,
    /// In EC2, disabled (prune's second stage).
    Disabled,
    /// In the Recycle Bin, with its snapshot in the bin or in EC2.
    InBin,
    /// Not restorable.
    Gone,
}

/// One repair, in the order they are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Repair {
    SnapshotRestored,
    ImageRestored,
    Enabled,
    Undeprecated,
    Shared,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Target {
    pub release: String,
    pub image: String,
    pub region: String,
    pub ami: String,
    pub snapshot: String,
    pub found: Found,
    /// Why it is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The repairs known to be needed (after a restore from the bin, the AMI is read again
    /// for the rest).
    #[serde(skip)]
    pub repairs: Vec<Repair>,
    #[serde(skip)]
    pub sharing: Sharing,
}

#[derive(Debug)]
pub(crate) struct Plan {
    pub targets: Vec<Target>,
}

/// The sharing a record declares (none for a record written before it kept sharing).
fn sharing_of(record: &Record) -> Sharing {
    if record.public.is_none() {
        tracing::warn!(
            "the record of release {} predates its sharing: its AMIs are restored unshared (`imgpub release verify MANIFEST` writes the record anew)",
            record.release
        );
    }
    let users = record.shared_with.clone().unwrap_or_default();
    Sharing {
        public: record.public == Some(true),
        launch_users: users.clone(),
        snapshot_users: users,
        organizations: record.shared_with_organizations.clone(),
        organizational_units: record.shared_with_organizational_units.clone(),
    }
}

/// The repairs an AMI in EC2 needs: enabled, its passed deprecation cancelled, shared.
async fn repairs_of(
    ec2: &aws_sdk_ec2::Client,
    image: &Ec2Image,
    snapshot: &str,
    sharing: &Sharing,
) -> Result<Vec<Repair>> {
    let mut repairs = vec![];
    let id = image.image_id().unwrap_or_default();
    if image.state() == Some(&ImageState::Disabled) {
        repairs.push(Repair::Enabled);
    }
    let passed = image
        .deprecation_time()
        .and_then(parse_time)
        .is_some_and(|at| at <= SystemTime::now());
    if passed {
        repairs.push(Repair::Undeprecated);
    }
    if sharing.describe().is_some() {
        // A disabled AMI has no launch permissions: it is shared once enabled.
        let launch = match repairs.contains(&Repair::Enabled) {
            true => true,
            false => sharing.launch_missing(&ami::read_launch(ec2, id).await?),
        };
        if launch || sharing.volume_missing(&ami::read_volume(ec2, snapshot).await?) {
            repairs.push(Repair::Shared);
        }
    }
    Ok(repairs)
}

async fn plan(a: &Account, records: &[Record]) -> Result<Plan> {
    let mut by_region: BTreeMap<String, Vec<Target>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for record in records {
        let sharing = sharing_of(record);
        for image in &record.images {
            for (region, copy) in &image.regions {
                // The same AMI twice (a record named twice) is restored once.
                if !seen.insert((region.clone(), copy.ami.clone())) {
                    continue;
                }
                by_region.entry(region.clone()).or_default().push(Target {
                    release: record.release.clone(),
                    image: image.name.clone(),
                    region: region.clone(),
                    ami: copy.ami.clone(),
                    snapshot: copy.snapshot.clone(),
                    found: Found::Gone,
                    why: None,
                    repairs: vec![],
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
                    .set_values(Some(ids))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws(Op::Ec2DescribeImages, format!("in {region}"), e))?;
        let snapshots = ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(
                Filter::builder()
                    .name("snapshot-id")
                    .set_values(Some(snaps))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws(Op::Ec2DescribeSnapshots, format!("in {region}"), e))?;
        // "Recently deregistered images appear in the returned results for a short
        // interval" (DescribeImages): only an available or disabled AMI is still there.
        let in_ec2: BTreeMap<&str, &Ec2Image> = images
            .images()
            .iter()
            .filter(|i| {
                matches!(
                    i.state(),
                    Some(ImageState::Available | ImageState::Disabled)
                )
            })
            .filter_map(|i| Some((i.image_id()?, i)))
            .collect();
        let snapshots_in_ec2: BTreeSet<&str> = snapshots
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id())
            .collect();
        // The bin is asked only about what EC2 no longer has.
        let missing: Vec<String> = here
            .iter()
            .filter(|t| !in_ec2.contains_key(t.ami.as_str()))
            .map(|t| t.ami.clone())
            .collect();
        let missing_snaps: Vec<String> = here
            .iter()
            .filter(|t| !snapshots_in_ec2.contains(t.snapshot.as_str()))
            .map(|t| t.snapshot.clone())
            .collect();
        let binned = recycle_bin::images_in_bin(&ec2, &region, &missing).await?;
        let binned_snapshots = recycle_bin::snapshots_in_bin(&ec2, &region, &missing_snaps).await?;
        for t in &mut here {
            let snapshot_in_bin = binned_snapshots.contains(&t.snapshot);
            let snapshot_there = snapshot_in_bin || snapshots_in_ec2.contains(t.snapshot.as_str());
            match in_ec2.get(t.ami.as_str()) {
                Some(image) => {
                    t.found = match image.state() {
                        Some(ImageState::Disabled) => Found::Disabled,
                        _ => Found::Available,
                    };
                    t.repairs = repairs_of(&ec2, image, &t.snapshot, &t.sharing).await?;
                }
                None if binned.contains(&t.ami) && snapshot_there => {
                    t.found = Found::InBin;
                    if snapshot_in_bin {
                        t.repairs.push(Repair::SnapshotRestored);
                    }
                    t.repairs.push(Repair::ImageRestored);
                }
                None if binned.contains(&t.ami) => {
                    t.why = Some(format!(
                        "it is in the Recycle Bin, but its snapshot {} is deleted for good, so EC2 cannot restore it (a Recycle Bin rule for snapshots as long as the one for AMIs keeps both: `imgpub aws initialize --recycle-bin DAYS`)",
                        t.snapshot
                    ));
                }
                None => {
                    t.why = Some(
                        "neither in EC2 nor in the Recycle Bin (its retention ran out, or no Recycle Bin rule kept it: `imgpub aws initialize --recycle-bin DAYS` makes one)"
                            .into(),
                    );
                }
            }
        }
        targets.extend(here);
    }
    Ok(Plan { targets })
}

/// The calls for one AMI: those its repairs need, and for one in the bin those a restored
/// AMI may need.
fn calls(t: &Target) -> Vec<Call> {
    let image = || vec![Resource::Image(Some(t.ami.clone()))];
    let snapshot = || vec![Resource::Snapshot(Some(t.snapshot.clone()))];
    let mut repairs = t.repairs.clone();
    if t.found == Found::InBin {
        repairs.extend([Repair::Enabled, Repair::Undeprecated]);
        if t.sharing.describe().is_some() {
            repairs.push(Repair::Shared);
        }
    }
    let mut calls = vec![];
    for repair in repairs {
        match repair {
            Repair::SnapshotRestored => calls.push(Call::new(
                Op::Ec2RestoreSnapshotFromRecycleBin,
                &t.region,
                snapshot(),
            )),
            Repair::ImageRestored => calls.push(Call::new(
                Op::Ec2RestoreImageFromRecycleBin,
                &t.region,
                image(),
            )),
            Repair::Enabled => calls.push(Call::new(Op::Ec2EnableImage, &t.region, image())),
            Repair::Undeprecated => calls.push(Call::new(
                Op::Ec2DisableImageDeprecation,
                &t.region,
                image(),
            )),
            Repair::Shared => {
                let modify = Call::new(Op::Ec2ModifyImageAttribute, &t.region, image());
                calls.push(t.sharing.on(modify));
                let modify = Call::new(Op::Ec2ModifySnapshotAttribute, &t.region, snapshot());
                calls.push(t.sharing.on(modify));
            }
        }
    }
    calls
}

/// Every operation `release restore` may make.
pub(crate) const MAY_CALL: &[Op] = &[
    Op::Ec2DescribeImages,
    Op::Ec2DescribeSnapshots,
    Op::Ec2DescribeImageAttribute,
    Op::Ec2DescribeSnapshotAttribute,
    Op::Ec2ListImagesInRecycleBin,
    Op::Ec2ListSnapshotsInRecycleBin,
    Op::Ec2RestoreSnapshotFromRecycleBin,
    Op::Ec2RestoreImageFromRecycleBin,
    Op::Ec2EnableImage,
    Op::Ec2DisableImageDeprecation,
    Op::Ec2ModifyImageAttribute,
    Op::Ec2ModifySnapshotAttribute,
    Op::IamSimulatePrincipalPolicy,
];

/// Makes one AMI's repairs; the ones done, or the error and the ones done before it.
async fn restore(
    a: &Account,
    t: &Target,
) -> std::result::Result<Vec<Repair>, (Error, Vec<Repair>)> {
    let ec2 = a.ctx.in_region(&t.region).ec2();
    let mut done = vec![];
    let mut todo = t.repairs.clone();
    let mut age = Age::Known;
    for repair in [Repair::SnapshotRestored, Repair::ImageRestored] {
        if !todo.contains(&repair) {
            continue;
        }
        let outcome = match repair {
            Repair::SnapshotRestored => {
                recycle_bin::restore_snapshot(&ec2, &t.region, &t.snapshot).await
            }
            _ => recycle_bin::restore_image(&ec2, &t.region, &t.ami).await,
        };
        outcome.map_err(|e| (e, done.clone()))?;
        done.push(repair);
        age = Age::New;
    }
    if age == Age::New {
        // Back from the bin: what else it needs is read now (the state it comes back in
        // AWS does not say), allowing for EC2's eventual consistency.
        let what = format!("{} restored in {}", t.ami, t.region);
        let image = naming(Age::New, &what, || async {
            let out = ec2
                .describe_images()
                .image_ids(&t.ami)
                .include_deprecated(true)
                .include_disabled(true)
                .send()
                .await
                .map_err(|e| aws(Op::Ec2DescribeImages, what.clone(), e))?;
            out.images().first().cloned().ok_or_else(|| Error::Aws {
                context: what.clone(),
                op: Some(Op::Ec2DescribeImages),
                code: Some("InvalidAMIID.NotFound".into()),
                kind: crate::error::ErrorKind::NotFound,
                detail: "not visible after its restore".into(),
                source: None,
            })
        })
        .await
        .map_err(|e| (e, done.clone()))?;
        todo = repairs_of(&ec2, &image, &t.snapshot, &t.sharing)
            .await
            .map_err(|e| (e, done.clone()))?;
    }
    for repair in todo {
        let outcome = match repair {
            Repair::Enabled => ami::enable_image(&ec2, &t.ami).await,
            Repair::Undeprecated => ami::undeprecate(&ec2, &t.ami).await,
            Repair::Shared => {
                ami::share(
                    &ec2,
                    Some(&t.ami),
                    Some(&t.snapshot),
                    &t.sharing,
                    Change::Grant,
                    age,
                )
                .await
            }
            Repair::SnapshotRestored | Repair::ImageRestored => continue,
        };
        outcome.map_err(|e| (e, done.clone()))?;
        done.push(repair);
    }
    Ok(done)
}

/// One line per AMI: where it was and what the run did.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    target: &'a Target,
    done: Vec<Repair>,
}

impl Command for RestoreOptions {
    type Connection = Account;
    type Local = Vec<Record>;
    type Plan = Plan;

    fn validate(&self) -> Result<Vec<Record>> {
        Record::read_all(&self.records)
    }

    fn region(&self, records: &Vec<Record>) -> Option<String> {
        records.first().map(|r| r.source_region.clone())
    }

    async fn plan(&self, a: &Account, records: Vec<Record>) -> Result<Plan> {
        Record::all_of(&self.records, &records, &a.identity.account, "restore")?;
        plan(a, &records).await
    }

    fn check(&self, _: &Account, plan: &Plan) -> Vec<Call> {
        plan.targets.iter().flat_map(calls).collect()
    }

    fn policy(&self, _: &Account, plan: &Plan, _: &[Call]) -> Option<String> {
        let mut line =
            crate::commands::needs::fix_line(crate::commands::needs::For::Restore, None, None);
        let regions: BTreeSet<&str> = plan.targets.iter().map(|t| t.region.as_str()).collect();
        if plan.targets.iter().any(|t| t.sharing.public) {
            line.push_str(" --public");
        }
        let users: BTreeSet<&str> = plan
            .targets
            .iter()
            .flat_map(|t| t.sharing.launch_users.iter().map(String::as_str))
            .collect();
        if !users.is_empty() {
            let users: Vec<&str> = users.into_iter().collect();
            line.push_str(&format!(" --share-with {}", users.join(",")));
        }
        let regions: Vec<&str> = regions.into_iter().collect();
        line.push_str(&format!(" --regions {}", regions.join(",")));
        Some(line)
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        let mut failures = vec![];
        let mut repaired = 0;
        for t in &plan.targets {
            let done = match (&t.found, t.repairs.is_empty()) {
                (Found::Gone, _) => {
                    let why = t.why.as_deref().unwrap_or("not restorable");
                    failures.push(format!("{} ({}) in {}: {why}", t.ami, t.image, t.region));
                    vec![]
                }
                (_, true) => vec![],
                _ => match restore(a, t).await {
                    Ok(done) => {
                        repaired += 1;
                        done
                    }
                    Err((e, done)) => {
                        failures.push(format!("{} in {}: {e}", t.ami, t.region));
                        done
                    }
                },
            };
            emit(Output::json(&Line { target: t, done }));
        }
        let fine = plan
            .targets
            .iter()
            .filter(|t| t.found != Found::Gone && t.repairs.is_empty())
            .count();
        emit(Output::Summary(format!(
            "release restore: {repaired} AMIs brought back or repaired, {fine} already as their records say, {} not restored",
            failures.len()
        )));
        match failures.is_empty() {
            true => Ok(()),
            false => Err(Error::Incomplete {
                detail: format!(
                    "not restored: {}; a rerun continues with what is left",
                    failures.join("; ")
                ),
                best_effort_only: false,
            }),
        }
    }
}
