//! One module per command, each a [`driver::Command`] that the one [`driver`] runs in the
//! same steps:
//!
//! 1. **validate**: flags and local files, without AWS;
//! 2. **plan**: read-only AWS lookups → a typed plan (what exists, what will be created or
//!    changed, in which region);
//! 3. **check**: the calls the plan will make, as data ([`crate::aws::calls::Call`]): what
//!    the permission preflight and `--dry-run` read;
//! 4. **apply**: does exactly the plan, step by step.
//!
//! Commands take ready clients ([`Clients`], or an [`AwsContext`] for those that work in
//! many regions) and return typed results; the binary only parses flags and prints.
//! `MAY_CALL` in each module lists every operation the command can make, whatever the plan
//! (what `imgpub aws policy` grants).

pub(crate) mod copy_regions;
pub(crate) mod create_publisher;
pub(crate) mod delete_image;
pub(crate) mod driver;
pub(crate) mod ensure_public;
pub(crate) mod gc;
pub(crate) mod grant;
pub(crate) mod initialize;
pub(crate) mod list_regions;
pub(crate) mod needs;
pub(crate) mod policy;
pub(crate) mod publish_ssm;
pub(crate) mod release;
pub(crate) mod upload;
pub(crate) mod upload_object;
pub(crate) mod verify_snapshot;

use crate::aws::config::{AwsContext, Identity};

/// The SDK clients of one region, ready to use.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub s3: aws_sdk_s3::Client,
    /// S3 is reached over TLS (so uploads need not sign the payload).
    pub s3_over_tls: bool,
    pub ec2: aws_sdk_ec2::Client,
    pub ebs: aws_sdk_ebs::Client,
    pub iam: aws_sdk_iam::Client,
    pub region: String,
    /// The account that must own the buckets imgpub reads and writes, sent as
    /// ExpectedBucketOwner on every S3 call (bucket names are global: one of the expected
    /// name may be someone else's). `None` only where no account is known (`upload-object`,
    /// for any S3-compatible server).
    pub bucket_owner: Option<String>,
}

impl Clients {
    pub(crate) fn new(ctx: &AwsContext) -> Clients {
        Clients {
            s3: ctx.s3(),
            s3_over_tls: ctx.s3_over_tls(),
            ec2: ctx.ec2(),
            ebs: ctx.ebs(),
            iam: ctx.iam(),
            region: ctx.region.clone(),
            bucket_owner: None,
        }
    }

    /// Clients for the caller's account: its buckets must be its own.
    pub(crate) fn for_identity(ctx: &AwsContext, identity: &Identity) -> Clients {
        Clients {
            bucket_owner: Some(identity.account.clone()),
            ..Clients::new(ctx)
        }
    }

    pub(crate) fn owner(&self) -> Option<&str> {
        self.bucket_owner.as_deref()
    }
}

/// Regions worked on side by side in grant/revoke, ensure-public and publish-ssm.
pub(crate) const REGION_CONCURRENCY: usize = 8;

/// Every command, as one value for [`Task::run`]: what the binary and an embedding program
/// hand to the driver. A new command is one line here (and its module); `via` names what
/// runs it when that is not the driver alone (a release of several accounts drives each).
macro_rules! tasks {
    ($($(#[$doc:meta])* $name:ident($command:ty) $(via $runner:path)?,)*) => {
        /// One imgpub command with its options, ready to run.
        #[derive(Debug)]
        pub enum Task {
            $($(#[$doc])* $name($command),)*
        }

        $(impl From<$command> for Task {
            fn from(command: $command) -> Task {
                Task::$name(command)
            }
        })*

        impl Task {
            /// Runs the command through the one driver's steps: validate, connect, plan,
            /// check (the preflight, or the calls `--dry-run` prints), apply. Each result
            /// line goes to `emit` as it comes.
            pub async fn run(
                self,
                run: &driver::Run,
                emit: &mut (dyn FnMut(driver::Output) + Send),
            ) -> crate::Result<()> {
                match self {
                    // Boxed: the largest command's future (a release of several accounts)
                    // would otherwise set every task's size on the caller's stack.
                    $(Task::$name(command) => {
                        Box::pin(runner!($($runner)?)(command, run, emit)).await
                    })*
                }
            }
        }
    };
}

/// What runs a task: the driver, unless the task names another.
macro_rules! runner {
    () => {
        driver::drive
    };
    ($runner:path) => {
        $runner
    };
}

tasks! {
    /// `initialize`: the bucket and the vmimport role.
    Initialize(initialize::InitializeOptions),
    /// `upload`, `import-snapshot`, `upload-snapshot`, `register-ami`.
    Publish(upload::Publish),
    /// `upload-object`.
    UploadObject(upload_object::UploadObjectOptions),
    /// `copy-regions`.
    CopyRegions(copy_regions::CopyOptions),
    /// `list-regions`.
    ListRegions(list_regions::ListRegionsOptions),
    /// `verify-snapshot`.
    VerifySnapshot(verify_snapshot::VerifySnapshotOptions),
    /// `delete-image`.
    DeleteImage(delete_image::DeleteOptions),
    /// `grant` and `revoke`.
    Permissions(grant::Permissions),
    /// `ensure-public`.
    EnsurePublic(ensure_public::EnsurePublicOptions),
    /// `gc`.
    Gc(gc::GcOptions),
    /// `publish-ssm`.
    PublishSsm(publish_ssm::PublishSsmOptions),
    /// `policy`.
    Policy(policy::PrintPolicy),
    /// `create-publisher`.
    CreatePublisher(create_publisher::PublisherOptions),
    /// `release plan`, `release apply` and `release verify`.
    Release(release::ReleaseOptions) via release::run,
    /// `release watch`.
    Watch(release::WatchOptions),
    /// `release restore`.
    Restore(release::RestoreOptions),
}
