//! S3: bucket names and object locations, creating the image bucket in the right region.

use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    CreateBucketConfiguration, ExpirationStatus, LifecycleRule, LifecycleRuleFilter,
};
use aws_sdk_s3::Client;

use crate::aws::calls::Op;
use crate::aws::iam::Outcome;
use crate::error::{aws, Error, ErrorKind, Result};

/// Accepts `NAME` or `s3://NAME` (no key prefix) and checks S3's naming rules, so a bad name
/// fails before anything is created.
pub fn parse_bucket_name(input: &str) -> Result<String> {
    let name = input.strip_prefix("s3://").unwrap_or(input);
    let name = name.strip_suffix('/').unwrap_or(name);
    let problem = if name.contains('/') {
        Some("it has a key prefix; give only the bucket")
    } else if !(3..=63).contains(&name.len()) {
        Some("it must be 3 to 63 characters long")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        Some("use only lowercase letters, digits, dots and hyphens")
    } else if !name.as_bytes()[0].is_ascii_alphanumeric()
        || !name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
    {
        Some("it must begin and end with a letter or digit")
    } else if name.contains("..") {
        Some("it must not contain two dots in a row")
    } else if name.split('.').count() == 4 && name.split('.').all(|p| p.parse::<u8>().is_ok()) {
        Some("it must not look like an IP address")
    } else if name.starts_with("xn--") || name.ends_with("-s3alias") || name.ends_with("--ol-s3") {
        Some("it uses a prefix or suffix S3 reserves")
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::Invalid(format!(
            "bucket name {input:?} is not valid: {p}"
        ))),
        None => Ok(name.to_string()),
    }
}

/// A bucket and an optional key prefix, from `--bucket s3://BUCKET/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Prefix {
    pub bucket: String,
    /// Without slashes at either end; `None` for the bucket's top.
    pub prefix: Option<String>,
}

/// One S3 object: a bucket and a non-empty key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct S3Object {
    pub bucket: String,
    pub key: String,
}

impl S3Prefix {
    /// `s3://bucket/prefix` (or `s3://bucket`).
    pub fn parse(url: &str) -> Result<S3Prefix> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            Error::Invalid(format!("{url:?} is not an S3 URL; use s3://BUCKET/PREFIX"))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        Ok(S3Prefix {
            bucket: parse_bucket_name(bucket)?,
            prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
        })
    }

    /// The object `name` under the prefix.
    pub fn object(&self, name: &str) -> S3Object {
        S3Object {
            bucket: self.bucket.clone(),
            key: match &self.prefix {
                Some(prefix) => format!("{prefix}/{name}"),
                None => name.to_string(),
            },
        }
    }
}

impl S3Object {
    /// `s3://bucket/key`; `flag` names the option in errors.
    pub fn parse(flag: &str, url: &str) -> Result<S3Object> {
        let location = S3Prefix::parse(url)?;
        let key = location.prefix.ok_or_else(|| {
            Error::Invalid(format!(
                "{flag} {url:?} names no object; use s3://BUCKET/KEY"
            ))
        })?;
        Ok(S3Object {
            bucket: location.bucket,
            key,
        })
    }

    /// The key's last segment.
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

impl std::fmt::Display for S3Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// The region a `GetBucketLocation` answer means (empty is us-east-1, `EU` is eu-west-1).
fn location_region(constraint: Option<&BucketLocationConstraint>) -> String {
    match constraint.map(|c| c.as_str()) {
        None | Some("") => "us-east-1".into(),
        Some("EU") => "eu-west-1".into(),
        Some(r) => r.into(),
    }
}

/// Where an existing bucket lives, or `None` when there is no such bucket. With `owner`, the
/// account that must own it (ExpectedBucketOwner): bucket names are global, so a bucket of
/// the expected name made first by someone else is an error that names it.
pub(crate) async fn bucket_region(
    s3: &Client,
    bucket: &str,
    owner: Option<&str>,
) -> Result<Option<String>> {
    let context = format!("reading the location of bucket {bucket}");
    let location = |owner: Option<&str>| {
        s3.get_bucket_location()
            .bucket(bucket)
            .set_expected_bucket_owner(owner.map(str::to_owned))
            .send()
    };
    match location(owner).await {
        Ok(out) => Ok(Some(location_region(out.location_constraint()))),
        Err(e) => match aws(Op::S3GetBucketLocation, context, e) {
            err if err.kind() == Some(ErrorKind::NotFound) => Ok(None),
            err if err.kind() == Some(ErrorKind::AccessDenied) => {
                // S3 answers 403 to a bucket of another account and to a caller without
                // s3:GetBucketLocation alike; the same read without the owner condition
                // tells them apart (it succeeds only on a bucket open to us).
                if let Some(owner) = owner {
                    if location(None).await.is_ok() {
                        return Err(foreign_bucket(bucket, owner));
                    }
                }
                Err(err.with_hint(
                    "or the bucket belongs to another account: choose another bucket name",
                ))
            }
            err => Err(err),
        },
    }
}

/// The error for a bucket of the expected name that another account owns.
pub(crate) fn foreign_bucket(bucket: &str, owner: &str) -> Error {
    Error::Invalid(format!(
        "bucket {bucket} belongs to another AWS account, not {owner} (bucket names are global, and it could read or replace the images); nothing was sent to it: choose another name with --bucket, and prepare it with `imgpub aws initialize --bucket NAME`"
    ))
}

/// The error for a bucket that exists in another region than the command's.
pub(crate) fn wrong_region(bucket: &str, found: &str, region: &str) -> Error {
    Error::Invalid(format!(
        "bucket {bucket} already exists in region {found}, not {region}; run with --region {found} or choose another bucket name"
    ))
}

/// Creates `bucket` in `region`. One created meanwhile by another run of ours is fine if it
/// is in the right region. (CreateBucket takes no ExpectedBucketOwner: S3 refuses a name
/// another account holds with BucketAlreadyExists.)
pub(crate) async fn create_bucket(
    s3: &Client,
    bucket: &str,
    region: &str,
    owner: Option<&str>,
) -> Result<Outcome> {
    let mut req = s3.create_bucket().bucket(bucket);
    // us-east-1 is the one region that refuses an explicit LocationConstraint.
    if region != "us-east-1" {
        req = req.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match req.send().await {
        Ok(_) => {
            tracing::info!("created bucket {bucket} in {region}");
            Ok(Outcome::Created)
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you()) =>
        {
            match bucket_region(s3, bucket, owner).await? {
                Some(found) if found != region => Err(wrong_region(bucket, &found, region)),
                _ => Ok(Outcome::AlreadyFine),
            }
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_exists()) =>
        {
            Err(Error::Invalid(format!(
                "bucket name {bucket} is taken by another AWS account; choose another bucket name"
            )))
        }
        Err(e) => Err(aws(
            Op::S3CreateBucket,
            format!("creating bucket {bucket} in {region}"),
            e,
        )),
    }
}

/// The id of the lifecycle rule `initialize` puts on the image bucket.
pub(crate) const ABORT_RULE_ID: &str = "imgpub-abort-incomplete-uploads";

/// The bucket's lifecycle rules (none when it has no lifecycle configuration).
pub(crate) async fn lifecycle_rules(
    s3: &Client,
    bucket: &str,
    owner: Option<&str>,
) -> Result<Vec<LifecycleRule>> {
    let context = format!("reading the lifecycle rules of bucket {bucket}");
    match s3
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .set_expected_bucket_owner(owner.map(str::to_owned))
        .send()
        .await
    {
        Ok(out) => Ok(out.rules().to_vec()),
        Err(e) => match aws(Op::S3GetBucketLifecycleConfiguration, context, e) {
            err if err.kind() == Some(ErrorKind::NotFound) => Ok(vec![]),
            err => Err(err),
        },
    }
}

/// Whether the rules already abort incomplete multipart uploads after `days` with our rule.
pub(crate) fn abort_rule_outcome(rules: &[LifecycleRule], days: i32) -> Outcome {
    match rules.iter().find(|r| r.id() == Some(ABORT_RULE_ID)) {
        None => Outcome::Created,
        Some(rule)
            if rule.status() == &ExpirationStatus::Enabled
                && rule
                    .abort_incomplete_multipart_upload()
                    .and_then(|a| a.days_after_initiation())
                    == Some(days) =>
        {
            Outcome::AlreadyFine
        }
        Some(_) => Outcome::Repaired,
    }
}

/// Puts our rule (abort incomplete multipart uploads `days` after they start, bucket-wide)
/// beside the bucket's other rules, which stay as they are.
pub(crate) async fn put_abort_rule(
    s3: &Client,
    bucket: &str,
    owner: Option<&str>,
    rules: &[LifecycleRule],
    days: i32,
) -> Result<()> {
    let ours = LifecycleRule::builder()
        .id(ABORT_RULE_ID)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(days)
                .build(),
        )
        .build()
        .map_err(|e| Error::Invalid(format!("the lifecycle rule for {bucket}: {e}")))?;
    let mut all: Vec<LifecycleRule> = rules
        .iter()
        .filter(|r| r.id() != Some(ABORT_RULE_ID))
        .cloned()
        .collect();
    all.push(ours);
    let config = BucketLifecycleConfiguration::builder()
        .set_rules(Some(all))
        .build()
        .map_err(|e| Error::Invalid(format!("the lifecycle rules for {bucket}: {e}")))?;
    s3.put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .set_expected_bucket_owner(owner.map(str::to_owned))
        .lifecycle_configuration(config)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::S3PutBucketLifecycleConfiguration,
                format!("putting the lifecycle rules of bucket {bucket}"),
                e,
            )
        })?;
    tracing::info!("bucket {bucket}: incomplete multipart uploads are aborted after {days} days");
    Ok(())
}

/// The ETag of `object`, or `None` when it does not exist.
pub(crate) async fn object_etag(
    s3: &Client,
    object: &S3Object,
    owner: Option<&str>,
) -> Result<Option<String>> {
    let head = s3
        .head_object()
        .bucket(&object.bucket)
        .key(&object.key)
        .set_expected_bucket_owner(owner.map(str::to_owned))
        .send()
        .await;
    match head {
        Ok(head) => Ok(Some(
            head.e_tag()
                .ok_or_else(|| Error::missing(Op::S3HeadObject, "ETag"))?
                .trim_matches('"')
                .to_string(),
        )),
        Err(e) => match aws(Op::S3HeadObject, format!("checking {object}"), e) {
            err if err.kind() == Some(ErrorKind::NotFound) => Ok(None),
            err => Err(err),
        },
    }
}

/// Deletes `object` (deleting a missing one is not an error in S3).
pub(crate) async fn delete_object(
    s3: &Client,
    object: &S3Object,
    owner: Option<&str>,
) -> Result<()> {
    s3.delete_object()
        .bucket(&object.bucket)
        .key(&object.key)
        .set_expected_bucket_owner(owner.map(str::to_owned))
        .send()
        .await
        .map_err(|e| aws(Op::S3DeleteObject, format!("deleting {object}"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        assert_eq!(parse_bucket_name("s3://my-images").unwrap(), "my-images");
        assert_eq!(parse_bucket_name("my.images-1").unwrap(), "my.images-1");
        for (bad, why) in [
            ("ab", "3 to 63"),
            ("My-Images", "lowercase"),
            ("-images", "begin and end"),
            ("a..b", "two dots"),
            ("192.168.1.1", "IP address"),
            ("s3://bucket/prefix", "key prefix"),
            ("under_score", "lowercase"),
        ] {
            let err = parse_bucket_name(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn locations() {
        let p = S3Prefix::parse("s3://images/ci/").unwrap();
        assert_eq!(p.prefix.as_deref(), Some("ci"));
        assert_eq!(p.object("a.vmdk").to_string(), "s3://images/ci/a.vmdk");
        let top = S3Prefix::parse("s3://images").unwrap();
        assert_eq!(top.prefix, None);
        assert_eq!(top.object("a.vmdk").key, "a.vmdk");
        assert!(S3Prefix::parse("images/ci").is_err());
        let o = S3Object::parse("--source-object", "s3://images/ci/x.raw").unwrap();
        assert_eq!(
            (o.bucket.as_str(), o.key.as_str(), o.file_name()),
            ("images", "ci/x.raw", "x.raw")
        );
        let err = S3Object::parse("--source-object", "s3://images/")
            .unwrap_err()
            .to_string();
        assert!(err.contains("names no object"), "{err}");
    }
}
