//! The apply step: the snapshot (uploaded and imported, or written block by block), the
//! AMI, its tags and its sharing.

use super::*;

/// Runs the plan; see the module docs.
pub(crate) async fn apply(c: &Clients, plan: &Plan) -> Result<Published> {
    let local = &plan.local;
    let mut written = None;
    let snapshot = match &plan.snapshot {
        SnapshotStep::Use(id) => id.clone(),
        SnapshotStep::Write(start, req) => {
            let done = ebs_direct::write_snapshot(&c.ebs, &c.ec2, req, start).await?;
            let id = done.snapshot.clone();
            written = Some(done);
            id
        }
        SnapshotStep::Import(from) => import_stage(c, local, from).await?,
    };
    // A snapshot made just now may not be visible yet; one named or found is.
    let snapshot_age = match plan.snapshot {
        SnapshotStep::Use(_) => Age::Known,
        SnapshotStep::Import(_) | SnapshotStep::Write(..) => Age::New,
    };
    if retag_snapshot(plan) && plan.touch.snapshot_tags {
        tag(&c.ec2, &snapshot, &local.tags, Age::Known).await?;
    }
    // The image is in a snapshot now: the object has served its purpose.
    // (A rerun also makes sure of it: an earlier run may have stopped before deleting.)
    if let (true, true, Source::File { object, .. }) =
        (local.delete_object, plan.touch.delete_object, &local.source)
    {
        delete_object(c, object, matches!(plan.snapshot, SnapshotStep::Import(_))).await?;
    }
    // An AMI registered just now may not be visible yet; a reused one is.
    let image_age = match plan.image {
        ImageStep::Reuse(_) | ImageStep::None => Age::Known,
        ImageStep::Register | ImageStep::Replace(_) => Age::New,
    };
    let ami_id = match (&plan.image, &local.register) {
        (ImageStep::Reuse(id), reg) => {
            tracing::info!("AMI {id} already exists for {snapshot}; reusing it");
            if plan.touch.image_tags {
                let tags = reg.as_ref().map_or(&[][..], |r| &r.tags);
                tag(&c.ec2, id, tags, Age::Known).await?;
            }
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
            Some(ami::register_or_adopt(&c.ec2, reg, &snapshot, snapshot_age).await?)
        }
        (ImageStep::Register, Some(reg)) => {
            Some(ami::register_or_adopt(&c.ec2, reg, &snapshot, snapshot_age).await?)
        }
        _ => None,
    };
    if let (Some(id), Some(at), true) = (
        &ami_id,
        local.register.as_ref().and_then(|r| r.deprecate_at),
        plan.touch.deprecation,
    ) {
        ami::enable_deprecation(&c.ec2, id, at, image_age).await?;
    }
    ami::share(
        &c.ec2,
        ami_id.as_deref().filter(|_| plan.touch.launch),
        Some(snapshot.as_str()).filter(|_| plan.touch.volume),
        &local.sharing,
        ami::Change::Grant,
        image_age,
    )
    .await?;
    Ok(Published {
        ami_id,
        snapshot_id: snapshot,
        s3_object: object_left(plan).map(S3Object::to_string),
        written,
    })
}

/// The S3 object the image is in once the run is done: `--source-object`'s, or a file's
/// kept (`--delete-object=false`), uploaded by this run or an earlier one. Not one deleted,
/// nor one never uploaded because the snapshot was reused.
fn object_left(plan: &Plan) -> Option<&S3Object> {
    match (&plan.local.source, &plan.snapshot) {
        (Source::Object { object, .. }, _) => Some(object),
        (Source::File { .. }, _) if plan.local.delete_object => None,
        (Source::File { object, .. }, SnapshotStep::Import(_)) => Some(object),
        (Source::File { object, .. }, SnapshotStep::Use(_)) if plan.object_there => Some(object),
        _ => None,
    }
}

/// Uploads (when the source is a file) and imports; returns the snapshot id.
pub(super) async fn import_stage(
    c: &Clients,
    local: &LocalPlan,
    from: &ImportFrom,
) -> Result<String> {
    let (object, format, mut etag) = match from {
        ImportFrom::File {
            path,
            format,
            object,
        } => {
            let report = multipart::upload_file(
                &c.s3,
                &UploadRequest {
                    path: path.clone(),
                    object: object.clone(),
                    part_size: local.transfer.part_size,
                    concurrency: local.transfer.concurrency,
                    force: local.existing.replaces(),
                    over_tls: c.s3_over_tls,
                    expected_owner: c.bucket_owner.clone(),
                },
            )
            .await?;
            (object, *format, report.etag)
        }
        ImportFrom::Object { object, format } => (object, *format, head_object(c, object).await?),
    };
    if local.existing.replaces() {
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
    let mut tags = local.tags.clone();
    if let Source::File { content, .. } = &local.source {
        tags.push((ebs_direct::CONTENT_TAG.to_string(), content.clone()));
    }
    match import::import_snapshot(&c.ec2, &request, &tags, local.existing.replaces()).await {
        Ok(outcome) => Ok(outcome.snapshot_id),
        Err(err) => {
            // AWS refused the image itself: the object is of no use to a rerun.
            let rejected = err.kind() == Some(ErrorKind::ImageRejected);
            if let (true, true, ImportFrom::File { object, .. }) =
                (rejected, local.delete_object, from)
            {
                delete_object(c, object, true).await?;
            }
            Err(err)
        }
    }
}

/// Deletes the uploaded object (deleting a missing one is not an error in S3).
pub(super) async fn delete_object(c: &Clients, object: &S3Object, say_so: bool) -> Result<()> {
    s3::delete_object(&c.s3, object, c.owner()).await?;
    if say_so {
        tracing::info!("deleted {object}");
    }
    Ok(())
}
