//! `list-regions`: region names, sorted, one per line, as `ore aws list-regions` prints
//! them. Read-only: its plan is the list.

use crate::aws::calls::Op;
use crate::aws::regions::{list_regions, RegionFilter};
use crate::commands::Clients;
use crate::error::Result;

/// `--disabled` / `--all` as a filter.
pub fn filter(disabled: bool, all: bool) -> RegionFilter {
    match (all, disabled) {
        (true, _) => RegionFilter::All,
        (false, true) => RegionFilter::Disabled,
        (false, false) => RegionFilter::Enabled,
    }
}

/// Every operation `list-regions` may make.
pub const MAY_CALL: &[Op] = &[Op::Ec2DescribeRegions];

pub async fn plan(c: &Clients, filter: RegionFilter) -> Result<Vec<String>> {
    list_regions(&c.ec2, filter).await
}
