//! How the proxy reaches origins: one TCP connect, one rustls client
//! configuration (the system's roots plus `origin_ca_file`), one connector
//! factory for hyper clients and one way of telling a certificate that
//! cannot be verified from any other failure.
//!
//! Every path that talks to an origin goes through here: human passthrough
//! (`proxy::forward`, `proxy::origin_pool`), the renderer's intercepted
//! fetches (`render::origin`), the refresher's conditional polls and the
//! sitemap fetches of `POST /api/v1/warm`. The raw relay
//! (`proxy::relay`) speaks plain HTTP/1.1 only: a request for a site
//! whose origin is `https://` goes to the hyper path, which uses the TLS
//! connections made here (pooled and kept alive like plain ones).
//!
//! SNI and the certificate check always use the origin URL's host;
//! `origin_host` only changes the `Host` header the origin sees.

pub mod client;
pub mod limits;

pub use client::{error_chain, origin_uri, OriginError, UpstreamClient};
pub use limits::PoolLimits;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The connector every hyper client to origins is built on: `http://` and
/// `https://` URLs, TLS from [`tls_config`].
pub type OriginConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The client configuration installed at start ([`init`]); without one,
/// the system's roots alone.
static TLS: OnceLock<Arc<ClientConfig>> = OnceLock::new();

/// The rustls crypto provider of the whole process (ring), installed once
/// so that every rustls user (the Redis client too) finds it.
pub fn install_crypto_provider() {
    let _ = provider().install_default();
}

/// ring: a pure Rust and assembly build (aws-lc-rs needs a C toolchain
/// and doubles the build time). rustls marks it deprecated only because
/// it lacks the post-quantum key exchange; classic ECDHE is what origins
/// and Redis servers offer today.
#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Builds the origin TLS configuration from the system's roots plus the
/// PEM certificates of `origin_ca_file`, and makes it the one every origin
/// connection uses. Called once at start, before any client is built.
pub fn init(origin_ca_file: Option<&Path>) -> Result<(), String> {
    let config = client_config(origin_ca_file)?;
    let _ = TLS.set(Arc::new(config));
    Ok(())
}

/// The rustls configuration for origins.
pub fn tls_config() -> Arc<ClientConfig> {
    TLS.get_or_init(|| Arc::new(client_config(None).expect("the system roots alone always build")))
        .clone()
}

/// The certificates of a PEM file (`origin_ca_file`): at least one, or an
/// error saying what is wrong with the file.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The roots origins and Redis are checked against: the system's, plus
/// `extra` (`origin_ca_file`).
pub fn root_store(extra: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system root certificate could not be loaded");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(roots = added, "system root certificates loaded");
    if let Some(path) = extra {
        for cert in load_ca_file(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: not a CA certificate: {e}", path.display()))?;
        }
    }
    Ok(roots)
}

/// The same roots as one PEM text, for clients that take PEM bytes (the
/// Redis client's `TlsCertificates::root_cert` replaces the system roots,
/// so it gets both).
pub fn roots_pem(extra: Option<&Path>) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let mut pem = Vec::new();
    let mut push = |der: &[u8]| {
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        for line in text.as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    };
    for cert in rustls_native_certs::load_native_certs().certs {
        push(cert.as_ref());
    }
    if let Some(path) = extra {
        for cert in load_ca_file(path)? {
            push(cert.as_ref());
        }
    }
    Ok(pem)
}

fn client_config(extra: Option<&Path>) -> Result<ClientConfig, String> {
    let provider = Arc::new(provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(root_store(extra)?)
        .with_no_client_auth();
    // Origin connections speak HTTP/1.1 (pooled by `proxy::origin_pool`).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A hyper connector for origins (see [`OriginConnector`]).
pub fn connector(connect_timeout: Duration) -> OriginConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let mut config = (*tls_config()).clone();
    // The builder sets ALPN itself (`enable_http1`).
    config.alpn_protocols.clear();
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// Why no connection to an origin could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {origin}: {detail}")]
    Connect { origin: String, detail: String },
    #[error("connect to {0} timed out")]
    Timeout(String),
    #[error("origin URL has no host: {0}")]
    NoHost(String),
    /// The origin's certificate could not be verified for its host.
    #[error("TLS with {host}: {detail}")]
    Tls { host: String, detail: String },
}

/// A connection to an origin, plain or TLS.
pub enum OriginStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl OriginStream {
    /// The socket, for the check before reuse (`origin_pool::is_open_and_quiet`).
    pub fn raw_fd(&self) -> RawFd {
        match self {
            OriginStream::Plain(s) => s.as_raw_fd(),
            OriginStream::Tls(s) => s.get_ref().0.as_raw_fd(),
        }
    }
}

impl AsyncRead for OriginStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OriginStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            OriginStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for OriginStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            OriginStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            OriginStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            OriginStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            OriginStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            OriginStream::Plain(s) => s.is_write_vectored(),
            OriginStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OriginStream::Plain(s) => Pin::new(s).poll_flush(cx),
            OriginStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OriginStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            OriginStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A new TCP connection to `origin`'s host and port, without Nagle's delay.
pub async fn connect_tcp(origin: &url::Url, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let port = origin.port_or_known_default().unwrap_or(80);
    let connect = async {
        match origin.host() {
            Some(url::Host::Domain(name)) => TcpStream::connect((name, port)).await,
            Some(url::Host::Ipv4(ip)) => TcpStream::connect((ip, port)).await,
            Some(url::Host::Ipv6(ip)) => TcpStream::connect((ip, port)).await,
            None => Err(io::Error::other("no host")),
        }
    };
    if origin.host().is_none() {
        return Err(ConnectError::NoHost(origin.to_string()));
    }
    let stream = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| ConnectError::Timeout(origin.as_str().to_string()))?
        .map_err(|e| ConnectError::Connect {
            origin: origin.as_str().to_string(),
            detail: e.to_string(),
        })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A new connection to `origin`: TCP, and for `https://` a TLS handshake
/// naming (and checking the certificate against) the URL's host, both
/// within `timeout`.
pub async fn connect(origin: &url::Url, timeout: Duration) -> Result<OriginStream, ConnectError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let tcp = connect_tcp(origin, timeout).await?;
    if origin.scheme() != "https" {
        return Ok(OriginStream::Plain(tcp));
    }
    let host = origin.host_str().unwrap_or_default();
    let name = server_name(origin).ok_or_else(|| ConnectError::Tls {
        host: host.to_string(),
        detail: "not a name a certificate can be checked against".into(),
    })?;
    let handshake = TlsConnector::from(tls_config()).connect(name, tcp);
    match tokio::time::timeout_at(deadline, handshake).await {
        Err(_) => Err(ConnectError::Timeout(origin.as_str().to_string())),
        Ok(Ok(tls)) => Ok(OriginStream::Tls(Box::new(tls))),
        Ok(Err(e)) if is_certificate_error(&e) => Err(ConnectError::Tls {
            host: host.to_string(),
            detail: e.to_string(),
        }),
        Ok(Err(e)) => Err(ConnectError::Connect {
            origin: origin.as_str().to_string(),
            detail: format!("TLS handshake: {e}"),
        }),
    }
}

/// The name TLS sends and checks for an origin URL: its host, without the
/// brackets of an IPv6 literal.
fn server_name(origin: &url::Url) -> Option<ServerName<'static>> {
    match origin.host()? {
        url::Host::Domain(name) => ServerName::try_from(name.to_string()).ok(),
        url::Host::Ipv4(ip) => Some(ServerName::IpAddress(std::net::IpAddr::V4(ip).into())),
        url::Host::Ipv6(ip) => Some(ServerName::IpAddress(std::net::IpAddr::V6(ip).into())),
    }
}

/// Whether a failure (anywhere in its chain of causes) is a certificate
/// that could not be verified: unknown issuer, wrong name, expired, none
/// presented, or an alert saying so.
pub fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return is_certificate_failure(tls);
    }
    // An `io::Error` wrapping another error reports that error's *source*
    // as its own, skipping the wrapped error itself: look inside instead.
    if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
        return is_certificate_error(inner);
    }
    e.source().is_some_and(is_certificate_error)
}

fn is_certificate_failure(e: &rustls::Error) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        e,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::AlertReceived(
                A::BadCertificate
                    | A::UnknownCA
                    | A::CertificateExpired
                    | A::CertificateUnknown
                    | A::UnsupportedCertificate
            )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_failures_are_told_apart_through_io_errors() {
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = io::Error::new(io::ErrorKind::InvalidData, cert);
        assert!(is_certificate_error(&io));
        let other = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::General("x".into()),
        );
        assert!(!is_certificate_error(&other));
        assert!(!is_certificate_error(&io::Error::other("refused")));
        // Wrapped twice, as hyper's connectors hand it on.
        let twice = io::Error::other(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
        ));
        assert!(is_certificate_error(&twice));
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        assert!(load_ca_file(&empty)
            .unwrap_err()
            .contains("no PEM certificate"));
        assert!(load_ca_file(&dir.path().join("missing.pem"))
            .unwrap_err()
            .contains("cannot read"));
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, ca.cert.pem()).unwrap();
        assert_eq!(load_ca_file(&file).unwrap().len(), 1);
        let pem = roots_pem(Some(&file)).unwrap();
        let back = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(back.last().unwrap().as_ref(), ca.cert.der().as_ref());
    }
}
