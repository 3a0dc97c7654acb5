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
use crate::aws::config::AwsSettings;
use crate::commands::driver::{self, Account, Command, Emit, Output, Run};
use crate::commands::upload::{self, LocalPlan, Stage};
use crate::error::{Error, Result};

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
    /// Where the record goes (default: `<release>.record.json` beside the manifest). With
    /// `[[account]]`, the merged record; each account's part is beside it.
    pub record: Option<PathBuf>,
    /// `--only`: the `[[account]]`s this run takes (one CI runner's share of the release);
    /// empty: all.
    pub only: Vec<Only>,
    /// `--wait-for-uploads`: how long an account that copies from an account outside this
    /// run waits for that account's uploads (another runner's); `None`: its plan stops.
    pub wait_for_uploads: Option<std::time::Duration>,
}

/// `--only account=NAME` or `--only partition=P`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Only {
    Account(String),
    Partition(String),
}

impl std::str::FromStr for Only {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Only, String> {
        match text.split_once('=') {
            Some(("account", name)) if !name.is_empty() => Ok(Only::Account(name.into())),
            Some(("partition", p)) if !p.is_empty() => Ok(Only::Partition(p.into())),
            _ => Err(format!(
                "{text:?}: use account=NAME (an [[account]] of the manifest) or partition=P (aws, aws-us-gov, aws-cn)"
            )),
        }
    }
}

impl ReleaseOptions {
    /// The record of the whole release (the merged one, with `[[account]]`).
    fn record_path(&self, manifest: &Manifest) -> PathBuf {
        self.record.clone().unwrap_or_else(|| {
            let dir = manifest.path.parent().unwrap_or(std::path::Path::new("."));
            dir.join(format!("{}.record.json", manifest.release))
        })
    }

    /// Account `name`'s part of the record, beside the merged one.
    fn part_path(&self, manifest: &Manifest, name: &str) -> PathBuf {
        let merged = self.record_path(manifest);
        let dir = merged.parent().unwrap_or(std::path::Path::new("."));
        dir.join(format!("{}.{name}.record.json", manifest.release))
    }
}

/// Runs the step: once, as the AWS flags say, or with `[[account]]` once per account (those
/// `--only` names), side by side, each through the one driver with its own credentials and
/// its own part of the record; then the record's parts are merged.
pub(crate) async fn run(options: ReleaseOptions, run: &Run, emit: Emit<'_>) -> Result<()> {
    let path = options.manifest.clone();
    let read = crate::blocking::run(move || manifest::read(&path)).await;
    // A manifest that does not read is reported by the step's own validation.
    let accounts = read
        .as_ref()
        .map(|m| m.accounts.clone())
        .unwrap_or_default();
    if accounts.is_empty() {
        if let (Some(wait), Ok(_)) = (options.wait_for_uploads, &read) {
            tracing::warn!(
                "--wait-for-uploads {}: the manifest declares no [[account]] that copies from another (copy_from), so nothing waits",
                crate::units::show_duration(wait)
            );
        }
        if !options.only.is_empty() && read.is_ok() {
            return Err(Error::Invalid(
                "--only picks among the manifest's [[account]]s, and it declares none".into(),
            ));
        }
        let part = Part {
            options,
            account: None,
            owner: None,
            connected: Default::default(),
        };
        return driver::drive(part, run, emit).await;
    }
    let manifest = read?;
    let chosen = choose(&accounts, &options.only)?;
    if let Some(wait) = options.wait_for_uploads {
        // Only an account whose copy_from account runs elsewhere waits: said when none does.
        let waits = chosen.iter().any(|c| {
            c.copy_from
                .as_ref()
                .is_some_and(|from| !chosen.iter().any(|o| o.name == from.name))
        });
        if !waits {
            tracing::warn!(
                "--wait-for-uploads {}: no account of this run copies from an account that runs elsewhere (copy_from), so nothing waits",
                crate::units::show_duration(wait)
            );
        }
    }
    // One Ctrl-C for the whole run: a drive listens only while it applies, and a signal
    // with nobody listening would be lost while another account still plans.
    tokio::select! {
        result = accounts_run(&options, &manifest, &chosen, run, emit) => result,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    }
}

/// [`run`] over the chosen accounts.
async fn accounts_run(
    options: &ReleaseOptions,
    manifest: &Manifest,
    chosen: &[manifest::AccountDecl],
    run: &Run,
    emit: Emit<'_>,
) -> Result<()> {
    // A step that changes something changes nothing in any account until every account's
    // own dry run passed: its identity, its plan (a release that cannot complete) and its
    // permission preflight.
    let changes = match &options.step {
        ReleaseStep::Apply | ReleaseStep::Promote(_) => true,
        ReleaseStep::Prune { apply, .. } => *apply,
        ReleaseStep::Plan | ReleaseStep::Verify => false,
    };
    if changes && chosen.len() > 1 && !run.dry_run {
        let dry = Run {
            dry_run: true,
            ..run.clone()
        };
        let checked = each(options, chosen, &dry, &mut |_| {}).await;
        combine(checked, "nothing was changed in any account")?;
    }
    let results = each(options, chosen, run, emit).await;
    let merged = match matches!(options.step, ReleaseStep::Apply | ReleaseStep::Verify) {
        true if !run.dry_run => merge(options, manifest).await,
        _ => Ok(()),
    };
    // The accounts' own results first: a record that cannot be merged does not hide them.
    let result = combine(results, "");
    if let Err(e) = merged {
        match &result {
            Ok(()) => return Err(e),
            Err(_) => tracing::error!("{e}"),
        }
    }
    result
}

/// The accounts `only` names (all when it names none).
fn choose(accounts: &[manifest::AccountDecl], only: &[Only]) -> Result<Vec<manifest::AccountDecl>> {
    for o in only {
        let known = match o {
            Only::Account(name) => accounts.iter().any(|a| &a.name == name),
            Only::Partition(p) => accounts.iter().any(|a| a.partition == p),
        };
        if !known {
            let names: Vec<String> = accounts
                .iter()
                .map(|a| format!("{} ({})", a.name, a.partition))
                .collect();
            return Err(Error::Invalid(format!(
                "--only {}: the manifest has no such account; its [[account]]s are {}",
                match o {
                    Only::Account(n) => format!("account={n}"),
                    Only::Partition(p) => format!("partition={p}"),
                },
                names.join(", ")
            )));
        }
    }
    Ok(accounts
        .iter()
        .filter(|a| {
            only.is_empty()
                || only.iter().any(|o| match o {
                    Only::Account(name) => &a.name == name,
                    Only::Partition(p) => a.partition == p,
                })
        })
        .cloned()
        .collect())
}

/// Runs the step in every account of `chosen` side by side; each line they emit, and
/// each log line, says its account.
async fn each(
    options: &ReleaseOptions,
    chosen: &[manifest::AccountDecl],
    run: &Run,
    emit: Emit<'_>,
) -> Vec<(String, Result<()>)> {
    use tracing::Instrument;
    let shared = std::sync::Mutex::new(emit);
    // How each account's run ended, for the accounts that copy from it and wait for its
    // AMIs: they stop waiting once it failed.
    let ended: Vec<_> = chosen
        .iter()
        .map(|_| tokio::sync::watch::channel(publish::OwnerRun::Running))
        .collect();
    let parts = chosen.iter().zip(&ended).map(|(decl, (done, _))| {
        let shared = &shared;
        let owner = decl.copy_from.as_ref().and_then(|from| {
            let i = chosen.iter().position(|c| c.name == from.name)?;
            Some(ended[i].1.clone())
        });
        let part = Part {
            options: options.clone(),
            account: Some(decl.name.clone()),
            owner,
            connected: Default::default(),
        };
        let connected = std::sync::Arc::clone(&part.connected);
        let run = Run {
            settings: settings_for(&run.settings, decl),
            ..run.clone()
        };
        async move {
            let name = decl.name.clone();
            let mut tagged = |line: Output| {
                let line = in_account(&name, line);
                let mut emit = shared.lock().unwrap_or_else(|p| p.into_inner());
                (*emit)(line)
            };
            let span = tracing::info_span!("account", name = %decl.name);
            let result = driver::drive(part, &run, &mut tagged)
                .instrument(span)
                .await;
            // Missing best-effort regions only: its uploads are there to copy.
            done.send_replace(match &result {
                Ok(())
                | Err(Error::Incomplete {
                    best_effort_only: true,
                    ..
                }) => publish::OwnerRun::Published,
                Err(_) => publish::OwnerRun::Failed,
            });
            // Credentials refused as it connects: keys of another partition, perhaps.
            let result = match connected.load(std::sync::atomic::Ordering::Relaxed) {
                true => result,
                false => result.map_err(|e| in_partition(e, decl)),
            };
            (decl.name.clone(), result)
        }
    });
    futures_util::future::join_all(parts).await
}

/// The AWS settings of one `[[account]]`: its region, and its profile or role in place of
/// the flags' when it names them.
fn settings_for(base: &AwsSettings, decl: &manifest::AccountDecl) -> AwsSettings {
    let mut settings = AwsSettings {
        region: Some(decl.source_region.clone()),
        ..base.clone()
    };
    if let Some(profile) = &decl.profile {
        settings.profile = Some(profile.clone());
        settings.access_id = None;
        settings.secret_key = None;
        settings.role_arn = None;
        settings.external_id = None;
    }
    if let Some(role) = &decl.role_arn {
        settings.role_arn = Some(role.clone());
        settings.external_id = decl.external_id.clone();
    }
    settings
}

/// `line` as account `name`'s: JSON lines gain `"account"`, lines for a person start with
/// the name.
fn in_account(name: &str, line: Output) -> Output {
    match line {
        Output::Json(serde_json::Value::Object(mut map)) => {
            map.insert("account".into(), name.into());
            Output::Json(serde_json::Value::Object(map))
        }
        Output::Step(text) => Output::Step(format!("account {name}: {text}")),
        Output::Summary(text) => Output::Summary(format!("account {name}: {text}")),
        other => other,
    }
}

/// One result of the accounts' results: done when all are; 77 when only best-effort
/// regions are missing anywhere; else the worst failure, the others logged.
fn combine(results: Vec<(String, Result<()>)>, then: &str) -> Result<()> {
    let failed: Vec<(String, Error)> = results
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| (name, e)))
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    let all_77 = failed.iter().all(|(_, e)| e.exit_code() == 77);
    if all_77 && failed.len() > 1 {
        let detail: Vec<String> = failed
            .iter()
            .map(|(n, e)| format!("account {n}: {e}"))
            .collect();
        return Err(Error::Incomplete {
            detail: detail.join("; "),
            best_effort_only: true,
        });
    }
    // The run ends as its worst failure: interrupted, then failed, then input that changed,
    // then bad input (nothing done there), then best-effort regions missing.
    let severity = |e: &Error| match e.exit_code() {
        130 => 0,
        1 => 1,
        3 => 2,
        2 => 3,
        _ => 4,
    };
    let worst = (0..failed.len())
        .min_by_key(|&i| severity(&failed[i].1))
        .unwrap_or(0);
    let mut failed = failed;
    let (name, error) = failed.remove(worst);
    for (other, e) in &failed {
        tracing::error!("account {other}: {e}");
    }
    let error = match (then.is_empty(), error) {
        (
            false,
            Error::Incomplete {
                detail,
                best_effort_only,
            },
        ) => Error::Incomplete {
            detail: format!("{detail} ({then})"),
            best_effort_only,
        },
        (_, error) => error,
    };
    Err(Error::InAccount {
        account: name,
        source: Box::new(error),
    })
}

/// Writes the merged record from every declared account's part found beside it (this
/// run's, and those other runners wrote with `--only`).
async fn merge(options: &ReleaseOptions, manifest: &Manifest) -> Result<()> {
    let names: Vec<String> = manifest.accounts.iter().map(|a| a.name.clone()).collect();
    let parts: Vec<PathBuf> = names
        .iter()
        .map(|name| options.part_path(manifest, name))
        .collect();
    let (release, merged) = (manifest.release.clone(), options.record_path(manifest));
    crate::blocking::run(move || {
        let found = parts
            .iter()
            .map(|path| {
                path.exists()
                    .then(|| record::Record::read(path))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        record::Merged::of(&release, &names, found).write(&merged)
    })
    .await
}

/// An account's failure as it connected, with what to check when its credentials are
/// refused or cannot be had: keys of one partition are unknown in the others.
fn in_partition(error: Error, decl: &manifest::AccountDecl) -> Error {
    let hint = format!(
        "[[account]] {:?} publishes in partition {}, from {}: its credentials (`profile`, or the flags' that assume `role_arn`) must be of that partition, since keys of one partition are unknown in the others",
        decl.name, decl.partition, decl.source_region
    );
    match error {
        Error::Setup(text) => Error::Setup(format!("{text} ({hint})")),
        e if e.kind() == Some(crate::error::ErrorKind::Credentials) => e.with_hint(&hint),
        e => e,
    }
}

/// The credentials of `decl` are its account's, in its partition: checked before any
/// lookup, so a profile or role of the wrong account publishes nothing.
fn check_identity(a: &Account, decl: &manifest::AccountDecl) -> Result<()> {
    let who = &a.identity;
    if let Some(id) = decl.id.as_deref().filter(|id| *id != who.account) {
        return Err(Error::Invalid(format!(
            "the credentials for [[account]] {:?} are account {}'s ({}), but it declares `id = \"{id}\"`; fix its `profile` or `role_arn`, or the id",
            decl.name, who.account, a.ctx.credentials_source
        )));
    }
    if who.partition != decl.partition {
        return Err(Error::Invalid(format!(
            "the credentials for [[account]] {:?} are of partition {}, but its source region {} is in {}; give it credentials of that partition (`profile` or `role_arn`)",
            decl.name, who.partition, decl.source_region, decl.partition
        )));
    }
    Ok(())
}

/// One run of a step: the whole release, or one `[[account]]`'s part of it.
#[derive(Debug, Clone)]
struct Part {
    options: ReleaseOptions,
    /// The `[[account]]` this part is; `None`: a manifest without accounts.
    account: Option<String>,
    /// For an account that copies (`copy_from`): how the run of the account it copies from
    /// ended, when that account runs beside it.
    owner: Option<publish::OwnerDone>,
    /// Set once the account's credentials connected (its plan began).
    connected: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Part {
    /// How this part, when its account copies, meets the uploads its plan does not find.
    fn awaiting(&self) -> publish::Awaiting {
        match (&self.owner, self.options.wait_for_uploads) {
            (Some(owner), _) => publish::Awaiting::Beside(owner.clone()),
            (None, Some(wait)) => publish::Awaiting::Elsewhere(wait),
            (None, None) => publish::Awaiting::Not,
        }
    }

    fn record_path(&self, manifest: &Manifest) -> PathBuf {
        match &self.account {
            Some(name) => self.options.part_path(manifest, name),
            None => self.options.record_path(manifest),
        }
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

impl Command for Part {
    type Connection = Account;
    type Local = (Manifest, Vec<LocalPlan>);
    type Plan = Plan;

    /// The manifest (an account's view of it), and for plan and apply each image as
    /// `upload` reads it.
    fn validate(&self) -> Result<Self::Local> {
        let mut manifest = manifest::read(&self.options.manifest)?;
        if let Some(name) = &self.account {
            manifest = manifest.for_account(name)?;
        }
        if let ReleaseStep::Promote(p) = &self.options.step {
            promote::validate(&manifest, p)?;
        }
        if let ReleaseStep::Prune {
            policy: Some(path), ..
        } = &self.options.step
        {
            manifest.prune = Some(manifest::read_retention(path)?);
        }
        if let ReleaseStep::Prune { .. } = &self.options.step {
            prune::validate(&manifest)?;
        }
        let locals = match self.options.step {
            ReleaseStep::Verify | ReleaseStep::Promote(_) | ReleaseStep::Prune { .. } => vec![],
            // An account that copies reads no image file.
            _ if manifest.copy_from().is_some() => vec![],
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
        self.connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(decl) = &manifest.part {
            check_identity(a, decl)?;
        }
        Ok(match &self.options.step {
            ReleaseStep::Verify => Plan::Verify(verify::plan(a, manifest).await?),
            ReleaseStep::Promote(p) => Plan::Promote(promote::plan(a, manifest, p.clone()).await?),
            ReleaseStep::Prune { apply, .. } => {
                let retention = prune::validate(&manifest)?;
                Plan::Prune(prune::plan(a, manifest, retention, *apply).await?)
            }
            ReleaseStep::Plan | ReleaseStep::Apply => {
                // The record of an earlier release of the stream, to estimate the time.
                let dir = self.record_path(&manifest);
                let dir = dir
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .map_or(PathBuf::from("."), PathBuf::from);
                let earlier = match self.options.step {
                    ReleaseStep::Plan => {
                        let view = manifest.clone();
                        let who = a.identity.clone();
                        crate::blocking::run(move || {
                            let part = view.part.as_ref().map(|p| p.name.as_str());
                            let earlier = |part: Option<&str>, account: &str| {
                                record::Record::earlier(&dir, &view, part, account, &who.partition)
                                    .map(Box::new)
                            };
                            Ok(publish::Earlier {
                                own: earlier(part, &who.account),
                                // An account that copies waits for the uploads of the
                                // account it copies from, as long as they took there.
                                uploads: view
                                    .copy_from()
                                    .and_then(|from| earlier(Some(&from.name), &from.id)),
                            })
                        })
                        .await?
                    }
                    _ => publish::Earlier::default(),
                };
                let plan = publish::plan(a, manifest, locals, self.awaiting(), earlier).await?;
                // Apply stops here when the release cannot complete; plan prints it first.
                if self.options.step == ReleaseStep::Apply {
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
        match (&self.options.step, plan) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn decls() -> Vec<manifest::AccountDecl> {
        let text = r#"
release = "1"
source_region = "us-east-1"
regions = ["us-west-2"]
transport = "ebs-direct"
name = "os-{release}-{arch}"

[[image]]
file = "x.raw"
arch = "x86_64"

[[account]]
name = "main"
id = "111122223333"

[[account]]
name = "second"
id = "222233334444"
role_arn = "arn:aws:iam::222233334444:role/p"

[[account]]
name = "gov"
id = "333344445555"
profile = "gov"
source_region = "us-gov-west-1"
regions = ["us-gov-east-1"]
"#;
        manifest::parse(std::path::Path::new("/r/release.toml"), text)
            .unwrap()
            .accounts
    }

    #[test]
    fn only_picks_accounts_by_name_or_partition() {
        let all = decls();
        let names = |only: &[Only]| -> Vec<String> {
            choose(&all, only)
                .unwrap()
                .into_iter()
                .map(|a| a.name)
                .collect()
        };
        assert_eq!(names(&[]), ["main", "second", "gov"]);
        assert_eq!(names(&[Only::Partition("aws-us-gov".into())]), ["gov"]);
        assert_eq!(
            names(&[Only::Account("second".into()), Only::Account("main".into())]),
            ["main", "second"]
        );
        let err = choose(&all, &[Only::Partition("aws-cn".into())]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!("account=x".parse::<Only>().is_ok());
        assert!("region=x".parse::<Only>().is_err() && "account=".parse::<Only>().is_err());
    }

    #[test]
    fn an_account_takes_its_own_credentials_and_region_over_the_flags() {
        let all = decls();
        let flags = AwsSettings {
            region: Some("eu-west-1".into()),
            access_id: Some("AKIAFLAGS".into()),
            secret_key: Some(crate::aws::config::Secret::new("s".into())),
            role_arn: Some("arn:aws:iam::999999999999:role/flags".into()),
            external_id: Some("flags-id".into()),
            ..AwsSettings::default()
        };
        let main = settings_for(&flags, &all[0]);
        assert_eq!(main.region.as_deref(), Some("us-east-1"));
        assert_eq!(main.role_arn, flags.role_arn);
        let second = settings_for(&flags, &all[1]);
        assert_eq!(second.role_arn, all[1].role_arn);
        // The flags' External ID is the flags' role's, never another's.
        assert_eq!(second.external_id, None);
        assert_eq!(second.access_id.as_deref(), Some("AKIAFLAGS"));
        let gov = settings_for(&flags, &all[2]);
        assert_eq!(gov.region.as_deref(), Some("us-gov-west-1"));
        assert_eq!(gov.profile.as_deref(), Some("gov"));
        assert!(gov.access_id.is_none() && gov.secret_key.is_none() && gov.role_arn.is_none());
    }

    #[test]
    fn the_run_ends_as_its_worst_account() {
        let incomplete = |best_effort_only| Error::Incomplete {
            detail: "regions".into(),
            best_effort_only,
        };
        let code = |results: Vec<(&str, Result<()>)>| {
            let results = results
                .into_iter()
                .map(|(n, r)| (n.to_string(), r))
                .collect();
            combine(results, "").err().map_or(0, |e| e.exit_code())
        };
        assert_eq!(code(vec![("a", Ok(())), ("b", Ok(()))]), 0);
        assert_eq!(code(vec![("a", Err(incomplete(true))), ("b", Ok(()))]), 77);
        assert_eq!(
            code(vec![
                ("a", Err(incomplete(true))),
                ("b", Err(incomplete(true)))
            ]),
            77
        );
        assert_eq!(
            code(vec![
                ("a", Err(Error::Invalid("bad".into()))),
                ("b", Err(incomplete(false)))
            ]),
            1
        );
        assert_eq!(
            code(vec![
                ("a", Err(incomplete(true))),
                ("b", Err(Error::Interrupted))
            ]),
            130
        );
        let one = combine(vec![("gov".into(), Err(incomplete(false)))], "").unwrap_err();
        assert!(one.to_string().starts_with("account gov: "), "{one}");
    }

    #[test]
    fn lines_say_their_account() {
        let json = in_account("gov", Output::Json(serde_json::json!({"image": "x"})));
        assert_eq!(
            json,
            Output::Json(serde_json::json!({"image": "x", "account": "gov"}))
        );
        let summary = in_account("gov", Output::Summary("done".into()));
        assert_eq!(summary, Output::Summary("account gov: done".into()));
    }
}
