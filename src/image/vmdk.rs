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
    /// Bytes of the disk one grain table covers.
    fn span(&self) -> u64 {
        self.grain_sectors * SECTOR * u64::from(self.gtes_per_gt)
    }

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

fn corrupt(path: &Path, why: &str) -> Error {
    Error::Invalid(format!(
        "{} is not a valid VMDK image: {why}; rebuild it, or check the copy is complete",
        path.display()
    ))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(format!("reading {}", path.display()), e)
}

/// The header that describes the data (a streamed file's footer), checked, and whether
/// the extent is streamOptimized.
fn read_header(
    file: &mut File,
    path: &Path,
    head: &[u8],
    file_size: u64,
) -> Result<(Header, bool)> {
    let corrupt = |why: &str| corrupt(path, why);
    let mut header = parse_header(head).ok_or_else(|| corrupt("the header is cut short"))?;
    header.check().map_err(corrupt)?;

    let mut descriptor = vec![0u8; (header.descriptor_size.min(128) * SECTOR) as usize];
    let descriptor_at = header
        .descriptor_offset
        .checked_mul(SECTOR)
        .ok_or_else(|| corrupt("the descriptor lies past any file"))?;
    let n = read_at(file, descriptor_at, &mut descriptor).map_err(io(path))?;
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
        read_at(file, file_size - 2 * SECTOR, &mut footer).map_err(io(path))?;
        if !footer.starts_with(b"KDMV") {
            return Err(corrupt("the file is truncated (the footer is missing)"));
        }
        header = parse_header(&footer).ok_or_else(|| corrupt("the footer is cut short"))?;
        header.check().map_err(corrupt)?;
    }
    Ok((header, stream_optimized))
}

/// Calls `table(directory_index, grain_table)` for every allocated grain table, in
/// directory order; one table in memory at a time.
fn walk_tables(
    file: &mut File,
    path: &Path,
    header: &Header,
    file_size: u64,
    mut table: impl FnMut(&mut File, usize, &[u8]) -> Result<()>,
) -> Result<()> {
    let corrupt = |why: &str| corrupt(path, why);
    // `check` bounds these: no overflow below.
    let gdes = (header.capacity * SECTOR).div_ceil(header.span());
    // The directory must lie inside the file: checked before it is allocated.
    let gd_at = match header.gd_offset.checked_mul(SECTOR) {
        Some(at) if at.saturating_add(gdes * 4) <= file_size => at,
        _ => return Err(corrupt("the file is truncated (grain directory)")),
    };
    let mut gd = vec![0u8; (gdes * 4) as usize];
    if read_at(file, gd_at, &mut gd).map_err(io(path))? < gd.len() {
        return Err(corrupt("the file is truncated (grain directory)"));
    }
    let mut gt = vec![0u8; header.gtes_per_gt as usize * 4];
    for (i, gde) in gd.chunks_exact(4).enumerate() {
        let gt_sector = u64::from(u32::from_le_bytes(gde.try_into().unwrap()));
        if gt_sector == 0 {
            continue;
        }
        if read_at(file, gt_sector * SECTOR, &mut gt).map_err(io(path))? < gt.len() {
            return Err(corrupt("the file is truncated (grain table)"));
        }
        table(file, i, &gt)?;
    }
    Ok(())
}

/// A streamOptimized grain's marker: the grain's first sector on the disk, and the size
/// of the compressed data that follows.
fn read_marker(file: &mut File, path: &Path, offset: u64) -> Result<(u64, u64)> {
    let mut marker = [0u8; 12];
    if read_at(file, offset, &mut marker).map_err(io(path))? < marker.len() {
        return Err(corrupt(path, "the file is truncated (a grain is missing)"));
    }
    Ok((
        u64::from_le_bytes(marker[..8].try_into().unwrap()),
        u64::from(u32::from_le_bytes(marker[8..12].try_into().unwrap())),
    ))
}

pub(super) fn inspect(
    file: &mut File,
    path: &Path,
    head: &[u8],
    file_size: u64,
) -> Result<ImageInfo> {
    let (header, stream_optimized) = read_header(file, path, head, file_size)?;
    let grain_bytes = header.grain_sectors * SECTOR;
    walk_tables(file, path, &header, file_size, |file, gd_index, gt| {
        for (j, gte) in gt.chunks_exact(4).enumerate() {
            let grain = u64::from(u32::from_le_bytes(gte.try_into().unwrap()));
            if grain <= 1 {
                continue; // unallocated, or a zero grain
            }
            let offset = grain * SECTOR;
            let end = if stream_optimized {
                // Compressed grain: a marker (LBA, size) then that many bytes; the LBA must
                // be the grain's own place on the disk.
                let (lba, size) = read_marker(file, path, offset)?;
                let index = gd_index as u64 * u64::from(header.gtes_per_gt) + j as u64;
                if lba != index * header.grain_sectors {
                    return Err(corrupt(
                        path,
                        "a grain's marker names another place on the disk",
                    ));
                }
                offset + 12 + size
            } else {
                offset + grain_bytes
            };
            if end > file_size {
                return Err(corrupt(
                    path,
                    "the file is truncated (a grain lies past the end)",
                ));
            }
        }
        Ok(())
    })?;
    Ok(ImageInfo {
        format: Format::Vmdk { stream_optimized },
        virtual_size: Some(header.capacity * SECTOR),
        file_size,
    })
}

/// What reading a compressed grain needs, kept between grains by one reader.
pub(super) struct Scratch {
    compressed: Vec<u8>,
    inflate: flate2::Decompress,
}

impl Default for Scratch {
    fn default() -> Scratch {
        Scratch {
            compressed: Vec::new(),
            inflate: flate2::Decompress::new(true),
        }
    }
}

/// The virtual disk of a VMDK sparse extent, read grain by grain (streamOptimized grains
/// inflated as they are read). Holds the grain tables: 4 bytes per grain (1/16384 of the
/// virtual size with 64 KiB grains).
pub(super) struct Grains {
    header: Header,
    stream_optimized: bool,
    /// Per directory entry, its grain table (`None`: no table, all unallocated).
    tables: Vec<Option<Box<[u32]>>>,
}

impl Grains {
    pub(super) fn open(file: &mut File, path: &Path, file_size: u64) -> Result<Grains> {
        let mut head = [0u8; 512];
        let n = read_at(file, 0, &mut head).map_err(io(path))?;
        let (header, stream_optimized) = read_header(file, path, &head[..n], file_size)?;
        let mut tables = vec![];
        walk_tables(file, path, &header, file_size, |_, i, gt| {
            tables.resize_with(i + 1, || None);
            tables[i] = Some(
                gt.chunks_exact(4)
                    .map(|e| u32::from_le_bytes(e.try_into().unwrap()))
                    .collect(),
            );
            Ok(())
        })?;
        Ok(Grains {
            header,
            stream_optimized,
            tables,
        })
    }

    pub(super) fn grain_bytes(&self) -> u64 {
        self.header.grain_sectors * SECTOR
    }

    /// The grains the image wrote (a sector, or 1 for a zero grain), ascending; found
    /// through the tables that exist, so the cost is the file's, not the disk's size.
    pub(super) fn written(&self) -> impl Iterator<Item = u64> + '_ {
        let per_table = u64::from(self.header.gtes_per_gt);
        self.tables.iter().enumerate().flat_map(move |(t, table)| {
            table.iter().flat_map(move |gt| {
                gt.iter()
                    .enumerate()
                    .filter(|(_, &entry)| entry > 0)
                    .map(move |(j, _)| t as u64 * per_table + j as u64)
            })
        })
    }

    /// The grain's sector in the file; 0 or 1: no data (unallocated, or a zero grain).
    pub(super) fn entry(&self, grain: u64) -> u32 {
        let per_table = u64::from(self.header.gtes_per_gt);
        let table = usize::try_from(grain / per_table).unwrap_or(usize::MAX);
        match self.tables.get(table) {
            Some(Some(gt)) => gt[(grain % per_table) as usize],
            _ => 0,
        }
    }

    /// Reads grain `grain` of the disk into `out` (`grain_bytes` long): zeros for a grain
    /// with no data.
    pub(super) fn read_grain(
        &self,
        file: &File,
        path: &Path,
        grain: u64,
        out: &mut [u8],
        scratch: &mut Scratch,
    ) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let entry = self.entry(grain);
        if entry <= 1 {
            out.fill(0);
            return Ok(());
        }
        let offset = u64::from(entry) * SECTOR;
        let short = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => corrupt(
                path,
                "the file is shorter than its grain tables say (changed since it was checked?)",
            ),
            _ => io(path)(e),
        };
        if !self.stream_optimized {
            return file.read_exact_at(out, offset).map_err(short);
        }
        let mut marker = [0u8; 12];
        file.read_exact_at(&mut marker, offset).map_err(short)?;
        let lba = u64::from_le_bytes(marker[..8].try_into().unwrap());
        let size = u32::from_le_bytes(marker[8..12].try_into().unwrap()) as usize;
        // Deflate never grows data by more than a little; more is no grain.
        if lba != grain * self.header.grain_sectors || size > out.len() * 2 + 1024 {
            return Err(corrupt(path, &format!("grain {grain}'s marker is damaged")));
        }
        let Scratch {
            compressed,
            inflate,
        } = scratch;
        compressed.resize(size, 0);
        file.read_exact_at(compressed, offset + 12).map_err(short)?;
        inflate.reset(true);
        let status = inflate.decompress(compressed, out, flate2::FlushDecompress::Finish);
        match status {
            Ok(flate2::Status::StreamEnd) => {
                let n = inflate.total_out() as usize;
                out[n..].fill(0); // the disk's last grain may be short
                Ok(())
            }
            _ => Err(corrupt(
                path,
                &format!("grain {grain} does not inflate (damaged data)"),
            )),
        }
    }
}
