//! `imgpub aws copy-regions` against the stand-in: copies that stay pending for a while, one
//! region made to fail, results read back in every region.

mod common;

use common::{make_raw, tempdir::TempDir, Standin};
use serde_json::Value;

const SOURCE: &str = "us-east-1";
const TARGETS: [&str; 4] = ["us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2"];

/// A public, tagged AMI in the source region, made by `imgpub aws upload`.
fn source_ami(standin: &Standin) -> String {
    standin.initialize(SOURCE, "images");
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "os.raw", 16, 4, 71);
    let out = standin
        .imgpub()
        .args([
            "aws",
            "upload",
            "--region",
            SOURCE,
            "--bucket",
            "s3://images/ci",
        ])
        .arg_path("--file", &raw)
        .args([
            "--name",
            "os-1.0",
            "--public",
            "--grant-user",
            "111122223333",
        ])
        .args(["--tags", "os=demo,stream=stable"])
        .run()
        .json();
    out["HVM"].as_str().unwrap().to_string()
}

fn copy(standin: &Standin, ami: &str, regions: &[&str]) -> common::Run {
    standin
        .imgpub()
        .args([
            "aws",
            "copy-image",
            "--region",
            SOURCE,
            "--image",
            ami,
            "--concurrency",
            "4",
        ])
        .args(regions)
        .run()
}

/// The JSON lines of a run: region → (ami, snapshot).
fn lines(run: &common::Run) -> Vec<(String, String, String)> {
    run.stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            let (region, ids) = v.as_object().unwrap().iter().next().unwrap();
            (
                region.clone(),
                ids["ami"].as_str().unwrap().to_string(),
                ids["snapshot"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn check_copy(standin: &Standin, region: &str, ami: &str, snap: &str) {
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(region));
    let image = ec2.describe_images().image_ids(ami).send().await.unwrap();
    let image = &image.images()[0];
    assert_eq!(image.name(), Some("os-1.0"), "{region}");
    assert_eq!(image.state().unwrap().as_str(), "available", "{region}");
    // The source's tags, and imgpub's: the copy is imgpub's work.
    assert_eq!(
        common::tag_pairs(image.tags()),
        [
            ("Name".into(), "os-1.0".into()),
            ("imgpub:managed".into(), "true".into()),
            ("os".into(), "demo".into()),
            ("stream".into(), "stable".into())
        ],
        "{region}"
    );
    assert_eq!(
        image.block_device_mappings()[0]
            .ebs()
            .unwrap()
            .snapshot_id(),
        Some(snap)
    );
    assert_eq!(
        common::launch_permissions(&ec2, ami).await,
        ["group:all", "user:111122223333"],
        "{region}"
    );
    assert_eq!(
        common::volume_permissions(&ec2, snap).await,
        ["group:all"],
        "{region}"
    );
    let snaps = ec2
        .describe_snapshots()
        .snapshot_ids(snap)
        .send()
        .await
        .unwrap();
    // The file's identity (imgpub:content) comes with the copy.
    assert_eq!(
        common::tags_but_content(snaps.snapshots()[0].tags()),
        [
            ("Name".into(), "os-1.0".into()),
            ("imgpub:managed".into(), "true".into()),
            ("os".into(), "demo".into()),
            ("stream".into(), "stable".into())
        ],
        "{region}"
    );
}

#[tokio::test]
async fn public_tagged_ami_reaches_four_regions_in_parallel() {
    let standin = Standin::start();
    let ami = source_ami(&standin);
    standin.control("POST", "/_standin/config", Some(r#"{"copy_seconds": 4.0}"#));

    standin.reset_requests();
    let run = copy(&standin, &ami, &TARGETS);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Four copies side by side: every CopyImage was made before the first copy ended (one
    // after another, each would wait for the one before), as the stand-in's log shows.
    let log: Value = serde_json::from_str(&standin.control("GET", "/_standin/log", None)).unwrap();
    let copies: Vec<f64> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["call"] == "ec2.CopyImage")
        .map(|r| r["t"].as_f64().unwrap())
        .collect();
    assert_eq!(copies.len(), TARGETS.len(), "{log}");
    let first_end = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "copy-ends")
        .map(|e| e["t"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert!(
        copies.iter().all(|&t| t < first_end),
        "copies at {copies:?}, the first ended at {first_end}"
    );
    let done = lines(&run);
    let mut regions: Vec<&str> = done.iter().map(|(r, _, _)| r.as_str()).collect();
    regions.sort();
    let mut want = TARGETS.to_vec();
    want.sort();
    assert_eq!(regions, want);
    for (region, ami, snap) in &done {
        check_copy(&standin, region, ami, snap).await;
    }
}

#[tokio::test]
async fn a_failed_region_is_named_and_a_rerun_copies_only_it() {
    let standin = Standin::start();
    let ami = source_ami(&standin);
    standin.control(
        "POST",
        "/_standin/config",
        Some(r#"{"copy_seconds": 1, "copy_fail_regions": ["eu-west-1"]}"#),
    );
    let run = copy(&standin, &ami, &TARGETS);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let done = lines(&run);
    assert_eq!(done.len(), 3, "{}", run.stdout);
    assert!(done.iter().all(|(r, _, _)| r != "eu-west-1"));
    let err = run.error_line();
    assert!(
        err.contains("1 failed: eu-west-1") && err.contains("AWS ended the copy"),
        "{err}"
    );

    standin.control(
        "POST",
        "/_standin/config",
        Some(r#"{"copy_fail_regions": []}"#),
    );
    standin.reset_requests();
    let rerun = copy(&standin, &ami, &TARGETS);
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    let again = lines(&rerun);
    assert_eq!(again.len(), 4);
    assert_eq!(standin.counts()["ec2.CopyImage"], 1, "{}", standin.counts());
    for (region, ami, snap) in &done {
        assert!(
            again.contains(&(region.clone(), ami.clone(), snap.clone())),
            "{region} changed"
        );
    }
    let (_, eu_ami, eu_snap) = again.iter().find(|(r, _, _)| r == "eu-west-1").unwrap();
    check_copy(&standin, "eu-west-1", eu_ami, eu_snap).await;
}

#[tokio::test]
async fn a_region_not_enabled_is_refused_before_any_copy() {
    let standin = Standin::start();
    let ami = source_ami(&standin);
    standin.reset_requests();
    let run = copy(&standin, &ami, &["us-west-2", "ap-east-1"]);
    assert_eq!(run.code, 2);
    assert!(run
        .error_line()
        .contains("region ap-east-1 is not enabled for this account"));
    assert!(standin.counts().get("ec2.CopyImage").is_none());
}

#[tokio::test]
async fn all_regions_copies_to_every_enabled_region_and_skips_the_others() {
    let standin = Standin::start();
    let ami = source_ami(&standin);
    standin.control("POST", "/_standin/config", Some(r#"{"copy_seconds": 0.5}"#));
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(SOURCE));
    let regions = ec2
        .describe_regions()
        .all_regions(true)
        .send()
        .await
        .unwrap();
    let (mut enabled, mut disabled) = (vec![], vec![]);
    for r in regions.regions() {
        let name = r.region_name().unwrap().to_string();
        // The source region is among them: its line names the source AMI itself.
        if r.opt_in_status() == Some("not-opted-in") {
            disabled.push(name);
        } else {
            enabled.push(name);
        }
    }
    assert!(!disabled.is_empty());
    enabled.sort();

    let run = standin
        .imgpub()
        .args(["aws", "copy-regions", "--region", SOURCE, "--image", &ami])
        .args(["--all-regions", "--concurrency", "16", "-v"])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut copied: Vec<String> = lines(&run).into_iter().map(|(r, _, _)| r).collect();
    copied.sort();
    assert_eq!(copied, enabled);
    assert!(
        run.stderr
            .contains("skipping regions not enabled for this account"),
        "{}",
        run.stderr
    );
    for region in &disabled {
        assert!(run.stderr.contains(region.as_str()), "{region} not named");
        let there = aws_sdk_ec2::Client::new(&standin.sdk(region))
            .describe_images()
            .owners("self")
            .send()
            .await
            .unwrap();
        assert!(there.images().is_empty(), "copied to {region}");
    }
}

/// A copy deleted since (delete-image) is copied again: CopyImage's token still names the
/// deregistered copy, which must not be waited for until the timeout.
#[tokio::test]
async fn a_copy_deleted_since_is_copied_again() {
    let standin = Standin::start();
    let ami = source_ami(&standin);
    let first = copy(&standin, &ami, &["eu-west-1"]);
    let (_, old_ami, _) = lines(&first).pop().unwrap();
    let deleted = standin
        .imgpub()
        .args([
            "aws",
            "delete-image",
            "--region",
            "eu-west-1",
            "--ami",
            &old_ami,
        ])
        .args(["--snapshot", "detectFromAMI"])
        .run();
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);

    let again = copy(&standin, &ami, &["eu-west-1", "--timeout", "60s", "-v"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let (region, new_ami, new_snap) = lines(&again).pop().unwrap();
    assert_ne!(new_ami, old_ami);
    assert!(
        again.stderr.contains("is deregistered; copying again"),
        "{}",
        again.stderr
    );
    check_copy(&standin, &region, &new_ami, &new_snap).await;
    // A rerun finds it by name: no third copy.
    standin.reset_requests();
    let rerun = copy(&standin, &ami, &["eu-west-1"]);
    assert_eq!(lines(&rerun).pop().unwrap().1, new_ami);
    assert_eq!(standin.counts()["ec2.CopyImage"], serde_json::Value::Null);
}

/// A target region that encrypts every new snapshot by default would make an encrypted copy,
/// which cannot be public: a public source is refused there before any copy, naming the
/// region. A private AMI copies, and its copy is encrypted, as AWS makes it.
#[tokio::test]
async fn copies_into_a_region_that_encrypts_by_default() {
    let standin = Standin::start();
    let target = "eu-west-1";
    let ec2 = |region: &str| aws_sdk_ec2::Client::new(&standin.sdk(region));
    ec2(target)
        .enable_ebs_encryption_by_default()
        .send()
        .await
        .unwrap();
    let (private, _) = common::api_image(&standin, SOURCE, "os-private", &[]).await;
    let (public, _) = common::api_image(&standin, SOURCE, "os-public", &[]).await;
    common::make_public(&standin, SOURCE, &public).await;

    standin.reset_requests();
    let run = copy(&standin, &public, &[target]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("encrypts every new EBS snapshot"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(target), "{}", run.stderr);
    assert_eq!(standin.counts()["ec2.CopyImage"], Value::Null);

    let run = copy(&standin, &private, &[target]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line: Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    let snapshot = line[target]["snapshot"].as_str().unwrap();
    assert_eq!(
        common::snapshot_encrypted(&ec2(target), snapshot).await,
        Some(true)
    );
    // A source that is not encrypted leaves no key unchecked.
    assert!(!run.summary().contains("kms:"), "{}", run.stderr);
}

/// An encrypted source's key may be a customer managed one, whose kms: actions CopyImage
/// takes on the caller's behalf, or AWS's own, which needs none: which, only KMS knows, so
/// the run copies and says the key was not checked.
#[tokio::test]
async fn an_encrypted_source_copies_and_says_its_key_was_not_checked() {
    let standin = Standin::start();
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(SOURCE));
    let (ami, snapshot) = common::api_image_of(&standin, SOURCE, "os-encrypted", &[], true).await;
    assert_eq!(
        common::snapshot_encrypted(&ec2, &snapshot).await,
        Some(true)
    );

    let run = copy(&standin, &ami, &["eu-west-1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary = run.summary();
    assert!(
        summary.contains("not checked: ")
            && summary.contains("the kms: actions CopyImage takes on the KMS key that os-encrypted's snapshot is encrypted with"),
        "{}",
        run.stderr
    );
}
