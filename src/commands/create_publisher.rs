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
use crate::aws::publisher::{self, Trust, UserState, GITHUB_ISSUER};
use crate::commands::policy::{self, PolicyOptions};
use crate::commands::Clients;
use crate::error::{Error, Result};

/// The inline policy's name on a publisher role.
pub const ROLE_POLICY: &str = "imgpub-publisher";

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
    pub rotate_key: bool,
    pub key_file: Option<PathBuf>,
    /// What the publisher may do: the same flags as `imgpub aws policy`.
    pub policy: PolicyOptions,
}

/// Who may assume the role, before the External ID is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustChoice {
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
pub enum Trusted {
    Arn(String),
    /// An account: its root, in the caller's partition.
    Account(String),
}

/// The flags, checked without AWS (before the credentials are).
pub fn validate(opts: &PublisherOptions) -> Result<Option<TrustChoice>> {
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
        (Some(arn), None) if arn.starts_with("arn:") => Some(Trusted::Arn(arn.clone())),
        (Some(arn), None) => {
            return Err(Error::Invalid(format!(
                "--trust-principal {arn:?} is not an ARN; use arn:PARTITION:iam::ACCOUNT:root (or a user or role ARN)"
            )))
        }
        (None, Some(account)) => {
            crate::aws::ami::validate_account_ids("--trust-account", std::slice::from_ref(account))?;
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
pub enum Plan {
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
        document: Value,
    },
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
pub async fn plan(c: &Clients, identity: &Identity, opts: &PublisherOptions) -> Result<Plan> {
    let trust = validate(opts)?;
    let caller = Some((identity.partition.clone(), identity.account.clone()));
    let scope = policy::scope(&opts.policy, caller, Some(&c.region))?;
    let document = policy::build(&scope).document;
    let arns = Arns {
        partition: identity.partition.clone(),
        account: Some(identity.account.clone()),
    };
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
        let mut role = iam::plan_role_documents(&state, &trust.document(), ROLE_POLICY, &document);
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
    let policy = match &state.policy {
        None => Outcome::Created,
        Some((doc, _)) if iam::same_policy(doc, &document) => Outcome::AlreadyFine,
        Some(_) => Outcome::Repaired,
    };
    let new_key = state.access_keys == 0 || opts.rotate_key;
    if opts.rotate_key && state.access_keys >= 2 {
        return Err(Error::Invalid(format!(
            "IAM user {name} has 2 access keys, the most IAM allows; delete the older one, then --rotate-key"
        )));
    }
    if let (true, Some(path)) = (new_key, &opts.key_file) {
        if path.exists() {
            return Err(Error::Invalid(format!(
                "{} exists; the new key goes to a new file (an earlier key is never overwritten): pass another --key-file",
                path.display()
            )));
        }
    }
    Ok(Plan::User {
        name,
        policy_name,
        policy_arn,
        state,
        policy,
        new_key,
        key_file: opts.key_file.clone(),
        boundary: opts.permissions_boundary.clone(),
        document,
    })
}

/// The calls [`apply`] will make.
pub fn check(plan: &Plan, region: &str) -> Vec<Call> {
    let mut calls = vec![];
    match plan {
        Plan::Role {
            name,
            create_provider,
            role,
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
                (Outcome::Created, _) => calls.push(Call::new(Op::IamCreateRole, region, r())),
                (_, Outcome::Repaired) => {
                    calls.push(Call::new(Op::IamUpdateAssumeRolePolicy, region, r()))
                }
                _ => {}
            }
            if role.role_policy != Outcome::AlreadyFine {
                calls.push(Call::new(Op::IamPutRolePolicy, region, r()));
            }
        }
        Plan::User {
            state,
            policy,
            new_key,
            ..
        } => {
            if state.arn.is_none() {
                calls.push(Call::new(Op::IamCreateUser, region, vec![]));
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
            }
        }
    }
    calls
}

/// Every operation `create-publisher` may make.
pub const MAY_CALL: &[Op] = &[
    Op::IamGetRole,
    Op::IamGetRolePolicy,
    Op::IamCreateRole,
    Op::IamUpdateAssumeRolePolicy,
    Op::IamPutRolePolicy,
    Op::IamPutRolePermissionsBoundary,
    Op::IamGetOpenIdConnectProvider,
    Op::IamCreateOpenIdConnectProvider,
    Op::IamGetUser,
    Op::IamCreateUser,
    Op::IamGetPolicy,
    Op::IamGetPolicyVersion,
    Op::IamListPolicyVersions,
    Op::IamCreatePolicy,
    Op::IamCreatePolicyVersion,
    Op::IamDeletePolicyVersion,
    Op::IamListAttachedUserPolicies,
    Op::IamAttachUserPolicy,
    Op::IamListAccessKeys,
    Op::IamCreateAccessKey,
];

/// What `create-publisher` prints: the identity, how CI uses it, what changed. No secret.
#[derive(Debug, Clone, Serialize)]
pub struct Publisher {
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
    pub changed: Vec<&'static str>,
}

/// Creates or repairs the publisher as planned.
pub async fn apply(c: &Clients, plan: &Plan) -> Result<Publisher> {
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
            };
            let arn = iam::apply_role_documents(&c.iam, &spec, state, role).await?;
            let mut changed = vec![];
            for (what, outcome) in [
                ("role", role.role),
                ("trust-policy", role.trust_policy),
                ("role-policy", role.role_policy),
            ] {
                if outcome != Outcome::AlreadyFine {
                    changed.push(what);
                }
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
                changed,
            })
        }
        Plan::User {
            name,
            policy_name,
            policy_arn,
            state,
            policy,
            new_key,
            key_file,
            boundary,
            document,
        } => {
            let mut changed = vec![];
            let user_arn = match &state.arn {
                Some(arn) => arn.clone(),
                None => {
                    changed.push("user");
                    publisher::create_user(&c.iam, name, boundary.as_deref()).await?
                }
            };
            if *policy != Outcome::AlreadyFine {
                let current = state.policy.as_ref();
                publisher::put_managed_policy(&c.iam, policy_name, policy_arn, document, current)
                    .await?;
                changed.push("policy");
            }
            if !state.attached {
                publisher::attach_user_policy(&c.iam, name, policy_arn).await?;
                changed.push("attachment");
            }
            let (mut access_key_id, mut written) = (None, None);
            if let (true, Some(path)) = (*new_key, key_file) {
                let (id, secret) = publisher::create_access_key(&c.iam, name).await?;
                let file = path.clone();
                let key = id.clone();
                crate::commands::blocking(move || {
                    publisher::write_credentials_file(&file, &key, &secret)
                })
                .await?;
                tracing::info!("wrote the access key {id} of {name} to {}", path.display());
                access_key_id = Some(id);
                written = Some(path.display().to_string());
                changed.push("access-key");
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
                changed,
            })
        }
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
    }
}
