//! AMI usage reports: which other accounts use an AMI (instances, launch templates), as
//! EC2 counts them. A report is made asynchronously (`pending`, then `available` or
//! `error`), holds what EC2 saw when it was made, and is deleted 30 days after (EC2 User
//! Guide, "View your AMI usage").

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_sdk_ec2::types::ImageUsageResourceTypeRequest;
use aws_sdk_ec2::Client;

use crate::aws::calls::Op;
use crate::error::{aws, Result};

/// What a report counts: instances and launch templates ("ResourceType ... Valid values:
/// ec2:Instance | ec2:LaunchTemplate", EC2 API Reference).
const RESOURCE_TYPES: [&str; 2] = ["ec2:Instance", "ec2:LaunchTemplate"];

/// What an AMI's reports say: the newest one made, and any still being made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub available: Option<Report>,
    /// A report asked for and not yet made ("In-progress (pending) AMI usage reports per
    /// AMI: 1").
    pub pending: Option<String>,
    /// The newest report, when it ended in `error`: AWS's reason.
    pub error: Option<String>,
}

/// An available report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    pub id: String,
    pub created: SystemTime,
    /// The uses by other accounts, none when unused.
    pub uses: Vec<Use>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Use {
    pub account: String,
    pub resource_type: String,
    pub count: i64,
}

/// What the reports of each of `amis` in the region say, with the uses an available one
/// found by accounts other than `owner` (whether EC2 lists the owner's own use, or
/// accounts that use none, it does not say: neither counts here).
pub(crate) async fn usage(
    ec2: &Client,
    region: &str,
    amis: &[String],
    owner: &str,
) -> Result<BTreeMap<String, Usage>> {
    let mut out: BTreeMap<String, Usage> = BTreeMap::new();
    let mut newest: BTreeMap<String, SystemTime> = BTreeMap::new();
    // "ImageId.N ... up to 200" (DescribeImageUsageReports).
    for chunk in amis.chunks(200) {
        let mut pages = ec2
            .describe_image_usage_reports()
            .set_image_ids(Some(chunk.to_vec()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| aws(Op::Ec2DescribeImageUsageReports, format!("in {region}"), e))?;
            for r in page.image_usage_reports() {
                let (Some(ami), Some(id), Some(created)) = (
                    r.image_id(),
                    r.report_id(),
                    r.creation_time()
                        .and_then(|t| SystemTime::try_from(*t).ok()),
                ) else {
                    continue;
                };
                // Only a report over every account and both kinds of use answers the
                // question (one made by hand may look at less).
                let counts: Vec<&str> = r
                    .resource_types()
                    .iter()
                    .filter_map(|t| t.resource_type())
                    .collect();
                let whole =
                    r.account_ids().is_empty() && RESOURCE_TYPES.iter().all(|t| counts.contains(t));
                if !whole {
                    continue;
                }
                let usage = out.entry(ami.to_string()).or_default();
                let is_newest = newest.get(ami).is_none_or(|at| *at < created);
                if is_newest {
                    newest.insert(ami.to_string(), created);
                }
                // "available | pending | error" (EC2 API Reference, ImageUsageReport).
                match r.state() {
                    Some("available") => {
                        if usage.available.as_ref().is_none_or(|a| a.created < created) {
                            usage.available = Some(Report {
                                id: id.to_string(),
                                created,
                                uses: vec![],
                            });
                        }
                    }
                    Some("error") if is_newest => {
                        usage.error =
                            Some(r.state_reason().unwrap_or("no reason given").to_string());
                    }
                    Some("error") => {}
                    _ => usage.pending = Some(id.to_string()),
                }
                if is_newest && r.state() != Some("error") {
                    usage.error = None;
                }
            }
        }
    }
    let available: Vec<String> = out
        .values()
        .filter_map(|u| u.available.as_ref().map(|r| r.id.clone()))
        .collect();
    for chunk in available.chunks(200) {
        let mut pages = ec2
            .describe_image_usage_report_entries()
            .set_report_ids(Some(chunk.to_vec()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                aws(
                    Op::Ec2DescribeImageUsageReportEntries,
                    format!("in {region}"),
                    e,
                )
            })?;
            for e in page.image_usage_report_entries() {
                let (Some(ami), Some(account)) = (e.image_id(), e.account_id()) else {
                    continue;
                };
                let count = e.usage_count().unwrap_or(0);
                if account == owner || count == 0 {
                    continue;
                }
                let report = out.get_mut(ami).and_then(|u| u.available.as_mut());
                if let Some(report) = report.filter(|r| e.report_id() == Some(r.id.as_str())) {
                    report.uses.push(Use {
                        account: account.to_string(),
                        resource_type: e.resource_type().unwrap_or("?").to_string(),
                        count,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Asks EC2 for a report on `ami`: instances and launch templates in every account. The
/// report's id, when EC2 names it.
pub(crate) async fn request(ec2: &Client, region: &str, ami: &str) -> Result<Option<String>> {
    let types = RESOURCE_TYPES
        .iter()
        .map(|t| {
            ImageUsageResourceTypeRequest::builder()
                .resource_type(*t)
                .build()
        })
        .collect();
    let out = ec2
        .create_image_usage_report()
        .image_id(ami)
        .set_resource_types(Some(types))
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2CreateImageUsageReport,
                format!("asking for the usage of {ami} in {region}"),
                e,
            )
        })?;
    Ok(out.report_id().map(str::to_owned))
}
