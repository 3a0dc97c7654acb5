//! The identities CI publishes with: a role's trust policy (AssumeRole with an External ID,
//! or GitHub Actions' OIDC), and a dedicated user with a customer-managed policy and an
//! access key. Read, compare, create or repair; the command is `create-publisher`.

use aws_sdk_iam::Client;
use serde_json::{json, Value};

use crate::aws::calls::Op;
use crate::error::{aws, Error, ErrorKind, Result};

/// GitHub Actions' OIDC issuer, and the audience AWS's own action asks for.
pub(crate) const GITHUB_ISSUER: &str = "token.actions.githubusercontent.com";
pub(crate) const GITHUB_AUDIENCE: &str = "sts.amazonaws.com";

/// Who may assume the publisher role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trust {
    /// A principal (an account root, a user, a role) that must present the External ID.
    ExternalId {
        principal: String,
        external_id: String,
    },
    /// GitHub Actions runs of one repository (and ref, or any: `*`), through OIDC.
    GitHub {
        provider_arn: String,
        subject: String,
    },
}

impl Trust {
    pub(crate) fn document(&self) -> Value {
        let statement = match self {
            Trust::ExternalId {
                principal,
                external_id,
            } => json!({
                "Effect": "Allow",
                "Principal": {"AWS": principal},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
            }),
            Trust::GitHub {
                provider_arn,
                subject,
            } => json!({
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {format!("{GITHUB_ISSUER}:aud"): GITHUB_AUDIENCE},
                    "StringLike": {format!("{GITHUB_ISSUER}:sub"): subject},
                },
            }),
        };
        json!({"Version": "2012-10-17", "Statement": [statement]})
    }
}

/// The External ID a trust policy asks for, if it asks for one (so a rerun with
/// `--generate-external-id` keeps the id CI already has).
pub(crate) fn external_id_of(trust_policy: &str) -> Option<String> {
    let doc = crate::aws::iam::parse_policy(trust_policy)?;
    let statements = match &doc["Statement"] {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    statements.iter().find_map(|st| {
        let cond = st["Condition"]["StringEquals"].as_object()?;
        cond.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("sts:ExternalId"))
            .and_then(|(_, v)| v.as_str().map(str::to_owned))
    })
}

/// Whether the OIDC provider exists.
pub(crate) async fn oidc_provider_exists(iam: &Client, arn: &str) -> Result<bool> {
    match iam
        .get_open_id_connect_provider()
        .open_id_connect_provider_arn(arn)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) => match aws(Op::IamGetOpenIdConnectProvider, format!("reading {arn}"), e) {
            err if err.kind() == Some(ErrorKind::NotFound) => Ok(false),
            err => Err(err),
        },
    }
}

pub(crate) async fn create_github_provider(iam: &Client) -> Result<()> {
    iam.create_open_id_connect_provider()
        .url(format!("https://{GITHUB_ISSUER}"))
        .client_id_list(GITHUB_AUDIENCE)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::IamCreateOpenIdConnectProvider,
                "creating GitHub Actions' OIDC provider",
                e,
            )
        })?;
    tracing::info!("created the OIDC provider for {GITHUB_ISSUER}");
    Ok(())
}

/// The tag `create-publisher` puts on the identities it makes or adopts. Its value says
/// which, so that a later run makes a key only for a user imgpub created.
pub(crate) const PUBLISHER_TAG: &str = "imgpub:publisher";

/// How an identity came to be imgpub's publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Created,
    /// It existed, and `--adopt` took it over.
    Adopted,
}

impl Origin {
    pub(crate) fn tag_value(self) -> &'static str {
        match self {
            Origin::Created => "created",
            Origin::Adopted => "adopted",
        }
    }

    /// The origin an identity's tags record; `None` when it has no publisher tag.
    pub(crate) fn from_tags<'a>(
        mut tags: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Option<Origin> {
        tags.find(|(k, _)| *k == PUBLISHER_TAG)
            .map(|(_, v)| match v {
                "created" => Origin::Created,
                _ => Origin::Adopted,
            })
    }
}

/// One of a user's access keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AccessKey {
    pub id: String,
    pub active: bool,
}

/// A publisher user as IAM has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserState {
    /// `None`: no such user.
    pub arn: Option<String>,
    /// `None`: no publisher tag (or no user).
    pub origin: Option<Origin>,
    /// The permissions boundary's ARN, if the user has one.
    pub boundary: Option<String>,
    /// The managed policy's default document, and its versions (id, is default).
    pub policy: Option<(String, Vec<(String, bool)>)>,
    pub attached: bool,
    /// What else grants the user permissions: other attached policies (ARNs), inline
    /// policies and groups.
    pub others: Vec<String>,
    pub access_keys: Vec<AccessKey>,
}

/// Reads the user, its managed policy `policy_arn`, what else it holds, and its keys.
pub(crate) async fn read_user(iam: &Client, name: &str, policy_arn: &str) -> Result<UserState> {
    let user = match iam.get_user().user_name(name).send().await {
        Ok(out) => Some(
            out.user()
                .cloned()
                .ok_or_else(|| Error::missing(Op::IamGetUser, "User"))?,
        ),
        Err(e) => match aws(Op::IamGetUser, format!("reading IAM user {name}"), e) {
            err if err.kind() == Some(ErrorKind::NotFound) => None,
            err => return Err(err),
        },
    };
    let policy = read_managed_policy(iam, policy_arn).await?;
    let Some(user) = user else {
        return Ok(UserState {
            arn: None,
            origin: None,
            boundary: None,
            policy,
            attached: false,
            others: vec![],
            access_keys: vec![],
        });
    };
    let context = || format!("listing what IAM user {name} holds");
    let attached = iam
        .list_attached_user_policies()
        .user_name(name)
        .send()
        .await
        .map_err(|e| aws(Op::IamListAttachedUserPolicies, context(), e))?;
    let inline = iam
        .list_user_policies()
        .user_name(name)
        .send()
        .await
        .map_err(|e| aws(Op::IamListUserPolicies, context(), e))?;
    let groups = iam
        .list_groups_for_user()
        .user_name(name)
        .send()
        .await
        .map_err(|e| aws(Op::IamListGroupsForUser, context(), e))?;
    let keys = iam
        .list_access_keys()
        .user_name(name)
        .send()
        .await
        .map_err(|e| aws(Op::IamListAccessKeys, context(), e))?;
    let mut others: Vec<String> = attached
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn())
        .filter(|arn| *arn != policy_arn)
        .map(str::to_owned)
        .collect();
    others.extend(
        inline
            .policy_names()
            .iter()
            .map(|p| format!("inline policy {p}")),
    );
    others.extend(
        groups
            .groups()
            .iter()
            .map(|g| format!("group {}", g.group_name())),
    );
    Ok(UserState {
        arn: Some(user.arn().to_string()),
        origin: Origin::from_tags(user.tags().iter().map(|t| (t.key(), t.value()))),
        boundary: user
            .permissions_boundary()
            .and_then(|b| b.permissions_boundary_arn())
            .map(str::to_owned),
        policy,
        attached: attached
            .attached_policies()
            .iter()
            .any(|p| p.policy_arn() == Some(policy_arn)),
        others,
        access_keys: keys
            .access_key_metadata()
            .iter()
            .filter_map(|k| {
                Some(AccessKey {
                    id: k.access_key_id()?.to_string(),
                    active: k.status() == Some(&aws_sdk_iam::types::StatusType::Active),
                })
            })
            .collect(),
    })
}

/// What else grants a role permissions: attached policies and inline ones but `ours`.
pub(crate) async fn role_others(iam: &Client, name: &str, ours: &str) -> Result<Vec<String>> {
    let context = || format!("listing what IAM role {name} holds");
    let attached = iam
        .list_attached_role_policies()
        .role_name(name)
        .send()
        .await
        .map_err(|e| aws(Op::IamListAttachedRolePolicies, context(), e))?;
    let inline = iam
        .list_role_policies()
        .role_name(name)
        .send()
        .await
        .map_err(|e| aws(Op::IamListRolePolicies, context(), e))?;
    let mut others: Vec<String> = attached
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn().map(str::to_owned))
        .collect();
    others.extend(
        inline
            .policy_names()
            .iter()
            .filter(|p| *p != ours)
            .map(|p| format!("inline policy {p}")),
    );
    Ok(others)
}

fn publisher_tag(origin: Origin) -> aws_sdk_iam::types::Tag {
    aws_sdk_iam::types::Tag::builder()
        .key(PUBLISHER_TAG)
        .value(origin.tag_value())
        .build()
        .expect("key and value are set")
}

/// Marks an existing role as the adopted publisher.
pub(crate) async fn tag_role(iam: &Client, name: &str, origin: Origin) -> Result<()> {
    iam.tag_role()
        .role_name(name)
        .tags(publisher_tag(origin))
        .send()
        .await
        .map_err(|e| aws(Op::IamTagRole, format!("tagging IAM role {name}"), e))?;
    Ok(())
}

/// Marks an existing user as the adopted publisher.
pub(crate) async fn tag_user(iam: &Client, name: &str, origin: Origin) -> Result<()> {
    iam.tag_user()
        .user_name(name)
        .tags(publisher_tag(origin))
        .send()
        .await
        .map_err(|e| aws(Op::IamTagUser, format!("tagging IAM user {name}"), e))?;
    Ok(())
}

/// The tags a role made by `create-publisher` carries from its creation.
pub(crate) fn created_tags() -> Vec<aws_sdk_iam::types::Tag> {
    vec![publisher_tag(Origin::Created)]
}

async fn read_managed_policy(
    iam: &Client,
    arn: &str,
) -> Result<Option<(String, Vec<(String, bool)>)>> {
    let policy = match iam.get_policy().policy_arn(arn).send().await {
        Ok(out) => out.policy().cloned(),
        Err(e) => match aws(Op::IamGetPolicy, format!("reading policy {arn}"), e) {
            err if err.kind() == Some(ErrorKind::NotFound) => None,
            err => return Err(err),
        },
    };
    let Some(policy) = policy else {
        return Ok(None);
    };
    let version = policy
        .default_version_id()
        .ok_or_else(|| Error::missing(Op::IamGetPolicy, "DefaultVersionId"))?;
    let doc = iam
        .get_policy_version()
        .policy_arn(arn)
        .version_id(version)
        .send()
        .await
        .map_err(|e| aws(Op::IamGetPolicyVersion, format!("reading policy {arn}"), e))?
        .policy_version()
        .and_then(|v| v.document())
        .ok_or_else(|| Error::missing(Op::IamGetPolicyVersion, "Document"))?
        .to_string();
    let versions = iam
        .list_policy_versions()
        .policy_arn(arn)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::IamListPolicyVersions,
                format!("listing versions of {arn}"),
                e,
            )
        })?
        .versions()
        .iter()
        .filter_map(|v| Some((v.version_id()?.to_string(), v.is_default_version())))
        .collect();
    Ok(Some((doc, versions)))
}

/// Creates the managed policy, or makes `document` its default version (deleting the
/// oldest other version when IAM's five are taken).
pub(crate) async fn put_managed_policy(
    iam: &Client,
    name: &str,
    arn: &str,
    document: &Value,
    current: Option<&(String, Vec<(String, bool)>)>,
) -> Result<()> {
    let Some((_, versions)) = current else {
        iam.create_policy()
            .policy_name(name)
            .policy_document(document.to_string())
            .description("What imgpub's publisher may do (imgpub aws policy)")
            .send()
            .await
            .map_err(|e| aws(Op::IamCreatePolicy, format!("creating policy {name}"), e))?;
        tracing::info!("created policy {name}");
        return Ok(());
    };
    if versions.len() >= 5 {
        if let Some((oldest, _)) = versions.iter().rev().find(|(_, default)| !default) {
            iam.delete_policy_version()
                .policy_arn(arn)
                .version_id(oldest)
                .send()
                .await
                .map_err(|e| {
                    aws(
                        Op::IamDeletePolicyVersion,
                        format!("deleting version {oldest} of {arn}"),
                        e,
                    )
                })?;
        }
    }
    iam.create_policy_version()
        .policy_arn(arn)
        .policy_document(document.to_string())
        .set_as_default(true)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::IamCreatePolicyVersion,
                format!("updating policy {arn}"),
                e,
            )
        })?;
    tracing::info!("updated policy {name}");
    Ok(())
}

pub(crate) async fn create_user(
    iam: &Client,
    name: &str,
    boundary: Option<&str>,
) -> Result<String> {
    let out = iam
        .create_user()
        .user_name(name)
        .set_permissions_boundary(boundary.map(str::to_owned))
        .set_tags(Some(created_tags()))
        .send()
        .await
        .map_err(|e| aws(Op::IamCreateUser, format!("creating IAM user {name}"), e))?;
    tracing::info!("created IAM user {name}");
    Ok(out
        .user()
        .ok_or_else(|| Error::missing(Op::IamCreateUser, "User"))?
        .arn()
        .to_string())
}

/// Puts (or replaces) an existing user's permissions boundary.
pub(crate) async fn put_user_boundary(iam: &Client, user: &str, boundary: &str) -> Result<()> {
    iam.put_user_permissions_boundary()
        .user_name(user)
        .permissions_boundary(boundary)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::IamPutUserPermissionsBoundary,
                format!("setting the permissions boundary of IAM user {user}"),
                e,
            )
        })?;
    Ok(())
}

pub(crate) async fn attach_user_policy(iam: &Client, user: &str, policy_arn: &str) -> Result<()> {
    iam.attach_user_policy()
        .user_name(user)
        .policy_arn(policy_arn)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::IamAttachUserPolicy,
                format!("attaching {policy_arn} to IAM user {user}"),
                e,
            )
        })?;
    Ok(())
}

/// A new access key: (id, secret). The secret goes to a file, never to output.
pub(crate) async fn create_access_key(iam: &Client, user: &str) -> Result<(String, String)> {
    let out = iam
        .create_access_key()
        .user_name(user)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::IamCreateAccessKey,
                format!("creating an access key for IAM user {user}"),
                e,
            )
        })?;
    let key = out
        .access_key()
        .ok_or_else(|| Error::missing(Op::IamCreateAccessKey, "AccessKey"))?;
    Ok((
        key.access_key_id().to_string(),
        key.secret_access_key().to_string(),
    ))
}

/// Deletes an access key (a new one that could not be written, or the old one).
pub(crate) async fn delete_access_key(iam: &Client, user: &str, id: &str) -> Result<()> {
    iam.delete_access_key()
        .user_name(user)
        .access_key_id(id)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::IamDeleteAccessKey,
                format!("deleting the access key {id} of IAM user {user}"),
                e,
            )
        })?;
    Ok(())
}

/// Deactivates an access key (the old one after `--rotate-key`): it stops working, and can
/// be turned on again while CI moves to the new one.
pub(crate) async fn deactivate_access_key(iam: &Client, user: &str, id: &str) -> Result<()> {
    iam.update_access_key()
        .user_name(user)
        .access_key_id(id)
        .status(aws_sdk_iam::types::StatusType::Inactive)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::IamUpdateAccessKey,
                format!("deactivating the access key {id} of IAM user {user}"),
                e,
            )
        })?;
    Ok(())
}

/// Creates the file a new key goes to, readable only by its owner, refusing to replace one
/// (an earlier key is never lost). Opened before the key exists, so a path that cannot be
/// written fails before any key is made. Blocking: call it off the runtime.
pub(crate) fn create_credentials_file(path: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            Error::io(
                format!("creating the credentials file {}", path.display()),
                e,
            )
        })
}

/// Writes the key into a file made by [`create_credentials_file`] and syncs it to disk, so
/// an error a full disk or a network file system gives only then is seen before any old
/// key is retired. Blocking: call it off the runtime.
pub(crate) fn write_credentials(
    mut file: std::fs::File,
    id: &str,
    secret: &str,
) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(
        file,
        "[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}"
    )?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_documents_and_their_external_id() {
        let trust = Trust::ExternalId {
            principal: "arn:aws:iam::111122223333:root".into(),
            external_id: "ci-7".into(),
        };
        let doc = trust.document();
        assert_eq!(external_id_of(&doc.to_string()).as_deref(), Some("ci-7"));
        let gh = Trust::GitHub {
            provider_arn:
                "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com".into(),
            subject: "repo:org/os:ref:refs/heads/main".into(),
        };
        let text = gh.document().to_string();
        assert!(text.contains("sts:AssumeRoleWithWebIdentity"), "{text}");
        assert!(
            text.contains(
                "\"token.actions.githubusercontent.com:sub\":\"repo:org/os:ref:refs/heads/main\""
            ),
            "{text}"
        );
        assert_eq!(external_id_of(&text), None);
    }

    #[test]
    fn the_credentials_file_is_private_and_never_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("imgpub-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credentials");
        let _ = std::fs::remove_file(&path);
        let file = create_credentials_file(&path).unwrap();
        write_credentials(file, "AKIA1", "s3cr3t").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("aws_access_key_id = AKIA1"));
        assert!(create_credentials_file(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_tag_says_whether_imgpub_made_the_identity() {
        let tags = |v: &'static str| vec![("team", "os"), (PUBLISHER_TAG, v)].into_iter();
        assert_eq!(Origin::from_tags(tags("created")), Some(Origin::Created));
        assert_eq!(Origin::from_tags(tags("adopted")), Some(Origin::Adopted));
        assert_eq!(Origin::from_tags(vec![("team", "os")].into_iter()), None);
    }
}
