//! The command line: ore-compatible names and meanings (`ore aws upload …` users switch by
//! renaming the binary). Global and AWS flags are `global = true` so, as with cobra's
//! persistent flags, they are accepted anywhere after their command word.

pub mod output;

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use imgpub::aws::ami::{Arch, BootMode, Change, SriovNetSupport, TpmSupport, VolumeType};
use imgpub::aws::config::{AwsSettings, Secret};
use imgpub::aws::multipart::Transfer;
use imgpub::aws::preflight::PreflightMode;
use imgpub::commands::copy_regions::CopyOptions;
use imgpub::commands::create_publisher::PublisherOptions;
use imgpub::commands::delete_image::DeleteOptions;
use imgpub::commands::ensure_public::EnsurePublicOptions;
use imgpub::commands::gc::{Collect, GcOptions};
use imgpub::commands::grant::{GrantOptions, Permissions};
use imgpub::commands::initialize::InitializeOptions;
use imgpub::commands::list_regions::ListRegionsOptions;
use imgpub::commands::policy::{self, For, PolicyOptions, PrintPolicy};
use imgpub::commands::publish_ssm::PublishSsmOptions;
use imgpub::commands::upload::{Deprecate, Publish, Stage, UploadOptions, Via};
use imgpub::commands::upload_object::UploadObjectOptions;
use imgpub::image::ObjectFormat;
use imgpub::names::Named;

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
            imgpub::aws::multipart::kernels()
        );
        ore_bools(<Cli as clap::CommandFactory>::command().long_version(long_version))
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
    /// Deregister an AMI and delete its snapshot.
    #[command(
        after_help = "Example:\n  imgpub aws delete-image --region us-east-1 --ami ami-0123456789abcdef0"
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
    /// Make AMIs tagged for publication public again where they went private.
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

#[derive(Debug, Clone, Args)]
pub struct InitializeArgs {
    /// Bucket for image uploads (NAME or s3://NAME). Default: imgpub-<account>-<region>.
    #[arg(long, value_name = "NAME")]
    pub bucket: Option<String>,

    /// Name of the VM Import/Export service role.
    #[arg(long, default_value = "vmimport", value_name = "NAME")]
    pub role_name: String,

    /// Also grant the role write access to this bucket, for image exports.
    #[arg(long, value_name = "NAME")]
    pub export_bucket: Option<String>,

    /// Let the role use this KMS key (encrypted snapshots).
    #[arg(long, value_name = "ARN")]
    pub kms_key: Option<String>,

    /// Let the role call License Manager (for imports that carry licenses).
    #[arg(long)]
    pub license_manager: bool,

    /// The service principal VM Import/Export uses.
    #[arg(long, default_value = "vmie.amazonaws.com", value_name = "PRINCIPAL")]
    pub service_principal: String,

    /// A permissions boundary (policy ARN) for the role.
    #[arg(long, value_name = "ARN")]
    pub permissions_boundary: Option<String>,

    /// Abort incomplete multipart uploads in the bucket after this many days (a rerun
    /// resumes one until then); 0 leaves the bucket's lifecycle alone.
    #[arg(long, default_value_t = 7, value_name = "DAYS")]
    pub abort_incomplete_days: i32,

    /// Add the confused-deputy conditions (aws:SourceAccount, aws:SourceArn) to a trust
    /// policy that lacks them (ore's, AWS's documented one); otherwise it is left as it is.
    #[arg(long)]
    pub harden_trust: bool,

    /// Print what would be created or changed, one JSON line per call; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The flags of `ore aws upload`, shared by the stage commands.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Disk image to upload (image.vmdk, image.raw).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// s3://bucket/prefix to upload to.
    #[arg(long, value_name = "S3_URL")]
    pub bucket: Option<String>,
    /// Name for the object, snapshot and AMI (default: the file name).
    #[arg(long)]
    pub name: Option<String>,
    /// AMI name (default: --name).
    #[arg(long)]
    pub ami_name: Option<String>,
    /// AMI description.
    #[arg(long)]
    pub ami_description: Option<String>,
    /// Architecture: x86_64 (amd64) or arm64 (aarch64).
    #[arg(long, default_value = "x86_64", value_parser = parse_arch)]
    pub arch: Arch,
    /// Root volume size in GiB.
    #[arg(long)]
    pub disk_size_gib: Option<u32>,
    /// Take the root volume size from the image's virtual size.
    #[arg(long)]
    pub disk_size_inspect: bool,
    /// Delete the S3 object once the snapshot exists.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, value_parser = parse_bool, value_name = "BOOL")]
    pub delete_object: bool,
    /// Replace an existing AMI, snapshot and object of the same name.
    #[arg(long)]
    pub force: bool,
    /// Use this existing s3:// object instead of uploading.
    #[arg(long, value_name = "S3_URL")]
    pub source_object: Option<String>,
    /// Use this existing snapshot instead of importing.
    #[arg(long, alias = "snapshot", value_name = "SNAPSHOT_ID")]
    pub source_snapshot: Option<String>,
    /// Image format (default: detected from the file).
    #[arg(long, value_parser = named::<ObjectFormat>(), ignore_case = true)]
    pub object_format: Option<ObjectFormat>,
    /// Make the AMI and its snapshot public.
    #[arg(long)]
    pub public: bool,
    /// Grant launch permission to these account ids.
    #[arg(long, value_delimiter = ',')]
    pub grant_user: Vec<String>,
    /// Grant createVolumePermission on the snapshot to these account ids.
    #[arg(long, value_delimiter = ',')]
    pub grant_user_snapshot: Vec<String>,
    /// Tags for the AMI and snapshot, key=value.
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Require IMDSv2 on instances launched from the AMI.
    #[arg(long)]
    pub imdsv2_only: bool,
    /// Root volume type.
    #[arg(long, value_parser = named::<VolumeType>(), ignore_case = true, default_value = "gp3")]
    pub volume_type: VolumeType,
    /// x86_64 boot mode.
    #[arg(long, value_parser = named::<BootMode>(), ignore_case = true, default_value = "uefi-preferred")]
    pub x86_boot_mode: BootMode,
    /// Boot mode for any architecture (arm64: uefi only); over --x86-boot-mode.
    #[arg(long, value_parser = named::<BootMode>(), ignore_case = true)]
    pub boot_mode: Option<BootMode>,
    /// TPM support; needs UEFI.
    #[arg(long, value_parser = named::<TpmSupport>(), ignore_case = true)]
    pub tpm_support: Option<TpmSupport>,
    /// The UEFI variable store for Secure Boot: a file of base64, as `uefivars -O aws`
    /// writes it.
    #[arg(long, value_name = "FILE")]
    pub uefi_data: Option<PathBuf>,
    /// Enhanced networking with the Intel 82599 VF: simple (as ore registers), or off.
    #[arg(long, value_parser = named::<SriovNetSupport>(), ignore_case = true, default_value = "simple")]
    pub sriov_net_support: SriovNetSupport,
    /// Deprecate the AMI this long from now (e.g. 90d, 2160h); copies keep the date.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", conflicts_with = "deprecate_at")]
    pub deprecate_in: Option<std::time::Duration>,
    /// Deprecate the AMI at this time (RFC 3339, e.g. 2027-06-01T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub deprecate_at: Option<String>,
    /// Encrypt the imported snapshot (with the account's default EBS key, or --kms-key's).
    /// An encrypted snapshot cannot be public.
    #[arg(long)]
    pub encrypted: bool,
    /// The KMS key (id, alias or ARN) to encrypt the imported snapshot with; implies
    /// --encrypted. The vmimport role needs to use it (`initialize --kms-key`).
    #[arg(long, value_name = "KEY")]
    pub kms_key: Option<String>,
    /// Billing product codes for the AMI.
    #[arg(long, value_delimiter = ',')]
    pub billing_product_code: Vec<String>,
    /// The IAM role VM Import/Export assumes.
    #[arg(long, default_value = "vmimport", value_name = "NAME")]
    pub role_name: String,
    #[command(flatten)]
    pub transfer: TransferArgs,
    #[command(flatten)]
    pub via: ViaArgs,
    /// --via ebs-direct: 512 KiB blocks read and sent at once (memory is about this × 512 KiB).
    #[arg(long, default_value_t = imgpub::aws::ebs_direct::DEFAULT_BLOCKS_IN_FLIGHT, value_parser = clap::value_parser!(u16).range(1..=1024), value_name = "N", help_heading = "Transfer options")]
    pub blocks_in_flight: u16,
    /// --via ebs-direct: also send blocks the image wrote as all zeros to an unencrypted
    /// snapshot (an encrypted one always gets them: it reads unwritten blocks as garbage).
    /// For AMIs that will be launched as encrypted volumes. Holes are never sent.
    #[arg(long)]
    pub send_zero_blocks: bool,
    /// Give up waiting for the import after this long, the wait for a free import slot
    /// included (e.g. 2h, 90m, 600s); the task keeps running in AWS and a rerun picks it up.
    #[arg(long, default_value = "2h", value_parser = parse_duration, value_name = "DURATION")]
    pub import_timeout: std::time::Duration,
    /// Print the calls that would change something, one JSON line each, after every local
    /// and read-only check; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `--via`: how `upload` makes its snapshot (flag of `upload` and of `policy`).
#[derive(Debug, Clone, Args)]
pub struct ViaArgs {
    /// How the image becomes a snapshot: s3 (multipart upload, then ImportSnapshot: ore's
    /// path) or ebs-direct (its blocks written straight into a snapshot with the EBS direct
    /// APIs: no bucket, no vmimport role, no import queue; raw and VMDK images).
    #[arg(
        long,
        value_enum,
        env = "IMGPUB_VIA",
        default_value = "s3",
        value_name = "PATH"
    )]
    pub via: Via,
}

/// How the multipart upload engine sends a file.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Transfer options")]
pub struct TransferArgs {
    /// Multipart part size (e.g. 16MiB; a bare number is MiB). Grown as needed to fit 10,000 parts.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub part_size: Option<u64>,
    /// Parts uploaded at once (memory is about this × part size).
    #[arg(long, default_value_t = imgpub::aws::multipart::DEFAULT_CONCURRENCY, value_name = "N")]
    pub upload_concurrency: usize,
}

#[derive(Debug, Args)]
pub struct UploadObjectArgs {
    /// The file to upload.
    #[arg(long, value_name = "PATH")]
    pub file: PathBuf,
    /// s3://BUCKET/PREFIX to upload to.
    #[arg(long, value_name = "S3_URL")]
    pub bucket: String,
    /// The object's name under the prefix (default: the file name).
    #[arg(long)]
    pub key: Option<String>,
    /// Send the file even if a matching object is already there.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

/// A parser for the values of `T`, by name or another spelling; `--help` and the shell
/// completions list them.
fn named<T: Named + Clone>() -> impl clap::builder::TypedValueParser<Value = T> {
    let values = T::NAMES
        .iter()
        .map(|(_, name, aliases)| PossibleValue::new(*name).aliases(aliases.iter().copied()));
    PossibleValuesParser::new(values).try_map(|s| T::from_name(&s).ok_or("not one of its values"))
}

/// `--arch` in ore's spellings, any case.
fn parse_arch(s: &str) -> Result<Arch, String> {
    Arch::from_name(s)
        .ok_or_else(|| format!("unknown --arch {s:?}; use x86_64 (or amd64) or arm64 (or aarch64)"))
}

/// `16MiB`, `16M`, `1GiB`, `512KiB`, or a bare number of MiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 16MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1 << 20,
        "k" | "kb" | "kib" => 1 << 10,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?} has an unknown unit; use KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is larger than any file"))
}

/// A duration in Go's forms, as ore's flags take them (`time.ParseDuration`): one or more
/// number-and-unit pairs, `1h30m`, `1.5h`, `500ms`, `5h0m0s`; units ns, us (µs), ms, s, m, h,
/// and imgpub's d. A bare number is refused (is `90` seconds or days?), except `0`, as Go.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    const FORMS: &str = "give a number with a unit, or several: 90m, 1h30m, 1.5h, 600s, 2d";
    let bad = || format!("{s:?} is not a duration; {FORMS}");
    let t = s.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    if t == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if t.starts_with('-') {
        return Err(format!("{s:?} is negative; {FORMS}"));
    }
    if t.is_empty() {
        return Err(bad());
    }
    let digits = |r: &str| r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
    let too_long = || format!("{s:?} is too long a duration");
    let mut nanos: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let (whole, after) = rest.split_at(digits(rest));
        let (fraction, after) = match after.strip_prefix('.') {
            Some(r) => r.split_at(digits(r)),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(bad());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "" => return Err(format!("{s:?} has a number without a unit; {FORMS}")),
            _ => return Err(format!("{s:?} has an unknown unit {unit:?}; {FORMS}")),
        };
        let whole: u128 = match whole {
            "" => 0,
            w => w.parse().map_err(|_| too_long())?,
        };
        // The fraction to nanosecond precision at most: 18 digits are more than that.
        let fraction = &fraction[..fraction.len().min(18)];
        let part = match fraction {
            "" => 0,
            f => f.parse::<u128>().map_err(|_| bad())? * per / 10u128.pow(f.len() as u32),
        };
        nanos = whole
            .checked_mul(per)
            .and_then(|n| n.checked_add(part))
            .and_then(|n| n.checked_add(nanos))
            .ok_or_else(too_long)?;
        rest = after;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_long())?;
    Ok(std::time::Duration::new(
        secs,
        (nanos % 1_000_000_000) as u32,
    ))
}

#[derive(Debug, Args)]
pub struct CopyRegionsArgs {
    /// The AMI to copy (in the command's region).
    #[arg(long)]
    pub image: String,
    /// Copy to every enabled region.
    #[arg(long)]
    pub all_regions: bool,
    /// Copies in flight at once.
    #[arg(long, default_value_t = imgpub::aws::copy::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Give up waiting for a copy after this long (e.g. 2h, 90m); it keeps going in AWS and a
    /// rerun picks it up.
    #[arg(long, default_value = "2h", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: std::time::Duration,
    /// Destination regions.
    pub regions: Vec<String>,
    /// Print the calls that would change something, one JSON line each, after every local
    /// and read-only check; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ListRegionsArgs {
    /// List regions not enabled for the account instead.
    #[arg(long)]
    pub disabled: bool,
    /// List all regions.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct DeleteImageArgs {
    /// The AMI to deregister.
    #[arg(long)]
    pub ami: Option<String>,
    /// The snapshot to delete, or detectFromAMI.
    #[arg(long)]
    pub snapshot: Option<String>,
    /// A missing AMI or snapshot is not an error.
    #[arg(long)]
    pub allow_missing: bool,
    /// Print the calls that would change something, one JSON line each, after every local
    /// and read-only check; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The AMIs a command acts on, in one region or many.
#[derive(Debug, Args)]
pub struct ImageSelection {
    /// The AMI: ami-… in the command's region, or REGION=ami-… (repeatable).
    #[arg(long = "image", value_name = "[REGION=]AMI")]
    pub images: Vec<String>,
    /// Also the AMIs in the JSON lines `copy-regions` printed (a file, or - for stdin).
    #[arg(long, value_name = "FILE")]
    pub images_from: Option<String>,
}

#[derive(Debug, Args)]
pub struct PermissionArgs {
    #[command(flatten)]
    pub images: ImageSelection,
    /// AWS account ids.
    #[arg(long = "user", value_delimiter = ',', value_name = "ACCOUNT")]
    pub users: Vec<String>,
    /// Everyone (launch permission group `all`; `all` on the snapshot).
    #[arg(long)]
    pub public: bool,
    /// AWS Organizations ARNs.
    #[arg(long = "organization", value_name = "ARN")]
    pub organizations: Vec<String>,
    /// Organizational unit ARNs.
    #[arg(long = "organizational-unit", value_name = "ARN")]
    pub organizational_units: Vec<String>,
    /// Also change the root snapshot's create-volume permissions (for --user and --public).
    #[arg(long)]
    pub snapshot: bool,
    /// Print the calls that would change something, one JSON line each, after every local
    /// and read-only check; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct EnsurePublicArgs {
    /// The tag that marks AMIs to keep public, KEY=VALUE (repeatable; all must match;
    /// default: production=true, as ore).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// One AMI (in --region) instead of the tagged ones.
    #[arg(long, value_name = "AMI")]
    pub ami: Option<String>,
    /// Check every enabled region.
    #[arg(long)]
    pub all_regions: bool,
    /// Print the calls that would change something, one JSON line each, after every local
    /// and read-only check; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Regions to check (default: the command's region).
    pub regions: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// How long ago an instance must have been launched (or, with --images, an AMI
    /// created) to be garbage: Go's forms, as ore (5h, 1h30m, 1.5h, 90m, 72h).
    #[arg(long, default_value = "5h", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: std::time::Duration,
    /// The tag that marks what to collect, KEY=VALUE (repeatable; all must match;
    /// default: CreatedBy=mantle, the tag kola puts on its instances).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Collect AMIs and their snapshots instead of instances (never the default: ore's gc
    /// terminates instances and leaves images alone).
    #[arg(long)]
    pub images: bool,
    /// With --images: also delete public AMIs (kept by default: someone may launch them).
    #[arg(long, requires = "images")]
    pub include_public: bool,
    /// Look in every enabled region.
    #[arg(long)]
    pub all_regions: bool,
    /// Print the calls that would change something, one JSON line each, after every local
    /// and read-only check; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Regions to look in (default: the command's region).
    pub regions: Vec<String>,
}

impl From<&GcArgs> for GcOptions {
    fn from(a: &GcArgs) -> Self {
        GcOptions {
            duration: a.duration,
            tags: a.tags.clone(),
            collect: if a.images {
                Collect::Images {
                    include_public: a.include_public,
                }
            } else {
                Collect::Instances
            },
            regions: a.regions.clone(),
            all_regions: a.all_regions,
        }
    }
}

#[derive(Debug, Args)]
pub struct PublishSsmArgs {
    #[command(flatten)]
    pub images: ImageSelection,
    /// Parameter name template (repeatable): {region}, {arch}, {name} (the AMI name) and
    /// {tag:KEY}, e.g. /os/{tag:stream}/{arch}/latest.
    #[arg(long = "parameter", value_name = "TEMPLATE", required = true)]
    pub parameters: Vec<String>,
    /// Replace a parameter that points at a different AMI.
    #[arg(long)]
    pub overwrite: bool,
    /// How long to wait for each parameter to hold its AMI: SSM checks an aws:ec2:image
    /// value after PutParameter answered, and does not write it when the check fails.
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "DURATION")]
    pub validation_timeout: std::time::Duration,
    /// Print the calls that would change something, one JSON line each, after every local
    /// and read-only check; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(flatten)]
    pub scope: PolicyScopeArgs,
    /// aws, aws-cn or aws-us-gov (default: the caller's, else the region's).
    #[arg(long, value_name = "PARTITION")]
    pub partition: Option<String>,
    /// The account id in ARNs (default: the caller's, else *).
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
    /// The role or user that will hold the policy: the preflight's
    /// iam:SimulatePrincipalPolicy is granted on it alone (default: *, which lets the
    /// holder read every principal's permissions).
    #[arg(long, value_name = "ARN")]
    pub principal: Option<String>,
    /// json (the document) or table (action, resource, why).
    #[arg(long, value_enum, default_value = "json")]
    pub format: PolicyFormat,
}

/// What a publisher may do: `policy`'s flags, shared with `create-publisher`.
#[derive(Debug, Clone, Args)]
pub struct PolicyScopeArgs {
    /// The commands the identity runs (comma list; default upload).
    #[arg(
        long = "for",
        value_enum,
        value_delimiter = ',',
        value_name = "COMMAND"
    )]
    pub commands: Vec<For>,
    /// The image bucket, BUCKET[/PREFIX] (default: initialize's imgpub-ACCOUNT-REGION).
    #[arg(long, value_name = "BUCKET[/PREFIX]")]
    pub bucket: Option<String>,
    /// Limit EC2 and SSM to these regions (comma list; default: all).
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub regions: Vec<String>,
    /// With --for copy: the regions copied from (comma list; default: --region). EC2
    /// authorizes CopyImage on the source AMI as well as the copy.
    #[arg(long, value_delimiter = ',', value_name = "REGION")]
    pub source_region: Vec<String>,
    /// Limit SSM parameters to this path, e.g. /os/.
    #[arg(long, value_name = "PATH")]
    pub ssm_prefix: Option<String>,
    /// Allow making snapshots public (group all).
    #[arg(long)]
    pub public: bool,
    #[command(flatten)]
    pub via: ViaArgs,
    /// Allow sharing snapshots only with these accounts (comma list).
    #[arg(long, value_delimiter = ',', value_name = "ACCOUNT")]
    pub share_with: Vec<String>,
    /// The VM Import/Export role.
    #[arg(long, default_value = "vmimport", value_name = "NAME")]
    pub role_name: String,
    /// With --for gc: the tags of the instances gc may terminate, KEY=VALUE (repeatable;
    /// default CreatedBy=mantle, as gc's --tag).
    #[arg(long = "gc-tag", value_name = "KEY=VALUE")]
    pub gc_tags: Vec<String>,
    /// A customer managed KMS key the publisher encrypts with or copies from, by ARN
    /// (repeatable): `upload --kms-key`'s, the account's default EBS key if it is one, the
    /// key of an AMI copied. Grants the kms: actions EBS needs on it; none without.
    #[arg(long = "kms-key", value_name = "ARN")]
    pub kms_keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CreatePublisherArgs {
    /// A role CI assumes (with an External ID, or through GitHub Actions' OIDC).
    #[arg(long, value_name = "NAME")]
    pub role: Option<String>,
    /// A dedicated user with static keys.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// The principal that assumes the role (an account root, a user or a role ARN); with
    /// --external-id ID (the global flag) or --generate-external-id.
    #[arg(long, value_name = "ARN")]
    pub trust_principal: Option<String>,
    /// The account whose principals assume the role (its root).
    #[arg(long, value_name = "ID")]
    pub trust_account: Option<String>,
    /// Make up an External ID (a rerun keeps the role's).
    #[arg(long)]
    pub generate_external_id: bool,
    /// GitHub Actions runs of ORG/REPO on one ref or environment:
    /// ORG/REPO:ref:refs/heads/main or ORG/REPO:environment:NAME.
    #[arg(long, value_name = "ORG/REPO:REF")]
    pub github_repo: Option<String>,
    /// With --github-repo ORG/REPO: trust every branch, tag, pull request and environment
    /// of the repository (a wildcard subject).
    #[arg(long)]
    pub github_any_ref: bool,
    /// A permissions boundary (policy ARN) for the role or user.
    #[arg(long, value_name = "ARN")]
    pub permissions_boundary: Option<String>,
    /// Take over a role or user of that name that imgpub did not make (it is tagged
    /// imgpub:publisher=adopted; its other policies are reported, not removed).
    #[arg(long)]
    pub adopt: bool,
    /// Replace the trust policy of an existing role when it differs (the difference is
    /// shown, and without this flag nothing is changed).
    #[arg(long)]
    pub replace_trust: bool,
    /// With --user: a new access key even when the user has one; the old one is
    /// deactivated once the new one is written.
    #[arg(long)]
    pub rotate_key: bool,
    /// With --rotate-key: delete the old key instead of deactivating it.
    #[arg(long, requires = "rotate_key")]
    pub delete_old_key: bool,
    /// With --user: the new shared-credentials file for the key (mode 0600; never
    /// replaced). Use it with `--credentials-file`.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Print the calls that would create or repair something; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub scope: PolicyScopeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyFormat {
    Json,
    Table,
}

// What the flags mean to the library.

impl AwsFlags {
    /// The flags with what the environment supplies for those not given (read here, not by
    /// clap, so usage errors never show a value from the environment as if typed).
    pub fn with_environment(mut self) -> AwsFlags {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        self.role_arn = self.role_arn.or_else(|| env("IMGPUB_ROLE_ARN"));
        self.external_id = self.external_id.or_else(|| env("IMGPUB_EXTERNAL_ID"));
        self.role_session_name = self
            .role_session_name
            .or_else(|| env("IMGPUB_ROLE_SESSION_NAME"));
        self
    }

    pub fn settings(&self) -> AwsSettings {
        AwsSettings {
            region: self.region.clone(),
            profile: self.profile.clone(),
            credentials_file: self.credentials_file.clone(),
            access_id: self.access_id.clone(),
            secret_key: self.secret_key.clone().map(Secret::new),
            endpoint_url: self.endpoint_url.clone(),
            role_arn: self.role_arn.clone(),
            external_id: self.external_id.clone(),
            role_session_name: self.role_session_name.clone(),
        }
    }
}

impl TransferArgs {
    fn transfer(&self) -> Transfer {
        Transfer {
            part_size: self.part_size,
            concurrency: self.upload_concurrency,
        }
    }
}

impl From<&InitializeArgs> for InitializeOptions {
    fn from(a: &InitializeArgs) -> Self {
        let a = a.clone();
        InitializeOptions {
            bucket: a.bucket,
            role_name: a.role_name,
            export_bucket: a.export_bucket,
            kms_key: a.kms_key,
            license_manager: a.license_manager,
            service_principal: a.service_principal,
            permissions_boundary: a.permissions_boundary,
            abort_incomplete_days: Some(a.abort_incomplete_days).filter(|d| *d != 0),
            harden_trust: a.harden_trust,
        }
    }
}

impl From<UploadArgs> for UploadOptions {
    fn from(a: UploadArgs) -> Self {
        UploadOptions {
            part_size: a.transfer.part_size,
            upload_concurrency: a.transfer.upload_concurrency,
            blocks_in_flight: usize::from(a.blocks_in_flight),
            send_zero_blocks: a.send_zero_blocks,
            via: a.via.via,
            file: a.file,
            bucket: a.bucket,
            name: a.name,
            ami_name: a.ami_name,
            ami_description: a.ami_description,
            arch: a.arch,
            x86_boot_mode: a.x86_boot_mode,
            tpm_support: a.tpm_support,
            imdsv2_only: a.imdsv2_only,
            volume_type: a.volume_type,
            disk_size_gib: a.disk_size_gib,
            disk_size_inspect: a.disk_size_inspect,
            delete_object: a.delete_object,
            force: a.force,
            source_object: a.source_object,
            source_snapshot: a.source_snapshot,
            object_format: a.object_format,
            public: a.public,
            grant_user: a.grant_user,
            grant_user_snapshot: a.grant_user_snapshot,
            tags: a.tags,
            billing_product_codes: a.billing_product_code,
            role_name: a.role_name,
            import_timeout: a.import_timeout,
            boot_mode: a.boot_mode,
            uefi_data: a.uefi_data,
            sriov: a.sriov_net_support,
            deprecate: match (a.deprecate_in, a.deprecate_at) {
                (Some(after), _) => Some(Deprecate::In(after)),
                (None, Some(at)) => Some(Deprecate::At(at)),
                (None, None) => None,
            },
            encrypted: a.encrypted,
            kms_key: a.kms_key,
        }
    }
}

impl From<UploadObjectArgs> for UploadObjectOptions {
    fn from(a: UploadObjectArgs) -> Self {
        UploadObjectOptions {
            transfer: a.transfer.transfer(),
            file: a.file,
            bucket: a.bucket,
            key: a.key,
            force: a.force,
        }
    }
}

impl From<CopyRegionsArgs> for CopyOptions {
    fn from(a: CopyRegionsArgs) -> Self {
        CopyOptions {
            image: a.image,
            regions: a.regions,
            all_regions: a.all_regions,
            concurrency: a.concurrency,
            timeout: a.timeout,
        }
    }
}

impl From<DeleteImageArgs> for DeleteOptions {
    fn from(a: DeleteImageArgs) -> Self {
        DeleteOptions {
            ami: a.ami,
            snapshot: a.snapshot,
            allow_missing: a.allow_missing,
        }
    }
}

impl PermissionArgs {
    pub fn command(&self, change: Change) -> Permissions {
        Permissions {
            opts: GrantOptions {
                change,
                users: self.users.clone(),
                public: self.public,
                organizations: self.organizations.clone(),
                organizational_units: self.organizational_units.clone(),
                snapshot: self.snapshot,
            },
            images: (&self.images).into(),
        }
    }
}

impl From<&ImageSelection> for imgpub::aws::images::ImageSelection {
    fn from(a: &ImageSelection) -> Self {
        imgpub::aws::images::ImageSelection {
            images: a.images.clone(),
            images_from: a.images_from.clone(),
        }
    }
}

impl From<&PublishSsmArgs> for PublishSsmOptions {
    fn from(a: &PublishSsmArgs) -> Self {
        PublishSsmOptions {
            images: (&a.images).into(),
            parameters: a.parameters.clone(),
            overwrite: a.overwrite,
            validation_timeout: a.validation_timeout,
        }
    }
}

impl From<&ListRegionsArgs> for ListRegionsOptions {
    fn from(a: &ListRegionsArgs) -> Self {
        ListRegionsOptions {
            disabled: a.disabled,
            all: a.all,
        }
    }
}

impl From<&PolicyArgs> for PrintPolicy {
    fn from(a: &PolicyArgs) -> Self {
        PrintPolicy {
            opts: a.into(),
            format: match a.format {
                PolicyFormat::Json => policy::Format::Json,
                PolicyFormat::Table => policy::Format::Table,
            },
        }
    }
}

impl UploadArgs {
    /// The stages of `stage`, as these flags ask.
    pub fn publish(self, stage: Stage) -> Publish {
        Publish {
            stage,
            opts: self.into(),
        }
    }
}

impl PolicyScopeArgs {
    fn options(&self) -> PolicyOptions {
        PolicyOptions {
            commands: self.commands.clone(),
            bucket: self.bucket.clone(),
            regions: self.regions.clone(),
            source_regions: self.source_region.clone(),
            ssm_prefix: self.ssm_prefix.clone(),
            public: self.public,
            share_with: self.share_with.clone(),
            role_name: self.role_name.clone(),
            partition: None,
            account: None,
            via: self.via.via,
            principal: None,
            gc_tags: self.gc_tags.clone(),
            kms_keys: self.kms_keys.clone(),
        }
    }
}

impl From<&PolicyArgs> for PolicyOptions {
    fn from(a: &PolicyArgs) -> Self {
        PolicyOptions {
            partition: a.partition.clone(),
            account: a.account.clone(),
            principal: a.principal.clone(),
            ..a.scope.options()
        }
    }
}

impl CreatePublisherArgs {
    /// Without `--role-arn`, the global `--external-id` is the new role's (taken out of
    /// `flags`), not one to assume a role with.
    pub fn options(&self, mut flags: AwsFlags) -> (AwsFlags, PublisherOptions) {
        let external_id = match flags.role_arn {
            None => flags.external_id.take(),
            Some(_) => None,
        };
        let opts = PublisherOptions {
            role: self.role.clone(),
            user: self.user.clone(),
            trust_principal: self.trust_principal.clone(),
            trust_account: self.trust_account.clone(),
            external_id,
            generate_external_id: self.generate_external_id,
            github_repo: self.github_repo.clone(),
            github_any_ref: self.github_any_ref,
            permissions_boundary: self.permissions_boundary.clone(),
            adopt: self.adopt,
            replace_trust: self.replace_trust,
            rotate_key: self.rotate_key,
            delete_old_key: self.delete_old_key,
            key_file: self.key_file.clone(),
            policy: self.scope.options(),
        };
        (flags, opts)
    }
}

impl From<&EnsurePublicArgs> for EnsurePublicOptions {
    fn from(a: &EnsurePublicArgs) -> Self {
        EnsurePublicOptions {
            tags: a.tags.clone(),
            ami: a.ami.clone(),
            regions: a.regions.clone(),
            all_regions: a.all_regions,
        }
    }
}

#[cfg(test)]
mod tests {
    mod properties {
        use super::super::{parse_duration, parse_size};
        use proptest::prelude::*;

        const SIZE_UNITS: [(&str, u64); 10] = [
            ("", 1 << 20),
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
