//! The CA bundle (`AWS_CA_BUNDLE`): an HTTPS client that trusts exactly its certificates.

use std::path::Path;

use aws_smithy_http_client::{tls, Builder as HttpClientBuilder};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::error::{Error, Result};

/// An HTTPS client that trusts exactly the CA certificates in the PEM file `path`.
/// Certificates the TLS library cannot use as a root are left out (the client itself would
/// panic on them); a file with none it can use is an error.
pub(super) async fn ca_bundle_client(path: &Path) -> Result<SharedHttpClient> {
    use base64::Engine;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    let shown = path.display();
    let pem = tokio::fs::read(path).await.map_err(|e| {
        Error::Invalid(format!(
            "AWS_CA_BUNDLE={shown} cannot be read ({e}); point it at a PEM file of CA certificates, or unset it"
        ))
    })?;
    let mut roots = rustls::RootCertStore::empty();
    let mut usable = String::new();
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der = der.map_err(|e| {
            Error::Invalid(format!(
                "AWS_CA_BUNDLE={shown} is not a PEM file of certificates ({e}); point it at one, or unset it"
            ))
        })?;
        if roots.add(der.clone()).is_ok() {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
            usable.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                // Base64 is ASCII.
                usable.push_str(std::str::from_utf8(line).unwrap_or(""));
                usable.push('\n');
            }
            usable.push_str("-----END CERTIFICATE-----\n");
        }
    }
    if roots.is_empty() {
        return Err(Error::Invalid(format!(
            "AWS_CA_BUNDLE={shown} holds no CA certificate; point it at a PEM file of CA certificates, or unset it"
        )));
    }
    let trust = tls::TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(usable.into_bytes());
    let context = tls::TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| Error::Invalid(format!("AWS_CA_BUNDLE={shown}: {e}")))?;
    Ok(HttpClientBuilder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https())
}
