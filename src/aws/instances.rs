//! EC2 instances, for `gc`: find the instances carrying every given tag that were launched
//! before a cutoff, and terminate them. ore's `gc` does exactly this to the test machines
//! kola launches (tagged `CreatedBy=mantle`).

use std::time::SystemTime;

use aws_sdk_ec2::types::{Filter, InstanceStateName};

use crate::aws::calls::Op;
use crate::error::{aws, Error, Result};

/// The states ore's `gc` terminates from; an instance stopping, shutting down or gone is
/// left for a later run (ore: "skipping instance in state …").
const COLLECTED_STATES: [InstanceStateName; 3] = [
    InstanceStateName::Pending,
    InstanceStateName::Running,
    InstanceStateName::Stopped,
];

/// TerminateInstances takes up to 1,000 ids; EC2 recommends smaller batches.
const BATCH: usize = 100;

/// An instance old enough to collect.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct OldInstance {
    pub region: String,
    pub instance: String,
    pub name: Option<String>,
    /// LaunchTime, as EC2 gave it (RFC 3339).
    pub launched: String,
    pub state: String,
    /// Every tag it carries: what IAM's `aws:ResourceTag` sees (for the preflight).
    #[serde(skip)]
    pub tags: Vec<(String, String)>,
}

/// This account's instances in `region` that carry every tag in `tags` (exactly: EC2's
/// filter reads `*` and `?` as wildcards, so what it lists is compared again), are pending,
/// running or stopped, and were launched before `cutoff`.
pub(crate) async fn old_instances(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    tags: &[(String, String)],
    cutoff: SystemTime,
) -> Result<Vec<OldInstance>> {
    let mut filters: Vec<Filter> = tags
        .iter()
        .map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build())
        .collect();
    filters.push(
        Filter::builder()
            .name("instance-state-name")
            .set_values(Some(
                COLLECTED_STATES
                    .iter()
                    .map(|s| s.as_str().to_string())
                    .collect(),
            ))
            .build(),
    );
    let mut pages = ec2
        .describe_instances()
        .set_filters(Some(filters))
        .into_paginator()
        .send();
    let mut found = vec![];
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            aws(
                Op::Ec2DescribeInstances,
                format!("listing this account's tagged instances in {region}"),
                e,
            )
        })?;
        for instance in page.reservations().iter().flat_map(|r| r.instances()) {
            let has: Vec<(String, String)> = instance
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                .collect();
            // The filter already chose the states and tags; a stand-in or a race may not
            // have, and an answer without an id or a launch time is left for a later run.
            let state = instance.state().and_then(|s| s.name());
            let (Some(id), Some(launched), Some(state)) = (
                instance.instance_id(),
                instance.launch_time(),
                state.filter(|s| COLLECTED_STATES.contains(s)),
            ) else {
                tracing::debug!("{region}: skipping an instance listed without an id, launch time or a state gc collects");
                continue;
            };
            if !tags.iter().all(|t| has.contains(t))
                || SystemTime::try_from(*launched).map_or(true, |t| t >= cutoff)
            {
                continue;
            }
            found.push(OldInstance {
                region: region.to_string(),
                instance: id.to_string(),
                name: has
                    .iter()
                    .find(|(k, _)| k == "Name")
                    .map(|(_, v)| v.clone()),
                launched: launched
                    .fmt(aws_smithy_types::date_time::Format::DateTime)
                    .map_err(|_| Error::missing(Op::Ec2DescribeInstances, "a valid LaunchTime"))?,
                state: state.as_str().to_string(),
                tags: has,
            });
        }
    }
    Ok(found)
}

/// What [`terminate`] did: each instance terminated, with its state after the call where
/// EC2 said it, and each it could not, with why.
#[derive(Debug, Default)]
pub(crate) struct Terminations {
    pub done: Vec<(String, Option<String>)>,
    pub failed: Vec<(String, Error)>,
}

/// Terminates `ids` in batches. TerminateInstances fails a whole request for one id it
/// refuses (termination protection, one gone meanwhile), so a batch that fails is tried
/// again one id at a time: one bad instance holds up no other.
pub(crate) async fn terminate(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    ids: &[String],
) -> Terminations {
    let mut out = Terminations::default();
    for batch in ids.chunks(BATCH) {
        match terminate_batch(ec2, region, batch).await {
            Ok(done) => out.done.extend(done),
            Err(e) if batch.len() == 1 => out.failed.push((batch[0].clone(), e)),
            Err(_) => {
                for id in batch {
                    match terminate_batch(ec2, region, std::slice::from_ref(id)).await {
                        Ok(done) => out.done.extend(done),
                        Err(e) => out.failed.push((id.clone(), e)),
                    }
                }
            }
        }
    }
    out
}

async fn terminate_batch(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    ids: &[String],
) -> Result<Vec<(String, Option<String>)>> {
    let out = ec2
        .terminate_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2TerminateInstances,
                format!("terminating {} instances in {region}", ids.len()),
                e,
            )
        })?;
    Ok(out
        .terminating_instances()
        .iter()
        .filter_map(|change| {
            let state = change.current_state().and_then(|s| s.name());
            Some((
                change.instance_id()?.to_string(),
                state.map(|s| s.as_str().to_string()),
            ))
        })
        .collect())
}
