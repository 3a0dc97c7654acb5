//! `upload`: inspect → S3 multipart upload → ImportSnapshot → delete the object →
//! RegisterImage → tags and permissions; and its stages alone (`import-snapshot`,
//! `register-ami`).
//!
//! [`plan_local`] checks the flags and the image file (no AWS); [`plan`] adds the read-only
//! lookups (what an earlier run finished, the bucket, the role) and decides every step;
//! [`check`] lists the calls [`apply`] will make. Everything that can be checked is checked
//! before the first side effect, and every step first looks for what an earlier run did.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::aws::ami::{
    self, Arch, BootMode, FoundImage, RegisterSettings, Sharing, SriovNetSupport, TpmSupport,
    VolumeType,
};
use crate::aws::calls::{Call, Op, Resource};
use crate::aws::ebs_direct::{self, SnapshotRequest, Start};
use crate::aws::import::{self, Encryption, ImportRequest};
use crate::aws::multipart::{self, Transfer, UploadRequest};
use crate::aws::propagation::Age;
use crate::aws::s3::{self, S3Object, S3Prefix};
use crate::aws::tags::{self, tag};
use crate::commands::driver::{Account, Command, Emit, Output};
use crate::commands::needs::{self, For};
use crate::commands::Clients;
use crate::error::{Error, ErrorKind, Result};
use crate::image::{self, ImageInfo, ObjectFormat};
use crate::names::Named;
use aws_smithy_types::DateTime;

mod calls;
mod local;
mod remote;
mod stages;

pub(crate) use calls::check;
pub(crate) use local::{deprecation_time, plan_local, read_uefi_data};
use remote::head_object;
pub(crate) use remote::plan;
pub(crate) use stages::apply;

/// Which part of the pipeline a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Everything: `imgpub aws upload`.
    Upload,
    /// Up to the snapshot: `imgpub aws import-snapshot`.
    Import,
    /// From a snapshot: `imgpub aws register-ami`.
    Register,
}

/// How a local image becomes a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Via {
    /// S3 multipart upload, then ImportSnapshot (ore's path).
    #[default]
    S3,
    /// The EBS direct APIs: the blocks written straight into a snapshot.
    EbsDirect,
}

impl Via {
    /// As `--via` and a manifest's `transport` spell it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Via::S3 => "s3",
            Via::EbsDirect => "ebs-direct",
        }
    }
}

/// What a run does where the names it would use already hold another image, or this one
/// registered otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Stop, naming `--force` and the name flags as the fixes.
    #[default]
    Refuse,
    /// `--force`: replace it.
    Replace,
    /// Stop, naming a release's fixes: a release never replaces what it published.
    RefuseInRelease,
}

impl Existing {
    pub(crate) fn replaces(self) -> bool {
        self == Existing::Replace
    }

    /// The fix for a name that holds something else: `replace` says what `--force` would
    /// do, `rename` names the flag that picks another name.
    pub(crate) fn fix(self, replace: &str, rename: &str) -> String {
        match self {
            Existing::Refuse | Existing::Replace => {
                format!("pass --force to {replace}, or choose another {rename}")
            }
            Existing::RefuseInRelease => "the manifest now asks for another image under a name this release already used: put the manifest back as it was published, give the release another name (its `release`), or delete what holds the name and its copies (`imgpub aws delete-image --all-regions --with-snapshots`) and apply again".to_string(),
        }
    }
}

/// The ore-compatible flags of `upload`, as the user gave them.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub file: Option<PathBuf>,
    /// `s3://bucket/prefix`.
    pub bucket: Option<String>,
    pub name: Option<String>,
    pub ami_name: Option<String>,
    pub ami_description: Option<String>,
    pub arch: Arch,
    pub x86_boot_mode: BootMode,
    pub tpm_support: Option<TpmSupport>,
    pub imdsv2_only: bool,
    pub volume_type: VolumeType,
    pub disk_size_gib: Option<u32>,
    pub disk_size_inspect: bool,
    pub delete_object: bool,
    pub existing: Existing,
    pub source_object: Option<String>,
    pub source_snapshot: Option<String>,
    pub object_format: Option<ObjectFormat>,
    pub public: bool,
    pub grant_user: Vec<String>,
    pub grant_user_snapshot: Vec<String>,
    /// Organizations and organizational units (ARNs) to share the AMI with (a release's
    /// `[sharing]`; ore has no such flag).
    pub grant_organizations: Vec<String>,
    pub grant_organizational_units: Vec<String>,
    pub tags: Vec<String>,
    pub billing_product_codes: Vec<String>,
    pub role_name: String,
    pub part_size: Option<u64>,
    pub upload_concurrency: usize,
    pub import_timeout: Duration,
    /// `--boot-mode`, for any architecture (over `--x86-boot-mode`).
    pub boot_mode: Option<BootMode>,
    pub uefi_data: Option<PathBuf>,
    pub sriov: SriovNetSupport,
    pub deprecate: Option<Deprecate>,
    /// `--encrypted`: the snapshot is encrypted on import (with `kms_key`, that key's).
    pub encrypted: bool,
    pub kms_key: Option<String>,
    pub via: Via,
    /// EBS direct: blocks read and sent at once.
    pub blocks_in_flight: usize,
    /// EBS direct: send written all-zero blocks to an unencrypted snapshot too.
    pub send_zero_blocks: bool,
    /// EBS direct: `--parent SNAPSHOT|auto`, the snapshot to write on.
    pub parent: Option<String>,
    /// EBS direct: `--block-maps DIR`, where block maps are also kept and looked for.
    pub block_maps: Option<PathBuf>,
}

/// When the AMI is deprecated: `--deprecate-in 90d` or `--deprecate-at 2027-06-01T00:00:00Z`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deprecate {
    In(Duration),
    At(String),
}

/// Largest UEFI variable store RegisterImage takes (base64).
const UEFI_DATA_MAX: usize = 64 * 1024;

/// What `upload` prints, with ore's field names.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Published {
    #[serde(rename = "HVM", skip_serializing_if = "Option::is_none")]
    pub ami_id: Option<String>,
    #[serde(rename = "SnapshotID")]
    pub snapshot_id: String,
    #[serde(rename = "S3Object", skip_serializing_if = "Option::is_none")]
    pub s3_object: Option<String>,
    /// What an EBS direct write sent, for the summary (ore's JSON has no place for it).
    #[serde(skip)]
    pub written: Option<ebs_direct::Written>,
}

impl Published {
    /// The JSON line a stage command prints: all of it for `upload`, the snapshot for
    /// `import-snapshot`, the AMI for `register-ami`.
    pub(crate) fn output(&self, stage: Stage) -> serde_json::Value {
        match stage {
            Stage::Upload => serde_json::json!(self),
            Stage::Import => serde_json::json!({"SnapshotID": self.snapshot_id}),
            Stage::Register => serde_json::json!({"HVM": self.ami_id}),
        }
    }
}

/// Where the snapshot comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Source {
    /// A local image, uploaded to `object`.
    File {
        path: PathBuf,
        info: ImageInfo,
        format: ObjectFormat,
        object: S3Object,
        /// The file's identity (`ebs_direct::content_id`), tagged on the imported snapshot
        /// so that a rerun tells another file under the same name from this one.
        content: String,
    },
    /// An object already in S3 (`--source-object`).
    Object {
        object: S3Object,
        format: ObjectFormat,
    },
    /// A snapshot (`--source-snapshot`).
    Snapshot(String),
    /// A local image, written block by block with the EBS direct APIs (`--via ebs-direct`).
    Blocks(Box<SnapshotRequest>),
}

impl Source {
    /// The S3 object the image is (or will be) in.
    pub(crate) fn object(&self) -> Option<&S3Object> {
        match self {
            Source::File { object, .. } | Source::Object { object, .. } => Some(object),
            Source::Snapshot(_) | Source::Blocks(_) => None,
        }
    }
}

/// The flags, checked without AWS: the image inspected, names and settings validated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LocalPlan {
    pub stage: Stage,
    /// The object's, import task's and snapshot's name.
    pub name: String,
    pub source: Source,
    /// `None` for `import-snapshot`.
    pub register: Option<RegisterSettings>,
    pub tags: Vec<(String, String)>,
    pub sharing: Sharing,
    pub delete_object: bool,
    pub existing: Existing,
    pub role_name: String,
    pub transfer: Transfer,
    pub import_timeout: Duration,
    pub encryption: Encryption,
}

/// How the run gets its snapshot; each way carries what it needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SnapshotStep {
    /// `--source-snapshot`, or the one an earlier run imported (tag `Name=<name>`).
    Use(String),
    /// Upload (for a file) and import.
    Import(ImportFrom),
    /// Write the blocks with the EBS direct APIs.
    Write(Start, Box<SnapshotRequest>),
}

/// Where an import takes the image from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ImportFrom {
    /// A local image, uploaded to `object` first.
    File {
        path: PathBuf,
        object: S3Object,
        format: ObjectFormat,
    },
    /// An object already in S3 (`--source-object`).
    Object {
        object: S3Object,
        format: ObjectFormat,
    },
}

/// What the run does about the AMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ImageStep {
    /// `import-snapshot`: no AMI.
    None,
    Register,
    /// An AMI of the name already points at the snapshot: tag it and use it.
    Reuse(String),
    /// `--force`: deregister the AMI of the same name (and its snapshot), then register.
    Replace(FoundImage),
}

/// The whole run, decided: what exists and what each step will do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub local: LocalPlan,
    pub region: String,
    pub snapshot: SnapshotStep,
    pub image: ImageStep,
    /// What of the tags, sharing, deprecation and object is not yet as asked.
    pub touch: Touch,
    /// The file's object is in S3 already (a reused snapshot's, kept by an earlier run).
    pub object_there: bool,
}

/// The changes in place a run makes; what an earlier run left as asked is not made again
/// (so a rerun of a finished release changes nothing, and its dry run says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Touch {
    pub snapshot_tags: bool,
    pub image_tags: bool,
    pub deprecation: bool,
    pub launch: bool,
    pub volume: bool,
    pub delete_object: bool,
}

impl Touch {
    /// Everything: what this run makes is new.
    pub(crate) const ALL: Touch = Touch {
        snapshot_tags: true,
        image_tags: true,
        deprecation: true,
        launch: true,
        volume: true,
        delete_object: true,
    };

    /// Whether the AMI or its snapshot lacks tags, sharing or deprecation (the object left
    /// to delete is not the image's).
    pub(crate) fn on_image(self) -> bool {
        Touch {
            delete_object: false,
            ..self
        }
        .any()
    }

    pub(crate) fn any(self) -> bool {
        self != Touch {
            snapshot_tags: false,
            image_tags: false,
            deprecation: false,
            launch: false,
            volume: false,
            delete_object: false,
        }
    }
}

/// ore's root volume size when no size flag is given.
pub(crate) const ORE_DEFAULT_DISK_GIB: u32 = 8;
/// ore's key prefix when `--bucket` names only a bucket.
pub(crate) const ORE_DEFAULT_PREFIX: &str = "ami-import";

/// The AMI's tags: `Name=<AMI name>` as ore sets it (copies inherit it), unless `--tags`
/// names it, then `--tags`.
fn image_tags(ami_name: &str, tags: &[(String, String)]) -> Vec<(String, String)> {
    let mut all = Vec::with_capacity(tags.len() + 1);
    if !tags.iter().any(|(k, _)| k == "Name") {
        all.push(("Name".to_string(), ami_name.to_string()));
    }
    all.extend(tags.iter().cloned());
    all
}

fn file_name(path: &std::path::Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::Invalid(format!("{} has no file name", path.display())))
}

/// Every operation `upload --via ebs-direct` and `upload-snapshot` may make: the EBS direct
/// calls instead of S3 and ImportSnapshot. What `imgpub aws policy --for upload --via
/// ebs-direct` grants.
pub(crate) const MAY_CALL_EBS_DIRECT: &[Op] = &[
    Op::Ec2DescribeImages,
    Op::Ec2DescribeSnapshots,
    // A rerun reads the sharing an earlier run left (optional: without it, set again).
    Op::Ec2DescribeImageAttribute,
    Op::Ec2DescribeSnapshotAttribute,
    Op::Ec2GetImageBlockPublicAccessState,
    Op::Ec2GetSnapshotBlockPublicAccessState,
    Op::Ec2GetEbsEncryptionByDefault,
    Op::EbsStartSnapshot,
    Op::EbsPutSnapshotBlock,
    Op::EbsCompleteSnapshot,
    Op::Ec2CreateTags,
    Op::Ec2RegisterImage,
    Op::Ec2EnableImageDeprecation,
    Op::Ec2DeregisterImage,
    Op::Ec2DeleteSnapshot,
    Op::Ec2ModifyImageAttribute,
    Op::Ec2ModifySnapshotAttribute,
    Op::IamSimulatePrincipalPolicy,
];

/// Every operation `upload` and its stages may make, whatever the plan: the lookups, the
/// resume and abort paths, `--force`. What `imgpub aws policy --for upload` grants.
pub(crate) const MAY_CALL: &[Op] = &[
    Op::Ec2DescribeImages,
    Op::Ec2DescribeSnapshots,
    // A rerun reads the sharing an earlier run left (optional: without it, set again).
    Op::Ec2DescribeImageAttribute,
    Op::Ec2DescribeSnapshotAttribute,
    Op::Ec2GetImageBlockPublicAccessState,
    Op::Ec2GetSnapshotBlockPublicAccessState,
    Op::Ec2GetEbsEncryptionByDefault,
    Op::S3GetBucketLocation,
    Op::S3HeadObject,
    // iam:GetRole (is the vmimport role there?) is optional: without it ImportSnapshot says.
    Op::S3ListMultipartUploads,
    Op::S3ListParts,
    Op::S3CreateMultipartUpload,
    Op::S3UploadPart,
    Op::S3CompleteMultipartUpload,
    Op::S3AbortMultipartUpload,
    Op::Ec2DescribeImportSnapshotTasks,
    Op::Ec2ImportSnapshot,
    Op::Ec2CreateTags,
    Op::S3DeleteObject,
    Op::Ec2RegisterImage,
    Op::Ec2EnableImageDeprecation,
    Op::Ec2DeregisterImage,
    Op::Ec2DeleteSnapshot,
    Op::Ec2ModifyImageAttribute,
    Op::Ec2ModifySnapshotAttribute,
    Op::IamSimulatePrincipalPolicy,
];

/// A snapshot this run did not make (named with `--source-snapshot`, or left by an earlier
/// run, perhaps of an older imgpub or ore) is tagged before RegisterImage: the scoped
/// policies register only from a snapshot that carries imgpub's tag.
fn retag_snapshot(plan: &Plan) -> bool {
    matches!(plan.local.source, Source::Snapshot(_))
        || matches!(plan.snapshot, SnapshotStep::Use(_))
}

/// What the run made, reused or replaced, and the tags and sharing it set.
fn summary(stage: Stage, plan: &Plan, published: &Published) -> String {
    let local = &plan.local;
    let command = match (stage, &local.source) {
        (Stage::Upload, _) => "upload",
        (Stage::Import, Source::Blocks(_)) => "upload-snapshot",
        (Stage::Import, _) => "import-snapshot",
        (Stage::Register, _) => "register-ami",
    };
    let snapshot = &published.snapshot_id;
    let mut done = vec![match &plan.snapshot {
        SnapshotStep::Use(_) if matches!(local.source, Source::Snapshot(_)) => {
            format!("used snapshot {snapshot}")
        }
        SnapshotStep::Use(_) => format!(
            "reused snapshot {snapshot} named {} (an earlier run's)",
            local.name
        ),
        SnapshotStep::Import(
            ImportFrom::File { object, .. } | ImportFrom::Object { object, .. },
        ) => {
            format!("imported snapshot {snapshot} from {object}")
        }
        SnapshotStep::Write(_, req) => {
            let how = match (&published.written, &req.base) {
                (
                    Some(ebs_direct::Written {
                        parent: Some(parent),
                        sent,
                        kept,
                        ..
                    }),
                    _,
                ) => format!(" on {parent} ({sent} blocks sent, {kept} the same)"),
                (Some(w), ebs_direct::Base::Whole { why: Some(why) }) => {
                    format!(" whole ({} blocks sent; not on a parent: {why})", w.sent)
                }
                (Some(w), _) => format!(" ({} blocks sent)", w.sent),
                (None, _) => String::new(),
            };
            format!("wrote snapshot {snapshot} with EBS direct{how}")
        }
    }];
    let name = local.register.as_ref().map(|r| r.name.as_str());
    match (&plan.image, &published.ami_id, name) {
        (ImageStep::Register, Some(id), Some(name)) => {
            done.push(format!("registered {id} named {name}"))
        }
        (ImageStep::Reuse(_), Some(id), Some(name)) => {
            done.push(format!("reused {id} named {name}, registered as asked"))
        }
        (ImageStep::Replace(old), Some(id), Some(name)) => done.push(format!(
            "registered {id} named {name} in place of {} (--force)",
            old.image_id
        )),
        _ => {}
    }
    let touch = plan.touch;
    let tags: Vec<String> = local.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !tags.is_empty() && (touch.image_tags || touch.snapshot_tags) {
        done.push(format!("tagged {}", tags.join(" ")));
    }
    if let (Some(whom), true) = (local.sharing.describe(), touch.launch || touch.volume) {
        done.push(format!("shared with {whom}"));
    }
    if matches!(plan.image, ImageStep::Reuse(_)) && !touch.any() {
        done.push("tags and sharing already as asked: nothing changed".into());
    }
    format!("{command}: {} in {}", done.join("; "), plan.region)
}

/// The plan in words for `--dry-run`: the file and its size, the snapshot's and AMI's names
/// and settings, the tags, sharing and deprecation each would get.
fn describe(plan: &Plan) -> Vec<String> {
    let local = &plan.local;
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20));
    let name = &local.name;
    let mut lines = vec![match (&plan.snapshot, &local.source) {
        (SnapshotStep::Use(id), Source::Snapshot(_)) => format!("would use snapshot {id}"),
        (SnapshotStep::Use(id), _) => {
            format!("would reuse snapshot {id} named {name} (an earlier run's)")
        }
        (
            SnapshotStep::Import(ImportFrom::File {
                path,
                object,
                format,
            }),
            Source::File { info, .. },
        ) => {
            format!(
                "would upload {} ({format}, {} on disk, {} virtual) to {object}, then import it as snapshot {name}",
                path.display(),
                mib(info.file_size),
                info.virtual_size.map_or("unknown".into(), mib),
            )
        }
        (
            SnapshotStep::Import(
                ImportFrom::File { object, format, .. } | ImportFrom::Object { object, format },
            ),
            _,
        ) => {
            format!("would import {object} ({format}) as snapshot {name}")
        }
        (SnapshotStep::Write(start, request), _) => {
            let how = match start {
                Start::New => "a new snapshot".to_string(),
                Start::Resume(id) => format!("the rest of pending snapshot {id}"),
                Start::Abandon(id) | Start::Replace(id) => {
                    format!("a new snapshot in place of {id} (deleted first)")
                }
            };
            let base = match &request.base {
                ebs_direct::Base::Parent(map) => {
                    format!(
                        ", on {} (only the blocks that differ from it)",
                        map.snapshot
                    )
                }
                ebs_direct::Base::Whole { why: Some(why) } => {
                    format!(", whole (not on a parent: {why})")
                }
                ebs_direct::Base::Whole { why: None } => String::new(),
            };
            format!(
                "would write {} ({} of data, a {} GiB volume) with EBS direct as {how} named {name}{base}",
                request.path.display(),
                mib(request.info.file_size),
                request.volume_size_gib
            )
        }
    }];
    let registered = |r: &RegisterSettings| {
        let mut what = vec![
            r.arch.name().to_string(),
            r.boot_mode.name().to_string(),
            r.volume_type.name().to_string(),
        ];
        if let Some(gib) = r.volume_size_gib {
            what.push(format!("{gib} GiB"));
        }
        if r.imdsv2_only {
            what.push("IMDSv2 only".into());
        }
        format!("AMI {} ({})", r.name, what.join(", "))
    };
    match (&plan.image, &local.register) {
        (ImageStep::Register, Some(r)) => lines.push(format!("would register {}", registered(r))),
        (ImageStep::Replace(old), Some(r)) => lines.push(format!(
            "would deregister {}{} (--force), then register {}",
            old.image_id,
            old.root_snapshot
                .as_ref()
                .map_or(String::new(), |s| format!(" and delete its snapshot {s}")),
            registered(r)
        )),
        (ImageStep::Reuse(id), Some(r)) => lines.push(format!(
            "would reuse {id} named {}, registered as asked",
            r.name
        )),
        _ => {}
    }
    let touch = plan.touch;
    let tags: Vec<String> = local.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let tagged: Vec<&str> = [(touch.snapshot_tags, "snapshot"), (touch.image_tags, "AMI")]
        .into_iter()
        .filter(|(t, what)| *t && (*what == "snapshot" || local.register.is_some()))
        .map(|(_, what)| what)
        .collect();
    if !tagged.is_empty() {
        lines.push(format!(
            "would tag the {} {}",
            tagged.join(" and "),
            tags.join(" ")
        ));
    }
    if let (Some(whom), true) = (local.sharing.describe(), touch.launch || touch.volume) {
        lines.push(format!("would share with {whom}"));
    }
    if let (Some(at), true) = (
        local.register.as_ref().and_then(|r| r.deprecate_at),
        touch.deprecation,
    ) {
        let at = at
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_default();
        lines.push(format!("would deprecate the AMI at {at}"));
    }
    if let (Some(object), true) = (
        local.source.object(),
        local.delete_object && touch.delete_object,
    ) {
        lines.push(format!("would delete {object} once the snapshot exists"));
    }
    lines
        .iter_mut()
        .for_each(|l| l.push_str(&format!(" in {}", plan.region)));
    lines
}

/// `upload`, `import-snapshot`, `upload-snapshot` or `register-ami`: the stages of `stage`.
#[derive(Debug, Clone)]
pub struct Publish {
    pub stage: Stage,
    pub opts: UploadOptions,
}

impl Command for Publish {
    type Connection = Account;
    type Local = LocalPlan;
    type Plan = Plan;

    /// Reads the image (its format, size and digest).
    fn validate(&self) -> Result<LocalPlan> {
        plan_local(self.stage, self.opts.clone())
    }

    async fn plan(&self, a: &Account, local: LocalPlan) -> Result<Plan> {
        plan(&a.clients(), local).await
    }

    fn check(&self, _: &Account, plan: &Plan) -> Vec<Call> {
        check(plan)
    }

    fn policy(&self, a: &Account, plan: &Plan, calls: &[Call]) -> Option<String> {
        let object = plan.local.source.object();
        let mut line = needs::fix_line(For::Upload, object, Some(&a.ctx.region));
        if let Source::Blocks(req) = &plan.local.source {
            line.push_str(" --via ebs-direct");
            if req.parent.is_some() {
                line.push_str(" --delta");
            }
        }
        Some(crate::aws::preflight::with_sharing(&line, calls))
    }

    fn describe(&self, _: &Account, plan: &Plan, _: &[Call]) -> Vec<String> {
        describe(plan)
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        let published = apply(&a.clients(), plan).await?;
        emit(Output::Json(published.output(self.stage)));
        emit(Output::Summary(summary(self.stage, plan, &published)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> UploadOptions {
        UploadOptions {
            file: None,
            bucket: Some("s3://images/ci".into()),
            name: None,
            ami_name: None,
            ami_description: None,
            arch: Arch::X86_64,
            x86_boot_mode: BootMode::UefiPreferred,
            tpm_support: None,
            imdsv2_only: false,
            volume_type: VolumeType::Gp3,
            disk_size_gib: None,
            disk_size_inspect: false,
            delete_object: true,
            existing: Existing::Refuse,
            source_object: None,
            source_snapshot: None,
            object_format: None,
            public: false,
            grant_user: vec![],
            grant_user_snapshot: vec![],
            grant_organizations: vec![],
            grant_organizational_units: vec![],
            tags: vec![],
            billing_product_codes: vec![],
            role_name: "vmimport".into(),
            part_size: None,
            upload_concurrency: 4,
            import_timeout: Duration::from_secs(60),
            boot_mode: None,
            uefi_data: None,
            sriov: SriovNetSupport::Simple,
            deprecate: None,
            encrypted: false,
            kms_key: None,
            via: Via::S3,
            blocks_in_flight: 32,
            send_zero_blocks: false,
            parent: None,
            block_maps: None,
        }
    }

    fn raw_image(dir: &std::path::Path) -> PathBuf {
        let path = dir.join("disk.raw");
        std::fs::write(&path, vec![7u8; 3 << 20]).unwrap();
        path
    }

    fn tmp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "imgpub-plan-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_plan_names_the_object_after_the_file_under_the_prefix() {
        let dir = tmp();
        let opts = UploadOptions {
            file: Some(raw_image(&dir)),
            name: Some("os-1.0".into()),
            tags: vec!["stream=stable".into()],
            disk_size_inspect: true,
            arch: Arch::Arm64,
            x86_boot_mode: BootMode::LegacyBios,
            ..options()
        };
        let local = plan_local(Stage::Upload, opts).unwrap();
        assert_eq!(local.name, "os-1.0");
        let Source::File { object, format, .. } = &local.source else {
            panic!("{:?}", local.source)
        };
        // ore's key: the file's name, not --name.
        assert_eq!(object.to_string(), "s3://images/ci/disk.raw");
        assert_eq!(*format, ObjectFormat::Raw);
        let reg = local.register.as_ref().unwrap();
        assert_eq!(reg.name, "os-1.0");
        assert_eq!(reg.boot_mode, BootMode::Uefi, "arm64 boots UEFI only");
        assert_eq!(reg.volume_size_gib, Some(1));
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            reg.tags,
            pairs(&[
                ("Name", "os-1.0"),
                ("stream", "stable"),
                ("imgpub:managed", "true")
            ])
        );
        // A Name in --tags is the user's.
        assert_eq!(
            image_tags("ami", &pairs(&[("Name", "mine")])),
            pairs(&[("Name", "mine")])
        );
    }

    #[test]
    fn bad_input_is_refused_before_aws() {
        let dir = tmp();
        let file = Some(raw_image(&dir));
        let cases: Vec<(UploadOptions, &str)> = vec![
            (
                UploadOptions {
                    file: None,
                    ..options()
                },
                "nothing to publish",
            ),
            (
                UploadOptions {
                    file: file.clone(),
                    bucket: None,
                    ..options()
                },
                "--bucket s3://BUCKET/PREFIX is needed",
            ),
            (
                UploadOptions {
                    file: file.clone(),
                    tags: vec!["x".into()],
                    ..options()
                },
                "is not key=value",
            ),
            (
                UploadOptions {
                    file: file.clone(),
                    ami_name: Some("a*b".into()),
                    ..options()
                },
                "characters AWS does not allow",
            ),
            (
                UploadOptions {
                    file: file.clone(),
                    grant_user: vec!["12".into()],
                    ..options()
                },
                "not an AWS account id",
            ),
            (
                UploadOptions {
                    file: file.clone(),
                    object_format: Some(ObjectFormat::Vmdk),
                    ..options()
                },
                "--object-format VMDK was given",
            ),
            (
                UploadOptions {
                    source_object: Some("s3://images/".into()),
                    ..options()
                },
                "names no object",
            ),
            (
                UploadOptions {
                    source_snapshot: Some("ami-1".into()),
                    ..options()
                },
                "not a snapshot id",
            ),
            (
                UploadOptions {
                    file,
                    disk_size_gib: Some(u32::MAX),
                    ..options()
                },
                "larger than EBS allows",
            ),
        ];
        for (opts, want) in cases {
            let err = plan_local(Stage::Upload, opts).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
        let err = plan_local(Stage::Register, options())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("register-ami needs --source-snapshot"),
            "{err}"
        );
    }

    #[test]
    fn check_lists_what_apply_calls() {
        let local = plan_local(
            Stage::Upload,
            UploadOptions {
                source_object: Some("s3://images/ci/os.vmdk".into()),
                public: true,
                ..options()
            },
        )
        .unwrap();
        assert_eq!(local.name, "os.vmdk");
        let from = ImportFrom::Object {
            object: local.source.object().unwrap().clone(),
            format: ObjectFormat::Vmdk,
        };
        let plan = Plan {
            local,
            region: "eu-west-1".into(),
            snapshot: SnapshotStep::Import(from),
            image: ImageStep::Register,
            touch: Touch::ALL,
            object_there: false,
        };
        let ops: Vec<Op> = check(&plan).iter().map(|c| c.op).collect();
        assert_eq!(
            ops,
            vec![
                Op::S3HeadObject,
                Op::Ec2DescribeImportSnapshotTasks,
                Op::Ec2ImportSnapshot,
                Op::Ec2CreateTags,
                Op::Ec2DescribeSnapshots,
                Op::Ec2RegisterImage,
                Op::Ec2ModifyImageAttribute,
                Op::Ec2ModifySnapshotAttribute,
            ]
        );
        for call in check(&plan) {
            assert!(
                MAY_CALL.contains(&call.op),
                "{:?} is not in MAY_CALL",
                call.op
            );
            assert_eq!(call.region, "eu-west-1");
        }
        // A rerun that found everything: no upload, no import, no register; the snapshot's
        // and the AMI's tags are made sure of.
        let done = Plan {
            snapshot: SnapshotStep::Use("snap-1".into()),
            image: ImageStep::Reuse("ami-1".into()),
            ..plan
        };
        let ops: Vec<Op> = check(&done).iter().map(|c| c.op).collect();
        assert_eq!(
            ops,
            vec![
                Op::Ec2CreateTags,
                Op::Ec2CreateTags,
                Op::Ec2ModifyImageAttribute,
                Op::Ec2ModifySnapshotAttribute
            ]
        );
        // The same rerun where an earlier run left everything as asked: nothing to call.
        let finished = Plan {
            touch: Touch {
                snapshot_tags: false,
                image_tags: false,
                deprecation: false,
                launch: false,
                volume: false,
                delete_object: false,
            },
            ..done
        };
        assert_eq!(check(&finished), vec![]);
    }
}
