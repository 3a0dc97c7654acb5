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

/// Runs `args` with `--dry-run` (checking it only read, and said in words what it would
/// do) and then without; returns the dry run's words and the run's stdout. The calls the
/// plan named are the calls the run made.
fn dry_then_real(standin: &Standin, args: &[&str]) -> (String, String) {
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
    // The plan in words on stderr, for a person: what, by name, not the bare call.
    let words: Vec<&str> = dry
        .stderr
        .lines()
        .filter(|l| l.starts_with("would "))
        .collect();
    assert!(
        !words.is_empty(),
        "{args:?}: no plan in words: {}",
        dry.stderr
    );
    let bare = |l: &&str| {
        let op = l["would ".len()..].split(' ').next().unwrap_or_default();
        op.contains(':')
            && op
                .chars()
                .nth(op.find(':').unwrap() + 1)
                .is_some_and(|c| c.is_ascii_uppercase())
    };
    assert!(
        !words.iter().any(bare),
        "{args:?}: a bare call: {}",
        dry.stderr
    );
    let words = words.join("\n");

    standin.reset_requests();
    let real = standin.imgpub().args(args).args(["--region", REGION]).run();
    assert_eq!(real.code, 0, "{args:?}: {}", real.stderr);
    assert_eq!(
        changing_calls_in_log(standin),
        planned,
        "{args:?}: the run made other calls than the plan named"
    );
    (words, real.stdout)
}

#[tokio::test]
async fn every_command_plans_with_reads_only_and_then_does_what_it_planned() {
    let standin = Standin::start();
    dry_then_real(&standin, &["aws", "initialize", "--bucket", "images"]);

    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 12, 4, 9);
    let file = file.to_str().unwrap();
    let (_, out) = dry_then_real(
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
    let (_, out) = dry_then_real(
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

    let (words, _) = dry_then_real(
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
    assert!(
        words.contains(&format!(
            "would copy os-1 ({ami}, us-east-1) to eu-west-1: tags "
        )) && words.contains("stream=stable")
            && words.contains("shared with accounts 111122223333"),
        "{words}"
    );
    let (words, _) = dry_then_real(
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
    assert!(
        words.contains(&format!("would share {ami} and its snapshot snap-"))
            && words.contains("with accounts 444455556666"),
        "{words}"
    );
    dry_then_real(
        &standin,
        &["aws", "revoke", "--image", &ami, "--user", "444455556666"],
    );
    let (words, _) = dry_then_real(
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
    assert_eq!(
        words,
        format!("would create /os/x86_64/latest in us-east-1 holding {ami}")
    );
    let (words, _) = dry_then_real(
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
    assert!(
        words.starts_with(&format!("would deregister {ami} and delete snapshot snap-")),
        "{words}"
    );
}

/// A dry run says, for a person, what each step would make: names, sizes, tags, grants and
/// the documents in full (on stderr; the calls stay on stdout as JSON).
#[tokio::test]
async fn a_dry_run_says_in_words_what_it_would_do() {
    let standin = Standin::start();
    let dry = |args: &[&str]| {
        let run = standin
            .imgpub()
            .args(args)
            .args(["--region", REGION, "--dry-run"])
            .run();
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        run.stderr
    };
    let says = |stderr: &str, words: &str| {
        assert!(stderr.contains(words), "no {words:?} in:\n{stderr}");
    };

    let init = dry(&["aws", "initialize", "--bucket", "images"]);
    says(&init, "would create bucket images in us-east-1");
    says(&init, "would create role vmimport");
    says(&init, "would create the trust policy of role vmimport:\n{");
    says(&init, "\"Service\": \"vmie.amazonaws.com\"");
    says(
        &init,
        "would create the inline policy vmimport of role vmimport:\n{",
    );

    standin.initialize(REGION, "images");
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 12, 4, 9);
    let upload = dry(&[
        "aws",
        "upload",
        "--bucket",
        "s3://images/ci",
        "--file",
        file.to_str().unwrap(),
        "--name",
        "os-1",
        "--arch",
        "aarch64",
        "--imdsv2-only",
        "--tags",
        "stream=stable",
        "--grant-user",
        "111122223333",
    ]);
    says(
        &upload,
        &format!(
            "would upload {} (RAW, 12.0 MiB on disk, 12.0 MiB virtual) to s3://images/ci/os.raw,",
            file.display()
        ),
    );
    says(&upload, "then import it as snapshot os-1 in us-east-1");
    says(
        &upload,
        "would register AMI os-1 (arm64, uefi, gp3, 8 GiB, IMDSv2 only) in us-east-1",
    );
    says(
        &upload,
        "would tag the snapshot and AMI stream=stable imgpub:managed=true in us-east-1",
    );
    says(
        &upload,
        "would share with accounts 111122223333 in us-east-1",
    );

    let publisher = dry(&[
        "aws",
        "create-publisher",
        "--role",
        "ci-publisher",
        "--trust-account",
        common::ACCOUNT,
        "--external-id",
        "0123456789abcdef0123",
        "--for",
        "upload",
        "--bucket",
        "images/ci",
    ]);
    says(&publisher, "would create role ci-publisher");
    says(
        &publisher,
        "would create the trust policy of role ci-publisher:\n{",
    );
    says(
        &publisher,
        "\"sts:ExternalId\": \"<the --external-id given>\"",
    );
    assert!(!publisher.contains("0123456789abcdef0123"), "{publisher}");
    says(
        &publisher,
        "would create the permission policy imgpub-publisher of role ci-publisher:\n{",
    );
    says(&publisher, "\"aws:ResourceTag/imgpub:managed\": \"true\"");

    // Where nothing would change, no words: the summary says so.
    let again = dry(&["aws", "initialize", "--bucket", "images"]);
    assert!(!again.contains("would "), "{again}");
    says(&again, "dry run: nothing to do; all is in place");
}
