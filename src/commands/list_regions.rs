//! `list-regions`: region names, sorted, one per line, as `ore aws list-regions` prints
//! them. Read-only: its plan is the list.

use crate::aws::calls::{Call, Op};
use crate::aws::regions::{list_regions, RegionFilter};
use crate::commands::driver::{Account, Command, Emit, Output};
use crate::error::Result;

#[derive(Debug, Clone, Copy, Default)]
pub struct ListRegionsOptions {
    /// Only the regions not enabled for the account.
    pub disabled: bool,
    /// Every region, enabled or not.
    pub all: bool,
}

/// `--disabled` / `--all` as a filter.
fn filter(disabled: bool, all: bool) -> RegionFilter {
    match (all, disabled) {
        (true, _) => RegionFilter::All,
        (false, true) => RegionFilter::Disabled,
        (false, false) => RegionFilter::Enabled,
    }
}

/// Every operation `list-regions` may make.
pub(crate) const MAY_CALL: &[Op] = &[Op::Ec2DescribeRegions];

impl Command for ListRegionsOptions {
    type Connection = Account;
    type Local = RegionFilter;
    type Plan = Vec<String>;

    fn validate(&self) -> Result<RegionFilter> {
        Ok(filter(self.disabled, self.all))
    }

    async fn plan(&self, a: &Account, filter: RegionFilter) -> Result<Vec<String>> {
        list_regions(&a.ctx.ec2(), filter).await
    }

    /// The plan's one read is the whole command: nothing is left to call.
    fn check(&self, _: &Account, _: &Vec<String>) -> Vec<Call> {
        vec![]
    }

    /// Nothing to preflight: an AccessDenied on the one read names its action.
    fn policy(&self, _: &Account, _: &Vec<String>, _: &[Call]) -> Option<String> {
        None
    }

    async fn apply(&self, _: &Account, regions: &Vec<String>, emit: Emit<'_>) -> Result<()> {
        regions.iter().for_each(|r| emit(Output::Text(r.clone())));
        let which = match (self.all, self.disabled) {
            (true, _) => "regions in all",
            (false, true) => "disabled regions",
            (false, false) => "enabled regions",
        };
        emit(Output::Summary(format!(
            "list-regions: {} {which}",
            regions.len()
        )));
        Ok(())
    }
}
