//! `release promote MANIFEST --from CHANNEL --to CHANNEL`: the release's parameters of one
//! channel (`/os/latest/x86_64`) copied to another (`/os/stable/x86_64`) in every region,
//! once each is checked to hold this release's AMI. Rollback is the same command naming
//! the channel that still holds the older release.

use serde::Serialize;

use crate::aws::ami;
use crate::aws::calls::Call;
use crate::aws::regions::{fan_out, target_regions};
use crate::aws::ssm::{self, Planned};
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
    /// Best-effort regions left out (no AMI there, or not readable), each with why.
    pub skipped: Vec<(String, String)>,
}

/// The channels, checked without AWS: two different names that fill the manifest's
/// templates into valid parameter names.
pub(crate) fn validate(manifest: &Manifest, promotion: &Promotion) -> Result<()> {
    if promotion.from == promotion.to {
        return Err(Error::Invalid(format!(
            "release promote: --from and --to are both {:?}; name two channels",
            promotion.from
        )));
    }
    for channel in [&promotion.from, &promotion.to] {
        for template in manifest.channel_templates(channel)? {
            for image in &manifest.images {
                let facts = manifest.facts(image, &manifest.source_region, &image.name);
                template.render(&facts)?;
            }
        }
    }
    Ok(())
}

/// One region's reads: the `to` parameters to write, or why the region cannot be promoted.
async fn look(
    a: &Account,
    manifest: &Manifest,
    region: &str,
    from: &[crate::aws::ssm::Template],
    to: &[crate::aws::ssm::Template],
) -> Result<std::result::Result<Vec<(usize, Planned)>, Vec<String>>> {
    let ctx = a.ctx.in_region(region);
    let (ec2, ssm_client) = (ctx.ec2(), ctx.ssm());
    let mut moves = vec![];
    let mut problems = vec![];
    for (i, image) in manifest.images.iter().enumerate() {
        let Some(found) = ami::find_image_by_name(&ec2, &image.name).await? else {
            problems.push(format!("{region}: no AMI named {}", image.name));
            continue;
        };
        let facts = manifest.facts(image, region, &found.image_id);
        for template in from {
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
        for planned in ssm::plan(&ssm_client, &facts, to, true).await? {
            moves.push((i, planned));
        }
    }
    Ok(match problems.is_empty() {
        true => Ok(moves),
        false => Err(problems),
    })
}

/// Reads, in every region, each image's AMI, the `from` parameters (they must hold it) and
/// the `to` parameters (what they hold now). Any parameter that is missing or holds
/// another AMI stops the run before a write.
pub(crate) async fn plan(a: &Account, manifest: Manifest, promotion: Promotion) -> Result<Plan> {
    validate(&manifest, &promotion)?;
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
    let mut looked = vec![];
    let failed = fan_out(
        regions.clone(),
        crate::commands::REGION_CONCURRENCY,
        |region| {
            let (manifest, from, to) = (&manifest, &from, &to);
            async move { look(a, manifest, &region, from, to).await }
        },
        |region, result| looked.push((region.clone(), result)),
    )
    .await;
    let (mut moves, mut problems, mut skipped) = (vec![], vec![], vec![]);
    let mut unreadable = vec![];
    for (region, err) in failed {
        let why = err.to_string();
        match manifest.best_effort(&region) {
            true => skipped.push((region, why)),
            false => unreadable.push(format!("{region}: {why}")),
        }
    }
    for (region, result) in looked {
        match result {
            Ok(found) => moves.extend(found),
            // A best-effort region the release did not reach is left out, and said.
            Err(why) if manifest.best_effort(&region) => skipped.push((region, why.join("; "))),
            Err(why) => problems.extend(why),
        }
    }
    if !unreadable.is_empty() {
        return Err(Error::Incomplete {
            detail: format!(
                "release {} cannot be promoted: {}; nothing was written, rerun to retry",
                manifest.release,
                unreadable.join("; ")
            ),
            best_effort_only: false,
        });
    }
    if !problems.is_empty() {
        problems.sort();
        // apply writes the manifest's own channel; another one was promoted to earlier.
        let fix = match manifest.channel.as_deref() == Some(promotion.from.as_str()) {
            true => format!("`imgpub release apply` writes channel {}", promotion.from),
            false => format!(
                "promote to {} first, from a channel that holds the release",
                promotion.from
            ),
        };
        return Err(Error::Invalid(format!(
            "release {} cannot be promoted from {} to {}; nothing was written: {}; {fix}",
            manifest.release,
            promotion.from,
            promotion.to,
            problems.join("; ")
        )));
    }
    moves.sort_by(|(i, a), (j, b)| (&a.region, i, &a.parameter).cmp(&(&b.region, j, &b.parameter)));
    let regions = regions
        .into_iter()
        .filter(|r| !skipped.iter().any(|(s, _)| s == r))
        .collect();
    Ok(Plan {
        manifest,
        promotion,
        regions,
        moves,
        skipped,
    })
}

/// The writes: each `to` parameter that does not hold its AMI yet.
pub(crate) fn check(plan: &Plan) -> Vec<Call> {
    plan.moves
        .iter()
        .filter(|(_, p)| p.to_write())
        .map(|(_, p)| p.call())
        .collect()
}

/// The `imgpub aws policy` line that grants the reads and writes.
pub(crate) fn policy_line(plan: &Plan) -> String {
    // `regions = "all"` lists the enabled regions first.
    let list = match plan.manifest.targets {
        Targets::All => ",list-regions",
        Targets::Named(_) => "",
    };
    format!(
        "imgpub aws policy --for ssm{list} --ssm-prefix /PATH/ --regions {}",
        plan.regions.join(",")
    )
}

/// The plan in words.
pub(crate) fn describe(plan: &Plan) -> Vec<String> {
    plan.moves
        .iter()
        .filter(|(_, p)| p.to_write())
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

/// Writes the regions side by side, each paced as `publish-ssm` writes and read back until
/// it holds its AMI; a region that fails does not stop the others, and is named at the end.
pub(crate) async fn apply(a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
    let m = &plan.manifest;
    let (mut changed, mut total) = (0, 0);
    let failed = fan_out(
        plan.regions.clone(),
        crate::commands::REGION_CONCURRENCY,
        |region| async move {
            let mine: Vec<&(usize, Planned)> = plan
                .moves
                .iter()
                .filter(|(_, p)| p.region == region)
                .collect();
            let planned: Vec<Planned> = mine.iter().map(|(_, p)| p.clone()).collect();
            let written = ssm::write(&a.ctx.in_region(&region).ssm(), &planned, VALIDATION).await?;
            let images: Vec<usize> = mine.iter().map(|(i, _)| *i).collect();
            Ok((images, written))
        },
        |_, (images, written): (Vec<usize>, Vec<ssm::Written>)| {
            for (i, w) in images.iter().zip(&written) {
                total += 1;
                changed += usize::from(w.status != "unchanged");
                emit(Output::json(&Line {
                    image: &m.images[*i].name,
                    written: w,
                }));
            }
        },
    )
    .await;
    let p = &plan.promotion;
    let regions = plan.regions.len() - failed.len();
    let mut line = match changed {
        0 => format!(
            "release promote: nothing to do: the {total} parameters of channel {} already hold release {} in {regions} regions",
            p.to, m.release
        ),
        n => format!(
            "release promote: pointed {n} of {total} parameters of channel {} at release {} (as {} holds it) in {regions} regions",
            p.to, m.release, p.from
        ),
    };
    if !plan.skipped.is_empty() {
        let names: Vec<&str> = plan.skipped.iter().map(|(r, _)| r.as_str()).collect();
        line.push_str(&format!(
            "; left out best-effort regions the release is not in: {}",
            names.join(", ")
        ));
    }
    emit(Output::Summary(line));
    let mut failures: Vec<(String, String)> = failed
        .into_iter()
        .map(|(r, e)| (r, e.to_string()))
        .collect();
    failures.extend(plan.skipped.iter().cloned());
    if failures.is_empty() {
        return Ok(());
    }
    let best_effort_only = failures.iter().all(|(r, _)| m.best_effort(r));
    let each: Vec<String> = failures.iter().map(|(r, e)| format!("{r} ({e})")).collect();
    Err(Error::Incomplete {
        detail: format!(
            "release {}: channel {} not promoted in {}: {}; rerun `imgpub release promote` once they hold the release (what is done is kept)",
            m.release,
            p.to,
            failures.len(),
            each.join("; ")
        ),
        best_effort_only,
    })
}

/// How long each written parameter may take to hold its AMI (as `publish-ssm`'s default).
const VALIDATION: std::time::Duration = std::time::Duration::from_secs(120);
