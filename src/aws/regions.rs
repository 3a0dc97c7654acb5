//! Regions: which exist and which this account has enabled.

use aws_sdk_ec2::Client;

use crate::error::{aws, Result};

/// Which regions `list_regions` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionFilter {
    /// Enabled for the account (no opt-in needed, or opted in).
    Enabled,
    /// Opt-in regions the account has not enabled.
    Disabled,
    All,
}

/// Region names, sorted, as `ore aws list-regions` prints them.
pub async fn list_regions(ec2: &Client, filter: RegionFilter) -> Result<Vec<String>> {
    let out = ec2
        .describe_regions()
        .all_regions(true)
        .send()
        .await
        .map_err(|e| aws("listing regions", e))?;
    let mut names: Vec<String> = out
        .regions()
        .iter()
        .filter(|r| {
            let enabled = r.opt_in_status() != Some("not-opted-in");
            match filter {
                RegionFilter::Enabled => enabled,
                RegionFilter::Disabled => !enabled,
                RegionFilter::All => true,
            }
        })
        .filter_map(|r| r.region_name().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}
