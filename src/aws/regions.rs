//! Regions: which exist, which this account has enabled, and running one step in many
//! regions at once.

use std::future::Future;

use aws_sdk_ec2::Client;
use futures_util::stream::{self, StreamExt};

use crate::aws::calls::Op;
use crate::aws::config::validate_region;
use crate::error::{aws, Error, ErrorKind, Result};

/// Which regions `list_regions` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegionFilter {
    /// Enabled for the account (no opt-in needed, or opted in).
    Enabled,
    /// Opt-in regions the account has not enabled.
    Disabled,
    /// Opt-in regions the account has enabled.
    OptedIn,
    All,
}

/// Region names, sorted, as `ore aws list-regions` prints them.
pub(crate) async fn list_regions(ec2: &Client, filter: RegionFilter) -> Result<Vec<String>> {
    let out = ec2
        .describe_regions()
        .all_regions(true)
        .send()
        .await
        .map_err(|e| aws(Op::Ec2DescribeRegions, "listing regions", e))?;
    let mut names: Vec<String> = out
        .regions()
        .iter()
        .filter(|r| {
            let enabled = r.opt_in_status() != Some("not-opted-in");
            match filter {
                RegionFilter::Enabled => enabled,
                RegionFilter::Disabled => !enabled,
                RegionFilter::OptedIn => r.opt_in_status() == Some("opted-in"),
                RegionFilter::All => true,
            }
        })
        .filter_map(|r| r.region_name().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// The regions a multi-region command acts on: the named ones, which must all be enabled
/// (an opt-in region that is not is an error), or with `all` every enabled region (the
/// others are skipped, named at INFO).
pub(crate) async fn target_regions(
    ec2: &Client,
    named: &[String],
    all: bool,
) -> Result<Vec<String>> {
    for region in named {
        validate_region(region)?;
    }
    let listed = match list_regions(ec2, RegionFilter::All).await {
        // ore needed no ec2:DescribeRegions to copy to named regions: they are taken as
        // named (a disabled one then fails there, with EC2's error).
        Err(e) if !all && e.kind() == Some(ErrorKind::AccessDenied) => {
            crate::aws::unchecked::note(format!(
                "that {} enabled (ec2:DescribeRegions)",
                if named.len() == 1 {
                    format!("{} is", named[0])
                } else {
                    format!("{} are", named.join(", "))
                }
            ));
            return Ok(named.to_vec());
        }
        listed => listed?,
    };
    let enabled = list_regions(ec2, RegionFilter::Enabled).await?;
    choose_regions(named, all, &enabled, &listed)
}

/// The regions of a command that works in its own region unless told otherwise: the named
/// ones or every enabled one, as [`target_regions`] gives them, else only its own (no
/// lookup).
pub(crate) async fn regions_or_own(
    ec2: &Client,
    own: &str,
    named: &[String],
    all: bool,
) -> Result<Vec<String>> {
    if named.is_empty() && !all {
        return Ok(vec![own.to_string()]);
    }
    target_regions(ec2, named, all).await
}

/// [`target_regions`] once the account's regions are known (`enabled` among `listed`).
pub(crate) fn choose_regions(
    named: &[String],
    all: bool,
    enabled: &[String],
    listed: &[String],
) -> Result<Vec<String>> {
    if all {
        let disabled: Vec<&str> = listed
            .iter()
            .filter(|r| !enabled.contains(r))
            .map(String::as_str)
            .collect();
        if !disabled.is_empty() {
            tracing::info!(
                "skipping regions not enabled for this account: {}",
                disabled.join(", ")
            );
        }
        return Ok(enabled.to_vec());
    }
    if let Some(off) = named.iter().find(|r| !enabled.contains(r)) {
        return Err(Error::Invalid(format!(
            "region {off} is not enabled for this account (an opt-in region, or not a region); enable it or leave it out"
        )));
    }
    let mut regions = named.to_vec();
    regions.sort();
    regions.dedup();
    Ok(regions)
}

/// Runs `work` on every item, at most `concurrency` at a time. `done` sees each success as
/// soon as it finishes (so its line can be printed at once); failures are logged and
/// returned, and never stop the other items.
pub(crate) async fn fan_out<I, T, F, Fut>(
    items: Vec<I>,
    concurrency: usize,
    work: F,
    mut done: impl FnMut(&I, T),
) -> Vec<(I, Error)>
where
    I: Clone + std::fmt::Display,
    F: Fn(I) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut failures = vec![];
    let mut results = stream::iter(items)
        .map(|item| {
            let run = work(item.clone());
            async move { (item, run.await) }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some((item, result)) = results.next().await {
        match result {
            Ok(value) => done(&item, value),
            Err(err) => {
                // Said once, in the error the command ends with; as it happens only with -v.
                tracing::info!("{item} failed: {err}");
                failures.push((item, err));
            }
        }
    }
    failures
}

/// Runs `find` in every region, `concurrency` at a time: all that was found, and the regions
/// where it failed, each with why (named in the end, without holding up the others).
pub(crate) async fn gather<T, F, Fut>(
    regions: Vec<String>,
    concurrency: usize,
    find: F,
) -> (Vec<T>, Vec<(String, String)>)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Vec<T>>>,
{
    let mut found = vec![];
    let failed = fan_out(regions, concurrency, find, |_, mut more: Vec<T>| {
        found.append(&mut more)
    })
    .await;
    let failed = failed
        .into_iter()
        .map(|(r, e)| (r, e.to_string()))
        .collect();
    (found, failed)
}

/// The error a multi-region command ends with when some items failed: every failure named,
/// and what a rerun does.
pub(crate) fn failure_summary<I: std::fmt::Display, E: std::fmt::Display>(
    context: String,
    failures: &[(I, E)],
) -> Error {
    let each: Vec<String> = failures.iter().map(|(i, e)| format!("{i} ({e})")).collect();
    Error::failed(
        context,
        ErrorKind::Other,
        None,
        format!(
            "{} failed: {}; rerun the same command to retry them (finished ones are kept)",
            failures.len(),
            each.join("; ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn region_targets() {
        let listed = names(&["ap-east-1", "eu-west-1", "us-east-1", "us-west-2"]);
        let enabled = names(&["eu-west-1", "us-east-1", "us-west-2"]);
        let named = names(&["us-west-2", "eu-west-1", "us-west-2"]);
        assert_eq!(
            choose_regions(&named, false, &enabled, &listed).unwrap(),
            names(&["eu-west-1", "us-west-2"])
        );
        assert_eq!(
            choose_regions(&[], true, &enabled, &listed).unwrap(),
            enabled
        );
        let err = choose_regions(&names(&["ap-east-1"]), false, &enabled, &listed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("region ap-east-1 is not enabled"), "{err}");
    }
}
