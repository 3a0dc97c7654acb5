//! What an EBS direct write has sent, kept on this machine. AWS answers no read of a pending
//! snapshot ("Can a snapshot be accessed using the EBS direct APIs if it has a pending
//! status? No." — EBS direct APIs FAQ), so a resume cannot ask the snapshot which blocks it
//! holds: it reads them here.
//!
//! One file per snapshot under the cache directory (`$IMGPUB_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/imgpub`, else `~/.cache/imgpub`), `ebs-direct/<region>/<snapshot>`:
//! a header naming the snapshot and the image content (with `encrypted` and `parent <id>`
//! lines when the snapshot is so started), then a line per block EBS accepted
//! (`<index> <sha256 hex>`), and `complete` once CompleteSnapshot was sent. A line is
//! written only after EBS answered, so a block that is not listed may still be there: it
//! is sent again, which PutSnapshotBlock allows ("If the specified block contains data, the
//! existing data is overwritten." — PutSnapshotBlock API reference). A torn last line (a
//! kill mid-write) is ignored the same way. The file goes once the snapshot is completed.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

const MAGIC: &str = "imgpub-ebs-journal 1";

/// Where journals live, or `None` when no cache directory can be named (no HOME).
pub(crate) fn cache_dir() -> Option<PathBuf> {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from("IMGPUB_CACHE_DIR")
        .or_else(|| from("XDG_CACHE_HOME").map(|d| d.join("imgpub")))
        .or_else(|| from("HOME").map(|d| d.join(".cache").join("imgpub")))
}

/// What an earlier run recorded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// Blocks EBS accepted, with their SHA-256.
    pub blocks: HashMap<i32, [u8; 32]>,
    /// CompleteSnapshot was sent (its answer may have been lost).
    pub completing: bool,
    /// EBS made the snapshot encrypted (asked for, or the account's default).
    pub encrypted: bool,
    /// The snapshot it was started on (`ParentSnapshotId`): the blocks skipped as the
    /// parent's are told by its block map.
    pub parent: Option<String>,
}

/// An open journal, appended to as blocks are accepted. Its calls are blocking (small
/// appends); callers run them off the async runtime.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

pub(crate) fn path_for(dir: &Path, region: &str, snapshot: &str) -> PathBuf {
    dir.join("ebs-direct").join(region).join(snapshot)
}

fn header(snapshot: &str, content: &str) -> String {
    format!("{MAGIC} {snapshot} {content}")
}

impl Journal {
    /// A new journal for a snapshot just started (any old file of that name is replaced).
    pub(crate) fn create(
        dir: &Path,
        region: &str,
        snapshot: &str,
        content: &str,
        encrypted: bool,
        parent: Option<&str>,
    ) -> Result<Self> {
        let path = path_for(dir, region, snapshot);
        let shown = path.display().to_string();
        let io = |e| Error::io(format!("writing the block journal {shown}"), e);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = std::fs::File::create(&path).map_err(io)?;
        // One write: a kill leaves the header with its encryption or no journal at all.
        let mut head = format!("{}\n", header(snapshot, content));
        if encrypted {
            head.push_str("encrypted\n");
        }
        if let Some(parent) = parent {
            head.push_str(&format!("parent {parent}\n"));
        }
        file.write_all(head.as_bytes()).map_err(io)?;
        Ok(Journal {
            path,
            file: Mutex::new(file),
        })
    }

    /// The journal an earlier run left for this snapshot and content, opened for appending,
    /// with what it recorded; `None` when there is none (or it is of other content).
    pub(crate) fn open(
        dir: &Path,
        region: &str,
        snapshot: &str,
        content: &str,
    ) -> Result<Option<(Self, Record)>> {
        let path = path_for(dir, region, snapshot);
        let shown = path.display().to_string();
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading the block journal {shown}"), e)),
        };
        let mut lines = text.lines();
        match lines.next() {
            Some(Ok(first)) if first == header(snapshot, content) => {}
            _ => return Ok(None),
        }
        let mut record = Record::default();
        for line in lines {
            let Ok(line) = line else { break };
            if line == "complete" {
                record.completing = true;
            } else if line == "encrypted" {
                record.encrypted = true;
            } else if let Some(parent) = line.strip_prefix("parent ") {
                record.parent = Some(parent.to_string());
            } else if let Some((index, digest)) = parse_block(&line) {
                record.blocks.insert(index, digest);
            }
        }
        let io = |e| Error::io(format!("writing the block journal {shown}"), e);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io)?;
        if !text.ends_with(b"\n") {
            // End a torn last line, so the next one is not joined to it.
            file.write_all(b"\n").map_err(io)?;
        }
        Ok(Some((
            Journal {
                path,
                file: Mutex::new(file),
            },
            record,
        )))
    }

    fn append(&self, line: &str) -> Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line: a kill leaves whole lines and at most one torn last line.
        file.write_all(format!("{line}\n").as_bytes()).map_err(|e| {
            Error::io(
                format!("writing the block journal {}", self.path.display()),
                e,
            )
        })
    }

    /// EBS accepted block `index` with this digest.
    pub(crate) fn sent(&self, index: i32, digest: &[u8; 32]) -> Result<()> {
        self.append(&format!("{index} {}", hex::encode(digest)))
    }

    /// CompleteSnapshot is about to be sent.
    pub(crate) fn completing(&self) -> Result<()> {
        self.append("complete")
    }

    /// The snapshot is completed or gone: the journal has nothing more to say.
    pub(crate) fn remove(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!("removing {}: {e}", self.path.display());
        }
    }
}

/// Makes the journal directory for `region` and checks a file can be written there.
pub(crate) fn ensure_writable(dir: &Path, region: &str) -> Result<()> {
    let at = dir.join("ebs-direct").join(region);
    let fail = |e| {
        Error::Setup(format!(
            "the EBS direct block journal cannot be written in {}: {e}; set IMGPUB_CACHE_DIR to a writable directory",
            at.display()
        ))
    };
    std::fs::create_dir_all(&at).map_err(fail)?;
    let probe = at.join(format!(".probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(fail)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Removes the journal of a snapshot that was deleted (nothing to resume).
pub(crate) fn forget(dir: &Path, region: &str, snapshot: &str) {
    let _ = std::fs::remove_file(path_for(dir, region, snapshot));
}

fn parse_block(line: &str) -> Option<(i32, [u8; 32])> {
    let (index, digest) = line.split_once(' ')?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(digest, &mut out).ok()?;
    Some((index.parse().ok()?, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("imgpub-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_journal_reads_back_what_was_sent_and_skips_a_torn_line() {
        let dir = temp_dir("torn");
        let j = Journal::create(&dir, "us-east-1", "snap-1", "c1", true, Some("snap-0")).unwrap();
        j.sent(3, &[7; 32]).unwrap();
        j.sent(9, &[8; 32]).unwrap();
        drop(j);
        let path = path_for(&dir, "us-east-1", "snap-1");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"12 abcd").unwrap(); // a kill mid-line
        drop(f);
        let (j, record) = Journal::open(&dir, "us-east-1", "snap-1", "c1")
            .unwrap()
            .unwrap();
        assert_eq!(record.blocks.len(), 2);
        assert_eq!(record.blocks[&3], [7; 32]);
        assert!(!record.completing);
        assert!(record.encrypted);
        assert_eq!(record.parent.as_deref(), Some("snap-0"));
        j.completing().unwrap();
        drop(j);
        let (_, record) = Journal::open(&dir, "us-east-1", "snap-1", "c1")
            .unwrap()
            .unwrap();
        assert!(
            record.completing,
            "the torn line does not hide what follows it"
        );
        // Other content, or another snapshot: no journal.
        assert!(Journal::open(&dir, "us-east-1", "snap-1", "c2")
            .unwrap()
            .is_none());
        assert!(Journal::open(&dir, "us-east-1", "snap-2", "c1")
            .unwrap()
            .is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
