//! The identities CI publishes with: a role's trust policy (AssumeRole with an External ID,
//! or GitHub Actions' OIDC), and a dedicated user with a customer-managed policy and an
//! access key. Read, compare, create or repair; the command is `create-publisher`.

use aws_sdk_iam::Client;
use serde_json::{json, Value};

use crate::aws::calls::Op;
use crate::error::{aws, Error, ErrorKind, Result};

/// GitHub Actions' OIDC issuer, and the audience AWS's own action asks for.
pub const GITHUB_ISSUER: &str = "token.actions.githubusercontent.com";
pub const GITHUB_AUDIENCE: &str = "sts.amazonaws.com";

/// Who may assume the publisher role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
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
    pub fn document(&self) -> Value {
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
pub fn external_id_of(trust_policy: &str) -> Option<String> {
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
pub async fn oidc_provider_exists(iam: &Client, arn: &str) -> Result<bool> {
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

pub async fn create_github_provider(iam: &Client) -> Result<()> {
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

/// A publisher user as IAM has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserState {
    /// `None`: no such user.
    pub arn: Option<String>,
    /// The managed policy's default document, and its versions (id, is default).
    pub policy: Option<(String, Vec<(String, bool)>)>,
    pub attached: bool,
    pub access_keys: usize,
}

/// Reads the user, its managed policy `policy_arn`, and its access keys.
pub async fn read_user(iam: &Client, name: &str, policy_arn: &str) -> Result<UserState> {
    let arn = match iam.get_user().user_name(name).send().await {
        Ok(out) => Some(
            out.user()
                .ok_or_else(|| Error::missing(Op::IamGetUser, "User"))?
                .arn()
                .to_string(),
        ),
        Err(e) => match aws(Op::IamGetUser, format!("reading IAM user {name}"), e) {
            err if err.kind() == Some(ErrorKind::NotFound) => None,
            err => return Err(err),
        },
    };
    let policy = read_managed_policy(iam, policy_arn).await?;
    let (attached, access_keys) = match arn {
        None => (false, 0),
        Some(_) => {
            let list = iam
                .list_attached_user_policies()
                .user_name(name)
                .send()
                .await
                .map_err(|e| {
                    aws(
                        Op::IamListAttachedUserPolicies,
                        format!("listing the policies of IAM user {name}"),
                        e,
                    )
                })?;
            let attached = list
                .attached_policies()
                .iter()
                .any(|p| p.policy_arn() == Some(policy_arn));
            let keys = iam
                .list_access_keys()
                .user_name(name)
                .send()
                .await
                .map_err(|e| {
                    aws(
                        Op::IamListAccessKeys,
                        format!("listing the access keys of IAM user {name}"),
                        e,
                    )
                })?;
            (attached, keys.access_key_metadata().len())
        }
    };
    Ok(UserState {
        arn,
        policy,
        attached,
        access_keys,
    })
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
pub async fn put_managed_policy(
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

pub async fn create_user(iam: &Client, name: &str, boundary: Option<&str>) -> Result<String> {
    let out = iam
        .create_user()
        .user_name(name)
        .set_permissions_boundary(boundary.map(str::to_owned))
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

pub async fn attach_user_policy(iam: &Client, user: &str, policy_arn: &str) -> Result<()> {
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
pub async fn create_access_key(iam: &Client, user: &str) -> Result<(String, String)> {
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

/// Writes a shared-credentials file that only its owner can read, refusing to replace
/// one (so an earlier key is never lost). Blocking: call it off the runtime.
pub fn write_credentials_file(path: &std::path::Path, id: &str, secret: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("creating the credentials file {shown}"), e))?;
    writeln!(
        file,
        "[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}"
    )
    .map_err(|e| Error::io(format!("writing {shown}"), e))
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
        write_credentials_file(&path, "AKIA1", "s3cr3t").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("aws_access_key_id = AKIA1"));
        assert!(write_credentials_file(&path, "AKIA2", "x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
