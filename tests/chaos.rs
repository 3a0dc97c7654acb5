//! The chaos suite: seeded runs of the whole release flow (`initialize`, `upload` with tags
//! and `--public`, `copy-regions` to 3 regions, `publish-ssm`) against the stand-in, in two
//! series:
//! - faults: the stand-in fails requests at a fixed rate on every service (5xx, throttling,
//!   dropped connections, slow answers; half of them after the request took effect), and a
//!   command that exits non-zero is rerun;
//! - kills: each command is SIGKILLed while the stand-in holds its n-th request (n seeded;
//!   a `hold` fault with `skip`, never the clock), the request then carried out, and the
//!   command rerun until it exits 0.
//!
//! Runs alternate the upload's path: even runs go through S3 and ImportSnapshot, odd runs
//! through EBS direct (`--via ebs-direct`), so each series covers both.
//!
//! After each run the account is read back through the API: one AMI per region with the
//! right name, tags and launch permission, exactly one snapshot per region (the AMI's,
//! public and tagged as imgpub's), no import task left running, the uploaded object gone,
//! no multipart upload left, the SSM parameter naming each region's AMI, and the ids
//! printed by the last run of each command equal to those.
//!
//! CI runs a short slice; `IMGPUB_CHAOS_RUNS=50 cargo test --test chaos -- --nocapture`
//! runs 50 of each (docs/reliability.md has the figures), `IMGPUB_CHAOS_SEED` moves the
//! seeds.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use common::Standin;
use serde_json::Value;

const HOME: &str = "us-east-1";
const COPIES: [&str; 3] = ["us-west-2", "eu-west-1", "ap-southeast-2"];
const BUCKET: &str = "chaos-images";
const NAME: &str = "chaos-os-1.0";
const PARAMETER: &str = "/chaos/stable/latest";
/// A command may need this many reruns at most.
const MAX_RERUNS: usize = 3;
/// Faults per request in the fault series.
const RATE: f64 = 0.05;

fn runs() -> u64 {
    std::env::var("IMGPUB_CHAOS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn base_seed() -> u64 {
    std::env::var("IMGPUB_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// splitmix64: the seeded moments of the kill series.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [1, max].
    fn upto(&mut self, max: u64) -> u64 {
        1 + self.next() % max.max(1)
    }
}

#[derive(Default, Debug)]
struct Totals {
    runs: u64,
    commands: u64,
    faults: u64,
    kills: u64,
    reruns: u64,
    most_reruns: usize,
    leaks: u64,
    wrong: u64,
}

impl Totals {
    fn print(&self, series: &str) {
        eprintln!(
            "chaos {series}: runs {}, commands {}, faults injected {}, kills {}, reruns {} (at most {} for one command), leaks {}, wrong results {}",
            self.runs, self.commands, self.faults, self.kills, self.reruns, self.most_reruns, self.leaks, self.wrong
        );
    }
}

/// The flow's commands, in order; `upload`'s AMI and copy-regions' output feed the later ones.
enum Step {
    Initialize,
    Upload,
    CopyRegions,
    PublishSsm,
}

const STEPS: [Step; 4] = [
    Step::Initialize,
    Step::Upload,
    Step::CopyRegions,
    Step::PublishSsm,
];

/// What the commands printed (the last run of each).
#[derive(Default)]
struct Printed {
    upload: Value,
    copies: Vec<Value>,
    ssm: Vec<Value>,
}

/// How the upload makes its snapshot in a run.
#[derive(Clone, Copy, Debug)]
enum Via {
    S3,
    EbsDirect,
}

impl Via {
    /// Even runs through S3, odd ones through EBS direct.
    fn of_run(n: u64) -> Via {
        if n.is_multiple_of(2) {
            Via::S3
        } else {
            Via::EbsDirect
        }
    }
}

fn args(step: &Step, image: &Path, work: &Path, printed: &Printed, via: Via) -> Vec<String> {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match step {
        Step::Initialize => s(&["aws", "initialize", "--region", HOME, "--bucket", BUCKET]),
        Step::Upload => {
            let mut a = s(&[
                "aws",
                "upload",
                "--region",
                HOME,
                "--bucket",
                &format!("s3://{BUCKET}/ci"),
                "--ami-name",
                NAME,
                "--tags",
                "stream=stable,os=chaos",
                "--public",
                "--file",
            ]);
            a.push(image.display().to_string());
            if let Via::EbsDirect = via {
                a.extend(s(&["--via", "ebs-direct"]));
            }
            a
        }
        Step::CopyRegions => {
            let ami = printed.upload["HVM"].as_str().unwrap_or_default();
            let mut a = s(&["aws", "copy-regions", "--region", HOME, "--image", ami]);
            a.extend(COPIES.iter().map(|r| r.to_string()));
            a
        }
        Step::PublishSsm => {
            let ami = printed.upload["HVM"].as_str().unwrap_or_default();
            let copies = work.join("copies.jsonl");
            let lines: Vec<String> = printed.copies.iter().map(Value::to_string).collect();
            std::fs::write(&copies, lines.join("\n")).unwrap();
            let mut a = s(&[
                "aws",
                "publish-ssm",
                "--region",
                HOME,
                "--image",
                &format!("{HOME}={ami}"),
                "--parameter",
                PARAMETER,
                "--images-from",
            ]);
            a.push(copies.display().to_string());
            a
        }
    }
}

fn record(step: &Step, printed: &mut Printed, stdout: &str) {
    let lines = || -> Vec<Value> {
        stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    match step {
        Step::Initialize => {}
        Step::Upload => printed.upload = serde_json::from_str(stdout.trim()).expect("JSON"),
        Step::CopyRegions => printed.copies = lines(),
        Step::PublishSsm => printed.ssm = lines(),
    }
}

/// Runs one command until it exits 0, first SIGKILLing it while the stand-in holds its
/// `kill_after`-th request, when given. Returns its stdout and the requests the run that
/// exited 0 made.
fn until_done(
    standin: &Standin,
    args: &[String],
    kill_after: Option<u64>,
    totals: &mut Totals,
) -> (String, u64) {
    totals.commands += 1;
    if let Some(n) = kill_after {
        // The n-th request is held in the stand-in; the command is killed while it waits,
        // then the request goes on (a call in flight when the job died).
        standin.fault(&format!(
            r#"{{"action": "*", "hold": true, "skip": {}}}"#,
            n - 1
        ));
        let mut cmd = standin.imgpub().args(args).cmd;
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if standin.wait_held_or_exit(&mut child) && child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            totals.kills += 1;
        }
        child.wait().unwrap();
        standin.control("DELETE", "/_standin/faults", None);
        standin.release();
        standin.wait_idle();
    }
    let mut failures = vec![];
    for rerun in 0..=MAX_RERUNS {
        standin.reset_requests();
        let run = standin.imgpub().args(args).run();
        if run.code == 0 {
            totals.reruns += rerun as u64;
            totals.most_reruns = totals.most_reruns.max(rerun);
            return (run.stdout, standin.total_requests());
        }
        // Why a rerun was needed: the figures in docs/reliability.md list these.
        eprintln!("chaos rerun after exit {}: {}", run.code, run.error_line());
        failures.push(format!("exit {}: {}", run.code, run.stderr));
    }
    panic!(
        "{args:?} did not finish after {MAX_RERUNS} reruns:\n{}",
        failures.join("\n---\n")
    );
}

/// Reads the account back; returns the problems found: (leaks, wrong results).
async fn check(standin: &Standin, printed: &Printed) -> (Vec<String>, Vec<String>) {
    let (mut leaks, mut wrong) = (vec![], vec![]);
    let mut amis = BTreeMap::new();
    for region in std::iter::once(HOME).chain(COPIES) {
        let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(region));
        let images = ec2
            .describe_images()
            .owners("self")
            .send()
            .await
            .unwrap()
            .images()
            .to_vec();
        if images.len() != 1 {
            leaks.push(format!("{region}: {} AMIs", images.len()));
        }
        let described = ec2
            .describe_snapshots()
            .owner_ids("self")
            .send()
            .await
            .unwrap();
        let snapshots: Vec<String> = described
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(str::to_string))
            .collect();
        let Some(image) = images.iter().find(|i| i.name() == Some(NAME)) else {
            wrong.push(format!("{region}: no AMI named {NAME}"));
            continue;
        };
        let ami = image.image_id().unwrap().to_string();
        let root = image
            .block_device_mappings()
            .iter()
            .find_map(|m| m.ebs().and_then(|e| e.snapshot_id()))
            .map(str::to_string);
        if snapshots.len() != 1 || root.as_ref() != snapshots.first() {
            leaks.push(format!(
                "{region}: snapshots {snapshots:?}, AMI {ami} uses {root:?}"
            ));
        }
        let tags = common::tag_pairs(image.tags());
        for want in [("stream", "stable"), ("os", "chaos")] {
            if !tags.contains(&(want.0.to_string(), want.1.to_string())) {
                wrong.push(format!("{region}: {ami} lacks tag {want:?}: {tags:?}"));
            }
        }
        if !common::launch_permissions(&ec2, &ami)
            .await
            .contains(&"group:all".to_string())
        {
            wrong.push(format!("{region}: {ami} is not public"));
        }
        if let Some(snapshot) = &root {
            // Tagged as imgpub's (what a scoped publisher may change later), on either path.
            let tags = described
                .snapshots()
                .iter()
                .find(|s| s.snapshot_id() == Some(snapshot.as_str()))
                .map(|s| common::tag_pairs(s.tags()))
                .unwrap_or_default();
            if !tags.contains(&("imgpub:managed".to_string(), "true".to_string())) {
                wrong.push(format!(
                    "{region}: snapshot {snapshot} of {ami} is not tagged imgpub:managed: {tags:?}"
                ));
            }
            if !common::volume_permissions(&ec2, snapshot)
                .await
                .contains(&"group:all".to_string())
            {
                wrong.push(format!(
                    "{region}: snapshot {snapshot} of {ami} is not public"
                ));
            }
        }
        // No import task left running, to make a snapshot nobody will use.
        let tasks = ec2
            .describe_import_snapshot_tasks()
            .send()
            .await
            .unwrap()
            .import_snapshot_tasks()
            .to_vec();
        let running: Vec<_> = tasks
            .iter()
            .filter(|t| t.snapshot_task_detail().and_then(|d| d.status()) == Some("active"))
            .filter_map(|t| t.import_task_id())
            .collect();
        if !running.is_empty() {
            leaks.push(format!("{region}: import tasks still running: {running:?}"));
        }
        let ssm = aws_sdk_ssm::Client::new(&standin.sdk(region));
        match ssm.get_parameter().name(PARAMETER).send().await {
            Ok(p) if p.parameter().and_then(|p| p.value()) == Some(ami.as_str()) => {}
            other => wrong.push(format!("{region}: {PARAMETER} is {other:?}, not {ami}")),
        }
        amis.insert(region.to_string(), (ami, root));
    }

    let s3 = standin.s3(HOME);
    let objects = s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    if !objects.contents().is_empty() {
        leaks.push(format!("objects left: {:?}", objects.contents()));
    }
    let uploads = s3
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    if !uploads.uploads().is_empty() {
        leaks.push(format!("multipart uploads left: {:?}", uploads.uploads()));
    }

    // What was printed names what is there.
    let (home_ami, home_snapshot) = amis.get(HOME).cloned().unwrap_or_default();
    if printed.upload["HVM"].as_str() != Some(home_ami.as_str())
        || printed.upload["SnapshotID"].as_str() != home_snapshot.as_deref()
    {
        wrong.push(format!(
            "upload printed {}, the account has {home_ami} on {home_snapshot:?}",
            printed.upload
        ));
    }
    let mut copied: Vec<(String, String)> = printed
        .copies
        .iter()
        .filter_map(|line| line.as_object())
        .flat_map(|o| o.iter())
        .map(|(region, v)| (region.clone(), v["ami"].as_str().unwrap_or("").to_string()))
        .collect();
    copied.sort();
    let mut there: Vec<(String, String)> = amis
        .iter()
        .filter(|(r, _)| r.as_str() != HOME)
        .map(|(r, (ami, _))| (r.clone(), ami.clone()))
        .collect();
    there.sort();
    if copied != there {
        wrong.push(format!(
            "copy-regions printed {copied:?}, the account has {there:?}"
        ));
    }
    if printed.ssm.len() != 4 {
        wrong.push(format!("publish-ssm printed {:?}", printed.ssm));
    }
    (leaks, wrong)
}

/// One run of the flow in a fresh account, uploading `via`; `kills` seeds when each command
/// is SIGKILLed: after a number of its requests, up to 1.2 times what it made in the
/// fault-free run (`requests`), so that some runs end before their kill.
async fn run_flow(
    standin: &Standin,
    image: &Path,
    work: &Path,
    via: Via,
    mut kills: Option<(&mut Rng, &[u64])>,
    totals: &mut Totals,
) -> (Printed, Vec<u64>) {
    let mut printed = Printed::default();
    let mut requests = vec![];
    for (i, step) in STEPS.iter().enumerate() {
        let args = args(step, image, work, &printed, via);
        let kill_after = kills
            .as_mut()
            .map(|(rng, requests)| rng.upto(requests[i] * 6 / 5));
        let (stdout, made) = until_done(standin, &args, kill_after, totals);
        record(step, &mut printed, &stdout);
        requests.push(made);
    }
    (printed, requests)
}

fn fresh_account(standin: &Standin) {
    standin.control("DELETE", "/_standin/chaos", None);
    standin.control("POST", "/moto-api/reset", Some("{}"));
}

async fn verify(standin: &Standin, printed: &Printed, label: &str, totals: &mut Totals) {
    let (leaks, wrong) = check(standin, printed).await;
    totals.leaks += leaks.len() as u64;
    totals.wrong += wrong.len() as u64;
    assert!(
        leaks.is_empty() && wrong.is_empty(),
        "{label}: leaks {leaks:?}, wrong results {wrong:?}"
    );
}

fn setup() -> (Standin, common::tempdir::TempDir, std::path::PathBuf) {
    let standin = Standin::start_with_import_seconds(0.5);
    standin.control(
        "POST",
        "/_standin/config",
        Some(r#"{"import_seconds": 0.5, "copy_seconds": 0.5}"#),
    );
    let work = common::tempdir::TempDir::new();
    // Three parts of 5 MiB: room for a fault or a kill between parts.
    let image = common::make_raw(work.path(), "chaos.raw", 12, 10, 7);
    (standin, work, image)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_release_flow_survives_seeded_faults() {
    let (standin, work, image) = setup();
    let mut totals = Totals::default();

    // Fault-free first: the reference the checks hold every faulty run to.
    fresh_account(&standin);
    let (printed, _) = run_flow(&standin, &image, work.path(), Via::S3, None, &mut totals).await;
    verify(&standin, &printed, "fault-free run", &mut totals).await;

    for n in 0..runs() {
        let seed = base_seed() * 1000 + n;
        let via = Via::of_run(n);
        fresh_account(&standin);
        standin.control(
            "POST",
            "/_standin/chaos",
            Some(&format!(
                r#"{{"seed": {seed}, "rate": {RATE}, "after_share": 0.5}}"#
            )),
        );
        let (printed, _) = run_flow(&standin, &image, work.path(), via, None, &mut totals).await;
        let report: Value =
            serde_json::from_str(&standin.control("DELETE", "/_standin/chaos", None)).unwrap();
        totals.faults += report["injected"].as_u64().unwrap();
        totals.runs += 1;
        verify(
            &standin,
            &printed,
            &format!("seed {seed} ({via:?})"),
            &mut totals,
        )
        .await;
        eprintln!(
            "chaos faults: seed {seed} ({via:?}): {report}, reruns so far {}",
            totals.reruns
        );
    }
    totals.print("faults");
    // A series in which no fault was injected proved nothing.
    assert!(
        totals.faults > 0,
        "the stand-in injected no fault: {totals:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_release_flow_survives_being_killed() {
    let (standin, work, image) = setup();
    let mut totals = Totals::default();

    // Each path's fault-free run: how many requests each command makes.
    let mut reference = vec![];
    for via in [Via::S3, Via::EbsDirect] {
        fresh_account(&standin);
        let (printed, requests) =
            run_flow(&standin, &image, work.path(), via, None, &mut totals).await;
        verify(
            &standin,
            &printed,
            &format!("{via:?} without kills"),
            &mut totals,
        )
        .await;
        eprintln!("chaos kills: {via:?} without kills made {requests:?} requests");
        reference.push(requests);
    }

    for n in 0..runs() {
        let seed = base_seed() * 1000 + n;
        let via = Via::of_run(n);
        let mut rng = Rng(seed);
        fresh_account(&standin);
        let (printed, _) = run_flow(
            &standin,
            &image,
            work.path(),
            via,
            Some((&mut rng, &reference[(n % 2) as usize])),
            &mut totals,
        )
        .await;
        totals.runs += 1;
        verify(
            &standin,
            &printed,
            &format!("seed {seed} ({via:?})"),
            &mut totals,
        )
        .await;
        eprintln!(
            "chaos kills: seed {seed} ({via:?}): kills so far {}, reruns so far {}",
            totals.kills, totals.reruns
        );
    }
    totals.print("kills");
    assert!(
        totals.kills > 0,
        "no command was killed mid-run: {totals:?}"
    );
}
