//! RegisterImage and its settings, finding, describing and deleting an AMI, and launch /
//! create-volume permissions.

use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, CreateVolumePermission,
    CreateVolumePermissionModifications, EbsBlockDevice, Filter, ImdsSupportValues,
    LaunchPermission, LaunchPermissionModifications, PermissionGroup, ResourceType,
    SnapshotAttributeName, SnapshotBlockPublicAccessState, TagSpecification, TpmSupportValues,
    VolumeType as Ec2VolumeType,
};
use aws_sdk_ec2::Client;

use crate::aws::calls::{Call, Op};
use crate::aws::propagation::{naming, Age};
use crate::aws::tags;
use crate::error::{aws, Error, ErrorKind, Result};
use crate::names::Named;
use aws_smithy_types::DateTime;

pub(crate) const ROOT_DEVICE: &str = "/dev/xvda";
pub(crate) const EPHEMERAL_DEVICE: &str = "/dev/xvdb";

/// AMI names AWS accepts: 3–128 of letters, digits and `()[] ./-'@_`.
pub(crate) fn validate_ami_name(name: &str) -> Result<()> {
    let bad: Vec<char> = name
        .chars()
        .filter(|c| !(c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(*c)))
        .collect();
    if !bad.is_empty() {
        return Err(Error::Invalid(format!(
            "AMI name {name:?} has characters AWS does not allow ({}); use letters, digits and ()[] ./-'@_",
            bad.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ")
        )));
    }
    if !(3..=128).contains(&name.len()) {
        return Err(Error::Invalid(format!(
            "AMI name {name:?} is {} characters long; AWS allows 3 to 128",
            name.len()
        )));
    }
    Ok(())
}

/// `--arch`, in ore's spellings (Go's and the kernel's), any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Arm64,
}

impl Named for Arch {
    const NAMES: &'static [(Self, &'static str, &'static [&'static str])] = &[
        (Arch::X86_64, "x86_64", &["amd64"]),
        (Arch::Arm64, "arm64", &["aarch64"]),
    ];
}

/// `--x86-boot-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    LegacyBios,
    Uefi,
    UefiPreferred,
}

impl Named for BootMode {
    const NAMES: &'static [(Self, &'static str, &'static [&'static str])] = &[
        (BootMode::LegacyBios, "legacy-bios", &[]),
        (BootMode::Uefi, "uefi", &[]),
        (BootMode::UefiPreferred, "uefi-preferred", &[]),
    ];
}

/// `--sriov-net-support`: enhanced networking with the Intel 82599 VF (`simple`, as ore and
/// pubsys register), or left unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SriovNetSupport {
    Simple,
    Off,
}

impl Named for SriovNetSupport {
    const NAMES: &'static [(Self, &'static str, &'static [&'static str])] = &[
        (SriovNetSupport::Simple, "simple", &[]),
        (SriovNetSupport::Off, "off", &[]),
    ];
}

/// `--volume-type`: the root volume's EBS type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeType {
    Gp3,
    Gp2,
    Io1,
    Io2,
    St1,
    Sc1,
    Standard,
}

impl Named for VolumeType {
    const NAMES: &'static [(Self, &'static str, &'static [&'static str])] = &[
        (VolumeType::Gp3, "gp3", &[]),
        (VolumeType::Gp2, "gp2", &[]),
        (VolumeType::Io1, "io1", &[]),
        (VolumeType::Io2, "io2", &[]),
        (VolumeType::St1, "st1", &[]),
        (VolumeType::Sc1, "sc1", &[]),
        (VolumeType::Standard, "standard", &[]),
    ];
}

/// `--tpm-support`: the one value EC2 has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpmSupport {
    V2,
}

impl Named for TpmSupport {
    const NAMES: &'static [(Self, &'static str, &'static [&'static str])] =
        &[(TpmSupport::V2, "v2.0", &[])];
}

impl Arch {
    pub(crate) fn ec2(self) -> ArchitectureValues {
        match self {
            Arch::X86_64 => ArchitectureValues::X8664,
            Arch::Arm64 => ArchitectureValues::Arm64,
        }
    }
}

impl BootMode {
    fn ec2(self) -> BootModeValues {
        match self {
            BootMode::LegacyBios => BootModeValues::LegacyBios,
            BootMode::Uefi => BootModeValues::Uefi,
            BootMode::UefiPreferred => BootModeValues::UefiPreferred,
        }
    }
}

impl VolumeType {
    fn ec2(self) -> Ec2VolumeType {
        match self {
            VolumeType::Gp3 => Ec2VolumeType::Gp3,
            VolumeType::Gp2 => Ec2VolumeType::Gp2,
            VolumeType::Io1 => Ec2VolumeType::Io1,
            VolumeType::Io2 => Ec2VolumeType::Io2,
            VolumeType::St1 => Ec2VolumeType::St1,
            VolumeType::Sc1 => Ec2VolumeType::Sc1,
            VolumeType::Standard => Ec2VolumeType::Standard,
        }
    }
}

/// Everything RegisterImage takes but the snapshot, checked: the plan holds this, and the
/// snapshot id joins it at apply time ([`register_image`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegisterSettings {
    pub name: String,
    pub description: Option<String>,
    pub arch: Arch,
    pub boot_mode: BootMode,
    pub imdsv2_only: bool,
    pub tpm: Option<TpmSupport>,
    pub volume_type: VolumeType,
    /// Root volume size; `None` takes the snapshot's.
    pub volume_size_gib: Option<i32>,
    pub billing_products: Vec<String>,
    pub tags: Vec<(String, String)>,
    /// The UEFI variable store (base64, as AWS takes it) for Secure Boot.
    pub uefi_data: Option<String>,
    pub sriov: SriovNetSupport,
    /// When AWS marks the AMI deprecated (EnableImageDeprecation, after registering).
    pub deprecate_at: Option<DateTime>,
    /// The time counts from the first publish (`--deprecate-in`): a rerun keeps the one an
    /// earlier run set, rather than moving it on by the time since.
    pub deprecation_kept: bool,
}

/// The boot mode to register with: `--boot-mode` for any architecture, else
/// `--x86-boot-mode` on x86_64 and UEFI on Graviton (which boots only UEFI; ore ignores
/// `--x86-boot-mode` there too). TPM needs UEFI.
pub(crate) fn boot_mode(
    arch: Arch,
    x86_boot_mode: BootMode,
    boot_mode: Option<BootMode>,
    tpm: Option<TpmSupport>,
) -> Result<BootMode> {
    let boot = match (arch, boot_mode) {
        (Arch::Arm64, Some(BootMode::Uefi) | None) => BootMode::Uefi,
        (Arch::Arm64, Some(_)) => {
            return Err(Error::Invalid(
                "arm64 (Graviton) boots only UEFI: use --boot-mode uefi, or leave it out".into(),
            ))
        }
        (Arch::X86_64, Some(mode)) => mode,
        (Arch::X86_64, None) => x86_boot_mode,
    };
    if tpm.is_some() && boot == BootMode::LegacyBios {
        return Err(Error::Invalid(
            "--tpm-support v2.0 needs UEFI; use --x86-boot-mode uefi or uefi-preferred".into(),
        ));
    }
    Ok(boot)
}

/// An AMI of ours with this name, and the snapshot behind its root device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FoundImage {
    pub image_id: String,
    pub root_snapshot: Option<String>,
    /// The image ended in `failed` or `error` (a copy that did not work out).
    pub failed: bool,
    pub registered: Registered,
    /// Its tags now.
    pub tags: Vec<(String, String)>,
    /// When AWS marks it deprecated, if it does.
    pub deprecation: Option<DateTime>,
}

/// What an AMI was registered with, as DescribeImages reports it. `None` where AWS did not
/// say (a setting that was never made), which is taken as AWS's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Registered {
    pub arch: Option<ArchitectureValues>,
    pub boot_mode: Option<BootModeValues>,
    pub imdsv2_only: bool,
    pub tpm: bool,
    pub sriov: bool,
    pub volume_type: Option<Ec2VolumeType>,
    pub volume_size_gib: Option<i32>,
    /// `None` when it has none (AWS answers an empty one).
    pub description: Option<String>,
}

impl Registered {
    fn of(image: &aws_sdk_ec2::types::Image) -> Registered {
        let root = image
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name() == image.root_device_name())
            .and_then(|m| m.ebs());
        Registered {
            arch: image.architecture().cloned(),
            boot_mode: image.boot_mode().cloned(),
            imdsv2_only: image.imds_support() == Some(&ImdsSupportValues::V20),
            tpm: image.tpm_support() == Some(&TpmSupportValues::V20),
            sriov: image.sriov_net_support() == Some("simple"),
            volume_type: root.and_then(|e| e.volume_type()).cloned(),
            volume_size_gib: root.and_then(|e| e.volume_size()),
            description: image
                .description()
                .filter(|d| !d.is_empty())
                .map(str::to_string),
        }
    }

    /// How the AMI differs from one `want` would register: each setting as it is and as
    /// asked. Empty: it is the image asked for.
    pub(crate) fn differences(&self, want: &RegisterSettings) -> Vec<String> {
        let mut out = vec![];
        let mut differ = |what: &str, is: String, asked: String| {
            if is != asked {
                out.push(format!("{what} {is} (asked: {asked})"));
            }
        };
        let shown = |v: Option<&str>| v.unwrap_or("unset").to_string();
        differ(
            "architecture",
            shown(self.arch.as_ref().map(|a| a.as_str())),
            want.arch.ec2().as_str().to_string(),
        );
        // An AMI registered without a boot mode boots AWS's default for its architecture.
        if let Some(mode) = &self.boot_mode {
            differ(
                "boot mode",
                mode.as_str().into(),
                want.boot_mode.ec2().as_str().into(),
            );
        }
        let on = |b: bool| if b { "v2.0" } else { "unset" }.to_string();
        differ("IMDS support", on(self.imdsv2_only), on(want.imdsv2_only));
        differ("TPM support", on(self.tpm), on(want.tpm.is_some()));
        let sriov = |b: bool| if b { "simple" } else { "unset" }.to_string();
        differ(
            "SR-IOV support",
            sriov(self.sriov),
            sriov(want.sriov == SriovNetSupport::Simple),
        );
        if let Some(kind) = &self.volume_type {
            differ(
                "root volume type",
                kind.as_str().into(),
                want.volume_type.ec2().as_str().into(),
            );
        }
        if let (Some(is), Some(asked)) = (self.volume_size_gib, want.volume_size_gib) {
            differ(
                "root volume size",
                format!("{is} GiB"),
                format!("{asked} GiB"),
            );
        }
        // Changing it in place would take ec2:ModifyImageAttribute, which a publisher that
        // shares nothing is not given (it cannot be limited to the description).
        let quoted = |d: Option<&str>| d.map_or("unset".to_string(), |d| format!("{d:?}"));
        differ(
            "description",
            quoted(self.description.as_deref()),
            quoted(want.description.as_deref().filter(|d| !d.is_empty())),
        );
        out
    }
}

pub(crate) async fn find_image_by_name(ec2: &Client, name: &str) -> Result<Option<FoundImage>> {
    let Some(image) = image_named(ec2, Owner::This, name).await? else {
        return Ok(None);
    };
    Ok(Some(FoundImage {
        image_id: image_id_of(&image)?,
        root_snapshot: root_snapshot_of(&image),
        failed: matches!(
            image.state(),
            Some(aws_sdk_ec2::types::ImageState::Failed | aws_sdk_ec2::types::ImageState::Error)
        ),
        registered: Registered::of(&image),
        tags: tags::from_ec2(image.tags()),
        deprecation: image.deprecation_time().and_then(|t| {
            DateTime::from_str(t, aws_smithy_types::date_time::Format::DateTime).ok()
        }),
    }))
}

/// Whose AMI a lookup by name is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner<'a> {
    /// This account's.
    This,
    /// Another account's, seen only when shared with this one or public.
    Other(&'a str),
}

/// `owner`'s AMI named `name`, as EC2 describes it (names are unique per account and
/// region).
pub(crate) async fn image_named(
    ec2: &Client,
    owner: Owner<'_>,
    name: &str,
) -> Result<Option<aws_sdk_ec2::types::Image>> {
    let (owners, context) = match owner {
        Owner::This => ("self", format!("looking for an AMI named {name}")),
        Owner::Other(id) => (id, format!("looking for account {id}'s AMI named {name}")),
    };
    // Another account's deprecated AMIs are listed only when asked for (DescribeImages,
    // IncludeDeprecated), the owner's own always: a release past its deprecation time is
    // still found.
    let out = ec2
        .describe_images()
        .owners(owners)
        .include_deprecated(true)
        .filters(Filter::builder().name("name").values(name).build())
        .send()
        .await
        .map_err(|e| aws(Op::Ec2DescribeImages, context, e))?;
    Ok(out
        .images()
        .iter()
        .find(|i| {
            i.name() == Some(name)
                && match owner {
                    Owner::This => true,
                    Owner::Other(id) => i.owner_id() == Some(id),
                }
        })
        .cloned())
}

/// Whether this account may read account `owner`'s snapshot (it is shared with it, or
/// public): what copying another account's AMI takes besides its launch permission.
pub(crate) async fn snapshot_readable(ec2: &Client, owner: &str, snapshot: &str) -> Result<bool> {
    let out = ec2
        .describe_snapshots()
        .owner_ids(owner)
        .restorable_by_user_ids("self")
        .restorable_by_user_ids("all")
        .filters(
            Filter::builder()
                .name("snapshot-id")
                .values(snapshot)
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DescribeSnapshots,
                format!("looking for account {owner}'s snapshot {snapshot}"),
                e,
            )
        })?;
    Ok(out
        .snapshots()
        .iter()
        .any(|s| s.snapshot_id() == Some(snapshot)))
}

/// A described image's id (which DescribeImages always sends).
pub(crate) fn image_id_of(image: &aws_sdk_ec2::types::Image) -> Result<String> {
    image
        .image_id()
        .map(str::to_owned)
        .ok_or_else(|| Error::missing(Op::Ec2DescribeImages, "ImageId"))
}

/// The snapshot behind an image's root device.
pub(crate) fn root_snapshot_of(image: &aws_sdk_ec2::types::Image) -> Option<String> {
    image
        .block_device_mappings()
        .iter()
        .find(|m| m.device_name() == image.root_device_name())
        .and_then(|m| m.ebs())
        .and_then(|e| e.snapshot_id())
        .map(str::to_owned)
}

/// Every EBS snapshot the AMI maps, the root device's first.
pub(crate) fn snapshots_of(image: &aws_sdk_ec2::types::Image) -> Vec<String> {
    let mut all: Vec<String> = root_snapshot_of(image).into_iter().collect();
    for id in image
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()))
    {
        if !all.iter().any(|s| s == id) {
            all.push(id.to_string());
        }
    }
    all
}

/// Registers the AMI from `snapshot_id`. Returns its id.
pub(crate) async fn register_image(
    ec2: &Client,
    settings: &RegisterSettings,
    snapshot_id: &str,
    snapshot_age: Age,
) -> Result<String> {
    let mut call = ec2
        .register_image()
        .name(&settings.name)
        .architecture(settings.arch.ec2())
        .virtualization_type("hvm")
        .root_device_name(ROOT_DEVICE)
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(ROOT_DEVICE)
                .ebs(
                    EbsBlockDevice::builder()
                        .snapshot_id(snapshot_id)
                        .volume_type(settings.volume_type.ec2())
                        .set_volume_size(settings.volume_size_gib)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
        // As ore registers: the instance store's first volume, where the type has one.
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(EPHEMERAL_DEVICE)
                .virtual_name("ephemeral0")
                .build(),
        )
        .ena_support(true)
        .set_sriov_net_support(match settings.sriov {
            SriovNetSupport::Simple => Some("simple".to_string()),
            SriovNetSupport::Off => None,
        })
        .set_uefi_data(settings.uefi_data.clone())
        .boot_mode(settings.boot_mode.ec2())
        .set_description(settings.description.clone())
        .set_billing_products(
            (!settings.billing_products.is_empty()).then(|| settings.billing_products.clone()),
        );
    if settings.imdsv2_only {
        call = call.imds_support(ImdsSupportValues::V20);
    }
    if settings.tpm.is_some() {
        call = call.tpm_support(TpmSupportValues::V20);
    }
    if !settings.tags.is_empty() {
        call = call.tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Image)
                .set_tags(Some(tags::to_ec2(&settings.tags)))
                .build(),
        );
    }
    // A snapshot an import or EBS direct write just made may not be visible yet.
    let what = format!("registering AMI {} from {snapshot_id}", settings.name);
    let out = naming(snapshot_age, &what, || {
        let call = call.clone();
        async {
            call.send()
                .await
                .map_err(|e| aws(Op::Ec2RegisterImage, &what, e))
        }
    })
    .await?;
    let id = out
        .image_id()
        .ok_or_else(|| Error::missing(Op::Ec2RegisterImage, "ImageId"))?
        .to_string();
    tracing::info!("registered AMI {id} ({}) from {snapshot_id}", settings.name);
    Ok(id)
}

/// Refuses when the region encrypts every new snapshot ("EBS encryption by default"): a
/// snapshot made there could not be public (ModifySnapshotAttribute refuses an encrypted
/// one). Without the permission to read the setting, says so and goes on.
pub(crate) async fn check_new_snapshots_unencrypted(ec2: &Client, region: &str) -> Result<()> {
    match ec2.get_ebs_encryption_by_default().send().await {
        Ok(out) if out.ebs_encryption_by_default() == Some(true) => Err(Error::Setup(format!(
            "region {region} encrypts every new EBS snapshot (EBS encryption by default is on), and an encrypted snapshot cannot be public: drop --public (share with accounts instead), or an admin turns it off with `aws ec2 disable-ebs-encryption-by-default --region {region}`"
        ))),
        Ok(_) => Ok(()),
        Err(e) => unchecked_if_denied(
            aws(
                Op::Ec2GetEbsEncryptionByDefault,
                format!("reading whether {region} encrypts new snapshots by default"),
                e,
            ),
            "whether new snapshots there are encrypted",
        ),
    }
}

/// A setting the caller may not read is not checked: the run says so and goes on.
fn unchecked_if_denied(err: Error, what: &str) -> Result<()> {
    match err.kind() {
        Some(ErrorKind::AccessDenied) => {
            let actions = err.actions().unwrap_or_default();
            crate::aws::unchecked::note(format!("{what} ({actions})"));
            Ok(())
        }
        _ => Err(err),
    }
}

/// Before anything is made public in `region`: AWS refuses it while the region blocks public
/// access to AMIs (or, with `snapshot_too`, to snapshots), and would say so only after the
/// upload and import. A caller that may not read the settings is told, and the run goes on.
pub(crate) async fn check_public_sharing(
    ec2: &Client,
    region: &str,
    snapshot_too: bool,
) -> Result<()> {
    let denied = |err: Error| unchecked_if_denied(err, "whether the region blocks public sharing");
    match ec2.get_image_block_public_access_state().send().await {
        Ok(out) => {
            if let Some(state) = out
                .image_block_public_access_state()
                .filter(|s| *s != "unblocked")
            {
                return Err(Error::Setup(format!(
                    "region {region} blocks public access to AMIs (image block public access: {state}), so --public cannot make the AMI public: an admin can turn it off with `aws ec2 disable-image-block-public-access --region {region}`, or drop --public"
                )));
            }
        }
        Err(e) => denied(aws(
            Op::Ec2GetImageBlockPublicAccessState,
            format!("reading the block public access for AMIs in {region}"),
            e,
        ))?,
    }
    if !snapshot_too {
        return Ok(());
    }
    match ec2.get_snapshot_block_public_access_state().send().await {
        Ok(out) => match out.state() {
            Some(state) if *state != SnapshotBlockPublicAccessState::Unblocked => {
                Err(Error::Setup(format!(
                    "region {region} blocks public access to snapshots (snapshot block public access: {}), so --public cannot make the snapshot public: an admin can turn it off with `aws ec2 disable-snapshot-block-public-access --region {region}`, or drop --public",
                    state.as_str()
                )))
            }
            _ => Ok(()),
        },
        Err(e) => denied(aws(
            Op::Ec2GetSnapshotBlockPublicAccessState,
            format!("reading the block public access for snapshots in {region}"),
            e,
        )),
    }
}

/// Service Quotas' code for EC2's "Public AMIs" quota (per region, adjustable).
pub(crate) const PUBLIC_AMIS_QUOTA: &str = "L-0E3CBAB9";
/// Its default: "You can have a maximum of 5 public AMIs per Region" (EC2 User Guide,
/// "Make your AMI publicly available"). Taken when Service Quotas has no value for it.
const DEFAULT_PUBLIC_AMIS: usize = 5;

/// Before `adding` AMIs are made public in `region`: whether its "Public AMIs" quota has
/// room for them beside the public AMIs the account has there. A caller who may not read
/// the quota is told it was not checked, as for the other settings.
pub(crate) async fn check_public_ami_quota(
    ec2: &Client,
    quotas: &aws_sdk_servicequotas::Client,
    region: &str,
    adding: usize,
) -> Result<()> {
    if adding == 0 {
        return Ok(());
    }
    let denied = |err: Error| unchecked_if_denied(err, "the region's \"Public AMIs\" quota");
    let what = format!("reading the \"Public AMIs\" quota of {region}");
    let quota = match quotas
        .get_service_quota()
        .service_code("ec2")
        .quota_code(PUBLIC_AMIS_QUOTA)
        .send()
        .await
    {
        Ok(out) => out.quota().and_then(|q| q.value()),
        Err(e) => {
            let err = aws(Op::ServiceQuotasGetServiceQuota, &what, e);
            match err.code() {
                Some("NoSuchResourceException") => None,
                _ => return denied(err),
            }
        }
    };
    // A fraction never counts: a quota of 5.0 allows 5.
    let quota = quota.map_or(DEFAULT_PUBLIC_AMIS, |v| v.max(0.0) as usize);
    let what = format!("counting this account's public AMIs in {region}");
    let public = match ec2
        .describe_images()
        .owners("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("is-public")
                .values("true")
                .build(),
        )
        .send()
        .await
    {
        Ok(out) => out.images().len(),
        Err(e) => return Err(aws(Op::Ec2DescribeImages, &what, e)),
    };
    if public + adding <= quota {
        tracing::debug!("{region}: {public} public AMIs of a quota of {quota}, {adding} to add");
        return Ok(());
    }
    Err(Error::Setup(format!(
        "region {region} has {public} public AMIs of its \"Public AMIs\" quota of {quota}, and {adding} more would be made public: ask for {} before the run (`aws service-quotas request-service-quota-increase --service-code ec2 --quota-code {PUBLIC_AMIS_QUOTA} --desired-value {} --region {region}`), or make older AMIs private (`imgpub aws revoke --image AMI --public --region {region}`)",
        public + adding,
        public + adding
    )))
}

/// Marks the AMI deprecated from `at` (AWS keeps it launchable, hides it from searches).
pub(crate) async fn enable_deprecation(
    ec2: &Client,
    image_id: &str,
    at: DateTime,
    age: Age,
) -> Result<()> {
    let what = format!("deprecating AMI {image_id}");
    naming(age, &what, || async {
        ec2.enable_image_deprecation()
            .image_id(image_id)
            .deprecate_at(at)
            .send()
            .await
            .map_err(|e| aws(Op::Ec2EnableImageDeprecation, &what, e))
    })
    .await?;
    tracing::info!(
        "AMI {image_id} deprecated from {}",
        at.fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_default()
    );
    Ok(())
}

/// What `delete_image` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Deleted {
    /// The AMI deregistered, if it existed.
    pub image: Option<String>,
    /// The snapshot deleted, if there was one.
    pub snapshot: Option<String>,
}

/// Which snapshot `delete_image` deletes with the AMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SnapshotChoice {
    None,
    /// The AMI's root device snapshot.
    FromImage,
    /// Every snapshot the AMI maps (`--with-snapshots`).
    All,
    Id(String),
}

/// One AMI by id, or `None` when it does not exist (any more).
pub(crate) async fn find_image(
    ec2: &Client,
    region: &str,
    image_id: &str,
) -> Result<Option<aws_sdk_ec2::types::Image>> {
    match ec2.describe_images().image_ids(image_id).send().await {
        Ok(out) => Ok(out.images().first().cloned()),
        Err(e) => match aws(
            Op::Ec2DescribeImages,
            format!("looking up AMI {image_id} in {region}"),
            e,
        ) {
            err if err.kind() == Some(ErrorKind::NotFound) => Ok(None),
            err => Err(err),
        },
    }
}

/// Deregisters `image_id`, then deletes `snapshot` if given. With `allow_missing`, a
/// snapshot that is already gone is not an error (so a cleanup job can be rerun).
pub(crate) async fn deregister_image(
    ec2: &Client,
    image_id: &str,
    snapshot: Option<&str>,
    allow_missing: bool,
) -> Result<Deleted> {
    ec2.deregister_image()
        .image_id(image_id)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DeregisterImage,
                format!("deregistering AMI {image_id}"),
                e,
            )
        })?;
    tracing::info!("deregistered AMI {image_id}");
    let snapshot = match snapshot {
        Some(id) => delete_snapshot(ec2, id, allow_missing).await?,
        None => None,
    };
    Ok(Deleted {
        image: Some(image_id.to_string()),
        snapshot,
    })
}

/// Disables `image_id`: hidden from DescribeImages, not launchable, private; EnableImage
/// brings it back (but not its sharing).
pub(crate) async fn disable_image(ec2: &Client, image_id: &str) -> Result<()> {
    ec2.disable_image()
        .image_id(image_id)
        .send()
        .await
        .map_err(|e| aws(Op::Ec2DisableImage, format!("disabling AMI {image_id}"), e))?;
    tracing::info!("disabled AMI {image_id}");
    Ok(())
}

/// Makes a disabled AMI launchable again. Its sharing does not come back with it ("do not
/// regain access automatically": EnableImage).
pub(crate) async fn enable_image(ec2: &Client, image_id: &str) -> Result<()> {
    ec2.enable_image()
        .image_id(image_id)
        .send()
        .await
        .map_err(|e| aws(Op::Ec2EnableImage, format!("enabling AMI {image_id}"), e))?;
    tracing::info!("enabled AMI {image_id}");
    Ok(())
}

/// Cancels the AMI's deprecation.
pub(crate) async fn undeprecate(ec2: &Client, image_id: &str) -> Result<()> {
    ec2.disable_image_deprecation()
        .image_id(image_id)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DisableImageDeprecation,
                format!("cancelling the deprecation of AMI {image_id}"),
                e,
            )
        })?;
    Ok(())
}

/// Turns deregistration protection on (with its 24-hour cooldown once turned off) or off.
pub(crate) async fn set_protection(ec2: &Client, image_id: &str, on: bool) -> Result<()> {
    let result = match on {
        true => ec2
            .enable_image_deregistration_protection()
            .image_id(image_id)
            .with_cooldown(true)
            .send()
            .await
            .map(drop)
            .map_err(|e| {
                aws(
                    Op::Ec2EnableImageDeregistrationProtection,
                    format!("protecting AMI {image_id} from deregistration"),
                    e,
                )
            }),
        false => ec2
            .disable_image_deregistration_protection()
            .image_id(image_id)
            .send()
            .await
            .map(drop)
            .map_err(|e| {
                aws(
                    Op::Ec2DisableImageDeregistrationProtection,
                    format!("lifting the deregistration protection of AMI {image_id}"),
                    e,
                )
            }),
    };
    result?;
    tracing::info!(
        "AMI {image_id}: deregistration protection {}",
        if on { "on" } else { "off" }
    );
    Ok(())
}

/// EC2 filters for resources carrying imgpub's tag and every one of `tags`.
fn tagged(tags: &[(String, String)]) -> Vec<Filter> {
    tags::with_managed(tags)
        .into_iter()
        .map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build())
        .collect()
}

/// This account's AMIs named by any of `patterns` (EC2's `*` wildcards), tagged with
/// imgpub's tag and `tags`, deprecated and disabled ones included.
pub(crate) async fn images_named_like(
    ec2: &Client,
    region: &str,
    patterns: &[String],
    tags: &[(String, String)],
) -> Result<Vec<aws_sdk_ec2::types::Image>> {
    let out = ec2
        .describe_images()
        .owners("self")
        .include_deprecated(true)
        .include_disabled(true)
        .set_filters(Some(tagged(tags)))
        .filters(
            Filter::builder()
                .name("name")
                .set_values(Some(patterns.to_vec()))
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DescribeImages,
                format!(
                    "listing the AMIs named {} in {region}",
                    patterns.join(" or ")
                ),
                e,
            )
        })?;
    Ok(out.images().to_vec())
}

/// This account's completed snapshots whose Name tag matches any of `patterns` and that
/// carry imgpub's tag and `tags`: each id, Name and start time.
pub(crate) async fn snapshots_named_like(
    ec2: &Client,
    region: &str,
    patterns: &[String],
    tags: &[(String, String)],
) -> Result<Vec<(String, String, Option<DateTime>)>> {
    let out = ec2
        .describe_snapshots()
        .owner_ids("self")
        .set_filters(Some(tagged(tags)))
        .filters(
            Filter::builder()
                .name("tag:Name")
                .set_values(Some(patterns.to_vec()))
                .build(),
        )
        .filters(Filter::builder().name("status").values("completed").build())
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DescribeSnapshots,
                format!(
                    "listing the snapshots named {} in {region}",
                    patterns.join(" or ")
                ),
                e,
            )
        })?;
    Ok(out
        .snapshots()
        .iter()
        .filter_map(|s| {
            let name = s.tags().iter().find(|t| t.key() == Some("Name"))?.value()?;
            Some((
                s.snapshot_id()?.to_string(),
                name.to_string(),
                s.start_time().copied(),
            ))
        })
        .collect())
}

/// The AMIs of this account that map `snapshot` (DescribeImages filter
/// `block-device-mapping.snapshot-id`), disabled ones included (EC2 keeps their snapshots
/// from being deleted too).
pub(crate) async fn images_using_snapshot(ec2: &Client, snapshot: &str) -> Result<Vec<String>> {
    let out = ec2
        .describe_images()
        .owners("self")
        .include_disabled(true)
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("block-device-mapping.snapshot-id")
                .values(snapshot)
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DescribeImages,
                format!("looking for AMIs that use snapshot {snapshot}"),
                e,
            )
        })?;
    Ok(out
        .images()
        .iter()
        .filter_map(|i| i.image_id().map(str::to_owned))
        .collect())
}

/// Deletes a snapshot; returns it when it was there. A missing one is an error unless
/// `allow_missing`.
pub(crate) async fn delete_snapshot(
    ec2: &Client,
    id: &str,
    allow_missing: bool,
) -> Result<Option<String>> {
    match ec2.delete_snapshot().snapshot_id(id).send().await {
        Ok(_) => {
            tracing::info!("deleted snapshot {id}");
            Ok(Some(id.to_string()))
        }
        Err(e) => match aws(Op::Ec2DeleteSnapshot, format!("deleting snapshot {id}"), e) {
            err if allow_missing && err.kind() == Some(ErrorKind::NotFound) => {
                tracing::info!("snapshot {id} does not exist; nothing to delete");
                Ok(None)
            }
            err => Err(err),
        },
    }
}

/// Who may launch the AMI and create volumes from its snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sharing {
    /// Launch permission group `all` on the AMI and `all` on the snapshot.
    pub public: bool,
    pub launch_users: Vec<String>,
    /// AWS Organizations ARNs (`arn:aws:organizations::…:organization/o-…`).
    pub organizations: Vec<String>,
    /// Organizational unit ARNs (`arn:aws:organizations::…:ou/o-…/ou-…`).
    pub organizational_units: Vec<String>,
    pub snapshot_users: Vec<String>,
}

impl Sharing {
    /// Whom this shares with, in words (`None`: nobody).
    pub(crate) fn describe(&self) -> Option<String> {
        let mut whom = vec![];
        if self.public {
            whom.push("everyone (public)".to_string());
        }
        let list = |what: &str, ids: &[String]| format!("{what} {}", ids.join(", "));
        if !self.launch_users.is_empty() {
            whom.push(list("accounts", &self.launch_users));
        }
        if !self.organizations.is_empty() {
            whom.push(list("organizations", &self.organizations));
        }
        if !self.organizational_units.is_empty() {
            whom.push(list("OUs", &self.organizational_units));
        }
        if !self.snapshot_users.is_empty() {
            whom.push(list("snapshot volumes to accounts", &self.snapshot_users));
        }
        (!whom.is_empty()).then(|| whom.join("; "))
    }

    /// `call` (a ModifyImageAttribute or ModifySnapshotAttribute) as this sharing makes it:
    /// the accounts it shares with and, for a snapshot, the `ec2:Add/*` condition keys the
    /// request carries.
    pub fn on(&self, mut call: Call) -> Call {
        if call.op == Op::Ec2ModifyImageAttribute {
            call.shares_with = self.launch_users.clone();
            return call;
        }
        call.shares_with = self.snapshot_users.clone();
        if !self.snapshot_users.is_empty() {
            call.context
                .push(("ec2:Add/userId".into(), self.snapshot_users.clone()));
        }
        if self.public {
            call.context
                .push(("ec2:Add/group".into(), vec!["all".to_string()]));
        }
        call
    }
}

/// 12-digit AWS account ids for `--grant-user` and `--grant-user-snapshot`.
pub(crate) fn validate_account_ids(flag: &str, ids: &[String]) -> Result<()> {
    match ids
        .iter()
        .find(|id| id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()))
    {
        Some(bad) => Err(Error::Invalid(format!(
            "{flag} {bad:?} is not an AWS account id (12 digits)"
        ))),
        None => Ok(()),
    }
}

/// Organization and OU ARNs, checked for their shape.
pub(crate) fn validate_org_arns(flag: &str, arns: &[String], kind: &str) -> Result<()> {
    match arns
        .iter()
        .find(|a| !(a.starts_with("arn:") && a.contains(":organizations::") && a.contains(&format!(":{kind}/"))))
    {
        Some(bad) => Err(Error::Invalid(format!(
            "{flag} {bad:?} is not an organizations {kind} ARN (arn:aws:organizations::ACCOUNT:{kind}/…)"
        ))),
        None => Ok(()),
    }
}

/// Who may launch `image_id` now (its launch permissions, as a [`Sharing`] of the launch
/// side only).
pub(crate) async fn read_launch(ec2: &Client, image_id: &str) -> Result<Sharing> {
    let launch = ec2
        .describe_image_attribute()
        .image_id(image_id)
        .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DescribeImageAttribute,
                format!("reading the launch permissions of {image_id}"),
                e,
            )
        })?;
    let mut sharing = Sharing::default();
    for p in launch.launch_permissions() {
        if let Some(u) = p.user_id() {
            sharing.launch_users.push(u.to_string());
        }
        if p.group() == Some(&aws_sdk_ec2::types::PermissionGroup::All) {
            sharing.public = true;
        }
        if let Some(a) = p.organization_arn() {
            sharing.organizations.push(a.to_string());
        }
        if let Some(a) = p.organizational_unit_arn() {
            sharing.organizational_units.push(a.to_string());
        }
    }
    Ok(sharing)
}

/// Who may create volumes from `snapshot` now: (public, the accounts named).
pub(crate) async fn read_volume(ec2: &Client, snapshot: &str) -> Result<(bool, Vec<String>)> {
    let volume = ec2
        .describe_snapshot_attribute()
        .snapshot_id(snapshot)
        .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DescribeSnapshotAttribute,
                format!("reading the permissions of {snapshot}"),
                e,
            )
        })?;
    let permissions = volume.create_volume_permissions();
    let public = permissions
        .iter()
        .any(|p| p.group() == Some(&aws_sdk_ec2::types::PermissionGroup::All));
    let users = permissions
        .iter()
        .filter_map(|p| p.user_id().map(str::to_owned))
        .collect();
    Ok((public, users))
}

impl Sharing {
    /// Whether the AMI's launch permissions lack some of what this grants (`now`: as
    /// [`read_launch`] found them).
    pub(crate) fn launch_missing(&self, now: &Sharing) -> bool {
        let lacks = |want: &[String], have: &[String]| want.iter().any(|w| !have.contains(w));
        (self.public && !now.public)
            || lacks(&self.launch_users, &now.launch_users)
            || lacks(&self.organizations, &now.organizations)
            || lacks(&self.organizational_units, &now.organizational_units)
    }

    /// Whether the snapshot's volume permissions lack some of what this grants (`now`: as
    /// [`read_volume`] found them).
    pub(crate) fn volume_missing(&self, (public, users): &(bool, Vec<String>)) -> bool {
        (self.public && !public) || self.snapshot_users.iter().any(|u| !users.contains(u))
    }

    /// Whether the AMI's launch permissions hold some of what this revokes.
    pub(crate) fn launch_present(&self, now: &Sharing) -> bool {
        let holds = |want: &[String], have: &[String]| want.iter().any(|w| have.contains(w));
        (self.public && now.public)
            || holds(&self.launch_users, &now.launch_users)
            || holds(&self.organizations, &now.organizations)
            || holds(&self.organizational_units, &now.organizational_units)
    }

    /// Whether the snapshot's volume permissions hold some of what this revokes.
    pub(crate) fn volume_present(&self, (public, users): &(bool, Vec<String>)) -> bool {
        (self.public && *public) || self.snapshot_users.iter().any(|u| users.contains(u))
    }
}

/// Whether a permission change adds or removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Grant,
    Revoke,
}

impl Sharing {
    /// The launch permissions this names on an AMI.
    pub fn launch_permissions(&self) -> Vec<LaunchPermission> {
        let mut launch: Vec<LaunchPermission> = self
            .launch_users
            .iter()
            .map(|u| LaunchPermission::builder().user_id(u).build())
            .collect();
        launch.extend(
            self.organizations
                .iter()
                .map(|a| LaunchPermission::builder().organization_arn(a).build()),
        );
        launch.extend(self.organizational_units.iter().map(|a| {
            LaunchPermission::builder()
                .organizational_unit_arn(a)
                .build()
        }));
        if self.public {
            launch.push(
                LaunchPermission::builder()
                    .group(PermissionGroup::All)
                    .build(),
            );
        }
        launch
    }

    /// The create-volume permissions this names on a snapshot (EC2 has no organization
    /// form for snapshots).
    pub fn volume_permissions(&self) -> Vec<CreateVolumePermission> {
        let mut volume: Vec<CreateVolumePermission> = self
            .snapshot_users
            .iter()
            .map(|u| CreateVolumePermission::builder().user_id(u).build())
            .collect();
        if self.public {
            volume.push(
                CreateVolumePermission::builder()
                    .group(PermissionGroup::All)
                    .build(),
            );
        }
        volume
    }
}

/// Grants (or revokes) what `sharing` names: launch permissions on the image, create-volume
/// permissions on the snapshot. Adding what is there, or removing what is not, is a no-op
/// in EC2, so reruns are safe.
pub(crate) async fn share(
    ec2: &Client,
    image_id: Option<&str>,
    snapshot_id: Option<&str>,
    sharing: &Sharing,
    change: Change,
    age: Age,
) -> Result<()> {
    let verb = match change {
        Change::Grant => "granting",
        Change::Revoke => "revoking",
    };
    let launch = sharing.launch_permissions();
    if let (Some(image_id), false) = (image_id, launch.is_empty()) {
        let mods = match change {
            Change::Grant => LaunchPermissionModifications::builder().set_add(Some(launch)),
            Change::Revoke => LaunchPermissionModifications::builder().set_remove(Some(launch)),
        };
        // The image first: when AWS refuses it (the Public AMIs quota), the snapshot below
        // is left as it was, not made public on its own. A new AMI may not be visible yet.
        let mods = mods.build();
        let what = format!("{verb} launch permissions on {image_id}");
        naming(age, &what, || async {
            ec2.modify_image_attribute()
                .image_id(image_id)
                .launch_permission(mods.clone())
                .send()
                .await
                .map_err(|e| aws(Op::Ec2ModifyImageAttribute, &what, e))
        })
        .await
        .map_err(|err| {
                match (err.code(), sharing.public, change) {
                    (Some("ResourceLimitExceeded"), true, Change::Grant) => err.with_hint(
                        "the region's \"Public AMIs\" quota (5 by default) is reached: the AMI stays private and its snapshot was not made public; make older AMIs private (`imgpub aws revoke --image AMI --public`) or ask for more in Service Quotas (Amazon EC2, \"Public AMIs\", Request quota increase), then rerun",
                    ),
                    _ => err,
                }
            })?;
    }
    let volume = sharing.volume_permissions();
    let (Some(snapshot_id), false) = (snapshot_id, volume.is_empty()) else {
        return Ok(());
    };
    let mods = match change {
        Change::Grant => CreateVolumePermissionModifications::builder().set_add(Some(volume)),
        Change::Revoke => CreateVolumePermissionModifications::builder().set_remove(Some(volume)),
    };
    let mods = mods.build();
    let what = format!("{verb} create-volume permissions on {snapshot_id}");
    naming(age, &what, || async {
        ec2.modify_snapshot_attribute()
            .snapshot_id(snapshot_id)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .create_volume_permission(mods.clone())
            .send()
            .await
            .map_err(|e| aws(Op::Ec2ModifySnapshotAttribute, &what, e))
    })
    .await?;
    Ok(())
}

/// One AMI by id; a missing one is an error naming it and its region.
pub(crate) async fn describe_image(
    ec2: &Client,
    region: &str,
    image_id: &str,
) -> Result<aws_sdk_ec2::types::Image> {
    find_image(ec2, region, image_id)
        .await?
        .ok_or_else(|| Error::Invalid(format!("AMI {image_id} does not exist in {region}")))
}

/// RegisterImage, after checking the root volume holds the snapshot; a duplicate name
/// registered meanwhile (a concurrent or earlier, interrupted run) for the same snapshot is
/// that run's AMI.
pub(crate) async fn register_or_adopt(
    ec2: &Client,
    reg: &RegisterSettings,
    snapshot: &str,
    snapshot_age: Age,
) -> Result<String> {
    if let Some(gib) = reg.volume_size_gib {
        let snapshot_gib =
            crate::aws::import::snapshot_size_gib(ec2, snapshot, snapshot_age).await?;
        if gib < snapshot_gib {
            return Err(Error::failed(
                format!("registering AMI {}", reg.name),
                ErrorKind::Other,
                None,
                format!("the root volume ({gib} GiB) is smaller than snapshot {snapshot} ({snapshot_gib} GiB): pass --disk-size-gib {snapshot_gib} or more (a rerun reuses the snapshot)"),
            ));
        }
    }
    match register_image(ec2, reg, snapshot, snapshot_age).await {
        Ok(id) => Ok(id),
        Err(err) if err.code() == Some("InvalidAMIName.Duplicate") => {
            match find_image_by_name(ec2, &reg.name).await? {
                Some(found) if found.root_snapshot.as_deref() == Some(snapshot) => {
                    Ok(found.image_id)
                }
                _ => Err(err),
            }
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ami_names() {
        validate_ami_name("fedora-coreos-40.2024 (x86_64) [test]/@'_").unwrap();
        let err = validate_ami_name("bad*name").unwrap_err().to_string();
        assert!(err.contains("'*'"), "{err}");
        assert!(validate_ami_name("ab").is_err());
        assert!(validate_ami_name(&"a".repeat(129))
            .unwrap_err()
            .to_string()
            .contains("129"));
    }

    #[test]
    fn ore_spellings_and_boot_modes() {
        assert_eq!(Arch::from_name("amd64").unwrap(), Arch::X86_64);
        assert_eq!(Arch::from_name("AARCH64").unwrap(), Arch::Arm64);
        assert!(Arch::from_name("riscv64").is_none());
        assert_eq!(
            BootMode::from_name("uefi-preferred").unwrap(),
            BootMode::UefiPreferred
        );
        assert_eq!(TpmSupport::from_name("v2.0").unwrap(), TpmSupport::V2);
        assert_eq!(
            VolumeType::from_name("GP3").unwrap().ec2(),
            Ec2VolumeType::Gp3
        );
        assert_eq!(
            boot_mode(Arch::Arm64, BootMode::LegacyBios, None, None).unwrap(),
            BootMode::Uefi
        );
        let tpm = Some(TpmSupport::V2);
        assert!(boot_mode(Arch::X86_64, BootMode::LegacyBios, None, tpm).is_err());
        assert_eq!(
            boot_mode(Arch::X86_64, BootMode::Uefi, None, tpm).unwrap(),
            BootMode::Uefi
        );
        // --boot-mode wins over --x86-boot-mode, and arm64 takes only UEFI.
        let legacy = Some(BootMode::LegacyBios);
        assert_eq!(
            boot_mode(Arch::X86_64, BootMode::Uefi, legacy, None).unwrap(),
            BootMode::LegacyBios
        );
        assert!(boot_mode(Arch::Arm64, BootMode::Uefi, legacy, None).is_err());
        assert!(boot_mode(Arch::X86_64, BootMode::Uefi, legacy, tpm).is_err());
    }

    #[test]
    fn permission_changes() {
        let sharing = Sharing {
            public: true,
            launch_users: vec!["111122223333".into()],
            organizations: vec!["arn:aws:organizations::111122223333:organization/o-1".into()],
            organizational_units: vec![],
            snapshot_users: vec!["444455556666".into()],
        };
        let launch = sharing.launch_permissions();
        assert_eq!(launch.len(), 3);
        assert_eq!(launch[0].user_id(), Some("111122223333"));
        assert!(launch[1].organization_arn().is_some());
        assert_eq!(launch[2].group(), Some(&PermissionGroup::All));
        let volume = sharing.volume_permissions();
        assert_eq!(volume.len(), 2);
        assert_eq!(volume[0].user_id(), Some("444455556666"));
        assert!(Sharing::default().launch_permissions().is_empty());
        assert!(Sharing::default().volume_permissions().is_empty());
    }
}
