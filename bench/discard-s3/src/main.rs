//! discard-s3: an S3 endpoint for upload benchmarks. It checks what a real S3 checks on the
//! upload path (the SigV4 signature and payload hash, via s3s; the CRC32/CRC32C/CRC64NVME a
//! client sends with a part) and then discards the bytes, keeping per object only its size
//! and full-object CRC32C, so a benchmark can tell the object arrived intact.
//!
//! Usage: discard-s3 --port N --access-key K --secret-key S [--tls CERT.pem KEY.pem]
//!        (prints one JSON line per completed object on stdout; with --tls it serves HTTPS
//!        and the line also counts the TLS versions and cipher suites it negotiated since
//!        the last line)
//!        discard-s3 --crc32c FILE                              (the file's CRC32C)
//!
//! It also answers the EBS direct APIs (see ebs.rs) for snapshot benchmarks.

mod ebs;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use crc_fast::CrcAlgorithm;
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};
use tokio_rustls::TlsAcceptor;

#[derive(Default)]
struct Discard {
    next_upload: AtomicU64,
    requests: AtomicU64,
    /// upload id → part number → (size, CRC32C)
    uploads: Mutex<HashMap<String, HashMap<i32, (u64, u64)>>>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads the body, checking any checksum the client sent; returns (size, CRC32C).
async fn drain(
    body: Option<StreamingBlob>,
    crc32c_sent: Option<&str>,
    crc32_sent: Option<&str>,
    crc64_sent: Option<&str>,
) -> S3Result<(u64, u64)> {
    let mut body = body.ok_or_else(|| s3_error!(IncompleteBody))?;
    let mut c32c = crc_fast::Digest::new(CrcAlgorithm::Crc32Iscsi);
    let mut c32 = crc32_sent.map(|_| crc_fast::Digest::new(CrcAlgorithm::Crc32IsoHdlc));
    let mut c64 = crc64_sent.map(|_| crc_fast::Digest::new(CrcAlgorithm::Crc64Nvme));
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| s3_error!(IncompleteBody, "{e}"))?;
        size += chunk.len() as u64;
        c32c.update(&chunk);
        if let Some(d) = c32.as_mut() {
            d.update(&chunk);
        }
        if let Some(d) = c64.as_mut() {
            d.update(&chunk);
        }
    }
    let crc = c32c.finalize();
    let ok = crc32c_sent.is_none_or(|s| s == b64(&(crc as u32).to_be_bytes()))
        && c32
            .zip(crc32_sent)
            .is_none_or(|(d, s)| s == b64(&(d.finalize() as u32).to_be_bytes()))
        && c64
            .zip(crc64_sent)
            .is_none_or(|(d, s)| s == b64(&d.finalize().to_be_bytes()));
    if !ok {
        return Err(s3_error!(BadDigest, "the part does not match its checksum"));
    }
    Ok((size, crc))
}

/// TLS sessions negotiated since the last report, by "version suite".
static SESSIONS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn report(key: &str, size: u64, crc: u64, requests: u64) {
    let tls: Vec<String> = std::mem::take(&mut *SESSIONS.lock().unwrap())
        .into_iter()
        .map(|(suite, n)| format!("\"{suite}\":{n}"))
        .collect();
    println!(
        "{{\"key\":\"{key}\",\"size\":{size},\"crc32c\":\"{:08x}\",\"requests\":{requests},\"tls\":{{{}}}}}",
        crc as u32,
        tls.join(",")
    );
}

/// A TLS acceptor for the certificate chain and key in the PEM files.
fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, Box<dyn std::error::Error>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[async_trait::async_trait]
impl S3 for Discard {
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "upload-{}",
            self.next_upload.fetch_add(1, Ordering::Relaxed)
        );
        self.uploads
            .lock()
            .unwrap()
            .insert(id.clone(), HashMap::new());
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(req.input.bucket),
            key: Some(req.input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let input = req.input;
        let (size, crc) = drain(
            input.body,
            input.checksum_crc32c.as_deref(),
            input.checksum_crc32.as_deref(),
            input.checksum_crc64nvme.as_deref(),
        )
        .await?;
        let mut uploads = self.uploads.lock().unwrap();
        let parts = uploads
            .get_mut(&input.upload_id)
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        parts.insert(input.part_number, (size, crc));
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(format!("{:08x}{size:016x}", crc as u32))),
            checksum_crc32c: input.checksum_crc32c,
            checksum_crc32: input.checksum_crc32,
            checksum_crc64nvme: input.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let requests = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let input = req.input;
        let parts = self
            .uploads
            .lock()
            .unwrap()
            .remove(&input.upload_id)
            .ok_or_else(|| s3_error!(NoSuchUpload))?;
        let wanted = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        let (mut size, mut crc) = (0u64, 0u64);
        for (i, part) in wanted.iter().enumerate() {
            let number = part.part_number.unwrap_or_default();
            let &(len, part_crc) = parts.get(&number).ok_or_else(|| s3_error!(InvalidPart))?;
            crc = if i == 0 {
                part_crc
            } else {
                crc_fast::checksum_combine(CrcAlgorithm::Crc32Iscsi, crc, part_crc, len)
            };
            size += len;
        }
        report(&input.key, size, crc, requests);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(ETag::Strong(format!("{:08x}-{}", crc as u32, wanted.len()))),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.uploads.lock().unwrap().remove(&req.input.upload_id);
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let requests = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let input = req.input;
        let (size, crc) = drain(
            input.body,
            input.checksum_crc32c.as_deref(),
            input.checksum_crc32.as_deref(),
            input.checksum_crc64nvme.as_deref(),
        )
        .await?;
        report(&input.key, size, crc, requests);
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(format!("{:08x}", crc as u32))),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        _req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Err(s3_error!(NoSuchKey))
    }

    async fn head_bucket(
        &self,
        _req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(req.input.bucket),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(req.input.bucket),
            key_count: Some(0),
            ..Default::default()
        }))
    }
}

/// S3 to s3s; the EBS direct paths and EC2/STS queries to `ebs`.
#[derive(Clone)]
struct Router {
    s3: s3s::service::S3Service,
    ebs: Arc<ebs::Ebs>,
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Router {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        if ebs::serves(&req) {
            let ebs = Arc::clone(&self.ebs);
            Box::pin(async move { Ok(ebs.handle(req).await) })
        } else {
            hyper::service::Service::call(&self.s3, req)
        }
    }
}

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(path) = arg(&args, "--crc32c") {
        use std::io::Read;
        let mut file = std::fs::File::open(path)?;
        let mut digest = crc_fast::Digest::new(CrcAlgorithm::Crc32Iscsi);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            digest.update(&buf[..n]);
        }
        println!("{:08x}", digest.finalize() as u32);
        return Ok(());
    }
    let port: u16 = arg(&args, "--port").unwrap_or_else(|| "0".into()).parse()?;
    let mut builder = S3ServiceBuilder::new(Discard::default());
    if let (Some(ak), Some(sk)) = (arg(&args, "--access-key"), arg(&args, "--secret-key")) {
        builder.set_auth(SimpleAuth::from_single(ak, sk));
    }
    let service = Router {
        s3: builder.build(),
        ebs: Arc::new(ebs::Ebs::default()),
    };
    let tls = match args.iter().position(|a| a == "--tls") {
        Some(i) => match (args.get(i + 1), args.get(i + 2)) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => return Err("--tls needs CERT.pem KEY.pem".into()),
        },
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "discard-s3 listening on {scheme}://{}",
        listener.local_addr()?
    );
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let (socket, _) = tokio::select! {
            conn = listener.accept() => conn?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let (http, service, tls) = (http.clone(), service.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(socket), service).await;
                }
                Some(tls) => {
                    let Ok(stream) = tls.accept(socket).await else {
                        return;
                    };
                    let (_, session) = stream.get_ref();
                    let (Some(version), Some(suite)) = (
                        session.protocol_version(),
                        session.negotiated_cipher_suite(),
                    ) else {
                        return;
                    };
                    let name = format!("{version:?} {:?}", suite.suite());
                    *SESSIONS.lock().unwrap().entry(name).or_default() += 1;
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}
