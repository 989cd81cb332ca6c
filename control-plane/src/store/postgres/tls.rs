//! TLS to PostgreSQL over rustls: what the `--db` URL's `sslmode` and `sslrootcert` ask
//! for, read once at load into the driver's configuration and a rustls connector.
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default) | when the server offers TLS | only with `sslrootcert`: the CA |
//! | `require` | always; a server without TLS is refused | only with `sslrootcert`: the CA |
//! | `verify-ca` | always | the CA in `sslrootcert` |
//! | `verify-full` | always | the CA in `sslrootcert` and the host name (or IP address) |
//!
//! As libpq does, `require` with a `sslrootcert` checks the CA. `verify-ca` and
//! `verify-full` need `sslrootcert` (a PEM file of one or more CA certificates): this
//! build trusts no system store, so a missing one is refused at load.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What the URL asked of TLS (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }
}

/// A `--db` URL read: the driver's configuration, the TLS connector its connections use,
/// and what was asked (for messages).
#[derive(Clone)]
pub struct Connect {
    pub config: postgres::Config,
    pub tls: MakeRustlsConnect,
    pub mode: Mode,
    pub root_cert: Option<String>,
}

impl Connect {
    /// Reads `url` (`postgres://user:password@host:port/db?sslmode=…&sslrootcert=…`). A bad
    /// value is refused naming the parameter and what is allowed.
    pub fn parse(url: &str) -> Result<Connect, String> {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        // The driver knows `disable`, `prefer` and `require` only, and no `sslrootcert`:
        // both are taken out here and the rest is left to it.
        let mut kept = Vec::new();
        let mut mode = Mode::Prefer;
        let mut root_cert = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = form_urlencoded::parse(pair.as_bytes())
                .next()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .unwrap_or_default();
            match key.as_str() {
                "sslmode" => {
                    mode = match value.as_str() {
                        "disable" => Mode::Disable,
                        "prefer" => Mode::Prefer,
                        "require" => Mode::Require,
                        "verify-ca" => Mode::VerifyCa,
                        "verify-full" => Mode::VerifyFull,
                        other => {
                            return Err(format!(
                                "--db: sslmode={other} is not known; use disable, prefer, require, verify-ca or verify-full"
                            ))
                        }
                    }
                }
                "sslrootcert" => root_cert = Some(value).filter(|v| !v.is_empty()),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: postgres::Config = rest
            .parse()
            .map_err(|e| format!("--db: not a PostgreSQL URL: {e}"))?;
        config.ssl_mode(match mode {
            Mode::Disable => postgres::config::SslMode::Disable,
            Mode::Prefer => postgres::config::SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => postgres::config::SslMode::Require,
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match &root_cert {
            Some(path) => Some(read_roots(path)?),
            None if matches!(mode, Mode::VerifyCa | Mode::VerifyFull) => {
                return Err(format!(
                    "--db: sslmode={} needs sslrootcert=<file> (a PEM file of the CA that signed the server's certificate)",
                    mode.name()
                ))
            }
            None => None,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match roots {
            None => Arc::new(AnyCertificate(provider.clone())),
            Some(roots) => {
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| format!("--db: sslrootcert: {e}"))?;
                if mode == Mode::VerifyFull {
                    webpki
                } else {
                    Arc::new(CaOnly(webpki))
                }
            }
        };
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("--db: TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Connect {
            config,
            tls: MakeRustlsConnect::new(tls),
            mode,
            root_cert,
        })
    }

    /// Opens one connection.
    pub fn open(&self) -> Result<postgres::Client, postgres::Error> {
        self.config.connect(self.tls.clone())
    }

    /// Why a connection could not be opened, in the operator's words where the cause is a
    /// TLS one (a certificate the CA did not sign, a host name it does not carry, a server
    /// without TLS).
    pub fn explain(&self, e: &postgres::Error) -> String {
        let ca = self.root_cert.as_deref().unwrap_or("?");
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(mut s) = source {
            // tokio-rustls hands rustls' error inside an io::Error, whose `source` skips it.
            if let Some(inner) = s
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                s = inner;
            }
            if let Some(t) = s.downcast_ref::<rustls::Error>() {
                return match t {
                    rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
                        "the server's TLS certificate is not signed by the CA in sslrootcert ({ca}) (sslmode={})",
                        self.mode.name()
                    ),
                    rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. },
                    ) => format!(
                        "the server's TLS certificate does not name the host of --db (sslmode=verify-full checks it; {t})"
                    ),
                    _ => format!("TLS to the server failed: {t}"),
                };
            }
            if s.to_string().contains("server does not support TLS") {
                return format!(
                    "sslmode={} asks for TLS, but the server does not offer it (its `ssl` setting is off)",
                    self.mode.name()
                );
            }
            source = s.source();
        }
        // The driver's own text leaves its cause out ("error performing TLS handshake").
        match std::error::Error::source(e) {
            Some(cause) if !e.to_string().contains(&cause.to_string()) => format!("{e}: {cause}"),
            _ => e.to_string(),
        }
    }
}

fn read_roots(path: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("--db: sslrootcert={path}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("--db: sslrootcert={path}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("--db: sslrootcert={path}: not a CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("--db: sslrootcert={path} holds no PEM certificate"));
    }
    Ok(roots)
}

/// `prefer` and `require` without a CA (as libpq): the channel is encrypted and the
/// handshake's signatures checked, but any certificate is taken.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        verify_tls12_signature(
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
        verify_tls13_signature(
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

/// `verify-ca` (and `prefer`/`require` with a CA): the chain must lead to the CA; the host
/// name is not compared.
#[derive(Debug)]
struct CaOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for CaOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_read_and_checked() {
        let c = Connect::parse("postgres://u@h:5/db").unwrap();
        assert_eq!(c.mode, Mode::Prefer);
        let c = Connect::parse("postgres://u@h:5/db?sslmode=require&application_name=x").unwrap();
        assert_eq!(c.mode, Mode::Require);
        assert_eq!(c.config.get_application_name(), Some("x"));
        assert_eq!(c.config.get_ssl_mode(), postgres::config::SslMode::Require);
        let c = Connect::parse("postgres://u@h:5/db?sslmode=disable").unwrap();
        assert_eq!(c.config.get_ssl_mode(), postgres::config::SslMode::Disable);
        let e = Connect::parse("postgres://u@h:5/db?sslmode=verify-full")
            .err()
            .unwrap();
        assert!(e.contains("sslrootcert"), "{e}");
        let e = Connect::parse("postgres://u@h:5/db?sslmode=allow")
            .err()
            .unwrap();
        assert!(
            e.contains("sslmode=allow") && e.contains("verify-full"),
            "{e}"
        );
        let e = Connect::parse(
            "postgres://u@h:5/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .err()
        .unwrap();
        assert!(e.contains("sslrootcert=/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn sslrootcert_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        std::fs::write(&ca, cert.pem()).unwrap();
        let url = format!(
            "postgres://u@h:5/db?sslmode=verify-full&sslrootcert={}",
            ca.display()
        );
        let c = Connect::parse(&url).unwrap();
        assert_eq!(
            (c.mode, c.root_cert.as_deref()),
            (Mode::VerifyFull, ca.to_str())
        );
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let e = Connect::parse(&url).err().unwrap();
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }
}
