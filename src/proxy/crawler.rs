//! The crawler path: cache key → lookup → HIT / STALE, or a MISS that joins
//! or starts a render; any failure fails open (the origin's own answer with
//! `X-Prerender-Cache: ERROR`) or answers 503, as the site chooses.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use lru::LruCache;
use parking_lot::Mutex;

use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode, Uri};

use crate::bot::is_mobile_crawler;
use crate::cache::store_call;
use crate::cache::{is_error_status, CacheKey, KeyError, StoredPage};
use crate::config::{Config, OnRenderFailure, Site};
use crate::http::respond;
use crate::http::Body;
use crate::pipeline::job::{Prerenderer, RenderFailure};
use crate::pipeline::queue::Priority;
use crate::proxy::forward::{ClientHop, OriginClient};
use crate::proxy::prepared::PreparedPages;
use crate::proxy::request::Target;
use crate::verify::{budget, Admission, RenderGate, Standing};

/// A crawler is answered within the render timeout plus this (SPEC §3).
const ANSWER_SLACK: Duration = Duration::from_millis(500);
/// A prepared copy confirmed by the store this recently is served without
/// asking the store again. Purges also drop copies at once through
/// `render-purge`; this bound is what keeps "a purge takes effect on every
/// instance within 1 s" true even when a notice is lost.
const HIT_REVALIDATE_AFTER: Duration = Duration::from_secs(1);
/// Accesses for LRU eviction are written to the store in batches this often…
const TOUCH_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// …and at most this many distinct pages are remembered between flushes.
const MAX_PENDING_TOUCHES: usize = 10_000;

/// Writes the accesses recorded since the last flush, until the crawler
/// path is dropped.
async fn flush_touches(
    pending: Weak<Mutex<HashMap<CacheKey, SystemTime>>>,
    store: Arc<dyn crate::cache::CacheStore>,
) {
    loop {
        tokio::time::sleep(TOUCH_FLUSH_INTERVAL).await;
        let Some(pending) = pending.upgrade() else {
            return;
        };
        let batch: Vec<(CacheKey, SystemTime)> = pending.lock().drain().collect();
        drop(pending);
        for (key, at) in batch {
            if store_call(store.touch(&key, at)).await.is_err() {
                break;
            }
        }
    }
}

/// The cache key of a crawler's request: its host, target, the site's
/// query parameters and, where the site keeps one, the mobile variant.
fn request_key(headers: &HeaderMap, uri: &Uri, target: &Target) -> Result<CacheKey, KeyError> {
    let site = &target.site;
    let ua = headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mobile = site.mobile_variant && is_mobile_crawler(ua);
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    CacheKey::new(&target.host, pq, &site.query_params, mobile)
}

/// A crawler's request as the crawler path sees it. Both kinds share the
/// cache, the keys and the render queue; they differ only in how the
/// origin's own answer is had when one is needed (fail open, a claim
/// answered like a person).
pub enum CrawlerRequest {
    /// From the public listener: the request itself is relayed to the origin.
    Proxy(Request<Incoming>),
    /// From the service listener (prerender.io's protocol): a request made
    /// up of the page URL's origin-form target, its Host and the crawler's
    /// headers; the origin is asked for the page with a GET of the proxy's
    /// own that carries the loop guard, so the site's middleware does not
    /// send it back to the service.
    Service(Request<()>),
}

impl CrawlerRequest {
    pub fn method(&self) -> &Method {
        match self {
            CrawlerRequest::Proxy(r) => r.method(),
            CrawlerRequest::Service(r) => r.method(),
        }
    }

    pub fn headers(&self) -> &HeaderMap {
        match self {
            CrawlerRequest::Proxy(r) => r.headers(),
            CrawlerRequest::Service(r) => r.headers(),
        }
    }

    pub fn uri(&self) -> &Uri {
        match self {
            CrawlerRequest::Proxy(r) => r.uri(),
            CrawlerRequest::Service(r) => r.uri(),
        }
    }

    /// The origin's own answer to the request.
    async fn origin_answer(
        self,
        origin: &OriginClient,
        target: &Target,
        hop: ClientHop,
    ) -> Response<Body> {
        match self {
            CrawlerRequest::Proxy(req) => {
                origin.forward(req, &target.site, &target.host, hop).await
            }
            CrawlerRequest::Service(req) => {
                origin
                    .fetch_page(&req, &target.site, &target.host, hop)
                    .await
            }
        }
    }
}

/// A stale page is re-rendered once per expiry; if that render stored
/// nothing (it failed, or the store was down), the next stale hit may
/// try again after this long. Same pace as a failed refresh.
const STALE_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Stale pages whose re-render start is remembered; beyond this the
/// least recently started are forgotten (the queue still deduplicates
/// renders under way).
const MAX_STALE_RERENDERS: usize = 10_000;

/// The `Cache-Control` of a rendered answer with `status`: the plan's
/// value, else `private, max-age=<TTL>` (the error TTL for 404 and 410).
/// Never `public` by default: an edge that ignores `Vary: User-Agent`
/// would hand a crawler's snapshot to people.
fn cache_control(config: &Config, site: &Site, status: u16) -> HeaderValue {
    let ttl = site.plan.ttl_for_status(status, config.ttl_for(site));
    HeaderValue::from_str(&site.plan.cache_control_for(ttl))
        .unwrap_or(HeaderValue::from_static("private, max-age=0"))
}

/// How a crawler request was served, for logs, metrics and stats (the
/// metric label is `metrics::CacheResult`, which has no reason or pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Hit,
    Miss,
    Stale,
    Error(&'static str),
    /// A failed crawler claim under `verify_crawlers = "enforce"`: answered
    /// by the origin like a person, the cache not consulted for it.
    Passed,
}

impl Served {
    pub fn label(self) -> &'static str {
        match self {
            Served::Hit => "hit",
            Served::Miss => "miss",
            Served::Stale => "stale",
            Served::Error(_) => "error",
            Served::Passed => "pass",
        }
    }
}

pub struct CrawlerPath {
    config: Arc<Config>,
    prerender: Arc<Prerenderer>,
    prepared: Arc<PreparedPages>,
    origin: OriginClient,
    touches: Arc<Mutex<HashMap<CacheKey, SystemTime>>>,
    stale_rerenders: Mutex<StaleRerenders>,
    /// `verify_crawlers = "enforce"`: what a miss may do (`None`: render).
    gate: Option<RenderGate>,
}

/// Which stale pages had their re-render queued, and when: a stale page
/// is re-rendered once per expiry however many crawlers ask meanwhile.
struct StaleRerenders {
    /// Stale page → (the `expires_at` of the version seen, when its
    /// re-render was queued).
    started: LruCache<CacheKey, (SystemTime, Instant)>,
}

impl StaleRerenders {
    fn new(capacity: usize) -> StaleRerenders {
        StaleRerenders {
            started: LruCache::new(NonZeroUsize::new(capacity.max(1)).expect("at least 1")),
        }
    }

    /// Whether a stale hit at `now` on the version of `key` that expired
    /// at `expires_at` should queue a re-render: the first hit on that
    /// version does, and another after [`STALE_RETRY_AFTER`] if the
    /// version is still the one served (its re-render stored nothing).
    fn should_start(&mut self, key: &CacheKey, expires_at: SystemTime, now: Instant) -> bool {
        if let Some((seen, at)) = self.started.get(key) {
            if *seen == expires_at && now.saturating_duration_since(*at) < STALE_RETRY_AFTER {
                return false;
            }
        }
        self.started.put(key.clone(), (expires_at, now));
        true
    }
}

enum Lookup {
    Fresh(StoredPage),
    Stale(StoredPage),
    Missing,
    StoreDown,
}

impl CrawlerPath {
    pub fn new(
        config: Arc<Config>,
        prerender: Arc<Prerenderer>,
        origin: OriginClient,
        prepared: Arc<PreparedPages>,
    ) -> Self {
        let touches: Arc<Mutex<HashMap<CacheKey, SystemTime>>> = Arc::default();
        tokio::spawn(flush_touches(
            Arc::downgrade(&touches),
            prerender.store().clone(),
        ));
        CrawlerPath {
            config,
            prerender,
            prepared,
            origin,
            touches,
            stale_rerenders: Mutex::new(StaleRerenders::new(MAX_STALE_RERENDERS)),
            gate: None,
        }
    }

    /// Misses ask `gate` before they render (crawler verification).
    pub fn with_render_gate(mut self, gate: RenderGate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Whether a request must be answered like a person whatever the
    /// cache holds: its crawler claim is known to have failed (`enforce`).
    pub fn answers_as_person(&self, standing: &Standing) -> bool {
        self.gate
            .as_ref()
            .is_some_and(|gate| gate.known_impostor(standing))
    }

    /// Drops in-process copies of purged pages (`prefix` "" = everything).
    pub fn forget(&self, prefix: &str) {
        self.prepared.remove_prefix(prefix);
    }

    /// A hit answered from a prepared copy the store confirmed within the
    /// last second, or `None`. Needs no I/O and starts nothing, so any
    /// thread may answer it.
    pub fn serve_prepared(
        &self,
        req: &Request<Incoming>,
        target: &Target,
    ) -> Option<Response<Body>> {
        if self.config.ttl_for(&target.site).is_zero() {
            return None;
        }
        let key = request_key(req.headers(), req.uri(), target).ok()?;
        self.recent_hit(
            req.method(),
            req.headers(),
            &key,
            &key.to_string(),
            &target.site,
        )
    }

    /// The hit on `key`'s prepared copy if the store confirmed it recently.
    fn recent_hit(
        &self,
        method: &Method,
        headers: &HeaderMap,
        key: &CacheKey,
        name: &str,
        site: &Site,
    ) -> Option<Response<Body>> {
        let prepared = self
            .prepared
            .recently_validated(name, HIT_REVALIDATE_AFTER)?;
        self.touch(key);
        let cache_control = cache_control(&self.config, site, prepared.status.as_u16());
        Some(prepared.respond(method, headers, "HIT", &cache_control))
    }

    /// Whether a stale hit on `page` should queue its re-render (see
    /// [`StaleRerenders::should_start`]).
    fn first_stale_hit(&self, key: &CacheKey, page: &StoredPage) -> bool {
        self.stale_rerenders
            .lock()
            .should_start(key, page.expires_at, Instant::now())
    }

    pub async fn serve(
        &self,
        req: CrawlerRequest,
        target: &Target,
        hop: ClientHop,
        standing: Standing,
    ) -> (Response<Body>, Served) {
        let peer = hop.peer;
        let site = &target.site;
        let key = match request_key(req.headers(), req.uri(), target) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "crawler request with an unusable path");
                return (
                    respond::error(StatusCode::BAD_REQUEST, &e.to_string()),
                    Served::Error("bad-request"),
                );
            }
        };
        let ttl = self.config.ttl_for(site);
        let name = key.to_string();
        if !ttl.is_zero() {
            if let Some(resp) = self.recent_hit(req.method(), req.headers(), &key, &name, site) {
                return (resp, Served::Hit);
            }
        }
        let cache_control = |status: u16| cache_control(&self.config, site, status);
        let lookup = if ttl.is_zero() {
            Lookup::Missing
        } else {
            self.lookup(&key, site).await
        };
        match lookup {
            Lookup::Fresh(page) => {
                let prepared = self.prepared.get_or_prepare(&name, &page);
                self.touch(&key);
                (
                    prepared.respond(
                        req.method(),
                        req.headers(),
                        "HIT",
                        &cache_control(page.status),
                    ),
                    Served::Hit,
                )
            }
            Lookup::Stale(page) => {
                let prepared = self.prepared.get_or_prepare(&name, &page);
                self.touch(&key);
                if self.first_stale_hit(&key, &page) {
                    if let Err(e) = self.prerender.enqueue(&key, site, Priority::Background) {
                        tracing::debug!(key = %key, error = %e, "stale page not re-queued");
                    }
                }
                (
                    prepared.respond(
                        req.method(),
                        req.headers(),
                        "STALE",
                        &cache_control(page.status),
                    ),
                    Served::Stale,
                )
            }
            Lookup::Missing | Lookup::StoreDown => {
                // The service listener's peer is the site's middleware, not the
                // crawler: there is no claim to check there (its tokens guard it).
                let gate = match req {
                    CrawlerRequest::Proxy(_) => self.gate.as_ref(),
                    CrawlerRequest::Service(_) => None,
                };
                if let Some(gate) = gate {
                    match gate.admit(standing, budget::site_key(&site.domain)).await {
                        Admission::Render => {}
                        Admission::AsPerson => {
                            tracing::info!(%peer, host = %target.host, path = req.uri().path(), "crawler claim not verified; answered like a person");
                            let resp = req.origin_answer(&self.origin, target, hop).await;
                            return (resp, Served::Passed);
                        }
                        Admission::RateLimited => {
                            let failure = RenderFailure {
                                reason: "rate-limited",
                                detail: "unverified_renders_per_minute used up".to_string(),
                            };
                            return (
                                self.fail(req, target, hop, failure).await,
                                Served::Error("rate-limited"),
                            );
                        }
                    }
                }
                let wait = self.config.render_timeout + ANSWER_SLACK;
                let outcome = match tokio::time::timeout(
                    wait,
                    self.prerender.render(&key, site, Priority::Live),
                )
                .await
                {
                    Ok(o) => o,
                    Err(_) => Err(RenderFailure {
                        reason: "timeout",
                        detail: format!("no page within {wait:?}"),
                    }),
                };
                match outcome {
                    Ok(rendered) => {
                        let prepared = if rendered.stored {
                            // A page stored anew is accessed now, but one
                            // re-rendered keeps its last access: this miss is one.
                            self.touch(&key);
                            self.prepared.get_or_prepare(&name, &rendered.page)
                        } else {
                            Arc::new(crate::proxy::prepared::PreparedPage::prepare(
                                &rendered.page,
                            ))
                        };
                        let mut resp = prepared.respond(
                            req.method(),
                            req.headers(),
                            "MISS",
                            &cache_control(rendered.page.status),
                        );
                        if rendered.store_error {
                            resp.headers_mut()
                                .insert("x-prerender-error", HeaderValue::from_static("store"));
                        }
                        (resp, Served::Miss)
                    }
                    Err(failure) => {
                        let reason = failure.reason;
                        (
                            self.fail(req, target, hop, failure).await,
                            Served::Error(reason),
                        )
                    }
                }
            }
        }
    }

    async fn lookup(&self, key: &CacheKey, site: &Site) -> Lookup {
        match store_call(self.prerender.store().get(key)).await {
            Ok(Some(page)) if page.settings_hash == site.settings_hash => {
                let now = SystemTime::now();
                if now < page.expires_at {
                    Lookup::Fresh(page)
                } else if !is_error_status(page.status)
                    && now < page.expires_at + site.plan.stale_window()
                {
                    Lookup::Stale(page)
                } else {
                    Lookup::Missing
                }
            }
            Ok(_) => Lookup::Missing,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "cache lookup failed; rendering uncached");
                Lookup::StoreDown
            }
        }
    }

    /// Records the access for LRU eviction off the response path.
    fn touch(&self, key: &CacheKey) {
        let mut pending = self.touches.lock();
        if pending.len() < MAX_PENDING_TOUCHES || pending.contains_key(key) {
            pending.insert(key.clone(), SystemTime::now());
        }
    }

    /// Fail open with the origin's own answer, or 503 when the site says so.
    async fn fail(
        &self,
        req: CrawlerRequest,
        target: &Target,
        hop: ClientHop,
        failure: RenderFailure,
    ) -> Response<Body> {
        if failure.reason == "rate-limited" {
            // Expected under a flood of unverified bots: counted in
            // prerender_unverified_renders_refused_total, not a warning each.
            tracing::debug!(host = %target.host, path = req.uri().path(), reason = failure.reason, "serving crawler without a render");
        } else {
            tracing::warn!(host = %target.host, path = req.uri().path(), reason = failure.reason, detail = %failure.detail, "serving crawler without a render");
        }
        let reason = HeaderValue::from_static(failure.reason);
        let mut resp = match target.site.on_render_failure {
            OnRenderFailure::Error => {
                let mut r = respond::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the page could not be rendered; try again later",
                );
                r.headers_mut().insert(
                    RETRY_AFTER,
                    HeaderValue::from(self.config.render_timeout.as_secs().max(1)),
                );
                r
            }
            OnRenderFailure::Passthrough => req.origin_answer(&self.origin, target, hop).await,
        };
        resp.headers_mut()
            .insert("x-prerender-cache", HeaderValue::from_static("ERROR"));
        resp.headers_mut().insert("x-prerender-error", reason);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_page_is_re_rendered_once_per_expiry() {
        let mut started = StaleRerenders::new(2);
        let key = CacheKey::new("a.test", "/p", &[], false).unwrap();
        let other = CacheKey::new("a.test", "/q", &[], false).unwrap();
        let version = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let t0 = Instant::now();
        assert!(started.should_start(&key, version, t0));
        // Every crawler asking meanwhile is served the old page, no render.
        for ms in [1, 500, 59_999] {
            assert!(!started.should_start(&key, version, t0 + Duration::from_millis(ms)));
        }
        assert!(started.should_start(&other, version, t0));
        // The re-render stored a new version; when it expires in turn, one more.
        let next = version + Duration::from_secs(3_600);
        assert!(started.should_start(&key, next, t0 + Duration::from_secs(2)));
        assert!(!started.should_start(&key, next, t0 + Duration::from_secs(3)));
        // A re-render that stored nothing is tried again after a minute.
        assert!(started.should_start(&key, next, t0 + Duration::from_secs(2) + STALE_RETRY_AFTER));
    }

    #[test]
    fn stale_re_renders_are_remembered_within_a_bound() {
        let mut started = StaleRerenders::new(2);
        let version = SystemTime::UNIX_EPOCH;
        let t0 = Instant::now();
        let keys: Vec<CacheKey> = (0..3)
            .map(|i| CacheKey::new("a.test", &format!("/{i}"), &[], false).unwrap())
            .collect();
        for k in &keys {
            assert!(started.should_start(k, version, t0));
        }
        assert_eq!(started.started.len(), 2);
        // The oldest was forgotten: at worst one more render, which the
        // queue still deduplicates while it runs.
        assert!(started.should_start(&keys[0], version, t0));
    }
}
