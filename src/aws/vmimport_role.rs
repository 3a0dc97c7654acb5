//! The `vmimport` service role that VM Import/Export assumes: its trust policy, its inline
//! policy, and creating or repairing both. The role is global but buckets are regional: the
//! policy grants every image bucket any `initialize` named, and a rerun never narrows it,
//! nor touches a statement someone else added (it reports them).

use aws_sdk_iam::Client;
use serde_json::{json, Value};

use crate::aws::iam::{
    apply_role_documents, normalize_policy, parse_policy, same_policy, Outcome, RoleDocuments,
    RolePlan, RoleState,
};
use crate::error::Result;

/// Everything the role's policies depend on.
#[derive(Debug, Clone)]
pub(crate) struct RoleSpec {
    pub role_name: String,
    /// The image buckets the role reads (this run's, plus those the role already grants).
    pub import_buckets: Vec<String>,
    pub export_bucket: Option<String>,
    pub kms_key: Option<String>,
    pub license_manager: bool,
    pub service_principal: String,
    pub account: String,
    pub partition: String,
    /// A permissions boundary for the role (`--permissions-boundary`).
    pub permissions_boundary: Option<String>,
}

/// What the import statement allows on the image buckets.
const IMPORT_ACTIONS: [&str; 3] = ["s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket"];

/// Trust policy: only VM Import/Export may assume the role, with the `vmimport` external id,
/// and only on behalf of this account (the confused-deputy conditions AWS recommends).
pub(crate) fn trust_policy(spec: &RoleSpec) -> Value {
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
pub(crate) fn role_policy(spec: &RoleSpec) -> Value {
    let s3_arns = |buckets: &[String]| -> Vec<String> {
        buckets
            .iter()
            .flat_map(|bucket| {
                [
                    format!("arn:{}:s3:::{bucket}", spec.partition),
                    format!("arn:{}:s3:::{bucket}/*", spec.partition),
                ]
            })
            .collect()
    };
    let own_account = own_buckets(&spec.account);
    let mut statements = vec![json!({
        "Effect": "Allow",
        "Action": IMPORT_ACTIONS,
        "Resource": s3_arns(&spec.import_buckets),
        "Condition": own_account,
    })];
    if let Some(export) = &spec.export_bucket {
        statements.push(json!({
            "Effect": "Allow",
            "Action": [
                "s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket",
                "s3:PutObject", "s3:GetBucketAcl"
            ],
            "Resource": s3_arns(std::slice::from_ref(export)),
            "Condition": own_account,
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

/// A policy's statements, whether IAM returned a list or a single object.
fn statements(doc: &Value) -> Vec<Value> {
    match &doc["Statement"] {
        Value::Array(items) => items.clone(),
        Value::Object(_) => vec![doc["Statement"].clone()],
        _ => vec![],
    }
}

/// The role's S3 condition: S3 ARNs carry no account and bucket names are global, so only
/// buckets of this account, and the role never reads (or writes) a bucket of the same name
/// someone else made.
fn own_buckets(account: &str) -> Value {
    json!({"StringEquals": {"s3:ResourceAccount": account}})
}

/// The buckets an import statement of ours grants: one that allows exactly
/// [`IMPORT_ACTIONS`] on buckets and their objects, limited to this account's buckets, or
/// without conditions (as earlier imgpub and ore wrote it).
fn import_buckets(statement: &Value, spec: &RoleSpec) -> Option<Vec<String>> {
    let norm = normalize_policy(statement);
    let mut want: Vec<Value> = IMPORT_ACTIONS.iter().map(|a| json!(a)).collect();
    want.sort_by_key(|v| v.to_string());
    let own_account = normalize_policy(&json!({"Condition": own_buckets(&spec.account)}));
    let condition_ours = match norm.get("Condition") {
        None => true,
        Some(c) => *c == own_account["Condition"],
    };
    if norm["Effect"] != "Allow" || norm["Action"] != Value::Array(want) || !condition_ours {
        return None;
    }
    let prefix = format!("arn:{}:s3:::", spec.partition);
    let mut buckets = vec![];
    for arn in norm["Resource"].as_array()? {
        let rest = arn.as_str()?.strip_prefix(&prefix)?;
        // A wildcard bucket (`*`, `imgpub-*`) grants buckets that are not ours to name: the
        // statement is someone else's, kept and listed, never absorbed into ours.
        if rest
            .split('/')
            .next()
            .is_some_and(|b| b.contains(['*', '?', '$']))
        {
            return None;
        }
        match rest.split_once('/') {
            None => buckets.push(rest.to_string()),
            Some((_, "*")) => {}
            Some(_) => return None,
        }
    }
    Some(buckets)
}

/// The role policy to put for `spec` when the role has `current`: ours, granting also every
/// bucket an import statement of ours already grants, after every statement that is not
/// ours (someone else's, or one for an earlier export bucket or KMS key), kept as it is.
/// Returns it and the names of the kept statements (Sid, or position).
pub(crate) fn merge_role_policy(spec: &RoleSpec, current: Option<&Value>) -> (Value, Vec<String>) {
    let ours = statements(&role_policy(spec));
    // Ours as earlier versions wrote them too: without the bucket-owner condition, which
    // the policy put now adds (such a statement is replaced, not kept beside ours).
    let ours_normalized: Vec<Value> = ours
        .iter()
        .flat_map(|st| {
            let mut earlier = st.clone();
            if let Some(map) = earlier.as_object_mut() {
                map.remove("Condition");
            }
            [normalize_policy(st), normalize_policy(&earlier)]
        })
        .collect();
    let mut buckets = spec.import_buckets.clone();
    let mut kept = vec![];
    let mut kept_names = vec![];
    for (i, statement) in current
        .map(statements)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        if let Some(found) = import_buckets(&statement, spec) {
            buckets.extend(found);
        } else if !ours_normalized.contains(&normalize_policy(&statement)) {
            kept_names.push(
                statement["Sid"]
                    .as_str()
                    .map_or_else(|| format!("statement {}", i + 1), str::to_owned),
            );
            kept.push(statement);
        }
    }
    buckets.sort();
    buckets.dedup();
    let ours = role_policy(&RoleSpec {
        import_buckets: buckets,
        ..spec.clone()
    });
    kept.extend(statements(&ours));
    (
        json!({"Version": "2012-10-17", "Statement": kept}),
        kept_names,
    )
}

/// Whether one trust statement lets VM Import/Export, and only it, assume the role as AWS
/// documents it: an Allow of `sts:AssumeRole` to the service alone, with the `vmimport`
/// external id (as ore writes it), and no conditions but that and ours.
fn admits_only_import(st: &Value, spec: &RoleSpec) -> bool {
    let source_arn = format!("arn:{}:vmie:*:{}:*", spec.partition, spec.account);
    let only = |field: &Value, want: &str| field == &json!([want]);
    // The external id is required: without it any VM Import/Export job may assume it.
    let external_id = st["Condition"]["StringEquals"]
        .as_object()
        .is_some_and(|keys| {
            keys.iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("sts:externalid") && v == &json!(["vmimport"]))
        });
    let conditions_ok = match st.get("Condition").and_then(Value::as_object) {
        None => false,
        Some(ops) => ops.iter().all(|(op, keys)| {
            keys.as_object().is_some_and(|keys| {
                keys.iter().all(|(key, value)| {
                    match (op.as_str(), key.to_ascii_lowercase().as_str()) {
                        ("StringEquals", "sts:externalid") => value == &json!(["vmimport"]),
                        ("StringEquals", "aws:sourceaccount") => value == &json!([spec.account]),
                        ("ArnLike" | "ArnEquals", "aws:sourcearn") => value == &json!([source_arn]),
                        _ => false,
                    }
                })
            })
        }),
    };
    // Any other principal in the statement (`"AWS": "*"`, an account) could assume the role.
    let principal_only_service = st["Principal"].as_object().is_some_and(|p| {
        p.len() == 1
            && p.get("Service")
                .is_some_and(|s| only(s, &spec.service_principal))
    });
    st["Effect"] == "Allow"
        && only(&st["Action"], "sts:AssumeRole")
        && principal_only_service
        && st.get("NotPrincipal").is_none()
        && st.get("NotAction").is_none()
        && external_id
        && conditions_ok
}

/// The statements of a trust policy that admit anything beyond VM Import/Export assuming
/// the role for this account, named (Sid, or position) with their principal.
pub(crate) fn trust_extras(raw: &str, spec: &RoleSpec) -> Vec<String> {
    let Some(doc) = parse_policy(raw) else {
        return vec!["the whole trust policy (not a JSON policy document)".into()];
    };
    statements(&normalize_policy(&doc))
        .iter()
        .enumerate()
        .filter(|(_, st)| !admits_only_import(st, spec))
        .map(|(i, st)| {
            let name = st["Sid"]
                .as_str()
                .map_or_else(|| format!("statement {}", i + 1), str::to_owned);
            match st.get("Principal").or_else(|| st.get("NotPrincipal")) {
                Some(who) => format!("{name} (principal {who})"),
                None => name,
            }
        })
        .collect()
}

/// Whether a trust policy lets VM Import/Export assume the role as AWS documents it, and
/// nobody else: every statement is such an Allow (see [`admits_only_import`]).
pub(crate) fn trust_admits_import(raw: &str, spec: &RoleSpec) -> bool {
    let any = parse_policy(raw).is_some_and(|doc| {
        statements(&normalize_policy(&doc))
            .iter()
            .any(|st| admits_only_import(st, spec))
    });
    any && trust_extras(raw, spec).is_empty()
}

/// A role ore prepared: one inline policy per bucket, named after it. Fine when those
/// grant all this run needs; else one more policy, named after this run's bucket as ore
/// would name it. Returns its name, the document and what to do.
fn plan_ore_layout(spec: &RoleSpec, others: &[(String, Value)]) -> (String, Value, Outcome) {
    let theirs: Vec<Value> = others.iter().flat_map(|(_, doc)| statements(doc)).collect();
    let granted_buckets: Vec<String> = theirs
        .iter()
        .filter_map(|st| import_buckets(st, spec))
        .flatten()
        .collect();
    let theirs_normalized: Vec<Value> = theirs.iter().map(normalize_policy).collect();
    let policy = role_policy(spec);
    let fine = spec
        .import_buckets
        .iter()
        .all(|b| granted_buckets.contains(b))
        && statements(&policy)
            .iter()
            .filter(|st| import_buckets(st, spec).is_none())
            .all(|st| theirs_normalized.contains(&normalize_policy(st)));
    let name = spec
        .import_buckets
        .first()
        .unwrap_or(&spec.role_name)
        .clone();
    let outcome = match fine {
        true => Outcome::AlreadyFine,
        false => Outcome::Created,
    };
    (name, policy, outcome)
}

/// Compares the role as it is with `spec`. `others` are the role's other inline policies
/// (ore keeps one per bucket, named after it): the buckets and EC2 actions they grant
/// count. `harden_trust` replaces a trust policy that works but lacks our conditions.
pub(crate) fn plan_role(
    spec: &RoleSpec,
    state: &RoleState,
    others: &[(String, Value)],
    harden_trust: bool,
) -> RolePlan {
    match state {
        RoleState::Absent => RolePlan {
            role: Outcome::Created,
            trust_policy: Outcome::Created,
            trust_unhardened: false,
            role_policy: Outcome::Created,
            policy_name: spec.role_name.clone(),
            policy: role_policy(spec),
            kept: vec![],
            trust_removed: vec![],
            boundary: spec.permissions_boundary.as_ref().map(|_| Outcome::Created),
        },
        RoleState::Present {
            trust_policy,
            role_policy,
            boundary,
            ..
        } => {
            let hardened = same_policy(trust_policy, &self::trust_policy(spec));
            let works = hardened || trust_admits_import(trust_policy, spec);
            let trust_outcome = if hardened || (works && !harden_trust) {
                Outcome::AlreadyFine
            } else {
                Outcome::Repaired
            };
            let trust_removed = match trust_outcome {
                Outcome::Repaired => trust_extras(trust_policy, spec),
                _ => vec![],
            };
            let (policy_name, policy, kept, outcome) = match role_policy {
                None if !others.is_empty() => {
                    let (name, policy, outcome) = plan_ore_layout(spec, others);
                    (name, policy, vec![], outcome)
                }
                _ => {
                    let current = role_policy.as_deref().and_then(parse_policy);
                    let (policy, kept) = merge_role_policy(spec, current.as_ref());
                    let outcome = match role_policy {
                        None => Outcome::Created,
                        Some(doc) if same_policy(doc, &policy) => Outcome::AlreadyFine,
                        Some(_) => Outcome::Repaired,
                    };
                    (spec.role_name.clone(), policy, kept, outcome)
                }
            };
            RolePlan {
                role: Outcome::AlreadyFine,
                trust_policy: trust_outcome,
                trust_unhardened: !hardened && works && !harden_trust,
                role_policy: outcome,
                policy_name,
                policy,
                kept,
                trust_removed,
                boundary: spec.permissions_boundary.as_ref().map(|want| {
                    if boundary.as_ref() == Some(want) {
                        Outcome::AlreadyFine
                    } else {
                        Outcome::Repaired
                    }
                }),
            }
        }
    }
}

/// Creates the `vmimport` role and its inline policy, or repairs whichever drifted, as
/// `plan` says. Returns the role's ARN.
pub(crate) async fn apply_role(
    iam: &Client,
    spec: &RoleSpec,
    state: &RoleState,
    plan: &RolePlan,
) -> Result<String> {
    let documents = RoleDocuments {
        name: &spec.role_name,
        trust: &trust_policy(spec),
        policy_name: &plan.policy_name,
        policy: &plan.policy,
        boundary: spec.permissions_boundary.as_deref(),
        description: "Lets VM Import/Export read disk images for imgpub",
        tags: vec![],
    };
    apply_role_documents(iam, &documents, state, plan).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::iam::*;

    fn spec() -> RoleSpec {
        RoleSpec {
            role_name: "vmimport".into(),
            import_buckets: vec!["images".into()],
            export_bucket: None,
            kms_key: None,
            license_manager: false,
            service_principal: "vmie.amazonaws.com".into(),
            account: "123456789012".into(),
            partition: "aws-cn".into(),
            permissions_boundary: None,
        }
    }

    #[test]
    fn a_second_bucket_is_added_and_nothing_is_narrowed_or_dropped() {
        let first = role_policy(&spec());
        let mut current = first.clone();
        let admin = json!({"Sid": "AdminExtra", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws-cn:s3:::other/*"});
        current["Statement"]
            .as_array_mut()
            .unwrap()
            .insert(0, admin.clone());
        let second = RoleSpec {
            import_buckets: vec!["images-eu".into()],
            ..spec()
        };
        let (merged, kept) = merge_role_policy(&second, Some(&current));
        assert_eq!(kept, vec!["AdminExtra".to_string()]);
        let text = merged.to_string();
        for arn in [
            "arn:aws-cn:s3:::images/*",
            "arn:aws-cn:s3:::images-eu/*",
            "arn:aws-cn:s3:::other/*",
        ] {
            assert!(text.contains(arn), "{arn}: {text}");
        }
        assert_eq!(merged["Statement"][0], admin);
        // Merging again changes nothing.
        let (again, _) = merge_role_policy(&second, Some(&merged));
        assert_eq!(normalize_policy(&again), normalize_policy(&merged));
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
    fn the_documented_trust_policy_works_without_our_conditions() {
        let spec = spec();
        let trust = |condition: Value| {
            json!({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "vmie.amazonaws.com"},
                "Action": "sts:AssumeRole", "Condition": condition
            }]})
            .to_string()
        };
        let ore = trust(json!({"StringEquals": {"sts:Externalid": "vmimport"}}));
        assert!(trust_admits_import(&ore, &spec));
        assert!(trust_admits_import(&trust_policy(&spec).to_string(), &spec));
        // No external id, a foreign account, an unknown condition: not ours to accept.
        assert!(!trust_admits_import(&trust(json!({})), &spec));
        let foreign = trust(json!({"StringEquals": {
            "sts:ExternalId": "vmimport", "aws:SourceAccount": "999999999999"
        }}));
        assert!(!trust_admits_import(&foreign, &spec));
        let other = trust(json!({"StringEquals": {"sts:ExternalId": "vmimport"},
            "IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}));
        assert!(!trust_admits_import(&other, &spec));
    }

    #[test]
    fn a_trust_that_admits_anyone_else_is_repaired_and_says_whom() {
        let spec = spec();
        let ours = trust_policy(&spec);
        let import = ours["Statement"][0].clone();
        let present = |trust: Value| RoleState::Present {
            tags: vec![],
            boundary: None,
            arn: "arn".into(),
            trust_policy: trust.to_string(),
            role_policy: Some(role_policy(&spec).to_string()),
        };
        // Another principal in the same statement, and a statement for a foreign account.
        let mut widened = import.clone();
        widened["Principal"]["AWS"] = json!("*");
        let foreign = json!({"Sid": "Partner", "Effect": "Allow",
            "Principal": {"AWS": "arn:aws-cn:iam::999988887777:root"}, "Action": "sts:AssumeRole"});
        for (trust, named) in [
            (json!({"Statement": [widened]}), "statement 1"),
            (json!({"Statement": [import.clone(), foreign]}), "Partner"),
        ] {
            assert!(!trust_admits_import(&trust.to_string(), &spec), "{trust}");
            let plan = plan_role(&spec, &present(trust.clone()), &[], false);
            assert_eq!(plan.trust_policy, Outcome::Repaired, "{trust}");
            assert_eq!(plan.trust_removed.len(), 1, "{trust}");
            assert!(
                plan.trust_removed[0].starts_with(named),
                "{:?}",
                plan.trust_removed
            );
        }
        let plan = plan_role(&spec, &present(ours), &[], false);
        assert_eq!(plan.trust_policy, Outcome::AlreadyFine);
        assert!(plan.trust_removed.is_empty());
    }

    #[test]
    fn statements_written_before_the_owner_condition_are_replaced_not_kept() {
        let spec = RoleSpec {
            export_bucket: Some("exports".into()),
            ..spec()
        };
        let mut earlier = role_policy(&spec);
        for st in earlier["Statement"].as_array_mut().unwrap() {
            st.as_object_mut().unwrap().remove("Condition");
        }
        let (merged, kept) = merge_role_policy(&spec, Some(&earlier));
        assert!(kept.is_empty(), "{kept:?}");
        assert_eq!(
            normalize_policy(&merged),
            normalize_policy(&role_policy(&spec))
        );
    }

    #[test]
    fn a_wildcard_bucket_grant_is_kept_and_listed_not_absorbed() {
        let spec = spec();
        let mut current = role_policy(&spec);
        current["Statement"].as_array_mut().unwrap().push(json!({
            "Effect": "Allow", "Action": IMPORT_ACTIONS,
            "Resource": ["arn:aws-cn:s3:::*", "arn:aws-cn:s3:::*/*"],
        }));
        let (merged, kept) = merge_role_policy(&spec, Some(&current));
        assert_eq!(kept, vec!["statement 3".to_string()]);
        // Our statement still names our bucket alone.
        let ours = role_policy(&spec)["Statement"][0].clone();
        assert!(merged["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .any(|st| normalize_policy(st) == normalize_policy(&ours)));
    }

    #[test]
    fn plan_finds_drift() {
        let spec = spec();
        assert_eq!(
            plan_role(&spec, &RoleState::Absent, &[], false).role,
            Outcome::Created
        );
        let fine = RoleState::Present {
            tags: vec![],
            boundary: None,
            arn: "arn:aws-cn:iam::123456789012:role/vmimport".into(),
            trust_policy: urlencoding::encode(&trust_policy(&spec).to_string()).into_owned(),
            role_policy: Some(role_policy(&spec).to_string()),
        };
        let plan = plan_role(&spec, &fine, &[], false);
        assert_eq!(
            (plan.role, plan.trust_policy, plan.role_policy),
            (
                Outcome::AlreadyFine,
                Outcome::AlreadyFine,
                Outcome::AlreadyFine
            )
        );
        let drifted = RoleState::Present {
            tags: vec![],
            boundary: None,
            arn: "arn".into(),
            trust_policy: "{}".into(),
            role_policy: None,
        };
        let plan = plan_role(&spec, &drifted, &[], false);
        assert_eq!(
            (plan.trust_policy, plan.role_policy),
            (Outcome::Repaired, Outcome::Created)
        );
    }

    #[test]
    fn role_names() {
        validate_role_name("vmimport").unwrap();
        assert!(validate_role_name("bad name").is_err());
        assert!(validate_role_name(&"a".repeat(65)).is_err());
    }
}
