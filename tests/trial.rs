//! Issue #29's trial, item by item: what a newcomer ran from the README and docs/, and
//! what imgpub now says or refuses. (Items about the summary line are in tests/summary.rs.)

mod common;

use common::Standin;

const REGION: &str = "us-east-1";

/// Item 8: a typo in an AMI or snapshot id is bad input (exit 2), refused before any
/// request; so is an `--images-from` file that is not there.
#[test]
fn typos_in_ids_and_missing_files_are_bad_input_before_any_request() {
    let standin = Standin::start();
    for args in [
        &["copy-regions", "--image", "ami-zzz", "eu-west-1"][..],
        &["delete-image", "--ami", "ami-zzz"],
        &["delete-image", "--snapshot", "snap-123"],
        &["ensure-public", "--ami", "ami-12"],
        &["grant", "--image", "ami-zzz", "--user", "111122223333"],
        &[
            "register-ami",
            "--source-snapshot",
            "snap-zz",
            "--name",
            "x",
        ],
    ] {
        standin.reset_requests();
        let run = standin
            .imgpub()
            .args(["aws"])
            .args(args)
            .args(["--region", REGION])
            .run();
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        let line = run.error_line();
        assert!(line.contains("8 or 17 hex digits"), "{args:?}: {line}");
        assert_eq!(standin.total_requests(), 0, "{args:?} made requests");
    }
    let run = standin
        .imgpub()
        .args(["aws", "publish-ssm", "--region", REGION])
        .args([
            "--images-from",
            "/nonexistent/copies.json",
            "--parameter",
            "/os/latest",
        ])
        .run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.error_line();
    assert!(
        line.contains("--images-from /nonexistent/copies.json")
            && line.contains("- to read it from stdin"),
        "{line}"
    );
}

/// Item 7: `ensure-public --ami` of an AMI that is not there once said "listing this
/// account's tagged AMIs … rerun to retry"; it is bad input, named as such.
#[test]
fn ensure_public_of_a_missing_ami_names_it() {
    let standin = Standin::start();
    let missing = "ami-0000000000000beef";
    let run = standin
        .imgpub()
        .args(["aws", "ensure-public", "--region", REGION, "--ami", missing])
        .run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.error_line();
    assert!(
        line.contains(&format!("AMI {missing} does not exist in {REGION}"))
            && !line.contains("rerun"),
        "{line}"
    );
}

/// Item 10: without credentials or `--account`, `policy` printed a policy for every
/// account (`*`) silently; it warns at the default level, and not once the account is named.
#[test]
fn a_policy_for_any_account_is_said() {
    let home = common::tempdir::TempDir::new();
    let policy = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_imgpub"))
            .env_clear()
            .env("HOME", home.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .args([
                "aws",
                "policy",
                "--region",
                REGION,
                "--bucket",
                "s3://images/ci",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = policy(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(":*:"),
        "the account is * without credentials"
    );
    assert!(
        stderr.contains("pass --account ACCOUNT to scope it"),
        "{stderr}"
    );
    let out = policy(&["--account", common::ACCOUNT]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("--account"), "{stderr}");
}

/// Item 9c: `initialize` in a second region once said "repaired the inline policy" when it
/// only added that region's bucket; it says what it updated.
#[test]
fn initialize_in_a_second_region_says_updated_not_repaired() {
    let standin = Standin::start();
    standin.initialize(REGION, "images-east");
    let run = standin
        .imgpub()
        .args([
            "aws",
            "initialize",
            "--region",
            "eu-west-1",
            "--bucket",
            "images-west",
        ])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line = run.summary();
    assert!(line.contains("updated"), "{line}");
    assert!(!run.stderr.contains("repaired"), "{}", run.stderr);
}

/// Item 9b: a multi-region command whose region fails printed its error twice (an `ERROR`
/// log line and `error:`); it prints it once.
#[tokio::test]
async fn a_failed_region_is_named_once() {
    let standin = Standin::start();
    let (ami, _) = common::api_image(&standin, REGION, "trial-9b", &[]).await;
    standin.fault(
        r#"{"action": "CopyImage", "region": "eu-west-1", "status": 400, "code": "InvalidParameterValue", "count": 10}"#,
    );
    let run = standin
        .imgpub()
        .args(["aws", "copy-regions", "--region", REGION, "--image", &ami])
        .args(["eu-west-1", "eu-central-1"])
        .run();
    assert_eq!(run.code, 1, "{}", run.stderr);
    let told: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("InvalidParameterValue"))
        .collect();
    assert_eq!(told.len(), 1, "{}", run.stderr);
    assert!(told[0].starts_with("error: "), "{}", run.stderr);
    assert!(!run.stderr.contains(" ERROR "), "{}", run.stderr);
}

/// Item 1, `--via ebs-direct`: another file under a name already published was refused
/// with exit 2 (bad input); as over S3 it is exit 1 (what exists differs from what is
/// asked), naming `--force`, before any snapshot is started.
#[test]
fn another_file_under_a_used_name_is_exit_1_over_ebs_direct_too() {
    let standin = Standin::start();
    let dir = common::tempdir::TempDir::new();
    let first = common::make_raw(dir.path(), "a.raw", 8, 2, 31);
    let second = common::make_raw(dir.path(), "b.raw", 8, 2, 32);
    let direct = |file: &std::path::Path| {
        standin
            .imgpub()
            .args(["aws", "upload", "--region", REGION, "--via", "ebs-direct"])
            .arg_path("--file", file)
            .args(["--name", "trial-1c"])
            .run()
    };
    assert_eq!(direct(&first).code, 0);
    standin.reset_requests();
    let run = direct(&second);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let line = run.error_line();
    assert!(
        line.contains("is not this image") && line.contains("--force"),
        "{line}"
    );
    assert_eq!(common::count(&standin.counts(), "ebs.StartSnapshot"), 0);
}

/// Item 5: `ensure-public --dry-run` said "fixed" though nothing was fixed; it says what
/// it would make public, and nothing is.
#[tokio::test]
async fn ensure_public_dry_run_says_what_it_would_do() {
    let standin = Standin::start();
    let (ami, _) = common::api_image(&standin, REGION, "trial-5b", &[("production", "true")]).await;
    let run = standin
        .imgpub()
        .args(["aws", "ensure-public", "--region", REGION, "--dry-run"])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("would make AMI {ami} and its snapshot")),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("fixed") && !run.stderr.contains("fixed"));
    assert!(common::launch_permissions(&standin.ec2(REGION), &ami)
        .await
        .is_empty());
}

/// Item 10: the docs' stale sentences are gone: ensure-public does not only restore AMIs
/// that "went private", a rerun does not "make sure of tags", every changing command but
/// upload-object takes --dry-run, and permissions.md names gc and initialize's actions.
#[test]
fn the_docs_say_what_the_commands_do() {
    let read = |path: &str| {
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
            .unwrap()
    };
    let regions = read("docs/regions.md");
    assert!(
        regions.contains("whether it went private or never was public"),
        "docs/regions.md"
    );
    for path in ["docs/upload.md", "docs/reliability.md"] {
        assert!(!read(path).contains("makes sure of tags"), "{path}");
    }
    let readme = read("README.md");
    assert!(
        readme.contains("except `upload-object` takes `--dry-run`"),
        "README.md"
    );
    let permissions = read("docs/permissions.md");
    for needed in [
        "`gc`",
        "iam:ListRolePolicies",
        "iam:PutRolePermissionsBoundary",
        "s3:PutLifecycleConfiguration",
    ] {
        assert!(
            permissions.contains(needed),
            "docs/permissions.md lacks {needed}"
        );
    }
}
