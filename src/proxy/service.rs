//! The service listener (`service_listen`): prerender.io's protocol, for
//! sites that keep their own edge middleware (prerender-node, the nginx and
//! Apache snippets, Cloudflare Workers) and change only its service URL.
//!
//! `GET /<absolute URL>` and `GET /render?url=<URL>` (or HEAD) answer the
//! rendered page of that URL through [`CrawlerPath::serve`]: the same cache,
//! keys, render queue and headers as a crawler's request on the public
//! listener. The page's Host must be a configured site (else `421`); with
//! `service_tokens` the request must carry one of them in
//! `X-Prerender-Token` (else `401`). The page's own status and `Location`
//! (`prerender-status-code` / `prerender-header`) are the answer's, which
//! prerender-node hands to the crawler as they are.
//!
//! Fail-open means what it means on the public listener: the origin's own
//! answer for the page, fetched by the proxy with the loop guard
//! (`X-Prerender: 1`, which prerender-node passes to the app), with
//! `X-Prerender-Cache: ERROR` and `X-Prerender-Error: <reason>`; or `503`
//! with `Retry-After` for a site with `on_render_failure = "error"`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::bot::request::is_static_asset;
use crate::bot::{BotDetector, PathFilter, UaVerdict};
use crate::config::SiteTable;
use crate::http::respond;
use crate::http::Body;
use crate::metrics::{Metrics, RequestKind};
use crate::proxy::crawler::{CrawlerPath, CrawlerRequest};
use crate::proxy::forward::{ClientHop, OriginClient};
use crate::proxy::request::{self, MAX_TARGET_BYTES};
use crate::proxy::CrawlerAnswer;
use crate::state::stats::DomainStats;
use crate::verify::Standing;

/// The header prerender.io's middleware sends its token in.
pub const TOKEN_HEADER: &str = "x-prerender-token";

/// The crawler's headers passed on from the middleware's request: what the
/// answer depends on (User-Agent for the mobile variant, Accept-Encoding,
/// the validators) and what the origin may want on a fail-open. Nothing
/// else, so the token never travels further.
const PASSED_HEADERS: [HeaderName; 6] = [
    header::USER_AGENT,
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::ACCEPT_ENCODING,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
];

/// The rule named for a page whose User-Agent matches no rendered bot
/// pattern: the middleware decided it was a crawler.
const UNKNOWN_RULE: &str = "other";

/// The service listener's shared state.
pub struct ServiceEndpoint {
    sites: SiteTable,
    bots: Arc<BotDetector>,
    crawler: Arc<CrawlerPath>,
    origin: OriginClient,
    metrics: Arc<Metrics>,
    stats: Arc<DomainStats>,
    /// SHA-256 digests of `service_tokens`; empty: no token is asked for.
    tokens: Vec<[u8; 32]>,
}

/// Why a service request is refused before any page is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusal {
    status: StatusCode,
    reason: &'static str,
}

const fn refuse(status: StatusCode, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

impl ServiceEndpoint {
    pub fn new(
        sites: SiteTable,
        bots: Arc<BotDetector>,
        crawler: Arc<CrawlerPath>,
        origin: OriginClient,
        metrics: Arc<Metrics>,
        stats: Arc<DomainStats>,
        tokens: &[String],
    ) -> Self {
        ServiceEndpoint {
            sites,
            bots,
            crawler,
            origin,
            metrics,
            stats,
            tokens: tokens.iter().map(|t| digest(t)).collect(),
        }
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let page = match self.page_request(&req) {
            Ok(page) => page,
            Err(refusal) => return self.refused(refusal, &req, peer, started),
        };
        let target = match request::resolve(&page, &self.sites) {
            Ok(t) => t,
            Err(r) => {
                return self.refused(refuse(r.status, r.reason), &req, peer, started);
            }
        };
        let path = page.uri().path().to_string();
        // The middleware decided that the client is a crawler; what is never
        // rendered on the public listener is not rendered here either.
        if is_static_asset(&path) || target.site.path_rules().excludes(&path) {
            let kind = if is_static_asset(&path) {
                RequestKind::Asset
            } else {
                RequestKind::Human
            };
            tracing::debug!(%peer, host = %target.host, %path, "service: not rendered, answered from the origin");
            let resp = self
                .origin
                .fetch_page(
                    &page,
                    &target.site,
                    &target.host,
                    ClientHop::plain(peer, false),
                )
                .await;
            self.metrics
                .observe_uncached(kind, resp.status().as_u16(), started.elapsed());
            return resp;
        }
        let ua = page
            .headers()
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let rule = match self.bots.classify(&ua) {
            UaVerdict::Bot { rule, .. } => rule,
            UaVerdict::Human { .. } => UNKNOWN_RULE.to_string(),
        };
        let standing = Standing::Unchecked;
        let verified = standing.label();
        let (resp, result) = self
            .crawler
            .serve(
                CrawlerRequest::Service(page),
                &target,
                ClientHop::plain(peer, false),
                standing,
            )
            .await;
        CrawlerAnswer {
            result,
            target: &target,
            client: peer.ip(),
            path: &path,
            rule: &rule,
            verified,
            started,
            via: "service",
        }
        .record(&self.metrics, &self.stats, resp.status().as_u16());
        resp
    }

    /// A refused request: one warning line (never the token) and the status.
    fn refused(
        &self,
        refusal: Refusal,
        req: &Request<Incoming>,
        peer: SocketAddr,
        started: Instant,
    ) -> Response<Body> {
        tracing::warn!(
            %peer,
            status = refusal.status.as_u16(),
            reason = refusal.reason,
            method = %req.method(),
            "service request refused"
        );
        let mut resp = respond::error(refusal.status, refusal.reason);
        if refusal.status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        self.metrics
            .observe_rejected(refusal.status.as_u16(), started.elapsed());
        resp
    }

    /// Checks the method and token, and makes the page's request: the
    /// page URL's origin-form target, its Host, and the crawler's headers.
    fn page_request(&self, req: &Request<Incoming>) -> Result<Request<()>, Refusal> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "the service answers GET and HEAD",
            ));
        }
        self.check_token(req.headers())?;
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        if target.len() > MAX_TARGET_BYTES + 64 {
            return Err(refuse(
                StatusCode::URI_TOO_LONG,
                "request target over 8 KiB",
            ));
        }
        let url = page_url(target)?;
        let mut page = Request::new(());
        *page.method_mut() = req.method().clone();
        let mut pq = url.path().to_string();
        if let Some(q) = url.query() {
            pq.push('?');
            pq.push_str(q);
        }
        *page.uri_mut() = pq
            .parse()
            .map_err(|_| refuse(StatusCode::BAD_REQUEST, "malformed page URL"))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(refuse(StatusCode::BAD_REQUEST, "page URL has no host")),
        };
        let headers = page.headers_mut();
        headers.insert(
            header::HOST,
            HeaderValue::from_str(&host)
                .map_err(|_| refuse(StatusCode::BAD_REQUEST, "malformed page URL"))?,
        );
        for name in PASSED_HEADERS {
            for value in req.headers().get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        Ok(page)
    }

    /// `X-Prerender-Token` against `service_tokens`, compared in constant
    /// time (digests, so the length does not leak either; every token is
    /// compared, whichever matches).
    fn check_token(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if self.tokens.is_empty() {
            return Ok(());
        }
        let mut values = headers.get_all(TOKEN_HEADER).iter();
        let presented = match (values.next(), values.next()) {
            (Some(v), None) => v.as_bytes().trim_ascii(),
            (None, _) => {
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "X-Prerender-Token is required",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "more than one X-Prerender-Token",
                ))
            }
        };
        let presented: [u8; 32] = Sha256::digest(presented).into();
        let matched = self
            .tokens
            .iter()
            .fold(subtle::Choice::from(0), |acc, t| acc | t.ct_eq(&presented));
        if bool::from(matched) {
            Ok(())
        } else {
            Err(refuse(
                StatusCode::UNAUTHORIZED,
                "X-Prerender-Token not accepted",
            ))
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The page URL of a service request target: `/<absolute URL>` (as
/// prerender-node builds it: `<service>/<proto>://<host><url>`) or
/// `/render?url=<percent-encoded URL>`. Only `http` and `https` URLs with a
/// host and no credentials; the fragment is dropped (a crawler never sends
/// one).
fn page_url(target: &str) -> Result<url::Url, Refusal> {
    const USAGE: &str = "expected GET /<absolute page URL> or /render?url=<page URL>";
    let raw: std::borrow::Cow<'_, str> = if let Some(query) = target
        .strip_prefix("/render?")
        .or_else(|| (target == "/render").then_some(""))
    {
        let mut urls = url::form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == "url")
            .map(|(_, v)| v);
        match (urls.next(), urls.next()) {
            (Some(u), None) if !u.is_empty() => u,
            (None, _) | (Some(_), None) => {
                return Err(refuse(StatusCode::BAD_REQUEST, "missing url parameter"))
            }
            (Some(_), Some(_)) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "more than one url parameter",
                ))
            }
        }
    } else {
        let rest = &target[1.min(target.len())..];
        let lower = rest.get(..8).unwrap_or(rest).to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(refuse(StatusCode::BAD_REQUEST, USAGE));
        }
        rest.into()
    };
    if raw.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "control character or space in the page URL",
        ));
    }
    let mut url = url::Url::parse(&raw).map_err(|_| refuse(StatusCode::BAD_REQUEST, USAGE))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "the page URL must be http or https",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "credentials in the page URL",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refuse(StatusCode::BAD_REQUEST, "page URL has no host"));
    }
    url.set_fragment(None);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(target: &str) -> String {
        page_url(target).unwrap().to_string()
    }

    #[test]
    fn both_url_forms_name_the_page() {
        assert_eq!(
            ok("/https://www.example.com/p/1?page=2"),
            "https://www.example.com/p/1?page=2"
        );
        assert_eq!(ok("/http://shop.test:8080/"), "http://shop.test:8080/");
        assert_eq!(ok("/HTTPS://Www.Example.com"), "https://www.example.com/");
        assert_eq!(
            ok("/render?url=https%3A%2F%2Fwww.example.com%2Fp%3Fa%3D1%26b%3D2"),
            "https://www.example.com/p?a=1&b=2"
        );
        assert_eq!(ok("/render?foo=1&url=http://a.test/x"), "http://a.test/x");
        assert_eq!(ok("/https://a.test/x#frag"), "https://a.test/x");
    }

    #[test]
    fn anything_else_is_a_bad_request() {
        for bad in [
            "/",
            "/favicon.ico",
            "/www.example.com/p",
            "/ftp://a.test/x",
            "/file:///etc/passwd",
            "/javascript:alert(1)",
            "/render",
            "/render?url=",
            "/render?url=a.test/x",
            "/render?url=http://a.test/&url=http://b.test/",
            "/https://user:pw@a.test/",
            "/http://",
            "/render?url=http%3A%2F%2Fa.test%2F%0D%0Ax",
        ] {
            let e = page_url(bad).expect_err(bad);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
