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

pub mod copy_regions;
pub mod create_publisher;
pub mod delete_image;
pub mod driver;
pub mod ensure_public;
pub mod gc;
pub mod grant;
pub mod initialize;
pub mod list_regions;
pub mod needs;
pub mod policy;
pub mod publish_ssm;
pub mod upload;
pub mod upload_object;

use crate::aws::config::{AwsContext, Identity};

/// The SDK clients of one region, ready to use.
#[derive(Debug, Clone)]
pub struct Clients {
    pub s3: aws_sdk_s3::Client,
    /// S3 is reached over TLS (so uploads need not sign the payload).
    pub s3_over_tls: bool,
    pub ec2: aws_sdk_ec2::Client,
    pub ebs: aws_sdk_ebs::Client,
    pub iam: aws_sdk_iam::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub region: String,
    /// The account that must own the buckets imgpub reads and writes, sent as
    /// ExpectedBucketOwner on every S3 call (bucket names are global: one of the expected
    /// name may be someone else's). `None` only where no account is known (`upload-object`,
    /// for any S3-compatible server).
    pub bucket_owner: Option<String>,
}

impl Clients {
    pub fn new(ctx: &AwsContext) -> Clients {
        Clients {
            s3: ctx.s3(),
            s3_over_tls: ctx.s3_over_tls(),
            ec2: ctx.ec2(),
            ebs: ctx.ebs(),
            iam: ctx.iam(),
            ssm: ctx.ssm(),
            region: ctx.region.clone(),
            bucket_owner: None,
        }
    }

    /// Clients for the caller's account: its buckets must be its own.
    pub fn for_identity(ctx: &AwsContext, identity: &Identity) -> Clients {
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
pub const REGION_CONCURRENCY: usize = 8;
