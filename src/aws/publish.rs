//! The `upload` pipeline: inspect → S3 multipart upload → ImportSnapshot → delete the object
//! → RegisterImage → tags and permissions. Also its stages alone (`import-snapshot`,
//! `register-ami`). Everything that can be checked is checked before the first side effect,
//! and every stage first looks for what an earlier run finished.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::aws::ami::{self, FoundImage, RegisterRequest, Sharing};
use crate::aws::import::{self, ImportRequest};
use crate::aws::multipart::{self, UploadRequest};
use crate::aws::s3;
use crate::error::{aws, Error, Result};
use crate::image::{self, ImageInfo};

/// Which part of the pipeline a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Everything: `imgpub aws upload`.
    Upload,
    /// Up to the snapshot: `imgpub aws import-snapshot`.
    Import,
    /// From a snapshot: `imgpub aws register-ami`.
    Register,
}

/// The ore-compatible flags of `upload`, as plain values.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub file: Option<PathBuf>,
    /// `s3://bucket/prefix`.
    pub bucket: Option<String>,
    pub name: Option<String>,
    pub ami_name: Option<String>,
    pub ami_description: Option<String>,
    pub arch: String,
    pub x86_boot_mode: String,
    pub tpm_support: Option<String>,
    pub imdsv2_only: bool,
    pub volume_type: String,
    pub disk_size_gib: Option<u32>,
    pub disk_size_inspect: bool,
    pub delete_object: bool,
    pub force: bool,
    pub source_object: Option<String>,
    pub source_snapshot: Option<String>,
    pub object_format: Option<String>,
    pub public: bool,
    pub grant_user: Vec<String>,
    pub grant_user_snapshot: Vec<String>,
    pub tags: Vec<String>,
    pub billing_product_codes: Vec<String>,
    pub role_name: String,
    pub part_size: Option<u64>,
    pub upload_concurrency: usize,
    pub import_timeout: Duration,
}

/// What `upload` prints, with ore's field names.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PublishResult {
    #[serde(rename = "HVM", skip_serializing_if = "Option::is_none")]
    pub ami_id: Option<String>,
    #[serde(rename = "SnapshotID")]
    pub snapshot_id: String,
    #[serde(rename = "S3Object", skip_serializing_if = "Option::is_none")]
    pub s3_object: Option<String>,
}

/// Where the snapshot comes from.
#[derive(Debug, Clone)]
enum Source {
    File {
        path: PathBuf,
        info: ImageInfo,
        format: &'static str,
    },
    Object {
        format: String,
    },
    Snapshot(String),
}

/// The validated request: everything the AWS stages need, checked locally.
#[derive(Debug, Clone)]
pub struct Plan {
    name: String,
    source: Source,
    bucket: Option<String>,
    key: Option<String>,
    register: Option<RegisterRequest>,
    tags: Vec<(String, String)>,
    sharing: Sharing,
    opts: PublishOptions,
}

/// `s3://bucket/prefix` → (bucket, prefix without slashes at the ends).
pub fn parse_s3_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        Error::Invalid(format!("{url:?} is not an S3 URL; use s3://BUCKET/PREFIX"))
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket = s3::parse_bucket_name(bucket)?;
    Ok((bucket, prefix.trim_matches('/').to_string()))
}

fn parse_tags(tags: &[String]) -> Result<Vec<(String, String)>> {
    tags.iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::Invalid(format!("--tags {t:?} is not key=value"))),
        })
        .collect()
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Checks everything that can be checked without AWS, including the image itself.
/// Blocking file reads: call from `spawn_blocking`.
pub fn plan(stage: Stage, opts: PublishOptions) -> Result<Plan> {
    let tags = parse_tags(&opts.tags)?;
    ami::validate_account_ids("--grant-user", &opts.grant_user)?;
    ami::validate_account_ids("--grant-user-snapshot", &opts.grant_user_snapshot)?;
    let requested_format = opts.object_format.as_deref();

    let source = match (&opts.source_snapshot, &opts.source_object, &opts.file) {
        (Some(snap), _, _) => {
            if !snap.starts_with("snap-") {
                return Err(Error::Invalid(format!("{snap:?} is not a snapshot id (snap-…)")));
            }
            Source::Snapshot(snap.clone())
        }
        _ if stage == Stage::Register => {
            return Err(Error::Invalid(
                "register-ami needs --source-snapshot snap-… (the snapshot to register)".into(),
            ))
        }
        (None, Some(_), _) => Source::Object {
            format: requested_format.unwrap_or("VMDK").to_ascii_uppercase(),
        },
        (None, None, Some(path)) => {
            let info = image::inspect(path)?;
            let format = image::import_format(path, &info, requested_format)?;
            Source::File {
                path: path.clone(),
                info,
                format,
            }
        }
        (None, None, None) => {
            return Err(Error::Invalid(
                "nothing to publish: pass --file IMAGE (or --source-object s3://… or --source-snapshot snap-…)".into(),
            ))
        }
    };

    let (bucket, key) = match (&source, &opts.source_object, &opts.bucket) {
        (Source::Snapshot(_), _, _) => (None, None),
        (_, Some(url), _) => {
            let (bucket, key) = parse_s3_url(url)?;
            if key.is_empty() {
                return Err(Error::Invalid(format!(
                    "--source-object {url:?} names no object; use s3://BUCKET/KEY"
                )));
            }
            (Some(bucket), Some(key))
        }
        (Source::File { path, .. }, None, Some(url)) => {
            let (bucket, prefix) = parse_s3_url(url)?;
            let name = opts.name.clone().unwrap_or_else(|| file_name(path));
            let key = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            (Some(bucket), Some(key))
        }
        (_, None, None) => {
            return Err(Error::Invalid(
                "--bucket s3://BUCKET/PREFIX is needed to upload the image (create one with `imgpub aws initialize`)".into(),
            ))
        }
        (Source::Object { .. }, None, Some(_)) => unreachable!("an object source has a URL"),
    };

    let name = match (&opts.name, &source) {
        (Some(n), _) => n.clone(),
        (None, Source::File { path, .. }) => file_name(path),
        (None, Source::Object { .. }) => key
            .as_deref()
            .and_then(|k| k.rsplit('/').next())
            .unwrap_or_default()
            .to_string(),
        (None, Source::Snapshot(_)) => opts
            .ami_name
            .clone()
            .ok_or_else(|| Error::Invalid("pass --name or --ami-name for the AMI".into()))?,
    };

    let register = if stage == Stage::Import {
        None
    } else {
        let ami_name = opts.ami_name.clone().unwrap_or_else(|| name.clone());
        ami::validate_ami_name(&ami_name)?;
        let arch = ami::parse_arch(&opts.arch)?;
        let (boot_mode, tpm_v2, volume_type) = ami::register_settings(
            &arch,
            &opts.x86_boot_mode,
            opts.tpm_support.as_deref(),
            &opts.volume_type,
        )?;
        let volume_size_gib = match (opts.disk_size_gib, opts.disk_size_inspect, &source) {
            (Some(gib), _, _) => Some(gib as i32),
            (None, true, Source::File { info, .. }) => info.virtual_size_gib().map(|g| g as i32),
            (None, true, _) => {
                return Err(Error::Invalid(
                    "--disk-size-inspect needs --file; pass --disk-size-gib instead".into(),
                ))
            }
            (None, false, _) => None,
        };
        Some(RegisterRequest {
            name: ami_name,
            description: opts.ami_description.clone(),
            arch,
            boot_mode,
            imdsv2_only: opts.imdsv2_only,
            tpm_v2,
            volume_type,
            volume_size_gib,
            billing_products: opts.billing_product_codes.clone(),
            tags: tags.clone(),
            snapshot_id: String::new(),
        })
    };

    Ok(Plan {
        name,
        source,
        bucket,
        key,
        register,
        sharing: Sharing {
            public: opts.public,
            launch_users: opts.grant_user.clone(),
            snapshot_users: opts.grant_user_snapshot.clone(),
            ..Sharing::default()
        },
        tags,
        opts,
    })
}

impl Plan {
    fn s3_url(&self) -> Option<String> {
        Some(format!(
            "s3://{}/{}",
            self.bucket.as_ref()?,
            self.key.as_ref()?
        ))
    }
}

/// The clients the pipeline needs, ready to use.
pub struct Clients<'a> {
    pub s3: &'a aws_sdk_s3::Client,
    /// S3 is reached over TLS (so uploads need not sign the payload).
    pub s3_over_tls: bool,
    pub ec2: &'a aws_sdk_ec2::Client,
    pub iam: &'a aws_sdk_iam::Client,
    pub region: &'a str,
}

/// Read-only checks before the first side effect: the bucket exists in this region, the
/// source object exists, the import role exists.
async fn preflight_import(c: &Clients<'_>, plan: &Plan) -> Result<()> {
    let bucket = plan.bucket.as_deref().unwrap_or_default();
    match s3::bucket_region(c.s3, bucket).await? {
        None => {
            return Err(Error::Invalid(format!(
                "bucket {bucket} does not exist; create it with `imgpub aws initialize --region {} --bucket {bucket}`",
                c.region
            )))
        }
        Some(r) if r != c.region => {
            return Err(Error::Invalid(format!(
                "bucket {bucket} is in {r}, but ImportSnapshot reads only from buckets in its own region ({}); use --region {r} or a bucket in {}",
                c.region, c.region
            )))
        }
        Some(_) => {}
    }
    if let Source::Object { .. } = plan.source {
        let key = plan.key.as_deref().unwrap_or_default();
        if let Err(e) = c.s3.head_object().bucket(bucket).key(key).send().await {
            if e.as_service_error().is_some_and(|s| s.is_not_found()) {
                return Err(Error::Invalid(format!(
                    "--source-object s3://{bucket}/{key} does not exist"
                )));
            }
            return Err(aws(format!("checking s3://{bucket}/{key}"), e));
        }
    }
    let role = &plan.opts.role_name;
    match c.iam.get_role().role_name(role).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => Err(Error::Invalid(format!(
            "the IAM role {role} that VM Import/Export needs does not exist; create it with `imgpub aws initialize --bucket {bucket}`"
        ))),
        Err(e) => {
            // Publishing credentials often may not read IAM; ImportSnapshot will tell.
            tracing::debug!("could not check IAM role {role}: {}", aws("", e));
            Ok(())
        }
    }
}

/// Runs the plan's stages; see the module docs.
pub async fn publish(c: &Clients<'_>, plan: &Plan) -> Result<PublishResult> {
    let force = plan.opts.force;

    // What earlier runs left: the AMI by name, the snapshot by name.
    let existing_image = match &plan.register {
        Some(reg) => ami::find_image_by_name(c.ec2, &reg.name).await?,
        None => None,
    };
    let mut snapshot = match &plan.source {
        Source::Snapshot(id) => Some(id.clone()),
        _ if force => None,
        _ => import::find_snapshot_by_name(c.ec2, &plan.name).await?,
    };
    // Read-only checks first, so that even --force changes nothing when the run cannot go on.
    let imported_now = snapshot.is_none();
    if imported_now {
        preflight_import(c, plan).await?;
    }
    if let (Some(found), Some(reg)) = (&existing_image, &plan.register) {
        check_existing_image(c, found, &reg.name, snapshot.as_deref(), force).await?;
    }
    if imported_now {
        snapshot = Some(import_stage(c, plan).await?);
    }
    let snapshot = snapshot.unwrap_or_default();
    if let Source::Snapshot(_) = plan.source {
        import::tag(c.ec2, &snapshot, &plan.tags).await?;
    }

    // The image is in a snapshot now: the object has served its purpose.
    // (A rerun also makes sure of it: an earlier run may have stopped before deleting.)
    if plan.opts.delete_object && matches!(plan.source, Source::File { .. }) {
        delete_object(c, plan, imported_now).await?;
    }

    let ami_id = match &plan.register {
        None => None,
        Some(reg) => Some(register_stage(c, plan, reg, &snapshot, existing_image.as_ref()).await?),
    };
    ami::share(
        c.ec2,
        ami_id.as_deref(),
        Some(&snapshot),
        &plan.sharing,
        ami::Change::Grant,
    )
    .await?;
    Ok(PublishResult {
        ami_id,
        snapshot_id: snapshot,
        s3_object: plan.s3_url(),
    })
}

/// An AMI with the name exists: fine if it is this snapshot's; replaced under `--force`;
/// otherwise a clear error before anything is uploaded.
async fn check_existing_image(
    c: &Clients<'_>,
    found: &FoundImage,
    name: &str,
    snapshot: Option<&str>,
    force: bool,
) -> Result<()> {
    if snapshot.is_some() && found.root_snapshot.as_deref() == snapshot {
        return Ok(());
    }
    if force {
        tracing::warn!("--force: replacing AMI {} named {name}", found.image_id);
        ami::delete_image(
            c.ec2,
            &found.image_id,
            &ami::SnapshotChoice::FromImage,
            false,
        )
        .await?;
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "AMI name {name} is already used by {} (snapshot {}), which is not this image; pass --force to replace it, or choose another --ami-name",
        found.image_id,
        found.root_snapshot.as_deref().unwrap_or("unknown")
    )))
}

/// Uploads (when the source is a file) and imports; returns the snapshot id.
async fn import_stage(c: &Clients<'_>, plan: &Plan) -> Result<String> {
    let bucket = plan.bucket.clone().unwrap_or_default();
    let key = plan.key.clone().unwrap_or_default();
    let (format, etag) = match &plan.source {
        Source::File { path, format, .. } => {
            let report = multipart::upload_file(
                c.s3,
                &UploadRequest {
                    path: path.clone(),
                    bucket: bucket.clone(),
                    key: key.clone(),
                    part_size: plan.opts.part_size,
                    concurrency: plan.opts.upload_concurrency,
                    force: plan.opts.force,
                    over_tls: c.s3_over_tls,
                },
            )
            .await?;
            (format.to_string(), report.etag)
        }
        Source::Object { format } => {
            let head =
                c.s3.head_object()
                    .bucket(&bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| aws(format!("checking s3://{bucket}/{key}"), e))?;
            (
                format.clone(),
                head.e_tag()
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_string(),
            )
        }
        Source::Snapshot(id) => return Ok(id.clone()),
    };
    let mut request = ImportRequest {
        name: plan.name.clone(),
        bucket,
        key,
        format,
        role_name: plan.opts.role_name.clone(),
        object_etag: etag,
        timeout: plan.opts.import_timeout,
    };
    if plan.opts.force {
        // A new import even for content that was imported before.
        request.object_etag.push_str(&format!(
            "-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
    }
    match import::import_snapshot(c.ec2, &request, &plan.tags, plan.opts.force).await {
        Ok(outcome) => Ok(outcome.snapshot_id),
        Err(err) => {
            // AWS refused the image itself: the object is of no use to a rerun.
            let client_error =
                err.code() == Some("ImportFailed") && err.to_string().contains("ClientError");
            if client_error && plan.opts.delete_object && matches!(plan.source, Source::File { .. })
            {
                delete_object(c, plan, true).await?;
            }
            Err(err)
        }
    }
}

/// Deletes the uploaded object (deleting a missing one is not an error in S3).
async fn delete_object(c: &Clients<'_>, plan: &Plan, say_so: bool) -> Result<()> {
    let (Some(bucket), Some(key)) = (&plan.bucket, &plan.key) else {
        return Ok(());
    };
    c.s3.delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| aws(format!("deleting s3://{bucket}/{key}"), e))?;
    if say_so {
        tracing::info!("deleted s3://{bucket}/{key}");
    }
    Ok(())
}

async fn register_stage(
    c: &Clients<'_>,
    plan: &Plan,
    reg: &RegisterRequest,
    snapshot: &str,
    existing: Option<&FoundImage>,
) -> Result<String> {
    if let Some(found) = existing {
        if found.root_snapshot.as_deref() == Some(snapshot) {
            tracing::info!(
                "AMI {} ({}) already exists for {snapshot}; reusing it",
                found.image_id,
                reg.name
            );
            import::tag(c.ec2, &found.image_id, &plan.tags).await?;
            return Ok(found.image_id.clone());
        }
    }
    let mut request = reg.clone();
    request.snapshot_id = snapshot.to_string();
    match ami::register_image(c.ec2, &request).await {
        Ok(id) => Ok(id),
        Err(err) if err.code() == Some("InvalidAMIName.Duplicate") => {
            // Registered meanwhile (a concurrent or earlier, interrupted run).
            match ami::find_image_by_name(c.ec2, &reg.name).await? {
                Some(found) if found.root_snapshot.as_deref() == Some(snapshot) => {
                    Ok(found.image_id)
                }
                _ => Err(err),
            }
        }
        Err(err) => Err(err),
    }
}
