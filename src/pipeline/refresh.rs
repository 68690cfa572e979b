//! The refresher: keeps cached pages fresh on their plan's schedule
//! without waiting for a crawler to ask (SPEC §4).
//!
//! (One file of ≈ 770 lines before its tests: the tick, the claim, the
//! backlog bound and the origin poller are one loop with one set of bounds,
//! read together.)
//!
//! Every page stored is scheduled for its next refresh
//! (`render-due:<domain>`, see [`crate::cache`]). Once a tick
//! ([`REFRESH_TICK`]) the refresher walks every domain — the configured
//! sites' and those the store knows — and claims the pages that are due
//! with [`Coordination::claim_due`], which hands each due page to exactly
//! one instance of all those sharing a Redis. What happens next depends on
//! the site's plan:
//!
//! - **`refresh_every`** (starter, pro, agency, custom plans): the page is
//!   re-rendered at background priority through the render queue. The old
//!   page stays in the store until the new one replaces it in one atomic
//!   `put`, so crawlers never see a gap or a MISS; the successful render
//!   schedules the next refresh itself.
//! - **`poll_every` without `refresh_every`** (agency_plus): the origin
//!   document is fetched with a conditional request (If-None-Match /
//!   If-Modified-Since from the previous answer's validators) and the page
//!   is re-rendered only if it changed: a `304`, or a body (with status and
//!   `Location`) whose SHA-256 matches the baseline, means unchanged. See
//!   [`ContentPoller`]. An unchanged page whose cached copy would expire
//!   before the next poll (plus a render) is re-rendered anyway, so a
//!   polled site stays cached however long its documents stay the same.
//!
//! # Bounds
//!
//! - The refresher never lets its work starve live misses: it claims pages
//!   only while the queue's background backlog is below
//!   [`BACKLOG_PER_WORKER`] × workers (live misses are always taken first),
//!   at most [`CLAIM_BATCH`] per domain per tick, and domains take turns
//!   being first. A page refused by a full queue is re-scheduled
//!   [`QUEUE_FULL_RETRY`] later rather than dropped.
//! - At most [`POLL_CONCURRENCY`] origin polls run at once; each is bounded
//!   by the origin timeout and [`MAX_POLL_BODY_BYTES`].
//! - A domain whose `monthly_renders` quota is used up is skipped until the
//!   month (UTC) turns: its due pages stay scheduled, and are refreshed
//!   then. Only as many pages as the quota has room for are claimed.
//! - Due pages of a domain that no longer maps to a configured site are
//!   claimed and dropped.
//!
//! # Nothing claimed is lost
//!
//! A claimed page is first re-scheduled [`CLAIM_LEASE`] ahead (a lease):
//! if the instance stops or crashes before the refresh finishes, the page
//! comes due again and another instance takes it. A finished refresh
//! replaces the lease with the plan's next due time; a failed one with a
//! retry at most [`FAILED_REFRESH_RETRY`] away.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use lru::LruCache;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::cache::store_call;
use crate::cache::{is_error_status, quota_month, CacheKey, CacheStore, StoredPage};
use crate::config::{Config, Plan, Role, Site};
use crate::domain::Domain;
use crate::http::{collect_bounded, respond, CollectError};
use crate::pipeline::job::{JobResult, OnStored, Prerenderer, RenderObserver};
use crate::pipeline::queue::{Priority, Waiter};
use crate::upstream::{origin_uri, OriginError, UpstreamClient};

/// How often the refresher looks for due pages.
pub const REFRESH_TICK: Duration = Duration::from_secs(1);
/// Most pages claimed from one domain in one tick.
pub const CLAIM_BATCH: usize = 64;
/// The refresher claims pages only while fewer than this many background
/// jobs per render worker wait in the queue.
pub const BACKLOG_PER_WORKER: usize = 2;
/// A page refused by a full queue (or waiting for backlog room after a
/// detected change) comes due again this much later.
pub const QUEUE_FULL_RETRY: Duration = Duration::from_secs(5);
/// A refresh that failed is retried after its plan's interval or this,
/// whichever is shorter (the old page stays served meanwhile).
pub const FAILED_REFRESH_RETRY: Duration = Duration::from_secs(60);
/// A claimed page is re-scheduled this far ahead until its refresh
/// finishes, so a page claimed by an instance that dies is not lost.
pub const CLAIM_LEASE: Duration = Duration::from_secs(300);
/// Origin polls (agency_plus) running at once, across all domains.
pub const POLL_CONCURRENCY: usize = 16;
/// Largest origin document a poll reads; a larger one counts as a failed poll.
pub const MAX_POLL_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Baselines (validators + body hash) kept in process for polled pages;
/// beyond this the least recently polled are forgotten.
pub const MAX_POLL_BASELINES: usize = 100_000;
/// User-Agent of the refresher's origin polls.
const POLL_USER_AGENT: &str = concat!("prerender-proxy/", env!("CARGO_PKG_VERSION"), " (poll)");

/// How a plan keeps its pages fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshMode {
    /// Re-render every page this often.
    Rerender(Duration),
    /// Poll the origin document this often and re-render on change.
    Poll(Duration),
    /// Only on demand (a plan with neither interval).
    None,
}

impl RefreshMode {
    /// `refresh_every` wins over `poll_every` when a plan sets both.
    pub fn of(plan: &Plan) -> RefreshMode {
        match (plan.refresh_every, plan.poll_every) {
            (Some(every), _) => RefreshMode::Rerender(every),
            (None, Some(every)) => RefreshMode::Poll(every),
            (None, None) => RefreshMode::None,
        }
    }
}

/// What one tick did with a domain.
enum DomainPass {
    /// Go on with the next domain.
    Next,
    /// The render queue's background backlog is full: end this tick.
    BacklogFull,
}

/// The background task that refreshes due pages (see the module docs).
pub struct Refresher {
    config: Arc<Config>,
    prerender: Arc<Prerenderer>,
    poller: Arc<ContentPoller>,
    /// Background jobs allowed to wait in the queue before claiming stops.
    backlog_bound: usize,
    polls_allowed: Arc<Semaphore>,
    /// Domain → the quota month in which its quota was found used up.
    quota_exhausted: Mutex<HashMap<String, String>>,
    /// Names the store listed that are no host (the proxy never stores
    /// one: something else wrote them): skipped, each warned about once.
    not_hosts: Mutex<HashSet<String>>,
    /// Which domain goes first in the next tick.
    rotation: AtomicUsize,
    refreshes: AtomicU64,
    polls: AtomicU64,
}

impl Refresher {
    /// A refresher for `prerender`'s queue and store, polling origins with
    /// `origin`. Installs its [`ContentPoller`] as the prerenderer's
    /// observer so every render of a polled page records a baseline.
    pub fn new(
        config: Arc<Config>,
        prerender: Arc<Prerenderer>,
        origin: UpstreamClient,
    ) -> Arc<Refresher> {
        let poller = ContentPoller::new(origin, config.origin_timeout, MAX_POLL_BASELINES);
        prerender.set_observer(poller.clone());
        let workers = (config.browsers * config.tabs_per_browser).max(1);
        Arc::new(Refresher {
            backlog_bound: BACKLOG_PER_WORKER * workers,
            config,
            prerender,
            poller,
            polls_allowed: Arc::new(Semaphore::new(POLL_CONCURRENCY)),
            quota_exhausted: Mutex::new(HashMap::new()),
            not_hosts: Mutex::new(HashSet::new()),
            rotation: AtomicUsize::new(0),
            refreshes: AtomicU64::new(0),
            polls: AtomicU64::new(0),
        })
    }

    /// Whether this instance's role runs the refresher (`all` and
    /// `renderer`; a `proxy` only answers HTTP).
    pub fn runs_in(role: Role) -> bool {
        role != Role::Proxy
    }

    /// Runs the refresher in `tasks` until `stop` turns true.
    pub fn spawn(self: &Arc<Self>, tasks: &mut JoinSet<()>, stop: watch::Receiver<bool>) {
        tasks.spawn(self.clone().run(stop));
    }

    /// Ticks every [`REFRESH_TICK`] until `stop` turns true. Refreshes
    /// already queued finish (or are dropped by the queue's shutdown;
    /// their lease brings them back).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(REFRESH_TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticks.tick() => {}
            }
            if *stop.borrow() {
                return;
            }
            self.tick().await;
        }
    }

    /// Re-renders queued by the refresher (scheduled refreshes and
    /// changes found by polling): the `prerender_refreshes_total` figure.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Origin documents polled for changes.
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }

    /// The content poller (baselines of polled pages).
    pub fn poller(&self) -> &Arc<ContentPoller> {
        &self.poller
    }

    fn store(&self) -> &Arc<dyn CacheStore> {
        self.prerender.store()
    }

    /// One pass over every domain.
    pub async fn tick(self: &Arc<Self>) {
        let domains = self.domains().await;
        if domains.is_empty() {
            return;
        }
        let first = self.rotation.fetch_add(1, Ordering::Relaxed) % domains.len();
        for i in 0..domains.len() {
            let domain = &domains[(first + i) % domains.len()];
            if let DomainPass::BacklogFull = self.refresh_domain(domain).await {
                tracing::debug!("refresh backlog full; the rest waits for the next tick");
                return;
            }
        }
    }

    /// The configured sites' domains and every domain the store holds pages of.
    async fn domains(&self) -> Vec<String> {
        let mut domains: BTreeSet<String> = self
            .config
            .sites
            .iter()
            .filter(|s| !s.domain.is_empty())
            .map(|s| s.domain.clone())
            .collect();
        match store_call(self.store().domains()).await {
            Ok(stored) => domains.extend(hosts_only(stored, &self.not_hosts)),
            Err(e) => tracing::warn!(error = %e, "refresher cannot list domains"),
        }
        domains.into_iter().collect()
    }

    async fn refresh_domain(self: &Arc<Self>, domain: &str) -> DomainPass {
        let Some(site) = self.config.sites.lookup(domain).cloned() else {
            // The site is gone from the configuration: its pages are not refreshed.
            if let Ok(keys) = self.claim(domain, CLAIM_BATCH).await {
                if !keys.is_empty() {
                    tracing::info!(
                        domain,
                        dropped = keys.len(),
                        "dropped refreshes of a domain that is no longer configured"
                    );
                }
            }
            return DomainPass::Next;
        };
        let Some(quota_room) = self.quota_room(domain, &site).await else {
            return DomainPass::Next;
        };
        match RefreshMode::of(&site.plan) {
            RefreshMode::Rerender(every) => {
                let backlog = self.prerender.queue_stats().background_pending;
                let room = self.backlog_bound.saturating_sub(backlog);
                if room == 0 {
                    return DomainPass::BacklogFull;
                }
                let Ok(keys) = self
                    .claim(domain, room.min(CLAIM_BATCH).min(quota_room))
                    .await
                else {
                    return DomainPass::Next;
                };
                let now = SystemTime::now();
                let kept_until_refresh = site
                    .plan
                    .keeps_pages_until_refresh(self.config.ttl_for(&site));
                for key in keys {
                    if kept_until_refresh && self.evicted(&key).await {
                        continue;
                    }
                    self.lease(&key, now).await;
                    self.rerender(key, site.clone(), every).await;
                }
            }
            RefreshMode::Poll(every) => {
                let room = self.polls_allowed.available_permits();
                if room == 0 {
                    return DomainPass::Next;
                }
                let Ok(keys) = self.claim(domain, room.min(CLAIM_BATCH)).await else {
                    return DomainPass::Next;
                };
                let now = SystemTime::now();
                for key in keys {
                    self.lease(&key, now).await;
                    let Ok(permit) = self.polls_allowed.clone().try_acquire_owned() else {
                        // Unreachable (permits only go to this loop); the lease brings it back.
                        continue;
                    };
                    let this = self.clone();
                    let site = site.clone();
                    tokio::spawn(async move {
                        this.poll(key, site, every).await;
                        drop(permit);
                    });
                }
            }
            RefreshMode::None => {
                // The plan no longer refreshes: forget the schedule.
                let _ = self.claim(domain, CLAIM_BATCH).await;
            }
        }
        DomainPass::Next
    }

    /// Renders the domain's quota still allows this month (`usize::MAX`
    /// when unlimited), or `None` when it is used up (or cannot be read).
    async fn quota_room(&self, domain: &str, site: &Site) -> Option<usize> {
        let Some(quota) = site.plan.monthly_renders else {
            return Some(usize::MAX);
        };
        let month = quota_month(SystemTime::now());
        if self.quota_exhausted.lock().get(domain) == Some(&month) {
            return None;
        }
        match store_call(self.store().renders_in_month(domain, &month)).await {
            Ok(used) if used >= quota => {
                tracing::info!(
                    domain,
                    used,
                    quota,
                    %month,
                    "render quota used up: refreshes wait for next month"
                );
                self.quota_exhausted
                    .lock()
                    .insert(domain.to_string(), month);
                None
            }
            Ok(used) => Some(usize::try_from(quota - used).unwrap_or(usize::MAX)),
            Err(e) => {
                tracing::warn!(domain, error = %e, "refresher cannot read the render quota");
                None
            }
        }
    }

    async fn claim(&self, domain: &str, limit: usize) -> Result<Vec<CacheKey>, ()> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        store_call(self.store().claim_due(domain, SystemTime::now(), limit))
            .await
            .map_err(|e| tracing::warn!(domain, error = %e, "refresher cannot claim due pages"))
    }

    /// Whether a claimed page of a plan that keeps pages until their
    /// refresh is gone from the store: evicted by its byte bound (or, on
    /// Redis, by `maxmemory`). It is then forgotten (already unscheduled by
    /// the claim) rather than rendered back, so the refresh work of a plan
    /// with no page-count limit stays bounded by what the store holds; a
    /// crawler asking for it again renders and schedules it anew. When the
    /// store cannot say, the page is refreshed as usual.
    async fn evicted(&self, key: &CacheKey) -> bool {
        match store_call(self.store().contains(key)).await {
            Ok(stored) => {
                if !stored {
                    tracing::debug!(key = %key, "due page no longer cached; forgotten");
                }
                !stored
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "refresher cannot check a due page");
                false
            }
        }
    }

    /// Re-schedules a claimed page [`CLAIM_LEASE`] ahead until its refresh finishes.
    async fn lease(&self, key: &CacheKey, now: SystemTime) {
        self.reschedule(key, now + CLAIM_LEASE).await;
    }

    async fn reschedule(&self, key: &CacheKey, due: SystemTime) {
        if let Err(e) = store_call(self.store().schedule(key, due)).await {
            tracing::warn!(key = %key, error = %e, "refresher cannot re-schedule a page");
        }
    }

    /// Queues a background re-render of `key` and follows it: a failed or
    /// refused one is re-scheduled (a stored one was scheduled by its job).
    async fn rerender(self: &Arc<Self>, key: CacheKey, site: Arc<Site>, every: Duration) {
        match self
            .prerender
            .enqueue_watched(&key, &site, Priority::Background)
        {
            Ok(waiter) => {
                self.refreshes.fetch_add(1, Ordering::Relaxed);
                let this = self.clone();
                tokio::spawn(async move { this.follow(key, waiter, every).await });
            }
            Err(full) => {
                tracing::debug!(key = %key, error = %full, "refresh refused; retrying later");
                self.reschedule(&key, SystemTime::now() + QUEUE_FULL_RETRY)
                    .await;
            }
        }
    }

    async fn follow(&self, key: CacheKey, waiter: Waiter<JobResult>, every: Duration) {
        let retry = every.min(FAILED_REFRESH_RETRY);
        let due = match waiter.wait().await {
            // The job that stored it scheduled the next refresh…
            Some(Ok(rendered)) if rendered.stored && !is_error_status(rendered.page.status) => {
                return
            }
            // …but not for an error page (kept only for error_ttl): a page
            // that went away is still looked at on the plan's schedule.
            Some(Ok(rendered)) if rendered.stored => SystemTime::now() + every,
            Some(Ok(rendered)) => {
                tracing::info!(key = %key, status = rendered.page.status, store_error = rendered.store_error, "refresh not stored; the old page stays");
                SystemTime::now() + retry
            }
            Some(Err(failure)) => {
                tracing::warn!(key = %key, reason = failure.reason, detail = %failure.detail, "refresh failed; the old page stays");
                SystemTime::now() + retry
            }
            // The queue shut down: due at once, for whichever instance is still up.
            None => SystemTime::now(),
        };
        self.reschedule(&key, due).await;
    }

    /// Whether the cached page of a polled `key` stops being fresh before
    /// the poll after this one could replace it (or is gone already):
    /// unchanged pages are re-rendered in time, so a polled site stays
    /// cached however long its documents stay the same.
    async fn expires_before_next_poll(&self, key: &CacheKey, every: Duration) -> bool {
        let expiry = match self.poller.page_expiry(key) {
            Some(t) => t,
            None => match store_call(self.store().get(key)).await {
                Ok(Some(page)) => {
                    self.poller.set_page_expiry(key, page.expires_at);
                    page.expires_at
                }
                Ok(None) => return true,
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "refresher cannot read a polled page");
                    return false;
                }
            },
        };
        expiry <= SystemTime::now() + every + self.config.render_timeout
    }

    /// One agency_plus poll: re-render on change (or before the cached page
    /// expires), else come back after `every`.
    async fn poll(self: &Arc<Self>, key: CacheKey, site: Arc<Site>, every: Duration) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        match self.poller.poll(&key, &site).await {
            PollOutcome::Changed => {
                let backlog = self.prerender.queue_stats().background_pending;
                if backlog >= self.backlog_bound {
                    // The baseline is unchanged, so the change is found again then.
                    self.reschedule(&key, SystemTime::now() + QUEUE_FULL_RETRY)
                        .await;
                    return;
                }
                tracing::info!(key = %key, "origin document changed; re-rendering");
                self.rerender(key, site, every).await;
            }
            PollOutcome::Unchanged | PollOutcome::BaselineRecorded => {
                if self.expires_before_next_poll(&key, every).await {
                    tracing::debug!(key = %key, "unchanged, but the cached page would expire before the next poll; re-rendering");
                    self.rerender(key, site, every).await;
                } else {
                    self.reschedule(&key, SystemTime::now() + every).await;
                }
            }
            PollOutcome::Failed(e) => {
                tracing::warn!(key = %key, error = %e, "origin poll failed");
                self.reschedule(&key, SystemTime::now() + every).await;
            }
        }
    }
}

/// What the origin document looked like at one poll: its validators and
/// a SHA-256 over status, `Location` and body; plus when the cached page
/// stops being fresh, if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baseline {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub digest: [u8; 32],
    /// `expires_at` of the page as last stored (by this instance) or read.
    pub page_expires_at: Option<SystemTime>,
}

/// The result of polling one page's origin document.
#[derive(Debug)]
pub enum PollOutcome {
    /// `304`, or the same status, `Location` and body as the baseline.
    Unchanged,
    /// The document differs from the baseline: re-render. The baseline is
    /// kept until the new render is stored, so a failed render is retried.
    Changed,
    /// No baseline was known (first poll on this instance): recorded, no render.
    BaselineRecorded,
    Failed(PollError),
}

/// Why a poll learned nothing.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("origin: {0}")]
    Origin(#[from] OriginError),
    #[error("origin document unreadable: {0}")]
    Body(String),
    #[error("origin document larger than {MAX_POLL_BODY_BYTES} bytes")]
    TooLarge,
    #[error("origin answered {0}")]
    ServerError(StatusCode),
    #[error("origin answered 304 to an unconditional request")]
    UnexpectedNotModified,
    #[error("invalid poll request: {0}")]
    Request(String),
}

/// The origin's answer to a poll.
enum Fetched {
    NotModified,
    Document(Baseline),
}

/// Detects changes of origin documents for plans that poll (agency_plus).
///
/// Baselines live in a bounded in-process map ([`MAX_POLL_BASELINES`],
/// least recently polled forgotten first). A baseline is taken just
/// before each render of a polled page on this instance (so a change
/// during or after the render is seen at the next poll) and refreshed by
/// polls that find the document unchanged.
///
/// Limitation with several instances on one Redis: baselines are not
/// shared. An instance polling a page it has no baseline for (rendered
/// elsewhere, or after a restart) fetches the document unconditionally
/// and records it without re-rendering, so a change made between that
/// page's last render and this first poll waits for the next change (or
/// the page's TTL, or `POST /api/v1/refresh`). An instance whose
/// baseline predates another instance's render may re-render once more
/// than needed; it never misses a change it saw.
pub struct ContentPoller {
    origin: UpstreamClient,
    timeout: Duration,
    baselines: Arc<Mutex<LruCache<String, Baseline>>>,
}

impl ContentPoller {
    /// A poller using `origin`, each poll bounded by `timeout`, keeping
    /// at most `capacity` baselines.
    pub fn new(origin: UpstreamClient, timeout: Duration, capacity: usize) -> Arc<ContentPoller> {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Arc::new(ContentPoller {
            origin,
            timeout,
            baselines: Arc::new(Mutex::new(LruCache::new(capacity))),
        })
    }

    /// Whether `site`'s plan polls its origin for changes.
    pub fn polls(site: &Site) -> bool {
        matches!(RefreshMode::of(&site.plan), RefreshMode::Poll(_))
    }

    /// The baseline recorded for `key`, if any.
    pub fn baseline(&self, key: &CacheKey) -> Option<Baseline> {
        self.baselines.lock().peek(&key.to_string()).cloned()
    }

    /// When the cached page of `key` stops being fresh, as far as this
    /// poller knows.
    pub fn page_expiry(&self, key: &CacheKey) -> Option<SystemTime> {
        self.baselines
            .lock()
            .peek(&key.to_string())
            .and_then(|b| b.page_expires_at)
    }

    /// Notes when the cached page of `key` stops being fresh (no effect
    /// without a baseline).
    pub fn set_page_expiry(&self, key: &CacheKey, expires_at: SystemTime) {
        if let Some(b) = self.baselines.lock().peek_mut(&key.to_string()) {
            b.page_expires_at = Some(expires_at);
        }
    }

    /// Number of baselines held.
    pub fn len(&self) -> usize {
        self.baselines.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Polls `key`'s origin document and compares it with the baseline.
    pub async fn poll(&self, key: &CacheKey, site: &Site) -> PollOutcome {
        let name = key.to_string();
        let baseline = self.baselines.lock().get(&name).cloned();
        let fetched = match self.fetch(key, site, baseline.as_ref()).await {
            Ok(f) => f,
            Err(e) => return PollOutcome::Failed(e),
        };
        match (fetched, baseline) {
            (Fetched::NotModified, Some(_)) => PollOutcome::Unchanged,
            (Fetched::NotModified, None) => PollOutcome::Failed(PollError::UnexpectedNotModified),
            (Fetched::Document(new), Some(old)) if new.digest == old.digest => {
                // Same bytes: keep the newest validators.
                self.baselines.lock().put(
                    name,
                    Baseline {
                        page_expires_at: old.page_expires_at,
                        ..new
                    },
                );
                PollOutcome::Unchanged
            }
            (Fetched::Document(_), Some(_)) => PollOutcome::Changed,
            (Fetched::Document(new), None) => {
                self.baselines.lock().put(name, new);
                PollOutcome::BaselineRecorded
            }
        }
    }

    /// GET of the page's document from the site's origin as the renderer
    /// asks for it (public `Host`, `X-Prerender: 1`), conditional on
    /// `baseline`'s validators.
    async fn fetch(
        &self,
        key: &CacheKey,
        site: &Site,
        baseline: Option<&Baseline>,
    ) -> Result<Fetched, PollError> {
        let path: hyper::Uri = key
            .path()
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| PollError::Request(e.to_string()))?;
        let uri = origin_uri(&site.origin, &path)?;
        let mut req = Request::get(uri)
            .header(
                header::HOST,
                site.origin_host.as_deref().unwrap_or(key.domain()),
            )
            .header("x-prerender", "1")
            .header(header::USER_AGENT, POLL_USER_AGENT)
            .header(header::ACCEPT, "text/html,application/xhtml+xml")
            .header(header::ACCEPT_ENCODING, "identity");
        if let Some(b) = baseline {
            if let Some(etag) = b.etag.as_deref() {
                req = req.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = b.last_modified.as_deref() {
                req = req.header(header::IF_MODIFIED_SINCE, lm);
            }
        }
        let req = req
            .body(respond::empty())
            .map_err(|e| PollError::Request(e.to_string()))?;
        let exchange = async {
            let resp = self.origin.send(req).await?;
            let status = resp.status();
            if status == StatusCode::NOT_MODIFIED {
                return Ok(Fetched::NotModified);
            }
            if status.is_server_error() {
                return Err(PollError::ServerError(status));
            }
            let (parts, body) = resp.into_parts();
            let body = collect_bounded(body, MAX_POLL_BODY_BYTES)
                .await
                .map_err(|e| match e {
                    CollectError::TooLarge { .. } => PollError::TooLarge,
                    CollectError::Read(detail) => PollError::Body(detail),
                })?;
            let text = |name: header::HeaderName| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v: &HeaderValue| v.to_str().ok())
                    .map(str::to_string)
            };
            Ok(Fetched::Document(Baseline {
                etag: text(header::ETAG),
                last_modified: text(header::LAST_MODIFIED),
                digest: document_digest(status, text(header::LOCATION).as_deref(), &body),
                page_expires_at: None,
            }))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(PollError::Origin(OriginError::Timeout(self.timeout))),
        }
    }
}

/// SHA-256 over what makes a document different to a crawler: status,
/// redirect target and body.
fn document_digest(status: StatusCode, location: Option<&str>, body: &Bytes) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(status.as_u16().to_be_bytes());
    h.update(location.unwrap_or("").as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().into()
}

impl RenderObserver for ContentPoller {
    /// Before a polled page renders, fetch its document unconditionally;
    /// the answer becomes the baseline once the page is stored. Taken
    /// before the render, so a change racing the render at worst causes
    /// one extra re-render, never a missed change.
    fn render_starting<'a>(
        &'a self,
        key: &'a CacheKey,
        site: &'a Site,
    ) -> BoxFuture<'a, Option<OnStored>> {
        async move {
            if !Self::polls(site) {
                return None;
            }
            let started = Instant::now();
            match self.fetch(key, site, None).await {
                Ok(Fetched::Document(baseline)) => {
                    let baselines = self.baselines.clone();
                    let name = key.to_string();
                    let on_stored: OnStored = Box::new(move |page: &StoredPage| {
                        let baseline = Baseline {
                            page_expires_at: Some(page.expires_at),
                            ..baseline
                        };
                        baselines.lock().put(name, baseline);
                    });
                    Some(on_stored)
                }
                Ok(Fetched::NotModified) => None,
                Err(e) => {
                    tracing::info!(key = %key, error = %e, elapsed = ?started.elapsed(), "no poll baseline for this render");
                    None
                }
            }
        }
        .boxed()
    }
}

/// How many names that are no host the refresher remembers having warned
/// about (past it, further ones are skipped silently).
const NOT_HOSTS_REMEMBERED: usize = 64;

/// The names in `stored` that are host names; each other one is logged
/// once (remembered in `warned`) and left out.
fn hosts_only(stored: Vec<String>, warned: &Mutex<HashSet<String>>) -> Vec<String> {
    stored
        .into_iter()
        .filter(|name| {
            if Domain::parse(name).is_ok() {
                return true;
            }
            let mut warned = warned.lock();
            if warned.len() < NOT_HOSTS_REMEMBERED && warned.insert(name.clone()) {
                tracing::warn!(domain = ?name, "the store lists a domain that is no host name: its pages are not refreshed");
            }
            false
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Coordination, PageStore};
    use crate::cli::ServeArgs;
    use crate::config::file::FileConfig;
    use crate::upstream::PoolLimits;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::Response;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::convert::Infallible;
    use std::sync::atomic::AtomicBool;

    /// If-None-Match, If-Modified-Since and X-Prerender of one request.
    type SeenHeaders = (Option<String>, Option<String>, Option<String>);

    /// What the test origin serves for every path.
    #[derive(Default)]
    struct Document {
        body: Mutex<String>,
        etag: Mutex<Option<String>>,
        last_modified: Mutex<Option<String>>,
        /// Conditional request headers seen, one entry per request.
        seen: Mutex<Vec<SeenHeaders>>,
        fail: AtomicBool,
    }

    async fn origin(doc: Arc<Document>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let doc = doc.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let doc = doc.clone();
                        async move {
                            let h = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string)
                            };
                            doc.seen.lock().push((
                                h("if-none-match"),
                                h("if-modified-since"),
                                h("x-prerender"),
                            ));
                            let etag = doc.etag.lock().clone();
                            let lm = doc.last_modified.lock().clone();
                            let mut resp = Response::builder();
                            if doc.fail.load(Ordering::SeqCst) {
                                resp = resp.status(503);
                            } else {
                                // RFC 9110 §13.2.2: If-None-Match decides when both are sent.
                                let not_modified = match &etag {
                                    Some(_) => h("if-none-match") == etag,
                                    None => lm.is_some() && h("if-modified-since") == lm,
                                };
                                if not_modified {
                                    resp = resp.status(304);
                                }
                            }
                            if let Some(e) = &etag {
                                resp = resp.header("etag", e);
                            }
                            if let Some(l) = &lm {
                                resp = resp.header("last-modified", l);
                            }
                            let body = doc.body.lock().clone();
                            Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(body))).unwrap())
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        format!("http://{addr}")
    }

    fn site(origin: &str) -> Site {
        let toml = format!(
            "[plans.agency_plus]\npoll_every = \"2s\"\n[[sites]]\ndomain = \"a.test\"\norigin = \"{origin}\"\nplan = \"agency_plus\"\n"
        );
        let config =
            Config::from_parts(&ServeArgs::default(), FileConfig::parse(&toml).unwrap()).unwrap();
        let site = config.sites.lookup("a.test").unwrap().as_ref().clone();
        site
    }

    fn key(path: &str) -> CacheKey {
        CacheKey::new("a.test", path, &[], false).unwrap()
    }

    fn test_client(timeout: Duration) -> UpstreamClient {
        UpstreamClient::new(
            timeout,
            PoolLimits {
                max_idle_per_origin: 8,
                idle_timeout: Duration::from_secs(60),
                connect_timeout: timeout,
            },
        )
    }

    fn poller() -> Arc<ContentPoller> {
        ContentPoller::new(
            test_client(Duration::from_secs(5)),
            Duration::from_secs(5),
            4,
        )
    }

    #[tokio::test]
    async fn etag_polls_are_conditional_and_304_is_unchanged() {
        let doc = Arc::new(Document::default());
        *doc.body.lock() = "<html>v1</html>".into();
        *doc.etag.lock() = Some("\"v1\"".into());
        let site = site(&origin(doc.clone()).await);
        let p = poller();
        assert!(matches!(
            p.poll(&key("/a"), &site).await,
            PollOutcome::BaselineRecorded
        ));
        assert!(matches!(
            p.poll(&key("/a"), &site).await,
            PollOutcome::Unchanged
        ));
        {
            let seen = doc.seen.lock();
            assert_eq!(
                seen[0],
                (None, None, Some("1".into())),
                "first poll is unconditional"
            );
            assert_eq!(seen[1].0.as_deref(), Some("\"v1\""), "then If-None-Match");
        }
        *doc.body.lock() = "<html>v2</html>".into();
        *doc.etag.lock() = Some("\"v2\"".into());
        assert!(matches!(
            p.poll(&key("/a"), &site).await,
            PollOutcome::Changed
        ));
        // The baseline stays until a render is stored: still a change.
        assert!(matches!(
            p.poll(&key("/a"), &site).await,
            PollOutcome::Changed
        ));
    }

    #[tokio::test]
    async fn without_validators_the_body_hash_decides() {
        let doc = Arc::new(Document::default());
        *doc.body.lock() = "<html>same</html>".into();
        let site = site(&origin(doc.clone()).await);
        let p = poller();
        assert!(matches!(
            p.poll(&key("/b"), &site).await,
            PollOutcome::BaselineRecorded
        ));
        assert!(matches!(
            p.poll(&key("/b"), &site).await,
            PollOutcome::Unchanged
        ));
        assert_eq!(doc.seen.lock()[1].0, None, "nothing to be conditional on");
        *doc.body.lock() = "<html>different</html>".into();
        assert!(matches!(
            p.poll(&key("/b"), &site).await,
            PollOutcome::Changed
        ));
    }

    #[tokio::test]
    async fn last_modified_is_sent_back_and_origin_errors_change_nothing() {
        let doc = Arc::new(Document::default());
        *doc.body.lock() = "<html>lm</html>".into();
        *doc.last_modified.lock() = Some("Sat, 28 Nov 2026 10:00:00 GMT".into());
        let site = site(&origin(doc.clone()).await);
        let p = poller();
        assert!(matches!(
            p.poll(&key("/c"), &site).await,
            PollOutcome::BaselineRecorded
        ));
        assert!(matches!(
            p.poll(&key("/c"), &site).await,
            PollOutcome::Unchanged
        ));
        assert_eq!(
            doc.seen.lock()[1].1.as_deref(),
            Some("Sat, 28 Nov 2026 10:00:00 GMT")
        );
        doc.fail.store(true, Ordering::SeqCst);
        assert!(matches!(
            p.poll(&key("/c"), &site).await,
            PollOutcome::Failed(PollError::ServerError(_))
        ));
        doc.fail.store(false, Ordering::SeqCst);
        assert!(matches!(
            p.poll(&key("/c"), &site).await,
            PollOutcome::Unchanged
        ));
    }

    #[tokio::test]
    async fn a_render_records_its_baseline_only_once_stored() {
        let doc = Arc::new(Document::default());
        *doc.body.lock() = "<html>r1</html>".into();
        let site = site(&origin(doc.clone()).await);
        let p = poller();
        let k = key("/d");
        // A render that is not stored leaves no baseline.
        let dropped = p.render_starting(&k, &site).await;
        assert!(dropped.is_some());
        drop(dropped);
        assert!(p.baseline(&k).is_none());
        // A stored one does, so the next poll compares with it.
        let on_stored = p.render_starting(&k, &site).await.unwrap();
        let expires_at = SystemTime::now() + Duration::from_secs(3600);
        let page = StoredPage {
            html: Bytes::from_static(b"<html>r1</html>"),
            status: 200,
            headers: vec![],
            etag: "\"e\"".into(),
            rendered_at: SystemTime::now(),
            expires_at,
            settings_hash: String::new(),
            content_hash: String::new(),
        };
        on_stored(&page);
        assert!(p.baseline(&k).is_some());
        assert_eq!(p.page_expiry(&k), Some(expires_at));
        *doc.body.lock() = "<html>r2</html>".into();
        assert!(matches!(p.poll(&k, &site).await, PollOutcome::Changed));
    }

    #[tokio::test]
    async fn baselines_are_bounded() {
        let doc = Arc::new(Document::default());
        *doc.body.lock() = "<html>x</html>".into();
        let site = site(&origin(doc).await);
        let p = poller();
        for i in 0..10 {
            p.poll(&key(&format!("/p{i}")), &site).await;
        }
        assert_eq!(p.len(), 4);
        assert!(p.baseline(&key("/p9")).is_some());
        assert!(p.baseline(&key("/p0")).is_none());
    }

    /// Renders instantly (or never, while `hold` is set), counting calls.
    struct FakeRenderer {
        calls: AtomicU64,
        fail: AtomicBool,
        hold: AtomicBool,
    }

    impl crate::pipeline::job::PageRenderer for FakeRenderer {
        fn render(
            &self,
            _job: crate::render::RenderJob,
        ) -> BoxFuture<'_, Result<crate::render::RenderedPage, crate::render::RenderError>>
        {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail.load(Ordering::SeqCst);
            let hold = self.hold.load(Ordering::SeqCst);
            async move {
                if hold {
                    futures::future::pending::<()>().await;
                }
                if fail {
                    return Err(crate::render::RenderError::Timeout);
                }
                Ok(crate::render::RenderedPage {
                    status: 200,
                    headers: vec![],
                    html: "<html>page</html>".into(),
                    elapsed: Duration::from_millis(1),
                    snapshot_on_ready_timeout: false,
                })
            }
            .boxed()
        }
    }

    struct Rig {
        refresher: Arc<Refresher>,
        prerender: Arc<Prerenderer>,
        renderer: Arc<FakeRenderer>,
        store: Arc<crate::cache::MemoryStore>,
        site: Arc<Site>,
    }

    /// A refresher over the embedded store and a fake renderer, one site
    /// `a.test` on a plan with the given fields, one render worker.
    fn rig(plan_fields: &str) -> Rig {
        let toml = format!(
            "browsers = 1\ntabs_per_browser = 1\n[plans.p]\n{plan_fields}\n[[sites]]\ndomain = \"a.test\"\norigin = \"http://127.0.0.1:9\"\nplan = \"p\"\n"
        );
        let config = Arc::new(
            Config::from_parts(&ServeArgs::default(), FileConfig::parse(&toml).unwrap()).unwrap(),
        );
        let site = config.sites.lookup("a.test").unwrap().clone();
        let renderer = Arc::new(FakeRenderer {
            calls: AtomicU64::new(0),
            fail: AtomicBool::new(false),
            hold: AtomicBool::new(false),
        });
        let store = crate::cache::MemoryStore::new(1 << 20);
        let prerender = Prerenderer::new(
            config.clone(),
            store.clone(),
            renderer.clone(),
            Arc::new(crate::state::Health::new(false)),
            crate::metrics::Metrics::new(),
            Arc::new(crate::state::stats::DomainStats::default()),
        );
        let refresher = Refresher::new(
            config,
            prerender.clone(),
            test_client(Duration::from_secs(1)),
        );
        Rig {
            refresher,
            prerender,
            renderer,
            store,
            site,
        }
    }

    impl Rig {
        async fn render(&self, path: &str) {
            let out = self
                .prerender
                .render(&key(path), &self.site, Priority::Live)
                .await
                .unwrap();
            assert!(out.stored);
        }

        async fn make_due(&self, path: &str) {
            let past = SystemTime::now() - Duration::from_secs(1);
            self.store.schedule(&key(path), past).await.unwrap();
        }

        /// The earliest scheduled refresh of the site (tests schedule one page).
        async fn next_due(&self) -> Option<SystemTime> {
            self.store.next_due("a.test").await.unwrap()
        }

        fn calls(&self) -> u64 {
            self.renderer.calls.load(Ordering::SeqCst)
        }

        async fn settle(&self) {
            for _ in 0..100 {
                let q = self.prerender.queue_stats();
                if q.live_pending + q.background_pending + q.running == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn within(t: Option<SystemTime>, from: Duration, to: Duration) -> bool {
        let now = SystemTime::now();
        t.is_some_and(|t| t > now + from && t <= now + to)
    }

    #[tokio::test]
    async fn a_due_page_is_re_rendered_and_its_render_schedules_the_next_refresh() {
        let r = rig("refresh_every = \"1h\"");
        r.render("/a").await;
        r.make_due("/a").await;
        r.refresher.tick().await;
        r.settle().await;
        assert_eq!(r.calls(), 2);
        assert_eq!(r.refresher.refreshes(), 1);
        assert!(within(
            r.next_due().await,
            Duration::from_secs(3500),
            Duration::from_secs(3600)
        ));
        // Not due again: the next tick leaves it alone.
        r.refresher.tick().await;
        r.settle().await;
        assert_eq!(r.calls(), 2);
    }

    #[tokio::test]
    async fn a_due_page_the_store_evicted_is_forgotten_not_rendered_back() {
        // Default stale window: pages are stored past their refresh, so a
        // due page that is gone was evicted by the store's bound.
        let r = rig("refresh_every = \"1h\"\nmax_entries = \"unlimited\"");
        r.render("/kept").await;
        r.make_due("/kept").await;
        r.make_due("/evicted").await;
        r.refresher.tick().await;
        r.settle().await;
        assert_eq!(r.calls(), 2, "only the cached page is re-rendered");
        assert!(r.store.get(&key("/evicted")).await.unwrap().is_none());
        let due = r
            .store
            .claim_due("a.test", SystemTime::now() + Duration::from_secs(7200), 10)
            .await
            .unwrap();
        assert_eq!(due, vec![key("/kept")], "the evicted page is forgotten");
        // With a window that ends before the refresh, pages are expected to
        // be gone at refresh time: they are rendered back as before.
        let r = rig("refresh_every = \"2h\"\nstale_while_revalidate = \"0s\"");
        r.make_due("/expired").await;
        r.refresher.tick().await;
        r.settle().await;
        assert_eq!(r.calls(), 1);
        assert!(r.store.get(&key("/expired")).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_failed_refresh_is_retried_later_not_lost() {
        let r = rig("refresh_every = \"10m\"");
        r.render("/a").await;
        r.renderer.fail.store(true, Ordering::SeqCst);
        r.make_due("/a").await;
        r.refresher.tick().await;
        r.settle().await;
        assert_eq!(r.calls(), 2);
        assert!(
            within(
                r.next_due().await,
                Duration::from_secs(50),
                FAILED_REFRESH_RETRY
            ),
            "retried within FAILED_REFRESH_RETRY, not after the plan's 10 minutes"
        );
        assert!(
            r.store.get(&key("/a")).await.unwrap().is_some(),
            "old page kept"
        );
    }

    #[tokio::test]
    async fn claims_stop_while_the_background_backlog_is_full() {
        let r = rig("refresh_every = \"1h\"");
        for i in 0..10 {
            r.render(&format!("/p{i}")).await;
        }
        r.renderer.hold.store(true, Ordering::SeqCst);
        for i in 0..10 {
            r.make_due(&format!("/p{i}")).await;
        }
        r.refresher.tick().await;
        // One worker: BACKLOG_PER_WORKER × 1 claimed, the rest still due.
        let still_due = r
            .store
            .claim_due("a.test", SystemTime::now(), 100)
            .await
            .unwrap();
        assert_eq!(still_due.len(), 10 - BACKLOG_PER_WORKER);
        assert_eq!(r.refresher.refreshes(), BACKLOG_PER_WORKER as u64);
    }

    #[tokio::test]
    async fn a_used_up_quota_skips_the_domain_and_keeps_its_due_pages() {
        let r = rig("refresh_every = \"1h\"\nmonthly_renders = 1");
        r.render("/a").await;
        r.make_due("/a").await;
        r.refresher.tick().await;
        r.settle().await;
        assert_eq!(r.calls(), 1, "no render over the quota");
        assert_eq!(r.refresher.refreshes(), 0);
        let due = r
            .store
            .claim_due("a.test", SystemTime::now(), 10)
            .await
            .unwrap();
        assert_eq!(due, vec![key("/a")], "kept due for next month");
    }

    #[tokio::test]
    async fn due_pages_of_a_domain_no_longer_configured_are_dropped() {
        let r = rig("refresh_every = \"1h\"");
        let gone = CacheKey::new("gone.test", "/x", &[], false).unwrap();
        let page = StoredPage {
            html: Bytes::from_static(b"<html>x</html>"),
            status: 200,
            headers: vec![],
            etag: "\"x\"".into(),
            rendered_at: SystemTime::now(),
            expires_at: SystemTime::now() + Duration::from_secs(3600),
            settings_hash: String::new(),
            content_hash: String::new(),
        };
        r.store
            .put(&gone, &page, Duration::from_secs(3600))
            .await
            .unwrap();
        r.store
            .schedule(&gone, SystemTime::now() - Duration::from_secs(1))
            .await
            .unwrap();
        r.refresher.tick().await;
        r.settle().await;
        assert_eq!(r.calls(), 0);
        assert_eq!(r.store.next_due("gone.test").await.unwrap(), None);
    }

    #[test]
    fn refresh_every_wins_over_poll_every() {
        let plans = Plan::builtins();
        assert_eq!(
            RefreshMode::of(&plans["agency_plus"]),
            RefreshMode::Poll(Duration::from_secs(60))
        );
        assert_eq!(
            RefreshMode::of(&plans["agency"]),
            RefreshMode::Rerender(Duration::from_secs(3600))
        );
        let mut both = plans["agency_plus"].clone();
        both.refresh_every = Some(Duration::from_secs(5));
        assert_eq!(
            RefreshMode::of(&both),
            RefreshMode::Rerender(Duration::from_secs(5))
        );
    }

    #[test]
    fn stored_names_that_are_no_host_are_skipped_and_warned_about_once() {
        let warned = Mutex::new(HashSet::new());
        let stored = || {
            vec![
                "a.test".to_string(),
                "<img src=x onerror=alert(1)>.example".to_string(),
                "b.test".to_string(),
            ]
        };
        assert_eq!(hosts_only(stored(), &warned), ["a.test", "b.test"]);
        assert_eq!(warned.lock().len(), 1);
        assert_eq!(hosts_only(stored(), &warned), ["a.test", "b.test"]);
        assert_eq!(warned.lock().len(), 1);
        let many: Vec<String> = (0..2 * NOT_HOSTS_REMEMBERED)
            .map(|i| format!("x y{i}"))
            .collect();
        assert!(hosts_only(many, &warned).is_empty());
        assert_eq!(warned.lock().len(), NOT_HOSTS_REMEMBERED);
    }
}
