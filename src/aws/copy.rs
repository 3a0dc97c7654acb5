//! CopyImage to one region: what is there already ([`find_in_region`]), the copy, the wait,
//! then the source's tags (AMI and snapshot) and permissions, which CopyImage does not
//! carry. An AMI of the same name already in a region is reused; a failed one is replaced.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::ImageState;
use aws_sdk_ec2::Client;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::aws::ami::{self, Change, FoundImage, Sharing};
use crate::aws::calls::{Call, Op, Resource};
use crate::aws::poll::{poll_until, Grid, Look, POLL};
use crate::aws::propagation::{Age, PATIENCE};
use crate::aws::tags::{self, tag};
use crate::error::{aws, Error, ErrorKind, Result};

/// AWS allows a few concurrent copies per destination region; copies to different regions
/// run side by side, and this many at once is gentle on the source region's API rate.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Every how many polls the display reads how far the copy's snapshot is: its progress is
/// only shown, so it is not asked for as often as the state.
const PERCENT_EVERY: u32 = 3;

/// What is copied along with the image.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub image_id: String,
    pub region: String,
    pub name: String,
    pub description: Option<String>,
    /// The root snapshot, when the AMI has one.
    pub snapshot: Option<String>,
    pub tags: Vec<(String, String)>,
    pub snapshot_tags: Vec<(String, String)>,
    pub sharing: Sharing,
    /// The source's deprecation time: CopyImage does not carry it, so each copy gets it.
    pub deprecate_at: Option<aws_smithy_types::DateTime>,
    pub key: SourceKey,
}

/// The KMS key the source's snapshot is encrypted under, as far as imgpub knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceKey {
    Unencrypted,
    /// Encrypted, under AWS's own key (aws/ebs, which needs no grant) or a customer managed
    /// one: only KMS's DescribeKey tells, so its kms: actions are not checked ahead.
    Unknown,
    /// A customer managed key (ARN): CopyImage uses it on the caller's behalf, so the
    /// preflight checks its kms: actions.
    Customer(String),
}

/// One finished region, printed as `{"<region>":{"ami":…,"snapshot":…}}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub(crate) struct Copied {
    pub ami: String,
    pub snapshot: String,
}

/// Reads what the copies need from the source image.
pub(crate) async fn describe_source(ec2: &Client, region: &str, image_id: &str) -> Result<Source> {
    let image = ami::describe_image(ec2, region, image_id).await?;
    let name = image
        .name()
        .ok_or_else(|| Error::missing(Op::Ec2DescribeImages, "Name"))?
        .to_string();
    let mut sharing = ami::read_launch(ec2, image_id).await?;
    let snapshot = ami::root_snapshot_of(&image);
    let encrypted = image
        .block_device_mappings()
        .iter()
        .any(|m| m.ebs().and_then(|e| e.encrypted()) == Some(true));
    let mut snapshot_tags = vec![];
    if let Some(snap) = &snapshot {
        sharing.snapshot_users = ami::read_volume(ec2, snap).await?.1;
        snapshot_tags = tags::of_snapshot(ec2, snap).await?;
    }
    Ok(Source {
        image_id: image_id.to_string(),
        region: region.to_string(),
        name,
        description: image.description().map(str::to_owned),
        snapshot,
        tags: tags::from_ec2(image.tags()),
        snapshot_tags,
        sharing,
        deprecate_at: match image.deprecation_time() {
            Some(text) => Some(
                aws_smithy_types::DateTime::from_str(
                    text,
                    aws_smithy_types::date_time::Format::DateTime,
                )
                .map_err(|_| Error::missing(Op::Ec2DescribeImages, "a valid DeprecationTime"))?,
            ),
            None => None,
        },
        key: match encrypted {
            true => SourceKey::Unknown,
            false => SourceKey::Unencrypted,
        },
    })
}

/// The same inputs give the same token, so a retried CopyImage does not copy twice;
/// `replacing` (a failed copy being replaced) makes the retry a new request.
fn client_token(source: &Source, region: &str, replacing: Option<&str>) -> String {
    let digest = Sha256::digest(format!(
        "{}\0{}\0{region}\0{}",
        source.region,
        source.image_id,
        replacing.unwrap_or("")
    ));
    format!("imgpub-copy-{}", &hex::encode(digest)[..40])
}

/// Polls that must find no trace of a copy before it counts as gone: as long as a new
/// AMI may take to become visible (EC2 is eventually consistent), so a copy still
/// propagating is never taken for a deregistered one and made again.
const GONE_AFTER_POLLS: u32 = (PATIENCE.as_secs() / POLL.as_secs()) as u32;

/// The copy CopyImage named is deregistered (or never showed up).
fn gone(region: &str, image_id: &str) -> Error {
    Error::failed(
        format!("copy {image_id} in {region}"),
        ErrorKind::Gone,
        None,
        "the copy is deregistered (or never appeared)",
    )
}

/// Waits until the image (a copy, or a new source AMI) is available; returns its root
/// snapshot.
pub(crate) async fn wait_available(
    ec2: &Client,
    region: &str,
    image_id: &str,
    timeout: Duration,
) -> Result<String> {
    let what = format!("copy {image_id} in {region}");
    let timed_out = || {
        format!(
            "not available after {}s; it keeps going in AWS, and a rerun picks it up",
            timeout.as_secs()
        )
    };
    // Looks in a row that found no copy, and the last percent read.
    let missing = std::cell::Cell::new(0);
    let percent = std::cell::Cell::new(None);
    let deadline = Instant::now() + timeout;
    poll_until(&what, Grid::Steady, deadline, timed_out, |n| {
        let (missing, percent, what) = (&missing, &percent, &what);
        async move {
            let found = match ec2.describe_images().image_ids(image_id).send().await {
                Ok(out) => out.images().first().cloned(),
                Err(e) => {
                    let err = aws(
                        Op::Ec2DescribeImages,
                        format!("checking the copy {image_id} in {region}"),
                        e,
                    );
                    if err.kind() != Some(ErrorKind::NotFound) {
                        return Err(err);
                    }
                    None
                }
            };
            // Not there: a new copy not visible yet (EC2 is eventually consistent), or one
            // deregistered since that CopyImage's token still names. Only the latter lasts.
            missing.set(if found.is_none() {
                missing.get() + 1
            } else {
                0
            });
            if missing.get() >= GONE_AFTER_POLLS {
                return Err(gone(region, image_id));
            }
            let Some(image) = found else {
                return Ok(Look::Going {
                    state: "not visible yet".into(),
                    percent: None,
                });
            };
            match image.state() {
                Some(ImageState::Deregistered) => Err(gone(region, image_id)),
                Some(ImageState::Available) => match ami::root_snapshot_of(&image) {
                    Some(value) => Ok(Look::Done {
                        value,
                        said: "available".into(),
                    }),
                    None => Err(Error::failed(
                        what.as_str(),
                        ErrorKind::Other,
                        None,
                        "the copy has no root snapshot",
                    )),
                },
                Some(ImageState::Failed | ImageState::Error | ImageState::Invalid) => {
                    let reason = image
                        .state_reason()
                        .and_then(|r| r.message())
                        .unwrap_or("no reason given");
                    Err(Error::failed(
                        what.as_str(),
                        ErrorKind::TaskFailed,
                        None,
                        format!("AWS ended the copy: {reason}"),
                    ))
                }
                state => {
                    if let Some(snapshot) = ami::root_snapshot_of(&image) {
                        if n % PERCENT_EVERY == 1 {
                            percent.set(snapshot_percent(ec2, &snapshot).await);
                        }
                    }
                    Ok(Look::Going {
                        state: state.map_or("pending", |s| s.as_str()).to_string(),
                        percent: percent.get(),
                    })
                }
            }
        }
    })
    .await
}

/// How far the copy of a pending snapshot is (`Progress`, e.g. `45%`); `None` when it
/// cannot be read, which only makes the display poorer.
async fn snapshot_percent(ec2: &Client, snapshot: &str) -> Option<u64> {
    let out = ec2
        .describe_snapshots()
        .snapshot_ids(snapshot)
        .send()
        .await
        .map_err(|e| {
            let err = aws(Op::Ec2DescribeSnapshots, format!("reading {snapshot}"), e);
            tracing::debug!("{err}");
        })
        .ok()?;
    let snapshot = out.snapshots().first()?;
    // A snapshot that is not pending has nothing to say about the copy's progress.
    if snapshot.state() != Some(&aws_sdk_ec2::types::SnapshotState::Pending) {
        return None;
    }
    let progress = snapshot.progress()?;
    progress.trim_end_matches('%').trim().parse().ok()
}

/// What a region already has of the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InRegion {
    /// Nothing: copy.
    Absent,
    /// An AMI of the same name (a copy finished or under way): reuse it, setting only what
    /// it lacks.
    Present(Box<Earlier>),
    /// An earlier copy that failed: delete it and copy again.
    Failed(Box<FoundImage>),
}

/// A copy an earlier run made, and what of it is not yet as the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Earlier {
    pub found: FoundImage,
    pub lacks: Lacks,
}

/// What of an earlier run's copy is not yet as the source: only that is set again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lacks {
    pub image_tags: bool,
    pub snapshot_tags: bool,
    pub deprecation: bool,
    pub launch: bool,
    pub volume: bool,
}

impl Lacks {
    /// Everything: the copy is new.
    pub(crate) const ALL: Lacks = Lacks {
        image_tags: true,
        snapshot_tags: true,
        deprecation: true,
        launch: true,
        volume: true,
    };

    pub(crate) fn any(self) -> bool {
        self.image_tags || self.snapshot_tags || self.deprecation || self.launch || self.volume
    }

    /// Reads the copy's tags, deprecation and sharing against the source's.
    async fn of(ec2: &Client, source: &Source, copy: &FoundImage, snapshot: &str) -> Result<Lacks> {
        let id = &copy.image_id;
        let sharing = &source.sharing;
        let launch = match sharing.launch_permissions().is_empty() {
            true => false,
            false => crate::aws::unchecked::or_make_again(
                ami::read_launch(ec2, id)
                    .await
                    .map(|now| sharing.launch_missing(&now)),
                &format!(
                    "whether {id} is already shared as its source (ec2:DescribeImageAttribute)"
                ),
            )?,
        };
        let volume = match sharing.volume_permissions().is_empty() {
            true => false,
            false => crate::aws::unchecked::or_make_again(
                ami::read_volume(ec2, snapshot).await.map(|now| sharing.volume_missing(&now)),
                &format!("whether {snapshot} is already shared as its source's (ec2:DescribeSnapshotAttribute)"),
            )?,
        };
        Ok(Lacks {
            image_tags: tags::lacks(&source.tags, &copy.tags),
            snapshot_tags: tags::lacks(
                &source.snapshot_tags,
                &tags::of_snapshot(ec2, snapshot).await?,
            ),
            // AWS keeps it to the minute.
            deprecation: match (source.deprecate_at, copy.deprecation) {
                (None, _) => false,
                (Some(at), Some(now)) => (at.secs() - now.secs()).abs() >= 60,
                (Some(_), None) => true,
            },
            launch,
            volume,
        })
    }
}

/// The calls [`copy_to_region`] makes in `region`, given what is there: the check step of
/// every command that copies. `source.image_id` may be `*`: a source not yet made.
pub(crate) fn calls(source: &Source, region: &str, found: &InRegion) -> Vec<Call> {
    let mut calls = vec![];
    let call = |op, resources| Call::new(op, region, resources);
    let (mut image, mut snapshot) = (Resource::Image(None), Resource::Snapshot(None));
    let mut lacks = Lacks::ALL;
    match found {
        InRegion::Absent => {}
        InRegion::Present(earlier) => {
            image = Resource::Image(Some(earlier.found.image_id.clone()));
            snapshot = Resource::Snapshot(earlier.found.root_snapshot.clone());
            if earlier.found.root_snapshot.is_some() {
                lacks = earlier.lacks;
            }
        }
        InRegion::Failed(failed) => {
            let old = Resource::Image(Some(failed.image_id.clone()));
            calls.push(call(Op::Ec2DeregisterImage, vec![old]));
            if let Some(s) = &failed.root_snapshot {
                let old = Resource::Snapshot(Some(s.clone()));
                calls.push(call(Op::Ec2DeleteSnapshot, vec![old]));
            }
        }
    }
    if !matches!(found, InRegion::Present(_)) {
        let from = Resource::SourceImage {
            region: source.region.clone(),
            id: source.image_id.clone(),
        };
        let mut resources = vec![image.clone(), from, snapshot.clone()];
        match &source.key {
            SourceKey::Customer(key) => resources.push(Resource::Key(key.clone())),
            SourceKey::Unknown => crate::aws::unchecked::note(format!(
                "the kms: actions CopyImage takes on the KMS key that {}'s snapshot is encrypted with (a customer managed key needs them: `imgpub aws policy --for copy --kms-key ARN`)",
                source.name
            )),
            SourceKey::Unencrypted => {}
        }
        let mut copy = call(Op::Ec2CopyImage, resources);
        // Tagged as imgpub's as it is made.
        copy.tags_on_create = true;
        calls.push(copy);
    }
    calls.push(call(Op::Ec2DescribeImages, vec![]));
    let tags = (lacks.image_tags && !source.tags.is_empty())
        || (lacks.snapshot_tags && !source.snapshot_tags.is_empty());
    if tags {
        calls.push(call(
            Op::Ec2CreateTags,
            vec![image.clone(), snapshot.clone()],
        ));
    }
    if source.deprecate_at.is_some() && lacks.deprecation {
        calls.push(call(Op::Ec2EnableImageDeprecation, vec![image.clone()]));
    }
    let sharing = &source.sharing;
    if !sharing.launch_permissions().is_empty() && lacks.launch {
        calls.push(sharing.on(call(Op::Ec2ModifyImageAttribute, vec![image])));
    }
    if !sharing.volume_permissions().is_empty() && lacks.volume {
        calls.push(sharing.on(call(Op::Ec2ModifySnapshotAttribute, vec![snapshot])));
    }
    calls
}

/// Looks for the AMI's name in a region (read-only: the plan step).
pub(crate) async fn find_in_region(ec2: &Client, source: &Source) -> Result<InRegion> {
    Ok(match ami::find_image_by_name(ec2, &source.name).await? {
        None => InRegion::Absent,
        Some(found) if found.failed => InRegion::Failed(Box::new(found)),
        Some(found) => {
            // A copy still under way has no snapshot to read yet: all is set once it is done.
            let lacks = match &found.root_snapshot {
                Some(snapshot) => Lacks::of(ec2, source, &found, snapshot).await?,
                None => Lacks::ALL,
            };
            InRegion::Present(Box::new(Earlier { found, lacks }))
        }
    })
}

/// Snapshot copies a destination region takes at once (not adjustable: EBS User Guide,
/// "Copy an Amazon EBS snapshot").
pub(crate) const SNAPSHOT_COPIES_PER_DESTINATION: usize = 20;

/// The snapshot copies in flight into this region: the snapshots of the account's AMIs
/// still pending here (a copy's AMI is pending until its snapshots are copied).
pub(crate) async fn copies_in_flight(ec2: &Client, region: &str) -> Result<usize> {
    let out = ec2
        .describe_images()
        .owners("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("state")
                .values("pending")
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DescribeImages,
                format!("listing the AMIs still pending in {region}"),
                e,
            )
        })?;
    Ok(out
        .images()
        .iter()
        .flat_map(|i| i.block_device_mappings())
        .filter(|m| m.ebs().and_then(|e| e.snapshot_id()).is_some())
        .count())
}

/// CopyImage with the token for `replacing`; returns the copy's id. A destination already
/// copying as many snapshots as it takes at once (20, not adjustable: EBS User Guide,
/// "Copy an Amazon EBS snapshot") refuses with ResourceLimitExceeded: the copy then waits
/// for a free slot, up to `timeout`, asking again as a wait looks.
async fn copy_image(
    ec2: &Client,
    source: &Source,
    region: &str,
    replacing: Option<&str>,
    timeout: Duration,
) -> Result<String> {
    let at_limit = |e: &Error| e.code() == Some("ResourceLimitExceeded");
    match start_copy(ec2, source, region, replacing).await {
        Err(e) if at_limit(&e) => tracing::info!(
            "{region} is copying as many snapshots as it takes at once; waiting for a free slot"
        ),
        started => return started,
    }
    let what = format!(
        "{region}: a free snapshot copy slot for {}",
        source.image_id
    );
    let deadline = Instant::now() + timeout;
    let timed_out = || {
        format!("{region} had no free snapshot copy slot within the copy timeout ({}s); a rerun tries again", timeout.as_secs())
    };
    poll_until(&what, Grid::Steady, deadline, timed_out, |_| async {
        match start_copy(ec2, source, region, replacing).await {
            Ok(id) => Ok(Look::Done {
                value: id,
                said: "started".into(),
            }),
            Err(e) if at_limit(&e) => Ok(Look::Going {
                state: "every snapshot copy slot taken".into(),
                percent: None,
            }),
            Err(e) => Err(e),
        }
    })
    .await
}

/// One CopyImage request.
async fn start_copy(
    ec2: &Client,
    source: &Source,
    region: &str,
    replacing: Option<&str>,
) -> Result<String> {
    // Tagged as imgpub's as it is made, AMI and snapshot (CopyImage API reference,
    // TagSpecifications): the scoped policies let the publisher change only what carries it.
    let managed = |kind: aws_sdk_ec2::types::ResourceType| {
        aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(kind)
            .set_tags(Some(tags::to_ec2(&tags::with_managed(&[]))))
            .build()
    };
    let out = ec2
        .copy_image()
        .source_region(&source.region)
        .source_image_id(&source.image_id)
        .name(&source.name)
        .tag_specifications(managed(aws_sdk_ec2::types::ResourceType::Image))
        .tag_specifications(managed(aws_sdk_ec2::types::ResourceType::Snapshot))
        .set_description(source.description.clone())
        .client_token(client_token(source, region, replacing))
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2CopyImage,
                format!("copying {} to {region}", source.image_id),
                e,
            )
        })?;
    let id = out
        .image_id()
        .ok_or_else(|| Error::missing(Op::Ec2CopyImage, "ImageId"))?
        .to_string();
    tracing::info!("{region}: copying {} as {id}", source.image_id);
    Ok(id)
}

/// Copies to one region (or reuses what `found` says is there), waits, and makes the copy
/// look like the source (tags, permissions).
pub(crate) async fn copy_to_region(
    ec2: &Client,
    source: &Source,
    region: &str,
    found: &InRegion,
    timeout: Duration,
) -> Result<Copied> {
    let replacing = match found {
        InRegion::Failed(failed) => {
            tracing::info!(
                "{region}: an earlier copy {} failed; copying again",
                failed.image_id
            );
            let snapshot = failed.root_snapshot.as_deref();
            ami::deregister_image(ec2, &failed.image_id, snapshot, true).await?;
            Some(failed.image_id.as_str())
        }
        _ => None,
    };
    let (image_id, snapshot) = match found {
        InRegion::Present(earlier) => {
            let id = &earlier.found.image_id;
            tracing::info!("{region}: AMI {id} named {} is already there", source.name);
            (id.clone(), wait_available(ec2, region, id, timeout).await?)
        }
        _ => {
            let id = copy_image(ec2, source, region, replacing, timeout).await?;
            match wait_available(ec2, region, &id, timeout).await {
                // The token named a copy deregistered since (delete-image): a new token
                // that names the copy it replaces, so a rerun finds this one again.
                Err(e) if e.kind() == Some(ErrorKind::Gone) && replacing.is_none() => {
                    tracing::info!(
                        "{region}: the earlier copy {id} is deregistered; copying again"
                    );
                    let id = copy_image(ec2, source, region, Some(&id), timeout).await?;
                    let snapshot = wait_available(ec2, region, &id, timeout).await?;
                    (id, snapshot)
                }
                waited => (id, waited?),
            }
        }
    };
    // What an earlier run's copy already has is left as it is: a rerun changes nothing.
    let lacks = match found {
        InRegion::Present(earlier) if earlier.found.root_snapshot.is_some() => earlier.lacks,
        _ => Lacks::ALL,
    };
    // The copy and its snapshot were made a moment ago (or by an earlier run).
    if lacks.image_tags {
        tag(ec2, &image_id, &source.tags, Age::New).await?;
    }
    if lacks.snapshot_tags {
        tag(ec2, &snapshot, &source.snapshot_tags, Age::New).await?;
    }
    if let (Some(at), true) = (source.deprecate_at, lacks.deprecation) {
        ami::enable_deprecation(ec2, &image_id, at, Age::New).await?;
    }
    let sharing = Sharing {
        public: source.sharing.public && (lacks.launch || lacks.volume),
        launch_users: match lacks.launch {
            true => source.sharing.launch_users.clone(),
            false => vec![],
        },
        snapshot_users: match lacks.volume {
            true => source.sharing.snapshot_users.clone(),
            false => vec![],
        },
        ..source.sharing.clone()
    };
    let (image, volume) = (
        lacks.launch.then_some(&*image_id),
        lacks.volume.then_some(&*snapshot),
    );
    ami::share(ec2, image, volume, &sharing, Change::Grant, Age::New).await?;
    Ok(Copied {
        ami: image_id,
        snapshot,
    })
}
