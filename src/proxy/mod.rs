//! The public listener's request path. Every request walks the same phases:
//!
//! 1. `request::resolve` — size limits, Host, path; which site (else 4xx / 421);
//! 2. `bot` — rendered crawler, or passed through;
//! 3. crawlers: `crawler` — cache key, lookup, HIT / STALE / MISS (render
//!    through the queue) or ERROR (fail open);
//! 4. everyone else: `forward` to the site's origin, streamed both ways.

pub mod client_addr;
pub mod crawler;
pub mod forward;
pub mod origin_pool;
pub mod prepared;
pub mod relay;
pub mod request;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::bot::{BotDetector, PassReason, RenderDecision};
use crate::http::{respond, Body};
use crate::metrics::{CacheResult as CacheMetric, Metrics, RequestKind};
use crate::state::stats::DomainStats;
use crate::verify::{CrawlerVerifier, Standing, VerifyMode};
use client_addr::TrustedProxies;
use crawler::{CrawlerPath, CrawlerRequest, Served};
use forward::{ClientHop, OriginClient};

/// Shared state of the public listener.
pub struct PublicProxy {
    sites: crate::config::SiteTable,
    bots: Arc<BotDetector>,
    crawler: Arc<CrawlerPath>,
    origin: OriginClient,
    metrics: Arc<Metrics>,
    stats: Arc<DomainStats>,
    /// The runtime the cache, the render queue and the browser pool live
    /// on. Public connections are served on listener threads of their own;
    /// crawler requests are handed to this runtime, so everything they
    /// start (renders, store connections, tabs) lives as long as the
    /// process, not as long as one listener thread.
    shared: tokio::runtime::Handle,
    /// Whether `relay` relays plain requests itself (else hyper
    /// serves every request). `PRERENDER_PASSTHROUGH_RELAY=off` turns it
    /// off, for `bench/relay.sh` to compare the two on one binary.
    raw_relay: bool,
    /// Crawler verification (`None`: off) and whose `X-Forwarded-For` it
    /// believes.
    verifier: Option<Arc<CrawlerVerifier>>,
    pub(crate) trusted_proxies: TrustedProxies,
}

impl PublicProxy {
    pub fn new(
        sites: crate::config::SiteTable,
        bots: Arc<BotDetector>,
        crawler: Arc<CrawlerPath>,
        origin: OriginClient,
        metrics: Arc<Metrics>,
        stats: Arc<DomainStats>,
    ) -> Self {
        PublicProxy {
            sites,
            bots,
            crawler,
            origin,
            metrics,
            stats,
            shared: tokio::runtime::Handle::current(),
            raw_relay: std::env::var("PRERENDER_PASSTHROUGH_RELAY").map_or(true, |v| v != "off"),
            verifier: None,
            trusted_proxies: TrustedProxies::default(),
        }
    }

    /// Checks crawler claims against the client address behind
    /// `trusted_proxies`.
    pub fn with_verification(
        mut self,
        verifier: Arc<CrawlerVerifier>,
        trusted_proxies: TrustedProxies,
    ) -> Self {
        self.verifier = Some(verifier);
        self.trusted_proxies = trusted_proxies;
        self
    }

    /// How the origin is told who sent a request from `peer`: `https`
    /// for requests that came over the TLS listener.
    fn hop<B>(&self, req: &Request<B>, peer: SocketAddr) -> ClientHop {
        let mut hop = ClientHop::plain(peer, self.trusted_proxies.contains(peer.ip()));
        if req.extensions().get::<crate::listener::OverTls>().is_some() {
            hop.proto = "https";
        }
        hop
    }

    /// What is known of the request's crawler claim; starts a check in
    /// the background when nothing is. Never waits.
    fn standing(&self, req: &Request<Incoming>, peer: SocketAddr) -> Standing {
        let Some(verifier) = self
            .verifier
            .as_ref()
            .filter(|v| v.mode() != VerifyMode::Off)
        else {
            return Standing::Unchecked;
        };
        let ua = req
            .headers()
            .get(hyper::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        verifier.standing_of(ua, || {
            self.trusted_proxies.client_addr(peer.ip(), req.headers())
        })
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = std::time::Instant::now();
        let target = match request::resolve(&req, &self.sites) {
            Ok(t) => t,
            Err(rejection) => {
                tracing::warn!(
                    %peer,
                    status = rejection.status.as_u16(),
                    reason = rejection.reason,
                    method = %req.method(),
                    "request refused"
                );
                self.metrics
                    .observe_rejected(rejection.status.as_u16(), started.elapsed());
                return respond::error(rejection.status, rejection.reason);
            }
        };
        let decision = self.bots.decide(
            req.method(),
            req.uri().path(),
            req.uri().query(),
            req.headers(),
            &target.site.path_rules(),
        );
        match decision {
            RenderDecision::Render { rule } => {
                let standing = self.standing(&req, peer);
                // Who the crawler is, for the log: the peer, or behind
                // trusted proxies the address they name.
                let client = self.trusted_proxies.client_addr(peer.ip(), req.headers());
                if self.crawler.answers_as_person(&standing) {
                    tracing::info!(%client, %peer, host = %target.host, path = req.uri().path(), verified = standing.label(), "crawler claim not verified; answered like a person");
                    return self.pass_through(req, &target, peer, started).await;
                }
                // A hit on a recently confirmed copy is answered right here;
                // anything else goes to the shared runtime.
                if let Some(resp) = self.crawler.serve_prepared(&req, &target) {
                    let path = req.uri().path().to_string();
                    return self.crawler_answered(
                        resp,
                        Served::Hit,
                        &target,
                        client,
                        &path,
                        &rule,
                        standing.label(),
                        started,
                    );
                }
                let this = self.clone();
                let crawler = self.shared.spawn(async move {
                    this.crawler_request(req, target, peer, rule, started, standing)
                        .await
                });
                match crawler.await {
                    Ok(resp) => resp,
                    Err(e) => {
                        tracing::error!(%peer, error = %e, "crawler request task failed");
                        respond::error(hyper::StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                    }
                }
            }
            RenderDecision::Pass(reason) => {
                let kind = if reason == PassReason::StaticAsset {
                    RequestKind::Asset
                } else {
                    RequestKind::Human
                };
                tracing::debug!(%peer, method = %req.method(), host = %target.host, path = req.uri().path(), kind = RequestKind::as_str(kind), "passthrough");
                let hop = self.hop(&req, peer);
                let resp = self
                    .origin
                    .forward(req, &target.site, &target.host, hop)
                    .await;
                self.metrics
                    .observe_uncached(kind, resp.status().as_u16(), started.elapsed());
                resp
            }
        }
    }

    /// A request answered by the origin like a person's.
    async fn pass_through(
        &self,
        req: Request<Incoming>,
        target: &request::Target,
        peer: SocketAddr,
        started: std::time::Instant,
    ) -> Response<Body> {
        let hop = self.hop(&req, peer);
        let resp = self
            .origin
            .forward(req, &target.site, &target.host, hop)
            .await;
        self.metrics.observe_uncached(
            RequestKind::Human,
            resp.status().as_u16(),
            started.elapsed(),
        );
        resp
    }

    /// A crawler's request: cache lookup, then HIT / STALE / MISS / ERROR.
    async fn crawler_request(
        self: Arc<Self>,
        req: Request<Incoming>,
        target: request::Target,
        peer: SocketAddr,
        rule: String,
        started: std::time::Instant,
        standing: Standing,
    ) -> Response<Body> {
        let path = req.uri().path().to_string();
        let verified = standing.label();
        let hop = self.hop(&req, peer);
        let client = self.trusted_proxies.client_addr(peer.ip(), req.headers());
        let (resp, result) = self
            .crawler
            .serve(CrawlerRequest::Proxy(req), &target, hop, standing)
            .await;
        self.crawler_answered(
            resp, result, &target, client, &path, &rule, verified, started,
        )
    }

    /// Records a crawler's answer in the statistics, metrics and log.
    #[allow(clippy::too_many_arguments)]
    fn crawler_answered(
        &self,
        resp: Response<Body>,
        result: Served,
        target: &request::Target,
        client: std::net::IpAddr,
        path: &str,
        rule: &str,
        verified: &str,
        started: std::time::Instant,
    ) -> Response<Body> {
        let answer = CrawlerAnswer {
            result,
            target,
            client,
            path,
            rule,
            verified,
            started,
            via: "proxy",
        };
        answer.record(&self.metrics, &self.stats, resp.status().as_u16());
        resp
    }
}

/// A crawler's answer, as the statistics, metrics and log record it.
pub(crate) struct CrawlerAnswer<'a> {
    pub result: Served,
    pub target: &'a request::Target,
    /// The client: the peer, or the address trusted proxies name.
    pub client: std::net::IpAddr,
    pub path: &'a str,
    pub rule: &'a str,
    pub verified: &'a str,
    pub started: std::time::Instant,
    /// The listener that answered: `proxy` or `service`.
    pub via: &'static str,
}

impl CrawlerAnswer<'_> {
    /// Counts the answer (stats per domain, `requests_total`, request
    /// duration) and writes its one info line (SPEC §5).
    pub(crate) fn record(&self, metrics: &Metrics, stats: &DomainStats, status: u16) {
        let CrawlerAnswer {
            result,
            target,
            client,
            path,
            rule,
            verified,
            started,
            via,
        } = *self;
        let metric = match result {
            Served::Passed => {
                // Answered like a person: counted as one, not in the stats.
                tracing::info!(%client, host = %target.host, %path, family = rule_family(rule), %rule, %verified, cache = result.label(), status, ms = started.elapsed().as_millis() as u64, via, "crawler");
                metrics.observe_uncached(RequestKind::Human, status, started.elapsed());
                return;
            }
            Served::Hit => {
                stats.record_hit(&target.host);
                CacheMetric::Hit
            }
            Served::Error(reason) => {
                stats.record_error(&target.host);
                stats.record_failure(&target.host, path, reason);
                CacheMetric::Error
            }
            Served::Miss => {
                stats.record_miss(&target.host);
                CacheMetric::Miss
            }
            Served::Stale => {
                stats.record_stale(&target.host);
                CacheMetric::Stale
            }
        };
        stats.record_family(&target.host, rule_family(rule));
        metrics.observe_request(RequestKind::Bot, metric, rule_family(rule), status);
        metrics.observe_request_duration(RequestKind::Bot, metric, started.elapsed());
        // One line per crawler request at info (SPEC §5); `render_ms` is the
        // wait for a render, on misses only.
        let ms = started.elapsed().as_millis() as u64;
        let render_ms = matches!(result, Served::Miss).then_some(ms);
        tracing::info!(%client, host = %target.host, %path, family = rule_family(rule), %rule, %verified, cache = result.label(), status, ms, render_ms, via, "crawler");
    }
}

/// The family of the rule that called a request a crawler's: the pattern
/// file's name (`search-engines:12` → `search-engines`, an extra file
/// `/etc/bots/ai-training:3` → `ai-training`), or the rule itself where it
/// names no file (`escaped-fragment`, woothee's verdicts).
fn rule_family(rule: &str) -> &str {
    let file = rule.rsplit_once(':').map_or(rule, |(file, _line)| file);
    file.rsplit('/').next().unwrap_or(file)
}

#[cfg(test)]
mod tests {
    use super::rule_family;

    #[test]
    fn a_rule_names_its_family() {
        assert_eq!(rule_family("search-engines:12"), "search-engines");
        assert_eq!(rule_family("/etc/bots/ai-training:3"), "ai-training");
        assert_eq!(rule_family("escaped-fragment"), "escaped-fragment");
    }
}
