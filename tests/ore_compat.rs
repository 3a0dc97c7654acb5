//! A script written for `ore aws` must see the same from imgpub: each test runs the argv a
//! script passes to ore against the stand-in and asserts what ore does (JSON fields, the
//! AMI's attributes read back, exit codes). One test per difference found side by side.

mod common;

use common::{make_raw, tag_pairs, tempdir::TempDir, Standin, ACCOUNT};
use serde_json::{json, Value};

const REGION: &str = "us-east-1";

fn ec2(standin: &Standin) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&standin.sdk(REGION))
}

/// A stand-in with the bucket `images` and the vmimport role, made by `initialize`.
fn ready() -> Standin {
    let standin = Standin::start();
    standin.initialize(REGION, "images");
    standin
}

/// `ore aws upload` of `file` with `extra` flags, as a script calls it.
fn ore_upload(standin: &Standin, file: &std::path::Path, extra: &[&str]) -> common::Run {
    standin
        .imgpub()
        .args([
            "aws",
            "upload",
            "--region",
            REGION,
            "--bucket",
            "s3://images/ci",
        ])
        .arg_path("--file", file)
        .args(extra)
        .run()
}

async fn image(standin: &Standin, ami: &str) -> aws_sdk_ec2::types::Image {
    let out = ec2(standin)
        .describe_images()
        .image_ids(ami)
        .send()
        .await
        .unwrap();
    out.images()[0].clone()
}

// 1. Boolean flags take cobra's `=value`.
#[tokio::test]
async fn boolean_flags_take_a_value_as_cobra_does() {
    let standin = ready();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 4, 1, 1);
    let run = ore_upload(
        &standin,
        &file,
        &[
            "--name",
            "os-1",
            "--public=true",
            "--imdsv2-only=false",
            "--force=false",
            "--disk-size-inspect=true",
            "--delete-object=False",
        ],
    );
    let out = run.json();
    let ami = out["HVM"].as_str().unwrap();
    assert_eq!(
        common::launch_permissions(&ec2(&standin), ami).await,
        ["group:all"]
    );
    let img = image(&standin, ami).await;
    assert_eq!(img.imds_support(), None, "--imdsv2-only=false");

    for argv in [
        vec![
            "aws",
            "delete-image",
            "--ami",
            "ami-00000000000000000",
            "--allow-missing=true",
        ],
        vec!["aws", "list-regions", "--disabled=true"],
        vec!["aws", "list-regions", "--all=false"],
        vec!["aws", "list-regions", "--all=1"],
    ] {
        let run = standin
            .imgpub()
            .args(&argv)
            .args(["--region", REGION])
            .run();
        assert_eq!(run.code, 0, "{argv:?}: {}", run.stderr);
    }
    let run = standin
        .imgpub()
        .args(["aws", "list-regions", "--all=maybe", "--region", REGION])
        .run();
    assert_eq!(run.code, 2);
}

// 2. --access-id / --secret-key are this run's credentials.
#[tokio::test]
async fn access_id_and_secret_key_sign_the_run_and_are_never_shown() {
    let standin = Standin::start();
    let iam = standin.iam();
    iam.create_user().user_name("ci").send().await.unwrap();
    let (key, secret) = common::access_key(&iam, "ci").await;
    let run = standin
        .imgpub()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args(["aws", "list-regions", "--region", REGION, "-v"])
        .args(["--access-id", &key, "--secret-key", &secret])
        .secret(&secret)
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("as arn:aws:iam::{ACCOUNT}:user/ci")),
        "{}",
        run.stderr
    );
    let alone = standin
        .imgpub()
        .args(["aws", "list-regions", "--region", REGION])
        .args(["--access-id", &key])
        .run();
    assert_eq!(alone.code, 2);
    assert!(alone.error_line().contains("--secret-key"));
}

// 3., 4., 5. ore's root volume, ephemeral mapping, Name tags and S3 key.
#[tokio::test]
async fn upload_registers_tags_and_keys_as_ore_does() {
    let standin = ready();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "fcos-40.raw", 4, 1, 2);
    let args = [
        "--name",
        "fcos-40",
        "--ami-name",
        "fcos-40-ami",
        "--delete-object=false",
    ];
    let out = ore_upload(&standin, &file, &args).json();
    assert_eq!(out["S3Object"], "s3://images/ci/fcos-40.raw", "{out}");
    let ami = out["HVM"].as_str().unwrap().to_string();
    let snapshot = out["SnapshotID"].as_str().unwrap().to_string();

    let img = image(&standin, &ami).await;
    let devices: Vec<(String, Option<i32>, Option<String>)> = img
        .block_device_mappings()
        .iter()
        .map(|m| {
            (
                m.device_name().unwrap_or_default().to_string(),
                m.ebs().and_then(|e| e.volume_size()),
                m.virtual_name().map(str::to_owned),
            )
        })
        .collect();
    assert!(
        devices.contains(&("/dev/xvda".into(), Some(8), None)),
        "root volume of ore's 8 GiB: {devices:?}"
    );
    assert!(
        devices.contains(&("/dev/xvdb".into(), None, Some("ephemeral0".into()))),
        "{devices:?}"
    );
    // ore's Name, and imgpub's own mark (what its scoped policies let a publisher change).
    assert_eq!(
        tag_pairs(img.tags()),
        [
            ("Name".into(), "fcos-40-ami".into()),
            ("imgpub:managed".into(), "true".into())
        ]
    );
    let snap = ec2(&standin)
        .describe_snapshots()
        .snapshot_ids(&snapshot)
        .send()
        .await
        .unwrap();
    assert_eq!(
        tag_pairs(snap.snapshots()[0].tags()),
        [
            ("Name".into(), "fcos-40".into()),
            ("imgpub:managed".into(), "true".into())
        ]
    );

    // A rerun reuses all of it and prints the same.
    standin.reset_requests();
    let again = ore_upload(&standin, &file, &args).json();
    assert_eq!(again, out);
    let counts = standin.counts();
    assert_eq!(counts["ec2.RegisterImage"].as_u64().unwrap_or(0), 0);
    assert_eq!(counts["s3.UploadPart"].as_u64().unwrap_or(0), 0);
}

// 3. A size below the image's is refused before any change.
#[tokio::test]
async fn a_root_volume_smaller_than_the_image_is_refused_before_upload() {
    let standin = ready();
    let dir = TempDir::new();
    // 9 GiB virtual (sparse: 1 MiB written) is more than ore's default of 8.
    let file = make_raw(dir.path(), "big.raw", 9 * 1024, 1, 3);
    standin.reset_requests();
    let run = ore_upload(&standin, &file, &["--name", "big"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.error_line();
    assert!(
        line.contains("smaller than the image (9 GiB)") && line.contains("--disk-size-gib 9"),
        "{line}"
    );
    let counts = standin.counts();
    assert_eq!(counts["s3.CreateMultipartUpload"].as_u64().unwrap_or(0), 0);
    let run = ore_upload(&standin, &file, &["--name", "big", "--disk-size-gib", "4"]);
    assert_eq!(run.code, 2);
}

// 6. At ore's default level a successful run prints its JSON and nothing else.
#[tokio::test]
async fn default_level_prints_only_the_json() {
    let standin = ready();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "quiet.raw", 4, 1, 4);
    let run = ore_upload(&standin, &file, &["--name", "quiet"]);
    run.json();
    assert_eq!(run.stderr, "", "stderr at NOTICE");
    let file = make_raw(dir.path(), "loud.raw", 4, 1, 5);
    let run = ore_upload(&standin, &file, &["--name", "loud", "-v"]);
    run.json();
    assert!(run.stderr.contains("registered AMI"), "{}", run.stderr);
}

// 7. A role ore made (one policy per bucket, the documented trust policy) is fine as it is.
#[tokio::test]
async fn initialize_accepts_the_role_ore_made() {
    let standin = Standin::start();
    let iam = standin.iam();
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Condition": {"StringEquals": {"sts:ExternalId": "vmimport"}},
            "Action": "sts:AssumeRole",
            "Principal": {"Service": "vmie.amazonaws.com"}
        }]
    });
    let per_bucket = |bucket: &str| {
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject"],
                "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")]
            }, {
                "Effect": "Allow",
                "Action": ["ec2:ModifySnapshotAttribute", "ec2:CopySnapshot", "ec2:RegisterImage", "ec2:Describe*"],
                "Resource": "*"
            }]
        })
    };
    iam.create_role()
        .role_name("vmimport")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .unwrap();
    iam.put_role_policy()
        .role_name("vmimport")
        .policy_name("ore-images")
        .policy_document(per_bucket("ore-images").to_string())
        .send()
        .await
        .unwrap();
    standin
        .s3(REGION)
        .create_bucket()
        .bucket("ore-images")
        .send()
        .await
        .unwrap();

    let init = |bucket: &str, extra: &[&str]| {
        standin
            .imgpub()
            .args(["aws", "initialize", "--region", REGION, "--bucket", bucket])
            .args(extra)
            .run()
    };
    let policies = || async {
        let mut names = standin
            .iam()
            .list_role_policies()
            .role_name("vmimport")
            .send()
            .await
            .unwrap()
            .policy_names()
            .to_vec();
        names.sort();
        names
    };
    let trust_now = || async {
        let role = standin
            .iam()
            .get_role()
            .role_name("vmimport")
            .send()
            .await
            .unwrap();
        let raw = role
            .role()
            .unwrap()
            .assume_role_policy_document()
            .unwrap()
            .to_string();
        let decoded = urlencoding::decode(&raw).unwrap().into_owned();
        serde_json::from_str::<Value>(&decoded).unwrap()
    };

    let run = init("ore-images", &[]);
    let out = run.json();
    // Only imgpub's own addition, the bucket's abort rule for unfinished uploads.
    assert_eq!(out["created"], json!(["lifecycle"]), "{out}");
    assert_eq!(out["repaired"], json!([]), "{out}");
    assert_eq!(policies().await, ["ore-images"], "no second policy");
    assert!(!trust_now().await.to_string().contains("SourceAccount"));
    assert!(run.stderr.contains("--harden-trust"), "{}", run.stderr);

    // A new bucket gets a policy of its own, named after it, as ore would add it.
    let out = init("more-images", &[]).json();
    assert_eq!(
        out["created"],
        json!(["bucket", "role-policy", "lifecycle"]),
        "{out}"
    );
    assert_eq!(policies().await, ["more-images", "ore-images"]);

    // --harden-trust is the offer taken.
    let out = init("ore-images", &["--harden-trust"]).json();
    assert_eq!(out["repaired"], json!(["trust-policy"]), "{out}");
    let trust = trust_now().await.to_string();
    assert!(
        trust.contains("aws:SourceAccount") && trust.contains(ACCOUNT),
        "{trust}"
    );
}

// 8. ensure-public: ore's --ami form and its default tag production=true.
#[tokio::test]
async fn ensure_public_takes_ores_ami_flag_and_default_tag() {
    let standin = Standin::start();
    let (tagged, _) =
        common::api_image(&standin, REGION, "prod-1", &[("production", "true")]).await;
    let (untagged, _) = common::api_image(&standin, REGION, "other-1", &[]).await;

    let out = standin
        .imgpub()
        .args(["aws", "ensure-public", "--region", REGION])
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(&tagged) && !out.stdout.contains(&untagged));
    assert_eq!(
        common::launch_permissions(&ec2(&standin), &tagged).await,
        ["group:all"]
    );
    assert!(common::launch_permissions(&ec2(&standin), &untagged)
        .await
        .is_empty());

    let out = standin
        .imgpub()
        .args([
            "aws",
            "ensure-public",
            "--region",
            REGION,
            "--ami",
            &untagged,
        ])
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        common::launch_permissions(&ec2(&standin), &untagged).await,
        ["group:all"]
    );
    let missing = standin
        .imgpub()
        .args(["aws", "ensure-public", "--region", REGION])
        .args(["--ami", "ami-0000000000000dead"])
        .run();
    assert_eq!(
        missing.code, 1,
        "as ore: an AMI that is not there fails the run"
    );
    assert!(missing.error_line().contains("ami-0000000000000dead"));
}

// 9. delete-image --snapshot alone.
#[tokio::test]
async fn delete_image_takes_a_snapshot_alone() {
    let standin = Standin::start();
    let (ami, snapshot) = common::api_image(&standin, REGION, "old", &[]).await;
    // While the AMI is registered EC2 refuses to delete its root snapshot (DeleteSnapshot
    // API reference): refused before any call that changes something, naming the AMI.
    let delete_snapshot = || {
        standin
            .imgpub()
            .args(["aws", "delete-image", "--region", REGION])
            .args(["--snapshot", &snapshot])
            .run()
    };
    standin.reset_requests();
    let refused = delete_snapshot();
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.error_line().contains(&ami), "{}", refused.stderr);
    assert_eq!(standin.counts()["ec2.DeleteSnapshot"], json!(null));
    // The AMI went earlier; its snapshot is left over.
    let ec2 = ec2(&standin);
    ec2.deregister_image().image_id(&ami).send().await.unwrap();
    let out = delete_snapshot().json();
    assert_eq!(out["snapshot"], json!(snapshot), "{out}");
    let left = ec2
        .describe_snapshots()
        .snapshot_ids(&snapshot)
        .send()
        .await;
    assert!(left.map(|o| o.snapshots().is_empty()).unwrap_or(true));
    let none = standin
        .imgpub()
        .args(["aws", "delete-image", "--region", REGION])
        .run();
    assert_eq!(none.code, 2);
}

// 10. --source-object with --source-snapshot, and upload-object --key under the prefix.
#[tokio::test]
async fn source_object_with_source_snapshot_is_a_usage_error_and_key_keeps_the_prefix() {
    let standin = ready();
    standin.reset_requests();
    let run = standin
        .imgpub()
        .args(["aws", "upload", "--region", REGION, "--name", "x"])
        .args(["--source-object", "s3://images/ci/x.vmdk"])
        .args(["--source-snapshot", "snap-0123456789abcdef0"])
        .run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.error_line().contains("--source-object"));
    assert_eq!(standin.counts(), json!({}), "nothing was called");

    let dir = TempDir::new();
    let file = make_raw(dir.path(), "blob.bin", 1, 1, 6);
    let out = standin
        .imgpub()
        .args(["aws", "upload-object", "--region", REGION])
        .args(["--bucket", "s3://images/uo", "--key", "k"])
        .arg_path("--file", &file)
        .run()
        .json();
    assert_eq!(out["S3Object"], "s3://images/uo/k");
}

// 8. gc: ore's `--duration`; old tagged AMIs and their snapshots go, with --dry-run first.
#[tokio::test]
async fn gc_deletes_old_tagged_amis_and_their_snapshots() {
    let standin = Standin::start();
    let (old, old_snap) =
        common::api_image(&standin, REGION, "nightly-1", &[("stream", "testing")]).await;
    let (public, _) =
        common::api_image(&standin, REGION, "nightly-2", &[("stream", "testing")]).await;
    common::make_public(&standin, REGION, &public).await;
    let (other, _) = common::api_image(&standin, REGION, "release-1", &[]).await;
    let gc = |extra: &[&str]| {
        standin
            .imgpub()
            .args(["aws", "gc", "--region", REGION])
            .args(extra)
            .run()
    };

    // ore's invocation: nothing of that age (and nothing tagged CreatedBy=mantle).
    let run = gc(&["--duration", "5h"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{}", run.stderr);

    standin.reset_requests();
    let run = gc(&["--tag", "stream=testing", "--duration", "0s", "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["garbage"]["image"], json!(old));
    let counts = standin.counts();
    assert!(
        counts
            .as_object()
            .unwrap()
            .keys()
            .all(|k| k.contains("Describe") || k.starts_with("sts.")),
        "a dry run only reads: {counts}"
    );

    let out = gc(&["--tag", "stream=testing", "--duration", "0s"]).json();
    assert_eq!(out["image"], json!(old), "{out}");
    assert_eq!(out["snapshot"], json!(old_snap), "{out}");
    let left: Vec<String> = ec2(&standin)
        .describe_images()
        .owners("self")
        .send()
        .await
        .unwrap()
        .images()
        .iter()
        .filter_map(|i| i.image_id().map(str::to_owned))
        .collect();
    assert!(!left.contains(&old) && left.contains(&public) && left.contains(&other));
    let snap = ec2(&standin)
        .describe_snapshots()
        .snapshot_ids(&old_snap)
        .send()
        .await;
    assert!(snap.map(|o| o.snapshots().is_empty()).unwrap_or(true));
}
