//! The flags of each command, as clap reads them.

use super::*;

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

    /// Keep the AMIs and snapshots imgpub deletes (release prune, delete-image, gc)
    /// restorable for DAYS (1 to 365) with Recycle Bin rules in this region; `release
    /// restore` brings them back. Rules are per region: run it in every region published to.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(i32).range(1..=365))]
    pub recycle_bin: Option<i32>,

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
    #[arg(long, default_value = "x86_64", value_parser = named::<Arch>(), ignore_case = true)]
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
    #[arg(long, default_value_t = imgpub::defaults::BLOCKS_IN_FLIGHT, value_parser = clap::value_parser!(u16).range(1..=1024), value_name = "N", help_heading = "Transfer options")]
    pub blocks_in_flight: u16,
    /// --via ebs-direct: also send blocks the image wrote as all zeros to an unencrypted
    /// snapshot (an encrypted one always gets them: it reads unwritten blocks as garbage).
    /// For AMIs that will be launched as encrypted volumes. Holes are never sent.
    #[arg(long)]
    pub send_zero_blocks: bool,
    /// --via ebs-direct: write the snapshot on an earlier release's (a snapshot id, or
    /// `auto`: the newest of the same `stream` tag, architecture and size), sending only
    /// the blocks that differ. Without that snapshot's block map on this machine, or for
    /// another size or key, the whole image is written and the run says why.
    #[arg(long, value_name = "SNAPSHOT|auto")]
    pub parent: Option<String>,
    /// --via ebs-direct: also keep each snapshot's block map in DIR
    /// (`DIR/block-maps/REGION/SNAPSHOT`), and look there for a parent's map after the
    /// cache. For CI runners whose cache is gone by the next release: keep DIR as an
    /// artifact, or restore it before the run.
    #[arg(long, value_name = "DIR")]
    pub block_maps: Option<std::path::PathBuf>,
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
    /// Multipart part size, with its unit (16MiB, 1GiB). Grown as needed to fit 10,000 parts.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub part_size: Option<u64>,
    /// Parts uploaded at once (memory is about this × part size).
    #[arg(long, default_value_t = imgpub::defaults::UPLOAD_CONCURRENCY, value_name = "N")]
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

#[derive(Debug, Args)]
pub struct CopyRegionsArgs {
    /// The AMI to copy (in the command's region).
    #[arg(long)]
    pub image: String,
    /// Copy to every enabled region.
    #[arg(long)]
    pub all_regions: bool,
    /// Copies in flight at once.
    #[arg(long, default_value_t = imgpub::defaults::COPY_CONCURRENCY)]
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
pub struct VerifySnapshotArgs {
    /// The image the snapshot should hold (raw or VMDK). Without it the snapshot is read
    /// for its block map alone (a lost one rebuilt, for a later --parent).
    #[arg(long, value_name = "IMAGE")]
    pub file: Option<PathBuf>,
    /// The completed snapshot to read back (snap-…).
    #[arg(long, value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Blocks read at once.
    #[arg(long, default_value_t = imgpub::defaults::BLOCKS_IN_FLIGHT, value_parser = clap::value_parser!(u16).range(1..=1024), value_name = "N")]
    pub blocks_in_flight: u16,
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
    /// The AMI to deregister. Its snapshot stays, as in ore, unless --snapshot or
    /// --with-snapshots says otherwise.
    #[arg(long)]
    pub ami: Option<String>,
    /// The snapshot to delete (snap-…), or detectFromAMI for the AMI's root snapshot.
    #[arg(long, conflicts_with = "with_snapshots")]
    pub snapshot: Option<String>,
    /// Delete every snapshot of each AMI with it.
    #[arg(long)]
    pub with_snapshots: bool,
    /// Also delete the AMI's copies: this account's AMIs of its name in every enabled
    /// region (what copy-regions made).
    #[arg(long)]
    pub all_regions: bool,
    /// AMIs to delete instead of --ami, in any region.
    #[command(flatten)]
    pub images: ImageSelection,
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
    /// With --via ebs-direct: allow `upload --parent` (a snapshot written on an earlier
    /// one). A parent cannot be limited by its tags: its holder may start a snapshot on any
    /// snapshot of the account.
    #[arg(long)]
    pub delta: bool,
    /// A release with `protect = true`: with --for copy, turning deregistration protection
    /// on (release apply); with --for prune, turning it off (release prune).
    #[arg(long)]
    pub protect: bool,
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
