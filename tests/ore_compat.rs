//! A script written for `ore aws` must see the same from imgpub: each test runs the argv a
//! script passes to ore against the stand-in and asserts what ore does (JSON fields, the
//! AMI's attributes read back, exit codes). One test per difference found side by side.

mod common;

use common::{make_raw, signed_by, tag_pairs, tempdir::TempDir, user_with, Standin, ACCOUNT};
use serde_json::{json, Value};

const REGION: &str = "us-east-1";

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
    let out = standin
        .ec2(REGION)
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
    let standin = Standin::initialized();
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
        common::launch_permissions(&standin.ec2(REGION), ami).await,
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
    let standin = Standin::initialized();
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
    let snap = standin
        .ec2(REGION)
        .describe_snapshots()
        .snapshot_ids(&snapshot)
        .send()
        .await
        .unwrap();
    assert_eq!(
        common::tags_but_content(snap.snapshots()[0].tags()),
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
    let standin = Standin::initialized();
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

// 6. At ore's default level a successful run prints its JSON and one summary line on
// stderr (issue #29); `--log-level WARNING` nothing but the JSON.
#[tokio::test]
async fn default_level_prints_the_json_and_one_summary_line() {
    let standin = Standin::initialized();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "quiet.raw", 4, 1, 4);
    let run = ore_upload(&standin, &file, &["--name", "quiet"]);
    run.json();
    assert!(
        run.summary().starts_with("upload: "),
        "stderr at NOTICE: {}",
        run.stderr
    );
    let file = make_raw(dir.path(), "silent.raw", 4, 1, 6);
    let run = ore_upload(
        &standin,
        &file,
        &["--name", "silent", "--log-level", "WARNING"],
    );
    run.json();
    assert_eq!(run.stderr, "", "stderr at WARNING");
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
        common::launch_permissions(&standin.ec2(REGION), &tagged).await,
        ["group:all"]
    );
    assert!(common::launch_permissions(&standin.ec2(REGION), &untagged)
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
        common::launch_permissions(&standin.ec2(REGION), &untagged).await,
        ["group:all"]
    );
    let missing = standin
        .imgpub()
        .args(["aws", "ensure-public", "--region", REGION])
        .args(["--ami", "ami-0000000000000dead"])
        .run();
    // As ore, an AMI that is not there fails the run; as bad input (exit 2, issue #29),
    // named, not as a region to retry.
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(missing
        .error_line()
        .contains("AMI ami-0000000000000dead does not exist"));
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
    let ec2 = standin.ec2(REGION);
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
    let standin = Standin::initialized();
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

// 8. gc does ore's job: it terminates kola's old test instances (tagged CreatedBy=mantle)
// and touches no AMI or snapshot; `--duration` takes Go's forms.

async fn instance_states(standin: &Standin) -> std::collections::BTreeMap<String, String> {
    let out = standin
        .ec2(REGION)
        .describe_instances()
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            let state = i
                .state()
                .and_then(|s| s.name())
                .unwrap()
                .as_str()
                .to_string();
            (i.instance_id().unwrap().to_string(), state)
        })
        .collect()
}

/// Since the last reset the stand-in was only read (a dry run).
fn assert_only_reads(standin: &Standin) {
    let counts = standin.counts();
    assert!(
        counts
            .as_object()
            .unwrap()
            .keys()
            .all(|k| k.contains("Describe") || k.starts_with("sts.")),
        "a dry run only reads: {counts}"
    );
}

/// The JSON lines of a run that succeeded.
fn json_lines(run: &common::Run) -> Vec<Value> {
    assert_eq!(run.code, 0, "{}", run.stderr);
    common::json_lines(run)
}

#[tokio::test]
async fn gc_terminates_old_mantle_instances_and_no_image() {
    let standin = Standin::start();
    let (ami, snap) =
        common::api_image(&standin, REGION, "kola-base", &[("CreatedBy", "mantle")]).await;
    let mantle = [("CreatedBy", "mantle")];
    let old = common::instance(&standin, REGION, &ami, &mantle, 6).await;
    let two_hours = common::instance(&standin, REGION, &ami, &mantle, 2).await;
    let young = common::instance(&standin, REGION, &ami, &mantle, 0).await;
    let untagged = common::instance(&standin, REGION, &ami, &[], 6).await;
    let other_tag = common::instance(&standin, REGION, &ami, &[("CreatedBy", "someone")], 6).await;
    let gc = |extra: &[&str]| {
        standin
            .imgpub()
            .args(["aws", "gc", "--region", REGION])
            .args(extra)
            .run()
    };

    // Go's forms, as ore takes them; a dry run changes nothing.
    standin.reset_requests();
    let planned = common::planned_calls(&gc(&["--duration", "1h30m", "--dry-run"]));
    let mut expected: Vec<(String, String, String)> = [&old, &two_hours]
        .iter()
        .map(|id| {
            let op = "ec2:TerminateInstances".to_string();
            (op, REGION.to_string(), id.to_string())
        })
        .collect();
    expected.sort();
    assert_eq!(planned, expected);
    assert_only_reads(&standin);

    // ore's invocation: the default 5h.
    standin.reset_requests();
    let lines = json_lines(&gc(&[]));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["instance"], json!(old));
    assert_eq!(lines[0]["status"], "terminated");
    let states = instance_states(&standin).await;
    assert_eq!(states[&old], "terminated", "{states:?}");
    for kept in [&two_hours, &young, &untagged, &other_tag] {
        assert_eq!(states[kept], "running", "{kept}: {states:?}");
    }
    let counts = standin.counts();
    for call in ["ec2.DeregisterImage", "ec2.DeleteSnapshot"] {
        assert!(counts.get(call).is_none(), "gc touched an image: {counts}");
    }
    assert_eq!(image(&standin, &ami).await.image_id(), Some(ami.as_str()));
    let snaps = standin
        .ec2(REGION)
        .describe_snapshots()
        .snapshot_ids(&snap)
        .send()
        .await
        .unwrap();
    assert_eq!(snaps.snapshots().len(), 1);

    // A rerun finds nothing more (a terminated instance is not collected again).
    assert_eq!(json_lines(&gc(&[])), Vec::<Value>::new());
    // A bare number is refused with the forms, and a wildcard tag (EC2's filter would
    // match every named instance), before any call.
    standin.reset_requests();
    let run = gc(&["--duration", "90"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("1h30m"), "{}", run.stderr);
    let run = gc(&["--tag", "Name=*"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("wildcard"), "{}", run.stderr);
    assert_eq!(standin.counts(), json!({}));
}

// 8b. Holding exactly `policy --for gc`, a leaked credential terminates only instances
// carrying gc's tag.
#[tokio::test]
async fn a_gc_credential_terminates_only_tagged_instances() {
    let standin = Standin::start();
    let (ami, _) = common::api_image(&standin, REGION, "kola-base", &[]).await;
    let old = common::instance(&standin, REGION, &ami, &[("CreatedBy", "mantle")], 6).await;
    let production = common::instance(&standin, REGION, &ami, &[("Name", "db")], 6).await;
    let nightly = common::instance(
        &standin,
        REGION,
        &ami,
        &[("CreatedBy", "mantle"), ("stream", "x")],
        6,
    )
    .await;
    let policy = standin
        .imgpub()
        .args([
            "aws",
            "policy",
            "--for",
            "gc",
            "--region",
            REGION,
            "--regions",
            REGION,
        ])
        .run()
        .json_document();
    let keys = user_with(&standin, "gc", &policy).await;
    standin.enforce_iam();
    let as_gc = aws_sdk_ec2::Client::new(&standin.sdk_with(REGION, &keys.0, &keys.1));
    let denied = as_gc
        .terminate_instances()
        .instance_ids(&production)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_sdk_ec2::error::ProvideErrorMetadata::code(&denied),
        Some("UnauthorizedOperation"),
        "{denied:?}"
    );
    let as_gc = |extra: &[&str]| {
        signed_by(standin.imgpub(), &keys)
            .args(["aws", "gc", "--region", REGION])
            .args(extra)
            .run()
    };
    // Selected by another tag, the instance still carries kola's: the preflight asks about
    // the tags it has, as IAM will, and the policy allows it.
    let lines = json_lines(&as_gc(&["--tag", "stream=x"]));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["instance"], json!(nightly));
    let lines = json_lines(&as_gc(&[]));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["instance"], json!(old));
    let states = instance_states(&standin).await;
    assert_eq!(
        (states[&old].as_str(), states[&production].as_str()),
        ("terminated", "running")
    );
    assert_eq!(states[&nightly], "terminated");
}

// 8c. Collecting AMIs is asked for by name (`--images`): old tagged AMIs and their
// snapshots go, with --dry-run first.
#[tokio::test]
async fn gc_images_deletes_old_tagged_amis_and_their_snapshots() {
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
            .args(["aws", "gc", "--images", "--region", REGION])
            .args(extra)
            .run()
    };

    // Nothing of that age (and nothing tagged CreatedBy=mantle).
    let run = gc(&["--duration", "5h"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{}", run.stderr);

    standin.reset_requests();
    let run = gc(&["--tag", "stream=testing", "--duration", "0s", "--dry-run"]);
    let call = |op: &str, id: &str| (op.to_string(), REGION.to_string(), id.to_string());
    assert_eq!(
        common::planned_calls(&run),
        vec![
            call("ec2:DeleteSnapshot", &old_snap),
            call("ec2:DeregisterImage", &old)
        ]
    );
    assert_only_reads(&standin);

    let out = gc(&["--tag", "stream=testing", "--duration", "0s"]).json();
    assert_eq!(out["image"], json!(old), "{out}");
    assert_eq!(out["snapshot"], json!(old_snap), "{out}");
    assert_eq!(out["status"], "deleted", "{out}");
    let left: Vec<String> = standin
        .ec2(REGION)
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
    let snap = standin
        .ec2(REGION)
        .describe_snapshots()
        .snapshot_ids(&old_snap)
        .send()
        .await;
    assert!(snap.map(|o| o.snapshots().is_empty()).unwrap_or(true));
    // --include-public belongs to --images.
    let run = standin
        .imgpub()
        .args(["aws", "gc", "--region", REGION, "--include-public"])
        .run();
    assert_eq!(run.code, 2, "{}", run.stderr);
}

// 11. The bucket URL's path decides the key as ore's url.Parse does: no path, `ami-import/`;
// an empty one (`s3://B/`), the bucket's top.
#[tokio::test]
async fn the_bucket_urls_path_decides_the_key_as_ores() {
    let standin = Standin::initialized();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 4, 1, 11);
    for (bucket, name, key) in [
        ("s3://images/", "top", "os.raw"),
        ("s3://images", "default", "ami-import/os.raw"),
        ("s3://images/a/b/", "nested", "a/b/os.raw"),
    ] {
        let out = standin
            .imgpub()
            .args(["aws", "upload", "--region", REGION, "--bucket", bucket])
            .arg_path("--file", &file)
            .args(["--name", name, "--delete-object=false"])
            .run()
            .json();
        assert_eq!(
            out["S3Object"],
            format!("s3://images/{key}"),
            "{bucket}: {out}"
        );
        let head = standin
            .s3(REGION)
            .head_object()
            .bucket("images")
            .key(key)
            .send()
            .await;
        assert!(head.is_ok(), "{bucket}: no object {key}");
    }
}

// 12. copy-image with the source region among the targets prints its line, naming the
// source, as ore's: scripts build their region → AMI map from the lines.
#[tokio::test]
async fn copy_image_prints_the_source_regions_line() {
    let standin = Standin::start();
    let (ami, snap) = common::api_image(&standin, REGION, "os-2", &[]).await;
    let run = standin
        .imgpub()
        .args([
            "aws",
            "copy-image",
            "--region",
            REGION,
            "--image",
            &ami,
            REGION,
        ])
        .run();
    let lines = json_lines(&run);
    assert_eq!(lines, vec![json!({REGION: {"ami": ami, "snapshot": snap}})]);
    let counts = standin.counts();
    assert!(counts.get("ec2.CopyImage").is_none(), "{counts}");
}

// 13. ore's --log-level forms, and its default region.
#[tokio::test]
async fn ores_log_levels_and_default_region_are_taken() {
    let standin = Standin::start();
    for level in ["I", "3", "N", "W", "D"] {
        let run = standin
            .imgpub()
            .args([
                "--log-level",
                level,
                "aws",
                "list-regions",
                "--region",
                REGION,
            ])
            .run();
        assert_eq!(run.code, 0, "{level}: {}", run.stderr);
    }
    // `aws` alone: the help, exit 0, as ore.
    let run = standin.imgpub().args(["aws"]).run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("Usage: imgpub aws"), "{}", run.stdout);
    // No --region and no $AWS_REGION: ore's us-west-2, said at INFO.
    let run = standin.imgpub().args(["aws", "list-regions", "-v"]).run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("ore's default, us-west-2"),
        "{}",
        run.stderr
    );
    let log: Value = serde_json::from_str(&standin.control("GET", "/_standin/log", None)).unwrap();
    let regions: Vec<&str> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["region"].as_str())
        .collect();
    assert!(regions.contains(&"us-west-2"), "{regions:?}");
}

/// What `ore aws upload` calls (read off ore's requests to the stand-in, side by side), as an
/// ore user grants it: docs/ore.md lists it.
fn ores_upload_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": "arn:aws:s3:::images"},
            {"Effect": "Allow",
             "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
             "Resource": "arn:aws:s3:::images/*"},
            {"Effect": "Allow",
             "Action": [
                 "ec2:ImportSnapshot", "ec2:DescribeImportSnapshotTasks", "ec2:DescribeSnapshots",
                 "ec2:DescribeImages", "ec2:CreateTags", "ec2:RegisterImage",
                 "ec2:ModifyImageAttribute", "ec2:ModifySnapshotAttribute",
                 "ec2:DeregisterImage", "ec2:DeleteSnapshot"
             ],
             "Resource": "*"}
        ]
    })
}

// 14. What ore needed is enough: without s3:GetBucketLocation, ListBucketMultipartUploads,
// the block-public-access and encryption reads and iam:SimulatePrincipalPolicy, imgpub
// publishes, silent at the default level, and says once (INFO) what it could not check.
#[tokio::test]
async fn a_publisher_with_only_what_ore_needed_publishes() {
    let standin = Standin::initialized();
    let keys = user_with(&standin, "ore-ci", &ores_upload_policy()).await;
    standin.enforce_iam();
    let dir = TempDir::new();
    let as_ore_ci = |name: &str, extra: &[&str]| {
        let file = make_raw(dir.path(), &format!("{name}.raw"), 4, 1, 14);
        signed_by(standin.imgpub(), &keys)
            .args([
                "aws",
                "upload",
                "--region",
                REGION,
                "--bucket",
                "s3://images/ci",
            ])
            .arg_path("--file", &file)
            .args(["--name", name, "--grant-user", "111122223333", "--public"])
            .args(extra)
            .run()
    };
    let run = as_ore_ci("ore-1", &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.summary().starts_with("upload: "),
        "only the summary at ore's default level: {}",
        run.stderr
    );
    // What could not be checked is said at the default level, in the summary, not warned.
    assert!(run.summary().contains("; not checked: "), "{}", run.stderr);
    let ami = run.json()["HVM"].as_str().unwrap().to_string();
    assert_eq!(
        common::launch_permissions(&standin.ec2(REGION), &ami).await,
        ["group:all", "user:111122223333"]
    );

    let run = as_ore_ci("ore-2", &["-v"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let said: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("not checked"))
        .collect();
    assert_eq!(said.len(), 1, "once: {}", run.stderr);
    for what in [
        "s3:GetBucketLocation",
        "s3:ListBucketMultipartUploads",
        "iam:SimulatePrincipalPolicy",
        "imgpub aws policy",
    ] {
        assert!(said[0].contains(what), "{what}: {}", said[0]);
    }
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
}

// 15. `ore aws copy-image`'s permissions are enough too: without ec2:DescribeRegions the
// named regions are taken as named, and the block-public-access and encryption reads are
// noted, not needed.
#[tokio::test]
async fn a_copier_with_only_what_ore_needed_copies() {
    let standin = Standin::start();
    let (ami, _) = common::api_image(&standin, REGION, "os-3", &[]).await;
    common::make_public(&standin, REGION, &ami).await;
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
            "ec2:DescribeImages", "ec2:DescribeSnapshots", "ec2:DescribeImageAttribute",
            "ec2:DescribeSnapshotAttribute", "ec2:CopyImage", "ec2:CreateTags",
            "ec2:ModifyImageAttribute", "ec2:ModifySnapshotAttribute"
        ]}]
    });
    let keys = user_with(&standin, "ore-copy", &policy).await;
    standin.enforce_iam();
    let run = signed_by(standin.imgpub(), &keys)
        .args([
            "aws",
            "copy-image",
            "--region",
            REGION,
            "--image",
            &ami,
            "eu-west-1",
            "-v",
        ])
        .run();
    let lines = json_lines(&run);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0]["eu-west-1"]["ami"].is_string(), "{lines:?}");
    let said: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("not checked"))
        .collect();
    assert_eq!(said.len(), 1, "once: {}", run.stderr);
    assert!(said[0].contains("ec2:DescribeRegions"), "{}", said[0]);
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
}
