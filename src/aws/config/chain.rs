//! Why the SDK's default credential chain gave nothing, source by source, in words: its own
//! error names none of them.

use std::path::PathBuf;

use aws_credential_types::provider::error::CredentialsError;
use aws_types::os_shim_internal::{Env, Fs};

use crate::error::one_line_chain;

/// Whether the credentials come from the SDK's default chain or a source the user chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chain {
    Default,
    Chosen,
}

/// The shared credentials and config files, as the SDK finds them, and what they hold.
pub(super) struct SharedFiles {
    /// Both, as shown to the user: `~/.aws/credentials and ~/.aws/config`.
    shown: String,
    /// The profile the chain reads ($AWS_PROFILE, else `default`).
    profile: String,
    state: FilesState,
}

enum FilesState {
    Missing,
    NoProfile,
    HasProfile,
}

impl SharedFiles {
    /// Reads the files as the SDK does (its own profile parser says whether the profile is
    /// there); the paths only for the message.
    pub(super) async fn read() -> SharedFiles {
        let profile = std::env::var("AWS_PROFILE")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "default".into());
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let mut shown = vec![];
        let mut any = false;
        for (var, name) in [
            ("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
            ("AWS_CONFIG_FILE", "config"),
        ] {
            let (label, path) = match std::env::var_os(var).filter(|p| !p.is_empty()) {
                Some(path) => {
                    let path = PathBuf::from(path);
                    (format!("{} (${var})", path.display()), path)
                }
                None => match &home {
                    Some(h) => (format!("~/.aws/{name}"), h.join(".aws").join(name)),
                    None => continue,
                },
            };
            shown.push(label);
            any |= tokio::fs::metadata(&path).await.is_ok();
        }
        let state = if !any {
            FilesState::Missing
        } else {
            let files = aws_runtime::env_config::file::EnvConfigFiles::default();
            let (fs, env) = (Fs::real(), Env::real());
            match aws_config::profile::load(&fs, &env, &files, None).await {
                Ok(set) if set.get_profile(&profile).is_some() => FilesState::HasProfile,
                // A file the SDK cannot parse fails the chain too: that error is the one said.
                Err(_) => FilesState::HasProfile,
                Ok(_) => FilesState::NoProfile,
            }
        };
        SharedFiles {
            shown: shown.join(" and "),
            profile,
            state,
        }
    }
}

/// A profile named on the command line must be in the shared files (`files`): the SDK's
/// own error says only that its "credential provider was not enabled".
pub(super) async fn check_profile(
    profile: &str,
    files: &aws_runtime::env_config::file::EnvConfigFiles,
    shown: &str,
) -> crate::error::Result<()> {
    let (fs, env) = (Fs::real(), Env::real());
    let set = match aws_config::profile::load(&fs, &env, files, None).await {
        Ok(set) => set,
        // A file the SDK cannot parse: its own error, from the chain, says where.
        Err(_) => return Ok(()),
    };
    if set.get_profile(profile).is_some() {
        return Ok(());
    }
    let mut names: Vec<&str> = set.profiles().collect();
    names.sort();
    let there = match names.is_empty() {
        true => format!("{shown} define no profile"),
        false => format!("{shown} define {}", names.join(", ")),
    };
    Err(crate::error::Error::Invalid(format!(
        "profile {profile:?} is not defined ({there}): create it with `aws configure --profile {profile}`, or pass --profile with one that is"
    )))
}

/// Each source of the default chain, in the SDK's order, and why it gave no credentials:
/// told from the environment and the files (the chain's own error lists none of it in
/// words). The chain stops at the first source that is set up, so the list does too, with
/// that source's error.
pub(super) fn default_chain_report(err: &CredentialsError, files: &SharedFiles) -> String {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let failed = one_line_chain(err);
    let mut tried: Vec<String> = Vec::new();

    if set("AWS_ACCESS_KEY_ID") {
        return format!("environment variables AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY: {failed}");
    }
    tried.push("environment (AWS_ACCESS_KEY_ID is not set)".into());

    let (shown, profile) = (&files.shown, &files.profile);
    match files.state {
        FilesState::Missing => tried.push(format!("shared files ({shown} do not exist)")),
        FilesState::NoProfile => {
            tried.push(format!("shared files (no profile {profile:?} in {shown})"))
        }
        FilesState::HasProfile => {
            tried.push(format!("profile {profile:?} in {shown}: {failed}"));
            return format!("tried {}", tried.join("; "));
        }
    }

    if set("AWS_WEB_IDENTITY_TOKEN_FILE") {
        tried.push(format!(
            "web identity ($AWS_WEB_IDENTITY_TOKEN_FILE): {failed}"
        ));
        return format!("tried {}", tried.join("; "));
    }
    tried.push("web identity (AWS_WEB_IDENTITY_TOKEN_FILE is not set)".into());

    if set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") || set("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        tried.push(format!("container credentials: {failed}"));
        return format!("tried {}", tried.join("; "));
    }
    tried.push(
        "container (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI are not set)".into(),
    );

    let imds = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "http://169.254.169.254".into());
    let why = if std::env::var("AWS_EC2_METADATA_DISABLED")
        .is_ok_and(|v| v.eq_ignore_ascii_case("true"))
    {
        "disabled by AWS_EC2_METADATA_DISABLED".to_string()
    } else {
        match err {
            // Nothing answered with a role: not on EC2, or an instance without one.
            CredentialsError::CredentialsNotLoaded(_) => {
                format!("{imds} gave no instance role: not on EC2, or the instance has none")
            }
            _ => format!("{imds}: {failed}"),
        }
    };
    tried.push(format!("instance metadata ({why})"));
    format!("tried {}", tried.join("; "))
}
