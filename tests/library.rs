//! The library without the binary, through its front door only (lib.rs's façade): a command
//! built as a value, run by the driver against the stand-in, as an embedding program would.

mod common;

use common::Standin;
use imgpub::{
    AwsSettings, Change, DeleteOptions, GrantOptions, ImageSelection, Output, Permissions,
    PreflightMode, Run, Secret, Task,
};
use serde_json::{json, Value};

const REGION: &str = "eu-west-1";

fn run(standin: &Standin, dry_run: bool) -> Run {
    Run {
        settings: AwsSettings {
            region: Some(REGION.into()),
            endpoint_url: Some(standin.endpoint.clone()),
            access_id: Some(common::ACCESS_KEY.into()),
            secret_key: Some(Secret::new(common::SECRET_KEY.into())),
            ..AwsSettings::default()
        },
        preflight: PreflightMode::Auto,
        dry_run,
    }
}

/// Runs `task`, returning its result and the JSON lines it emitted; a run that ends well
/// ends with its summary.
async fn lines(task: impl Into<Task>, run: &Run) -> (imgpub::Result<()>, Vec<Value>) {
    let mut out = vec![];
    let mut summary = None;
    let result = task
        .into()
        .run(run, &mut |line| match line {
            Output::Json(v) => out.push(v),
            Output::Summary(s) => summary = Some(s),
            // A dry run's plan in words, for a person.
            Output::Step(s) => assert!(run.dry_run && s.starts_with("would "), "{s}"),
            other => panic!("a JSON command printed {other:?}"),
        })
        .await;
    if result.is_ok() {
        assert!(summary.is_some(), "no summary after {out:?}");
    }
    (result, out)
}

/// The calls a dry run printed, as (op, id of each resource).
fn ops(lines: &[Value]) -> Vec<(String, Vec<Value>)> {
    lines
        .iter()
        .map(|l| {
            let ids = l["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].clone())
                .collect();
            (l["op"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

#[tokio::test]
async fn grant_as_a_task_dry_run_then_applied() {
    let standin = Standin::start();
    let (ami, snap) = common::api_image(&standin, REGION, "lib-grant", &[]).await;
    let grant = Permissions {
        opts: GrantOptions {
            change: Change::Grant,
            users: vec!["111122223333".into()],
            public: false,
            organizations: vec![],
            organizational_units: vec![],
            snapshot: true,
        },
        images: ImageSelection {
            images: vec![ami.clone()],
            images_from: None,
        },
    };

    // The dry run names exactly the two writes, on the real ids, and makes neither.
    let (result, planned) = lines(grant.clone(), &run(&standin, true)).await;
    result.unwrap();
    assert_eq!(
        ops(&planned),
        [
            ("ec2:ModifyImageAttribute".to_string(), vec![json!(ami)]),
            ("ec2:ModifySnapshotAttribute".to_string(), vec![json!(snap)]),
        ],
        "{planned:?}"
    );
    let counts = standin.counts();
    assert!(counts.get("ec2.ModifyImageAttribute").is_none(), "{counts}");

    let (result, done) = lines(grant, &run(&standin, false)).await;
    result.unwrap();
    assert_eq!(
        done,
        [json!({"region": REGION, "image": ami, "snapshot": snap, "status": "changed"})]
    );
    let ec2 = standin.ec2(REGION);
    assert_eq!(
        common::launch_permissions(&ec2, &ami).await,
        ["user:111122223333"]
    );
    assert_eq!(
        common::volume_permissions(&ec2, &snap).await,
        ["user:111122223333"]
    );
}

#[tokio::test]
async fn delete_image_as_a_task_then_again() {
    let standin = Standin::start();
    let (ami, snap) = common::api_image(&standin, REGION, "lib-delete", &[]).await;
    let delete = DeleteOptions {
        ami: Some(ami.clone()),
        snapshot: Some("detectFromAMI".into()),
        ..DeleteOptions::default()
    };
    let (result, done) = lines(delete.clone(), &run(&standin, false)).await;
    result.unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0]["image"], json!(ami), "{done:?}");
    assert_eq!(done[0]["snapshot"], json!(snap), "{done:?}");
    let described = standin
        .ec2(REGION)
        .describe_images()
        .owners("self")
        .send()
        .await
        .unwrap();
    assert!(described
        .images()
        .iter()
        .all(|i| i.image_id() != Some(&ami)));

    // The AMI is gone now: asking again is bad input (exit 2), unless a missing one is fine,
    // and then a dry run has nothing to do.
    let (result, _) = lines(delete.clone(), &run(&standin, false)).await;
    let err = result.unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(err.to_string().contains(&ami), "{err}");
    let again = DeleteOptions {
        allow_missing: true,
        ..delete
    };
    let (result, planned) = lines(again, &run(&standin, true)).await;
    result.unwrap();
    assert!(planned.is_empty(), "{planned:?}");
}
