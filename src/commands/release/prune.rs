//! `release prune`: the releases of the manifest's stream that its retention policy
//! (`[prune]`) does not keep are removed in stages, each a run of its own and each after a
//! grace period: deprecate, then disable (hidden and not launchable, still restorable with
//! EnableImage), then deregister with the snapshots. Without `--apply` it only says what
//! each AMI is due for and changes nothing.
//!
//! Kept: the newest `keep` releases per architecture, barrier releases, the manifest's own
//! release, a release whose AMI was launched within `keep_launched_within` in any region,
//! and every AMI under deregistration protection. AWS holds the schedule: the deprecation
//! time an AMI carries starts its grace periods, so prune keeps no state of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use aws_sdk_ec2::types::{Image as Ec2Image, ImageState};
use aws_smithy_types::DateTime;
use serde::Serialize;

use crate::aws::ami::{self, Arch};
use crate::aws::calls::{Call, Op, Resource};
use crate::aws::propagation::Age;
use crate::aws::regions::{failure_summary, fan_out};
use crate::aws::usage_reports;
use crate::commands::driver::{Account, Emit, Output};
use crate::commands::release::manifest::{Manifest, Retention};
use crate::commands::release::{parse_time, show_time};
use crate::error::{Error, ErrorKind, Result};
use crate::names::Named;

/// A stage of removal, in the order they come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Stage {
    /// Lift deregistration protection (`protect = true`: the release left support).
    Unprotect,
    Deprecate,
    Disable,
    /// Deregister, and delete the AMI's snapshots.
    Deregister,
}

impl Stage {
    fn done(self) -> &'static str {
        match self {
            Stage::Unprotect => "unprotected",
            Stage::Deprecate => "deprecated",
            Stage::Disable => "disabled",
            Stage::Deregister => "deregistered",
        }
    }
}

/// Why an AMI stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Keep {
    /// The release the manifest declares.
    Current,
    /// Among the newest `keep` of its architecture.
    Newest,
    /// Its release matches a barrier pattern.
    Barrier(String),
    /// An AMI of its release and architecture was launched then.
    Launched(String),
    /// Deregistration protection is on (its value).
    Protected(String),
    /// Not available (a copy in flight, or a failed one): not prune's to touch.
    NotAvailable(String),
    /// An AMI usage report found other accounts using one of its AMIs (`keep_in_use`).
    InUse(String),
}

impl Keep {
    fn why(&self) -> String {
        match self {
            Keep::Current => "the manifest's own release".into(),
            Keep::Newest => "among the newest releases kept".into(),
            Keep::Barrier(p) => format!("a barrier release ({p})"),
            Keep::Launched(at) => format!("launched {at}, within keep_launched_within"),
            Keep::Protected(v) => format!("deregistration protection is on ({v})"),
            Keep::NotAvailable(state) => format!("{state}, not available"),
            Keep::InUse(uses) => format!("in use by other accounts: {uses}"),
        }
    }
}

/// What an AMI is due for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Keep(Keep),
    Due(Stage),
    /// The next stage, and when its grace period ends.
    Wait(Stage, SystemTime),
    /// The stage is due, but who uses the AMI is not known yet (`keep_in_use`: its usage
    /// report is requested or pending).
    Unknown(Stage),
}

/// `keep_in_use`: the usage report an AMI needs before its next stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReportStep {
    /// None recent enough: this run asks for one.
    Request,
    /// Asked for, not yet made.
    Pending(String),
}

/// One AMI of the stream in one region.
#[derive(Debug, Clone)]
pub(crate) struct Ami {
    pub region: String,
    pub id: String,
    pub name: String,
    pub release: String,
    pub arch: Arch,
    pub created: SystemTime,
    pub snapshots: Vec<String>,
    pub verdict: Verdict,
    pub report: Option<ReportStep>,
}

/// A snapshot of a removed release that no AMI maps (a run stopped between deregistering
/// an AMI and deleting its snapshot).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Orphan {
    pub region: String,
    pub snapshot: String,
    pub name: String,
}

#[derive(Debug)]
pub(crate) struct Plan {
    pub manifest: Manifest,
    pub regions: Vec<String>,
    pub amis: Vec<Ami>,
    pub orphans: Vec<Orphan>,
    /// A public stream: the regions whose "Public AMIs" quota has no room for its next
    /// release, each said in words.
    pub quota_near: Vec<String>,
    /// `--apply`: do what is due; otherwise only say it.
    pub apply: bool,
}

/// The manifest names a stream prune can find, and a retention policy (its own `[prune]`
/// or `--policy`'s).
pub(crate) fn validate(manifest: &Manifest) -> Result<Retention> {
    let here = manifest.path.display();
    if manifest.name_template.matches("{release}").count() != 1 {
        return Err(Error::Invalid(format!(
            "release manifest {here}: prune finds every release's AMIs by `name`, so it must hold {{release}} once (it is {:?})",
            manifest.name_template
        )));
    }
    manifest.prune.clone().ok_or_else(|| {
        Error::Invalid(format!(
            "release manifest {here} has no [prune] table: add one (keep, barriers, keep_launched_within, grace), or name a policy file with --policy FILE; docs/lifecycle.md shows both"
        ))
    })
}

/// The text of an AMI's name before and after its release, for `arch`.
fn around(template: &str, arch: Arch) -> (String, String) {
    let filled = template.replace("{arch}", arch.name());
    match filled.split_once("{release}") {
        Some((before, after)) => (before.to_string(), after.to_string()),
        None => (filled, String::new()),
    }
}

/// The release an AMI (or snapshot) named `name` is of, for `arch`.
fn release_of(template: &str, arch: Arch, name: &str) -> Option<String> {
    let (before, after) = around(template, arch);
    let release = name.strip_prefix(&before)?.strip_suffix(&after)?;
    (!release.is_empty()).then(|| release.to_string())
}

/// The architecture as a name tells it: none when `name` has no `{arch}`.
fn arch_in_name(template: &str, arch: Arch) -> &'static str {
    match template.contains("{arch}") {
        true => arch.name(),
        false => "",
    }
}

/// EC2 name filters that match every release's AMIs, of every architecture.
fn patterns(template: &str) -> Vec<String> {
    let mut all: Vec<String> = Arch::NAMES
        .iter()
        .map(|(arch, ..)| {
            let (before, after) = around(template, *arch);
            format!("{before}*{after}")
        })
        .collect();
    all.dedup();
    all
}

/// `name` matches `pattern`, whose `*` is any run of characters and `?` any one.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    go(&p, &n)
}

/// One AMI as DescribeImages shows it, before the verdict.
struct Seen {
    ami: Ami,
    state: Option<ImageState>,
    deprecation: Option<SystemTime>,
    launched: Option<SystemTime>,
    protection: Option<String>,
}

fn seen(template: &str, region: &str, image: &Ec2Image) -> Option<Seen> {
    let arch = Arch::NAMES
        .iter()
        .map(|(a, ..)| *a)
        .find(|a| image.architecture() == Some(&a.ec2()))?;
    let name = image.name()?.to_string();
    let release = release_of(template, arch, &name)?;
    // "enabled-…" while on; what AWS shows once turned off (during a cooldown too) is
    // taken as off whatever follows "disabled".
    let protection = image
        .deregistration_protection()
        .filter(|v| !v.starts_with("disabled"))
        .map(str::to_owned);
    Some(Seen {
        ami: Ami {
            region: region.to_string(),
            id: image.image_id()?.to_string(),
            name,
            release,
            arch,
            created: image.creation_date().and_then(parse_time)?,
            snapshots: ami::snapshots_of(image),
            verdict: Verdict::Keep(Keep::Current),
            report: None,
        },
        state: image.state().cloned(),
        deprecation: image.deprecation_time().and_then(parse_time),
        launched: image.last_launched_time().and_then(parse_time),
        protection,
    })
}

/// A deprecation time this close is taken as set by a stage a moment ago; a stage this
/// close to its time is due (a weekly run a minute early does not wait another week).
const SLACK: Duration = Duration::from_secs(5 * 60);

/// Every AMI's verdict, now.
fn decide(all: Vec<Seen>, m: &Manifest, r: &Retention, now: SystemTime) -> Vec<Ami> {
    // A release's age is its oldest AMI's (the source region's; copies come later).
    let mut born: BTreeMap<(&'static str, String), SystemTime> = BTreeMap::new();
    let mut launched: BTreeMap<(&'static str, String), SystemTime> = BTreeMap::new();
    for s in &all {
        let key = (s.ami.arch.name(), s.ami.release.clone());
        let at = born.entry(key.clone()).or_insert(s.ami.created);
        *at = (*at).min(s.ami.created);
        if let Some(l) = s.launched {
            let last = launched.entry(key).or_insert(l);
            *last = (*last).max(l);
        }
    }
    let mut newest: BTreeSet<(&'static str, String)> = BTreeSet::new();
    for (arch, ..) in Arch::NAMES {
        let mut releases: Vec<(&SystemTime, &String)> = born
            .iter()
            .filter(|((a, _), _)| *a == arch.name())
            .map(|((_, release), at)| (at, release))
            .collect();
        releases.sort_by(|a, b| b.cmp(a));
        for (_, release) in releases.into_iter().take(r.keep) {
            newest.insert((arch.name(), release.clone()));
        }
    }
    let kept = |key: &(&'static str, String)| -> Option<Keep> {
        let release = &key.1;
        if *release == m.release {
            return Some(Keep::Current);
        }
        if newest.contains(key) {
            return Some(Keep::Newest);
        }
        if let Some(p) = r.barriers.iter().find(|p| glob(p, release)) {
            return Some(Keep::Barrier(p.clone()));
        }
        let within = r.keep_launched_within?;
        let last = *launched.get(key)?;
        let recent = now.duration_since(last).map_or(true, |ago| ago <= within);
        recent.then(|| Keep::Launched(show_time(last)))
    };
    all.into_iter()
        .map(|s| {
            let key = (s.ami.arch.name(), s.ami.release.clone());
            let usable = matches!(s.state, Some(ImageState::Available | ImageState::Disabled));
            let verdict = match (&s.protection, &s.state) {
                // In a `protect = true` stream protection is the stream's: a release that
                // left the policy loses it first (a person's too: keep such an AMI with a
                // barrier). Elsewhere protection is a person's, and prune leaves it be.
                (Some(v), _) => match kept(&key) {
                    Some(keep) => Verdict::Keep(keep),
                    None if m.protect && usable => Verdict::Due(Stage::Unprotect),
                    None => Verdict::Keep(Keep::Protected(v.clone())),
                },
                (None, Some(ImageState::Available | ImageState::Disabled)) => match kept(&key) {
                    Some(keep) => Verdict::Keep(keep),
                    None => due(&s, r.grace, now),
                },
                (None, state) => Verdict::Keep(Keep::NotAvailable(
                    state
                        .as_ref()
                        .map_or("in no state", |s| s.as_str())
                        .to_string(),
                )),
            };
            Ami { verdict, ..s.ami }
        })
        .collect()
}

/// The stage an AMI that is not kept is due for. The deprecation time is the clock: the
/// deprecate stage sets it, and the disable stage sets it again as it disables, so each
/// stage comes one grace period after the one before, however long ago the AMI was
/// deprecated (a manifest's `deprecate_in`) and however far apart the runs are.
fn due(s: &Seen, grace: Duration, now: SystemTime) -> Verdict {
    let at = |d: SystemTime| d.checked_add(grace).unwrap_or(d);
    let soon = now + SLACK;
    match (s.state == Some(ImageState::Disabled), s.deprecation) {
        // Disabled by hand, with no time to count from: the clock starts now.
        (true, None) => Verdict::Due(Stage::Deprecate),
        (true, Some(d)) if soon >= at(d) => Verdict::Due(Stage::Deregister),
        (true, Some(d)) => Verdict::Wait(Stage::Deregister, at(d)),
        (false, Some(d)) if d <= soon && soon >= at(d) => Verdict::Due(Stage::Disable),
        (false, Some(d)) if d <= soon => Verdict::Wait(Stage::Disable, at(d)),
        // Not deprecated, or only later (the manifest's deprecate_in): deprecate now.
        (false, _) => Verdict::Due(Stage::Deprecate),
    }
}

/// Reads every region's AMIs of the stream (and leftover snapshots) and decides.
pub(crate) async fn plan(
    a: &Account,
    manifest: Manifest,
    retention: Retention,
    apply: bool,
) -> Result<Plan> {
    let regions = super::regions_of(a, &manifest).await?;
    let patterns = patterns(&manifest.name_template);
    let template = manifest.name_template.as_str();
    let mut seen_all: Vec<Seen> = vec![];
    let mut snapshots: Vec<(String, String, String, Option<DateTime>)> = vec![];
    let failed = fan_out(
        regions.clone(),
        crate::commands::REGION_CONCURRENCY,
        |region| {
            let (ctx, patterns, tags) = (&a.ctx, &patterns, &manifest.tags);
            async move {
                let ec2 = ctx.in_region(&region).ec2();
                let images = ami::images_named_like(&ec2, &region, patterns, tags).await?;
                let snaps = match ami::snapshots_named_like(&ec2, &region, patterns, tags).await {
                    Ok(s) => s,
                    Err(e) if e.kind() == Some(ErrorKind::AccessDenied) => {
                        crate::aws::unchecked::note(
                            "snapshots left by an earlier prune that stopped midway (ec2:DescribeSnapshots)",
                        );
                        vec![]
                    }
                    Err(e) => return Err(e),
                };
                Ok((images, snaps))
            }
        },
        |region, (images, snaps): (Vec<Ec2Image>, _)| {
            seen_all.extend(images.iter().filter_map(|i| seen(template, region, i)));
            snapshots.extend(
                snaps
                    .into_iter()
                    .map(|(id, name, at)| (region.clone(), id, name, at)),
            );
        },
    )
    .await;
    // The newest releases are judged over every region: one unread could hide a launch.
    if !failed.is_empty() {
        let failures: Vec<(String, String)> = failed
            .into_iter()
            .map(|(r, e)| (r, e.to_string()))
            .collect();
        return Err(failure_summary(
            format!(
                "reading the AMIs of release {}'s stream in {} regions (prune decides over all of them at once)",
                manifest.release,
                regions.len()
            ),
            &failures,
        ));
    }
    let now = SystemTime::now();
    let mapped: BTreeSet<(String, String)> = seen_all
        .iter()
        .flat_map(|s| {
            s.ami
                .snapshots
                .iter()
                .map(|id| (s.ami.region.clone(), id.clone()))
        })
        .collect();
    let mut amis = decide(seen_all, &manifest, &retention, now);
    if retention.keep_in_use {
        weigh_usage(a, &mut amis, retention.grace, now).await?;
    }
    // The oldest of the newest releases kept: an upload in flight is newer than all of them.
    let oldest_kept = amis
        .iter()
        .filter(|a| a.verdict == Verdict::Keep(Keep::Newest))
        .map(|a| a.created)
        .min();
    let images = |keep: bool| -> BTreeSet<(&'static str, &str)> {
        amis.iter()
            .filter(|a| matches!(a.verdict, Verdict::Keep(_)) == keep)
            .map(|a| (arch_in_name(template, a.arch), a.release.as_str()))
            .collect()
    };
    let (kept, retiring) = (images(true), images(false));
    // A snapshot of the stream that no AMI maps, of a release's image not kept: one being
    // retired in some region, or older than every release kept as newest (an upload about
    // to register is newer than all of them).
    let orphans = snapshots
        .into_iter()
        .filter(|(region, id, name, started)| {
            let Some((arch, release)) = Arch::NAMES.iter().find_map(|(arch, ..)| {
                Some((
                    arch_in_name(template, *arch),
                    release_of(template, *arch, name)?,
                ))
            }) else {
                return false;
            };
            let image = (arch, release.as_str());
            let older = match (
                started.and_then(|s| SystemTime::try_from(s).ok()),
                oldest_kept,
            ) {
                (Some(s), Some(n)) => s < n,
                _ => false,
            };
            !mapped.contains(&(region.clone(), id.clone()))
                && release != manifest.release
                && !kept.contains(&image)
                && (older || retiring.contains(&image))
        })
        .map(|(region, snapshot, name, _)| Orphan {
            region,
            snapshot,
            name,
        })
        .collect::<Vec<Orphan>>();
    // Mapped by an AMI outside the stream (another name, no tag): not a leftover.
    let mut orphans_left = vec![];
    for o in orphans {
        let ec2 = a.ctx.in_region(&o.region).ec2();
        match ami::images_using_snapshot(&ec2, &o.snapshot)
            .await?
            .as_slice()
        {
            [] => orphans_left.push(o),
            users => tracing::info!(
                "snapshot {} in {} is named as the stream's but {} maps it: left alone",
                o.snapshot,
                o.region,
                users.join(", ")
            ),
        }
    }
    let orphans = orphans_left;
    // A snapshot another AMI maps stays (EC2 would refuse to delete it anyway).
    let mut uses: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for a in &amis {
        for s in &a.snapshots {
            *uses.entry((a.region.as_str(), s.as_str())).or_default() += 1;
        }
    }
    let shared: BTreeSet<(String, String)> = uses
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((r, s), _)| (r.to_string(), s.to_string()))
        .collect();
    for a in &mut amis {
        let region = a.region.clone();
        a.snapshots
            .retain(|s| !shared.contains(&(region.clone(), s.clone())));
    }
    amis.sort_by(|a, b| (b.created, &a.region).cmp(&(a.created, &b.region)));
    let quota_near = match manifest.sharing.public {
        true => quota_near(a, &manifest, &regions, &amis).await?,
        false => vec![],
    };
    Ok(Plan {
        manifest,
        regions,
        amis,
        orphans,
        quota_near,
        apply,
    })
}

/// `keep_in_use`: an image (release × architecture) that another account uses in any
/// region is kept; one whose stage is due moves only once every AMI of it has a report
/// made within a grace period saying nobody else uses it. A report is asked for ahead of
/// a stage, so it is ready when the stage comes. Without permission to read reports, the
/// rule is left out of this run, and the run says so.
async fn weigh_usage(
    a: &Account,
    amis: &mut [Ami],
    grace: Duration,
    now: SystemTime,
) -> Result<()> {
    let asked = |v: &Verdict| {
        matches!(
            v,
            Verdict::Due(Stage::Deprecate | Stage::Disable | Stage::Deregister) | Verdict::Wait(..)
        )
    };
    let mut by_region: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ami in amis.iter().filter(|x| asked(&x.verdict)) {
        by_region
            .entry(ami.region.clone())
            .or_default()
            .push(ami.id.clone());
    }
    let owner = a.identity.account.clone();
    let mut reports: BTreeMap<(String, String), usage_reports::Usage> = BTreeMap::new();
    for (region, ids) in by_region {
        let ec2 = a.ctx.in_region(&region).ec2();
        // Not read, not known: keep_in_use fails the run rather than retire what may be
        // in use (the error names the permission).
        let found = usage_reports::usage(&ec2, &region, &ids, &owner).await?;
        reports.extend(found.into_iter().map(|(id, u)| ((region.clone(), id), u)));
    }
    let none = usage_reports::Usage::default();
    let usage_of = |x: &Ami| {
        reports
            .get(&(x.region.clone(), x.id.clone()))
            .unwrap_or(&none)
    };
    // Good for a stage at `at`: made within a grace period before it.
    let fresh = |u: &usage_reports::Usage, at: SystemTime| {
        u.available
            .as_ref()
            .is_some_and(|r| r.created + grace + SLACK >= at)
    };
    let mut in_use: BTreeMap<(&'static str, String), String> = BTreeMap::new();
    let mut unknown: BTreeSet<(&'static str, String)> = BTreeSet::new();
    for x in amis.iter().filter(|x| asked(&x.verdict)) {
        let key = (x.arch.name(), x.release.clone());
        let u = usage_of(x);
        match &u.available {
            // A use seen by the newest report made, however old (EC2 keeps reports 30
            // days): kept until a newer one says otherwise.
            Some(r) if !r.uses.is_empty() => {
                let who: Vec<String> = r
                    .uses
                    .iter()
                    .map(|u| format!("{} ({} {})", u.account, u.count, u.resource_type))
                    .collect();
                in_use.entry(key).or_insert(format!(
                    "{} in {} (usage report {} of {})",
                    who.join(", "),
                    x.region,
                    r.id,
                    show_time(r.created)
                ));
            }
            _ if matches!(x.verdict, Verdict::Due(_)) && !fresh(u, now) => {
                unknown.insert(key);
            }
            // An AMI of the image not yet due that no report has looked at could be the
            // one in use: its siblings wait for it.
            None if matches!(x.verdict, Verdict::Wait(..)) => {
                unknown.insert(key);
            }
            _ => {}
        }
    }
    for x in amis.iter_mut() {
        let key = (x.arch.name(), x.release.clone());
        if !asked(&x.verdict) {
            continue;
        }
        let u = usage_of(x);
        // Asked for now when none is pending and none will be fresh when its stage comes
        // (for kept ones too, so a use that ends is seen).
        let needs = |at: SystemTime| match (&u.pending, fresh(u, at)) {
            (Some(id), _) => Some(ReportStep::Pending(id.clone())),
            (None, true) => None,
            (None, false) => Some(ReportStep::Request),
        };
        if let Some(uses) = in_use.get(&key) {
            x.verdict = Verdict::Keep(Keep::InUse(uses.clone()));
            x.report = needs(now).filter(|s| *s == ReportStep::Request);
            continue;
        }
        if let Some(reason) = &u.error {
            tracing::info!(
                "the last usage report of {} in {} failed: {reason}",
                x.id,
                x.region
            );
        }
        match x.verdict {
            Verdict::Due(stage) if unknown.contains(&key) => {
                x.verdict = Verdict::Unknown(stage);
                x.report = needs(now);
            }
            // Done now, and the next stage's report asked for with it, so the next run a
            // grace later finds one ready.
            Verdict::Due(Stage::Deprecate | Stage::Disable) => {
                x.report = needs(now + grace).filter(|s| *s == ReportStep::Request);
            }
            Verdict::Wait(_, at) => x.report = needs(at).filter(|s| *s == ReportStep::Request),
            _ => {}
        }
    }
    Ok(())
}

/// A public stream's regions without room in their "Public AMIs" quota for the next
/// release, in words: public AMIs in the Recycle Bin count against it too ("including
/// public AMIs in the Recycle Bin": EC2 User Guide, AMI quotas), and prune's disable stage
/// makes the AMIs it retires private, so that is what frees room.
async fn quota_near(
    a: &Account,
    manifest: &Manifest,
    regions: &[String],
    amis: &[Ami],
) -> Result<Vec<String>> {
    let mut near = vec![];
    for region in regions {
        let ec2 = a.ctx.in_region(region).ec2();
        let quotas = a.ctx.in_region(region).service_quotas();
        let adding = manifest.images.len();
        match ami::check_public_ami_quota(&ec2, &quotas, region, adding).await {
            Ok(()) => {}
            Err(Error::Setup(why)) => {
                let freed = amis
                    .iter()
                    .filter(|x| {
                        x.region == *region
                            && matches!(
                                x.verdict,
                                Verdict::Due(Stage::Disable) | Verdict::Unknown(Stage::Disable)
                            )
                    })
                    .count();
                near.push(format!(
                    "{why}. Public AMIs in the Recycle Bin count against it too; prune's disable stage makes what it retires private ({freed} due now in {region})"
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(near)
}

/// The calls apply makes: each due stage, and each leftover snapshot deleted.
pub(crate) fn check(plan: &Plan) -> Vec<Call> {
    // Without --apply nothing is changed: a read-only credential may plan.
    if !plan.apply {
        return vec![];
    }
    let mut calls = vec![];
    for ami in &plan.amis {
        let image = || vec![Resource::Image(Some(ami.id.clone()))];
        match ami.verdict {
            Verdict::Due(Stage::Unprotect) => calls.push(Call::new(
                Op::Ec2DisableImageDeregistrationProtection,
                &ami.region,
                image(),
            )),
            Verdict::Due(Stage::Deprecate) => calls.push(Call::new(
                Op::Ec2EnableImageDeprecation,
                &ami.region,
                image(),
            )),
            Verdict::Due(Stage::Disable) => {
                calls.push(Call::new(Op::Ec2DisableImage, &ami.region, image()))
            }
            Verdict::Due(Stage::Deregister) => {
                calls.push(Call::new(Op::Ec2DeregisterImage, &ami.region, image()));
                for s in &ami.snapshots {
                    let snapshot = vec![Resource::Snapshot(Some(s.clone()))];
                    calls.push(Call::new(Op::Ec2DeleteSnapshot, &ami.region, snapshot));
                }
            }
            _ => {}
        }
    }
    for o in &plan.orphans {
        let snapshot = vec![Resource::Snapshot(Some(o.snapshot.clone()))];
        calls.push(Call::new(Op::Ec2DeleteSnapshot, &o.region, snapshot));
    }
    for ami in plan
        .amis
        .iter()
        .filter(|a| a.report == Some(ReportStep::Request))
    {
        let image = vec![Resource::Image(Some(ami.id.clone()))];
        calls.push(Call::new(Op::Ec2CreateImageUsageReport, &ami.region, image));
    }
    calls
}

/// Every operation `release prune` may make.
pub(crate) const MAY_CALL: &[Op] = &[
    Op::Ec2DescribeRegions,
    Op::Ec2DescribeImages,
    Op::Ec2DescribeSnapshots,
    Op::Ec2EnableImageDeprecation,
    Op::Ec2DisableImage,
    Op::Ec2DeregisterImage,
    Op::Ec2DeleteSnapshot,
    // A stream with `protect = true` (granted with `policy --protect` only).
    Op::Ec2DisableImageDeregistrationProtection,
    // A public stream's quota headroom.
    Op::ServiceQuotasGetServiceQuota,
    // `keep_in_use`.
    Op::Ec2DescribeImageUsageReports,
    Op::Ec2DescribeImageUsageReportEntries,
    Op::Ec2CreateImageUsageReport,
    Op::IamSimulatePrincipalPolicy,
];

/// `imgpub aws policy --for prune` for the regions pruned.
pub(crate) fn policy_line(plan: &Plan) -> String {
    format!(
        "{}{} --regions {}",
        crate::commands::needs::fix_line(crate::commands::needs::For::Prune, None, None),
        if plan.manifest.protect {
            " --protect"
        } else {
            ""
        },
        plan.regions.join(",")
    )
}

/// One AMI's line.
#[derive(Debug, Serialize)]
struct Line<'a> {
    release: &'a str,
    arch: &'static str,
    region: &'a str,
    ami: &'a str,
    name: &'a str,
    /// `keep`, `wait`, or the stage: `unprotect`, `deprecate`, `disable`, `deregister`.
    action: &'static str,
    /// `kept`, `waiting`, `planned` (without --apply), `done` or `failed`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<String>,
    /// When the next stage comes (`wait`).
    #[serde(skip_serializing_if = "Option::is_none")]
    next_at: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    snapshots: &'a [String],
    /// `keep_in_use`: the usage report asked for by this run, or pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_report: Option<String>,
}

/// `requested`: the report this run asked for (`None`: not asked, as without --apply).
fn line<'a>(a: &'a Ami, status_due: &'static str, requested: Option<&'a str>) -> Line<'a> {
    let (action, status, why, next_at) = match &a.verdict {
        Verdict::Keep(k) => ("keep", "kept", Some(k.why()), None),
        Verdict::Wait(stage, at) => (
            "wait",
            "waiting",
            Some(format!("{:?} due after the grace period", stage).to_lowercase()),
            Some(show_time(*at)),
        ),
        Verdict::Due(Stage::Unprotect) => ("unprotect", status_due, None, None),
        Verdict::Due(Stage::Deprecate) => ("deprecate", status_due, None, None),
        Verdict::Due(Stage::Disable) => ("disable", status_due, None, None),
        Verdict::Due(Stage::Deregister) => ("deregister", status_due, None, None),
        Verdict::Unknown(stage) => (
            "wait",
            "waiting",
            Some(
                format!("{stage:?} due once an AMI usage report says no other account uses it")
                    .to_lowercase(),
            ),
            None,
        ),
    };
    let removes = matches!(a.verdict, Verdict::Due(Stage::Deregister));
    Line {
        release: &a.release,
        arch: a.arch.name(),
        region: &a.region,
        ami: &a.id,
        name: &a.name,
        action,
        status,
        why,
        next_at,
        snapshots: if removes { &a.snapshots } else { &[] },
        usage_report: match &a.report {
            None => None,
            Some(ReportStep::Pending(id)) => Some(format!("{id} (pending)")),
            Some(ReportStep::Request) => Some(requested.unwrap_or("to request").to_string()),
        },
    }
}

/// The next whole minute at least a minute away: EnableImageDeprecation takes no past
/// time, and rounds seconds to the minute.
fn next_minute(now: SystemTime) -> DateTime {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DateTime::from_secs(((secs / 60) + 2) as i64 * 60)
}

/// Does one AMI's stage.
async fn act(ec2: &aws_sdk_ec2::Client, a: &Ami, stage: Stage) -> Result<()> {
    match stage {
        Stage::Unprotect => ami::set_protection(ec2, &a.id, false).await,
        Stage::Deprecate => {
            ami::enable_deprecation(ec2, &a.id, next_minute(SystemTime::now()), Age::Known).await
        }
        Stage::Disable => {
            // The deprecation time marks the disable: the deregister stage counts from it.
            let now = next_minute(SystemTime::now());
            ami::enable_deprecation(ec2, &a.id, now, Age::Known).await?;
            ami::disable_image(ec2, &a.id).await
        }
        Stage::Deregister => {
            ami::deregister_image(ec2, &a.id, None, true).await?;
            // A run stopped here leaves snapshots no AMI maps: the next finds them.
            for s in &a.snapshots {
                let users = ami::images_using_snapshot(ec2, s).await?;
                if !users.is_empty() {
                    tracing::info!("snapshot {s} stays: {} maps it", users.join(", "));
                    continue;
                }
                ami::delete_snapshot(ec2, s, true).await?;
            }
            Ok(())
        }
    }
}

/// Without `--apply`, says what each AMI is due for; with it, does each due stage, region
/// by region, and goes on past one that fails (the error names every one left).
pub(crate) async fn apply(a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
    let count = |stage: Stage| {
        plan.amis
            .iter()
            .filter(|a| a.verdict == Verdict::Due(stage))
            .count()
    };
    let kept = plan
        .amis
        .iter()
        .filter(|a| matches!(a.verdict, Verdict::Keep(_)))
        .count();
    let waiting = plan
        .amis
        .iter()
        .filter(|a| matches!(a.verdict, Verdict::Wait(..) | Verdict::Unknown(_)))
        .count();
    let due = [
        Stage::Unprotect,
        Stage::Deprecate,
        Stage::Disable,
        Stage::Deregister,
    ]
    .map(|s| (s, count(s)));
    let stream = &plan.manifest.name_template;
    let regions = plan.regions.len();
    for near in &plan.quota_near {
        tracing::warn!("{near}");
    }
    if !plan.apply {
        plan.amis
            .iter()
            .for_each(|a| emit(Output::json(&line(a, "planned", None))));
        plan.orphans.iter().for_each(|o| {
            emit(Output::json(&serde_json::json!({
                "region": o.region, "snapshot": o.snapshot, "name": o.name,
                "action": "delete-snapshot", "status": "planned",
            })))
        });
        let todo: Vec<String> = due
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{s:?} {n}").to_lowercase())
            .collect();
        emit(Output::Summary(match (todo.is_empty(), plan.orphans.len()) {
            (true, 0) => format!(
                "release prune: nothing is due for {stream} in {regions} regions: {kept} AMIs kept, {waiting} waiting for a grace period; nothing was changed"
            ),
            (_, orphans) => format!(
                "release prune: due for {stream} in {regions} regions: {} AMIs, {orphans} leftover snapshots to delete; {kept} kept, {waiting} waiting; nothing was changed: run again with --apply to do it",
                if todo.is_empty() { "no".to_string() } else { todo.join(", ") }
            ),
        }));
        return Ok(());
    }
    let mut done: Vec<(&Ami, Stage)> = vec![];
    let mut deleted: Vec<&Orphan> = vec![];
    let mut requested: BTreeMap<(&str, &str), String> = BTreeMap::new();
    let mut failures: Vec<(String, String)> = vec![];
    let busy: BTreeSet<&String> = plan
        .amis
        .iter()
        .filter(|a| matches!(a.verdict, Verdict::Due(_)) || a.report == Some(ReportStep::Request))
        .map(|a| &a.region)
        .chain(plan.orphans.iter().map(|o| &o.region))
        .collect();
    let busy: Vec<String> = busy.into_iter().cloned().collect();
    let failed = fan_out(
        busy,
        crate::commands::REGION_CONCURRENCY,
        |region| async move {
            let ec2 = a.ctx.in_region(&region).ec2();
            let mut outcomes: Vec<(&Ami, Stage, Result<()>)> = vec![];
            for ami in plan.amis.iter().filter(|x| x.region == region) {
                if let Verdict::Due(stage) = ami.verdict {
                    outcomes.push((ami, stage, act(&ec2, ami, stage).await));
                }
            }
            let mut gone = vec![];
            for o in plan.orphans.iter().filter(|o| o.region == region) {
                gone.push((o, ami::delete_snapshot(&ec2, &o.snapshot, true).await));
            }
            let mut reports = vec![];
            for ami in plan.amis.iter().filter(|x| x.region == region) {
                if ami.report == Some(ReportStep::Request) {
                    let asked = usage_reports::request(&ec2, &region, &ami.id).await;
                    reports.push((ami, asked));
                }
            }
            Ok((outcomes, gone, reports))
        },
        |region, (outcomes, gone, reports)| {
            for (ami, asked) in reports {
                match asked {
                    Ok(id) => {
                        let id = id.unwrap_or_else(|| "requested".into());
                        requested.insert((ami.region.as_str(), ami.id.as_str()), id);
                    }
                    Err(e) => failures.push((format!("{region} {}", ami.id), e.to_string())),
                }
            }
            for (ami, stage, outcome) in outcomes {
                match outcome {
                    Ok(()) => done.push((ami, stage)),
                    Err(e) => failures.push((format!("{region} {}", ami.id), e.to_string())),
                }
            }
            for (o, outcome) in gone {
                match outcome {
                    Ok(_) => deleted.push(o),
                    Err(e) => failures.push((format!("{region} {}", o.snapshot), e.to_string())),
                }
            }
        },
    )
    .await;
    failures.extend(failed.into_iter().map(|(r, e)| (r, e.to_string())));
    for ami in &plan.amis {
        let did = done.iter().any(|(d, _)| std::ptr::eq(*d, ami));
        let report = requested
            .get(&(ami.region.as_str(), ami.id.as_str()))
            .map(String::as_str);
        emit(Output::json(&line(
            ami,
            if did { "done" } else { "failed" },
            report,
        )));
    }
    for o in &deleted {
        emit(Output::json(&serde_json::json!({
            "region": o.region, "snapshot": o.snapshot, "name": o.name,
            "action": "delete-snapshot", "status": "done",
        })));
    }
    let did: Vec<String> = [
        Stage::Unprotect,
        Stage::Deprecate,
        Stage::Disable,
        Stage::Deregister,
    ]
    .iter()
    .map(|s| {
        let n = done.iter().filter(|(_, d)| d == s).count();
        format!("{} {n}", s.done())
    })
    .collect();
    let reports = match requested.len() {
        0 => String::new(),
        n => format!("; asked for {n} AMI usage reports (keep_in_use)"),
    };
    emit(Output::Summary(format!(
        "release prune: {stream} in {regions} regions: {} AMIs, deleted {} leftover snapshots; {kept} kept, {waiting} waiting for a grace period or a usage report{reports}",
        did.join(", "),
        deleted.len()
    )));
    match failures.is_empty() {
        true => Ok(()),
        false => Err(failure_summary(
            format!("pruning {stream} in {regions} regions"),
            &failures,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_shells_do() {
        assert!(glob("*.0.0", "39.0.0"));
        assert!(!glob("*.0.0", "39.0.1"));
        assert!(glob("r0?", "r03"));
        assert!(!glob("r0?", "r103"));
        assert!(glob("*", ""));
    }

    #[test]
    fn a_release_is_read_from_the_name() {
        let t = "os-{release}-{arch}";
        assert_eq!(
            release_of(t, Arch::X86_64, "os-1.2-x86_64").as_deref(),
            Some("1.2")
        );
        assert_eq!(release_of(t, Arch::Arm64, "os-1.2-x86_64"), None);
        assert_eq!(release_of(t, Arch::X86_64, "os--x86_64"), None);
        assert_eq!(patterns(t), vec!["os-*-x86_64", "os-*-arm64"]);
        assert_eq!(patterns("os-{release}"), vec!["os-*"]);
    }

    #[test]
    fn stages_follow_the_deprecation_time() {
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let grace = 7 * day;
        let s = |state: ImageState, deprecation: Option<SystemTime>| Seen {
            ami: Ami {
                region: "r".into(),
                id: "ami-1".into(),
                name: "n".into(),
                release: "1".into(),
                arch: Arch::X86_64,
                created: now,
                snapshots: vec![],
                verdict: Verdict::Keep(Keep::Current),
                report: None,
            },
            state: Some(state),
            deprecation,
            launched: None,
            protection: None,
        };
        let a = ImageState::Available;
        let d = ImageState::Disabled;
        let due_now = |state: &ImageState, at| due(&s(state.clone(), at), grace, now);
        assert_eq!(due_now(&a, None), Verdict::Due(Stage::Deprecate));
        // The manifest's deprecation, months ahead, is brought forward.
        assert_eq!(
            due_now(&a, Some(now + 90 * day)),
            Verdict::Due(Stage::Deprecate)
        );
        let soon = now + Duration::from_secs(90);
        assert_eq!(
            due_now(&a, Some(soon)),
            Verdict::Wait(Stage::Disable, soon + grace)
        );
        assert_eq!(
            due_now(&a, Some(now - 8 * day)),
            Verdict::Due(Stage::Disable)
        );
        // A week to the minute, run a minute early: due.
        let week = now - grace + Duration::from_secs(60);
        assert_eq!(due_now(&a, Some(week)), Verdict::Due(Stage::Disable));
        // Disabled a moment ago (the stage set the time): the deregister waits a grace.
        assert_eq!(
            due_now(&d, Some(soon)),
            Verdict::Wait(Stage::Deregister, soon + grace)
        );
        assert_eq!(
            due_now(&d, Some(now - 8 * day)),
            Verdict::Due(Stage::Deregister)
        );
        // Disabled by hand without a deprecation: the clock starts.
        assert_eq!(due_now(&d, None), Verdict::Due(Stage::Deprecate));
    }
}
