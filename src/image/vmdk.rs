//! VMDK sparse extents (monolithicSparse and streamOptimized): header, descriptor, and a
//! walk of the grain directory and tables to find grains that lie past the end of the file.

use std::fs::File;
use std::path::Path;

use super::{read_at, Format, ImageInfo};
use crate::error::{Error, Result};

const SECTOR: u64 = 512;
const GD_AT_END: u64 = u64::MAX;
/// Grain tables entries per table is 512 in every VMDK writer we know; refuse absurd values
/// rather than allocate for them.
const MAX_GTES_PER_GT: u32 = 4096;

struct Header {
    capacity: u64,
    grain_sectors: u64,
    descriptor_offset: u64,
    descriptor_size: u64,
    gtes_per_gt: u32,
    gd_offset: u64,
}

/// Grains are 64 KiB in every writer we know; the format allows any power of two over
/// 4 KiB. Larger than 1 MiB is refused rather than trusted.
const MAX_GRAIN_SECTORS: u64 = 2048;
/// Far beyond any disk AWS imports (EBS volumes end at 64 TiB).
const MAX_CAPACITY_SECTORS: u64 = 1 << 40;

impl Header {
    /// Refuses values no writer makes, so the arithmetic on them cannot overflow or ask for
    /// absurd allocations.
    fn check(&self) -> std::result::Result<(), &'static str> {
        if self.grain_sectors == 0
            || self.grain_sectors > MAX_GRAIN_SECTORS
            || self.gtes_per_gt == 0
            || self.gtes_per_gt > MAX_GTES_PER_GT
        {
            return Err("the header has impossible grain sizes");
        }
        if self.capacity == 0 || self.capacity > MAX_CAPACITY_SECTORS {
            return Err("the header has an impossible disk size");
        }
        Ok(())
    }
}

fn parse_header(h: &[u8]) -> Option<Header> {
    if h.len() < 77 {
        return None;
    }
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
    Some(Header {
        capacity: u64_at(12),
        grain_sectors: u64_at(20),
        descriptor_offset: u64_at(28),
        descriptor_size: u64_at(36),
        gtes_per_gt: u32_at(44),
        gd_offset: u64_at(56),
    })
}

pub(super) fn inspect(
    file: &mut File,
    path: &Path,
    head: &[u8],
    file_size: u64,
) -> Result<ImageInfo> {
    let shown = path.display();
    let corrupt = |why: &str| {
        Error::Invalid(format!(
            "{shown} is not a valid VMDK image: {why}; rebuild it, or check the copy is complete"
        ))
    };
    let io = |e| Error::io(format!("reading {shown}"), e);
    let mut header = parse_header(head).ok_or_else(|| corrupt("the header is cut short"))?;
    header.check().map_err(corrupt)?;

    let mut descriptor = vec![0u8; (header.descriptor_size.min(128) * SECTOR) as usize];
    let descriptor_at = header
        .descriptor_offset
        .checked_mul(SECTOR)
        .ok_or_else(|| corrupt("the descriptor lies past any file"))?;
    let n = read_at(file, descriptor_at, &mut descriptor).map_err(io)?;
    let descriptor = String::from_utf8_lossy(&descriptor[..n]);
    let create_type = descriptor
        .lines()
        .find_map(|l| l.trim().strip_prefix("createType="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_default();
    let stream_optimized = create_type == "streamOptimized";
    if !stream_optimized && create_type != "monolithicSparse" {
        return Err(corrupt(&format!("unsupported createType {create_type:?}")));
    }

    if header.gd_offset == GD_AT_END {
        // streamOptimized writers that stream put the real header in a footer: one sector
        // before the end-of-stream marker.
        if file_size < 3 * SECTOR {
            return Err(corrupt("the file is truncated (no footer)"));
        }
        let mut footer = [0u8; 512];
        read_at(file, file_size - 2 * SECTOR, &mut footer).map_err(io)?;
        if !footer.starts_with(b"KDMV") {
            return Err(corrupt("the file is truncated (the footer is missing)"));
        }
        header = parse_header(&footer).ok_or_else(|| corrupt("the footer is cut short"))?;
        header.check().map_err(corrupt)?;
    }

    // `check` bounds these: no overflow below.
    let grain_bytes = header.grain_sectors * SECTOR;
    let span = grain_bytes * u64::from(header.gtes_per_gt);
    let gdes = (header.capacity * SECTOR).div_ceil(span);
    // The directory must lie inside the file: checked before it is allocated.
    let gd_at = match header.gd_offset.checked_mul(SECTOR) {
        Some(at) if at.saturating_add(gdes * 4) <= file_size => at,
        _ => return Err(corrupt("the file is truncated (grain directory)")),
    };
    let mut gd = vec![0u8; (gdes * 4) as usize];
    if read_at(file, gd_at, &mut gd).map_err(io)? < gd.len() {
        return Err(corrupt("the file is truncated (grain directory)"));
    }
    let mut gt = vec![0u8; header.gtes_per_gt as usize * 4];
    let mut marker = [0u8; 12];
    for gde in gd.chunks_exact(4) {
        let gt_sector = u64::from(u32::from_le_bytes(gde.try_into().unwrap()));
        if gt_sector == 0 {
            continue;
        }
        if read_at(file, gt_sector * SECTOR, &mut gt).map_err(io)? < gt.len() {
            return Err(corrupt("the file is truncated (grain table)"));
        }
        for gte in gt.chunks_exact(4) {
            let grain = u64::from(u32::from_le_bytes(gte.try_into().unwrap()));
            if grain <= 1 {
                continue; // unallocated, or a zero grain
            }
            let offset = grain * SECTOR;
            let end = if stream_optimized {
                // Compressed grain: a marker (LBA, size) then that many bytes.
                if read_at(file, offset, &mut marker).map_err(io)? < marker.len() {
                    return Err(corrupt("the file is truncated (a grain is missing)"));
                }
                offset + 12 + u64::from(u32::from_le_bytes(marker[8..12].try_into().unwrap()))
            } else {
                offset + grain_bytes
            };
            if end > file_size {
                return Err(corrupt("the file is truncated (a grain lies past the end)"));
            }
        }
    }
    Ok(ImageInfo {
        format: Format::Vmdk { stream_optimized },
        virtual_size: Some(header.capacity * SECTOR),
        file_size,
    })
}
