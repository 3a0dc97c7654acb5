//! `release plan` and `release apply`: each image's upload plan in the source region, and
//! what every target region has of it; then the uploads, and per region a copy and its SSM
//! parameters as soon as that region's copy is ready, all regions side by side.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::aws::ami;
use crate::aws::calls::{Call, Op, Resource};
use crate::aws::copy::{self, Copied, InRegion, Source, SourceKey};
use crate::aws::ebs_direct;
use crate::aws::images::RegionalImage;
use crate::aws::import::Encryption;
use crate::aws::regions::{fan_out, list_regions, target_regions, RegionFilter};
use crate::aws::ssm;
use crate::commands::driver::{Account, Emit, Output};
use crate::commands::release::manifest::{CopyFrom, Manifest, Targets};
use crate::commands::release::record::{Parameter, Placed, Record};
use crate::commands::upload::{self, ImageStep, LocalPlan};
use crate::error::{Error, Result};

/// What the release has and lacks, and whether it can complete.
#[derive(Debug)]
pub(crate) struct Plan {
    pub manifest: Manifest,
    /// The regions the release is copied to: besides the source, sorted; for an account
    /// that copies (`copy_from`), every region, its source region first.
    pub targets: Vec<String>,
    pub images: Vec<ImagePlan>,
    /// Each image's source as asked (what the copies must look like).
    pub sources: Vec<Source>,
    /// Why the release cannot complete as declared, each with its fix.
    pub problems: Vec<String>,
    /// With `regions = "all"`: the opt-in regions it includes (enabled for the account) and
    /// those it leaves out (not enabled), for the plan to say.
    pub opt_in: Option<OptIn>,
    /// Snapshot copies already in flight into each target region the release copies to.
    pub in_flight: BTreeMap<String, usize>,
    /// Earlier releases' records, whose measured times the plan estimates from.
    pub earlier: Earlier,
    /// For an account that copies: how it meets the AMIs not found yet.
    pub awaiting: Awaiting,
}

/// The newest records of an earlier release of the stream beside this one's (only `plan`
/// reads them).
#[derive(Debug, Default)]
pub(crate) struct Earlier {
    /// This account's.
    pub own: Option<Box<Record>>,
    /// For an account that copies: the uploading account's, for the wait for its uploads.
    pub uploads: Option<Box<Record>>,
}

/// How an account that copies meets the uploading account's AMIs its plan did not find.
#[derive(Debug, Clone)]
pub(crate) enum Awaiting {
    /// That account runs beside this one: wait while its run goes on.
    Beside(OwnerDone),
    /// Another runner publishes them at the same time (`--wait-for-uploads`): wait this long.
    Elsewhere(std::time::Duration),
    /// They are not coming: the plan stops (an account that uploads has nothing to wait for).
    Not,
}

#[derive(Debug)]
pub(crate) struct OptIn {
    pub included: Vec<String>,
    pub left_out: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct ImagePlan {
    /// `upload`'s own plan in the source region; `None` in an account that copies.
    pub upload: Option<upload::Plan>,
    /// Each target region, in `Plan::targets`' order.
    pub found: Vec<Found>,
    /// `delta = true`: what the upload would send on its parent, or why it is whole.
    pub delta: Option<Delta>,
    /// At most what a whole snapshot of the image stores (its blocks that hold data), for
    /// the storage estimate; `None` when the image is not a local file.
    pub stored_bytes: Option<u64>,
}

/// `delta = true` in the plan.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum Delta {
    On(ebs_direct::Estimate),
    Whole { whole: String },
}

/// What a target region has of an image.
#[derive(Debug, Clone)]
pub(crate) enum Found {
    /// Looked at: nothing, an earlier copy (and what it lacks), or a failed one.
    In(InRegion),
    /// The region could not be looked at (a best-effort region; for another one this is a
    /// problem of the plan).
    Unknown(String),
}

/// Whether an image in a region exists or will be made, as `plan` prints it.
#[derive(Debug, Serialize)]
struct Line<'a> {
    image: &'a str,
    region: &'a str,
    /// `exists`, `fix` (it exists, but lacks tags, sharing or deprecation), `upload`,
    /// `copy`, `recopy` or `unknown`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ami: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    best_effort: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a Delta>,
    /// What the new snapshot adds to the account's snapshot storage, at most (a copy of a
    /// lineage already in the region can be incremental, and store less).
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_added_bytes: Option<u64>,
    /// Snapshot copies already in flight into the region, when the release copies there.
    #[serde(skip_serializing_if = "Option::is_none")]
    copies_in_flight: Option<usize>,
}

/// At most what a snapshot of the image stores: its 512 KiB blocks that hold data (EBS
/// stores no block never written), from the file's extents rather than its bytes.
async fn stored_bytes(local: &LocalPlan) -> Result<Option<u64>> {
    let (path, info) = match &local.source {
        upload::Source::File { path, info, .. } => (path.clone(), info.clone()),
        upload::Source::Blocks(req) => (req.path.clone(), req.info.clone()),
        upload::Source::Object { .. } | upload::Source::Snapshot(_) => return Ok(None),
    };
    crate::blocking::run(move || {
        let disk = crate::image::Disk::open(&path, &info)?;
        let blocks = disk.data_blocks()?.len() as u64;
        Ok(Some(blocks * crate::image::BLOCK_SIZE as u64))
    })
    .await
}

/// With `delta = true`, what an image's upload would send on its parent (the image read
/// and hashed), or why it is written whole.
async fn delta_of(planned: &upload::Plan) -> Result<Option<Delta>> {
    let upload::SnapshotStep::Write(_, req) = &planned.snapshot else {
        return Ok(None);
    };
    match (&req.parent, &req.base) {
        (None, _) => Ok(None),
        (Some(_), ebs_direct::Base::Whole { why }) => Ok(Some(Delta::Whole {
            whole: why.clone().unwrap_or_default(),
        })),
        (Some(_), ebs_direct::Base::Parent(map)) => {
            let (req, map) = (req.clone(), Arc::clone(map));
            let estimate = crate::blocking::run(move || ebs_direct::estimate(&req, &map)).await?;
            Ok(Some(Delta::On(estimate)))
        }
    }
}

/// Reads what exists: `upload`'s plan for each image, then every target region. An account
/// that copies reads the uploading account's AMIs instead (`awaiting`: whether those not
/// there yet may still be made while it runs).
pub(crate) async fn plan(
    a: &Account,
    manifest: Manifest,
    locals: Vec<LocalPlan>,
    awaiting: Awaiting,
    earlier: Earlier,
) -> Result<Plan> {
    let source = Account {
        ctx: a.ctx.in_region(&manifest.source_region),
        identity: a.identity.clone(),
    };
    let ec2 = source.ctx.ec2();
    let (named, all) = match &manifest.targets {
        Targets::All => (vec![], true),
        Targets::Named(list) => (list.clone(), false),
    };
    // A named region that is not enabled is bad input (exit 2), before anything is made.
    let mut targets = target_regions(&ec2, &named, all).await?;
    targets.retain(|r| *r != manifest.source_region);
    if manifest.copy_from().is_some() {
        targets.insert(0, manifest.source_region.clone());
    }
    let opt_in = match all {
        true => Some(OptIn {
            included: list_regions(&ec2, RegionFilter::OptedIn).await?,
            left_out: list_regions(&ec2, RegionFilter::Disabled).await?,
        }),
        false => None,
    };
    let mut uploads = vec![];
    let mut deltas = vec![];
    let mut stored = vec![];
    for local in locals {
        let planned = upload::plan(&source.clients(), local).await?;
        deltas.push(delta_of(&planned).await?);
        stored.push(stored_bytes(&planned.local).await?);
        uploads.push(planned);
    }
    let mut sources: Vec<Source> = vec![];
    let mut problems = vec![];
    if let Some(from) = manifest.copy_from() {
        for i in 0..manifest.images.len() {
            let found = shared_source(&a.ctx, &manifest, from, i).await?;
            if found.is_none() && matches!(awaiting, Awaiting::Not) {
                problems.push(format!(
                    "account {} ({}) has no AMI named {} in {} that this account can copy (available, and shared with it: the AMI and its snapshot); publish it there first (`release apply --only account={}` shares it), run both accounts together, or let this run wait for another runner's uploads (--wait-for-uploads 2h)",
                    from.name, from.id, manifest.images[i].name, from.region, from.name
                ));
            }
            let found = match found {
                Some(found) => found,
                None => copied_source(&manifest, from, i, None)?,
            };
            sources.push(found);
        }
    }
    for (i, upload) in uploads.iter().enumerate() {
        let mut asked = asked_source(&manifest, i, upload);
        // `deprecate_in` counts from the first publish: the copies are compared with the
        // time the source already has, not with one counted from now.
        let kept = upload
            .local
            .register
            .as_ref()
            .is_some_and(|r| r.deprecation_kept);
        if let (ImageStep::Reuse(id), true) = (&upload.image, kept) {
            let now = copy::describe_source(&ec2, &manifest.source_region, id).await?;
            asked.deprecate_at = now.deprecate_at.or(asked.deprecate_at);
        }
        sources.push(asked);
    }
    let public = manifest.sharing.public;
    let mut found_in: Vec<(String, Vec<Found>)> = vec![];
    let mut in_flight = BTreeMap::new();
    let failed = fan_out(
        targets.clone(),
        crate::commands::REGION_CONCURRENCY,
        |region| {
            let sources = &sources;
            let ctx = &a.ctx;
            async move {
                let here = ctx.in_region(&region);
                let ec2 = here.ec2();
                if public {
                    ami::check_public_sharing(&ec2, &region, true).await?;
                }
                let mut found = vec![];
                for source in sources {
                    found.push(Found::In(copy::find_in_region(&ec2, source).await?));
                }
                let absent = |f: &Found| !matches!(f, Found::In(InRegion::Present(_)));
                if public && found.iter().any(absent) {
                    // A copy made there would be encrypted, and so could not be public.
                    ami::check_new_snapshots_unencrypted(&ec2, &region).await?;
                }
                if public {
                    let adding = found.iter().filter(|f| not_yet_public(f)).count();
                    let quotas = here.service_quotas();
                    ami::check_public_ami_quota(&ec2, &quotas, &region, adding).await?;
                }
                // Copies beyond the destination's limit wait for a slot: the plan says so.
                let busy = match found.iter().any(absent) {
                    true => copy::copies_in_flight(&ec2, &region).await?,
                    false => 0,
                };
                Ok((found, busy))
            }
        },
        |region, (found, busy)| {
            found_in.push((region.clone(), found));
            if busy > 0 {
                in_flight.insert(region.clone(), busy);
            }
        },
    )
    .await;
    if public && !uploads.is_empty() {
        // The source region's new AMIs count against its quota too, and so does one found
        // there that is not public yet (it lacks its launch permissions).
        let adding = uploads
            .iter()
            .filter(|u| !matches!(u.image, ImageStep::Reuse(_)) || u.touch.launch)
            .count();
        let quotas = source.ctx.service_quotas();
        let region = &manifest.source_region;
        if let Err(err) = ami::check_public_ami_quota(&ec2, &quotas, region, adding).await {
            problems.push(format!("{region}: {err}"));
        }
    }
    for (region, err) in &failed {
        let why = err.to_string();
        if !manifest.best_effort(region) {
            problems.push(format!("{region}: {why}"));
        }
        found_in.push((region.clone(), vec![Found::Unknown(why); sources.len()]));
    }
    // An account that copies has no upload plans: one image plan per image all the same.
    let mut uploads = uploads.into_iter().map(Some).collect::<Vec<_>>();
    uploads.resize_with(manifest.images.len(), || None);
    deltas.resize(manifest.images.len(), None);
    stored.resize(manifest.images.len(), None);
    let images = uploads
        .into_iter()
        .enumerate()
        .zip(deltas.into_iter().zip(stored))
        .map(|((i, upload), (delta, stored_bytes))| ImagePlan {
            upload,
            delta,
            stored_bytes,
            found: targets
                .iter()
                .map(|t| {
                    found_in
                        .iter()
                        .find(|(r, _)| r == t)
                        .map_or(Found::In(InRegion::Absent), |(_, f)| f[i].clone())
                })
                .collect(),
        })
        .collect();
    Ok(Plan {
        manifest,
        targets,
        images,
        sources,
        problems,
        opt_in,
        in_flight,
        earlier,
        awaiting,
    })
}

/// The uploading account's AMI of image `i`, as this account's copies must look: found
/// (shared with this account, and available), or `None` while it is not.
async fn shared_source(
    ctx: &crate::aws::config::AwsContext,
    m: &Manifest,
    from: &CopyFrom,
    i: usize,
) -> Result<Option<Source>> {
    let ec2 = ctx.in_region(&from.region).ec2();
    let found = ami::image_named(&ec2, ami::Owner::Other(&from.id), &m.images[i].name).await?;
    let Some(image) =
        found.filter(|i| i.state() == Some(&aws_sdk_ec2::types::ImageState::Available))
    else {
        return Ok(None);
    };
    // Its snapshot must be shared too, or the copy is refused: the owner shares it after the
    // AMI, and a public AMI is visible before either.
    let Some(snapshot) = ami::root_snapshot_of(&image) else {
        return Ok(None);
    };
    if !ami::snapshot_readable(&ec2, &from.id, &snapshot).await? {
        return Ok(None);
    }
    let id = ami::image_id_of(&image)?;
    let mut source = copied_source(m, from, i, Some(id))?;
    source.snapshot = Some(snapshot);
    // Its deprecation time is the release's: every account's copies get the same.
    let deprecated = image.deprecation_time().and_then(super::parse_time);
    if let Some(at) = deprecated {
        source.deprecate_at = Some(aws_smithy_types::DateTime::from(at));
    }
    Ok(Some(source))
}

/// Image `i` as an account that copies publishes it: the uploading account's AMI (`*`
/// while there is none, as a source not yet made is everywhere), with this account's tags
/// and sharing, and the deprecation the manifest asks for (the found AMI's replaces it).
fn copied_source(m: &Manifest, from: &CopyFrom, i: usize, id: Option<String>) -> Result<Source> {
    let image = &m.images[i];
    let tags = crate::aws::tags::with_managed(&m.tags);
    let deprecate_at = m
        .deprecate
        .as_ref()
        .map(|d| upload::deprecation_time(d, m.sharing.public))
        .transpose()?;
    Ok(Source {
        image_id: id.unwrap_or_else(|| "*".into()),
        region: from.region.clone(),
        name: image.name.clone(),
        description: image.description.clone(),
        snapshot: None,
        tags: tags.clone(),
        snapshot_tags: tags,
        sharing: m.sharing.clone(),
        deprecate_at,
        // An encrypted account's uploads are not copied into others (the manifest says so).
        key: SourceKey::Unencrypted,
    })
}

/// Whether a public release makes this region's copy public: it is not there yet, or
/// lacks its launch permissions.
fn not_yet_public(found: &Found) -> bool {
    match found {
        Found::In(InRegion::Present(earlier)) => earlier.lacks.launch,
        _ => true,
    }
}

/// Image `i`'s source AMI as the manifest asks for it, to compare the copies with: the AMI
/// an earlier run made (`*` while there is none), its tags, sharing and deprecation.
fn asked_source(m: &Manifest, i: usize, upload: &upload::Plan) -> Source {
    let image = &m.images[i];
    let id = match &upload.image {
        ImageStep::Reuse(id) => id.clone(),
        _ => "*".to_string(),
    };
    let tags = crate::aws::tags::with_managed(&m.tags);
    Source {
        image_id: id,
        region: m.source_region.clone(),
        name: image.name.clone(),
        description: image.description.clone(),
        snapshot: None,
        tags: tags.clone(),
        snapshot_tags: tags,
        sharing: m.sharing.clone(),
        deprecate_at: upload.local.register.as_ref().and_then(|r| r.deprecate_at),
        key: match &m.encryption {
            Encryption::Key(key) => SourceKey::Customer(key.clone()),
            Encryption::DefaultKey => SourceKey::Unknown,
            Encryption::None => SourceKey::Unencrypted,
        },
    }
}

impl Plan {
    /// Fails, naming every problem, when the release cannot complete.
    pub(crate) fn can_complete(&self) -> Result<()> {
        if self.problems.is_empty() {
            return Ok(());
        }
        Err(Error::Incomplete {
            detail: format!(
                "release {} cannot complete as declared; nothing was made: {}",
                self.manifest.release,
                self.problems.join("; ")
            ),
            best_effort_only: false,
        })
    }

    /// The source AMI of image `i` when it exists already.
    fn source_ami(&self, i: usize) -> Option<&str> {
        match self.images[i].upload.as_ref().map(|u| &u.image) {
            Some(ImageStep::Reuse(id)) => Some(id),
            _ => None,
        }
    }

    /// Every region the release is in: the source (where it is uploaded), then the targets.
    fn regions(&self) -> Vec<String> {
        let m = &self.manifest;
        let source = m.copy_from().is_none().then(|| m.source_region.clone());
        source
            .into_iter()
            .chain(self.targets.iter().cloned())
            .collect()
    }
}

/// The calls apply will make: each upload's, then each copy's (what a region lacks) and
/// each parameter's.
pub(crate) fn check(plan: &Plan) -> Vec<Call> {
    let m = &plan.manifest;
    let mut calls = vec![];
    for (i, image) in plan.images.iter().enumerate() {
        if let Some(upload) = &image.upload {
            calls.extend(upload::check(upload));
        }
        for (region, found) in plan.targets.iter().zip(&image.found) {
            if let Found::In(found) = found {
                calls.extend(copy::calls(&plan.sources[i], region, found));
            }
        }
        for region in &plan.regions() {
            for parameter in parameters(m, i, region) {
                let resource = vec![Resource::Parameter(parameter)];
                calls.push(Call::new(Op::SsmPutParameter, region, resource));
            }
            if m.protect {
                let image = vec![Resource::Image(None)];
                let op = Op::Ec2EnableImageDeregistrationProtection;
                calls.push(Call::new(op, region, image));
            }
        }
    }
    calls
}

/// The parameter names of image `i` in `region` (the templates need only the name, the
/// architecture and the manifest's tags, all known before the AMI exists).
fn parameters(m: &Manifest, i: usize, region: &str) -> Vec<String> {
    let facts = m.facts(&m.images[i], region, "");
    m.parameters
        .iter()
        .filter_map(|t| t.render(&facts).ok())
        .collect()
}

/// The `imgpub aws policy` line that grants the whole release.
pub(crate) fn policy_line(plan: &Plan, calls: &[Call]) -> String {
    let m = &plan.manifest;
    // An account that copies uploads nothing.
    let uploads = m.copy_from().is_none();
    let mut line = String::from(match uploads {
        true => "imgpub aws policy --for upload,copy",
        false => "imgpub aws policy --for copy",
    });
    if !m.parameters.is_empty() {
        line.push_str(",ssm --ssm-prefix /PATH/");
    }
    if let Some(bucket) = m.bucket.as_ref().filter(|_| uploads) {
        line.push_str(&format!(" --bucket {}", bucket.trim_start_matches("s3://")));
    }
    line.push_str(&format!(" --regions {}", plan.regions().join(",")));
    // Copies are authorized on their source too: the source region's (the uploading
    // account's, for an account that copies).
    let from = m.copy_from().map_or(&m.source_region, |from| &from.region);
    line.push_str(&format!(" --source-region {from}"));
    if m.via == upload::Via::EbsDirect && uploads {
        line.push_str(" --via ebs-direct");
        if m.delta {
            line.push_str(" --delta");
        }
    }
    if m.protect {
        line.push_str(" --protect");
    }
    if uploads && m.via == upload::Via::S3 && m.vmimport_role != "vmimport" {
        line.push_str(&format!(" --role-name {}", m.vmimport_role));
    }
    crate::aws::preflight::with_sharing(&line, calls)
}

/// `release plan`: a line per image and region, then the problems, if any.
pub(crate) fn show(plan: &Plan, emit: Emit<'_>) -> Result<()> {
    let m = &plan.manifest;
    let (mut exist, mut make) = (0, 0);
    let mut storage: Option<u64> = Some(0);
    for (i, image) in plan.images.iter().enumerate() {
        let name = m.images[i].name.as_str();
        let source = plan.source_ami(i);
        if let Some(upload) = &image.upload {
            let status = match (source, upload.touch.on_image()) {
                (None, _) => "upload",
                (Some(_), true) => "fix",
                (Some(_), false) => "exists",
            };
            // A new snapshot in the source region: a delta's own blocks, else the whole image.
            let added = match (status, &image.delta) {
                ("upload", Some(Delta::On(estimate))) => Some(estimate.storage_added_bytes),
                ("upload", _) => image.stored_bytes,
                _ => Some(0),
            };
            storage = storage.zip(added).map(|(a, b)| a + b);
            emit(Output::json(&Line {
                image: name,
                region: &m.source_region,
                status,
                ami: source,
                best_effort: false,
                why: None,
                delta: image.delta.as_ref(),
                storage_added_bytes: added.filter(|_| status == "upload" && image.delta.is_none()),
                copies_in_flight: None,
            }));
            exist += usize::from(status == "exists");
            make += usize::from(status != "exists");
        }
        // An account that copies: from the uploading account's AMI, once it is there.
        let waits = m
            .copy_from()
            .filter(|_| plan.sources[i].image_id == "*")
            .map(|from| match &plan.awaiting {
                Awaiting::Elsewhere(wait) => format!(
                    "copied from account {}'s AMI once another run uploads it (apply waits up to {})",
                    from.name,
                    crate::units::show_duration(*wait)
                ),
                _ => format!(
                    "copied from account {}'s AMI once it is uploaded",
                    from.name
                ),
            });
        for (region, found) in plan.targets.iter().zip(&image.found) {
            let (status, ami, why) = match found {
                Found::In(InRegion::Present(e)) if e.lacks.any() => {
                    ("fix", Some(e.found.image_id.as_str()), None)
                }
                Found::In(InRegion::Present(e)) => {
                    ("exists", Some(e.found.image_id.as_str()), None)
                }
                Found::In(InRegion::Absent) => ("copy", None, waits.as_deref()),
                Found::In(InRegion::Failed(old)) => ("recopy", Some(old.image_id.as_str()), None),
                Found::Unknown(why) => ("unknown", None, Some(why.as_str())),
            };
            exist += usize::from(status == "exists");
            make += usize::from(status != "exists");
            // A copy stores the whole snapshot at most.
            let added = match status {
                "copy" | "recopy" | "unknown" => image.stored_bytes,
                _ => Some(0),
            };
            storage = storage.zip(added).map(|(a, b)| a + b);
            emit(Output::json(&Line {
                image: name,
                region,
                status,
                ami,
                best_effort: m.best_effort(region),
                why,
                delta: None,
                storage_added_bytes: added.filter(|_| matches!(status, "copy" | "recopy")),
                copies_in_flight: plan
                    .in_flight
                    .get(region.as_str())
                    .copied()
                    .filter(|_| matches!(status, "copy" | "recopy")),
            }));
        }
    }
    let regions = plan.regions().len();
    let images = plan.images.len();
    let said = match make {
        0 => format!(
            "release plan: nothing to do: all {exist} AMIs of release {} ({images} images in {regions} regions) exist",
            m.release
        ),
        _ => format!(
            "release plan: {make} AMIs to make or put right and {exist} in place for release {} ({images} images in {regions} regions){}; nothing was changed",
            m.release,
            match storage {
                Some(bytes) if bytes >= 1 << 30 => format!(
                    "; the new snapshots store at most {:.1} GiB (billed per GiB-month in each region)",
                    bytes as f64 / (1u64 << 30) as f64
                ),
                Some(bytes) => format!(
                    "; the new snapshots store at most {} MiB (billed per GiB-month in each region)",
                    bytes.div_ceil(1 << 20)
                ),
                None => String::new(),
            }
        ),
    };
    let estimate = match make {
        0 => String::new(),
        _ => estimate_words(plan),
    };
    emit(Output::Summary(
        said + &estimate + &opt_in_words(plan.opt_in.as_ref()) + &slot_words(plan),
    ));
    plan.can_complete()
}

/// How long apply may take, from what an earlier release of the stream took (its record's
/// timings), each step scaled by the data its image holds now against then: the uploads
/// one after another, then the copies, `copy_concurrency` at a time. An account that
/// copies waits for the uploads it did not find, as long as the uploading account's
/// record says they took.
fn estimate_words(plan: &Plan) -> String {
    let m = &plan.manifest;
    let Some(earlier) = &plan.earlier.own else {
        return "; no earlier release's record beside this one's to estimate the time from".into();
    };
    let seconds = |ms: u64| ms as f64 / 1000.0;
    let missing = (0..plan.images.len()).filter(|i| plan.sources[*i].image_id == "*");
    // The wait for the uploads, or why no record measures it.
    let mut waiting: std::result::Result<f64, String> = Ok(0.0);
    // Only when something is to make them: otherwise the plan stops.
    let waits = !matches!(plan.awaiting, Awaiting::Not);
    if let Some(from) = m.copy_from().filter(|_| waits) {
        for i in missing {
            let Some(theirs) = &plan.earlier.uploads else {
                waiting = Err(format!(
                    "no record of account {}'s earlier release beside this one's",
                    from.name
                ));
                break;
            };
            match theirs.timings_of(m, i).and_then(|t| t.upload_ms) {
                Some(ms) => waiting = waiting.map(|w| w + seconds(ms)),
                None => {
                    waiting = Err(format!(
                        "account {}'s record of release {} has no upload time of {}",
                        from.name, theirs.release, m.images[i].name
                    ));
                    break;
                }
            }
        }
    }
    let mut upload = 0.0;
    let mut copies: Vec<f64> = vec![];
    for (i, image) in plan.images.iter().enumerate() {
        let Some(then) = earlier.timings_of(m, i) else {
            return format!(
                "; no time estimate: release {}'s record has no timings of {}",
                earlier.release, m.images[i].name
            );
        };
        let scale = match (image.stored_bytes, then.data_bytes) {
            (Some(now), Some(then)) if then > 0 => now as f64 / then as f64,
            _ => 1.0,
        };
        if image.upload.is_some() && plan.source_ami(i).is_none() {
            match then.upload_ms {
                Some(ms) => upload += seconds(ms) * scale,
                None => {
                    return format!(
                        "; no time estimate: release {}'s record has no upload time of {}",
                        earlier.release, m.images[i].name
                    )
                }
            }
        }
        // A region the earlier release did not copy to takes what its copies took halfway.
        let mut measured: Vec<u64> = then.copy_ms.values().copied().collect();
        measured.sort();
        let median = measured.get(measured.len() / 2).copied();
        for (region, found) in plan.targets.iter().zip(&image.found) {
            if matches!(found, Found::In(InRegion::Present(_))) {
                continue;
            }
            match then.copy_ms.get(region).copied().or(median) {
                Some(ms) => copies.push(seconds(ms) * scale),
                None => {
                    return format!(
                        "; no time estimate: release {}'s record has no copy times of {}",
                        earlier.release, m.images[i].name
                    )
                }
            }
        }
    }
    let longest = copies.iter().copied().fold(0.0, f64::max);
    let copying = longest.max(copies.iter().sum::<f64>() / m.copy_concurrency.max(1) as f64);
    let minutes = |s: f64| (s / 60.0).ceil() as u64;
    let Some(from) = m.copy_from() else {
        return format!(
            "; apply may take about {} min ({} min of uploads, then {} min of copies), as release {}'s measured times scaled by the data of each image",
            minutes(upload + copying),
            minutes(upload),
            minutes(copying),
            earlier.release
        );
    };
    // This account reads no image file: the times are as measured.
    let waiting = match waiting {
        Ok(waiting) => waiting,
        Err(why) => {
            return format!(
                "; apply may take about {} min of copies once account {}'s uploads are there, as release {}'s measured times ({why}, to estimate the wait for them from)",
                minutes(copying),
                from.name,
                earlier.release
            )
        }
    };
    let before = match waiting > 0.0 {
        true => format!(
            "{} min waiting for account {}'s uploads, then ",
            minutes(waiting),
            from.name
        ),
        false => String::new(),
    };
    format!(
        "; apply may take about {} min ({before}{} min of copies), as release {}'s measured times",
        minutes(waiting + copying),
        minutes(copying),
        earlier.release
    )
}

/// The regions where the copies in flight and the release's own go past the snapshot
/// copies a destination takes at once, for the plan's summary: apply waits there.
fn slot_words(plan: &Plan) -> String {
    let full: Vec<String> = plan
        .in_flight
        .iter()
        .filter_map(|(region, busy)| {
            let i = plan.targets.iter().position(|t| t == region)?;
            let copies = plan
                .images
                .iter()
                .filter(|image| !matches!(image.found[i], Found::In(InRegion::Present(_))))
                .count();
            (busy + copies > copy::SNAPSHOT_COPIES_PER_DESTINATION)
                .then(|| format!("{region} ({busy} in flight, {copies} to start)"))
        })
        .collect();
    match full.is_empty() {
        true => String::new(),
        false => format!(
            "; snapshot copies already in flight leave too few of the {} slots a region takes at once in {}: apply waits for slots there (within copy_timeout)",
            copy::SNAPSHOT_COPIES_PER_DESTINATION,
            full.join(", ")
        ),
    }
}

/// What `regions = "all"` took and left of the opt-in regions, for the plan's summary.
fn opt_in_words(opt_in: Option<&OptIn>) -> String {
    let Some(o) = opt_in else {
        return String::new();
    };
    let mut words = String::new();
    if !o.included.is_empty() {
        words += &format!(
            "; opt-in regions enabled and included: {}",
            o.included.join(", ")
        );
    }
    if !o.left_out.is_empty() {
        words += &format!(
            "; opt-in regions not enabled for the account, left out: {} (enable one in the account's settings to publish there)",
            o.left_out.join(", ")
        );
    }
    words
}

/// One image in one target region, the unit of the fan-out.
#[derive(Debug, Clone)]
struct Spot {
    image: usize,
    name: String,
    region: String,
}

impl std::fmt::Display for Spot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in {}", self.name, self.region)
    }
}

/// What apply prints per image and region.
#[derive(Debug, Serialize)]
struct Done<'a> {
    image: &'a str,
    region: &'a str,
    ami: &'a str,
    snapshot: &'a str,
    /// `created`, `fixed` (it existed, but lacked tags, sharing or deprecation) or
    /// `exists`.
    status: &'static str,
    parameters: Vec<&'a str>,
}

/// Where the run of the account an account copies from is, beside this one.
pub(crate) type OwnerDone = tokio::sync::watch::Receiver<OwnerRun>;

/// Where the run of the account an account copies from is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnerRun {
    Running,
    /// Done, its uploads published (best-effort regions may be missing).
    Published,
    Failed,
}

/// `release apply`: the uploads, then every copy with its region's parameters; writes the
/// record, even when regions failed (it names them as missing). An account that copies
/// waits for the uploading account's AMIs instead (as `plan.awaiting` says), then copies
/// them into each of its regions.
pub(crate) async fn apply(
    a: &Account,
    plan: &Plan,
    record_path: &Path,
    emit: Emit<'_>,
) -> Result<()> {
    let m = &plan.manifest;
    let source = Account {
        ctx: a.ctx.in_region(&m.source_region),
        identity: a.identity.clone(),
    };
    let mut placed: Vec<Placed> = vec![];
    let mut sources = vec![];
    let mut made = 0;
    let regions = plan.regions();
    let partition = &a.identity.partition;
    let sizes: Vec<Option<u64>> = plan.images.iter().map(|i| i.stored_bytes).collect();
    let write_record = |placed: &[Placed]| {
        let record =
            Record::of(m, &a.identity.account, partition, &regions, placed).sized(m, &sizes);
        crate::blocking::now(|| record.write(record_path))
    };
    // The record is the release's journal too: written as each AMI is done, so a kill
    // leaves it naming what was finished (a CI artifact; a rerun reads AWS itself).
    // A rerun's journal starts from what the record held (this run's findings replace
    // it as they come), so a rerun killed early never leaves a record naming less.
    let before = {
        let (path, account) = (record_path.to_path_buf(), a.identity.account.clone());
        let earlier = crate::blocking::run(move || {
            Ok(path
                .exists()
                .then(|| Record::read(&path).ok())
                .flatten()
                .filter(|r| r.account == account))
        })
        .await?;
        earlier.map(|r| r.placed(m)).unwrap_or_default()
    };
    let journal = |placed: &[Placed]| {
        let mut all: Vec<Placed> = before
            .iter()
            .filter(|b| regions.contains(&b.region))
            .filter(|b| {
                !placed
                    .iter()
                    .any(|p| p.image == b.image && p.region == b.region)
            })
            .cloned()
            .collect();
        all.extend(placed.iter().cloned());
        if let Err(e) = write_record(&all) {
            tracing::warn!("{e}");
        }
    };
    if let Some(from) = m.copy_from() {
        let started = std::time::Instant::now();
        for i in 0..plan.images.len() {
            sources.push(wait_shared(a, plan, from, i, started).await?);
        }
    }
    for i in (0..plan.images.len()).filter(|i| plan.images[*i].upload.is_some()) {
        let done = match publish_source(&source, plan, i).await {
            Ok(done) => done,
            Err(e) => {
                // What is done so far is recorded: the record names the rest as missing.
                if let Err(w) = write_record(&placed) {
                    tracing::error!("{w}");
                }
                return Err(e);
            }
        };
        let Published {
            copied,
            parameters,
            described,
            status,
            millis,
        } = done;
        made += usize::from(status != "exists");
        emit(Output::json(&Done {
            image: &m.images[i].name,
            region: &m.source_region,
            ami: &copied.ami,
            snapshot: &copied.snapshot,
            status,
            parameters: parameters.iter().map(|p| p.parameter.as_str()).collect(),
        }));
        placed.push(Placed {
            image: i,
            region: m.source_region.clone(),
            copy: Some(copied),
            parameters,
            millis,
        });
        journal(&placed);
        sources.push(described);
    }
    let spots: Vec<Spot> = plan
        .images
        .iter()
        .enumerate()
        .flat_map(|(i, _)| {
            plan.targets.iter().map(move |region| Spot {
                image: i,
                name: m.images[i].name.clone(),
                region: region.clone(),
            })
        })
        .collect();
    let failures = fan_out(
        spots,
        m.copy_concurrency,
        |spot| {
            let (ctx, sources) = (&a.ctx, &sources);
            async move {
                let regional = ctx.in_region(&spot.region);
                let ec2 = regional.ec2();
                let source = &sources[spot.image];
                // Looked at again: the plan may be minutes old, and another run may have
                // copied meanwhile.
                let found = copy::find_in_region(&ec2, source).await?;
                let status = match &found {
                    InRegion::Present(e) if e.lacks.any() => "fixed",
                    InRegion::Present(_) => "exists",
                    _ => "created",
                };
                let started = std::time::Instant::now();
                let copied =
                    copy::copy_to_region(&ec2, source, &spot.region, &found, m.copy_timeout)
                        .await?;
                if m.protect {
                    ami::set_protection(&ec2, &copied.ami, true).await?;
                }
                let millis = took(status, started);
                let parameters = write_parameters(&regional, m, &spot.region, &copied.ami).await?;
                Ok((copied, parameters, status, millis))
            }
        },
        |spot, (copied, parameters, status, millis): Made| {
            made += usize::from(status != "exists");
            emit(Output::json(&Done {
                image: &spot.name,
                region: &spot.region,
                ami: &copied.ami,
                snapshot: &copied.snapshot,
                status,
                parameters: parameters.iter().map(|p| p.parameter.as_str()).collect(),
            }));
            placed.push(Placed {
                image: spot.image,
                region: spot.region.clone(),
                copy: Some(copied),
                parameters,
                millis,
            });
            journal(&placed);
        },
    )
    .await;
    write_record(&placed)?;
    let total = regions.len() * m.images.len();
    let done = total - failures.len();
    if failures.is_empty() {
        emit(Output::Summary(match made {
            0 => format!(
                "release apply: nothing to do: all {total} AMIs of release {} were in place; record {}",
                m.release,
                record_path.display()
            ),
            _ => format!(
                "release apply: made or put right {made} of {total} AMIs of release {} ({} images in {} regions); record {}",
                m.release,
                m.images.len(),
                regions.len(),
                record_path.display()
            ),
        }));
        return Ok(());
    }
    let best_effort_only = failures.iter().all(|(s, _)| m.best_effort(&s.region));
    let each: Vec<String> = failures.iter().map(|(s, e)| format!("{s} ({e})")).collect();
    emit(Output::Summary(format!(
        "release apply: {done} of {total} AMIs of release {} in place; record {}",
        m.release,
        record_path.display()
    )));
    Err(Error::Incomplete {
        detail: format!(
            "release {}: {} not done{}: {}; rerun `imgpub release apply` to finish them (what is done is kept)",
            m.release,
            failures.len(),
            if best_effort_only { ", all in best-effort regions" } else { "" },
            each.join("; ")
        ),
        best_effort_only,
    })
}

/// A copy made in one region: its AMI, parameters, status, and how long it took (ms).
type Made = (Copied, Vec<Parameter>, &'static str, Option<u64>);

/// How long a step that made its AMI (`created`) took, in milliseconds; `None` for one
/// that found it.
fn took(status: &str, started: std::time::Instant) -> Option<u64> {
    (status == "created").then(|| u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX))
}

/// Waits until the uploading account's AMI of image `i` is shared with this account and
/// available (that account may be uploading it beside this run, or on another runner);
/// fails as soon as that account's run beside this one failed.
/// `started`: when the run began waiting for the first of them; with `--wait-for-uploads`
/// the wait counts from there, one for all images (beside this run, each image's from now).
async fn wait_shared(
    a: &Account,
    plan: &Plan,
    from: &CopyFrom,
    i: usize,
    started: std::time::Instant,
) -> Result<Source> {
    let m = &plan.manifest;
    let name = &m.images[i].name;
    // Found by the plan: nothing to wait for.
    if plan.sources[i].image_id != "*" {
        return Ok(plan.sources[i].clone());
    }
    let gone = |why: String| {
        Error::Incomplete {
        detail: format!(
            "account {} {why} {name}, which this account copies; rerun `imgpub release apply` once it is published and shared with this account (AMI and snapshot)",
            from.name
        ),
        best_effort_only: false,
    }
    };
    // Beside this run, each image as long as its upload may take (they are uploaded one
    // after another); another runner's, all within the time the user gave.
    let (owner, wait, from_now) = match &plan.awaiting {
        Awaiting::Beside(owner) => (
            Some(owner),
            m.import_timeout + m.copy_timeout,
            std::time::Instant::now(),
        ),
        Awaiting::Elsewhere(wait) => (None, *wait, started),
        // The plan stops when the AMI is missing and nothing is to make it; so here it went.
        Awaiting::Not => return Err(gone("no longer has".into())),
    };
    let what = format!("account {}'s AMI {name} in {}", from.name, from.region);
    let deadline = from_now.checked_add(wait).ok_or_else(|| {
        Error::Invalid(format!(
            "--wait-for-uploads {} is too long to wait; give a time such as 2h",
            crate::units::show_duration(wait)
        ))
    })?;
    let timed_out = || {
        match owner {
        Some(_) => format!(
            "not shared with this account and available within {}; rerun `imgpub release apply` once account {} has published it",
            crate::units::show_duration(wait),
            from.name
        ),
        None => format!(
            "not shared with this account and available within --wait-for-uploads ({}); check account {}'s runner (`release apply --only account={}`), then rerun, or wait longer",
            crate::units::show_duration(wait),
            from.name,
            from.name
        ),
    }
    };
    use crate::aws::poll::{poll_until, Grid, Look};
    // When that account's run published: what it shared is visible here within PATIENCE.
    let published = std::cell::Cell::new(None::<std::time::Instant>);
    poll_until(&what, Grid::QuickStart, deadline, timed_out, |_| async {
        if let Some(found) = shared_source(&a.ctx, m, from, i).await? {
            return Ok(Look::Done {
                value: found,
                said: "shared".into(),
            });
        }
        // Another runner's uploads: nothing to know of that run but what it shares.
        let state = owner.map_or(OwnerRun::Running, |o| *o.borrow());
        match state {
            OwnerRun::Failed => return Err(gone("failed before it published".into())),
            OwnerRun::Published => {
                let since = published.get().unwrap_or_else(std::time::Instant::now);
                published.set(Some(since));
                if since.elapsed() > crate::aws::propagation::PATIENCE {
                    return Err(gone("finished, but did not share".into()));
                }
            }
            OwnerRun::Running => {}
        }
        Ok(Look::Going {
            state: "not shared with this account yet".into(),
            percent: None,
        })
    })
    .await
}

/// Image `i` in the source region: uploaded (or found), available, its parameters written.
async fn publish_source(source: &Account, plan: &Plan, i: usize) -> Result<Published> {
    let started = std::time::Instant::now();
    let m = &plan.manifest;
    let Some(upload) = &plan.images[i].upload else {
        return Err(Error::Setup(format!(
            "{} has no upload in this account",
            m.images[i].name
        )));
    };
    let published = upload::apply(&source.clients(), upload).await?;
    let ami = published.ami_id.clone().ok_or_else(|| {
        Error::Setup(format!(
            "the upload of {} registered no AMI",
            m.images[i].name
        ))
    })?;
    // A new AMI may still be `pending` (EC2's ImageState); SSM takes only an available AMI,
    // and a copy starts from one.
    let ec2 = source.ctx.ec2();
    copy::wait_available(&ec2, &m.source_region, &ami, m.copy_timeout).await?;
    if m.protect {
        ami::set_protection(&ec2, &ami, true).await?;
    }
    let status = match (plan.source_ami(i), upload.touch.on_image()) {
        (None, _) => "created",
        (Some(_), true) => "fixed",
        (Some(_), false) => "exists",
    };
    // Timed to the AMI available, and only a whole upload: a resumed one's time says
    // nothing of the next release's.
    let millis = took(status, started).filter(|_| whole_upload(upload));
    let copied = Copied {
        ami: ami.clone(),
        snapshot: published.snapshot_id.clone(),
    };
    let parameters = write_parameters(&source.ctx, m, &m.source_region, &ami).await?;
    let mut described = copy::describe_source(&ec2, &m.source_region, &ami).await?;
    // The accounts that copy from this one are granted the source alone, not every copy.
    let copiers = m.part.iter().flat_map(|p| &p.copied_by);
    for id in copiers {
        let sharing = &mut described.sharing;
        if !m.sharing.launch_users.contains(id) {
            sharing.launch_users.retain(|u| u != id);
        }
        if !m.sharing.snapshot_users.contains(id) {
            sharing.snapshot_users.retain(|u| u != id);
        }
    }
    Ok(Published {
        copied,
        parameters,
        described,
        status,
        millis,
    })
}

/// Image `i` in the source region, as [`publish_source`] left it.
struct Published {
    copied: Copied,
    parameters: Vec<Parameter>,
    /// The source as the copies must look.
    described: Source,
    /// `created`, `fixed` (it existed, but lacked tags, sharing or deprecation) or `exists`.
    status: &'static str,
    /// How long a whole upload took, to the AMI available.
    millis: Option<u64>,
}

/// Whether the upload writes the whole image from the start: not a snapshot found, an
/// object already in S3, or an EBS direct write resumed.
fn whole_upload(upload: &upload::Plan) -> bool {
    match &upload.snapshot {
        upload::SnapshotStep::Import(upload::ImportFrom::File { .. }) => true,
        upload::SnapshotStep::Write(ebs_direct::Start::Resume(_), _) => false,
        upload::SnapshotStep::Write(..) => true,
        _ => false,
    }
}

/// Writes the parameters in `region` to `ami`, once it is available.
async fn write_parameters(
    ctx: &crate::aws::config::AwsContext,
    m: &Manifest,
    region: &str,
    ami: &str,
) -> Result<Vec<Parameter>> {
    if m.parameters.is_empty() {
        return Ok(vec![]);
    }
    let target = RegionalImage {
        region: region.to_string(),
        image_id: ami.to_string(),
    };
    let facts = ssm::describe(&ctx.ec2(), &target).await?;
    let planned = ssm::plan(&ctx.ssm(), &facts, &m.parameters, m.overwrite_parameters).await?;
    let written = ssm::write(&ctx.ssm(), &planned, VALIDATION).await?;
    Ok(written
        .into_iter()
        .map(|w| Parameter {
            region: w.region,
            parameter: w.parameter,
            ami: w.ami,
        })
        .collect())
}

/// How long each written parameter may take to hold its AMI (as `publish-ssm`'s default).
const VALIDATION: std::time::Duration = std::time::Duration::from_secs(120);
