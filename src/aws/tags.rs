//! Tags: `KEY=VALUE` arguments, and tagging an AMI or snapshot (imports, registrations and
//! copies all tag what they make).

use aws_sdk_ec2::types::Tag;
use aws_sdk_ec2::Client;

use crate::aws::calls::Op;
use crate::aws::propagation::{naming, Age};
use crate::error::{aws, Error, Result};

/// `KEY=VALUE` arguments of `flag` as pairs; an empty key or a missing `=` is refused.
pub fn parse(flag: &str, args: &[String]) -> Result<Vec<(String, String)>> {
    args.iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::Invalid(format!("{flag} {t:?} is not key=value"))),
        })
        .collect()
}

/// The tag imgpub puts on every image and snapshot it makes, as it makes them where EC2
/// allows (RegisterImage, CopyImage, EBS StartSnapshot) and right after an import (whose
/// snapshot cannot be tagged at creation). The printed policies let a publisher change only
/// what carries it (`aws:ResourceTag`) and make only what is tagged with it.
pub(crate) const MANAGED_KEY: &str = "imgpub:managed";
pub(crate) const MANAGED_VALUE: &str = "true";

/// `tags` with imgpub's tag added.
pub(crate) fn with_managed(tags: &[(String, String)]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = tags
        .iter()
        .filter(|(k, _)| k != MANAGED_KEY)
        .cloned()
        .collect();
    all.push((MANAGED_KEY.to_string(), MANAGED_VALUE.to_string()));
    all
}

/// `KEY=VALUE` arguments of `flag` as tags to put on a resource: as [`parse`], and no key
/// in AWS's reserved `aws:` prefix ("The aws: prefix is reserved for AWS use", EC2 User
/// Guide, tag restrictions), which EC2 would refuse after the image was made.
pub(crate) fn parse_to_set(flag: &str, args: &[String]) -> Result<Vec<(String, String)>> {
    let tags = parse(flag, args)?;
    if let Some((key, _)) = tags
        .iter()
        .find(|(k, _)| k.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")))
    {
        return Err(Error::Invalid(format!(
            "{flag}: the tag key {key:?} is in the aws: prefix, which AWS reserves for its own tags; choose another key"
        )));
    }
    if tags.iter().any(|(k, _)| k == MANAGED_KEY) {
        return Err(Error::Invalid(format!(
            "{flag}: the tag {MANAGED_KEY} is imgpub's own (it marks what imgpub made); choose another key"
        )));
    }
    Ok(tags)
}

/// The pairs as EC2 tags.
pub(crate) fn to_ec2(tags: &[(String, String)]) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// EC2 tags as pairs, without AWS's own (`aws:…`, which nobody may set).
pub(crate) fn from_ec2(tags: &[Tag]) -> Vec<(String, String)> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .filter(|(k, _)| !k.starts_with("aws:"))
        .collect()
}

/// Tags a resource (snapshot or image) with `tags`; setting a tag it has is a no-op. `age`:
/// whether it was made a moment ago (then it may not be visible yet).
pub(crate) async fn tag(ec2: &Client, id: &str, tags: &[(String, String)], age: Age) -> Result<()> {
    if tags.is_empty() {
        return Ok(());
    }
    naming(age, &format!("tagging {id}"), || async {
        ec2.create_tags()
            .resources(id)
            .set_tags(Some(to_ec2(tags)))
            .send()
            .await
            .map_err(|e| aws(Op::Ec2CreateTags, format!("tagging {id}"), e))
    })
    .await?;
    Ok(())
}

/// The tags `snapshot` carries now.
pub(crate) async fn of_snapshot(ec2: &Client, snapshot: &str) -> Result<Vec<(String, String)>> {
    let out = ec2
        .describe_snapshots()
        .snapshot_ids(snapshot)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DescribeSnapshots,
                format!("reading snapshot {snapshot}"),
                e,
            )
        })?;
    Ok(out
        .snapshots()
        .first()
        .map_or_else(Vec::new, |s| from_ec2(s.tags())))
}

/// Whether `have` lacks one of `want` (a key, or its value).
pub(crate) fn lacks(want: &[(String, String)], have: &[(String, String)]) -> bool {
    want.iter().any(|t| !have.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_pairs() {
        let tags = parse("--tags", &["a=1".into(), "b=".into(), "c=x=y".into()]).unwrap();
        assert_eq!(tags[2], ("c".to_string(), "x=y".to_string()));
        assert_eq!(tags[1].1, "");
        let err = parse("--tag", &["=v".into()]).unwrap_err().to_string();
        assert_eq!(err, "--tag \"=v\" is not key=value");
        assert!(parse("--tags", &["novalue".into()]).is_err());
        let err = parse_to_set("--tags", &["AWS:owner=x".into()]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(parse_to_set("--tags", &["awsome=x".into()]).is_ok());
        // Selecting by an AWS tag is fine.
        assert!(parse("--tag", &["aws:cloudformation:stack-name=x".into()]).is_ok());
    }
}
