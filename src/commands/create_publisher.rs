//! `create-publisher`: the identity CI publishes with, holding exactly what
//! `imgpub aws policy --for …` prints. Idempotent and drift-repairing like `initialize`.
//!
//! - Role mode (`--role NAME`): trusted by a principal that must present an External ID
//!   (`--trust-principal ARN` or `--trust-account ID`, with `--external-id` or
//!   `--generate-external-id`), or by GitHub Actions runs of one repository
//!   (`--github-repo ORG/REPO[:REF]`, through the OIDC provider, created when missing);
//!   the policy is the role's inline policy `imgpub-publisher`.
//! - User mode (`--user NAME`): a customer-managed policy `imgpub-publisher-NAME` (a
//!   user's inline policy is limited to 2,048 characters) attached to the user; an access
//!   key only when the user has none (or `--rotate-key`), written to a new file of mode
//!   0600 (`--key-file`), never to the output.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use crate::aws::calls::{Arns, Call, Op, Resource};
use crate::aws::config::Identity;
use crate::aws::iam::{self, Outcome, RoleState};
use crate::aws::publisher::{self, Origin, Trust, UserState, GITHUB_ISSUER, PUBLISHER_TAG};
use crate::aws::Status;
use crate::commands::driver::{Account, Command, Emit, Output};
use crate::commands::policy::{self, PolicyOptions};
use crate::commands::Clients;
use crate::error::{Error, Result};

/// The inline policy's name on a publisher role.
pub(crate) const ROLE_POLICY: &str = "imgpub-publisher";

#[derive(Debug, Clone, Default)]
pub struct PublisherOptions {
    pub role: Option<String>,
    pub user: Option<String>,
    pub trust_principal: Option<String>,
    pub trust_account: Option<String>,
    pub external_id: Option<String>,
    pub generate_external_id: bool,
    pub github_repo: Option<String>,
    /// Trust every ref of `github_repo` (a wildcard subject), asked for by name.
    pub github_any_ref: bool,
    pub permissions_boundary: Option<String>,
    /// Take over an existing role or user that carries no publisher tag.
    pub adopt: bool,
    /// Replace an existing role's trust policy that differs from the one asked for.
    pub replace_trust: bool,
    pub rotate_key: bool,
    /// With `rotate_key`: delete the old key rather than deactivate it.
    pub delete_old_key: bool,
    pub key_file: Option<PathBuf>,
    /// What the publisher may do: the same flags as `imgpub aws policy`.
    pub policy: PolicyOptions,
}

/// Who may assume the role, before the External ID is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TrustChoice {
    ExternalId {
        principal: Trusted,
        external_id: Option<String>,
    },
    GitHub {
        subject: String,
    },
}

/// The principal that assumes the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trusted {
    Arn(String),
    /// An account: its root, in the caller's partition.
    Account(String),
}

/// The flags, checked without AWS (before the credentials are).
pub(crate) fn validate(opts: &PublisherOptions) -> Result<Option<TrustChoice>> {
    let bad = |m: &str| Err(Error::Invalid(m.to_string()));
    if opts.policy.commands.contains(&policy::For::Initialize) {
        // iam:CreateRole, PutRolePolicy and UpdateAssumeRolePolicy on the vmimport role let
        // whoever holds them write `*:*` into that role, trust themselves and assume it.
        return bad("a publisher cannot hold --for initialize: it can rewrite the vmimport role's policy and trust, and so make itself an admin; run `imgpub aws initialize` once per account as an admin instead");
    }
    policy::validate(&opts.policy)?;
    if let Some(boundary) = &opts.permissions_boundary {
        policy::no_wildcards("--permissions-boundary", boundary)?;
    }
    match (&opts.role, &opts.user) {
        (Some(_), Some(_)) | (None, None) => {
            return bad(
                "name the publisher: --role NAME (assumed by CI) or --user NAME (static keys)",
            )
        }
        (Some(name), None) => iam::validate_role_name(name)?,
        (None, Some(name)) => {
            iam::validate_role_name(name)?;
            if opts.key_file.is_none() {
                return bad("--user needs --key-file PATH: the new access key is written there (mode 0600), never printed");
            }
            return Ok(None);
        }
    }
    let principal = match (&opts.trust_principal, &opts.trust_account) {
        (Some(_), Some(_)) => return bad("pass --trust-principal or --trust-account, not both"),
        (Some(arn), None) => Some(Trusted::Arn(policy::principal_arn(
            "--trust-principal",
            arn,
        )?)),
        (None, Some(account)) => {
            crate::aws::ami::validate_account_ids(
                "--trust-account",
                std::slice::from_ref(account),
            )?;
            Some(Trusted::Account(account.clone()))
        }
        (None, None) => None,
    };
    match (principal, &opts.github_repo) {
        (Some(_), Some(_)) => bad("trust either a principal (with an External ID) or --github-repo, not both"),
        (Some(principal), None) => {
            if opts.external_id.is_some() == opts.generate_external_id {
                return bad("pass --external-id ID or --generate-external-id: a role for another party is assumed with an External ID");
            }
            if let Some(id) = &opts.external_id {
                let ok = (2..=1224).contains(&id.len())
                    && id.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@:/-_".contains(c));
                if !ok {
                    return bad("--external-id must be 2 to 1224 of letters, digits and +=,.@:/-_");
                }
            }
            Ok(Some(TrustChoice::ExternalId {
                principal,
                external_id: opts.external_id.clone(),
            }))
        }
        (None, Some(repo)) => {
            let (repo, reference) = match (repo.split_once(':'), opts.github_any_ref) {
                (Some((repo, reference)), false) => (repo, reference),
                (None, true) => (repo.as_str(), "*"),
                (Some(_), true) => {
                    return bad("--github-any-ref trusts every ref: give --github-repo ORG/REPO without one")
                }
                (None, false) => {
                    return bad("--github-repo ORG/REPO alone would trust every branch, tag, pull request and environment of the repository: pin one, ORG/REPO:ref:refs/heads/main or ORG/REPO:environment:NAME (or pass --github-any-ref to mean every one)")
                }
            };
            let valid = repo.split('/').count() == 2
                && repo.split('/').all(|p| !p.is_empty())
                && repo.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
            if !valid {
                return bad("--github-repo takes ORG/REPO:REF (e.g. org/os:ref:refs/heads/main)");
            }
            if !opts.github_any_ref {
                if !(reference.starts_with("ref:refs/") || reference.starts_with("environment:")) {
                    return bad("the ref of --github-repo ORG/REPO:REF is ref:refs/heads/BRANCH, ref:refs/tags/TAG or environment:NAME");
                }
                policy::no_wildcards("--github-repo", reference)?;
            }
            Ok(Some(TrustChoice::GitHub {
                subject: format!("repo:{repo}:{reference}"),
            }))
        }
        (None, None) => bad("say who assumes the role: --trust-account ID or --trust-principal ARN (with --external-id or --generate-external-id), or --github-repo ORG/REPO"),
    }
}

/// What `create-publisher` found and will do.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    Role {
        name: String,
        trust: Trust,
        /// The External ID was made up by this run.
        generated: bool,
        /// GitHub's OIDC provider must be created first.
        create_provider: bool,
        state: RoleState,
        role: iam::RolePlan,
        document: Value,
        boundary: Option<String>,
        /// An existing role without the publisher tag, taken over (`--adopt`).
        adopt: bool,
        /// What else grants the role permissions (reported, never removed).
        others: Vec<String>,
    },
    User {
        name: String,
        policy_name: String,
        policy_arn: String,
        state: UserState,
        policy: Outcome,
        new_key: bool,
        key_file: Option<PathBuf>,
        boundary: Option<String>,
        /// What `boundary` needs: set at creation, already there, or put on the user
        /// that exists; `None` when no boundary was asked for.
        boundary_outcome: Option<Outcome>,
        document: Value,
        /// An existing user without the publisher tag, taken over (`--adopt`).
        adopt: bool,
        /// Keys to deactivate (or delete) once the new one is written (`--rotate-key`).
        old_keys: Vec<String>,
        delete_old_key: bool,
    },
}

/// The plan in words: the identity, its trust and its permission policy, each in full where
/// it would be created or changed.
fn describe(plan: &Plan) -> Vec<String> {
    let mut lines = vec![];
    match plan {
        Plan::Role {
            name,
            trust,
            generated,
            create_provider,
            role,
            document,
            boundary,
            adopt,
            ..
        } => {
            // Not in a log: the External ID is printed in the result's JSON only, and one
            // generated now is not the one apply generates.
            let trust = match trust {
                Trust::ExternalId { principal, .. } => Trust::ExternalId {
                    principal: principal.clone(),
                    external_id: match generated {
                        true => "<generated by apply, printed in its JSON>".into(),
                        false => "<the --external-id given>".into(),
                    },
                },
                other => other.clone(),
            };
            if *create_provider {
                lines.push(format!(
                    "would create GitHub's OIDC provider {GITHUB_ISSUER}"
                ));
            }
            if let Some(would) = role.role.would() {
                lines.push(format!("{would} role {name}"));
            }
            if *adopt {
                lines.push(format!(
                    "would adopt role {name} (--adopt): tag it as the publisher"
                ));
            }
            if let Some(would) = role.trust_policy.would() {
                let trust = iam::pretty(&trust.document());
                lines.push(format!("{would} the trust policy of role {name}:\n{trust}"));
            }
            if let Some(would) = role.role_policy.would() {
                let policy = iam::pretty(document);
                lines.push(format!(
                    "{would} the permission policy {} of role {name}:\n{policy}",
                    role.policy_name
                ));
            }
            if let (Some(arn), Some(would)) = (boundary, role.boundary.and_then(Outcome::would)) {
                lines.push(format!(
                    "{would} the permissions boundary of role {name}: {arn}"
                ));
            }
        }
        Plan::User {
            name,
            policy_name,
            state,
            policy,
            new_key,
            key_file,
            boundary,
            boundary_outcome,
            document,
            adopt,
            old_keys,
            delete_old_key,
            ..
        } => {
            if state.arn.is_none() {
                lines.push(format!("would create user {name}"));
            }
            if *adopt {
                lines.push(format!(
                    "would adopt user {name} (--adopt): tag it as the publisher"
                ));
            }
            if let Some(would) = policy.would() {
                let document = iam::pretty(document);
                lines.push(format!(
                    "{would} managed policy {policy_name}, attached to user {name}:\n{document}"
                ));
            }
            if let (Some(arn), Some(would)) = (boundary, boundary_outcome.and_then(Outcome::would))
            {
                lines.push(format!(
                    "{would} the permissions boundary of user {name}: {arn}"
                ));
            }
            if *new_key {
                let to = key_file
                    .as_ref()
                    .map_or("stdout's JSON".to_string(), |f| f.display().to_string());
                lines.push(format!(
                    "would create an access key for user {name}, written to {to}"
                ));
            }
            if !old_keys.is_empty() {
                let how = if *delete_old_key {
                    "delete"
                } else {
                    "deactivate"
                };
                lines.push(format!("would {how} the old keys {}", old_keys.join(", ")));
            }
        }
    }
    lines
}

/// The error for an existing identity that imgpub did not make, unless `--adopt`.
fn not_ours(kind: &str, name: &str, others: &[String]) -> Error {
    let holds = match others {
        [] => String::new(),
        others => format!("; it also holds {}", others.join(", ")),
    };
    Error::Invalid(format!(
        "IAM {kind} {name} exists and was not made by imgpub (it has no {PUBLISHER_TAG} tag){holds}: pass --adopt to make it the publisher (what else it holds stays, and is reported), or choose another name"
    ))
}

/// Warns of permissions a publisher holds beyond imgpub's policy.
fn warn_others(kind: &str, name: &str, others: &[String]) {
    if !others.is_empty() {
        tracing::warn!(
            "IAM {kind} {name} also holds {}: the publisher may do whatever those allow too",
            others.join(", ")
        );
    }
}

/// A random External ID (128 bits, hex) from the system's generator.
fn random_id() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::io("reading /dev/urandom for an External ID", e))?;
    Ok(hex::encode(bytes))
}

/// The local checks, the policy the publisher gets, and the identity as IAM has it.
pub(crate) async fn plan(
    c: &Clients,
    identity: &Identity,
    opts: &PublisherOptions,
) -> Result<Plan> {
    let trust = validate(opts)?;
    let caller = Some((identity.partition.clone(), identity.account.clone()));
    let arns = Arns {
        partition: identity.partition.clone(),
        account: Some(identity.account.clone()),
    };
    // The preflight's simulation is granted on the publisher itself, not every principal.
    let principal = match (&opts.role, &opts.user) {
        (Some(role), _) => Some(arns.role(role)),
        (None, Some(user)) => Some(arns.user(user)),
        (None, None) => None,
    };
    let for_publisher = PolicyOptions {
        principal,
        ..opts.policy.clone()
    };
    let scope = policy::scope(&for_publisher, caller, Some(&c.region))?;
    let document = policy::build(&scope).document;
    if let (Some(name), Some(choice)) = (&opts.role, trust) {
        let state = iam::read_role(&c.iam, name, ROLE_POLICY).await?;
        let (trust, generated, create_provider) = match choice {
            TrustChoice::ExternalId {
                principal,
                external_id,
            } => {
                let kept = match &state {
                    RoleState::Present { trust_policy, .. } => {
                        publisher::external_id_of(trust_policy)
                    }
                    RoleState::Absent => None,
                };
                let (external_id, generated) = match (external_id, kept) {
                    (Some(id), _) => (id, false),
                    (None, Some(id)) => (id, false),
                    (None, None) => (random_id()?, true),
                };
                let principal = match principal {
                    Trusted::Arn(arn) => arn,
                    Trusted::Account(id) => format!("arn:{}:iam::{id}:root", identity.partition),
                };
                (
                    Trust::ExternalId {
                        principal,
                        external_id,
                    },
                    generated,
                    false,
                )
            }
            TrustChoice::GitHub { subject } => {
                let provider_arn = arns.oidc_provider(GITHUB_ISSUER);
                let exists = publisher::oidc_provider_exists(&c.iam, &provider_arn).await?;
                (
                    Trust::GitHub {
                        provider_arn,
                        subject,
                    },
                    false,
                    !exists,
                )
            }
        };
        let (adopt, others) = match &state {
            RoleState::Absent => (false, vec![]),
            RoleState::Present { tags, .. } => {
                let others = publisher::role_others(&c.iam, name, ROLE_POLICY).await?;
                let origin = Origin::from_tags(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                if origin.is_none() && !opts.adopt {
                    return Err(not_ours("role", name, &others));
                }
                (origin.is_none(), others)
            }
        };
        let mut role = iam::plan_role_documents(&state, &trust.document(), ROLE_POLICY, &document);
        if let (RoleState::Present { trust_policy, .. }, Outcome::Repaired, false) =
            (&state, role.trust_policy, opts.replace_trust)
        {
            // Who may assume the publisher is the admin's call: an existing trust (perhaps
            // tighter than ours: a role ARN, an environment) is replaced only when asked.
            let now = iam::parse_policy(trust_policy).unwrap_or(Value::Null);
            return Err(Error::Invalid(format!(
                "the trust policy of role {name} differs from the one asked for, and nothing was changed; now: {now}; asked for: {}; pass --replace-trust to replace it",
                trust.document()
            )));
        }
        warn_others("role", name, &others);
        role.boundary = opts.permissions_boundary.as_ref().map(|want| match &state {
            RoleState::Present { boundary, .. } if boundary.as_ref() == Some(want) => {
                Outcome::AlreadyFine
            }
            RoleState::Present { .. } => Outcome::Repaired,
            RoleState::Absent => Outcome::Created,
        });
        return Ok(Plan::Role {
            name: name.clone(),
            trust,
            generated,
            create_provider,
            state,
            role,
            document,
            boundary: opts.permissions_boundary.clone(),
            adopt,
            others,
        });
    }
    // `validate` made sure of a --role (handled above) or a --user.
    let Some(name) = opts.user.clone() else {
        return Err(Error::Invalid(
            "name the publisher: --role NAME (assumed by CI) or --user NAME (static keys)".into(),
        ));
    };
    let policy_name = format!("imgpub-publisher-{name}");
    let policy_arn = arns.managed_policy(&policy_name);
    let state = publisher::read_user(&c.iam, &name, &policy_arn).await?;
    let adopt = state.arn.is_some() && state.origin.is_none();
    if adopt && !opts.adopt {
        return Err(not_ours("user", &name, &state.others));
    }
    warn_others("user", &name, &state.others);
    let policy = match &state.policy {
        None => Outcome::Created,
        Some((doc, _)) if iam::same_policy(doc, &document) => Outcome::AlreadyFine,
        Some(_) => Outcome::Repaired,
    };
    if opts.rotate_key && state.access_keys.len() >= 2 {
        return Err(Error::Invalid(format!(
            "IAM user {name} has 2 access keys, the most IAM allows; delete the older one, then --rotate-key"
        )));
    }
    // A key for a user someone else made (perhaps a person) only when asked for.
    let ours = state.arn.is_none() || state.origin == Some(Origin::Created);
    let new_key = opts.rotate_key || (ours && state.access_keys.is_empty());
    if !new_key && state.access_keys.is_empty() {
        tracing::warn!("IAM user {name} was not made by imgpub and has no access key; imgpub makes one for it only with --rotate-key");
    }
    if let (true, Some(path)) = (new_key, &opts.key_file) {
        if path.exists() {
            return Err(Error::Invalid(format!(
                "{} exists; the new key goes to a new file (an earlier key is never overwritten): pass another --key-file",
                path.display()
            )));
        }
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if parent.is_some_and(|dir| !dir.is_dir()) {
            return Err(Error::Invalid(format!(
                "the directory of --key-file {} does not exist: create it, or pass another path",
                path.display()
            )));
        }
    }
    let old_keys = match opts.rotate_key {
        true => state.access_keys.iter().map(|k| k.id.clone()).collect(),
        false => vec![],
    };
    let boundary_outcome =
        opts.permissions_boundary
            .as_ref()
            .map(|want| match (&state.arn, &state.boundary) {
                (None, _) => Outcome::Created,
                (Some(_), Some(have)) if have == want => Outcome::AlreadyFine,
                (Some(_), _) => Outcome::Repaired,
            });
    Ok(Plan::User {
        name,
        policy_name,
        policy_arn,
        state,
        policy,
        new_key,
        key_file: opts.key_file.clone(),
        boundary_outcome,
        boundary: opts.permissions_boundary.clone(),
        document,
        adopt,
        old_keys,
        delete_old_key: opts.delete_old_key,
    })
}

/// The calls [`apply`] will make.
pub(crate) fn check(plan: &Plan, region: &str) -> Vec<Call> {
    let mut calls = vec![];
    match plan {
        Plan::Role {
            name,
            create_provider,
            role,
            adopt,
            ..
        } => {
            let r = || vec![Resource::Role(name.clone())];
            if *create_provider {
                calls.push(Call::new(
                    Op::IamCreateOpenIdConnectProvider,
                    region,
                    vec![],
                ));
            }
            match (role.role, role.trust_policy) {
                // Created with the publisher tag.
                (Outcome::Created, _) => {
                    calls.push(Call::new(Op::IamCreateRole, region, r()));
                    calls.push(Call::new(Op::IamTagRole, region, r()));
                }
                (_, Outcome::Repaired) => {
                    calls.push(Call::new(Op::IamUpdateAssumeRolePolicy, region, r()))
                }
                _ => {}
            }
            if *adopt {
                calls.push(Call::new(Op::IamTagRole, region, r()));
            }
            if role.role_policy != Outcome::AlreadyFine {
                calls.push(Call::new(Op::IamPutRolePolicy, region, r()));
            }
            // A role that exists with another boundary gets the one asked for.
            if role.role != Outcome::Created && role.boundary == Some(Outcome::Repaired) {
                let call = Call::new(Op::IamPutRolePermissionsBoundary, region, r());
                calls.push(call);
            }
        }
        Plan::User {
            state,
            policy,
            new_key,
            adopt,
            old_keys,
            delete_old_key,
            boundary_outcome,
            ..
        } => {
            if state.arn.is_none() {
                calls.push(Call::new(Op::IamCreateUser, region, vec![]));
            }
            if state.arn.is_none() || *adopt {
                calls.push(Call::new(Op::IamTagUser, region, vec![]));
            }
            if *boundary_outcome == Some(Outcome::Repaired) {
                calls.push(Call::new(Op::IamPutUserPermissionsBoundary, region, vec![]));
            }
            match policy {
                Outcome::Created => calls.push(Call::new(Op::IamCreatePolicy, region, vec![])),
                Outcome::Repaired => {
                    calls.push(Call::new(Op::IamCreatePolicyVersion, region, vec![]))
                }
                Outcome::AlreadyFine => {}
            }
            if !state.attached {
                calls.push(Call::new(Op::IamAttachUserPolicy, region, vec![]));
            }
            if *new_key {
                calls.push(Call::new(Op::IamCreateAccessKey, region, vec![]));
                // Deleted again if it cannot be written.
                calls.push(Call::new(Op::IamDeleteAccessKey, region, vec![]).on_failure());
            }
            let retire = match delete_old_key {
                true => Op::IamDeleteAccessKey,
                false => Op::IamUpdateAccessKey,
            };
            calls.extend(old_keys.iter().map(|_| Call::new(retire, region, vec![])));
        }
    }
    calls
}

/// What `create-publisher` prints: the identity, how CI uses it, what changed. No secret.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Publisher {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_arn: Option<String>,
    /// The new access key's id (the secret is only in `key_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// The statement the assuming side needs (role mode with an External ID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assume_statement: Option<Value>,
    /// The imgpub flags CI runs with.
    pub imgpub_flags: String,
    /// `changed` when this run created or changed anything (named in `changed`).
    pub status: Status,
    pub changed: Vec<&'static str>,
    /// What else grants the identity permissions: it can do what those allow too.
    pub other_policies: Vec<String>,
    /// Keys retired by `--rotate-key`: deactivated, or deleted with `--delete-old-key`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deactivated_keys: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deleted_keys: Vec<String>,
    /// Old keys `--rotate-key` could not retire: still active.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub old_keys_still_active: Vec<String>,
}

/// Creates or repairs the publisher as planned.
pub(crate) async fn apply(c: &Clients, plan: &Plan) -> Result<Publisher> {
    match plan {
        Plan::Role {
            name,
            trust,
            generated,
            create_provider,
            state,
            role,
            document,
            boundary,
            adopt,
            others,
        } => {
            if *create_provider {
                publisher::create_github_provider(&c.iam).await?;
            }
            let spec = iam::RoleDocuments {
                name,
                trust: &trust.document(),
                policy_name: ROLE_POLICY,
                policy: document,
                boundary: boundary.as_deref(),
                description: "What CI publishes AMIs with (imgpub aws create-publisher)",
                tags: publisher::created_tags(),
            };
            let mut changed = vec![];
            if *adopt {
                // Tagged before anything else changes: a rerun knows it as the publisher.
                publisher::tag_role(&c.iam, name, Origin::Adopted).await?;
                changed.push("adopted");
            }
            let arn = iam::apply_role_documents(&c.iam, &spec, state, role).await?;
            for (what, outcome) in [
                ("role", role.role),
                ("trust-policy", role.trust_policy),
                ("role-policy", role.role_policy),
            ] {
                if outcome != Outcome::AlreadyFine {
                    changed.push(what);
                }
            }
            if role.role != Outcome::Created && role.boundary == Some(Outcome::Repaired) {
                changed.push("permissions-boundary");
            }
            let (external_id, flags, assume) = match trust {
                Trust::ExternalId { external_id, .. } => (
                    Some(external_id.clone()),
                    format!("--role-arn {arn} --external-id {external_id}"),
                    Some(serde_json::json!({
                        "Effect": "Allow",
                        "Action": "sts:AssumeRole",
                        "Resource": arn,
                    })),
                ),
                Trust::GitHub { .. } => (
                    None,
                    format!("(aws-actions/configure-aws-credentials with role-to-assume: {arn})"),
                    None,
                ),
            };
            if *generated {
                changed.push("external-id");
            }
            Ok(Publisher {
                role_arn: Some(arn),
                external_id,
                user_arn: None,
                policy_arn: None,
                access_key_id: None,
                key_file: None,
                assume_statement: assume,
                imgpub_flags: flags,
                status: Status::of(!changed.is_empty()),
                changed,
                other_policies: others.clone(),
                deactivated_keys: vec![],
                deleted_keys: vec![],
                old_keys_still_active: vec![],
            })
        }
        Plan::User {
            name,
            policy_arn,
            state,
            new_key,
            key_file,
            old_keys,
            delete_old_key,
            ..
        } => {
            // The key's file first: a path that cannot be written fails before anything
            // is made, and no key exists that nobody holds.
            let file = match (*new_key, key_file) {
                (true, Some(path)) => {
                    let at = path.clone();
                    let file =
                        crate::blocking::run(move || publisher::create_credentials_file(&at))
                            .await?;
                    Some((path.clone(), file))
                }
                _ => None,
            };
            let mut changed = vec![];
            let made = user_and_policy(c, plan, &mut changed).await;
            let user_arn = match made {
                Ok(arn) => arn,
                Err(err) => {
                    if let Some((path, _)) = file {
                        discard(path).await;
                    }
                    return Err(err);
                }
            };
            let (mut access_key_id, mut written) = (None, None);
            if let Some((path, file)) = file {
                let id = issue_key(c, name, &path, file).await?;
                tracing::info!("wrote the access key {id} of {name} to {}", path.display());
                access_key_id = Some(id);
                written = Some(path.display().to_string());
                changed.push("access-key");
            }
            // The old keys only once the new one is safely written.
            // One that cannot be retired is reported, not an error: the new key is written
            // and its id must be printed, and a rerun could not tell the keys apart.
            let (mut deactivated_keys, mut deleted_keys, mut still_active) =
                (vec![], vec![], vec![]);
            for id in old_keys {
                let retired = if *delete_old_key {
                    publisher::delete_access_key(&c.iam, name, id).await
                } else {
                    publisher::deactivate_access_key(&c.iam, name, id).await
                };
                match (retired, *delete_old_key) {
                    (Ok(()), true) => deleted_keys.push(id.clone()),
                    (Ok(()), false) => deactivated_keys.push(id.clone()),
                    (Err(err), _) => {
                        tracing::error!("the old access key {id} of {name} is still active ({err}): deactivate it with `aws iam update-access-key --user-name {name} --access-key-id {id} --status Inactive`");
                        still_active.push(id.clone());
                    }
                }
            }
            let flags = match &written {
                Some(path) => format!("--credentials-file {path}"),
                None => "--credentials-file PATH (the file written when the key was made)".into(),
            };
            Ok(Publisher {
                role_arn: None,
                external_id: None,
                user_arn: Some(user_arn),
                policy_arn: Some(policy_arn.clone()),
                access_key_id,
                key_file: written,
                assume_statement: None,
                imgpub_flags: flags,
                status: Status::of(!changed.is_empty()),
                changed,
                other_policies: state.others.clone(),
                deactivated_keys,
                deleted_keys,
                old_keys_still_active: still_active,
            })
        }
    }
}

/// The user (created with the publisher tag, or tagged when adopted), its policy and the
/// attachment, as planned. Returns the user's ARN.
async fn user_and_policy(
    c: &Clients,
    plan: &Plan,
    changed: &mut Vec<&'static str>,
) -> Result<String> {
    let Plan::User {
        name,
        policy_name,
        policy_arn,
        state,
        policy,
        boundary,
        boundary_outcome,
        document,
        adopt,
        ..
    } = plan
    else {
        return Err(Error::Invalid("not a user plan".into()));
    };
    let user_arn = match &state.arn {
        Some(arn) => arn.clone(),
        None => {
            changed.push("user");
            publisher::create_user(&c.iam, name, boundary.as_deref()).await?
        }
    };
    if *adopt {
        publisher::tag_user(&c.iam, name, Origin::Adopted).await?;
        changed.push("adopted");
    }
    if let (Some(Outcome::Repaired), Some(arn)) = (boundary_outcome, boundary) {
        publisher::put_user_boundary(&c.iam, name, arn).await?;
        changed.push("permissions-boundary");
    }
    if *policy != Outcome::AlreadyFine {
        let current = state.policy.as_ref();
        publisher::put_managed_policy(&c.iam, policy_name, policy_arn, document, current).await?;
        changed.push("policy");
    }
    if !state.attached {
        publisher::attach_user_policy(&c.iam, name, policy_arn).await?;
        changed.push("attachment");
    }
    Ok(user_arn)
}

/// Creates an access key and writes it into the opened `file`. A key that cannot be written
/// is deleted again (an active key that nobody holds is only a risk), and the file removed.
async fn issue_key(
    c: &Clients,
    user: &str,
    path: &std::path::Path,
    file: std::fs::File,
) -> Result<String> {
    let (id, secret) = match publisher::create_access_key(&c.iam, user).await {
        Ok(key) => key,
        Err(err) => {
            discard(path.to_path_buf()).await;
            return Err(err);
        }
    };
    let key = id.clone();
    let shown = path.display().to_string();
    let write = crate::blocking::run(move || {
        publisher::write_credentials(file, &key, &secret)
            .map_err(|e| Error::io(format!("writing the new access key to {shown}"), e))
    })
    .await;
    if let Err(err) = write {
        discard(path.to_path_buf()).await;
        match publisher::delete_access_key(&c.iam, user, &id).await {
            Ok(()) => tracing::warn!(
                "deleted the new access key {id} of {user} again: it could not be written"
            ),
            Err(e) => tracing::error!(
                "the new access key {id} of {user} could not be written, nor deleted ({e}): delete it with `aws iam delete-access-key --user-name {user} --access-key-id {id}`"
            ),
        }
        return Err(err);
    }
    Ok(id)
}

/// Removes a key file that holds no key (best effort: it is empty).
async fn discard(path: PathBuf) {
    let _ = crate::blocking::run(move || {
        std::fs::remove_file(&path).map_err(|e| Error::io("removing the unused key file", e))
    })
    .await;
}

impl Command for PublisherOptions {
    type Connection = Account;
    type Local = ();
    type Plan = Plan;

    fn validate(&self) -> Result<()> {
        validate(self).map(drop)
    }

    async fn plan(&self, a: &Account, (): ()) -> Result<Plan> {
        plan(&Clients::new(&a.ctx), &a.identity, self).await
    }

    fn check(&self, a: &Account, plan: &Plan) -> Vec<Call> {
        check(plan, &a.ctx.region)
    }

    /// An admin's command (it writes IAM): no publisher policy covers it, so there is no
    /// preflight.
    fn policy(&self, _: &Account, _: &Plan, _: &[Call]) -> Option<String> {
        None
    }

    /// The trust and the permission policy in full: what a dry run is read for.
    fn describe(&self, _: &Account, plan: &Plan, _: &[Call]) -> Vec<String> {
        describe(plan)
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        let publisher = apply(&Clients::new(&a.ctx), plan).await?;
        emit(Output::json(&publisher));
        let who = match plan {
            Plan::Role { name, .. } => format!("role {name}"),
            Plan::User { name, .. } => format!("user {name}"),
        };
        emit(Output::Summary(match publisher.changed.as_slice() {
            [] => format!(
                "create-publisher: nothing to do: {who} already has the trust and policy asked for"
            ),
            changed => format!(
                "create-publisher: {who}: created or changed {}",
                changed.join(", ")
            ),
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_choices_and_bad_flags() {
        let role = |o: PublisherOptions| PublisherOptions {
            role: Some("ci-publisher".into()),
            policy: PolicyOptions {
                role_name: "vmimport".into(),
                ..o.policy.clone()
            },
            ..o
        };
        let got = validate(&role(PublisherOptions {
            trust_account: Some("111122223333".into()),
            generate_external_id: true,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(
            got,
            Some(TrustChoice::ExternalId {
                principal: Trusted::Account("111122223333".into()),
                external_id: None
            })
        );
        let got = validate(&role(PublisherOptions {
            github_repo: Some("org/os:ref:refs/heads/main".into()),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(
            got,
            Some(TrustChoice::GitHub {
                subject: "repo:org/os:ref:refs/heads/main".into()
            })
        );
        for bad in [
            PublisherOptions::default(),
            role(PublisherOptions::default()),
            role(PublisherOptions {
                trust_account: Some("111122223333".into()),
                ..Default::default()
            }),
            role(PublisherOptions {
                trust_account: Some("1".into()),
                generate_external_id: true,
                ..Default::default()
            }),
            role(PublisherOptions {
                github_repo: Some("just-a-name".into()),
                ..Default::default()
            }),
            PublisherOptions {
                user: Some("ci".into()),
                ..Default::default()
            },
        ] {
            assert_eq!(validate(&bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
        assert_eq!(random_id().unwrap().len(), 32);
        for good in [
            "arn:aws:iam::111122223333:root",
            "arn:aws-cn:iam::111122223333:role/ci/publisher",
            "arn:aws:iam::111122223333:user/ci",
        ] {
            assert_eq!(
                policy::principal_arn("--trust-principal", good).unwrap(),
                good
            );
        }
        for bad in [
            "arn:",
            "arn:aws:iam::*:root",
            "arn:aws:iam::111122223333:role/*",
            "arn:aws:sts::111122223333:assumed-role/x/y",
            "arn:aws:iam:us-east-1:111122223333:root",
            "arn:aws:iam::111122223333:group/admins",
        ] {
            let err = policy::principal_arn("--trust-principal", bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }
}
