//! The library without the binary: a command's plan, check and apply driven with ready
//! clients against the stand-in, as an embedding program (or a test) would.

mod common;

use common::Standin;
use imgpub::aws::ami::Change;
use imgpub::aws::calls::{Op, Resource};
use imgpub::aws::config::AwsContext;
use imgpub::aws::images::RegionalImage;
use imgpub::commands::{delete_image, grant, Clients};

const REGION: &str = "eu-west-1";

#[tokio::test]
async fn grant_plan_check_apply_with_ready_clients() {
    let standin = Standin::start();
    let (ami, snap) = common::api_image(&standin, REGION, "lib-grant", &[]).await;
    let ctx = AwsContext::from_sdk(standin.sdk(REGION)).unwrap();
    let opts = grant::GrantOptions {
        change: Change::Grant,
        users: vec!["111122223333".into()],
        public: false,
        organizations: vec![],
        organizational_units: vec![],
        snapshot: true,
    };
    let targets = vec![RegionalImage {
        region: REGION.into(),
        image_id: ami.clone(),
    }];

    let plan = grant::plan(&ctx, &opts, targets).await.unwrap();
    assert_eq!(plan.images[0].snapshot.as_deref(), Some(snap.as_str()));
    assert!(plan.failed.is_empty());
    // The check step names exactly the two writes, on the real ids; the plan wrote nothing.
    let calls = grant::check(&plan);
    let ops: Vec<(Op, &Vec<Resource>)> = calls.iter().map(|c| (c.op, &c.resources)).collect();
    assert_eq!(
        ops,
        vec![
            (
                Op::Ec2ModifyImageAttribute,
                &vec![Resource::Image(Some(ami.clone()))]
            ),
            (
                Op::Ec2ModifySnapshotAttribute,
                &vec![Resource::Snapshot(Some(snap.clone()))]
            ),
        ]
    );
    let counts = standin.counts();
    assert!(counts.get("ec2.ModifyImageAttribute").is_none(), "{counts}");

    let mut lines = vec![];
    grant::apply(&ctx, &plan, |line| lines.push(line))
        .await
        .unwrap();
    assert_eq!(
        lines,
        vec![serde_json::json!({"region": REGION, "image": ami, "snapshot": snap})]
    );
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(REGION));
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
async fn delete_image_plan_and_apply_with_ready_clients() {
    let standin = Standin::start();
    let (ami, snap) = common::api_image(&standin, REGION, "lib-delete", &[]).await;
    let clients = Clients::new(&AwsContext::from_sdk(standin.sdk(REGION)).unwrap());
    let opts = delete_image::DeleteOptions {
        ami: Some(ami.clone()),
        snapshot: Some("detectFromAMI".into()),
        allow_missing: false,
    };
    let plan = delete_image::plan(&clients, &opts).await.unwrap();
    assert_eq!(plan.image.as_deref(), Some(ami.as_str()));
    assert_eq!(plan.snapshot.as_deref(), Some(snap.as_str()));
    let ops: Vec<Op> = delete_image::check(&plan).iter().map(|c| c.op).collect();
    assert_eq!(ops, [Op::Ec2DeregisterImage, Op::Ec2DeleteSnapshot]);

    let deleted = delete_image::apply(&clients, &plan).await.unwrap();
    assert_eq!(deleted.image.as_deref(), Some(ami.as_str()));
    assert_eq!(deleted.snapshot.as_deref(), Some(snap.as_str()));
    let described = clients
        .ec2
        .describe_images()
        .owners("self")
        .send()
        .await
        .unwrap();
    assert!(described
        .images()
        .iter()
        .all(|i| i.image_id() != Some(&ami)));

    // The AMI is gone now: planning again is bad input, unless a missing one is fine.
    let err = delete_image::plan(&clients, &opts).await.unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    let again = delete_image::DeleteOptions {
        allow_missing: true,
        ..opts
    };
    let plan = delete_image::plan(&clients, &again).await.unwrap();
    assert!(delete_image::check(&plan).is_empty());
}
