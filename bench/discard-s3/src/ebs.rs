//! The EBS direct APIs (and the two EC2/STS reads a client makes around them) for snapshot
//! benchmarks: each block's SHA-256 and length checked, ChangedBlocksCount and the LINEAR
//! checksum checked on completion, the bytes discarded. SigV4 is not checked here (s3s does
//! that for S3 only). One JSON line per completed snapshot on stdout.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use base64::Engine;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use s3s::Body;
use sha2::{Digest, Sha256};

const BLOCK: usize = 512 * 1024;

#[derive(Default)]
pub struct Ebs {
    next: AtomicU64,
    requests: AtomicU64,
    /// snapshot id → (volume GiB, block index → SHA-256)
    snapshots: Mutex<HashMap<String, (u64, BTreeMap<u64, [u8; 32]>)>>,
    /// Completed snapshots, for DescribeSnapshots.
    completed: Mutex<HashMap<String, u64>>,
}

/// Requests this module answers: the EBS paths, and form-encoded EC2/STS queries.
pub fn serves(req: &http::Request<Incoming>) -> bool {
    req.uri().path().starts_with("/snapshots")
        || (req.method() == http::Method::POST
            && req.uri().path() == "/"
            && req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded")))
}

fn respond(status: u16, content_type: &str, body: String) -> http::Response<Body> {
    http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap()
}

fn error(status: u16, code: &str, message: &str) -> http::Response<Body> {
    let mut r = respond(
        status,
        "application/json",
        format!("{{\"message\":\"{message}\"}}"),
    );
    r.headers_mut()
        .insert("x-amzn-errortype", code.parse().unwrap());
    r
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Ebs {
    pub async fn handle(&self, req: http::Request<Incoming>) -> http::Response<Body> {
        let requests = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let (parts, body) = req.into_parts();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return error(400, "ValidationException", "incomplete body"),
        };
        let path: Vec<&str> = parts.uri.path().split('/').filter(|p| !p.is_empty()).collect();
        match (parts.method.as_str(), path.as_slice()) {
            ("POST", ["snapshots"]) => {
                let doc = String::from_utf8_lossy(&body);
                let size = doc
                    .split("\"VolumeSize\":")
                    .nth(1)
                    .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(1);
                let id = format!("snap-{:017x}", self.next.fetch_add(1, Ordering::Relaxed));
                self.snapshots
                    .lock()
                    .unwrap()
                    .insert(id.clone(), (size, BTreeMap::new()));
                respond(
                    201,
                    "application/json",
                    format!("{{\"SnapshotId\":\"{id}\",\"Status\":\"pending\",\"BlockSize\":{BLOCK},\"VolumeSize\":{size}}}"),
                )
            }
            ("PUT", ["snapshots", id, "blocks", index]) => {
                let Ok(index) = index.parse::<u64>() else {
                    return error(400, "ValidationException", "bad block index");
                };
                if body.len() != BLOCK
                    || header("x-amz-data-length").as_deref() != Some("524288")
                {
                    return error(400, "ValidationException", "DataLength must be 524288");
                }
                let digest: [u8; 32] = Sha256::digest(&body).into();
                let checksum = b64(&digest);
                if header("x-amz-checksum").as_deref() != Some(checksum.as_str()) {
                    return error(400, "ValidationException", "checksum mismatch");
                }
                let mut snapshots = self.snapshots.lock().unwrap();
                let Some((size, blocks)) = snapshots.get_mut(*id) else {
                    return error(404, "ResourceNotFoundException", "no such snapshot");
                };
                if index >= *size * 2048 {
                    return error(400, "ValidationException", "block past the end");
                }
                blocks.insert(index, digest);
                let mut r = respond(201, "application/json", "{}".into());
                r.headers_mut()
                    .insert("x-amz-checksum", checksum.parse().unwrap());
                r.headers_mut()
                    .insert("x-amz-checksum-algorithm", "SHA256".parse().unwrap());
                r
            }
            ("POST", ["snapshots", "completion", id]) => {
                let Some((size, blocks)) = self.snapshots.lock().unwrap().remove(*id) else {
                    return error(404, "ResourceNotFoundException", "no such snapshot");
                };
                let mut linear = Sha256::new();
                for d in blocks.values() {
                    linear.update(d);
                }
                let count_ok =
                    header("x-amz-changedblockscount") == Some(blocks.len().to_string());
                let sum_ok = header("x-amz-checksum")
                    .is_none_or(|s| s == b64(&linear.finalize()));
                if !count_ok || !sum_ok {
                    return error(400, "ValidationException", "count or checksum mismatch");
                }
                self.completed.lock().unwrap().insert(id.to_string(), size);
                println!(
                    "{{\"snapshot\":\"{id}\",\"blocks\":{},\"bytes\":{},\"requests\":{requests}}}",
                    blocks.len(),
                    blocks.len() * BLOCK
                );
                respond(202, "application/json", "{\"Status\":\"completed\"}".into())
            }
            ("GET", ["snapshots", _, "blocks"]) => respond(
                200,
                "application/json",
                format!("{{\"Blocks\":[],\"BlockSize\":{BLOCK}}}"),
            ),
            ("POST", []) => self.query(&String::from_utf8_lossy(&body)),
            _ => error(400, "ValidationException", "not served here"),
        }
    }

    /// STS GetCallerIdentity and EC2 DescribeSnapshots, as a client asks them around an
    /// upload: no snapshot by tag (nothing to resume), and completed ones by id.
    fn query(&self, form: &str) -> http::Response<Body> {
        if form.contains("Action=GetCallerIdentity") {
            return respond(200, "text/xml", "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/bench</Arn><UserId>AIDABENCH</UserId><Account>123456789012</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>bench</RequestId></ResponseMetadata></GetCallerIdentityResponse>".into());
        }
        if form.contains("Action=DescribeSnapshots") {
            let completed = self.completed.lock().unwrap();
            let items: String = form
                .split('&')
                .filter_map(|kv| kv.strip_prefix("SnapshotId.").and_then(|r| r.split_once('=')))
                .filter_map(|(_, id)| completed.get(id).map(|size| (id, size)))
                .map(|(id, size)| format!("<item><snapshotId>{id}</snapshotId><status>completed</status><volumeSize>{size}</volumeSize><progress>100%</progress></item>"))
                .collect();
            return respond(200, "text/xml", format!("<DescribeSnapshotsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>bench</requestId><snapshotSet>{items}</snapshotSet></DescribeSnapshotsResponse>"));
        }
        respond(400, "text/xml", "<Response><Errors><Error><Code>InvalidAction</Code><Message>not served here</Message></Error></Errors><RequestID>bench</RequestID></Response>".into())
    }
}
