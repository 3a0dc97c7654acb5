//! The virtual disk an image describes, read in EBS's 512 KiB blocks without a temporary
//! raw copy: a raw file (and a fixed VHD's disk) by `pread`, its holes found with
//! `SEEK_DATA`/`SEEK_HOLE`, not by reading zeros; a VMDK sparse extent grain by grain.
//! What `upload --via ebs-direct` writes into a snapshot.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::vmdk::{Grains, Scratch};
use super::{Format, ImageInfo};
use crate::error::{Error, Result};

/// The EBS direct APIs' block size.
pub const BLOCK_SIZE: usize = 512 * 1024;
const BLOCK: u64 = BLOCK_SIZE as u64;

pub struct Disk {
    path: PathBuf,
    file: File,
    size: u64,
    layout: Layout,
}

enum Layout {
    Raw,
    Vmdk(Grains),
}

/// Per reading thread: what reading a block needs besides the disk.
#[derive(Default)]
pub struct Reader {
    grain: Vec<u8>,
    scratch: Scratch,
}

impl Disk {
    /// Opens an inspected image. Raw and VMDK (streamOptimized and monolithicSparse) are
    /// read; the other formats are refused, naming the conversion. Blocking file I/O.
    pub fn open(path: &Path, info: &ImageInfo) -> Result<Disk> {
        let shown = path.display();
        let mut file = File::open(path).map_err(|e| Error::io(format!("opening {shown}"), e))?;
        let (layout, size) = match info.format {
            Format::Raw { .. } => (Layout::Raw, info.file_size),
            // The disk's bytes, then the footer: read as raw up to the disk's size
            // (`image::check_direct` made sure the file holds it).
            Format::Vhd { fixed: true } => (Layout::Raw, info.virtual_size.unwrap_or(0)),
            Format::Vmdk { .. } => {
                let grains = Grains::open(&mut file, path, info.file_size)?;
                (Layout::Vmdk(grains), info.virtual_size.unwrap_or(0))
            }
            Format::Qcow2 | Format::Vhd { fixed: false } | Format::Vhdx => {
                return Err(Error::Invalid(super::not_direct(path, info)))
            }
        };
        Ok(Disk {
            path: path.to_path_buf(),
            file,
            size,
            layout,
        })
    }

    /// The size of the virtual disk in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The blocks the image wrote, ascending; every other block is one it never wrote (a
    /// hole in a raw file, unallocated grains in a VMDK), reads as zeros and is not read.
    pub fn data_blocks(&self) -> Result<Vec<u64>> {
        match &self.layout {
            Layout::Raw => self.raw_data_blocks(),
            Layout::Vmdk(grains) => {
                // A zero grain (entry 1) was written as zeros: it is data to an encrypted
                // snapshot (see ebs_direct), so it is listed and read.
                let grain = grains.grain_bytes();
                let mut blocks: Vec<u64> = vec![];
                for g in grains.written() {
                    let (start, end) = (g * grain, ((g + 1) * grain).min(self.size));
                    if start >= end {
                        break; // past the disk's end (a table's last entries)
                    }
                    let first = match blocks.last() {
                        Some(&last) if last >= start / BLOCK => last + 1,
                        _ => start / BLOCK,
                    };
                    blocks.extend(first..end.div_ceil(BLOCK));
                }
                Ok(blocks)
            }
        }
    }

    /// Raw: the blocks that overlap a data extent (SEEK_DATA/SEEK_HOLE); every block where
    /// the file system cannot tell.
    fn raw_data_blocks(&self) -> Result<Vec<u64>> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let all = || (0..self.size.div_ceil(BLOCK)).collect();
        let size = i64::try_from(self.size).unwrap_or(i64::MAX);
        let mut blocks: Vec<u64> = vec![];
        let mut pos: i64 = 0;
        while pos < size {
            // SAFETY: lseek on a descriptor this struct owns; it only moves the offset,
            // which the pread-based reads do not use.
            let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
            if data < 0 {
                return match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::ENXIO) => Ok(blocks), // no data after pos
                    _ => Ok(all()),                  // SEEK_DATA not supported here
                };
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            let hole = if hole < 0 { size } else { hole.min(size) };
            let (first, end) = (data as u64 / BLOCK, (hole as u64).div_ceil(BLOCK));
            let first = match blocks.last() {
                Some(&last) if last >= first => last + 1,
                _ => first,
            };
            blocks.extend(first..end);
            pos = hole;
        }
        Ok(blocks)
    }

    /// Reads block `index` of the virtual disk into `buf` (`BLOCK_SIZE` bytes; past the
    /// disk's end, zeros). Blocking file I/O.
    pub fn read_block(&self, index: u64, buf: &mut [u8], reader: &mut Reader) -> Result<()> {
        let start = index * BLOCK;
        let len = self.size.saturating_sub(start).min(BLOCK) as usize;
        buf[len..].fill(0);
        match &self.layout {
            Layout::Raw => self.file.read_exact_at(&mut buf[..len], start).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    Error::Invalid(format!(
                        "{} is shorter than when the upload began (was it changed?); rerun once it is complete",
                        self.path.display()
                    ))
                } else {
                    Error::io(format!("reading {}", self.path.display()), e)
                }
            }),
            Layout::Vmdk(grains) => {
                let grain = grains.grain_bytes();
                reader.grain.resize(grain as usize, 0);
                let mut at = start;
                while at < start + len as u64 {
                    let g = at / grain;
                    let (from, to) = (at - g * grain, (start + BLOCK).min((g + 1) * grain));
                    let dest = &mut buf[(at - start) as usize..(to - start) as usize];
                    if from == 0 && dest.len() as u64 == grain {
                        grains.read_grain(&self.file, &self.path, g, dest, &mut reader.scratch)?;
                    } else {
                        // A grain that straddles the block (grains over 512 KiB, or the
                        // disk's last one): inflate it whole, take our part.
                        let whole = &mut reader.grain;
                        grains.read_grain(&self.file, &self.path, g, whole, &mut reader.scratch)?;
                        dest.copy_from_slice(&whole[from as usize..from as usize + dest.len()]);
                    }
                    at = to;
                }
                buf[len..].fill(0);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_raw_file_lists_only_the_blocks_that_hold_data() {
        let dir = std::env::temp_dir().join(format!("imgpub-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sparse.raw");
        let file = File::create(&path).unwrap();
        let size = 64 * BLOCK;
        file.set_len(size).unwrap();
        // Data in block 3 (one byte), across blocks 10–11, and in the last block.
        for (at, len) in [
            (3 * BLOCK + 5, 1),
            (10 * BLOCK + BLOCK / 2, BLOCK),
            (size - 1, 1),
        ] {
            file.write_all_at(&vec![0xA5; len as usize], at).unwrap();
        }
        file.sync_all().unwrap();
        let info = super::super::inspect(&path).unwrap();
        let disk = Disk::open(&path, &info).unwrap();
        let blocks = disk.data_blocks().unwrap();
        // SAFETY: lseek on a descriptor we own.
        let first_hole = unsafe {
            use std::os::fd::AsRawFd;
            libc::lseek(file.as_raw_fd(), 0, libc::SEEK_HOLE)
        };
        if (first_hole as u64) < size {
            // The file system keeps holes: only the written blocks are listed (file systems
            // allocate in pages, so a block's neighbours within a page may be listed too).
            assert_eq!(blocks, [3, 10, 11, 63], "{blocks:?}");
        } else {
            assert_eq!(blocks.len() as u64, size / BLOCK, "no holes: every block");
        }
        let mut buf = vec![0u8; BLOCK_SIZE];
        disk.read_block(3, &mut buf, &mut Reader::default())
            .unwrap();
        assert_eq!(buf[5], 0xA5);
        assert_eq!(buf.iter().filter(|&&b| b != 0).count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
