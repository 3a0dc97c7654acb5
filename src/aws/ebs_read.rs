//! Reading a completed snapshot back with the EBS direct read APIs (ListSnapshotBlocks,
//! GetSnapshotBlock) and comparing it with an image, block by block: what `verify-snapshot`
//! does, and how a lost block map is rebuilt. EBS reads only completed snapshots ("Can a
//! snapshot be accessed using the EBS direct APIs if it has a pending status? No." — EBS
//! direct APIs FAQ). A block the snapshot does not list was never written: it reads as
//! zeros.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::aws::block_map::{BlockMap, ZERO_BLOCK_DIGEST};
use crate::aws::calls::Op;
use crate::error::{aws, Error, Result};
use crate::image::{Disk, Reader, BLOCK_SIZE};
use crate::progress::Progress;

/// The blocks a snapshot holds: index → the token GetSnapshotBlock takes.
pub(crate) async fn list_blocks(
    ebs: &aws_sdk_ebs::Client,
    snapshot: &str,
) -> Result<BTreeMap<i32, String>> {
    let what = format!("listing the blocks of {snapshot}");
    let mut blocks = BTreeMap::new();
    let mut next: Option<String> = None;
    loop {
        let out = ebs
            .list_snapshot_blocks()
            .snapshot_id(snapshot)
            .max_results(10_000)
            .set_next_token(next.take())
            .send()
            .await
            .map_err(|e| aws(Op::EbsListSnapshotBlocks, &what, e))?;
        for block in out.blocks() {
            if let (Some(index), Some(token)) = (block.block_index(), block.block_token()) {
                blocks.insert(index, token.to_string());
            }
        }
        match out.next_token() {
            Some(token) if !token.is_empty() => next = Some(token.to_string()),
            _ => return Ok(blocks),
        }
    }
}

async fn get_block(
    ebs: &aws_sdk_ebs::Client,
    snapshot: &str,
    index: i32,
    token: &str,
) -> Result<Vec<u8>> {
    let what = format!("reading block {index} of {snapshot}");
    let out = ebs
        .get_snapshot_block()
        .snapshot_id(snapshot)
        .block_index(index)
        .block_token(token)
        .send()
        .await
        .map_err(|e| aws(Op::EbsGetSnapshotBlock, &what, e))?;
    let data = out
        .block_data
        .collect()
        .await
        .map_err(|e| {
            Error::failed(
                &what,
                crate::error::ErrorKind::Unavailable,
                None,
                e.to_string(),
            )
        })?
        .into_bytes()
        .to_vec();
    Ok(data)
}

/// How a snapshot compares with an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Compared {
    /// Blocks read from both (every block either has data in).
    pub compared: u64,
    /// Blocks that differ, in index order.
    pub differing: Vec<i32>,
    /// What the snapshot holds, as read.
    pub map: BlockMap,
}

/// Reads every block the snapshot lists or the image has data in, `in_flight` at a time,
/// and compares them; the snapshot's block map comes with the answer. Without an image,
/// only the map (what a lost one is rebuilt from).
pub(crate) async fn compare(
    ebs: &aws_sdk_ebs::Client,
    snapshot: &str,
    volume_size_gib: i32,
    encrypted: bool,
    listed: &BTreeMap<i32, String>,
    disk: Option<Arc<Disk>>,
    in_flight: usize,
) -> Result<Compared> {
    let mut indices: BTreeSet<i32> = listed.keys().copied().collect();
    if let Some(disk) = &disk {
        let reading = Arc::clone(disk);
        let image_blocks = crate::blocking::run(move || reading.data_blocks()).await?;
        indices.extend(image_blocks.iter().filter_map(|i| i32::try_from(*i).ok()));
    }
    let progress = Progress::bytes(
        format!("reading {snapshot} back"),
        indices.len() as u64 * BLOCK_SIZE as u64,
    );
    let results: Vec<(i32, Option<[u8; 32]>, bool)> = stream::iter(indices)
        .map(|index| {
            let (disk, progress) = (disk.clone(), &progress);
            async move {
                let from_snapshot = match listed.get(&index) {
                    Some(token) => Some(get_block(ebs, snapshot, index, token).await?),
                    None => None,
                };
                let snapshot_digest: [u8; 32] = match &from_snapshot {
                    Some(data) => Sha256::digest(data).into(),
                    None => ZERO_BLOCK_DIGEST,
                };
                let image_digest: [u8; 32] = match disk {
                    // Past the disk's end a read gives zeros.
                    Some(disk) => {
                        crate::blocking::run(move || {
                            let mut buf = vec![0u8; BLOCK_SIZE];
                            disk.read_block(index as u64, &mut buf, &mut Reader::default())?;
                            Ok(Sha256::digest(&buf).into())
                        })
                        .await?
                    }
                    None => snapshot_digest,
                };
                progress.inc(BLOCK_SIZE as u64);
                let held = from_snapshot.is_some().then_some(snapshot_digest);
                Ok::<_, Error>((index, held, image_digest == snapshot_digest))
            }
        })
        .buffer_unordered(in_flight.max(1))
        .try_collect()
        .await?;
    progress.finish();
    let mut differing: Vec<i32> = results
        .iter()
        .filter(|(_, _, same)| !same)
        .map(|(i, ..)| *i)
        .collect();
    differing.sort_unstable();
    let written: BTreeMap<i32, [u8; 32]> = results
        .iter()
        .filter_map(|(i, held, _)| held.map(|d| (*i, d)))
        .collect();
    Ok(Compared {
        compared: results.len() as u64,
        differing,
        map: BlockMap::of_child(snapshot, volume_size_gib, encrypted, None, &written),
    })
}
