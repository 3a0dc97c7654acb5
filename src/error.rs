//! The library's error type. Every variant's message is meant for the user: it names what
//! failed (file, bucket, role, task) and, where we know it, how to fix it. AWS failures keep
//! AWS's error code, the operation and a [`ErrorKind`]; decisions (retry, reuse, abort,
//! hints, exit codes) are made on those, never on message text.

use std::fmt::Debug;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::aws::calls::{Op, ResourceKind};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of AWS failure an error is, from its code and HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// IAM said no: never retried.
    AccessDenied,
    /// The credentials are unknown, wrong or expired.
    Credentials,
    /// Throttled after the SDK's retries.
    Throttling,
    /// The resource does not exist.
    NotFound,
    /// A name or token is already taken.
    Conflict,
    /// AWS refused the image itself: an import ended with a `ClientError`.
    ImageRejected,
    /// We stopped waiting; the work goes on in AWS and a rerun picks it up.
    Timeout,
    /// A task we waited on ended in failure (a copy's `failed` state, an import that
    /// ended without AWS saying the image was at fault).
    TaskFailed,
    /// What we waited on went away: a copy deregistered before it was available.
    Gone,
    /// The permission preflight found calls IAM would refuse; nothing was changed, and the
    /// message names the policy line.
    PreflightDenied,
    /// No answer: connection, TLS or a 5xx after retries.
    Unavailable,
    Other,
}

impl ErrorKind {
    /// The kind AWS's error code (or, without one, the HTTP status) means.
    pub fn from_code(code: Option<&str>, status: Option<u16>) -> ErrorKind {
        match code {
            Some(
                "AccessDenied"
                | "AccessDeniedException"
                | "UnauthorizedOperation"
                | "UnauthorizedAccess"
                | "AllAccessDisabled",
            ) => ErrorKind::AccessDenied,
            Some(
                "InvalidClientTokenId"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "RequestExpired"
                | "AuthFailure"
                | "UnrecognizedClientException",
            ) => ErrorKind::Credentials,
            Some(
                "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "SlowDown"
                | "TooManyRequestsException"
                | "RequestThrottled",
            ) => ErrorKind::Throttling,
            Some(
                "NoSuchEntity" | "NoSuchBucket" | "NoSuchKey" | "NoSuchUpload" | "NotFound"
                | "ParameterNotFound",
            ) => ErrorKind::NotFound,
            Some(c) if c.ends_with(".NotFound") => ErrorKind::NotFound,
            Some(
                "EntityAlreadyExists"
                | "BucketAlreadyExists"
                | "BucketAlreadyOwnedByYou"
                | "ParameterAlreadyExists"
                | "IdempotentParameterMismatch",
            ) => ErrorKind::Conflict,
            Some(c) if c.ends_with(".Duplicate") => ErrorKind::Conflict,
            _ => match status {
                Some(403) => ErrorKind::AccessDenied,
                Some(404) => ErrorKind::NotFound,
                Some(s) if s >= 500 => ErrorKind::Unavailable,
                _ => ErrorKind::Other,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input, found before any AWS side effect.
    #[error("{0}")]
    Invalid(String),
    /// No usable credentials, region or identity.
    #[error("{0}")]
    Setup(String),
    /// An AWS call (or a wait on AWS) failed.
    #[error("{context}: {detail}")]
    Aws {
        context: String,
        /// The operation, when the error is an answer to one.
        op: Option<Op>,
        /// AWS's error code, when AWS gave one (never one of ours: those are kinds).
        code: Option<String>,
        kind: ErrorKind,
        detail: String,
        /// The SDK's error, with its whole chain (`-d` prints it).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A local file could not be read.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// What exists under the name asked for is not what was asked for, in a way that cannot
    /// change in place (another image, another architecture): found before any change,
    /// exit 1; `--force` replaces it.
    #[error("{0}")]
    Conflict(String),
    /// The input changed after the run began working on it (a file rewritten while it was
    /// read): found after the first side effect, so not [`Error::Invalid`]. What was done
    /// is kept or cleaned up; rerun once the input is final.
    #[error("{0}")]
    Changed(String),
    /// A release is not (yet) what its manifest declares: regions not done, or drift that
    /// `release verify` found. Only best-effort regions: exit 77, as plume's; else exit 1.
    #[error("{detail}")]
    Incomplete {
        detail: String,
        best_effort_only: bool,
    },
    /// What failed in one account of a release of several (`[[account]]`).
    #[error("account {account}: {source}")]
    InAccount {
        account: String,
        #[source]
        source: Box<Error>,
    },
    /// Ctrl-C: what was done is kept for a rerun to resume.
    #[error("interrupted; what was already uploaded or started is kept: rerun the same command to resume")]
    Interrupted,
}

impl Error {
    /// AWS's error code, when this is a service error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Aws { code, .. } => code.as_deref(),
            Error::InAccount { source, .. } => source.code(),
            _ => None,
        }
    }

    /// The IAM actions the failed call needs, when it is an answer to one.
    pub(crate) fn actions(&self) -> Option<String> {
        match self {
            Error::Aws { op: Some(op), .. } => Some(actions_of(*op)),
            Error::InAccount { source, .. } => source.actions(),
            _ => None,
        }
    }

    /// The kind of an AWS failure; `None` for the others.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Aws { kind, .. } => Some(*kind),
            Error::InAccount { source, .. } => source.kind(),
            _ => None,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A failure of ours while working with AWS (a wait that ended badly, an answer that
    /// lacks what AWS always sends), not an error AWS returned.
    pub fn failed(
        context: impl Into<String>,
        kind: ErrorKind,
        code: Option<&str>,
        detail: impl Into<String>,
    ) -> Self {
        Error::Aws {
            context: context.into(),
            op: None,
            code: code.map(str::to_owned),
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    /// An answer to `op` without a field AWS always sends.
    pub fn missing(op: Op, field: &str) -> Self {
        Error::failed(
            format!("reading the answer to {op}"),
            ErrorKind::Other,
            None,
            format!("AWS sent no {field}"),
        )
    }

    /// The process exit code: 2 for bad input (nothing was done), 3 for input that changed
    /// during the run, 130 for Ctrl-C, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Invalid(_) => 2,
            Error::Changed(_) => 3,
            Error::Interrupted => 130,
            Error::InAccount { source, .. } => source.exit_code(),
            Error::Incomplete {
                best_effort_only: true,
                ..
            } => 77,
            _ => 1,
        }
    }

    /// An AccessDenied with the `imgpub aws policy …` line that grants what the command
    /// needs; other errors as they are.
    pub fn with_policy_hint(self, fix: &str) -> Self {
        match self.kind() {
            Some(ErrorKind::AccessDenied) => {
                self.with_hint(&format!("`{fix}` prints the policy this command needs"))
            }
            _ => self,
        }
    }

    /// The same error with `more` added to its detail (a fix we know at the call site).
    pub fn with_hint(mut self, more: &str) -> Self {
        if let Error::Aws { detail, .. } = &mut self {
            detail.push_str(" (");
            detail.push_str(more);
            detail.push(')');
        }
        self
    }
}

/// Turns the SDK's error for `op` into an [`Error::Aws`] that says what we were doing
/// (`context`), AWS's code and message, and a fix for the kinds whose fix we know. One line.
pub(crate) fn aws<E>(op: Op, context: impl Into<String>, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err.code().map(str::to_owned);
    let status = err.raw_response().map(|r| r.status().as_u16());
    let kind = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => ErrorKind::Unavailable,
        _ => ErrorKind::from_code(code.as_deref(), status),
    };
    let mut detail = match (err.code(), err.message(), status) {
        (Some(c), Some(m), _) => format!("{c}: {m}"),
        (Some(c), None, _) => c.to_owned(),
        // An answer we could not parse: say what HTTP said.
        (None, _, Some(status)) => format!(
            "HTTP {status} without an AWS error code ({})",
            one_line_chain(&err)
        ),
        // No answer at all (connection refused, timeout, TLS): the cause chain.
        (None, _, None) => {
            let mut chain = one_line_chain(&err);
            if has_untrusted_certificate(&err) {
                chain.push_str(" (the endpoint's TLS certificate is not from a CA this machine trusts: set AWS_CA_BUNDLE to a PEM file that holds that CA, or add it to the system's store)");
            }
            chain
        }
    };
    let hint = match kind {
        ErrorKind::AccessDenied => Some(format!(
            "the credentials lack {}: grant it in IAM, see `imgpub aws policy`",
            actions_of(op)
        )),
        ErrorKind::Credentials => Some(match code.as_deref() {
            Some("ExpiredToken" | "ExpiredTokenException" | "RequestExpired") => {
                "the session credentials have expired: refresh them".to_string()
            }
            _ => "the access key is unknown or the secret is wrong: check the credentials"
                .to_string(),
        }),
        _ => None,
    };
    if let Some(hint) = hint {
        detail.push_str(&format!(" ({hint})"));
    }
    Error::Aws {
        context: context.into(),
        op: Some(op),
        code,
        kind,
        detail,
        source: Some(Box::new(err)),
    }
}

/// The IAM actions `op` needs, for messages: `ec2:RegisterImage` (and the dependent ones).
fn actions_of(op: Op) -> String {
    let mut actions: Vec<&str> = op
        .info()
        .needs
        .iter()
        .filter(|n| n.resource != ResourceKind::Key)
        .map(|n| n.action)
        .collect();
    actions.dedup();
    let listed = match actions.as_slice() {
        [] => op.name(),
        [one] => one.to_string(),
        many => many.join(" and "),
    };
    // The kms: ones apply only to a customer managed key, and AWS's own message names the one
    // refused; the hint only says they may be the cause.
    if op
        .info()
        .needs
        .iter()
        .any(|n| n.resource == ResourceKind::Key)
    {
        format!("{listed}, or the kms: actions on the customer managed KMS key it uses")
    } else {
        listed
    }
}

/// Whether the failure is a TLS certificate that no trusted CA vouches for.
fn has_untrusted_certificate(err: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        find_cause::<rustls::Error>(err),
        Some(rustls::Error::InvalidCertificate(_))
    )
}

/// The first error of type `T` in `err`'s cause chain. `io::Error`s are opened too, because
/// their `source()` skips what they wrap (the TLS error of a failed handshake sits there).
pub(crate) fn find_cause<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        let mut inner = e;
        loop {
            if let Some(found) = inner.downcast_ref::<T>() {
                return Some(found);
            }
            match inner
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(wrapped) => inner = wrapped,
                None => break,
            }
        }
        next = e.source();
    }
    None
}

/// The messages of an error and its sources, joined on one line, skipping the SDK's
/// generic wrappers ("dispatch failure", "other") that say nothing to a user.
pub(crate) fn one_line_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        let msg = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let noise = matches!(
            msg.as_str(),
            "dispatch failure" | "other" | "io error" | "service error" | "unhandled error"
        );
        // A wrapper often repeats its source's message: say it once.
        if !noise && !msg.is_empty() && !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_codes() {
        let k = |c: &str| ErrorKind::from_code(Some(c), Some(400));
        assert_eq!(k("UnauthorizedOperation"), ErrorKind::AccessDenied);
        assert_eq!(k("AccessDeniedException"), ErrorKind::AccessDenied);
        assert_eq!(k("InvalidAMIID.NotFound"), ErrorKind::NotFound);
        assert_eq!(k("InvalidAMIName.Duplicate"), ErrorKind::Conflict);
        assert_eq!(k("RequestLimitExceeded"), ErrorKind::Throttling);
        assert_eq!(k("ExpiredToken"), ErrorKind::Credentials);
        assert_eq!(k("InvalidParameter"), ErrorKind::Other);
        assert_eq!(ErrorKind::from_code(None, Some(404)), ErrorKind::NotFound);
        assert_eq!(
            ErrorKind::from_code(None, Some(503)),
            ErrorKind::Unavailable
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Error::Invalid("x".into()).exit_code(), 2);
        assert_eq!(Error::Interrupted.exit_code(), 130);
        assert_eq!(Error::Changed("x".into()).exit_code(), 3);
        assert_eq!(Error::Conflict("x".into()).exit_code(), 1);
        let incomplete = |best_effort_only| Error::Incomplete {
            detail: "x".into(),
            best_effort_only,
        };
        assert_eq!(incomplete(true).exit_code(), 77);
        assert_eq!(incomplete(false).exit_code(), 1);
        let e = Error::failed("importing", ErrorKind::ImageRejected, None, "no");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.to_string(), "importing: no");
    }

    #[test]
    fn denied_names_the_actions() {
        assert_eq!(
            actions_of(Op::Ec2RegisterImage),
            "ec2:RegisterImage and ec2:CreateTags"
        );
        assert_eq!(actions_of(Op::S3UploadPart), "s3:PutObject");
        assert!(
            actions_of(Op::Ec2CopyImage)
                .ends_with("or the kms: actions on the customer managed KMS key it uses"),
            "{}",
            actions_of(Op::Ec2CopyImage)
        );
    }
}
