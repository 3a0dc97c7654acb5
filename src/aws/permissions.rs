//! Who may use published AMIs, in any number of regions: `grant` / `revoke` change launch
//! permissions (and the root snapshot's create-volume permissions), and `ensure-public`
//! finds AMIs tagged for publication that are no longer public and makes them public again.

use aws_sdk_ec2::types::{Filter, ImageState, PermissionGroup, SnapshotAttributeName};
use aws_sdk_ec2::Client;
use serde::Serialize;

use crate::aws::ami::{self, Change, Sharing};
use crate::aws::calls::Op;
use crate::aws::propagation::Age;
use crate::aws::Status;
use crate::error::{aws, Error, Result};

/// One AMI whose permissions `grant`/`revoke` change, printed as a JSON line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Changed {
    pub region: String,
    pub image: String,
    pub snapshot: Option<String>,
    /// `changed`, or `unchanged` when the AMI (and snapshot) already were as asked.
    pub status: Status,
    /// The AMI's launch permissions are not yet as asked.
    #[serde(skip)]
    pub launch: bool,
    /// The snapshot's volume permissions are not yet as asked.
    #[serde(skip)]
    pub volume: bool,
}

/// Grants or revokes `sharing` on one AMI (and on `changed.snapshot`, its root snapshot,
/// when the plan looked it up), where the plan found it not yet so.
pub(crate) async fn change_image(
    ec2: &Client,
    changed: &Changed,
    sharing: &Sharing,
    change: Change,
) -> Result<()> {
    let image = changed.launch.then_some(changed.image.as_str());
    let snapshot = changed.snapshot.as_deref().filter(|_| changed.volume);
    if image.is_none() && snapshot.is_none() {
        return Ok(());
    }
    ami::share(ec2, image, snapshot, sharing, change, Age::Known).await
}

impl std::fmt::Display for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in {}", self.image, self.region)
    }
}

/// What was not public: printed as `"image"` / `"snapshot"`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NotPublic {
    /// The AMI's launch permissions lack group `all`.
    Image,
    /// The root snapshot's create-volume permissions lack group `all`.
    Snapshot,
}

/// What `ensure-public` found not public, and made public.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct MadePublic {
    pub region: String,
    pub image: String,
    pub name: String,
    pub snapshot: Option<String>,
    /// `image` (launch permission group all) and/or `snapshot` (createVolumePermission all).
    pub fixed: Vec<NotPublic>,
}

/// The AMIs `ensure-public` looks at: those carrying every tag (ore's `production=true` by
/// default), or one AMI (`--ami`, as ore's: whatever its tags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selection {
    Tagged(Vec<(String, String)>),
    Image(String),
}

pub(crate) fn selection(tags: &[String], ami: Option<&str>) -> Result<Selection> {
    match (ami, tags.is_empty()) {
        (Some(_), false) => Err(Error::Invalid(
            "pass --ami or --tag, not both: --ami names the AMI whatever its tags".into(),
        )),
        (Some(id), true) => {
            crate::aws::images::check_image_id("--ami", id)?;
            Ok(Selection::Image(id.to_string()))
        }
        (None, true) => Ok(Selection::Tagged(vec![(
            "production".to_string(),
            "true".to_string(),
        )])),
        (None, false) => Ok(Selection::Tagged(crate::aws::tags::parse("--tag", tags)?)),
    }
}

pub(crate) async fn snapshot_is_public(ec2: &Client, snapshot: &str) -> Result<bool> {
    let out = ec2
        .describe_snapshot_attribute()
        .snapshot_id(snapshot)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DescribeSnapshotAttribute,
                format!("reading the permissions of {snapshot}"),
                e,
            )
        })?;
    Ok(out
        .create_volume_permissions()
        .iter()
        .any(|p| p.group() == Some(&PermissionGroup::All)))
}

/// What [`find_not_public`] saw in one region.
#[derive(Debug, Default)]
pub(crate) struct Looked {
    /// Available AMIs selected.
    pub checked: usize,
    /// Those of them not public, with what is not.
    pub not_public: Vec<MadePublic>,
}

/// In one region: every available AMI this account owns that carries all `tags` and is not
/// public (or whose root snapshot is not). Read-only: the plan step of `ensure-public`.
pub(crate) async fn find_not_public(
    ec2: &Client,
    region: &str,
    selection: &Selection,
) -> Result<Looked> {
    // Deprecated AMIs too: AWS takes deprecated public AMIs private, the case this is for.
    let call = ec2
        .describe_images()
        .owners("self")
        .include_deprecated(true);
    let call = match selection {
        Selection::Tagged(tags) => call.set_filters(Some(
            tags.iter()
                .map(|(k, v)| {
                    Filter::builder()
                        .name(format!("tag:{k}"))
                        .values(v.clone())
                        .build()
                })
                .collect(),
        )),
        Selection::Image(id) => call.image_ids(id),
    };
    let what = match selection {
        Selection::Tagged(_) => format!("listing this account's tagged AMIs in {region}"),
        Selection::Image(id) => format!("looking up AMI {id} in {region}"),
    };
    let out = match call
        .send()
        .await
        .map_err(|e| aws(Op::Ec2DescribeImages, what, e))
    {
        // EC2 answers a named AMI that is not there with InvalidAMIID.NotFound.
        Err(e) if e.kind() == Some(crate::error::ErrorKind::NotFound) => {
            if let Selection::Image(id) = selection {
                return Err(Error::Invalid(format!(
                    "AMI {id} does not exist in {region}; check the id, or pass the region it is in with --region"
                )));
            }
            return Err(e);
        }
        out => out?,
    };
    if let (Selection::Image(id), []) = (selection, out.images()) {
        return Err(Error::Invalid(format!(
            "AMI {id} is not an AMI of this account in {region}"
        )));
    }
    let mut found = vec![];
    let mut checked = 0;
    for image in out.images() {
        // A pending or failed AMI cannot be made public; the copy or import that owns it
        // finishes (and shares) it.
        if image.state() != Some(&ImageState::Available) {
            continue;
        }
        checked += 1;
        let snapshot = ami::root_snapshot_of(image);
        let mut what = vec![];
        if image.public() != Some(true) {
            what.push(NotPublic::Image);
        }
        if let Some(snap) = &snapshot {
            if !snapshot_is_public(ec2, snap).await? {
                what.push(NotPublic::Snapshot);
            }
        }
        if what.is_empty() {
            continue;
        }
        found.push(MadePublic {
            region: region.to_string(),
            image: ami::image_id_of(image)?,
            name: image.name().unwrap_or("").to_string(),
            snapshot,
            fixed: what,
        });
    }
    tracing::info!(
        "{region}: {checked} tagged AMIs checked, {} not public",
        found.len()
    );
    Ok(Looked {
        checked,
        not_public: found,
    })
}

/// Makes what [`find_not_public`] found public again (the apply step).
pub(crate) async fn make_public(ec2: &Client, found: &MadePublic) -> Result<MadePublic> {
    let sharing = Sharing {
        public: true,
        ..Sharing::default()
    };
    let image = found
        .fixed
        .contains(&NotPublic::Image)
        .then_some(found.image.as_str());
    let snapshot = found
        .snapshot
        .as_deref()
        .filter(|_| found.fixed.contains(&NotPublic::Snapshot));
    ami::share(ec2, image, snapshot, &sharing, Change::Grant, Age::Known).await?;
    // The JSON line says it too; stderr stays quiet at the default level, as ore's.
    tracing::info!(
        "{}: {} was not public ({}); made it public",
        found.region,
        found.image,
        found
            .fixed
            .iter()
            .map(|f| match f {
                NotPublic::Image => "image",
                NotPublic::Snapshot => "snapshot",
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(found.clone())
}
