//! `upload --via ebs-direct` and `upload-snapshot` end to end: the real binary against the
//! stand-in's EBS direct APIs (512 KiB blocks, checksums and completion verified by it);
//! the snapshot's blocks read back through ListSnapshotBlocks and GetSnapshotBlock.

mod common;

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{qemu_convert, tempdir::TempDir, Run, Standin, SECRET_KEY};
use serde_json::Value;

const REGION: &str = "us-east-1";
const BLOCK: usize = 512 * 1024;
const MIB: u64 = 1 << 20;

/// A sparse raw disk of `size` bytes: an MBR signature, pseudo-random data at `extents`
/// (offset, length), one MiB of zeros written out (allocated, but no data) at
/// `zeros_at`, holes elsewhere.
fn scattered_raw(
    dir: &Path,
    name: &str,
    size: u64,
    extents: &[(u64, u64)],
    zeros_at: u64,
) -> PathBuf {
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    file.set_len(size).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ size;
    for &(offset, len) in extents {
        let mut data = vec![0u8; len as usize];
        for b in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            b.copy_from_slice(&bytes[..b.len()]);
        }
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(&data).unwrap();
    }
    file.seek(SeekFrom::Start(zeros_at)).unwrap();
    file.write_all(&vec![0u8; MIB as usize]).unwrap();
    file.seek(SeekFrom::Start(510)).unwrap();
    file.write_all(&[0x55, 0xAA]).unwrap();
    path
}

/// The disk's non-zero 512 KiB blocks: index → bytes.
fn nonzero_blocks(raw: &Path) -> BTreeMap<i32, Vec<u8>> {
    let data = std::fs::read(raw).unwrap();
    data.chunks(BLOCK)
        .enumerate()
        .filter(|(_, b)| b.iter().any(|&x| x != 0))
        .map(|(i, b)| {
            let mut block = b.to_vec();
            block.resize(BLOCK, 0);
            (i as i32, block)
        })
        .collect()
}

/// Data spread over 256 MiB: block-aligned, straddling blocks, a 4 KiB write in a block of
/// its own, 6 MiB in a run.
fn image_extents() -> Vec<(u64, u64)> {
    vec![
        (MIB, 700 * 1024),
        (10 * MIB + 4096, 4096),
        (33 * MIB + 100 * 1024, 900 * 1024),
        (100 * MIB, 6 * MIB),
        (255 * MIB, MIB),
    ]
}

/// The blocks of `zeros_raw` that the image wrote as zeros (the MiB at 60 MiB).
const WRITTEN_ZEROS: [i32; 2] = [120, 121];

/// 128 MiB: data in three of `image_extents`, one MiB written as zeros at 60 MiB.
fn zeros_raw(dir: &Path, name: &str) -> PathBuf {
    scattered_raw(dir, name, 128 * MIB, &image_extents()[..3], 60 * MIB)
}

fn ebs(standin: &Standin) -> aws_sdk_ebs::Client {
    aws_sdk_ebs::Client::new(&standin.sdk(REGION))
}

/// The snapshot's blocks, read back through ListSnapshotBlocks and GetSnapshotBlock.
async fn snapshot_blocks(standin: &Standin, snapshot: &str) -> BTreeMap<i32, Vec<u8>> {
    let ebs = ebs(standin);
    let listed = ebs
        .list_snapshot_blocks()
        .snapshot_id(snapshot)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.block_size(), Some(BLOCK as i32));
    let mut blocks = BTreeMap::new();
    for b in listed.blocks() {
        let got = ebs
            .get_snapshot_block()
            .snapshot_id(snapshot)
            .block_index(b.block_index().unwrap())
            .block_token(b.block_token().unwrap())
            .send()
            .await
            .unwrap();
        let data = got
            .block_data
            .collect()
            .await
            .unwrap()
            .into_bytes()
            .to_vec();
        blocks.insert(b.block_index().unwrap(), data);
    }
    blocks
}

/// The snapshot's state and tags, and the AMI's root snapshot.
async fn snapshot_state(standin: &Standin, snapshot: &str) -> (String, Vec<(String, String)>) {
    let out = standin
        .ec2(REGION)
        .describe_snapshots()
        .snapshot_ids(snapshot)
        .send()
        .await
        .unwrap();
    let s = &out.snapshots()[0];
    (
        s.state().unwrap().as_str().to_string(),
        common::tag_pairs(s.tags()),
    )
}

async fn root_snapshot(standin: &Standin, ami: &str) -> String {
    let out = standin
        .ec2(REGION)
        .describe_images()
        .image_ids(ami)
        .send()
        .await
        .unwrap();
    out.images()[0].block_device_mappings()[0]
        .ebs()
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_string()
}

/// `imgpub aws upload --via ebs-direct --file FILE --name NAME`.
fn direct_cmd(standin: &Standin, file: &Path, name: &str) -> common::Imgpub {
    standin
        .imgpub()
        .args([
            "aws",
            "upload",
            "--region",
            REGION,
            "--via",
            "ebs-direct",
            "-v",
        ])
        .arg_path("--file", file)
        .args(["--name", name])
}

fn direct_upload(standin: &Standin, file: &Path, name: &str, extra: &[&str]) -> Run {
    direct_cmd(standin, file, name).args(extra).run()
}

/// Nothing of the S3 path was touched: no bucket, object or import task.
fn assert_no_s3_or_import(counts: &Value) {
    let map = counts.as_object().unwrap();
    let touched: Vec<&String> = map
        .keys()
        .filter(|k| k.starts_with("s3.") || k.contains("Import") || k.starts_with("iam.GetRole"))
        .collect();
    assert!(touched.is_empty(), "S3/import calls: {counts}");
}

async fn assert_snapshot_is_disk(standin: &Standin, snapshot: &str, raw: &Path) {
    let want = nonzero_blocks(raw);
    let got = snapshot_blocks(standin, snapshot).await;
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the snapshot holds exactly the disk's non-zero blocks"
    );
    for (index, data) in &want {
        assert!(got[index] == *data, "block {index} differs");
    }
}

#[tokio::test]
async fn a_stream_optimized_vmdk_becomes_an_ami_without_s3_or_the_import_service() {
    let standin = Standin::start();
    let dir = TempDir::new();
    let raw = scattered_raw(
        dir.path(),
        "disk.raw",
        256 * MIB,
        &image_extents(),
        60 * MIB,
    );
    let vmdk = dir.path().join("disk.vmdk");
    qemu_convert(&raw, &vmdk, "vmdk", &["-o", "subformat=streamOptimized"]);
    let want = nonzero_blocks(&raw);

    standin.reset_requests();
    let run = direct_upload(
        &standin,
        &vmdk,
        "direct-vmdk",
        &["--tags", "stream=stable", "--public"],
    );
    let out = run.json();
    // ore's JSON without S3Object: nothing was put in S3.
    assert_eq!(
        out.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["HVM", "SnapshotID"],
        "{out}"
    );
    let snapshot = out["SnapshotID"].as_str().unwrap();
    let ami = out["HVM"].as_str().unwrap();
    assert_eq!(root_snapshot(&standin, ami).await, snapshot);
    let (state, tags) = snapshot_state(&standin, snapshot).await;
    assert_eq!(state, "completed");
    assert!(
        tags.contains(&("Name".into(), "direct-vmdk".into())),
        "{tags:?}"
    );
    assert!(
        tags.contains(&("stream".into(), "stable".into())),
        "{tags:?}"
    );
    assert_eq!(
        common::launch_permissions(&standin.ec2(REGION), ami).await,
        ["group:all"]
    );

    let counts = standin.counts();
    assert_eq!(
        common::count(&counts, "ebs.PutSnapshotBlock"),
        want.len() as u64,
        "{counts}"
    );
    assert_eq!(common::count(&counts, "ebs.StartSnapshot"), 1, "{counts}");
    assert_eq!(
        common::count(&counts, "ebs.CompleteSnapshot"),
        1,
        "{counts}"
    );
    assert_no_s3_or_import(&counts);
    assert_snapshot_is_disk(&standin, snapshot, &raw).await;

    // A rerun finds the completed snapshot and the AMI: nothing written again.
    standin.reset_requests();
    let again = direct_upload(&standin, &vmdk, "direct-vmdk", &[]).json();
    assert_eq!(again["HVM"], out["HVM"]);
    assert_eq!(again["SnapshotID"], out["SnapshotID"]);
    let counts = standin.counts();
    for call in [
        "ebs.StartSnapshot",
        "ebs.PutSnapshotBlock",
        "ec2.RegisterImage",
    ] {
        assert_eq!(common::count(&counts, call), 0, "{call}: {counts}");
    }
}

#[tokio::test]
async fn a_sparse_raw_file_and_a_monolithic_vmdk_send_only_their_data_blocks() {
    let standin = Standin::start();
    let dir = TempDir::new();
    // 3 GiB, mostly holes: the snapshot is 3 GiB, the data is 9 MiB.
    let mut extents = image_extents();
    extents.push((3 * (1 << 30) - MIB, MIB));
    let raw = scattered_raw(dir.path(), "sparse.raw", 3 << 30, &extents, 60 * MIB);
    let want = nonzero_blocks(&raw);

    // --dry-run: the calls it would make, none made.
    standin.reset_requests();
    let dry = standin
        .imgpub()
        .args([
            "aws",
            "upload",
            "--region",
            REGION,
            "--via",
            "ebs-direct",
            "--dry-run",
        ])
        .arg_path("--file", &raw)
        .args(["--name", "direct-raw"])
        .run();
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let ops: Vec<String> = dry
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["op"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for op in [
        "ebs:StartSnapshot",
        "ebs:PutSnapshotBlock",
        "ebs:CompleteSnapshot",
        "ec2:RegisterImage",
    ] {
        assert!(ops.iter().any(|o| o == op), "{op} in {ops:?}");
    }
    assert!(
        !ops.iter()
            .any(|o| o.starts_with("s3:") || o.contains("Import")),
        "{ops:?}"
    );
    let counts = standin.counts();
    assert!(
        counts
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("ebs.")),
        "{counts}"
    );

    // IMGPUB_VIA sets the default path, under cosa's command line (which always names a
    // bucket and --delete-object: neither is used, the bucket does not even exist).
    standin.reset_requests();
    let run = standin
        .imgpub()
        .env("IMGPUB_VIA", "ebs-direct")
        .args(["aws", "upload", "--region", REGION, "--disk-size-inspect"])
        .arg_path("--file", &raw)
        .args(["--name", "direct-raw", "--ami-name", "direct-raw"])
        .args(["--bucket", "s3://no-such-bucket/fcos", "--delete-object"])
        .run();
    let out = run.json();
    let snapshot = out["SnapshotID"].as_str().unwrap().to_string();
    let counts = standin.counts();
    assert_eq!(
        common::count(&counts, "ebs.PutSnapshotBlock"),
        want.len() as u64,
        "{counts}"
    );
    assert_no_s3_or_import(&counts);
    assert_snapshot_is_disk(&standin, &snapshot, &raw).await;
    let size = standin
        .ec2(REGION)
        .describe_snapshots()
        .snapshot_ids(&snapshot)
        .send()
        .await
        .unwrap()
        .snapshots()[0]
        .volume_size();
    assert_eq!(size, Some(3), "the snapshot is the disk's size, in GiB");

    // The stage command: a monolithicSparse VMDK (which ImportSnapshot refuses) becomes a
    // snapshot and nothing else; it prints only the snapshot.
    let small = scattered_raw(
        dir.path(),
        "small.raw",
        64 * MIB,
        &image_extents()[..3],
        20 * MIB,
    );
    let sparse_vmdk = dir.path().join("small.vmdk");
    qemu_convert(&small, &sparse_vmdk, "vmdk", &[]);
    standin.reset_requests();
    let run = standin
        .imgpub()
        .args(["aws", "upload-snapshot", "--region", REGION])
        .arg_path("--file", &sparse_vmdk)
        .args(["--name", "direct-stage", "--tags", "team=os"])
        .run();
    let out = run.json();
    assert_eq!(out.as_object().unwrap().len(), 1, "{out}");
    let stage_snapshot = out["SnapshotID"].as_str().unwrap();
    let counts = standin.counts();
    assert_eq!(common::count(&counts, "ec2.RegisterImage"), 0, "{counts}");
    assert_eq!(
        common::count(&counts, "ebs.PutSnapshotBlock"),
        nonzero_blocks(&small).len() as u64
    );
    assert_snapshot_is_disk(&standin, stage_snapshot, &small).await;

    // A fixed VHD is the disk's bytes and a footer: read as raw, footer left out.
    let vhd = dir.path().join("small.vhd");
    qemu_convert(
        &small,
        &vhd,
        "vpc",
        &["-o", "subformat=fixed,force_size=on"],
    );
    let out = standin
        .imgpub()
        .args(["aws", "upload-snapshot", "--region", REGION])
        .arg_path("--file", &vhd)
        .args(["--name", "direct-vhd"])
        .run()
        .json();
    assert_snapshot_is_disk(&standin, out["SnapshotID"].as_str().unwrap(), &small).await;
}

/// When to stop a direct upload: once the stand-in has seen this many requests of a call.
#[derive(Debug, Clone, Copy)]
enum Moment {
    Blocks(u64),
    CompleteSnapshot,
    RegisterImage,
}

/// Starts a direct upload of `raw` whose blocks are slowed by `delay` seconds each and
/// stops it with `signal` at `moment`, read from the stand-in's request counts.
async fn stop_at(
    standin: &Standin,
    raw: &Path,
    name: &str,
    signal: &str,
    moment: Moment,
    delay: f64,
) {
    stop_at_with(standin, raw, name, &[], signal, moment, delay).await;
}

/// `stop_at` with more flags.
async fn stop_at_with(
    standin: &Standin,
    raw: &Path,
    name: &str,
    extra: &[&str],
    signal: &str,
    moment: Moment,
    delay: f64,
) {
    standin.fault(&format!(
        r#"{{"service": "ebs", "action": "PutSnapshotBlock", "delay": {delay}, "count": 100000}}"#
    ));
    let mut child = direct_cmd(standin, raw, name)
        .args(["--blocks-in-flight", "2"])
        .args(extra)
        .cmd;
    let mut child = child
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (call, at) = match moment {
        Moment::Blocks(n) => ("ebs.PutSnapshotBlock", n),
        Moment::CompleteSnapshot => ("ebs.CompleteSnapshot", 1),
        Moment::RegisterImage => ("ec2.RegisterImage", 1),
    };
    // The run may end before the moment comes (a late moment, fewer blocks to send than
    // the moment's count): then there is nothing to stop, and the rerun finds it done.
    let output = match standin.wait_for_calls(call, at, &mut child) {
        true => common::signal_and_wait(child, signal).await,
        false => child.wait_with_output().unwrap(),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains(SECRET_KEY));
    standin.control("DELETE", "/_standin/faults", None);
}

/// The block journal a stopped run left for `snapshot` (blocks EBS accepted), if any.
fn journaled_blocks(standin: &Standin, snapshot: &str) -> Option<u64> {
    let path = standin
        .home
        .path()
        .join(".cache/imgpub/ebs-direct")
        .join(REGION)
        .join(snapshot);
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .skip(1)
            .filter(|l| {
                l.split_once(' ')
                    .is_some_and(|(i, d)| i.parse::<u32>().is_ok() && d.len() == 64)
            })
            .count() as u64,
    )
}

/// Every snapshot the account owns is the root of an AMI: nothing was left half-made.
async fn assert_no_orphan_snapshots(standin: &Standin) {
    let ec2 = standin.ec2(REGION);
    let images = ec2.describe_images().owners("self").send().await.unwrap();
    let roots: Vec<&str> = images
        .images()
        .iter()
        .flat_map(|i| i.block_device_mappings())
        .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()))
        .collect();
    let snapshots = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    for s in snapshots.snapshots() {
        let id = s.snapshot_id().unwrap();
        assert!(
            roots.contains(&id),
            "snapshot {id} ({:?}) is used by no AMI",
            s.state()
        );
    }
}

/// Stops a direct upload with `signal` mid-way and reruns: the same snapshot (never read
/// while pending, which EBS refuses), only the blocks the journal does not list sent, one AMI.
async fn interrupted_direct_upload_resumes(signal: &str) {
    let standin = Standin::start();
    let dir = TempDir::new();
    let raw = scattered_raw(
        dir.path(),
        "resume.raw",
        64 * MIB,
        &[(MIB, 20 * MIB)],
        40 * MIB,
    );
    let total = nonzero_blocks(&raw).len() as u64;
    assert_eq!(total, 41, "the MBR block and 40 of data");
    stop_at(
        &standin,
        &raw,
        "resume-direct",
        signal,
        Moment::Blocks(8),
        0.3,
    )
    .await;

    let pending = standin
        .ec2(REGION)
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    assert_eq!(pending.snapshots().len(), 1);
    let first = pending.snapshots()[0].snapshot_id().unwrap().to_string();
    assert_eq!(pending.snapshots()[0].state().unwrap().as_str(), "pending");
    let journaled = journaled_blocks(&standin, &first).expect("a block journal");
    assert!(
        journaled >= 6 && journaled < total,
        "{journaled} of {total}"
    );

    standin.reset_requests();
    let out = direct_upload(&standin, &raw, "resume-direct", &[]).json();
    assert_eq!(out["SnapshotID"], first.as_str(), "the same snapshot");
    let counts = standin.counts();
    assert_eq!(common::count(&counts, "ebs.StartSnapshot"), 0, "{counts}");
    assert_eq!(
        common::count(&counts, "ebs.ListSnapshotBlocks"),
        0,
        "{counts}"
    );
    assert_eq!(
        common::count(&counts, "ebs.PutSnapshotBlock"),
        total - journaled,
        "only the blocks the journal does not list: {counts}"
    );
    assert_eq!(common::count(&counts, "ec2.RegisterImage"), 1, "{counts}");
    assert_snapshot_is_disk(&standin, &first, &raw).await;
    assert_eq!(
        journaled_blocks(&standin, &first),
        None,
        "the journal goes when done"
    );
}

/// The moment seed `seed` stops a run at: after one of the first `blocks` blocks, at
/// CompleteSnapshot, or at RegisterImage (a mix of the seed, so neighbours differ).
fn moment_for(seed: u64, blocks: u64) -> Moment {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (seed + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    match x % (blocks + 2) {
        n if n < blocks => Moment::Blocks(n + 1),
        n if n == blocks => Moment::CompleteSnapshot,
        _ => Moment::RegisterImage,
    }
}

/// Killed (or interrupted) at 20 moments drawn from seeds, some with the journal lost:
/// every rerun exits 0 with an AMI whose blocks are the image's, and no snapshot is left
/// that no AMI uses.
#[tokio::test]
async fn stopped_at_random_moments_every_rerun_finishes() {
    let standin = Standin::start();
    standin.control(
        "POST",
        "/_standin/config",
        Some(r#"{"ebs_complete_seconds": 0.5}"#),
    );
    let dir = TempDir::new();
    let raw = scattered_raw(
        dir.path(),
        "kill.raw",
        32 * MIB,
        &[(MIB, 12 * MIB)],
        20 * MIB,
    );
    let total = nonzero_blocks(&raw).len() as u64;
    for seed in 0u64..20 {
        let moment = moment_for(seed, total);
        let signal = if seed % 3 == 2 { "-INT" } else { "-KILL" };
        let lose_journal = seed % 5 == 4;
        let name = format!("kill-{seed}");
        standin.reset_requests();
        stop_at(&standin, &raw, &name, signal, moment, 0.01).await;
        if lose_journal {
            let _ = std::fs::remove_dir_all(standin.home.path().join(".cache/imgpub"));
        }
        let run = direct_upload(&standin, &raw, &name, &[]);
        assert_eq!(
            run.code, 0,
            "seed {seed} ({moment:?}, {signal}, journal lost: {lose_journal}): {}",
            run.stderr
        );
        let out = run.json();
        let snapshot = out["SnapshotID"].as_str().unwrap();
        assert_eq!(
            root_snapshot(&standin, out["HVM"].as_str().unwrap()).await,
            snapshot
        );
        assert_snapshot_is_disk(&standin, snapshot, &raw).await;
    }
    assert_no_orphan_snapshots(&standin).await;
}

#[tokio::test]
async fn sigkill_mid_upload_then_rerun_sends_only_the_missing_blocks() {
    interrupted_direct_upload_resumes("-KILL").await;
}

#[tokio::test]
async fn ctrl_c_mid_upload_exits_130_and_a_rerun_continues() {
    interrupted_direct_upload_resumes("-INT").await;
}

#[tokio::test]
async fn throttling_5xx_and_lost_answers_on_ebs_at_5_percent_still_complete() {
    let standin = Standin::start();
    let dir = TempDir::new();
    let raw = scattered_raw(
        dir.path(),
        "chaos.raw",
        256 * MIB,
        &[(MIB, 100 * MIB)],
        200 * MIB,
    );
    standin.control(
        "POST",
        "/_standin/chaos",
        Some(r#"{"seed": 14, "rate": 0.05, "services": ["ebs"]}"#),
    );
    let run = direct_upload(&standin, &raw, "chaos-direct", &[]);
    let report: Value =
        serde_json::from_str(&standin.control("DELETE", "/_standin/chaos", None)).unwrap();
    let out = run.json();
    assert!(
        report["injected"].as_u64().unwrap() >= 5,
        "faults were injected: {report}"
    );
    let snapshot = out["SnapshotID"].as_str().unwrap();
    // The stand-in completed it only with the right count and LINEAR checksum.
    assert_eq!(snapshot_state(&standin, snapshot).await.0, "completed");
    assert_snapshot_is_disk(&standin, snapshot, &raw).await;
}

#[test]
fn bad_images_are_refused_before_start_snapshot() {
    let standin = Standin::start();
    let dir = TempDir::new();
    let raw = scattered_raw(dir.path(), "ok.raw", 16 * MIB, &[(MIB, MIB)], 8 * MIB);
    let vmdk = dir.path().join("ok.vmdk");
    qemu_convert(&raw, &vmdk, "vmdk", &["-o", "subformat=streamOptimized"]);
    let bytes = std::fs::read(&vmdk).unwrap();

    // The header's grain size made impossible.
    let mut corrupt = bytes.clone();
    corrupt[20..28].copy_from_slice(&0u64.to_le_bytes());
    let corrupt_path = dir.path().join("corrupt.vmdk");
    std::fs::write(&corrupt_path, &corrupt).unwrap();
    // Shorter than its grain tables say.
    let cut = dir.path().join("cut.vmdk");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    // 2 GiB of disk for a 1 GiB volume.
    let big = scattered_raw(dir.path(), "big.raw", 2 << 30, &[(MIB, MIB)], 8 * MIB);
    let qcow2 = dir.path().join("disk.qcow2");
    qemu_convert(&raw, &qcow2, "qcow2", &[]);
    let dynamic = dir.path().join("dynamic.vhd");
    qemu_convert(&raw, &dynamic, "vpc", &["-o", "subformat=dynamic"]);

    let cases: [(&Path, &[&str], &str); 5] = [
        (&corrupt_path, &[], "not a valid VMDK image"),
        (&cut, &[], "truncated"),
        (
            &big,
            &["--disk-size-gib", "1"],
            "larger than --disk-size-gib 1",
        ),
        (&qcow2, &[], "qemu-img convert -O raw"),
        (&dynamic, &[], "VHD (dynamic) image"),
    ];
    for (file, extra, message) in cases {
        standin.reset_requests();
        let run = direct_upload(&standin, file, "bad", extra);
        assert_eq!(run.code, 2, "{}: {}", file.display(), run.stderr);
        assert!(run.error_line().contains(message), "{}", run.stderr);
        let counts = standin.counts();
        assert!(
            counts
                .as_object()
                .unwrap()
                .keys()
                .all(|k| !k.starts_with("ebs.")),
            "{}: {counts}",
            file.display()
        );
    }
}

/// Holes are never sent; blocks the image wrote as zeros are sent to an encrypted snapshot
/// (which would read them as garbage otherwise) and with --send-zero-blocks, not otherwise.
#[tokio::test]
async fn written_zero_blocks_go_to_encrypted_snapshots_holes_never() {
    let standin = Standin::start();
    let dir = TempDir::new();
    let raw = zeros_raw(dir.path(), "zeros.raw");
    let nonzero = nonzero_blocks(&raw).len() as u64;
    for (name, extra, zeros_sent) in [
        ("plain", &[][..], false),
        ("encrypted", &["--encrypted"][..], true),
        ("send-zeros", &["--send-zero-blocks"][..], true),
    ] {
        standin.reset_requests();
        let out = standin
            .imgpub()
            .args(["aws", "upload-snapshot", "--region", REGION])
            .arg_path("--file", &raw)
            .args(["--name", name])
            .args(extra)
            .run()
            .json();
        let snapshot = out["SnapshotID"].as_str().unwrap();
        let want = nonzero + if zeros_sent { 2 } else { 0 };
        let counts = standin.counts();
        assert_eq!(
            common::count(&counts, "ebs.PutSnapshotBlock"),
            want,
            "{name}: {counts}"
        );
        let blocks = snapshot_blocks(&standin, snapshot).await;
        for index in WRITTEN_ZEROS {
            assert_eq!(
                blocks.contains_key(&index),
                zeros_sent,
                "{name}: block {index}"
            );
            if zeros_sent {
                assert!(blocks[&index].iter().all(|&b| b == 0));
            }
        }
        assert_eq!(
            common::snapshot_encrypted(&standin.ec2(REGION), snapshot).await,
            Some(name == "encrypted"),
            "{name}"
        );
    }
}

/// A snapshot left pending past its Timeout ends in `error`: the rerun deletes it and
/// writes the image into a new one.
#[tokio::test]
async fn a_snapshot_that_ended_in_error_is_replaced() {
    let standin = Standin::start();
    let dir = TempDir::new();
    let raw = scattered_raw(
        dir.path(),
        "error.raw",
        64 * MIB,
        &[(MIB, 20 * MIB)],
        40 * MIB,
    );
    stop_at(
        &standin,
        &raw,
        "error-direct",
        "-KILL",
        Moment::Blocks(8),
        0.3,
    )
    .await;
    let expired: Value =
        serde_json::from_str(&standin.control("POST", "/_standin/ebs/expire", Some("{}"))).unwrap();
    let old = expired["expired"][0].as_str().unwrap().to_string();
    assert_eq!(snapshot_state(&standin, &old).await.0, "error");

    standin.reset_requests();
    let out = direct_upload(&standin, &raw, "error-direct", &[]).json();
    let snapshot = out["SnapshotID"].as_str().unwrap();
    assert_ne!(snapshot, old);
    let counts = standin.counts();
    assert_eq!(common::count(&counts, "ec2.DeleteSnapshot"), 1, "{counts}");
    assert_eq!(common::count(&counts, "ebs.StartSnapshot"), 1, "{counts}");
    assert_eq!(
        common::count(&counts, "ebs.PutSnapshotBlock"),
        nonzero_blocks(&raw).len() as u64,
        "{counts}"
    );
    let gone = standin
        .ec2(REGION)
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    assert!(gone
        .snapshots()
        .iter()
        .all(|s| s.snapshot_id() != Some(old.as_str())));
    assert_snapshot_is_disk(&standin, snapshot, &raw).await;
}

/// A region that encrypts every new snapshot by default (EnableEbsEncryptionByDefault): the
/// snapshot EBS makes is encrypted though imgpub did not ask, so the blocks written as zeros
/// are sent (an encrypted snapshot reads unwritten blocks as garbage); `--public` is refused
/// before anything is made, since an encrypted snapshot cannot be public.
#[tokio::test]
async fn encryption_by_default_is_read_from_what_aws_made() {
    let standin = Standin::start();
    let dir = TempDir::new();
    let raw = zeros_raw(dir.path(), "bydefault.raw");
    let nonzero = nonzero_blocks(&raw).len() as u64;
    standin
        .ec2(REGION)
        .enable_ebs_encryption_by_default()
        .send()
        .await
        .unwrap();

    standin.reset_requests();
    let refused = direct_upload(&standin, &raw, "by-default-public", &["--public"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused
            .error_line()
            .contains("encrypts every new EBS snapshot"),
        "{}",
        refused.stderr
    );
    let counts = standin.counts();
    for call in ["ebs.StartSnapshot", "ec2.RegisterImage", "ec2.CreateTags"] {
        assert_eq!(common::count(&counts, call), 0, "{call}: {counts}");
    }

    standin.reset_requests();
    let out = direct_upload(&standin, &raw, "by-default", &[]).json();
    let snapshot = out["SnapshotID"].as_str().unwrap();
    let counts = standin.counts();
    assert_eq!(
        common::count(&counts, "ebs.PutSnapshotBlock"),
        nonzero + 2,
        "the two blocks written as zeros are sent too: {counts}"
    );
    assert_eq!(
        common::snapshot_encrypted(&standin.ec2(REGION), snapshot).await,
        Some(true)
    );
    let blocks = snapshot_blocks(&standin, snapshot).await;
    for index in WRITTEN_ZEROS {
        assert!(blocks[&index].iter().all(|&b| b == 0), "block {index}");
    }
}

/// A rerun over EBS direct behaves as one over S3 (issue #29): flags that cannot change in
/// place (architecture, IMDS) stop it before any change with exit 1, naming each difference
/// and --force; tags change in place on the AMI and its snapshot, and the line says so;
/// --force registers the one asked for.
#[tokio::test]
async fn a_rerun_with_other_flags_is_refused_or_brought_to_the_request() {
    let standin = Standin::start();
    let dir = TempDir::new();
    let raw = zeros_raw(dir.path(), "rerun.raw");
    let arm = ["--arch", "aarch64", "--tags", "stream=stable"];
    let first = direct_upload(&standin, &raw, "rerun", &arm);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let ami = first.json()["HVM"].as_str().unwrap().to_string();

    standin.reset_requests();
    let fixed = [
        "--arch",
        "x86_64",
        "--imdsv2-only",
        "--tags",
        "stream=stable",
        "--ami-description",
        "build 2",
    ];
    let refused = direct_upload(&standin, &raw, "rerun", &fixed);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    let line = refused.error_line();
    assert!(
        line.contains(&ami)
            && line.contains("architecture arm64 (asked: x86_64)")
            && line.contains("IMDS support unset (asked: v2.0)")
            && line.contains("description unset (asked: \"build 2\")")
            && line.contains("--force"),
        "{line}"
    );
    let counts = standin.counts();
    for write in ["ebs.StartSnapshot", "ec2.RegisterImage", "ec2.CreateTags"] {
        assert_eq!(common::count(&counts, write), 0, "{write}: {counts}");
    }

    // Tags change in place: the same AMI, both it and its snapshot carry the new value.
    let retagged = direct_upload(
        &standin,
        &raw,
        "rerun",
        &["--arch", "aarch64", "--tags", "stream=next"],
    );
    assert_eq!(retagged.json()["HVM"], ami.as_str());
    assert!(
        retagged.stderr.contains(&format!("reused {ami}"))
            && retagged.stderr.contains("tagged stream=next"),
        "{}",
        retagged.stderr
    );
    let snapshot = root_snapshot(&standin, &ami).await;
    let (_, tags) = snapshot_state(&standin, &snapshot).await;
    assert!(tags.contains(&("stream".into(), "next".into())), "{tags:?}");
    let ec2 = standin.ec2(REGION);
    let image = ec2.describe_images().image_ids(&ami).send().await.unwrap();
    let image_tags = common::tag_pairs(image.images()[0].tags());
    assert!(
        image_tags.contains(&("stream".into(), "next".into())),
        "{image_tags:?}"
    );

    let forced = direct_upload(
        &standin,
        &raw,
        "rerun",
        &[&fixed[..], &["--force"]].concat(),
    );
    let new_ami = forced.json()["HVM"].as_str().unwrap().to_string();
    assert_ne!(new_ami, ami);
    let image = ec2
        .describe_images()
        .image_ids(&new_ami)
        .send()
        .await
        .unwrap();
    assert_eq!(image.images()[0].architecture().unwrap().as_str(), "x86_64");
    assert_eq!(image.images()[0].description(), Some("build 2"));
}

/// Two runs of the same image at once (issue #29, item 7): the second resumes the first's
/// pending snapshot from its journal and completes it while a block of the first is held;
/// the first's block then meets a snapshot that takes no more, and its error says what
/// happened and that a rerun uses the completed snapshot.
#[tokio::test]
async fn the_loser_of_two_runs_at_once_is_told_to_rerun() {
    let standin = Standin::start();
    let dir = TempDir::new();
    let raw = zeros_raw(dir.path(), "twice.raw");
    standin.fault(
        r#"{"service": "ebs", "action": "PutSnapshotBlock", "hold": true, "skip": 1, "count": 1}"#,
    );
    let mut first = direct_cmd(&standin, &raw, "twice")
        .args(["--blocks-in-flight", "1"])
        .cmd;
    let mut first = first
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(standin.wait_held_or_exit(&mut first), "the first run ended");
    let second = direct_upload(&standin, &raw, "twice", &[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    second.json();
    standin.release();
    let out = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let error = stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(
        error.contains("another run of this image may have completed it")
            && error.contains("rerun once that run ends"),
        "{error}"
    );
    // And the rerun does as it says.
    let rerun = direct_upload(&standin, &raw, "twice", &[]);
    assert_eq!(rerun.json()["HVM"], second.json()["HVM"]);
}

/// Release N+1 from N: every block of `base` (a raw file) copied, except `changed` blocks
/// (new pseudo-random data), `zeroed` (written as zeros) and `holed` (left a hole).
fn next_release(
    dir: &Path,
    name: &str,
    base: &Path,
    changed: &[usize],
    zeroed: &[usize],
    holed: &[usize],
) -> PathBuf {
    let data = std::fs::read(base).unwrap();
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    file.set_len(data.len() as u64).unwrap();
    let mut x: u64 = 0xD1B5_4A32_D192_ED03 ^ data.len() as u64;
    for (i, block) in data.chunks(BLOCK).enumerate() {
        let mut out = block.to_vec();
        if holed.contains(&i) || (!changed.contains(&i) && block.iter().all(|&b| b == 0)) {
            continue;
        }
        if zeroed.contains(&i) {
            out.iter_mut().for_each(|b| *b = 0);
        } else if changed.contains(&i) {
            for b in out.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
            }
        }
        file.seek(SeekFrom::Start((i * BLOCK) as u64)).unwrap();
        file.write_all(&out).unwrap();
    }
    path
}

/// Every block of the snapshot, read back, is the image's: a block the snapshot does not
/// list reads as zeros (it is unencrypted), and so must the image's.
async fn assert_snapshot_reads_as_disk(standin: &Standin, snapshot: &str, raw: &Path) {
    let want = nonzero_blocks(raw);
    let got = snapshot_blocks(standin, snapshot).await;
    for (index, data) in &got {
        match want.get(index) {
            Some(block) => assert!(block == data, "block {index} differs"),
            None => assert!(
                data.iter().all(|&b| b == 0),
                "block {index} is zeros in the image, not in the snapshot"
            ),
        }
    }
    for index in want.keys() {
        assert!(got.contains_key(index), "block {index} is missing");
    }
}

/// `imgpub aws verify-snapshot --snapshot SNAPSHOT [--file FILE]`.
fn verify_snapshot(standin: &Standin, snapshot: &str, file: Option<&Path>) -> Run {
    let cmd = standin.imgpub().args([
        "aws",
        "verify-snapshot",
        "--region",
        REGION,
        "--snapshot",
        snapshot,
    ]);
    match file {
        Some(file) => cmd.arg_path("--file", file),
        None => cmd,
    }
    .run()
}

fn owned_blocks(standin: &Standin, snapshot: &str) -> u64 {
    let storage: Value =
        serde_json::from_str(&standin.control("GET", "/_standin/ebs/storage", None)).unwrap();
    storage[snapshot]["owned_blocks"].as_u64().unwrap()
}

/// Issue #33: release N+1 with 10 % of its blocks changed (some to zeros, one to a hole)
/// is written on release N's snapshot: it sends at most 11 % of its data blocks, stores
/// only those, and reads back as the image block by block (the zeroed and holed blocks as
/// zeros, not N's data); verify-snapshot says so too.
#[tokio::test]
async fn a_delta_release_sends_only_what_changed_and_reads_back_whole() {
    let standin = Standin::start();
    let dir = TempDir::new();
    // 100 blocks of data (50 MiB) in a 1 GiB disk.
    let n = scattered_raw(
        dir.path(),
        "rel-1.raw",
        1 << 30,
        &[(4 * MIB, 50 * MIB)],
        80 * MIB,
    );
    let data: Vec<i32> = nonzero_blocks(&n).keys().copied().collect();
    assert!(data.len() >= 100, "{}", data.len());
    let pick = |k: usize| data[k * 7 % data.len()] as usize;
    let changed: Vec<usize> = (1..=8).map(pick).collect();
    let (zeroed, holed) = (vec![pick(9)], vec![pick(10)]);
    let all: Vec<usize> = [&changed[..], &zeroed, &holed].concat();
    let next = next_release(dir.path(), "rel-2.raw", &n, &all, &zeroed, &holed);
    let tags = ["--tags", "stream=stable"];

    let first = direct_upload(&standin, &n, "rel-1", &tags);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let parent = first.json()["SnapshotID"].as_str().unwrap().to_string();

    // The dry run names the parent.
    let dry = direct_upload(
        &standin,
        &next,
        "rel-2",
        &[&tags[..], &["--parent", "auto", "--dry-run"]].concat(),
    );
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stderr.contains(&format!(
            "on {parent} (only the blocks that differ from it)"
        )),
        "{}",
        dry.stderr
    );

    standin.reset_requests();
    let second = direct_upload(
        &standin,
        &next,
        "rel-2",
        &[&tags[..], &["--parent", "auto"]].concat(),
    );
    assert_eq!(second.code, 0, "{}", second.stderr);
    let child = second.json()["SnapshotID"].as_str().unwrap().to_string();
    let sent = common::count(&standin.counts(), "ebs.PutSnapshotBlock");
    let data_blocks = nonzero_blocks(&next).len() as u64;
    assert_eq!(sent, all.len() as u64, "{}", second.stderr);
    assert!(sent * 100 <= data_blocks * 11, "{sent} of {data_blocks}");
    assert!(
        second
            .stderr
            .contains(&format!("on {parent} ({sent} blocks sent")),
        "{}",
        second.stderr
    );
    assert_eq!(owned_blocks(&standin, &child), sent);
    assert_snapshot_reads_as_disk(&standin, &child, &next).await;

    let verified = verify_snapshot(&standin, &child, Some(&next));
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    assert_eq!(verified.json()["status"], "verified");
    // And of another image it names the blocks that differ (exit 1).
    let other = verify_snapshot(&standin, &child, Some(&n));
    assert_eq!(other.code, 1, "{}", other.stderr);
    assert_eq!(common::json_lines(&other)[0]["blocks_differing"], all.len());
    assert!(
        other.error_line().contains("blocks differ"),
        "{}",
        other.stderr
    );
}

/// Issue #33: a parent that cannot be used means the whole image, and the run says why:
/// one of another size, one without a block map here, one under another KMS key.
#[tokio::test]
async fn a_parent_that_cannot_be_used_means_a_whole_upload_and_says_why() {
    let standin = Standin::start();
    let dir = TempDir::new();
    let small = scattered_raw(dir.path(), "small.raw", 1 << 30, &[(MIB, 4 * MIB)], 8 * MIB);
    let large = scattered_raw(dir.path(), "large.raw", 2 << 30, &[(MIB, 4 * MIB)], 8 * MIB);
    let whole = nonzero_blocks(&small).len() as u64;
    let parent = direct_upload(&standin, &small, "p-small", &[]).json()["SnapshotID"]
        .as_str()
        .unwrap()
        .to_string();
    let fell_back = |run: &Run, why: &str| {
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stderr.contains("--parent: writing the whole image"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains(why), "{why}: {}", run.stderr);
    };

    let run = direct_upload(&standin, &large, "c-large", &["--parent", &parent]);
    fell_back(&run, "is a 1 GiB snapshot, and this one is 2 GiB");

    let map = standin
        .home
        .path()
        .join(".cache/imgpub/block-maps")
        .join(REGION)
        .join(&parent);
    std::fs::remove_file(&map).unwrap();
    let copy = dir.path().join("copy.raw");
    std::fs::copy(&small, &copy).unwrap();
    standin.reset_requests();
    let run = direct_upload(&standin, &copy, "c-nomap", &["--parent", &parent]);
    fell_back(&run, "has no block map here");
    assert_eq!(
        common::count(&standin.counts(), "ebs.PutSnapshotBlock"),
        whole
    );
    // Rebuilt from the snapshot alone, the map makes the next --parent on it a delta.
    let mapped = verify_snapshot(&standin, &parent, None);
    assert_eq!(mapped.code, 0, "{}", mapped.stderr);
    assert_eq!(mapped.json()["status"], "mapped");
    assert!(map.exists());
    let run = direct_upload(&standin, &copy, "c-mapped", &["--parent", &parent]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("on {parent} (0 blocks sent")),
        "{}",
        run.stderr
    );

    let (one, two) = (
        common::customer_key(&standin, REGION),
        common::customer_key(&standin, REGION),
    );
    let sealed = direct_upload(&standin, &small, "p-sealed", &["--kms-key", &one]);
    let sealed = sealed.json()["SnapshotID"].as_str().unwrap().to_string();
    let run = direct_upload(
        &standin,
        &copy,
        "c-key",
        &["--kms-key", &two, "--parent", &sealed],
    );
    fell_back(&run, "is encrypted with another key");
    let child = run.json()["SnapshotID"].as_str().unwrap().to_string();
    let described = standin
        .ec2(REGION)
        .describe_snapshots()
        .snapshot_ids(&child)
        .send()
        .await
        .unwrap();
    assert_eq!(described.snapshots()[0].kms_key_id(), Some(two.as_str()));
}

/// Issue #33: killed mid-delta at 10 seeded moments, every rerun finishes with the image's
/// blocks, still written on the parent (the journal names it), and no snapshot is left
/// that no AMI uses.
#[tokio::test]
async fn a_delta_killed_at_ten_moments_is_finished_by_a_rerun() {
    let standin = Standin::start();
    standin.control(
        "POST",
        "/_standin/config",
        Some(r#"{"ebs_complete_seconds": 0.5}"#),
    );
    let dir = TempDir::new();
    let n = scattered_raw(
        dir.path(),
        "parent.raw",
        1 << 30,
        &[(MIB, 24 * MIB)],
        40 * MIB,
    );
    let data: Vec<i32> = nonzero_blocks(&n).keys().copied().collect();
    let parent = direct_upload(&standin, &n, "k-1", &[]).json()["SnapshotID"]
        .as_str()
        .unwrap()
        .to_string();
    for seed in 0u64..10 {
        let pick = |k: u64| data[((seed * 13 + k * 7) % data.len() as u64) as usize] as usize;
        let changed: Vec<usize> = (0..6).map(pick).collect();
        let zeroed = vec![pick(6)];
        let all = [&changed[..], &zeroed].concat();
        let next = next_release(dir.path(), &format!("k-{seed}.raw"), &n, &all, &zeroed, &[]);
        let moment = moment_for(seed, 6);
        let name = format!("k-next-{seed}");
        let parent_flag = ["--parent", parent.as_str()];
        standin.reset_requests();
        stop_at_with(&standin, &next, &name, &parent_flag, "-KILL", moment, 0.01).await;
        let run = direct_upload(&standin, &next, &name, &parent_flag);
        assert_eq!(run.code, 0, "seed {seed} ({moment:?}): {}", run.stderr);
        let child = run.json()["SnapshotID"].as_str().unwrap().to_string();
        let owned = owned_blocks(&standin, &child);
        assert!(
            owned <= all.len() as u64,
            "seed {seed} ({moment:?}): {owned} blocks written, not on the parent: {}",
            run.stderr
        );
        assert_snapshot_reads_as_disk(&standin, &child, &next).await;
    }
    assert_no_orphan_snapshots(&standin).await;
}
