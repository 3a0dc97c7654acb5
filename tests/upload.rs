//! `imgpub aws upload` end to end: the real binary against the stand-in, results read back
//! through the EC2 and S3 APIs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{make_raw, qemu_convert, sha256_file, tempdir::TempDir, Run, Standin, SECRET_KEY};
use serde_json::{json, Value};

const REGION: &str = "us-east-1";
const BUCKET: &str = "images";

/// An account made ready by `imgpub aws initialize`.
fn ready(standin: &Standin) {
    standin.initialize(REGION, BUCKET);
}

fn upload(standin: &Standin, file: &Path, extra: &[&str]) -> Run {
    standin
        .upload_cmd(REGION, file)
        .args(["-v"])
        .args(extra)
        .run()
}

/// Reads `s3://bucket/key` back and checks that it is `file`, byte for byte (by SHA-256).
async fn assert_object_is_file(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, file: &Path) {
    let got = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    let body = got.body.collect().await.unwrap().into_bytes();
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&body)),
        sha256_file(file),
        "s3://{bucket}/{key}"
    );
}

async fn object_exists(standin: &Standin, key: &str) -> bool {
    standin
        .s3(REGION)
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .is_ok()
}

/// Neither an AMI nor a snapshot of ours exists.
async fn assert_no_image_or_snapshot(standin: &Standin) {
    let ec2 = standin.ec2(REGION);
    let images = ec2.describe_images().owners("self").send().await.unwrap();
    assert!(images.images().is_empty(), "{:?}", images.images());
    let snapshots = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    assert!(
        snapshots.snapshots().is_empty(),
        "{:?}",
        snapshots.snapshots()
    );
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn vmdk_becomes_the_ami_the_flags_ask_for_and_a_rerun_changes_nothing() {
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    // 96 MiB disk, 70 MiB of incompressible data: the VMDK itself is over 64 MiB.
    let raw = make_raw(dir.path(), "disk.raw", 96, 70, 11);
    let vmdk = dir.path().join("fcos.vmdk");
    qemu_convert(&raw, &vmdk, "vmdk", &["-o", "subformat=streamOptimized"]);
    assert!(std::fs::metadata(&vmdk).unwrap().len() >= 64 << 20);

    let flags = [
        "--name",
        "fcos-41.1-aarch64",
        "--arch",
        "aarch64",
        "--tpm-support",
        "v2.0",
        "--imdsv2-only",
        "--volume-type",
        "gp3",
        "--disk-size-gib",
        "10",
        "--billing-product-code",
        "bp-6fa54006",
        "--tags",
        "os=fcos,stream=stable",
        "--public",
        "--grant-user",
        "111122223333",
        "--grant-user-snapshot",
        "444455556666",
        "--ami-description",
        "Fedora CoreOS 41.1",
    ];
    let first = upload(&standin, &vmdk, &flags);
    let out = first.json();
    let ami = out["HVM"].as_str().unwrap().to_string();
    let snap = out["SnapshotID"].as_str().unwrap().to_string();
    assert!(
        ami.starts_with("ami-") && snap.starts_with("snap-"),
        "{out}"
    );
    // The object is deleted once the snapshot exists: the line names no object that is
    // gone (ore's would). ore's key is in tests/ore_compat.rs.
    assert_eq!(out.get("S3Object"), None, "{out}");
    assert_eq!(out.as_object().unwrap().len(), 2, "{out}");

    let ec2 = standin.ec2(REGION);
    let images = ec2.describe_images().image_ids(&ami).send().await.unwrap();
    let image = &images.images()[0];
    assert_eq!(image.name(), Some("fcos-41.1-aarch64"));
    assert_eq!(image.description(), Some("Fedora CoreOS 41.1"));
    assert_eq!(image.architecture().unwrap().as_str(), "arm64");
    assert_eq!(image.boot_mode().unwrap().as_str(), "uefi");
    assert_eq!(image.ena_support(), Some(true));
    assert_eq!(image.sriov_net_support(), Some("simple"));
    assert_eq!(image.imds_support().unwrap().as_str(), "v2.0");
    assert_eq!(image.tpm_support().unwrap().as_str(), "v2.0");
    assert_eq!(image.virtualization_type().unwrap().as_str(), "hvm");
    assert_eq!(image.root_device_name(), Some("/dev/xvda"));
    let bdm = &image.block_device_mappings()[0];
    assert_eq!(bdm.device_name(), Some("/dev/xvda"));
    let ebs = bdm.ebs().unwrap();
    assert_eq!(ebs.snapshot_id(), Some(snap.as_str()));
    assert_eq!(ebs.volume_type().unwrap().as_str(), "gp3");
    assert_eq!(ebs.volume_size(), Some(10));
    assert_eq!(ebs.delete_on_termination(), Some(true));
    assert_eq!(
        common::tag_pairs(image.tags()),
        pairs(&[
            ("Name", "fcos-41.1-aarch64"),
            ("imgpub:managed", "true"),
            ("os", "fcos"),
            ("stream", "stable")
        ])
    );

    let snaps = ec2
        .describe_snapshots()
        .snapshot_ids(&snap)
        .send()
        .await
        .unwrap();
    assert_eq!(
        common::tags_but_content(snaps.snapshots()[0].tags()),
        pairs(&[
            ("Name", "fcos-41.1-aarch64"),
            ("imgpub:managed", "true"),
            ("os", "fcos"),
            ("stream", "stable")
        ])
    );

    assert_eq!(
        common::launch_permissions(&ec2, &ami).await,
        ["group:all", "user:111122223333"]
    );
    assert_eq!(
        common::volume_permissions(&ec2, &snap).await,
        ["group:all", "user:444455556666"]
    );

    // Billing codes are not in DescribeImages (nor in AWS's); the stand-in recorded them.
    let recorded: Value =
        serde_json::from_str(&standin.control("GET", &format!("/_standin/images/{ami}"), None))
            .unwrap();
    assert_eq!(recorded["billing_products"], json!(["bp-6fa54006"]));

    // The object served its purpose and is gone (--delete-object defaults to true).
    assert!(!object_exists(&standin, "ci/fcos.vmdk").await);

    // The identical command again: same ids, no new import, nothing uploaded.
    standin.reset_requests();
    let again = upload(&standin, &vmdk, &flags).json();
    assert_eq!(again, out);
    let counts = standin.counts();
    for call in [
        "ec2.ImportSnapshot",
        "ec2.RegisterImage",
        "s3.UploadPart",
        "s3.CreateMultipartUpload",
        "s3.PutObject",
    ] {
        assert_eq!(common::count(&counts, call), 0, "{call} in {counts}");
    }
    let images = ec2.describe_images().owners("self").send().await.unwrap();
    assert_eq!(images.images().len(), 1);
}

#[tokio::test]
async fn raw_image_with_defaults_and_inspected_size() {
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    // 40 MiB: --disk-size-inspect rounds it up to 1 GiB (the rounding itself is unit-tested).
    let raw = make_raw(dir.path(), "plain.raw", 40, 12, 5);
    let out = upload(
        &standin,
        &raw,
        &[
            "--name",
            "plain-raw",
            "--disk-size-inspect",
            "--delete-object=false",
            "--part-size",
            "64MiB",
        ],
    )
    .json();
    let ami = out["HVM"].as_str().unwrap();
    let image = standin
        .ec2(REGION)
        .describe_images()
        .image_ids(ami)
        .send()
        .await
        .unwrap();
    let image = &image.images()[0];
    assert_eq!(image.architecture().unwrap().as_str(), "x86_64");
    assert_eq!(image.boot_mode().unwrap().as_str(), "uefi-preferred");
    assert_eq!(image.imds_support(), None);
    assert_eq!(image.tpm_support(), None);
    let ebs = image.block_device_mappings()[0].ebs().unwrap();
    assert_eq!(ebs.volume_size(), Some(1));
    assert_eq!(ebs.volume_type().unwrap().as_str(), "gp3");
    assert_eq!(
        common::tag_pairs(image.tags()),
        pairs(&[("Name", "plain-raw"), ("imgpub:managed", "true")])
    );

    // --delete-object=false keeps the object, and it is the file, byte for byte.
    assert_object_is_file(&standin.s3(REGION), BUCKET, "ci/plain.raw", &raw).await;
}

/// Starts an upload that is slowed down, waits until some parts are in, and kills it with
/// `signal`; then reruns and checks that only the missing parts are sent. Over TLS the
/// parts carry CRC32Cs and go one by one rather than in hashed batches.
async fn interrupted_upload_resumes(signal: &str, tls: bool) {
    let standin = if tls {
        Standin::start_tls()
    } else {
        Standin::start()
    };
    ready(&standin);
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "resume.raw", 80, 79, 23);
    // Every part takes a second, so the upload is still running when we stop it.
    standin.fault(r#"{"action": "UploadPart", "delay": 1.0, "count": 1000}"#);
    let args = [
        "--name",
        "resume-raw",
        "--delete-object=false",
        "--upload-concurrency",
        "2",
        "--part-size",
        "8MiB",
    ];
    let mut child = standin.upload_cmd(REGION, &raw).args(args).cmd;
    let mut child = child
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        standin.wait_for_calls("s3.UploadPart", 4, &mut child),
        "the upload never started"
    );
    let output = common::signal_and_wait(child, signal).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains(SECRET_KEY));
    if signal == "-INT" {
        assert_eq!(output.status.code(), Some(130), "{stderr}");
        assert!(
            stderr.contains("rerun the same command to resume"),
            "{stderr}"
        );
    } else {
        assert_eq!(output.status.code(), None, "killed by a signal");
    }
    assert!(output.stdout.is_empty());

    // Let requests the server was still sleeping on land, then see what is there.
    standin.control("DELETE", "/_standin/faults", None);
    standin.wait_idle();
    let s3 = standin.s3(REGION);
    let uploads = s3
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert_eq!(
        uploads.uploads().len(),
        1,
        "the unfinished upload is kept for the rerun"
    );
    let upload_id = uploads.uploads()[0].upload_id().unwrap().to_string();
    let parts = s3
        .list_parts()
        .bucket(BUCKET)
        .key("ci/resume.raw")
        .upload_id(&upload_id)
        .send()
        .await
        .unwrap();
    let already = parts.parts().len() as u64;
    assert!(
        (2..10).contains(&already),
        "{already} parts were in before the rerun"
    );
    assert!(
        parts.parts().iter().any(|p| p.part_number() == Some(1)),
        "part 1 was in before the rerun"
    );
    // The image changes under part 1 before the rerun: that part is sent again, the others
    // that are there are kept.
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
        file.write_all_at(b"changed", 5 << 20).unwrap();
    }

    standin.reset_requests();
    let run = upload(&standin, &raw, &args);
    let out = run.json();
    assert!(
        run.stderr.contains("resuming the unfinished upload"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("part 1 of s3://images/ci/resume.raw differs from"),
        "{}",
        run.stderr
    );
    let counts = standin.counts();
    assert_eq!(
        common::count(&counts, "s3.UploadPart"),
        10 - already + 1,
        "{counts}"
    );
    assert_eq!(
        common::count(&counts, "s3.CreateMultipartUpload"),
        0,
        "{counts}"
    );
    assert!(out["HVM"].as_str().unwrap().starts_with("ami-"));

    assert_object_is_file(&s3, BUCKET, "ci/resume.raw", &raw).await;
}

#[tokio::test]
async fn sigint_during_upload_then_rerun_sends_only_missing_and_changed_parts() {
    interrupted_upload_resumes("-INT", false).await;
}

#[tokio::test]
async fn sigkill_during_upload_then_rerun_sends_only_missing_and_changed_parts() {
    interrupted_upload_resumes("-KILL", false).await;
}

#[tokio::test]
async fn sigkill_during_upload_over_tls_then_rerun_sends_only_missing_and_changed_parts() {
    interrupted_upload_resumes("-KILL", true).await;
}

/// An upload begun over plain HTTP (parts signed, no checksum algorithm) cannot be
/// completed with HTTPS's CRC32C parts (S3 refuses the checksum-type mismatch): the rerun
/// over HTTPS says so, aborts it and sends the image again, and the object is the file.
#[tokio::test]
async fn an_upload_begun_over_http_is_restarted_over_https_and_says_why() {
    let standin = Standin::start_tls();
    ready(&standin);
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "switch.raw", 48, 47, 29);
    standin.fault(r#"{"action": "UploadPart", "delay": 0.5, "count": 1000}"#);
    let args = [
        "--name",
        "switch-raw",
        "--delete-object=false",
        "--part-size",
        "8MiB",
    ];
    let mut child = standin
        .upload_cmd(REGION, &raw)
        .env("AWS_ENDPOINT_URL", &standin.endpoint)
        .args(args)
        .cmd;
    let mut child = child
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(standin.wait_for_calls("s3.UploadPart", 2, &mut child));
    common::signal_and_wait(child, "-KILL").await;
    standin.control("DELETE", "/_standin/faults", None);
    let payloads: Value =
        serde_json::from_str(&standin.control("GET", "/_standin/payloads", None)).unwrap();
    assert!(
        payloads["UploadPart"]["signed"].as_u64().unwrap_or(0) >= 1,
        "{payloads}"
    );

    standin.reset_requests();
    let run = upload(&standin, &raw, &args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("was started over plain HTTP"),
        "{}",
        run.stderr
    );
    let counts = standin.counts();
    assert_eq!(
        common::count(&counts, "s3.AbortMultipartUpload"),
        1,
        "{counts}"
    );
    assert_eq!(
        common::count(&counts, "s3.CreateMultipartUpload"),
        1,
        "{counts}"
    );
    let payloads: Value =
        serde_json::from_str(&standin.control("GET", "/_standin/payloads", None)).unwrap();
    assert_eq!(payloads["UploadPart"]["crc32c"], 6, "{payloads}");
    assert_object_is_file(&standin.s3(REGION), BUCKET, "ci/switch.raw", &raw).await;
}

#[tokio::test]
async fn bad_inputs_fail_first_and_create_nothing() {
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "ok.raw", 8, 2, 1);
    let empty = common::write_file(dir.path(), "empty.raw", "");
    let vmdk = dir.path().join("ok.vmdk");
    qemu_convert(
        &make_raw(dir.path(), "big.raw", 32, 20, 2),
        &vmdk,
        "vmdk",
        &["-o", "subformat=streamOptimized"],
    );
    let data = std::fs::read(&vmdk).unwrap();
    let truncated = dir.path().join("cut.vmdk");
    std::fs::write(&truncated, &data[..data.len() * 2 / 3]).unwrap();
    let qcow2 = dir.path().join("disk.qcow2");
    qemu_convert(&raw, &qcow2, "qcow2", &[]);
    let long_name = "n".repeat(129);
    let missing = PathBuf::from("/nonexistent/image.raw");
    // A corrupt download: 3,000,000 bytes of noise named .vmdk, taken as a raw disk before.
    let noise: Vec<u8> = std::fs::read(&raw).unwrap()[1 << 20..(1 << 20) + 3_000_000].to_vec();
    let junk = dir.path().join("junk.vmdk");
    std::fs::write(&junk, &noise).unwrap();
    let odd = dir.path().join("odd-size.raw");
    std::fs::write(&odd, &noise).unwrap();

    let cases: Vec<(&Path, Vec<&str>, &str)> = vec![
        (
            &missing,
            vec![],
            "image file /nonexistent/image.raw does not exist",
        ),
        (&empty, vec![], "is empty"),
        (&truncated, vec![], "is not a valid VMDK image"),
        (
            &junk,
            vec![],
            "is named like a VMDK image but has no VMDK header",
        ),
        (&odd, vec![], "not a whole number of 512-byte sectors"),
        (&qcow2, vec![], "is a qcow2 image, which AWS cannot import"),
        (
            &vmdk,
            vec!["--object-format", "RAW"],
            "--object-format RAW was given",
        ),
        (
            &raw,
            vec!["--name", "bad*name"],
            "has characters AWS does not allow ('*')",
        ),
        (&raw, vec!["--name", &long_name], "is 129 characters long"),
        (
            &raw,
            vec!["--arch", "sparc"],
            "invalid value 'sparc' for '--arch",
        ),
        // Checked before the upload (it was found only once parts were being sent).
        (&raw, vec!["--part-size", "4MiB"], "outside S3's limits"),
        // A bare number has no unit: seconds or days, bytes or MiB? Refused, with the forms.
        (
            &raw,
            vec!["--deprecate-in", "90"],
            "has a number without a unit",
        ),
        (
            &raw,
            vec!["--part-size", "6"],
            "has no unit; give one: 16MiB",
        ),
        (
            &raw,
            vec!["--tags", "novalue"],
            "--tags \"novalue\" is not key=value",
        ),
        // EnableImageDeprecation's limits (API reference): 10 years, 2 for a public AMI.
        (
            &raw,
            vec!["--deprecate-in", "3700d"],
            "more than 10 years after the AMI is registered",
        ),
        (
            &raw,
            vec!["--public", "--deprecate-in", "1100d"],
            "more than 2 years for a public AMI (--public)",
        ),
    ];
    for (file, extra, want) in cases {
        let run = upload(&standin, file, &extra);
        assert_eq!(run.code, 2, "{extra:?}: {}", run.stderr);
        let err = run.error_line();
        assert!(err.contains(want), "{extra:?}: {err}");
    }

    // AWS-side problems found by read-only checks before anything is written.
    let run = standin
        .imgpub()
        .args([
            "aws",
            "upload",
            "--region",
            REGION,
            "--bucket",
            "s3://no-such-bucket/x",
        ])
        .arg_path("--file", &raw)
        .run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    let err = run.error_line();
    assert!(
        err.contains("bucket no-such-bucket does not exist")
            && err.contains("imgpub aws initialize"),
        "{err}"
    );

    let iam = standin.iam();
    iam.delete_role_policy()
        .role_name("vmimport")
        .policy_name("vmimport")
        .send()
        .await
        .unwrap();
    iam.delete_role()
        .role_name("vmimport")
        .send()
        .await
        .unwrap();
    let run = upload(&standin, &raw, &["--name", "no-role"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let err = run.error_line();
    assert!(
        err.contains("the IAM role vmimport that VM Import/Export needs does not exist"),
        "{err}"
    );

    let counts = standin.counts();
    for call in [
        "s3.CreateMultipartUpload",
        "s3.UploadPart",
        "s3.PutObject",
        "ec2.ImportSnapshot",
        "ec2.RegisterImage",
        "ec2.CreateTags",
    ] {
        assert_eq!(common::count(&counts, call), 0, "{call} in {counts}");
    }
    assert_no_image_or_snapshot(&standin).await;
}

#[tokio::test]
async fn import_that_aws_rejects_fails_with_its_status_message() {
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    // Raw to us (no trailing VHD footer), but it starts like a VHD: VM Import rejects it.
    let raw = make_raw(dir.path(), "odd.raw", 8, 1, 4);
    let mut data = std::fs::read(&raw).unwrap();
    data[..8].copy_from_slice(b"conectix");
    std::fs::write(&raw, &data).unwrap();

    let run = upload(&standin, &raw, &["--name", "rejected"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let err = run.error_line();
    assert!(
        err.contains("import task import-snap-")
            && err.contains("AWS ended the import: ClientError: Disk validation failed"),
        "{err}"
    );
    // Documented cleanup: the object AWS refused is deleted; no snapshot, no AMI.
    assert!(!object_exists(&standin, "ci/odd.raw").await);
    assert_no_image_or_snapshot(&standin).await;
}

#[tokio::test]
async fn import_snapshot_and_register_ami_run_the_stages_alone() {
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "stage.raw", 16, 4, 31);

    let run = standin
        .imgpub()
        .args([
            "aws",
            "import-snapshot",
            "--region",
            REGION,
            "--bucket",
            "s3://images/ci",
        ])
        .arg_path("--file", &raw)
        .args(["--name", "stage-snap"])
        .run();
    let out = run.json();
    assert_eq!(out.as_object().unwrap().len(), 1, "{out}");
    let snap = out["SnapshotID"].as_str().unwrap().to_string();
    let ec2 = standin.ec2(REGION);
    let found = ec2
        .describe_snapshots()
        .snapshot_ids(&snap)
        .send()
        .await
        .unwrap();
    assert_eq!(
        common::tags_but_content(found.snapshots()[0].tags()),
        pairs(&[("Name", "stage-snap"), ("imgpub:managed", "true")])
    );
    assert!(!object_exists(&standin, "ci/stage.raw").await);

    let register = |name: &str, snapshot: &str| {
        standin
            .imgpub()
            .args(["aws", "register-ami", "--region", REGION, "--name", name])
            .args([
                "--source-snapshot",
                snapshot,
                "--x86-boot-mode",
                "legacy-bios",
            ])
            .run()
    };
    let out = register("stage-ami", &snap).json();
    assert_eq!(out.as_object().unwrap().len(), 1, "{out}");
    let ami = out["HVM"].as_str().unwrap().to_string();
    let image = ec2.describe_images().image_ids(&ami).send().await.unwrap();
    let image = &image.images()[0];
    assert_eq!(image.boot_mode().unwrap().as_str(), "legacy-bios");
    assert_eq!(
        image.block_device_mappings()[0]
            .ebs()
            .unwrap()
            .snapshot_id(),
        Some(snap.as_str())
    );
    // Again: the same AMI. The name on another snapshot: refused before anything changes.
    assert_eq!(register("stage-ami", &snap).json()["HVM"], ami);
    let other = standin
        .imgpub()
        .args([
            "aws",
            "import-snapshot",
            "--region",
            REGION,
            "--bucket",
            "s3://images/ci",
        ])
        .arg_path("--file", &raw)
        .args(["--name", "stage-other"])
        .run()
        .json();
    let run = register("stage-ami", other["SnapshotID"].as_str().unwrap());
    // Not bad input: what exists differs from what was asked (issue #29: exit 1).
    assert_eq!(run.code, 1);
    let err = run.error_line();
    assert!(
        err.contains(&format!("AMI name stage-ami is already used by {ami}"))
            && err.contains("--force"),
        "{err}"
    );

    // From an object already in S3: imported, and left in place (it is not ours).
    standin
        .s3(REGION)
        .put_object()
        .bucket(BUCKET)
        .key("ci/given.raw")
        .body(std::fs::read(&raw).unwrap().into())
        .send()
        .await
        .unwrap();
    let out = standin
        .imgpub()
        .args(["aws", "import-snapshot", "--region", REGION])
        .args([
            "--source-object",
            "s3://images/ci/given.raw",
            "--object-format",
            "RAW",
        ])
        .run()
        .json();
    assert!(out["SnapshotID"].as_str().unwrap().starts_with("snap-"));
    assert!(object_exists(&standin, "ci/given.raw").await);
}

#[tokio::test]
async fn throttling_is_retried_and_access_denied_aborts_the_upload_at_once() {
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "flaky.raw", 24, 20, 41);
    let one_at_a_time = [
        "--upload-concurrency",
        "1",
        "--part-size",
        "8MiB",
        "--delete-object=false",
    ];

    // Two SlowDown answers: the SDK's retry layer absorbs them.
    standin.fault(r#"{"action": "UploadPart", "status": 503, "code": "SlowDown", "count": 2}"#);
    let mut args = vec!["--name", "flaky"];
    args.extend(one_at_a_time);
    let out = upload(&standin, &raw, &args).json();
    assert!(out["HVM"].as_str().unwrap().starts_with("ami-"));
    // 3 parts of 8 MiB, plus the 2 refused attempts.
    assert_eq!(common::count(&standin.counts(), "s3.UploadPart"), 5);

    // AccessDenied is final: not retried, and the upload is aborted (no orphaned parts).
    // (Another file: ore's key is the file's name, and this one is there now.)
    let raw = make_raw(dir.path(), "denied.raw", 24, 20, 42);
    standin.reset_requests();
    standin.fault(r#"{"action": "UploadPart", "status": 403, "code": "AccessDenied", "message": "Access Denied", "count": 1}"#);
    let mut args = vec!["--name", "denied"];
    args.extend(one_at_a_time);
    let run = upload(&standin, &raw, &args);
    assert_eq!(run.code, 1);
    let err = run.error_line();
    assert!(
        err.contains("uploading part 1 of 3") && err.contains("AccessDenied"),
        "{err}"
    );
    let counts = standin.counts();
    assert_eq!(common::count(&counts, "s3.UploadPart"), 1, "{counts}");
    assert_eq!(
        common::count(&counts, "s3.AbortMultipartUpload"),
        1,
        "{counts}"
    );
    let uploads = standin
        .s3(REGION)
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());
}

/// A file cut short while it is uploaded is an error naming it, not a crash (SIGBUS, when
/// parts were memory-mapped); one rewritten in place is caught before the upload completes.
#[tokio::test]
async fn an_image_that_changes_during_the_upload_is_an_error_not_a_crash() {
    let dir = TempDir::new();
    // Plain HTTP (parts hashed ahead) and TLS (each part read as it is sent).
    let cases = [("truncate", true), ("truncate", false), ("rewrite", false)];
    for (i, (change, tls)) in cases.into_iter().enumerate() {
        let standin = if tls {
            Standin::start_tls()
        } else {
            Standin::start()
        };
        ready(&standin);
        let raw = make_raw(
            dir.path(),
            &format!("moving-{i}.raw"),
            24,
            20,
            60 + i as u64,
        );
        // The first part is held in the stand-in while the file changes under the upload.
        standin.fault(r#"{"action": "UploadPart", "hold": true, "count": 1}"#);
        let mut cmd = standin
            .upload_cmd(REGION, &raw)
            .args(["--upload-concurrency", "1", "--part-size", "8MiB"])
            .cmd;
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        standin.wait_held(1);
        let file = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
        if change == "truncate" {
            file.set_len(8 << 20).unwrap();
        } else {
            use std::os::unix::fs::FileExt;
            file.write_all_at(b"changed", 20 << 20).unwrap();
        }
        standin.release();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Found after the upload began: not bad input (2) but input that changed (3).
        assert_eq!(
            out.status.code(),
            Some(3),
            "{change}, TLS {tls}: {:?}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains(&format!("moving-{i}.raw"))
                && stderr.contains("while it was being uploaded"),
            "{change}: {stderr}"
        );
    }
}

/// The 4xx a rerun gets past (S3's RequestTimeout, an expired session token, a payload
/// checksum mismatch) leave the upload in place: the rerun resumes it instead of starting
/// over.
#[tokio::test]
async fn a_4xx_a_rerun_gets_past_keeps_the_upload_for_the_rerun() {
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    let cases = [
        // (code, how many answers: RequestTimeout is retried by the SDK, so all attempts)
        ("RequestTimeout", 5),
        ("ExpiredToken", 1),
        ("XAmzContentSHA256Mismatch", 1),
    ];
    for (i, (code, times)) in cases.into_iter().enumerate() {
        let raw = make_raw(dir.path(), &format!("kept-{i}.raw"), 24, 20, 50 + i as u64);
        let args = [
            "--name",
            code,
            "--upload-concurrency",
            "1",
            "--part-size",
            "8MiB",
        ];
        standin.reset_requests();
        standin.fault(&format!(
            r#"{{"action": "UploadPart", "status": 400, "code": "{code}", "count": {times}}}"#
        ));
        let run = upload(&standin, &raw, &args);
        assert_ne!(run.code, 0, "{code}");
        let err = run.error_line();
        assert!(err.contains(code) && err.contains("rerun"), "{err}");
        assert_eq!(
            common::count(&standin.counts(), "s3.AbortMultipartUpload"),
            0,
            "{code}"
        );

        standin.reset_requests();
        let out = upload(&standin, &raw, &args).json();
        assert!(out["HVM"].as_str().unwrap().starts_with("ami-"), "{code}");
        let counts = standin.counts();
        assert_eq!(
            common::count(&counts, "s3.CreateMultipartUpload"),
            0,
            "{code}: {counts}"
        );
        assert_eq!(
            common::count(&counts, "s3.CompleteMultipartUpload"),
            1,
            "{code}: {counts}"
        );
    }
}

#[tokio::test]
async fn rerun_after_a_failed_import_call_reuses_the_uploaded_object() {
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "again.raw", 24, 20, 43);
    // The upload lands, then EC2 refuses the import call once.
    standin.fault(r#"{"action": "ImportSnapshot", "status": 400, "code": "InvalidParameter", "message": "try later", "count": 1}"#);
    let run = upload(&standin, &raw, &["--name", "again"]);
    assert_eq!(run.code, 1);
    assert!(run
        .error_line()
        .contains("starting the import of s3://images/ci/again.raw"));
    assert!(object_exists(&standin, "ci/again.raw").await);

    standin.reset_requests();
    let run = upload(&standin, &raw, &["--name", "again"]);
    run.json();
    assert!(
        run.stderr.contains("already uploaded and matches"),
        "{}",
        run.stderr
    );
    let counts = standin.counts();
    assert_eq!(common::count(&counts, "s3.UploadPart"), 0, "{counts}");
    assert_eq!(common::count(&counts, "ec2.ImportSnapshot"), 1, "{counts}");
}

#[tokio::test]
async fn rerun_while_the_import_runs_waits_for_the_same_task() {
    // Imports take 6 s here, so the first run is still polling when it is stopped.
    let standin = Standin::start_with_import_seconds(6.0);
    ready(&standin);
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "slow.raw", 16, 8, 47);
    let mut child = standin
        .upload_cmd(REGION, &raw)
        .args(["--name", "slow"])
        .cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        standin.wait_for_calls("ec2.DescribeImportSnapshotTasks", 2, &mut child),
        "the import never started"
    );
    let output = common::signal_and_wait(child, "-INT").await;
    assert_eq!(output.status.code(), Some(130));

    standin.reset_requests();
    let run = upload(&standin, &raw, &["--name", "slow"]);
    let out = run.json();
    assert!(
        run.stderr.contains("is already running; waiting for it"),
        "{}",
        run.stderr
    );
    let counts = standin.counts();
    assert_eq!(common::count(&counts, "ec2.ImportSnapshot"), 0, "{counts}");
    assert_eq!(common::count(&counts, "s3.UploadPart"), 0, "{counts}");
    assert!(out["SnapshotID"].as_str().unwrap().starts_with("snap-"));
}

#[tokio::test]
async fn force_replaces_an_ami_of_the_same_name() {
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    let first = make_raw(dir.path(), "v1.raw", 16, 4, 51);
    let second = make_raw(dir.path(), "v2.raw", 16, 4, 52);
    let old = upload(&standin, &first, &["--name", "nightly"]).json();

    // The same file again returns what is there and sends nothing.
    standin.reset_requests();
    let same = upload(&standin, &first, &["--name", "nightly"]).json();
    assert_eq!(
        (&same["HVM"], &same["SnapshotID"]),
        (&old["HVM"], &old["SnapshotID"])
    );
    // No object: the file was not uploaded again (ore names the one it would have gone to).
    assert_eq!(same.get("S3Object"), None, "{same}");
    assert_eq!(common::count(&standin.counts(), "s3.UploadPart"), 0);
    // Another file under that name (ore returns the old image): refused, naming --force.
    let other = upload(&standin, &second, &["--name", "nightly"]);
    assert_eq!(other.code, 1, "{}", other.stderr);
    assert!(other.error_line().contains("--force"), "{}", other.stderr);

    let new = upload(&standin, &second, &["--name", "nightly", "--force"]).json();
    assert_ne!(new["HVM"], old["HVM"]);
    assert_ne!(new["SnapshotID"], old["SnapshotID"]);
    let ec2 = standin.ec2(REGION);
    let images = ec2.describe_images().owners("self").send().await.unwrap();
    let ids: Vec<&str> = images
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .collect();
    assert_eq!(ids, [new["HVM"].as_str().unwrap()]);
    // The old snapshot went with the old AMI.
    let gone = ec2
        .describe_snapshots()
        .snapshot_ids(old["SnapshotID"].as_str().unwrap())
        .send()
        .await;
    assert!(gone.is_err(), "{gone:?}");
}

#[tokio::test]
async fn upload_object_needs_only_s3() {
    let standin = Standin::start();
    let s3 = standin.s3(REGION);
    s3.create_bucket().bucket("plain").send().await.unwrap();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "blob.bin", 20, 19, 61);
    let send = || {
        standin
            .imgpub()
            .args([
                "aws",
                "upload-object",
                "--region",
                REGION,
                "--bucket",
                "s3://plain/some/prefix",
            ])
            .arg_path("--file", &file)
            .args(["--part-size", "5MiB", "--upload-concurrency", "3"])
            .run()
    };
    standin.reset_requests();
    let out = send().json();
    assert_eq!(
        out,
        json!({"S3Object": "s3://plain/some/prefix/blob.bin", "status": "changed"})
    );
    let counts = standin.counts();
    assert_eq!(common::count(&counts, "s3.UploadPart"), 4, "{counts}");
    // Plain HTTP: the signature covers each part's SHA-256.
    let payloads = standin.control("GET", "/_standin/payloads", None);
    let payloads: Value = serde_json::from_str(&payloads).unwrap();
    assert_eq!(payloads["UploadPart"], json!({"signed": 4}), "{payloads}");
    // No STS, EC2 or IAM: it works against any S3-compatible server.
    let others: Vec<&String> = counts
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !k.starts_with("s3."))
        .collect();
    assert!(others.is_empty(), "{others:?}");

    assert_object_is_file(&s3, "plain", "some/prefix/blob.bin", &file).await;

    // Again: the object matches, nothing is sent.
    standin.reset_requests();
    assert_eq!(send().json()["status"], "unchanged");
    assert_eq!(common::count(&standin.counts(), "s3.UploadPart"), 0);

    // Bad input is refused before any call (exit 2): an empty file, a part size S3 refuses.
    let empty = common::write_file(dir.path(), "empty.bin", "");
    for (path, part, why) in [
        (&empty, "5MiB", "is empty"),
        (&file, "4MiB", "outside S3's limits"),
    ] {
        standin.reset_requests();
        let run = standin
            .imgpub()
            .args(["aws", "upload-object", "--region", REGION])
            .args(["--bucket", "s3://plain/some/prefix", "--part-size", part])
            .arg_path("--file", path)
            .run();
        assert_eq!(run.code, 2, "{why}: {}", run.stderr);
        assert!(run.stderr.contains(why), "{why}: {}", run.stderr);
        assert_eq!(standin.counts(), json!({}), "{why}: a call was made");
    }
}

/// The AMI features release jobs ask for, read back: deprecation (on the AMI and its
/// copies), the UEFI variable store, SR-IOV, an encrypted snapshot under a given key; and
/// the combinations AWS would refuse, refused before any call.
#[tokio::test]
async fn ami_features_read_back_and_refusals_come_first() {
    use aws_smithy_types::date_time::Format;
    use base64::Engine;
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "feat.raw", 8, 2, 81);
    let raw_path = raw.to_str().unwrap();
    let store = base64::engine::general_purpose::STANDARD.encode(
        (0..300u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    // Wrapped, as files of base64 often are.
    let wrapped: Vec<&str> = store
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let uefi = common::write_file(dir.path(), "vars.b64", &(wrapped.join("\n") + "\n"));
    let uefi = uefi.to_str().unwrap();
    let key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let in_90_days = aws_smithy_types::DateTime::from(
        std::time::SystemTime::now() + Duration::from_secs(90 * 86400),
    )
    .fmt(Format::DateTime)
    .unwrap();

    let out = upload(
        &standin,
        &raw,
        &[
            "--name",
            "feat",
            "--deprecate-in",
            "90d",
            "--uefi-data",
            uefi,
            "--boot-mode",
            "uefi",
            "--kms-key",
            key,
            "--sriov-net-support",
            "simple",
        ],
    )
    .json();
    let ami = out["HVM"].as_str().unwrap().to_string();
    let snap = out["SnapshotID"].as_str().unwrap().to_string();
    let ec2 = standin.ec2(REGION);
    let image = ec2.describe_images().image_ids(&ami).send().await.unwrap();
    let image = image.images()[0].clone();
    let deprecation = image.deprecation_time().unwrap().to_string();
    assert_eq!(deprecation[..10], in_90_days[..10], "{deprecation}");
    assert_eq!(image.sriov_net_support(), Some("simple"));
    assert_eq!(image.boot_mode().unwrap().as_str(), "uefi");
    let attr = ec2
        .describe_image_attribute()
        .image_id(&ami)
        .attribute(aws_sdk_ec2::types::ImageAttributeName::UefiData)
        .send()
        .await
        .unwrap();
    assert_eq!(
        attr.uefi_data().and_then(|v| v.value()),
        Some(store.as_str())
    );
    let snapshot = ec2
        .describe_snapshots()
        .snapshot_ids(&snap)
        .send()
        .await
        .unwrap();
    let snapshot = &snapshot.snapshots()[0];
    assert_eq!(snapshot.encrypted(), Some(true));
    assert_eq!(snapshot.kms_key_id(), Some(key));

    // CopyImage does not carry the deprecation; copy-regions does.
    let copied = standin
        .imgpub()
        .args([
            "aws",
            "copy-regions",
            "--region",
            REGION,
            "--image",
            &ami,
            "eu-west-1",
        ])
        .run()
        .json();
    let copy = copied["eu-west-1"]["ami"].as_str().unwrap().to_string();
    let there = aws_sdk_ec2::Client::new(&standin.sdk("eu-west-1"));
    let copy = there
        .describe_images()
        .image_ids(&copy)
        .send()
        .await
        .unwrap();
    assert_eq!(
        copy.images()[0].deprecation_time(),
        Some(deprecation.as_str())
    );

    for (refused, says) in [
        (vec!["--public", "--encrypted"], "cannot be made public"),
        (
            vec!["--encrypted", "--grant-user-snapshot", "111122223333"],
            "default EBS key",
        ),
        (
            vec!["--tpm-support", "v2.0", "--x86-boot-mode", "legacy-bios"],
            "needs UEFI",
        ),
        (
            vec!["--arch", "arm64", "--boot-mode", "legacy-bios"],
            "boots only UEFI",
        ),
        (
            vec!["--uefi-data", uefi, "--boot-mode", "legacy-bios"],
            "UEFI boot mode",
        ),
        (vec!["--deprecate-at", "2001-01-01T00:00:00Z"], "has passed"),
        (vec!["--deprecate-at", "next tuesday"], "RFC 3339"),
        // The disk image itself, given by mistake: refused after a bounded read.
        (
            vec!["--uefi-data", raw_path, "--boot-mode", "uefi"],
            "is over",
        ),
    ] {
        standin.reset_requests();
        let mut args = vec!["--name", "refused"];
        args.extend(&refused);
        let run = upload(&standin, &raw, &args);
        assert_eq!(run.code, 2, "{refused:?}: {}", run.stderr);
        assert!(
            run.error_line().contains(says),
            "{refused:?}: {}",
            run.stderr
        );
        assert_eq!(standin.counts(), json!({}), "{refused:?} made calls");
    }
}

/// After `delete-image`, the same upload again imports again: the finished import task AWS
/// still lists points at a snapshot that is gone.
#[tokio::test]
async fn an_upload_after_delete_image_imports_again() {
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "again.raw", 8, 2, 95);
    let first = upload(&standin, &raw, &["--name", "again"]).json();
    let ami = first["HVM"].as_str().unwrap();
    standin
        .imgpub()
        .args(["aws", "delete-image", "--region", REGION, "--ami", ami])
        .args(["--snapshot", "detectFromAMI"])
        .run()
        .json();
    let second = upload(&standin, &raw, &["--name", "again"]);
    let out = second.json();
    assert!(
        second.stderr.contains("has been deleted since"),
        "{}",
        second.stderr
    );
    assert_ne!(out["SnapshotID"], first["SnapshotID"]);
    let snap = out["SnapshotID"].as_str().unwrap();
    let found = standin
        .ec2(REGION)
        .describe_snapshots()
        .snapshot_ids(snap)
        .send()
        .await
        .unwrap();
    assert_eq!(found.snapshots().len(), 1);
}

/// A region that blocks public sharing is found before anything is sent: `--public` stops
/// with the setting and the command that turns it off; without `--public` all goes on.
#[tokio::test]
async fn block_public_access_is_found_before_anything_is_sent() {
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "bpa.raw", 8, 2, 91);
    let set = |image: &str, snapshot: &str| {
        let body =
            json!({"image_block_public_access": image, "snapshot_block_public_access": snapshot});
        standin.control("POST", "/_standin/config", Some(&body.to_string()));
    };
    for (image, snapshot, says) in [
        (
            "block-new-sharing",
            "unblocked",
            "disable-image-block-public-access",
        ),
        (
            "unblocked",
            "block-all-sharing",
            "disable-snapshot-block-public-access",
        ),
    ] {
        set(image, snapshot);
        standin.reset_requests();
        let run = upload(&standin, &raw, &["--name", "bpa", "--public"]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        let line = run.error_line();
        assert!(
            line.contains("blocks public access") && line.contains(says),
            "{line}"
        );
        let counts = standin.counts();
        assert_eq!(
            common::count(&counts, "s3.CreateMultipartUpload"),
            0,
            "{counts}"
        );
        assert_eq!(common::count(&counts, "ec2.ImportSnapshot"), 0, "{counts}");
    }
    set("block-new-sharing", "block-all-sharing");
    let out = upload(&standin, &raw, &["--name", "bpa"]).json();
    let ami = out["HVM"].as_str().unwrap();
    let run = standin
        .imgpub()
        .args([
            "aws", "grant", "--region", REGION, "--image", ami, "--public",
        ])
        .run();
    assert_eq!(run.code, 1);
    assert!(
        run.error_line().contains("blocks public access to AMIs"),
        "{}",
        run.stderr
    );
    assert!(common::launch_permissions(&standin.ec2(REGION), ami)
        .await
        .is_empty());
    set("unblocked", "unblocked");
}

/// When AWS refuses `--public` for the region's Public AMIs quota, the error names the quota
/// and the way out, and nothing is half-shared: the AMI and its snapshot stay private. A
/// rerun once there is room finishes the job.
#[tokio::test]
async fn the_public_ami_quota_leaves_nothing_half_shared() {
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "quota.raw", 8, 2, 93);
    standin.control(
        "POST",
        "/_standin/config",
        Some(r#"{"public_ami_quota": 0}"#),
    );
    let run = upload(&standin, &raw, &["--name", "quota", "--public"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let line = run.error_line();
    assert!(
        line.contains("ResourceLimitExceeded") && line.contains("\"Public AMIs\" quota"),
        "{line}"
    );
    let ec2 = standin.ec2(REGION);
    let images = ec2.describe_images().owners("self").send().await.unwrap();
    let image = &images.images()[0];
    let ami = image.image_id().unwrap().to_string();
    let snap = image.block_device_mappings()[0]
        .ebs()
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_string();
    assert!(common::launch_permissions(&ec2, &ami).await.is_empty());
    assert!(
        common::volume_permissions(&ec2, &snap).await.is_empty(),
        "half-shared"
    );

    standin.control(
        "POST",
        "/_standin/config",
        Some(r#"{"public_ami_quota": null}"#),
    );
    let out = upload(&standin, &raw, &["--name", "quota", "--public"]).json();
    assert_eq!(out["HVM"], json!(ami));
    assert_eq!(common::launch_permissions(&ec2, &ami).await, ["group:all"]);
    assert_eq!(common::volume_permissions(&ec2, &snap).await, ["group:all"]);
}

/// Without a terminal (a CI log) the waits are plain lines: the import's state and percent
/// each time they change, no bar drawing (carriage returns, escape codes); and at ore's
/// default level not even those.
#[tokio::test]
async fn waits_are_plain_lines_without_a_terminal() {
    let standin = Standin::start_with_import_seconds(6.0);
    ready(&standin);
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "plain.raw", 8, 2, 71);
    let run = upload(&standin, &raw, &["--name", "plain-lines"]);
    run.json();
    assert!(
        run.stderr.contains(": active: downloading/converting ("),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains('\r') && !run.stderr.contains('\u{1b}'),
        "{:?}",
        run.stderr
    );

    let quiet = standin
        .upload_cmd(REGION, &make_raw(dir.path(), "quiet.raw", 8, 2, 72))
        .env("CI", "true")
        .args(["--name", "quiet"])
        .run();
    quiet.json();
    // No progress on CI: only the run's summary.
    assert!(quiet.summary().starts_with("upload: "), "{}", quiet.stderr);
}

/// The endpoint S3 really uses decides whether the payload is signed: with every other
/// service over HTTPS but `AWS_ENDPOINT_URL_S3` on plain HTTP, the parts go there, signed.
#[tokio::test]
async fn a_service_endpoint_of_its_own_decides_for_s3() {
    let standin = Standin::start_tls();
    let s3 = standin.s3(REGION);
    s3.create_bucket().bucket("split").send().await.unwrap();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "blob.bin", 12, 11, 68);
    standin.reset_requests();
    let out = standin
        .imgpub()
        .env("AWS_ENDPOINT_URL_S3", &standin.endpoint)
        .args([
            "aws",
            "upload-object",
            "--region",
            REGION,
            "--bucket",
            "s3://split",
        ])
        .arg_path("--file", &file)
        .args(["--part-size", "5MiB"])
        .run()
        .json();
    assert_eq!(
        out,
        json!({"S3Object": "s3://split/blob.bin", "status": "changed"})
    );
    let payloads = standin.control("GET", "/_standin/payloads", None);
    let payloads: Value = serde_json::from_str(&payloads).unwrap();
    assert_eq!(payloads["UploadPart"], json!({"signed": 3}), "{payloads}");
    assert_object_is_file(&s3, "split", "blob.bin", &file).await;
}

/// Over HTTPS each part goes as UNSIGNED-PAYLOAD with a CRC32C that S3 checks (TLS guards
/// the bytes on the way), and the object arrives intact. The stand-in's certificate comes
/// from a throwaway CA, trusted through AWS_CA_BUNDLE (as the aws CLI and ore do).
#[tokio::test]
async fn upload_object_over_tls_sends_a_crc32c_instead_of_signing_the_payload() {
    let standin = Standin::start_tls();
    let (_, ca) = standin.tls.clone().unwrap();
    let s3 = standin.s3(REGION);
    s3.create_bucket().bucket("tls").send().await.unwrap();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "blob.bin", 22, 21, 67);
    // `imgpub()` points the binary at the HTTPS port and sets AWS_CA_BUNDLE.
    let send_with = |imgpub: common::Imgpub, to: &str| {
        imgpub
            .args(["aws", "upload-object", "--region", REGION, "--bucket", to])
            .arg_path("--file", &file)
            .args(["--part-size", "5MiB"])
            .run()
    };
    let send = || send_with(standin.imgpub(), "s3://tls/x");
    standin.reset_requests();
    assert_eq!(
        send().json(),
        json!({"S3Object": "s3://tls/x/blob.bin", "status": "changed"})
    );
    let payloads = standin.control("GET", "/_standin/payloads", None);
    let payloads: Value = serde_json::from_str(&payloads).unwrap();
    assert_eq!(
        payloads["UploadPart"],
        json!({"UNSIGNED-PAYLOAD": 5, "crc32c": 5}),
        "{payloads}"
    );

    assert_object_is_file(&s3, "tls", "x/blob.bin", &file).await;

    // A rerun over TLS finds the object and sends nothing.
    standin.reset_requests();
    assert_eq!(send().json()["status"], "unchanged");
    assert_eq!(common::count(&standin.counts(), "s3.UploadPart"), 0);

    // Without the CA the server is not trusted, and the error says so.
    let run = send_with(standin.imgpub().env_remove("AWS_CA_BUNDLE"), "s3://tls/y");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("invalid peer certificate") && run.stderr.contains("AWS_CA_BUNDLE"),
        "{}",
        run.stderr
    );
    // The system's way works too: SSL_CERT_FILE (rustls-native-certs reads it).
    standin.reset_requests();
    let system_way = standin
        .imgpub()
        .env_remove("AWS_CA_BUNDLE")
        .env("SSL_CERT_FILE", &ca);
    let run = send_with(system_way, "s3://tls/x");
    assert_eq!(
        run.json(),
        json!({"S3Object": "s3://tls/x/blob.bin", "status": "unchanged"})
    );

    // A bundle that is missing or is no PEM is refused before any request, naming it.
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    for bundle in [dir.path().join("missing.pem"), not_pem] {
        standin.reset_requests();
        let run = send_with(standin.imgpub().env("AWS_CA_BUNDLE", &bundle), "s3://tls/z");
        assert_eq!(run.code, 2, "{}", run.stderr);
        let named = format!("AWS_CA_BUNDLE={}", bundle.display());
        assert!(run.stderr.contains(&named), "{}", run.stderr);
        assert_eq!(standin.counts(), json!({}), "{}", run.stderr);
    }
}

/// `--import-timeout` bounds the whole wait: for a free import slot (ResourceLimitExceeded)
/// and then for the import, not each of them in full.
#[tokio::test]
async fn the_import_timeout_covers_the_wait_for_a_slot_and_the_import() {
    let standin = Standin::start_with_import_seconds(10.0);
    ready(&standin);
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "queued.raw", 8, 4, 70);
    standin.fault(r#"{"action": "ImportSnapshot", "status": 400, "code": "ResourceLimitExceeded", "count": 1}"#);
    // 30 s for the slot, then 10 s of import: past 35 s in all.
    let run = upload(
        &standin,
        &raw,
        &["--name", "queued", "--import-timeout", "35s"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let err = run.error_line();
    assert!(
        err.contains("not finished within the import timeout (35s"),
        "{err}"
    );
    assert_eq!(common::count(&standin.counts(), "ec2.ImportSnapshot"), 2);
}

/// Ctrl-C while the whole file is hashed (to tell whether the object in S3 is this file)
/// exits at once with 130, not when the hash is done.
#[tokio::test]
async fn ctrl_c_during_the_whole_file_hash_exits_at_once() {
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "big.raw", 256, 1, 71);
    let upload_object = || {
        standin
            .imgpub()
            .args(["aws", "upload-object", "--region", REGION])
            .args(["--bucket", "s3://images/hash", "--key", "big.raw"])
            .arg_path("--file", &file)
    };
    upload_object().run().json();
    // Again: the object is there, and finding that it is this file hashes all of it.
    let run = upload_object().args(["-v"]).run();
    assert!(run.stderr.contains("already uploaded"), "{}", run.stderr);

    standin.reset_requests();
    let mut child = upload_object()
        .args(["-v"])
        .cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // HeadObject answered: the hash of the whole file is under way.
    assert!(standin.wait_for_calls("s3.HeadObject", 1, &mut child));
    let output = common::signal_and_wait(child, "-INT").await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    // It stopped without finishing the hash: it never got to say the object is this file.
    assert!(
        !stderr.contains("is already uploaded and matches"),
        "{stderr}"
    );
}

/// A rerun never hands back an image other than the one asked for: another file under a
/// name already imported, or the same file registered with other flags, is refused before
/// anything changes; `--force` makes the image asked for.
#[tokio::test]
async fn a_rerun_that_would_return_another_image_is_refused() {
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    let first = make_raw(dir.path(), "v1.raw", 8, 4, 80);
    // Another image of the same size: the size alone cannot tell it from the first.
    let second = make_raw(dir.path(), "v2.raw", 8, 4, 81);
    let larger = make_raw(dir.path(), "v3.raw", 12, 4, 82);
    let args = [
        "--name",
        "release",
        "--ami-name",
        "release",
        "--arch",
        "aarch64",
    ];
    let one = upload(&standin, &first, &args);
    let ami = one.json()["HVM"].as_str().unwrap().to_string();
    assert!(!one.stderr.contains("another image"), "{}", one.stderr);
    // The same file and flags again: the same AMI.
    let again = upload(&standin, &first, &args);
    assert_eq!(again.json()["HVM"], ami.as_str());

    standin.reset_requests();
    let other = upload(&standin, &second, &args);
    assert_eq!(other.code, 1, "{}", other.stderr);
    let line = other.error_line();
    assert!(
        line.contains("was imported from another file than")
            && line.contains("v2.raw")
            && line.contains("--force"),
        "{line}"
    );
    let no_writes = |counts: &serde_json::Value| {
        for write in [
            "s3.CreateMultipartUpload",
            "ec2.ImportSnapshot",
            "ec2.RegisterImage",
            "ec2.CreateTags",
        ] {
            assert_eq!(common::count(counts, write), 0, "{write}: {counts}");
        }
    };
    no_writes(&standin.counts());

    // A snapshot without imgpub's content tag (ore's, an older imgpub's) is compared by the
    // size its import task read.
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(REGION));
    let snapshot = one.json()["SnapshotID"].as_str().unwrap().to_string();
    ec2.delete_tags()
        .resources(&snapshot)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("imgpub:content")
                .build(),
        )
        .send()
        .await
        .unwrap();
    standin.reset_requests();
    let other = upload(&standin, &larger, &args);
    assert_eq!(other.code, 1, "{}", other.stderr);
    let line = other.error_line();
    assert!(
        line.contains("was imported from a 8388608-byte image, but")
            && line.contains("v3.raw is 12582912 bytes: it is another image")
            && line.contains("--force"),
        "{line}"
    );
    no_writes(&standin.counts());

    // The same file, fixed flags: the arm64 AMI without IMDSv2 is not what is asked for.
    let fixed = [
        "--name",
        "release",
        "--ami-name",
        "release",
        "--arch",
        "x86_64",
        "--imdsv2-only",
    ];
    standin.reset_requests();
    let refused = upload(&standin, &first, &fixed);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    let line = refused.error_line();
    assert!(
        line.contains(&ami)
            && line.contains("architecture arm64 (asked: x86_64)")
            && line.contains("IMDS support unset (asked: v2.0)")
            && line.contains("--force"),
        "{line}"
    );
    assert_eq!(common::count(&standin.counts(), "ec2.RegisterImage"), 0);

    // --force imports and registers it again as asked; the old AMI and its snapshot go.
    let forced = upload(&standin, &first, &[&fixed[..], &["--force"]].concat()).json();
    let new_ami = forced["HVM"].as_str().unwrap();
    assert_ne!(new_ami, ami);
    let image = ec2
        .describe_images()
        .image_ids(new_ami)
        .send()
        .await
        .unwrap();
    let image = &image.images()[0];
    assert_eq!(image.architecture().unwrap().as_str(), "x86_64");
    assert_eq!(image.imds_support().unwrap().as_str(), "v2.0");
    let gone = ec2.describe_images().image_ids(&ami).send().await;
    assert!(gone.map(|o| o.images().is_empty()).unwrap_or(true));
    let named = ec2
        .describe_images()
        .owners("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("name")
                .values("release")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(named.images().len(), 1);
}

/// The upload's calls carried out but their answers lost, so the SDK retries them:
/// CreateMultipartUpload starts a second upload (the first must not be left behind, billed
/// until the lifecycle rule); CompleteMultipartUpload meets `NoSuchUpload` (S3 forgets a
/// completed upload) or the first answer again (the stand-in's seed picks: AWS documents
/// neither), and the object, which is the file, means done.
#[tokio::test]
async fn lost_answers_of_the_upload_calls_leave_one_object_and_no_upload() {
    let standin = Standin::start();
    ready(&standin);
    let dir = TempDir::new();
    for (i, action) in ["CreateMultipartUpload", "CompleteMultipartUpload"]
        .into_iter()
        .enumerate()
    {
        let raw = make_raw(dir.path(), &format!("lost-{i}.raw"), 12, 8, 90 + i as u64);
        standin.reset_requests();
        standin.fault(&format!(
            r#"{{"action": "{action}", "status": 500, "after": true, "count": 1}}"#
        ));
        let run = upload(&standin, &raw, &["--name", action, "--delete-object=false"]);
        assert_eq!(run.code, 0, "{action}: {}", run.stderr);
        assert!(run.json()["HVM"].as_str().unwrap().starts_with("ami-"));
        let counts = standin.counts();
        assert_eq!(
            common::count(&counts, &format!("s3.{action}")),
            2,
            "{counts}"
        );
        let uploads = standin
            .s3(REGION)
            .list_multipart_uploads()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap();
        assert!(
            uploads.uploads().is_empty(),
            "{action}: {:?}",
            uploads.uploads()
        );
        let key = format!("ci/lost-{i}.raw");
        assert_object_is_file(&standin.s3(REGION), BUCKET, &key, &raw).await;
    }
}

/// A wait longer than an assumed-role session: the stand-in's sessions expire (ExpiredToken
/// after DurationSeconds, here shortened to 15 s) while the import runs for 25 s; the SDK's
/// credentials provider assumes the role again before they do, and the upload finishes.
#[tokio::test]
async fn an_import_that_outlives_the_role_session_finishes() {
    let standin = Standin::start_with_import_seconds(25.0);
    ready(&standin);
    standin.control(
        "POST",
        "/_standin/config",
        Some(r#"{"sts_session_seconds": 15}"#),
    );
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "long.raw", 8, 2, 91);
    standin.reset_requests();
    let run = upload(
        &standin,
        &raw,
        &[
            "--name",
            "long-import",
            "--role-arn",
            "arn:aws:iam::123456789012:role/publisher",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let counts = standin.counts();
    assert!(
        common::count(&counts, "sts.AssumeRole") >= 2,
        "the role was assumed again during the wait: {counts}"
    );
    assert!(run.json()["HVM"].as_str().unwrap().starts_with("ami-"));
}
