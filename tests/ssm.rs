//! `imgpub aws publish-ssm` against the stand-in: parameters written in three regions and read
//! back through SSM; the refusals (a name AWS reserves, a different value without
//! --overwrite) write nothing; throttling is retried.

mod common;

use common::Standin;
use serde_json::{json, Value};

const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-2"];

fn ssm(standin: &Standin, region: &str) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(&standin.sdk(region))
}

/// The same release in three regions: (region, ami).
async fn release(standin: &Standin, name: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    for region in REGIONS {
        let (ami, _) = common::api_image(standin, region, name, &[("stream", "stable")]).await;
        out.push((region.to_string(), ami));
    }
    out
}

fn publish(standin: &Standin, images: &[(String, String)], extra: &[&str]) -> common::Run {
    let mut cmd = standin
        .imgpub()
        .args(["aws", "publish-ssm", "--region", REGIONS[0]]);
    for (region, ami) in images {
        cmd = cmd.args(["--image", &format!("{region}={ami}")]);
    }
    cmd.args([
        "--parameter",
        "/os/{tag:stream}/{arch}/latest",
        "--parameter",
        "/os/releases/{name}",
    ])
    .args(extra)
    .run()
}

/// (region, parameter, ami, status) per printed line, sorted.
fn lines(run: &common::Run) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = run
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            (s("region"), s("parameter"), s("ami"), s("status"))
        })
        .collect();
    v.sort();
    v
}

async fn read(standin: &Standin, region: &str, name: &str) -> (String, String, i64) {
    let out = ssm(standin, region)
        .get_parameter()
        .name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{region} {name}: {e:?}"));
    let p = out.parameter().unwrap();
    (
        p.value().unwrap().to_string(),
        p.data_type().unwrap().to_string(),
        p.version(),
    )
}

#[tokio::test]
async fn parameters_in_three_regions_then_reruns_change_nothing() {
    let standin = Standin::start();
    let images = release(&standin, "os-1.0").await;
    let run = publish(&standin, &images, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut want = vec![];
    for (region, ami) in &images {
        for name in ["/os/stable/x86_64/latest", "/os/releases/os-1.0"] {
            want.push((
                region.clone(),
                name.to_string(),
                ami.clone(),
                "created".to_string(),
            ));
            assert_eq!(
                read(&standin, region, name).await,
                (ami.clone(), "aws:ec2:image".to_string(), 1),
                "{region} {name}"
            );
        }
    }
    want.sort();
    assert_eq!(lines(&run), want);

    // The same again: nothing written.
    standin.reset_requests();
    let rerun = publish(&standin, &images, &[]);
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    assert!(lines(&rerun).iter().all(|l| l.3 == "unchanged"));
    assert!(standin.counts().get("ssm.PutParameter").is_none());

    // The next release: refused without --overwrite (nothing written anywhere), then
    // replaced with it.
    let next = release(&standin, "os-1.1").await;
    standin.reset_requests();
    let refused = publish(&standin, &next, &[]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    let err = refused.error_line();
    assert!(
        err.contains("nothing was written")
            && err.contains(&format!(
                "parameter /os/stable/x86_64/latest in us-east-1 already holds {}, not {}; pass --overwrite",
                images[0].1, next[0].1
            )),
        "{err}"
    );
    assert!(refused.stdout.is_empty());
    assert!(standin.counts().get("ssm.PutParameter").is_none());

    let run = publish(&standin, &next, &["--overwrite"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for (region, ami) in &next {
        assert_eq!(
            read(&standin, region, "/os/stable/x86_64/latest").await,
            (ami.clone(), "aws:ec2:image".to_string(), 2)
        );
        assert_eq!(read(&standin, region, "/os/releases/os-1.1").await.0, *ami);
    }
    let statuses: Vec<String> = lines(&run).into_iter().map(|l| l.3).collect();
    assert_eq!(statuses.iter().filter(|s| *s == "updated").count(), 3);
    assert_eq!(statuses.iter().filter(|s| *s == "created").count(), 3);
}

/// Names AWS reserves (PutParameter API reference: "A parameter name can't be prefixed with
/// "aws" or "ssm" (case-insensitive)"), `/aws/…` included, are refused before any write.
#[tokio::test]
async fn reserved_parameter_names_are_refused_before_any_write() {
    let standin = Standin::start();
    let images = release(&standin, "os-2.0").await;
    for (region, ami) in &images[..2] {
        common::make_public(&standin, region, ami).await;
    }
    for template in [
        "/aws/service/os/{arch}/latest",
        "/SSM/os/latest",
        "awsome-{arch}",
    ] {
        standin.reset_requests();
        let mut cmd = standin
            .imgpub()
            .args(["aws", "publish-ssm", "--region", REGIONS[0]]);
        for (region, ami) in &images {
            cmd = cmd.args(["--image", &format!("{region}={ami}")]);
        }
        let run = cmd.args(["--parameter", template]).run();
        assert_eq!(run.code, 2, "{template}: {}", run.stderr);
        let err = run.error_line();
        assert!(err.contains("may not begin with aws or ssm"), "{err}");
        let counts = standin.counts();
        assert!(counts.get("ssm.PutParameter").is_none(), "{counts}");
    }
}

#[tokio::test]
async fn throttling_is_retried_and_bad_input_is_refused_first() {
    let standin = Standin::start();
    let images = release(&standin, "os-3.0").await;
    standin.fault(
        &json!({"action": "PutParameter", "status": 400, "code": "ThrottlingException",
                    "message": "Rate exceeded", "region": "eu-west-1", "count": 2})
        .to_string(),
    );
    standin.reset_requests();
    let run = publish(&standin, &images, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(lines(&run).len(), 6);
    // Six parameters, two throttled attempts retried.
    assert_eq!(
        standin.counts()["ssm.PutParameter"],
        8,
        "{}",
        standin.counts()
    );
    assert_eq!(
        read(&standin, "eu-west-1", "/os/stable/x86_64/latest")
            .await
            .0,
        images[1].1
    );

    standin.reset_requests();
    for (template, message) in [
        ("/os/{version}", "unknown placeholder {version}"),
        ("/os/{tag:missing}", "has no tag \"missing\""),
        ("os latest", "' ' is not allowed"),
    ] {
        let run = standin
            .imgpub()
            .args(["aws", "publish-ssm", "--region", REGIONS[0]])
            .args(["--image", &images[0].1, "--parameter", template])
            .run();
        assert_eq!(run.code, 2, "{template}");
        assert!(run.error_line().contains(message), "{}", run.stderr);
    }
    let counts = standin.counts();
    assert!(counts.get("ssm.PutParameter").is_none(), "{counts}");
}

/// PutParameter carried out but its answer lost: the SDK's retry meets the parameter it
/// created (ParameterAlreadyExists), which holds our AMI, so the write is done.
#[tokio::test]
async fn a_write_whose_answer_was_lost_is_not_an_error() {
    let standin = Standin::start();
    let images = release(&standin, "os-2.0").await;
    standin.fault(r#"{"action": "PutParameter", "status": 500, "after": true, "count": 1}"#);
    let run = publish(&standin, &images, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(lines(&run).len(), 6);
    assert!(
        lines(&run).iter().all(|l| l.3 == "created"),
        "{}",
        run.stdout
    );
    for (region, ami) in &images {
        for name in ["/os/stable/x86_64/latest", "/os/releases/os-2.0"] {
            assert_eq!(
                read(&standin, region, name).await.0,
                *ami,
                "{region} {name}"
            );
        }
    }
}

/// SSM checks an `aws:ec2:image` value after PutParameter answered 200, and writes nothing
/// when the check fails (PutParameter API reference, DataType): publish-ssm reads each
/// parameter back and reports the one that never came to hold its AMI as not written.
#[tokio::test]
async fn a_value_ssm_rejects_after_answering_is_reported_as_not_written() {
    let standin = Standin::start();
    let images = release(&standin, "os-3.0").await;
    let rejected = &images[1];
    standin.control(
        "POST",
        "/_standin/config",
        Some(&json!({"ssm_reject_images": [rejected.1]}).to_string()),
    );
    let run = publish(&standin, &images, &["--validation-timeout", "3s"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let err = run.error_line();
    assert!(err.contains(&rejected.0), "{err}");
    assert!(err.contains("was not created"), "{err}");
    // The other regions' parameters were written and hold their AMIs.
    for (region, ami) in images.iter().filter(|i| i.0 != rejected.0) {
        assert_eq!(
            read(&standin, region, "/os/stable/x86_64/latest").await.0,
            *ami
        );
    }
    let missing = ssm(&standin, &rejected.0)
        .get_parameter()
        .name("/os/stable/x86_64/latest")
        .send()
        .await;
    assert!(
        missing.is_err(),
        "not written in {}: {missing:?}",
        rejected.0
    );
    // Each write was answered with success: the stand-in's log shows the rejection.
    let log: Value = serde_json::from_str(&standin.control("GET", "/_standin/log", None)).unwrap();
    let events = log["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["event"] == "ssm-rejected"), "{log}");
}
