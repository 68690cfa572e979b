//! Human passthrough: the request goes to the site's origin with its body
//! streamed, hop-by-hop headers dropped and X-Forwarded-* set; the answer
//! streams back the same way. Upgrades (WebSocket) are relayed byte for byte.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::listener::{Body, BoxError};
use crate::proxy::respond;

/// Idle keep-alive connections to an origin are closed after this.
const ORIGIN_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound of idle pooled connections per origin host.
const ORIGIN_POOL_MAX_IDLE_PER_HOST: usize = 256;
const ORIGIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Why an origin could not answer.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("origin unreachable: {0}")]
    Unreachable(String),
    #[error("origin did not answer within {0:?}")]
    Timeout(Duration),
    #[error("bad origin URL: {0}")]
    BadUrl(String),
}

impl OriginError {
    pub fn status(&self) -> StatusCode {
        match self {
            OriginError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// A pooled keep-alive HTTP client for origins, shared by every request.
#[derive(Clone)]
pub struct OriginClient {
    client: Client<HttpConnector, Body>,
    timeout: Duration,
}

impl OriginClient {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(ORIGIN_CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(ORIGIN_POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(ORIGIN_POOL_MAX_IDLE_PER_HOST)
            .build(connector);
        OriginClient { client, timeout }
    }

    /// Sends a prepared request; the deadline covers the response head only,
    /// so long downloads stream on.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, OriginError> {
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(OriginError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(OriginError::Unreachable(error_chain(&e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// Relays a human request to `origin` and its answer back.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        origin: &url::Url,
        public_host: &str,
        peer: SocketAddr,
    ) -> Response<Body> {
        let upgrade = upgrade_protocol(&req);
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        // HTTP/2 clients send :authority instead of Host; the origin gets it as Host.
        let authority = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        let uri = match origin_uri(origin, &parts.uri) {
            Ok(u) => u,
            Err(e) => return respond::error(e.status(), &e.to_string()),
        };
        let mut out = Request::new(body.map_err(BoxError::from).boxed());
        *out.method_mut() = parts.method;
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = parts.headers;
        let headers = out.headers_mut();
        strip_hop_by_hop(headers);
        set_forwarded(headers, public_host, peer);
        if let Some(proto) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, proto.clone());
        } else {
            headers.remove(header::UPGRADE);
        }
        if !headers.contains_key(header::HOST) {
            if let Some(v) = authority {
                headers.insert(header::HOST, v);
            }
        }

        let mut resp = match self.send(out).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(origin = %origin, error = %e, "passthrough failed");
                return respond::error(e.status(), &e.to_string());
            }
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let origin_upgrade = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    match tokio::try_join!(client_upgrade, origin_upgrade) {
                        Ok((client_io, origin_io)) => {
                            let mut client_io = TokioIo::new(client_io);
                            let mut origin_io = TokioIo::new(origin_io);
                            let _ =
                                tokio::io::copy_bidirectional(&mut client_io, &mut origin_io).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                    }
                });
                let (parts, _) = resp.into_parts();
                return Response::from_parts(parts, respond::empty());
            }
        }
        let (mut parts, body) = resp.into_parts();
        // Our side of the exchange speaks HTTP/1.1 or h2 whatever the origin spoke.
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::UPGRADE);
        Response::from_parts(parts, body.map_err(BoxError::from).boxed())
    }
}

/// The origin URL for a request: the origin's scheme, authority and path
/// prefix followed by the request's path and query.
pub fn origin_uri(origin: &url::Url, request: &Uri) -> Result<Uri, OriginError> {
    let base = origin.as_str().trim_end_matches('/');
    let pq = request.path_and_query().map_or("/", |pq| pq.as_str());
    format!("{base}{pq}")
        .parse()
        .map_err(|e| OriginError::BadUrl(format!("{e}")))
}

/// The protocol named by `Upgrade` when the client asks to switch.
fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    let wants = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        req.headers().get(header::UPGRADE).cloned()
    } else {
        None
    }
}

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// X-Forwarded-For gets the peer appended; -Proto and -Host are ours alone
/// (the listener speaks plain HTTP, the host is the validated public host).
fn set_forwarded(headers: &mut HeaderMap, public_host: &str, peer: SocketAddr) {
    let peer_ip = peer.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {peer_ip}"),
        _ => peer_ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Ok(v) = HeaderValue::from_str(public_host) {
        headers.insert("x-forwarded-host", v);
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_uri_keeps_path_and_query() {
        let origin = url::Url::parse("http://10.0.0.5:8080").unwrap();
        let uri: Uri = "/a/b?x=1".parse().unwrap();
        assert_eq!(
            origin_uri(&origin, &uri).unwrap().to_string(),
            "http://10.0.0.5:8080/a/b?x=1"
        );
        let prefixed = url::Url::parse("http://o/base/").unwrap();
        assert_eq!(
            origin_uri(&prefixed, &uri).unwrap().to_string(),
            "http://o/base/a/b?x=1"
        );
    }

    #[test]
    fn connection_named_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
