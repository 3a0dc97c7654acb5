//! Time to a usable AMI: imgpub notices an import or a copy ending within `POLL` (5 s) of
//! the moment the stand-in ends it, starts the next step at once, and asks no more than
//! once per task per 5 s meanwhile. Everything is read from the stand-in's request log
//! (arrival times of the calls, and the moments it fixed in advance), not from the test's
//! clock.

mod common;

use common::{make_raw, tempdir::TempDir, Standin};
use serde_json::Value;

const REGION: &str = "us-east-1";
/// Arrival times in the log carry the calls' own latency on loopback: this much slack.
const SLACK: f64 = 0.3;
const POLL: f64 = 5.0;

struct Log {
    requests: Vec<(f64, String, String)>,
    events: Vec<(f64, String, String)>,
}

fn log(standin: &Standin) -> Log {
    let v: Value = serde_json::from_str(&standin.control("GET", "/_standin/log", None)).unwrap();
    let triple = |e: &Value, k: &str, l: &str| {
        (
            e["t"].as_f64().unwrap(),
            e[k].as_str().unwrap().to_string(),
            e[l].as_str().unwrap().to_string(),
        )
    };
    Log {
        requests: v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| triple(r, "call", "region"))
            .collect(),
        events: v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| triple(e, "event", "id"))
            .collect(),
    }
}

impl Log {
    /// Arrival times of `call` in `region` after `from`.
    fn times(&self, call: &str, region: &str, from: f64) -> Vec<f64> {
        self.requests
            .iter()
            .filter(|(t, c, r)| c == call && r == region && *t >= from)
            .map(|(t, _, _)| *t)
            .collect()
    }

    fn first(&self, call: &str, region: &str, from: f64) -> f64 {
        *self
            .times(call, region, from)
            .first()
            .unwrap_or_else(|| panic!("no {call} in {region} after {from}"))
    }
}

/// Checks the polls of one wait that ended at `ended`: the first poll after it came within
/// POLL, the polls before were POLL apart; returns when the end was noticed.
fn check_polls(what: &str, polls: &[f64], ended: f64) -> f64 {
    let noticed = *polls
        .iter()
        .find(|&&t| t >= ended)
        .unwrap_or_else(|| panic!("{what}: no poll after the end at {ended}: {polls:?}"));
    assert!(
        noticed - ended <= POLL + SLACK,
        "{what}: ended at {ended}, noticed at {noticed}: {polls:?}"
    );
    let used: Vec<f64> = polls.iter().copied().filter(|&t| t <= noticed).collect();
    for pair in used.windows(2) {
        assert!(
            pair[1] - pair[0] >= POLL - SLACK,
            "{what}: polls closer than {POLL} s: {used:?}"
        );
    }
    eprintln!(
        "{what}: ended at {ended:.2} s, noticed {:.2} s later, {} polls",
        noticed - ended,
        used.len()
    );
    noticed
}

#[tokio::test]
async fn an_import_is_noticed_within_five_seconds_and_the_ami_registered_at_once() {
    let standin = Standin::start_with_import_seconds(12.0);
    standin.initialize(REGION, "images");
    let dir = TempDir::new();
    let raw = make_raw(dir.path(), "paced.raw", 8, 4, 100);
    standin.reset_requests();
    let out = standin.upload_cmd(REGION, &raw).run().json();
    assert!(out["HVM"].as_str().unwrap().starts_with("ami-"));

    let log = log(&standin);
    let started = log.first("ec2.ImportSnapshot", REGION, 0.0);
    let (ended, _, _) = log
        .events
        .iter()
        .find(|(t, e, _)| e == "import-ends" && *t >= started)
        .cloned()
        .expect("the import's end");
    let polls = log.times("ec2.DescribeImportSnapshotTasks", REGION, started);
    let noticed = check_polls("import", &polls, ended);
    // Then at once: the snapshot tagged, the object deleted, the AMI registered.
    let registered = log.first("ec2.RegisterImage", REGION, noticed);
    assert!(
        registered - noticed <= 1.0,
        "noticed at {noticed}, registered at {registered}"
    );
}

#[tokio::test]
async fn copies_are_noticed_within_five_seconds_and_finished_at_once() {
    let standin = Standin::start();
    standin.initialize(REGION, "images");
    let (ami, _) = common::api_image(&standin, REGION, "paced-1.0", &[("os", "paced")]).await;
    standin.control("POST", "/_standin/config", Some(r#"{"copy_seconds": 11}"#));
    standin.reset_requests();
    let targets = ["eu-west-1", "us-west-2"];
    let run = standin
        .imgpub()
        .args(["aws", "copy-regions", "--region", REGION, "--image", &ami])
        .args(targets)
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);

    let log = log(&standin);
    for region in targets {
        let copied = log.first("ec2.CopyImage", region, 0.0);
        let copy = run
            .stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find_map(|v| v[region]["ami"].as_str().map(str::to_string))
            .expect("the copy's id");
        let (ended, _, _) = log
            .events
            .iter()
            .find(|(_, e, id)| e == "copy-ends" && *id == copy)
            .cloned()
            .expect("the copy's end");
        let polls = log.times("ec2.DescribeImages", region, copied);
        let noticed = check_polls(&format!("copy to {region}"), &polls, ended);
        // Then at once: the copy tagged like the source.
        let tagged = log.first("ec2.CreateTags", region, noticed);
        assert!(
            tagged - noticed <= 1.0,
            "{region}: noticed at {noticed}, tagged at {tagged}"
        );
        let percent_reads = log.times("ec2.DescribeSnapshots", region, copied).len();
        let state_reads = polls.iter().filter(|&&t| t <= noticed).count();
        assert!(
            percent_reads * 3 <= state_reads + 2,
            "{region}: {percent_reads} DescribeSnapshots for {state_reads} polls"
        );
    }
}

/// EC2 is eventually consistent: a new snapshot or AMI is unknown for a while to requests
/// that name it (EC2 Developer Guide, "Eventual consistency in the Amazon EC2 API"). With the
/// stand-in holding each new one back for 15 s — longer than imgpub's 5 s poll, so the first
/// request naming it is refused, and longer than two polls missing a new copy — the release
/// flow still finishes on both upload paths, the refused calls repeated (counted in the
/// stand-in's log), and each copy is made once.
#[tokio::test]
async fn a_release_goes_through_while_new_images_are_not_yet_visible() {
    let standin = Standin::start();
    standin.initialize(REGION, "images");
    standin.control(
        "POST",
        "/_standin/config",
        Some(r#"{"consistency_seconds": 15}"#),
    );
    let dir = TempDir::new();
    let file = make_raw(dir.path(), "os.raw", 8, 2, 9);
    for (name, via) in [("consistent-s3", "s3"), ("consistent-direct", "ebs-direct")] {
        standin.reset_requests();
        let run = standin
            .imgpub()
            .args([
                "aws",
                "upload",
                "--region",
                REGION,
                "--bucket",
                "s3://images/ci",
            ])
            .arg_path("--file", &file)
            .args(["--name", name, "--via", via, "--tags", "stream=stable"])
            .args(["--public", "--grant-user-snapshot", "111122223333"])
            .args(["--deprecate-in", "30d"])
            .run();
        assert_eq!(run.code, 0, "{via}: {}", run.stderr);
        let ami = run.json()["HVM"].as_str().unwrap().to_string();
        let counts = standin.counts();
        // The AMI's first change after RegisterImage was refused and made again.
        let after_register = ["ec2.EnableImageDeprecation", "ec2.ModifyImageAttribute"];
        assert!(
            after_register
                .iter()
                .any(|c| counts[*c].as_u64().unwrap_or(0) >= 2),
            "{via}: no call was refused and repeated: {counts}"
        );
        let copy = standin
            .imgpub()
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
        assert_eq!(copy.code, 0, "{via}: {}", copy.stderr);
        let copies = standin.counts()["ec2.CopyImage"].as_u64().unwrap_or(0);
        assert_eq!(copies, 1, "{via}: a copy not yet visible was made again");
    }
}
