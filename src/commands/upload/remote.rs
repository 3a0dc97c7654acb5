//! The plan: read-only lookups of what an earlier run finished or left in flight.

use super::*;

/// The read-only lookups, in the command's region: what earlier runs left (the AMI and the
/// snapshot by name), and, when something is to be imported, that the bucket is in this
/// region, the source object exists and the import role exists.
pub(crate) async fn plan(c: &Clients, local: LocalPlan) -> Result<Plan> {
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
    // An import unless an earlier run's snapshot of that name is found (never with --force).
    let (force, name) = (local.existing.replaces(), &local.name);
    let import_unless_found = |from: ImportFrom| async move {
        let found = match force {
            true => None,
            false => import::find_snapshot_by_name(&c.ec2, name).await?,
        };
        Ok(found.map_or(SnapshotStep::Import(from), SnapshotStep::Use))
    };
    let snapshot = async {
        match &local.source {
            Source::Snapshot(id) => Ok(SnapshotStep::Use(id.clone())),
            Source::Blocks(req) => Ok(match ebs_direct::find(&c.ec2, req).await? {
                ebs_direct::Found::Completed(id) => SnapshotStep::Use(id),
                ebs_direct::Found::Write(start) => {
                    let base = ebs_direct::choose_base(&c.ec2, req).await?;
                    SnapshotStep::Write(
                        start,
                        Box::new(SnapshotRequest {
                            base,
                            ..(**req).clone()
                        }),
                    )
                }
            }),
            Source::File {
                path,
                format,
                object,
                ..
            } => {
                import_unless_found(ImportFrom::File {
                    path: path.clone(),
                    object: object.clone(),
                    format: *format,
                })
                .await
            }
            Source::Object { object, format } => {
                import_unless_found(ImportFrom::Object {
                    object: object.clone(),
                    format: *format,
                })
                .await
            }
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
    let ((), existing_image, snapshot) = tokio::try_join!(public, image, snapshot)?;
    // A snapshot an earlier run made: its tags, read once for what it holds and what it lacks.
    let snapshot_tags = match &snapshot {
        SnapshotStep::Use(id) => Some(tags::of_snapshot(&c.ec2, id).await?),
        _ => None,
    };
    if let (SnapshotStep::Use(id), Some(tagged)) = (&snapshot, &snapshot_tags) {
        refuse_another_image(c, &local, id, tagged).await?;
    }
    if let SnapshotStep::Import(_) = snapshot {
        check_import_prerequisites(c, &local).await?;
    }
    if local.sharing.public && !matches!(snapshot, SnapshotStep::Use(_)) {
        // A new snapshot in a region that encrypts by default is encrypted whatever the
        // request says, and could not be made public: say so before making it.
        ami::check_new_snapshots_unencrypted(&c.ec2, &c.region).await?;
    }
    let found = existing_image.clone();
    let image = match (&local.register, existing_image) {
        (None, _) => ImageStep::None,
        (Some(_), None) => ImageStep::Register,
        (Some(reg), Some(found)) if matches!(&snapshot, SnapshotStep::Use(id) if found.root_snapshot.as_ref() == Some(id)) =>
        {
            // The same disk, but registered otherwise: returning it would hand back an
            // image other than the one asked for.
            match found.registered.differences(reg) {
                differences if differences.is_empty() => ImageStep::Reuse(found.image_id),
                // Registered again from the same snapshot, which stays.
                _ if local.existing.replaces() => ImageStep::Replace(ami::FoundImage {
                    root_snapshot: None,
                    ..found
                }),
                differences => {
                    return Err(Error::Conflict(format!(
                        "AMI {} named {} was registered from this image, but otherwise: {}; {}",
                        found.image_id,
                        reg.name,
                        differences.join(", "),
                        local.existing.fix(
                            "register it again as asked (the old AMI is deregistered)",
                            "--ami-name"
                        )
                    )))
                }
            }
        }
        (Some(_), Some(found)) if local.existing.replaces() => ImageStep::Replace(found),
        (Some(reg), Some(found)) => {
            return Err(Error::Conflict(format!(
                "AMI name {} is already used by {} (snapshot {}), which is not this image; {}",
                reg.name,
                found.image_id,
                found.root_snapshot.as_deref().unwrap_or("unknown"),
                local.existing.fix("replace it", "--ami-name")
            )))
        }
    };
    // A reused snapshot's file may have been uploaded by an earlier run and still be in S3:
    // to delete it, or (kept) to name it in the output.
    let object_there = match (&snapshot, &local.source) {
        (SnapshotStep::Use(_), Source::File { object, .. }) => {
            crate::aws::unchecked::or_make_again(
                s3::object_etag(&c.s3, object, c.owner())
                    .await
                    .map(|etag| etag.is_some()),
                &format!("whether {object} is still there (s3:GetObject)"),
            )?
        }
        _ => false,
    };
    let mut touch = in_place(
        c,
        &local,
        &snapshot,
        snapshot_tags.as_deref(),
        &image,
        found.as_ref(),
    )
    .await?;
    if let SnapshotStep::Use(_) = snapshot {
        touch.delete_object = local.delete_object && object_there;
    }
    Ok(Plan {
        local,
        region: c.region.clone(),
        snapshot,
        image,
        touch,
        object_there,
    })
}

/// What of the tags, sharing, deprecation and the object an earlier run left otherwise
/// than asked: only that is changed (everything, for what this run makes anew). A setting
/// that cannot be read for want of permission is set again, and said at the end.
async fn in_place(
    c: &Clients,
    local: &LocalPlan,
    snapshot: &SnapshotStep,
    snapshot_tags: Option<&[(String, String)]>,
    image: &ImageStep,
    found: Option<&ami::FoundImage>,
) -> Result<Touch> {
    let (SnapshotStep::Use(snap), Some(snapshot_tags)) = (snapshot, snapshot_tags) else {
        return Ok(Touch::ALL);
    };
    let denied_means_unknown = crate::aws::unchecked::or_make_again;
    let mut touch = Touch::ALL;
    touch.snapshot_tags = tags::lacks(&local.tags, snapshot_tags);
    touch.volume = match local.sharing.volume_permissions().is_empty() {
        true => false,
        false => denied_means_unknown(
            ami::read_volume(&c.ec2, snap)
                .await
                .map(|now| local.sharing.volume_missing(&now)),
            &format!("whether {snap} is already shared as asked (ec2:DescribeSnapshotAttribute)"),
        )?,
    };
    if let (ImageStep::Reuse(id), Some(found), Some(reg)) = (image, found, &local.register) {
        touch.image_tags = tags::lacks(&reg.tags, &found.tags);
        // Set to the second; AWS keeps it to the minute.
        touch.deprecation = match (reg.deprecate_at, found.deprecation) {
            (None, _) => false,
            (Some(_), Some(_)) if reg.deprecation_kept => false,
            (Some(at), Some(now)) => (at.secs() - now.secs()).abs() >= 60,
            (Some(_), None) => true,
        };
        touch.launch = match local.sharing.launch_permissions().is_empty() {
            true => false,
            false => denied_means_unknown(
                ami::read_launch(&c.ec2, id)
                    .await
                    .map(|now| local.sharing.launch_missing(&now)),
                &format!("whether {id} is already shared as asked (ec2:DescribeImageAttribute)"),
            )?,
        };
    }
    Ok(touch)
}

/// A snapshot found by name is reused, as ore does; but not one made from another file,
/// which would publish an image not asked for. imgpub tags what it imports with the file's
/// identity (size, modification time, format); an untagged snapshot (ore's, or an older
/// imgpub's) is compared by the size its import task read, while AWS still lists the task.
pub(super) async fn refuse_another_image(
    c: &Clients,
    local: &LocalPlan,
    snapshot: &str,
    tagged: &[(String, String)],
) -> Result<()> {
    let name = &local.name;
    let Source::File {
        path,
        info,
        content,
        ..
    } = &local.source
    else {
        return Ok(());
    };
    let (path, size) = (path.display(), info.file_size);
    let fix = local
        .existing
        .fix(&format!("import {path} instead"), "--name");
    let imported = tagged
        .iter()
        .find(|(k, _)| k == ebs_direct::CONTENT_TAG)
        .map(|(_, v)| v);
    match imported {
        Some(imported) if imported == content => return Ok(()),
        Some(_) => {
            return Err(Error::Conflict(format!(
                "snapshot {snapshot} named {name} was imported from another file than {path} (its size, modification time or format differ; a copy of the same file with a new time counts as another): {fix}"
            )))
        }
        None => {}
    }
    match import::imported_image_size(&c.ec2, name, snapshot).await {
        Ok(Some(imported)) if imported != size => Err(Error::Conflict(format!(
            "snapshot {snapshot} named {name} was imported from a {imported}-byte image, but {path} is {size} bytes: it is another image; {fix}",
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
pub(super) async fn check_import_prerequisites(c: &Clients, local: &LocalPlan) -> Result<()> {
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

/// The ETag of `--source-object`, which must exist.
pub(super) async fn head_object(c: &Clients, object: &S3Object) -> Result<String> {
    s3::object_etag(&c.s3, object, c.owner())
        .await?
        .ok_or_else(|| Error::Invalid(format!("--source-object {object} does not exist")))
}
