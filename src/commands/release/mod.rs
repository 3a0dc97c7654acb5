//! `imgpub release plan | apply | verify | promote MANIFEST`: a release declared once (images ×
//! regions, sharing, tags, deprecation, SSM parameters) in a manifest ([`manifest`]),
//! planned read-only before anything is made, applied with the commands' own stages
//! (upload in the source region, then a copy and the parameters per region as soon as
//! each is ready), and verified by reading every claim back. Both apply and verify write a
//! [`record`]. AWS is the journal: every step finds what an earlier run made by name, so a
//! rerun after a kill or a failed region continues where it stopped. [`promote`] moves a
//! channel's SSM parameters to the release. [`prune`] retires the stream's old releases in
//! stages, as its retention policy says.

use std::path::PathBuf;

use crate::aws::calls::Call;
use crate::commands::driver::{Account, Command, Emit};
use crate::commands::upload::{self, LocalPlan, Stage};
use crate::error::Result;

pub(crate) mod manifest;
mod promote;
pub(crate) mod prune;
mod publish;
pub(crate) mod record;
pub(crate) mod restore;
mod verify;
pub(crate) mod watch;

use manifest::Manifest;
pub use promote::Promotion;
pub use restore::RestoreOptions;
pub use watch::WatchOptions;

/// Which step of a release to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseStep {
    /// Read-only: what exists, what will be made, and whether it can be.
    Plan,
    /// Publish what is missing.
    Apply,
    /// Read every claim back; exit 1 on drift.
    Verify,
    /// Point one channel's parameters at the release, as another channel does.
    Promote(Promotion),
    /// Retire the stream's releases the retention policy does not keep, a stage per run;
    /// without `apply`, only say what is due.
    Prune {
        apply: bool,
        /// A retention policy file (`[prune]`) instead of the manifest's own.
        policy: Option<PathBuf>,
    },
}

/// `imgpub release STEP MANIFEST`.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    pub step: ReleaseStep,
    pub manifest: PathBuf,
    /// Where the record goes (default: `<release>.record.json` beside the manifest).
    pub record: Option<PathBuf>,
}

impl ReleaseOptions {
    fn record_path(&self, manifest: &Manifest) -> PathBuf {
        self.record.clone().unwrap_or_else(|| {
            let dir = manifest.path.parent().unwrap_or(std::path::Path::new("."));
            dir.join(format!("{}.record.json", manifest.release))
        })
    }
}

/// The manifest's regions as the account has them now: the source first, then the targets
/// (`all`: every region enabled for the account).
pub(crate) async fn regions_of(a: &Account, manifest: &Manifest) -> Result<Vec<String>> {
    let ec2 = a.ctx.in_region(&manifest.source_region).ec2();
    let (named, all) = match &manifest.targets {
        manifest::Targets::All => (vec![], true),
        manifest::Targets::Named(list) => (list.clone(), false),
    };
    let mut targets = crate::aws::regions::target_regions(&ec2, &named, all).await?;
    targets.retain(|r| *r != manifest.source_region);
    Ok(std::iter::once(manifest.source_region.clone())
        .chain(targets)
        .collect())
}

/// A time as DescribeImages writes it (ISO 8601), or `None` when it is not one.
pub(crate) fn parse_time(text: &str) -> Option<std::time::SystemTime> {
    use aws_smithy_types::{date_time::Format, DateTime};
    std::time::SystemTime::try_from(DateTime::from_str(text, Format::DateTime).ok()?).ok()
}

/// A time as AWS writes it, for messages and JSON lines.
pub(crate) fn show_time(at: std::time::SystemTime) -> String {
    use aws_smithy_types::{date_time::Format, DateTime};
    DateTime::from(at)
        .fmt(Format::DateTime)
        .unwrap_or_else(|_| "a time AWS cannot show".into())
}

/// What the step found before it acts.
#[derive(Debug)]
pub(crate) enum Plan {
    Publish(publish::Plan),
    Verify(verify::Plan),
    Promote(promote::Plan),
    Prune(prune::Plan),
}

impl Command for ReleaseOptions {
    type Connection = Account;
    type Local = (Manifest, Vec<LocalPlan>);
    type Plan = Plan;

    /// The manifest, and for plan and apply each image as `upload` reads it.
    fn validate(&self) -> Result<Self::Local> {
        let mut manifest = manifest::read(&self.manifest)?;
        if let ReleaseStep::Promote(p) = &self.step {
            promote::validate(&manifest, p)?;
        }
        if let ReleaseStep::Prune {
            policy: Some(path), ..
        } = &self.step
        {
            manifest.prune = Some(manifest::read_retention(path)?);
        }
        if let ReleaseStep::Prune { .. } = &self.step {
            prune::validate(&manifest)?;
        }
        let locals = match self.step {
            ReleaseStep::Verify | ReleaseStep::Promote(_) | ReleaseStep::Prune { .. } => vec![],
            ReleaseStep::Plan | ReleaseStep::Apply => manifest
                .images
                .iter()
                .map(|image| {
                    let mut options = manifest.upload_options(image);
                    // EBS direct's block maps are kept beside the record too, so the next
                    // release's delta finds them wherever the record is kept.
                    if options.via == upload::Via::EbsDirect {
                        let record = self.record_path(&manifest);
                        let dir = record.parent().filter(|d| !d.as_os_str().is_empty());
                        options.block_maps = Some(dir.map_or(".".into(), PathBuf::from));
                    }
                    upload::plan_local(Stage::Upload, options)
                })
                .collect::<Result<_>>()?,
        };
        Ok((manifest, locals))
    }

    fn region(&self, (manifest, _): &Self::Local) -> Option<String> {
        Some(manifest.source_region.clone())
    }

    async fn plan(&self, a: &Account, (manifest, locals): Self::Local) -> Result<Plan> {
        Ok(match &self.step {
            ReleaseStep::Verify => Plan::Verify(verify::plan(a, manifest).await?),
            ReleaseStep::Promote(p) => Plan::Promote(promote::plan(a, manifest, p.clone()).await?),
            ReleaseStep::Prune { apply, .. } => {
                let retention = prune::validate(&manifest)?;
                Plan::Prune(prune::plan(a, manifest, retention, *apply).await?)
            }
            ReleaseStep::Plan | ReleaseStep::Apply => {
                let plan = publish::plan(a, manifest, locals).await?;
                // Apply stops here when the release cannot complete; plan prints it first.
                if self.step == ReleaseStep::Apply {
                    plan.can_complete()?;
                }
                Plan::Publish(plan)
            }
        })
    }

    fn check(&self, _: &Account, plan: &Plan) -> Vec<Call> {
        match plan {
            Plan::Publish(plan) => publish::check(plan),
            Plan::Verify(_) => vec![],
            Plan::Promote(plan) => promote::check(plan),
            Plan::Prune(plan) => prune::check(plan),
        }
    }

    fn policy(&self, _: &Account, plan: &Plan, calls: &[Call]) -> Option<String> {
        match plan {
            Plan::Publish(plan) => Some(publish::policy_line(plan, calls)),
            Plan::Verify(_) => None,
            Plan::Promote(plan) => Some(promote::policy_line(plan)),
            Plan::Prune(plan) => Some(prune::policy_line(plan)),
        }
    }

    fn describe(&self, _: &Account, plan: &Plan, calls: &[Call]) -> Vec<String> {
        match plan {
            Plan::Promote(plan) => promote::describe(plan),
            // Apply's dry run is `release plan`; here, the calls named.
            _ => crate::commands::driver::calls_in_words(calls),
        }
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        match (&self.step, plan) {
            (ReleaseStep::Plan, Plan::Publish(plan)) => publish::show(plan, emit),
            (_, Plan::Promote(plan)) => promote::apply(a, plan, emit).await,
            (_, Plan::Prune(plan)) => prune::apply(a, plan, emit).await,
            (_, Plan::Publish(plan)) => {
                let path = self.record_path(&plan.manifest);
                publish::apply(a, plan, &path, emit).await
            }
            (_, Plan::Verify(plan)) => {
                let path = self.record_path(&plan.manifest);
                verify::report(a, plan, &path, emit)
            }
        }
    }
}
