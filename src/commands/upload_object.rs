//! `upload-object`: the upload engine alone, for any S3-compatible server. It needs only S3
//! (no STS preflight); prints `{"S3Object":"s3://…"}`.

use std::path::PathBuf;

use crate::aws::calls::{Call, Op};
use crate::aws::multipart::{self, Transfer, UploadReport, UploadRequest};
use crate::aws::s3::{S3Object, S3Prefix};
use crate::aws::Status;
use crate::commands::driver::{Command, Emit, Endpoint, Output};
use crate::commands::Clients;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct UploadObjectOptions {
    pub file: PathBuf,
    /// `s3://BUCKET/PREFIX`.
    pub bucket: String,
    /// The object key (default: PREFIX/FILE-NAME).
    pub key: Option<String>,
    pub force: bool,
    pub transfer: Transfer,
}

/// Where the file goes, checked without AWS.
pub(crate) fn plan(opts: &UploadObjectOptions) -> Result<S3Object> {
    let location = S3Prefix::parse(&opts.bucket)?;
    // --key replaces the file name under the prefix, not the prefix.
    Ok(match &opts.key {
        Some(key) => location.object(key.trim_start_matches('/')),
        None => {
            let name = opts.file.file_name().ok_or_else(|| {
                Error::Invalid(format!("{} has no file name", opts.file.display()))
            })?;
            location.object(&name.to_string_lossy())
        }
    })
}

/// Every operation `upload-object` may make.
pub(crate) const MAY_CALL: &[Op] = &[
    Op::S3HeadObject,
    Op::S3ListMultipartUploads,
    Op::S3ListParts,
    Op::S3CreateMultipartUpload,
    Op::S3UploadPart,
    Op::S3CompleteMultipartUpload,
    Op::S3AbortMultipartUpload,
];

pub(crate) async fn apply(
    c: &Clients,
    opts: &UploadObjectOptions,
    object: &S3Object,
) -> Result<UploadReport> {
    let request = UploadRequest {
        path: opts.file.clone(),
        object: object.clone(),
        part_size: opts.transfer.part_size,
        concurrency: opts.transfer.concurrency,
        force: opts.force,
        over_tls: c.s3_over_tls,
        expected_owner: c.bucket_owner.clone(),
    };
    multipart::upload_file(&c.s3, &request).await
}

impl Command for UploadObjectOptions {
    type Connection = Endpoint;
    type Local = S3Object;
    type Plan = S3Object;

    fn validate(&self) -> Result<S3Object> {
        multipart::check_file(&self.file, self.transfer.part_size)?;
        plan(self)
    }

    async fn plan(&self, _: &Endpoint, object: S3Object) -> Result<S3Object> {
        Ok(object)
    }

    fn check(&self, e: &Endpoint, object: &S3Object) -> Vec<Call> {
        multipart::calls(&e.ctx.region, object)
    }

    /// Any S3-compatible server: no IAM to preflight against, no policy to name.
    fn policy(&self, _: &Endpoint, _: &S3Object, _: &[Call]) -> Option<String> {
        None
    }

    async fn apply(&self, e: &Endpoint, object: &S3Object, emit: Emit<'_>) -> Result<()> {
        let report = apply(&Clients::new(&e.ctx), self, object).await?;
        emit(Output::json(&serde_json::json!({
            "S3Object": object.to_string(),
            "status": Status::of(!report.already_there),
        })));
        emit(Output::Summary(format!(
            "upload-object: {}",
            report.describe(object)
        )));
        Ok(())
    }
}
