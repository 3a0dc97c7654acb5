//! S3: bucket names, creating the image bucket in the right region.

use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_s3::Client;

use crate::aws::iam::Outcome;
use crate::error::{aws, Error, Result};

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

/// The region a `GetBucketLocation` answer means (empty is us-east-1, `EU` is eu-west-1).
fn location_region(constraint: Option<&BucketLocationConstraint>) -> String {
    match constraint.map(|c| c.as_str()) {
        None | Some("") => "us-east-1".into(),
        Some("EU") => "eu-west-1".into(),
        Some(r) => r.into(),
    }
}

/// Where an existing bucket lives, or `None` when there is no such bucket.
pub async fn bucket_region(s3: &Client, bucket: &str) -> Result<Option<String>> {
    match s3.get_bucket_location().bucket(bucket).send().await {
        Ok(out) => Ok(Some(location_region(out.location_constraint()))),
        Err(e) if e.as_service_error().and_then(|s| s.meta().code()) == Some("NoSuchBucket") => Ok(None),
        Err(e) if e.as_service_error().and_then(|s| s.meta().code()) == Some("AccessDenied") => {
            Err(Error::Aws {
                context: format!("reading the location of bucket {bucket}"),
                code: Some("AccessDenied".into()),
                detail: "AccessDenied: the bucket belongs to another account, or these credentials lack s3:GetBucketLocation; choose another bucket name or grant the permission".into(),
            })
        }
        Err(e) => Err(aws(format!("reading the location of bucket {bucket}"), e)),
    }
}

/// Creates `bucket` in `region` unless this account already has it there.
pub async fn ensure_bucket(s3: &Client, bucket: &str, region: &str) -> Result<Outcome> {
    let wrong_region = |found: &str| {
        Error::Invalid(format!(
            "bucket {bucket} already exists in region {found}, not {region}; run with --region {found} or choose another bucket name"
        ))
    };
    if let Some(found) = bucket_region(s3, bucket).await? {
        return if found == region {
            Ok(Outcome::AlreadyFine)
        } else {
            Err(wrong_region(&found))
        };
    }
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
            // Created meanwhile by another run of ours: fine if it is in the right region.
            match bucket_region(s3, bucket).await? {
                Some(found) if found != region => Err(wrong_region(&found)),
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
        Err(e) => Err(aws(format!("creating bucket {bucket} in {region}"), e)),
    }
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
}
