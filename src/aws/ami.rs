//! RegisterImage, finding an AMI by name, and launch/volume permissions.

use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, CreateVolumePermission,
    CreateVolumePermissionModifications, EbsBlockDevice, Filter, ImdsSupportValues,
    LaunchPermission, LaunchPermissionModifications, PermissionGroup, ResourceType,
    SnapshotAttributeName, Tag, TagSpecification, TpmSupportValues, VolumeType,
};
use aws_sdk_ec2::Client;

use crate::error::{aws, Error, Result};

pub const ROOT_DEVICE: &str = "/dev/xvda";

/// AMI names AWS accepts: 3–128 of letters, digits and `()[] ./-'@_`.
pub fn validate_ami_name(name: &str) -> Result<()> {
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

/// `--arch` as ore takes it (Go and kernel spellings) to the EC2 value.
pub fn parse_arch(arch: &str) -> Result<ArchitectureValues> {
    match arch {
        "amd64" | "x86_64" => Ok(ArchitectureValues::X8664),
        "arm64" | "aarch64" => Ok(ArchitectureValues::Arm64),
        _ => Err(Error::Invalid(format!(
            "unknown --arch {arch:?}; use x86_64 (or amd64) or arm64 (or aarch64)"
        ))),
    }
}

#[derive(Debug, Clone)]
pub struct RegisterRequest {
    pub name: String,
    pub description: Option<String>,
    pub arch: ArchitectureValues,
    pub boot_mode: BootModeValues,
    pub imdsv2_only: bool,
    pub tpm_v2: bool,
    pub volume_type: VolumeType,
    /// Root volume size; `None` takes the snapshot's.
    pub volume_size_gib: Option<i32>,
    pub billing_products: Vec<String>,
    pub tags: Vec<(String, String)>,
    pub snapshot_id: String,
}

/// Checks and turns the user's boot mode, TPM and volume type flags into EC2 values.
pub fn register_settings(
    arch: &ArchitectureValues,
    x86_boot_mode: &str,
    tpm: Option<&str>,
    volume_type: &str,
) -> Result<(BootModeValues, bool, VolumeType)> {
    let boot = if *arch == ArchitectureValues::Arm64 {
        // Graviton boots only UEFI; ore ignores --x86-boot-mode there too.
        BootModeValues::Uefi
    } else {
        match x86_boot_mode {
            "legacy-bios" => BootModeValues::LegacyBios,
            "uefi" => BootModeValues::Uefi,
            "uefi-preferred" => BootModeValues::UefiPreferred,
            other => {
                return Err(Error::Invalid(format!(
                    "unknown --x86-boot-mode {other:?}; use legacy-bios, uefi or uefi-preferred"
                )))
            }
        }
    };
    let tpm_v2 = match tpm {
        None => false,
        Some("v2.0") if boot != BootModeValues::LegacyBios => true,
        Some("v2.0") => {
            return Err(Error::Invalid(
                "--tpm-support v2.0 needs UEFI; use --x86-boot-mode uefi or uefi-preferred".into(),
            ))
        }
        Some(other) => {
            return Err(Error::Invalid(format!(
                "unknown --tpm-support {other:?}; the only value is v2.0"
            )))
        }
    };
    let volume = match volume_type {
        "gp2" | "gp3" | "io1" | "io2" | "st1" | "sc1" | "standard" => VolumeType::from(volume_type),
        other => {
            return Err(Error::Invalid(format!(
                "unknown --volume-type {other:?}; use gp3, gp2, io1, io2, st1, sc1 or standard"
            )))
        }
    };
    Ok((boot, tpm_v2, volume))
}

/// An AMI of ours with this name, and the snapshot behind its root device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundImage {
    pub image_id: String,
    pub root_snapshot: Option<String>,
    /// The image ended in `failed` or `error` (a copy that did not work out).
    pub failed: bool,
}

pub async fn find_image_by_name(ec2: &Client, name: &str) -> Result<Option<FoundImage>> {
    let out = ec2
        .describe_images()
        .owners("self")
        .filters(Filter::builder().name("name").values(name).build())
        .send()
        .await
        .map_err(|e| aws(format!("looking for an AMI named {name}"), e))?;
    Ok(out
        .images()
        .iter()
        .find(|i| i.name() == Some(name))
        .map(|image| FoundImage {
            image_id: image.image_id().unwrap_or_default().to_string(),
            root_snapshot: root_snapshot_of(image),
            failed: matches!(
                image.state(),
                Some(
                    aws_sdk_ec2::types::ImageState::Failed | aws_sdk_ec2::types::ImageState::Error
                )
            ),
        }))
}

/// The snapshot behind an image's root device.
pub fn root_snapshot_of(image: &aws_sdk_ec2::types::Image) -> Option<String> {
    image
        .block_device_mappings()
        .iter()
        .find(|m| m.device_name() == image.root_device_name())
        .and_then(|m| m.ebs())
        .and_then(|e| e.snapshot_id())
        .map(str::to_owned)
}

fn tag_list(tags: &[(String, String)]) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Registers the AMI. Returns its id.
pub async fn register_image(ec2: &Client, req: &RegisterRequest) -> Result<String> {
    let mut call = ec2
        .register_image()
        .name(&req.name)
        .architecture(req.arch.clone())
        .virtualization_type("hvm")
        .root_device_name(ROOT_DEVICE)
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name(ROOT_DEVICE)
                .ebs(
                    EbsBlockDevice::builder()
                        .snapshot_id(&req.snapshot_id)
                        .volume_type(req.volume_type.clone())
                        .set_volume_size(req.volume_size_gib)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
        .ena_support(true)
        .sriov_net_support("simple")
        .boot_mode(req.boot_mode.clone())
        .set_description(req.description.clone())
        .set_billing_products(
            (!req.billing_products.is_empty()).then(|| req.billing_products.clone()),
        );
    if req.imdsv2_only {
        call = call.imds_support(ImdsSupportValues::V20);
    }
    if req.tpm_v2 {
        call = call.tpm_support(TpmSupportValues::V20);
    }
    if !req.tags.is_empty() {
        call = call.tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Image)
                .set_tags(Some(tag_list(&req.tags)))
                .build(),
        );
    }
    let out = call.send().await.map_err(|e| {
        aws(
            format!("registering AMI {} from {}", req.name, req.snapshot_id),
            e,
        )
    })?;
    let id = out.image_id().unwrap_or_default().to_string();
    tracing::info!(
        "registered AMI {id} ({}) from {}",
        req.name,
        req.snapshot_id
    );
    Ok(id)
}

/// What `delete_image` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Deleted {
    /// The AMI deregistered, if it existed.
    pub image: Option<String>,
    /// The snapshot deleted, if there was one.
    pub snapshot: Option<String>,
}

/// Which snapshot `delete_image` deletes with the AMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotChoice {
    None,
    /// The AMI's root device snapshot.
    FromImage,
    Id(String),
}

/// Deregisters `image_id` and deletes the chosen snapshot. With `allow_missing`, an AMI or
/// snapshot that is already gone is not an error (so a cleanup job can be rerun).
pub async fn delete_image(
    ec2: &Client,
    image_id: &str,
    snapshot: &SnapshotChoice,
    allow_missing: bool,
) -> Result<Deleted> {
    let described = ec2.describe_images().image_ids(image_id).send().await;
    let image = match described {
        Ok(out) => out.images().first().cloned(),
        Err(e)
            if e.as_service_error().and_then(|s| s.meta().code())
                == Some("InvalidAMIID.NotFound") =>
        {
            None
        }
        Err(e) => return Err(aws(format!("looking up AMI {image_id}"), e)),
    };
    let Some(image) = image else {
        if !allow_missing {
            return Err(Error::Invalid(format!(
                "AMI {image_id} does not exist in this region; pass --allow-missing if that is fine"
            )));
        }
        tracing::info!("AMI {image_id} does not exist; nothing to deregister");
        let snapshot = match snapshot {
            SnapshotChoice::Id(id) => delete_snapshot(ec2, id, allow_missing).await?,
            _ => None,
        };
        return Ok(Deleted {
            image: None,
            snapshot,
        });
    };
    let snapshot_id = match snapshot {
        SnapshotChoice::None => None,
        SnapshotChoice::Id(id) => Some(id.clone()),
        SnapshotChoice::FromImage => root_snapshot_of(&image),
    };
    ec2.deregister_image()
        .image_id(image_id)
        .send()
        .await
        .map_err(|e| aws(format!("deregistering AMI {image_id}"), e))?;
    tracing::info!("deregistered AMI {image_id}");
    let snapshot = match snapshot_id {
        Some(id) => delete_snapshot(ec2, &id, allow_missing).await?,
        None => None,
    };
    Ok(Deleted {
        image: Some(image_id.to_string()),
        snapshot,
    })
}

/// Deletes a snapshot; returns it when it was there. A missing one is an error unless
/// `allow_missing`.
pub async fn delete_snapshot(
    ec2: &Client,
    id: &str,
    allow_missing: bool,
) -> Result<Option<String>> {
    match ec2.delete_snapshot().snapshot_id(id).send().await {
        Ok(_) => {
            tracing::info!("deleted snapshot {id}");
            Ok(Some(id.to_string()))
        }
        Err(e)
            if allow_missing
                && e.as_service_error().and_then(|s| s.meta().code())
                    == Some("InvalidSnapshot.NotFound") =>
        {
            tracing::info!("snapshot {id} does not exist; nothing to delete");
            Ok(None)
        }
        Err(e) => Err(aws(format!("deleting snapshot {id}"), e)),
    }
}

/// Who may launch the AMI and create volumes from its snapshot.
#[derive(Debug, Clone, Default)]
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

/// 12-digit AWS account ids for `--grant-user` and `--grant-user-snapshot`.
pub fn validate_account_ids(flag: &str, ids: &[String]) -> Result<()> {
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
pub fn validate_org_arns(flag: &str, arns: &[String], kind: &str) -> Result<()> {
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

/// Whether a permission change adds or removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Grant,
    Revoke,
}

/// Grants (or revokes) what `sharing` names: launch permissions on the image, create-volume
/// permissions on the snapshot. Adding what is there, or removing what is not, is a no-op
/// in EC2, so reruns are safe.
pub async fn share(
    ec2: &Client,
    image_id: Option<&str>,
    snapshot_id: Option<&str>,
    sharing: &Sharing,
    change: Change,
) -> Result<()> {
    let verb = match change {
        Change::Grant => "granting",
        Change::Revoke => "revoking",
    };
    if let Some(image_id) = image_id {
        let mut launch: Vec<LaunchPermission> = sharing
            .launch_users
            .iter()
            .map(|u| LaunchPermission::builder().user_id(u).build())
            .collect();
        launch.extend(
            sharing
                .organizations
                .iter()
                .map(|a| LaunchPermission::builder().organization_arn(a).build()),
        );
        launch.extend(sharing.organizational_units.iter().map(|a| {
            LaunchPermission::builder()
                .organizational_unit_arn(a)
                .build()
        }));
        if sharing.public {
            launch.push(LaunchPermission::builder().group("all".into()).build());
        }
        if !launch.is_empty() {
            let mods = match change {
                Change::Grant => LaunchPermissionModifications::builder().set_add(Some(launch)),
                Change::Revoke => LaunchPermissionModifications::builder().set_remove(Some(launch)),
            };
            ec2.modify_image_attribute()
                .image_id(image_id)
                .launch_permission(mods.build())
                .send()
                .await
                .map_err(|e| aws(format!("{verb} launch permissions on {image_id}"), e))?;
        }
    }
    let Some(snapshot_id) = snapshot_id else {
        return Ok(());
    };
    if sharing.snapshot_users.is_empty() && !sharing.public {
        return Ok(());
    }
    let mut volume: Vec<CreateVolumePermission> = sharing
        .snapshot_users
        .iter()
        .map(|u| CreateVolumePermission::builder().user_id(u).build())
        .collect();
    if sharing.public {
        volume.push(
            CreateVolumePermission::builder()
                .group(PermissionGroup::All)
                .build(),
        );
    }
    let mods = match change {
        Change::Grant => CreateVolumePermissionModifications::builder().set_add(Some(volume)),
        Change::Revoke => CreateVolumePermissionModifications::builder().set_remove(Some(volume)),
    };
    let call = ec2
        .modify_snapshot_attribute()
        .snapshot_id(snapshot_id)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .create_volume_permission(mods.build());
    call.send().await.map_err(|e| {
        aws(
            format!("{verb} create-volume permissions on {snapshot_id}"),
            e,
        )
    })?;
    Ok(())
}

/// One AMI by id; a missing one is an error naming it and its region.
pub async fn describe_image(
    ec2: &Client,
    region: &str,
    image_id: &str,
) -> Result<aws_sdk_ec2::types::Image> {
    let out = ec2
        .describe_images()
        .image_ids(image_id)
        .send()
        .await
        .map_err(|e| aws(format!("looking up AMI {image_id} in {region}"), e))?;
    out.images()
        .first()
        .cloned()
        .ok_or_else(|| Error::Invalid(format!("AMI {image_id} does not exist in {region}")))
}

/// The snapshot behind an AMI's root device.
pub async fn root_snapshot(ec2: &Client, region: &str, image_id: &str) -> Result<Option<String>> {
    let image = describe_image(ec2, region, image_id).await?;
    Ok(root_snapshot_of(&image))
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
    fn arches_and_boot_modes() {
        assert_eq!(parse_arch("amd64").unwrap(), ArchitectureValues::X8664);
        assert_eq!(parse_arch("aarch64").unwrap(), ArchitectureValues::Arm64);
        assert!(parse_arch("riscv64").is_err());
        let (boot, _, _) =
            register_settings(&ArchitectureValues::Arm64, "legacy-bios", None, "gp3").unwrap();
        assert_eq!(boot, BootModeValues::Uefi);
        assert!(register_settings(
            &ArchitectureValues::X8664,
            "legacy-bios",
            Some("v2.0"),
            "gp3"
        )
        .is_err());
        assert!(register_settings(&ArchitectureValues::X8664, "uefi", None, "gp9").is_err());
    }
}
