//! What a command needs from IAM, by name: [`For`] (the `--for` values of
//! `imgpub aws policy`) and the `imgpub aws policy …` line a refused command names. Below
//! every command and the policy builder, which all use it.

use clap::ValueEnum;
use serde::Serialize;

use crate::aws::config::validate_region;
use crate::error::{Error, Result};

/// What a policy is for: `--for` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum For {
    /// `upload`, `import-snapshot`, `register-ami`.
    Upload,
    /// `copy-regions`.
    Copy,
    /// `publish-ssm`.
    Ssm,
    /// `delete-image`.
    Delete,
    /// `grant` and `revoke`.
    Grant,
    EnsurePublic,
    /// `gc`.
    Gc,
    /// `release prune`.
    Prune,
    /// `release watch`.
    Watch,
    /// `release restore`.
    Restore,
    Initialize,
    /// `upload-object`.
    Object,
    ListRegions,
}

impl For {
    /// The `--for` value that names it.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// The `imgpub aws policy` line that prints what `command` needs, for messages.
pub(crate) fn fix_line(
    command: For,
    bucket: Option<&crate::aws::s3::S3Object>,
    region: Option<&str>,
) -> String {
    let mut line = format!("imgpub aws policy --for {}", command.name());
    if let Some(object) = bucket {
        let prefix = object.key.rsplit_once('/').map(|(p, _)| p);
        line.push_str(&format!(" --bucket {}", object.bucket));
        if let Some(prefix) = prefix {
            line.push_str(&format!("/{prefix}"));
        }
    }
    if let Some(region) = region {
        line.push_str(&format!(" --regions {region}"));
    }
    if command == For::Ssm {
        line.push_str(" --ssm-prefix /PATH/");
    }
    line
}

/// A KMS key ARN, `arn:PARTITION:kms:REGION:ACCOUNT:key/ID`: one key, no alias (IAM
/// authorizes a key by its key ARN only) and no wildcard. Returns the key's region.
pub(crate) fn kms_key_region<'a>(flag: &str, arn: &'a str) -> Result<&'a str> {
    let bad = || {
        Error::Invalid(format!(
            "{flag} {arn:?} is not a KMS key ARN; use arn:aws:kms:REGION:ACCOUNT:key/KEY-ID (`aws kms describe-key --key-id ALIAS` prints it)"
        ))
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return Err(bad());
    };
    let ok = prefix == "arn"
        && (partition == "aws" || partition.starts_with("aws-"))
        && service == "kms"
        && validate_region(region).is_ok()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.strip_prefix("key/").is_some_and(|id| {
            !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    ok.then_some(region).ok_or_else(bad)
}
