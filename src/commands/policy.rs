//! `imgpub aws policy`: the least-privilege identity policy for the chosen commands, built
//! from the table in `aws::calls` and each command's `MAY_CALL`. It needs no credentials:
//! the account and partition come from flags, from the caller when credentials work, or
//! stay `*` (and the partition follows the region).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use crate::aws::calls::{Arns, Call, Op, ResourceKind, Tagged};
use crate::aws::config::{validate_region, AwsSettings};
use crate::aws::s3::S3Prefix;
use crate::aws::tags::{MANAGED_KEY, MANAGED_VALUE};
use crate::commands::driver::{Command, Emit, Offline, Output};
use crate::commands::needs::kms_key_region;
pub(crate) use crate::commands::needs::For;
use crate::commands::{
    copy_regions, delete_image, ensure_public, gc, grant, initialize, list_regions, publish_ssm,
    upload, upload_object,
};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct PolicyOptions {
    pub commands: Vec<For>,
    /// `BUCKET[/PREFIX]` or `s3://BUCKET[/PREFIX]`.
    pub bucket: Option<String>,
    pub regions: Vec<String>,
    /// Where `copy-regions` copies from (default: the configured region).
    pub source_regions: Vec<String>,
    pub ssm_prefix: Option<String>,
    pub public: bool,
    pub share_with: Vec<String>,
    pub role_name: String,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// How `upload` makes its snapshot: S3 and ImportSnapshot, or EBS direct.
    pub via: upload::Via,
    /// The identity that will hold the policy: the preflight's simulation is granted on it
    /// alone (else on `*`: every principal's permissions readable).
    pub principal: Option<String>,
    /// `--gc-tag`: the tags of the instances `gc` terminates (default ore's).
    pub gc_tags: Vec<String>,
    /// `--kms-key`: the customer managed keys the publisher uses (ARNs).
    pub kms_keys: Vec<String>,
    /// `--delta`: `upload --parent` may write a snapshot on an earlier one.
    pub delta: bool,
    /// `--protect`: a release's `protect = true`: deregistration protection turned on by
    /// apply (with `--for copy`) and off by prune.
    pub protect: bool,
}

/// Where the policy applies, every part resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub commands: Vec<For>,
    pub arns: Arns,
    pub bucket: String,
    pub prefix: Option<String>,
    /// Empty: every region.
    pub regions: Vec<String>,
    /// The regions `copy-regions` copies from (with `--for copy`); empty: any.
    pub source_regions: Vec<String>,
    pub ssm_prefix: Option<String>,
    pub public: bool,
    pub share_with: Vec<String>,
    pub role_name: String,
    pub via: upload::Via,
    pub principal: Option<String>,
    /// The tags an instance must carry for `gc` to terminate it.
    pub gc_tags: Vec<(String, String)>,
    /// The customer managed KMS keys the `kms:` actions are granted on; none: no `kms:`.
    pub kms_keys: Vec<String>,
    pub delta: bool,
    pub protect: bool,
}

/// Refuses `*`, `?` and `${…}` in a value that lands in a policy: a pipeline that templates
/// it would widen what the policy grants.
pub(crate) fn no_wildcards(flag: &str, value: &str) -> Result<()> {
    if value.contains(['*', '?']) || value.contains("${") {
        return Err(Error::Invalid(format!(
            "{flag} {value:?} has a wildcard or a policy variable (*, ? or ${{…}}), which would widen the policy; name it exactly"
        )));
    }
    Ok(())
}

/// Every operation `command` may make; `via`: how `upload` makes its snapshot.
pub(crate) fn ops(command: For, via: upload::Via) -> &'static [Op] {
    match command {
        For::Upload if via == upload::Via::EbsDirect => upload::MAY_CALL_EBS_DIRECT,
        For::Upload => upload::MAY_CALL,
        For::Copy => copy_regions::MAY_CALL,
        For::Ssm => publish_ssm::MAY_CALL,
        For::Delete => delete_image::MAY_CALL,
        For::Grant => grant::MAY_CALL,
        For::EnsurePublic => ensure_public::MAY_CALL,
        For::Gc => gc::MAY_CALL,
        For::Prune => crate::commands::release::prune::MAY_CALL,
        For::Watch => crate::commands::release::watch::MAY_CALL,
        For::Restore => crate::commands::release::restore::MAY_CALL,
        For::Initialize => initialize::MAY_CALL,
        For::Object => upload_object::MAY_CALL,
        For::ListRegions => list_regions::MAY_CALL,
    }
}

/// The flags' own checks, without AWS (`create-publisher` runs them before any call).
pub(crate) fn validate(opts: &PolicyOptions) -> Result<()> {
    for region in opts.regions.iter().chain(&opts.source_regions) {
        validate_region(region)?;
    }
    if let Some(bucket) = &opts.bucket {
        no_wildcards("--bucket", bucket)?;
    }
    if let Some(prefix) = &opts.ssm_prefix {
        no_wildcards("--ssm-prefix", prefix)?;
    }
    match opts.ssm_prefix.as_deref().map(|p| p.trim_matches('/')) {
        Some(prefix) if !prefix.is_empty() => {}
        _ if opts.commands.contains(&For::Ssm) => {
            return Err(Error::Invalid(
                "--for ssm needs --ssm-prefix /PATH/: without one the policy would let the publisher read and write every parameter in the account (SecureStrings included)".into(),
            ))
        }
        _ => {}
    }
    crate::aws::ami::validate_account_ids("--share-with", &opts.share_with)?;
    if let Some(account) = &opts.account {
        crate::aws::ami::validate_account_ids("--account", std::slice::from_ref(account))?;
    }
    if let Some(arn) = &opts.principal {
        principal_arn("--principal", arn)?;
    }
    for key in &opts.kms_keys {
        kms_key_region("--kms-key", key)?;
    }
    crate::aws::iam::validate_role_name(&opts.role_name)
}

/// An IAM principal ARN, parsed: `arn:PARTITION:iam::ACCOUNT:root`, `…:user/NAME` or
/// `…:role/NAME` (paths allowed), with no wildcard (it names one principal).
pub(crate) fn principal_arn(flag: &str, arn: &str) -> Result<String> {
    let bad = || {
        Error::Invalid(format!(
            "{flag} {arn:?} is not an IAM principal ARN; use arn:aws:iam::ACCOUNT:root, arn:aws:iam::ACCOUNT:role/NAME or arn:aws:iam::ACCOUNT:user/NAME"
        ))
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return Err(bad());
    };
    let partition_ok = partition == "aws" || partition.starts_with("aws-");
    let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    let name_ok = |rest: &str| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
    };
    let resource_ok = resource == "root"
        || resource.strip_prefix("role/").is_some_and(name_ok)
        || resource.strip_prefix("user/").is_some_and(name_ok);
    let ok = prefix == "arn"
        && partition_ok
        && service == "iam"
        && region.is_empty()
        && account_ok
        && resource_ok;
    ok.then(|| arn.to_string()).ok_or_else(bad)
}

/// Checks the flags; `caller` is the partition and account of working credentials, if any,
/// and `region` the configured region (for the partition and the default bucket).
pub fn scope(
    opts: &PolicyOptions,
    caller: Option<(String, String)>,
    region: Option<&str>,
) -> Result<Scope> {
    validate(opts)?;
    if opts.commands.contains(&For::Initialize) {
        tracing::warn!("--for initialize is an account admin's policy: it can rewrite the vmimport role's policy and trust, and so grant anything; never give it to a CI publisher");
    }
    let partition = match (&opts.partition, &caller) {
        (Some(p), _) => {
            if ![
                "aws",
                "aws-cn",
                "aws-us-gov",
                "aws-iso",
                "aws-iso-b",
                "aws-iso-e",
            ]
            .contains(&p.as_str())
            {
                return Err(Error::Invalid(format!(
                    "--partition {p:?} is not a partition; use aws, aws-cn or aws-us-gov"
                )));
            }
            p.clone()
        }
        (None, Some((p, _))) => p.clone(),
        (None, None) => {
            let region = opts.regions.first().map(String::as_str).or(region);
            region
                .map(crate::aws::config::partition_for_region)
                .unwrap_or("aws")
                .to_string()
        }
    };
    let account = opts
        .account
        .clone()
        .or_else(|| caller.map(|(_, account)| account));
    let (bucket, prefix) = match &opts.bucket {
        Some(b) => {
            let url = if b.starts_with("s3://") {
                b.clone()
            } else {
                format!("s3://{b}")
            };
            let location = S3Prefix::parse(&url)?;
            (location.bucket, location.prefix)
        }
        // What `initialize` creates without --bucket.
        None => (
            format!(
                "imgpub-{}-{}",
                account.as_deref().unwrap_or("*"),
                match opts.regions.as_slice() {
                    [one] => one.as_str(),
                    [] => region.unwrap_or("*"),
                    _ => "*",
                }
            ),
            None,
        ),
    };
    let ssm_prefix = opts
        .ssm_prefix
        .as_ref()
        .map(|p| p.trim_matches('/').to_string())
        .filter(|p| !p.is_empty());
    let mut commands = if opts.commands.is_empty() {
        vec![For::Upload]
    } else {
        opts.commands.clone()
    };
    commands.sort();
    commands.dedup();
    // CopyImage is authorized on the source AMI too (EC2 User Guide, "Grant permissions to
    // copy Amazon EC2 AMIs"), which lives in the region copied from, not a target.
    let source_regions = match (commands.contains(&For::Copy), &opts.source_regions[..]) {
        (false, _) => vec![],
        (true, []) => region.map(|r| vec![r.to_string()]).unwrap_or_default(),
        (true, given) => given.to_vec(),
    };
    let uses_keys = commands.iter().any(|c| {
        ops(*c, opts.via).iter().any(|op| {
            op.info()
                .needs
                .iter()
                .any(|n| n.resource == ResourceKind::Key)
        })
    });
    if !opts.kms_keys.is_empty() && !uses_keys {
        return Err(Error::Invalid(
            "--kms-key has no use here: only `--for upload --via ebs-direct` and `--for copy` use a key as the caller (an import encrypts as the vmimport role: `imgpub aws initialize --kms-key`)".into(),
        ));
    }
    // A key is regional: one outside the regions written to or copied from is of no use.
    for key in &opts.kms_keys {
        let region = kms_key_region("--kms-key", key)?;
        let regions: Vec<&String> = opts.regions.iter().chain(&source_regions).collect();
        if !opts.regions.is_empty() && !regions.iter().any(|r| *r == region) {
            return Err(Error::Invalid(format!(
                "--kms-key {key} is in {region}, outside the regions of this policy: name a key of those regions, or add {region} to --regions"
            )));
        }
    }
    if commands.contains(&For::Copy) && !opts.regions.is_empty() && source_regions.is_empty() {
        // Without it the copy could not read its source (aws:RequestedRegion names only the
        // targets), or CopyImage would have to be granted on every region's AMIs.
        return Err(Error::Invalid(
            "--for copy with --regions needs the region copied from: --source-region REGION (or --region)".into(),
        ));
    }
    Ok(Scope {
        source_regions,
        commands,
        arns: Arns { partition, account },
        bucket,
        prefix,
        regions: opts.regions.clone(),
        ssm_prefix,
        public: opts.public,
        share_with: opts.share_with.clone(),
        role_name: opts.role_name.clone(),
        via: opts.via,
        principal: opts.principal.clone(),
        gc_tags: match opts.gc_tags.as_slice() {
            [] => vec![(gc::ORE_TAG.0.to_string(), gc::ORE_TAG.1.to_string())],
            given => {
                given.iter().try_for_each(|t| no_wildcards("--gc-tag", t))?;
                crate::aws::tags::parse("--gc-tag", given)?
            }
        },
        kms_keys: opts.kms_keys.clone(),
        delta: opts.delta,
        protect: opts.protect,
    })
}

/// One row of `--format table`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub action: &'static str,
    pub resources: Vec<String>,
    /// Every reason, when several calls need the action.
    pub why: Vec<&'static str>,
}

/// The document and its rows.
#[derive(Debug, Clone)]
pub struct Policy {
    pub document: Value,
    pub rows: Vec<Row>,
}

/// A statement being built: its actions for one resource kind (and condition).
#[derive(Default)]
struct Statement {
    actions: Vec<&'static str>,
    /// The creating calls a tag-on-create statement allows tags with (`ec2:CreateAction`).
    create_actions: Vec<&'static str>,
}

impl Scope {
    fn regions(&self) -> Vec<&str> {
        if self.regions.is_empty() {
            vec!["*"]
        } else {
            self.regions.iter().map(String::as_str).collect()
        }
    }

    /// ARNs in each region copied from (every region when they are not known).
    fn source_arns(&self, f: &dyn Fn(&str) -> String) -> Vec<String> {
        match self.source_regions.as_slice() {
            [] => vec![f("*")],
            regions => regions.iter().map(|r| f(r)).collect(),
        }
    }

    /// The resources a kind of resource is scoped to.
    fn resources(&self, kind: ResourceKind) -> Vec<String> {
        let a = &self.arns;
        let per_region = |f: &dyn Fn(&str) -> String| self.regions().into_iter().map(f).collect();
        match kind {
            ResourceKind::Bucket => vec![a.bucket(&self.bucket)],
            ResourceKind::Object => vec![a.object(
                &self.bucket,
                &match &self.prefix {
                    Some(p) => format!("{p}/*"),
                    None => "*".to_string(),
                },
            )],
            ResourceKind::Image => per_region(&|r| a.image(r, "*")),
            ResourceKind::SourceImage => self.source_arns(&|r| a.image(r, "*")),
            ResourceKind::Snapshot => per_region(&|r| a.snapshot(r, "*")),
            ResourceKind::Instance => per_region(&|r| a.instance(r, "*")),
            ResourceKind::RecycleBinRule => per_region(&|r| a.rule(r, "*")),
            ResourceKind::ImageUsageReport => per_region(&|r| a.usage_report(r, "*")),
            ResourceKind::ImportSnapshotTask => per_region(&|r| a.import_task(r, "*")),
            ResourceKind::Role => vec![a.role(&self.role_name)],
            ResourceKind::Parameter => per_region(&|r| {
                a.parameter(
                    r,
                    &match &self.ssm_prefix {
                        Some(p) => format!("{p}/*"),
                        None => "*".to_string(),
                    },
                )
            }),
            // Only create-publisher (an admin's command, not in --for) touches these.
            ResourceKind::User => vec![a.user("*")],
            ResourceKind::ManagedPolicy => vec![a.managed_policy("imgpub-publisher-*")],
            ResourceKind::OidcProvider => {
                vec![a.oidc_provider(crate::aws::publisher::GITHUB_ISSUER)]
            }
            ResourceKind::Key => self.kms_keys.clone(),
            ResourceKind::Principal => vec![self.principal.clone().unwrap_or_else(|| "*".into())],
            ResourceKind::Any => vec!["*".to_string()],
        }
    }
}

/// Builds the policy: one statement per kind of resource, Sids naming it; the region
/// condition on actions that take only `*`; the sharing conditions on snapshots.
pub fn build(scope: &Scope) -> Policy {
    // (statement key) → actions; the key orders the statements.
    let mut statements: BTreeMap<(u8, &'static str, ResourceKind), Statement> = BTreeMap::new();
    let mut rows: Vec<Row> = vec![];
    let mut seen = std::collections::BTreeSet::new();
    // Whether some command of the scope needs `action` on `kind` unscoped (not only on what
    // carries imgpub's tag): `ec2:CreateTags` on snapshots only for an import's.
    let unscoped = |action: &str, kind: ResourceKind| {
        scope.commands.iter().any(|c| {
            ops(*c, scope.via).iter().any(|o| {
                o.info().needs.iter().any(|n| {
                    n.action == action
                        && n.resource == kind
                        && n.create_action.is_none()
                        && n.tagged == Tagged::No
                })
            })
        })
    };
    for command in &scope.commands {
        for op in ops(*command, scope.via) {
            // A copy reads permissions on its source only: with --regions, those reads
            // get their own statements below, not the targets'.
            let source_read = matches!(
                op,
                Op::Ec2DescribeImageAttribute | Op::Ec2DescribeSnapshotAttribute
            );
            if *command == For::Copy && source_read && !scope.regions.is_empty() {
                continue;
            }
            // Sharing is granted only when asked for (--public, --share-with): upload and
            // copy share nothing otherwise, and ModifyImageAttribute takes no condition
            // that could limit whom an AMI is shared with. The block-public-access and
            // encryption-by-default reads serve --public alone.
            let shares = scope.public || !scope.share_with.is_empty();
            let sharing_op = matches!(
                op,
                Op::Ec2ModifyImageAttribute | Op::Ec2ModifySnapshotAttribute
            );
            let public_read = matches!(
                op,
                Op::Ec2GetImageBlockPublicAccessState
                    | Op::Ec2GetSnapshotBlockPublicAccessState
                    | Op::Ec2GetEbsEncryptionByDefault
                    | Op::ServiceQuotasGetServiceQuota
            );
            // `release watch` shares only with `--fix` (its policy line says --public then),
            // and reads parameters only under a prefix.
            let publishes = matches!(command, For::Upload | For::Copy);
            let shares_to_fix = publishes || matches!(command, For::Watch | For::Restore);
            let unscoped_read =
                *command == For::Watch && *op == Op::SsmGetParameter && scope.ssm_prefix.is_none();
            // Deregistration protection only for a release that asks for it.
            let protection = matches!(
                op,
                Op::Ec2EnableImageDeregistrationProtection
                    | Op::Ec2DisableImageDeregistrationProtection
            );
            if (shares_to_fix && sharing_op && !shares)
                || (publishes || matches!(command, For::Grant | For::Restore))
                    && public_read
                    && !scope.public
                || unscoped_read
                || protection && !scope.protect
            {
                continue;
            }
            for need in op.info().needs {
                // No kms: at all unless keys are named: the AWS managed aws/ebs key needs
                // none, and a customer managed key is named, never `*`.
                if need.resource == ResourceKind::Key && scope.kms_keys.is_empty() {
                    continue;
                }
                // A tag on create is covered when CreateTags is granted on that kind anyway
                // (and not only on what carries imgpub's tag, which a new resource does not
                // yet).
                let plain_tags =
                    need.create_action.is_some() && unscoped("ec2:CreateTags", need.resource);
                // Likewise a need on imgpub's own resources, granted on every one anyway.
                let covered =
                    need.tagged == Tagged::Resource && unscoped(need.action, need.resource);
                if plain_tags || covered {
                    continue;
                }
                if !seen.insert((need.action, need.resource, need.create_action, need.tagged)) {
                    // Needed again, maybe for another reason: the table says each once.
                    let resources = scope.resources(need.resource);
                    if let Some(row) = rows
                        .iter_mut()
                        .find(|r| r.action == need.action && r.resources == resources)
                    {
                        if !row.why.contains(&need.why) {
                            row.why.push(need.why);
                        }
                    }
                    continue;
                }
                let key =
                    statement_key(need.resource, need.action, need.create_action, need.tagged);
                let st = statements.entry(key).or_default();
                if !st.actions.contains(&need.action) {
                    st.actions.push(need.action);
                }
                if let Some(op) = need.create_action {
                    if !st.create_actions.contains(&op) {
                        st.create_actions.push(op);
                    }
                }
                rows.push(Row {
                    action: need.action,
                    resources: scope.resources(need.resource),
                    why: vec![need.why],
                });
            }
        }
    }
    let mut out = vec![];
    // The source AMI's CopyImage goes into the statements below, with the reads beside it.
    statements.remove(&statement_key(
        ResourceKind::SourceImage,
        "ec2:CopyImage",
        None,
        Tagged::No,
    ));
    if scope.commands.contains(&For::Copy) {
        // The copy reads its source where it is: CopyImage is authorized on the source AMI
        // (EC2 User Guide, "Grant permissions to copy Amazon EC2 AMIs"), and the source's
        // launch and volume permissions are read to be carried over. Only these, and only
        // in the regions copied from, so the copy identity changes nothing there. Its own
        // statement also where the source region is a target: CopyImage on the new AMI is
        // scoped to tagging it as imgpub's, which the source AMI takes no condition for.
        let a = &scope.arns;
        let images = scope.source_arns(&|r| a.image(r, "*"));
        let snapshots = scope.source_arns(&|r| a.snapshot(r, "*"));
        out.push(json!({
            "Sid": "CopySourceImages",
            "Effect": "Allow",
            "Action": ["ec2:CopyImage"],
            "Resource": images.clone(),
        }));
        // The reads, where `Images` and `Snapshots` do not already reach every region
        // (--regions given).
        if !scope.regions.is_empty() {
            rows.push(Row {
                action: "ec2:DescribeImageAttribute",
                resources: images.clone(),
                why: vec!["read the source AMI's launch permissions"],
            });
            rows.push(Row {
                action: "ec2:DescribeSnapshotAttribute",
                resources: snapshots.clone(),
                why: vec!["read the source snapshot's volume permissions"],
            });
            out.push(json!({
                "Sid": "CopySourceImageReads",
                "Effect": "Allow",
                "Action": ["ec2:DescribeImageAttribute"],
                "Resource": images,
            }));
            out.push(json!({
                "Sid": "CopySourceSnapshotReads",
                "Effect": "Allow",
                "Action": ["ec2:DescribeSnapshotAttribute"],
                "Resource": snapshots,
            }));
        }
    }
    for ((_, sid, kind), st) in statements {
        let mut actions = st.actions;
        actions.sort();
        let mut statement = json!({
            "Sid": sid,
            "Effect": "Allow",
            "Action": actions,
            "Resource": scope.resources(kind),
        });
        if let Some(condition) = condition(scope, sid, &st.create_actions) {
            statement["Condition"] = condition;
        }
        out.push(statement);
    }
    rows.sort_by(|a, b| (a.action, &a.resources).cmp(&(b.action, &b.resources)));
    Policy {
        document: json!({"Version": "2012-10-17", "Statement": out}),
        rows,
    }
}

/// Statements by resource kind (order, Sid, the kind its resources are of); sharing a
/// snapshot and tagging on create get their own, because they carry conditions, and so do
/// changes to imgpub's own images and snapshots and the calls that make new ones.
fn statement_key(
    kind: ResourceKind,
    action: &str,
    create_action: Option<&str>,
    tagged: Tagged,
) -> (u8, &'static str, ResourceKind) {
    let (order, sid) = match (kind, action, create_action, tagged) {
        // Optional (the run goes on without it, saying what it could not check): its own
        // statement, so it can be left out.
        (_, "iam:SimulatePrincipalPolicy", ..) => (10, "Preflight"),
        (ResourceKind::Snapshot, _, Some(_), _) => (6, "TagSnapshotsOnCreate"),
        (_, _, Some(_), _) => (6, "TagOnCreate"),
        (ResourceKind::Snapshot, "ec2:ModifySnapshotAttribute", ..) => (5, "ShareSnapshots"),
        (ResourceKind::Bucket, ..) => (0, "ImageBucket"),
        (ResourceKind::Object, ..) => (1, "ImageObjects"),
        (ResourceKind::ImportSnapshotTask, ..) => (2, "ImportTasks"),
        (ResourceKind::Image, .., Tagged::Request) => (3, "NewImages"),
        (ResourceKind::Image, .., Tagged::Resource) => (3, "OwnImages"),
        (ResourceKind::Image, ..) => (3, "Images"),
        (ResourceKind::SourceImage, ..) => (3, "CopySourceImages"),
        (ResourceKind::Snapshot, "ebs:StartSnapshot", _, Tagged::Request) => {
            (4, "StartedSnapshots")
        }
        (ResourceKind::Snapshot, .., Tagged::Request) => (4, "NewSnapshots"),
        (ResourceKind::Snapshot, .., Tagged::Resource) => (4, "OwnSnapshots"),
        (ResourceKind::Snapshot, ..) => (4, "Snapshots"),
        (ResourceKind::Instance, ..) => (7, "TestInstances"),
        (ResourceKind::RecycleBinRule, .., Tagged::Request) => (8, "NewRecycleBinRules"),
        (ResourceKind::RecycleBinRule, .., Tagged::Resource) => (8, "OwnRecycleBinRules"),
        (ResourceKind::RecycleBinRule, ..) => (8, "RecycleBinRules"),
        (ResourceKind::ImageUsageReport, ..) => (8, "UsageReports"),
        (ResourceKind::Parameter, ..) => (7, "Parameters"),
        (ResourceKind::Role, ..) => (8, "ImportRole"),
        (ResourceKind::User, ..) => (11, "PublisherUsers"),
        (ResourceKind::ManagedPolicy, ..) => (12, "PublisherPolicies"),
        (ResourceKind::OidcProvider, ..) => (13, "OidcProvider"),
        // Grants only for an AWS resource (EBS makes them for the snapshot), not for any
        // grantee a leaked credential names.
        (ResourceKind::Key, "kms:CreateGrant", ..) => (9, "EncryptionKeyGrants"),
        (ResourceKind::Key, ..) => (9, "EncryptionKeys"),
        (ResourceKind::Any, ..) => (9, "ReadOnlyOrUnscopable"),
        (ResourceKind::Principal, ..) => (10, "Preflight"),
    };
    (order, sid, kind)
}

/// The services that use a key for the caller, as kms:ViaService names them, in any region
/// and partition (only AWS sets the key): EC2 for EBS ("ec2.AWS_region.amazonaws.com (EBS
/// only)": KMS Developer Guide, "AWS KMS condition keys"), and for the EBS direct APIs,
/// whose name AWS does not give, EBS's own as well.
fn via_services(scope: &Scope) -> Vec<&'static str> {
    let mut via = vec!["ec2.*"];
    if scope.via == upload::Via::EbsDirect && scope.commands.contains(&For::Upload) {
        via.push("ebs.*");
    }
    via
}

fn condition(scope: &Scope, sid: &str, create_actions: &[&str]) -> Option<Value> {
    let managed = |key: &str| json!({format!("{key}/{MANAGED_KEY}"): MANAGED_VALUE});
    match sid {
        // Only what imgpub made (it carries imgpub's tag) is changed...
        "OwnImages" | "OwnSnapshots" | "OwnRecycleBinRules" => {
            Some(json!({"StringEquals": managed("aws:ResourceTag")}))
        }
        // ... and what it makes is tagged as imgpub's as it is made.
        "NewImages" | "NewSnapshots" | "NewRecycleBinRules" => {
            Some(json!({"StringEquals": managed("aws:RequestTag")}))
        }
        // A snapshot started on a parent reads every block of it: without `--delta`, none
        // (ebs:ParentSnapshot, Service Authorization Reference), or a leaked credential could
        // copy any snapshot of the account into one it may register and share. A parent
        // cannot be limited by its tags: with `--delta`, any snapshot may be one.
        "StartedSnapshots" if scope.delta => {
            Some(json!({"StringEquals": managed("aws:RequestTag")}))
        }
        "StartedSnapshots" => Some(json!({
            "StringEquals": managed("aws:RequestTag"),
            "Null": {"ebs:ParentSnapshot": "true"}
        })),
        "ImageBucket" | "ImageObjects" => {
            // S3 ARNs carry no account, and bucket names are global: only a bucket of the
            // publisher's own account (a squatted one of the same name is not).
            let account = scope
                .arns
                .account
                .clone()
                .unwrap_or_else(|| "${aws:PrincipalAccount}".into());
            Some(json!({"StringEquals": {"s3:ResourceAccount": account}}))
        }
        "TagOnCreate" | "TagSnapshotsOnCreate" => {
            Some(json!({"StringEquals": {"ec2:CreateAction": create_actions}}))
        }
        // "do not allow full access to kms:CreateGrant. Instead, use the
        // kms:GrantIsForAWSResource condition key" (EBS User Guide, "Amazon EBS encryption",
        // Permissions for users): only grants EBS makes for the snapshot.
        "EncryptionKeyGrants" => Some(json!({
            "Bool": {"kms:GrantIsForAWSResource": "true"},
            "StringLike": {"kms:ViaService": via_services(scope)}
        })),
        // Only through EBS: a leaked credential cannot call KMS itself to decrypt, or to
        // make data keys, with the key.
        "EncryptionKeys" => Some(json!({"StringLike": {"kms:ViaService": via_services(scope)}})),
        // gc terminates only instances carrying its tags (kola's): a leaked gc credential
        // cannot stop the account's other machines.
        "TestInstances" => {
            let tags: serde_json::Map<String, Value> = scope
                .gc_tags
                .iter()
                .map(|(k, v)| (format!("aws:ResourceTag/{k}"), json!(v)))
                .collect();
            Some(json!({"StringEquals": tags}))
        }
        "ShareSnapshots" => {
            let mut c = serde_json::Map::new();
            c.insert("StringEquals".into(), managed("aws:ResourceTag"));
            if !scope.public {
                // No `all` unless asked for: the key must be absent.
                c.insert("Null".into(), json!({"ec2:Add/group": "true"}));
            }
            if scope.share_with.is_empty() {
                // No account either unless named: without this, any snapshot the statement
                // covers could be shared with any account.
                let null = c.entry("Null").or_insert_with(|| json!({}));
                null["ec2:Add/userId"] = json!("true");
            } else {
                c.insert(
                    "ForAllValues:StringEquals".into(),
                    json!({"ec2:Add/userId": scope.share_with}),
                );
            }
            Some(Value::Object(c))
        }
        "ReadOnlyOrUnscopable" if !scope.regions.is_empty() => {
            // A copy reads its source in the source region as well as the targets.
            let mut regions = scope.regions.clone();
            for r in &scope.source_regions {
                if !regions.contains(r) {
                    regions.push(r.clone());
                }
            }
            Some(json!({"StringEquals": {"aws:RequestedRegion": regions}}))
        }
        _ => None,
    }
}

/// The partition and account of working credentials, and the configured region, for
/// `policy`; nothing when the flags name both, or when there are no usable credentials
/// (the policy then says `*` for the account).
pub(crate) async fn caller(
    settings: &AwsSettings,
    opts: &PolicyOptions,
) -> (Option<(String, String)>, Option<String>) {
    let unscoped = || {
        if opts.account.is_none() {
            // Said at the default level: a policy for every account is not what an admin
            // pasting it expects.
            tracing::warn!("no usable credentials: the policy names * for the account, so it grants the same in any account; pass --account ACCOUNT to scope it");
        }
    };
    let Ok(ctx) = crate::aws::config::load(settings).await else {
        unscoped();
        return (None, None);
    };
    let region = Some(ctx.region.clone());
    if opts.account.is_some() && opts.partition.is_some() {
        return (None, region);
    }
    let lookup = tokio::time::timeout(std::time::Duration::from_secs(10), ctx.verify_identity());
    match lookup.await {
        Ok(Ok(identity)) => (Some((identity.partition, identity.account)), region),
        _ => {
            unscoped();
            (None, region)
        }
    }
}

/// Where a policy document can go, and how long it may be there (IAM counts the
/// characters of the document without white space).
pub(crate) const LIMITS: &[(&str, usize)] = &[
    ("a user's inline policy", 2_048),
    ("a customer-managed policy", 6_144),
    ("a role's inline policy", 10_240),
];

/// The document's size as IAM counts it.
pub(crate) fn size(document: &Value) -> usize {
    document
        .to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .count()
}

/// Warnings for the places the document does not fit, with what to do.
pub(crate) fn size_warnings(document: &Value) -> Vec<String> {
    let n = size(document);
    LIMITS
        .iter()
        .filter(|(_, limit)| n > *limit)
        .map(|(place, limit)| {
            format!(
                "the policy is {n} characters, over the {limit} of {place}: attach it as a customer-managed policy (6,144) or to a role (10,240), or pass fewer --for commands"
            )
        })
        .collect()
}

/// `--format table`: action, resources, why.
pub(crate) fn table(rows: &[Row]) -> String {
    let width = rows
        .iter()
        .map(|r| r.action.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!("{:width$}  {:60}  WHY\n", "ACTION", "RESOURCE");
    for row in rows {
        for (i, resource) in row.resources.iter().enumerate() {
            let (action, why) = if i == 0 {
                (row.action, row.why.join("; "))
            } else {
                ("", String::new())
            };
            out.push_str(&format!("{action:width$}  {resource:60}  {why}\n"));
        }
    }
    out
}

/// How `imgpub aws policy` prints the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The policy document.
    #[default]
    Json,
    /// One row per action: what it is for, on which resources.
    Table,
}

/// `imgpub aws policy`: the policy of the chosen commands.
#[derive(Debug, Clone)]
pub struct PrintPolicy {
    pub opts: PolicyOptions,
    pub format: Format,
}

impl Command for PrintPolicy {
    type Connection = Offline;
    type Local = ();
    type Plan = Policy;

    fn validate(&self) -> Result<()> {
        validate(&self.opts)
    }

    /// The caller's account and partition when credentials are at hand, else placeholders.
    async fn plan(&self, o: &Offline, (): ()) -> Result<Policy> {
        let (caller, region) = caller(&o.settings, &self.opts).await;
        // Without usable credentials the configured region is still --region's.
        let region = region.or_else(|| o.settings.region.clone());
        Ok(build(&scope(&self.opts, caller, region.as_deref())?))
    }

    /// Prints; calls nothing.
    fn check(&self, _: &Offline, _: &Policy) -> Vec<Call> {
        vec![]
    }

    fn policy(&self, _: &Offline, _: &Policy, _: &[Call]) -> Option<String> {
        None
    }

    async fn apply(&self, _: &Offline, built: &Policy, emit: Emit<'_>) -> Result<()> {
        size_warnings(&built.document)
            .iter()
            .for_each(|w| tracing::warn!("{w}"));
        emit(Output::Text(match self.format {
            Format::Json => format!("{:#}", built.document),
            Format::Table => table(&built.rows).trim_end_matches('\n').to_string(),
        }));
        let statements = built.document["Statement"].as_array().map_or(0, Vec::len);
        emit(Output::Summary(format!(
            "policy: {statements} statements granting {} actions; nothing was changed in AWS",
            built.rows.len()
        )));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(commands: &[For]) -> PolicyOptions {
        PolicyOptions {
            commands: commands.to_vec(),
            bucket: Some("images/p".into()),
            ssm_prefix: Some("/os/".into()),
            role_name: "vmimport".into(),
            ..PolicyOptions::default()
        }
    }

    fn actions(policy: &Policy) -> Vec<String> {
        let mut all: Vec<String> = policy.document["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["Action"].as_array().unwrap().clone())
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    #[test]
    fn upload_policy_has_what_the_usual_docs_lack() {
        let scope = scope(&opts(&[For::Upload]), None, Some("us-east-1")).unwrap();
        let policy = build(&scope);
        let have = actions(&policy);
        for want in [
            "s3:PutObject",
            "s3:ListBucket",
            "s3:DeleteObject",
            "s3:AbortMultipartUpload",
            "s3:ListBucketMultipartUploads",
            "s3:ListMultipartUploadParts",
            "ec2:ImportSnapshot",
            "ec2:RegisterImage",
            "ec2:DeregisterImage",
            "ec2:DeleteSnapshot",
        ] {
            assert!(have.contains(&want.to_string()), "{want} missing: {have:?}");
        }
        assert!(!have.iter().any(|a| a.starts_with("ssm:")), "{have:?}");
        // Without --public and --share-with nothing may be shared at all: ModifyImageAttribute
        // takes no condition that could limit it, so it is not granted.
        for unasked in ["ec2:ModifyImageAttribute", "ec2:ModifySnapshotAttribute"] {
            assert!(!have.contains(&unasked.to_string()), "{unasked}: {have:?}");
        }
        let shared = build(
            &super::scope(
                &PolicyOptions {
                    share_with: vec!["111122223333".into()],
                    ..opts(&[For::Upload])
                },
                None,
                Some("us-east-1"),
            )
            .unwrap(),
        );
        assert!(actions(&shared).contains(&"ec2:ModifyImageAttribute".to_string()));
        let text = policy.document.to_string();
        assert!(text.contains("\"arn:aws:s3:::images/p/*\""), "{text}");
        assert!(text.contains("\"arn:aws:s3:::images\""), "{text}");
        assert!(text.contains("arn:aws:ec2:*::image/*"), "{text}");
        // Scoped to imgpub's own images and snapshots it is over a user's inline 2,048,
        // well within a managed policy (create-publisher attaches one).
        assert!(size(&policy.document) <= 6144, "{}", size(&policy.document));
    }

    #[test]
    fn kms_actions_only_on_the_keys_named() {
        let key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let plain =
            build(&scope(&opts(&[For::Upload, For::Copy]), None, Some("us-east-1")).unwrap());
        assert!(!actions(&plain).iter().any(|a| a.starts_with("kms:")));
        let keyed = PolicyOptions {
            kms_keys: vec![key.into()],
            via: upload::Via::EbsDirect,
            ..opts(&[For::Upload])
        };
        let doc = build(&scope(&keyed, None, Some("us-east-1")).unwrap()).document;
        let keyed_statements: Vec<&Value> = doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["Action"].to_string().contains("kms:"))
            .collect();
        assert!(!keyed_statements.is_empty(), "{doc}");
        for s in keyed_statements {
            assert_eq!(s["Resource"], json!([key]), "{s}");
        }
        for bad in [
            "arn:aws:kms:us-east-1:123456789012:alias/aws/ebs",
            "arn:aws:kms:us-east-1:123456789012:key/*",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:nowhere:123456789012:key/abc",
        ] {
            let o = PolicyOptions {
                kms_keys: vec![bad.into()],
                ..opts(&[For::Upload])
            };
            let err = scope(&o, None, Some("us-east-1")).unwrap_err().to_string();
            assert!(
                err.contains("--kms-key") && err.contains("not a KMS key ARN"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_preflight_is_granted_on_the_publisher_alone_when_named() {
        let preflight = |principal: Option<&str>| {
            let o = PolicyOptions {
                account: Some("123456789012".into()),
                principal: principal.map(str::to_owned),
                ..opts(&[For::Upload])
            };
            let doc = build(&scope(&o, None, None).unwrap()).document;
            doc["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["Sid"] == "Preflight")
                .unwrap()["Resource"]
                .clone()
        };
        let role = "arn:aws:iam::123456789012:role/ci-publisher";
        assert_eq!(preflight(Some(role)), json!([role]));
        assert_eq!(preflight(None), json!(["*"]));
        let o = PolicyOptions {
            principal: Some("arn:aws:iam::123456789012:role/*".into()),
            ..opts(&[For::Upload])
        };
        assert_eq!(validate(&o).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn partitions_regions_and_sharing() {
        let o = PolicyOptions {
            partition: Some("aws-us-gov".into()),
            regions: vec!["us-gov-west-1".into()],
            public: true,
            share_with: vec!["111122223333".into()],
            account: Some("123456789012".into()),
            source_regions: vec!["us-gov-east-1".into()],
            ..opts(&[For::Upload, For::Ssm, For::Copy])
        };
        let policy = build(&scope(&o, None, None).unwrap());
        let text = policy.document.to_string();
        for arn in text.split('"').filter(|s| s.starts_with("arn:")) {
            assert!(arn.starts_with("arn:aws-us-gov:"), "{arn}");
        }
        assert!(
            text.contains("arn:aws-us-gov:ec2:us-gov-west-1::image/*"),
            "{text}"
        );
        assert!(text.contains("import-snapshot-task"), "{text}");
        assert!(
            text.contains("\"aws:RequestedRegion\":[\"us-gov-west-1\",\"us-gov-east-1\"]"),
            "{text}"
        );
        assert!(
            !text.contains("\"Null\""),
            "--public allows group all: {text}"
        );
        assert!(
            text.contains("\"ec2:Add/userId\":[\"111122223333\"]"),
            "{text}"
        );
        assert!(text.contains(":123456789012:parameter/os/*"), "{text}");
    }

    #[test]
    fn without_credentials_the_account_is_a_wildcard_and_bad_flags_are_refused() {
        let s = scope(
            &PolicyOptions {
                bucket: None,
                ..opts(&[])
            },
            None,
            Some("cn-north-1"),
        )
        .unwrap();
        assert_eq!(s.commands, vec![For::Upload]);
        assert_eq!(s.arns.partition, "aws-cn");
        assert_eq!(s.bucket, "imgpub-*-cn-north-1");
        assert_eq!(s.arns.role("vmimport"), "arn:aws-cn:iam::*:role/vmimport");
        for bad in [
            PolicyOptions {
                partition: Some("mars".into()),
                ..opts(&[])
            },
            PolicyOptions {
                regions: vec!["moon".into()],
                ..opts(&[])
            },
            PolicyOptions {
                share_with: vec!["1".into()],
                ..opts(&[])
            },
            PolicyOptions {
                bucket: Some("Bad_Bucket".into()),
                ..opts(&[])
            },
        ] {
            assert_eq!(scope(&bad, None, None).unwrap_err().exit_code(), 2);
        }
    }

    #[test]
    fn a_document_too_long_for_a_user_says_where_it_fits() {
        let many: Vec<String> = (0..120)
            .map(|i| format!("{:012}", 100_000_000_000u64 + i))
            .collect();
        let o = PolicyOptions {
            share_with: many,
            ..opts(&[For::Upload])
        };
        let policy = build(&scope(&o, None, None).unwrap());
        let n = size(&policy.document);
        assert!(n > 2_048 && n < 6_144, "{n}");
        let warnings = size_warnings(&policy.document);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("over the 2048 of a user's inline policy")
                && warnings[0].contains("customer-managed policy (6,144)"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn every_command_gets_a_valid_policy_within_the_managed_limit() {
        let all = [
            For::Upload,
            For::Copy,
            For::Ssm,
            For::Delete,
            For::Grant,
            For::EnsurePublic,
            For::Gc,
            For::Prune,
            For::Watch,
            For::Initialize,
            For::Object,
            For::ListRegions,
        ];
        for command in all {
            let policy = build(&scope(&opts(&[command]), None, None).unwrap());
            let statements = policy.document["Statement"].as_array().unwrap();
            assert!(!statements.is_empty(), "{command:?}");
            for st in statements {
                assert!(st["Sid"]
                    .as_str()
                    .unwrap()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric()));
            }
        }
        let everything = build(&scope(&opts(&all), None, None).unwrap());
        assert!(
            size(&everything.document) <= 6_144,
            "{}",
            size(&everything.document)
        );
    }
}
