//! `--dry-run` on every command that changes something: the stand-in's request log holds
//! only reads, stdout holds the plan (one JSON line per call that would change something),
//! and the same command without `--dry-run` then makes exactly the calls the plan named.

mod common;

use std::collections::BTreeSet;

use common::{make_raw, tempdir::TempDir, Standin};
use serde_json::Value;

const REGION: &str = "us-east-1";

/// Whether a call (`ec2.RegisterImage` in the log, `ec2:RegisterImage` in a plan) changes
/// something. The preflight's EC2 DryRun calls change nothing either.
fn changes(call: &str) -> bool {
    let action = call.split(['.', ':']).nth(1).unwrap_or(call);
    !(["Describe", "Get", "List", "Head"]
        .iter()
        .any(|read| action.starts_with(read))
        || action == "SimulatePrincipalPolicy"
        || action.starts_with("Action:DryRun"))
}

fn changing_calls_in_log(standin: &Standin) -> BTreeSet<String> {
    standin
        .counts()
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| changes(k))
        .cloned()
        .collect()
}

/// Runs `args` with `--dry-run` (checking it only read) and then without; returns the
/// run's stdout. The calls the plan named are the calls the run made.
fn dry_then_real(standin: &Standin, args: &[&str]) -> String {
    standin.reset_requests();
    let dry = standin
        .imgpub()
        .args(args)
        .args(["--region", REGION, "--dry-run"])
        .run();
    assert_eq!(dry.code, 0, "{args:?} --dry-run: {}", dry.stderr);
    assert_eq!(
        changing_calls_in_log(standin),
        BTreeSet::new(),
        "{args:?} --dry-run changed something"
    );
    // Calls made only when a step fails (`"on_failure": true`) are not expected.
    let planned: BTreeSet<String> = dry
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|call| call["on_failure"] != true)
        .map(|call| call["op"].as_str().unwrap().replacen(':', ".", 1))
        .collect();
    assert!(!planned.is_empty(), "{args:?}: an empty plan");
    assert!(planned.iter().all(|op| changes(op)), "{planned:?}");

    standin.reset_requests();
    let real = standin.imgpub().args(args).args(["--region", REGION]).run();
    assert_eq!(real.code, 0, "{args:?}: {}", real.stderr);
    assert_eq!(
        changing_calls_in_log(standin),
        planned,
        "{args:?}: the run made other calls than the plan named"
    );
    real.stdout
}

#[tokio::test]
async fn every_command_plans_with_reads_only_and_then_does_what_it_planned() {
    let standin = Standin::start();
    dry_then_real(&standin, &["aws", "initialize", "--bucket", "images"]);

    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 12, 4, 9);
    let file = file.to_str().unwrap();
    let out = dry_then_real(
        &standin,
        &[
            "aws",
            "upload",
            "--bucket",
            "s3://images/ci",
            "--file",
            file,
            "--name",
            "os-1",
            "--tags",
            "stream=stable",
            "--grant-user",
            "111122223333",
        ],
    );
    let ami: Value = serde_json::from_str(out.trim()).unwrap();
    let ami = ami["HVM"].as_str().unwrap().to_string();

    let stage = make_raw(dir.path(), "stage.raw", 8, 2, 10);
    let out = dry_then_real(
        &standin,
        &[
            "aws",
            "import-snapshot",
            "--bucket",
            "s3://images/ci",
            "--name",
            "stage",
            "--file",
            stage.to_str().unwrap(),
        ],
    );
    let snapshot: Value = serde_json::from_str(out.trim()).unwrap();
    let snapshot = snapshot["SnapshotID"].as_str().unwrap().to_string();
    dry_then_real(
        &standin,
        &[
            "aws",
            "register-ami",
            "--source-snapshot",
            &snapshot,
            "--name",
            "stage-ami",
        ],
    );

    dry_then_real(
        &standin,
        &[
            "aws",
            "copy-regions",
            "--image",
            &ami,
            "eu-west-1",
            "ap-south-1",
        ],
    );
    dry_then_real(
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
    dry_then_real(
        &standin,
        &["aws", "revoke", "--image", &ami, "--user", "444455556666"],
    );
    dry_then_real(
        &standin,
        &[
            "aws",
            "publish-ssm",
            "--image",
            &ami,
            "--parameter",
            "/os/{arch}/latest",
        ],
    );
    dry_then_real(
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
}
