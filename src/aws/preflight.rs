//! The permission preflight: before the first side effect, IAM's SimulatePrincipalPolicy is
//! asked about exactly the calls the plan will make (the check step's output), for the
//! caller's own user or role, with the real ARNs where the plan knows them and the context
//! keys the requests will carry. What is denied is named in one error, and nothing is
//! created. A caller that may not simulate its own policies still gets EC2's DryRun answer
//! for the calls EC2 can take that way.

use std::collections::BTreeMap;

use aws_sdk_iam::types::{ContextEntry, ContextKeyTypeEnum, PolicyEvaluationDecisionType};

use crate::aws::calls::{Arns, Call, Op, Resource, ResourceKind, Tagged};
use crate::aws::config::{AwsContext, Identity};
use crate::aws::tags::{MANAGED_KEY, MANAGED_VALUE};
use crate::error::{aws, Error, ErrorKind, Result};

/// `--preflight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreflightMode {
    /// Check when the caller may simulate its own policies; otherwise say so and go on.
    #[default]
    Auto,
    /// Stop when the check cannot be made.
    Require,
    Off,
}

impl crate::names::Named for PreflightMode {
    const NAMES: &'static [(Self, &'static str, &'static [&'static str])] = &[
        (PreflightMode::Auto, "auto", &[]),
        (PreflightMode::Require, "require", &[]),
        (PreflightMode::Off, "off", &[]),
    ];
}

/// Whose policies to simulate: IAM takes a user or a role, not a role's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// A user or a role's ARN.
    Simulable(String),
    /// The account root or a federated user: IAM cannot simulate them.
    NotSimulable(String),
}

/// Maps the caller's ARN to what SimulatePrincipalPolicy takes. An assumed-role session
/// `arn:P:sts::A:assumed-role/NAME/SESSION` is the role `NAME`, whose path (SSO roles live
/// under /aws-reserved/…) GetRole tells; without iam:GetRole the path is taken as `/`.
pub(crate) async fn principal(iam: &aws_sdk_iam::Client, identity: &Identity) -> Principal {
    let arn = &identity.arn;
    let resource = arn.splitn(6, ':').nth(5).unwrap_or("");
    if let Some(rest) = resource.strip_prefix("assumed-role/") {
        let name = rest.split('/').next().unwrap_or(rest);
        let without_path = || {
            format!(
                "arn:{}:iam::{}:role/{name}",
                identity.partition, identity.account
            )
        };
        return Principal::Simulable(match iam.get_role().role_name(name).send().await {
            Ok(out) => out
                .role()
                .map_or_else(without_path, |r| r.arn().to_string()),
            Err(e) => {
                tracing::debug!("{}", aws(Op::IamGetRole, format!("reading role {name}"), e));
                without_path()
            }
        });
    }
    let service = arn.split(':').nth(2).unwrap_or("");
    if service == "iam" && (resource.starts_with("user/") || resource.starts_with("role/")) {
        return Principal::Simulable(arn.clone());
    }
    Principal::NotSimulable(arn.clone())
}

/// A call IAM would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denied {
    pub action: String,
    pub resource: String,
}

/// One SimulatePrincipalPolicy request: the actions for one resource and context.
type Group = (String, String, Vec<(String, Vec<String>)>);

/// The checks of `calls`, grouped so that one request covers every action on one resource
/// in one context.
fn groups(calls: &[Call], arns: &Arns) -> BTreeMap<Group, Vec<&'static str>> {
    let mut groups: BTreeMap<Group, Vec<&'static str>> = BTreeMap::new();
    for call in calls {
        for (action, resource, need) in call.checks(arns) {
            let mut context: Vec<(String, Vec<String>)> = call
                .context
                .iter()
                // The sharing keys are ModifySnapshotAttribute's; others (an instance's tags)
                // hold for every action on the call's resource.
                .filter(|(k, _)| {
                    !k.starts_with("ec2:Add/") || action == "ec2:ModifySnapshotAttribute"
                })
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            if let Some(op) = need.create_action {
                context.push(("ec2:CreateAction".into(), vec![op.into()]));
            }
            // EBS makes its grants for the snapshot: the printed policy allows no other.
            if action == "kms:CreateGrant" {
                context.push((GRANT_FOR_AWS.into(), vec!["true".into()]));
            }
            // EBS uses the key for the caller, under the service name the KMS Developer
            // Guide gives it ("AWS KMS condition keys", kms:ViaService).
            if need.resource == ResourceKind::Key {
                context.push((VIA_SERVICE.into(), vec![ebs_via_service(&call.region)]));
            }
            // imgpub's resources carry its tag, and what it makes is tagged as it is made:
            // the simulation asks about those (a resource made otherwise is refused by the
            // call itself, and the error names the action).
            let tag = |key: &str| (format!("{key}/{MANAGED_KEY}"), vec![MANAGED_VALUE.into()]);
            match need.tagged {
                Tagged::No => {}
                Tagged::Resource => context.push(tag("aws:ResourceTag")),
                Tagged::Request => {
                    context.push(tag("aws:RequestTag"));
                    context.push(("aws:TagKeys".into(), vec![MANAGED_KEY.into()]));
                }
            }
            // imgpub reaches only buckets of its own account (ExpectedBucketOwner), and the
            // printed policy says so with s3:ResourceAccount: the simulation must carry it.
            if let (true, Some(account)) = (action.starts_with("s3:"), &arns.account) {
                context.push(("s3:ResourceAccount".into(), vec![account.clone()]));
            }
            let actions = groups
                .entry((resource, call.region.clone(), context))
                .or_default();
            if !actions.contains(&action) {
                actions.push(action);
            }
        }
    }
    groups
}

/// Set (to true) when a service integrated with KMS calls CreateGrant for the caller.
const GRANT_FOR_AWS: &str = "kms:GrantIsForAWSResource";

/// The service that called KMS for the caller; absent on a call straight to KMS.
const VIA_SERVICE: &str = "kms:ViaService";

/// EBS's kms:ViaService in `region`: "ec2.AWS_region.amazonaws.com (EBS only)" (KMS
/// Developer Guide, "AWS KMS condition keys"), in the region's partition's domain.
fn ebs_via_service(region: &str) -> String {
    let domain = match crate::aws::config::partition_for_region(region) {
        "aws-cn" => "amazonaws.com.cn",
        _ => "amazonaws.com",
    };
    format!("ec2.{region}.{domain}")
}

fn entry(key: &str, values: &[String]) -> ContextEntry {
    ContextEntry::builder()
        .context_key_name(key)
        .set_context_key_values(Some(values.to_vec()))
        .context_key_type(if key == GRANT_FOR_AWS {
            ContextKeyTypeEnum::Boolean
        } else if values.len() > 1 || key.starts_with("ec2:Add/") || key == "aws:TagKeys" {
            ContextKeyTypeEnum::StringList
        } else {
            ContextKeyTypeEnum::String
        })
        .build()
}

/// Asks IAM about each group; returns what is denied.
async fn simulate(
    iam: &aws_sdk_iam::Client,
    principal: &str,
    calls: &[Call],
    arns: &Arns,
) -> Result<Vec<Denied>> {
    let mut denied = vec![];
    for ((resource, region, context), actions) in groups(calls, arns) {
        let mut request = iam
            .simulate_principal_policy()
            .policy_source_arn(principal)
            .set_action_names(Some(actions.iter().map(|a| a.to_string()).collect()))
            .resource_arns(&resource)
            .context_entries(entry("aws:RequestedRegion", &[region]));
        for (key, values) in &context {
            request = request.context_entries(entry(key, values));
        }
        let out = request.send().await.map_err(|e| {
            aws(
                Op::IamSimulatePrincipalPolicy,
                format!("checking the permissions of {principal}"),
                e,
            )
        })?;
        for result in out.evaluation_results() {
            if result.eval_decision() != &PolicyEvaluationDecisionType::Allowed {
                denied.push(Denied {
                    action: result.eval_action_name().to_string(),
                    resource: resource.clone(),
                });
            }
        }
    }
    Ok(denied)
}

/// What EC2's DryRun said of one call: allowed, denied, or it could not be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DryRun {
    Allowed,
    Denied,
    Unchecked,
}

/// Asks EC2 with `DryRun` about a call it can take that way: a Describe, or a change whose
/// resource the plan already knows. Allowed answers `DryRunOperation`, denied
/// `UnauthorizedOperation`; anything else (S3, SSM, IAM, a resource not made yet) stays
/// unchecked.
async fn dry_run(ctx: &AwsContext, call: &Call) -> DryRun {
    use aws_sdk_ec2::types::{
        CreateVolumePermission, CreateVolumePermissionModifications, LaunchPermission,
        LaunchPermissionModifications, PermissionGroup, SnapshotAttributeName,
        SnapshotDiskContainer, Tag, UserBucket,
    };
    let ec2 = ctx.in_region(&call.region).ec2();
    let known = |kind: fn(&Resource) -> Option<&String>| call.resources.iter().find_map(kind);
    let image = known(|r| match r {
        Resource::Image(Some(id)) => Some(id),
        _ => None,
    });
    let snapshot = known(|r| match r {
        Resource::Snapshot(Some(id)) => Some(id),
        _ => None,
    });
    // The SDK's error codes for the two answers DryRun gives.
    fn answer<E: aws_smithy_types::error::metadata::ProvideErrorMetadata>(
        result: std::result::Result<impl Sized, E>,
    ) -> DryRun {
        match result.err().as_ref().and_then(|e| e.code()) {
            Some("DryRunOperation") => DryRun::Allowed,
            Some("UnauthorizedOperation") => DryRun::Denied,
            _ => DryRun::Unchecked,
        }
    }
    macro_rules! ask {
        ($call:expr) => {
            answer($call.dry_run(true).send().await)
        };
    }
    match (call.op, image, snapshot) {
        (Op::Ec2DescribeImages, ..) => ask!(ec2.describe_images().owners("self")),
        (Op::Ec2DescribeSnapshots, ..) => ask!(ec2.describe_snapshots().owner_ids("self")),
        (Op::Ec2DescribeImportSnapshotTasks, ..) => ask!(ec2.describe_import_snapshot_tasks()),
        (Op::Ec2DescribeRegions, ..) => ask!(ec2.describe_regions()),
        (Op::Ec2CreateTags, Some(id), _) | (Op::Ec2CreateTags, None, Some(id)) => ask!(ec2
            .create_tags()
            .resources(id)
            .tags(Tag::builder().key("imgpub-preflight").value("").build())),
        (Op::Ec2DeregisterImage, Some(id), _) => ask!(ec2.deregister_image().image_id(id)),
        (Op::Ec2DisableImage, Some(id), _) => ask!(ec2.disable_image().image_id(id)),
        (Op::Ec2DeleteSnapshot, _, Some(id)) => ask!(ec2.delete_snapshot().snapshot_id(id)),
        (Op::Ec2DescribeInstances, ..) => ask!(ec2.describe_instances()),
        (Op::Ec2TerminateInstances, ..) => {
            let ids: Vec<String> = call
                .resources
                .iter()
                .filter_map(|r| match r {
                    Resource::Instance(id) => Some(id.clone()),
                    _ => None,
                })
                .collect();
            if ids.is_empty() {
                return DryRun::Unchecked;
            }
            ask!(ec2.terminate_instances().set_instance_ids(Some(ids)))
        }
        (Op::Ec2ModifyImageAttribute, Some(id), _) => {
            ask!(ec2.modify_image_attribute().image_id(id).launch_permission(
                LaunchPermissionModifications::builder()
                    .add(
                        LaunchPermission::builder()
                            .group(PermissionGroup::All)
                            .build()
                    )
                    .build()
            ))
        }
        (Op::Ec2ModifySnapshotAttribute, _, Some(id)) => {
            // The same additions the run will make, so conditions on them are judged.
            let mut add = vec![];
            for (key, values) in &call.context {
                for v in values {
                    add.push(match key.as_str() {
                        "ec2:Add/group" => CreateVolumePermission::builder()
                            .group(PermissionGroup::from(v.as_str()))
                            .build(),
                        _ => CreateVolumePermission::builder().user_id(v).build(),
                    });
                }
            }
            ask!(ec2
                .modify_snapshot_attribute()
                .snapshot_id(id)
                .attribute(SnapshotAttributeName::CreateVolumePermission)
                .create_volume_permission(
                    CreateVolumePermissionModifications::builder()
                        .set_add(Some(add))
                        .build()
                ))
        }
        (Op::Ec2ImportSnapshot, ..) => {
            let object = call.resources.iter().find_map(|r| match r {
                Resource::Object { bucket, key } => Some((bucket, key)),
                _ => None,
            });
            let role = call.resources.iter().find_map(|r| match r {
                Resource::Role(name) => Some(name.clone()),
                _ => None,
            });
            let Some((bucket, key)) = object else {
                return DryRun::Unchecked;
            };
            ask!(ec2.import_snapshot().set_role_name(role).disk_container(
                SnapshotDiskContainer::builder()
                    .format("RAW")
                    .user_bucket(UserBucket::builder().s3_bucket(bucket).s3_key(key).build())
                    .build()
            ))
        }
        _ => DryRun::Unchecked,
    }
}

/// `fix` with the sharing this run does and the keys it uses: a policy shares AMIs and
/// snapshots only with the accounts it names (`--share-with`), with everyone only with
/// `--public`, and grants `kms:` only on the keys it names (`--kms-key`).
pub(crate) fn with_sharing(fix: &str, calls: &[Call]) -> String {
    let mut accounts: Vec<&str> = vec![];
    let mut public = false;
    for call in calls {
        accounts.extend(call.shares_with.iter().map(String::as_str));
        public |= call.context.iter().any(|(key, _)| key == "ec2:Add/group");
    }
    accounts.sort();
    accounts.dedup();
    let mut line = fix.to_string();
    if public && !line.contains("--public") {
        line.push_str(" --public");
    }
    if !accounts.is_empty() && !line.contains("--share-with") {
        line.push_str(&format!(" --share-with {}", accounts.join(",")));
    }
    // The customer managed keys the run encrypts with.
    let mut keys: Vec<&str> = calls
        .iter()
        .flat_map(|c| &c.resources)
        .filter_map(|r| match r {
            Resource::Key(arn) => Some(arn.as_str()),
            _ => None,
        })
        .collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        if !line.contains(key) {
            line.push_str(&format!(" --kms-key {key}"));
        }
    }
    line
}

/// The preflight. `fix` is the `imgpub aws policy …` line that grants what a command needs.
pub(crate) async fn run(
    ctx: &AwsContext,
    identity: &Identity,
    calls: &[Call],
    mode: PreflightMode,
    fix: &str,
) -> Result<()> {
    if mode == PreflightMode::Off || calls.is_empty() {
        return Ok(());
    }
    let iam = &ctx.iam();
    let arns = Arns {
        partition: identity.partition.clone(),
        account: Some(identity.account.clone()),
    };
    let cannot = |why: String| -> Result<()> {
        match mode {
            PreflightMode::Require => Err(Error::Setup(format!(
                "the permission preflight could not be made ({why}); nothing was changed. Run with --preflight auto to go on without it"
            ))),
            _ => {
                crate::aws::unchecked::note(format!("the permissions, before starting ({why})"));
                Ok(())
            }
        }
    };
    let principal = match principal(iam, identity).await {
        Principal::Simulable(arn) => arn,
        // The account root, a federated user: a note, not a warning.
        Principal::NotSimulable(arn) if mode == PreflightMode::Auto => {
            crate::aws::unchecked::note(format!(
                "the permissions, before starting (IAM cannot simulate the policies of {arn})"
            ));
            return Ok(());
        }
        Principal::NotSimulable(arn) => {
            return cannot(format!("IAM cannot simulate the policies of {arn}"))
        }
    };
    let denied = match simulate(iam, &principal, calls, &arns).await {
        Ok(denied) => denied,
        Err(err) if err.kind() == Some(ErrorKind::AccessDenied) => {
            // Without the simulation, EC2's DryRun still answers for its own calls.
            let mut denied = vec![];
            let mut unchecked = vec![];
            for call in calls {
                match dry_run(ctx, call).await {
                    DryRun::Allowed => {}
                    DryRun::Denied => denied.extend(call.checks(&arns).into_iter().map(
                        |(action, resource, _)| Denied {
                            action: action.to_string(),
                            resource,
                        },
                    )),
                    DryRun::Unchecked => unchecked.push(call.op.name()),
                }
            }
            unchecked.dedup();
            if denied.is_empty() && !unchecked.is_empty() {
                cannot(format!(
                    "{principal} may not call iam:SimulatePrincipalPolicy on itself (grant it to get this check); EC2 DryRun allowed {} calls, these could not be checked: {}",
                    calls.len() - unchecked.len(),
                    unchecked.join(", ")
                ))?;
            }
            denied
        }
        Err(err) => return cannot(err.to_string()),
    };
    if denied.is_empty() {
        tracing::info!(
            "permission preflight: all {} calls allowed for {principal}",
            calls.len()
        );
        return Ok(());
    }
    let each: Vec<String> = denied
        .iter()
        .map(|d| format!("{} on {}", d.action, d.resource))
        .collect();
    let fix = with_sharing(fix, calls);
    Err(Error::failed(
        "permission preflight",
        ErrorKind::PreflightDenied,
        None,
        format!(
            "{principal} may not make {} of the calls this run needs; nothing was changed: {}. Grant them: `{fix}` prints the policy",
            denied.len(),
            each.join("; ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::ami::Sharing;

    #[tokio::test]
    async fn principals_iam_can_simulate() {
        // Nothing is sent for users and for what IAM cannot simulate.
        let conf = aws_sdk_iam::Config::builder()
            .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
            .build();
        let iam = aws_sdk_iam::Client::from_conf(conf);
        let who = |arn: &str| Identity {
            account: "123456789012".into(),
            arn: arn.into(),
            partition: "aws".into(),
        };
        let user = "arn:aws:iam::123456789012:user/ci/publisher";
        assert_eq!(
            principal(&iam, &who(user)).await,
            Principal::Simulable(user.into())
        );
        for not in [
            "arn:aws:iam::123456789012:root",
            "arn:aws:sts::123456789012:federated-user/bob",
            "arn:aws:sts::123456789012:user/moto",
        ] {
            assert_eq!(
                principal(&iam, &who(not)).await,
                Principal::NotSimulable(not.into())
            );
        }
    }

    #[test]
    fn the_fix_line_names_the_sharing_the_run_does() {
        let sharing = Sharing {
            public: true,
            snapshot_users: vec!["222233334444".into(), "111122223333".into()],
            ..Sharing::default()
        };
        let launch_only = Sharing {
            launch_users: vec!["333344445555".into()],
            ..Sharing::default()
        };
        let share = sharing.on(Call::new(
            Op::Ec2ModifySnapshotAttribute,
            "eu-west-1",
            vec![],
        ));
        let launch = launch_only.on(Call::new(Op::Ec2ModifyImageAttribute, "eu-west-1", vec![]));
        let calls = [share, Call::new(Op::Ec2DescribeImages, "eu-west-1", vec![])];
        assert_eq!(
            with_sharing("imgpub aws policy --for copy", &calls),
            "imgpub aws policy --for copy --public --share-with 111122223333,222233334444"
        );
        assert_eq!(
            with_sharing("imgpub aws policy --for copy", &calls[1..]),
            "imgpub aws policy --for copy"
        );
        // An AMI shared with an account (its launch permission) needs --share-with too.
        assert_eq!(
            with_sharing("imgpub aws policy --for upload", &[launch]),
            "imgpub aws policy --for upload --share-with 333344445555"
        );
    }

    #[test]
    fn one_request_per_resource_and_context() {
        let arns = Arns {
            partition: "aws".into(),
            account: Some("123456789012".into()),
        };
        let object = Resource::Object {
            bucket: "images".into(),
            key: "ci/os".into(),
        };
        let calls = vec![
            Call::new(
                Op::S3CreateMultipartUpload,
                "eu-west-1",
                vec![object.clone()],
            ),
            Call::new(Op::S3UploadPart, "eu-west-1", vec![object.clone()]),
            Call::new(Op::S3AbortMultipartUpload, "eu-west-1", vec![object]),
            Call::new(Op::Ec2DescribeImages, "eu-west-1", vec![]),
            Call::new(Op::Ec2DescribeImages, "us-east-1", vec![]),
        ];
        let groups = groups(&calls, &arns);
        let got: Vec<(&str, &str, Vec<&str>)> = groups
            .iter()
            .map(|((r, region, _), a)| (r.as_str(), region.as_str(), a.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("*", "eu-west-1", vec!["ec2:DescribeImages"]),
                ("*", "us-east-1", vec!["ec2:DescribeImages"]),
                (
                    "arn:aws:s3:::images/ci/os",
                    "eu-west-1",
                    vec!["s3:PutObject", "s3:AbortMultipartUpload"]
                ),
            ]
        );
    }
}
