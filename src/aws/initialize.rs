//! `imgpub aws initialize`: the image bucket and the `vmimport` role, created or repaired.

use serde::Serialize;

use crate::aws::config::Identity;
use crate::aws::iam::{self, Outcome, RoleSpec};
use crate::aws::s3;
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
}

/// The JSON summary `initialize` prints.
#[derive(Debug, Clone, Serialize)]
pub struct InitializeReport {
    pub bucket: String,
    pub region: String,
    pub role: String,
    pub role_arn: String,
    /// Resources made by this run: `bucket`, `role`, `trust-policy`, `role-policy`.
    pub created: Vec<&'static str>,
    /// Resources that existed but had drifted, now fixed.
    pub repaired: Vec<&'static str>,
    /// Resources that were already as needed.
    pub already_fine: Vec<&'static str>,
    /// Whether this run changed anything.
    pub changed: bool,
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
        if !(key.starts_with("arn:") && key.contains(":kms:") && key.contains(":key/")) {
            return Err(Error::Invalid(format!(
                "--kms-key {key:?} is not a KMS key ARN; use arn:{}:kms:REGION:ACCOUNT:key/KEY-ID",
                identity.partition
            )));
        }
    }
    if opts.service_principal.trim().is_empty() {
        return Err(Error::Invalid(
            "--service-principal must not be empty".into(),
        ));
    }
    Ok((bucket, export))
}

/// Creates or repairs the bucket and role; a rerun on a ready account changes nothing.
pub async fn initialize(
    s3_client: &aws_sdk_s3::Client,
    iam_client: &aws_sdk_iam::Client,
    identity: &Identity,
    region: &str,
    opts: &InitializeOptions,
) -> Result<InitializeReport> {
    let (bucket, export_bucket) = validate(opts, identity, region)?;

    let bucket_outcome = s3::ensure_bucket(s3_client, &bucket, region).await?;
    let spec = RoleSpec {
        role_name: opts.role_name.clone(),
        import_bucket: bucket.clone(),
        export_bucket,
        kms_key: opts.kms_key.clone(),
        license_manager: opts.license_manager,
        service_principal: opts.service_principal.clone(),
        account: identity.account.clone(),
        partition: identity.partition.clone(),
    };
    let role = iam::ensure_vmimport_role(iam_client, &spec).await?;

    let mut report = InitializeReport {
        bucket,
        region: region.to_string(),
        role: opts.role_name.clone(),
        role_arn: role.arn,
        created: vec![],
        repaired: vec![],
        already_fine: vec![],
        changed: false,
    };
    for (what, outcome) in [
        ("bucket", bucket_outcome),
        ("role", role.role),
        ("trust-policy", role.trust_policy),
        ("role-policy", role.role_policy),
    ] {
        match outcome {
            Outcome::Created => report.created.push(what),
            Outcome::Repaired => report.repaired.push(what),
            Outcome::AlreadyFine => report.already_fine.push(what),
        }
    }
    report.changed = !(report.created.is_empty() && report.repaired.is_empty());
    Ok(report)
}
