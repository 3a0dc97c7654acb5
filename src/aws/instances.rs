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
pub struct OldInstance {
    pub region: String,
    pub instance: String,
    pub name: Option<String>,
    /// LaunchTime, as EC2 gave it (RFC 3339).
    pub launched: String,
    pub state: String,
}

/// This account's instances in `region` that carry every tag in `tags`, are pending,
/// running or stopped, and were launched before `cutoff`.
pub async fn old_instances(
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
            let id = instance
                .instance_id()
                .ok_or_else(|| Error::missing(Op::Ec2DescribeInstances, "InstanceId"))?;
            let launched = instance
                .launch_time()
                .ok_or_else(|| Error::missing(Op::Ec2DescribeInstances, "LaunchTime"))?;
            let state = instance.state().and_then(|s| s.name());
            // The filter already chose the states; a stand-in or a race may not have.
            let Some(state) = state.filter(|s| COLLECTED_STATES.contains(s)) else {
                continue;
            };
            if SystemTime::try_from(*launched).map_or(true, |t| t >= cutoff) {
                continue;
            }
            found.push(OldInstance {
                region: region.to_string(),
                instance: id.to_string(),
                name: instance
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some("Name"))
                    .and_then(|t| t.value())
                    .map(str::to_owned),
                launched: launched
                    .fmt(aws_smithy_types::date_time::Format::DateTime)
                    .map_err(|_| Error::missing(Op::Ec2DescribeInstances, "a valid LaunchTime"))?,
                state: state.as_str().to_string(),
            });
        }
    }
    Ok(found)
}

/// Terminates `ids` in batches; returns each instance's state after the call
/// (`shutting-down`, or `terminated` for one that already was), where EC2 said it.
pub async fn terminate(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    ids: &[String],
) -> Result<Vec<(String, Option<String>)>> {
    let mut states = vec![];
    for batch in ids.chunks(BATCH) {
        let out = ec2
            .terminate_instances()
            .set_instance_ids(Some(batch.to_vec()))
            .send()
            .await
            .map_err(|e| {
                aws(
                    Op::Ec2TerminateInstances,
                    format!("terminating {} instances in {region}", batch.len()),
                    e,
                )
            })?;
        for change in out.terminating_instances() {
            if let Some(id) = change.instance_id() {
                let state = change.current_state().and_then(|s| s.name());
                states.push((id.to_string(), state.map(|s| s.as_str().to_string())));
            }
        }
    }
    Ok(states)
}
