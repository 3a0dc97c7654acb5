//! Property tests: no input makes a parser or an image inspector panic, every refusal names
//! the file and what is wrong, the inspectors allocate no more than the file's size, and the
//! SHA-256 kernels agree with `sha2` however the messages are split.
//!
//! The image cases start from real images made by `qemu-img` (raw, VMDK streamOptimized
//! and monolithicSparse, qcow2, VHD, VHDX), truncated and bit-flipped, plus VMDK headers
//! with arbitrary numbers in every field, plus arbitrary bytes behind each format's magic.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::OnceLock;

use imgpub::testing::image;
use imgpub::testing::sha256::{Kernel, Sha256Lanes};
use proptest::prelude::*;
use sha2::Digest;

/// Counts what this thread allocates, so a property can bound an inspector's memory.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counters are plain thread-locals that
// never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|live| {
            live.set(live.get() + layout.size());
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
        });
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(layout.size())));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most `work` had allocated at once on this thread, beyond what was live before.
fn peak_allocation<T>(work: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = work();
    (out, PEAK.with(Cell::get) - base)
}

/// What an inspector may hold beyond the file's bytes: the head, one grain table, the
/// descriptor, names in messages.
const INSPECT_OVERHEAD: usize = 256 << 10;

struct Seeds {
    _dir: common::tempdir::TempDir,
    images: Vec<(&'static str, Vec<u8>)>,
    scratch: PathBuf,
}

/// Real images, made once by qemu-img: (file extension, bytes).
fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = common::tempdir::TempDir::new();
        let raw = common::make_raw(dir.path(), "disk.raw", 2, 1, 99);
        let mut images = vec![("raw", std::fs::read(&raw).unwrap())];
        for (ext, format, options) in [
            ("vmdk", "vmdk", &["-o", "subformat=streamOptimized"][..]),
            ("vmdk", "vmdk", &[][..]),
            ("qcow2", "qcow2", &[][..]),
            ("vhd", "vpc", &[][..]),
            ("vhdx", "vhdx", &[][..]),
        ] {
            let out = dir.path().join(format!("disk-{}.{ext}", images.len()));
            common::qemu_convert(&raw, &out, format, options);
            images.push((ext, std::fs::read(&out).unwrap()));
        }
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        Seeds {
            _dir: dir,
            images,
            scratch,
        }
    })
}

/// Writes `bytes` to a file named for `ext` (one per thread) and inspects it as `upload`
/// does: `inspect`, then `import_format`; then reads it as `--via ebs-direct` does. Checks:
/// no panic (the caller's), an error names the file, and inspecting stays within the
/// file's size in memory.
fn inspect_bytes(ext: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    let path = seeds()
        .scratch
        .join(format!("case-{:?}.{ext}", std::thread::current().id()));
    std::fs::write(&path, bytes).unwrap();
    let (result, peak) = peak_allocation(|| {
        image::inspect(&path).and_then(|info| image::import_format(&path, &info, None))
    });
    prop_assert!(
        peak <= bytes.len() + INSPECT_OVERHEAD,
        "inspecting {} bytes allocated {peak}",
        bytes.len()
    );
    let shown = path.display().to_string();
    if let Err(e) = result {
        prop_assert!(e.to_string().contains(&shown), "{e}");
    }
    // And as `--via ebs-direct` reads it: the blocks the image wrote, each read (the first
    // 64: enough to reach every grain of the seeds).
    let direct = image::inspect(&path).and_then(|info| {
        image::check_direct(&path, &info, None)?;
        let disk = image::Disk::open(&path, &info)?;
        let mut buf = vec![0u8; image::BLOCK_SIZE];
        let mut reader = image::Reader::default();
        for index in disk.data_blocks()?.into_iter().take(64) {
            disk.read_block(index, &mut buf, &mut reader)?;
        }
        Ok(())
    });
    if let Err(e) = direct {
        prop_assert!(e.to_string().contains(&shown), "{e}");
    }
    Ok(())
}

fn flip_bits(mut bytes: Vec<u8>, flips: &[(usize, u8)], near_end: bool) -> Vec<u8> {
    let len = bytes.len();
    for &(at, bit) in flips {
        if len == 0 {
            break;
        }
        // Metadata lives at the start (headers, tables) and at the end (footers).
        let i = if near_end {
            len - 1 - at % len.min(4096)
        } else {
            at % len.min(1 << 16)
        };
        bytes[i] ^= 1 << (bit % 8);
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn real_images_cut_short_or_bit_flipped_are_refused_or_read_never_a_panic(
        which in 0usize..6,
        cut in any::<prop::sample::Index>(),
        keep_whole in any::<bool>(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        near_end in any::<bool>(),
    ) {
        let (ext, bytes) = &seeds().images[which];
        let len = if keep_whole { bytes.len() } else { cut.index(bytes.len() + 1) };
        let case = flip_bits(bytes[..len].to_vec(), &flips, near_end);
        inspect_bytes(ext, &case)?;
    }

    #[test]
    fn vmdk_headers_with_any_numbers_are_refused_or_read_never_a_panic(
        stream in any::<bool>(),
        capacity in any::<u64>(),
        grain_sectors in prop_oneof![any::<u64>(), 0u64..4096],
        descriptor_offset in prop_oneof![any::<u64>(), 0u64..64],
        gtes_per_gt in prop_oneof![any::<u32>(), 0u32..8192],
        gd_offset in prop_oneof![any::<u64>(), 0u64..8192, Just(u64::MAX)],
    ) {
        let (ext, bytes) = &seeds().images[if stream { 1 } else { 2 }];
        let mut case = bytes.clone();
        case[12..20].copy_from_slice(&capacity.to_le_bytes());
        case[20..28].copy_from_slice(&grain_sectors.to_le_bytes());
        case[28..36].copy_from_slice(&descriptor_offset.to_le_bytes());
        case[44..48].copy_from_slice(&gtes_per_gt.to_le_bytes());
        case[56..64].copy_from_slice(&gd_offset.to_le_bytes());
        inspect_bytes(ext, &case)?;
    }

    #[test]
    fn any_bytes_behind_any_magic_are_refused_or_read_never_a_panic(
        magic in prop::sample::select(vec![
            &b""[..], b"KDMV", b"QFI\xfb", b"vhdxfile", b"# Disk DescriptorFile", b"conectix",
        ]),
        ext in prop::sample::select(vec!["raw", "img", "vmdk", "qcow2", "vhd", "vhdx"]),
        rest in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut case = magic.to_vec();
        case.extend(rest);
        inspect_bytes(ext, &case)?;
    }

    #[test]
    fn s3_urls_parse_or_are_refused_and_round_trip(url in "(s3://)?[a-z0-9.\\-]{0,70}(/[ -~]{0,40}){0,3}|\\PC{0,80}") {
        if let Ok(object) = imgpub::testing::s3::S3Object::parse("--source-object", &url) {
            prop_assert!(!object.bucket.is_empty() && !object.key.is_empty());
            let again = imgpub::testing::s3::S3Object::parse("--source-object", &object.to_string());
            prop_assert_eq!(again.ok(), Some(object));
        }
        // A prefix names a valid bucket; a refusal is bad input (exit 2) naming the value.
        match imgpub::testing::s3::S3Prefix::parse(&url) {
            Ok(prefix) => prop_assert_eq!(
                imgpub::testing::s3::parse_bucket_name(&prefix.bucket).ok(),
                Some(prefix.bucket.clone())
            ),
            Err(e) => prop_assert_eq!(e.exit_code(), 2),
        }
        // A valid name is valid again as it came out; a refusal quotes the input.
        match imgpub::testing::s3::parse_bucket_name(&url) {
            Ok(name) => {
                prop_assert!((3..=63).contains(&name.len()));
                prop_assert_eq!(imgpub::testing::s3::parse_bucket_name(&name).ok(), Some(name));
            }
            Err(e) => {
                prop_assert_eq!(e.exit_code(), 2);
                prop_assert!(e.to_string().contains(&format!("{url:?}")), "{}", e);
            }
        }
    }

    #[test]
    fn tags_parse_or_are_refused(args in prop::collection::vec("[a-zA-Z0-9=,:/ ._\\-]{0,30}|\\PC{0,30}", 0..4)) {
        if let Ok(tags) = imgpub::testing::tags::parse("--tags", &args) {
            prop_assert!(tags.iter().all(|(k, _)| !k.is_empty()));
        }
    }

    #[test]
    fn image_args_parse_or_are_refused(arg in "([a-z]{2}(-[a-z]+){1,2}-[0-9]{1,2}=)?ami-[0-9a-f]{0,20}|\\PC{0,40}") {
        if let Ok(image) = imgpub::testing::images::parse_image_arg(&arg, "us-east-1") {
            prop_assert!(image.image_id.starts_with("ami-") && !image.region.is_empty());
        }
        check_copy_lines(&arg)?;
        // A template parses, or the refusal quotes it (bad input, exit 2).
        if let Err(e) = imgpub::testing::ssm::Template::parse(&arg) {
            prop_assert_eq!(e.exit_code(), 2);
            prop_assert!(e.to_string().contains(&format!("--parameter {arg:?}")), "{}", e);
        }
    }

    #[test]
    fn copy_lines_parse_or_are_refused(lines in prop::collection::vec(
        r#"\{"[a-z]{2}-[a-z]+-[0-9]":\{"ami":"ami-[0-9a-f]{1,17}","snapshot":"snap-[0-9a-f]{1,17}"\}\}|\PC{0,60}"#, 0..5)) {
        check_copy_lines(&lines.join("\n"))?;
    }
}

/// copy-regions lines read back: each AMI an `ami-` id in a region, at most one per line
/// (these lines name one region each); a refusal is bad input naming the input and line.
fn check_copy_lines(text: &str) -> Result<(), TestCaseError> {
    match imgpub::testing::images::parse_copy_lines(text, "out.json") {
        Ok(images) => {
            prop_assert!(images.len() <= text.lines().count(), "{images:?}");
            for image in images {
                prop_assert!(image.image_id.starts_with("ami-") && !image.region.is_empty());
            }
        }
        Err(e) => {
            prop_assert_eq!(e.exit_code(), 2);
            prop_assert!(e.to_string().starts_with("out.json line "), "{}", e);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// Every kernel this CPU runs, any number of messages, any length, fed in any split of
    /// whole blocks: the digests `sha2` computes.
    #[test]
    fn sha256_kernels_agree_with_sha2(
        messages in (1usize..=20, 0usize..1500).prop_flat_map(|(lanes, len)| {
            prop::collection::vec(prop::collection::vec(any::<u8>(), len), lanes)
        }),
        splits in prop::collection::vec(0usize..8, 0..5),
    ) {
        let (lanes, len) = (messages.len(), messages[0].len());
        let want: Vec<[u8; 32]> = messages.iter().map(|m| sha2::Sha256::digest(m).into()).collect();
        for kernel in [Kernel::Portable, Kernel::ShaNi, Kernel::Avx512] {
            if !kernel.runs_here() {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| eprintln!("{kernel:?} does not run on this CPU: not tested here"));
                continue;
            }
            let mut sha = Sha256Lanes::with_kernel(lanes, kernel);
            let mut at = 0;
            for blocks in &splits {
                let window = (blocks * 64).min((len - at) / 64 * 64);
                let windows: Vec<&[u8]> = messages.iter().map(|m| &m[at..at + window]).collect();
                sha.update(&windows);
                at += window;
            }
            let tails: Vec<&[u8]> = messages.iter().map(|m| &m[at..]).collect();
            prop_assert_eq!(&sha.finish(&tails), &want, "{:?}", kernel);
        }
    }
}

#[test]
fn the_seed_images_are_what_qemu_img_made() {
    // The properties above are only as good as their seeds: each is read as its format.
    let names: Vec<String> = seeds()
        .images
        .iter()
        .enumerate()
        .map(|(i, (ext, bytes))| {
            let path = seeds().scratch.join(format!("seed-{i}.{ext}"));
            std::fs::write(&path, bytes).unwrap();
            image::inspect(&path).unwrap().format.name().to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "raw",
            "VMDK (streamOptimized)",
            "VMDK (monolithicSparse)",
            "qcow2",
            "VHD (dynamic)",
            "VHDX"
        ]
    );
}
