//! A snapshot written straight from the image with the EBS direct APIs (StartSnapshot,
//! PutSnapshotBlock, CompleteSnapshot): no bucket, no import role, no conversion queue.
//!
//! Blocks the image never wrote (holes in a raw file, unallocated VMDK grains) are not
//! read or sent. Written blocks that are all zeros are not sent to an unencrypted snapshot,
//! which reads unwritten blocks as zeros; they are sent to an encrypted one, which reads an
//! unwritten block as the decryption of zeros, i.e. garbage (coldsnap#395; coldsnap sends
//! every zero block by default since 0.8). `--send-zero-blocks` sends them to an
//! unencrypted snapshot too, for AMIs that will be launched as encrypted volumes
//! (coldsnap#470). Each block carries its SHA-256; completion
//! carries the count and the LINEAR aggregate (SHA-256 over the blocks' digests in index
//! order), so EBS refuses a snapshot that is not the image.
//!
//! Reruns: the snapshot is tagged `Name=<name>` and `imgpub:content=<content id>` (the
//! file's size, mtime and format). A completed one is reused. A pending one is resumed from
//! the local block journal (`ebs_journal`: EBS answers no read of a pending snapshot), only
//! the blocks it does not list being sent; without a journal (another machine, a cleared
//! cache) the pending snapshot is deleted and written anew, never left. An `error` one is
//! deleted and written again. StartSnapshot's ClientToken comes from the same inputs, so a
//! retried start returns the snapshot the lost answer named.
//!
//! Delta (`--parent`): a snapshot started with `ParentSnapshotId` inherits every block of
//! its parent it is not written (EBS User Guide, "How Amazon EBS snapshots work": later
//! snapshots "include only changed and new data blocks"). The parent's block map
//! (`block_map`) says what it holds, so only the blocks whose digest differs are sent, and
//! zeros where the parent has data and the image a hole or zeros (else the child would
//! read the parent's stale data). A parent that cannot be used (missing, another size,
//! another key, no map here) means a whole upload, and the run says why. Every completed
//! snapshot's map is kept, for the next release.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm, Tag};
use base64::Engine;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::aws::block_map::{self, BlockMap, ZERO_BLOCK_DIGEST};
use crate::aws::buffers::Buffers;
use crate::aws::calls::Op;
use crate::aws::ebs_journal::{self, Journal, Record};
use crate::aws::import::Encryption;
use crate::aws::poll::{poll_until, Grid, Look};
use crate::aws::propagation::{naming, Age};
use crate::error::{aws, Error, ErrorKind, Result};
use crate::image::{Disk, ImageInfo, Reader, BLOCK_SIZE};
use crate::progress::Progress;
use crate::sha256::{Kernel, Sha256Lanes};

/// Blocks read and sent at once (memory is about this × 512 KiB).
pub const DEFAULT_BLOCKS_IN_FLIGHT: u16 = 32;
/// The tag that ties a snapshot to the image content it holds.
pub(crate) const CONTENT_TAG: &str = "imgpub:content";
/// The tag `--parent auto` finds a release's predecessor by: stream, architecture, size.
pub(crate) const LINEAGE_TAG: &str = "imgpub:lineage";
/// A block of zeros, written where a parent has data and the image has none.
static ZERO_BLOCK: [u8; BLOCK_SIZE] = [0; BLOCK_SIZE];
/// How long EBS keeps a started snapshot pending before it ends in `error` (StartSnapshot's
/// Timeout, minutes; AWS's default is 60): long enough for a rerun to resume it.
const SNAPSHOT_TIMEOUT_MINUTES: i32 = 24 * 60;

/// What to write, decided before any call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SnapshotRequest {
    pub path: PathBuf,
    pub info: ImageInfo,
    pub name: String,
    /// The image's identity (see [`content_id`]).
    pub content: String,
    pub volume_size_gib: i32,
    /// User tags; `Name` and [`CONTENT_TAG`] are added.
    pub tags: Vec<(String, String)>,
    pub encryption: Encryption,
    pub blocks_in_flight: usize,
    /// Send written blocks that are all zeros (always for an encrypted snapshot).
    pub send_zero_blocks: bool,
    /// How long to wait for the snapshot to complete after CompleteSnapshot.
    pub timeout: Duration,
    /// A new snapshot even where one of the same content exists.
    pub force: bool,
    /// The snapshot to write this one on top of, as asked (`--parent`).
    pub parent: Option<ParentAsk>,
    /// What the plan found to write it on ([`choose_base`]).
    pub base: Base,
    /// Where `--parent auto` looks: `<stream>/<arch>/<GiB>` (`-` for a stream not tagged).
    pub lineage: String,
    /// `--block-maps DIR` (a release: the record's directory): block maps are also kept
    /// there, and looked for there after the cache, so a CI runner whose cache is gone
    /// finds the previous release's map among its kept files.
    pub maps_also: Option<PathBuf>,
}

/// `--parent`: a snapshot, or the newest of this image's lineage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParentAsk {
    Snapshot(String),
    Auto,
}

/// What a new snapshot is written on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Base {
    /// Every block of the image is sent; `why` a parent asked for is not used.
    Whole { why: Option<String> },
    /// A child of the map's snapshot: only the blocks that differ from it are sent.
    Parent(Arc<BlockMap>),
}

/// What [`write_snapshot`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    pub snapshot: String,
    /// The parent it was written on, if any.
    pub parent: Option<String>,
    /// Blocks sent by this run.
    pub sent: u64,
    /// Blocks the snapshot holds without this run sending them: inherited from the parent,
    /// or sent by an earlier run (the block journal).
    pub kept: u64,
}

/// How the snapshot is begun, from what earlier runs left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    New,
    /// A pending snapshot of this name and content with its block journal here: the blocks
    /// the journal does not list are written.
    Resume(String),
    /// A pending snapshot of this name and content whose journal is not on this machine:
    /// EBS cannot say what a pending snapshot holds, so it is deleted and a new one written.
    Abandon(String),
    /// An `error` snapshot of this name and content: deleted, then a new one written.
    Replace(String),
}

/// What [`find`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// A completed snapshot of this name and content.
    Completed(String),
    Write(Start),
}

/// The identity of what a snapshot holds, for reruns: the image's size, modification time
/// and format (hashing the content would read the whole image before the first block is
/// sent), the encryption and whether zero blocks are sent. Blocking.
pub(crate) fn content_id(
    path: &std::path::Path,
    info: &ImageInfo,
    encryption: &Encryption,
    send_zero_blocks: bool,
) -> Result<String> {
    let meta =
        std::fs::metadata(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(format!(
        "{}:{mtime}:{}:{}:{send_zero_blocks}",
        info.file_size,
        info.format.name(),
        encryption.token_part()
    ));
    Ok(hex::encode(&h.finalize()[..12]))
}

impl SnapshotRequest {
    /// A token of this StartSnapshot call's own: the SDK's retries of the call carry it, so
    /// a retry after a lost answer returns the snapshot the first attempt started. It is not
    /// shared across runs: a token reused by a later run would return the same snapshot id
    /// even after that snapshot was deleted (a replaced one, `delete-image`), and every
    /// block sent to it would be refused. A later run finds an earlier one's snapshot by
    /// its tags instead.
    fn client_token(&self, replaces: Option<&str>) -> String {
        let mut h = Sha256::new();
        for part in [
            self.name.as_str(),
            &self.content,
            &self.volume_size_gib.to_string(),
            self.encryption.token_part(),
            replaces.unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.update(now.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        format!("imgpub-{}", hex::encode(&h.finalize()[..20]))
    }

    fn all_tags(&self) -> Vec<Tag> {
        let own = [
            ("Name", self.name.as_str()),
            (CONTENT_TAG, self.content.as_str()),
            (LINEAGE_TAG, self.lineage.as_str()),
        ];
        let user = self
            .tags
            .iter()
            .filter(|(k, _)| k != "Name" && k != CONTENT_TAG && k != LINEAGE_TAG)
            .map(|(k, v)| (k.as_str(), v.as_str()));
        own.into_iter()
            .chain(user)
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect()
    }
}

/// Looks for what an earlier run left: the newest snapshot of this name and content.
pub(crate) async fn find(ec2: &aws_sdk_ec2::Client, req: &SnapshotRequest) -> Result<Found> {
    use aws_sdk_ec2::types::{Filter, SnapshotState};
    if req.force {
        return Ok(Found::Write(Start::New));
    }
    let out = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(Filter::builder().name("tag:Name").values(&req.name).build())
        .filters(
            Filter::builder()
                .name(format!("tag:{CONTENT_TAG}"))
                .values(&req.content)
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DescribeSnapshots,
                format!("looking for a snapshot named {}", req.name),
                e,
            )
        })?;
    let mut found: Vec<_> = out
        .snapshots()
        .iter()
        .filter_map(|s| Some((s.start_time().copied(), s.snapshot_id()?, s.state()?)))
        .collect();
    found.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(match found.first() {
        None => Found::Write(Start::New),
        Some((_, id, SnapshotState::Completed)) => Found::Completed(id.to_string()),
        Some((_, id, SnapshotState::Error)) => Found::Write(Start::Replace(id.to_string())),
        Some((_, id, _)) => {
            let region = ec2.config().region().map(|r| r.to_string());
            let journal = match (ebs_journal::cache_dir(), region) {
                (Some(dir), Some(region)) => {
                    let path = ebs_journal::path_for(&dir, &region, id);
                    tokio::fs::try_exists(path).await.unwrap_or(false)
                }
                _ => false,
            };
            Found::Write(match journal {
                true => Start::Resume(id.to_string()),
                false => Start::Abandon(id.to_string()),
            })
        }
    })
}

/// What the new snapshot is written on: the parent `--parent` names (or, for `auto`, the
/// newest completed snapshot of this lineage), when it can be used; else the whole image,
/// with the reason. Read-only.
pub(crate) async fn choose_base(ec2: &aws_sdk_ec2::Client, req: &SnapshotRequest) -> Result<Base> {
    use aws_sdk_ec2::types::Filter;
    let Some(ask) = &req.parent else {
        return Ok(Base::Whole { why: None });
    };
    let whole = |why: String| {
        tracing::warn!("--parent: writing the whole image: {why}");
        Ok(Base::Whole { why: Some(why) })
    };
    let region = region_of(ec2);
    let Some(dir) = ebs_journal::cache_dir() else {
        return whole("no cache directory holds block maps (set IMGPUB_CACHE_DIR)".into());
    };
    let what = "looking for the parent snapshot".to_string();
    let request = ec2.describe_snapshots().owner_ids("self");
    let request = match ask {
        ParentAsk::Snapshot(id) => request.snapshot_ids(id),
        ParentAsk::Auto => request
            .filters(
                Filter::builder()
                    .name(format!("tag:{LINEAGE_TAG}"))
                    .values(&req.lineage)
                    .build(),
            )
            .filters(Filter::builder().name("status").values("completed").build()),
    };
    let found = match request.send().await {
        Ok(out) => out.snapshots().to_vec(),
        Err(e) => {
            let err = aws(Op::Ec2DescribeSnapshots, &what, e);
            match err.code() {
                Some("InvalidSnapshot.NotFound") => vec![],
                _ => return Err(err),
            }
        }
    };
    let mut found: Vec<_> = found
        .into_iter()
        .filter(|s| s.snapshot_id().is_some())
        .collect();
    found.sort_by_key(|s| std::cmp::Reverse(s.start_time().copied()));
    if found.is_empty() {
        return whole(match ask {
            ParentAsk::Snapshot(id) => {
                format!("parent {id} is not a snapshot of this account in {region}")
            }
            ParentAsk::Auto => format!(
                "no completed snapshot of lineage {} in {region} (tag {LINEAGE_TAG})",
                req.lineage
            ),
        });
    }
    let mut reasons = vec![];
    for snapshot in &found {
        let id = snapshot.snapshot_id().unwrap_or_default().to_string();
        if let Err(why) = usable(snapshot, req) {
            reasons.push(why);
            continue;
        }
        let dirs = map_dirs(&dir, req);
        match load_map(dirs.clone(), &region, &id).await {
            Ok(Some(map)) if map.volume_size_gib == req.volume_size_gib => {
                tracing::info!(
                    "--parent: writing on {id}: only the blocks that differ from it are sent"
                );
                return Ok(Base::Parent(Arc::new(map)));
            }
            Ok(Some(_)) => reasons.push(format!("{id}'s block map is of another volume size")),
            Ok(None) => reasons.push(format!(
                "{id} has no block map here ({}); `imgpub aws verify-snapshot --snapshot {id}` rebuilds it by reading the snapshot",
                dirs.iter()
                    .map(|d| block_map::path_for(d, &region, &id).display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Err(e) => reasons.push(e.to_string()),
        }
        if matches!(ask, ParentAsk::Snapshot(_)) || reasons.len() >= 3 {
            break;
        }
    }
    whole(reasons.join("; "))
}

/// Whether a child of `snapshot` can be the snapshot asked for: completed, of the same
/// size, and encrypted as asked. A child takes its parent's encryption: StartSnapshot
/// refuses `Encrypted` beside `ParentSnapshotId`, and "The snapshot is encrypted using the
/// same KMS key as the parent snapshot" (EBS User Guide, "Encryption outcomes for EBS
/// direct APIs").
fn usable(
    snapshot: &aws_sdk_ec2::types::Snapshot,
    req: &SnapshotRequest,
) -> std::result::Result<(), String> {
    use aws_sdk_ec2::types::SnapshotState;
    let id = snapshot.snapshot_id().unwrap_or_default();
    if snapshot.state() != Some(&SnapshotState::Completed) {
        return Err(format!(
            "{id} is {}, not completed",
            snapshot.state().map_or("unknown", |s| s.as_str())
        ));
    }
    let gib = snapshot.volume_size().unwrap_or_default();
    if gib != req.volume_size_gib {
        return Err(format!(
            "{id} is a {gib} GiB snapshot, and this one is {} GiB",
            req.volume_size_gib
        ));
    }
    let key = snapshot.kms_key_id();
    match (&req.encryption, snapshot.encrypted().unwrap_or(false)) {
        (Encryption::None, false) => Ok(()),
        (Encryption::None, true) => Err(format!(
            "{id} is encrypted, and a child takes its parent's key; this image is asked unencrypted"
        )),
        (Encryption::Key(asked), true) if key == Some(asked.as_str()) => Ok(()),
        (Encryption::Key(asked), true) => Err(format!(
            "{id} is encrypted with another key ({}); a child takes its parent's key, not --kms-key {asked}",
            key.unwrap_or("unknown")
        )),
        (Encryption::DefaultKey, true) => Err(format!(
            "a child takes its parent's key ({}), which cannot be told to be the account's default key: pass that key as --kms-key",
            key.unwrap_or("unknown")
        )),
        (Encryption::Key(_) | Encryption::DefaultKey, false) => Err(format!(
            "{id} is unencrypted, and a child of it cannot be encrypted"
        )),
    }
}

fn region_of(ec2: &aws_sdk_ec2::Client) -> String {
    ec2.config()
        .region()
        .map_or_else(|| "no-region".to_string(), |r| r.to_string())
}

/// What a write on `base` would send, for `release plan`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Estimate {
    pub parent: String,
    /// Blocks that differ from the parent's (zeros over its data included).
    pub blocks_to_send: u64,
    /// Blocks the image holds data in.
    pub data_blocks: u64,
    pub bytes_to_send: u64,
    /// What the snapshot stores: the blocks written to it.
    pub storage_added_bytes: u64,
}

/// Reads and hashes the image's data blocks and counts those `base` does not hold, as
/// [`write_snapshot`] would send them. Blocking: it reads the whole image.
pub(crate) fn estimate(req: &SnapshotRequest, base: &BlockMap) -> Result<Estimate> {
    let disk = Disk::open(&req.path, &req.info)?;
    let data = disk.data_blocks()?;
    let zeros_sent = req.send_zero_blocks || base.encrypted;
    let mut reader = Reader::default();
    let mut buf = vec![0u8; BLOCK_SIZE];
    let (mut send, mut data_blocks) = (0u64, 0u64);
    let mut seen = std::collections::BTreeSet::new();
    for &index in &data {
        disk.read_block(index, &mut buf, &mut reader)?;
        let Ok(index) = i32::try_from(index) else {
            continue;
        };
        seen.insert(index);
        let zero = is_zero(&buf);
        data_blocks += u64::from(!zero);
        let digest: [u8; 32] = match (zero, zeros_sent) {
            (true, false) => ZERO_BLOCK_DIGEST,
            _ => Sha256::digest(&buf).into(),
        };
        send += u64::from(!base.holds(index, &digest));
    }
    // The parent's data where the image has a hole: zeros are written there.
    send += base
        .blocks
        .iter()
        .filter(|(i, d)| **d != ZERO_BLOCK_DIGEST && !seen.contains(i))
        .count() as u64;
    let bytes = send * BLOCK_SIZE as u64;
    Ok(Estimate {
        parent: base.snapshot.clone(),
        blocks_to_send: send,
        data_blocks,
        bytes_to_send: bytes,
        storage_added_bytes: bytes,
    })
}

/// Writes the snapshot and waits until it is completed; keeps its block map.
pub(crate) async fn write_snapshot(
    ebs: &aws_sdk_ebs::Client,
    ec2: &aws_sdk_ec2::Client,
    req: &SnapshotRequest,
    start: &Start,
) -> Result<Written> {
    let path = req.path.clone();
    let info = req.info.clone();
    let disk = Arc::new(crate::blocking::run(move || Disk::open(&path, &info)).await?);
    let region = ebs
        .config()
        .region()
        .map_or_else(|| "no-region".to_string(), |r| r.to_string());
    let dir = ebs_journal::cache_dir().ok_or_else(|| {
        Error::Setup(
            "no cache directory for the EBS direct block journal: set IMGPUB_CACHE_DIR or HOME"
                .into(),
        )
    })?;
    {
        // Before any snapshot is started: one that could not be journaled could not be
        // resumed, and each rerun would leave another behind.
        let (dir, region) = (dir.clone(), region.clone());
        crate::blocking::run(move || ebs_journal::ensure_writable(&dir, &region)).await?;
    }
    let planned = match &req.base {
        Base::Parent(map) => Some(Arc::clone(map)),
        Base::Whole { .. } => None,
    };
    let (snapshot, journal, record, base) = match start {
        Start::Resume(id) | Start::Abandon(id) => {
            let found = match start {
                Start::Resume(_) => resume(&dir, req, &region, id).await?,
                _ => None,
            };
            match found {
                Some((journal, record, base)) => {
                    tracing::info!(
                        "resuming snapshot {id}: {} blocks already written (block journal)",
                        record.blocks.len()
                    );
                    (id.clone(), journal, record, base)
                }
                None => {
                    // EBS cannot say what a pending snapshot holds, and leaving it would
                    // leave a snapshot no AMI uses: delete it and write a new one.
                    tracing::warn!(
                        "snapshot {id} was left pending by a run whose block journal (or its parent's block map) is not on this machine (in {}); EBS cannot list a pending snapshot's blocks, so it is deleted and written anew",
                        dir.display()
                    );
                    crate::aws::ami::delete_snapshot(ec2, id, true).await?;
                    let (new, base) = start_snapshot(ebs, req, Some(id), planned).await?;
                    let (id, journal, record) =
                        new_journal(&dir, &region, new, &req.content, &base).await?;
                    (id, journal, record, base)
                }
            }
        }
        Start::Replace(old) => {
            tracing::warn!("snapshot {old} of this image ended in error; writing it again");
            crate::aws::ami::delete_snapshot(ec2, old, true).await?;
            {
                let (dir, region, old) = (dir.clone(), region.clone(), old.clone());
                crate::blocking::run(move || {
                    ebs_journal::forget(&dir, &region, &old);
                    Ok(())
                })
                .await?;
            }
            let (new, base) = start_snapshot(ebs, req, Some(old), planned).await?;
            let (id, journal, record) =
                new_journal(&dir, &region, new, &req.content, &base).await?;
            (id, journal, record, base)
        }
        Start::New => {
            let (new, base) = start_snapshot(ebs, req, None, planned).await?;
            // A retried start with the same ClientToken names a snapshot an earlier run
            // began: its journal, if any, still holds.
            match resume(&dir, req, &region, &new.0).await? {
                Some((journal, record, base)) => (new.0, journal, record, base),
                None => {
                    let (id, journal, record) =
                        new_journal(&dir, &region, new, &req.content, &base).await?;
                    (id, journal, record, base)
                }
            }
        }
    };
    let journal = Arc::new(journal);
    let (digests, sent, inherited) = if record.completing {
        // CompleteSnapshot went out before the stop: the blocks are all there.
        (record.blocks.into_iter().collect(), 0, 0)
    } else {
        let reading = Arc::clone(&disk);
        let mut indices = crate::blocking::run(move || reading.data_blocks()).await?;
        if let Some(base) = &base {
            // Where the parent has data and the image none, zeros are written.
            indices.extend(
                base.blocks
                    .iter()
                    .filter(|(_, d)| **d != ZERO_BLOCK_DIGEST)
                    .filter_map(|(i, _)| u64::try_from(*i).ok()),
            );
            indices.sort_unstable();
            indices.dedup();
        }
        put_blocks(
            ebs,
            &snapshot,
            disk,
            indices,
            &record,
            &journal,
            req,
            base.as_deref(),
        )
        .await?
    };
    {
        let journal = Arc::clone(&journal);
        crate::blocking::run(move || journal.completing()).await?;
    }
    match complete(ebs, &snapshot, &digests).await {
        Ok(()) => {}
        Err(Completion::Refused(e)) => {
            // EBS refused the blocks' count or checksum: this snapshot cannot be finished.
            tracing::warn!("deleting snapshot {snapshot}: EBS refused to complete it");
            if let Err(d) = crate::aws::ami::delete_snapshot(ec2, &snapshot, true).await {
                tracing::warn!("could not delete snapshot {snapshot}: {d}");
            }
            remove_journal(journal).await?;
            return Err(e);
        }
        Err(Completion::Failed(e)) => return Err(e),
    }
    wait_completed(ec2, &snapshot, req.timeout).await?;
    // The map goes before the journal: a stop between them leaves both, never neither.
    let map = BlockMap::of_child(
        &snapshot,
        req.volume_size_gib,
        record.encrypted,
        base.as_deref(),
        &digests,
    );
    let map = Arc::new(map);
    for at in map_dirs(&dir, req) {
        let (map, region) = (map.clone(), region.clone());
        let kept = crate::blocking::run(move || map.save(&at, &region)).await;
        match kept {
            Ok(path) => tracing::info!("block map of {snapshot} kept in {}", path.display()),
            // The snapshot is fine; only a later --parent on it will send every block.
            Err(e) => tracing::warn!("{e}; a later --parent {snapshot} writes the whole image"),
        }
    }
    remove_journal(journal).await?;
    Ok(Written {
        snapshot,
        parent: base.map(|b| b.snapshot.clone()),
        sent,
        kept: inherited + (digests.len() as u64).saturating_sub(sent),
    })
}

/// The journal an earlier run left for `snapshot`, with the map of the parent it names:
/// `None` when there is no journal, or its parent's map is gone (what was skipped as the
/// parent's could no longer be told from what is missing).
async fn resume(
    dir: &std::path::Path,
    req: &SnapshotRequest,
    region: &str,
    snapshot: &str,
) -> Result<Option<(Journal, Record, Option<Arc<BlockMap>>)>> {
    let Some((journal, record)) = open_journal(dir, region, snapshot, &req.content).await? else {
        return Ok(None);
    };
    let Some(parent) = record.parent.clone() else {
        return Ok(Some((journal, record, None)));
    };
    match load_map(map_dirs(dir, req), region, &parent).await {
        Ok(Some(map)) => Ok(Some((journal, record, Some(Arc::new(map))))),
        Ok(None) | Err(_) => {
            tracing::warn!("snapshot {snapshot} is written on {parent}, whose block map is gone");
            Ok(None)
        }
    }
}

/// Where block maps are kept and looked for: the cache, then `--block-maps`.
fn map_dirs(cache: &std::path::Path, req: &SnapshotRequest) -> Vec<PathBuf> {
    std::iter::once(cache.to_path_buf())
        .chain(req.maps_also.clone())
        .collect()
}

/// The first of `dirs` that holds `snapshot`'s map (off the runtime). A damaged map is an
/// error only when no other directory holds a good one.
async fn load_map(dirs: Vec<PathBuf>, region: &str, snapshot: &str) -> Result<Option<BlockMap>> {
    let (region, snapshot) = (region.to_string(), snapshot.to_string());
    crate::blocking::run(move || {
        let mut damaged = None;
        for dir in &dirs {
            match BlockMap::load(dir, &region, &snapshot) {
                Ok(Some(map)) => return Ok(Some(map)),
                Ok(None) => {}
                Err(e) => damaged = Some(e),
            }
        }
        damaged.map_or(Ok(None), Err)
    })
    .await
}

/// The snapshot is completed or gone: its journal goes (off the runtime).
async fn remove_journal(journal: Arc<Journal>) -> Result<()> {
    match Arc::try_unwrap(journal) {
        Ok(journal) => {
            crate::blocking::run(move || {
                journal.remove();
                Ok(())
            })
            .await
        }
        Err(_) => Ok(()),
    }
}

async fn open_journal(
    dir: &std::path::Path,
    region: &str,
    snapshot: &str,
    content: &str,
) -> Result<Option<(Journal, Record)>> {
    let (dir, region, snapshot, content) = (
        dir.to_path_buf(),
        region.to_string(),
        snapshot.to_string(),
        content.to_string(),
    );
    crate::blocking::run(move || Journal::open(&dir, &region, &snapshot, &content)).await
}

/// The journal of a snapshot just started: `(id, encrypted)` as StartSnapshot answered,
/// and the parent it was started on.
async fn new_journal(
    dir: &std::path::Path,
    region: &str,
    (snapshot, encrypted): (String, bool),
    content: &str,
    base: &Option<Arc<BlockMap>>,
) -> Result<(String, Journal, Record)> {
    let parent = base.as_ref().map(|b| b.snapshot.clone());
    let (dir, region, id, content, named) = (
        dir.to_path_buf(),
        region.to_string(),
        snapshot.clone(),
        content.to_string(),
        parent.clone(),
    );
    let journal = crate::blocking::run(move || {
        Journal::create(&dir, &region, &id, &content, encrypted, named.as_deref())
    })
    .await?;
    let record = Record {
        encrypted,
        parent,
        ..Record::default()
    };
    Ok((snapshot, journal, record))
}

/// Starts the snapshot; returns its id and whether EBS made it encrypted (what the request
/// asked, or the account's encryption by default: "If Amazon EBS encryption by default is
/// enabled on your AWS account, you can't create unencrypted snapshots." — EBS User Guide,
/// "Encryption outcomes for EBS direct APIs").
async fn start_snapshot(
    ebs: &aws_sdk_ebs::Client,
    req: &SnapshotRequest,
    replaces: Option<&str>,
    base: Option<Arc<BlockMap>>,
) -> Result<((String, bool), Option<Arc<BlockMap>>)> {
    // A child takes its parent's encryption: StartSnapshot refuses Encrypted beside
    // ParentSnapshotId (the plan chose a parent encrypted as asked).
    let (encrypted, key) = match (&req.encryption, &base) {
        (_, Some(_)) | (Encryption::None, None) => (None, None),
        (Encryption::DefaultKey, None) => (Some(true), None),
        (Encryption::Key(key), None) => (Some(true), Some(key.clone())),
    };
    let out = ebs
        .start_snapshot()
        .volume_size(i64::from(req.volume_size_gib))
        .client_token(req.client_token(replaces))
        .description(format!("imgpub: {}", req.name))
        .set_tags(Some(req.all_tags()))
        .set_encrypted(encrypted)
        .set_kms_key_arn(key)
        .set_parent_snapshot_id(base.as_ref().map(|b| b.snapshot.clone()))
        .timeout(SNAPSHOT_TIMEOUT_MINUTES)
        .send()
        .await;
    let out = match (out, base) {
        (Ok(out), base) => (out, base),
        (Err(e), Some(parent)) => {
            let err = aws(
                Op::EbsStartSnapshot,
                format!(
                    "starting a snapshot for {} on {}",
                    req.name, parent.snapshot
                ),
                e,
            );
            // EBS refused the parent (under encryption by default an unencrypted parent is
            // refused, EBS User Guide): the whole image is written instead.
            if err.code() != Some("ValidationException") {
                return Err(err);
            }
            tracing::warn!("--parent: writing the whole image: {err}");
            return Box::pin(start_snapshot(ebs, req, replaces, None)).await;
        }
        (Err(e), None) => {
            return Err(aws(
                Op::EbsStartSnapshot,
                format!("starting a snapshot for {}", req.name),
                e,
            ))
        }
    };
    let (out, base) = out;
    let id = out
        .snapshot_id()
        .ok_or_else(|| Error::missing(Op::EbsStartSnapshot, "SnapshotId"))?
        .to_string();
    match out.block_size() {
        Some(size) if size as usize == BLOCK_SIZE => {}
        other => {
            return Err(Error::failed(
                format!("starting snapshot {id}"),
                ErrorKind::Other,
                None,
                format!("EBS answered a block size of {other:?}, not {BLOCK_SIZE}"),
            ))
        }
    }
    let encrypted = out.kms_key_arn().is_some();
    if encrypted && !req.encryption.is_encrypted() {
        tracing::info!(
            "snapshot {id} is encrypted although not asked to be (the account encrypts new snapshots by default): blocks of zeros are sent too"
        );
    }
    tracing::info!(
        "started snapshot {id} ({} GiB) for {}{}",
        req.volume_size_gib,
        req.name,
        base.as_ref()
            .map_or(String::new(), |b| format!(" on {}", b.snapshot))
    );
    Ok(((id, encrypted), base))
}

/// Reads every block that may hold data, `blocks_in_flight` at a time; sends the non-zero
/// ones the snapshot lacks (`written`: what the journal says it holds; `base`: what it
/// inherits from its parent), recording each in the journal once EBS took it. Where the
/// parent has data and the image zeros, zeros are sent. Returns the digest of every block
/// written to the snapshot, how many of them this run sent, and how many it inherits.
#[allow(clippy::too_many_arguments)]
async fn put_blocks(
    ebs: &aws_sdk_ebs::Client,
    snapshot: &str,
    disk: Arc<Disk>,
    data_blocks: Vec<u64>,
    written: &Record,
    journal: &Arc<Journal>,
    req: &SnapshotRequest,
    base: Option<&BlockMap>,
) -> Result<(BTreeMap<i32, [u8; 32]>, u64, u64)> {
    let progress = Progress::bytes(
        format!("writing {snapshot}"),
        data_blocks.len() as u64 * BLOCK_SIZE as u64,
    );
    let buffers = Buffers::default();
    let readers: Arc<Mutex<Vec<Reader>>> = Arc::default();
    let sent = std::sync::atomic::AtomicU64::new(0);
    let inherited = std::sync::atomic::AtomicU64::new(0);
    let present = &written.blocks;
    let zeros = match req.send_zero_blocks || req.encryption.is_encrypted() || written.encrypted {
        true => Zeros::Send,
        false => Zeros::Skip,
    };
    // The blocks are read and hashed a group at a time: the multi-lane SHA-256 kernel
    // hashes a group's blocks side by side, ~3× less CPU than one at a time
    // (docs/benchmarks.md, bench/sha-blocks.sh). One group is read ahead while the blocks
    // of the last are sent, `blocks_in_flight` at a time.
    let kernel = Kernel::best();
    let groups: Vec<Vec<u64>> = data_blocks
        .chunks(kernel.lanes())
        .map(<[u64]>::to_vec)
        .collect();
    let digests: BTreeMap<i32, [u8; 32]> = stream::iter(groups)
        .map(|indices| {
            let (disk, buffers, readers) =
                (Arc::clone(&disk), buffers.clone(), Arc::clone(&readers));
            async move {
                let blocks = crate::blocking::run(move || {
                    read_group(&disk, &indices, &buffers, &readers, zeros, kernel)
                })
                .await?;
                Ok::<_, Error>(stream::iter(blocks.into_iter().map(Ok::<_, Error>)))
            }
        })
        .buffered(2)
        .try_flatten()
        .map_ok(|(index, block)| {
            let (progress, sent, present, inherited) = (&progress, &sent, present, &inherited);
            async move {
                // The size was checked against EBS's 64 TiB before the run began.
                let index32 = i32::try_from(index).map_err(|_| {
                    Error::Changed(format!(
                        "{} grew past any EBS volume after it was checked",
                        req.path.display()
                    ))
                })?;
                let block = match (block, base) {
                    // Zeros where the parent has data: the child must not read the parent's.
                    (None, Some(base)) if !base.holds(index32, &ZERO_BLOCK_DIGEST) => {
                        Some((Bytes::from_static(&ZERO_BLOCK), ZERO_BLOCK_DIGEST))
                    }
                    (Some((_, digest)), Some(base)) if base.holds(index32, &digest) => {
                        inherited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        None
                    }
                    (block, _) => block,
                };
                let out = match block {
                    None => None,
                    Some((_, digest)) if present.get(&index32) == Some(&digest) => {
                        Some((index32, digest))
                    }
                    Some((data, digest)) => {
                        put_block(ebs, snapshot, index32, data, &digest).await?;
                        let journal = Arc::clone(journal);
                        crate::blocking::run(move || journal.sent(index32, &digest)).await?;
                        sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Some((index32, digest))
                    }
                };
                progress.inc(BLOCK_SIZE as u64);
                Ok::<_, Error>(out)
            }
        })
        .try_buffer_unordered(req.blocks_in_flight.max(1))
        .try_filter_map(|b| std::future::ready(Ok(b)))
        .try_collect()
        .await?;
    progress.finish();
    let (sent, inherited) = (sent.into_inner(), inherited.into_inner());
    tracing::info!(
        "{snapshot}: {sent} blocks sent, {} already there{}",
        digests.len() as u64 - sent,
        match base {
            Some(base) => format!(", {inherited} the same as in {}", base.snapshot),
            None => String::new(),
        }
    );
    Ok((digests, sent, inherited))
}

/// What becomes of a written block that is all zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zeros {
    Skip,
    Send,
}

/// A block as read: its bytes and SHA-256, or `None` when it is all zeros and those are
/// skipped.
type Block = Option<(Bytes, [u8; 32])>;

/// Blocks `indices`, each with its index, the ones with data hashed together with `kernel`.
/// Blocking.
fn read_group(
    disk: &Disk,
    indices: &[u64],
    buffers: &Buffers,
    readers: &Mutex<Vec<Reader>>,
    zeros: Zeros,
    kernel: Kernel,
) -> Result<Vec<(u64, Block)>> {
    let mut reader = readers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
        .unwrap_or_default();
    let read: Result<Vec<_>> = indices
        .iter()
        .map(|&index| {
            let mut buf = buffers.take(BLOCK_SIZE);
            disk.read_block(index, buf.as_mut(), &mut reader)?;
            let skip = zeros == Zeros::Skip && is_zero(buf.as_ref());
            Ok((index, (!skip).then_some(buf)))
        })
        .collect();
    readers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(reader);
    let read = read?;
    let data: Vec<&[u8]> = read
        .iter()
        .filter_map(|(_, b)| b.as_ref().map(|b| b.as_ref()))
        .collect();
    let mut digests = match data.len() {
        0 => vec![],
        n => {
            let mut lanes = Sha256Lanes::with_kernel(n, kernel);
            lanes.update(&data);
            lanes.finish(&vec![&[][..]; n])
        }
    }
    .into_iter();
    Ok(read
        .into_iter()
        .map(|(index, buf)| {
            let block = buf.and_then(|buf| Some((Bytes::from_owner(buf), digests.next()?)));
            (index, block)
        })
        .collect())
}

fn is_zero(bytes: &[u8]) -> bool {
    // An OR over each 4 KiB vectorizes (an early-exit byte loop does not); data blocks
    // usually differ from zero in their first page.
    bytes
        .chunks(4096)
        .all(|page| page.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

async fn put_block(
    ebs: &aws_sdk_ebs::Client,
    snapshot: &str,
    index: i32,
    data: Bytes,
    digest: &[u8; 32],
) -> Result<()> {
    ebs.put_snapshot_block()
        .snapshot_id(snapshot)
        .block_index(index)
        .data_length(BLOCK_SIZE as i32)
        .block_data(ByteStream::from(data))
        .checksum(base64::engine::general_purpose::STANDARD.encode(digest))
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .send()
        .await
        .map_err(|e| {
            use aws_sdk_ebs::operation::put_snapshot_block::PutSnapshotBlockError;
            use aws_sdk_ebs::types::ValidationExceptionReason;
            // The snapshot takes no more blocks: another run of the same image (the same
            // journal) completed it, or EBS gave up on it.
            let closed = matches!(
                e.as_service_error(),
                Some(PutSnapshotBlockError::ValidationException(v))
                    if v.reason() == Some(&ValidationExceptionReason::InvalidSnapshotId)
            );
            let err = aws(
                Op::EbsPutSnapshotBlock,
                format!("writing block {index} of snapshot {snapshot}"),
                e,
            );
            match closed {
                true => err.with_hint(
                    "it takes no more blocks: another run of this image may have completed it; rerun once that run ends, and the rerun uses the completed snapshot",
                ),
                false => err,
            }
        })?;
    Ok(())
}

/// Why CompleteSnapshot failed.
enum Completion {
    /// EBS refused the count or the checksum (ValidationException, INVALID_PARAMETER_VALUE):
    /// the snapshot does not hold what was counted, and cannot be finished.
    Refused(Error),
    Failed(Error),
}

/// CompleteSnapshot with the block count and the LINEAR checksum. A retry whose first
/// attempt went through finds the snapshot no longer pending: then the wait decides.
async fn complete(
    ebs: &aws_sdk_ebs::Client,
    snapshot: &str,
    digests: &BTreeMap<i32, [u8; 32]>,
) -> std::result::Result<(), Completion> {
    use aws_sdk_ebs::operation::complete_snapshot::CompleteSnapshotError;
    use aws_sdk_ebs::types::ValidationExceptionReason;
    let mut linear = Sha256::new();
    for digest in digests.values() {
        linear.update(digest);
    }
    let count = i32::try_from(digests.len()).unwrap_or(i32::MAX);
    let result = ebs
        .complete_snapshot()
        .snapshot_id(snapshot)
        .changed_blocks_count(count)
        .checksum(base64::engine::general_purpose::STANDARD.encode(linear.finalize()))
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(CompleteSnapshotError::ValidationException(v))
                    if v.reason() == Some(&ValidationExceptionReason::InvalidSnapshotId)
            ) =>
        {
            tracing::debug!("{snapshot} is no longer pending: completed by an earlier attempt");
            Ok(())
        }
        Err(e) => {
            let refused = matches!(
                e.as_service_error(),
                Some(CompleteSnapshotError::ValidationException(v))
                    if v.reason() == Some(&ValidationExceptionReason::InvalidParameterValue)
            );
            let err = aws(
                Op::EbsCompleteSnapshot,
                format!("completing snapshot {snapshot} ({count} blocks)"),
                e,
            );
            Err(match refused {
                true => Completion::Refused(err),
                false => Completion::Failed(err),
            })
        }
    }
}

/// Waits until EC2 reports the snapshot `completed`; `error` ends the wait.
async fn wait_completed(
    ec2: &aws_sdk_ec2::Client,
    snapshot: &str,
    timeout: Duration,
) -> Result<()> {
    use aws_sdk_ec2::types::SnapshotState;
    let what = format!("snapshot {snapshot}");
    let timed_out = || {
        format!(
            "not completed within {}s; it keeps going in AWS and a rerun picks it up",
            timeout.as_secs()
        )
    };
    let reading = format!("reading snapshot {snapshot}");
    let deadline = Instant::now() + timeout;
    // A snapshot completes in moments once its last block is in: looks start quick.
    poll_until(&what, Grid::QuickStart, deadline, timed_out, |_| async {
        // Just started: EC2 may not know it yet.
        let out = naming(Age::New, &reading, || async {
            ec2.describe_snapshots()
                .snapshot_ids(snapshot)
                .send()
                .await
                .map_err(|e| aws(Op::Ec2DescribeSnapshots, &reading, e))
        })
        .await?;
        let found = out.snapshots().first();
        match found.and_then(|s| s.state()) {
            Some(SnapshotState::Completed) => Ok(Look::Done {
                value: (),
                said: "completed".into(),
            }),
            Some(SnapshotState::Error) => Err(Error::failed(
                format!("completing snapshot {snapshot}"),
                ErrorKind::TaskFailed,
                None,
                format!(
                    "EBS ended it in error ({}); a rerun writes it again",
                    found
                        .and_then(|s| s.state_message())
                        .unwrap_or("no reason given")
                ),
            )),
            state => Ok(Look::Going {
                state: state.map_or("unknown", |s| s.as_str()).to_string(),
                percent: None,
            }),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_are_told_from_blocks_with_one_bit() {
        let mut block = vec![0u8; BLOCK_SIZE];
        assert!(is_zero(&block));
        for at in [0, 1, 7, 4096, BLOCK_SIZE - 1] {
            block[at] = 0x10;
            assert!(!is_zero(&block), "bit at {at}");
            assert!(!is_zero(&block[1..]) || at == 0, "unaligned, bit at {at}");
            block[at] = 0;
        }
    }
}
