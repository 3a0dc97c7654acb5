//! `release verify`: every claim of the manifest read back in every region: the AMI exists
//! and is available, registered as declared (architecture, boot mode, IMDS, TPM, SR-IOV,
//! root volume, description), with its tags, deprecation, sharing and (with
//! `protect = true`) deregistration protection, its snapshot shared the same way, and every
//! SSM parameter holding that region's AMI. Read-only.

use std::path::Path;

use aws_sdk_ec2::types::ImageState;
use serde::Serialize;

use crate::aws::ami;
use crate::aws::copy::Copied;
use crate::aws::regions::fan_out;
use crate::aws::ssm;
use crate::commands::driver::{Account, Emit, Output};
use crate::commands::release::manifest::Manifest;
use crate::commands::release::record::{Parameter, Placed, Record};
use crate::error::{Error, Result};

#[derive(Debug)]
pub(crate) struct Plan {
    pub manifest: Manifest,
    /// The source region first, then the targets.
    pub regions: Vec<String>,
    pub findings: Vec<Finding>,
}

/// One image in one region, as found.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub image: usize,
    pub region: String,
    pub copy: Option<Copied>,
    pub parameters: Vec<Parameter>,
    /// What differs from the manifest; empty when all is as declared.
    pub problems: Vec<String>,
}

/// Reads every image in every region.
pub(crate) async fn plan(a: &Account, manifest: Manifest) -> Result<Plan> {
    let regions = super::regions_of(a, &manifest).await?;
    let mut findings = vec![];
    let failed = fan_out(
        regions.clone(),
        crate::commands::REGION_CONCURRENCY,
        |region| {
            let (ctx, m) = (&a.ctx, &manifest);
            async move {
                let regional = ctx.in_region(&region);
                let mut found = vec![];
                for image in 0..m.images.len() {
                    found.push(inspect(&regional, m, image, &region).await?);
                }
                Ok(found)
            }
        },
        |_, mut found: Vec<Finding>| findings.append(&mut found),
    )
    .await;
    // A region that cannot be read is not verified: each image there is a problem.
    for (region, err) in failed {
        for image in 0..manifest.images.len() {
            findings.push(Finding {
                image,
                region: region.clone(),
                copy: None,
                parameters: vec![],
                problems: vec![format!("could not be read: {err}")],
            });
        }
    }
    findings.sort_by(|a, b| (a.image, &a.region).cmp(&(b.image, &b.region)));
    Ok(Plan {
        manifest,
        regions,
        findings,
    })
}

/// Image `i` in one region.
async fn inspect(
    ctx: &crate::aws::config::AwsContext,
    m: &Manifest,
    i: usize,
    region: &str,
) -> Result<Finding> {
    let ec2 = ctx.ec2();
    let image = &m.images[i];
    let mut finding = Finding {
        image: i,
        region: region.to_string(),
        copy: None,
        parameters: vec![],
        problems: vec![],
    };
    let problems = &mut finding.problems;
    let Some(found) = ami::find_image_by_name(&ec2, &image.name).await? else {
        problems.push(format!("no AMI named {}", image.name));
        return Ok(finding);
    };
    let id = found.image_id.clone();
    let described = ami::describe_image(&ec2, region, &id).await?;
    let state = described.state().cloned();
    if state != Some(ImageState::Available) {
        problems.push(format!(
            "{id} is {}, not available",
            state.as_ref().map_or("in no state", |s| s.as_str())
        ));
    }
    // Its architecture, boot mode, IMDS, TPM, SR-IOV, root volume and description.
    for differs in found.registered.differences(&image.registered_as()?) {
        problems.push(format!("{id} has {differs}"));
    }
    let lacking: Vec<String> = m
        .tags
        .iter()
        .filter(|t| !found.tags.contains(t))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !lacking.is_empty() {
        problems.push(format!("{id} lacks the tags {}", lacking.join(", ")));
    }
    if m.deprecate.is_some() && found.deprecation.is_none() {
        problems.push(format!("{id} has no deprecation time"));
    }
    let protected = described
        .deregistration_protection()
        .is_some_and(|v| v.starts_with("enabled"));
    if m.protect && !protected {
        problems.push(format!("{id} has no deregistration protection"));
    }
    let launch = ami::read_launch(&ec2, &id).await?;
    if m.sharing.launch_missing(&launch) {
        problems.push(match (m.sharing.public, launch.public) {
            (true, false) => format!("{id} is private, not public"),
            _ => format!(
                "{id} is not shared with {}",
                m.sharing.describe().unwrap_or_default()
            ),
        });
    }
    let Some(snapshot) = found.root_snapshot.clone() else {
        problems.push(format!("{id} has no root snapshot"));
        return Ok(finding);
    };
    let volume = ami::read_volume(&ec2, &snapshot).await?;
    if m.sharing.volume_missing(&volume) {
        problems.push(format!(
            "snapshot {snapshot} of {id} is not shared as the AMI is"
        ));
    }
    // The tags the AMI has now: a template naming one that was removed says so.
    let facts = image.facts(region, &id, found.tags.clone());
    let ssm = ctx.ssm();
    for template in &m.parameters {
        let parameter = template.render(&facts)?;
        match ssm::read(&ssm, &parameter, region).await? {
            None => problems.push(format!("parameter {parameter} is missing")),
            Some((value, _)) if value != id => {
                problems.push(format!("parameter {parameter} holds {value}, not {id}"))
            }
            Some(_) => finding.parameters.push(Parameter {
                region: region.to_string(),
                parameter,
                ami: id.clone(),
            }),
        }
    }
    finding.copy = Some(Copied { ami: id, snapshot });
    Ok(finding)
}

#[derive(Debug, Serialize)]
struct Line<'a> {
    image: &'a str,
    region: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ami: Option<&'a str>,
    /// `ok`, `drift` (it exists, but not as declared) or `missing`.
    status: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    best_effort: bool,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    problems: &'a [String],
}

/// Prints a line per image and region, writes the record, and fails naming every problem:
/// exit 77 when all are in best-effort regions, else 1.
pub(crate) fn report(a: &Account, plan: &Plan, record: &Path, emit: Emit<'_>) -> Result<()> {
    let m = &plan.manifest;
    let mut bad = vec![];
    for f in &plan.findings {
        let status = match (&f.copy, f.problems.is_empty()) {
            (_, true) => "ok",
            (Some(_), false) => "drift",
            (None, false) => "missing",
        };
        let name = &m.images[f.image].name;
        emit(Output::json(&Line {
            image: name,
            region: &f.region,
            ami: f.copy.as_ref().map(|c| c.ami.as_str()),
            status,
            best_effort: m.best_effort(&f.region),
            problems: &f.problems,
        }));
        if !f.problems.is_empty() {
            bad.push(f);
        }
    }
    let placed: Vec<Placed> = plan
        .findings
        .iter()
        .map(|f| Placed {
            image: f.image,
            region: f.region.clone(),
            copy: f.copy.clone(),
            parameters: f.parameters.clone(),
            millis: None,
        })
        .collect();
    let (account, partition) = (&a.identity.account, &a.identity.partition);
    Record::of(m, account, partition, &plan.regions, &placed).write(record)?;
    let total = plan.findings.len();
    if bad.is_empty() {
        emit(Output::Summary(format!(
            "release verify: release {} is as declared: {total} AMIs in {} regions checked; record {}",
            m.release,
            plan.regions.len(),
            record.display()
        )));
        return Ok(());
    }
    emit(Output::Summary(format!(
        "release verify: {} of {total} AMIs of release {} are not as declared; record {}",
        bad.len(),
        m.release,
        record.display()
    )));
    let each: Vec<String> = bad
        .iter()
        .map(|f| {
            format!(
                "{} in {}: {}",
                m.images[f.image].name,
                f.region,
                f.problems.join(", ")
            )
        })
        .collect();
    let best_effort_only = bad.iter().all(|f| m.best_effort(&f.region));
    Err(Error::Incomplete {
        detail: format!(
            "release {} is not as declared: {}; `imgpub release apply` with the same manifest makes it so again",
            m.release,
            each.join("; ")
        ),
        best_effort_only,
    })
}
