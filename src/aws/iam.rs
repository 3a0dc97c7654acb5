//! IAM roles as imgpub reads, plans and writes them: a role's state, its documents
//! compared and normalized, and creating or repairing a role to hold given documents (the
//! `vmimport` role, aws/vmimport_role.rs, and a publisher's role).

use aws_sdk_iam::Client;
use serde_json::Value;

use crate::aws::calls::Op;
use crate::aws::propagation::{naming, Age};
use crate::error::{aws, Error, ErrorKind, Result};

/// What a stage found and did to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Outcome {
    Created,
    Repaired,
    AlreadyFine,
}

impl Outcome {
    /// What a dry run would do about it, in words: `would create`, `would change`, or
    /// `None` when it is already as asked.
    pub(crate) fn would(self) -> Option<&'static str> {
        match self {
            Outcome::Created => Some("would create"),
            Outcome::Repaired => Some("would change"),
            Outcome::AlreadyFine => None,
        }
    }
}

/// A policy document as a person reads it in a dry run: indented JSON.
pub(crate) fn pretty(document: &Value) -> String {
    serde_json::to_string_pretty(document).unwrap_or_else(|_| document.to_string())
}

/// Role names IAM accepts: 1–64 of letters, digits and `+=,.@_-`.
pub(crate) fn validate_role_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "role name {name:?} is not valid: use 1-64 letters, digits or +=,.@_-"
        )))
    }
}

/// A policy in a form where equal meaning compares equal: IAM may return single values as
/// strings or lists and in any order, and returns the document URL-encoded.
pub(crate) fn normalize_policy(doc: &Value) -> Value {
    fn norm(v: &Value) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let v = match (k.as_str(), v) {
                            ("Statement", Value::Object(_)) => Value::Array(vec![v.clone()]),
                            (_, Value::String(_))
                                if k != "Effect" && k != "Version" && k != "Sid" =>
                            {
                                Value::Array(vec![v.clone()])
                            }
                            _ => v.clone(),
                        };
                        (k.clone(), norm(&v))
                    })
                    .collect(),
            ),
            Value::Array(items) => {
                let mut items: Vec<Value> = items.iter().map(norm).collect();
                items.sort_by_key(|i| i.to_string());
                items.dedup();
                Value::Array(items)
            }
            other => other.clone(),
        }
    }
    norm(doc)
}

/// Parses a policy document as IAM returns it (URL-encoded JSON).
pub fn parse_policy(raw: &str) -> Option<Value> {
    serde_json::from_str(raw).ok().or_else(|| {
        let decoded = urlencoding::decode(raw).ok()?;
        serde_json::from_str(&decoded).ok()
    })
}

pub(crate) fn same_policy(raw: &str, want: &Value) -> bool {
    parse_policy(raw).is_some_and(|have| normalize_policy(&have) == normalize_policy(want))
}

/// The role as IAM has it now (the plan step reads it; nothing is changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoleState {
    Absent,
    Present {
        arn: String,
        /// The trust policy as IAM returns it (URL-encoded JSON).
        trust_policy: String,
        /// The inline policy named like the role, if there is one.
        role_policy: Option<String>,
        /// The permissions boundary's ARN, if the role has one.
        boundary: Option<String>,
        /// The role's tags (key, value).
        tags: Vec<(String, String)>,
    },
}

/// Reads the role and its inline policy `policy_name`.
pub(crate) async fn read_role(iam: &Client, name: &str, policy_name: &str) -> Result<RoleState> {
    // Both at once (a round trip each to IAM's one region); a missing role makes the
    // policy's answer moot.
    let (role, policy) = tokio::join!(
        iam.get_role().role_name(name).send(),
        iam.get_role_policy()
            .role_name(name)
            .policy_name(policy_name)
            .send()
    );
    let role = match role {
        Ok(out) => out
            .role()
            .cloned()
            .ok_or_else(|| Error::missing(Op::IamGetRole, "Role"))?,
        Err(e) => {
            return match aws(Op::IamGetRole, format!("reading IAM role {name}"), e) {
                err if err.kind() == Some(ErrorKind::NotFound) => Ok(RoleState::Absent),
                err => Err(err),
            }
        }
    };
    let context = format!("reading the inline policy {policy_name} of IAM role {name}");
    let role_policy = match policy {
        Ok(out) => Some(out.policy_document().to_string()),
        Err(e) => match aws(Op::IamGetRolePolicy, context, e) {
            err if err.kind() == Some(ErrorKind::NotFound) => None,
            err => return Err(err),
        },
    };
    Ok(RoleState::Present {
        tags: role
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect(),
        boundary: role
            .permissions_boundary()
            .and_then(|b| b.permissions_boundary_arn())
            .map(str::to_owned),
        arn: role.arn().to_string(),
        trust_policy: role
            .assume_role_policy_document()
            .ok_or_else(|| Error::missing(Op::IamGetRole, "AssumeRolePolicyDocument"))?
            .to_string(),
        role_policy,
    })
}

/// The role's inline policies other than `except`, parsed (ore's per-bucket ones).
pub(crate) async fn read_other_policies(
    iam: &Client,
    name: &str,
    except: &str,
) -> Result<Vec<(String, Value)>> {
    let listed = iam
        .list_role_policies()
        .role_name(name)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::IamListRolePolicies,
                format!("listing the inline policies of IAM role {name}"),
                e,
            )
        })?;
    let mut found = vec![];
    for policy in listed.policy_names().iter().filter(|p| *p != except) {
        let out = iam
            .get_role_policy()
            .role_name(name)
            .policy_name(policy)
            .send()
            .await
            .map_err(|e| {
                aws(
                    Op::IamGetRolePolicy,
                    format!("reading the inline policy {policy} of IAM role {name}"),
                    e,
                )
            })?;
        if let Some(doc) = parse_policy(out.policy_document()) {
            found.push((policy.clone(), doc));
        }
    }
    Ok(found)
}

/// What [`apply_role`] will do to make the role match `spec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RolePlan {
    pub role: Outcome,
    pub trust_policy: Outcome,
    /// The trust policy admits VM Import/Export but lacks the confused-deputy conditions:
    /// left as it is unless `--harden-trust`.
    pub trust_unhardened: bool,
    pub role_policy: Outcome,
    /// The inline policy to put: named like the role, or, on a role that ore prepared (one
    /// policy per bucket, none named like the role), named after the bucket as ore does.
    pub policy_name: String,
    /// The role policy to put (when `role_policy` is not `AlreadyFine`).
    pub policy: Value,
    /// Statements someone else added to the role policy: kept, and reported.
    pub kept: Vec<String>,
    /// Trust statements that admitted more than VM Import/Export for this account: the
    /// repaired trust drops them, and they are reported.
    pub trust_removed: Vec<String>,
    /// `None` when no boundary was asked for.
    pub boundary: Option<Outcome>,
}

/// A role's documents: what [`apply_role_documents`] makes it hold.
pub(crate) struct RoleDocuments<'a> {
    pub name: &'a str,
    pub trust: &'a Value,
    pub policy_name: &'a str,
    pub policy: &'a Value,
    pub boundary: Option<&'a str>,
    pub description: &'a str,
    /// Tags the role is created with.
    pub tags: Vec<aws_sdk_iam::types::Tag>,
}

/// Compares a role as it is with the documents it should hold (no merging: the policy is
/// ours whole).
pub(crate) fn plan_role_documents(
    state: &RoleState,
    trust: &Value,
    policy_name: &str,
    policy: &Value,
) -> RolePlan {
    let (role, trust_policy, role_policy) = match state {
        RoleState::Absent => (Outcome::Created, Outcome::Created, Outcome::Created),
        RoleState::Present {
            trust_policy,
            role_policy,
            ..
        } => (
            Outcome::AlreadyFine,
            if same_policy(trust_policy, trust) {
                Outcome::AlreadyFine
            } else {
                Outcome::Repaired
            },
            match role_policy {
                None => Outcome::Created,
                Some(doc) if same_policy(doc, policy) => Outcome::AlreadyFine,
                Some(_) => Outcome::Repaired,
            },
        ),
    };
    RolePlan {
        role,
        trust_policy,
        trust_unhardened: false,
        role_policy,
        policy_name: policy_name.to_string(),
        policy: policy.clone(),
        kept: vec![],
        trust_removed: vec![],
        boundary: None,
    }
}

/// Puts `trust` as the role's trust policy.
async fn update_trust(iam: &Client, name: &str, trust: &str) -> Result<()> {
    iam.update_assume_role_policy()
        .role_name(name)
        .policy_document(trust)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::IamUpdateAssumeRolePolicy,
                format!("updating the trust policy of IAM role {name}"),
                e,
            )
        })?;
    Ok(())
}

/// Creates a role holding `docs`, or repairs what `plan` says drifted. Returns its ARN.
pub(crate) async fn apply_role_documents(
    iam: &Client,
    docs: &RoleDocuments<'_>,
    state: &RoleState,
    plan: &RolePlan,
) -> Result<String> {
    let (name, policy_name) = (docs.name, docs.policy_name);
    let trust = docs.trust.to_string();
    let arn = match state {
        RoleState::Absent => {
            let created = iam
                .create_role()
                .role_name(name)
                .set_permissions_boundary(docs.boundary.map(str::to_owned))
                .set_tags((!docs.tags.is_empty()).then(|| docs.tags.clone()))
                .assume_role_policy_document(&trust)
                .description(docs.description)
                .send()
                .await
                .map_err(|e| aws(Op::IamCreateRole, format!("creating IAM role {name}"), e));
            match created {
                Ok(out) => {
                    tracing::info!("created IAM role {name}");
                    out.role()
                        .ok_or_else(|| Error::missing(Op::IamCreateRole, "Role"))?
                        .arn()
                        .to_string()
                }
                // There since the plan looked: our first attempt, whose answer was lost (the
                // SDK retried), or another run. Its trust policy is made ours.
                Err(err) if err.code() == Some("EntityAlreadyExists") => {
                    // IAM says it exists: one made a moment ago may not read back yet.
                    let what = format!("reading IAM role {name}");
                    let out = naming(Age::New, &what, || async {
                        iam.get_role()
                            .role_name(name)
                            .send()
                            .await
                            .map_err(|e| aws(Op::IamGetRole, &what, e))
                    })
                    .await?;
                    let role = out
                        .role()
                        .ok_or_else(|| Error::missing(Op::IamGetRole, "Role"))?;
                    // A role made with tags (a publisher) that lacks them is someone else's,
                    // made since the plan looked: not taken over behind the checks.
                    let ours = docs.tags.iter().all(|want| {
                        role.tags()
                            .iter()
                            .any(|t| t.key() == want.key() && t.value() == want.value())
                    });
                    if !ours {
                        return Err(Error::Invalid(format!(
                            "IAM role {name} was made by someone else while this run was planning; nothing of it was changed: rerun to see it (and --adopt to take it over)"
                        )));
                    }
                    update_trust(iam, name, &trust).await?;
                    role.arn().to_string()
                }
                Err(err) => return Err(err),
            }
        }
        RoleState::Present { arn, .. } => {
            if plan.trust_policy == Outcome::Repaired {
                match plan.trust_removed.as_slice() {
                    [] => tracing::warn!(
                        "the trust policy of role {name} differs from what it should be; repairing it"
                    ),
                    removed => tracing::warn!(
                        "the trust policy of role {name} let more than VM Import/Export for this account assume it; repairing it, which removes: {}",
                        removed.join("; ")
                    ),
                }
                update_trust(iam, name, &trust).await?;
            }
            if let (Some(Outcome::Repaired), Some(boundary)) = (plan.boundary, docs.boundary) {
                iam.put_role_permissions_boundary()
                    .role_name(name)
                    .permissions_boundary(boundary)
                    .send()
                    .await
                    .map_err(|e| {
                        aws(
                            Op::IamPutRolePermissionsBoundary,
                            format!("setting the permissions boundary of IAM role {name}"),
                            e,
                        )
                    })?;
            }
            arn.clone()
        }
    };
    if !plan.kept.is_empty() {
        tracing::warn!(
            "the policy of role {name} has statements imgpub did not write, kept as they are: {}",
            plan.kept.join(", ")
        );
    }
    if plan.role_policy != Outcome::AlreadyFine {
        iam.put_role_policy()
            .role_name(name)
            .policy_name(policy_name)
            .policy_document(docs.policy.to_string())
            .send()
            .await
            .map_err(|e| {
                aws(
                    Op::IamPutRolePolicy,
                    format!("putting the inline policy {policy_name} on IAM role {name}"),
                    e,
                )
            })?;
        if plan.role_policy == Outcome::Repaired {
            // Often no repair at all: another region's bucket added to the policy.
            tracing::info!("updated the inline policy {policy_name} of role {name}");
        }
    }
    Ok(arn)
}
