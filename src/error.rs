//! The library's error type. Every variant's message is meant for the user: it names what
//! failed (file, bucket, role, task) and, where we know it, how to fix it.

use std::fmt::Debug;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input, found before any AWS side effect.
    #[error("{0}")]
    Invalid(String),
    /// No usable credentials, region or identity.
    #[error("{0}")]
    Setup(String),
    /// An AWS call failed; `code` is AWS's error code when the service answered.
    #[error("{context}: {detail}")]
    Aws {
        context: String,
        code: Option<String>,
        detail: String,
    },
    /// A local file could not be read.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Ctrl-C: what was done is kept for a rerun to resume.
    #[error("interrupted; what was already uploaded or started is kept: rerun the same command to resume")]
    Interrupted,
    /// A command that is declared but not built yet.
    #[error("{0} is not implemented yet")]
    NotImplemented(String),
}

impl Error {
    /// AWS's error code, when this is a service error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Aws { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Turns an SDK error into an [`Error::Aws`] that says what we were doing (`context`), AWS's
/// code and message, and a fix for the codes whose fix we know. Always one line.
pub fn aws<E>(context: impl Into<String>, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = err.code().map(str::to_owned);
    let mut detail = match (err.code(), err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        // An answer we could not parse: say what HTTP said.
        _ if err.raw_response().is_some() => {
            let status = err
                .raw_response()
                .map(|r| r.status().as_u16())
                .unwrap_or_default();
            format!(
                "HTTP {status} without an AWS error code ({})",
                one_line_chain(&err)
            )
        }
        // No answer at all (connection refused, timeout, no credentials): the cause chain.
        _ => {
            let chain = one_line_chain(&err);
            if chain.contains("invalid peer certificate") {
                format!("{chain} (the endpoint's TLS certificate is not from a CA this machine trusts: set AWS_CA_BUNDLE to a PEM file that holds that CA, or add it to the system's store)")
            } else {
                chain
            }
        }
    };
    if let Some(hint) = code.as_deref().and_then(hint_for) {
        detail.push_str(" (");
        detail.push_str(hint);
        detail.push(')');
    }
    Error::Aws {
        context: context.into(),
        code,
        detail,
    }
}

/// The messages of an error and its sources, joined on one line, skipping the SDK's
/// generic wrappers ("dispatch failure", "other") that say nothing to a user.
pub fn one_line_chain(err: &(dyn std::error::Error + 'static)) -> String {
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
        if !noise && !msg.is_empty() && !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn hint_for(code: &str) -> Option<&'static str> {
    Some(match code {
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => {
            "the credentials lack this permission: grant it in IAM, see `imgpub aws policy`"
        }
        "InvalidClientTokenId" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" => {
            "the access key is unknown or the secret is wrong: check the credentials"
        }
        "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" => {
            "the session credentials have expired: refresh them"
        }
        _ => return None,
    })
}
