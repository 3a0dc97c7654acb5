//! `upload-object`: the upload engine alone, for any S3-compatible server. It needs only S3
//! (no STS preflight); prints `{"S3Object":"s3://…"}`.

use std::path::PathBuf;

use crate::aws::calls::{Call, Op, Resource};
use crate::aws::multipart::{self, UploadReport, UploadRequest};
use crate::aws::s3::{S3Object, S3Prefix};
use crate::commands::upload::Transfer;
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
pub fn plan(opts: &UploadObjectOptions) -> Result<S3Object> {
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

/// The calls [`apply`] may make (also `upload`'s, for its image): the look for a matching
/// object, the resume, the upload, the abort.
pub fn check(region: &str, object: &S3Object) -> Vec<Call> {
    let o = Resource::Object {
        bucket: object.bucket.clone(),
        key: object.key.clone(),
    };
    let bucket = Resource::Bucket(object.bucket.clone());
    let mut calls = vec![
        Call::new(Op::S3HeadObject, region, vec![o.clone(), bucket.clone()]),
        Call::new(Op::S3ListMultipartUploads, region, vec![bucket]),
    ];
    for op in [
        Op::S3ListParts,
        Op::S3CreateMultipartUpload,
        Op::S3UploadPart,
        Op::S3CompleteMultipartUpload,
    ] {
        calls.push(Call::new(op, region, vec![o.clone()]));
    }
    // An upload that cannot be resumed (a 4xx) is aborted, so no parts are left behind.
    calls.push(Call::new(Op::S3AbortMultipartUpload, region, vec![o]).on_failure());
    calls
}

/// Every operation `upload-object` may make.
pub const MAY_CALL: &[Op] = &[
    Op::S3HeadObject,
    Op::S3ListMultipartUploads,
    Op::S3ListParts,
    Op::S3CreateMultipartUpload,
    Op::S3UploadPart,
    Op::S3CompleteMultipartUpload,
    Op::S3AbortMultipartUpload,
];

pub async fn apply(
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
