//! TLS to PostgreSQL, through rustls (with ring, as reqwest already uses it).
//!
//! libpq's `sslmode` and `sslrootcert` are read from the database URL, because
//! tokio-postgres itself knows only disable, prefer and require. What each mode
//! means is libpq's:
//! - `disable`: no TLS;
//! - `prefer` (libpq's default) and `require`: TLS (prefer falls back to plain if the
//!   server has none); the certificate is verified against `sslrootcert` when one is
//!   given (as verify-ca), and not at all otherwise;
//! - `verify-ca`: the certificate must chain to `sslrootcert`;
//! - `verify-full`: that, and it must name the host connected to.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The TLS settings of a database URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    pub root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a connection string, in either libpq form
/// (`key=value ...` or `postgres://...?sslmode=...`); returns the rest for
/// tokio-postgres, and the settings.
pub fn split(url: &str) -> Result<(String, Settings), String> {
    let mut settings = Settings { mode: Mode::Prefer, root_cert: None };
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => {
                settings.mode = match value {
                    "disable" => Mode::Disable,
                    "allow" | "prefer" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => return Err(format!("unknown sslmode {other:?} in the database URL")),
                };
                Ok(true)
            }
            "sslrootcert" => {
                settings.root_cert = Some(value.to_string());
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&') {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(k, &percent_decode(v))? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            let (k, v) = word.split_once('=').unwrap_or((word, ""));
            if !take(k.trim(), v.trim().trim_matches('\''))? {
                kept.push(word);
            }
        }
        kept.join(" ")
    };
    if matches!(settings.mode, Mode::VerifyCa | Mode::VerifyFull) && settings.root_cert.is_none() {
        return Err(format!("sslmode {:?} needs sslrootcert=<CA file> in the database URL", settings.mode));
    }
    Ok((rest, settings))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok()),
        ) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The rustls configuration for `s` (None: no TLS).
pub fn client_config(s: &Settings) -> Result<Option<Arc<ClientConfig>>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let roots = match &s.root_cert {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("sslrootcert {path}: {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
                roots.add(cert).map_err(|e| format!("sslrootcert {path}: {e}"))?;
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let config = match (s.mode, roots) {
        (Mode::Disable, _) => return Ok(None),
        (Mode::VerifyFull, Some(roots)) => builder.with_root_certificates(roots).with_no_client_auth(),
        (Mode::VerifyCa | Mode::Require | Mode::Prefer, Some(roots)) => {
            let chain = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| format!("sslrootcert: {e}"))?;
            let v = Verifier { chain: Some(chain), provider };
            builder.dangerous().with_custom_certificate_verifier(Arc::new(v)).with_no_client_auth()
        }
        (Mode::Require | Mode::Prefer, None) => {
            let v = Verifier { chain: None, provider };
            builder.dangerous().with_custom_certificate_verifier(Arc::new(v)).with_no_client_auth()
        }
        (Mode::VerifyCa | Mode::VerifyFull, None) => return Err("verification needs sslrootcert".into()),
    };
    Ok(Some(Arc::new(config)))
}

/// The certificate checks of verify-ca (`chain`: it must chain to sslrootcert; the name
/// is not checked) and of require without sslrootcert (`chain` None: libpq's meaning,
/// encrypted but unverified). The handshake signatures are checked either way, so the
/// session key is the certificate holder's.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// tokio-postgres' TLS connector over rustls.
#[derive(Clone)]
pub struct MakeRustls(pub Arc<ClientConfig>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MakeTlsConnect<S> for MakeRustls {
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Connect, Self::Error> {
        // (a name that cannot be a server name fails at connect, which sslmode disable
        // never reaches: a Unix-domain socket has no host name)
        Ok(Connect { config: self.0.clone(), name: ServerName::try_from(domain.to_string()).ok() })
    }
}

pub struct Connect {
    config: Arc<ClientConfig>,
    name: Option<ServerName<'static>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> TlsConnect<S> for Connect {
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = self.name.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "TLS needs a host name"))?;
            tokio_rustls::TlsConnector::from(self.config).connect(name, stream).await.map(|s| Stream(Box::new(s)))
        })
    }
}

pub struct Stream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM's channel binding is optional ("prefer"); without it the TLS session
        // still protects the password exchange.
        ChannelBinding::none()
    }
}

/// A tokio-postgres configuration and TLS connector for a database URL, as libpq
/// would connect: TLS per sslmode, none over Unix-domain sockets (PostgreSQL offers
/// none there). With TLS off the connector is never used (sslmode disable).
pub fn configure(database_url: &str, application: &str) -> Result<(tokio_postgres::Config, MakeRustls), String> {
    let (url, settings) = split(database_url)?;
    let mut pg: tokio_postgres::Config = url.parse().map_err(|e| format!("bad database URL: {e}"))?;
    if pg.get_application_name().is_none() {
        pg.application_name(application);
    }
    let unix_only = pg.get_hosts().iter().all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
    let config = if unix_only { None } else { client_config(&settings)? };
    match config {
        Some(config) => {
            pg.ssl_mode(if settings.mode == Mode::Prefer {
                tokio_postgres::config::SslMode::Prefer
            } else {
                tokio_postgres::config::SslMode::Require
            });
            Ok((pg, MakeRustls(config)))
        }
        None => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let unused = client_config(&Settings { mode: Mode::Require, root_cert: None })?
                .ok_or("TLS: no configuration for require")?;
            Ok((pg, MakeRustls(unused)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_both_url_forms() {
        let (rest, s) = split("host=db port=5432 user=w sslmode=verify-full sslrootcert=/etc/ca.pem dbname=x").unwrap();
        assert_eq!(rest, "host=db port=5432 user=w dbname=x");
        assert_eq!(s, Settings { mode: Mode::VerifyFull, root_cert: Some("/etc/ca.pem".into()) });
        let (rest, s) = split("postgres://w@db/x?sslmode=require&application_name=a&sslrootcert=%2Fca.pem").unwrap();
        assert_eq!(rest, "postgres://w@db/x?application_name=a");
        assert_eq!(s, Settings { mode: Mode::Require, root_cert: Some("/ca.pem".into()) });
        assert_eq!(split("host=db").unwrap().1.mode, Mode::Prefer);
        assert_eq!(
            split("postgres://db/x?sslmode=disable").unwrap(),
            ("postgres://db/x".into(), Settings { mode: Mode::Disable, root_cert: None })
        );
        assert!(split("host=db sslmode=verify-ca").unwrap_err().contains("sslrootcert"));
        assert!(split("host=db sslmode=sometimes").unwrap_err().contains("unknown sslmode"));
    }
}
