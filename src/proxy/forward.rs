//! Human passthrough: the request goes to the site's origin with its body
//! streamed, hop-by-hop headers dropped and X-Forwarded-* set; the answer
//! streams back the same way. Upgrades (WebSocket) are relayed byte for byte.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use crate::config::Site;
use crate::http::respond;
use crate::http::{Body, BoxError};
use crate::proxy::origin_pool::{OriginPool, PoolError};
use crate::upstream::PoolLimits;
use crate::upstream::{error_chain, origin_uri, ConnectError, OriginError, UpstreamClient};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
pub const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// How a failed exchange reaches the client of the passthrough paths.
pub(crate) trait AnswerOriginError {
    /// The answer a client gets, after the details were logged.
    fn answer(&self, origin: &url::Url) -> Response<Body>;
}

impl AnswerOriginError for OriginError {
    fn answer(&self, origin: &url::Url) -> Response<Body> {
        self.log(origin);
        respond::error(self.status(), self.public_message())
    }
}

/// The error of a failed request on a pooled connection.
pub fn from_pool(e: PoolError) -> OriginError {
    match e {
        PoolError::Upstream(ConnectError::Tls { host, detail }) => {
            OriginError::Tls { host, detail }
        }
        PoolError::Upstream(ConnectError::Timeout(origin)) => {
            OriginError::Unreachable(format!("connect to {origin} timed out"))
        }
        other => OriginError::Unreachable(error_chain(&other)),
    }
}

/// Who sent a request, as the headers the origin gets tell it.
#[derive(Debug, Clone, Copy)]
pub struct ClientHop {
    /// The connection's peer (for PROXY protocol connections, the source
    /// address the header gave).
    pub peer: SocketAddr,
    /// The peer is one of `trusted_proxies`: its `X-Forwarded-For` is
    /// appended to and its `X-Forwarded-Proto` passed on. From any other
    /// peer both are replaced.
    pub trusted: bool,
    /// The scheme the client used to reach this listener: `http`, or
    /// `https` on a TLS listener.
    pub proto: &'static str,
}

impl ClientHop {
    /// A peer of the plain listener.
    pub fn plain(peer: SocketAddr, trusted: bool) -> ClientHop {
        ClientHop {
            peer,
            trusted,
            proto: "http",
        }
    }
}

/// Headers a `Connection` header never removes: it may name hop-by-hop
/// fields only (RFC 9110 §7.6.1), and these carry a message's framing, its
/// routing, or the forwarding facts the proxy itself sets.
pub const NEVER_HOP_BY_HOP: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Whether a header named in `Connection` is removed with it.
pub fn connection_may_remove(name: &str) -> bool {
    !NEVER_HOP_BY_HOP
        .iter()
        .any(|kept| name.eq_ignore_ascii_case(kept))
}

/// A pooled keep-alive HTTP client for origins, shared by every request.
/// Passthrough requests use connections driven by their own task
/// ([`OriginPool`]); upgrades and the proxy's own requests use hyper-util's
/// client.
#[derive(Clone)]
pub struct OriginClient {
    upstream: UpstreamClient,
    timeout: Duration,
    pool: PoolLimits,
}

thread_local! {
    /// Passthrough connections, one pool per thread: a connection is driven
    /// by the task of the request using it, so it stays with the thread (and
    /// runtime) that opened it — no wake-ups across threads, and none left
    /// registered with a listener thread's runtime after that thread ends.
    /// Made with the limits of the first client used on the thread (a
    /// process has one).
    static PASSTHROUGH: std::cell::OnceCell<OriginPool> = const { std::cell::OnceCell::new() };
}

impl OriginClient {
    /// A client with the default connection bounds.
    pub fn new(timeout: Duration) -> Self {
        Self::with_limits(timeout, PoolLimits::default())
    }

    /// A client answering within `timeout`, with its connections bounded
    /// by `pool`: at most `max_idle_per_origin` idle ones per origin (per
    /// thread, where connections are kept per thread), each kept for at
    /// most `idle_timeout`, and each new one established within
    /// `connect_timeout`.
    pub fn with_limits(timeout: Duration, pool: PoolLimits) -> Self {
        let upstream = UpstreamClient::new(timeout, pool);
        OriginClient {
            upstream,
            timeout,
            pool,
        }
    }

    /// How long an origin may take to answer a request's head.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Bounds of the idle connections kept to origins.
    pub fn pool_limits(&self) -> PoolLimits {
        self.pool
    }

    /// Sends a prepared request; the deadline covers the response head only,
    /// so long downloads stream on.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, OriginError> {
        self.upstream.send(req).await
    }

    /// The pooled client underneath, for the proxy's own requests.
    pub fn upstream(&self) -> &UpstreamClient {
        &self.upstream
    }

    /// Relays a human request to `origin` and its answer back.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        site: &Site,
        public_host: &str,
        hop: ClientHop,
    ) -> Response<Body> {
        let origin = &site.origin;
        let upgrade = upgrade_protocol(&req);
        if upgrade.is_none() {
            return self.relay(req, site, public_host, hop).await;
        }
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let client_http1 = parts.version < Version::HTTP_2;
        // HTTP/2 clients send :authority instead of Host; the origin gets it as Host.
        let authority = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        let uri = match origin_uri(origin, &parts.uri) {
            Ok(u) => u,
            Err(e) => return e.answer(origin),
        };
        let mut out = Request::new(body.map_err(BoxError::from).boxed());
        *out.method_mut() = parts.method;
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = parts.headers;
        let headers = out.headers_mut();
        strip_hop_by_hop(headers);
        set_forwarded(headers, public_host, hop);
        if let Some(proto) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, proto.clone());
        }
        if !headers.contains_key(header::HOST) {
            if let Some(v) = authority {
                headers.insert(header::HOST, v);
            }
        }
        set_origin_host(headers, site);

        let mut resp = match self.send(out).await {
            Ok(r) => r,
            Err(e) => return e.answer(origin),
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
        client_response(resp, origin, client_http1)
    }

    /// The origin's answer for a page the proxy asks for itself (the
    /// service listener's fail-open): `req`'s method, target and headers,
    /// with X-Forwarded-* set and the renderer's loop guard
    /// (`X-Prerender: 1`), so middleware in front of the origin answers it
    /// like a person's request instead of sending it back to the service.
    pub async fn fetch_page(
        &self,
        req: &Request<()>,
        site: &Site,
        public_host: &str,
        hop: ClientHop,
    ) -> Response<Body> {
        let origin = &site.origin;
        let uri = match origin_uri(origin, req.uri()) {
            Ok(u) => u,
            Err(e) => return e.answer(origin),
        };
        let mut out = Request::new(respond::empty());
        *out.method_mut() = req.method().clone();
        *out.uri_mut() = uri;
        *out.headers_mut() = req.headers().clone();
        let headers = out.headers_mut();
        strip_hop_by_hop(headers);
        headers.remove(header::UPGRADE);
        set_forwarded(headers, public_host, hop);
        set_origin_host(headers, site);
        headers.insert(
            crate::bot::request::LOOP_GUARD_HEADER,
            HeaderValue::from_static(crate::bot::request::LOOP_GUARD_VALUE),
        );
        match self.send(out).await {
            Ok(resp) => client_response(resp, origin, true),
            Err(e) => e.answer(origin),
        }
    }

    /// A request that does not ask to switch protocols: sent on a pooled
    /// connection driven by this request's task, its body streamed both ways.
    async fn relay(
        &self,
        req: Request<Incoming>,
        site: &Site,
        public_host: &str,
        hop: ClientHop,
    ) -> Response<Body> {
        let origin = &site.origin;
        let (mut parts, body) = req.into_parts();
        let path_and_query = match origin_path_and_query(origin, &parts.uri) {
            Ok(pq) => pq,
            Err(e) => return e.answer(origin),
        };
        let client_http1 = parts.version < Version::HTTP_2;
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        headers.remove(header::UPGRADE);
        set_forwarded(headers, public_host, hop);
        if !headers.contains_key(header::HOST) {
            // HTTP/2 clients send :authority instead of Host; the origin gets it as Host.
            if let Some(v) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                headers.insert(header::HOST, v);
            }
        }
        set_origin_host(headers, site);
        parts.uri = Uri::from(path_and_query);
        parts.version = Version::HTTP_11;
        let out = Request::from_parts(parts, body);

        let sent = tokio::time::timeout(
            self.timeout,
            PASSTHROUGH
                .with(|pool| pool.get_or_init(|| OriginPool::new(self.pool)).clone())
                .send(origin, out),
        )
        .await;
        let resp = match sent {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => return from_pool(e).answer(origin),
            Err(_) => return OriginError::Timeout(self.timeout).answer(origin),
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let e = OriginError::Unreachable("origin switched protocols unasked".into());
            return e.answer(origin);
        }
        client_response(resp, origin, client_http1)
    }
}

/// The origin's answer as the client gets it: framing headers made true
/// ([`reframe_response`]), hop-by-hop headers dropped, and a body whose
/// framing is broken from its first bytes answered `502` while nothing
/// has been sent (a later break can only cut the answer off).
fn client_response<B>(resp: Response<B>, origin: &url::Url, client_http1: bool) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (mut parts, mut body) = resp.into_parts();
    let close_delimited = match reframe_response(&mut parts.headers) {
        Ok(close_delimited) => close_delimited,
        Err(e) => return e.answer(origin),
    };
    let first = match body.frame().now_or_never() {
        Some(Some(Err(e))) => {
            return OriginError::Unreachable(format!("bad response body: {}", error_chain(&e)))
                .answer(origin)
        }
        Some(first) => first,
        None => None,
    };
    // Our side of the exchange speaks HTTP/1.1 or h2 whatever the origin spoke.
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::UPGRADE);
    if parts.status == StatusCode::NO_CONTENT || parts.status.is_informational() {
        // These never have a body, and no length (RFC 9110 §8.6).
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    if close_delimited && client_http1 {
        // hyper frames a body of unknown length by closing the connection
        // only in an HTTP/1.0 answer; otherwise it would re-frame it as
        // chunked.
        parts.version = Version::HTTP_10;
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let body = FirstFrame {
        first: first.and_then(Result::ok),
        rest: body,
    };
    Response::from_parts(parts, body.map_err(BoxError::from).boxed())
}

/// A body whose first frame was already read.
struct FirstFrame<B> {
    first: Option<Frame<Bytes>>,
    rest: B,
}

impl<B> hyper::body::Body for FirstFrame<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.first.take() {
            Some(frame) => std::task::Poll::Ready(Some(Ok(frame))),
            None => std::pin::Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let first = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |data| data.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = hyper::body::SizeHint::new();
        hint.set_lower(rest.lower() + first);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + first);
        }
        hint
    }
}

/// The origin-form target for a request: the origin's path prefix followed
/// by the request's path and query.
fn origin_path_and_query(
    origin: &url::Url,
    request: &Uri,
) -> Result<http::uri::PathAndQuery, OriginError> {
    let prefix = origin.path().trim_end_matches('/');
    let pq = request.path_and_query();
    if prefix.is_empty() {
        if let Some(pq) = pq {
            return Ok(pq.clone());
        }
    }
    let pq = pq.map_or("/", |pq| pq.as_str());
    format!("{prefix}{pq}")
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
    if !wants {
        return None;
    }
    // Only WebSocket is relayed: any other protocol (h2c above all) would
    // open a tunnel in which later requests skip the Host and route
    // checks; such a request goes on as a plain one.
    req.headers()
        .get(header::UPGRADE)
        .filter(|p| p.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"))
        .cloned()
}

/// Makes a response's framing headers say what hyper's client read
/// (RFC 9112 §6.3): with `Transfer-Encoding` any `Content-Length` goes,
/// and a coding that does not end in `chunked` means the body ends when the
/// origin closes (`Ok(true)`); repeated equal lengths become one, unequal
/// ones are an error.
fn reframe_response(headers: &mut HeaderMap) -> Result<bool, OriginError> {
    if let Some(last) = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        let chunked = last
            .to_str()
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        headers.remove(header::CONTENT_LENGTH);
        return Ok(!chunked);
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.to_str().unwrap_or("").split(',') {
            let part = part.trim();
            let n = part
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| part.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| OriginError::Unreachable("bad Content-Length".into()))?;
            if length.is_some_and(|seen| seen != n) {
                return Err(OriginError::Unreachable(
                    "conflicting Content-Length".into(),
                ));
            }
            length = Some(n);
        }
    }
    if let Some(n) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Ok(false)
}

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too. The usual
    // tokens name nothing else to remove (`keep-alive` is in the list,
    // `close` is no header), so the common case allocates nothing.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
        .filter(|t| connection_may_remove(t))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

thread_local! {
    /// The header values of the last peer address and public host seen on
    /// this thread: consecutive requests mostly share them (a keep-alive
    /// connection, a load balancer in front), and rendering an address and
    /// validating a value is most of what setting these headers costs.
    static FORWARDED_VALUES: std::cell::RefCell<ForwardedValues> =
        const { std::cell::RefCell::new(ForwardedValues { peer: None, host: None }) };
}

struct ForwardedValues {
    peer: Option<(std::net::IpAddr, HeaderValue)>,
    host: Option<(String, HeaderValue)>,
}

fn forwarded_values(
    peer_ip: std::net::IpAddr,
    public_host: &str,
) -> (HeaderValue, Option<HeaderValue>) {
    FORWARDED_VALUES.with(|cell| {
        let mut cached = cell.borrow_mut();
        let peer = match &cached.peer {
            Some((ip, v)) if *ip == peer_ip => v.clone(),
            _ => {
                // An IP address renders as ASCII digits, dots, colons and hex.
                let v = HeaderValue::from_str(&peer_ip.to_string())
                    .unwrap_or(HeaderValue::from_static("unknown"));
                cached.peer = Some((peer_ip, v.clone()));
                v
            }
        };
        let host = match &cached.host {
            Some((h, v)) if h == public_host => Some(v.clone()),
            _ => match HeaderValue::from_str(public_host) {
                Ok(v) => {
                    cached.host = Some((public_host.to_string(), v.clone()));
                    Some(v)
                }
                Err(_) => None,
            },
        };
        (peer, host)
    })
}

/// X-Forwarded-For and -Proto (SPEC §1 `trusted_proxies`): from a trusted
/// peer the peer is appended to its X-Forwarded-For and its
/// X-Forwarded-Proto is passed on (set to the listener's scheme when it
/// sent none); from any other peer both are replaced by what this
/// connection shows. X-Forwarded-Host is ours alone (the validated public
/// host).
pub fn set_forwarded(headers: &mut HeaderMap, public_host: &str, hop: ClientHop) {
    let (peer_value, host_value) = forwarded_values(hop.peer.ip(), public_host);
    let earlier = hop
        .trusted
        .then(|| forwarded_for_list(headers))
        .filter(|list| !list.is_empty());
    let xff = match earlier {
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", hop.peer.ip())).ok(),
        None => Some(peer_value),
    };
    match xff {
        Some(v) => {
            headers.insert(X_FORWARDED_FOR, v);
        }
        None => {
            headers.remove(X_FORWARDED_FOR);
        }
    }
    let passed_on = hop.trusted
        && headers
            .get(&X_FORWARDED_PROTO)
            .is_some_and(|v| matches!(v.as_bytes(), b"http" | b"https"));
    if !passed_on {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(hop.proto));
    }
    match host_value {
        Some(v) => {
            headers.insert(X_FORWARDED_HOST, v);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

/// Every `X-Forwarded-For` line of a request as one list, in order.
fn forwarded_for_list(headers: &HeaderMap) -> String {
    let mut list = String::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        let Ok(text) = value.to_str() else { continue };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if !list.is_empty() {
            list.push_str(", ");
        }
        list.push_str(text);
    }
    list
}

/// The Host the origin gets when the site sets `origin_host`.
fn set_origin_host(headers: &mut HeaderMap, site: &Site) {
    if let Some(host) = site
        .origin_host
        .as_deref()
        .and_then(|h| HeaderValue::from_str(h).ok())
    {
        headers.insert(header::HOST, host);
    }
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
