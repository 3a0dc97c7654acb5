//! `imgpub aws initialize`: the image bucket and the `vmimport` role, created or repaired.
//! [`plan`] reads the bucket's region and the role as they are; [`apply`] changes only what
//! differs, so a rerun on a ready account changes nothing.

use serde::Serialize;

use crate::aws::calls::{Call, Op, Resource};
use crate::aws::config::Identity;
use crate::aws::iam::{self, Outcome, RolePlan, RoleState};
use crate::aws::recycle_bin::{self, Kind};
use crate::aws::s3;
use crate::aws::vmimport_role::{self, RoleSpec};
use crate::aws::Status;
use crate::commands::driver::{Account, Command, Emit, Output};
use crate::commands::Clients;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct InitializeOptions {
    /// `NAME` or `s3://NAME`; `None` means `imgpub-<account>-<region>`.
    pub bucket: Option<String>,
    pub role_name: String,
    pub export_bucket: Option<String>,
    pub kms_key: Option<String>,
    pub license_manager: bool,
    pub service_principal: String,
    /// A permissions boundary for the role.
    pub permissions_boundary: Option<String>,
    /// Abort incomplete multipart uploads in the bucket after this many days; `None`
    /// leaves the bucket's lifecycle alone.
    pub abort_incomplete_days: Option<i32>,
    /// Replace a trust policy that admits VM Import/Export but lacks the confused-deputy
    /// conditions (ore's) with ours.
    pub harden_trust: bool,
    /// Recycle Bin rules that keep what imgpub deletes in this region for this many days.
    pub recycle_bin: Option<i32>,
}

/// The JSON summary `initialize` prints.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct InitializeReport {
    pub bucket: String,
    pub region: String,
    pub role: String,
    pub role_arn: String,
    /// Resources made by this run: `bucket`, `role`, `trust-policy`, `role-policy`,
    /// `permissions-boundary`, `lifecycle`, `recycle-bin-images`, `recycle-bin-snapshots`.
    pub created: Vec<&'static str>,
    /// Resources that existed but had drifted, now fixed.
    pub repaired: Vec<&'static str>,
    /// Resources that were already as needed.
    pub already_fine: Vec<&'static str>,
    /// Statements in the role policy that imgpub did not write: kept as they are.
    pub kept: Vec<String>,
    /// Trust statements that let more than VM Import/Export (for this account) assume the
    /// role: removed by the repaired trust.
    pub trust_removed: Vec<String>,
    /// Whether this run changed anything.
    pub changed: bool,
    pub status: Status,
}

impl InitializeReport {
    /// One line for the log: what changed, or that nothing had to.
    pub(crate) fn summary(&self) -> String {
        let what = format!(
            "bucket {} and role {} in {}",
            self.bucket, self.role, self.region
        );
        if !self.changed {
            return format!("initialize: nothing to do: {what} are already as imgpub needs them");
        }
        let mut done = vec![];
        if !self.created.is_empty() {
            done.push(format!("created {}", self.created.join(", ")));
        }
        if !self.repaired.is_empty() {
            // A changed role policy is often a new bucket added, not a repair.
            done.push(format!("updated {}", self.repaired.join(", ")));
        }
        if !self.already_fine.is_empty() {
            done.push(format!(
                "already in place: {}",
                self.already_fine.join(", ")
            ));
        }
        format!("initialize: {what}: {}", done.join("; "))
    }
}

/// What `initialize` found and will do.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub region: String,
    pub bucket: String,
    pub bucket_outcome: Outcome,
    pub spec: RoleSpec,
    pub role_state: RoleState,
    pub role: RolePlan,
    /// The bucket's lifecycle rules now, and what our abort rule needs (`None`: left alone).
    pub lifecycle_rules: Vec<aws_sdk_s3::types::LifecycleRule>,
    pub lifecycle: Option<(i32, Outcome)>,
    /// `--recycle-bin`: imgpub's rule for each kind, what it becomes and its retention.
    pub recycle_bin: Vec<BinRule>,
}

/// imgpub's Recycle Bin rule for one kind of resource in the region, and its retention.
#[derive(Debug, Clone)]
pub(crate) struct BinRule {
    pub kind: Kind,
    pub days: i32,
    pub step: BinStep,
}

/// What becomes of the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BinStep {
    Create,
    /// imgpub's rule keeps them for another number of days.
    Update(String),
    AlreadyFine,
}

impl BinRule {
    fn outcome(&self) -> Outcome {
        match self.step {
            BinStep::Create => Outcome::Created,
            BinStep::Update(_) => Outcome::Repaired,
            BinStep::AlreadyFine => Outcome::AlreadyFine,
        }
    }

    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Image => "recycle-bin-images",
            Kind::Snapshot => "recycle-bin-snapshots",
        }
    }
}

/// Checks everything that can be checked locally; returns the bucket names to use.
fn validate(
    opts: &InitializeOptions,
    identity: &Identity,
    region: &str,
) -> Result<(String, Option<String>)> {
    let bucket = match &opts.bucket {
        Some(b) => s3::parse_bucket_name(b)?,
        None => format!("imgpub-{}-{region}", identity.account),
    };
    let export = opts
        .export_bucket
        .as_deref()
        .map(s3::parse_bucket_name)
        .transpose()?;
    iam::validate_role_name(&opts.role_name)?;
    if let Some(key) = &opts.kms_key {
        // One key by its ARN: the role's kms: statement names it (never a wildcard).
        crate::commands::needs::kms_key_region("--kms-key", key)?;
    }
    if let Some(arn) = &opts.permissions_boundary {
        if !(arn.starts_with("arn:") && arn.contains(":iam::") && arn.contains(":policy/")) {
            return Err(Error::Invalid(format!(
                "--permissions-boundary {arn:?} is not a policy ARN; use arn:{}:iam::ACCOUNT:policy/NAME",
                identity.partition
            )));
        }
    }
    if opts.abort_incomplete_days.is_some_and(|d| d < 0) {
        return Err(Error::Invalid(
            "--abort-incomplete-days must be 0 (leave the lifecycle alone) or more".into(),
        ));
    }
    if opts.service_principal.trim().is_empty() {
        return Err(Error::Invalid(
            "--service-principal must not be empty".into(),
        ));
    }
    Ok((bucket, export))
}

/// The local checks, then the bucket's region and the role as IAM has it.
pub(crate) async fn plan(
    c: &Clients,
    rbin: &aws_sdk_rbin::Client,
    identity: &Identity,
    opts: &InitializeOptions,
) -> Result<Plan> {
    let (bucket, export_bucket) = validate(opts, identity, &c.region)?;
    let bucket_outcome = match s3::bucket_region(&c.s3, &bucket, c.owner()).await? {
        None => Outcome::Created,
        Some(found) if found == c.region => Outcome::AlreadyFine,
        Some(found) => return Err(s3::wrong_region(&bucket, &found, &c.region)),
    };
    let spec = RoleSpec {
        role_name: opts.role_name.clone(),
        import_buckets: vec![bucket.clone()],
        export_bucket,
        kms_key: opts.kms_key.clone(),
        license_manager: opts.license_manager,
        service_principal: opts.service_principal.clone(),
        account: identity.account.clone(),
        partition: identity.partition.clone(),
        permissions_boundary: opts.permissions_boundary.clone(),
    };
    let role_state = iam::read_role(&c.iam, &opts.role_name, &opts.role_name).await?;
    // A role without our policy may be ore's, with one policy per bucket.
    let others = match &role_state {
        RoleState::Present {
            role_policy: None, ..
        } => iam::read_other_policies(&c.iam, &opts.role_name, &opts.role_name).await?,
        _ => vec![],
    };
    let role = vmimport_role::plan_role(&spec, &role_state, &others, opts.harden_trust);
    if role.trust_unhardened {
        tracing::warn!(
            "the trust policy of role {} lets VM Import/Export assume it on behalf of any account (no aws:SourceAccount/aws:SourceArn conditions); `imgpub aws initialize --harden-trust` adds them",
            opts.role_name
        );
    }
    let days = opts.abort_incomplete_days.filter(|d| *d > 0);
    let lifecycle_rules = match (days, bucket_outcome) {
        (Some(_), Outcome::AlreadyFine) => s3::lifecycle_rules(&c.s3, &bucket, c.owner()).await?,
        _ => vec![],
    };
    let lifecycle = days.map(|d| (d, s3::abort_rule_outcome(&lifecycle_rules, d)));
    let mut recycle_bin = vec![];
    if let Some(days) = opts.recycle_bin {
        for kind in Kind::BOTH {
            // The flag says how long, longer or shorter than the rule keeps them now.
            let step = match recycle_bin::ours(rbin, &c.region, kind).await? {
                None => BinStep::Create,
                Some(rule) if rule.days == days => BinStep::AlreadyFine,
                Some(rule) if rule.locked => {
                    return Err(Error::Invalid(format!(
                        "imgpub's Recycle Bin rule {} in {} keeps them {} days and is locked, so it cannot become {days}: unlock it (aws rbin unlock-rule) and wait out its unlock delay, or ask for --recycle-bin {}",
                        rule.id, c.region, rule.days, rule.days
                    )))
                }
                Some(rule) => BinStep::Update(rule.id),
            };
            recycle_bin.push(BinRule { kind, days, step });
        }
    }
    Ok(Plan {
        region: c.region.clone(),
        bucket,
        bucket_outcome,
        spec,
        role_state,
        role,
        lifecycle_rules,
        lifecycle,
        recycle_bin,
    })
}

/// The calls [`apply`] will make.
pub(crate) fn check(plan: &Plan) -> Vec<Call> {
    let role = || vec![Resource::Role(plan.spec.role_name.clone())];
    let mut calls = vec![];
    if plan.bucket_outcome == Outcome::Created {
        calls.push(Call::new(
            Op::S3CreateBucket,
            &plan.region,
            vec![Resource::Bucket(plan.bucket.clone())],
        ));
    }
    if plan.role.role == Outcome::Created {
        calls.push(Call::new(Op::IamCreateRole, &plan.region, role()));
    } else if plan.role.trust_policy == Outcome::Repaired {
        calls.push(Call::new(
            Op::IamUpdateAssumeRolePolicy,
            &plan.region,
            role(),
        ));
    }
    if plan.role.role_policy != Outcome::AlreadyFine {
        calls.push(Call::new(Op::IamPutRolePolicy, &plan.region, role()));
    }
    if plan.role.role != Outcome::Created && plan.role.boundary == Some(Outcome::Repaired) {
        calls.push(Call::new(
            Op::IamPutRolePermissionsBoundary,
            &plan.region,
            role(),
        ));
    }
    if let Some((_, Outcome::Created | Outcome::Repaired)) = plan.lifecycle {
        let bucket = vec![Resource::Bucket(plan.bucket.clone())];
        calls.push(Call::new(
            Op::S3PutBucketLifecycleConfiguration,
            &plan.region,
            bucket,
        ));
    }
    for rule in &plan.recycle_bin {
        let (op, id) = match &rule.step {
            BinStep::Create => (Op::RbinCreateRule, None),
            BinStep::Update(id) => (Op::RbinUpdateRule, Some(id.clone())),
            BinStep::AlreadyFine => continue,
        };
        let mut call = Call::new(op, &plan.region, vec![Resource::Rule(id)]);
        call.tags_on_create = op == Op::RbinCreateRule;
        calls.push(call);
    }
    calls
}

/// Every operation `initialize` may make.
pub(crate) const MAY_CALL: &[Op] = &[
    Op::S3GetBucketLocation,
    Op::S3CreateBucket,
    Op::IamGetRole,
    Op::IamGetRolePolicy,
    Op::IamListRolePolicies,
    Op::IamCreateRole,
    Op::IamUpdateAssumeRolePolicy,
    Op::IamPutRolePolicy,
    Op::IamPutRolePermissionsBoundary,
    Op::S3GetBucketLifecycleConfiguration,
    Op::S3PutBucketLifecycleConfiguration,
    Op::RbinListRules,
    Op::RbinListTagsForResource,
    Op::RbinCreateRule,
    Op::RbinUpdateRule,
];

/// Creates or repairs the bucket and role as planned.
pub(crate) async fn apply(
    c: &Clients,
    rbin: &aws_sdk_rbin::Client,
    plan: &Plan,
) -> Result<InitializeReport> {
    let bucket_outcome = match plan.bucket_outcome {
        Outcome::Created => s3::create_bucket(&c.s3, &plan.bucket, &plan.region, c.owner()).await?,
        other => other,
    };
    let role_arn =
        vmimport_role::apply_role(&c.iam, &plan.spec, &plan.role_state, &plan.role).await?;
    if let Some((days, Outcome::Created | Outcome::Repaired)) = plan.lifecycle {
        s3::put_abort_rule(&c.s3, &plan.bucket, c.owner(), &plan.lifecycle_rules, days).await?;
    }
    for rule in &plan.recycle_bin {
        match &rule.step {
            BinStep::Create => {
                let id = recycle_bin::create_rule(rbin, &plan.region, rule.kind, rule.days).await?;
                tracing::info!("created Recycle Bin rule {id} in {}", plan.region);
            }
            BinStep::Update(id) => {
                recycle_bin::update_rule(rbin, &plan.region, id, rule.days).await?
            }
            BinStep::AlreadyFine => {}
        }
    }
    let mut report = InitializeReport {
        bucket: plan.bucket.clone(),
        region: plan.region.clone(),
        role: plan.spec.role_name.clone(),
        role_arn,
        created: vec![],
        repaired: vec![],
        already_fine: vec![],
        kept: plan.role.kept.clone(),
        trust_removed: plan.role.trust_removed.clone(),
        changed: false,
        status: Status::Unchanged,
    };
    let optional = [
        ("permissions-boundary", plan.role.boundary),
        ("lifecycle", plan.lifecycle.map(|(_, o)| o)),
    ]
    .into_iter()
    .chain(
        plan.recycle_bin
            .iter()
            .map(|r| (r.name(), Some(r.outcome()))),
    );
    for (what, outcome) in [
        ("bucket", bucket_outcome),
        ("role", plan.role.role),
        ("trust-policy", plan.role.trust_policy),
        ("role-policy", plan.role.role_policy),
    ]
    .into_iter()
    .chain(optional.filter_map(|(w, o)| Some((w, o?))))
    {
        match outcome {
            Outcome::Created => report.created.push(what),
            Outcome::Repaired => report.repaired.push(what),
            Outcome::AlreadyFine => report.already_fine.push(what),
        }
    }
    report.changed = !(report.created.is_empty() && report.repaired.is_empty());
    report.status = Status::of(report.changed);
    Ok(report)
}

/// The plan in words: what would be created or changed, documents in full.
fn describe(plan: &Plan) -> Vec<String> {
    let role = &plan.spec.role_name;
    let mut lines = vec![];
    if let Some(would) = plan.bucket_outcome.would() {
        lines.push(format!("{would} bucket {} in {}", plan.bucket, plan.region));
    }
    if let Some(would) = plan.role.role.would() {
        lines.push(format!("{would} role {role} (assumed by VM Import/Export)"));
    }
    if let Some(would) = plan.role.trust_policy.would() {
        let trust = iam::pretty(&vmimport_role::trust_policy(&plan.spec));
        lines.push(format!("{would} the trust policy of role {role}:\n{trust}"));
    }
    if let Some(would) = plan.role.role_policy.would() {
        let policy = iam::pretty(&plan.role.policy);
        lines.push(format!(
            "{would} the inline policy {} of role {role}:\n{policy}",
            plan.role.policy_name
        ));
    }
    if let (Some(arn), Some(would)) = (
        &plan.spec.permissions_boundary,
        plan.role.boundary.and_then(Outcome::would),
    ) {
        lines.push(format!(
            "{would} the permissions boundary of role {role}: {arn}"
        ));
    }
    if let Some((days, would)) = plan.lifecycle.and_then(|(d, o)| Some((d, o.would()?))) {
        lines.push(format!(
            "{would} the lifecycle rule of bucket {} that aborts uploads left unfinished for {days} days",
            plan.bucket
        ));
    }
    for rule in &plan.recycle_bin {
        if let Some(would) = rule.outcome().would() {
            let what = match rule.kind {
                Kind::Image => "AMIs",
                Kind::Snapshot => "snapshots",
            };
            lines.push(format!(
                "{would} the Recycle Bin rule in {} that keeps the {what} imgpub deletes (tagged {}) restorable for {} days",
                plan.region, crate::aws::tags::MANAGED_KEY, rule.days
            ));
        }
    }
    lines
}

impl Command for InitializeOptions {
    type Connection = Account;
    type Local = ();
    type Plan = Plan;

    /// Its checks need the account and region (the default bucket name holds both): they
    /// are the plan's first step, still before any change.
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    async fn plan(&self, a: &Account, (): ()) -> Result<Plan> {
        plan(&a.clients(), &a.ctx.rbin(), &a.identity, self).await
    }

    fn check(&self, _: &Account, plan: &Plan) -> Vec<Call> {
        check(plan)
    }

    /// An admin's command: no publisher policy covers it, so there is no preflight.
    fn policy(&self, _: &Account, _: &Plan, _: &[Call]) -> Option<String> {
        None
    }

    /// The bucket, the role, its trust and its policy in full.
    fn describe(&self, _: &Account, plan: &Plan, _: &[Call]) -> Vec<String> {
        describe(plan)
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        let report = apply(&a.clients(), &a.ctx.rbin(), plan).await?;
        emit(Output::json(&report));
        emit(Output::Summary(report.summary()));
        Ok(())
    }
}
