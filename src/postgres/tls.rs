//! TLS for every connection pgshift makes, with libpq's `sslmode` and `sslrootcert` semantics, on
//! rustls (no OpenSSL headers needed):
//!
//! - `disable`: no TLS.
//! - `prefer` (the default): TLS when the server offers it, else plain; the certificate is not checked.
//! - `require`: TLS or no connection; the certificate is not checked — unless a root certificate file
//!   exists (`sslrootcert`, or the default `~/.postgresql/root.crt`): then, as libpq does, the chain is
//!   checked as in `verify-ca`.
//! - `verify-ca`: TLS, the server's chain checked against the root certificates.
//! - `verify-full`: as `verify-ca`, and the certificate must name the host connected to.
//!
//! `sslrootcert=system` uses the system's trusted roots and, as in libpq, needs `verify-full`.
//! `allow` and client certificates are not supported. Unix-socket connections never use TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::UserError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(role: &str, given: &str, value: &str) -> Result<Self, UserError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(UserError::new(
                    format!("{role}: {given}=allow is not supported"),
                    "use sslmode=prefer (TLS when the server offers it) or sslmode=disable",
                ))
            }
            _ => {
                return Err(UserError::new(
                    format!("{role}: {given}={value} is not an sslmode"),
                    "use one of disable, prefer, require, verify-ca, verify-full",
                ))
            }
        })
    }
}

/// Where the root certificates come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    /// The system's trusted roots (`sslrootcert=system`).
    System,
}

/// What one connection does about TLS, resolved once when the connection string is parsed.
#[derive(Clone)]
pub struct Tls {
    pub mode: SslMode,
    /// The root certificates the server's chain is checked against; `None`: not checked.
    pub root: Option<RootCert>,
    connector: Option<MakeRustlsConnect>,
}

impl Tls {
    /// From `sslmode` and `sslrootcert` as given in the connection string or, failing that, in
    /// `PGSSLMODE` / `PGSSLROOTCERT`. Reads the root certificates now, so a bad file fails before
    /// any work starts.
    pub fn resolve(
        role: &str,
        sslmode: Option<(&str, &str)>,
        sslrootcert: Option<(&str, &str)>,
    ) -> Result<Self, UserError> {
        let mode = sslmode.map(|(given, v)| SslMode::parse(role, given, v)).transpose()?;
        if let Some((given, "system")) = sslrootcert {
            let mode = mode.unwrap_or(SslMode::VerifyFull);
            if mode != SslMode::VerifyFull {
                return Err(UserError::new(
                    format!("{role}: {given}=system needs sslmode=verify-full (sslmode is {})", mode.as_str()),
                    "use sslmode=verify-full with the system's roots, or give sslrootcert=FILE",
                ));
            }
            let roots = system_roots(role)?;
            return Self::build(role, mode, Some((RootCert::System, roots)));
        }
        let mode = mode.unwrap_or(SslMode::Prefer);
        let path = match sslrootcert {
            Some((_, p)) => Some(PathBuf::from(p)),
            None => default_root_cert(),
        };
        let root = match mode {
            SslMode::Disable | SslMode::Prefer => None,
            // libpq: with a root certificate file present, require checks the chain like verify-ca
            SslMode::Require => match path.filter(|p| p.exists()) {
                Some(p) => Some((RootCert::File(p.clone()), file_roots(role, &p)?)),
                None => None,
            },
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let p = match path {
                    Some(p) if sslrootcert.is_some() || p.exists() => p,
                    default => {
                        let looked =
                            default.map(|p| format!(" and {} does not exist", p.display())).unwrap_or_default();
                        return Err(UserError::new(
                            format!(
                                "{role}: sslmode={} needs the CA's certificate: no sslrootcert given{looked}",
                                mode.as_str()
                            ),
                            "give sslrootcert=FILE (or PGSSLROOTCERT) with the CA that signed the server's \
                             certificate, or use sslmode=require to encrypt without checking it",
                        ));
                    }
                };
                Some((RootCert::File(p.clone()), file_roots(role, &p)?))
            }
        };
        Self::build(role, mode, root)
    }

    fn build(role: &str, mode: SslMode, root: Option<(RootCert, RootCertStore)>) -> Result<Self, UserError> {
        if mode == SslMode::Disable {
            return Ok(Self { mode, root: None, connector: None });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let failed = |e: String| UserError::new(format!("{role}: cannot set up TLS ({e})"), "report this as a bug");
        let (root, verifier): (_, Arc<dyn ServerCertVerifier>) = match root {
            None => (None, Arc::new(NoCheck(provider.clone()))),
            Some((root, store)) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                    .build()
                    .map_err(|e| failed(e.to_string()))?;
                if mode == SslMode::VerifyFull {
                    (Some(root), webpki as Arc<dyn ServerCertVerifier>)
                } else {
                    (Some(root), Arc::new(ChainOnly(webpki)))
                }
            }
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| failed(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self { mode, root, connector: Some(MakeRustlsConnect::new(config)) })
    }

    /// The rustls connector; `None` for `sslmode=disable`.
    pub fn connector(&self) -> Option<MakeRustlsConnect> {
        self.connector.clone()
    }

    /// What libpq children get: `PGSSLMODE` always, `PGSSLROOTCERT` when roots are in use.
    pub fn libpq_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("PGSSLMODE".to_string(), self.mode.as_str().to_string())];
        match &self.root {
            Some(RootCert::File(p)) => env.push(("PGSSLROOTCERT".into(), p.display().to_string())),
            Some(RootCert::System) => env.push(("PGSSLROOTCERT".into(), "system".into())),
            None => {}
        }
        env
    }

    /// The tokio-postgres mode: it knows disable, prefer and require; the checks are the connector's.
    pub fn wire_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// libpq's default root certificate file: `~/.postgresql/root.crt`.
fn default_root_cert() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| Path::new(&h).join(".postgresql/root.crt"))
}

fn file_roots(role: &str, path: &Path) -> Result<RootCertStore, UserError> {
    let shown = path.display();
    let fix = "give sslrootcert=FILE (or PGSSLROOTCERT) naming a readable PEM file with the CA that signed the \
               server's certificate, or use sslmode=require to encrypt without checking it";
    let bytes = std::fs::read(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        UserError::new(format!("{role}: cannot read the root certificate file {shown} ({why})"), fix)
    })?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&bytes).collect::<Result<_, _>>().map_err(|e| {
            UserError::new(format!("{role}: the root certificate file {shown} is not valid PEM ({e})"), fix)
        })?;
    if certs.is_empty() {
        return Err(UserError::new(format!("{role}: the root certificate file {shown} holds no certificate"), fix));
    }
    let mut store = RootCertStore::empty();
    for cert in certs {
        store.add(cert).map_err(|e| {
            UserError::new(
                format!("{role}: the root certificate file {shown} holds an unusable certificate ({e})"),
                fix,
            )
        })?;
    }
    Ok(store)
}

fn system_roots(role: &str) -> Result<RootCertStore, UserError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(UserError::new(
            format!("{role}: sslrootcert=system but no trusted root certificate was found on this system"),
            "install the ca-certificates package (or set SSL_CERT_FILE), or give sslrootcert=FILE",
        ));
    }
    Ok(store)
}

/// `prefer` and `require` without roots: encrypted, the certificate taken as it is (the handshake's
/// signatures are still checked, so the peer holds the certificate's key).
#[derive(Debug)]
struct NoCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `require` with roots): the chain, validity and usage are checked; the host name
/// is not. webpki checks the name only after the chain passed, so only that last error is forgiven.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_bad_ones_are_one_clear_error() {
        for m in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(SslMode::parse("source", "sslmode", m).unwrap().as_str(), m);
        }
        let e = SslMode::parse("source", "sslmode", "verify_full").unwrap_err();
        assert!(e.message.contains("sslmode=verify_full is not an sslmode"), "{e}");
        let e = SslMode::parse("source", "PGSSLMODE", "allow").unwrap_err();
        assert!(e.message.contains("PGSSLMODE=allow is not supported"), "{e}");
    }

    #[test]
    fn verify_without_a_root_file_fails_before_connecting() {
        let e = Tls::resolve("source", Some(("sslmode", "verify-ca")), Some(("sslrootcert", "/nonexistent/ca.crt")))
            .err()
            .expect("missing file refused");
        assert!(e.message.contains("cannot read the root certificate file /nonexistent/ca.crt (no such file)"), "{e}");
        // require with a missing root file encrypts without checking, as libpq does
        let t = Tls::resolve("source", Some(("sslmode", "require")), Some(("sslrootcert", "/nonexistent/ca.crt")))
            .expect("require without file");
        assert_eq!(t.root, None);
        let e = Tls::resolve("source", Some(("sslmode", "require")), Some(("sslrootcert", "system"))).err().unwrap();
        assert!(e.message.contains("needs sslmode=verify-full"), "{e}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.crt");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let e = Tls::resolve("target", Some(("sslmode", "verify-full")), Some(("sslrootcert", f.to_str().unwrap())))
            .err()
            .unwrap();
        assert!(e.message.contains("holds no certificate"), "{e}");
    }
}
