//! The `imgpub` binary: parse flags, set up logging, run one library call, print its JSON.
//! Exit codes: 0 done, 1 failed, 2 bad usage or input (or a command not built yet).

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use imgpub::aws::ami::{self, delete_image, Change, Sharing, SnapshotChoice};
use imgpub::aws::config::{self, AwsContext, AwsSettings, Identity};
use imgpub::aws::copy;
use imgpub::aws::initialize::{initialize, InitializeOptions};
use imgpub::aws::multipart::{self, UploadRequest};
use imgpub::aws::publish::{self, Clients, PublishOptions, Stage};
use imgpub::aws::regions::{list_regions, RegionFilter};
use imgpub::Error;

use cli::{
    AwsFlags, AwsSubcommand, Cli, CopyRegionsArgs, LogLevel, PermissionArgs, TopCommand,
    UploadArgs, UploadObjectArgs,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.effective_log_level());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, so CI logs and wrappers show the whole reason.
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

fn exit_code(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<Error>() {
        Some(Error::Invalid(_) | Error::NotImplemented(_)) => 2,
        Some(Error::Interrupted) => 130,
        _ => 1,
    }
}

/// Logs go to stderr. Our own crate logs at the chosen level; the SDK and HTTP crates at most
/// at `debug` even under TRACE, because their trace output carries request and response
/// bodies, and an AssumeRole response body holds a secret key.
fn init_logging(level: LogLevel) {
    let (ours, theirs) = match level {
        LogLevel::Critical | LogLevel::Error => ("error", "error"),
        LogLevel::Warning => ("warn", "warn"),
        LogLevel::Notice | LogLevel::Info => ("info", "warn"),
        LogLevel::Debug => ("debug", "info"),
        LogLevel::Trace => ("trace", "debug"),
    };
    let filter = tracing_subscriber::EnvFilter::new(format!("{theirs},imgpub={ours}"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn settings(flags: &AwsFlags) -> AwsSettings {
    AwsSettings {
        region: flags.region.clone(),
        profile: flags.profile.clone(),
        credentials_file: flags.credentials_file.clone(),
        endpoint_url: flags.endpoint_url.clone(),
        role_arn: flags.role_arn.clone(),
        external_id: flags.external_id.clone(),
    }
}

/// Loads the configuration and runs the identity preflight every AWS command starts with.
async fn connect(flags: &AwsFlags) -> anyhow::Result<(AwsContext, Identity)> {
    let ctx = config::load(&settings(flags)).await?;
    let identity = ctx.verify_identity().await?;
    tracing::info!(
        "using account {} as {} in {}",
        identity.account,
        identity.arn,
        ctx.region
    );
    Ok((ctx, identity))
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let TopCommand::Aws(aws) = cli.command;
    let not_yet = |name: &str| Err(Error::NotImplemented(format!("`imgpub aws {name}`")).into());
    match aws.command {
        AwsSubcommand::Initialize(args) => {
            let (ctx, identity) = connect(&aws.aws).await?;
            let opts = InitializeOptions {
                bucket: args.bucket,
                role_name: args.role_name,
                export_bucket: args.export_bucket,
                kms_key: args.kms_key,
                license_manager: args.license_manager,
                service_principal: args.service_principal,
            };
            let report = initialize(&ctx.s3(), &ctx.iam(), &identity, &ctx.region, &opts).await?;
            if report.changed {
                tracing::info!(
                    "created: [{}], repaired: [{}]",
                    report.created.join(", "),
                    report.repaired.join(", ")
                );
            } else {
                tracing::info!(
                    "nothing to change: bucket {} and role {} are already fine",
                    report.bucket,
                    report.role
                );
            }
            print_json(&report)
        }
        AwsSubcommand::Upload(args) => publish_command(Stage::Upload, &aws.aws, *args).await,
        AwsSubcommand::ImportSnapshot(args) => {
            publish_command(Stage::Import, &aws.aws, *args).await
        }
        AwsSubcommand::RegisterAmi(args) => publish_command(Stage::Register, &aws.aws, *args).await,
        AwsSubcommand::UploadObject(args) => upload_object_command(&aws.aws, args).await,
        AwsSubcommand::CopyRegions(args) => copy_command(&aws.aws, args).await,
        AwsSubcommand::ListRegions(args) => {
            let (ctx, _) = connect(&aws.aws).await?;
            let filter = match (args.all, args.disabled) {
                (true, _) => RegionFilter::All,
                (false, true) => RegionFilter::Disabled,
                (false, false) => RegionFilter::Enabled,
            };
            for region in list_regions(&ctx.ec2(), filter).await? {
                println!("{region}");
            }
            Ok(())
        }
        AwsSubcommand::DeleteImage(args) => {
            if !args.ami.starts_with("ami-") {
                return Err(Error::Invalid(format!(
                    "--ami {:?} is not an AMI id (ami-…)",
                    args.ami
                ))
                .into());
            }
            let snapshot = match args.snapshot.as_deref() {
                None => SnapshotChoice::None,
                Some("detectFromAMI") => SnapshotChoice::FromImage,
                Some(id) if id.starts_with("snap-") => SnapshotChoice::Id(id.to_string()),
                Some(other) => {
                    return Err(Error::Invalid(format!(
                        "--snapshot {other:?} is neither a snapshot id (snap-…) nor detectFromAMI"
                    ))
                    .into())
                }
            };
            let (ctx, _) = connect(&aws.aws).await?;
            let deleted =
                delete_image(&ctx.ec2(), &args.ami, &snapshot, args.allow_missing).await?;
            print_json(&deleted)
        }
        AwsSubcommand::Grant(args) => permissions_command(&aws.aws, args, Change::Grant).await,
        AwsSubcommand::Revoke(args) => permissions_command(&aws.aws, args, Change::Revoke).await,
        AwsSubcommand::EnsurePublic(_) => not_yet("ensure-public"),
        AwsSubcommand::PublishSsm(_) => not_yet("publish-ssm"),
        AwsSubcommand::Policy(_) => not_yet("policy"),
    }
}

fn publish_options(args: UploadArgs) -> PublishOptions {
    PublishOptions {
        file: args.file,
        bucket: args.bucket,
        name: args.name,
        ami_name: args.ami_name,
        ami_description: args.ami_description,
        arch: args.arch,
        x86_boot_mode: args.x86_boot_mode,
        tpm_support: args.tpm_support,
        imdsv2_only: args.imdsv2_only,
        volume_type: args.volume_type,
        disk_size_gib: args.disk_size_gib,
        disk_size_inspect: args.disk_size_inspect,
        delete_object: args.delete_object,
        force: args.force,
        source_object: args.source_object,
        source_snapshot: args.source_snapshot,
        object_format: args.object_format.map(|f| f.as_str().to_string()),
        public: args.public,
        grant_user: args.grant_user,
        grant_user_snapshot: args.grant_user_snapshot,
        tags: args.tags,
        billing_product_codes: args.billing_product_code,
        role_name: args.role_name,
        part_size: args.transfer.part_size,
        upload_concurrency: args.transfer.upload_concurrency,
        import_timeout: args.import_timeout,
    }
}

/// `upload`, `import-snapshot` and `register-ami`: check the input locally (reading the
/// image off the runtime), then the credentials, then run the stages. Ctrl-C stops at once;
/// everything done so far stays for a rerun.
async fn publish_command(stage: Stage, flags: &AwsFlags, args: UploadArgs) -> anyhow::Result<()> {
    let opts = publish_options(args);
    let plan = tokio::task::spawn_blocking(move || publish::plan(stage, opts)).await??;
    let (ctx, _identity) = connect(flags).await?;
    let (s3, ec2, iam) = (ctx.s3(), ctx.ec2(), ctx.iam());
    let clients = Clients {
        s3: &s3,
        s3_over_tls: ctx.over_tls(),
        ec2: &ec2,
        iam: &iam,
        region: &ctx.region,
    };
    let result = tokio::select! {
        result = publish::publish(&clients, &plan) => result?,
        _ = tokio::signal::ctrl_c() => return Err(Error::Interrupted.into()),
    };
    match stage {
        Stage::Upload => print_json(&result),
        Stage::Import => print_json(&serde_json::json!({"SnapshotID": result.snapshot_id})),
        Stage::Register => print_json(&serde_json::json!({"HVM": result.ami_id})),
    }
}

/// `upload-object`: the upload engine alone, for any S3-compatible server. It needs only S3,
/// so there is no STS preflight; an S3 error still names the problem.
async fn upload_object_command(flags: &AwsFlags, args: UploadObjectArgs) -> anyhow::Result<()> {
    let (bucket, prefix) = publish::parse_s3_url(&args.bucket)?;
    let key = match args.key {
        Some(key) => key,
        None => {
            let name = args
                .file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let name = name.ok_or_else(|| {
                Error::Invalid(format!("{} has no file name", args.file.display()))
            })?;
            if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            }
        }
    };
    let ctx = config::load(&settings(flags)).await?;
    let request = UploadRequest {
        path: args.file,
        bucket,
        key,
        part_size: args.transfer.part_size,
        concurrency: args.transfer.upload_concurrency,
        force: args.force,
        over_tls: ctx.over_tls(),
    };
    let s3 = ctx.s3();
    tokio::select! {
        report = multipart::upload_file(&s3, &request) => report?,
        _ = tokio::signal::ctrl_c() => return Err(Error::Interrupted.into()),
    };
    print_json(&serde_json::json!({"S3Object": format!("s3://{}/{}", request.bucket, request.key)}))
}

/// `grant` / `revoke`: launch permissions on an AMI, and with --snapshot the create-volume
/// permissions on its root snapshot. Prints `{"image":…,"snapshot":…}`.
async fn permissions_command(
    flags: &AwsFlags,
    args: PermissionArgs,
    change: Change,
) -> anyhow::Result<()> {
    if !args.image.starts_with("ami-") {
        return Err(
            Error::Invalid(format!("--image {:?} is not an AMI id (ami-…)", args.image)).into(),
        );
    }
    ami::validate_account_ids("--user", &args.users)?;
    ami::validate_org_arns("--organization", &args.organizations, "organization")?;
    ami::validate_org_arns("--organizational-unit", &args.organizational_units, "ou")?;
    let sharing = Sharing {
        public: args.public,
        launch_users: args.users.clone(),
        organizations: args.organizations,
        organizational_units: args.organizational_units,
        snapshot_users: if args.snapshot { args.users } else { vec![] },
    };
    let (ctx, _) = connect(flags).await?;
    let ec2 = ctx.ec2();
    let snapshot = if args.snapshot {
        ami::root_snapshot(&ec2, &args.image).await?
    } else {
        None
    };
    ami::share(
        &ec2,
        Some(&args.image),
        snapshot.as_deref(),
        &sharing,
        change,
    )
    .await?;
    print_json(&serde_json::json!({"image": args.image, "snapshot": snapshot}))
}

/// `copy-regions` (ore's `copy-image`): one JSON line per region as it finishes; exit 1 after
/// all successes are printed if any region failed.
async fn copy_command(flags: &AwsFlags, args: CopyRegionsArgs) -> anyhow::Result<()> {
    if !args.image.starts_with("ami-") {
        return Err(
            Error::Invalid(format!("--image {:?} is not an AMI id (ami-…)", args.image)).into(),
        );
    }
    for region in &args.regions {
        config::validate_region(region)?;
    }
    if args.regions.is_empty() && !args.all_regions {
        return Err(Error::Invalid("name the target regions, or pass --all-regions".into()).into());
    }
    let (ctx, _) = connect(flags).await?;
    let ec2 = ctx.ec2();
    let enabled = list_regions(&ec2, RegionFilter::Enabled).await?;
    let mut targets: Vec<String> = if args.all_regions {
        let disabled = list_regions(&ec2, RegionFilter::Disabled).await?;
        if !disabled.is_empty() {
            tracing::warn!(
                "skipping regions not enabled for this account: {}",
                disabled.join(", ")
            );
        }
        enabled.clone()
    } else {
        if let Some(off) = args.regions.iter().find(|r| !enabled.contains(r)) {
            return Err(Error::Invalid(format!(
                "region {off} is not enabled for this account (an opt-in region, or not a region); enable it or leave it out"
            ))
            .into());
        }
        args.regions.clone()
    };
    targets.retain(|r| *r != ctx.region);
    targets.dedup();
    let source = copy::describe_source(&ec2, &ctx.region, &args.image).await?;
    let failures = copy::copy_to_regions(
        &ctx,
        &source,
        &targets,
        args.concurrency,
        args.timeout,
        |region, copied| {
            println!("{}", serde_json::json!({ region: copied }));
        },
    )
    .await;
    if failures.is_empty() {
        return Ok(());
    }
    let summary: Vec<String> = failures.iter().map(|(r, e)| format!("{r} ({e})")).collect();
    Err(Error::Aws {
        context: format!("copying {} to {} regions", args.image, targets.len()),
        code: None,
        detail: format!(
            "{} failed: {}; rerun the same command to retry them (finished regions are reused)",
            failures.len(),
            summary.join("; ")
        ),
    }
    .into())
}
