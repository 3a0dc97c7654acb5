//! A snapshot's block map: the SHA-256 of every 512 KiB block the snapshot holds, what a
//! read of it sees (its own blocks and those it inherits from a parent). A block not in the
//! map was never written: it reads as zeros in an unencrypted snapshot (an encrypted one
//! reads it as garbage, coldsnap#395, so there only blocks written as zeros read as zeros). A later release that names this snapshot as
//! its parent sends only the blocks whose digest differs (`ebs_direct`).
//!
//! One file per snapshot under the cache directory (as the block journal),
//! `block-maps/<region>/<snapshot>`: a header line, then a record per block, in index order:
//! the index (4 bytes, little-endian) and the digest (32 bytes). A 10 GiB image full of data
//! has a map of 720 KiB. Written whole to a temporary file and renamed, so a map is either
//! complete or absent.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const MAGIC: &str = "imgpub-block-map 1";

/// The SHA-256 of a 512 KiB block of zeros: such a block reads as one never written.
pub(crate) const ZERO_BLOCK_DIGEST: [u8; 32] = [
    0x07, 0x85, 0x4d, 0x2f, 0xef, 0x29, 0x7a, 0x06, 0xba, 0x81, 0x68, 0x5e, 0x66, 0x0c, 0x33, 0x2d,
    0xe3, 0x6d, 0x5d, 0x18, 0xd5, 0x46, 0x92, 0x7d, 0x30, 0xda, 0xad, 0x6d, 0x7f, 0xda, 0x15, 0x41,
];

/// What a snapshot holds, block by block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockMap {
    pub snapshot: String,
    pub volume_size_gib: i32,
    pub encrypted: bool,
    /// Every block a read of the snapshot sees data in, with its digest.
    pub blocks: BTreeMap<i32, [u8; 32]>,
}

pub(crate) fn path_for(dir: &Path, region: &str, snapshot: &str) -> PathBuf {
    dir.join("block-maps").join(region).join(snapshot)
}

impl BlockMap {
    /// The map of `snapshot`, written with `written` on top of `parent` (if any).
    pub(crate) fn of_child(
        snapshot: &str,
        volume_size_gib: i32,
        encrypted: bool,
        parent: Option<&BlockMap>,
        written: &BTreeMap<i32, [u8; 32]>,
    ) -> BlockMap {
        let mut blocks = parent.map(|p| p.blocks.clone()).unwrap_or_default();
        blocks.extend(written.iter().map(|(i, d)| (*i, *d)));
        BlockMap {
            snapshot: snapshot.to_string(),
            volume_size_gib,
            encrypted,
            blocks,
        }
    }

    /// Whether block `index` reads as data with this digest (a zero digest: as zeros).
    pub(crate) fn holds(&self, index: i32, digest: &[u8; 32]) -> bool {
        match self.blocks.get(&index) {
            Some(d) => d == digest,
            None => !self.encrypted && *digest == ZERO_BLOCK_DIGEST,
        }
    }

    /// Writes the map for `region` (whole, then renamed into place). Blocking.
    pub(crate) fn save(&self, dir: &Path, region: &str) -> Result<PathBuf> {
        let path = path_for(dir, region, &self.snapshot);
        let shown = path.display().to_string();
        let io = |e| Error::io(format!("writing the block map {shown}"), e);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut bytes = format!(
            "{MAGIC} {} {} {} {}\n",
            self.snapshot,
            self.volume_size_gib,
            if self.encrypted { "encrypted" } else { "plain" },
            self.blocks.len()
        )
        .into_bytes();
        bytes.reserve(self.blocks.len() * 36);
        for (index, digest) in &self.blocks {
            bytes.extend_from_slice(&index.to_le_bytes());
            bytes.extend_from_slice(digest);
        }
        let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, &path).map_err(io)?;
        Ok(path)
    }

    /// The map of `snapshot` kept here, or `None` when there is none. A map that does not
    /// read back whole is an error naming the file. Blocking.
    pub(crate) fn load(dir: &Path, region: &str, snapshot: &str) -> Result<Option<BlockMap>> {
        let path = path_for(dir, region, snapshot);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::io(
                    format!("reading the block map {}", path.display()),
                    e,
                ))
            }
        };
        Self::parse(snapshot, &bytes).map(Some).ok_or_else(|| {
            Error::Invalid(format!(
                "the block map {} is damaged; delete it, or rebuild it with `imgpub aws verify-snapshot --snapshot {snapshot}`",
                path.display()
            ))
        })
    }

    fn parse(snapshot: &str, bytes: &[u8]) -> Option<BlockMap> {
        let end = bytes.iter().position(|&b| b == b'\n')?;
        let head = std::str::from_utf8(&bytes[..end]).ok()?;
        let rest = head.strip_prefix(MAGIC)?.trim_start();
        let mut fields = rest.split(' ');
        let (id, gib, sealed, count) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        let encrypted = match sealed {
            "encrypted" => true,
            "plain" => false,
            _ => return None,
        };
        if id != snapshot || fields.next().is_some() {
            return None;
        }
        let volume_size_gib: i32 = gib.parse().ok()?;
        let count: usize = count.parse().ok()?;
        let records = &bytes[end + 1..];
        if records.len() != count.checked_mul(36)? {
            return None;
        }
        let mut blocks = BTreeMap::new();
        for record in records.chunks_exact(36) {
            let index = i32::from_le_bytes(record[..4].try_into().ok()?);
            blocks.insert(index, record[4..].try_into().ok()?);
        }
        (blocks.len() == count).then(|| BlockMap {
            snapshot: snapshot.to_string(),
            volume_size_gib,
            encrypted,
            blocks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_zero_digest_is_that_of_a_block_of_zeros() {
        let digest: [u8; 32] = Sha256::digest(vec![0u8; crate::image::BLOCK_SIZE]).into();
        assert_eq!(digest, ZERO_BLOCK_DIGEST);
    }

    #[test]
    fn a_map_reads_back_and_a_damaged_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("imgpub-map-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let parent = BlockMap {
            snapshot: "snap-1".into(),
            volume_size_gib: 2,
            encrypted: false,
            blocks: BTreeMap::from([(1, [1; 32]), (4, [4; 32]), (9, [9; 32])]),
        };
        // The child writes one block anew and zeros over another.
        let written = BTreeMap::from([(4, [5; 32]), (9, ZERO_BLOCK_DIGEST), (12, [7; 32])]);
        let child = BlockMap::of_child("snap-2", 2, false, Some(&parent), &written);
        assert_eq!(
            child.blocks,
            BTreeMap::from([
                (1, [1; 32]),
                (4, [5; 32]),
                (9, ZERO_BLOCK_DIGEST),
                (12, [7; 32])
            ])
        );
        assert!(child.holds(9, &ZERO_BLOCK_DIGEST) && child.holds(1, &[1; 32]));
        assert!(child.holds(20, &ZERO_BLOCK_DIGEST), "never written: zeros");
        assert!(!child.holds(1, &ZERO_BLOCK_DIGEST));
        // Encrypted, a block never written reads as garbage, not zeros.
        let sealed = BlockMap::of_child("snap-4", 2, true, None, &written);
        assert!(!sealed.holds(20, &ZERO_BLOCK_DIGEST) && sealed.holds(9, &ZERO_BLOCK_DIGEST));
        let path = child.save(&dir, "us-east-1").unwrap();
        assert_eq!(
            BlockMap::load(&dir, "us-east-1", "snap-2").unwrap(),
            Some(child)
        );
        assert_eq!(BlockMap::load(&dir, "us-east-1", "snap-3").unwrap(), None);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.pop();
        std::fs::write(&path, &bytes).unwrap();
        let err = BlockMap::load(&dir, "us-east-1", "snap-2").unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
