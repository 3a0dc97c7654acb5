//! `release watch RECORD…`: a live release checked against its record, for cron or CI.
//! Read-only: it names each drift as a JSON line and exits 1 when there is any. It reports
//! AMIs or snapshots deleted or disabled by hand, public AMIs (or their snapshots) that went
//! private, deprecation times that have passed or come within `--warn-within`, SSM
//! parameters that no longer hold their region's AMI, regions enabled since a release made
//! to `regions = "all"` where it is missing, and regions whose "Public AMIs" quota has no
//! room for the next release. `--fix` makes the public ones public again, as
//! `ensure-public` does; every other drift is for a person (or `release apply`) to settle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aws_sdk_ec2::types::{Filter, Image as Ec2Image, ImageState};
use serde::Serialize;

use crate::aws::ami;
use crate::aws::calls::{Call, Op};
use crate::aws::permissions::{self, MadePublic, NotPublic};
use crate::aws::regions::{fan_out, list_regions, RegionFilter};
use crate::aws::ssm;
use crate::commands::driver::{Account, Command, Emit, Output};
use crate::commands::release::record::Record;
use crate::commands::release::{parse_time, show_time};
use crate::commands::REGION_CONCURRENCY;
use crate::error::{aws, Error, Result};

/// `imgpub release watch RECORD…`.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub records: Vec<PathBuf>,
    /// Make AMIs (and snapshots) that went private public again.
    pub fix: bool,
    /// A deprecation this close is reported.
    pub warn_within: Duration,
}

/// A kind of drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Drift {
    /// The AMI is gone (deregistered by hand).
    Deleted,
    /// The AMI is disabled: not launchable.
    Disabled,
    /// The AMI's snapshot is gone.
    SnapshotDeleted,
    /// A public release's AMI, or its snapshot, is not public.
    Private,
    /// The AMI is not shared with an account the release was shared with.
    Unshared,
    /// Its deprecation time has passed.
    Deprecated,
    /// Its deprecation time is within `--warn-within`.
    DeprecationSoon,
    /// A parameter holds another AMI, or is gone.
    Parameter,
    /// A region enabled for the account that the release (`regions = "all"`) is not in.
    MissingRegion,
    /// The region's "Public AMIs" quota has no room for the next release.
    Quota,
    /// The region could not be read.
    Unreadable,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Finding {
    pub release: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub region: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ami: Option<String>,
    pub drift: Drift,
    pub detail: String,
    /// What `--fix` would make public (a private AMI or snapshot).
    #[serde(skip)]
    pub fix: Option<MadePublic>,
}

#[derive(Debug)]
pub(crate) struct Plan {
    pub records: Vec<Record>,
    pub regions: Vec<String>,
    /// AMIs looked at.
    pub checked: usize,
    pub findings: Vec<Finding>,
}

/// One record's AMI in one region, to look at.
struct Placed<'a> {
    record: &'a Record,
    image: &'a str,
    ami: &'a str,
    snapshot: &'a str,
}

/// What one region holds of the records.
async fn look(
    ctx: &crate::aws::config::AwsContext,
    region: &str,
    placed: &[Placed<'_>],
    warn_within: Duration,
) -> Result<Vec<Finding>> {
    let ec2 = ctx.in_region(region).ec2();
    let mut findings = vec![];
    let ids: Vec<String> = placed.iter().map(|p| p.ami.to_string()).collect();
    let snaps: Vec<String> = placed.iter().map(|p| p.snapshot.to_string()).collect();
    // By filter, not by id: an id that is gone is an answer, not an error.
    let images = ec2
        .describe_images()
        .owners("self")
        .include_deprecated(true)
        .include_disabled(true)
        .filters(
            Filter::builder()
                .name("image-id")
                .set_values(Some(ids))
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DescribeImages,
                format!("reading the release's AMIs in {region}"),
                e,
            )
        })?;
    let images: BTreeMap<&str, &Ec2Image> = images
        .images()
        .iter()
        .filter_map(|i| Some((i.image_id()?, i)))
        .collect();
    let snapshots = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            Filter::builder()
                .name("snapshot-id")
                .set_values(Some(snaps))
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::Ec2DescribeSnapshots,
                format!("reading the release's snapshots in {region}"),
                e,
            )
        })?;
    let snapshots: BTreeSet<&str> = snapshots
        .snapshots()
        .iter()
        .filter_map(|s| s.snapshot_id())
        .collect();
    let now = SystemTime::now();
    for p in placed {
        let finding = |drift: Drift, detail: String| Finding {
            release: p.record.release.clone(),
            image: Some(p.image.to_string()),
            region: region.to_string(),
            ami: Some(p.ami.to_string()),
            drift,
            detail,
            fix: None,
        };
        let Some(image) = images.get(p.ami) else {
            findings.push(finding(Drift::Deleted, format!("{} is gone", p.ami)));
            continue;
        };
        if image.state() == Some(&ImageState::Disabled) {
            findings.push(finding(Drift::Disabled, format!("{} is disabled", p.ami)));
        }
        let snapshot_there = snapshots.contains(p.snapshot);
        if !snapshot_there {
            findings.push(finding(
                Drift::SnapshotDeleted,
                format!("its snapshot {} is gone", p.snapshot),
            ));
        }
        let available = image.state() == Some(&ImageState::Available);
        let shared_with = p.record.shared_with.as_deref().unwrap_or_default();
        let (orgs, ous) = (
            &p.record.shared_with_organizations,
            &p.record.shared_with_organizational_units,
        );
        if available && !(shared_with.is_empty() && orgs.is_empty() && ous.is_empty()) {
            let now = ami::read_launch(&ec2, p.ami).await?;
            let lacking: Vec<&str> = shared_with
                .iter()
                .filter(|u| !now.launch_users.contains(u))
                .chain(orgs.iter().filter(|arn| !now.organizations.contains(arn)))
                .chain(
                    ous.iter()
                        .filter(|arn| !now.organizational_units.contains(arn)),
                )
                .map(String::as_str)
                .collect();
            if !lacking.is_empty() {
                findings.push(finding(
                    Drift::Unshared,
                    format!("{} is not shared with {}", p.ami, lacking.join(", ")),
                ));
            }
        }
        if p.record.public == Some(true) && available {
            let mut not = vec![];
            if image.public() != Some(true) {
                not.push(NotPublic::Image);
            }
            if snapshot_there && !permissions::snapshot_is_public(&ec2, p.snapshot).await? {
                not.push(NotPublic::Snapshot);
            }
            if !not.is_empty() {
                let what = match not.as_slice() {
                    [NotPublic::Snapshot] => format!("its snapshot {} is private", p.snapshot),
                    [NotPublic::Image] => format!("{} is private", p.ami),
                    _ => format!("{} and its snapshot {} are private", p.ami, p.snapshot),
                };
                findings.push(Finding {
                    fix: Some(MadePublic {
                        region: region.to_string(),
                        image: p.ami.to_string(),
                        name: p.image.to_string(),
                        snapshot: Some(p.snapshot.to_string()),
                        fixed: not,
                    }),
                    ..finding(Drift::Private, what)
                });
            }
        }
        let deprecation = image.deprecation_time().and_then(parse_time);
        match deprecation {
            Some(at) if at <= now => findings.push(finding(
                Drift::Deprecated,
                format!("{} was deprecated at {}", p.ami, show_time(at)),
            )),
            Some(at) if now.checked_add(warn_within).is_none_or(|soon| at <= soon) => findings
                .push(finding(
                    Drift::DeprecationSoon,
                    format!("{} is deprecated at {}", p.ami, show_time(at)),
                )),
            _ => {}
        }
    }
    let ssm = ctx.in_region(region).ssm();
    let mut records: Vec<&Record> = vec![];
    for p in placed {
        if !records.iter().any(|r| std::ptr::eq(*r, p.record)) {
            records.push(p.record);
        }
    }
    for record in records {
        for param in record.images.iter().flat_map(|i| &i.parameters) {
            if param.region != region {
                continue;
            }
            let detail = match ssm::read(&ssm, &param.parameter, region).await? {
                Some((value, _)) if value == param.ami => continue,
                Some((value, _)) => {
                    format!("{} holds {value}, not {}", param.parameter, param.ami)
                }
                None => format!("{} is gone (it held {})", param.parameter, param.ami),
            };
            findings.push(Finding {
                release: record.release.clone(),
                image: None,
                region: region.to_string(),
                ami: Some(param.ami.clone()),
                drift: Drift::Parameter,
                detail,
                fix: None,
            });
        }
    }
    // The next release of a public stream here makes as many AMIs public as its record has
    // images; the public record with the most images here names it.
    let public = placed
        .iter()
        .filter(|p| p.record.public == Some(true))
        .max_by_key(|p| p.record.images.len());
    if let Some(next) = public {
        let quotas = ctx.in_region(region).service_quotas();
        let adding = next.record.images.len();
        match ami::check_public_ami_quota(&ec2, &quotas, region, adding).await {
            Ok(()) => {}
            Err(Error::Setup(why)) => findings.push(Finding {
                release: next.record.release.clone(),
                image: None,
                region: region.to_string(),
                ami: None,
                drift: Drift::Quota,
                detail: why,
                fix: None,
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(findings)
}

/// Reads every record's AMIs, snapshots and parameters where they were published.
pub(crate) async fn plan(a: &Account, opts: &WatchOptions, records: Vec<Record>) -> Result<Plan> {
    Record::all_of(&opts.records, &records, &a.identity.account, "watch")?;
    let mut per_region: BTreeMap<String, Vec<Placed>> = BTreeMap::new();
    for record in &records {
        for image in &record.images {
            for (region, c) in &image.regions {
                per_region.entry(region.clone()).or_default().push(Placed {
                    record,
                    image: &image.name,
                    ami: &c.ami,
                    snapshot: &c.snapshot,
                });
            }
        }
    }
    for record in &records {
        if record.public.is_none() || record.all_regions.is_none() {
            crate::aws::unchecked::note(format!(
                "the sharing and regions of release {} (its record predates them: `imgpub release verify MANIFEST` writes it anew)",
                record.release
            ));
        }
    }
    let checked = per_region.values().map(Vec::len).sum();
    let regions: Vec<String> = per_region.keys().cloned().collect();
    let mut findings = vec![];
    let failed = fan_out(
        regions.clone(),
        REGION_CONCURRENCY,
        |region| {
            let placed = &per_region[&region];
            let ctx = &a.ctx;
            let warn = opts.warn_within;
            async move { look(ctx, &region, placed, warn).await }
        },
        |_, mut found| findings.append(&mut found),
    )
    .await;
    // A region that cannot be read is drift too: nothing there is known to be as recorded.
    for (region, err) in failed {
        for record in per_region[&region]
            .iter()
            .map(|p| p.record.release.clone())
            .collect::<BTreeSet<_>>()
        {
            findings.push(Finding {
                release: record,
                image: None,
                region: region.clone(),
                ami: None,
                drift: Drift::Unreadable,
                detail: format!("{region} could not be read: {err}"),
                fix: None,
            });
        }
    }
    // Regions enabled since a release made to every region.
    let everywhere = |r: &&Record| r.all_regions == Some(true);
    if records.iter().any(|r| everywhere(&r)) {
        let enabled = list_regions(&a.ctx.ec2(), RegionFilter::Enabled).await?;
        for record in records.iter().filter(everywhere) {
            for image in &record.images {
                for region in enabled.iter().filter(|r| !image.regions.contains_key(*r)) {
                    findings.push(Finding {
                        release: record.release.clone(),
                        image: Some(image.name.clone()),
                        region: region.clone(),
                        ami: None,
                        drift: Drift::MissingRegion,
                        detail: format!(
                            "{region} is enabled for the account and {} is not there; `imgpub release apply` with the release's manifest copies it",
                            image.name
                        ),
                        fix: None,
                    });
                }
            }
        }
    }
    findings
        .sort_by(|a, b| (&a.release, &a.region, a.drift).cmp(&(&b.release, &b.region, b.drift)));
    Ok(Plan {
        records,
        regions,
        checked,
        findings,
    })
}

/// Every operation `release watch` may make.
pub(crate) const MAY_CALL: &[Op] = &[
    Op::Ec2DescribeRegions,
    Op::Ec2DescribeImages,
    Op::Ec2DescribeImageAttribute,
    Op::Ec2DescribeSnapshots,
    Op::Ec2DescribeSnapshotAttribute,
    Op::SsmGetParameter,
    Op::ServiceQuotasGetServiceQuota,
    Op::Ec2ModifyImageAttribute,
    Op::Ec2ModifySnapshotAttribute,
    Op::IamSimulatePrincipalPolicy,
];

/// One line: a drift, and whether `--fix` put it right.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    finding: &'a Finding,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    fixed: bool,
}

impl Command for WatchOptions {
    type Connection = Account;
    type Local = Vec<Record>;
    type Plan = Plan;

    fn validate(&self) -> Result<Vec<Record>> {
        Record::read_all(&self.records)
    }

    fn region(&self, records: &Vec<Record>) -> Option<String> {
        records.first().map(|r| r.source_region.clone())
    }

    async fn plan(&self, a: &Account, records: Vec<Record>) -> Result<Plan> {
        plan(a, self, records).await
    }

    /// With `--fix`: the AMIs and snapshots it makes public again.
    fn check(&self, _: &Account, plan: &Plan) -> Vec<Call> {
        match self.fix {
            true => crate::commands::ensure_public::calls(
                plan.findings.iter().filter_map(|f| f.fix.as_ref()),
            ),
            false => vec![],
        }
    }

    fn policy(&self, _: &Account, plan: &Plan, _: &[Call]) -> Option<String> {
        let mut line =
            crate::commands::needs::fix_line(crate::commands::needs::For::Watch, None, None);
        if plan
            .records
            .iter()
            .any(|r| r.images.iter().any(|i| !i.parameters.is_empty()))
        {
            line.push_str(" --ssm-prefix /PATH/");
        }
        if self.fix {
            line.push_str(" --public");
        }
        line.push_str(&format!(" --regions {}", plan.regions.join(",")));
        Some(line)
    }

    async fn apply(&self, a: &Account, plan: &Plan, emit: Emit<'_>) -> Result<()> {
        let mut fixed: Vec<bool> = vec![false; plan.findings.len()];
        let mut failures = vec![];
        if self.fix {
            for (i, f) in plan.findings.iter().enumerate() {
                if let Some(made) = &f.fix {
                    let ec2 = a.ctx.in_region(&f.region).ec2();
                    match permissions::make_public(&ec2, made).await {
                        Ok(_) => fixed[i] = true,
                        Err(e) => failures.push(format!("{} in {}: {e}", made.image, f.region)),
                    }
                }
            }
        }
        for (finding, fixed) in plan.findings.iter().zip(&fixed) {
            emit(Output::json(&Line {
                finding,
                fixed: *fixed,
            }));
        }
        let left: Vec<&Finding> = plan
            .findings
            .iter()
            .zip(&fixed)
            .filter(|(_, fixed)| !**fixed)
            .map(|(f, _)| f)
            .collect();
        let releases: Vec<&str> = plan.records.iter().map(|r| r.release.as_str()).collect();
        let repaired = fixed.iter().filter(|f| **f).count();
        emit(Output::Summary(match left.len() {
            0 if repaired == 0 => format!(
                "release watch: no drift: {} AMIs of {} in {} regions are as their records say",
                plan.checked,
                releases.join(", "),
                plan.regions.len()
            ),
            0 => format!(
                "release watch: made {repaired} AMIs public again; nothing else drifted in {} regions",
                plan.regions.len()
            ),
            n => format!(
                "release watch: {n} drifts in {} of {}{}",
                releases.join(", "),
                match plan.regions.len() {
                    1 => "1 region".to_string(),
                    r => format!("{r} regions"),
                },
                match repaired {
                    0 => String::new(),
                    r => format!("; made {r} AMIs public again"),
                }
            ),
        }));
        if left.is_empty() && failures.is_empty() {
            return Ok(());
        }
        let each: Vec<String> = left
            .iter()
            .map(|f| format!("{} in {}: {}", f.release, f.region, f.detail))
            .chain(failures)
            .collect();
        Err(Error::Incomplete {
            detail: format!(
                "drift: {}; `--fix` makes private AMIs public again, `imgpub release apply` restores the rest",
                each.join("; ")
            ),
            best_effort_only: false,
        })
    }
}
