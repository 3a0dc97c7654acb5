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
use crate::error::{aws, Error, ErrorKind, Result};
use crate::image::{self, ImageInfo, ObjectFormat};
use aws_smithy_types::DateTime;

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
    pub force: bool,
    pub source_object: Option<String>,
    pub source_snapshot: Option<String>,
    pub object_format: Option<ObjectFormat>,
    pub public: bool,
    pub grant_user: Vec<String>,
    pub grant_user_snapshot: Vec<String>,
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
pub struct Published {
    #[serde(rename = "HVM", skip_serializing_if = "Option::is_none")]
    pub ami_id: Option<String>,
    #[serde(rename = "SnapshotID")]
    pub snapshot_id: String,
    #[serde(rename = "S3Object", skip_serializing_if = "Option::is_none")]
    pub s3_object: Option<String>,
}

impl Published {
    /// The JSON line a stage command prints: all of it for `upload`, the snapshot for
    /// `import-snapshot`, the AMI for `register-ami`.
    pub fn output(&self, stage: Stage) -> serde_json::Value {
        match stage {
            Stage::Upload => serde_json::json!(self),
            Stage::Import => serde_json::json!({"SnapshotID": self.snapshot_id}),
            Stage::Register => serde_json::json!({"HVM": self.ami_id}),
        }
    }
}

/// Where the snapshot comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A local image, uploaded to `object`.
    File {
        path: PathBuf,
        info: ImageInfo,
        format: ObjectFormat,
        object: S3Object,
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
    pub fn object(&self) -> Option<&S3Object> {
        match self {
            Source::File { object, .. } | Source::Object { object, .. } => Some(object),
            Source::Snapshot(_) | Source::Blocks(_) => None,
        }
    }
}

/// The flags, checked without AWS: the image inspected, names and settings validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalPlan {
    pub stage: Stage,
    /// The object's, import task's and snapshot's name.
    pub name: String,
    pub source: Source,
    /// `None` for `import-snapshot`.
    pub register: Option<RegisterSettings>,
    pub tags: Vec<(String, String)>,
    pub sharing: Sharing,
    pub delete_object: bool,
    pub force: bool,
    pub role_name: String,
    pub transfer: Transfer,
    pub import_timeout: Duration,
    pub encryption: Encryption,
}

/// How the run gets its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotStep {
    /// `--source-snapshot`, or the one an earlier run imported (tag `Name=<name>`).
    Use(String),
    /// Upload (for a file) and import.
    Import,
    /// Write the blocks with the EBS direct APIs.
    Write(Start),
}

/// What the run does about the AMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageStep {
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
pub struct Plan {
    pub local: LocalPlan,
    pub region: String,
    pub snapshot: SnapshotStep,
    pub image: ImageStep,
}

/// ore's root volume size when no size flag is given.
pub const ORE_DEFAULT_DISK_GIB: u32 = 8;
/// ore's key prefix when `--bucket` names only a bucket.
pub const ORE_DEFAULT_PREFIX: &str = "ami-import";

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

/// Checks everything that can be checked without AWS, including the image itself.
/// Blocking file reads: call it off the async runtime.
pub fn plan_local(stage: Stage, opts: UploadOptions) -> Result<LocalPlan> {
    let user_tags = tags::parse_to_set("--tags", &opts.tags)?;
    // What imgpub makes carries its tag (the scoped policies change only that).
    let tags = tags::with_managed(&user_tags);
    ami::validate_account_ids("--grant-user", &opts.grant_user)?;
    ami::validate_account_ids("--grant-user-snapshot", &opts.grant_user_snapshot)?;

    let encryption = match (opts.encrypted, &opts.kms_key) {
        (_, Some(key)) if key.trim().is_empty() => {
            return Err(Error::Invalid("--kms-key must name a KMS key".into()))
        }
        (_, Some(key)) => Encryption::Key(key.clone()),
        (true, None) => Encryption::DefaultKey,
        (false, None) => Encryption::None,
    };
    if encryption.is_encrypted() && opts.public {
        return Err(Error::Invalid(
            "an encrypted snapshot cannot be made public (AWS refuses): drop --public, or --encrypted/--kms-key".into(),
        ));
    }
    if encryption == Encryption::DefaultKey && !opts.grant_user_snapshot.is_empty() {
        return Err(Error::Invalid(
            "a snapshot under the default EBS key cannot be shared with other accounts (AWS refuses): pass --kms-key with a key of your own, or drop --grant-user-snapshot".into(),
        ));
    }
    if encryption.is_encrypted() && (opts.source_snapshot.is_some() || stage == Stage::Register) {
        return Err(Error::Invalid(
            "--encrypted/--kms-key apply to the import; --source-snapshot is registered as it is"
                .into(),
        ));
    }

    let source = match (&opts.source_snapshot, &opts.source_object, &opts.file) {
        (Some(_), Some(_), _) => {
            return Err(Error::Invalid(
                "pass at most one of --source-object and --source-snapshot".into(),
            ))
        }
        (Some(snap), _, _) => {
            if !snap.starts_with("snap-") {
                return Err(Error::Invalid(format!("{snap:?} is not a snapshot id (snap-…)")));
            }
            Source::Snapshot(snap.clone())
        }
        _ if stage == Stage::Register => {
            return Err(Error::Invalid(
                "register-ami needs --source-snapshot snap-… (the snapshot to register)".into(),
            ))
        }
        (None, Some(_), _) if opts.via == Via::EbsDirect => {
            return Err(Error::Invalid(
                "--via ebs-direct writes a local image (--file); an S3 object (--source-object) is imported with --via s3".into(),
            ))
        }
        (None, None, Some(path)) if opts.via == Via::EbsDirect => {
            if let Some(bucket) = &opts.bucket {
                // ore's command lines (cosa's) always name one.
                tracing::info!("--via ebs-direct: {bucket} is not used (no S3 upload)");
            }
            Source::Blocks(Box::new(direct_request(path, &opts, &tags, &encryption)?))
        }
        (None, Some(url), _) => Source::Object {
            object: S3Object::parse("--source-object", url)?,
            format: opts.object_format.unwrap_or(ObjectFormat::Vmdk),
        },
        (None, None, Some(path)) => {
            let info = image::inspect(path)?;
            let format = image::import_format(path, &info, opts.object_format)?;
            let url = opts.bucket.as_deref().ok_or_else(|| {
                Error::Invalid(
                    "--bucket s3://BUCKET/PREFIX is needed to upload the image (create one with `imgpub aws initialize`)".into(),
                )
            })?;
            // ore's key, whatever --name: PREFIX/<file name>; `ami-import/<file name>` when the
            // URL has no path (`s3://B`), the bucket's top for an empty one (`s3://B/`).
            let location = S3Prefix::parse(url)?;
            let has_path = url.trim_start_matches("s3://").contains('/');
            let prefix = match location.prefix {
                None if !has_path => Some(ORE_DEFAULT_PREFIX.to_string()),
                prefix => prefix,
            };
            Source::File {
                path: path.clone(),
                info,
                format,
                object: S3Prefix { prefix, ..location }.object(&file_name(path)?),
            }
        }
        (None, None, None) => {
            return Err(Error::Invalid(
                "nothing to publish: pass --file IMAGE (or --source-object s3://… or --source-snapshot snap-…)".into(),
            ))
        }
    };

    let name = match (&opts.name, &source) {
        (Some(n), _) => n.clone(),
        (None, Source::File { path, .. }) => file_name(path)?,
        (None, Source::Object { object, .. }) => object.file_name().to_string(),
        (None, Source::Blocks(req)) => req.name.clone(),
        (None, Source::Snapshot(_)) => opts
            .ami_name
            .clone()
            .ok_or_else(|| Error::Invalid("pass --name or --ami-name for the AMI".into()))?,
    };

    let register = if stage == Stage::Import {
        None
    } else {
        let ami_name = opts.ami_name.clone().unwrap_or_else(|| name.clone());
        ami::validate_ami_name(&ami_name)?;
        // ore's sizes: --disk-size-gib (default 8), the image's with --disk-size-inspect, and
        // the snapshot's for --source-snapshot.
        let image_gib = match &source {
            Source::File { info, .. } => info.virtual_size_gib(),
            Source::Blocks(req) => req.info.virtual_size_gib(),
            _ => None,
        }
        .map(|g| u32::try_from(g).unwrap_or(u32::MAX));
        let volume_size_gib = match (opts.disk_size_gib, opts.disk_size_inspect, &source) {
            // As ore: the inspected size wins over an explicit one.
            (given, true, Source::File { .. } | Source::Blocks(_)) => {
                if let (Some(given), Some(image)) = (given, image_gib) {
                    tracing::info!("--disk-size-inspect: the root volume is the image's {image} GiB, not --disk-size-gib {given} (as ore)");
                }
                image_gib.or(given)
            }
            (Some(gib), false, _) => Some(gib),
            (_, true, _) => {
                return Err(Error::Invalid(
                    "--disk-size-inspect needs --file; pass --disk-size-gib instead".into(),
                ))
            }
            (None, false, Source::Snapshot(_)) => None,
            (None, false, _) => Some(ORE_DEFAULT_DISK_GIB),
        };
        if let (Some(gib), Some(image)) = (volume_size_gib, image_gib) {
            if gib < image {
                return Err(Error::Invalid(format!(
                    "the root volume ({gib} GiB{}) is smaller than the image ({image} GiB): pass --disk-size-gib {image} or more, or --disk-size-inspect",
                    if opts.disk_size_gib.is_none() { ", ore's default" } else { "" }
                )));
            }
        }
        let volume_size_gib = volume_size_gib
            .map(|gib| {
                i32::try_from(gib).map_err(|_| {
                    Error::Invalid(format!(
                        "a root volume of {gib} GiB is larger than EBS allows"
                    ))
                })
            })
            .transpose()?;
        let boot_mode = ami::boot_mode(
            opts.arch,
            opts.x86_boot_mode,
            opts.boot_mode,
            opts.tpm_support,
        )?;
        let uefi_data = match &opts.uefi_data {
            Some(path) => Some(read_uefi_data(path, boot_mode)?),
            None => None,
        };
        Some(RegisterSettings {
            description: opts.ami_description.clone(),
            arch: opts.arch,
            boot_mode,
            uefi_data,
            sriov: opts.sriov,
            deprecate_at: opts
                .deprecate
                .as_ref()
                .map(|d| deprecation_time(d, opts.public))
                .transpose()?,
            imdsv2_only: opts.imdsv2_only,
            tpm: opts.tpm_support,
            volume_type: opts.volume_type,
            volume_size_gib,
            tags: image_tags(&ami_name, &tags),
            name: ami_name,
            billing_products: opts.billing_product_codes.clone(),
        })
    };

    Ok(LocalPlan {
        stage,
        name,
        source,
        register,
        sharing: Sharing {
            public: opts.public,
            launch_users: opts.grant_user,
            snapshot_users: opts.grant_user_snapshot,
            ..Sharing::default()
        },
        tags,
        delete_object: opts.delete_object,
        force: opts.force,
        role_name: opts.role_name,
        transfer: Transfer {
            part_size: opts.part_size,
            concurrency: opts.upload_concurrency,
        },
        import_timeout: opts.import_timeout,
        encryption,
    })
}

/// `--via ebs-direct` for `--file`: the image checked for what the EBS direct path reads,
/// the snapshot's size (the image's, rounded up to GiB; `--disk-size-gib` may raise it).
/// Blocking file reads.
fn direct_request(
    path: &Path,
    opts: &UploadOptions,
    tags: &[(String, String)],
    encryption: &Encryption,
) -> Result<SnapshotRequest> {
    let info = image::inspect(path)?;
    image::check_direct(path, &info, opts.object_format)?;
    if let Encryption::Key(key) = encryption {
        // StartSnapshot takes a key ARN only (the import takes an alias too).
        crate::commands::needs::kms_key_region("--kms-key", key).map_err(|_| {
            Error::Invalid(format!(
                "--via ebs-direct needs the KMS key's ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), not {key:?}"
            ))
        })?;
    }
    let image_gib = info.virtual_size_gib().unwrap_or(1);
    let volume_gib = match opts.disk_size_gib {
        Some(gib) if u64::from(gib) < image_gib => {
            return Err(Error::Invalid(format!(
                "{} is a {image_gib} GiB disk, larger than --disk-size-gib {gib}: pass --disk-size-gib {image_gib} or more",
                path.display()
            )))
        }
        Some(gib) => u64::from(gib),
        None => image_gib,
    };
    // EBS volumes end at 64 TiB.
    let volume_size_gib = i32::try_from(volume_gib)
        .ok()
        .filter(|g| *g <= 65536)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "a {volume_gib} GiB snapshot is larger than EBS allows (64 TiB)"
            ))
        })?;
    let name = match &opts.name {
        Some(name) => name.clone(),
        None => file_name(path)?,
    };
    Ok(SnapshotRequest {
        content: ebs_direct::content_id(path, &info, encryption, opts.send_zero_blocks)?,
        path: path.to_path_buf(),
        info,
        name,
        volume_size_gib,
        tags: tags.to_vec(),
        encryption: encryption.clone(),
        blocks_in_flight: opts.blocks_in_flight,
        send_zero_blocks: opts.send_zero_blocks,
        timeout: opts.import_timeout,
        force: opts.force,
    })
}

/// The UEFI variable store in `path`: base64 text (as `uefivars -O aws` writes it), for a
/// UEFI boot mode.
fn read_uefi_data(path: &std::path::Path, boot: BootMode) -> Result<String> {
    use base64::Engine;
    let shown = path.display();
    if boot == BootMode::LegacyBios {
        return Err(Error::Invalid(format!(
            "--uefi-data {shown} needs a UEFI boot mode; use --boot-mode uefi"
        )));
    }
    // Read no more than a store AWS could take (with room for line breaks): a wrong path
    // (an image, /dev/zero) fails at once instead of filling memory.
    let limit = 2 * UEFI_DATA_MAX as u64;
    let mut bytes = vec![];
    std::fs::File::open(path)
        .and_then(|f| {
            std::io::Read::read_to_end(&mut std::io::Read::take(f, limit + 1), &mut bytes)
        })
        .map_err(|e| Error::io(format!("reading --uefi-data {shown}"), e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::Invalid(format!(
            "--uefi-data {shown} is over {limit} bytes; AWS takes at most {UEFI_DATA_MAX} bytes of base64: give the variable store `uefivars -O aws` writes"
        )));
    }
    let Ok(text) = String::from_utf8(bytes) else {
        return Err(Error::Invalid(format!(
            "--uefi-data {shown} is not base64 text; give the variable store `uefivars -O aws` writes"
        )));
    };
    let data: String = text.split_whitespace().collect();
    let decoded = base64::engine::general_purpose::STANDARD.decode(&data);
    match decoded {
        Ok(bytes) if !bytes.is_empty() && data.len() <= UEFI_DATA_MAX => Ok(data),
        Ok(bytes) if bytes.is_empty() => Err(Error::Invalid(format!(
            "--uefi-data {shown} is empty; give the variable store `uefivars -O aws` writes"
        ))),
        Ok(_) => Err(Error::Invalid(format!(
            "--uefi-data {shown} is {} bytes of base64; AWS takes at most {UEFI_DATA_MAX}",
            data.len()
        ))),
        Err(_) => Err(Error::Invalid(format!(
            "--uefi-data {shown} is not base64; give the variable store `uefivars -O aws` writes"
        ))),
    }
}

/// The limits of EnableImageDeprecation: "The upper limit for DeprecateAt is 10 years from
/// now, except for public AMIs, where the upper limit is 2 years from the creation date."
/// (API reference). Whole years of 365 days, so a date AWS would refuse is never passed.
const DEPRECATE_AT_MOST: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 86400);
const DEPRECATE_PUBLIC_AT_MOST: std::time::Duration =
    std::time::Duration::from_secs(2 * 365 * 86400);

/// The moment `--deprecate-in`/`--deprecate-at` name: in the future, and within what
/// EnableImageDeprecation allows for an AMI registered now (`public`: made public).
fn deprecation_time(deprecate: &Deprecate, public: bool) -> Result<DateTime> {
    use aws_smithy_types::date_time::Format;
    let now = std::time::SystemTime::now();
    let (at, flag) = match deprecate {
        Deprecate::In(after) => (
            now.checked_add(*after)
                .map(DateTime::from)
                .ok_or_else(|| Error::Invalid("--deprecate-in is too far in the future".into()))?,
            "--deprecate-in",
        ),
        Deprecate::At(text) => (
            DateTime::from_str(text, Format::DateTime).map_err(|_| {
                Error::Invalid(format!(
                    "--deprecate-at {text:?} is not an RFC 3339 time like 2027-06-01T00:00:00Z"
                ))
            })?,
            "--deprecate-at",
        ),
    };
    if at <= DateTime::from(now) {
        return Err(Error::Invalid(format!(
            "{flag} names a time that has passed; give one in the future"
        )));
    }
    let (limit, what) = match public {
        true => (
            DEPRECATE_PUBLIC_AT_MOST,
            "2 years for a public AMI (--public)",
        ),
        false => (DEPRECATE_AT_MOST, "10 years"),
    };
    let latest = now.checked_add(limit).map(DateTime::from);
    if latest.is_some_and(|latest| at > latest) {
        return Err(Error::Invalid(format!(
            "{flag} is more than {what} after the AMI is registered; EnableImageDeprecation refuses a later date: give one within {} days",
            limit.as_secs() / 86400
        )));
    }
    Ok(at)
}

/// The read-only lookups, in the command's region: what earlier runs left (the AMI and the
/// snapshot by name), and, when something is to be imported, that the bucket is in this
/// region, the source object exists and the import role exists.
pub async fn plan(c: &Clients, local: LocalPlan) -> Result<Plan> {
    // Independent reads, side by side: each is a round trip to the region.
    let public = async {
        if local.sharing.public {
            ami::check_public_sharing(&c.ec2, &c.region, true).await
        } else {
            Ok(())
        }
    };
    let image = async {
        match &local.register {
            Some(reg) => ami::find_image_by_name(&c.ec2, &reg.name).await,
            None => Ok(None),
        }
    };
    let snapshot = async {
        match &local.source {
            Source::Snapshot(id) => Ok(Some(SnapshotStep::Use(id.clone()))),
            Source::Blocks(req) => Ok(Some(match ebs_direct::find(&c.ec2, req).await? {
                ebs_direct::Found::Completed(id) => SnapshotStep::Use(id),
                ebs_direct::Found::Write(start) => SnapshotStep::Write(start),
            })),
            _ if local.force => Ok(None),
            _ => Ok(import::find_snapshot_by_name(&c.ec2, &local.name)
                .await?
                .map(SnapshotStep::Use)),
        }
    };
    // A key is regional: StartSnapshot in another region cannot use it.
    if let (Source::Blocks(_), Encryption::Key(key)) = (&local.source, &local.encryption) {
        let key_region = crate::commands::needs::kms_key_region("--kms-key", key)?;
        if key_region != c.region {
            return Err(Error::Invalid(format!(
                "--kms-key {key} is in {key_region}, but the snapshot is made in {}: use a key of {}",
                c.region, c.region
            )));
        }
    }
    let ((), existing_image, found_snapshot) = tokio::try_join!(public, image, snapshot)?;
    if let (Some(SnapshotStep::Use(id)), Source::File { path, info, .. }) =
        (&found_snapshot, &local.source)
    {
        refuse_another_image(c, &local.name, id, path, info.file_size).await?;
    }
    let snapshot = match found_snapshot {
        Some(step) => step,
        None => {
            check_import_prerequisites(c, &local).await?;
            SnapshotStep::Import
        }
    };
    if local.sharing.public && !matches!(snapshot, SnapshotStep::Use(_)) {
        // A new snapshot in a region that encrypts by default is encrypted whatever the
        // request says, and could not be made public: say so before making it.
        ami::check_new_snapshots_unencrypted(&c.ec2, &c.region).await?;
    }
    let image = match (&local.register, existing_image) {
        (None, _) => ImageStep::None,
        (Some(_), None) => ImageStep::Register,
        (Some(reg), Some(found))
            if matches!(&snapshot, SnapshotStep::Use(id) if found.root_snapshot.as_ref() == Some(id)) =>
        {
            // The same disk, but registered otherwise: returning it would hand back an
            // image other than the one asked for.
            match found.registered.differences(reg) {
                differences if differences.is_empty() => ImageStep::Reuse(found.image_id),
                // Registered again from the same snapshot, which stays.
                _ if local.force => ImageStep::Replace(ami::FoundImage {
                    root_snapshot: None,
                    ..found
                }),
                differences => {
                    return Err(Error::Invalid(format!(
                        "AMI {} named {} was registered from this image, but otherwise: {}; pass --force to register it again as asked (the old AMI is deregistered), or choose another --ami-name",
                        found.image_id,
                        reg.name,
                        differences.join(", ")
                    )))
                }
            }
        }
        (Some(_), Some(found)) if local.force => ImageStep::Replace(found),
        (Some(reg), Some(found)) => {
            return Err(Error::Invalid(format!(
                "AMI name {} is already used by {} (snapshot {}), which is not this image; pass --force to replace it, or choose another --ami-name",
                reg.name,
                found.image_id,
                found.root_snapshot.as_deref().unwrap_or("unknown")
            )))
        }
    };
    Ok(Plan {
        local,
        region: c.region.clone(),
        snapshot,
        image,
    })
}

/// A snapshot found by name is reused, as ore does; but not one made from another image
/// (its import task shows another size), which would publish an image not asked for.
async fn refuse_another_image(
    c: &Clients,
    name: &str,
    snapshot: &str,
    path: &Path,
    size: u64,
) -> Result<()> {
    match import::imported_image_size(&c.ec2, name, snapshot).await {
        Ok(Some(imported)) if imported != size => Err(Error::Invalid(format!(
            "snapshot {snapshot} named {name} was imported from a {imported}-byte image, but {} is {size} bytes: it is another image; pass --force to import {} instead, or choose another --name",
            path.display(),
            path.display()
        ))),
        Ok(_) => Ok(()),
        // The task may have aged out of AWS's list: the size cannot be compared.
        Err(e) => {
            tracing::debug!("could not read the import task of {snapshot}: {e}");
            Ok(())
        }
    }
}

/// Before an import: the bucket exists in this region, the source object exists, the
/// import role exists.
async fn check_import_prerequisites(c: &Clients, local: &LocalPlan) -> Result<()> {
    let Some(object) = local.source.object() else {
        return Ok(());
    };
    let bucket = &object.bucket;
    let role = &local.role_name;
    // Both reads at once; the bucket's answer is looked at first.
    let (region, role_state) = tokio::join!(
        s3::bucket_region(&c.s3, bucket, c.owner()),
        crate::aws::iam::read_role(&c.iam, role, role)
    );
    let region = match region {
        // ore needed no s3:GetBucketLocation: without it, --region is trusted (a bucket
        // elsewhere then fails at the upload, with S3's redirect, not before it).
        Err(e) if e.kind() == Some(crate::error::ErrorKind::AccessDenied) => {
            crate::aws::unchecked::note(format!(
                "that bucket {bucket} is in {} (s3:GetBucketLocation)",
                c.region
            ));
            Some(c.region.clone())
        }
        region => region?,
    };
    match region {
        None => {
            return Err(Error::Invalid(format!(
                "bucket {bucket} does not exist; create it with `imgpub aws initialize --region {} --bucket {bucket}`",
                c.region
            )))
        }
        Some(r) if r != c.region => {
            return Err(Error::Invalid(format!(
                "bucket {bucket} is in {r}, but ImportSnapshot reads only from buckets in its own region ({}); use --region {r} or a bucket in {}",
                c.region, c.region
            )))
        }
        Some(_) => {}
    }
    if let Source::Object { object, .. } = &local.source {
        head_object(c, object).await?;
    }
    match role_state {
        Ok(crate::aws::iam::RoleState::Absent) => Err(Error::Invalid(format!(
            "the IAM role {role} that VM Import/Export needs does not exist; create it with `imgpub aws initialize --bucket {bucket}` (a role made in the last minute may not be visible yet: IAM is eventually consistent, so rerun a little later)"
        ))),
        Ok(_) => Ok(()),
        Err(e) => {
            // Publishing credentials often may not read IAM; ImportSnapshot will tell.
            tracing::debug!("could not check IAM role {role}: {e}");
            Ok(())
        }
    }
}

/// The source object's ETag; a missing object is bad input.
async fn head_object(c: &Clients, object: &S3Object) -> Result<String> {
    let context = format!("checking {object}");
    let head = match c
        .s3
        .head_object()
        .bucket(&object.bucket)
        .key(&object.key)
        .set_expected_bucket_owner(c.bucket_owner.clone())
        .send()
        .await
    {
        Ok(head) => head,
        Err(e) => {
            return Err(match aws(Op::S3HeadObject, context, e) {
                err if err.kind() == Some(ErrorKind::NotFound) => {
                    Error::Invalid(format!("--source-object {object} does not exist"))
                }
                err => err,
            })
        }
    };
    Ok(head
        .e_tag()
        .ok_or_else(|| Error::missing(Op::S3HeadObject, "ETag"))?
        .trim_matches('"')
        .to_string())
}

/// The calls [`apply`] will make, in order (the input of the preflight and `--dry-run`).
pub fn check(plan: &Plan) -> Vec<Call> {
    let local = &plan.local;
    let region = plan.region.as_str();
    let call = |op, resources| Call::new(op, region, resources);
    let object = local.source.object().map(|o| Resource::Object {
        bucket: o.bucket.clone(),
        key: o.key.clone(),
    });
    let known_snapshot = match &plan.snapshot {
        SnapshotStep::Use(id) | SnapshotStep::Write(Start::Resume(id)) => Some(id.clone()),
        SnapshotStep::Import | SnapshotStep::Write(_) => None,
    };
    let snapshot = Resource::Snapshot(known_snapshot.clone());
    let mut calls = vec![];
    if let (SnapshotStep::Import, Some(object)) = (&plan.snapshot, &object) {
        if let Source::File { object: o, .. } = &local.source {
            calls.extend(multipart::calls(region, o));
        } else {
            calls.push(call(Op::S3HeadObject, vec![object.clone()]));
        }
        calls.push(call(Op::Ec2DescribeImportSnapshotTasks, vec![]));
        calls.push(call(
            Op::Ec2ImportSnapshot,
            vec![
                Resource::Role(local.role_name.clone()),
                snapshot.clone(),
                object.clone(),
            ],
        ));
        calls.push(call(Op::Ec2CreateTags, vec![snapshot.clone()]));
    }
    if let SnapshotStep::Write(start) = &plan.snapshot {
        calls.extend(direct_calls(region, start, &local.encryption));
    }
    if retag_snapshot(plan) {
        calls.push(call(Op::Ec2CreateTags, vec![snapshot.clone()]));
    }
    if let (true, Source::File { .. }, Some(object)) = (local.delete_object, &local.source, &object)
    {
        calls.push(call(Op::S3DeleteObject, vec![object.clone()]));
    }
    let image_tags = local.register.as_ref().is_some_and(|r| !r.tags.is_empty());
    let sized = local
        .register
        .as_ref()
        .is_some_and(|r| r.volume_size_gib.is_some());
    let register_calls = || {
        let register = Call {
            tags_on_create: image_tags,
            ..call(
                Op::Ec2RegisterImage,
                vec![Resource::Image(None), snapshot.clone()],
            )
        };
        match sized {
            // The root volume's size is checked against the snapshot's first.
            true => vec![call(Op::Ec2DescribeSnapshots, vec![]), register],
            false => vec![register],
        }
    };
    let image = match &plan.image {
        ImageStep::None => None,
        ImageStep::Register => {
            calls.extend(register_calls());
            Some(Resource::Image(None))
        }
        ImageStep::Replace(found) => {
            let old = Resource::Image(Some(found.image_id.clone()));
            calls.push(call(Op::Ec2DeregisterImage, vec![old]));
            if let Some(s) = &found.root_snapshot {
                calls.push(call(
                    Op::Ec2DeleteSnapshot,
                    vec![Resource::Snapshot(Some(s.clone()))],
                ));
            }
            calls.extend(register_calls());
            Some(Resource::Image(None))
        }
        ImageStep::Reuse(id) => {
            let image = Resource::Image(Some(id.clone()));
            if image_tags {
                calls.push(call(Op::Ec2CreateTags, vec![image.clone()]));
            }
            Some(image)
        }
    };
    if let (Some(image), true) = (
        &image,
        local
            .register
            .as_ref()
            .is_some_and(|r| r.deprecate_at.is_some()),
    ) {
        calls.push(call(Op::Ec2EnableImageDeprecation, vec![image.clone()]));
    }
    if let (Some(image), false) = (image, local.sharing.launch_permissions().is_empty()) {
        calls.push(
            local
                .sharing
                .on(call(Op::Ec2ModifyImageAttribute, vec![image])),
        );
    }
    if !local.sharing.volume_permissions().is_empty() {
        calls.push(
            local
                .sharing
                .on(call(Op::Ec2ModifySnapshotAttribute, vec![snapshot])),
        );
    }
    calls
}

/// The calls writing a snapshot with the EBS direct APIs makes.
fn direct_calls(region: &str, start: &Start, encryption: &Encryption) -> Vec<Call> {
    let call = |op, resources| Call::new(op, region, resources);
    // The writes use `--kms-key`'s key: its kms: actions are checked with them.
    let keyed = |op, snapshot: &Resource| {
        let mut resources = vec![snapshot.clone()];
        if let Encryption::Key(arn) = encryption {
            resources.push(Resource::Key(arn.clone()));
        }
        call(op, resources)
    };
    let mut calls = vec![];
    let snapshot = match start {
        Start::Resume(id) => Resource::Snapshot(Some(id.clone())),
        Start::Replace(_) | Start::Abandon(_) | Start::New => {
            if let Start::Replace(old) | Start::Abandon(old) = start {
                calls.push(call(
                    Op::Ec2DeleteSnapshot,
                    vec![Resource::Snapshot(Some(old.clone()))],
                ));
            }
            calls.push(Call {
                tags_on_create: true,
                ..keyed(Op::EbsStartSnapshot, &Resource::Snapshot(None))
            });
            Resource::Snapshot(None)
        }
    };
    calls.push(keyed(Op::EbsPutSnapshotBlock, &snapshot));
    calls.push(call(Op::EbsCompleteSnapshot, vec![snapshot]));
    calls.push(call(Op::Ec2DescribeSnapshots, vec![]));
    calls
}

/// Every operation `upload --via ebs-direct` and `upload-snapshot` may make: the EBS direct
/// calls instead of S3 and ImportSnapshot. What `imgpub aws policy --for upload --via
/// ebs-direct` grants.
pub const MAY_CALL_EBS_DIRECT: &[Op] = &[
    Op::Ec2DescribeImages,
    Op::Ec2DescribeSnapshots,
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
pub const MAY_CALL: &[Op] = &[
    Op::Ec2DescribeImages,
    Op::Ec2DescribeSnapshots,
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

/// Runs the plan; see the module docs.
pub async fn apply(c: &Clients, plan: &Plan) -> Result<Published> {
    let local = &plan.local;
    let snapshot = match (&plan.snapshot, &local.source) {
        (SnapshotStep::Use(id), _) => id.clone(),
        (SnapshotStep::Write(start), Source::Blocks(req)) => {
            ebs_direct::write_snapshot(&c.ebs, &c.ec2, req, start).await?
        }
        (SnapshotStep::Import, _) => import_stage(c, local).await?,
        (SnapshotStep::Write(_), _) => {
            return Err(Error::Invalid(
                "only a local image is written block by block (--via ebs-direct --file)".into(),
            ))
        }
    };
    // A snapshot made just now may not be visible yet; one named or found is.
    let snapshot_age = match plan.snapshot {
        SnapshotStep::Use(_) => Age::Known,
        SnapshotStep::Import | SnapshotStep::Write(_) => Age::New,
    };
    if retag_snapshot(plan) {
        tag(&c.ec2, &snapshot, &local.tags, Age::Known).await?;
    }
    // The image is in a snapshot now: the object has served its purpose.
    // (A rerun also makes sure of it: an earlier run may have stopped before deleting.)
    if let (true, Source::File { object, .. }) = (local.delete_object, &local.source) {
        delete_object(c, object, plan.snapshot == SnapshotStep::Import).await?;
    }
    // An AMI registered just now may not be visible yet; a reused one is.
    let image_age = match plan.image {
        ImageStep::Reuse(_) | ImageStep::None => Age::Known,
        ImageStep::Register | ImageStep::Replace(_) => Age::New,
    };
    let ami_id = match (&plan.image, &local.register) {
        (ImageStep::Reuse(id), reg) => {
            tracing::info!("AMI {id} already exists for {snapshot}; reusing it");
            let tags = reg.as_ref().map_or(&[][..], |r| &r.tags);
            tag(&c.ec2, id, tags, Age::Known).await?;
            Some(id.clone())
        }
        (ImageStep::Replace(found), Some(reg)) => {
            tracing::info!(
                "--force: replacing AMI {} named {}",
                found.image_id,
                reg.name
            );
            let old_snapshot = found.root_snapshot.as_deref();
            ami::deregister_image(&c.ec2, &found.image_id, old_snapshot, false).await?;
            Some(register(c, reg, &snapshot, snapshot_age).await?)
        }
        (ImageStep::Register, Some(reg)) => Some(register(c, reg, &snapshot, snapshot_age).await?),
        _ => None,
    };
    if let (Some(id), Some(at)) = (
        &ami_id,
        local.register.as_ref().and_then(|r| r.deprecate_at),
    ) {
        ami::enable_deprecation(&c.ec2, id, at, image_age).await?;
    }
    ami::share(
        &c.ec2,
        ami_id.as_deref(),
        Some(&snapshot),
        &local.sharing,
        ami::Change::Grant,
        image_age,
    )
    .await?;
    Ok(Published {
        ami_id,
        snapshot_id: snapshot,
        s3_object: local.source.object().map(S3Object::to_string),
    })
}

/// Uploads (when the source is a file) and imports; returns the snapshot id.
async fn import_stage(c: &Clients, local: &LocalPlan) -> Result<String> {
    let (object, format, mut etag) = match &local.source {
        Source::File {
            path,
            format,
            object,
            ..
        } => {
            let report = multipart::upload_file(
                &c.s3,
                &UploadRequest {
                    path: path.clone(),
                    object: object.clone(),
                    part_size: local.transfer.part_size,
                    concurrency: local.transfer.concurrency,
                    force: local.force,
                    over_tls: c.s3_over_tls,
                    expected_owner: c.bucket_owner.clone(),
                },
            )
            .await?;
            (object, *format, report.etag)
        }
        Source::Object { object, format } => (object, *format, head_object(c, object).await?),
        Source::Snapshot(id) => return Ok(id.clone()),
        Source::Blocks(req) => {
            return Err(Error::Invalid(format!(
                "{} is written with the EBS direct APIs (--via ebs-direct), not imported",
                req.path.display()
            )))
        }
    };
    if local.force {
        // A new import even for content that was imported before.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        etag.push_str(&format!("-{now}"));
    }
    let request = ImportRequest {
        name: local.name.clone(),
        object: object.clone(),
        format,
        role_name: local.role_name.clone(),
        object_etag: etag,
        encryption: local.encryption.clone(),
        timeout: local.import_timeout,
    };
    match import::import_snapshot(&c.ec2, &request, &local.tags, local.force).await {
        Ok(outcome) => Ok(outcome.snapshot_id),
        Err(err) => {
            // AWS refused the image itself: the object is of no use to a rerun.
            let rejected = err.kind() == Some(ErrorKind::ImageRejected);
            if let (true, true, Source::File { object, .. }) =
                (rejected, local.delete_object, &local.source)
            {
                delete_object(c, object, true).await?;
            }
            Err(err)
        }
    }
}

/// Deletes the uploaded object (deleting a missing one is not an error in S3).
async fn delete_object(c: &Clients, object: &S3Object, say_so: bool) -> Result<()> {
    c.s3.delete_object()
        .bucket(&object.bucket)
        .key(&object.key)
        .set_expected_bucket_owner(c.bucket_owner.clone())
        .send()
        .await
        .map_err(|e| aws(Op::S3DeleteObject, format!("deleting {object}"), e))?;
    if say_so {
        tracing::info!("deleted {object}");
    }
    Ok(())
}

/// RegisterImage; a duplicate name registered meanwhile (a concurrent or earlier,
/// interrupted run) for the same snapshot is that run's AMI.
async fn register(
    c: &Clients,
    reg: &RegisterSettings,
    snapshot: &str,
    snapshot_age: Age,
) -> Result<String> {
    if let Some(gib) = reg.volume_size_gib {
        let snapshot_gib = import::snapshot_size_gib(&c.ec2, snapshot, snapshot_age).await?;
        if gib < snapshot_gib {
            return Err(Error::failed(
                format!("registering AMI {}", reg.name),
                ErrorKind::Other,
                None,
                format!("the root volume ({gib} GiB) is smaller than snapshot {snapshot} ({snapshot_gib} GiB): pass --disk-size-gib {snapshot_gib} or more (a rerun reuses the snapshot)"),
            ));
        }
    }
    match ami::register_image(&c.ec2, reg, snapshot, snapshot_age).await {
        Ok(id) => Ok(id),
        Err(err) if err.code() == Some("InvalidAMIName.Duplicate") => {
            match ami::find_image_by_name(&c.ec2, &reg.name).await? {
                Some(found) if found.root_snapshot.as_deref() == Some(snapshot) => {
                    Ok(found.image_id)
                }
                _ => Err(err),
            }
        }
        Err(err) => Err(err),
    }
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
        let line = needs::fix_line(For::Upload, object, Some(&a.ctx.region));
        Some(crate::aws::preflight::with_sharing(&line, calls))
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        let published = apply(&a.clients(), plan).await?;
        emit(Output::Json(published.output(self.stage)));
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
            force: false,
            source_object: None,
            source_snapshot: None,
            object_format: None,
            public: false,
            grant_user: vec![],
            grant_user_snapshot: vec![],
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
        let plan = Plan {
            local,
            region: "eu-west-1".into(),
            snapshot: SnapshotStep::Import,
            image: ImageStep::Register,
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
    }
}
