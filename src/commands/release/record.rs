//! The release record: what a release is in AWS, written by `release apply` and
//! `release verify` as JSON: every image's AMI and snapshot per region, the regions it is
//! missing from, its SSM parameters, coreos-assembler's `amis` list, and an Allowed AMIs
//! criterion for consumers.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::aws::copy::Copied;
use crate::commands::release::manifest::Manifest;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Record {
    pub release: String,
    /// The manifest's `[[account]]` name, when it declares accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub account: String,
    pub partition: String,
    pub source_region: String,
    /// The manifest's `regions = "all"`: every region enabled for the account, those
    /// enabled later included (`release watch` names them). `None` in a record written
    /// before it was kept.
    #[serde(default)]
    pub all_regions: Option<bool>,
    /// Launch permission `all` on every AMI (and its snapshot).
    #[serde(default)]
    pub public: Option<bool>,
    /// The accounts every AMI and snapshot is shared with.
    #[serde(default)]
    pub shared_with: Option<Vec<String>>,
    /// The organizations every AMI is shared with (ARNs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with_organizations: Vec<String>,
    /// The organizational units every AMI is shared with (ARNs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with_organizational_units: Vec<String>,
    pub images: Vec<ImageRecord>,
    /// Paste into the consumer account's Allowed AMIs settings
    /// (`ec2 replace-image-criteria-in-allowed-images-settings`): AMIs of this account whose
    /// names are this release's.
    pub allowed_amis: AllowedAmis,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ImageRecord {
    pub name: String,
    pub arch: String,
    /// Region → AMI and snapshot.
    pub regions: BTreeMap<String, Copied>,
    /// Declared regions without the AMI (a failed or best-effort region, or drift).
    pub missing: Vec<String>,
    pub parameters: Vec<Parameter>,
    /// coreos-assembler's meta.json `amis` shape.
    pub amis: Vec<CosaAmi>,
    /// How long apply took to make it, for the next release's plan to estimate from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
}

/// How long an image's steps took, as apply measured them (AWS publishes no rate for
/// imports or copies, so the plan estimates from what an earlier release took).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Timings {
    /// At most what the image's snapshot stores, when known: what the times scale with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_bytes: Option<u64>,
    /// From the start of a whole upload to the AMI available (a resumed one is not timed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_ms: Option<u64>,
    /// Region → from the CopyImage request (a wait for a free copy slot included) to the
    /// copy available, for each copy made.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub copy_ms: BTreeMap<String, u64>,
    /// When these were last measured (ISO 8601): the newest release's figures are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Parameter {
    pub region: String,
    pub parameter: String,
    pub ami: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct CosaAmi {
    pub name: String,
    pub hvm: String,
    pub snapshot: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AllowedAmis {
    pub image_criteria: Vec<ImageCriterion>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ImageCriterion {
    pub image_providers: Vec<String>,
    pub image_names: Vec<String>,
}

/// One image's state in one region, as apply left it or verify found it.
#[derive(Debug, Clone)]
pub(crate) struct Placed {
    pub image: usize,
    pub region: String,
    pub copy: Option<Copied>,
    pub parameters: Vec<Parameter>,
    /// How long this run took to make it, in milliseconds; `None` when it made nothing
    /// there, or resumed it.
    pub millis: Option<u64>,
}

impl Record {
    /// The record of `placed`, every declared image × region (`regions`: the source first).
    pub(crate) fn of(
        manifest: &Manifest,
        account: &str,
        partition: &str,
        regions: &[String],
        placed: &[Placed],
    ) -> Record {
        let images = manifest
            .images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                let mine = || placed.iter().filter(move |p| p.image == i);
                let found: BTreeMap<String, Copied> = mine()
                    .filter_map(|p| Some((p.region.clone(), p.copy.clone()?)))
                    .collect();
                let missing = regions
                    .iter()
                    .filter(|r| !found.contains_key(*r))
                    .cloned()
                    .collect();
                let mut parameters: Vec<Parameter> =
                    mine().flat_map(|p| p.parameters.clone()).collect();
                parameters
                    .sort_by(|a, b| (&a.region, &a.parameter).cmp(&(&b.region, &b.parameter)));
                let amis = found
                    .iter()
                    .map(|(region, c)| CosaAmi {
                        name: region.clone(),
                        hvm: c.ami.clone(),
                        snapshot: c.snapshot.clone(),
                    })
                    .collect();
                let mut timings = Timings::default();
                for p in mine() {
                    let Some(millis) = p.millis else { continue };
                    // The source region's is the upload's, unless this account copies.
                    match p.region == manifest.source_region && manifest.copy_from().is_none() {
                        true => timings.upload_ms = Some(millis),
                        false => {
                            timings.copy_ms.insert(p.region.clone(), millis);
                        }
                    }
                }
                let timed = timings.upload_ms.is_some() || !timings.copy_ms.is_empty();
                if timed {
                    timings.measured_at = Some(super::show_time(std::time::SystemTime::now()));
                }
                ImageRecord {
                    name: image.name.clone(),
                    arch: crate::names::Named::name(image.arch).to_string(),
                    regions: found,
                    missing,
                    parameters,
                    amis,
                    timings: timed.then_some(timings),
                }
            })
            .collect();
        Record {
            release: manifest.release.clone(),
            name: manifest.part.as_ref().map(|d| d.name.clone()),
            account: account.to_string(),
            partition: partition.to_string(),
            source_region: manifest.source_region.clone(),
            all_regions: Some(manifest.targets == crate::commands::release::manifest::Targets::All),
            public: Some(manifest.sharing.public),
            shared_with: Some(manifest.sharing.launch_users.clone()),
            shared_with_organizations: manifest.sharing.organizations.clone(),
            shared_with_organizational_units: manifest.sharing.organizational_units.clone(),
            images,
            allowed_amis: AllowedAmis {
                image_criteria: vec![ImageCriterion {
                    image_providers: vec![account.to_string()],
                    image_names: manifest.images.iter().map(|i| i.name.clone()).collect(),
                }],
            },
        }
    }

    /// What the record says of `manifest`'s images, as apply keeps it.
    pub(crate) fn placed(&self, manifest: &Manifest) -> Vec<Placed> {
        let mut out = vec![];
        for (i, image) in manifest.images.iter().enumerate() {
            let Some(held) = self.images.iter().find(|r| r.name == image.name) else {
                continue;
            };
            for (region, copy) in &held.regions {
                out.push(Placed {
                    image: i,
                    region: region.clone(),
                    copy: Some(copy.clone()),
                    parameters: held
                        .parameters
                        .iter()
                        .filter(|p| &p.region == region)
                        .cloned()
                        .collect(),
                    millis: None,
                });
            }
        }
        out
    }

    /// Reads a record `release apply` or `release verify` wrote.
    /// The records a command over release records (`watch`, `restore`) is given: at least
    /// one, each read.
    pub(crate) fn read_all(paths: &[std::path::PathBuf]) -> Result<Vec<Record>> {
        if paths.is_empty() {
            return Err(Error::Invalid(
                "name at least one release record (RECORD.json, as `release apply` or `release verify` writes it)".into(),
            ));
        }
        paths.iter().map(|p| Record::read(p)).collect()
    }

    /// Refuses `records` (read from `paths`) of another account than `account`, the
    /// credentials' own: a command over records (`verb`: watch, restore) acts as one account.
    pub(crate) fn all_of(
        paths: &[std::path::PathBuf],
        records: &[Record],
        account: &str,
        verb: &str,
    ) -> Result<()> {
        match paths.iter().zip(records).find(|(_, r)| r.account != account) {
            Some((path, record)) => Err(Error::Invalid(format!(
                "{} is a release of account {}, and these credentials are of account {account}: {verb} it with that account's",
                path.display(),
                record.account,
            ))),
            None => Ok(()),
        }
    }

    pub(crate) fn read(path: &Path) -> Result<Record> {
        let here = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Invalid(format!(
                "cannot read the release record {here}: {e}; `imgpub release verify MANIFEST` writes one"
            ))
        })?;
        // A merged record holds several accounts' parts; these commands act as one account.
        if let Ok(merged) = serde_json::from_str::<Merged>(&text) {
            let parts: Vec<String> = merged
                .accounts
                .iter()
                .map(|r| r.name.clone().unwrap_or_else(|| r.account.clone()))
                .collect();
            return Err(Error::Invalid(format!(
                "{here} is the merged record of accounts {}; pass each account's own record ({}.NAME.record.json beside it) with that account's credentials",
                parts.join(", "),
                merged.release
            )));
        }
        serde_json::from_str(&text).map_err(|e| {
            Error::Invalid(format!(
                "{here} is not a release record ({e}); `imgpub release verify MANIFEST` writes one"
            ))
        })
    }

    /// Writes the record to `path` whole. The timings an earlier write of this release's
    /// record measured are kept where this one measured none (a rerun that made nothing,
    /// `verify`).
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        let mut record = self.clone();
        let earlier = path
            .exists()
            .then(|| Record::read(path).ok())
            .flatten()
            .filter(|r| r.release == self.release && r.account == self.account);
        for image in &mut record.images {
            let before = earlier
                .as_ref()
                .and_then(|r| r.images.iter().find(|i| i.name == image.name))
                .and_then(|i| i.timings.clone());
            image.timings = match (before, image.timings.take()) {
                (None, now) => now,
                (Some(before), None) => Some(before),
                (Some(before), Some(mut now)) => {
                    now.upload_ms = now.upload_ms.or(before.upload_ms);
                    now.data_bytes = now.data_bytes.or(before.data_bytes);
                    for (region, millis) in before.copy_ms {
                        now.copy_ms.entry(region).or_insert(millis);
                    }
                    Some(now)
                }
            };
        }
        write_json(&record, path)
    }

    /// The record with each timed image's size (`sizes`, by image in the manifest's order).
    pub(crate) fn sized(mut self, manifest: &Manifest, sizes: &[Option<u64>]) -> Record {
        for (image, size) in manifest.images.iter().zip(sizes) {
            let held = self.images.iter_mut().find(|i| i.name == image.name);
            if let Some(timings) = held.and_then(|i| i.timings.as_mut()) {
                timings.data_bytes = *size;
            }
        }
        self
    }

    /// The record beside `dir` of an earlier release of `manifest`'s stream (its images
    /// named by the same template) of the account part `part` (its `[[account]]`), account
    /// and partition, whose
    /// timings were measured last: what the plan estimates the time from. Unreadable files
    /// (and merged records) are passed over.
    pub(crate) fn earlier(
        dir: &Path,
        manifest: &Manifest,
        part: Option<&str>,
        account: &str,
        partition: &str,
    ) -> Option<Record> {
        let mut found: Vec<(String, Record)> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let name = entry.file_name();
                if !name.to_string_lossy().ends_with(".record.json") {
                    return None;
                }
                let record = Record::read(&entry.path()).ok()?;
                let same_stream = manifest.images.iter().all(|image| {
                    let name = manifest
                        .name_template
                        .replace("{release}", &record.release)
                        .replace("{arch}", crate::names::Named::name(image.arch));
                    record.images.iter().any(|i| i.name == name)
                });
                // ISO 8601 times in one form order as text.
                let measured = record
                    .images
                    .iter()
                    .filter_map(|i| i.timings.as_ref()?.measured_at.clone())
                    .max()?;
                let keep = record.release != manifest.release
                    && record.name.as_deref() == part
                    && record.account == account
                    && record.partition == partition
                    && same_stream;
                keep.then_some((measured, record))
            })
            .collect();
        found.sort_by(|(a, _), (b, _)| a.cmp(b));
        found.pop().map(|(_, r)| r)
    }

    /// Image `i`'s timings in this (an earlier release's) record.
    pub(crate) fn timings_of(&self, manifest: &Manifest, i: usize) -> Option<&Timings> {
        let name = manifest
            .name_template
            .replace("{release}", &self.release)
            .replace("{arch}", crate::names::Named::name(manifest.images[i].arch));
        self.images
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.timings.as_ref())
    }
}

/// The record of a release in several accounts: each account's part (as its own record
/// file holds it), the accounts with no part yet, and one Allowed AMIs criterion naming
/// every publishing account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Merged {
    pub release: String,
    pub accounts: Vec<Record>,
    /// Declared accounts without a record yet (not applied, or `--only` left them to
    /// another runner).
    pub missing_accounts: Vec<String>,
    pub allowed_amis: AllowedAmis,
}

impl Merged {
    /// The parts found, in the manifest's order of `names`.
    pub(crate) fn of(release: &str, names: &[String], found: Vec<Option<Record>>) -> Merged {
        let missing_accounts = names
            .iter()
            .zip(&found)
            .filter(|(_, r)| r.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        let accounts: Vec<Record> = found.into_iter().flatten().collect();
        let mut providers: Vec<String> = accounts.iter().map(|r| r.account.clone()).collect();
        providers.sort();
        providers.dedup();
        let mut names: Vec<String> = accounts
            .iter()
            .flat_map(|r| r.images.iter().map(|i| i.name.clone()))
            .collect();
        names.sort();
        names.dedup();
        Merged {
            release: release.to_string(),
            accounts,
            missing_accounts,
            allowed_amis: AllowedAmis {
                image_criteria: vec![ImageCriterion {
                    image_providers: providers,
                    image_names: names,
                }],
            },
        }
    }

    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        write_json(self, path)
    }
}

/// Writes `value` to `path` whole: to a temporary file beside it, then renamed, so a kill
/// never leaves half a record.
fn write_json<T: Serialize>(value: &T, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Setup(format!("cannot write the release record as JSON: {e}")))?;
    // Its own temporary file: runners sharing the directory (`--only`) never write into
    // another's.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("json.{}-{n}.partial", std::process::id()));
    let context = || format!("writing the release record {}", path.display());
    std::fs::write(&tmp, text + "\n").map_err(|e| Error::io(context(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(context(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_over_records_refuses_another_accounts() {
        let of = |account: &str| -> Record {
            serde_json::from_value(serde_json::json!({
                "release": "1", "account": account, "partition": "aws",
                "source_region": "us-east-1", "images": [],
                "allowed_amis": {"ImageCriteria": []}
            }))
            .unwrap()
        };
        let paths = ["a.json".into(), "b.json".into()];
        let records = [of("111122223333"), of("222233334444")];
        assert!(Record::all_of(&paths[..1], &records[..1], "111122223333", "watch").is_ok());
        let err = Record::all_of(&paths, &records, "111122223333", "restore").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .starts_with("b.json is a release of account 222233334444")
                && err.to_string().contains("restore it with that account's"),
            "{err}"
        );
    }
}
