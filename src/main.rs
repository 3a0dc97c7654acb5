//! The `imgpub` binary: parse flags, set up logging, build the clients, run one command's
//! plan and apply from the library, print its JSON. Exit codes: 0 done, 1 failed, 2 bad
//! usage or input, 130 interrupted.

mod cli;

use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;

use imgpub::aws::ami::Change;
use imgpub::aws::calls::Call;
use imgpub::aws::config::{self, AwsContext, Identity};
use imgpub::aws::images::{self, RegionalImage};
use imgpub::aws::preflight;
use imgpub::commands::policy::{self, For};
use imgpub::commands::{blocking, Clients};
use imgpub::commands::{
    copy_regions, create_publisher, delete_image, ensure_public, gc, grant, initialize,
};
use imgpub::commands::{list_regions, publish_ssm, upload, upload_object};
use imgpub::{Error, Result};

use cli::{AwsFlags, AwsSubcommand, Cli, ImageSelection, LogLevel, TopCommand};

fn main() -> ExitCode {
    let cli = Cli::parse_ore();
    let level = cli.effective_log_level();
    let (flags, command) = match cli.command {
        TopCommand::Aws(aws) => match aws.command {
            Some(command) => (aws.aws, command),
            None => {
                // As `ore aws`: the help on stdout, exit 0.
                let mut cli = Cli::command_ore();
                cli.build(); // names the usage line `imgpub aws`
                let help = cli
                    .find_subcommand_mut("aws")
                    .map(|aws| aws.render_help().to_string())
                    .unwrap_or_default();
                return write_stdout(help.as_bytes());
            }
        },
        TopCommand::Completions { shell } => {
            // Into a buffer: clap_complete panics when it cannot write (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command_ore(), "imgpub", &mut script);
            return write_stdout(&script);
        }
        TopCommand::Man { dir } => return man(dir),
    };
    init_logging(level);
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
    let result = runtime.block_on(run(flags, command));
    // What could not be checked, said once: at INFO on success (the permissions ore needed
    // suffice), as a warning when the run failed, where it may be why.
    let skipped = imgpub::aws::unchecked::take();
    if !skipped.is_empty() {
        let line = format!(
            "not checked: {}; `imgpub aws policy` prints the permissions that check them",
            skipped.join("; ")
        );
        match &result {
            Ok(()) => tracing::info!("{line}"),
            Err(_) => tracing::warn!("{line}"),
        }
    }
    // Not waiting for blocking work still running (a whole-file hash when Ctrl-C came):
    // dropping the runtime would, and delay the exit until it ends.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, so CI logs and wrappers show the whole reason.
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// `imgpub man`: the top page on stdout, or every command's page into `dir`.
fn man(dir: Option<std::path::PathBuf>) -> ExitCode {
    let cmd = Cli::command_ore();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        return match clap_mangen::Man::new(cmd).render(&mut page) {
            Ok(()) => write_stdout(&page),
            Err(e) => {
                eprintln!("error: cannot render the man page: {e}");
                ExitCode::FAILURE
            }
        };
    };
    match clap_mangen::generate_to(cmd, &dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: cannot write the man pages to {}: {e}",
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr. At ore's default level (NOTICE) a successful run prints only its JSON:
/// our own stage lines need `-v`. The SDK's own logging (credential providers, IMDS, retries)
/// never shows below DEBUG, since our error line already says what failed, in words; and it is
/// capped at `debug` even under TRACE, because its trace output carries request and response
/// bodies, and an AssumeRole response body holds a secret key.
fn init_logging(level: LogLevel) {
    let (ours, theirs) = match level {
        LogLevel::Critical | LogLevel::Error => ("error", "off"),
        LogLevel::Warning | LogLevel::Notice => ("warn", "off"),
        LogLevel::Info => ("info", "off"),
        LogLevel::Debug => ("debug", "info,aws_config=debug"),
        LogLevel::Trace => ("trace", "debug"),
    };
    let filter = tracing_subscriber::EnvFilter::new(format!("{theirs},imgpub={ours}"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(imgpub::progress::log_writer)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// Loads the configuration and runs the identity preflight every AWS command starts with.
async fn connect(flags: &AwsFlags) -> Result<(AwsContext, Identity)> {
    let ctx = config::load(&flags.settings()).await?;
    let identity = ctx.verify_identity().await?;
    Ok((ctx, identity))
}

/// One line of results on stdout, with the bars hidden (stdout and stderr are often the same
/// terminal). A reader that went away (`| head -1`) does not stop the work: the rest of the
/// run goes on, and only the first lost line is reported.
fn print_line(line: &str) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    static LOST: AtomicBool = AtomicBool::new(false);
    let written = imgpub::progress::suspend(|| writeln!(std::io::stdout().lock(), "{line}"));
    if let Err(e) = written {
        if !LOST.swap(true, Ordering::Relaxed) {
            tracing::warn!("cannot write the results to stdout ({e}); the run goes on");
        }
    }
}

/// A `--dry-run` plan: the calls that would change something, one JSON line each.
fn print_plan(calls: &[Call]) {
    calls.iter().filter(|c| c.changes()).for_each(print_json);
}

fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string(value) {
        // With the bars hidden: stdout and stderr are often the same terminal.
        Ok(line) => print_line(&line),
        Err(e) => tracing::error!("cannot print the result as JSON: {e}"),
    }
}

/// Runs `work` until it ends or Ctrl-C; what was done stays for a rerun to resume.
async fn interruptible<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        result = work => result,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    }
}

/// The AMIs of `--image` and `--images-from` (read off the runtime: it may be stdin).
async fn select_images(selection: ImageSelection, region: &str) -> Result<Vec<RegionalImage>> {
    let region = region.to_string();
    blocking(move || images::collect(&selection.images, selection.images_from.as_deref(), &region))
        .await
}

async fn run(flags: AwsFlags, command: AwsSubcommand) -> Result<()> {
    let flags = &flags.with_environment();
    match command {
        AwsSubcommand::Initialize(args) => {
            let (ctx, identity) = connect(flags).await?;
            let c = Clients::for_identity(&ctx, &identity);
            let plan = initialize::plan(&c, &identity, &(&args).into()).await?;
            if args.dry_run {
                print_plan(&initialize::check(&plan));
                return Ok(());
            }
            let report = initialize::apply(&c, &plan).await?;
            tracing::info!("{}", report.summary());
            print_json(&report);
        }
        AwsSubcommand::Upload(args) => publish(upload::Stage::Upload, flags, *args).await?,
        AwsSubcommand::ImportSnapshot(args) => publish(upload::Stage::Import, flags, *args).await?,
        AwsSubcommand::UploadSnapshot(mut args) => {
            args.via.via = upload::Via::EbsDirect;
            publish(upload::Stage::Import, flags, *args).await?
        }
        AwsSubcommand::RegisterAmi(args) => publish(upload::Stage::Register, flags, *args).await?,
        AwsSubcommand::UploadObject(args) => {
            // Only S3 is needed, so there is no STS preflight; an S3 error still names the
            // problem.
            let opts = args.into();
            let object = upload_object::plan(&opts)?;
            let ctx = config::load(&flags.settings()).await?;
            interruptible(upload_object::apply(&Clients::new(&ctx), &opts, &object)).await?;
            print_json(&serde_json::json!({"S3Object": object.to_string()}));
        }
        AwsSubcommand::CopyRegions(args) => {
            let dry_run = args.dry_run;
            let opts = args.into();
            copy_regions::validate(&opts)?;
            let (ctx, identity) = connect(flags).await?;
            let plan = copy_regions::plan(&ctx, &opts).await?;
            let calls = copy_regions::check(&plan);
            // The sharing the run does is in the policy it needs (also for a later refusal).
            let fix = preflight::with_sharing(&policy::fix_line(For::Copy, None, None), &calls);
            preflight::run(&ctx, &identity, &calls, flags.preflight, &fix).await?;
            if dry_run {
                print_plan(&calls);
                return Ok(());
            }
            copy_regions::apply(&ctx, &plan, |line| print_json(&line))
                .await
                .map_err(|e| e.with_policy_hint(&fix))?;
        }
        AwsSubcommand::ListRegions(args) => {
            let (ctx, _) = connect(flags).await?;
            let filter = list_regions::filter(args.disabled, args.all);
            for region in list_regions::plan(&Clients::new(&ctx), filter).await? {
                print_line(&region);
            }
        }
        AwsSubcommand::DeleteImage(args) => {
            let dry_run = args.dry_run;
            let opts = args.into();
            delete_image::snapshot_choice(&opts)?;
            let (ctx, identity) = connect(flags).await?;
            let c = Clients::new(&ctx);
            let plan = delete_image::plan(&c, &opts).await?;
            let fix = policy::fix_line(For::Delete, None, Some(&ctx.region));
            let calls = delete_image::check(&plan);
            preflight::run(&ctx, &identity, &calls, flags.preflight, &fix).await?;
            if dry_run {
                print_plan(&calls);
                return Ok(());
            }
            let deleted = delete_image::apply(&c, &plan).await;
            print_json(&deleted.map_err(|e| e.with_policy_hint(&fix))?);
        }
        AwsSubcommand::Grant(args) => change_permissions(flags, args, Change::Grant).await?,
        AwsSubcommand::Revoke(args) => change_permissions(flags, args, Change::Revoke).await?,
        AwsSubcommand::EnsurePublic(args) => {
            let opts = (&args).into();
            ensure_public::validate(&opts)?;
            let (ctx, _) = connect(flags).await?;
            let plan = ensure_public::plan(&ctx, &opts).await?;
            ensure_public::apply(&ctx, &plan, args.dry_run, |line| print_json(&line)).await?;
        }
        AwsSubcommand::Gc(args) => {
            let opts: gc::GcOptions = (&args).into();
            let tags = gc::validate(&opts)?;
            let (ctx, identity) = connect(flags).await?;
            let plan = gc::plan(&ctx, &opts).await?;
            // Deleting AMIs is what `--for delete` grants; gc's own policy only terminates.
            let fix = match opts.collect {
                gc::Collect::Instances if opts.tags.is_empty() => {
                    policy::fix_line(For::Gc, None, None)
                }
                gc::Collect::Instances => tags
                    .iter()
                    .fold(policy::fix_line(For::Gc, None, None), |line, (k, v)| {
                        format!("{line} --gc-tag {k}={v}")
                    }),
                gc::Collect::Images { .. } => policy::fix_line(For::Delete, None, None),
            };
            let calls = gc::check(&plan);
            preflight::run(&ctx, &identity, &calls, flags.preflight, &fix).await?;
            gc::apply(&ctx, &plan, args.dry_run, |line| print_json(&line))
                .await
                .map_err(|e| e.with_policy_hint(&fix))?;
        }
        AwsSubcommand::PublishSsm(args) => {
            let templates = publish_ssm::templates(&args.parameters)?;
            let ctx = config::load(&flags.settings()).await?;
            let targets = select_images(args.images, &ctx.region).await?;
            let identity = ctx.verify_identity().await?;
            let plan = publish_ssm::plan(&ctx, &templates, targets, args.overwrite).await?;
            let fix = policy::fix_line(For::Ssm, None, None);
            let calls = publish_ssm::check(&plan);
            preflight::run(&ctx, &identity, &calls, flags.preflight, &fix).await?;
            if args.dry_run {
                print_plan(&calls);
                return Ok(());
            }
            publish_ssm::apply(&ctx, &plan, args.validation_timeout, |line| {
                print_json(&line)
            })
            .await
            .map_err(|e| e.with_policy_hint(&fix))?;
        }
        AwsSubcommand::CreatePublisher(args) => {
            let mut flags = flags.clone();
            let opts = args.options(&mut flags);
            create_publisher::validate(&opts)?;
            let (ctx, identity) = connect(&flags).await?;
            let c = Clients::new(&ctx);
            let plan = create_publisher::plan(&c, &identity, &opts).await?;
            if args.dry_run {
                print_plan(&create_publisher::check(&plan, &ctx.region));
                return Ok(());
            }
            print_json(&create_publisher::apply(&c, &plan).await?);
        }
        AwsSubcommand::Policy(args) => {
            let opts = policy::PolicyOptions::from(&args);
            policy::validate(&opts)?; // bad flags fail before any lookup
            let (caller, region) = policy::caller(&flags.settings(), &opts).await;
            // Without usable credentials the configured region is still --region's.
            let region = region.or_else(|| flags.region.clone());
            let built = policy::build(&policy::scope(&opts, caller, region.as_deref())?);
            policy::size_warnings(&built.document)
                .iter()
                .for_each(|w| tracing::warn!("{w}"));
            match args.format {
                cli::PolicyFormat::Json => print_line(&format!("{:#}", built.document)),
                cli::PolicyFormat::Table => {
                    print_line(policy::table(&built.rows).trim_end_matches('\n'))
                }
            }
        }
    }
    Ok(())
}

/// `upload`, `import-snapshot` and `register-ami`: the local checks (reading the image off
/// the runtime), the credentials, the lookups, then the stages. Ctrl-C stops at once;
/// everything done so far stays for a rerun.
async fn publish(stage: upload::Stage, flags: &AwsFlags, args: cli::UploadArgs) -> Result<()> {
    let dry_run = args.dry_run;
    let opts = args.into();
    let local = blocking(move || upload::plan_local(stage, opts)).await?;
    let (ctx, identity) = connect(flags).await?;
    let c = Clients::for_identity(&ctx, &identity);
    let plan = upload::plan(&c, local).await?;
    let calls = upload::check(&plan);
    let fix = policy::fix_line(For::Upload, plan.local.source.object(), Some(&ctx.region));
    let fix = preflight::with_sharing(&fix, &calls);
    preflight::run(&ctx, &identity, &calls, flags.preflight, &fix).await?;
    if dry_run {
        print_plan(&calls);
        return Ok(());
    }
    let published = interruptible(upload::apply(&c, &plan))
        .await
        .map_err(|e| e.with_policy_hint(&fix))?;
    print_json(&published.output(stage));
    Ok(())
}

/// `grant` / `revoke` in one region or many: one JSON line per AMI, then exit 1 naming the
/// failures after the successes.
async fn change_permissions(
    flags: &AwsFlags,
    args: cli::PermissionArgs,
    change: Change,
) -> Result<()> {
    let dry_run = args.dry_run;
    let opts = args.options(change);
    grant::sharing(&opts)?;
    let ctx = config::load(&flags.settings()).await?;
    let targets = select_images(args.images, &ctx.region).await?;
    let identity = ctx.verify_identity().await?;
    let plan = grant::plan(&ctx, &opts, targets).await?;
    let calls = grant::check(&plan);
    let fix = preflight::with_sharing(&policy::fix_line(For::Grant, None, None), &calls);
    preflight::run(&ctx, &identity, &calls, flags.preflight, &fix).await?;
    if dry_run {
        print_plan(&calls);
        return Ok(());
    }
    grant::apply(&ctx, &plan, |line| print_json(&line))
        .await
        .map_err(|e| e.with_policy_hint(&fix))?;
    Ok(())
}
