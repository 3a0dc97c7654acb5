//! Every command says what it did in one line on stderr at ore's default level: what it
//! created, reused or changed, or that there was nothing to do and what it looked at
//! (issue #29). `--log-level WARNING` keeps stderr silent for scripts that want it.

mod common;

use common::{make_raw, tempdir::TempDir, Standin};

const REGION: &str = "us-east-1";

fn starts(line: &str, prefix: &str) {
    assert!(line.starts_with(prefix), "{line:?} should start {prefix:?}");
}

fn has(line: &str, part: &str) {
    assert!(line.contains(part), "{line:?} should name {part:?}");
}

#[tokio::test]
async fn upload_says_what_it_made_then_what_it_reused_and_changed() {
    let standin = Standin::initialized();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 4, 1, 61);
    let upload = |extra: &[&str]| {
        standin
            .upload_cmd(REGION, &file)
            .args(["--name", "os-1"])
            .args(extra)
            .run()
    };

    let made = upload(&[]);
    let ami = made.json()["HVM"].as_str().unwrap().to_string();
    let line = made.summary();
    starts(&line, "upload: imported snapshot snap-");
    has(&line, &format!("registered {ami} named os-1"));
    has(&line, REGION);

    // A finished release: the dry run has nothing to do, and the rerun changes nothing.
    let dry = upload(&["--dry-run"]);
    assert_eq!(dry.stdout, "", "no call would change anything");
    assert_eq!(dry.summary(), "dry run: nothing to do; all is in place");
    standin.reset_requests();
    let again = upload(&[]);
    assert_eq!(again.json()["HVM"], made.json()["HVM"]);
    let line = again.summary();
    starts(&line, "upload: reused snapshot snap-");
    has(
        &line,
        &format!("reused {ami} named os-1, registered as asked"),
    );
    has(&line, "nothing changed");
    let counts = standin.counts();
    for write in [
        "ec2.CreateTags",
        "ec2.ModifyImageAttribute",
        "ec2.ModifySnapshotAttribute",
        "s3.DeleteObject",
    ] {
        assert_eq!(common::count(&counts, write), 0, "{write}: {counts}");
    }

    // Tags and sharing change in place: the same AMI, and the line says what was set.
    let changed = upload(&["--tags", "stream=next", "--grant-user", "111122223333"]);
    assert_eq!(changed.json()["HVM"], made.json()["HVM"]);
    let line = changed.summary();
    has(&line, &format!("reused {ami}"));
    has(&line, "tagged stream=next");
    has(&line, "shared with accounts 111122223333");
    let ec2 = standin.ec2(REGION);
    let image = ec2.describe_images().image_ids(&ami).send().await.unwrap();
    let tags = common::tag_pairs(image.images()[0].tags());
    assert!(tags.contains(&("stream".into(), "next".into())), "{tags:?}");
    assert_eq!(
        common::launch_permissions(&ec2, &ami).await,
        ["user:111122223333"]
    );

    // A script that wants stderr silent says so with the level.
    let quiet = upload(&["--log-level", "WARNING"]);
    quiet.json();
    assert_eq!(quiet.stderr, "");
}

/// Issue #29, item 4: a fully published release (public, shared, tags), rerun as it was
/// made: its dry run lists no call, and the rerun changes nothing (sharing read back with
/// DescribeImageAttribute and DescribeSnapshotAttribute, tags with the lookups).
#[tokio::test]
async fn a_finished_public_release_reruns_without_a_change() {
    let standin = Standin::initialized();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "pub.raw", 4, 1, 63);
    let flags = [
        "--name",
        "pub-1",
        "--public",
        "--grant-user",
        "111122223333",
        "--grant-user-snapshot",
        "111122223333",
        "--tags",
        "stream=stable",
    ];
    let upload = |extra: &[&str]| {
        standin
            .upload_cmd(REGION, &file)
            .args(flags)
            .args(extra)
            .run()
    };
    let made = upload(&[]);
    made.json();
    has(&made.summary(), "shared with everyone (public)");

    let dry = upload(&["--dry-run"]);
    assert_eq!(dry.stdout, "", "no call would change anything");
    assert_eq!(dry.summary(), "dry run: nothing to do; all is in place");

    standin.reset_requests();
    let again = upload(&[]);
    assert_eq!(again.json()["HVM"], made.json()["HVM"]);
    has(&again.summary(), "nothing changed");
    let counts = standin.counts();
    for write in [
        "ec2.CreateTags",
        "ec2.ModifyImageAttribute",
        "ec2.ModifySnapshotAttribute",
        "s3.DeleteObject",
    ] {
        assert_eq!(common::count(&counts, write), 0, "{write}: {counts}");
    }
}

#[tokio::test]
async fn nothing_to_do_names_what_was_looked_at() {
    let standin = Standin::initialized();
    let run = |args: &[&str]| {
        standin
            .imgpub()
            .args(["aws"])
            .args(args)
            .args(["--region", REGION])
            .run()
    };

    // A typo in a tag matches nothing: exit 0, no JSON, and the line says so.
    let typo = run(&["ensure-public", "--tag", "stream=stabel"]);
    assert_eq!(typo.stdout, "");
    assert_eq!(
        typo.summary(),
        "ensure-public: nothing to do: no available AMIs tagged stream=stabel in us-east-1"
    );

    let gc = run(&["gc"]);
    assert_eq!(gc.stdout, "");
    assert_eq!(
        gc.summary(),
        "gc: nothing to do: no instances tagged CreatedBy=mantle older than 5h in us-east-1"
    );

    let (ami, _) = common::api_image(&standin, REGION, "only-here", &[]).await;
    let copy = run(&["copy-regions", "--image", &ami, REGION]);
    assert_eq!(
        copy.summary(),
        format!(
            "copy-regions: nothing to do: no region to copy {ami} ({REGION}) to besides its own"
        )
    );

    let init = run(&["initialize", "--bucket", "images", "--dry-run"]);
    assert_eq!(init.stdout, "");
    assert_eq!(init.summary(), "dry run: nothing to do; all is in place");

    let init = run(&["initialize", "--bucket", "images"]);
    starts(
        &init.summary(),
        "initialize: nothing to do: bucket images and role vmimport in us-east-1",
    );

    let regions = run(&["list-regions"]);
    let listed = regions.stdout.lines().count();
    assert!(listed > 1, "{}", regions.stdout);
    assert_eq!(
        regions.summary(),
        format!("list-regions: {listed} enabled regions")
    );

    let policy = run(&["policy", "--for", "upload", "--bucket", "s3://images/ci"]);
    starts(&policy.summary(), "policy: ");
    has(&policy.summary(), "nothing was changed in AWS");
}

#[tokio::test]
async fn delete_image_names_the_snapshot_it_kept() {
    let standin = Standin::initialized();
    let (ami, snap) = common::api_image(&standin, REGION, "old", &[]).await;
    let run = standin
        .imgpub()
        .args(["aws", "delete-image", "--region", REGION, "--ami", &ami])
        .run();
    assert_eq!(
        run.summary(),
        format!(
            "delete-image: deregistered {ami} in {REGION}; kept its snapshot {snap} (without --snapshot, as ore): delete it with `imgpub aws delete-image --region {REGION} --snapshot {snap}`"
        )
    );
    // The line's command does what it says.
    let rest = standin
        .imgpub()
        .args([
            "aws",
            "delete-image",
            "--region",
            REGION,
            "--snapshot",
            &snap,
        ])
        .run();
    assert_eq!(
        rest.summary(),
        format!("delete-image: deleted snapshot {snap} in {REGION}")
    );
}

#[tokio::test]
async fn grant_publish_ssm_and_upload_object_say_what_changed() {
    let standin = Standin::initialized();
    let (ami, _) = common::api_image(&standin, REGION, "shared", &[]).await;
    let imgpub = |args: &[&str]| {
        standin
            .imgpub()
            .args(["aws"])
            .args(args)
            .args(["--region", REGION])
            .run()
    };

    let grant = imgpub(&["grant", "--image", &ami, "--user", "111122223333"]);
    starts(
        &grant.summary(),
        "granted launch permission to accounts 111122223333 on 1 AMIs",
    );
    assert!(
        grant.stdout.contains(r#""status":"changed""#),
        "{}",
        grant.stdout
    );
    // Again: read back, nothing to change, nothing sent.
    standin.reset_requests();
    let again = imgpub(&["grant", "--image", &ami, "--user", "111122223333"]);
    assert_eq!(
        again.summary(),
        "grant: nothing to do: the 1 AMIs already were as asked for accounts 111122223333"
    );
    assert!(
        again.stdout.contains(r#""status":"unchanged""#),
        "{}",
        again.stdout
    );
    assert_eq!(
        common::count(&standin.counts(), "ec2.ModifyImageAttribute"),
        0
    );
    let revoke = |_: ()| imgpub(&["revoke", "--image", &ami, "--user", "111122223333"]);
    starts(
        &revoke(()).summary(),
        "revoked launch permission from accounts 111122223333 on 1 AMIs",
    );
    assert_eq!(
        revoke(()).summary(),
        "revoke: nothing to do: the 1 AMIs already were as asked for accounts 111122223333"
    );

    let ssm = |args: &[&str]| {
        imgpub(
            &[
                &["publish-ssm", "--image", &ami, "--parameter", "/os/latest"][..],
                args,
            ]
            .concat(),
        )
    };
    assert_eq!(
        ssm(&[]).summary(),
        "publish-ssm: created 1 and updated 0 parameters in 1 regions; 0 already held their AMIs"
    );
    let again = ssm(&[]);
    assert!(!again.stdout.contains("version"), "{}", again.stdout);
    assert_eq!(
        again.summary(),
        "publish-ssm: nothing to do: the 1 parameters in 1 regions already hold their AMIs"
    );

    let dir = TempDir::new();
    let file = make_raw(dir.path(), "blob.raw", 6, 1, 62);
    let object = || {
        standin
            .imgpub()
            .args([
                "aws",
                "upload-object",
                "--region",
                REGION,
                "--bucket",
                "s3://images/objects",
            ])
            .arg_path("--file", &file)
            .run()
    };
    let first = object().summary();
    starts(
        &first,
        "upload-object: uploaded s3://images/objects/blob.raw (6.0 MiB in ",
    );
    assert_eq!(
        object().summary(),
        "upload-object: s3://images/objects/blob.raw already held this file (6.0 MiB): nothing sent"
    );
}

/// A copy-regions rerun that only gives the copies the source's new tags says that, not
/// "copied to 0 regions".
#[tokio::test]
async fn copy_regions_that_only_retags_says_so() {
    let standin = Standin::initialized();
    let (ami, _) = common::api_image(&standin, REGION, "retag", &[]).await;
    let copy = || {
        let run = standin
            .imgpub()
            .args(["aws", "copy-regions", "--region", REGION, "--image", &ami])
            .args(["us-west-2"])
            .run();
        assert_eq!(run.code, 0, "{}", run.stderr);
        run
    };
    copy();
    let tag = aws_sdk_ec2::types::Tag::builder()
        .key("stream")
        .value("next")
        .build();
    standin
        .ec2(REGION)
        .create_tags()
        .resources(&ami)
        .tags(tag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        copy().summary(),
        format!("copy-regions: gave 1 of the 1 regions that have {ami} ({REGION}) its tags, deprecation or sharing again")
    );
}

/// The summary of each command that changes something, for the change itself: what was
/// made, copied, made public, terminated, and for whom.
#[tokio::test]
async fn changes_are_summed_up_by_what_they_did() {
    let standin = Standin::start();
    let run = |args: &[&str]| {
        let run = standin
            .imgpub()
            .args(["aws"])
            .args(args)
            .args(["--region", REGION])
            .run();
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        run.summary()
    };
    assert_eq!(
        run(&["initialize", "--bucket", "images"]),
        "initialize: bucket images and role vmimport in us-east-1: created bucket, role, trust-policy, role-policy, lifecycle"
    );

    let (ami, _) = common::api_image(&standin, REGION, "summed", &[("production", "true")]).await;
    assert_eq!(
        run(&["copy-regions", "--image", &ami, "us-west-2"]),
        format!("copy-regions: copied {ami} ({REGION}) to 1 regions; 0 already had it")
    );
    assert_eq!(
        run(&["ensure-public", "--ami", &ami]),
        format!("ensure-public: made 1 of the 1 available AMI {ami} in {REGION} public")
    );

    common::instance(&standin, REGION, &ami, &[("CreatedBy", "mantle")], 6).await;
    assert_eq!(
        run(&["gc"]),
        "gc: terminated 1 instances tagged CreatedBy=mantle older than 5h in us-east-1"
    );

    let made = run(&[
        "create-publisher",
        "--role",
        "summed-publisher",
        "--trust-account",
        common::ACCOUNT,
        "--generate-external-id",
        "--for",
        "upload",
        "--bucket",
        "images/ci",
    ]);
    assert_eq!(
        made,
        "create-publisher: role summed-publisher: created or changed role, trust-policy, role-policy, external-id"
    );
}
