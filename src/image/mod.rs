//! Local image inspection: the format by its magic, the virtual size, and enough of the
//! structure to tell a truncated file, so that a bad image fails here and not twenty
//! minutes later inside AWS. No qemu-img at run time.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

mod disk;
mod vmdk;

pub use disk::{Disk, Reader, BLOCK_SIZE};

pub(crate) const GIB: u64 = 1 << 30;

/// The formats ImportSnapshot takes (`DiskContainer.Format`, ore's `--object-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFormat {
    Vmdk,
    Raw,
    Vhd,
    Vhdx,
}

impl crate::names::Named for ObjectFormat {
    const NAMES: &'static [(Self, &'static str, &'static [&'static str])] = &[
        (ObjectFormat::Vmdk, "VMDK", &[]),
        (ObjectFormat::Raw, "RAW", &[]),
        (ObjectFormat::Vhd, "VHD", &[]),
        (ObjectFormat::Vhdx, "VHDX", &[]),
    ];
}

impl ObjectFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectFormat::Vmdk => "VMDK",
            ObjectFormat::Raw => "RAW",
            ObjectFormat::Vhd => "VHD",
            ObjectFormat::Vhdx => "VHDX",
        }
    }
}

impl std::fmt::Display for ObjectFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A raw disk; `partition_table`: it starts with an MBR or a GPT.
    Raw {
        partition_table: bool,
    },
    /// VMDK sparse extent; `stream_optimized` is the only kind AWS imports.
    Vmdk {
        stream_optimized: bool,
    },
    Qcow2,
    /// `fixed`: the disk's bytes as they are, then the 512-byte footer (else dynamic or
    /// differencing: blocks through a table).
    Vhd {
        fixed: bool,
    },
    Vhdx,
}

impl Format {
    /// The `DiskContainer.Format` ImportSnapshot takes, when AWS can import it.
    pub fn import_format(self) -> Option<ObjectFormat> {
        match self {
            Format::Raw { .. } => Some(ObjectFormat::Raw),
            Format::Vmdk {
                stream_optimized: true,
            } => Some(ObjectFormat::Vmdk),
            Format::Vhd { .. } => Some(ObjectFormat::Vhd),
            Format::Vhdx => Some(ObjectFormat::Vhdx),
            Format::Vmdk {
                stream_optimized: false,
            }
            | Format::Qcow2 => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Raw { .. } => "raw",
            Format::Vmdk {
                stream_optimized: true,
            } => "VMDK (streamOptimized)",
            Format::Vmdk {
                stream_optimized: false,
            } => "VMDK (monolithicSparse)",
            Format::Qcow2 => "qcow2",
            Format::Vhd { fixed: true } => "VHD (fixed)",
            Format::Vhd { fixed: false } => "VHD (dynamic)",
            Format::Vhdx => "VHDX",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: Format,
    /// Size of the disk the image describes, when the format tells it.
    pub virtual_size: Option<u64>,
    pub file_size: u64,
}

impl ImageInfo {
    /// The virtual size rounded up to whole GiB, as `--disk-size-inspect` uses it (ore does
    /// the same).
    pub fn virtual_size_gib(&self) -> Option<u64> {
        self.virtual_size.map(|s| s.div_ceil(GIB).max(1))
    }
}

/// Reads exactly `buf.len()` bytes at `offset`, or fewer at the end of the file.
fn read_at(file: &mut File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    file.seek(SeekFrom::Start(offset))?;
    let mut done = 0;
    while done < buf.len() {
        match file.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// Inspects the image at `path`. Blocking file I/O: call it from `spawn_blocking`.
pub fn inspect(path: &Path) -> Result<ImageInfo> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Invalid(format!(
                "image file {shown} does not exist; pass the path of image.vmdk or image.raw with --file"
            ))
        } else {
            Error::io(format!("reading image file {shown}"), e)
        }
    })?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!(
            "{shown} is not a regular file; pass a disk image"
        )));
    }
    let file_size = meta.len();
    if file_size == 0 {
        return Err(Error::Invalid(format!("image file {shown} is empty")));
    }
    let mut file = File::open(path).map_err(|e| Error::io(format!("opening {shown}"), e))?;
    // Two sectors: the formats' magic, and for a raw disk its MBR or GPT header.
    let mut head = [0u8; 1024];
    let n =
        read_at(&mut file, 0, &mut head).map_err(|e| Error::io(format!("reading {shown}"), e))?;
    let head = &head[..n];

    if head.starts_with(b"QFI\xfb") && head.len() >= 32 {
        let size = u64::from_be_bytes(head[24..32].try_into().unwrap());
        return Ok(ImageInfo {
            format: Format::Qcow2,
            virtual_size: Some(size),
            file_size,
        });
    }
    if head.starts_with(b"KDMV") {
        return vmdk::inspect(&mut file, path, head, file_size);
    }
    if head.starts_with(b"# Disk DescriptorFile") {
        return Err(Error::Invalid(format!(
            "{shown} is only a VMDK descriptor, the data is in other files; make one image with `qemu-img convert -O vmdk -o subformat=streamOptimized {shown} {}`",
            converted(path, "vmdk").display()
        )));
    }
    if head.starts_with(b"vhdxfile") {
        return Ok(ImageInfo {
            format: Format::Vhdx,
            virtual_size: None,
            file_size,
        });
    }
    if file_size >= 512 {
        let mut footer = [0u8; 512];
        read_at(&mut file, file_size - 512, &mut footer)
            .map_err(|e| Error::io(format!("reading {shown}"), e))?;
        if footer.starts_with(b"conectix") {
            let size = u64::from_be_bytes(footer[48..56].try_into().unwrap());
            // Disk type 2: fixed.
            let fixed = footer[60..64] == [0, 0, 0, 2];
            return Ok(ImageInfo {
                format: Format::Vhd { fixed },
                virtual_size: Some(size),
                file_size,
            });
        }
    }
    let mbr = head.len() >= 512 && head[510..512] == [0x55, 0xAA];
    let gpt = head.len() >= 520 && &head[512..520] == b"EFI PART";
    Ok(ImageInfo {
        format: Format::Raw {
            partition_table: mbr || gpt,
        },
        virtual_size: Some(file_size),
        file_size,
    })
}

/// Refuses what AWS cannot import, or a format that disagrees with `--object-format`; the
/// message names the fix. Returns the ImportSnapshot format to use.
pub fn import_format(
    path: &Path,
    info: &ImageInfo,
    requested: Option<ObjectFormat>,
) -> Result<ObjectFormat> {
    let shown = path.display();
    let Some(detected) = info.format.import_format() else {
        return Err(Error::Invalid(format!(
            "{shown} is a {} image, which AWS cannot import; convert it with `qemu-img convert -O vmdk -o subformat=streamOptimized {shown} {}`",
            info.format.name(),
            converted(path, "vmdk").display()
        )));
    };
    match requested {
        Some(req) if req != detected => {
            return Err(Error::Invalid(format!(
                "{shown} is a {} image but --object-format {req} was given; pass --object-format {detected} or leave it out",
                info.format.name()
            )))
        }
        Some(_) => {}
        None => check_name_and_content(path, info)?,
    }
    if let Format::Raw { partition_table } = info.format {
        check_raw(path, info.file_size, partition_table)?;
    }
    Ok(detected)
}

/// Where a suggested `qemu-img convert` writes: beside the input, with the format's
/// extension, but never the input itself (qemu-img cannot convert a file onto itself).
pub(crate) fn converted(path: &Path, ext: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
    let plain = path.with_file_name(format!("{stem}.{ext}"));
    match plain == path {
        true => path.with_file_name(format!("{stem}-converted.{ext}")),
        false => plain,
    }
}

/// Why `--via ebs-direct` cannot read `path`, and the fix: a conversion to raw, or `--via
/// s3` only for what ImportSnapshot takes.
pub(crate) fn not_direct(path: &Path, info: &ImageInfo) -> String {
    let shown = path.display();
    let s3 = match info.format.import_format() {
        Some(_) => ", or publish it with --via s3",
        None => "",
    };
    format!(
        "{shown} is a {} image; --via ebs-direct reads raw, VMDK and fixed VHD images: convert it with `qemu-img convert -O raw {shown} {}`{s3}",
        info.format.name(),
        converted(path, "raw").display()
    )
}

/// Refuses what `--via ebs-direct` cannot read (qcow2, VHD, VHDX: it reads raw and VMDK),
/// a name the content does not bear out, and a raw file that is no disk.
pub fn check_direct(path: &Path, info: &ImageInfo, requested: Option<ObjectFormat>) -> Result<()> {
    let shown = path.display();
    match (info.format, requested) {
        (Format::Qcow2 | Format::Vhd { fixed: false } | Format::Vhdx, _) => {
            return Err(Error::Invalid(not_direct(path, info)))
        }
        (format, Some(req)) if format.import_format() != Some(req) && !(req == ObjectFormat::Vmdk && matches!(format, Format::Vmdk { .. })) => {
            return Err(Error::Invalid(format!(
                "{shown} is a {} image but --object-format {req} was given; leave --object-format out",
                info.format.name()
            )))
        }
        (_, Some(_)) => {}
        (_, None) => check_name_and_content(path, info)?,
    }
    match info.format {
        Format::Raw { partition_table } => check_raw(path, info.file_size, partition_table)?,
        Format::Vhd { fixed: true }
            if info.virtual_size.unwrap_or(u64::MAX) > info.file_size - 512 =>
        {
            return Err(Error::Invalid(format!(
                "{shown} is a fixed VHD shorter than the disk its footer describes (truncated?); rebuild it, or check the copy is complete"
            )));
        }
        _ => {}
    }
    Ok(())
}

/// The format a file's name claims (`.vmdk`, `.vhd`, `.vhdx`, `.qcow2`), if any.
fn named_format(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "vmdk" => "VMDK",
        "vhd" => "VHD",
        "vhdx" => "VHDX",
        "qcow2" | "qcow" => "qcow2",
        _ => return None,
    })
}

/// A name that says one format over content that says another: a file with no header of
/// the named format is refused (a truncated or corrupt download is no raw disk); one whose
/// header is of another format is imported as its content says, with a warning.
fn check_name_and_content(path: &Path, info: &ImageInfo) -> Result<()> {
    let Some(named) = named_format(path) else {
        return Ok(());
    };
    let shown = path.display();
    if let Format::Raw { .. } = info.format {
        return Err(Error::Invalid(format!(
            "{shown} is named like a {named} image but has no {named} header (a truncated or corrupt download?); if it really is a raw disk, pass --object-format raw"
        )));
    }
    if !info.format.name().starts_with(named) {
        tracing::warn!(
            "{shown} is named like a {named} image but is a {} image; importing it as that",
            info.format.name()
        );
    }
    Ok(())
}

/// A raw disk is whole 512-byte sectors; without an MBR or GPT it will not boot the usual
/// way (said, not refused: a filesystem image is still a disk).
fn check_raw(path: &Path, file_size: u64, partition_table: bool) -> Result<()> {
    let shown = path.display();
    if !file_size.is_multiple_of(512) {
        return Err(Error::Invalid(format!(
            "{shown} is {file_size} bytes, not a whole number of 512-byte sectors, so it is no raw disk (a truncated file?)"
        )));
    }
    if !partition_table {
        // A warning even at ore's default level: most likely the wrong file.
        tracing::warn!(
            "{shown} has neither an MBR nor a GPT partition table; an instance may not boot from it"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("imgpub-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_name_the_content_does_not_bear_out_is_refused() {
        // 3,000,000 bytes of noise named .vmdk: no VMDK header, not even whole sectors.
        let noise: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let junk = temp_file("junk.vmdk", &noise);
        let info = inspect(&junk).unwrap();
        let err = import_format(&junk, &info, None).unwrap_err().to_string();
        assert!(
            err.contains("no VMDK header") && err.contains("--object-format raw"),
            "{err}"
        );
        // Forced: then the sector count decides.
        let err = import_format(&junk, &info, Some(ObjectFormat::Raw))
            .unwrap_err()
            .to_string();
        assert!(err.contains("512-byte sectors"), "{err}");

        let sectors = temp_file("whole.vmdk", &vec![0u8; 4096]);
        let info = inspect(&sectors).unwrap();
        assert!(import_format(&sectors, &info, None).is_err());
        assert_eq!(
            import_format(&sectors, &info, Some(ObjectFormat::Raw)).unwrap(),
            ObjectFormat::Raw
        );
        let plain = temp_file("disk.raw", &vec![0u8; 4096]);
        let info = inspect(&plain).unwrap();
        assert_eq!(
            import_format(&plain, &info, None).unwrap(),
            ObjectFormat::Raw
        );
    }

    #[test]
    fn virtual_size_rounds_up_to_whole_gib() {
        let info = |size| ImageInfo {
            format: Format::Raw {
                partition_table: false,
            },
            virtual_size: Some(size),
            file_size: size,
        };
        assert_eq!(info(1).virtual_size_gib(), Some(1));
        assert_eq!(info(GIB).virtual_size_gib(), Some(1));
        assert_eq!(info(GIB + 1).virtual_size_gib(), Some(2));
        assert_eq!(info(3 * GIB / 2).virtual_size_gib(), Some(2));
    }
}
