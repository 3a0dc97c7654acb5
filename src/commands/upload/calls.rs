//! The check: the calls [`apply`](super::apply) will make, as data.

use super::*;

/// The calls [`apply`] will make, in order (the input of the preflight and `--dry-run`).
pub(crate) fn check(plan: &Plan) -> Vec<Call> {
    let local = &plan.local;
    let region = plan.region.as_str();
    let call = |op, resources| Call::new(op, region, resources);
    let object = local.source.object().map(|o| Resource::Object {
        bucket: o.bucket.clone(),
        key: o.key.clone(),
    });
    let known_snapshot = match &plan.snapshot {
        SnapshotStep::Use(id) | SnapshotStep::Write(Start::Resume(id), _) => Some(id.clone()),
        SnapshotStep::Import(_) | SnapshotStep::Write(..) => None,
    };
    let snapshot = Resource::Snapshot(known_snapshot.clone());
    let mut calls = vec![];
    if let (SnapshotStep::Import(from), Some(object)) = (&plan.snapshot, &object) {
        match from {
            ImportFrom::File { object: o, .. } => calls.extend(multipart::calls(region, o)),
            ImportFrom::Object { .. } => calls.push(call(Op::S3HeadObject, vec![object.clone()])),
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
    if let SnapshotStep::Write(start, _) = &plan.snapshot {
        calls.extend(direct_calls(region, start, &local.encryption));
    }
    let touch = plan.touch;
    if retag_snapshot(plan) && touch.snapshot_tags {
        calls.push(call(Op::Ec2CreateTags, vec![snapshot.clone()]));
    }
    if let (true, true, Source::File { .. }, Some(object)) = (
        local.delete_object,
        touch.delete_object,
        &local.source,
        &object,
    ) {
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
            if image_tags && touch.image_tags {
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
            .is_some_and(|r| r.deprecate_at.is_some())
            && touch.deprecation,
    ) {
        calls.push(call(Op::Ec2EnableImageDeprecation, vec![image.clone()]));
    }
    if let (Some(image), false, true) = (
        image,
        local.sharing.launch_permissions().is_empty(),
        touch.launch,
    ) {
        calls.push(
            local
                .sharing
                .on(call(Op::Ec2ModifyImageAttribute, vec![image])),
        );
    }
    if !local.sharing.volume_permissions().is_empty() && touch.volume {
        calls.push(
            local
                .sharing
                .on(call(Op::Ec2ModifySnapshotAttribute, vec![snapshot])),
        );
    }
    calls
}

/// The calls writing a snapshot with the EBS direct APIs makes.
pub(super) fn direct_calls(region: &str, start: &Start, encryption: &Encryption) -> Vec<Call> {
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
