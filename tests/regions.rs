//! `list-regions`, `delete-image`, `grant`/`revoke` and `ensure-public` against the
//! stand-in, read back through EC2.

mod common;

use common::Standin;
use serde_json::json;

const REGION: &str = "us-east-1";

#[tokio::test]
async fn list_regions_prints_sorted_names_as_ore_does() {
    let standin = Standin::start();
    let described = standin
        .ec2(REGION)
        .describe_regions()
        .all_regions(true)
        .send()
        .await
        .unwrap();
    let mut enabled = vec![];
    let mut disabled = vec![];
    for r in described.regions() {
        let name = r.region_name().unwrap().to_string();
        if r.opt_in_status() == Some("not-opted-in") {
            disabled.push(name);
        } else {
            enabled.push(name);
        }
    }
    assert!(!enabled.is_empty() && !disabled.is_empty());
    let mut all: Vec<String> = enabled.iter().chain(&disabled).cloned().collect();
    for list in [&mut enabled, &mut disabled, &mut all] {
        list.sort();
    }
    for (flags, want) in [
        (vec![], &enabled),
        (vec!["--disabled"], &disabled),
        (vec!["--all"], &all),
    ] {
        let run = standin
            .imgpub()
            .args(["aws", "list-regions", "--region", REGION])
            .args(&flags)
            .run();
        assert_eq!(run.code, 0, "{}", run.stderr);
        let got: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(&got, want, "{flags:?}");
    }
}

async fn image(standin: &Standin, name: &str) -> (String, String) {
    common::api_image(standin, REGION, name, &[]).await
}

#[tokio::test]
async fn delete_image_deregisters_and_deletes_the_snapshot() {
    let standin = Standin::start();
    let (ami, snap) = image(&standin, "to-delete").await;
    let run = standin
        .imgpub()
        .args([
            "aws",
            "delete-image",
            "--region",
            REGION,
            "--ami",
            &ami,
            "--snapshot",
            "detectFromAMI",
        ])
        .run();
    assert_eq!(
        run.json(),
        json!({"region": REGION, "image": ami, "snapshot": snap, "status": "deleted"})
    );
    let ec2 = standin.ec2(REGION);
    let left = ec2.describe_images().owners("self").send().await.unwrap();
    assert!(left.images().is_empty());
    assert!(ec2
        .describe_snapshots()
        .snapshot_ids(&snap)
        .send()
        .await
        .is_err());

    // Gone already: an error naming the AMI, unless --allow-missing.
    let again = |extra: &[&str]| {
        standin
            .imgpub()
            .args([
                "aws",
                "delete-image",
                "--region",
                REGION,
                "--ami",
                &ami,
                "--snapshot",
                &snap,
            ])
            .args(extra)
            .run()
    };
    let run = again(&[]);
    assert_eq!(run.code, 2);
    assert!(
        run.error_line()
            .contains(&format!("AMI {ami} does not exist")),
        "{}",
        run.stderr
    );
    assert_eq!(
        again(&["--allow-missing"]).json(),
        json!({"region": REGION, "image": null, "snapshot": null, "missing": [ami, snap], "status": "missing"})
    );

    // An explicit snapshot that is gone while the AMI is there (EC2 does not let an AMI's
    // root snapshot go first, so: one deleted earlier, named by its id).
    let (ami2, root2) = image(&standin, "half-gone").await;
    let snap2 = "snap-0123456789abcdef0".to_string();
    let run = standin
        .imgpub()
        .args([
            "aws",
            "delete-image",
            "--region",
            REGION,
            "--ami",
            &ami2,
            "--snapshot",
            &snap2,
            "--allow-missing",
        ])
        .run();
    assert_eq!(
        run.json(),
        json!({"region": REGION, "image": ami2, "snapshot": null, "kept": [root2], "missing": [snap2], "status": "deleted"})
    );
}

/// The AMIs and snapshots of this account in `region`.
async fn owned(standin: &Standin, region: &str) -> (Vec<String>, Vec<String>) {
    let ec2 = standin.ec2(region);
    let images = ec2.describe_images().owners("self").send().await.unwrap();
    let snapshots = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    (
        images
            .images()
            .iter()
            .map(|i| i.image_id().unwrap().to_string())
            .collect(),
        snapshots
            .snapshots()
            .iter()
            .map(|s| s.snapshot_id().unwrap().to_string())
            .collect(),
    )
}

/// Copies `ami` to the targets; returns copy-regions' stdout.
fn copied(standin: &Standin, ami: &str, targets: &[&str]) -> String {
    let run = standin
        .imgpub()
        .args(["aws", "copy-regions", "--region", REGION, "--image", ami])
        .args(targets)
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.stdout
}

#[tokio::test]
async fn delete_image_removes_a_release_in_every_region() {
    let standin = Standin::start();
    let targets = ["us-west-2", "eu-west-1"];
    let (ami, _) = image(&standin, "os-1").await;
    copied(&standin, &ami, &targets);
    let delete = |extra: &[&str]| {
        standin
            .imgpub()
            .args(["aws", "delete-image", "--region", REGION, "--ami", &ami])
            .args(["--all-regions", "--with-snapshots"])
            .args(extra)
            .run()
    };

    // The dry run names the AMI and its snapshot in each of the three regions.
    standin.reset_requests();
    let run = delete(&["--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let planned = common::planned_calls(&run);
    let ops = |op: &str| {
        let mut regions: Vec<String> = planned
            .iter()
            .filter(|(o, _, _)| o == op)
            .map(|(_, r, _)| r.clone())
            .collect();
        regions.sort();
        regions
    };
    let all = vec!["eu-west-1", "us-east-1", "us-west-2"];
    assert_eq!(ops("ec2:DeregisterImage"), all);
    assert_eq!(ops("ec2:DeleteSnapshot"), all);
    assert_eq!(common::count(&standin.counts(), "ec2.DeregisterImage"), 0);

    // A region that refuses: the other copy goes, the AMI the copies are found by stays
    // (so the rerun finds the rest by its name), and the error names both.
    standin.fault(
        r#"{"action": "DeregisterImage", "region": "eu-west-1", "status": 400, "code": "InvalidParameter", "count": 1000}"#,
    );
    let run = delete(&[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let lines = common::json_lines(&run);
    assert_eq!(lines.len(), 1, "{}", run.stdout);
    assert_eq!(lines[0]["region"], "us-west-2");
    let error = run.error_line();
    assert!(
        error.contains(&format!(
            "{ami} in {REGION} (kept until its copies are gone"
        )),
        "{error}"
    );
    assert!(error.contains("in eu-west-1 ("), "{error}");
    assert_eq!(owned(&standin, "us-west-2").await, (vec![], vec![]));
    assert_eq!(owned(&standin, REGION).await.0, vec![ami.clone()]);
    standin.control("DELETE", "/_standin/faults", None);

    let run = delete(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines = common::json_lines(&run);
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines.iter().all(|l| l["status"] == "deleted"),
        "{}",
        run.stdout
    );
    let enabled = regions_enabled(&standin).await;
    assert_eq!(
        run.summary(),
        format!(
            "delete-image: deregistered 2 AMIs and deleted 2 snapshots in 2 of {enabled} regions"
        )
    );
    for region in [REGION, "us-west-2", "eu-west-1"] {
        assert_eq!(owned(&standin, region).await, (vec![], vec![]), "{region}");
    }
}

/// How many regions the stand-in's account has enabled.
async fn regions_enabled(standin: &Standin) -> usize {
    let out = standin.ec2(REGION).describe_regions().send().await.unwrap();
    out.regions().len()
}

#[tokio::test]
async fn delete_image_takes_copy_regions_output_and_names_what_it_keeps() {
    let standin = Standin::start();
    let (ami, snap) = image(&standin, "os-2").await;
    let dir = common::tempdir::TempDir::new();
    let file = common::write_file(
        dir.path(),
        "copies.json",
        &copied(&standin, &ami, &["us-west-2"]),
    );
    let (copy, copy_snap) = {
        let (images, snapshots) = owned(&standin, "us-west-2").await;
        (images[0].clone(), snapshots[0].clone())
    };
    let run = standin
        .imgpub()
        .args(["aws", "delete-image", "--region", REGION, "--image", &ami])
        .arg_path("--images-from", &file)
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut lines = common::json_lines(&run);
    lines.sort_by_key(|l| l["region"].as_str().unwrap().to_string());
    assert_eq!(
        lines,
        [
            json!({"region": REGION, "image": ami, "snapshot": null, "kept": [snap], "status": "deleted"}),
            json!({"region": "us-west-2", "image": copy, "snapshot": null, "kept": [copy_snap], "status": "deleted"}),
        ]
    );
    assert!(
        run.summary().ends_with("kept their 2 snapshots (without --with-snapshots, as ore): each line's \"kept\" names them"),
        "{}",
        run.summary()
    );
    assert_eq!(
        owned(&standin, "us-west-2").await,
        (vec![], vec![copy_snap])
    );

    // Naming the AMI too is refused before any request.
    standin.reset_requests();
    let run = standin
        .imgpub()
        .args(["aws", "delete-image", "--region", REGION, "--ami", &ami])
        .arg_path("--images-from", &file)
        .run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.error_line().contains("drop --ami"), "{}", run.stderr);
    assert_eq!(standin.counts(), json!({}));
}

#[tokio::test]
async fn grant_and_revoke_round_trip() {
    let standin = Standin::start();
    let (ami, snap) = image(&standin, "shared").await;
    let org = "arn:aws:organizations::123456789012:organization/o-abcdef1234";
    let ou = "arn:aws:organizations::123456789012:ou/o-abcdef1234/ou-ab12-cdef3456";
    let change = |verb: &str| {
        standin
            .imgpub()
            .args([
                "aws",
                verb,
                "--region",
                REGION,
                "--image",
                &ami,
                "--snapshot",
                "--public",
            ])
            .args([
                "--user",
                "111122223333",
                "--organization",
                org,
                "--organizational-unit",
                ou,
            ])
            .run()
    };
    let ec2 = standin.ec2(REGION);
    let launch = || common::launch_permissions(&ec2, &ami);
    let volume = || common::volume_permissions(&ec2, &snap);

    assert_eq!(
        change("grant").json(),
        json!({"region": REGION, "image": ami, "snapshot": snap, "status": "changed"})
    );
    assert_eq!(
        launch().await,
        [
            "group:all".to_string(),
            format!("org:{org}"),
            format!("ou:{ou}"),
            "user:111122223333".to_string()
        ]
    );
    assert_eq!(volume().await, ["group:all", "user:111122223333"]);
    // Granting again changes nothing, and says so.
    assert_eq!(change("grant").json()["status"], "unchanged");
    assert_eq!(launch().await.len(), 4);

    change("revoke").json();
    assert!(launch().await.is_empty(), "{:?}", launch().await);
    assert!(volume().await.is_empty(), "{:?}", volume().await);

    // Bad input is refused before any call.
    let run = standin
        .imgpub()
        .args([
            "aws",
            "grant",
            "--region",
            REGION,
            "--image",
            &ami,
            "--organization",
            "o-123",
        ])
        .run();
    assert_eq!(run.code, 2);
    assert!(run
        .error_line()
        .contains("is not an organizations organization ARN"));
}

/// The JSON lines of a run, parsed.
#[tokio::test]
async fn grant_and_revoke_in_several_regions() {
    let standin = Standin::start();
    let regions = ["us-east-1", "eu-west-1", "ap-southeast-2"];
    let mut images = vec![];
    for region in regions {
        images.push(common::api_image(&standin, region, "multi", &[]).await);
    }
    // The first by --image, the others as copy-regions printed them.
    let dir = common::tempdir::TempDir::new();
    let copied: String = regions[1..]
        .iter()
        .zip(&images[1..])
        .map(|(r, (ami, snap))| format!("{}\n", json!({*r: {"ami": ami, "snapshot": snap}})))
        .collect();
    let from = common::write_file(dir.path(), "copied.json", &copied);
    let change = |verb: &str, extra: &[&str]| {
        standin
            .imgpub()
            .args(["aws", verb, "--region", REGION, "--image", &images[0].0])
            .arg_path("--images-from", &from)
            .args(["--public", "--snapshot"])
            .args(extra)
            .run()
    };
    let run = change("grant", &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut got = common::json_lines(&run);
    got.sort_by_key(|v| v["region"].as_str().unwrap().to_string());
    let mut want: Vec<_> = regions
        .iter()
        .zip(&images)
        .map(|(r, (ami, snap))| json!({"region": r, "image": ami, "snapshot": snap, "status": "changed"}))
        .collect();
    want.sort_by_key(|v| v["region"].as_str().unwrap().to_string());
    assert_eq!(got, want);
    for (region, (ami, snap)) in regions.iter().zip(&images) {
        let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(region));
        assert_eq!(common::launch_permissions(&ec2, ami).await, ["group:all"]);
        assert_eq!(common::volume_permissions(&ec2, snap).await, ["group:all"]);
    }

    // One AMI that is not there: the others still change, and it is named.
    let run = change("revoke", &["--image", "eu-central-1=ami-000000000deadbeef"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(common::json_lines(&run).len(), 3, "{}", run.stdout);
    let err = run.error_line();
    assert!(
        err.contains("1 failed: ami-000000000deadbeef in eu-central-1"),
        "{err}"
    );
    for (region, (ami, snap)) in regions.iter().zip(&images) {
        let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(region));
        assert!(common::launch_permissions(&ec2, ami).await.is_empty());
        assert!(common::volume_permissions(&ec2, snap).await.is_empty());
    }

    // Bad input names itself before any call.
    standin.reset_requests();
    for (extra, message) in [
        (vec!["--image", "eu-west-1=snap-1"], "is not an AMI id"),
        (vec!["--image", "narnia-1=ami-1"], "is not a region name"),
    ] {
        let run = standin
            .imgpub()
            .args(["aws", "grant", "--region", REGION, "--public"])
            .args(&extra)
            .run();
        assert_eq!(run.code, 2, "{extra:?}");
        assert!(run.error_line().contains(message), "{}", run.stderr);
    }
    let run = standin
        .imgpub()
        .args(["aws", "grant", "--region", REGION, "--image", &images[0].0])
        .run();
    assert_eq!(run.code, 2);
    assert!(run.error_line().contains("name whom to change"));
    assert_eq!(standin.counts(), json!({}));
}

#[tokio::test]
async fn ensure_public_republishes_tagged_amis_that_went_private() {
    let standin = Standin::start();
    let stable = [("stream", "stable")];
    // (region, name, tags, public image, public snapshot)
    let cases = [
        ("us-east-1", "still-public", &stable[..], true, true),
        ("us-east-1", "went-private", &stable[..], false, false),
        (
            "us-east-1",
            "not-for-release",
            &[("stream", "testing")][..],
            false,
            false,
        ),
        ("eu-west-1", "snapshot-private", &stable[..], true, false),
        ("ap-southeast-2", "elsewhere", &stable[..], false, false),
    ];
    let mut made = vec![];
    for (region, name, tags, public_image, public_snapshot) in cases {
        let (ami, snap) = common::api_image(&standin, region, name, tags).await;
        if public_image {
            common::make_public(&standin, region, &ami).await;
        }
        if public_snapshot {
            let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(region));
            ec2.modify_snapshot_attribute()
                .snapshot_id(&snap)
                .attribute("createVolumePermission".into())
                .operation_type("add".into())
                .group_names("all")
                .send()
                .await
                .unwrap();
        }
        made.push((region, name, ami, snap));
    }
    let ensure = |extra: &[&str]| {
        standin
            .imgpub()
            .args([
                "aws",
                "ensure-public",
                "--region",
                REGION,
                "--tag",
                "stream=stable",
            ])
            .args(["us-east-1", "eu-west-1"])
            .args(extra)
            .run()
    };
    let summary = |run: &common::Run| {
        assert_eq!(run.code, 0, "{}", run.stderr);
        let mut v: Vec<(String, String, String)> = common::json_lines(run)
            .iter()
            .map(|l| {
                (
                    l["region"].as_str().unwrap().to_string(),
                    l["name"].as_str().unwrap().to_string(),
                    format!("{} {}", l["fixed"], l["status"]),
                )
            })
            .collect();
        v.sort();
        v
    };
    let want = vec![
        (
            "eu-west-1".to_string(),
            "snapshot-private".to_string(),
            r#"["snapshot"] "changed""#.to_string(),
        ),
        (
            "us-east-1".to_string(),
            "went-private".to_string(),
            r#"["image","snapshot"] "changed""#.to_string(),
        ),
    ];

    // A dry run names the calls that would make them public, and changes nothing.
    let id = |name: &str, snapshot: bool| {
        let (region, _, ami, snap) = made.iter().find(|m| m.1 == name).unwrap();
        let id = if snapshot { snap } else { ami };
        (region.to_string(), id.clone())
    };
    let mut want_calls: Vec<(String, String, String)> = [
        ("ec2:ModifySnapshotAttribute", id("snapshot-private", true)),
        ("ec2:ModifyImageAttribute", id("went-private", false)),
        ("ec2:ModifySnapshotAttribute", id("went-private", true)),
    ]
    .into_iter()
    .map(|(op, (region, id))| (op.to_string(), region, id))
    .collect();
    want_calls.sort();
    standin.reset_requests();
    assert_eq!(common::planned_calls(&ensure(&["--dry-run"])), want_calls);
    let counts = standin.counts();
    assert!(counts.get("ec2.ModifyImageAttribute").is_none(), "{counts}");
    assert!(
        counts.get("ec2.ModifySnapshotAttribute").is_none(),
        "{counts}"
    );

    assert_eq!(summary(&ensure(&[])), want);
    for (region, name, ami, snap) in &made {
        let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(region));
        let fixed = ["still-public", "went-private", "snapshot-private"].contains(name);
        let (launch, volume) = if fixed {
            (vec!["group:all".to_string()], vec!["group:all".to_string()])
        } else {
            (vec![], vec![])
        };
        assert_eq!(
            common::launch_permissions(&ec2, ami).await,
            launch,
            "{name}"
        );
        assert_eq!(
            common::volume_permissions(&ec2, snap).await,
            volume,
            "{name}"
        );
    }
    // Nothing left to fix.
    assert!(summary(&ensure(&[])).is_empty());

    // Without --tag, ore's default tag (production=true): none of these carry it.
    let run = standin
        .imgpub()
        .args(["aws", "ensure-public", "--region", REGION])
        .run();
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{}", run.stderr);
}

/// AMIs listed region after region in any order: each is deleted once.
#[tokio::test]
async fn delete_image_of_interleaved_regions_deletes_each_once() {
    let standin = Standin::start();
    let west = "us-west-2";
    let (a, _) = common::api_image(&standin, west, "img-a", &[]).await;
    let (b, _) = image(&standin, "img-b").await;
    let (c, _) = common::api_image(&standin, west, "img-c", &[]).await;
    let run = standin
        .imgpub()
        .args([
            "aws",
            "delete-image",
            "--region",
            REGION,
            "--with-snapshots",
        ])
        .args(["--image", &format!("{west}={a}"), "--image", &b])
        .args(["--image", &format!("{west}={c}")])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut deleted: Vec<String> = common::json_lines(&run)
        .iter()
        .map(|l| l["image"].as_str().unwrap().to_string())
        .collect();
    deleted.sort();
    let mut want = vec![a, b, c];
    want.sort();
    assert_eq!(deleted, want);
    assert_eq!(common::count(&standin.counts(), "ec2.DeregisterImage"), 3);
    assert_eq!(
        run.summary(),
        "delete-image: deregistered 3 AMIs and deleted 3 snapshots in 2 of 2 regions"
    );
    for region in [REGION, west] {
        assert_eq!(owned(&standin, region).await, (vec![], vec![]), "{region}");
    }
}
