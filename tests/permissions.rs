//! Permissions end to end, against the stand-in enforcing IAM (every request signed by a
//! created user's or role's keys is judged by that identity's policies, with real ARNs and
//! context keys): `imgpub aws policy` prints what a publisher needs, a publisher holding
//! exactly that publishes, each statement is needed, and the preflight names what is
//! missing before anything is created.

mod common;

use std::path::Path;

use common::{
    kms_direct, make_raw, signed_by, tempdir::TempDir, user_with, Imgpub, Run, Standin, ACCOUNT,
};
use serde_json::{json, Value};

const REGION: &str = "us-east-1";
const SHARE_WITH: &str = "111122223333";

/// The flags of the upload policy the publishers in these tests hold.
const UPLOAD_POLICY: &[&str] = &[
    "--for",
    "upload",
    "--bucket",
    "images/ci",
    "--public",
    "--share-with",
    SHARE_WITH,
];

/// `imgpub aws policy …` as JSON.
/// An EC2 call that IAM refuses (UnauthorizedOperation), with what it would have done.
macro_rules! refused {
    ($call:expr, $what:expr) => {
        let code = $call
            .send()
            .await
            .map(|_| ())
            .map_err(|e| e.into_service_error().meta().code().map(str::to_owned));
        assert_eq!(
            code.unwrap_err().as_deref(),
            Some("UnauthorizedOperation"),
            $what
        );
    };
}

fn policy(standin: &Standin, args: &[&str]) -> Value {
    standin
        .imgpub()
        .args(["aws", "policy", "--account", ACCOUNT])
        .args(args)
        .run()
        .json_document()
}

fn upload(cmd: Imgpub, file: &Path, name: &str) -> Run {
    upload_with(cmd, file, name, &[])
}

/// `upload` of `file` as `name`, public and shared, with `extra` flags.
fn upload_with(cmd: Imgpub, file: &Path, name: &str, extra: &[&str]) -> Run {
    cmd.args([
        "aws",
        "upload",
        "--region",
        REGION,
        "--bucket",
        "s3://images/ci",
        "-v",
    ])
    .args(extra)
    .arg_path("--file", file)
    .args(["--name", name, "--tags", "stream=stable", "--public"])
    .args([
        "--grant-user",
        SHARE_WITH,
        "--grant-user-snapshot",
        SHARE_WITH,
    ])
    .run()
}

fn without_statement(document: &Value, sid: &str) -> Value {
    let mut doc = document.clone();
    doc["Statement"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["Sid"] != sid);
    doc
}

/// The run's error names at least one action of `statement` (the one left out).
fn assert_names_an_action(run: &Run, statement: &Value, what: &str) {
    let err = run.error_line();
    let actions: Vec<&str> = statement["Action"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        actions.iter().any(|a| err.contains(a)),
        "{what}: the error names none of {actions:?}: {err}"
    );
}

/// Nothing was written: no upload started, no import, no AMI, no permission changed.
fn assert_nothing_changed(standin: &Standin, what: &str) {
    let counts = standin.counts();
    for action in [
        "s3.CreateMultipartUpload",
        "s3.UploadPart",
        "s3.PutObject",
        "ec2.ImportSnapshot",
        "ec2.RegisterImage",
        "ec2.CreateTags",
        "ec2.ModifyImageAttribute",
        "ec2.ModifySnapshotAttribute",
        "ebs.StartSnapshot",
        "ebs.PutSnapshotBlock",
    ] {
        assert_eq!(
            common::count(&counts, action),
            0,
            "{what}: {action} was called: {counts}"
        );
    }
}

/// For each statement of `document` but the preflight's: a user holding the document
/// without it runs `run` (with its keys, an AMI name): exit 1 in the preflight, naming an
/// action of that statement, nothing changed, no AMI of that name. A statement of reads
/// only a rerun makes is needed for the rerun to change nothing.
async fn each_statement_is_needed(
    standin: &Standin,
    document: &Value,
    prefix: &str,
    run: impl Fn(&(String, String), &str) -> Run,
) {
    let statements = document["Statement"].as_array().unwrap().clone();
    for (i, statement) in statements.iter().enumerate() {
        let sid = statement["Sid"].as_str().unwrap();
        if sid == "Preflight" {
            continue;
        }
        let name = format!("{prefix}-{i}");
        let keys = user_with(standin, &name, &without_statement(document, sid)).await;
        if rerun_reads_only(statement) {
            rerun_reads_are_needed(standin, document, statement, &keys, &name, &run).await;
            continue;
        }
        standin.reset_requests();
        let out = run(&keys, &name);
        assert_eq!(out.code, 1, "without {sid}: {}", out.stderr);
        assert_names_an_action(&out, statement, &format!("without {sid}"));
        assert_nothing_changed(standin, sid);
        assert_eq!(ami_named(standin, &name).await, None, "without {sid}");
    }
}

/// A statement of reads of what is shared now, which spare a change (a rerun's, or a grant
/// already made) but are not needed for the run.
fn rerun_reads_only(statement: &Value) -> bool {
    let actions = statement["Action"].as_array().unwrap();
    actions.iter().all(|a| {
        matches!(
            a.as_str(),
            Some("ec2:DescribeImageAttribute" | "ec2:DescribeSnapshotAttribute")
        )
    })
}

/// Without `statement` a publish and its rerun still work, but the rerun cannot see the
/// sharing, so it sets it again (noting what it could not check); with it the rerun
/// changes nothing.
async fn rerun_reads_are_needed(
    standin: &Standin,
    document: &Value,
    statement: &Value,
    keys: &(String, String),
    name: &str,
    run: &impl Fn(&(String, String), &str) -> Run,
) {
    let sid = statement["Sid"].as_str().unwrap();
    let modify = |counts: &Value| {
        common::count(counts, "ec2.ModifyImageAttribute")
            + common::count(counts, "ec2.ModifySnapshotAttribute")
    };
    assert_eq!(run(keys, name).code, 0, "without {sid}: the first publish");
    standin.reset_requests();
    let again = run(keys, name);
    assert_eq!(again.code, 0, "without {sid}: {}", again.stderr);
    assert!(
        modify(&standin.counts()) > 0,
        "without {sid} the rerun set no sharing"
    );
    let whole = user_with(standin, &format!("{name}-whole"), document).await;
    standin.reset_requests();
    let again = run(&whole, name);
    assert_eq!(again.code, 0, "with {sid}: {}", again.stderr);
    assert_eq!(
        modify(&standin.counts()),
        0,
        "with {sid} the rerun set the sharing again"
    );
}

async fn ami_named(standin: &Standin, name: &str) -> Option<String> {
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(REGION));
    let out = ec2.describe_images().owners("self").send().await.unwrap();
    out.images()
        .iter()
        .find(|i| i.name() == Some(name))
        .map(|i| i.image_id().unwrap().to_string())
}

#[test]
fn policy_needs_no_credentials_and_follows_the_partition() {
    let standin = Standin::start();
    let run = standin
        .imgpub()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_ENDPOINT_URL")
        .args(["aws", "policy", "--for", "upload", "--bucket", "images/p"])
        .args(["--partition", "aws-us-gov"])
        .run();
    let doc = run.json_document();
    let text = doc.to_string();
    let arns: Vec<&str> = text.split('"').filter(|s| s.starts_with("arn:")).collect();
    assert!(arns.len() > 5, "{text}");
    for arn in arns {
        assert!(arn.starts_with("arn:aws-us-gov:"), "{arn}");
    }
    assert!(text.contains("arn:aws-us-gov:s3:::images/p/*"), "{text}");
    // Nothing was asked of AWS.
    assert_eq!(standin.counts(), json!({}));

    let table = standin
        .imgpub()
        .args(["aws", "policy", "--for", "ssm", "--format", "table"])
        .args(["--ssm-prefix", "/os/", "--account", ACCOUNT])
        .run();
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.contains("ssm:PutParameter")
            && table.stdout.contains("parameter/os/*")
            && table
                .stdout
                .contains("SSM checks that an aws:ec2:image value"),
        "{}",
        table.stdout
    );
    let bad = standin
        .imgpub()
        .args(["aws", "policy", "--partition", "mars"])
        .run();
    assert_eq!(bad.code, 2);
    assert!(bad.error_line().contains("--partition"), "{}", bad.stderr);
}

#[tokio::test]
async fn a_publisher_with_exactly_the_printed_policy_publishes_and_needs_every_statement() {
    let standin = Standin::initialized();
    let document = policy(&standin, &[UPLOAD_POLICY, &["--regions", REGION]].concat());
    standin.enforce_iam();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 16, 4, 7);

    let publisher = user_with(&standin, "publisher", &document).await;
    let run = upload(signed_by(standin.imgpub(), &publisher), &file, "os-1");
    let out = run.json();
    let ami = out["HVM"].as_str().unwrap().to_string();
    assert_eq!(
        ami_named(&standin, "os-1").await.as_deref(),
        Some(ami.as_str())
    );
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(REGION));
    assert_eq!(
        common::launch_permissions(&ec2, &ami).await,
        ["group:all".to_string(), format!("user:{SHARE_WITH}")]
    );
    assert!(
        run.stderr.contains("permission preflight: all"),
        "{}",
        run.stderr
    );

    // Each statement removed: the run stops before anything is written, naming an action
    // of that statement.
    each_statement_is_needed(&standin, &document, "without", |keys, name| {
        upload(signed_by(standin.imgpub(), keys), &file, name)
    })
    .await;

    // Without iam:SimulatePrincipalPolicy the preflight says what it could not check: the
    // run goes on (auto), or stops before any change (require).
    let keys = user_with(
        &standin,
        "no-preflight",
        &without_statement(&document, "Preflight"),
    )
    .await;
    let run = upload(signed_by(standin.imgpub(), &keys), &file, "os-2");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let said: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("not checked"))
        .collect();
    assert_eq!(said.len(), 1, "once: {}", run.stderr);
    assert!(
        said[0].contains("the permissions, before starting")
            && said[0].contains("iam:SimulatePrincipalPolicy")
            && said[0].contains("imgpub aws policy"),
        "{}",
        run.stderr
    );
    standin.reset_requests();
    let run = upload_with(
        signed_by(standin.imgpub(), &keys),
        &file,
        "os-3",
        &["--preflight", "require"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.error_line().contains("could not be made"),
        "{}",
        run.stderr
    );
    assert_nothing_changed(&standin, "--preflight require");
}

#[tokio::test]
async fn a_role_assumed_with_its_external_id_publishes_and_a_wrong_id_is_refused() {
    let standin = Standin::initialized();
    let document = policy(&standin, UPLOAD_POLICY);
    let iam = standin.iam();
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": "ci-7"}},
        }],
    });
    let role = iam
        .create_role()
        .role_name("ci-publisher")
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .unwrap();
    let arn = role.role().unwrap().arn().to_string();
    iam.put_role_policy()
        .role_name("ci-publisher")
        .policy_name("imgpub")
        .policy_document(document.to_string())
        .send()
        .await
        .unwrap();
    standin.enforce_iam();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 16, 4, 9);

    let as_role = |id: &str| -> Vec<String> {
        let mut flags = vec!["--role-arn".to_string(), arn.clone()];
        if !id.is_empty() {
            flags.extend(["--external-id".to_string(), id.to_string()]);
        }
        flags
    };
    let upload_as = |id: &str, name: &str| {
        let flags = as_role(id);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        upload_with(standin.imgpub(), &file, name, &flags)
    };
    let run = upload_as("ci-7", "role-1");
    assert!(run.json()["HVM"].as_str().unwrap().starts_with("ami-"));
    assert!(
        run.stderr.contains("permission preflight: all"),
        "{}",
        run.stderr
    );

    // The role's policy without RegisterImage: the preflight of the role's session names it.
    iam.put_role_policy()
        .role_name("ci-publisher")
        .policy_name("imgpub")
        .policy_document(without_statement(&document, "NewImages").to_string())
        .send()
        .await
        .unwrap();
    standin.reset_requests();
    let run = upload_as("ci-7", "role-2");
    let err = run.error_line();
    assert!(
        err.contains("ec2:RegisterImage") && err.contains(":role/ci-publisher"),
        "{err}"
    );
    assert_nothing_changed(&standin, "role without NewImages");

    for id in ["wrong", ""] {
        let run = upload_as(id, "role-3");
        assert_eq!(run.code, 1, "{}", run.stderr);
        let err = run.error_line();
        assert!(
            err.contains(&format!("role {arn}")) && err.contains("AccessDenied"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn the_usual_doc_policies_stop_in_the_preflight_naming_what_they_lack() {
    let standin = Standin::initialized();
    // What coreos-assembler's buildextend-aws doc has one attach to the bot account: the
    // vmimport role's policy.
    let cosa = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"],
         "Resource": ["arn:aws:s3:::images", "arn:aws:s3:::images/*"]},
        {"Effect": "Allow",
         "Action": ["ec2:ModifySnapshotAttribute", "ec2:CopySnapshot", "ec2:RegisterImage", "ec2:Describe*"],
         "Resource": "*"},
        {"Effect": "Allow", "Action": "iam:SimulatePrincipalPolicy", "Resource": "*"},
    ]});
    // The VM Import/Export guide's policy for the user who imports.
    let vmie = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:PutObject"],
         "Resource": ["arn:aws:s3:::images", "arn:aws:s3:::images/*"]},
        {"Effect": "Allow", "Action": [
            "ec2:CancelConversionTask", "ec2:CancelExportTask", "ec2:CreateImage",
            "ec2:CreateInstanceExportTask", "ec2:CreateTags", "ec2:DescribeConversionTasks",
            "ec2:DescribeExportTasks", "ec2:DescribeExportImageTasks", "ec2:DescribeImages",
            "ec2:DescribeInstanceStatus", "ec2:DescribeInstances", "ec2:DescribeSnapshots",
            "ec2:DescribeTags", "ec2:ExportImage", "ec2:ImportInstance", "ec2:ImportVolume",
            "ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances",
            "ec2:ImportImage", "ec2:ImportSnapshot", "ec2:DescribeImportImageTasks",
            "ec2:DescribeImportSnapshotTasks", "ec2:CancelImportTask"],
         "Resource": "*"},
        {"Effect": "Allow", "Action": "iam:SimulatePrincipalPolicy", "Resource": "*"},
    ]});
    standin.enforce_iam();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 16, 4, 11);
    for (name, doc, lacking) in [
        (
            "cosa-bot",
            &cosa,
            vec!["s3:PutObject", "ec2:ImportSnapshot"],
        ),
        (
            "vmie-user",
            &vmie,
            vec!["s3:ListBucket", "s3:DeleteObject", "ec2:RegisterImage"],
        ),
    ] {
        let keys = user_with(&standin, name, doc).await;
        standin.reset_requests();
        let run = upload(signed_by(standin.imgpub(), &keys), &file, name);
        assert_eq!(run.code, 1, "{name}: {}", run.stderr);
        let err = run.error_line();
        assert!(err.contains("permission preflight"), "{name}: {err}");
        for action in lacking {
            assert!(err.contains(action), "{name} lacks {action}: {err}");
        }
        assert!(
            err.contains("imgpub aws policy --for upload --bucket images/ci"),
            "{err}"
        );
        assert_nothing_changed(&standin, name);
    }
}

/// `create-publisher`'s JSON.
fn create_publisher(standin: &Standin, args: &[&str]) -> Value {
    standin
        .imgpub()
        .args(["aws", "create-publisher", "--region", REGION])
        .args(args)
        .run()
        .json()
}

/// `create-publisher --user NAME --key-file KEY_FILE --for ssm --ssm-prefix /os/`: a user
/// publisher of the smallest policy, as the user-mode tests make it.
fn ssm_user_publisher(standin: &Standin, name: &str, key_file: &Path) -> Imgpub {
    standin
        .imgpub()
        .args([
            "aws",
            "create-publisher",
            "--region",
            REGION,
            "--user",
            name,
        ])
        .arg_path("--key-file", key_file)
        .args(["--for", "ssm", "--ssm-prefix", "/os/"])
}

/// The secret access key in a credentials file create-publisher wrote.
fn secret_in(key_file: &Path) -> String {
    std::fs::read_to_string(key_file)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("aws_secret_access_key = "))
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn create_publisher_makes_a_role_with_an_external_id_that_publishes() {
    let standin = Standin::initialized();
    let flags = [
        &[
            "--role",
            "ci-publisher",
            "--trust-account",
            ACCOUNT,
            "--generate-external-id",
        ],
        UPLOAD_POLICY,
    ]
    .concat();
    let out = create_publisher(&standin, &flags);
    let arn = out["role_arn"].as_str().unwrap().to_string();
    let external_id = out["external_id"].as_str().unwrap().to_string();
    assert_eq!(external_id.len(), 32, "{out}");
    assert_eq!(
        out["imgpub_flags"],
        format!("--role-arn {arn} --external-id {external_id}")
    );
    assert_eq!(out["assume_statement"]["Action"], "sts:AssumeRole");
    assert_eq!(out["assume_statement"]["Resource"], arn.as_str());
    // The role holds exactly what `policy` prints.
    let held = standin
        .iam()
        .get_role_policy()
        .role_name("ci-publisher")
        .policy_name("imgpub-publisher")
        .send()
        .await
        .unwrap();
    let held = imgpub::testing::parse_policy(held.policy_document()).unwrap();
    // ... with the preflight's simulation granted on the role alone.
    let printed = policy(&standin, &[UPLOAD_POLICY, &["--principal", &arn]].concat());
    assert_eq!(held, printed);
    let preflight = held["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "Preflight")
        .unwrap();
    assert_eq!(preflight["Resource"], json!([arn]));

    // A rerun keeps the External ID CI already has and changes nothing.
    let again = create_publisher(&standin, &flags);
    assert_eq!(again["external_id"], external_id.as_str());
    assert_eq!(again["changed"], json!([]));
    assert_eq!(again["status"], "unchanged");

    standin.enforce_iam();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 16, 4, 13);
    let run = upload_with(
        standin.imgpub(),
        &file,
        "made-by-create-publisher",
        &["--role-arn", &arn, "--external-id", &external_id],
    );
    assert!(run.json()["HVM"].as_str().unwrap().starts_with("ami-"));
    let run = upload_with(
        standin.imgpub(),
        &file,
        "wrong-id",
        &["--role-arn", &arn, "--external-id", "not-the-one"],
    );
    assert_eq!(run.code, 1);
    let line = run.error_line();
    // Issue #29, item 7: the fix is named, not only the SDK's AccessDenied.
    assert!(
        line.contains(&format!("role {arn}")) && line.contains("check --external-id"),
        "{line}"
    );
}

#[tokio::test]
async fn create_publisher_makes_a_user_whose_key_is_only_in_a_private_file() {
    let standin = Standin::start();
    let (ami, _) = common::api_image(&standin, REGION, "os-7", &[("stream", "stable")]).await;
    let dir = TempDir::new();
    let key_file = dir.path().join("publisher.credentials");
    let make = || ssm_user_publisher(&standin, "ci", &key_file).run();
    let out = make();
    let secret = secret_in(&key_file);
    // The secret is in the file only.
    assert!(!out.stdout.contains(&secret) && !out.stderr.contains(&secret));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let made = out.json();
    assert!(made["policy_arn"]
        .as_str()
        .unwrap()
        .ends_with(":policy/imgpub-publisher-ci"));
    assert_eq!(
        made["changed"],
        json!(["user", "policy", "attachment", "access-key"])
    );
    // A rerun makes no second key (and so needs no new file).
    let again = make().json();
    assert_eq!(again["changed"], json!([]));

    standin.enforce_iam();
    let as_ci = || {
        standin
            .imgpub()
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .secret(&secret)
    };
    let ssm = as_ci()
        .args(["aws", "publish-ssm", "--region", REGION, "--image", &ami])
        .args(["--parameter", "/os/{tag:stream}/latest"])
        .arg_path("--credentials-file", &key_file)
        .run();
    assert_eq!(ssm.code, 0, "{}", ssm.stderr);
    assert!(ssm.stdout.contains("/os/stable/latest"), "{}", ssm.stdout);

    // Outside --ssm-prefix: the preflight stops it, naming the parameter's ARN.
    let outside = as_ci()
        .args(["aws", "publish-ssm", "--region", REGION, "--image", &ami])
        .args(["--parameter", "/other/latest"])
        .arg_path("--credentials-file", &key_file)
        .run();
    assert_eq!(outside.code, 1, "{}", outside.stderr);
    assert!(
        outside.error_line().contains("parameter/other/latest"),
        "{}",
        outside.stderr
    );
}

#[tokio::test]
async fn every_statement_of_each_commands_policy_is_needed() {
    let standin = Standin::start();
    let (ami, snap) = common::api_image(&standin, REGION, "os-8", &[("stream", "stable")]).await;
    common::mark_managed(&standin, REGION, &[&ami, &snap]).await;
    common::make_public(&standin, REGION, &ami).await;
    standin.enforce_iam();
    let mutating = [
        "ec2.ModifyImageAttribute",
        "ec2.ModifySnapshotAttribute",
        "ec2.CopyImage",
        "ec2.CreateTags",
        "ec2.DeregisterImage",
        "ec2.DeleteSnapshot",
        "ssm.PutParameter",
    ];
    let cases: Vec<(&str, Vec<&str>, Vec<String>)> = vec![
        (
            "grant",
            vec![],
            vec![
                "aws".into(),
                "grant".into(),
                "--image".into(),
                ami.clone(),
                "--user".into(),
                SHARE_WITH.into(),
                "--snapshot".into(),
            ],
        ),
        (
            "copy",
            // Named, the region copied from is the only one whose AMIs CopyImage reads
            // without imgpub's tag on the copy.
            vec!["--source-region", REGION],
            vec![
                "aws".into(),
                "copy-regions".into(),
                "--image".into(),
                ami.clone(),
                "us-west-2".into(),
            ],
        ),
        (
            "ssm",
            vec!["--ssm-prefix", "/os/"],
            vec![
                "aws".into(),
                "publish-ssm".into(),
                "--image".into(),
                ami.clone(),
                "--parameter".into(),
                "/os/latest".into(),
            ],
        ),
        (
            "delete",
            vec![],
            vec![
                "aws".into(),
                "delete-image".into(),
                "--ami".into(),
                ami.clone(),
                "--snapshot".into(),
                "detectFromAMI".into(),
            ],
        ),
    ];
    for (command, extra, run_args) in cases {
        let mut args = vec!["--for", command];
        args.extend(extra);
        let document = policy(&standin, &args);
        for (i, statement) in document["Statement"].as_array().unwrap().iter().enumerate() {
            let sid = statement["Sid"].as_str().unwrap();
            // A copy deletes a snapshot only to redo a failed copy (its own, tagged as
            // imgpub's), which this run has none of. The reads of what is already shared
            // are not needed, only spare a change (tests/each_action.rs: Degrades).
            if sid == "Preflight"
                || (command == "copy" && sid == "OwnSnapshots")
                || rerun_reads_only(statement)
            {
                continue;
            }
            let name = format!("{command}-without-{i}");
            let keys = user_with(&standin, &name, &without_statement(&document, sid)).await;
            standin.reset_requests();
            let run = signed_by(standin.imgpub(), &keys)
                .args(&run_args)
                .args(["--region", REGION])
                .run();
            assert_eq!(run.code, 1, "{command} without {sid}: {}", run.stderr);
            assert_names_an_action(&run, statement, &format!("{command} without {sid}"));
            let counts = standin.counts();
            for action in mutating {
                assert_eq!(
                    common::count(&counts, action),
                    0,
                    "{command} without {sid}: {action}: {counts}"
                );
            }
        }
    }
    // The AMI is still there and still public.
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(REGION));
    assert_eq!(common::launch_permissions(&ec2, &ami).await, ["group:all"]);
}

#[tokio::test]
async fn create_publisher_trusts_github_actions_of_one_repository() {
    let standin = Standin::start();
    let out = create_publisher(
        &standin,
        &[
            "--role",
            "gh-publisher",
            "--github-repo",
            "org/os:ref:refs/heads/main",
        ],
    );
    let arn = out["role_arn"].as_str().unwrap();
    assert!(arn.ends_with(":role/gh-publisher"), "{out}");
    assert!(out.get("external_id").is_none(), "{out}");
    let role = standin
        .iam()
        .get_role()
        .role_name("gh-publisher")
        .send()
        .await
        .unwrap();
    let trust =
        imgpub::testing::parse_policy(role.role().unwrap().assume_role_policy_document().unwrap())
            .unwrap();
    let statement = &trust["Statement"][0];
    assert_eq!(statement["Action"], "sts:AssumeRoleWithWebIdentity");
    assert_eq!(
        statement["Principal"]["Federated"],
        format!("arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com")
    );
    assert_eq!(
        statement["Condition"]["StringLike"]["token.actions.githubusercontent.com:sub"],
        "repo:org/os:ref:refs/heads/main"
    );
    let providers = standin
        .iam()
        .list_open_id_connect_providers()
        .send()
        .await
        .unwrap();
    assert_eq!(providers.open_id_connect_provider_list().len(), 1);
    // A rerun finds the provider and the role as they should be.
    let again = create_publisher(
        &standin,
        &[
            "--role",
            "gh-publisher",
            "--github-repo",
            "org/os:ref:refs/heads/main",
        ],
    );
    assert_eq!(again["changed"], json!([]));
    let bad = standin
        .imgpub()
        .args([
            "aws",
            "create-publisher",
            "--role",
            "x",
            "--github-repo",
            "no-slash",
        ])
        .run();
    assert_eq!(bad.code, 2);
    assert_eq!(standin.counts()["iam.CreateRole"], 1);
}

#[tokio::test]
async fn without_simulate_principal_policy_ec2_dry_run_still_checks() {
    let standin = Standin::start();
    let (ami, snap) = common::api_image(&standin, REGION, "os-9", &[]).await;
    common::mark_managed(&standin, REGION, &[&ami, &snap]).await;
    let document = policy(&standin, &["--for", "grant"]);
    standin.enforce_iam();
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(REGION));
    let grant = |keys: &(String, String), extra: &[&str]| {
        signed_by(standin.imgpub(), keys)
            .args(["aws", "grant", "--region", REGION, "--image", &ami])
            .args(["--user", SHARE_WITH])
            .args(extra)
            .run()
    };

    // No simulation and no ModifyImageAttribute: DryRun finds it before the change.
    let without_both = without_statement(&without_statement(&document, "Preflight"), "OwnImages");
    let keys = user_with(&standin, "no-sim-no-images", &without_both).await;
    let run = grant(&keys, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let err = run.error_line();
    assert!(err.contains("ec2:ModifyImageAttribute"), "{err}");
    assert!(common::launch_permissions(&ec2, &ami).await.is_empty());
    assert_eq!(
        common::count(&standin.counts(), "ec2.ModifyImageAttribute"),
        0
    );

    // No simulation only: DryRun allows every call grant makes, so nothing is unchecked
    // and the run goes on; require accepts that too.
    let keys = user_with(
        &standin,
        "no-sim",
        &without_statement(&document, "Preflight"),
    )
    .await;
    let run = grant(&keys, &["--preflight", "require"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        common::launch_permissions(&ec2, &ami).await,
        [format!("user:{SHARE_WITH}")]
    );
}

/// How a publisher made by `create-publisher` signs in: the flags after the command.
enum Publisher {
    Role {
        arn: String,
        external_id: String,
    },
    User {
        key_file: std::path::PathBuf,
        secret: String,
    },
}

impl Publisher {
    /// `create-publisher` in `mode` (`role` or `user`) named `name`, for `policy_flags`.
    fn create(
        standin: &Standin,
        dir: &Path,
        mode: &str,
        name: &str,
        policy_flags: &[&str],
    ) -> Publisher {
        if mode == "role" {
            let args = [
                &[
                    "--role",
                    name,
                    "--trust-account",
                    ACCOUNT,
                    "--generate-external-id",
                ],
                policy_flags,
            ]
            .concat();
            let out = create_publisher(standin, &args);
            return Publisher::Role {
                arn: out["role_arn"].as_str().unwrap().to_string(),
                external_id: out["external_id"].as_str().unwrap().to_string(),
            };
        }
        let key_file = dir.join(format!("{name}.credentials"));
        standin
            .imgpub()
            .args([
                "aws",
                "create-publisher",
                "--region",
                REGION,
                "--user",
                name,
            ])
            .arg_path("--key-file", &key_file)
            .args(policy_flags)
            .run()
            .json();
        let secret = secret_in(&key_file);
        Publisher::User { key_file, secret }
    }

    /// Runs imgpub with `args` as this publisher (and only its credentials).
    fn run(&self, standin: &Standin, args: &[&str]) -> Run {
        let cmd = standin.imgpub().args(args).args(["--region", REGION, "-v"]);
        match self {
            Publisher::Role { arn, external_id } => cmd
                .args(["--role-arn", arn, "--external-id", external_id])
                .run(),
            Publisher::User { key_file, secret } => cmd
                .env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY")
                .arg_path("--credentials-file", key_file)
                .secret(secret)
                .run(),
        }
    }
}

#[tokio::test]
async fn publishers_made_by_create_publisher_run_each_command_with_exactly_its_policy() {
    let standin = Standin::initialized();
    standin.enforce_iam();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 16, 4, 17);
    for mode in ["role", "user"] {
        let who = |cmd: &str, flags: &[&str]| {
            Publisher::create(&standin, dir.path(), mode, &format!("{mode}-{cmd}"), flags)
        };
        // upload, public and shared.
        let publisher = who("upload", UPLOAD_POLICY);
        let name = format!("{mode}-os");
        let run = publisher.run(
            &standin,
            &[
                "aws",
                "upload",
                "--bucket",
                "s3://images/ci",
                "--name",
                &name,
                "--file",
                file.to_str().unwrap(),
                "--public",
                "--grant-user",
                SHARE_WITH,
                "--grant-user-snapshot",
                SHARE_WITH,
            ],
        );
        let ami = run.json()["HVM"].as_str().unwrap().to_string();
        assert!(
            run.stderr.contains("permission preflight: all"),
            "{}",
            run.stderr
        );

        // grant (the AMI is public, its snapshot shared: --public and that account for
        // the policy).
        let publisher = who(
            "grant",
            &["--for", "grant", "--public", "--share-with", "444455556666"],
        );
        let run = publisher.run(
            &standin,
            &[
                "aws",
                "grant",
                "--image",
                &ami,
                "--user",
                "444455556666",
                "--snapshot",
            ],
        );
        assert_eq!(run.code, 0, "{mode} grant: {}", run.stderr);

        // copy-regions to two regions.
        let publisher = who(
            "copy",
            &[
                "--for",
                "copy",
                "--public",
                "--share-with",
                &format!("{SHARE_WITH},444455556666"),
            ],
        );
        let run = publisher.run(
            &standin,
            &[
                "aws",
                "copy-regions",
                "--image",
                &ami,
                "us-west-2",
                "eu-west-1",
            ],
        );
        assert_eq!(run.code, 0, "{mode} copy: {}", run.stderr);
        assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);

        // publish-ssm under its prefix.
        let publisher = who("ssm", &["--for", "ssm", "--ssm-prefix", "/os/"]);
        let parameter = format!("/os/{mode}/latest");
        let run = publisher.run(
            &standin,
            &[
                "aws",
                "publish-ssm",
                "--image",
                &ami,
                "--parameter",
                &parameter,
            ],
        );
        assert_eq!(run.code, 0, "{mode} ssm: {}", run.stderr);

        // delete-image, AMI and snapshot.
        let publisher = who("delete", &["--for", "delete"]);
        let run = publisher.run(
            &standin,
            &[
                "aws",
                "delete-image",
                "--ami",
                &ami,
                "--snapshot",
                "detectFromAMI",
            ],
        );
        assert_eq!(run.json()["image"], ami.as_str(), "{mode} delete");
    }
}

/// `--via ebs-direct`: the printed policy has the ebs: actions and no S3 or import ones; a
/// publisher holding exactly it publishes through the EBS direct APIs, and without any one
/// statement stops in the preflight naming what it lacks, before a block is written.
#[tokio::test]
async fn the_ebs_direct_policy_is_exactly_what_a_direct_publish_needs() {
    let standin = Standin::start();
    let document = policy(
        &standin,
        &[
            "--for",
            "upload",
            "--via",
            "ebs-direct",
            "--regions",
            REGION,
            "--share-with",
            SHARE_WITH,
        ],
    );
    let text = document.to_string();
    for action in [
        "ebs:StartSnapshot",
        "ebs:PutSnapshotBlock",
        "ebs:CompleteSnapshot",
    ] {
        assert!(text.contains(action), "{action} missing: {text}");
    }
    // A resume reads its local block journal, never the pending snapshot (EBS refuses).
    assert!(!text.contains("ebs:ListSnapshotBlocks"), "{text}");
    // StartSnapshot tags the snapshot as it starts it (ec2:CreateTags on snapshots with
    // ec2:CreateAction), and only with imgpub's tag on (aws:RequestTag); no other snapshot
    // can be tagged but imgpub's own.
    let statement = |sid: &str| {
        document["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no {sid} in {document}"))
            .to_string()
    };
    let on_create = statement("TagSnapshotsOnCreate");
    assert!(
        on_create.contains("ec2:CreateTags") && on_create.contains("StartSnapshot"),
        "{text}"
    );
    assert!(!statement("Snapshots").contains("ec2:CreateTags"), "{text}");
    assert!(
        statement("OwnSnapshots").contains("ec2:CreateTags"),
        "{text}"
    );
    let new = statement("StartedSnapshots");
    assert!(
        new.contains("ebs:StartSnapshot") && new.contains("aws:RequestTag/imgpub:managed"),
        "{new}"
    );
    // Never on a parent (without --delta): a child reads every block of its parent.
    assert!(new.contains("\"ebs:ParentSnapshot\":\"true\""), "{new}");
    for absent in ["s3:", "ec2:ImportSnapshot", "iam:PassRole"] {
        assert!(!text.contains(absent), "{absent} in {text}");
    }

    standin.enforce_iam();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 16, 4, 7);
    let direct = |cmd: Imgpub, name: &str| {
        cmd.args([
            "aws",
            "upload",
            "--region",
            REGION,
            "--via",
            "ebs-direct",
            "-v",
        ])
        .arg_path("--file", &file)
        .args(["--name", name, "--tags", "stream=stable"])
        .args([
            "--grant-user",
            SHARE_WITH,
            "--grant-user-snapshot",
            SHARE_WITH,
        ])
        .run()
    };
    let publisher = user_with(&standin, "direct-publisher", &document).await;
    let run = direct(signed_by(standin.imgpub(), &publisher), "direct-1");
    let out = run.json();
    assert!(out["HVM"].as_str().is_some(), "{out}");
    assert!(
        run.stderr.contains("permission preflight: all"),
        "{}",
        run.stderr
    );

    // A leaked credential holding it cannot start a snapshot on another one (the child
    // would read every block of it, and could be registered and shared); it can start one
    // on none, as publishing does.
    let parent = out["SnapshotID"].as_str().unwrap().to_string();
    let ebs = aws_sdk_ebs::Client::new(&standin.sdk_with(REGION, &publisher.0, &publisher.1));
    let managed = aws_sdk_ebs::types::Tag::builder()
        .key("imgpub:managed")
        .value("true")
        .build();
    let start = |parent: Option<&str>| {
        ebs.start_snapshot()
            .volume_size(1)
            .tags(managed.clone())
            .set_parent_snapshot_id(parent.map(str::to_string))
            .send()
    };
    let denied = start(Some(&parent)).await.unwrap_err();
    assert_eq!(
        denied.as_service_error().and_then(|e| e.meta().code()),
        Some("AccessDeniedException"),
        "{denied:?}"
    );
    start(None).await.unwrap();
    // `--delta` allows it: a delta upload on that snapshot publishes.
    let delta = policy(
        &standin,
        &[
            "--for",
            "upload",
            "--via",
            "ebs-direct",
            "--regions",
            REGION,
            "--share-with",
            SHARE_WITH,
            "--delta",
        ],
    );
    let delta_publisher = user_with(&standin, "delta-publisher", &delta).await;
    let run = signed_by(standin.imgpub(), &delta_publisher)
        .args([
            "aws",
            "upload",
            "--region",
            REGION,
            "--via",
            "ebs-direct",
            "-v",
        ])
        .arg_path("--file", &file)
        .args([
            "--name",
            "direct-2",
            "--tags",
            "stream=stable",
            "--parent",
            &parent,
        ])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("on {parent} (0 blocks sent")),
        "{}",
        run.stderr
    );

    each_statement_is_needed(&standin, &document, "direct-without", |keys, name| {
        direct(signed_by(standin.imgpub(), keys), name)
    })
    .await;
}

/// EC2 authorizes CopyImage on the source AMI too (EC2 User Guide, "Grant permissions to
/// copy Amazon EC2 AMIs"): `policy --for copy --regions TARGETS` run with `--region SOURCE`
/// (as docs/permissions.md says) grants it there, and its holder copies with the preflight
/// off, so only the stand-in's evaluator decides. Without the source statement it cannot.
#[tokio::test]
async fn a_copy_publisher_holding_the_printed_policy_copies_from_the_source_region() {
    let standin = Standin::start();
    let (ami, _) = common::api_image(&standin, REGION, "os-copy-src", &[]).await;
    standin.enforce_iam();
    let document = policy(
        &standin,
        &[
            "--for",
            "copy",
            "--regions",
            "us-west-2,eu-west-1",
            "--region",
            REGION,
        ],
    );
    let statement = |sid: &str| {
        document["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no {sid}: {document}"))
            .clone()
    };
    let images = statement("CopySourceImages");
    assert_eq!(
        images["Resource"],
        json!([format!("arn:aws:ec2:{REGION}::image/*")])
    );
    assert_eq!(images["Action"], json!(["ec2:CopyImage"]));
    assert_eq!(
        statement("CopySourceImageReads")["Action"],
        json!(["ec2:DescribeImageAttribute"])
    );
    assert_eq!(
        statement("CopySourceSnapshotReads")["Action"],
        json!(["ec2:DescribeSnapshotAttribute"])
    );
    // Nothing else of the source region: the copy identity changes nothing there.
    let others = document["Statement"].as_array().unwrap().iter();
    for statement in others.filter(|s| !s["Sid"].as_str().unwrap().starts_with("CopySource")) {
        assert!(
            !statement["Resource"].to_string().contains(REGION),
            "{statement}"
        );
    }

    let copy = |keys: &(String, String)| {
        signed_by(standin.imgpub(), keys)
            .args(["aws", "copy-regions", "--image", &ami, "us-west-2"])
            .args(["--region", REGION, "--preflight", "off"])
            .run()
    };
    // The policy as it was before 2024-10-28 mattered: CopyImage on the new AMI only.
    let mut narrowed = document.clone();
    for statement in narrowed["Statement"].as_array_mut().unwrap() {
        if statement["Sid"] == "CopySourceImages" {
            statement["Resource"] = json!(["arn:aws:ec2:us-west-2::image/*"]);
        }
    }
    let narrow = user_with(&standin, "copier-no-source", &narrowed).await;
    let run = copy(&narrow);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.error_line().contains("ec2:CopyImage"), "{}", run.stderr);

    let keys = user_with(&standin, "copier", &document).await;
    let run = copy(&keys);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line: Value = serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert!(line["us-west-2"]["ami"]
        .as_str()
        .unwrap()
        .starts_with("ami-"));
}

/// What would make a publisher more than a publisher is refused before any call: holding
/// `initialize` (it can rewrite the vmimport role and assume it), a GitHub trust of every
/// ref, SSM without a prefix (every parameter), wildcards or policy variables in values that
/// land in the policy.
#[test]
fn a_publisher_that_could_widen_itself_is_refused_before_any_call() {
    let standin = Standin::start();
    let publisher = |args: &[&str]| {
        standin
            .imgpub()
            .args(["aws", "create-publisher", "--region", REGION])
            .args(args)
            .run()
    };
    let trusted = [
        "--role",
        "ci",
        "--trust-account",
        ACCOUNT,
        "--generate-external-id",
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            [&trusted[..], &["--for", "upload,initialize"]].concat(),
            "cannot hold --for initialize",
        ),
        (
            vec!["--role", "gh", "--github-repo", "org/os"],
            "would trust every branch, tag, pull request",
        ),
        (
            vec!["--role", "gh", "--github-repo", "org/os:ref:refs/heads/*"],
            "has a wildcard",
        ),
        (
            vec!["--role", "gh", "--github-repo", "org/os:pull_request"],
            "ref:refs/heads/BRANCH",
        ),
        (
            [&trusted[..], &["--for", "ssm"]].concat(),
            "--for ssm needs --ssm-prefix",
        ),
        (
            [&trusted[..], &["--for", "ssm", "--ssm-prefix", "/os/*"]].concat(),
            "--ssm-prefix \"/os/*\" has a wildcard",
        ),
        (
            [&trusted[..], &["--bucket", "images/${aws:username}"]].concat(),
            "policy variable",
        ),
        (
            [
                &trusted[..],
                &[
                    "--permissions-boundary",
                    "arn:aws:iam::123456789012:policy/*",
                ],
            ]
            .concat(),
            "--permissions-boundary",
        ),
    ];
    for (args, message) in cases {
        standin.reset_requests();
        let run = publisher(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.error_line().contains(message),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(standin.counts(), json!({}), "{args:?}: nothing was called");
    }
    // A wildcard subject only when asked for by name.
    let any = publisher(&[
        "--role",
        "gh-any",
        "--github-repo",
        "org/os",
        "--github-any-ref",
    ]);
    assert_eq!(any.code, 0, "{}", any.stderr);
    // `policy` refuses the same values, and prints initialize's admin policy with a warning.
    let ssm = standin
        .imgpub()
        .args(["aws", "policy", "--for", "ssm"])
        .run();
    assert_eq!(ssm.code, 2, "{}", ssm.stderr);
    let admin = standin
        .imgpub()
        .args(["aws", "policy", "--for", "initialize", "--account", ACCOUNT])
        .run();
    assert_eq!(admin.code, 0, "{}", admin.stderr);
    assert!(
        admin.stderr.contains("account admin's policy"),
        "{}",
        admin.stderr
    );
}

/// `create-publisher` as an admin, returning the run (not only its JSON).
fn create_publisher_run(standin: &Standin, args: &[&str]) -> Run {
    standin
        .imgpub()
        .args(["aws", "create-publisher", "--region", REGION])
        .args(args)
        .run()
}

/// The writes create-publisher made since the last reset.
fn iam_writes(standin: &Standin) -> Vec<String> {
    let counts = standin.counts();
    counts
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| {
            let call = k.trim_start_matches("iam.");
            k.starts_with("iam.")
                && !["Get", "List", "Simulate"]
                    .iter()
                    .any(|read| call.starts_with(read))
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn an_existing_role_is_taken_over_only_when_asked_and_its_trust_only_replaced_when_asked() {
    let standin = Standin::start();
    let iam = standin.iam();
    // A role of that name made by someone else, holding an admin policy, trusted by a
    // principal narrower than the account.
    let theirs = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:role/ci-runner")},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": "kept-id"}}}]});
    iam.create_role()
        .role_name("ci-publisher")
        .assume_role_policy_document(theirs.to_string())
        .send()
        .await
        .unwrap();
    let admin = format!("arn:aws:iam::{ACCOUNT}:policy/Everything");
    iam.create_policy()
        .policy_name("Everything")
        .policy_document(json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}).to_string())
        .send()
        .await
        .unwrap();
    iam.attach_role_policy()
        .role_name("ci-publisher")
        .policy_arn(&admin)
        .send()
        .await
        .unwrap();
    let flags = [
        &["--role", "ci-publisher", "--trust-account", ACCOUNT][..],
        &["--external-id", "kept-id"],
        UPLOAD_POLICY,
    ]
    .concat();

    standin.reset_requests();
    let refused = create_publisher_run(&standin, &flags);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    let line = refused.error_line();
    assert!(line.contains("--adopt") && line.contains(&admin), "{line}");
    assert_eq!(iam_writes(&standin), Vec::<String>::new());

    // Adopted: the trust differs (theirs names a role, ours the account), so nothing is
    // changed until --replace-trust, and the error shows both.
    let adopt = [&flags[..], &["--adopt"]].concat();
    let differs = create_publisher_run(&standin, &adopt);
    assert_eq!(differs.code, 2, "{}", differs.stderr);
    let line = differs.error_line();
    assert!(
        line.contains("role/ci-runner") && line.contains("--replace-trust"),
        "{line}"
    );
    assert_eq!(iam_writes(&standin), Vec::<String>::new());

    let taken = create_publisher_run(&standin, &[&adopt[..], &["--replace-trust"]].concat());
    let out = taken.json();
    assert_eq!(out["other_policies"], json!([admin]), "{out}");
    assert!(taken.stderr.contains("Everything"), "{}", taken.stderr);
    assert!(
        out["changed"]
            .as_array()
            .unwrap()
            .contains(&json!("adopted")),
        "{out}"
    );
    let role = iam
        .get_role()
        .role_name("ci-publisher")
        .send()
        .await
        .unwrap();
    let tags = role.role().unwrap().tags();
    assert!(
        tags.iter()
            .any(|t| t.key() == "imgpub:publisher" && t.value() == "adopted"),
        "{tags:?}"
    );
    // The admin policy is reported, never removed.
    let attached = iam
        .list_attached_role_policies()
        .role_name("ci-publisher")
        .send()
        .await
        .unwrap();
    assert_eq!(attached.attached_policies().len(), 1);
    // A rerun knows it now, and changes nothing.
    let again = create_publisher_run(&standin, &flags).json();
    assert_eq!(again["changed"], json!([]), "{again}");

    // A role create-publisher makes carries the tag from its creation.
    let made = create_publisher_run(
        &standin,
        &[
            &["--role", "fresh-publisher", "--trust-account", ACCOUNT][..],
            &["--generate-external-id"],
            UPLOAD_POLICY,
        ]
        .concat(),
    )
    .json();
    assert!(made["role_arn"]
        .as_str()
        .unwrap()
        .ends_with("role/fresh-publisher"));
    let role = iam
        .get_role()
        .role_name("fresh-publisher")
        .send()
        .await
        .unwrap();
    assert!(role
        .role()
        .unwrap()
        .tags()
        .iter()
        .any(|t| t.key() == "imgpub:publisher" && t.value() == "created"));
}

/// The access keys of a user, as (id, active).
async fn keys_of(iam: &aws_sdk_iam::Client, user: &str) -> Vec<(String, bool)> {
    let out = iam.list_access_keys().user_name(user).send().await.unwrap();
    out.access_key_metadata()
        .iter()
        .map(|k| {
            (
                k.access_key_id().unwrap().to_string(),
                k.status() == Some(&aws_sdk_iam::types::StatusType::Active),
            )
        })
        .collect()
}

#[tokio::test]
async fn keys_are_made_only_for_our_users_and_rotation_retires_the_old_one() {
    let standin = Standin::start();
    let iam = standin.iam();
    let dir = TempDir::new();
    let user = |name: &str, file: &str, extra: &[&str]| {
        ssm_user_publisher(&standin, name, &dir.path().join(file))
            .args(extra)
            .run()
    };
    // A person's user, made elsewhere, without a key.
    iam.create_user().user_name("alice").send().await.unwrap();
    let refused = user("alice", "alice-1", &[]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.error_line().contains("--adopt"),
        "{}",
        refused.stderr
    );
    let adopted = user("alice", "alice-2", &["--adopt"]);
    let out = adopted.json();
    assert!(out.get("access_key_id").is_none(), "{out}");
    assert!(
        adopted.stderr.contains("--rotate-key"),
        "{}",
        adopted.stderr
    );
    assert!(!dir.path().join("alice-2").exists());
    assert_eq!(keys_of(&iam, "alice").await, vec![]);
    // Later runs know it was adopted, and still make no key unless told.
    user("alice", "alice-3", &[]).json();
    assert_eq!(keys_of(&iam, "alice").await, vec![]);

    // Our own user: a key at once; --rotate-key makes a second and deactivates the first
    // only once the second is written; --delete-old-key deletes it.
    let first = user("ci", "ci-1", &[]).json()["access_key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let rotated = user("ci", "ci-2", &["--rotate-key"]).json();
    let second = rotated["access_key_id"].as_str().unwrap().to_string();
    assert_eq!(rotated["deactivated_keys"], json!([first]));
    let mut keys = keys_of(&iam, "ci").await;
    keys.sort_by_key(|(id, _)| id != &first);
    assert_eq!(keys, vec![(first.clone(), false), (second.clone(), true)]);
    assert!(std::fs::read_to_string(dir.path().join("ci-2"))
        .unwrap()
        .contains(&second));
    // Two keys are IAM's most: the inactive one is deleted by hand first.
    iam.delete_access_key()
        .user_name("ci")
        .access_key_id(&first)
        .send()
        .await
        .unwrap();
    let third = user("ci", "ci-3", &["--rotate-key", "--delete-old-key"]).json();
    assert_eq!(third["deleted_keys"], json!([second]));
    let keys = keys_of(&iam, "ci").await;
    assert_eq!(keys.len(), 1);
    assert_eq!(json!(keys[0].0), third["access_key_id"]);
}

#[tokio::test]
async fn a_key_that_cannot_be_written_is_not_left_behind() {
    use std::os::unix::process::CommandExt;
    let standin = Standin::start();
    let dir = TempDir::new();
    // A directory that is not there: refused before anything is made.
    standin.reset_requests();
    let missing = ssm_user_publisher(&standin, "ci", &dir.path().join("no-such-dir/key")).run();
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.error_line().contains("does not exist"),
        "{}",
        missing.stderr
    );
    assert_eq!(iam_writes(&standin), Vec::<String>::new());

    // A file that can be created but not written (a file size limit of 0, as on a full
    // disk): the key made for it is deleted again, and the empty file removed.
    let key_file = dir.path().join("key");
    let mut cmd = ssm_user_publisher(&standin, "ci", &key_file);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: libc::RLIM_INFINITY,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &none);
            Ok(())
        });
    }
    let run = cmd.run();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.error_line().contains("writing the new access key"),
        "{}",
        run.stderr
    );
    let counts = standin.counts();
    assert_eq!(counts["iam.CreateAccessKey"], 1, "{counts}");
    assert_eq!(counts["iam.DeleteAccessKey"], 1, "{counts}");
    assert_eq!(keys_of(&standin.iam(), "ci").await, vec![]);
    assert!(!key_file.exists());
    // The rerun (with room to write) makes the key.
    let out = ssm_user_publisher(&standin, "ci", &key_file).run().json();
    assert_eq!(keys_of(&standin.iam(), "ci").await.len(), 1, "{out}");
}

#[tokio::test]
async fn a_publisher_shares_snapshots_only_as_far_as_its_policy_names() {
    let standin = Standin::initialized();
    let (ami, snap) = common::api_image(&standin, REGION, "admins-own", &[]).await;
    common::mark_managed(&standin, REGION, &[&ami, &snap]).await;
    let narrow = policy(&standin, &["--for", "upload,grant", "--regions", REGION]);
    let wide = policy(
        &standin,
        &[
            "--for",
            "upload,grant",
            "--regions",
            REGION,
            "--share-with",
            SHARE_WITH,
        ],
    );
    let narrow_key = user_with(&standin, "no-sharing", &narrow).await;
    let wide_key = user_with(&standin, "shares-with-one", &wide).await;
    standin.enforce_iam();
    let share = |(key, secret): &(String, String), account: &str| {
        let ec2 = aws_sdk_ec2::Client::new(&standin.sdk_with(REGION, key, secret));
        let snap = snap.clone();
        let account = account.to_string();
        async move {
            ec2.modify_snapshot_attribute()
                .snapshot_id(snap)
                .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
                .create_volume_permission(
                    aws_sdk_ec2::types::CreateVolumePermissionModifications::builder()
                        .add(
                            aws_sdk_ec2::types::CreateVolumePermission::builder()
                                .user_id(account)
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .map_err(|e| e.into_service_error().meta().code().map(str::to_owned))
        }
    };
    // Without --share-with (and --public) a leaked credential shares with no account.
    let code = share(&narrow_key, "999988887777").await.unwrap_err();
    assert_eq!(code.as_deref(), Some("UnauthorizedOperation"));
    // With it: those accounts, and no other.
    let code = share(&wide_key, "999988887777").await.unwrap_err();
    assert_eq!(code.as_deref(), Some("UnauthorizedOperation"));
    share(&wide_key, SHARE_WITH).await.unwrap();
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(REGION));
    assert_eq!(
        common::volume_permissions(&ec2, &snap).await,
        [format!("user:{SHARE_WITH}")]
    );
}

#[tokio::test]
async fn a_boundary_asked_for_later_is_put_on_the_existing_user() {
    let standin = Standin::start();
    let (ami, _) = common::api_image(&standin, REGION, "os-b", &[("stream", "stable")]).await;
    let iam = standin.iam();
    let boundary = iam
        .create_policy()
        .policy_name("describe-only")
        .policy_document(
            json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["ec2:Describe*", "iam:SimulatePrincipalPolicy"], "Resource": "*"}
            ]})
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .policy()
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    let dir = TempDir::new();
    let key_file = dir.path().join("ci.credentials");
    let make = |extra: &[&str]| {
        ssm_user_publisher(&standin, "ci", &key_file)
            .args(extra)
            .run()
    };
    make(&[]).json();
    let out = make(&["--permissions-boundary", &boundary]).json();
    assert_eq!(out["changed"], json!(["permissions-boundary"]), "{out}");
    let user = iam.get_user().user_name("ci").send().await.unwrap();
    let held = user
        .user()
        .unwrap()
        .permissions_boundary()
        .and_then(|b| b.permissions_boundary_arn())
        .map(str::to_owned);
    assert_eq!(held, Some(boundary.clone()));
    let again = make(&["--permissions-boundary", &boundary]).json();
    assert_eq!(again["changed"], json!([]), "{again}");

    // The boundary holds: the publisher's own policy allows PutParameter, the boundary not.
    standin.enforce_iam();
    let secret = secret_in(&key_file);
    let run = standin
        .imgpub()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .secret(&secret)
        .args(["aws", "publish-ssm", "--region", REGION, "--image", &ami])
        .args(["--parameter", "/os/{tag:stream}/latest"])
        .arg_path("--credentials-file", &key_file)
        .run();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.error_line().contains("ssm:"), "{}", run.stderr);
}

/// What a leaked publisher credential can do to resources it did not make: the printed
/// policy scopes every change to images and snapshots carrying imgpub's tag. The import
/// path's one exposure (EC2 cannot tag an imported snapshot at creation, so CreateTags on
/// snapshots is unscoped) and the copy's (CopyImage's source takes no tag condition) are
/// shown as docs/permissions.md names them.
#[tokio::test]
async fn a_publisher_changes_only_what_imgpub_made() {
    let standin = Standin::initialized();
    let (theirs, their_snap) = common::api_image(&standin, REGION, "admins-release", &[]).await;
    let flags = [
        "--for",
        "upload,copy,grant,delete",
        "--public",
        "--share-with",
        SHARE_WITH,
        "--bucket",
        "images/ci",
        "--regions",
        "us-east-1,us-west-2",
        "--source-region",
        REGION,
    ];
    let document = policy(&standin, &flags);
    let direct = policy(&standin, &[&flags[..], &["--via", "ebs-direct"]].concat());
    let keys = user_with(&standin, "scoped", &document).await;
    let direct_keys = user_with(&standin, "scoped-direct", &direct).await;
    standin.enforce_iam();
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk_with(REGION, &keys.0, &keys.1));
    let refused = |result: Result<(), Option<String>>, what: &str| {
        assert_eq!(
            result.unwrap_err().as_deref(),
            Some("UnauthorizedOperation"),
            "{what}"
        );
    };
    macro_rules! code {
        ($call:expr) => {
            $call
                .send()
                .await
                .map(|_| ())
                .map_err(|e| e.into_service_error().meta().code().map(str::to_owned))
        };
    }
    use aws_sdk_ec2::types::{
        CreateVolumePermission, CreateVolumePermissionModifications, LaunchPermission,
        LaunchPermissionModifications, PermissionGroup, SnapshotAttributeName, Tag,
    };
    let managed = Tag::builder().key("imgpub:managed").value("true").build();
    refused(
        code!(ec2
            .modify_image_attribute()
            .image_id(&theirs)
            .launch_permission(
                LaunchPermissionModifications::builder()
                    .add(
                        LaunchPermission::builder()
                            .group(PermissionGroup::All)
                            .build()
                    )
                    .build()
            )),
        "make the admin's AMI public",
    );
    refused(
        code!(ec2
            .modify_snapshot_attribute()
            .snapshot_id(&their_snap)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .create_volume_permission(
                CreateVolumePermissionModifications::builder()
                    .add(
                        CreateVolumePermission::builder()
                            .user_id(SHARE_WITH)
                            .build()
                    )
                    .build()
            )),
        "share the admin's snapshot, even with a --share-with account",
    );
    refused(
        code!(ec2.deregister_image().image_id(&theirs)),
        "deregister it",
    );
    refused(
        code!(ec2.delete_snapshot().snapshot_id(&their_snap)),
        "delete its snapshot",
    );
    refused(
        code!(ec2.create_tags().resources(&theirs).tags(managed.clone())),
        "mark the admin's AMI as imgpub's",
    );
    // No IAM at all.
    let iam = aws_sdk_iam::Client::new(&standin.sdk_with("us-east-1", &keys.0, &keys.1));
    let denied = iam.list_roles().send().await.unwrap_err();
    assert_eq!(
        denied.into_service_error().meta().code(),
        Some("AccessDenied")
    );

    // The import path's exposure, as named: a snapshot can be marked (the import's must
    // be tagged after EC2 made it), and a marked snapshot can then be deleted.
    code!(ec2
        .create_tags()
        .resources(&their_snap)
        .tags(managed.clone()))
    .unwrap();
    // The copy's: CopyImage takes no tag condition on its source, so the admin's AMI can
    // be copied (the copy is the publisher's, tagged as imgpub's; the original stays).
    let copy = aws_sdk_ec2::Client::new(&standin.sdk_with("us-west-2", &keys.0, &keys.1));
    let copied = copy
        .copy_image()
        .source_region(REGION)
        .source_image_id(&theirs)
        .name("copied-by-publisher")
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Image)
                .tags(managed.clone())
                .build(),
        )
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Snapshot)
                .tags(managed.clone())
                .build(),
        )
        .send()
        .await;
    assert!(copied.is_ok(), "{copied:?}");

    // Its own work goes through: publish (S3 and EBS direct), public and shared, copy,
    // grant, delete.
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 16, 4, 23);
    let run = upload_with(signed_by(standin.imgpub(), &keys), &file, "scoped-s3", &[]);
    let ami = run.json()["HVM"].as_str().unwrap().to_string();
    assert!(
        run.stderr.contains("permission preflight: all"),
        "{}",
        run.stderr
    );
    let run = upload_with(
        signed_by(standin.imgpub(), &direct_keys),
        &file,
        "scoped-direct",
        &["--via", "ebs-direct"],
    );
    assert!(run.json()["HVM"].as_str().is_some(), "{}", run.stderr);
    let run = signed_by(standin.imgpub(), &keys)
        .args([
            "aws",
            "copy-regions",
            "--region",
            REGION,
            "--image",
            &ami,
            "us-west-2",
        ])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = signed_by(standin.imgpub(), &keys)
        .args([
            "aws", "grant", "--region", REGION, "--image", &ami, "--user", SHARE_WITH,
        ])
        .args(["--snapshot"])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = signed_by(standin.imgpub(), &keys)
        .args(["aws", "delete-image", "--region", REGION, "--ami", &ami])
        .args(["--snapshot", "detectFromAMI"])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    // And the admin's AMI is still there, private.
    let admin = aws_sdk_ec2::Client::new(&standin.sdk(REGION));
    assert!(common::launch_permissions(&admin, &theirs).await.is_empty());
}

/// The snapshot behind an AMI and the key it is encrypted with (None: not encrypted).
async fn snapshot_key(standin: &Standin, region: &str, ami: &str) -> (String, Option<String>) {
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(region));
    let image = ec2.describe_images().image_ids(ami).send().await.unwrap();
    let snapshot = image.images()[0].block_device_mappings()[0]
        .ebs()
        .and_then(|e| e.snapshot_id())
        .unwrap()
        .to_string();
    let described = ec2
        .describe_snapshots()
        .snapshot_ids(&snapshot)
        .send()
        .await
        .unwrap();
    let s = &described.snapshots()[0];
    let key = s
        .encrypted()
        .unwrap_or(false)
        .then(|| s.kms_key_id().unwrap_or("(default)").to_string());
    (snapshot, key)
}

/// Every encrypted path under the enforcing stand-in (which checks the kms: actions on a
/// customer managed key, as EBS documents them), each with exactly the policy `policy`
/// prints: EBS direct and import with `--kms-key`, a copy of the AMI made under it, and
/// the account's encryption by default with the AWS managed key (no kms: needed). A policy
/// printed without `--kms-key` stops the keyed upload in the preflight, naming kms:.
#[tokio::test]
async fn each_encrypted_path_runs_with_exactly_the_printed_policy() {
    let standin = Standin::start();
    let key = common::customer_key(&standin, REGION);
    let init = standin
        .imgpub()
        .args([
            "aws",
            "initialize",
            "--region",
            REGION,
            "--bucket",
            "images",
        ])
        .args(["--kms-key", &key])
        .run();
    assert_eq!(init.code, 0, "{}", init.stderr);
    standin.enforce_iam();
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 16, 4, 23);
    let printed = |extra: &[&str]| {
        let mut args = vec!["--region", REGION, "--bucket", "images/ci"];
        args.extend_from_slice(extra);
        policy(&standin, &args)
    };
    let upload = |keys: &(String, String), name: &str, extra: &[&str]| {
        signed_by(standin.imgpub(), keys)
            .args(["aws", "upload", "--region", REGION, "-v"])
            .args(["--bucket", "s3://images/ci"])
            .arg_path("--file", &file)
            .args(["--name", name])
            .args(extra)
            .run()
    };
    let direct_copy = [
        "--for",
        "upload,copy",
        "--via",
        "ebs-direct",
        "--regions",
        "us-east-1,us-west-2,eu-west-1",
    ];

    // The keyed policy: the kms: actions on that key alone, grants only for AWS resources.
    let document = printed(&[&direct_copy[..], &["--kms-key", &key]].concat());
    let statement = |sid: &str| {
        document["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no {sid}: {document}"))
            .clone()
    };
    assert_eq!(statement("EncryptionKeys")["Resource"], json!([key]));
    // Only through EC2, and EBS for the EBS direct APIs (whose kms:ViaService AWS does not
    // name; the stand-in answers either way by its seed).
    let through_ebs = json!({"kms:ViaService": ["ec2.*", "ebs.*"]});
    assert_eq!(
        statement("EncryptionKeys")["Condition"],
        json!({"StringLike": through_ebs})
    );
    assert_eq!(
        statement("EncryptionKeyGrants")["Condition"],
        json!({"Bool": {"kms:GrantIsForAWSResource": "true"}, "StringLike": through_ebs})
    );
    let unkeyed = printed(&direct_copy);
    assert!(!unkeyed.to_string().contains("kms:"), "{unkeyed}");

    // EBS direct under the key, then a copy of that AMI.
    let publisher = user_with(&standin, "keyed-direct", &document).await;
    let run = upload(
        &publisher,
        "enc-direct",
        &["--via", "ebs-direct", "--kms-key", &key],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("permission preflight: all"),
        "{}",
        run.stderr
    );
    let ami = run.json()["HVM"].as_str().unwrap().to_string();
    assert_eq!(
        snapshot_key(&standin, REGION, &ami).await.1,
        Some(key.clone())
    );
    // A leaked credential holding that policy cannot use the key itself: no data key to
    // encrypt or decrypt with, no grant for a principal of its choosing.
    let outsider = "arn:aws:iam::999999999999:root";
    for action in ["GenerateDataKey", "CreateGrant"] {
        assert_eq!(
            kms_direct(&standin, &publisher, REGION, action, &key, outsider).as_deref(),
            Some("AccessDeniedException"),
            "{action}"
        );
    }
    let copy = signed_by(standin.imgpub(), &publisher)
        .args([
            "aws",
            "copy-regions",
            "--region",
            REGION,
            "--image",
            &ami,
            "us-west-2",
        ])
        .run();
    assert_eq!(copy.code, 0, "{}", copy.stderr);
    let line: Value = serde_json::from_str(copy.stdout.lines().next().unwrap()).unwrap();
    let copied = line["us-west-2"]["ami"].as_str().unwrap();
    // Encrypted still, under the target region's default key.
    let (_, copied_key) = snapshot_key(&standin, "us-west-2", copied).await;
    assert!(copied_key.is_some_and(|k| k != key), "copy not encrypted");

    // Without --kms-key in the policy: the keyed upload stops before it writes, and the copy
    // of the keyed AMI is refused by EC2, each naming kms:.
    let plain = user_with(&standin, "unkeyed-direct", &unkeyed).await;
    standin.reset_requests();
    let run = upload(
        &plain,
        "enc-denied",
        &["--via", "ebs-direct", "--kms-key", &key],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let err = run.error_line();
    assert!(err.contains("permission preflight"), "{err}");
    assert!(err.contains(&format!("kms:CreateGrant on {key}")), "{err}");
    assert!(
        err.contains(&format!("--kms-key {key}")),
        "the fix line names the key: {err}"
    );
    assert_nothing_changed(&standin, "unkeyed ebs-direct");
    let copy = signed_by(standin.imgpub(), &plain)
        .args([
            "aws",
            "copy-regions",
            "--region",
            REGION,
            "--image",
            &ami,
            "eu-west-1",
        ])
        .args(["--preflight", "off"])
        .run();
    assert_eq!(copy.code, 1, "{}", copy.stderr);
    let err = copy.error_line();
    assert!(err.contains("kms:") && err.contains(&key), "{err}");

    // The import under the key: the vmimport role uses it (initialize --kms-key), the
    // publisher needs no kms: for it (and `policy` refuses --kms-key where no call uses it).
    let import_policy = printed(&["--for", "upload"]);
    assert!(
        !import_policy.to_string().contains("kms:"),
        "{import_policy}"
    );
    let importer = user_with(&standin, "keyed-import", &import_policy).await;
    let run = upload(&importer, "enc-import", &["--kms-key", &key]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let ami = run.json()["HVM"].as_str().unwrap().to_string();
    assert_eq!(
        snapshot_key(&standin, REGION, &ami).await.1,
        Some(key.clone())
    );

    // Encryption by default with the AWS managed key: the policy printed without --kms-key.
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(REGION));
    ec2.enable_ebs_encryption_by_default().send().await.unwrap();
    let run = upload(&plain, "enc-default", &["--via", "ebs-direct"]);
    ec2.disable_ebs_encryption_by_default()
        .send()
        .await
        .unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let ami = run.json()["HVM"].as_str().unwrap().to_string();
    let (_, default_key) = snapshot_key(&standin, REGION, &ami).await;
    assert!(
        default_key.is_some_and(|k| k != key),
        "not encrypted by default"
    );
}

/// A leaked `--for prune` credential: it retires only what imgpub made. The admin's AMI of
/// the same name pattern cannot be deprecated, disabled, deregistered, marked as imgpub's or
/// shared; nothing can be made or shared. `release prune --apply` with it retires the
/// stream's old release and leaves the admin's AMI alone.
#[tokio::test]
async fn a_prune_credential_retires_only_what_imgpub_made() {
    let standin = Standin::start();
    let (theirs, their_snap) = common::api_image(&standin, REGION, "os-r0-x86_64", &[]).await;
    let (old, old_snap) = common::api_image(&standin, REGION, "os-r1-x86_64", &[]).await;
    let (new, new_snap) = common::api_image(&standin, REGION, "os-r2-x86_64", &[]).await;
    common::mark_managed(&standin, REGION, &[&old, &old_snap, &new, &new_snap]).await;
    for (ami, created) in [
        (&old, "2026-01-01T00:00:00.000Z"),
        (&new, "2026-02-01T00:00:00.000Z"),
    ] {
        let body = format!(r#"{{"creation_date": "{created}"}}"#);
        standin.control("POST", &format!("/_standin/images/{ami}"), Some(&body));
    }
    let document = policy(&standin, &["--for", "prune", "--regions", REGION]);
    let keys = user_with(&standin, "pruner", &document).await;
    // Planning needs only reads.
    let reads = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Action": ["ec2:DescribeImages", "ec2:DescribeSnapshots", "ec2:DescribeRegions"],
        "Resource": "*",
    }]});
    let reader = user_with(&standin, "prune-reader", &reads).await;
    standin.enforce_iam();
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk_with(REGION, &keys.0, &keys.1));
    let at = aws_smithy_types::DateTime::from_secs(4_102_444_800); // 2100
    refused!(
        ec2.enable_image_deprecation()
            .image_id(&theirs)
            .deprecate_at(at),
        "deprecate the admin's AMI"
    );
    refused!(ec2.disable_image().image_id(&theirs), "disable it");
    refused!(ec2.deregister_image().image_id(&theirs), "deregister it");
    refused!(
        ec2.delete_snapshot().snapshot_id(&their_snap),
        "delete its snapshot"
    );
    refused!(
        ec2.create_tags().resources(&theirs).tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("imgpub:managed")
                .value("true")
                .build()
        ),
        "mark it as imgpub's"
    );
    refused!(
        ec2.modify_image_attribute()
            .image_id(&new)
            .launch_permission(
                aws_sdk_ec2::types::LaunchPermissionModifications::builder()
                    .add(
                        aws_sdk_ec2::types::LaunchPermission::builder()
                            .group(aws_sdk_ec2::types::PermissionGroup::All)
                            .build()
                    )
                    .build()
            ),
        "make imgpub's own AMI public"
    );
    refused!(
        ec2.copy_image()
            .source_region(REGION)
            .source_image_id(&new)
            .name("copied"),
        "copy an AMI"
    );

    let dir = TempDir::new();
    let manifest = common::write_file(
        dir.path(),
        "prune.toml",
        &format!(
            r#"
release = "r2"
source_region = "{REGION}"
transport = "ebs-direct"
name = "os-{{release}}-{{arch}}"

[[image]]
file = "os.raw"
arch = "x86_64"
"#
        ),
    );
    let retention = common::write_file(
        dir.path(),
        "retention.toml",
        "[prune]\nkeep = 1\ngrace = \"7d\"\n",
    );
    let planned = signed_by(standin.imgpub(), &reader)
        .args(["release", "prune"])
        .arg_path("--policy", &retention)
        .args([manifest.to_str().unwrap()])
        .run();
    assert_eq!(planned.code, 0, "{}", planned.stderr);
    assert_eq!(common::json_lines(&planned).len(), 2, "{}", planned.stdout);
    // Nothing it would change is checked, or named as unchecked: the plan changes nothing.
    assert!(
        !planned.stderr.contains("not checked"),
        "{}",
        planned.stderr
    );
    let run = signed_by(standin.imgpub(), &keys)
        .args(["release", "prune", "--apply"])
        .arg_path("--policy", &retention)
        .args([manifest.to_str().unwrap()])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let acted: Vec<(String, String)> = common::json_lines(&run)
        .iter()
        .map(|l| {
            (
                l["ami"].as_str().unwrap().to_string(),
                l["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        acted,
        [
            (new.clone(), "keep".to_string()),
            (old.clone(), "deprecate".to_string())
        ]
    );
    // Prune itself never lists the admin's AMI (it selects imgpub's tag); what the policy
    // denies is the refused calls above.
    let admin = aws_sdk_ec2::Client::new(&standin.sdk(REGION));
    let described = admin
        .describe_images()
        .image_ids(&theirs)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.images()[0].deprecation_time(),
        None,
        "the admin's AMI"
    );
}

/// A leaked `release restore` credential brings back only what imgpub made: the admin's AMI
/// and snapshot in the Recycle Bin stay there, and it can neither share nor make public
/// what it restores beyond what its policy names.
#[tokio::test]
async fn a_restore_credential_brings_back_only_what_imgpub_made() {
    let standin = Standin::start();
    let rbin = aws_sdk_rbin::Client::new(&standin.sdk(REGION));
    for kind in [
        aws_sdk_rbin::types::ResourceType::Ec2Image,
        aws_sdk_rbin::types::ResourceType::EbsSnapshot,
    ] {
        // A Region-level rule: everything deleted here is kept.
        rbin.create_rule()
            .resource_type(kind)
            .retention_period(
                aws_sdk_rbin::types::RetentionPeriod::builder()
                    .retention_period_value(7)
                    .retention_period_unit(aws_sdk_rbin::types::RetentionPeriodUnit::Days)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    let (theirs, their_snap) = common::api_image(&standin, REGION, "admin-image", &[]).await;
    let (ours, our_snap) = common::api_image(&standin, REGION, "os-r1-x86_64", &[]).await;
    common::mark_managed(&standin, REGION, &[&ours, &our_snap]).await;
    let admin = standin.ec2(REGION);
    for (ami, snap) in [(&theirs, &their_snap), (&ours, &our_snap)] {
        admin.deregister_image().image_id(ami).send().await.unwrap();
        admin
            .delete_snapshot()
            .snapshot_id(snap)
            .send()
            .await
            .unwrap();
    }
    let document = policy(&standin, &["--for", "restore", "--regions", REGION]);
    let keys = user_with(&standin, "restorer", &document).await;
    standin.enforce_iam();
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk_with(REGION, &keys.0, &keys.1));
    refused!(
        ec2.restore_snapshot_from_recycle_bin()
            .snapshot_id(&their_snap),
        "their snapshot"
    );
    refused!(
        ec2.restore_image_from_recycle_bin().image_id(&theirs),
        "their AMI"
    );
    ec2.restore_snapshot_from_recycle_bin()
        .snapshot_id(&our_snap)
        .send()
        .await
        .expect("imgpub's snapshot");
    ec2.restore_image_from_recycle_bin()
        .image_id(&ours)
        .send()
        .await
        .expect("imgpub's AMI");
    // Without --public in its policy, it cannot make what it restored public.
    refused!(
        ec2.modify_image_attribute()
            .image_id(&ours)
            .launch_permission(
                aws_sdk_ec2::types::LaunchPermissionModifications::builder()
                    .add(
                        aws_sdk_ec2::types::LaunchPermission::builder()
                            .group(aws_sdk_ec2::types::PermissionGroup::All)
                            .build(),
                    )
                    .build(),
            ),
        "made public"
    );
    let listed = ec2
        .list_images_in_recycle_bin()
        .send()
        .await
        .expect("listing the bin is a read");
    let left: Vec<&str> = listed
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .collect();
    assert_eq!(left, vec![theirs.as_str()]);
}
