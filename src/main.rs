//! The `imgpub` binary: parse flags, set up logging, run one library call, print its JSON.
//! Exit codes: 0 done, 1 failed, 2 bad usage or input (or a command not built yet).

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use imgpub::aws::config::{self, AwsSettings};
use imgpub::aws::initialize::{initialize, InitializeOptions};
use imgpub::Error;

use cli::{AwsFlags, AwsSubcommand, Cli, LogLevel, TopCommand};

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

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let TopCommand::Aws(aws) = cli.command;
    let not_yet = |name: &str| Err(Error::NotImplemented(format!("`imgpub aws {name}`")).into());
    match aws.command {
        AwsSubcommand::Initialize(args) => {
            let ctx = config::load(&settings(&aws.aws)).await?;
            let identity = ctx.verify_identity().await?;
            tracing::info!(
                "using account {} as {} in {}",
                identity.account,
                identity.arn,
                ctx.region
            );
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
        AwsSubcommand::Upload(_) => not_yet("upload"),
        AwsSubcommand::ImportSnapshot(_) => not_yet("import-snapshot"),
        AwsSubcommand::RegisterAmi(_) => not_yet("register-ami"),
        AwsSubcommand::CopyRegions(_) => not_yet("copy-regions"),
        AwsSubcommand::ListRegions(_) => not_yet("list-regions"),
        AwsSubcommand::DeleteImage(_) => not_yet("delete-image"),
        AwsSubcommand::EnsurePublic(_) => not_yet("ensure-public"),
        AwsSubcommand::Policy(_) => not_yet("policy"),
    }
}
