//! TLS to databases, with the five `sslmode`s of libpq and `sslrootcert`, through rustls: one
//! crypto backend for the whole binary, no OpenSSL.
//!
//! The modes mean what they mean to libpq:
//!
//! | mode | encrypted | certificate checked | host name checked |
//! |---|---|---|---|
//! | `disable` | no | – | – |
//! | `prefer` | if the server offers TLS | no | no |
//! | `require` | always; a server without TLS is refused | only with `sslrootcert` (then as `verify-ca`) | no |
//! | `verify-ca` | always | against `sslrootcert`, or the system's roots | no |
//! | `verify-full` | always | against `sslrootcert`, or the system's roots | yes |
//!
//! One difference from libpq, on purpose: without `sslrootcert`, the verifying modes trust the
//! system's roots rather than `~/.postgresql/root.crt`, so a certificate from a public or
//! company CA installed on the host works without more settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// How a connection to a database uses TLS; see the crate's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub const NAMES: &'static str = "disable, prefer, require, verify-ca or verify-full";

    pub fn parse(name: &str) -> Result<Self, TlsError> {
        Ok(match name {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(TlsError::Settings(format!(
                    "sslmode {other:?} is not one of {}",
                    Self::NAMES
                )));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Settings(String),
    #[error("sslrootcert {path}: {reason}")]
    RootCert { path: PathBuf, reason: String },
}

/// How much of the server's certificate a mode checks, once `sslrootcert` is taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// A mode and its optional root certificate file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbTls {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

impl DbTls {
    pub fn new(mode: SslMode, root_cert: Option<PathBuf>) -> Self {
        DbTls { mode, root_cert }
    }

    pub fn check(&self) -> Check {
        match self.mode {
            SslMode::Disable | SslMode::Prefer => Check::Nothing,
            // libpq: with a root certificate, require behaves as verify-ca.
            SslMode::Require if self.root_cert.is_some() => Check::Chain,
            SslMode::Require => Check::Nothing,
            SslMode::VerifyCa => Check::Chain,
            SslMode::VerifyFull => Check::ChainAndName,
        }
    }

    /// The rustls configuration for this mode; `None` for `disable`.
    pub fn client_config(&self) -> Result<Option<rustls::ClientConfig>, TlsError> {
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Settings(e.to_string()))?;
        let config = match self.check() {
            Check::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth(),
            check => {
                let roots = Arc::new(self.roots()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TlsError::Settings(format!("certificate verifier: {e}")))?;
                if check == Check::ChainAndName {
                    builder.with_webpki_verifier(webpki).with_no_client_auth()
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                        .with_no_client_auth()
                }
            }
        };
        Ok(Some(config))
    }

    fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let bad = |reason: String| TlsError::RootCert {
                    path: path.clone(),
                    reason,
                };
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| bad(e.to_string()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(e.to_string()))?;
                if certs.is_empty() {
                    return Err(bad("holds no PEM certificate".into()));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| bad(e.to_string()))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(TlsError::Settings(
                        "no system root certificates were found: set sslrootcert".into(),
                    ));
                }
            }
        }
        Ok(roots)
    }
}

/// Encrypts without checking who answers (`prefer`, and `require` without a root certificate).
/// The handshake's signatures are still checked, so the session is with the holder of the
/// certificate's key, whoever that is.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks the chain to a trusted root but not the host name (`verify-ca`).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A PostgreSQL connection's settings with its TLS: the driver's configuration and the TLS
/// connector to pass to it. One connector type serves every mode (`disable` never starts TLS),
/// so pools and listeners need not be generic over it.
pub struct Postgres {
    pub config: tokio_postgres::Config,
    pub tls: tokio_postgres_rustls::MakeRustlsConnect,
    pub settings: DbTls,
}

impl std::fmt::Debug for Postgres {
    /// The settings only: the driver's configuration may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// From a `postgres://` URL or a `key=value` connection string. `sslmode` (default `prefer`,
    /// as libpq) and `sslrootcert` are taken out and handled here, since the driver knows only
    /// three modes and no root certificates.
    pub fn from_connection_string(conn: &str) -> Result<Self, TlsError> {
        let (rest, mode, root) = split_tls_params(conn);
        let mode = match mode {
            Some(m) => SslMode::parse(&m)?,
            None => SslMode::Prefer,
        };
        let config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| TlsError::Settings(format!("invalid database URL: {e}")))?;
        Self::with(config, DbTls::new(mode, root.map(PathBuf::from)))
    }

    /// A configuration built in code, with the given TLS settings.
    pub fn with(mut config: tokio_postgres::Config, settings: DbTls) -> Result<Self, TlsError> {
        config.ssl_mode(match settings.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let rustls_config = match settings.client_config()? {
            Some(c) => c,
            // Never used: the driver does not start TLS in disable mode.
            None => DbTls::new(SslMode::Prefer, None)
                .client_config()?
                .expect("prefer has a configuration"),
        };
        Ok(Postgres {
            config,
            tls: tokio_postgres_rustls::MakeRustlsConnect::new(rustls_config),
            settings,
        })
    }
}

/// Takes `sslmode` and `sslrootcert` out of a connection string, URL or key=value form.
fn split_tls_params(conn: &str) -> (String, Option<String>, Option<String>) {
    let mut mode = None;
    let mut root = None;
    let mut take = |key: &str, value: &str| -> bool {
        match key {
            "sslmode" => mode = Some(value.to_owned()),
            "sslrootcert" => root = Some(value.to_owned()),
            _ => return false,
        }
        true
    };
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let Some((base, query)) = conn.split_once('?') else {
            return (conn.to_owned(), None, None);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(k, &percent_decode(v))
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (rest, mode, root)
    } else {
        let kept: Vec<&str> = conn
            .split_whitespace()
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(k.trim(), v.trim_matches('\''))
            })
            .collect();
        (kept.join(" "), mode, root)
    }
}

/// `%XX` escapes, as a URL's query may carry a path (`/` as `%2F`).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error with its causes, as "outer: cause: root cause": a driver's message alone often hides
/// the reason ("error performing TLS handshake"), which is in its source.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether a root certificate file can be read before a connection needs it, so a typo is
/// reported at start-up rather than at the first connection.
pub fn check_root_cert(path: &Path) -> Result<(), TlsError> {
    DbTls::new(SslMode::VerifyFull, Some(path.to_owned()))
        .roots()
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_lose_their_tls_parameters_and_keep_the_rest() {
        let (rest, mode, root) = split_tls_params(
            "postgres://u@db:5432/app?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(rest, "postgres://u@db:5432/app?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, mode, root) = split_tls_params("host=db sslmode=verify-ca user=u");
        assert_eq!(rest, "host=db user=u");
        assert_eq!(mode.as_deref(), Some("verify-ca"));
        assert_eq!(root, None);
        let (rest, mode, _) = split_tls_params("postgres://u@db/app?sslmode=require");
        assert_eq!(
            (rest.as_str(), mode.as_deref()),
            ("postgres://u@db/app", Some("require"))
        );
    }

    #[test]
    fn modes_check_what_libpq_checks() {
        let root = Some(PathBuf::from("/ca.pem"));
        assert_eq!(DbTls::new(SslMode::Prefer, None).check(), Check::Nothing);
        assert_eq!(DbTls::new(SslMode::Require, None).check(), Check::Nothing);
        assert_eq!(
            DbTls::new(SslMode::Require, root.clone()).check(),
            Check::Chain
        );
        assert_eq!(DbTls::new(SslMode::VerifyCa, None).check(), Check::Chain);
        assert_eq!(
            DbTls::new(SslMode::VerifyFull, root).check(),
            Check::ChainAndName
        );
        let err = SslMode::parse("allow").unwrap_err().to_string();
        assert!(
            err.contains("\"allow\"") && err.contains("verify-full"),
            "{err}"
        );
    }

    #[test]
    fn an_unreadable_or_empty_root_certificate_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = check_root_cert(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("sslrootcert {}", missing.display())),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = check_root_cert(&empty).unwrap_err().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
    }
}
