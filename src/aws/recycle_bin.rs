//! The Recycle Bin: the retention rules that keep what imgpub deletes restorable, and the
//! restore of a deregistered AMI and its snapshots. Rules are per region, and a rule
//! retains what matches it at deletion: an AMI deregistered or a snapshot deleted while no
//! available rule matches it is gone for good.

use aws_sdk_ec2::Client as Ec2;
use aws_sdk_rbin::types::{ResourceTag, ResourceType, RetentionPeriod, RetentionPeriodUnit};
use aws_sdk_rbin::Client as Rbin;

use crate::aws::calls::Op;
use crate::aws::tags::{MANAGED_KEY, MANAGED_VALUE};
use crate::error::{aws, Error, Result};

/// What a rule retains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    Image,
    Snapshot,
}

impl Kind {
    pub(crate) const BOTH: [Kind; 2] = [Kind::Image, Kind::Snapshot];

    fn resource_type(self) -> ResourceType {
        match self {
            Kind::Image => ResourceType::Ec2Image,
            Kind::Snapshot => ResourceType::EbsSnapshot,
        }
    }
}

/// imgpub's rule for a kind of resource in a region: a tag-level rule for resources tagged
/// `imgpub:managed=true`, itself tagged `imgpub:managed=true` (what `initialize
/// --recycle-bin` made; another's rule for the same resources is not ours to change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub id: String,
    pub days: i32,
    /// Locked rules cannot be changed ("You can't modify ... a locked retention rule":
    /// Recycle Bin User Guide, "Lock retention rules").
    pub locked: bool,
}

fn managed_tag() -> Result<ResourceTag> {
    ResourceTag::builder()
        .resource_tag_key(MANAGED_KEY)
        .resource_tag_value(MANAGED_VALUE)
        .build()
        .map_err(|e| Error::Invalid(format!("Recycle Bin rule tag: {e}")))
}

/// imgpub's rule for `kind` in the region, if there is one: ListRules for the tag-level
/// rules that retain imgpub's resources, then each one's own tags.
pub(crate) async fn ours(rbin: &Rbin, region: &str, kind: Kind) -> Result<Option<Rule>> {
    let mut found = vec![];
    let mut pages = rbin
        .list_rules()
        .resource_type(kind.resource_type())
        .resource_tags(managed_tag()?)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws(Op::RbinListRules, format!("in {region}"), e))?;
        found.extend(page.rules().iter().cloned());
    }
    for rule in found {
        let (Some(id), Some(arn)) = (rule.identifier(), rule.rule_arn()) else {
            continue;
        };
        let tags = rbin
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(|e| {
                aws(
                    Op::RbinListTagsForResource,
                    format!("rule {id} in {region}"),
                    e,
                )
            })?;
        let mine = tags
            .tags()
            .iter()
            .any(|t| t.key() == MANAGED_KEY && t.value() == MANAGED_VALUE);
        if mine {
            return Ok(Some(Rule {
                id: id.to_string(),
                days: rule
                    .retention_period()
                    .map(|p| p.retention_period_value())
                    .unwrap_or(0),
                locked: rule
                    .lock_state()
                    .is_some_and(|l| *l != aws_sdk_rbin::types::LockState::Unlocked),
            }));
        }
    }
    Ok(None)
}

/// Creates imgpub's tag-level rule: resources tagged `imgpub:managed=true`, kept `days`.
pub(crate) async fn create_rule(
    rbin: &Rbin,
    region: &str,
    kind: Kind,
    days: i32,
) -> Result<String> {
    // The rule is tagged as imgpub's: that is how a rerun finds it, and what lets a policy
    // allow changing imgpub's rules only.
    let own = aws_sdk_rbin::types::Tag::builder()
        .key(MANAGED_KEY)
        .value(MANAGED_VALUE)
        .build()
        .map_err(|e| Error::Invalid(format!("Recycle Bin rule tag: {e}")))?;
    let out = rbin
        .create_rule()
        .resource_type(kind.resource_type())
        .retention_period(period(days)?)
        .resource_tags(managed_tag()?)
        .tags(own)
        .description("imgpub: what imgpub deletes stays restorable")
        .send()
        .await
        .map_err(|e| aws(Op::RbinCreateRule, format!("in {region}"), e))?;
    out.identifier()
        .map(str::to_owned)
        .ok_or_else(|| Error::Invalid(format!("CreateRule in {region} returned no identifier")))
}

/// Sets the retention of rule `id`.
pub(crate) async fn update_rule(rbin: &Rbin, region: &str, id: &str, days: i32) -> Result<()> {
    rbin.update_rule()
        .identifier(id)
        .retention_period(period(days)?)
        .send()
        .await
        .map_err(|e| aws(Op::RbinUpdateRule, format!("rule {id} in {region}"), e))?;
    Ok(())
}

fn period(days: i32) -> Result<RetentionPeriod> {
    RetentionPeriod::builder()
        .retention_period_value(days)
        .retention_period_unit(RetentionPeriodUnit::Days)
        .build()
        .map_err(|e| Error::Invalid(format!("Recycle Bin retention: {e}")))
}

/// Which of `ids` (AMIs) are in the region's Recycle Bin.
pub(crate) async fn images_in_bin(ec2: &Ec2, region: &str, ids: &[String]) -> Result<Vec<String>> {
    let list = |chunk: Option<Vec<String>>| async move {
        let mut found = vec![];
        let mut pages = ec2
            .list_images_in_recycle_bin()
            .set_image_ids(chunk)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| aws(Op::Ec2ListImagesInRecycleBin, format!("in {region}"), e))?;
            found.extend(
                page.images()
                    .iter()
                    .filter_map(|i| i.image_id().map(str::to_owned)),
            );
        }
        Ok(found)
    };
    in_bin(ids, "InvalidAMIID.NotFound", list).await
}

/// Which of `ids` (snapshots) are in the region's Recycle Bin.
pub(crate) async fn snapshots_in_bin(
    ec2: &Ec2,
    region: &str,
    ids: &[String],
) -> Result<Vec<String>> {
    let list = |chunk: Option<Vec<String>>| async move {
        let mut found = vec![];
        let mut pages = ec2
            .list_snapshots_in_recycle_bin()
            .set_snapshot_ids(chunk)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| aws(Op::Ec2ListSnapshotsInRecycleBin, format!("in {region}"), e))?;
            found.extend(
                page.snapshots()
                    .iter()
                    .filter_map(|s| s.snapshot_id().map(str::to_owned)),
            );
        }
        Ok(found)
    };
    in_bin(ids, "InvalidSnapshot.NotFound", list).await
}

/// Asks the bin about `ids`, 20 at a time ("You can specify up to 20 IDs in a single
/// request"). Whether an id not in the bin is left out of the answer or refused as not
/// found AWS does not say: when refused, the whole bin is listed and `ids` looked up in it.
async fn in_bin<F, Fut>(ids: &[String], not_found: &str, list: F) -> Result<Vec<String>>
where
    F: Fn(Option<Vec<String>>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>>>,
{
    let mut found = vec![];
    for chunk in ids.chunks(20) {
        match list(Some(chunk.to_vec())).await {
            Ok(some) => found.extend(some),
            Err(e) if e.code() == Some(not_found) => {
                let all = list(None).await?;
                return Ok(ids.iter().filter(|id| all.contains(id)).cloned().collect());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

/// Brings a snapshot back. Before its AMI: "Before you can restore an AMI from the Recycle
/// Bin, you must first restore all of its associated snapshots" (Recycle Bin User Guide).
pub(crate) async fn restore_snapshot(ec2: &Ec2, region: &str, id: &str) -> Result<()> {
    ec2.restore_snapshot_from_recycle_bin()
        .snapshot_id(id)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2RestoreSnapshotFromRecycleBin,
                format!("{id} in {region}"),
                e,
            )
        })?;
    Ok(())
}

/// Brings an AMI back, with the sharing it had when it was deregistered.
pub(crate) async fn restore_image(ec2: &Ec2, region: &str, id: &str) -> Result<()> {
    ec2.restore_image_from_recycle_bin()
        .image_id(id)
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2RestoreImageFromRecycleBin,
                format!("{id} in {region}"),
                e,
            )
        })?;
    Ok(())
}
