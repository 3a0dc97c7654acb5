//! The command line: ore-compatible names and meanings (`ore aws upload …` users switch by
//! renaming the binary). Global and AWS flags are `global = true` so, as with cobra's
//! persistent flags, they are accepted anywhere after their command word.

mod args;
mod convert;
pub mod output;
mod parse;

pub use args::*;
use parse::*;

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use imgpub::CopyOptions;
use imgpub::DeleteOptions;
use imgpub::EnsurePublicOptions;
use imgpub::InitializeOptions;
use imgpub::ListRegionsOptions;
use imgpub::Named;
use imgpub::ObjectFormat;
use imgpub::PreflightMode;
use imgpub::PublishSsmOptions;
use imgpub::PublisherOptions;
use imgpub::Transfer;
use imgpub::UploadObjectOptions;
use imgpub::VerifySnapshotOptions;
use imgpub::{Arch, BootMode, Change, SriovNetSupport, TpmSupport, VolumeType};
use imgpub::{AwsSettings, Secret};
use imgpub::{Collect, GcOptions};
use imgpub::{Deprecate, Existing, Publish, Stage, UploadOptions, Via};
use imgpub::{For, PolicyOptions, PrintPolicy};
use imgpub::{GrantOptions, Permissions};
use imgpub::{Promotion, ReleaseOptions, ReleaseStep, RestoreOptions, Task, WatchOptions};

#[derive(Debug, Parser)]
#[command(
    name = "imgpub",
    version,
    about = "Publish disk images as AWS AMIs",
    long_about = "Publish disk images as AWS AMIs.\n\nResults (JSON) go to stdout, logs to stderr."
)]
pub struct Cli {
    /// Log level: CRITICAL, ERROR, WARNING, NOTICE, INFO, DEBUG or TRACE (any case), or
    /// ore's C, E, W, N, I, D, T and 0 (ERROR) to 5 (TRACE).
    #[arg(help_heading = "Logging options", long, global = true, value_name = "LEVEL", value_parser = parse_log_level)]
    pub log_level: Option<LogLevel>,

    /// Verbose logging (same as --log-level INFO).
    #[arg(
        help_heading = "Logging options",
        short = 'v',
        long = "verbose",
        global = true
    )]
    pub verbose: bool,

    /// Debug logging (same as --log-level DEBUG).
    #[arg(
        help_heading = "Logging options",
        short = 'd',
        long = "debug",
        global = true
    )]
    pub debug: bool,

    #[command(subcommand)]
    pub command: TopCommand,
}

impl Cli {
    /// The command line as ore's (cobra's) reads it: every on/off flag also takes a value,
    /// `--public=true`, `--force=false`, `--all=0` (with `=`, as cobra: `--public false`
    /// stays a flag and a stray word).
    pub fn command_ore() -> clap::Command {
        // `--version` also names the checksum code this CPU gets (`-V` only the version).
        let long_version = format!(
            "{}\nchecksums: {}",
            env!("CARGO_PKG_VERSION"),
            imgpub::kernels()
        );
        let cmd = <Cli as clap::CommandFactory>::command().long_version(long_version);
        // register-ami shares upload's flags but takes no image: its help shows only its own.
        let cmd = cmd.mut_subcommand("aws", |aws| {
            aws.mut_subcommand("register-ami", |register| {
                register.mut_args(|arg| {
                    let id = arg.get_id().as_str();
                    let upload_only = UPLOAD_ONLY.contains(&id);
                    arg.hide(upload_only)
                })
            })
        });
        ore_bools(cmd)
    }

    /// Parses the process's arguments; a usage error exits 2 with clap's message.
    pub fn parse_ore() -> Cli {
        Cli::try_parse_ore(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    pub fn try_parse_ore<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command_ore().try_get_matches_from(argv)?;
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
    }

    /// The effective level, as ore's: `-d` wins over `-v`, which wins over `--log-level`.
    pub fn effective_log_level(&self) -> LogLevel {
        match (self.debug, self.verbose, self.log_level) {
            (true, ..) => LogLevel::Debug,
            (false, true, _) => LogLevel::Info,
            (false, false, Some(level)) => level,
            (false, false, None) => LogLevel::Notice,
        }
    }
}

/// upload's flags about the image and its transfer, which register-ami (it registers a
/// snapshot) leaves out of its help and refuses.
const UPLOAD_ONLY: &[&str] = &[
    "file",
    "bucket",
    "disk_size_inspect",
    "delete_object",
    "source_object",
    "object_format",
    "encrypted",
    "kms_key",
    "role_name",
    "part_size",
    "upload_concurrency",
    "via",
    "blocks_in_flight",
    "send_zero_blocks",
    "parent",
    "block_maps",
    "import_timeout",
];

/// ore's (capnslog's) levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Critical,
    Error,
    Warning,
    Notice,
    Info,
    Debug,
    Trace,
}

/// Every `SetTrue` flag of `cmd` and its subcommands, made to take an optional `=BOOL`.
fn ore_bools(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| match arg.get_action() {
        clap::ArgAction::SetTrue => arg
            .action(clap::ArgAction::Set)
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .default_value("false")
            .hide_default_value(true)
            .value_name("BOOL")
            .value_parser(parse_bool),
        _ => arg,
    })
    .mut_subcommands(ore_bools)
}

/// The spellings Go's `strconv.ParseBool` (so cobra, so ore) accepts.
fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean; use true or false")),
    }
}

/// capnslog's spellings, as ore takes them (`C`/`E`/`W`/`N`/`I`/`D`/`T`, `0`–`5` for ERROR to
/// TRACE, the names), and the names in any case besides (`info`, `WARN`).
fn parse_log_level(s: &str) -> Result<LogLevel, String> {
    Ok(match s.to_ascii_uppercase().as_str() {
        "CRITICAL" | "C" => LogLevel::Critical,
        "ERROR" | "E" | "0" => LogLevel::Error,
        "WARNING" | "WARN" | "W" | "1" => LogLevel::Warning,
        "NOTICE" | "N" | "2" => LogLevel::Notice,
        "INFO" | "I" | "3" => LogLevel::Info,
        "DEBUG" | "D" | "4" => LogLevel::Debug,
        "TRACE" | "T" | "5" => LogLevel::Trace,
        _ => {
            return Err(format!(
                "unknown log level {s:?}; use one of CRITICAL, ERROR, WARNING, NOTICE, INFO, DEBUG, TRACE (or ore's C, E, W, N, I, D, T, 0-5)"
            ))
        }
    })
}

#[derive(Debug, Subcommand)]
pub enum TopCommand {
    /// Amazon Web Services commands.
    Aws(Box<AwsCommand>),
    /// A whole release, declared in a manifest: plan it, apply it, verify it.
    Release(Box<ReleaseCommand>),
    /// Print a completion script for SHELL.
    #[command(
        after_help = "Example:\n  source <(imgpub completions bash)    # or into /usr/share/bash-completion/completions/imgpub"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff); with --dir, write one page per command there.
    #[command(
        after_help = "Example:\n  imgpub man | man -l -\n  imgpub man --dir /usr/share/man/man1"
    )]
    Man {
        /// Write imgpub.1, imgpub-aws.1, imgpub-aws-upload.1, … into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct AwsCommand {
    #[command(flatten)]
    pub aws: AwsFlags,

    /// None: `imgpub aws` alone prints its help and exits 0, as `ore aws`.
    #[command(subcommand)]
    pub command: Option<AwsSubcommand>,
}

#[derive(Debug, Args)]
pub struct ReleaseCommand {
    #[command(flatten)]
    pub aws: AwsFlags,

    #[command(subcommand)]
    pub step: ReleaseSubcommand,
}

#[derive(Debug, Subcommand)]
pub enum ReleaseSubcommand {
    /// Read-only: per image and region what exists and what apply would make, the
    /// permission preflight, and why the release could not complete (exit 1, nothing made).
    #[command(after_help = "Example:\n  imgpub release plan release.toml")]
    Plan(PublishArgs),
    /// Publish what the manifest declares and is not yet there; a rerun continues where
    /// the last stopped. Exit 77 when only best-effort regions are missing.
    #[command(
        after_help = "Example:\n  imgpub release apply release.toml --record out/release.json"
    )]
    Apply(PublishArgs),
    /// Read every claim of the manifest back in every region: exit 1 on drift (77 when
    /// only best-effort regions differ).
    #[command(after_help = "Example:\n  imgpub release verify release.toml")]
    Verify(ReleaseArgs),
    /// Point one channel's SSM parameters at the release in every region, as another
    /// channel already does ({channel} in the manifest's parameters); each is checked
    /// first and read back after. Rollback: promote from a channel holding the older release.
    #[command(
        after_help = "Example:\n  imgpub release promote release.toml --from latest --to stable"
    )]
    Promote(PromoteArgs),
    /// Retire the releases of the manifest's stream that its retention policy ([prune])
    /// does not keep, one stage per run: deprecate, then disable, then deregister with the
    /// snapshots, each after the grace period. Prints what each AMI is due for and changes
    /// nothing without --apply.
    #[command(
        after_help = "Example:\n  imgpub release prune release.toml            # the plan\n  imgpub release prune release.toml --apply    # do what is due"
    )]
    Prune(PruneArgs),
    /// Check live releases against their records, for cron or CI (read-only; exit 1 on
    /// drift): AMIs or snapshots deleted or disabled, public ones gone private, deprecation
    /// passed or near, SSM parameters moved, regions enabled since where a release to "all"
    /// is missing, quota headroom for the next release. --fix makes the private ones public.
    #[command(
        after_help = "Example:\n  imgpub release watch out/42.0.record.json out/41.0.record.json --fix"
    )]
    Watch(WatchArgs),
    /// Bring pruned releases back from the Recycle Bin (see `initialize --recycle-bin`):
    /// each AMI and its snapshot restored, enabled, its deprecation cancelled and shared as
    /// its record says. Exit 1 names what is no longer restorable.
    #[command(after_help = "Example:\n  imgpub release restore out/38.0.record.json")]
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Release records (JSON, as `release apply` and `release verify` write them).
    #[arg(value_name = "RECORD", required = true, value_hint = clap::ValueHint::FilePath)]
    pub records: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Release records (JSON, as `release apply` and `release verify` write them).
    #[arg(value_name = "RECORD", required = true, value_hint = clap::ValueHint::FilePath)]
    pub records: Vec<PathBuf>,
    /// Make public AMIs (and their snapshots) that went private public again.
    #[arg(long)]
    pub fix: bool,
    /// Report a deprecation time this close (e.g. 14d, 72h).
    #[arg(long, default_value = "14d", value_parser = parse_duration, value_name = "DURATION")]
    pub warn_within: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The release manifest (TOML; docs/release.md documents every key).
    #[arg(value_name = "MANIFEST", value_hint = clap::ValueHint::FilePath)]
    pub manifest: PathBuf,
    /// A retention policy file (a [prune] table) instead of the manifest's own.
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub policy: Option<PathBuf>,
    /// Do the stages that are due; without it nothing is changed.
    #[arg(long)]
    pub apply: bool,
    /// With [[account]] in the manifest: only these accounts, this runner's share of the
    /// release (account=NAME or partition=P; repeat for more). The record merges the parts.
    #[arg(long, value_name = "account=NAME|partition=P")]
    pub only: Vec<imgpub::Only>,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The release manifest (TOML; docs/release.md documents every key).
    #[arg(value_name = "MANIFEST", value_hint = clap::ValueHint::FilePath)]
    pub manifest: PathBuf,
    /// The channel whose parameters hold the release (e.g. latest).
    #[arg(long, value_name = "CHANNEL")]
    pub from: String,
    /// The channel to point at it (e.g. stable).
    #[arg(long, value_name = "CHANNEL")]
    pub to: String,
    /// Print the writes it would make, after every check; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With [[account]] in the manifest: only these accounts, this runner's share of the
    /// release (account=NAME or partition=P; repeat for more). The record merges the parts.
    #[arg(long, value_name = "account=NAME|partition=P")]
    pub only: Vec<imgpub::Only>,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The release manifest (TOML; docs/release.md documents every key).
    #[arg(value_name = "MANIFEST", value_hint = clap::ValueHint::FilePath)]
    pub manifest: PathBuf,
    /// Where apply and verify write the release record (JSON; default:
    /// RELEASE.record.json beside the manifest).
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub record: Option<PathBuf>,
    /// With [[account]] in the manifest: only these accounts, this runner's share of the
    /// release (account=NAME or partition=P; repeat for more). The record merges the parts.
    #[arg(long, value_name = "account=NAME|partition=P")]
    pub only: Vec<imgpub::Only>,
}

/// `release plan` and `release apply`: the release's arguments, and how an account that
/// copies waits for uploads another runner publishes.
#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// With --only: an account that copies (`copy_from`) from an account this run leaves out
    /// waits up to DURATION (e.g. 2h) for that account's uploads, published by another
    /// runner at the same time, where without it the plan stops until they are there.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub wait_for_uploads: Option<std::time::Duration>,
}

impl ReleaseSubcommand {
    /// `promote --dry-run` (`plan` is apply's dry run).
    pub fn dry_run(&self) -> bool {
        matches!(self, ReleaseSubcommand::Promote(p) if p.dry_run)
    }

    /// The step as the driver runs it.
    pub fn task(self) -> Task {
        let (step, a, wait_for_uploads) = match self {
            ReleaseSubcommand::Restore(r) => return RestoreOptions { records: r.records }.into(),
            ReleaseSubcommand::Watch(w) => {
                return WatchOptions {
                    records: w.records,
                    fix: w.fix,
                    warn_within: w.warn_within,
                }
                .into()
            }
            ReleaseSubcommand::Plan(p) => (ReleaseStep::Plan, p.release, p.wait_for_uploads),
            ReleaseSubcommand::Apply(p) => (ReleaseStep::Apply, p.release, p.wait_for_uploads),
            ReleaseSubcommand::Verify(a) => (ReleaseStep::Verify, a, None),
            ReleaseSubcommand::Promote(p) => (
                ReleaseStep::Promote(Promotion {
                    from: p.from,
                    to: p.to,
                }),
                ReleaseArgs {
                    manifest: p.manifest,
                    record: None,
                    only: p.only,
                },
                None,
            ),
            ReleaseSubcommand::Prune(p) => (
                ReleaseStep::Prune {
                    apply: p.apply,
                    policy: p.policy,
                },
                ReleaseArgs {
                    manifest: p.manifest,
                    record: None,
                    only: p.only,
                },
                None,
            ),
        };
        ReleaseOptions {
            step,
            manifest: a.manifest,
            record: a.record,
            only: a.only,
            wait_for_uploads,
        }
        .into()
    }
}

/// Flags every AWS command takes; one loader turns them into an SDK config. Under their own
/// heading, after the command's own flags, in every `--help`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "AWS options")]
pub struct AwsFlags {
    /// AWS region (default: $AWS_REGION, then the profile's region).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,

    /// Profile to use from the AWS config and credentials files.
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,

    /// A shared-credentials file to read instead of ~/.aws/credentials.
    #[arg(long, global = true, value_name = "PATH")]
    pub credentials_file: Option<PathBuf>,

    /// An access key id to use for this run (with --secret-key), instead of any other source;
    /// prefer --credentials-file: arguments show in `ps`.
    #[arg(long, global = true, value_name = "KEY_ID")]
    pub access_id: Option<String>,

    /// The secret of --access-id. Never printed.
    #[arg(long, global = true, value_name = "SECRET")]
    pub secret_key: Option<String>,

    /// Send every AWS request to this endpoint (a local stand-in, a VPC endpoint, …);
    /// default: $AWS_ENDPOINT_URL.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// Assume this IAM role on top of the loaded credentials (default: $IMGPUB_ROLE_ARN).
    #[arg(long, global = true, value_name = "ARN")]
    pub role_arn: Option<String>,

    /// External ID to pass when assuming --role-arn (for create-publisher: the role's;
    /// default: $IMGPUB_EXTERNAL_ID).
    #[arg(long, global = true, value_name = "ID")]
    pub external_id: Option<String>,

    /// Session name for --role-arn, shown in CloudTrail (default: $IMGPUB_ROLE_SESSION_NAME,
    /// else imgpub-<CI job id or host name>).
    #[arg(long, global = true, value_name = "NAME")]
    pub role_session_name: Option<String>,

    /// Check with IAM before the first change that every call the run makes is allowed:
    /// auto (when the caller may simulate its policies), require, or off.
    #[arg(
        long,
        global = true,
        value_parser = named::<PreflightMode>(),
        default_value = "auto",
        value_name = "MODE"
    )]
    pub preflight: PreflightMode,
}

#[derive(Debug, Subcommand)]
pub enum AwsSubcommand {
    /// Prepare an account: the image bucket and the `vmimport` service role.
    #[command(
        after_help = "Example:\n  imgpub aws initialize --region us-east-1 --bucket my-images"
    )]
    Initialize(InitializeArgs),
    /// Publish a disk image as an AMI: upload, import snapshot, register, share.
    #[command(
        after_help = "Example:\n  imgpub aws upload --region us-east-1 --bucket s3://my-images/ci --file os.vmdk \\\n    --name os-1.2.3 --tags stream=stable --grant-user 111122223333"
    )]
    Upload(Box<UploadArgs>),
    /// Import a snapshot from a local file or an existing S3 object; prints the snapshot id.
    #[command(
        after_help = "Example:\n  imgpub aws import-snapshot --region us-east-1 --bucket s3://my-images/ci --file os.vmdk --name os-1.2.3"
    )]
    ImportSnapshot(Box<UploadArgs>),
    /// Write a local image (raw or VMDK) straight into a snapshot with the EBS direct APIs:
    /// no bucket, no vmimport role; prints {"SnapshotID":…}. `upload --via ebs-direct`
    /// without the AMI.
    #[command(
        after_help = "Example:\n  imgpub aws upload-snapshot --region us-east-1 --file os.raw --name os-1.2.3 --tags stream=stable"
    )]
    UploadSnapshot(Box<UploadArgs>),
    /// Register an AMI from an existing snapshot; tags and permissions.
    #[command(
        after_help = "Example:\n  imgpub aws register-ami --region us-east-1 --source-snapshot snap-0123456789abcdef0 --name os-1.2.3"
    )]
    RegisterAmi(Box<UploadArgs>),
    /// Upload a file to S3 with the upload engine alone (any S3-compatible server; no STS,
    /// EC2 or IAM needed); prints {"S3Object":…}.
    #[command(
        after_help = "Example:\n  imgpub aws upload-object --bucket s3://my-images/ci --file os.raw --endpoint-url https://s3.example.com"
    )]
    UploadObject(UploadObjectArgs),
    /// Copy an AMI to other regions, with its tags and launch permissions.
    #[command(
        after_help = "Example:\n  imgpub aws copy-regions --region us-east-1 --image ami-0123456789abcdef0 eu-west-1 ap-south-1"
    )]
    #[command(visible_alias = "copy-image")]
    CopyRegions(CopyRegionsArgs),
    /// List the regions enabled for the account.
    #[command(after_help = "Example:\n  imgpub aws list-regions --region us-east-1")]
    ListRegions(ListRegionsArgs),
    /// Read a completed snapshot back with the EBS direct read APIs and compare every
    /// block with an image; keeps the snapshot's block map (for a later --parent).
    #[command(
        after_help = "Example:\n  imgpub aws verify-snapshot --region us-east-1 --file os.raw --snapshot snap-0123456789abcdef0"
    )]
    VerifySnapshot(VerifySnapshotArgs),
    /// Deregister an AMI; with --snapshot or --with-snapshots, delete its snapshots too
    /// (without them, as ore, the snapshot stays, and the summary names it). With
    /// --all-regions or --images-from, a release's copies everywhere.
    #[command(
        after_help = "Examples:\n  imgpub aws delete-image --region us-east-1 --ami ami-0123456789abcdef0 --snapshot detectFromAMI\n  imgpub aws delete-image --region us-east-1 --ami ami-0123456789abcdef0 --with-snapshots --all-regions\n  imgpub aws delete-image --images-from copies.json --with-snapshots"
    )]
    DeleteImage(DeleteImageArgs),
    /// Grant launch permissions on an AMI (and create-volume permissions on its snapshot).
    #[command(
        after_help = "Example:\n  imgpub aws grant --region us-east-1 --image ami-0123456789abcdef0 --user 111122223333 --snapshot"
    )]
    Grant(PermissionArgs),
    /// Revoke what `grant` grants.
    #[command(
        after_help = "Example:\n  imgpub aws revoke --region us-east-1 --image ami-0123456789abcdef0 --public"
    )]
    Revoke(PermissionArgs),
    /// Make every AMI tagged for publication public (and its snapshot), whether it went
    /// private or never was public.
    #[command(
        after_help = "Example:\n  imgpub aws ensure-public --region us-east-1 --tag production=true --all-regions"
    )]
    EnsurePublic(EnsurePublicArgs),
    /// Terminate this account's instances tagged CreatedBy=mantle (kola's) launched longer
    /// ago than --duration, as ore; --images collects old tagged AMIs instead.
    #[command(
        after_help = "Example:\n  imgpub aws gc --region us-east-1 --duration 1h30m --dry-run\n  imgpub aws gc --region us-east-1 --images --tag stream=testing --duration 72h"
    )]
    Gc(GcArgs),
    /// Write SSM parameters that point at the AMI in each region.
    #[command(
        after_help = "Example:\n  imgpub aws copy-regions --image ami-0123456789abcdef0 eu-west-1 | \\\n    imgpub aws publish-ssm --images-from - --parameter /os/stable/{arch}/latest"
    )]
    PublishSsm(PublishSsmArgs),
    /// Print the least-privilege IAM policy for the chosen commands (needs no credentials).
    #[command(
        after_help = "Example:\n  imgpub aws policy --for upload,copy --bucket my-images/ci --regions us-east-1,eu-west-1"
    )]
    Policy(PolicyArgs),
    /// Create (or repair) the role or user CI publishes with, holding exactly that policy.
    #[command(
        after_help = "Example:\n  imgpub aws create-publisher --role os-ci --trust-account 111122223333 \\\n    --generate-external-id --for upload,copy --bucket my-images/ci"
    )]
    CreatePublisher(Box<CreatePublisherArgs>),
}

#[cfg(test)]
mod docs_commands;

#[cfg(test)]
mod tests {
    mod properties {
        use super::super::{parse_duration, parse_size};
        use proptest::prelude::*;

        const SIZE_UNITS: [(&str, u64); 10] = [
            ("", 0),
            ("M", 1 << 20),
            ("MB", 1 << 20),
            ("MiB", 1 << 20),
            ("k", 1 << 10),
            ("KiB", 1 << 10),
            ("kb", 1 << 10),
            ("G", 1 << 30),
            ("GiB", 1 << 30),
            ("gb", 1 << 30),
        ];
        const DURATION_UNITS: [(&str, u64); 5] =
            [("", 0), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)];

        proptest! {
            #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

            #[test]
            fn sizes_parse_exactly_or_are_refused(n in prop_oneof![any::<u64>(), 0u64..1 << 20], unit in 0usize..10) {
                let (suffix, mult) = SIZE_UNITS[unit];
                let got = parse_size(&format!("{n}{suffix}"));
                match n.checked_mul(mult) {
                    // A bare number has no unit: refused.
                    _ if suffix.is_empty() => prop_assert!(got.unwrap_err().contains("no unit")),
                    Some(bytes) => prop_assert_eq!(got, Ok(bytes)),
                    None => prop_assert!(got.unwrap_err().contains("larger than any file")),
                }
            }

            #[test]
            fn durations_parse_exactly_or_are_refused(n in prop_oneof![any::<u64>(), 0u64..1 << 20], unit in 0usize..5) {
                let (suffix, mult) = DURATION_UNITS[unit];
                let got = parse_duration(&format!("{n}{suffix}"));
                match n.checked_mul(mult) {
                    // A bare number has no unit: refused, but for Go's "0".
                    _ if suffix.is_empty() && n != 0 => prop_assert!(got.unwrap_err().contains("without a unit")),
                    Some(secs) => prop_assert_eq!(got, Ok(std::time::Duration::from_secs(secs))),
                    None => prop_assert!(got.unwrap_err().contains("too long")),
                }
            }

            #[test]
            fn any_text_is_a_size_or_duration_or_an_error_naming_it(text in "\\PC{0,24}|[0-9]{0,25}[a-zA-Z]{0,4}") {
                if let Err(e) = parse_size(&text) {
                    prop_assert!(e.contains(&format!("{text:?}")), "{}", e);
                }
                if let Err(e) = parse_duration(&text) {
                    prop_assert!(e.contains(&format!("{text:?}")), "{}", e);
                }
            }
        }
    }

    use super::*;

    #[test]
    fn global_flags_anywhere() {
        let a = Cli::try_parse_ore([
            "imgpub",
            "aws",
            "initialize",
            "--region",
            "eu-west-1",
            "--log-level",
            "info",
        ])
        .unwrap();
        let b = Cli::try_parse_ore([
            "imgpub",
            "--log-level",
            "INFO",
            "aws",
            "--region",
            "eu-west-1",
            "initialize",
        ])
        .unwrap();
        for cli in [a, b] {
            assert_eq!(cli.effective_log_level(), LogLevel::Info);
            let TopCommand::Aws(aws) = cli.command else {
                panic!("not aws")
            };
            assert_eq!(aws.aws.region.as_deref(), Some("eu-west-1"));
        }
    }

    #[test]
    fn delete_object_takes_ore_value_syntax() {
        for (args, want) in [
            (vec![], true),
            (vec!["--delete-object"], true),
            (vec!["--delete-object=false"], false),
            (vec!["--delete-object", "false"], false),
        ] {
            let mut argv = vec!["imgpub", "aws", "upload"];
            argv.extend(args);
            let cli = Cli::try_parse_ore(argv).unwrap();
            let TopCommand::Aws(aws) = cli.command else {
                panic!("not aws")
            };
            let Some(AwsSubcommand::Upload(up)) = aws.command else {
                panic!("not upload")
            };
            assert_eq!(up.delete_object, want);
        }
    }

    #[test]
    fn every_flag_takes_a_cobra_bool() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["imgpub", "aws", "upload"];
            argv.extend(args);
            let cli = Cli::try_parse_ore(argv)?;
            let TopCommand::Aws(aws) = cli.command else {
                panic!("not aws")
            };
            let Some(AwsSubcommand::Upload(up)) = aws.command else {
                panic!("not upload")
            };
            Ok::<_, clap::Error>((up.public, up.force, up.delete_object, cli.verbose))
        };
        assert_eq!(parse(&[]).unwrap(), (false, false, true, false));
        assert_eq!(
            parse(&["--public", "--force", "-v"]).unwrap(),
            (true, true, true, true)
        );
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            let on = format!("--public={t}");
            assert!(parse(&[&on]).unwrap().0, "{t}");
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            let off = format!("--force={f}");
            let del = format!("--delete-object={f}");
            let v = format!("--verbose={f}");
            assert_eq!(
                parse(&[&off, &del, &v]).unwrap(),
                (false, false, false, false)
            );
        }
        let err = parse(&["--public=yes"]).unwrap_err().to_string();
        assert!(err.contains("not a boolean"), "{err}");
        // As with cobra, a bool takes its value only with `=`.
        assert!(parse(&["--public", "false"]).is_err());
    }

    #[test]
    fn sizes_and_durations_that_overflow_are_errors() {
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert!(parse_size("18446744073709551615GiB").is_err());
        assert_eq!(parse_duration("90d").unwrap().as_secs(), 90 * 86400);
        assert!(parse_duration("18446744073709551615d").is_err());
    }

    #[test]
    fn durations_take_gos_forms_and_refuse_bare_numbers() {
        let d = |s| parse_duration(s).map(|d| d.as_nanos());
        let h = 3_600_000_000_000u128;
        assert_eq!(d("1h30m"), Ok(h * 3 / 2));
        assert_eq!(d("1.5h"), Ok(h * 3 / 2));
        assert_eq!(d("5h0m0s"), Ok(5 * h));
        assert_eq!(d("500ms"), Ok(500_000_000));
        assert_eq!(d(".5s"), Ok(500_000_000));
        assert_eq!(d("1µs"), Ok(1_000));
        assert_eq!(
            d("2h45m30.5s"),
            Ok(2 * h + 45 * 60_000_000_000 + 30_500_000_000)
        );
        assert_eq!(d("0"), Ok(0));
        for bad in ["90", "1h30", "h", ".s", "-5h", "5 h", "5x", ""] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("90").unwrap_err().contains("1h30m"));
    }

    #[test]
    fn ores_log_levels_and_precedence() {
        let level = |extra: &[&str]| {
            let mut argv = vec!["imgpub"];
            argv.extend_from_slice(extra);
            argv.extend(["aws", "list-regions"]);
            Cli::try_parse_ore(argv).unwrap().effective_log_level()
        };
        for (form, want) in [
            ("C", LogLevel::Critical),
            ("E", LogLevel::Error),
            ("0", LogLevel::Error),
            ("W", LogLevel::Warning),
            ("1", LogLevel::Warning),
            ("N", LogLevel::Notice),
            ("2", LogLevel::Notice),
            ("I", LogLevel::Info),
            ("3", LogLevel::Info),
            ("D", LogLevel::Debug),
            ("4", LogLevel::Debug),
            ("T", LogLevel::Trace),
            ("5", LogLevel::Trace),
            ("WARNING", LogLevel::Warning),
        ] {
            assert_eq!(level(&["--log-level", form]), want, "{form}");
        }
        // ore: -d over -v over --log-level.
        assert_eq!(level(&["--log-level", "E", "-v"]), LogLevel::Info);
        assert_eq!(level(&["--log-level", "E", "-v", "-d"]), LogLevel::Debug);
        assert_eq!(level(&[]), LogLevel::Notice);
    }

    #[test]
    fn bad_log_level_is_refused() {
        let err = Cli::try_parse_ore(["imgpub", "--log-level", "LOUD", "aws", "initialize"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown log level"), "{err}");
    }
}
