//! S3 multipart upload of a local file: a bounded number of parts in flight (memory is parts
//! in flight × part size), one hash per part that S3 verifies (the signed SHA-256 over plain
//! HTTP, a CRC32C over TLS; see `PartCheck`), and resumption: a rerun
//! finds the unfinished upload for the key, checks the parts already there against the file,
//! and sends only what is missing or different. An object that is already complete and
//! matches the file is not sent again.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use aws_runtime::auth::PayloadSigningOverride;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use base64::Engine;
use bytes::Bytes;
use futures_util::future;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use md5::{Digest, Md5};

use crate::aws::buffers::Buffers;
use crate::aws::calls::{Call, Op, Resource};
use crate::aws::s3::S3Object;
use crate::error::{aws, Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::sha256::{Kernel, Sha256Lanes};

const MIB: u64 = 1 << 20;

/// How the multipart upload sends the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub part_size: Option<u64>,
    pub concurrency: usize,
}

/// The calls an upload of `object` may make (`upload-object`'s, and `upload`'s for its
/// image): the look for a matching object, the resume, the upload, the abort.
pub(crate) fn calls(region: &str, object: &S3Object) -> Vec<Call> {
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

/// S3's limits: parts of at least 5 MiB (but the last), at most 10,000 of them.
const MIN_PART_SIZE: u64 = 5 * MIB;
const MAX_PART_SIZE: u64 = 5 << 30;
const MAX_PARTS: u64 = 10_000;
/// 6 parts of 6 MiB on the wire: about 36 MiB of part buffers, and the hashing ahead reads
/// through a window per part of a group (2 MiB).
pub(crate) const DEFAULT_PART_SIZE: u64 = 6 * MIB;
pub const DEFAULT_CONCURRENCY: usize = 6;

/// The local checks of an upload of `path`, before any call: the file can be read, is not
/// empty, and fits in S3's parts at the requested part size.
pub(crate) fn check_file(path: &std::path::Path, part_size: Option<u64>) -> Result<()> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("reading {shown}"), e))?
        .len();
    if size == 0 {
        return Err(Error::Invalid(format!(
            "{shown} is empty; nothing to upload"
        )));
    }
    part_size_for(size, part_size).map(drop)
}

/// The part size for a file: the requested (or default) size, grown in whole MiB until the
/// file fits in 10,000 parts.
pub(crate) fn part_size_for(file_size: u64, requested: Option<u64>) -> Result<u64> {
    let wanted = requested.unwrap_or(DEFAULT_PART_SIZE);
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&wanted) {
        return Err(Error::Invalid(format!(
            "part size {} MiB is outside S3's limits of 5 MiB to 5 GiB",
            wanted / MIB
        )));
    }
    let needed = file_size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    Ok(wanted.max(needed))
}

#[derive(Debug, Clone)]
pub(crate) struct UploadRequest {
    pub path: PathBuf,
    pub object: S3Object,
    pub part_size: Option<u64>,
    pub concurrency: usize,
    /// Send the file even when a matching object is already there.
    pub force: bool,
    /// The endpoint is HTTPS. Then the payload is not signed (UNSIGNED-PAYLOAD): TLS and the
    /// part's CRC32C, which S3 verifies, guard the bytes, and a SHA-256 pass over every byte
    /// is saved. Over plain HTTP the signature must cover the payload.
    pub over_tls: bool,
    /// The account that must own the bucket, sent as ExpectedBucketOwner on every call.
    pub expected_owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadReport {
    pub size: u64,
    pub parts: usize,
    /// Parts sent by this run.
    pub parts_sent: usize,
    /// Parts of an earlier, interrupted run that matched the file and were kept.
    pub parts_reused: usize,
    /// The whole object was already there and matched: nothing was sent.
    pub already_there: bool,
    pub etag: String,
}

impl UploadReport {
    /// What the upload did, in words.
    pub(crate) fn describe(&self, object: &S3Object) -> String {
        let size = format!("{:.1} MiB", self.size as f64 / f64::from(1 << 20));
        match (self.already_there, self.parts_reused) {
            (true, _) => format!("{object} already held this file ({size}): nothing sent"),
            (false, 0) => format!("uploaded {object} ({size} in {} parts)", self.parts),
            (false, kept) => format!(
                "uploaded {object} ({size}): {} parts sent, {kept} kept from an earlier run",
                self.parts_sent
            ),
        }
    }
}

/// CRC32C (Castagnoli), the checksum S3 verifies per part.
fn crc32c_digest() -> crc_fast::Digest {
    crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi)
}

/// Which code computes the checksums here, for `imgpub --version` (benchmarks report it).
pub fn kernels() -> String {
    let sha = crate::sha256::Kernel::best();
    format!(
        "SHA-256 (plain HTTP) {sha:?}, {} lanes; CRC32C (HTTPS) crc-fast {}; TLS rustls with \
         aws-lc-rs, which picks its AES-GCM code itself",
        sha.lanes(),
        crc_fast::get_calculator_target(crc_fast::CrcAlgorithm::Crc32Iscsi)
    )
}

fn b64(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

fn unquote(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// A part left by an earlier run, as ListParts describes it.
#[derive(Debug, Clone)]
struct ExistingPart {
    size: u64,
    etag: String,
    crc32c: Option<String>,
}

impl ExistingPart {
    /// Whether this part holds `data`: by CRC32C when both sides have one (`crc32c`: ours,
    /// taken over TLS), else by the ETag (the MD5 of the part for unencrypted and SSE-S3
    /// objects).
    fn holds(&self, data: &[u8], crc32c: Option<u32>) -> bool {
        if self.size != data.len() as u64 {
            return false;
        }
        match (&self.crc32c, crc32c) {
            (Some(theirs), Some(ours)) => *theirs == b64(ours),
            _ => hex::encode(Md5::digest(data)) == unquote(&self.etag),
        }
    }
}

/// Whether a failed part ends the upload for good, so it is aborted: permissions denied
/// (orphaned parts would be billed until the lifecycle rule removes them) or the bucket or
/// upload gone. Anything else keeps the parts for a rerun to resume: timeouts, 5xx,
/// throttling after the SDK's retries, and the 4xx a rerun gets past (S3's 400
/// `RequestTimeout`, an `ExpiredToken` renewed, a checksum mismatch sent again).
fn ends_the_upload(err: &Error) -> bool {
    err.kind() == Some(ErrorKind::AccessDenied)
        || matches!(err.code(), Some("NoSuchUpload" | "NoSuchBucket"))
}

/// Uploads `req.path` to `s3://bucket/key`; see the module docs for what a rerun does.
pub(crate) async fn upload_file(s3: &Client, req: &UploadRequest) -> Result<UploadReport> {
    let shown = req.path.display().to_string();
    let url = format!("s3://{}/{}", req.object.bucket, req.object.key);
    let size = tokio::fs::metadata(&req.path)
        .await
        .map_err(|e| Error::io(format!("reading {shown}"), e))?
        .len();
    // Checked before the run began (`check_file`): empty now, it was emptied since.
    if size == 0 {
        return Err(Error::Changed(format!(
            "{shown} became empty after the run began; rerun once it is written"
        )));
    }
    let layout = Layout {
        size,
        part_size: part_size_for(size, req.part_size)?,
    };
    let count = layout.count();
    let file = Arc::new(
        std::fs::File::open(&req.path).map_err(|e| Error::io(format!("opening {shown}"), e))?,
    );
    let written_at = file.metadata().and_then(|m| m.modified()).ok();

    if !req.force {
        if let Some(etag) = matching_object(s3, req, &file, layout).await? {
            tracing::info!("{url} is already uploaded and matches {shown}; not sending it again");
            return Ok(UploadReport {
                size,
                parts: count as usize,
                parts_sent: 0,
                parts_reused: 0,
                already_there: true,
                etag,
            });
        }
    }

    let (upload_id, existing) = match resumable_upload(s3, req, layout).await? {
        Some(found) => found,
        None => {
            let out = s3
                .create_multipart_upload()
                .bucket(&req.object.bucket)
                .set_expected_bucket_owner(req.expected_owner.clone())
                .key(&req.object.key)
                .set_checksum_algorithm(req.over_tls.then_some(ChecksumAlgorithm::Crc32C))
                .content_type("application/octet-stream")
                .send()
                .await
                .map_err(|e| {
                    aws(
                        Op::S3CreateMultipartUpload,
                        format!("starting the upload of {shown} to {url}"),
                        e,
                    )
                })?;
            let id = out
                .upload_id()
                .ok_or_else(|| Error::missing(Op::S3CreateMultipartUpload, "UploadId"))?
                .to_string();
            tracing::info!(
                "uploading {shown} to {url}: {:.1} MiB in {count} parts of {} MiB",
                size as f64 / MIB as f64,
                layout.part_size / MIB
            );
            (id, HashMap::new())
        }
    };

    let progress = Progress::bytes(format!("uploading {url}"), size);

    let sender = PartSender {
        s3,
        req,
        upload_id: &upload_id,
        progress: &progress,
        shown: &shown,
        url: &url,
        file: &file,
        layout,
        buffers: Buffers::default(),
    };
    // Two stages. Over plain HTTP parts are read and hashed in groups (`group_sha256`), up
    // to one group ahead of the sends; each part is then read and sent, `concurrency` at a
    // time. So a connection never waits for a hash, and memory is the parts on the wire
    // plus one window per part of a group. Over TLS nothing is hashed ahead: the CRC32C is
    // taken from the part as it is read.
    let groups = part_groups(layout, req.over_tls, |n| existing.contains_key(&(n as i32)));
    let mut earlier: Vec<u64> = existing.keys().map(|&n| n as u64).collect();
    earlier.sort_unstable();
    let ahead = groups.iter().map(Vec::len).max().unwrap_or(1);
    let (ready, mut hashed) = tokio::sync::mpsc::channel::<(u64, Option<String>)>(ahead);
    let hashing = {
        let (file, shown, over_tls) = (file.clone(), shown.clone(), req.over_tls);
        async move {
            // Parts an earlier run left go first and unhashed: the sending stage checks them
            // against the file, and hashes only one that differs.
            for number in earlier {
                if ready.send((number, None)).await.is_err() {
                    return Ok(());
                }
            }
            let mut buf = Vec::new();
            for numbers in groups {
                let hashes = if over_tls {
                    vec![None; numbers.len()]
                } else {
                    let (file, shown, group) = (file.clone(), shown.clone(), numbers.clone());
                    let (back, hashes) = tokio::task::spawn_blocking(move || {
                        let hashes = group_sha256(&file, &mut buf, &group, layout, &shown);
                        (buf, hashes)
                    })
                    .await
                    .map_err(|e| PartFailure {
                        fatal: true,
                        err: Error::io("reading the image", std::io::Error::other(e)),
                    })?;
                    buf = back;
                    let hashes = hashes.map_err(|err| PartFailure { fatal: true, err })?;
                    hashes.into_iter().map(Some).collect()
                };
                for ready_part in numbers.into_iter().zip(hashes) {
                    if ready.send(ready_part).await.is_err() {
                        return Ok(()); // the sends stopped, and say why
                    }
                }
            }
            Ok(())
        }
    };
    let sending = stream::poll_fn(|cx| hashed.poll_recv(cx))
        .map(|(number, sha256)| {
            let sender = &sender;
            let there = existing.get(&(number as i32)).cloned();
            async move {
                let part = sender
                    .prepare(number, sha256, there)
                    .await
                    .map_err(|err| PartFailure { fatal: true, err })?;
                sender.send(number, part).await
            }
        })
        .buffer_unordered(req.concurrency.max(1))
        .try_collect::<Vec<_>>();
    let results: Result<Vec<(CompletedPart, bool)>, PartFailure> =
        future::try_join(hashing, sending)
            .await
            .map(|((), parts)| parts);

    // A file rewritten in place while it was read would make an object that is neither the
    // old image nor the new one (and over plain HTTP fails S3's check of a part hashed
    // before the change): said as such, and the upload aborted.
    let changed = match file.metadata() {
        Ok(now) => now.len() != size || now.modified().ok() != written_at,
        Err(e) => return Err(Error::io(format!("reading {shown}"), e)),
    };
    if changed {
        abort(s3, req, &upload_id).await;
        return Err(Error::Changed(format!(
            "{shown} changed while it was being uploaded; let the tool that writes it finish, \
             then rerun"
        )));
    }
    let mut parts = match results {
        Ok(parts) => parts,
        Err(PartFailure { fatal: true, err }) => {
            abort(s3, req, &upload_id).await;
            return Err(err);
        }
        Err(PartFailure { fatal: false, err }) => {
            return Err(Error::failed(
                format!("uploading {shown} to {url}"),
                err.kind().unwrap_or(ErrorKind::Other),
                err.code(),
                format!("{err}; the parts sent so far are kept: rerun the same command to resume"),
            ))
        }
    };
    progress.finish();
    parts.sort_by_key(|(p, _)| p.part_number());
    let parts_sent = parts.iter().filter(|(_, sent)| *sent).count();
    let completed = s3
        .complete_multipart_upload()
        .bucket(&req.object.bucket)
        .set_expected_bucket_owner(req.expected_owner.clone())
        .key(&req.object.key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts.into_iter().map(|(p, _)| p).collect()))
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            aws(
                Op::S3CompleteMultipartUpload,
                format!("completing the upload of {shown} to {url}"),
                e,
            )
        });
    let etag = match completed {
        Ok(out) => unquote(
            out.e_tag()
                .ok_or_else(|| Error::missing(Op::S3CompleteMultipartUpload, "ETag"))?,
        )
        .to_string(),
        // The first attempt completed it and its answer was lost: S3 has forgotten the
        // upload, and the object is there. Done, if it is this file.
        Err(err) if err.code() == Some("NoSuchUpload") => {
            match matching_object(s3, req, &file, layout).await? {
                Some(etag) => etag,
                None => return Err(err),
            }
        }
        Err(err) => return Err(err),
    };
    abort_leftovers(s3, req, &upload_id).await;
    tracing::info!(
        "uploaded {url}: {parts_sent} parts sent, {} kept from an earlier run",
        count as usize - parts_sent
    );
    Ok(UploadReport {
        size,
        parts: count as usize,
        parts_sent,
        parts_reused: count as usize - parts_sent,
        already_there: false,
        etag,
    })
}

/// What sending one part needs to know about the upload it belongs to.
struct PartSender<'a> {
    s3: &'a Client,
    req: &'a UploadRequest,
    upload_id: &'a str,
    progress: &'a Progress,
    shown: &'a str,
    url: &'a str,
    file: &'a Arc<std::fs::File>,
    layout: Layout,
    buffers: Buffers,
}

impl PartSender<'_> {
    /// Reads part `number` of the file off the async runtime, for sending, with the check S3
    /// verifies: over TLS the CRC32C of its bytes, else the SHA-256 hashed ahead (or,
    /// for a part an earlier run left that differs, hashed here). A part `there` from an
    /// earlier run that holds the same bytes is kept instead.
    async fn prepare(
        &self,
        number: u64,
        sha256: Option<String>,
        there: Option<ExistingPart>,
    ) -> Result<Prepared> {
        let (file, layout, over_tls) = (self.file.clone(), self.layout, self.req.over_tls);
        let (shown, url) = (self.shown.to_string(), self.url.to_string());
        let buffers = self.buffers.clone();
        tokio::task::spawn_blocking(move || {
            let (offset, len) = layout.part(number);
            // Read, not mapped: a file truncated meanwhile is an error here, where a mapping
            // would kill the process with SIGBUS when the sender touches the missing pages.
            let mut bytes = buffers.take(len as usize);
            let crc32c = if over_tls {
                // Read and checksummed a slice at a time: the CRC reads the bytes while they
                // are still in the CPU's cache, not again from memory.
                let mut crc = crc32c_digest();
                let mut at = offset;
                for slice in bytes.as_mut().chunks_mut(CRC_SLICE) {
                    read_image_at(&file, slice, at, &shown)?;
                    crc.update(slice);
                    at += slice.len() as u64;
                }
                Some(crc.finalize() as u32)
            } else {
                read_image_at(&file, bytes.as_mut(), offset, &shown)?;
                None
            };
            if let Some(there) = there {
                if there.holds(bytes.as_ref(), crc32c) {
                    return Ok(Prepared::Keep {
                        len,
                        etag: there.etag,
                        crc32c,
                    });
                }
                tracing::warn!("part {number} of {url} differs from {shown}; sending it again");
            }
            let check = match (crc32c, sha256) {
                (Some(crc), _) => PartCheck::Crc32c(crc),
                (None, Some(hash)) => PartCheck::Sha256(hash),
                (None, None) => {
                    let hash = Sha256Lanes::new(1).finish(&[bytes.as_ref()]);
                    PartCheck::Sha256(hex::encode(hash[0]))
                }
            };
            let data = Bytes::from_owner(bytes);
            Ok(Prepared::Send(Part { data, check }))
        })
        .await
        .map_err(|e| Error::io("reading the image", std::io::Error::other(e)))?
    }

    /// Sends part `number`, or keeps the earlier run's copy (`prepare` found it holds the
    /// same bytes). Returns the part for CompleteMultipartUpload and whether it was sent.
    async fn send(
        &self,
        number: u64,
        prepared: Prepared,
    ) -> Result<(CompletedPart, bool), PartFailure> {
        let number = number as i32;
        let part = match prepared {
            Prepared::Keep { len, etag, crc32c } => {
                self.progress.inc(len);
                let done = CompletedPart::builder()
                    .part_number(number)
                    .e_tag(etag)
                    .set_checksum_crc32_c(crc32c.map(b64))
                    .build();
                return Ok((done, false));
            }
            Prepared::Send(part) => part,
        };
        let (req, len) = (self.req, part.data.len() as u64);
        let crc = match part.check {
            PartCheck::Crc32c(crc) => Some(b64(crc)),
            PartCheck::Sha256(_) => None,
        };
        let call = self
            .s3
            .upload_part()
            .bucket(&req.object.bucket)
            .set_expected_bucket_owner(req.expected_owner.clone())
            .key(&req.object.key)
            .upload_id(self.upload_id)
            .part_number(number)
            .content_length(len as i64)
            .set_checksum_crc32_c(crc.clone())
            .body(ByteStream::from(part.data));
        // A part may take longer than a short call: its own timeouts, from its size.
        let timeouts = aws_sdk_s3::config::Builder::default()
            .timeout_config(crate::aws::config::transfer_timeouts(len));
        let call = call.customize().config_override(timeouts);
        let sent = match part.check {
            PartCheck::Sha256(hash) => call.interceptor(PrecomputedPayloadHash(hash)).send().await,
            PartCheck::Crc32c(_) => call.disable_payload_signing().send().await,
        };
        let out = sent.map_err(|e| {
            let err = aws(
                Op::S3UploadPart,
                format!(
                    "uploading part {number} of {} of {} to {}",
                    self.layout.count(),
                    self.shown,
                    self.url
                ),
                e,
            );
            PartFailure {
                fatal: ends_the_upload(&err),
                err,
            }
        })?;
        let etag = out.e_tag().ok_or_else(|| PartFailure {
            fatal: false,
            err: Error::missing(Op::S3UploadPart, "ETag"),
        })?;
        self.progress.inc(len);
        let done = CompletedPart::builder()
            .part_number(number)
            .e_tag(etag)
            .set_checksum_crc32_c(crc)
            .build();
        Ok((done, true))
    }
}

/// Why a part failed, and whether a rerun could get past it.
struct PartFailure {
    fatal: bool,
    err: Error,
}

/// How S3 checks that a part arrived intact. Exactly one hash per byte: over plain HTTP the
/// SigV4 signature covers the payload's SHA-256, which S3 recomputes; over TLS the payload is
/// not signed (UNSIGNED-PAYLOAD) and S3 checks a CRC32C instead, which costs a fraction.
enum PartCheck {
    Sha256(String),
    Crc32c(u32),
}

/// One part, read into a pooled buffer the SDK sends as it is.
struct Part {
    data: Bytes,
    check: PartCheck,
}

/// A part to send, or one an earlier run left that holds the same bytes.
enum Prepared {
    Send(Part),
    Keep {
        len: u64,
        etag: String,
        crc32c: Option<u32>,
    },
}

/// Where the parts lie in the file.
#[derive(Debug, Clone, Copy)]
struct Layout {
    size: u64,
    part_size: u64,
}

impl Layout {
    fn count(self) -> u64 {
        self.size.div_ceil(self.part_size)
    }

    /// Offset and length of part `number` (from 1).
    fn part(self, number: u64) -> (u64, u64) {
        let offset = (number - 1) * self.part_size;
        (offset, self.part_size.min(self.size - offset))
    }
}

/// The groups in which parts are hashed ahead, leaving out those an earlier run left
/// (`existing`; they are checked as they are sent): as many as the SHA-256 kernel hashes
/// at once (`crate::sha256`), the first two groups small so the first sends start at once,
/// and a short last part in a group of its own (a group's parts have one length). Over TLS
/// the CRC32C gains nothing from groups: one part each.
fn part_groups(layout: Layout, over_tls: bool, existing: impl Fn(u64) -> bool) -> Vec<Vec<u64>> {
    let lanes = if over_tls { 1 } else { Kernel::best().lanes() };
    let count = layout.count();
    let (full, short): (Vec<u64>, Vec<u64>) = (1..=count)
        .filter(|&n| !existing(n))
        .partition(|&n| layout.part(n).1 == layout.part_size);
    let mut groups: Vec<Vec<u64>> = Vec::new();
    let mut rest = &full[..];
    while !rest.is_empty() {
        let len = if groups.len() < 2 {
            lanes.min(3)
        } else {
            lanes
        };
        let (group, after) = rest.split_at(len.min(rest.len()));
        groups.push(group.to_vec());
        rest = after;
    }
    groups.extend(short.into_iter().map(|n| vec![n]));
    groups
}

/// Fills `buf` from the image at `offset`; a file that ends too soon was cut short after the
/// upload began.
fn read_image_at(file: &std::fs::File, buf: &mut [u8], offset: u64, shown: &str) -> Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::Changed(format!(
                "{shown} is shorter than when the upload began: it changed while it was being \
                 uploaded; let the tool that writes it finish, then rerun"
            ))
        } else {
            Error::io(format!("reading {shown} at byte {offset}"), e)
        }
    })
}

/// Bytes of a part read at a time over TLS, each checksummed at once: well inside L2.
const CRC_SLICE: usize = 256 << 10;

/// Bytes of each part read at a time while a group is hashed: one buffer holds a window of
/// every part of the group (2 MiB for 16 parts).
const HASH_WINDOW: usize = 128 << 10;

/// The SHA-256 of the parts `numbers` (all of one length), hashed in lockstep. The parts
/// are read window by window into `buf` with pread: mapping windows instead costs more in
/// page tables and TLB shootdowns than the copy does.
fn group_sha256(
    file: &std::fs::File,
    buf: &mut Vec<u8>,
    numbers: &[u64],
    layout: Layout,
    shown: &str,
) -> Result<Vec<String>> {
    let len = layout.part(numbers[0]).1;
    buf.resize(numbers.len() * HASH_WINDOW, 0);
    let mut sha = Sha256Lanes::new(numbers.len());
    let mut at = 0;
    loop {
        let window = (len - at).min(HASH_WINDOW as u64) as usize;
        let mut windows = Vec::with_capacity(numbers.len());
        for (&number, chunk) in numbers.iter().zip(buf.chunks_mut(HASH_WINDOW)) {
            let start = layout.part(number).0 + at;
            read_image_at(file, &mut chunk[..window], start, shown)?;
            windows.push(&chunk[..window]);
        }
        at += window as u64;
        if at == len {
            // The last window: its whole blocks, then the tail and the padding.
            return Ok(sha.finish(&windows).into_iter().map(hex::encode).collect());
        }
        sha.update(&windows);
    }
}

/// Hands the signer the payload hash computed ahead (`group_sha256`, or `prepare` for a part
/// that differs from an earlier run's), so the SDK does not hash the body a second time.
#[derive(Debug)]
struct PrecomputedPayloadHash(String);

impl Intercept for PrecomputedPayloadHash {
    fn name(&self) -> &'static str {
        "PrecomputedPayloadHash"
    }

    fn modify_before_signing(
        &self,
        _context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(PayloadSigningOverride::Precomputed(self.0.clone()));
        Ok(())
    }
}

/// Aborts an upload that cannot be resumed, so no orphaned parts are left (and billed).
async fn abort(s3: &Client, req: &UploadRequest, upload_id: &str) {
    match s3
        .abort_multipart_upload()
        .bucket(&req.object.bucket)
        .set_expected_bucket_owner(req.expected_owner.clone())
        .key(&req.object.key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => tracing::info!("aborted the upload to s3://{}/{}", req.object.bucket, req.object.key),
        Err(e) => tracing::warn!(
            "could not abort the upload to s3://{}/{} ({}); its parts stay until a lifecycle rule or a rerun removes them",
            req.object.bucket,
            req.object.key,
            aws(Op::S3AbortMultipartUpload, "", e)
        ),
    }
}

/// Aborts the other unfinished uploads to the key once ours is complete: one whose
/// CreateMultipartUpload answer was lost (and the SDK's retry started ours), or one an
/// earlier run left. Best effort: the bucket's lifecycle rule is the backstop.
async fn abort_leftovers(s3: &Client, req: &UploadRequest, ours: &str) {
    let listed = s3
        .list_multipart_uploads()
        .bucket(&req.object.bucket)
        .set_expected_bucket_owner(req.expected_owner.clone())
        .prefix(&req.object.key)
        .send()
        .await;
    let uploads = match listed {
        Ok(uploads) => uploads,
        Err(e) => {
            let err = aws(Op::S3ListMultipartUploads, "listing unfinished uploads", e);
            tracing::debug!("not checked for leftover uploads: {err}");
            return;
        }
    };
    for upload in uploads.uploads() {
        if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
            if key == req.object.key && id != ours {
                abort(s3, req, id).await;
            }
        }
    }
}

/// The ETag S3 gives a multipart object: MD5 of the parts' MD5s, then `-N`.
fn multipart_etag(file: &std::fs::File, layout: Layout) -> std::io::Result<String> {
    let mut all = Md5::new();
    let mut buf = vec![0u8; layout.part_size as usize];
    for number in 1..=layout.count() {
        let (offset, len) = layout.part(number);
        let part = &mut buf[..len as usize];
        file.read_exact_at(part, offset)?;
        all.update(Md5::digest(part));
    }
    Ok(format!(
        "{}-{}",
        hex::encode(all.finalize()),
        layout.count()
    ))
}

/// The object already at the key, when it is this file: same size, and an ETag equal to the
/// one the file would get with our part size. Returns its ETag.
async fn matching_object(
    s3: &Client,
    req: &UploadRequest,
    file: &Arc<std::fs::File>,
    layout: Layout,
) -> Result<Option<String>> {
    let head = match s3
        .head_object()
        .bucket(&req.object.bucket)
        .set_expected_bucket_owner(req.expected_owner.clone())
        .key(&req.object.key)
        .send()
        .await
    {
        Ok(head) => head,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => return Ok(None),
        Err(e) => {
            return Err(aws(
                Op::S3HeadObject,
                format!("checking for s3://{}/{}", req.object.bucket, req.object.key),
                e,
            ))
        }
    };
    let etag = unquote(
        head.e_tag()
            .ok_or_else(|| Error::missing(Op::S3HeadObject, "ETag"))?,
    )
    .to_string();
    if head.content_length() != Some(layout.size as i64) || !etag.contains('-') {
        return Ok(None);
    }
    let file = file.clone();
    let ours = tokio::task::spawn_blocking(move || multipart_etag(&file, layout))
        .await
        .map_err(|e| Error::io("hashing the image", std::io::Error::other(e)))?
        .map_err(|e| Error::io(format!("reading {}", req.path.display()), e))?;
    Ok((ours == etag).then_some(etag))
}

/// The newest unfinished upload for the key and the parts it has, when its part layout is
/// the one this run would use; an upload with another layout is aborted.
async fn resumable_upload(
    s3: &Client,
    req: &UploadRequest,
    layout: Layout,
) -> Result<Option<(String, HashMap<i32, ExistingPart>)>> {
    let count = layout.count();
    let url = format!("s3://{}/{}", req.object.bucket, req.object.key);
    let uploads = match s3
        .list_multipart_uploads()
        .bucket(&req.object.bucket)
        .set_expected_bucket_owner(req.expected_owner.clone())
        .prefix(&req.object.key)
        .send()
        .await
    {
        Ok(uploads) => uploads,
        // Some S3-compatible servers (s3s-fs, for one) do not list uploads: nothing to resume.
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 501) => {
            tracing::warn!("the server cannot list unfinished uploads; an interrupted upload to {url} cannot be resumed");
            return Ok(None);
        }
        Err(e) => {
            let err = aws(
                Op::S3ListMultipartUploads,
                format!("listing unfinished uploads to {url}"),
                e,
            );
            // ore needed no s3:ListBucketMultipartUploads: without it the upload starts over.
            if err.kind() == Some(crate::error::ErrorKind::AccessDenied) {
                crate::aws::unchecked::note(format!(
                    "for an interrupted upload to {url} to resume (s3:ListBucketMultipartUploads)"
                ));
                return Ok(None);
            }
            return Err(err);
        }
    };
    let mut candidates: Vec<_> = uploads
        .uploads()
        .iter()
        .filter(|u| u.key() == Some(req.object.key.as_str()))
        .filter_map(|u| {
            let crc32c = u.checksum_algorithm() == Some(&ChecksumAlgorithm::Crc32C);
            Some((u.initiated().copied(), u.upload_id()?.to_string(), crc32c))
        })
        .collect();
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    let Some((_, upload_id, crc32c)) = candidates.into_iter().next() else {
        return Ok(None);
    };
    if crc32c != req.over_tls {
        // Every part must carry the algorithm the upload was created with (UploadPart API
        // reference: "This checksum algorithm must be the same for all parts"): over plain
        // HTTP parts are signed instead, over HTTPS they carry a CRC32C.
        let (was, now) = match crc32c {
            true => ("HTTPS (parts checked by CRC32C)", "plain HTTP"),
            false => ("plain HTTP (parts checked by signature)", "HTTPS"),
        };
        tracing::warn!(
            "the unfinished upload to {url} was started over {was}; its parts cannot be completed over {now}, so it is aborted and the image sent again"
        );
        abort(s3, req, &upload_id).await;
        return Ok(None);
    }

    let mut parts = HashMap::new();
    let mut pages = s3
        .list_parts()
        .bucket(&req.object.bucket)
        .set_expected_bucket_owner(req.expected_owner.clone())
        .key(&req.object.key)
        .upload_id(&upload_id)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            aws(
                Op::S3ListParts,
                format!("listing the parts uploaded to {url}"),
                e,
            )
        })?;
        for p in page.parts() {
            let (Some(number), Some(etag), Some(size)) = (p.part_number(), p.e_tag(), p.size())
            else {
                continue; // not a part we can match; it is sent again
            };
            parts.insert(
                number,
                ExistingPart {
                    size: size as u64,
                    etag: etag.to_string(),
                    crc32c: p.checksum_crc32_c().map(str::to_owned),
                },
            );
        }
    }
    let fits = parts.iter().all(|(&n, p)| {
        let n = n as u64;
        n >= 1 && n <= count && p.size == layout.part(n).1
    });
    if !fits {
        tracing::warn!("an unfinished upload to {url} has another part layout; starting over");
        abort(s3, req, &upload_id).await;
        return Ok(None);
    }
    tracing::info!(
        "resuming the unfinished upload to {url}: {} of {count} parts are there",
        parts.len()
    );
    Ok(Some((upload_id, parts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_fit_ten_thousand_parts() {
        assert_eq!(part_size_for(1 << 30, None).unwrap(), DEFAULT_PART_SIZE);
        let big = 200u64 << 30;
        let part = part_size_for(big, None).unwrap();
        assert!(
            big.div_ceil(part) <= MAX_PARTS && part.is_multiple_of(MIB),
            "{part}"
        );
        assert!(part_size_for(1 << 30, Some(MIB)).is_err());
    }

    #[test]
    fn an_earlier_part_is_kept_only_when_it_holds_the_same_bytes() {
        let data = Bytes::from_static(b"the bytes of one part");
        let mut crc = crc32c_digest();
        crc.update(&data);
        let crc = crc.finalize() as u32;
        let there = |size: usize, etag: &str, crc32c: Option<String>| ExistingPart {
            size: size as u64,
            etag: etag.to_string(),
            crc32c,
        };
        let md5 = format!("\"{}\"", hex::encode(Md5::digest(&data)));
        let len = data.len();
        // Over TLS S3 lists each part's CRC32C: that decides, not the ETag.
        assert!(there(len, "\"x\"", Some(b64(crc))).holds(&data, Some(crc)));
        assert!(!there(len, &md5, Some(b64(crc ^ 1))).holds(&data, Some(crc)));
        // Without a listed CRC32C (plain HTTP, or a server that lists none): the MD5 ETag.
        assert!(there(len, &md5, None).holds(&data, Some(crc)));
        assert!(there(len, &md5, Some(b64(crc))).holds(&data, None));
        assert!(!there(len, "\"0123\"", None).holds(&data, None));
        // Another size is another part, whatever the checksums say.
        assert!(!there(len + 1, &md5, Some(b64(crc))).holds(&data, Some(crc)));
    }

    #[test]
    fn every_part_not_left_by_an_earlier_run_is_hashed_once_in_groups_of_one_length() {
        // (file size, over TLS, parts an earlier run left)
        let none: &[u64] = &[];
        for (size, over_tls, earlier) in [
            (20 * MIB + 5, false, none),
            (200 * MIB, false, none),
            (20 * MIB + 5, true, none),
            (200 * MIB, false, &[1, 2, 7, 40][..]),
            (20 * MIB + 5, false, &[5][..]),
        ] {
            let layout = Layout {
                size,
                part_size: 5 * MIB,
            };
            let groups = part_groups(layout, over_tls, |n| earlier.contains(&n));
            let mut hashed = groups.concat();
            hashed.sort_unstable();
            let want: Vec<u64> = (1..=layout.count())
                .filter(|n| !earlier.contains(n))
                .collect();
            assert_eq!(hashed, want, "{groups:?}");
            for group in &groups {
                let len = layout.part(group[0]).1;
                assert!(group.iter().all(|&n| layout.part(n).1 == len), "{groups:?}");
            }
            let widest = groups.iter().map(Vec::len).max().unwrap();
            let lanes = if over_tls { 1 } else { Kernel::best().lanes() };
            assert!(widest <= lanes && groups[0].len() <= 3, "{groups:?}");
        }
    }

    #[test]
    fn group_sha256_hashes_each_part() {
        // Parts of one and a half windows and a bit (a tail that is not whole blocks), and a
        // short last part.
        let part_size = (HASH_WINDOW + HASH_WINDOW / 2 + 77) as u64;
        let data: Vec<u8> = (0..3 * part_size + 1000)
            .map(|i| (i * 31 + i / 7) as u8)
            .collect();
        let path = std::env::temp_dir().join(format!("imgpub-group-sha256-{}", std::process::id()));
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let layout = Layout {
            size: data.len() as u64,
            part_size,
        };
        let mut buf = Vec::new();
        for numbers in [vec![1, 2, 3], vec![2], vec![4]] {
            let want: Vec<String> = numbers
                .iter()
                .map(|&n| {
                    let (offset, len) = layout.part(n);
                    let part = &data[offset as usize..(offset + len) as usize];
                    hex::encode(sha2::Sha256::digest(part))
                })
                .collect();
            let got = group_sha256(&file, &mut buf, &numbers, layout, "f").unwrap();
            assert_eq!(got, want, "{numbers:?}");
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn crc32c_matches_the_known_vector() {
        // RFC 3720 test vector: 32 bytes of zeros.
        let mut crc = crc32c_digest();
        crc.update(&[0u8; 32]);
        assert_eq!(crc.finalize() as u32, 0x8a91_36aa);
    }
}
