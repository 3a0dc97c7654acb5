//! `list-regions` and `delete-image` against the stand-in, read back through EC2.

mod common;

use common::Standin;
use serde_json::json;

const REGION: &str = "us-east-1";

fn ec2(standin: &Standin) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&standin.sdk(REGION))
}

#[tokio::test]
async fn list_regions_prints_sorted_names_as_ore_does() {
    let standin = Standin::start();
    let described = ec2(&standin)
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

/// An AMI on a fresh snapshot, made through the API.
async fn image(standin: &Standin, name: &str) -> (String, String) {
    let ec2 = ec2(standin);
    let vol = ec2
        .create_volume()
        .size(1)
        .availability_zone("us-east-1a")
        .send()
        .await
        .unwrap();
    let snap = ec2
        .create_snapshot()
        .volume_id(vol.volume_id().unwrap())
        .send()
        .await
        .unwrap();
    let snap = snap.snapshot_id().unwrap().to_string();
    let ami = ec2
        .register_image()
        .name(name)
        .architecture("x86_64".into())
        .root_device_name("/dev/xvda")
        .block_device_mappings(
            aws_sdk_ec2::types::BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    aws_sdk_ec2::types::EbsBlockDevice::builder()
                        .snapshot_id(&snap)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    (ami.image_id().unwrap().to_string(), snap)
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
    assert_eq!(run.json(), json!({"image": ami, "snapshot": snap}));
    let ec2 = ec2(&standin);
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
        json!({"image": null, "snapshot": null})
    );

    // An explicit snapshot that is gone while the AMI is there.
    let (ami2, snap2) = image(&standin, "half-gone").await;
    ec2.delete_snapshot()
        .snapshot_id(&snap2)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
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
    assert_eq!(run.json(), json!({"image": ami2, "snapshot": null}));
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
    let ec2 = ec2(&standin);
    let launch = || common::launch_permissions(&ec2, &ami);
    let volume = || common::volume_permissions(&ec2, &snap);

    assert_eq!(
        change("grant").json(),
        json!({"image": ami, "snapshot": snap})
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
    // Granting again changes nothing.
    change("grant").json();
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
