//! The `imgpub` binary: parses the flags, picks the command, and hands it to the library's
//! one driver ([`imgpub::Task::run`]), printing what it emits. Exit codes: 0 done,
//! 1 failed, 2 bad usage or input, 3 the input changed during the run, 77 a release is done
//! but for best-effort regions, 130 interrupted.

mod cli;

use std::process::ExitCode;

use imgpub::{
    Change, CopyOptions, DeleteOptions, EnsurePublicOptions, GcOptions, InitializeOptions,
    ListRegionsOptions, PrintPolicy, PublishSsmOptions, Result, Run, Stage, Task,
    UploadObjectOptions, VerifySnapshotOptions, Via,
};

use cli::{output, AwsFlags, AwsSubcommand as Aws, Cli, ReleaseSubcommand, TopCommand};

fn main() -> ExitCode {
    let cli = Cli::parse_ore();
    let level = cli.effective_log_level();
    let (flags, command) = match cli.command {
        TopCommand::Aws(aws) => match aws.command {
            Some(command) => (aws.aws, Work::Aws(Box::new(command))),
            None => return output::aws_help(),
        },
        TopCommand::Release(release) => (release.aws, Work::Release(release.step)),
        TopCommand::Completions { shell } => return output::completions(shell),
        TopCommand::Man { dir } => return output::man(dir),
    };
    output::init_logging(level);
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
    let result = runtime.block_on(run(flags.with_environment(), command));
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

/// What the command line asks for: an `aws` command or a `release` step.
enum Work {
    Aws(Box<Aws>),
    Release(ReleaseSubcommand),
}

/// Every command, through the one driver.
async fn run(flags: AwsFlags, work: Work) -> Result<()> {
    let f = &flags;
    let command = match work {
        Work::Aws(command) => *command,
        Work::Release(step) => return drive(f, step.dry_run(), step.task()).await,
    };
    match command {
        Aws::Initialize(a) => drive(f, a.dry_run, InitializeOptions::from(&a)).await,
        Aws::Upload(a) => drive(f, a.dry_run, a.publish(Stage::Upload)).await,
        Aws::ImportSnapshot(a) => drive(f, a.dry_run, a.publish(Stage::Import)).await,
        Aws::UploadSnapshot(mut a) => {
            a.via.via = Via::EbsDirect;
            drive(f, a.dry_run, a.publish(Stage::Import)).await
        }
        Aws::RegisterAmi(a) => drive(f, a.dry_run, a.publish(Stage::Register)).await,
        Aws::UploadObject(a) => drive(f, false, UploadObjectOptions::from(a)).await,
        Aws::CopyRegions(a) => drive(f, a.dry_run, CopyOptions::from(a)).await,
        Aws::ListRegions(a) => drive(f, false, ListRegionsOptions::from(&a)).await,
        Aws::VerifySnapshot(a) => drive(f, false, VerifySnapshotOptions::from(a)).await,
        Aws::DeleteImage(a) => drive(f, a.dry_run, DeleteOptions::from(a)).await,
        Aws::Grant(a) => drive(f, a.dry_run, a.command(Change::Grant)).await,
        Aws::Revoke(a) => drive(f, a.dry_run, a.command(Change::Revoke)).await,
        Aws::EnsurePublic(a) => drive(f, a.dry_run, EnsurePublicOptions::from(&a)).await,
        Aws::Gc(a) => drive(f, a.dry_run, GcOptions::from(&a)).await,
        Aws::PublishSsm(a) => drive(f, a.dry_run, PublishSsmOptions::from(&a)).await,
        Aws::Policy(a) => drive(f, false, PrintPolicy::from(&a)).await,
        Aws::CreatePublisher(a) => {
            let (flags, opts) = a.options(flags.clone());
            drive(&flags, a.dry_run, opts).await
        }
    }
}

/// Runs `command` with the flags every AWS command takes, printing what it emits.
async fn drive(flags: &AwsFlags, dry_run: bool, command: impl Into<Task>) -> Result<()> {
    let run = Run {
        settings: flags.settings(),
        preflight: flags.preflight,
        dry_run,
    };
    command.into().run(&run, &mut output::print).await
}
