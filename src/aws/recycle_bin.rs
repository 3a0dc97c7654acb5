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

/// A rule of the region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub id: String,
    pub days: i32,
    /// A tag-level rule for exactly imgpub's tag: the one `initialize --recycle-bin` keeps.
    pub imgpubs: bool,
}

fn is_ours(tag: &ResourceTag) -> bool {
    tag.resource_tag_key() == MANAGED_KEY
        && tag
            .resource_tag_value()
            .is_none_or(|v| v.is_empty() || v == MANAGED_VALUE)
}

/// The region's rules for `kind`: ListRules, then GetRule for what each retains.
pub(crate) async fn rules(rbin: &Rbin, region: &str, kind: Kind) -> Result<Vec<Rule>> {
    let mut ids = vec![];
    let mut pages = rbin
        .list_rules()
        .resource_type(kind.resource_type())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws(Op::RbinListRules, format!("in {region}"), e))?;
        ids.extend(
            page.rules()
                .iter()
                .filter_map(|r| r.identifier().map(str::to_owned)),
        );
    }
    let mut out = vec![];
    for id in ids {
        let rule = rbin
            .get_rule()
            .identifier(&id)
            .send()
            .await
            .map_err(|e| aws(Op::RbinGetRule, format!("rule {id} in {region}"), e))?;
        let tags = rule.resource_tags();
        out.push(Rule {
            imgpubs: tags.len() == 1 && tags.iter().all(is_ours),
            days: rule
                .retention_period()
                .map(|p| p.retention_period_value())
                .unwrap_or(0),
            id,
        });
    }
    Ok(out)
}

/// Creates imgpub's tag-level rule: resources tagged `imgpub:managed=true`, kept `days`.
pub(crate) async fn create_rule(
    rbin: &Rbin,
    region: &str,
    kind: Kind,
    days: i32,
) -> Result<String> {
    let tag = ResourceTag::builder()
        .resource_tag_key(MANAGED_KEY)
        .resource_tag_value(MANAGED_VALUE)
        .build()
        .map_err(|e| Error::Invalid(format!("Recycle Bin rule tag: {e}")))?;
    let out = rbin
        .create_rule()
        .resource_type(kind.resource_type())
        .retention_period(period(days)?)
        .resource_tags(tag)
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
    let mut found = vec![];
    // "You can specify up to 20 IDs in a single request" (ListImagesInRecycleBin).
    for chunk in ids.chunks(20) {
        let mut pages = ec2
            .list_images_in_recycle_bin()
            .set_image_ids(Some(chunk.to_vec()))
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
    }
    Ok(found)
}

/// Which of `ids` (snapshots) are in the region's Recycle Bin.
pub(crate) async fn snapshots_in_bin(
    ec2: &Ec2,
    region: &str,
    ids: &[String],
) -> Result<Vec<String>> {
    let mut found = vec![];
    for chunk in ids.chunks(20) {
        let mut pages = ec2
            .list_snapshots_in_recycle_bin()
            .set_snapshot_ids(Some(chunk.to_vec()))
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
