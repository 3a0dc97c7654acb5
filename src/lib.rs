//! imgpub: publish disk images as AWS AMIs.
//!
//! The library is what the `imgpub` binary runs, and all a program embedding it needs:
//! every command is a [`Task`] holding its options, run by one driver with the [`Run`]
//! settings every command takes (credentials, region, endpoint, preflight, dry run). Results
//! come line by line as [`Output`], the same lines the binary prints.
//!
//! ```no_run
//! use imgpub::{AwsSettings, DeleteOptions, Output, PreflightMode, Run, Task};
//!
//! # async fn example() -> imgpub::Result<()> {
//! let run = Run {
//!     settings: AwsSettings {
//!         region: Some("eu-west-1".into()),
//!         profile: Some("release".into()),
//!         ..AwsSettings::default()
//!     },
//!     preflight: PreflightMode::Require,
//!     // Print the calls that would change something, and stop.
//!     dry_run: true,
//! };
//! let task = Task::from(DeleteOptions {
//!     ami: Some("ami-0123456789abcdef0".into()),
//!     with_snapshots: true,
//!     ..DeleteOptions::default()
//! });
//! let mut lines = Vec::new();
//! task.run(&run, &mut |line: Output| lines.push(line)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Layers (docs/architecture.md): `commands` holds each command's validate → plan → check →
//! apply and the one driver that runs them; `aws` holds the stages, each a function that
//! takes ready SDK clients and returns a typed result; `image` inspects files locally. All of
//! it is private to the crate, so rustc reports what nothing uses.
#![deny(unreachable_pub)]

mod aws;
mod blocking;
mod commands;
mod error;
mod image;
mod names;
mod progress;
mod sha256;
#[doc(hidden)]
pub mod testing;
mod units;

// Running a command.
pub use aws::config::{AwsSettings, Secret};
pub use aws::preflight::PreflightMode;
pub use commands::driver::{Output, Run};
pub use commands::Task;
pub use error::{Error, ErrorKind, Result};

// Each command's options.
pub use commands::copy_regions::CopyOptions;
pub use commands::create_publisher::PublisherOptions;
pub use commands::delete_image::DeleteOptions;
pub use commands::ensure_public::EnsurePublicOptions;
pub use commands::gc::{Collect, GcOptions};
pub use commands::grant::{GrantOptions, Permissions};
pub use commands::initialize::InitializeOptions;
pub use commands::list_regions::ListRegionsOptions;
pub use commands::needs::For;
pub use commands::policy::{Format as PolicyFormat, PolicyOptions, PrintPolicy};
pub use commands::publish_ssm::PublishSsmOptions;
pub use commands::release::{
    Only, Promotion, ReleaseOptions, ReleaseStep, RestoreOptions, WatchOptions,
};
pub use commands::upload::{Deprecate, Existing, Publish, Stage, UploadOptions, Via};
pub use commands::upload_object::UploadObjectOptions;
pub use commands::verify_snapshot::VerifySnapshotOptions;

// The values those options hold.
pub use aws::ami::{Arch, BootMode, Change, SriovNetSupport, TpmSupport, VolumeType};
pub use aws::images::ImageSelection;
pub use aws::multipart::Transfer;
pub use image::ObjectFormat;
pub use names::Named;
pub use units::{parse_duration, parse_size};

/// The defaults the binary's flags show.
pub mod defaults {
    /// `copy-regions`' copies at once.
    pub use crate::aws::copy::DEFAULT_CONCURRENCY as COPY_CONCURRENCY;
    /// `--via ebs-direct`'s blocks in flight.
    pub use crate::aws::ebs_direct::DEFAULT_BLOCKS_IN_FLIGHT as BLOCKS_IN_FLIGHT;
    /// `upload-object`'s and `upload`'s parts in flight.
    pub use crate::aws::multipart::DEFAULT_CONCURRENCY as UPLOAD_CONCURRENCY;
}

// Printing beside the progress bars, as the binary does.
pub use aws::multipart::kernels;
pub use progress::{log_writer, suspend};
