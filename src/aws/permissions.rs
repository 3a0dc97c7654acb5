//! Who may use published AMIs, in any number of regions: `grant` / `revoke` change launch
//! permissions (and the root snapshot's create-volume permissions), and `ensure-public`
//! finds AMIs tagged for publication that are no longer public and makes them public again.

use aws_sdk_ec2::types::{Filter, ImageState, PermissionGroup, SnapshotAttributeName};
use aws_sdk_ec2::Client;
use serde::Serialize;

use crate::aws::ami::{self, Change, Sharing};
use crate::error::{aws, Error, Result};

/// One AMI whose permissions were changed, printed as a JSON line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Changed {
    pub region: String,
    pub image: String,
    pub snapshot: Option<String>,
}

/// Grants or revokes `sharing` on one AMI (and, with `with_snapshot`, on its root snapshot).
/// Adding what is there or removing what is not changes nothing, so reruns are safe.
pub async fn change_image(
    ec2: &Client,
    region: &str,
    image_id: &str,
    sharing: &Sharing,
    with_snapshot: bool,
    change: Change,
) -> Result<Changed> {
    let snapshot = if with_snapshot {
        ami::root_snapshot(ec2, region, image_id).await?
    } else {
        None
    };
    ami::share(ec2, Some(image_id), snapshot.as_deref(), sharing, change).await?;
    Ok(Changed {
        region: region.to_string(),
        image: image_id.to_string(),
        snapshot,
    })
}

/// What `ensure-public` found not public, and made (or, in a dry run, would make) public.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MadePublic {
    pub region: String,
    pub image: String,
    pub name: String,
    pub snapshot: Option<String>,
    /// `image` (launch permission group all) and/or `snapshot` (createVolumePermission all).
    pub fixed: Vec<&'static str>,
    pub dry_run: bool,
}

/// `KEY=VALUE` tag filters for `ensure-public`.
pub fn parse_tag_filters(tags: &[String]) -> Result<Vec<(String, String)>> {
    if tags.is_empty() {
        return Err(Error::Invalid(
            "name the tag that marks AMIs to keep public: --tag KEY=VALUE (e.g. --tag stream=stable)"
                .into(),
        ));
    }
    tags.iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::Invalid(format!("--tag {t:?} is not KEY=VALUE"))),
        })
        .collect()
}

async fn snapshot_is_public(ec2: &Client, snapshot: &str) -> Result<bool> {
    let out = ec2
        .describe_snapshot_attribute()
        .snapshot_id(snapshot)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .send()
        .await
        .map_err(|e| aws(format!("reading the permissions of {snapshot}"), e))?;
    Ok(out
        .create_volume_permissions()
        .iter()
        .any(|p| p.group() == Some(&PermissionGroup::All)))
}

/// In one region: every available AMI this account owns that carries all `tags` and is not
/// public (or whose root snapshot is not), made public again. Returns what was fixed.
pub async fn ensure_public(
    ec2: &Client,
    region: &str,
    tags: &[(String, String)],
    dry_run: bool,
) -> Result<Vec<MadePublic>> {
    let filters: Vec<Filter> = tags
        .iter()
        .map(|(k, v)| {
            Filter::builder()
                .name(format!("tag:{k}"))
                .values(v.clone())
                .build()
        })
        .collect();
    let out = ec2
        .describe_images()
        .owners("self")
        .set_filters(Some(filters))
        .send()
        .await
        .map_err(|e| aws(format!("listing this account's tagged AMIs in {region}"), e))?;
    let mut fixed = vec![];
    let mut checked = 0;
    for image in out.images() {
        // A pending or failed AMI cannot be made public; the copy or import that owns it
        // finishes (and shares) it.
        if image.state() != Some(&ImageState::Available) {
            continue;
        }
        checked += 1;
        let id = image.image_id().unwrap_or_default();
        let snapshot = ami::root_snapshot_of(image);
        let mut what = vec![];
        if image.public() != Some(true) {
            what.push("image");
        }
        if let Some(snap) = &snapshot {
            if !snapshot_is_public(ec2, snap).await? {
                what.push("snapshot");
            }
        }
        if what.is_empty() {
            continue;
        }
        if !dry_run {
            let sharing = Sharing {
                public: true,
                ..Sharing::default()
            };
            let image_arg = what.contains(&"image").then_some(id);
            let snap_arg = snapshot.as_deref().filter(|_| what.contains(&"snapshot"));
            ami::share(ec2, image_arg, snap_arg, &sharing, Change::Grant).await?;
            tracing::warn!(
                "{region}: {id} was not public ({}); made it public",
                what.join(", ")
            );
        }
        fixed.push(MadePublic {
            region: region.to_string(),
            image: id.to_string(),
            name: image.name().unwrap_or_default().to_string(),
            snapshot,
            fixed: what,
            dry_run,
        });
    }
    tracing::info!(
        "{region}: {checked} tagged AMIs checked, {} not public",
        fixed.len()
    );
    Ok(fixed)
}
