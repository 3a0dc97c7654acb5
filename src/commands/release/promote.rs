//! `release promote MANIFEST --from CHANNEL --to CHANNEL`: the release's parameters of one
//! channel (`/os/latest/x86_64`) copied to another (`/os/stable/x86_64`) in every region,
//! once each is checked to hold this release's AMI. Rollback is the same command naming
//! the channel that still holds the older release.

use serde::Serialize;

use crate::aws::ami;
use crate::aws::calls::{Call, Op, Resource};
use crate::aws::regions::target_regions;
use crate::aws::ssm::{self, ImageFacts, Planned};
use crate::commands::driver::{Account, Emit, Output};
use crate::commands::release::manifest::{Manifest, Targets};
use crate::error::{Error, Result};

/// Which channel to copy to which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub from: String,
    pub to: String,
}

/// Every parameter to copy, read and checked.
#[derive(Debug)]
pub(crate) struct Plan {
    pub manifest: Manifest,
    pub promotion: Promotion,
    /// The source region first, then the targets.
    pub regions: Vec<String>,
    /// Per image and region, the `to` parameters with the AMI they will hold.
    pub moves: Vec<(usize, Planned)>,
}

/// Reads, in every region, each image's AMI, the `from` parameters (they must hold it) and
/// the `to` parameters (what they hold now). Any parameter that is missing or holds
/// another AMI stops the run before a write.
pub(crate) async fn plan(a: &Account, manifest: Manifest, promotion: Promotion) -> Result<Plan> {
    if promotion.from == promotion.to {
        return Err(Error::Invalid(format!(
            "release promote: --from and --to are both {:?}; name two channels",
            promotion.from
        )));
    }
    let from = manifest.channel_templates(&promotion.from)?;
    let to = manifest.channel_templates(&promotion.to)?;
    let (named, all) = match &manifest.targets {
        Targets::All => (vec![], true),
        Targets::Named(list) => (list.clone(), false),
    };
    let source = a.ctx.in_region(&manifest.source_region);
    let mut regions = vec![manifest.source_region.clone()];
    for region in target_regions(&source.ec2(), &named, all).await? {
        if !regions.contains(&region) {
            regions.push(region);
        }
    }
    let mut moves = vec![];
    let mut problems = vec![];
    for region in &regions {
        let ctx = a.ctx.in_region(region);
        let (ec2, ssm_client) = (ctx.ec2(), ctx.ssm());
        for (i, image) in manifest.images.iter().enumerate() {
            let Some(found) = ami::find_image_by_name(&ec2, &image.name).await? else {
                problems.push(format!("{region}: no AMI named {}", image.name));
                continue;
            };
            let facts = ImageFacts {
                region: region.clone(),
                image_id: found.image_id.clone(),
                name: image.name.clone(),
                arch: image.arch.ec2().as_str().to_string(),
                tags: crate::aws::tags::with_managed(&manifest.tags),
            };
            for template in &from {
                let parameter = template.render(&facts)?;
                match ssm::read(&ssm_client, &parameter, region).await? {
                    Some((value, _)) if value == found.image_id => {}
                    Some((value, _)) => problems.push(format!(
                        "{region}: {parameter} holds {value}, not {} of release {}",
                        found.image_id, manifest.release
                    )),
                    None => problems.push(format!("{region}: {parameter} does not exist")),
                }
            }
            for planned in ssm::plan(&ssm_client, &facts, &to, true).await? {
                moves.push((i, planned));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Invalid(format!(
            "release {} cannot be promoted from {} to {}; nothing was written: {}; `imgpub release apply` writes channel {:?} (the manifest's), `imgpub release verify` says what differs",
            manifest.release,
            promotion.from,
            promotion.to,
            problems.join("; "),
            manifest.channel.as_deref().unwrap_or_default()
        )));
    }
    Ok(Plan {
        manifest,
        promotion,
        regions,
        moves,
    })
}

/// The writes: each `to` parameter that does not hold its AMI yet.
pub(crate) fn check(plan: &Plan) -> Vec<Call> {
    plan.moves
        .iter()
        .filter(|(_, p)| p.current.as_deref() != Some(p.image_id.as_str()))
        .map(|(_, p)| {
            let resource = vec![Resource::Parameter(p.parameter.clone())];
            Call::new(Op::SsmPutParameter, &p.region, resource)
        })
        .collect()
}

/// The `imgpub aws policy` line that grants the writes.
pub(crate) fn policy_line(plan: &Plan) -> String {
    format!(
        "imgpub aws policy --for ssm --ssm-prefix /PATH/ --regions {}",
        plan.regions.join(",")
    )
}

/// The plan in words.
pub(crate) fn describe(plan: &Plan) -> Vec<String> {
    plan.moves
        .iter()
        .filter(|(_, p)| p.current.as_deref() != Some(p.image_id.as_str()))
        .map(|(_, p)| {
            let now = p
                .current
                .as_ref()
                .map_or("it does not exist yet".to_string(), |v| {
                    format!("it holds {v}")
                });
            format!(
                "would point {} in {} at {} ({now})",
                p.parameter, p.region, p.image_id
            )
        })
        .collect()
}

/// One line per parameter.
#[derive(Debug, Serialize)]
struct Line<'a> {
    image: &'a str,
    #[serde(flatten)]
    written: &'a ssm::Written,
}

/// Writes region by region, paced as `publish-ssm` writes, each read back until it holds its
/// AMI.
pub(crate) async fn apply(a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
    let m = &plan.manifest;
    let (mut changed, mut total) = (0, 0);
    for region in &plan.regions {
        let mine: Vec<&(usize, Planned)> = plan
            .moves
            .iter()
            .filter(|(_, p)| p.region == *region)
            .collect();
        let planned: Vec<Planned> = mine.iter().map(|(_, p)| p.clone()).collect();
        let written = ssm::write(&a.ctx.in_region(region).ssm(), &planned, VALIDATION).await?;
        for ((i, _), w) in mine.iter().zip(&written) {
            total += 1;
            changed += usize::from(w.status != "unchanged");
            emit(Output::json(&Line {
                image: &m.images[*i].name,
                written: w,
            }));
        }
    }
    let p = &plan.promotion;
    emit(Output::Summary(match changed {
        0 => format!(
            "release promote: nothing to do: the {total} parameters of channel {} already hold release {} in {} regions",
            p.to,
            m.release,
            plan.regions.len()
        ),
        n => format!(
            "release promote: pointed {n} of {total} parameters of channel {} at release {} (as {} holds it) in {} regions",
            p.to,
            m.release,
            p.from,
            plan.regions.len()
        ),
    }));
    Ok(())
}

/// How long each written parameter may take to hold its AMI (as `publish-ssm`'s default).
const VALIDATION: std::time::Duration = std::time::Duration::from_secs(120);
