//! Each action of each printed policy is needed, as AWS would judge it: with `--preflight
//! off` (imgpub's own check out of the way), a publisher holding the printed policy with one
//! action taken out of one statement runs the command against the enforcing stand-in in a
//! fresh account. The run fails and its error names that action, unless the case lists the
//! action as one this run does not reach (with the situation that does need it) or as one
//! the run goes on without, saying what it could not check. The whole policy runs green.
//!
//! Every `--for` is covered, with the flags that change the policy (`--public`,
//! `--share-with`, `--via ebs-direct`, `--kms-key`, `--ssm-prefix`, `--gc-tag`'s default),
//! and the admin's `initialize`.

mod common;

use std::path::Path;

use common::{make_raw, signed_by, tempdir::TempDir, user_with, Run, Standin, ACCOUNT};
use serde_json::{json, Value};

const REGION: &str = "us-east-1";
const TARGET: &str = "us-west-2";
const SHARE_WITH: &str = "111122223333";

/// What taking one action out of one statement does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Without {
    /// The run fails, naming the action.
    Fails,
    /// The run goes on and says it could not check something (a "not checked" line).
    Degrades,
    /// This run never makes the call; the reason names the situation that does.
    Unused(&'static str),
}

/// One command under one printed policy.
struct Case {
    name: &'static str,
    /// `imgpub aws policy` flags.
    policy: Vec<String>,
    /// The statement and action that this run does not need, and how it goes without.
    not_needed: Vec<(&'static str, &'static str, Without)>,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The policy with `action` taken out of statement `sid` (the statement dropped when empty).
fn without_action(document: &Value, sid: &str, action: &str) -> Value {
    let mut doc = document.clone();
    let statements = doc["Statement"].as_array_mut().unwrap();
    for statement in statements.iter_mut() {
        if statement["Sid"] == sid {
            let actions = statement["Action"].as_array_mut().unwrap();
            actions.retain(|a| a != action);
        }
    }
    statements.retain(|s| !s["Action"].as_array().unwrap().is_empty());
    if statements.is_empty() {
        // IAM takes no policy without a statement: one that grants what needs no grant.
        statements
            .push(json!({"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}));
    }
    doc
}

/// A fresh account: no user, bucket, image or key of an earlier run.
fn fresh_account(standin: &Standin) {
    standin.control("POST", "/moto-api/reset", Some("{}"));
}

/// What the admin makes before the publisher's run, in a fresh account; the command's
/// arguments. `key`: the customer managed key of the keyed case, made in that account.
async fn prepare(
    standin: &Standin,
    case: &str,
    file: &Path,
    run: usize,
    key: Option<&str>,
) -> Vec<String> {
    let name = format!("{case}-{run}");
    let image = || async {
        let (ami, snap) = common::api_image(standin, REGION, &name, &[("stream", "stable")]).await;
        common::mark_managed(standin, REGION, &[&ami, &snap]).await;
        ami
    };
    let file = file.display().to_string();
    let upload = |extra: &[&str]| {
        let mut args = strings(&["aws", "upload", "--region", REGION, "-v", "--file"]);
        args.extend([file.clone(), "--name".into(), name.clone()]);
        args.extend(strings(&[
            "--tags",
            "stream=stable",
            "--deprecate-in",
            "30d",
        ]));
        args.extend(strings(extra));
        args
    };
    let shared = [
        "--public",
        "--grant-user",
        SHARE_WITH,
        "--grant-user-snapshot",
        SHARE_WITH,
    ];
    match case {
        "upload" => {
            standin.initialize(REGION, "images");
            let mut args = upload(&["--bucket", "s3://images/ci"]);
            args.extend(strings(&shared));
            args
        }
        "upload-ebs-direct" => {
            let mut args = upload(&["--via", "ebs-direct"]);
            args.extend(strings(&shared));
            args
        }
        "upload-kms" => upload(&["--via", "ebs-direct", "--kms-key", key.unwrap()]),
        "copy-kms" => {
            // The admin's AMI, encrypted under the key.
            let made = standin
                .imgpub()
                .args(["aws", "upload", "--region", REGION, "--via", "ebs-direct"])
                .arg_path("--file", Path::new(&file))
                .args(["--name", &name, "--kms-key", key.unwrap()])
                .run();
            assert_eq!(made.code, 0, "{}", made.stderr);
            let ami = made.json()["HVM"].as_str().unwrap().to_string();
            strings(&[
                "aws",
                "copy-regions",
                "--region",
                REGION,
                "-v",
                "--image",
                &ami,
                TARGET,
            ])
        }
        "copy" => {
            let ami = image().await;
            common::make_public(standin, REGION, &ami).await;
            strings(&[
                "aws",
                "copy-regions",
                "--region",
                REGION,
                "-v",
                "--image",
                &ami,
                TARGET,
            ])
        }
        "ssm" => {
            let ami = image().await;
            strings(&[
                "aws",
                "publish-ssm",
                "--region",
                REGION,
                "--image",
                &ami,
                "--parameter",
                "/os/latest",
            ])
        }
        "delete" => {
            let ami = image().await;
            strings(&[
                "aws",
                "delete-image",
                "--region",
                REGION,
                "--ami",
                &ami,
                "--snapshot",
                "detectFromAMI",
            ])
        }
        "grant" => {
            let ami = image().await;
            strings(&[
                "aws",
                "grant",
                "-v",
                "--region",
                REGION,
                "--image",
                &ami,
                "--user",
                SHARE_WITH,
                "--snapshot",
            ])
        }
        "ensure-public" => {
            // Public AMI, private snapshot: ensure-public makes the snapshot public too.
            let ami = image().await;
            common::make_public(standin, REGION, &ami).await;
            strings(&["aws", "ensure-public", "--region", REGION, "--ami", &ami])
        }
        "gc" => {
            let ami = image().await;
            common::instance(standin, REGION, &ami, &[("CreatedBy", "mantle")], 6).await;
            strings(&["aws", "gc", "--region", REGION])
        }
        "initialize" => strings(&[
            "aws",
            "initialize",
            "--region",
            REGION,
            "--bucket",
            "images",
            "--recycle-bin",
            "30",
        ]),
        "object" => {
            standin.initialize(REGION, "images");
            let mut args = strings(&["aws", "upload-object", "--region", REGION, "-v", "--file"]);
            args.extend([file, "--bucket".into(), "s3://images/ci".into()]);
            args
        }
        "list-regions" => strings(&["aws", "list-regions", "--region", REGION]),
        "prune" | "prune-protect" => {
            // A stream of five releases, keep 1: r5 stays, r4 is due to be deprecated, r3
            // (deprecated 8 days ago) disabled, r2 (disabled) deregistered with its
            // snapshot, and a snapshot of r2 no AMI maps deleted.
            let ec2 = standin.ec2(REGION);
            let mut amis = vec![];
            for n in 2..=5 {
                let name = format!("os-r{n}-x86_64");
                let (ami, snap) = common::api_image(standin, REGION, &name, &[]).await;
                common::mark_managed(standin, REGION, &[&ami, &snap]).await;
                let body = format!(r#"{{"creation_date": "{}"}}"#, common::days_ago(6 - n));
                standin.control("POST", &format!("/_standin/images/{ami}"), Some(&body));
                amis.push(ami);
            }
            for (ami, days) in [(&amis[0], 15), (&amis[1], 8)] {
                let body = format!(r#"{{"deprecation_time": "{}"}}"#, common::days_ago(days));
                standin.control("POST", &format!("/_standin/images/{ami}"), Some(&body));
            }
            ec2.disable_image().image_id(&amis[0]).send().await.unwrap();
            let protect = case == "prune-protect";
            if protect {
                // An older release of a protected stream: its protection is lifted.
                let (ami, snap) = common::api_image(standin, REGION, "os-r1-x86_64", &[]).await;
                common::mark_managed(standin, REGION, &[&ami, &snap]).await;
                let body = format!(r#"{{"creation_date": "{}"}}"#, common::days_ago(5));
                standin.control("POST", &format!("/_standin/images/{ami}"), Some(&body));
                ec2.enable_image_deregistration_protection()
                    .image_id(&ami)
                    .send()
                    .await
                    .unwrap();
            }
            let volume = ec2
                .create_volume()
                .size(1)
                .availability_zone(format!("{REGION}a"))
                .send()
                .await
                .unwrap();
            let left = ec2
                .create_snapshot()
                .volume_id(volume.volume_id().unwrap())
                .send()
                .await
                .unwrap();
            let left = left.snapshot_id().unwrap();
            common::mark_managed(standin, REGION, &[left]).await;
            ec2.create_tags()
                .resources(left)
                .tags(
                    aws_sdk_ec2::types::Tag::builder()
                        .key("Name")
                        .value("os-r2-x86_64")
                        .build(),
                )
                .send()
                .await
                .unwrap();
            let manifest = format!(
                r#"
release = "r5"
source_region = "{REGION}"
transport = "ebs-direct"
name = "os-{{release}}-{{arch}}"
protect = {protect}

[prune]
keep = 1
grace = "7d"

[[image]]
file = "{file}"
arch = "x86_64"
"#
            );
            let dir = Path::new(&file).parent().unwrap();
            let path = common::write_file(dir, &format!("prune-{run}.toml"), &manifest);
            let mut args = strings(&["release", "prune", "--apply", "-v"]);
            args.push(path.display().to_string());
            args
        }
        "restore" => {
            // A public release's AMI and snapshot, disabled and deregistered (as prune
            // leaves them) where Region-level Recycle Bin rules keep both. It comes back
            // disabled (the seeded choice, fixed so each run needs the same actions).
            standin.control(
                "POST",
                "/_standin/config",
                Some(r#"{"rbin_restored_disabled": "disabled"}"#),
            );
            let rbin = aws_sdk_rbin::Client::new(&standin.sdk(REGION));
            for kind in [
                aws_sdk_rbin::types::ResourceType::Ec2Image,
                aws_sdk_rbin::types::ResourceType::EbsSnapshot,
            ] {
                let days = aws_sdk_rbin::types::RetentionPeriod::builder()
                    .retention_period_value(7)
                    .retention_period_unit(aws_sdk_rbin::types::RetentionPeriodUnit::Days)
                    .build()
                    .unwrap();
                rbin.create_rule()
                    .resource_type(kind)
                    .retention_period(days)
                    .send()
                    .await
                    .unwrap();
            }
            let (ami, snap) = common::api_image(standin, REGION, &name, &[]).await;
            common::mark_managed(standin, REGION, &[&ami, &snap]).await;
            let ec2 = standin.ec2(REGION);
            // Deprecated a while ago (a test's clock: EC2 takes only future times).
            let past = r#"{"deprecation_time": "2026-01-01T00:00:00.000Z"}"#;
            standin.control("POST", &format!("/_standin/images/{ami}"), Some(past));
            ec2.disable_image().image_id(&ami).send().await.unwrap();
            ec2.deregister_image().image_id(&ami).send().await.unwrap();
            ec2.delete_snapshot()
                .snapshot_id(&snap)
                .send()
                .await
                .unwrap();
            let record = json!({
                "release": name, "account": ACCOUNT, "partition": "aws",
                "source_region": REGION, "public": true, "all_regions": false,
                "shared_with": [SHARE_WITH],
                "images": [{
                    "name": name, "arch": "x86_64",
                    "regions": {REGION: {"ami": ami, "snapshot": snap}},
                    "missing": [], "parameters": [], "amis": [],
                }],
                "allowed_amis": {"ImageCriteria": []},
            });
            let dir = Path::new(&file).parent().unwrap();
            let path = common::write_file(dir, &format!("restore-{run}.json"), &record.to_string());
            let mut args = strings(&["release", "restore", "-v"]);
            args.push(path.display().to_string());
            args
        }
        "watch" => {
            // A public release's AMI that went private (--fix makes it public again), and
            // its parameter.
            let (ami, snap) = common::api_image(standin, REGION, &name, &[]).await;
            common::mark_managed(standin, REGION, &[&ami, &snap]).await;
            standin
                .ec2(REGION)
                .modify_image_attribute()
                .image_id(&ami)
                .launch_permission(
                    aws_sdk_ec2::types::LaunchPermissionModifications::builder()
                        .add(
                            aws_sdk_ec2::types::LaunchPermission::builder()
                                .user_id(SHARE_WITH)
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .unwrap();
            let ssm = aws_sdk_ssm::Client::new(&standin.sdk(REGION));
            ssm.put_parameter()
                .name("/os/latest")
                .value(&ami)
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .send()
                .await
                .unwrap();
            let record = json!({
                "release": name, "account": ACCOUNT, "partition": "aws",
                "source_region": REGION, "public": true, "all_regions": false,
                "shared_with": [SHARE_WITH],
                "images": [{
                    "name": name, "arch": "x86_64",
                    "regions": {REGION: {"ami": ami, "snapshot": snap}},
                    "missing": [],
                    "parameters": [{"region": REGION, "parameter": "/os/latest", "ami": ami}],
                    "amis": [],
                }],
                "allowed_amis": {"ImageCriteria": []},
            });
            let dir = Path::new(&file).parent().unwrap();
            let path = common::write_file(dir, &format!("watch-{run}.json"), &record.to_string());
            let mut args = strings(&["release", "watch", "--fix", "-v"]);
            args.push(path.display().to_string());
            args
        }
        other => panic!("no case {other}"),
    }
}

/// Runs `case` once with the whole policy and once per (statement, action) without it.
/// A policy printed with `--kms-key KEY` names the key made in each fresh account.
async fn sweep(standin: &Standin, case: Case, file: &Path) {
    let keyed = case.policy.iter().any(|f| f == "KEY");
    let mut run_no = 0;
    let mut flags = strings(&["aws", "policy", "--account", ACCOUNT, "--region", REGION]);
    flags.extend(case.policy.iter().map(|f| match f.as_str() {
        "KEY" => PLACEHOLDER.to_string(),
        _ => f.clone(),
    }));
    let document = standin.imgpub().args(&flags).run().json_document();

    run_no += 1;
    let run = attempt(standin, &case, file, run_no, keyed, document.clone()).await;
    assert_eq!(
        run.code, 0,
        "{}: the whole policy: {}",
        case.name, run.stderr
    );

    let mut outcomes = vec![];
    for statement in document["Statement"].as_array().unwrap() {
        let sid = statement["Sid"].as_str().unwrap();
        if sid == "Preflight" {
            continue; // --preflight off: iam:SimulatePrincipalPolicy is never asked
        }
        for action in statement["Action"].as_array().unwrap() {
            let action = action.as_str().unwrap();
            run_no += 1;
            let doc = without_action(&document, sid, action);
            let run = attempt(standin, &case, file, run_no, keyed, doc).await;
            let expected = case
                .not_needed
                .iter()
                .find(|(s, a, _)| *s == sid && *a == action)
                .map_or(Without::Fails, |(_, _, w)| *w);
            outcomes.push((sid.to_string(), action.to_string(), expected, run));
        }
    }
    let mut wrong = vec![];
    for (sid, action, expected, run) in &outcomes {
        let ok = match expected {
            Without::Fails => run.code == 1 && run.error_line().contains(action.as_str()),
            Without::Degrades => {
                run.code == 0
                    && run.stderr.contains("not checked")
                    && run.stderr.contains(action.as_str())
            }
            Without::Unused(_) => run.code == 0,
        };
        if !ok {
            wrong.push(format!(
                "{sid} without {action}: expected {expected:?}, exit {}: {}",
                run.code,
                last_lines(run)
            ));
        }
    }
    // Every listed exception was met: none is stale.
    for (sid, action, _) in &case.not_needed {
        assert!(
            outcomes.iter().any(|(s, a, ..)| s == sid && a == action),
            "{}: {sid}/{action} is listed but not in the policy",
            case.name
        );
    }
    eprintln!("{}: {} single-action runs", case.name, outcomes.len());
    // Every IAM check the stand-in made for these runs (its hand-written mapping of
    // requests to actions, resources and condition keys) is in AWS's own reference data.
    let seen: Value =
        serde_json::from_str(&standin.control("GET", "/_standin/needs", None)).unwrap();
    let seen = seen.as_array().unwrap();
    assert!(
        !seen.is_empty(),
        "{}: the stand-in judged no request",
        case.name
    );
    let report = common::reference_check(seen);
    assert_eq!(report["checked"], seen.len(), "{report}");
    assert_eq!(report["problems"], json!([]), "{}: {report}", case.name);
    assert!(wrong.is_empty(), "{}:\n{}", case.name, wrong.join("\n"));
}

/// One run of `case`'s command, in a fresh account, by a user holding `document`.
async fn attempt(
    standin: &Standin,
    case: &Case,
    file: &Path,
    n: usize,
    keyed: bool,
    document: Value,
) -> Run {
    fresh_account(standin);
    let key = keyed.then(|| common::customer_key(standin, REGION));
    let document = match &key {
        Some(key) => serde_json::from_str(&document.to_string().replace(PLACEHOLDER, key)).unwrap(),
        None => document,
    };
    let args = prepare(standin, case.name, file, n, key.as_deref()).await;
    let keys = user_with(standin, &format!("{}-{n}", case.name), &document).await;
    signed_by(standin.imgpub(), &keys)
        .args(&args)
        .args(["--preflight", "off"])
        .run()
}

fn last_lines(run: &Run) -> String {
    let lines: Vec<&str> = run.stderr.lines().collect();
    lines[lines.len().saturating_sub(2)..].join(" | ")
}

/// The key the keyed policy is printed for, replaced by each run's own.
const PLACEHOLDER: &str =
    "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000";

fn setup() -> (Standin, TempDir, std::path::PathBuf) {
    let standin = Standin::start_with_import_seconds(0.2);
    standin.control(
        "POST",
        "/_standin/config",
        Some(r#"{"import_seconds": 0.2, "copy_seconds": 0.2}"#),
    );
    standin.enforce_iam();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 8, 2, 3);
    (standin, dir, file)
}

const FORCE: &str = "a rerun with --force (replacing an AMI of that name)";
const RESUME: &str = "a rerun that resumes an upload an earlier run left";
const FAILED: &str = "a step failing mid-way (aborting the upload it cannot resume)";
const REUSE: &str = "a rerun that finds the AMI and puts the tags on it";
const SHARED: &str = "a rerun that reads the sharing an earlier run left";
const RETAG: &str = "a rerun that finds the snapshot without the tags asked for";

/// What only a rerun reads (the sharing an earlier run left), in every upload policy.
fn rerun_reads() -> Vec<(&'static str, &'static str, Without)> {
    vec![
        (
            "Images",
            "ec2:DescribeImageAttribute",
            Without::Unused(SHARED),
        ),
        (
            "Snapshots",
            "ec2:DescribeSnapshotAttribute",
            Without::Unused(SHARED),
        ),
    ]
}
const REDO: &str = "a copy that failed (it is deregistered and made again)";
const RERUN: &str = "a rerun that finds the bucket and the role and compares what they hold";

#[tokio::test]
async fn each_action_of_the_upload_policies_is_needed() {
    let (standin, _dir, file) = setup();
    let public = ["--public", "--share-with", SHARE_WITH];
    let mut upload = strings(&[
        "--for",
        "upload",
        "--bucket",
        "images/ci",
        "--regions",
        REGION,
    ]);
    upload.extend(strings(&public));
    let reads = |w| {
        vec![
            ("ReadOnlyOrUnscopable", "ec2:GetEbsEncryptionByDefault", w),
            (
                "ReadOnlyOrUnscopable",
                "ec2:GetImageBlockPublicAccessState",
                w,
            ),
            (
                "ReadOnlyOrUnscopable",
                "ec2:GetSnapshotBlockPublicAccessState",
                w,
            ),
        ]
    };
    let mut not_needed = vec![
        ("ImageBucket", "s3:GetBucketLocation", Without::Degrades),
        (
            "ImageBucket",
            "s3:ListBucketMultipartUploads",
            Without::Degrades,
        ),
        (
            "ImageObjects",
            "s3:ListMultipartUploadParts",
            Without::Unused(RESUME),
        ),
        (
            "ImageObjects",
            "s3:AbortMultipartUpload",
            Without::Unused(FAILED),
        ),
        ("OwnImages", "ec2:DeregisterImage", Without::Unused(FORCE)),
        ("OwnImages", "ec2:CreateTags", Without::Unused(REUSE)),
        ("OwnSnapshots", "ec2:DeleteSnapshot", Without::Unused(FORCE)),
    ];
    not_needed.extend(reads(Without::Degrades));
    not_needed.extend(rerun_reads());
    sweep(
        &standin,
        Case {
            name: "upload",
            policy: upload,
            not_needed,
        },
        &file,
    )
    .await;

    let mut direct = strings(&[
        "--for",
        "upload",
        "--via",
        "ebs-direct",
        "--regions",
        REGION,
    ]);
    direct.extend(strings(&public));
    let mut not_needed = vec![
        ("OwnImages", "ec2:DeregisterImage", Without::Unused(FORCE)),
        ("OwnImages", "ec2:CreateTags", Without::Unused(REUSE)),
        ("OwnSnapshots", "ec2:DeleteSnapshot", Without::Unused(FORCE)),
        ("OwnSnapshots", "ec2:CreateTags", Without::Unused(RETAG)),
    ];
    not_needed.extend(reads(Without::Degrades));
    not_needed.extend(rerun_reads());
    sweep(
        &standin,
        Case {
            name: "upload-ebs-direct",
            policy: direct,
            not_needed,
        },
        &file,
    )
    .await;
}

#[tokio::test]
async fn each_kms_action_of_a_keyed_upload_is_needed() {
    let (standin, _dir, file) = setup();
    let policy = strings(&[
        "--for",
        "upload",
        "--via",
        "ebs-direct",
        "--regions",
        REGION,
        "--kms-key",
        "KEY",
    ]);
    sweep(
        &standin,
        Case {
            name: "upload-kms",
            policy,
            not_needed: [
                vec![
                    ("OwnImages", "ec2:DeregisterImage", Without::Unused(FORCE)),
                    ("OwnImages", "ec2:CreateTags", Without::Unused(REUSE)),
                    ("OwnSnapshots", "ec2:DeleteSnapshot", Without::Unused(FORCE)),
                    ("OwnSnapshots", "ec2:CreateTags", Without::Unused(RETAG)),
                ],
                rerun_reads(),
            ]
            .concat(),
        },
        &file,
    )
    .await;
}

/// A copy of an AMI encrypted under a customer managed key: the key's kms: actions for EBS
/// encryption, each needed (the copy is encrypted under the target's AWS managed key).
#[tokio::test]
async fn each_kms_action_of_a_keyed_copy_is_needed() {
    let (standin, _dir, file) = setup();
    let policy = strings(&[
        "--for",
        "copy",
        "--source-region",
        REGION,
        "--regions",
        TARGET,
        "--kms-key",
        "KEY",
    ]);
    sweep(
        &standin,
        Case {
            name: "copy-kms",
            policy,
            not_needed: vec![
                ("OwnImages", "ec2:DeregisterImage", Without::Unused(REDO)),
                ("OwnSnapshots", "ec2:DeleteSnapshot", Without::Unused(REDO)),
                (
                    "OwnImages",
                    "ec2:EnableImageDeprecation",
                    Without::Unused("a source AMI with a deprecation time"),
                ),
                (
                    "ReadOnlyOrUnscopable",
                    "ec2:DescribeRegions",
                    Without::Degrades,
                ),
            ],
        },
        &file,
    )
    .await;
}

#[tokio::test]
async fn each_action_of_the_other_publisher_policies_is_needed() {
    let (standin, _dir, file) = setup();
    let cases = vec![
        Case {
            name: "copy",
            policy: strings(&[
                "--for",
                "copy",
                "--source-region",
                REGION,
                "--regions",
                TARGET,
                "--public",
            ]),
            not_needed: vec![
                ("OwnImages", "ec2:DeregisterImage", Without::Unused(REDO)),
                ("OwnSnapshots", "ec2:DeleteSnapshot", Without::Unused(REDO)),
                (
                    "OwnImages",
                    "ec2:EnableImageDeprecation",
                    Without::Unused("a source AMI with a deprecation time"),
                ),
                (
                    "ReadOnlyOrUnscopable",
                    "ec2:DescribeRegions",
                    Without::Degrades,
                ),
                (
                    "ReadOnlyOrUnscopable",
                    "ec2:GetEbsEncryptionByDefault",
                    Without::Degrades,
                ),
                (
                    "ReadOnlyOrUnscopable",
                    "ec2:GetImageBlockPublicAccessState",
                    Without::Degrades,
                ),
                (
                    "ReadOnlyOrUnscopable",
                    "ec2:GetSnapshotBlockPublicAccessState",
                    Without::Degrades,
                ),
                (
                    "ReadOnlyOrUnscopable",
                    "servicequotas:GetServiceQuota",
                    Without::Degrades,
                ),
            ],
        },
        Case {
            name: "ssm",
            policy: strings(&["--for", "ssm", "--ssm-prefix", "/os/", "--regions", REGION]),
            not_needed: vec![],
        },
        Case {
            name: "delete",
            policy: strings(&["--for", "delete", "--regions", REGION]),
            not_needed: vec![(
                "ReadOnlyOrUnscopable",
                "ec2:DescribeRegions",
                Without::Unused("delete-image --all-regions lists the enabled regions"),
            )],
        },
        Case {
            name: "grant",
            policy: strings(&[
                "--for",
                "grant",
                "--share-with",
                SHARE_WITH,
                "--regions",
                REGION,
            ]),
            // The reads that find what is already granted: refused, the grant is made
            // again, and the run says what it could not check.
            not_needed: vec![
                ("Images", "ec2:DescribeImageAttribute", Without::Degrades),
                (
                    "Snapshots",
                    "ec2:DescribeSnapshotAttribute",
                    Without::Degrades,
                ),
            ],
        },
        Case {
            name: "ensure-public",
            policy: strings(&["--for", "ensure-public", "--public", "--regions", REGION]),
            not_needed: vec![
                (
                    "ReadOnlyOrUnscopable",
                    "ec2:DescribeRegions",
                    Without::Unused("--all-regions"),
                ),
                (
                    "OwnImages",
                    "ec2:ModifyImageAttribute",
                    Without::Unused("an AMI that is not public yet (this one is)"),
                ),
            ],
        },
        Case {
            name: "gc",
            policy: strings(&["--for", "gc", "--regions", REGION]),
            not_needed: vec![(
                "ReadOnlyOrUnscopable",
                "ec2:DescribeRegions",
                Without::Unused("--all-regions"),
            )],
        },
        Case {
            name: "object",
            policy: strings(&["--for", "object", "--bucket", "images/ci"]),
            not_needed: vec![
                (
                    "ImageBucket",
                    "s3:ListBucketMultipartUploads",
                    Without::Degrades,
                ),
                (
                    "ImageObjects",
                    "s3:ListMultipartUploadParts",
                    Without::Unused(RESUME),
                ),
                (
                    "ImageObjects",
                    "s3:AbortMultipartUpload",
                    Without::Unused(FAILED),
                ),
            ],
        },
        Case {
            name: "list-regions",
            policy: strings(&["--for", "list-regions"]),
            not_needed: vec![],
        },
    ];
    for case in cases {
        sweep(&standin, case, &file).await;
    }
}

/// `release watch --fix` over a public release whose AMI went private, with a parameter,
/// under `policy --for watch --public --ssm-prefix`.
#[tokio::test]
async fn each_action_of_the_watch_policy_is_needed() {
    let (standin, _dir, file) = setup();
    let case = Case {
        name: "watch",
        policy: strings(&[
            "--for",
            "watch",
            "--public",
            "--ssm-prefix",
            "/os/",
            "--regions",
            REGION,
        ]),
        not_needed: vec![
            (
                "ReadOnlyOrUnscopable",
                "ec2:DescribeRegions",
                Without::Unused("a record of a release to every region"),
            ),
            (
                "ReadOnlyOrUnscopable",
                "servicequotas:GetServiceQuota",
                Without::Degrades,
            ),
        ],
    };
    sweep(&standin, case, &file).await;
}

/// A disabled AMI has no sharing to read: restore reads it for one found enabled.
const SHARED_LATER: &str = "a rerun that finds an AMI enabled but not yet shared";

#[tokio::test]
async fn each_action_of_the_restore_policy_is_needed() {
    let (standin, _dir, file) = setup();
    let case = Case {
        name: "restore",
        policy: strings(&[
            "--for",
            "restore",
            "--public",
            "--share-with",
            SHARE_WITH,
            "--regions",
            REGION,
        ]),
        not_needed: vec![
            (
                "Images",
                "ec2:DescribeImageAttribute",
                Without::Unused(SHARED_LATER),
            ),
            (
                "Snapshots",
                "ec2:DescribeSnapshotAttribute",
                Without::Unused(SHARED_LATER),
            ),
        ],
    };
    sweep(&standin, case, &file).await;
}

/// A prune case: `policy --for prune` with `extra` flags. The reads it goes on without,
/// saying "not checked": the region list (its regions are the manifest's) and the search
/// for leftover snapshots.
fn prune_case(name: &'static str, extra: &[&str]) -> Case {
    let mut policy = strings(&["--for", "prune", "--regions", REGION]);
    policy.extend(strings(extra));
    Case {
        name,
        policy,
        not_needed: vec![
            (
                "ReadOnlyOrUnscopable",
                "ec2:DescribeRegions",
                Without::Degrades,
            ),
            (
                "ReadOnlyOrUnscopable",
                "ec2:DescribeSnapshots",
                Without::Degrades,
            ),
            (
                "ReadOnlyOrUnscopable",
                "servicequotas:GetServiceQuota",
                Without::Unused("a public stream (its quota headroom is read)"),
            ),
            (
                "ReadOnlyOrUnscopable",
                "ec2:DescribeImageUsageReports",
                Without::Unused(IN_USE),
            ),
            (
                "ReadOnlyOrUnscopable",
                "ec2:DescribeImageUsageReportEntries",
                Without::Unused(IN_USE),
            ),
            (
                "OwnImages",
                "ec2:CreateImageUsageReport",
                Without::Unused(IN_USE),
            ),
            (
                "UsageReports",
                "ec2:CreateImageUsageReport",
                Without::Unused(IN_USE),
            ),
        ],
    }
}

/// What asks who uses an AMI before prune retires it.
const IN_USE: &str = "a [prune] with keep_in_use = true (tests/release.rs runs one)";

/// The same under `policy --for prune --protect`, in a stream with `protect = true` whose
/// oldest release is still protected: its protection is lifted.
#[tokio::test]
async fn each_action_of_the_protected_prune_policy_is_needed() {
    let (standin, _dir, file) = setup();
    sweep(&standin, prune_case("prune-protect", &["--protect"]), &file).await;
}

/// `release prune --apply` doing every stage at once (deprecate, disable, deregister with
/// the snapshot, a leftover snapshot deleted) under `policy --for prune`.
#[tokio::test]
async fn each_action_of_the_prune_policy_is_needed() {
    let (standin, _dir, file) = setup();
    sweep(&standin, prune_case("prune", &[]), &file).await;
}

/// The admin's own command under its printed policy (never a publisher's).
#[tokio::test]
async fn each_action_of_the_initialize_policy_is_needed() {
    let (standin, _dir, file) = setup();
    sweep(
        &standin,
        Case {
            name: "initialize",
            policy: strings(&[
                "--for",
                "initialize",
                "--bucket",
                "images",
                "--regions",
                REGION,
            ]),
            not_needed: vec![
                (
                    "ImageBucket",
                    "s3:GetLifecycleConfiguration",
                    Without::Unused(RERUN),
                ),
                ("ImportRole", "iam:GetRolePolicy", Without::Unused(RERUN)),
                ("ImportRole", "iam:ListRolePolicies", Without::Unused(RERUN)),
                (
                    "RecycleBinRules",
                    "rbin:ListTagsForResource",
                    Without::Unused(RERUN),
                ),
                (
                    "OwnRecycleBinRules",
                    "rbin:UpdateRule",
                    Without::Unused("a rerun with another --recycle-bin"),
                ),
                (
                    "ImportRole",
                    "iam:UpdateAssumeRolePolicy",
                    Without::Unused("a vmimport role whose trust needs repair"),
                ),
                (
                    "ImportRole",
                    "iam:PutRolePermissionsBoundary",
                    Without::Unused("--permissions-boundary"),
                ),
            ],
        },
        &file,
    )
    .await;
}
