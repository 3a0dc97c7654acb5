//! The one loader every command uses: credentials, region and endpoint become an [`AwsContext`]
//! with ready SDK clients, and [`AwsContext::verify_identity`] is the preflight that fails fast,
//! before any side effect, naming the credential source and region it tried.

use std::path::PathBuf;
use std::time::Duration;

use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_types::service_config::ServiceConfigKey;

use crate::aws::calls::Op;
use crate::error::{aws, find_cause, one_line_chain, Error, Result};

mod ca;
mod chain;

use ca::ca_bundle_client;
use chain::{default_chain_report, Chain, SharedFiles};

/// A secret key: its `Debug` shows nothing, so no log or error can carry it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: String) -> Secret {
        Secret(secret)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What the user told us about where and as whom to talk to AWS.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub credentials_file: Option<PathBuf>,
    /// Static keys for this run (ore's `--access-id`/`--secret-key`): both or neither.
    pub access_id: Option<String>,
    pub secret_key: Option<Secret>,
    pub endpoint_url: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    /// `None`: `imgpub-<CI job id or host name>`.
    pub role_session_name: Option<String>,
}

/// A loaded configuration: the SDK config plus what we need to explain failures.
#[derive(Debug, Clone)]
pub(crate) struct AwsContext {
    pub sdk: SdkConfig,
    pub region: String,
    /// Where the region came from (`--region`, `$AWS_REGION`, a profile), for messages.
    pub region_source: String,
    /// Where the credentials come from, for messages. Never contains a secret.
    pub credentials_source: String,
    /// Whether they come from the SDK's default chain (then a failure lists each source).
    credentials: Chain,
    /// Where a custom endpoint came from (`--endpoint-url`, `$AWS_ENDPOINT_URL`), for
    /// messages.
    endpoint_source: String,
    /// `--endpoint-url` was given: it is every service's, over any service's own setting.
    endpoint_flag: bool,
    /// The credentials are a role's, assumed with `--external-id`.
    external_id: bool,
}

/// Who the credentials belong to, from STS GetCallerIdentity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub account: String,
    pub arn: String,
    /// `aws`, `aws-cn`, `aws-us-gov`, … taken from the caller's ARN.
    pub partition: String,
}

/// Each attempt may take this long before the SDK retries it; calls that send data set
/// their own (`transfer_timeouts`).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Until the answer's headers: for a call that sends a body, sending it is part of this.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The slowest upload a data call is given time for, per connection (a 2 Mbit/s uplink).
const SLOWEST_UPLOAD_BYTES_PER_SEC: u64 = 256 * 1024;

/// Timeouts for a call that sends `bytes`: the defaults, or time to send them at the
/// slowest upload speed plus the usual wait for the answer, whichever is longer. (The read
/// timeout covers sending the body, so it grows too.)
pub(crate) fn transfer_timeouts(bytes: u64) -> TimeoutConfig {
    let sending = Duration::from_secs(bytes / SLOWEST_UPLOAD_BYTES_PER_SEC);
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(sending + READ_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT.max(sending + READ_TIMEOUT))
        .build()
}
/// The single retry layer: the SDK's standard mode (backoff with jitter, throttling and
/// transient errors only, so AccessDenied is never retried).
const MAX_ATTEMPTS: u32 = 5;

/// Checks the shape of a region name (`us-east-1`, `us-gov-west-1`, `cn-north-1`, …). New
/// regions appear every year, so the name is not checked against a list.
pub(crate) fn validate_region(region: &str) -> Result<()> {
    let parts: Vec<&str> = region.split('-').collect();
    let ok = parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && !parts[parts.len() - 1].is_empty()
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "region {region:?} is not a region name; use one like us-east-1 or eu-west-1 (`imgpub aws list-regions` lists them)"
        )))
    }
}

/// The partition a region belongs to, for when no caller ARN is at hand.
pub(crate) fn partition_for_region(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("eu-isoe-") {
        "aws-iso-e"
    } else {
        "aws"
    }
}

/// Builds the SDK config from the settings. Reads files and the environment but sends nothing.
pub(crate) async fn load(settings: &AwsSettings) -> Result<AwsContext> {
    if let Some(region) = &settings.region {
        validate_region(region)?;
    }
    // The flag, else $AWS_ENDPOINT_URL, kept with where it came from for messages.
    let endpoint = match &settings.endpoint_url {
        Some(url) => Some((url.clone(), "--endpoint-url")),
        None => std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .map(|url| (url, "$AWS_ENDPOINT_URL")),
    };
    if let Some((url, from)) = &endpoint {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Invalid(format!(
                "endpoint URL {url:?} (from {from}) must start with http:// or https://"
            )));
        }
    }

    if settings.external_id.is_some() && settings.role_arn.is_none() {
        return Err(Error::Invalid(
            "--external-id is the External ID to assume --role-arn with: pass --role-arn too"
                .into(),
        ));
    }

    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );

    // Like the aws CLI and ore: AWS_CA_BUNDLE names the CAs to trust instead of the system's
    // (a TLS-inspecting proxy, a private endpoint).
    if let Some(bundle) = std::env::var_os("AWS_CA_BUNDLE").filter(|b| !b.is_empty()) {
        loader = loader.http_client(ca_bundle_client(&PathBuf::from(bundle)).await?);
    }

    let profile_name = settings
        .profile
        .clone()
        .or_else(|| std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()));
    let mut chain = Chain::Chosen;
    let mut credentials_source = if let (Some(id), Some(Secret(secret))) =
        (&settings.access_id, &settings.secret_key)
    {
        // Like ore: keys given on the command line win over every other source.
        let keys = aws_credential_types::Credentials::new(id, secret, None, None, "imgpub flags");
        loader = loader.credentials_provider(keys);
        format!("--access-id {id} and --secret-key")
    } else if settings.access_id.is_some() || settings.secret_key.is_some() {
        return Err(Error::Invalid(
            "--access-id and --secret-key go together: pass both, or neither".into(),
        ));
    } else if let Some(file) = &settings.credentials_file {
        // Like ore: an explicit credentials file is the credential source, not one link of
        // the default chain that environment variables would override.
        if !file.is_file() {
            return Err(Error::Invalid(format!(
                "credentials file {} does not exist; pass the path of a shared-credentials file",
                file.display()
            )));
        }
        let profile = profile_name.clone().unwrap_or_else(|| "default".into());
        let files = EnvConfigFiles::builder()
            .include_default_config_file(true)
            .with_file(EnvConfigFileKind::Credentials, file)
            .build();
        let shown = format!("{} and the config file", file.display());
        chain::check_profile(&profile, &files, &shown).await?;
        let provider = ProfileFileCredentialsProvider::builder()
            .profile_files(files.clone())
            .profile_name(&profile)
            .build();
        loader = loader
            .profile_files(files)
            .profile_name(&profile)
            .credentials_provider(provider);
        format!("profile {profile:?} in {}", file.display())
    } else if let Some(profile) = &settings.profile {
        let files = EnvConfigFiles::default();
        chain::check_profile(profile, &files, "the shared config and credentials files").await?;
        loader = loader.profile_name(profile).credentials_provider(
            ProfileFileCredentialsProvider::builder()
                .profile_name(profile)
                .build(),
        );
        format!("profile {profile:?}")
    } else if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        "environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".to_string()
    } else if let Some(profile) = &profile_name {
        format!("profile {profile:?} (from $AWS_PROFILE)")
    } else {
        chain = Chain::Default;
        "the default credential chain".to_string()
    };

    let region_source = if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
        "--region".to_string()
    } else if std::env::var("AWS_REGION").is_ok_and(|r| !r.is_empty()) {
        "$AWS_REGION".to_string()
    } else {
        format!(
            "profile {:?}",
            profile_name.clone().unwrap_or_else(|| "default".into())
        )
    };
    // Only the flag is set here: the SDK reads $AWS_ENDPOINT_URL itself, below the
    // service's own ($AWS_ENDPOINT_URL_S3, …) as the ecosystem orders them.
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }

    let mut sdk = loader.load().await;
    let (region, region_source) = match sdk.region() {
        Some(r) => (r.as_ref().to_string(), region_source),
        None => {
            // ore's default when neither --region nor $AWS_REGION is set.
            tracing::info!("no region given (--region, $AWS_REGION or the profile's): using ore's default, {ORE_DEFAULT_REGION}");
            sdk = sdk
                .into_builder()
                .region(Region::new(ORE_DEFAULT_REGION))
                .build();
            (ORE_DEFAULT_REGION.to_string(), "ore's default".to_string())
        }
    };
    if settings.region.is_none() {
        validate_region(&region)?;
    }

    if let Some(role_arn) = &settings.role_arn {
        if !role_arn.starts_with("arn:") || !role_arn.contains(":role/") {
            return Err(Error::Invalid(format!(
                "--role-arn {role_arn:?} is not a role ARN; use arn:aws:iam::ACCOUNT:role/NAME"
            )));
        }
        let session = match &settings.role_session_name {
            Some(name) => validate_session_name(name)?,
            None => default_session_name().await,
        };
        let mut builder = AssumeRoleProvider::builder(role_arn.clone()).session_name(session);
        if let Some(id) = &settings.external_id {
            builder = builder.external_id(id.clone());
        }
        let provider = builder.configure(&sdk).build().await;
        sdk = sdk
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
        chain = Chain::Chosen;
        credentials_source = format!(
            "role {role_arn}{} assumed with {credentials_source}",
            if settings.external_id.is_some() {
                " (with external id)"
            } else {
                ""
            }
        );
    }

    let endpoint_source = match endpoint {
        Some((_, from)) => from.to_string(),
        None => "the profile's endpoint_url".to_string(),
    };
    Ok(AwsContext {
        sdk,
        region,
        region_source,
        credentials_source,
        credentials: chain,
        endpoint_source,
        endpoint_flag: settings.endpoint_url.is_some(),
        external_id: settings.role_arn.is_some() && settings.external_id.is_some(),
    })
}

/// STS refused the AssumeRole (its AccessDenied, as AWS's code says).
fn assume_denied(cause: &CredentialsError) -> bool {
    use aws_sdk_sts::error::ProvideErrorMetadata;
    type Denied =
        aws_sdk_sts::error::SdkError<aws_sdk_sts::operation::assume_role::AssumeRoleError>;
    find_cause::<Denied>(cause)
        .and_then(|e| e.as_service_error())
        .and_then(|e| e.code())
        == Some("AccessDenied")
}

/// The region ore uses without --region or $AWS_REGION.
pub(crate) const ORE_DEFAULT_REGION: &str = "us-west-2";

impl AwsContext {
    /// The custom endpoint a service's requests go to, as the SDK chooses it: the
    /// `--endpoint-url` flag, else the service's own setting (`$AWS_ENDPOINT_URL_S3`, a
    /// profile's `services` section), else the global one; `None` for AWS's.
    pub(crate) fn service_endpoint(&self, service_id: &str) -> Option<String> {
        if self.endpoint_flag {
            return self.sdk.endpoint_url().map(str::to_owned);
        }
        let key = ServiceConfigKey::builder()
            .service_id(service_id)
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .ok()?;
        self.sdk
            .service_config()
            .and_then(|config| config.load_config(key))
            .or_else(|| self.sdk.endpoint_url().map(str::to_owned))
    }

    pub(crate) fn s3(&self) -> aws_sdk_s3::Client {
        // Checksums only where we ask for them: the upload engine picks one per part, and the
        // SDK's default (a CRC32 on every upload) would hash every byte a second time.
        // A custom endpoint cannot do virtual-hosted bucket names.
        let conf = aws_sdk_s3::config::Builder::from(&self.sdk)
            .force_path_style(self.service_endpoint("S3").is_some())
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// EBS direct: the SDK's adaptive retry mode, so throttling (PutSnapshotBlock has a
    /// per-snapshot request rate) also slows the client's own request rate down.
    pub(crate) fn ebs(&self) -> aws_sdk_ebs::Client {
        let conf = aws_sdk_ebs::config::Builder::from(&self.sdk)
            .retry_config(RetryConfig::adaptive().with_max_attempts(MAX_ATTEMPTS))
            .build();
        aws_sdk_ebs::Client::from_conf(conf)
    }

    pub(crate) fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk)
    }

    pub(crate) fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.sdk)
    }

    pub(crate) fn rbin(&self) -> aws_sdk_rbin::Client {
        aws_sdk_rbin::Client::new(&self.sdk)
    }

    pub(crate) fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.sdk)
    }

    pub(crate) fn service_quotas(&self) -> aws_sdk_servicequotas::Client {
        aws_sdk_servicequotas::Client::new(&self.sdk)
    }

    pub(crate) fn sts(&self) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::new(&self.sdk)
    }

    /// Whether S3 requests go over TLS (then uploads need not sign the payload): AWS's own
    /// endpoint, or an https:// one, judged on the endpoint S3 actually uses.
    pub(crate) fn s3_over_tls(&self) -> bool {
        self.service_endpoint("S3")
            .is_none_or(|url| url.starts_with("https://"))
    }

    /// The endpoint requests to `service` go to, and where it came from, for messages.
    pub(crate) fn endpoint_description(&self, service: &str) -> String {
        let own = format!("AWS_ENDPOINT_URL_{}", service.to_ascii_uppercase());
        match self.service_endpoint(service) {
            Some(url) if self.sdk.endpoint_url() == Some(url.as_str()) => {
                format!("{url} (from {})", self.endpoint_source)
            }
            Some(url) => format!("{url} (from ${own} or the profile's services section)"),
            None => {
                let suffix = match partition_for_region(&self.region) {
                    "aws-cn" => "amazonaws.com.cn",
                    _ => "amazonaws.com",
                };
                format!(
                    "https://{}.{}.{suffix} (the default for region {})",
                    service.to_ascii_lowercase(),
                    self.region,
                    self.region
                )
            }
        }
    }

    async fn identity_error(
        &self,
        err: aws_sdk_sts::error::SdkError<
            aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError,
        >,
    ) -> Error {
        let fix = "run `aws configure`, pass --profile NAME or --credentials-file PATH, or set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)";
        if let Some(cause) = find_cause::<CredentialsError>(&err) {
            return Error::Setup(match self.credentials {
                Chain::Default => format!(
                    "no AWS credentials: {}; to fix it, {fix}",
                    default_chain_report(cause, &SharedFiles::read().await)
                ),
                Chain::Chosen => format!(
                    "could not load AWS credentials from {}: {}{}",
                    self.credentials_source,
                    one_line_chain(cause),
                    match (assume_denied(cause), self.external_id) {
                        (true, true) => "; check --external-id: it must be the one the role's trust policy names (create-publisher printed it), and the trust must admit these credentials",
                        (true, false) => "; the role's trust policy does not admit these credentials: check --role-arn, and whether the role wants an --external-id",
                        (false, _) => "",
                    }
                ),
            });
        }
        let unreachable = matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
        );
        let detail = match aws(Op::StsGetCallerIdentity, "", err) {
            Error::Aws { detail, .. } => detail,
            other => other.to_string(),
        };
        if unreachable {
            return Error::Setup(format!(
                "cannot reach the AWS endpoint {}: {detail}; check the URL, that the service runs there, and the network (DNS, proxy)",
                self.endpoint_description("STS")
            ));
        }
        Error::Setup(format!(
            "could not verify AWS credentials from {} in region {} ({}): {detail}",
            self.credentials_source, self.region, self.region_source
        ))
    }

    /// The same credentials and endpoint in another region.
    pub(crate) fn in_region(&self, region: &str) -> AwsContext {
        let mut other = self.clone();
        other.sdk = self
            .sdk
            .clone()
            .into_builder()
            .region(Region::new(region.to_string()))
            .build();
        other.region = region.to_string();
        other
    }

    /// The preflight every AWS command starts with: STS GetCallerIdentity. A failure here
    /// becomes one line: the endpoint that cannot be reached, or the credential sources tried
    /// and why each gave nothing, or what STS said, with the fix.
    pub(crate) async fn verify_identity(&self) -> Result<Identity> {
        // Two attempts, not the usual five: at first contact a wrong endpoint or a dead
        // network should be reported in a second, not after half a minute of backoff.
        let first_contact = aws_sdk_sts::config::Builder::default()
            .retry_config(RetryConfig::standard().with_max_attempts(2));
        let out = self
            .sts()
            .get_caller_identity()
            .customize()
            .config_override(first_contact)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => return Err(self.identity_error(e).await),
        };
        let missing = |field| Error::missing(Op::StsGetCallerIdentity, field);
        let arn = out.arn().ok_or_else(|| missing("Arn"))?.to_string();
        let partition = arn
            .split(':')
            .nth(1)
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| partition_for_region(&self.region))
            .to_string();
        let account = out.account().ok_or_else(|| missing("Account"))?.to_string();
        tracing::info!("using account {account} as {arn} in {}", self.region);
        Ok(Identity {
            account,
            arn,
            partition,
        })
    }
}

/// A role session name as STS takes it: 2–64 of letters, digits and `+=,.@_-`.
fn validate_session_name(name: &str) -> Result<String> {
    let ok = (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
    match ok {
        true => Ok(name.to_string()),
        false => Err(Error::Invalid(format!(
            "--role-session-name {name:?} is not valid: use 2-64 letters, digits or +=,.@_-"
        ))),
    }
}

/// `imgpub-<id>`, the id telling CI jobs apart in CloudTrail: GitHub Actions' run id,
/// GitLab's job id, Jenkins' build tag, else the host name.
async fn default_session_name() -> String {
    let from_env = ["GITHUB_RUN_ID", "CI_JOB_ID", "BUILD_TAG", "HOSTNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|v| !v.is_empty()));
    let id = match from_env {
        Some(id) => id,
        None => tokio::fs::read_to_string("/etc/hostname")
            .await
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
    };
    let id: String = id
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) {
                true => c,
                false => '-',
            },
        )
        .take(56)
        .collect();
    match id.is_empty() {
        true => "imgpub".to_string(),
        false => format!("imgpub-{id}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_large_part_gets_time_to_be_sent_at_the_slowest_upload_speed() {
        let small = transfer_timeouts(8 << 20);
        assert_eq!(small.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(
            small.read_timeout(),
            Some(READ_TIMEOUT + Duration::from_secs(32))
        );
        // 512 MiB at 256 KiB/s: 2048 s, then a minute for the answer.
        let large = transfer_timeouts(512 << 20);
        assert_eq!(large.read_timeout(), Some(Duration::from_secs(2048 + 60)));
        assert_eq!(
            large.operation_attempt_timeout(),
            Some(Duration::from_secs(2048 + 60))
        );
        assert_eq!(large.connect_timeout(), Some(CONNECT_TIMEOUT));
    }

    use super::*;

    #[test]
    fn region_shapes() {
        for ok in [
            "us-east-1",
            "eu-west-1",
            "us-gov-west-1",
            "cn-north-1",
            "ap-southeast-5",
        ] {
            validate_region(ok).unwrap();
        }
        for bad in [
            "",
            "useast1",
            "us-east",
            "US-EAST-1",
            "us-east-1a",
            "us_east_1",
        ] {
            let err = validate_region(bad).unwrap_err().to_string();
            assert!(err.contains("not a region name"), "{bad}: {err}");
        }
    }

    #[test]
    fn partitions() {
        assert_eq!(partition_for_region("us-east-1"), "aws");
        assert_eq!(partition_for_region("cn-northwest-1"), "aws-cn");
        assert_eq!(partition_for_region("us-gov-east-1"), "aws-us-gov");
    }
}
