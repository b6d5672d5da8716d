//! TLS to the broker (`[oslo_messaging_rabbit] ssl = True`): rustls with the ring provider,
//! through amqprs's tokio-rustls adaptor.
//!
//! Every connection verifies the broker's certificate chain (against `ssl_ca_file`, else the
//! system trust store) and that it names the `transport_url` host (DNS name or IP address),
//! and presents `ssl_cert_file`/`ssl_key_file` when they are set. A setting that cannot be
//! honoured is an error here, at start-up, naming the option and its file; a handshake the
//! broker's certificate fails is explained by `TlsClient::take_failure`. Private key bytes
//! never reach an error message.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use amqprs::tls::TlsAdaptor;
use netiso_config::{RabbitTlsOptions, SslVersion};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    SupportedProtocolVersion,
};
use thiserror::Error;
use tokio_rustls::TlsConnector;

/// Why the TLS settings cannot be honoured. Each message names the option and its file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A configured file cannot be read.
    #[error("[oslo_messaging_rabbit] {option} = {}: cannot read the file: {source}", path.display())]
    Unreadable {
        /// The option naming the file.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A configured file does not hold what the option needs.
    #[error("[oslo_messaging_rabbit] {option} = {}: {reason}", path.display())]
    Invalid {
        /// The option naming the file.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong (never the key's contents).
        reason: String,
    },
    /// `ssl_key_file` without `ssl_cert_file`.
    #[error(
        "[oslo_messaging_rabbit] ssl_key_file = {}: set without ssl_cert_file, the key is of no \
         use without its certificate", .0.display()
    )]
    KeyWithoutCertificate(PathBuf),
    /// No `ssl_ca_file` and nothing usable in the system trust store.
    #[error(
        "[oslo_messaging_rabbit] ssl = True without ssl_ca_file, and the system trust store \
         has no usable CA certificate ({0}): set ssl_ca_file to the CA that signed the broker's \
         certificate"
    )]
    NoSystemRoots(String),
    /// rustls refused the assembled configuration.
    #[error("TLS client configuration: {0}")]
    Setup(String),
}

/// The TLS side of a transport: one rustls configuration, shared by every connection.
#[derive(Clone)]
pub(crate) struct TlsClient {
    connector: TlsConnector,
    verifier: Arc<ExplainingVerifier>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("trusted", &self.verifier.trusted)
            .finish()
    }
}

impl TlsClient {
    /// Loads the files and builds the rustls configuration; `None` when `ssl` is off.
    pub(crate) fn new(options: &RabbitTlsOptions) -> Result<Option<Self>, TlsError> {
        if !options.ssl {
            return Ok(None);
        }
        let provider = Arc::new(ring::default_provider());
        let (roots, trusted) = match &options.ssl_ca_file {
            Some(path) => (
                ca_file_roots(path)?,
                format!("ssl_ca_file {}", path.display()),
            ),
            None => (system_roots()?, "the system trust store".to_owned()),
        };
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))?;
        let verifier = Arc::new(ExplainingVerifier {
            inner,
            trusted,
            failure: Mutex::new(None),
        });
        let versions: &[&SupportedProtocolVersion] = match options.ssl_version {
            SslVersion::Negotiate => &[&rustls::version::TLS13, &rustls::version::TLS12],
            SslVersion::Tls12 => &[&rustls::version::TLS12],
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>);
        let config = match (&options.ssl_cert_file, &options.ssl_key_file) {
            (None, None) => builder.with_no_client_auth(),
            (None, Some(key)) => return Err(TlsError::KeyWithoutCertificate(key.clone())),
            (Some(cert_path), key_path) => {
                let (chain, key) = client_identity(cert_path, key_path.as_deref())?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    let (option, path) = match key_path {
                        Some(key_path) => ("ssl_key_file", key_path.clone()),
                        None => ("ssl_cert_file", cert_path.clone()),
                    };
                    TlsError::Invalid {
                        option,
                        path,
                        reason: format!(
                            "the private key does not go with the certificate in {}: {e}",
                            cert_path.display()
                        ),
                    }
                })?
            }
        };
        Ok(Some(Self {
            connector: TlsConnector::from(Arc::new(config)),
            verifier,
        }))
    }

    /// The amqprs adaptor for one broker: `host` is what the certificate must name.
    pub(crate) fn adaptor(&self, host: &str) -> TlsAdaptor {
        self.verifier.clear();
        TlsAdaptor::new(self.connector.clone(), host.to_owned())
    }

    /// Why the last handshake rejected the broker's certificate, if it did.
    pub(crate) fn take_failure(&self) -> Option<String> {
        self.verifier
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

fn read(option: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Unreadable {
        option,
        path: path.to_owned(),
        source,
    })
}

/// Every `CERTIFICATE` block of a PEM file, at least one.
fn certificates(
    option: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |reason: String| TlsError::Invalid {
        option,
        path: path.to_owned(),
        reason,
    };
    let bytes = read(option, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            "no certificate in the file (expected PEM `-----BEGIN CERTIFICATE-----`)".to_owned(),
        ));
    }
    Ok(certs)
}

fn ca_file_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in certificates("ssl_ca_file", path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::Invalid {
            option: "ssl_ca_file",
            path: path.to_owned(),
            reason: format!(
                "certificate #{} is not a usable CA certificate: {e}",
                index + 1
            ),
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(TlsError::NoSystemRoots(why));
    }
    Ok(roots)
}

/// The client certificate chain and its key: from `ssl_key_file`, or from the certificate
/// file itself when no key file is set (Python's `load_cert_chain(certfile)` does the same).
fn client_identity(
    cert_path: &Path,
    key_path: Option<&Path>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certificates("ssl_cert_file", cert_path)?;
    let (option, path) = match key_path {
        Some(path) => ("ssl_key_file", path),
        None => ("ssl_cert_file", cert_path),
    };
    let bytes = read(option, path)?;
    // The PEM parser's own messages may quote lines of the file: only say what is missing.
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok((chain, key)),
        Err(_) if key_path.is_none() => Err(TlsError::Invalid {
            option: "ssl_cert_file",
            path: cert_path.to_owned(),
            reason: "holds no private key and ssl_key_file is not set: a client certificate \
                     needs its key"
                .to_owned(),
        }),
        Err(_) => Err(TlsError::Invalid {
            option,
            path: path.to_owned(),
            reason: "no usable private key in the file (expected an unencrypted PEM key: \
                     PKCS#8 `BEGIN PRIVATE KEY`, PKCS#1 `BEGIN RSA PRIVATE KEY` or SEC1 \
                     `BEGIN EC PRIVATE KEY`)"
                .to_owned(),
        }),
    }
}

/// rustls's web PKI verifier, remembering in plain words why it rejected a certificate
/// (amqprs only passes on the handshake error's text).
#[derive(Debug)]
struct ExplainingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// What the chain must lead to, for messages.
    trusted: String,
    failure: Mutex<Option<String>>,
}

impl ExplainingVerifier {
    fn clear(&self) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn explain(&self, server_name: &ServerName<'_>, error: &rustls::Error) -> String {
        let name = server_name.to_str();
        match error {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer => format!(
                    "the broker's certificate has an unknown issuer: it does not chain to a CA \
                     of {}",
                    self.trusted
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    format!("the broker's certificate has expired ({cert})")
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    format!("the broker's certificate is not valid yet ({cert})")
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => format!(
                    "the broker's certificate is not valid for name {name:?}, the \
                     transport_url host ({cert})"
                ),
                other => format!("the broker's certificate was rejected: {other}"),
            },
            other => format!("the broker's certificate was rejected: {other}"),
        }
    }
}

impl ServerCertVerifier for ExplainingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|error| {
                let explained = self.explain(server_name, error);
                *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(explained);
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    /// A self-signed certificate and its key, written to `dir`; returns (cert, key) paths.
    fn identity(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    fn on(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> RabbitTlsOptions {
        RabbitTlsOptions {
            ssl: true,
            ssl_version: SslVersion::Negotiate,
            ssl_ca_file: ca.map(Path::to_owned),
            ssl_cert_file: cert.map(Path::to_owned),
            ssl_key_file: key.map(Path::to_owned),
        }
    }

    fn error(options: &RabbitTlsOptions) -> String {
        TlsClient::new(options).unwrap_err().to_string()
    }

    #[test]
    fn ssl_off_builds_nothing() {
        assert!(
            TlsClient::new(&RabbitTlsOptions::default())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn usable_files_build_a_client_with_and_without_a_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = identity(dir.path(), "ca.example");
        let (cert, key) = identity(dir.path(), "client.example");
        assert!(
            TlsClient::new(&on(Some(&ca), None, None))
                .unwrap()
                .is_some()
        );
        assert!(
            TlsClient::new(&on(Some(&ca), Some(&cert), Some(&key)))
                .unwrap()
                .is_some()
        );
        let tls12 = RabbitTlsOptions {
            ssl_version: SslVersion::Tls12,
            ..on(Some(&ca), None, None)
        };
        assert!(TlsClient::new(&tls12).unwrap().is_some());
        // Certificate and key in one file, as Python's load_cert_chain(certfile) accepts.
        let combined = dir.path().join("combined.pem");
        let text =
            std::fs::read_to_string(&cert).unwrap() + &std::fs::read_to_string(&key).unwrap();
        std::fs::write(&combined, text).unwrap();
        assert!(
            TlsClient::new(&on(Some(&ca), Some(&combined), None))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn missing_or_invalid_ca_files_name_the_option_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere.pem");
        let message = error(&on(Some(&missing), None, None));
        assert!(
            message.starts_with(&format!(
                "[oslo_messaging_rabbit] ssl_ca_file = {}: cannot read the file",
                missing.display()
            )),
            "{message}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let message = error(&on(Some(&garbage), None, None));
        assert!(
            message.contains("ssl_ca_file") && message.contains("no certificate in the file"),
            "{message}"
        );
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = identity(dir.path(), "ca.example");
        let (cert, _) = identity(dir.path(), "client.example");
        let message = error(&on(Some(&ca), Some(&cert), None));
        assert!(
            message.contains(&format!("ssl_cert_file = {}", cert.display()))
                && message.contains("no private key"),
            "{message}"
        );
        let message = error(&on(Some(&ca), None, Some(&cert)));
        assert!(message.contains("without ssl_cert_file"), "{message}");
    }

    #[test]
    fn bad_keys_are_named_without_their_contents() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = identity(dir.path(), "ca.example");
        let (cert, _) = identity(dir.path(), "client.example");
        let (_, other_key) = identity(dir.path(), "other.example");
        let message = error(&on(Some(&ca), Some(&cert), Some(&other_key)));
        assert!(
            message.contains(&format!("ssl_key_file = {}", other_key.display()))
                && message.contains("does not go with the certificate"),
            "{message}"
        );
        let secret =
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
        let broken = dir.path().join("broken-key.pem");
        std::fs::write(&broken, secret).unwrap();
        let message = error(&on(Some(&ca), Some(&cert), Some(&broken)));
        assert!(
            message.contains("ssl_key_file") && !message.contains("c2VjcmV0"),
            "{message}"
        );
        let message = error(&on(
            Some(&ca),
            Some(&cert),
            Some(&dir.path().join("absent-key.pem")),
        ));
        assert!(
            message.contains("ssl_key_file") && message.contains("cannot read"),
            "{message}"
        );
    }
}
