//! The local step: the flags and the image, checked without AWS, become a [`LocalPlan`].

use super::*;

/// Checks everything that can be checked without AWS, including the image itself.
/// Blocking file reads: call it off the async runtime.
pub(crate) fn plan_local(stage: Stage, opts: UploadOptions) -> Result<LocalPlan> {
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

    if opts.parent.is_some() && !(opts.via == Via::EbsDirect && opts.file.is_some()) {
        return Err(Error::Invalid(
            "--parent writes a snapshot on an earlier one with EBS direct: it needs --via ebs-direct and --file (ImportSnapshot always writes the whole image)".into(),
        ));
    }
    if opts.block_maps.is_some() && !(opts.via == Via::EbsDirect && opts.file.is_some()) {
        return Err(Error::Invalid(
            "--block-maps keeps the block maps EBS direct writes: it needs --via ebs-direct and --file".into(),
        ));
    }

    let source = match (&opts.source_snapshot, &opts.source_object, &opts.file) {
        (Some(_), Some(_), _) => {
            return Err(Error::Invalid(
                "pass at most one of --source-object and --source-snapshot".into(),
            ))
        }
        (_, Some(_), _) | (_, _, Some(_)) if stage == Stage::Register => {
            return Err(Error::Invalid(
                "register-ami registers --source-snapshot; --file and --source-object are upload's and import-snapshot's".into(),
            ))
        }
        (Some(snap), _, _) => {
            crate::aws::images::check_snapshot_id("--source-snapshot", snap)?;
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
            // The parts fit S3's limits at the asked-for part size (before any call).
            multipart::part_size_for(info.file_size, opts.part_size)?;
            let location = S3Prefix::parse(url)?;
            let has_path = url.trim_start_matches("s3://").contains('/');
            let prefix = match location.prefix {
                None if !has_path => Some(ORE_DEFAULT_PREFIX.to_string()),
                prefix => prefix,
            };
            Source::File {
                content: ebs_direct::content_id(path, &info, &encryption, false)?,
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
            Some(path) => Some(read_uefi_data("--uefi-data", path, boot_mode)?),
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
            deprecation_kept: matches!(opts.deprecate, Some(Deprecate::In(_))),
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
            organizations: opts.grant_organizations,
            organizational_units: opts.grant_organizational_units,
        },
        tags,
        delete_object: opts.delete_object,
        existing: opts.existing,
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
pub(super) fn direct_request(
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
    let parent = match opts.parent.as_deref() {
        None => None,
        Some("auto") => Some(ebs_direct::ParentAsk::Auto),
        Some(id) => {
            crate::aws::images::check_snapshot_id("--parent", id)?;
            Some(ebs_direct::ParentAsk::Snapshot(id.to_string()))
        }
    };
    // `--parent auto` finds the newest snapshot of the same stream, architecture and size.
    let stream = tags
        .iter()
        .find(|(k, _)| k == "stream")
        .map_or("-", |(_, v)| v.as_str());
    let lineage = format!("{stream}/{}/{volume_size_gib}GiB", opts.arch.ec2().as_str());
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
        force: opts.existing.replaces(),
        parent,
        base: ebs_direct::Base::Whole { why: None },
        lineage,
        maps_also: opts.block_maps.clone(),
    })
}

/// The UEFI variable store in `path`: base64 text (as `uefivars -O aws` writes it), for a
/// UEFI boot mode.
pub(crate) fn read_uefi_data(
    label: &str,
    path: &std::path::Path,
    boot: BootMode,
) -> Result<String> {
    use base64::Engine;
    let shown = path.display();
    if boot == BootMode::LegacyBios {
        return Err(Error::Invalid(format!(
            "{label} {shown} needs a UEFI boot mode (uefi or uefi-preferred), not legacy-bios"
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
        .map_err(|e| Error::io(format!("reading {label} {shown}"), e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::Invalid(format!(
            "{label} {shown} is over {limit} bytes; AWS takes at most {UEFI_DATA_MAX} bytes of base64: give the variable store `uefivars -O aws` writes"
        )));
    }
    let Ok(text) = String::from_utf8(bytes) else {
        return Err(Error::Invalid(format!(
            "{label} {shown} is not base64 text; give the variable store `uefivars -O aws` writes"
        )));
    };
    let data: String = text.split_whitespace().collect();
    let decoded = base64::engine::general_purpose::STANDARD.decode(&data);
    match decoded {
        Ok(bytes) if !bytes.is_empty() && data.len() <= UEFI_DATA_MAX => Ok(data),
        Ok(bytes) if bytes.is_empty() => Err(Error::Invalid(format!(
            "{label} {shown} is empty; give the variable store `uefivars -O aws` writes"
        ))),
        Ok(_) => Err(Error::Invalid(format!(
            "{label} {shown} is {} bytes of base64; AWS takes at most {UEFI_DATA_MAX}",
            data.len()
        ))),
        Err(_) => Err(Error::Invalid(format!(
            "{label} {shown} is not base64; give the variable store `uefivars -O aws` writes"
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
pub(crate) fn deprecation_time(deprecate: &Deprecate, public: bool) -> Result<DateTime> {
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
