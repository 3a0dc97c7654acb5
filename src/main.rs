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
use imgpub::aws::regions::{self, list_regions, RegionFilter};
use imgpub::aws::{images, permissions, ssm};
use imgpub::Error;

use cli::{
    AwsFlags, AwsSubcommand, Cli, CopyRegionsArgs, EnsurePublicArgs, ImageSelection, LogLevel,
    PermissionArgs, PublishSsmArgs, TopCommand, UploadArgs, UploadObjectArgs,
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
    verified(config::load(&settings(flags)).await?).await
}

/// The identity preflight on a loaded configuration.
async fn verified(ctx: AwsContext) -> anyhow::Result<(AwsContext, Identity)> {
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
        AwsSubcommand::EnsurePublic(args) => ensure_public_command(&aws.aws, args).await,
        AwsSubcommand::PublishSsm(args) => publish_ssm_command(&aws.aws, args).await,
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

/// The AMIs of `--image` and `--images-from` (read off the runtime: it may be stdin).
async fn select_images(
    selection: ImageSelection,
    default_region: &str,
) -> anyhow::Result<Vec<images::RegionalImage>> {
    let region = default_region.to_string();
    let images = tokio::task::spawn_blocking(move || {
        images::collect(&selection.images, selection.images_from.as_deref(), &region)
    })
    .await??;
    Ok(images)
}

/// Regions worked on side by side in grant/revoke, ensure-public and publish-ssm.
const REGION_CONCURRENCY: usize = 8;

/// `grant` / `revoke`: launch permissions on AMIs in one region or many, and with --snapshot
/// the create-volume permissions on their root snapshots. One JSON line per AMI
/// `{"region":…,"image":…,"snapshot":…}`; exit 1 naming the failures after the successes.
async fn permissions_command(
    flags: &AwsFlags,
    args: PermissionArgs,
    change: Change,
) -> anyhow::Result<()> {
    ami::validate_account_ids("--user", &args.users)?;
    ami::validate_org_arns("--organization", &args.organizations, "organization")?;
    ami::validate_org_arns("--organizational-unit", &args.organizational_units, "ou")?;
    if args.users.is_empty()
        && !args.public
        && args.organizations.is_empty()
        && args.organizational_units.is_empty()
    {
        return Err(Error::Invalid(
            "name whom to change: --user, --public, --organization or --organizational-unit".into(),
        )
        .into());
    }
    let sharing = Sharing {
        public: args.public,
        launch_users: args.users.clone(),
        organizations: args.organizations,
        organizational_units: args.organizational_units,
        snapshot_users: if args.snapshot { args.users } else { vec![] },
    };
    let ctx = config::load(&settings(flags)).await?;
    let targets = select_images(args.images, &ctx.region).await?;
    let (ctx, _) = verified(ctx).await?;
    let failures = regions::fan_out(
        targets.clone(),
        REGION_CONCURRENCY,
        |target| {
            let ctx = &ctx;
            let sharing = &sharing;
            async move {
                let ec2 = ctx.in_region(&target.region).ec2();
                let (region, id) = (&target.region, &target.image_id);
                permissions::change_image(&ec2, region, id, sharing, args.snapshot, change).await
            }
        },
        |_, changed| {
            println!("{}", serde_json::json!(changed));
        },
    )
    .await;
    if failures.is_empty() {
        return Ok(());
    }
    let verb = match change {
        Change::Grant => "granting",
        Change::Revoke => "revoking",
    };
    let context = format!("{verb} permissions on {} AMIs", targets.len());
    Err(regions::failure_summary(context, &failures).into())
}

/// `ensure-public`: AMIs carrying the given tags that are no longer public (or whose
/// snapshot is not) are made public again; one JSON line per AMI fixed.
async fn ensure_public_command(flags: &AwsFlags, args: EnsurePublicArgs) -> anyhow::Result<()> {
    let tags = permissions::parse_tag_filters(&args.tags)?;
    for region in &args.regions {
        config::validate_region(region)?;
    }
    let (ctx, _) = connect(flags).await?;
    let targets = if args.regions.is_empty() && !args.all_regions {
        vec![ctx.region.clone()]
    } else {
        regions::target_regions(&ctx.ec2(), &args.regions, args.all_regions).await?
    };
    let failures = regions::fan_out(
        targets.clone(),
        REGION_CONCURRENCY,
        |region| {
            let (ctx, tags) = (&ctx, &tags);
            async move {
                let ec2 = ctx.in_region(&region).ec2();
                permissions::ensure_public(&ec2, &region, tags, args.dry_run).await
            }
        },
        |_, fixed| {
            for image in fixed {
                println!("{}", serde_json::json!(image));
            }
        },
    )
    .await;
    if failures.is_empty() {
        return Ok(());
    }
    let context = format!("checking tagged AMIs in {} regions", targets.len());
    Err(regions::failure_summary(context, &failures).into())
}

/// `publish-ssm`: checks every AMI and parameter first (nothing is written if any check
/// fails), then writes each region's parameters; one JSON line per parameter.
async fn publish_ssm_command(flags: &AwsFlags, args: PublishSsmArgs) -> anyhow::Result<()> {
    let templates = args
        .parameters
        .iter()
        .map(|t| ssm::Template::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let ctx = config::load(&settings(flags)).await?;
    let targets = select_images(args.images, &ctx.region).await?;
    let (ctx, _) = verified(ctx).await?;

    let mut planned = vec![];
    let failures = regions::fan_out(
        targets,
        REGION_CONCURRENCY,
        |target| {
            let (ctx, templates) = (&ctx, &templates);
            async move {
                let regional = ctx.in_region(&target.region);
                let facts = ssm::describe(&regional.ec2(), &target).await?;
                ssm::plan(&regional.ssm(), &facts, templates, args.overwrite).await
            }
        },
        |_, mut plans| planned.append(&mut plans),
    )
    .await;
    if let Some((_, first)) = failures.first() {
        let all: Vec<String> = failures.iter().map(|(_, e)| e.to_string()).collect();
        let err = Error::Invalid(format!("nothing was written: {}", all.join("; ")));
        // A refusal is bad input (exit 2); an AWS failure is not.
        return Err(match first {
            Error::Invalid(_) => err,
            _ => Error::Aws {
                context: "checking the AMIs and parameters".into(),
                code: first.code().map(str::to_owned),
                detail: all.join("; "),
            },
        }
        .into());
    }
    ssm::check_conflicts(&planned)?;

    let mut by_region: Vec<String> = planned.iter().map(|p| p.region.clone()).collect();
    by_region.sort();
    by_region.dedup();
    let failures = regions::fan_out(
        by_region.clone(),
        REGION_CONCURRENCY,
        |region| {
            let (ctx, planned) = (&ctx, &planned);
            async move {
                let mine: Vec<ssm::Planned> = planned
                    .iter()
                    .filter(|p| p.region == region)
                    .cloned()
                    .collect();
                ssm::write(&ctx.in_region(&region).ssm(), &mine).await
            }
        },
        |_, written| {
            for parameter in written {
                println!("{}", serde_json::json!(parameter));
            }
        },
    )
    .await;
    if failures.is_empty() {
        return Ok(());
    }
    let context = format!("writing parameters in {} regions", by_region.len());
    Err(regions::failure_summary(context, &failures).into())
}

/// `copy-regions` (ore's `copy-image`): one JSON line per region as it finishes; exit 1 after
/// all successes are printed if any region failed.
async fn copy_command(flags: &AwsFlags, args: CopyRegionsArgs) -> anyhow::Result<()> {
    if !args.image.starts_with("ami-") {
        return Err(
            Error::Invalid(format!("--image {:?} is not an AMI id (ami-…)", args.image)).into(),
        );
    }
    if args.regions.is_empty() && !args.all_regions {
        return Err(Error::Invalid("name the target regions, or pass --all-regions".into()).into());
    }
    for region in &args.regions {
        config::validate_region(region)?;
    }
    let (ctx, _) = connect(flags).await?;
    let ec2 = ctx.ec2();
    let mut targets = regions::target_regions(&ec2, &args.regions, args.all_regions).await?;
    targets.retain(|r| *r != ctx.region);
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
    let context = format!("copying {} to {} regions", args.image, targets.len());
    Err(regions::failure_summary(context, &failures).into())
}
