//! The release manifest: one TOML file that declares a release (docs/release.md documents
//! every key). Read and checked without AWS; relative image paths are relative to the
//! manifest's own directory, so a manifest and its images move together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::aws::ami::{Arch, BootMode, Sharing, SriovNetSupport, TpmSupport, VolumeType};
use crate::aws::config::validate_region;
use crate::aws::import::Encryption;
use crate::aws::ssm::{ImageFacts, Template};
use crate::commands::upload::{Deprecate, Existing, UploadOptions, Via};
use crate::error::{Error, Result};
use crate::names::Named;
use crate::units::{parse_duration, parse_size};

/// A release as its manifest declares it, checked.
#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    pub path: PathBuf,
    pub release: String,
    /// Where each image is uploaded and registered; the copies start from there.
    pub source_region: String,
    pub targets: Targets,
    /// Regions whose failure does not fail the release (exit 77 instead of 1).
    pub best_effort: Vec<String>,
    pub via: Via,
    /// `delta = true`: each image is written on the newest snapshot of its lineage
    /// (`upload --parent auto`; EBS direct only).
    pub delta: bool,
    /// `s3://bucket/prefix`, for `via = "s3"`.
    pub bucket: Option<String>,
    pub images: Vec<Image>,
    pub sharing: Sharing,
    pub tags: Vec<(String, String)>,
    pub deprecate: Option<Deprecate>,
    /// The parameter templates, `{channel}` filled in with `channel`.
    pub parameters: Vec<Template>,
    /// The templates as written, for `promote` to fill `{channel}` in with other channels.
    pub parameter_texts: Vec<String>,
    /// The channel `apply` writes (`{channel}` in the templates), e.g. `latest`.
    pub channel: Option<String>,
    /// Move a parameter that holds another AMI (a channel such as `latest`) to this one.
    pub overwrite_parameters: bool,
    pub copy_concurrency: usize,
    pub import_timeout: Duration,
    pub copy_timeout: Duration,
    /// `name` as written, `{release}` and `{arch}` unfilled: how `prune` knows the AMIs of
    /// every release of this stream.
    pub name_template: String,
    /// `[prune]`: which releases `release prune` keeps.
    pub prune: Option<Retention>,
    /// `protect = true`: apply turns deregistration protection on for every AMI of the
    /// release; prune turns it off once the release leaves the retention policy.
    pub protect: bool,
    /// `[[account]]`: the accounts the release is published in, each on its own (its own
    /// upload in its source region, then its copies). Empty: the caller's account only.
    pub accounts: Vec<AccountDecl>,
    /// In the view of one `[[account]]` ([`Manifest::for_account`]): that account.
    pub part: Option<AccountDecl>,
    /// `encrypted`, `kms_key`: how the uploads' snapshots are encrypted (in an account's
    /// view, the account's).
    pub encryption: Encryption,
    /// `vmimport_role`: the role ImportSnapshot assumes (`initialize --role-name`); an
    /// account's own in its view.
    pub vmimport_role: String,
    /// `[transfer]`: how each image is sent.
    pub transfer: Transfer,
}

/// `[transfer]`: how each image is sent, as upload's transfer flags say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transfer {
    /// S3 multipart part size; `None`: upload's choice.
    pub part_size: Option<u64>,
    /// S3 parts sent at once.
    pub upload_concurrency: usize,
    /// EBS direct blocks read and sent at once.
    pub blocks_in_flight: usize,
    /// EBS direct: send written all-zero blocks to an unencrypted snapshot too.
    pub send_zero_blocks: bool,
}

/// `[[account]]`: an account the release is published in, how to reach it, and where in
/// its partition. Unset keys are the manifest's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AccountDecl {
    /// A label: `--only account=NAME`, the record's name, the output's `account`.
    pub name: String,
    /// The account id the credentials must belong to, checked before anything is made.
    pub id: Option<String>,
    /// `aws`, `aws-us-gov`, `aws-cn`: its source region's; every region of it is too.
    pub partition: &'static str,
    /// A profile of the shared config files (static keys, SSO, or `web_identity_token_file`
    /// with `role_arn`); `None`: the credentials the AWS flags give.
    pub profile: Option<String>,
    /// A role to assume with those credentials, with its External ID when its trust asks.
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub source_region: String,
    pub targets: Targets,
    pub best_effort: Vec<String>,
    pub bucket: Option<String>,
    pub sharing: Sharing,
    /// `copy_from = "NAME"`: the release reaches this account as copies of that account's
    /// AMIs (shared with it), not an upload of its own.
    pub copy_from: Option<CopyFrom>,
    /// The ids of the accounts that copy from this one: its uploads are shared with them.
    pub copied_by: Vec<String>,
    pub encryption: Encryption,
    pub vmimport_role: String,
}

/// Where an account that copies the release (`copy_from`) finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopyFrom {
    /// The `[[account]]` that uploads.
    pub name: String,
    pub id: String,
    /// Its source region, where its AMIs are uploaded.
    pub region: String,
}

/// `[prune]`: the releases of this stream to keep; the others are removed in stages
/// (deprecate, disable, deregister), `grace` apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retention {
    /// The newest releases kept, per architecture.
    pub keep: usize,
    /// Release names (`*` and `?` wildcards) kept always.
    pub barriers: Vec<String>,
    /// An AMI of a release launched within this long keeps the release's image.
    pub keep_launched_within: Option<Duration>,
    /// The time between one stage and the next.
    pub grace: Duration,
    /// Keep a release's image while an AMI usage report finds another account using one
    /// of its AMIs; retire nothing before a report says so.
    pub keep_in_use: bool,
}

/// Where the release is published besides its source region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Targets {
    /// Every region enabled for the account (opt-in regions once enabled).
    All,
    Named(Vec<String>),
}

/// One image of the release.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub file: PathBuf,
    pub arch: Arch,
    pub boot_mode: Option<BootMode>,
    pub imdsv2_only: bool,
    pub volume_type: VolumeType,
    pub tpm: Option<TpmSupport>,
    pub disk_size_gib: Option<u32>,
    /// The AMI's name: the manifest's `name` with `{release}` and `{arch}` filled in.
    pub name: String,
    pub description: Option<String>,
    /// The UEFI variable store's file (checked when read), for Secure Boot.
    pub uefi_data: Option<PathBuf>,
    pub sriov: SriovNetSupport,
    pub billing_products: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    release: String,
    source_region: String,
    #[serde(default)]
    regions: RawRegions,
    #[serde(default)]
    best_effort: Vec<String>,
    #[serde(default)]
    transport: Option<String>,
    #[serde(default)]
    delta: bool,
    bucket: Option<String>,
    name: String,
    description: Option<String>,
    deprecate_in: Option<String>,
    deprecate_at: Option<String>,
    #[serde(default)]
    sharing: RawSharing,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    ssm: RawSsm,
    copy_concurrency: Option<usize>,
    import_timeout: Option<String>,
    copy_timeout: Option<String>,
    #[serde(rename = "image")]
    images: Vec<RawImage>,
    prune: Option<RawRetention>,
    #[serde(default)]
    protect: bool,
    #[serde(default, rename = "account")]
    accounts: Vec<RawAccount>,
    #[serde(default)]
    encrypted: bool,
    kms_key: Option<String>,
    vmimport_role: Option<String>,
    #[serde(default)]
    transfer: RawTransfer,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransfer {
    part_size: Option<String>,
    upload_concurrency: Option<usize>,
    blocks_in_flight: Option<usize>,
    #[serde(default)]
    send_zero_blocks: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: String,
    id: Option<String>,
    profile: Option<String>,
    role_arn: Option<String>,
    external_id: Option<String>,
    source_region: Option<String>,
    regions: Option<RawRegions>,
    best_effort: Option<Vec<String>>,
    bucket: Option<String>,
    sharing: Option<RawSharing>,
    copy_from: Option<String>,
    encrypted: Option<bool>,
    kms_key: Option<String>,
    vmimport_role: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    keep: usize,
    #[serde(default)]
    barriers: Vec<String>,
    keep_launched_within: Option<String>,
    grace: String,
    #[serde(default)]
    keep_in_use: bool,
}

/// A retention policy file of its own (`release prune --policy FILE`): a `[prune]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    prune: RawRetention,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawRegions {
    /// `"all"`.
    Word(String),
    List(Vec<String>),
}

impl Default for RawRegions {
    fn default() -> Self {
        RawRegions::List(vec![])
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSharing {
    #[serde(default)]
    public: bool,
    #[serde(default)]
    accounts: Vec<String>,
    #[serde(default)]
    organizations: Vec<String>,
    #[serde(default)]
    organizational_units: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsm {
    #[serde(default)]
    parameters: Vec<String>,
    #[serde(default)]
    overwrite: bool,
    channel: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    file: PathBuf,
    arch: String,
    boot_mode: Option<String>,
    #[serde(default)]
    imdsv2_only: bool,
    volume_type: Option<String>,
    tpm: Option<String>,
    disk_size_gib: Option<u32>,
    uefi_data: Option<PathBuf>,
    sriov_net_support: Option<String>,
    #[serde(default)]
    billing_product_codes: Vec<String>,
}

/// Reads and checks the manifest at `path` (no AWS).
pub(crate) fn read(path: &Path) -> Result<Manifest> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Invalid(format!(
            "cannot read the release manifest {}: {e}; docs/release.md shows one",
            path.display()
        ))
    })?;
    parse(path, &text)
}

/// Checks `text`, the manifest at `path`.
pub(crate) fn parse(path: &Path, text: &str) -> Result<Manifest> {
    let here = path.display();
    let raw: Raw = toml::from_str(text).map_err(|e| {
        // toml's message names the line, the column and the key.
        Error::Invalid(format!(
            "release manifest {here}: {}",
            e.to_string().trim_end()
        ))
    })?;
    let bad = |why: String| Error::Invalid(format!("release manifest {here}: {why}"));
    if raw.release.trim().is_empty() {
        return Err(bad(
            "`release` is empty; name the release, e.g. \"1.2.3\"".into()
        ));
    }
    let targets = places(&raw.source_region, &raw.regions, &raw.best_effort)
        .map_err(|why| bad(why.to_string()))?;
    let via = match raw.transport.as_deref() {
        None | Some("s3") => Via::S3,
        Some("ebs-direct") => Via::EbsDirect,
        Some(other) => {
            return Err(bad(format!(
                "`transport = {other:?}`: use \"s3\" or \"ebs-direct\""
            )))
        }
    };
    if raw.delta && via != Via::EbsDirect {
        return Err(bad(
            "`delta = true` writes each image on the last release's snapshot with EBS direct: it needs `transport = \"ebs-direct\"`".into(),
        ));
    }
    let own_buckets = !raw.accounts.is_empty() && raw.accounts.iter().all(|a| a.bucket.is_some());
    if via == Via::S3 && raw.bucket.is_none() && !own_buckets {
        return Err(bad(
            "`transport = \"s3\"` needs `bucket = \"s3://BUCKET/PREFIX\"` (or use \"ebs-direct\")"
                .into(),
        ));
    }
    let sharing = sharing_of(&raw.sharing).map_err(&bad)?;
    let accounts = accounts(&raw, via, &sharing).map_err(&bad)?;
    let duration = |key: &str, value: &Option<String>, default: Duration| match value {
        None => Ok(default),
        Some(v) => parse_duration(v).map_err(|e| bad(format!("`{key}`: {e}"))),
    };
    let deprecate = match (&raw.deprecate_in, raw.deprecate_at) {
        (Some(_), Some(_)) => {
            return Err(bad("give `deprecate_in` or `deprecate_at`, not both".into()))
        }
        (Some(_), None) => Some(Deprecate::In(duration(
            "deprecate_in",
            &raw.deprecate_in,
            Duration::ZERO,
        )?)),
        (None, Some(at)) => Some(Deprecate::At(at)),
        (None, None) => None,
    };
    if raw.images.is_empty() {
        return Err(bad("no [[image]]: declare at least one".into()));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let images = raw
        .images
        .into_iter()
        .enumerate()
        .map(|(i, image)| {
            let at = |key: &str| format!("[[image]] {} `{key}`", i + 1);
            let named = |key: &str, value: &str| {
                bad(format!(
                    "{} = {value:?} is not one of {}",
                    at(key),
                    names_of_key(key)
                ))
            };
            let arch = Arch::from_name(&image.arch).ok_or_else(|| named("arch", &image.arch))?;
            let boot_mode = image
                .boot_mode
                .as_deref()
                .map(|b| BootMode::from_name(b).ok_or_else(|| named("boot_mode", b)))
                .transpose()?;
            let volume_type = match image.volume_type.as_deref() {
                None => VolumeType::Gp3,
                Some(v) => VolumeType::from_name(v).ok_or_else(|| named("volume_type", v))?,
            };
            let tpm = image
                .tpm
                .as_deref()
                .map(|t| TpmSupport::from_name(t).ok_or_else(|| named("tpm", t)))
                .transpose()?;
            let sriov = match image.sriov_net_support.as_deref() {
                None => SriovNetSupport::Simple,
                Some(v) => {
                    SriovNetSupport::from_name(v).ok_or_else(|| named("sriov_net_support", v))?
                }
            };
            // The boot mode upload registers with, and that the variable store needs UEFI.
            let boot = crate::aws::ami::boot_mode(arch, BootMode::UefiPreferred, boot_mode, tpm)
                .map_err(|e| bad(format!("{}: {e}", at("boot_mode"))))?;
            let uefi_data = image.uefi_data.as_ref().map(|f| base.join(f));
            if let Some(file) = &uefi_data {
                crate::commands::upload::read_uefi_data(&at("uefi_data"), file, boot)
                    .map_err(|e| bad(e.to_string()))?;
            }
            if let Some(code) = image
                .billing_product_codes
                .iter()
                .find(|c| c.trim().is_empty() || c.contains(char::is_whitespace))
            {
                return Err(bad(format!(
                    "{} has {code:?}, not a billing product code (such as bp-6fa54006)",
                    at("billing_product_codes")
                )));
            }
            let fill = |template: &str| {
                template
                    .replace("{release}", &raw.release)
                    .replace("{arch}", arch.name())
            };
            Ok(Image {
                file: base.join(&image.file),
                arch,
                boot_mode,
                imdsv2_only: image.imdsv2_only,
                volume_type,
                tpm,
                disk_size_gib: image.disk_size_gib,
                name: fill(&raw.name),
                description: raw.description.as_deref().map(fill),
                uefi_data,
                sriov,
                billing_products: image.billing_product_codes,
            })
        })
        .collect::<Result<Vec<Image>>>()?;
    for (i, a) in images.iter().enumerate() {
        if images[i + 1..].iter().any(|b| b.name == a.name) {
            return Err(bad(format!(
                "two images would both be named {:?}; put {{arch}} in `name`",
                a.name
            )));
        }
    }
    // The object's key is the file's name under `bucket`: two files of one name would
    // overwrite each other.
    let file_names: Vec<_> = images.iter().map(|i| i.file.file_name()).collect();
    if let (Via::S3, Some(Some(name))) = (via, twice(&file_names)) {
        return Err(bad(format!(
            "two images upload a file named {}, and the object's key is the file's name under `bucket`; rename one",
            Path::new(name).display()
        )));
    }
    let channeled = raw.ssm.parameters.iter().any(|t| t.contains(CHANNEL));
    let channel = match (&raw.ssm.channel, channeled) {
        (Some(c), true) => Some(check_channel(c).map_err(|why| bad(format!("[ssm] channel: {why}")))?),
        (None, false) => None,
        (None, true) => {
            return Err(bad(
                "[ssm] a parameter names {channel}: set `channel`, the one apply writes (e.g. \"latest\")".into(),
            ))
        }
        (Some(_), false) => {
            return Err(bad(
                "[ssm] `channel` is set, but no parameter names {channel}".into(),
            ))
        }
    };
    let parameters = fill_channel(&raw.ssm.parameters, channel.as_deref().unwrap_or_default())?;
    // Every template renders for every image (the tags it names are the manifest's), and
    // no two images write the same parameter.
    // The AMIs carry imgpub's own tag too.
    let tags = crate::aws::tags::with_managed(&raw.tags.clone().into_iter().collect::<Vec<_>>());
    for template in &parameters {
        let mut names = vec![];
        for image in &images {
            let facts = image.facts(&raw.source_region, &image.name, tags.clone());
            names.push(
                template
                    .render(&facts)
                    .map_err(|e| bad(format!("[ssm] {e}; a {{tag:KEY}} needs KEY in [tags]")))?,
            );
        }
        if let Some(name) = twice(&names) {
            return Err(bad(format!(
                "[ssm] two images would write the parameter {name}; put {{arch}} or {{name}} in the template"
            )));
        }
    }
    let prune = raw
        .prune
        .map(|p| retention(p).map_err(|why| bad(format!("[prune] {why}"))))
        .transpose()?;
    let encryption =
        encryption_of(raw.encrypted, raw.kms_key.as_deref(), &raw.source_region).map_err(&bad)?;
    // With [[account]]s each is checked as it publishes (its own sharing and regions).
    if raw.accounts.is_empty() {
        encrypted_sharing(&encryption, &targets, &sharing).map_err(&bad)?;
    }
    let transfer = transfer(&raw.transfer, via).map_err(|why| bad(format!("[transfer] {why}")))?;
    Ok(Manifest {
        path: path.to_path_buf(),
        release: raw.release,
        source_region: raw.source_region,
        targets,
        best_effort: raw.best_effort,
        via,
        delta: raw.delta,
        bucket: raw.bucket,
        images,
        sharing,
        tags: raw.tags.into_iter().collect(),
        deprecate,
        parameters,
        parameter_texts: raw.ssm.parameters,
        channel,
        overwrite_parameters: raw.ssm.overwrite,
        copy_concurrency: raw
            .copy_concurrency
            .unwrap_or(crate::aws::copy::DEFAULT_CONCURRENCY)
            .max(1),
        import_timeout: duration("import_timeout", &raw.import_timeout, HOURS_2)?,
        copy_timeout: duration("copy_timeout", &raw.copy_timeout, HOURS_2)?,
        name_template: raw.name,
        prune,
        protect: raw.protect,
        accounts,
        part: None,
        encryption,
        vmimport_role: vmimport_role(raw.vmimport_role.as_deref()).map_err(&bad)?,
        transfer,
    })
}

/// `encrypted` and `kms_key` for uploads in `source`: a key is the ARN of one in that
/// region (a key encrypts in its own region; the policy names it by ARN).
fn encryption_of(
    encrypted: bool,
    kms_key: Option<&str>,
    source: &str,
) -> std::result::Result<Encryption, String> {
    let Some(key) = kms_key else {
        return Ok(match encrypted {
            true => Encryption::DefaultKey,
            false => Encryption::None,
        });
    };
    let region =
        crate::commands::needs::kms_key_region("`kms_key`", key).map_err(|e| e.to_string())?;
    if region != source {
        return Err(format!(
            "`kms_key` {key} is a key of {region}, but the images are uploaded in {source}: name a key of {source}"
        ));
    }
    Ok(Encryption::Key(key.to_string()))
}

/// An encrypted release shares only what AWS lets it share: never publicly, and with other
/// accounts only under a key of its own, in the source region, where that key is.
fn encrypted_sharing(
    encryption: &Encryption,
    targets: &Targets,
    sharing: &Sharing,
) -> std::result::Result<(), String> {
    if !encryption.is_encrypted() {
        return Ok(());
    }
    // "Encrypted snapshots ... cannot be made public. Snapshots encrypted with your default
    // KMS key cannot be shared with other accounts." (EC2 API Reference,
    // ModifySnapshotAttribute).
    if sharing.public {
        return Err(
            "an encrypted snapshot cannot be public (AWS refuses): drop `encrypted` and `kms_key`, or `public`".into(),
        );
    }
    let shared = !sharing.launch_users.is_empty()
        || !sharing.organizations.is_empty()
        || !sharing.organizational_units.is_empty();
    if !shared {
        return Ok(());
    }
    if *encryption == Encryption::DefaultKey {
        return Err(
            "`encrypted = true` encrypts with the account's default EBS key, which may be AWS's own and so cannot be shared: give `kms_key`, a key of your own that the accounts shared with may use".into(),
        );
    }
    let copies = match targets {
        Targets::All => true,
        Targets::Named(list) => !list.is_empty(),
    };
    // CopyImage encrypts each copy with its region's default EBS key unless told another,
    // and a release names one key, of the source region.
    if copies {
        return Err(
            "the copies in other regions would be encrypted with each region's default EBS key, which may be AWS's own and so cannot be shared: share an encrypted release in its source region only (`regions = []`), or publish it unencrypted".into(),
        );
    }
    Ok(())
}

/// `vmimport_role`, checked; `vmimport` unless given.
fn vmimport_role(name: Option<&str>) -> std::result::Result<String, String> {
    let name = name.unwrap_or("vmimport");
    crate::aws::iam::validate_role_name(name)
        .map_err(|e| format!("`vmimport_role = {name:?}`: {e}"))?;
    Ok(name.to_string())
}

/// `[transfer]`, checked: each key is of the transport the release uses.
fn transfer(raw: &RawTransfer, via: Via) -> std::result::Result<Transfer, String> {
    let of = |key: &str, given: bool, wants: Via| match given && via != wants {
        true => Err(format!(
            "`{key}` applies to `transport = \"{}\"`; this release uses \"{}\"",
            wants.name(),
            via.name()
        )),
        false => Ok(()),
    };
    of("part_size", raw.part_size.is_some(), Via::S3)?;
    of(
        "upload_concurrency",
        raw.upload_concurrency.is_some(),
        Via::S3,
    )?;
    of(
        "blocks_in_flight",
        raw.blocks_in_flight.is_some(),
        Via::EbsDirect,
    )?;
    of("send_zero_blocks", raw.send_zero_blocks, Via::EbsDirect)?;
    let part_size = raw
        .part_size
        .as_deref()
        .map(|p| parse_size(p).map_err(|e| format!("`part_size`: {e}")))
        .transpose()?;
    let upload_concurrency = match raw.upload_concurrency {
        Some(0) => return Err("`upload_concurrency` must be 1 or more".into()),
        n => n.unwrap_or(crate::aws::multipart::DEFAULT_CONCURRENCY),
    };
    let blocks_in_flight = match raw.blocks_in_flight {
        Some(n) if !(1..=1024).contains(&n) => {
            return Err(format!("`blocks_in_flight = {n}`: give 1 to 1024"))
        }
        n => n.unwrap_or(usize::from(
            crate::aws::ebs_direct::DEFAULT_BLOCKS_IN_FLIGHT,
        )),
    };
    Ok(Transfer {
        part_size,
        upload_concurrency,
        blocks_in_flight,
        send_zero_blocks: raw.send_zero_blocks,
    })
}

/// Where a release goes from `source`, checked: the targets, every region valid, none
/// twice, each best-effort one listed, the source not best-effort.
fn places(
    source: &str,
    regions: &RawRegions,
    best_effort: &[String],
) -> std::result::Result<Targets, String> {
    let region = |r: &str| validate_region(r).map_err(|e| e.to_string());
    region(source)?;
    let targets = match regions {
        RawRegions::Word(w) if w == "all" => Targets::All,
        RawRegions::Word(w) => {
            return Err(format!(
                "`regions = {w:?}`: give a list of regions, or \"all\""
            ))
        }
        RawRegions::List(list) => {
            list.iter().try_for_each(|r| region(r))?;
            if let Some(r) = twice(list) {
                return Err(format!("region {r} is listed twice in `regions`"));
            }
            Targets::Named(list.clone())
        }
    };
    best_effort.iter().try_for_each(|r| region(r))?;
    if let Some(r) = twice(best_effort) {
        return Err(format!("region {r} is listed twice in `best_effort`"));
    }
    if let Targets::Named(list) = &targets {
        if let Some(r) = best_effort.iter().find(|r| !list.contains(r)) {
            return Err(format!(
                "best-effort region {r} is not in `regions`; add it there too"
            ));
        }
    }
    if best_effort.iter().any(|r| r == source) {
        return Err(format!(
            "the source region {source} cannot be best-effort: every copy starts there"
        ));
    }
    Ok(targets)
}

/// `[sharing]` (or an account's), checked.
fn sharing_of(raw: &RawSharing) -> std::result::Result<Sharing, String> {
    for account in &raw.accounts {
        if !is_account_id(account) {
            return Err(format!(
                "`sharing.accounts`: {account:?} is not a 12-digit account id"
            ));
        }
    }
    let org = |key: &str, arns: &[String], kind: &str| {
        crate::aws::ami::validate_org_arns(&format!("`sharing.{key}`"), arns, kind)
            .map_err(|e| e.to_string())
    };
    org("organizations", &raw.organizations, "organization")?;
    org("organizational_units", &raw.organizational_units, "ou")?;
    // Snapshots cannot be shared with organizations (createVolumePermission names accounts
    // and `all` only): an organization's accounts launch the AMI without a share of it.
    Ok(Sharing {
        public: raw.public,
        launch_users: raw.accounts.clone(),
        snapshot_users: raw.accounts.clone(),
        organizations: raw.organizations.clone(),
        organizational_units: raw.organizational_units.clone(),
    })
}

fn is_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// `[[account]]`, checked: names, ids, credentials, and that each account's regions are
/// in its source region's partition (CopyImage cannot cross partitions).
fn accounts(
    raw: &Raw,
    via: Via,
    sharing: &Sharing,
) -> std::result::Result<Vec<AccountDecl>, String> {
    let mut out: Vec<AccountDecl> = vec![];
    for a in &raw.accounts {
        let at = format!("[[account]] {:?}", a.name);
        let ok_name = !a.name.is_empty()
            && a.name.len() <= 32
            && a.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok_name {
            return Err(format!(
                "[[account]] `name = {:?}`: use 1 to 32 lowercase letters, digits and '-' (it names the account's record file)",
                a.name
            ));
        }
        if out.iter().any(|o| o.name == a.name) {
            return Err(format!(
                "{at} is declared twice; give each account its own name"
            ));
        }
        if let Some(id) = a.id.as_deref().filter(|id| !is_account_id(id)) {
            return Err(format!("{at} `id = {id:?}` is not a 12-digit account id"));
        }
        // With several, an account whose credentials fall back to another's (a forgotten
        // `role_arn`, one profile twice) would publish there: each names its id, checked.
        if a.id.is_none() && raw.accounts.len() > 1 {
            return Err(format!(
                "{at} has no `id`: with several [[account]]s each names its 12-digit account id, which its credentials must reach"
            ));
        }
        if let Some(other) = out.iter().find(|o| o.id.is_some() && o.id == a.id) {
            return Err(format!(
                "{at} and [[account]] {:?} are both account {}; declare it once",
                other.name,
                a.id.as_deref().unwrap_or_default()
            ));
        }
        if a.external_id.is_some() && a.role_arn.is_none() {
            return Err(format!(
                "{at} `external_id` is the External ID to assume `role_arn` with: give `role_arn` too"
            ));
        }
        if let Some(role) = a.role_arn.as_deref() {
            if !role.starts_with("arn:") || !role.contains(":role/") {
                return Err(format!(
                    "{at} `role_arn = {role:?}` is not a role ARN; use arn:PARTITION:iam::ACCOUNT:role/NAME"
                ));
            }
            let of = role.split(':').nth(4);
            if let Some(id) = a.id.as_deref().filter(|id| of != Some(*id)) {
                return Err(format!(
                    "{at} `role_arn = {role:?}` is a role of account {}, not of its `id = \"{id}\"`",
                    of.unwrap_or_default()
                ));
            }
        }
        // What the account does not set is the manifest's: a mistake there is named so.
        let inherited: Vec<&str> = [
            ("source_region", a.source_region.is_none()),
            ("regions", a.regions.is_none()),
            ("best_effort", a.best_effort.is_none()),
        ]
        .into_iter()
        .filter_map(|(key, from_top)| from_top.then_some(key))
        .collect();
        let from_top = match inherited.is_empty() {
            true => String::new(),
            false => format!(
                " ({} from the manifest's top level: set the account's own in its [[account]], e.g. `best_effort = []`)",
                inherited
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let source = a.source_region.clone().unwrap_or(raw.source_region.clone());
        let regions = a.regions.clone().unwrap_or(raw.regions.clone());
        let best_effort = a.best_effort.clone().unwrap_or(raw.best_effort.clone());
        let targets = places(&source, &regions, &best_effort)
            .map_err(|why| format!("{at}: {why}{from_top}"))?;
        let partition = crate::aws::config::partition_for_region(&source);
        let named = match &targets {
            Targets::Named(list) => list.as_slice(),
            Targets::All => &[],
        };
        if let Some(r) = named
            .iter()
            .find(|r| crate::aws::config::partition_for_region(r) != partition)
        {
            return Err(format!(
                "{at}: region {r} is in partition {}, but its source region {source} is in {partition}, and AMIs cannot be copied across partitions; give the account `source_region` and `regions` of one partition{from_top}",
                crate::aws::config::partition_for_region(r)
            ));
        }
        if let Some(role) = a.role_arn.as_deref() {
            if !role.starts_with(&format!("arn:{partition}:")) {
                return Err(format!(
                    "{at} `role_arn = {role:?}` is not a role of partition {partition}, where its source region {source} is"
                ));
            }
        }
        let bucket = a.bucket.clone().or(raw.bucket.clone());
        // Every request to a bucket names its owner (the publishing account): two accounts
        // cannot upload to one bucket, and a bucket is in one partition.
        let name_of = |b: &Option<String>| {
            b.as_deref().map(|b| {
                b.trim_start_matches("s3://")
                    .split('/')
                    .next()
                    .unwrap_or(b)
                    .to_string()
            })
        };
        // An account that copies uploads nothing, and needs no bucket.
        if via == Via::S3 && a.copy_from.is_none() {
            if bucket.is_none() {
                return Err(format!(
                    "{at}: `transport = \"s3\"` needs a bucket: give `bucket = \"s3://BUCKET/PREFIX\"` in it or in the manifest"
                ));
            }
            if let Some(other) = out.iter().find(|o| name_of(&o.bucket) == name_of(&bucket)) {
                return Err(format!(
                    "{at} and [[account]] {:?} would both upload to bucket {}, but each account uploads to a bucket of its own; give `bucket` in each [[account]]",
                    other.name,
                    name_of(&bucket).unwrap_or_default()
                ));
            }
        }
        let sharing = match &a.sharing {
            Some(s) => sharing_of(s).map_err(|why| format!("{at}: {why}"))?,
            None => sharing.clone(),
        };
        // Organizations are of one partition too: sharing with another's fails after the AMI
        // is made.
        let arn_partition = format!("arn:{partition}:");
        let foreign = sharing
            .organizations
            .iter()
            .chain(&sharing.organizational_units)
            .find(|arn| !arn.starts_with(&arn_partition));
        if let Some(arn) = foreign {
            return Err(format!(
                "{at}: {arn} is not an organization of partition {partition}, where it publishes; give the account its own `sharing`{}",
                match a.sharing {
                    None => " (it takes the manifest's [sharing] now)",
                    Some(_) => "",
                }
            ));
        }
        // A key is of an account and a region: one the manifest names may not fit this one.
        let (encrypted, kms_key, top) = match (a.encrypted, &a.kms_key) {
            (None, None) => (raw.encrypted, raw.kms_key.as_deref(), true),
            (encrypted, key) => (encrypted.unwrap_or(false), key.as_deref(), false),
        };
        let inherited = match top && (raw.encrypted || raw.kms_key.is_some()) {
            true => " (`encrypted` and `kms_key` from the manifest's top level: set the account's own in its [[account]], e.g. `encrypted = false`)",
            false => "",
        };
        let encryption = encryption_of(encrypted, kms_key, &source)
            .and_then(|e| encrypted_sharing(&e, &targets, &sharing).map(|()| e))
            .map_err(|why| format!("{at}: {why}{inherited}"))?;
        if encryption.is_encrypted() && a.copy_from.is_some() {
            return Err(format!(
                "{at} copies from another account, and a copy is encrypted as its source is: `encrypted` and `kms_key` apply to an upload{inherited}"
            ));
        }
        let vmimport_role =
            vmimport_role(a.vmimport_role.as_deref().or(raw.vmimport_role.as_deref()))
                .map_err(|why| format!("{at}: {why}"))?;
        out.push(AccountDecl {
            name: a.name.clone(),
            id: a.id.clone(),
            partition,
            profile: a.profile.clone(),
            role_arn: a.role_arn.clone(),
            external_id: a.external_id.clone(),
            source_region: source,
            targets,
            best_effort,
            // An account that copies uploads nothing: no bucket of its own to compare.
            bucket: bucket.filter(|_| a.copy_from.is_none()),
            sharing,
            copy_from: None,
            copied_by: vec![],
            encryption,
            vmimport_role,
        });
    }
    copies(raw, &mut out)?;
    Ok(out)
}

/// `copy_from`, checked once every account is read: the account it names uploads (it
/// copies from no one), is another account of the same partition, and shares its uploads
/// with each account that copies from it.
fn copies(raw: &Raw, out: &mut [AccountDecl]) -> std::result::Result<(), String> {
    for (i, a) in raw.accounts.iter().enumerate() {
        let Some(from) = &a.copy_from else { continue };
        let at = format!("[[account]] {:?} `copy_from = {from:?}`", a.name);
        let Some(owner) = raw.accounts.iter().position(|o| o.name == *from) else {
            return Err(format!(
                "{at} names no [[account]]; name the account whose AMIs it copies"
            ));
        };
        if owner == i {
            return Err(format!(
                "{at} names the account itself; name the account whose AMIs it copies"
            ));
        }
        if raw.accounts[owner].copy_from.is_some() {
            return Err(format!(
                "{at}: account {from:?} copies from another itself; name the account that uploads"
            ));
        }
        let (o, me) = (&out[owner], &out[i]);
        // Copying another account's encrypted AMI needs its key shared, and the copies would
        // be under this account's default EBS key: a release does not arrange either.
        if o.encryption.is_encrypted() {
            return Err(format!(
                "{at}: {from:?} encrypts its uploads, and copying them into another account needs its key shared with that account: let this account upload its own (no `copy_from`), or publish unencrypted"
            ));
        }
        if o.partition != me.partition {
            return Err(format!(
                "{at}: {from:?} publishes in partition {}, this account in {}, and AMIs cannot be copied across partitions; let it upload its own (no `copy_from`)",
                o.partition, me.partition
            ));
        }
        // With several accounts each names its id (checked above).
        let (Some(owner_id), Some(id)) = (o.id.clone(), me.id.clone()) else {
            return Err(format!("{at}: give both accounts their `id`"));
        };
        let copy = CopyFrom {
            name: o.name.clone(),
            id: owner_id,
            region: o.source_region.clone(),
        };
        out[owner].copied_by.push(id);
        out[i].copy_from = Some(copy);
    }
    Ok(())
}

/// Reads a retention policy file: a `[prune]` table, as a manifest's.
pub(crate) fn read_retention(path: &Path) -> Result<Retention> {
    let here = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Invalid(format!(
            "cannot read the retention policy {here}: {e}; docs/lifecycle.md shows one"
        ))
    })?;
    let raw: RetentionFile = toml::from_str(&text).map_err(|e| {
        Error::Invalid(format!(
            "retention policy {here}: {}",
            e.to_string().trim_end()
        ))
    })?;
    retention(raw.prune)
        .map_err(|why| Error::Invalid(format!("retention policy {here}: [prune] {why}")))
}

/// `[prune]`, checked.
fn retention(raw: RawRetention) -> std::result::Result<Retention, String> {
    if raw.keep == 0 {
        return Err(
            "`keep = 0` would remove every release, the newest too; keep at least 1".into(),
        );
    }
    for pattern in &raw.barriers {
        if pattern.trim().is_empty() {
            return Err("a barrier pattern is empty; name releases, e.g. \"*.0.0\"".into());
        }
    }
    let grace = parse_duration(&raw.grace).map_err(|e| format!("`grace`: {e}"))?;
    // AWS reports a launch up to 24 hours late: a shorter grace could disable an AMI
    // launched since its deprecation before anyone can see it.
    if grace < Duration::from_secs(86_400) {
        return Err(format!(
            "`grace = {:?}` is under a day, and AWS reports an AMI's last launch up to 24 hours late; give at least \"1d\"",
            raw.grace
        ));
    }
    // AWS deprecates at most 10 years ahead; a longer grace would never end.
    if grace > Duration::from_secs(3650 * 86_400) {
        return Err(format!(
            "`grace = {:?}` is over 10 years; give days or weeks, e.g. \"14d\"",
            raw.grace
        ));
    }
    let keep_launched_within = raw
        .keep_launched_within
        .as_deref()
        .map(|d| parse_duration(d).map_err(|e| format!("`keep_launched_within`: {e}")))
        .transpose()?;
    Ok(Retention {
        keep: raw.keep,
        barriers: raw.barriers,
        keep_launched_within,
        grace,
        keep_in_use: raw.keep_in_use,
    })
}

const HOURS_2: Duration = Duration::from_secs(2 * 3600);

/// The placeholder of a channel in a parameter template.
const CHANNEL: &str = "{channel}";

/// A channel's name goes into parameter names: SSM's characters, no `/`.
fn check_channel(name: &str) -> std::result::Result<String, String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    match ok {
        true => Ok(name.to_string()),
        false => Err(format!(
            "{name:?} is not a channel name: letters, digits, '_', '.' and '-'"
        )),
    }
}

/// The templates with `{channel}` filled in, parsed.
fn fill_channel(texts: &[String], channel: &str) -> Result<Vec<Template>> {
    texts
        .iter()
        .map(|t| Template::parse(&t.replace(CHANNEL, channel)))
        .collect()
}

impl Image {
    /// What a parameter template knows of this image's AMI in `region`.
    pub(crate) fn facts(
        &self,
        region: &str,
        image_id: &str,
        tags: Vec<(String, String)>,
    ) -> ImageFacts {
        ImageFacts {
            region: region.to_string(),
            image_id: image_id.to_string(),
            name: self.name.clone(),
            arch: self.arch.ec2().as_str().to_string(),
            tags,
        }
    }

    /// What RegisterImage is asked for this image, as far as DescribeImages shows it (and
    /// so `release verify` reads back): its boot mode, IMDS, TPM, SR-IOV, root volume.
    /// The rest (tags, deprecation, sharing) verify checks on its own.
    pub(crate) fn registered_as(&self) -> Result<crate::aws::ami::RegisterSettings> {
        Ok(crate::aws::ami::RegisterSettings {
            name: self.name.clone(),
            description: self.description.clone(),
            arch: self.arch,
            boot_mode: crate::aws::ami::boot_mode(
                self.arch,
                BootMode::UefiPreferred,
                self.boot_mode,
                self.tpm,
            )?,
            imdsv2_only: self.imdsv2_only,
            tpm: self.tpm,
            volume_type: self.volume_type,
            // Without `disk_size_gib` it is the image's, which verify does not read.
            volume_size_gib: self.disk_size_gib.and_then(|g| i32::try_from(g).ok()),
            billing_products: self.billing_products.clone(),
            tags: vec![],
            uefi_data: None,
            sriov: self.sriov,
            deprecate_at: None,
            deprecation_kept: false,
        })
    }
}

impl Manifest {
    /// The facts of `image`'s AMI in `region`, with the tags every AMI of the release
    /// carries (the manifest's and imgpub's).
    pub(crate) fn facts(&self, image: &Image, region: &str, image_id: &str) -> ImageFacts {
        image.facts(region, image_id, crate::aws::tags::with_managed(&self.tags))
    }

    /// The templates that name a channel, filled in with `channel` (for `promote`).
    pub(crate) fn channel_templates(&self, channel: &str) -> Result<Vec<Template>> {
        let name = check_channel(channel)
            .map_err(|why| Error::Invalid(format!("release promote: {why}")))?;
        let channeled: Vec<String> = self
            .parameter_texts
            .iter()
            .filter(|t| t.contains(CHANNEL))
            .cloned()
            .collect();
        if channeled.is_empty() {
            return Err(Error::Invalid(format!(
                "release manifest {}: no [ssm] parameter names {{channel}}, so there is no channel to promote; write them as \"/os/{{channel}}/{{arch}}\" with `channel = \"latest\"`",
                self.path.display()
            )));
        }
        fill_channel(&channeled, &name)
    }
}

/// The first item that is in `list` twice.
fn twice<T: PartialEq>(list: &[T]) -> Option<&T> {
    list.iter()
        .enumerate()
        .find(|(i, a)| list[i + 1..].contains(a))
        .map(|(_, a)| a)
}

/// The accepted values of an image key, for its error.
fn names_of_key(key: &str) -> String {
    fn all<T: Named>() -> String {
        T::NAMES
            .iter()
            .map(|(_, name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }
    match key {
        "arch" => all::<Arch>(),
        "boot_mode" => all::<BootMode>(),
        "volume_type" => all::<VolumeType>(),
        "sriov_net_support" => all::<SriovNetSupport>(),
        _ => all::<TpmSupport>(),
    }
}

impl Manifest {
    /// What `upload` is asked for one image: the same pipeline as the command's.
    pub(crate) fn upload_options(&self, image: &Image) -> UploadOptions {
        let tags = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        UploadOptions {
            file: Some(image.file.clone()),
            bucket: self.bucket.clone(),
            name: Some(image.name.clone()),
            ami_name: None,
            ami_description: image.description.clone(),
            arch: image.arch,
            x86_boot_mode: BootMode::UefiPreferred,
            tpm_support: image.tpm,
            imdsv2_only: image.imdsv2_only,
            volume_type: image.volume_type,
            disk_size_gib: image.disk_size_gib,
            disk_size_inspect: image.disk_size_gib.is_none(),
            delete_object: true,
            existing: Existing::RefuseInRelease,
            source_object: None,
            source_snapshot: None,
            object_format: None,
            public: self.sharing.public,
            // Accounts that copy from this one need the AMI and its snapshot shared.
            grant_user: self.with_copiers(&self.sharing.launch_users),
            grant_user_snapshot: self.with_copiers(&self.sharing.snapshot_users),
            grant_organizations: self.sharing.organizations.clone(),
            grant_organizational_units: self.sharing.organizational_units.clone(),
            tags,
            billing_product_codes: image.billing_products.clone(),
            role_name: self.vmimport_role.clone(),
            part_size: self.transfer.part_size,
            upload_concurrency: self.transfer.upload_concurrency,
            import_timeout: self.import_timeout,
            boot_mode: image.boot_mode,
            uefi_data: image.uefi_data.clone(),
            sriov: image.sriov,
            deprecate: self.deprecate.clone(),
            encrypted: self.encryption.is_encrypted(),
            kms_key: match &self.encryption {
                Encryption::Key(key) => Some(key.clone()),
                _ => None,
            },
            via: self.via,
            blocks_in_flight: self.transfer.blocks_in_flight,
            send_zero_blocks: self.transfer.send_zero_blocks,
            parent: self.delta.then(|| "auto".to_string()),
            // Set by the release to the record's directory.
            block_maps: None,
        }
    }

    /// `users`, and the accounts that copy from this one's uploads.
    fn with_copiers(&self, users: &[String]) -> Vec<String> {
        let mut all = users.to_vec();
        for id in self.part.iter().flat_map(|p| &p.copied_by) {
            if !all.contains(id) {
                all.push(id.clone());
            }
        }
        all
    }

    /// Where this account's view copies the release from, when it does not upload.
    pub(crate) fn copy_from(&self) -> Option<&CopyFrom> {
        self.part.as_ref().and_then(|p| p.copy_from.as_ref())
    }

    pub(crate) fn best_effort(&self, region: &str) -> bool {
        self.best_effort.iter().any(|r| r == region)
    }

    /// The release as account `name` publishes it: its source region, regions, bucket and
    /// sharing in place of the manifest's.
    pub(crate) fn for_account(&self, name: &str) -> Result<Manifest> {
        let Some(decl) = self.accounts.iter().find(|a| a.name == name) else {
            return Err(Error::Invalid(format!(
                "release manifest {} declares no [[account]] named {name:?}",
                self.path.display()
            )));
        };
        let view = Manifest {
            source_region: decl.source_region.clone(),
            targets: decl.targets.clone(),
            best_effort: decl.best_effort.clone(),
            bucket: decl.bucket.clone(),
            sharing: decl.sharing.clone(),
            encryption: decl.encryption.clone(),
            vmimport_role: decl.vmimport_role.clone(),
            accounts: vec![],
            part: Some(decl.clone()),
            ..self.clone()
        };
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
release = "1.2.3"
source_region = "us-east-1"
regions = ["us-west-2", "eu-west-1"]
best_effort = ["eu-west-1"]
bucket = "s3://images/ci"
name = "os-{release}-{arch}"
deprecate_in = "730d"

[sharing]
public = true

[tags]
stream = "stable"

[ssm]
parameters = ["/os/stable/{arch}/latest"]

[[image]]
file = "x86_64.raw"
arch = "x86_64"

[[image]]
file = "/abs/arm64.raw"
arch = "arm64"
boot_mode = "uefi"
"#;

    fn parsed(text: &str) -> Result<Manifest> {
        parse(Path::new("/releases/os/release.toml"), text)
    }

    #[test]
    fn a_manifest_names_its_images_and_resolves_their_files() {
        let m = parsed(MINIMAL).unwrap();
        assert_eq!(m.images[0].name, "os-1.2.3-x86_64");
        assert_eq!(m.images[1].name, "os-1.2.3-arm64");
        assert_eq!(m.images[0].file, Path::new("/releases/os/x86_64.raw"));
        assert_eq!(m.images[1].file, Path::new("/abs/arm64.raw"));
        assert_eq!(m.images[1].boot_mode, Some(BootMode::Uefi));
        assert_eq!(
            m.deprecate,
            Some(Deprecate::In(Duration::from_secs(730 * 86400)))
        );
        assert!(m.best_effort("eu-west-1") && !m.best_effort("us-west-2"));
        assert_eq!(m.tags, vec![("stream".into(), "stable".into())]);
    }

    #[test]
    fn mistakes_are_named_with_the_fix() {
        let cases = [
            (
                MINIMAL.replace("arch = \"arm64\"", "arch = \"sparc\""),
                "not one of",
            ),
            (MINIMAL.replace("\"730d\"", "\"90\""), "without a unit"),
            (
                MINIMAL.replace("name = \"os-{release}-{arch}\"", "name = \"os\""),
                "put {arch}",
            ),
            (
                MINIMAL.replace(
                    "best_effort = [\"eu-west-1\"]",
                    "best_effort = [\"ap-south-1\"]",
                ),
                "not in `regions`",
            ),
            (
                MINIMAL.replace("bucket = \"s3://images/ci\"", ""),
                "needs `bucket",
            ),
            (MINIMAL.replace("[tags]", "[tagz]"), "unknown field"),
            (
                MINIMAL.replace("regions = [", "regions = \"every\"\nx = ["),
                "unknown field",
            ),
            (MINIMAL.replace("us-west-2", "us_west_2"), "us_west_2"),
            (
                MINIMAL.replace(
                    "\"us-west-2\", \"eu-west-1\"",
                    "\"us-west-2\", \"us-west-2\"",
                ),
                "region us-west-2 is listed twice",
            ),
            (
                MINIMAL.replace("/abs/arm64.raw", "/abs/x86_64.raw"),
                "two images upload a file named x86_64.raw",
            ),
            (
                MINIMAL.replace("/os/stable/{arch}/latest", "/os/stable/latest"),
                "two images would write the parameter /os/stable/latest",
            ),
            (
                MINIMAL.replace("/os/stable/{arch}/latest", "/os/{tag:channel}/latest"),
                "has no tag \"channel\"",
            ),
            (
                MINIMAL.replace("/os/stable/{arch}/latest", "/os/{channel}/{arch}"),
                "set `channel`",
            ),
            (
                MINIMAL.replace("[ssm]", "[ssm]\nchannel = \"latest\""),
                "no parameter names {channel}",
            ),
            (
                MINIMAL
                    .replace("/os/stable/{arch}/latest", "/os/{channel}/{arch}")
                    .replace("[ssm]", "[ssm]\nchannel = \"a/b\""),
                "is not a channel name",
            ),
        ];
        for (text, want) in cases {
            let err = parsed(&text).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
            assert!(err.to_string().contains(want), "{want:?} not in: {err}");
        }
    }

    /// Two accounts of `aws` and one of GovCloud, as a release of both partitions says it.
    const ACCOUNTS: &str = r#"
[[account]]
name = "main"
id = "111122223333"
bucket = "s3://main-images/ci"

[[account]]
name = "second"
id = "222233334444"
role_arn = "arn:aws:iam::222233334444:role/publisher"
external_id = "release-42"
bucket = "s3://second-images/ci"

[[account]]
name = "gov"
id = "333344445555"
profile = "gov"
source_region = "us-gov-west-1"
regions = ["us-gov-east-1"]
best_effort = []
bucket = "s3://gov-images/ci"
sharing = { public = false }
"#;

    #[test]
    fn accounts_take_the_manifests_keys_unless_they_set_their_own() {
        let m = parsed(&format!("{MINIMAL}{ACCOUNTS}")).unwrap();
        let names: Vec<_> = m.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["main", "second", "gov"]);
        let main = m.for_account("main").unwrap();
        let decl = main.part.clone().unwrap();
        assert_eq!(decl.partition, "aws");
        assert_eq!(main.source_region, "us-east-1");
        assert_eq!(main.bucket.as_deref(), Some("s3://main-images/ci"));
        assert!(main.sharing.public && main.best_effort("eu-west-1"));
        let gov = m.for_account("gov").unwrap();
        let decl = gov.part.clone().unwrap();
        assert_eq!(decl.partition, "aws-us-gov");
        assert_eq!(gov.source_region, "us-gov-west-1");
        assert_eq!(gov.targets, Targets::Named(vec!["us-gov-east-1".into()]));
        assert!(!gov.sharing.public && !gov.best_effort("eu-west-1"));
        assert!(gov.accounts.is_empty());
        assert!(m.for_account("nope").is_err());
    }

    #[test]
    fn account_mistakes_are_named_with_the_fix() {
        let both = format!("{MINIMAL}{ACCOUNTS}");
        let cases = [
            (
                both.replace("regions = [\"us-gov-east-1\"]", "regions = [\"us-east-2\"]"),
                "cannot be copied across partitions",
            ),
            (
                both.replace("regions = [\"us-gov-east-1\"]\n", ""),
                "cannot be copied across partitions",
            ),
            (
                both.replace("s3://second-images/ci", "s3://main-images/other"),
                "a bucket of its own",
            ),
            (
                both.replace("best_effort = []\n", ""),
                "(`best_effort` from the manifest's top level",
            ),
            (
                both.replace("id = \"222233334444\"\n", ""),
                "has no `id`",
            ),
            (
                both.replace("id = \"222233334444\"", "id = \"999988887777\""),
                "is a role of account 222233334444",
            ),
            (
                both.replace("sharing = { public = false }\n", "").replace(
                    "[sharing]",
                    "[sharing]\norganizations = [\"arn:aws:organizations::111122223333:organization/o-1\"]",
                ),
                "not an organization of partition aws-us-gov",
            ),
            (
                both.replace("name = \"second\"", "name = \"main\""),
                "declared twice",
            ),
            (
                both.replace("name = \"gov\"", "name = \"Gov Cloud\""),
                "lowercase",
            ),
            (
                both.replace("111122223333", "1111"),
                "not a 12-digit account id",
            ),
            (
                both.replace(
                    "role_arn = \"arn:aws:iam::222233334444:role/publisher\"\n",
                    "",
                ),
                "give `role_arn` too",
            ),
            (
                both.replace(
                    "profile = \"gov\"",
                    "role_arn = \"arn:aws:iam::333344445555:role/x\"",
                ),
                "not a role of partition aws-us-gov",
            ),
            (
                both.replace("sharing = {", "sharing = { everyone = 1,"),
                "unknown field",
            ),
        ];
        for (text, want) in cases {
            let err = parsed(&text).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
            assert!(err.to_string().contains(want), "{want:?} not in: {err}");
        }
    }

    #[test]
    fn an_account_that_copies_is_shared_the_uploads_and_needs_no_bucket() {
        let text = format!("{MINIMAL}{ACCOUNTS}").replace(
            "external_id = \"release-42\"\nbucket = \"s3://second-images/ci\"",
            "external_id = \"release-42\"\ncopy_from = \"main\"",
        );
        let m = parsed(&text).unwrap();
        let second = m.for_account("second").unwrap();
        let from = second.copy_from().unwrap();
        assert_eq!(
            (from.name.as_str(), from.id.as_str(), from.region.as_str()),
            ("main", "111122223333", "us-east-1")
        );
        let main = m.for_account("main").unwrap();
        assert!(main.copy_from().is_none());
        // Main's uploads are shared with the account that copies them, AMI and snapshot.
        let options = main.upload_options(&main.images[0]);
        assert_eq!(options.grant_user, ["222233334444"]);
        assert_eq!(options.grant_user_snapshot, ["222233334444"]);
        let gov = m.for_account("gov").unwrap();
        assert!(gov.upload_options(&gov.images[0]).grant_user.is_empty());
        // Declared first, with the manifest's bucket: it uploads nothing, so it is no
        // other account's bucket either.
        let first = format!(
            "{MINIMAL}\n[[account]]\nname = \"second\"\nid = \"222233334444\"\ncopy_from = \"main\"\n\n[[account]]\nname = \"main\"\nid = \"111122223333\"\n"
        );
        let m = parsed(&first).unwrap();
        assert_eq!(m.for_account("second").unwrap().bucket, None);
        assert_eq!(
            m.for_account("main").unwrap().bucket.as_deref(),
            Some("s3://images/ci")
        );

        let with = |copy: &str| {
            format!("{MINIMAL}{ACCOUNTS}").replace(
                "external_id = \"release-42\"",
                &format!("external_id = \"release-42\"\ncopy_from = \"{copy}\""),
            )
        };
        let chain =
            with("main").replace("name = \"gov\"", "name = \"gov\"\ncopy_from = \"second\"");
        for (text, want) in [
            (with("nope"), "names no [[account]]"),
            (with("second"), "names the account itself"),
            (with("gov"), "cannot be copied across partitions"),
            (chain, "copies from another itself"),
        ] {
            let err = parsed(&text).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
            assert!(err.to_string().contains(want), "{want:?} not in: {err}");
        }
    }

    /// MINIMAL with `top` among its top-level keys and `image` in its first [[image]].
    fn minimal_with(top: &str, image: &str) -> String {
        MINIMAL
            .replace(
                "deprecate_in = \"730d\"\n",
                &format!("deprecate_in = \"730d\"\n{top}\n"),
            )
            .replace(
                "file = \"x86_64.raw\"\narch = \"x86_64\"\n",
                &format!("file = \"x86_64.raw\"\narch = \"x86_64\"\n{image}\n"),
            )
    }

    #[test]
    fn a_manifest_says_what_uploads_flags_say() {
        let dir = std::env::temp_dir().join(format!("imgpub-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vars = dir.join("vars.b64");
        std::fs::write(&vars, "VUVGSSB2YXJz\n").unwrap();
        let key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let image = format!(
            "uefi_data = {:?}\nsriov_net_support = \"off\"\nbilling_product_codes = [\"bp-6fa54006\"]",
            vars.display()
        );
        let text = minimal_with(
            &format!("kms_key = \"{key}\"\nvmimport_role = \"imgpub-import\"\n[transfer]\npart_size = \"64MiB\"\nupload_concurrency = 2"),
            &image,
        )
        .replace("public = true", "public = false");
        let m = parsed(&text).unwrap();
        let options = m.upload_options(&m.images[0]);
        assert_eq!(options.uefi_data.as_deref(), Some(vars.as_path()));
        assert_eq!(options.sriov, SriovNetSupport::Off);
        assert_eq!(options.billing_product_codes, ["bp-6fa54006"]);
        assert!(options.encrypted);
        assert_eq!(options.kms_key.as_deref(), Some(key));
        assert_eq!(options.role_name, "imgpub-import");
        assert_eq!(options.part_size, Some(64 << 20));
        assert_eq!(options.upload_concurrency, 2);
        // The other image takes upload's defaults.
        let other = m.upload_options(&m.images[1]);
        assert_eq!(
            (other.uefi_data, other.sriov),
            (None, SriovNetSupport::Simple)
        );
        assert!(other.billing_product_codes.is_empty());

        // What upload would refuse, the manifest refuses first, naming its own key.
        let legacy = format!("{image}\nboot_mode = \"legacy-bios\"");
        std::fs::write(dir.join("not-base64"), "not base64 at all!").unwrap();
        let bad_store = format!("uefi_data = {:?}", dir.join("not-base64").display());
        let missing = format!("uefi_data = {:?}", dir.join("missing").display());
        let private = |t: String| t.replace("public = true", "public = false");
        let cases = [
            (minimal_with("", &legacy), "[[image]] 1 `uefi_data`"),
            (minimal_with("", &legacy), "needs a UEFI boot mode"),
            (minimal_with("", &bad_store), "is not base64"),
            (minimal_with("", &missing), "[[image]] 1 `uefi_data`"),
            (
                minimal_with("", "sriov_net_support = \"on\""),
                "is not one of simple, off",
            ),
            (
                minimal_with("", "billing_product_codes = [\"\"]"),
                "not a billing product code",
            ),
            (minimal_with("encrypted = true", ""), "cannot be public"),
            (
                minimal_with("kms_key = \"alias/aws/ebs\"", ""),
                "`kms_key` \"alias/aws/ebs\" is not a KMS key ARN",
            ),
            (
                private(minimal_with(
                    &format!("kms_key = \"{}\"", key.replace("us-east-1", "eu-west-1")),
                    "",
                )),
                "a key of eu-west-1, but the images are uploaded in us-east-1",
            ),
            (
                minimal_with("vmimport_role = \"vm import\"", ""),
                "`vmimport_role = \"vm import\"`",
            ),
            (
                minimal_with("[transfer]\nblocks_in_flight = 8", ""),
                "`blocks_in_flight` applies to `transport = \"ebs-direct\"`",
            ),
            (
                minimal_with("[transfer]\npart_size = \"64\"", ""),
                "has no unit",
            ),
            (
                minimal_with("[transfer]\nupload_concurrency = 0", ""),
                "1 or more",
            ),
            (minimal_with("[transfer]\nspeed = 1", ""), "unknown field"),
        ];
        for (text, want) in cases {
            let err = parsed(&text).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
            assert!(err.to_string().contains(want), "{want:?} not in: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_encrypted_release_shares_only_what_aws_lets_it() {
        let key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let shared = |top: &str, sharing: &str, regions: &str| {
            minimal_with(top, "")
                .replace("public = true", sharing)
                .replace(
                    "regions = [\"us-west-2\", \"eu-west-1\"]\nbest_effort = [\"eu-west-1\"]",
                    regions,
                )
        };
        let keyed = format!("kms_key = \"{key}\"");
        let targets = "regions = [\"us-west-2\"]";
        // Private, it is copied anywhere; shared, only where its key is.
        parsed(&shared(&keyed, "public = false", targets)).unwrap();
        let m = parsed(&shared(
            &keyed,
            "accounts = [\"444455556666\"]",
            "regions = []",
        ))
        .unwrap();
        assert_eq!(m.encryption, Encryption::Key(key.into()));
        for (text, want) in [
            (
                shared("encrypted = true", "accounts = [\"444455556666\"]", "regions = []"),
                "give `kms_key`",
            ),
            (
                shared(&keyed, "accounts = [\"444455556666\"]", targets),
                "each region's default EBS key, which may be AWS's own",
            ),
            (
                shared(
                    &keyed,
                    "organizations = [\"arn:aws:organizations::111122223333:organization/o-abc123defg\"]",
                    "regions = \"all\"",
                ),
                "each region's default EBS key",
            ),
        ] {
            let err = parsed(&text).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
            assert!(err.to_string().contains(want), "{want:?} not in: {err}");
        }

        // An account's key is its own; one the manifest names is checked for each account
        // that takes it, and said to be the manifest's.
        let accounts = format!(
            "{}{ACCOUNTS}",
            minimal_with(&keyed, "").replace("public = true", "public = false")
        );
        let err = parsed(&accounts).unwrap_err().to_string();
        assert!(
            err.contains("[[account]] \"gov\"") && err.contains("from the manifest's top level"),
            "{err}"
        );
        let own = accounts.replace(
            "sharing = { public = false }",
            "sharing = { public = false }\nencrypted = false",
        );
        let m = parsed(&own).unwrap();
        assert_eq!(
            m.for_account("main").unwrap().encryption,
            Encryption::Key(key.into())
        );
        assert_eq!(m.for_account("gov").unwrap().encryption, Encryption::None);
        // An account that copies takes its encryption from its source: neither side may set it.
        let copying = own.replace(
            "external_id = \"release-42\"\nbucket = \"s3://second-images/ci\"",
            "external_id = \"release-42\"\ncopy_from = \"main\"",
        );
        let err = parsed(&copying).unwrap_err().to_string();
        assert!(err.contains("copies from another account"), "{err}");
        let from_encrypted = copying.replace(
            "copy_from = \"main\"",
            "copy_from = \"main\"\nencrypted = false",
        );
        let err = parsed(&from_encrypted).unwrap_err().to_string();
        assert!(err.contains("\"main\" encrypts its uploads"), "{err}");
    }

    #[test]
    fn channels_fill_the_templates() {
        let text = MINIMAL
            .replace("/os/stable/{arch}/latest", "/os/{channel}/{arch}")
            .replace("[ssm]", "[ssm]\nchannel = \"latest\"");
        let m = parsed(&text).unwrap();
        assert_eq!(m.channel.as_deref(), Some("latest"));
        let facts = crate::aws::ssm::ImageFacts {
            region: "us-east-1".into(),
            image_id: "ami-1".into(),
            name: "os".into(),
            arch: "x86_64".into(),
            tags: vec![],
        };
        assert_eq!(m.parameters[0].render(&facts).unwrap(), "/os/latest/x86_64");
        let stable = m.channel_templates("stable").unwrap();
        assert_eq!(stable[0].render(&facts).unwrap(), "/os/stable/x86_64");
        assert!(parsed(MINIMAL)
            .unwrap()
            .channel_templates("stable")
            .is_err());
    }

    #[test]
    fn all_regions_is_a_word() {
        let m = parsed(&MINIMAL.replace(
            "regions = [\"us-west-2\", \"eu-west-1\"]\nbest_effort = [\"eu-west-1\"]",
            "regions = \"all\"",
        ))
        .unwrap();
        assert_eq!(m.targets, Targets::All);
        let err =
            parsed(&MINIMAL.replace("[\"us-west-2\", \"eu-west-1\"]", "\"most\"")).unwrap_err();
        assert!(err.to_string().contains("or \"all\""), "{err}");
    }

    #[test]
    fn a_retention_policy_is_checked() {
        let with = |prune: &str| parsed(&format!("{MINIMAL}\n[prune]\n{prune}\n"));
        let m =
            with("keep = 4\nbarriers = [\"*.0\"]\nkeep_launched_within = \"30d\"\ngrace = \"7d\"")
                .unwrap();
        let r = m.prune.unwrap();
        assert_eq!((r.keep, r.grace), (4, Duration::from_secs(7 * 86400)));
        assert_eq!(
            r.keep_launched_within,
            Some(Duration::from_secs(30 * 86400))
        );
        assert_eq!(m.name_template, "os-{release}-{arch}");
        for (prune, says) in [
            ("keep = 0\ngrace = \"7d\"", "keep at least 1"),
            ("keep = 2\ngrace = \"7\"", "`grace`"),
            ("keep = 2\ngrace = \"4000d\"", "over 10 years"),
            ("keep = 2\ngrace = \"12h\"", "under a day"),
            (
                "keep = 2\ngrace = \"1d\"\nbarriers = [\" \"]",
                "barrier pattern is empty",
            ),
            ("keep = 2\ngrace = \"1d\"\nkep = 3", "unknown field"),
        ] {
            let err = with(prune).unwrap_err().to_string();
            assert!(err.contains(says), "{prune}: {err}");
        }
    }
}
