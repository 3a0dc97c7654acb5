//! The `vmimport` service role that VM Import/Export assumes: its trust policy, its inline
//! policy, and creating or repairing both.

use aws_sdk_iam::Client;
use serde_json::{json, Value};

use crate::error::{aws, Error, Result};

/// What a stage found and did to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Created,
    Repaired,
    AlreadyFine,
}

/// Everything the role's policies depend on.
#[derive(Debug, Clone)]
pub struct RoleSpec {
    pub role_name: String,
    pub import_bucket: String,
    pub export_bucket: Option<String>,
    pub kms_key: Option<String>,
    pub license_manager: bool,
    pub service_principal: String,
    pub account: String,
    pub partition: String,
}

#[derive(Debug, Clone)]
pub struct RoleReport {
    pub arn: String,
    pub role: Outcome,
    pub trust_policy: Outcome,
    pub role_policy: Outcome,
}

/// Role names IAM accepts: 1–64 of letters, digits and `+=,.@_-`.
pub fn validate_role_name(name: &str) -> Result<()> {
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

/// Trust policy: only VM Import/Export may assume the role, with the `vmimport` external id,
/// and only on behalf of this account (the confused-deputy conditions AWS recommends).
pub fn trust_policy(spec: &RoleSpec) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": spec.service_principal},
            "Action": "sts:AssumeRole",
            "Condition": {
                "StringEquals": {
                    "sts:Externalid": "vmimport",
                    "aws:SourceAccount": spec.account,
                },
                "ArnLike": {
                    "aws:SourceArn": format!("arn:{}:vmie:*:{}:*", spec.partition, spec.account),
                },
            },
        }],
    })
}

/// The role's inline policy: read the import bucket, write the export bucket, make snapshots
/// and images; KMS and License Manager only when asked for.
pub fn role_policy(spec: &RoleSpec) -> Value {
    let s3_arns = |bucket: &str| {
        json!([
            format!("arn:{}:s3:::{bucket}", spec.partition),
            format!("arn:{}:s3:::{bucket}/*", spec.partition),
        ])
    };
    let mut statements = vec![json!({
        "Effect": "Allow",
        "Action": ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"],
        "Resource": s3_arns(&spec.import_bucket),
    })];
    if let Some(export) = &spec.export_bucket {
        statements.push(json!({
            "Effect": "Allow",
            "Action": [
                "s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket",
                "s3:PutObject", "s3:GetBucketAcl"
            ],
            "Resource": s3_arns(export),
        }));
    }
    statements.push(json!({
        "Effect": "Allow",
        "Action": [
            "ec2:ModifySnapshotAttribute", "ec2:CopySnapshot",
            "ec2:RegisterImage", "ec2:Describe*"
        ],
        "Resource": "*",
    }));
    if let Some(key) = &spec.kms_key {
        statements.push(json!({
            "Effect": "Allow",
            "Action": [
                "kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt",
                "kms:GenerateDataKey*", "kms:ReEncrypt*"
            ],
            "Resource": key,
        }));
    }
    if spec.license_manager {
        statements.push(json!({
            "Effect": "Allow",
            "Action": [
                "license-manager:GetLicenseConfiguration",
                "license-manager:UpdateLicenseSpecificationsForResource",
                "license-manager:ListLicenseSpecificationsForResource"
            ],
            "Resource": "*",
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// A policy in a form where equal meaning compares equal: IAM may return single values as
/// strings or lists and in any order, and returns the document URL-encoded.
pub fn normalize_policy(doc: &Value) -> Value {
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

fn same_policy(raw: &str, want: &Value) -> bool {
    parse_policy(raw).is_some_and(|have| normalize_policy(&have) == normalize_policy(want))
}

/// Creates the role and its inline policy, or repairs whichever drifted from `spec`.
pub async fn ensure_vmimport_role(iam: &Client, spec: &RoleSpec) -> Result<RoleReport> {
    let name = &spec.role_name;
    let trust = trust_policy(spec);
    let (arn, role, trust_policy) = match iam.get_role().role_name(name).send().await {
        Ok(out) => {
            let role = out.role().ok_or_else(|| Error::Aws {
                context: format!("reading IAM role {name}"),
                code: None,
                detail: "GetRole returned no role".into(),
            })?;
            let arn = role.arn().to_string();
            let current = role.assume_role_policy_document().unwrap_or_default();
            if same_policy(current, &trust) {
                (arn, Outcome::AlreadyFine, Outcome::AlreadyFine)
            } else {
                tracing::warn!("the trust policy of role {name} differs from what VM Import/Export needs; repairing it");
                iam.update_assume_role_policy()
                    .role_name(name)
                    .policy_document(trust.to_string())
                    .send()
                    .await
                    .map_err(|e| aws(format!("updating the trust policy of IAM role {name}"), e))?;
                (arn, Outcome::AlreadyFine, Outcome::Repaired)
            }
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            let out = iam
                .create_role()
                .role_name(name)
                .assume_role_policy_document(trust.to_string())
                .description("Lets VM Import/Export read disk images for imgpub")
                .send()
                .await
                .map_err(|e| aws(format!("creating IAM role {name}"), e))?;
            let arn = out.role().map(|r| r.arn().to_string()).unwrap_or_default();
            tracing::info!("created IAM role {name}");
            (arn, Outcome::Created, Outcome::Created)
        }
        Err(e) => return Err(aws(format!("reading IAM role {name}"), e)),
    };

    let policy = role_policy(spec);
    let current = match iam
        .get_role_policy()
        .role_name(name)
        .policy_name(name)
        .send()
        .await
    {
        Ok(out) => Some(out.policy_document().to_string()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            None
        }
        Err(e) => {
            return Err(aws(
                format!("reading the inline policy {name} of IAM role {name}"),
                e,
            ))
        }
    };
    let role_policy = match current {
        Some(doc) if same_policy(&doc, &policy) => Outcome::AlreadyFine,
        found => {
            iam.put_role_policy()
                .role_name(name)
                .policy_name(name)
                .policy_document(policy.to_string())
                .send()
                .await
                .map_err(|e| {
                    aws(
                        format!("putting the inline policy {name} on IAM role {name}"),
                        e,
                    )
                })?;
            if found.is_some() {
                tracing::warn!("repaired the inline policy {name} of role {name}");
                Outcome::Repaired
            } else {
                Outcome::Created
            }
        }
    };
    Ok(RoleReport {
        arn,
        role,
        trust_policy,
        role_policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RoleSpec {
        RoleSpec {
            role_name: "vmimport".into(),
            import_bucket: "images".into(),
            export_bucket: None,
            kms_key: None,
            license_manager: false,
            service_principal: "vmie.amazonaws.com".into(),
            account: "123456789012".into(),
            partition: "aws-cn".into(),
        }
    }

    #[test]
    fn equal_meaning_compares_equal() {
        let want = role_policy(&spec());
        // Reordered actions, a single statement that is an object in a list, URL-encoded.
        let mut other = want.clone();
        other["Statement"][0]["Action"] =
            json!(["s3:ListBucket", "s3:GetObject", "s3:GetBucketLocation"]);
        let encoded = urlencoding::encode(&other.to_string()).into_owned();
        assert!(same_policy(&encoded, &want));
        other["Statement"][1]["Action"] = json!("ec2:RegisterImage");
        assert!(!same_policy(&other.to_string(), &want));
    }

    #[test]
    fn arns_follow_the_partition() {
        let p = role_policy(&spec()).to_string();
        assert!(p.contains("arn:aws-cn:s3:::images/*"), "{p}");
        let t = trust_policy(&spec()).to_string();
        assert!(t.contains("arn:aws-cn:vmie:*:123456789012:*"), "{t}");
    }

    #[test]
    fn role_names() {
        validate_role_name("vmimport").unwrap();
        assert!(validate_role_name("bad name").is_err());
        assert!(validate_role_name(&"a".repeat(65)).is_err());
    }
}
