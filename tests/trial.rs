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
