//! Prerendering a page into the cache: the job every miss, stale hit,
//! refresh and warm-up runs through the render queue.
//!
//! One job = take the page's render lock (so one instance of many renders
//! it; the others wait for the stored result), check the domain's monthly
//! quota, render with up to two retries of retryable failures, and store
//! the page atomically with its TTL and next refresh. Nothing failed, timed
//! out or outside 2xx/3xx/404/410 is stored.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::cache::{
    is_error_status, quota_month, store_call, CacheKey, CacheStore, StoreError, StoredPage,
    WaitOutcome, WAIT_POLL_INTERVAL,
};
use crate::config::{Config, Site};
use crate::metrics::{Metrics, RenderOutcome as RenderMetric};
use crate::pipeline::queue::{Priority, QueueFull, QueueStats, RenderQueue, Waiter};
use crate::pipeline::shared_queue::{JobLane, JobOutcome, JobQueue, SharedJob};
use crate::render::{BrowserPool, RenderError, RenderJob, RenderedPage};
use crate::state::stats::DomainStats;
use crate::state::Health;

/// Failed renders are retried this many times when the error is retryable.
const RENDER_RETRIES: usize = 2;
/// Times a job competes again for a lock whose holder gave up without a page.
const LOCK_ATTEMPTS: usize = 3;
/// A render lock is a lease this long, renewed every `LOCK_RENEW_EVERY`
/// while the render runs: the lock of an instance that died (even by
/// `kill -9`) is free again within one lease, not after a whole render
/// timeout with its retries.
pub const LOCK_LEASE: Duration = Duration::from_secs(6);
const LOCK_RENEW_EVERY: Duration = Duration::from_secs(2);

/// A proxy (`--role proxy`) waits this long past the render timeout for
/// a renderer to take its job and finish it: enough for a job whose
/// renderer died to be taken over and rendered again.
pub const SHARED_JOB_WAIT_SLACK: Duration = Duration::from_secs(10);

/// `X-Prerender-Error` reasons a renderer may report for a shared job.
const REMOTE_REASONS: &[&str] = &[
    "timeout",
    "navigation",
    "origin-error",
    "origin-tls",
    "browser-crash",
    "renderer",
    "shutdown",
    "launch-failed",
    "invalid-url",
    "too-large",
    "queue-full",
    "quota",
    "store",
    "not-cached",
    "renderer-lost",
    "unknown-site",
];

/// What the crawler path needs from a renderer (the browser pool; a fake in unit tests).
pub trait PageRenderer: Send + Sync {
    fn render(&self, job: RenderJob) -> BoxFuture<'_, Result<RenderedPage, RenderError>>;
}

impl PageRenderer for BrowserPool {
    fn render(&self, job: RenderJob) -> BoxFuture<'_, Result<RenderedPage, RenderError>> {
        Box::pin(BrowserPool::render(self, job))
    }
}

/// A finished render (or another instance's stored one).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub page: StoredPage,
    /// Whether the page is in the store (false: uncacheable status, TTL 0 or store outage).
    pub stored: bool,
    /// The store failed during the job: served uncached.
    pub store_error: bool,
    /// Render time when this job rendered it.
    pub render_time: Option<Duration>,
}

/// Why a job produced no page; `reason` is the `X-Prerender-Error` value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct RenderFailure {
    pub reason: &'static str,
    pub detail: String,
}

impl RenderFailure {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        RenderFailure {
            reason,
            detail: detail.into(),
        }
    }
}

/// What a render job hands everyone waiting on it: the stored (or uncached)
/// page, or why there is none.
pub type JobResult = Result<Arc<Rendered>, RenderFailure>;

/// Work to run once a render's page is stored, given that page (dropped
/// unrun otherwise).
pub type OnStored = Box<dyn FnOnce(&StoredPage) + Send>;

/// Told as each render starts, before its document is fetched (the
/// refresher's content poller takes its baseline of the origin document
/// here, so a change during the render is never mistaken for the
/// rendered content).
pub trait RenderObserver: Send + Sync {
    /// A render of `key` is about to start; the returned work runs if,
    /// and only if, its page is stored.
    fn render_starting<'a>(
        &'a self,
        key: &'a CacheKey,
        site: &'a Site,
    ) -> BoxFuture<'a, Option<OnStored>>;
}

/// Statuses whose renders are cached (SPEC §2).
pub fn is_cacheable(status: u16) -> bool {
    (200..400).contains(&status) || status == 404 || status == 410
}

/// Where this instance's renders happen.
enum Executor {
    /// In this process (`--role all` and `renderer`).
    Local(Arc<dyn PageRenderer>),
    /// By the renderers, through the shared job queue (`--role proxy`).
    Shared(Arc<dyn JobQueue>),
}

pub struct Prerenderer {
    config: Arc<Config>,
    store: Arc<dyn CacheStore>,
    executor: Executor,
    queue: RenderQueue<JobResult>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    stats: Arc<DomainStats>,
    /// Owner id of this instance's render locks.
    owner: String,
    /// Told about every render (set once, by the refresher).
    observer: OnceLock<Arc<dyn RenderObserver>>,
}

impl Prerenderer {
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn CacheStore>,
        renderer: Arc<dyn PageRenderer>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        stats: Arc<DomainStats>,
    ) -> Arc<Self> {
        let workers = config.browsers * config.tabs_per_browser;
        Self::build(
            config,
            store,
            Executor::Local(renderer),
            workers,
            health,
            metrics,
            stats,
        )
    }

    /// A prerenderer that hands its renders to the renderers through the
    /// shared job queue and waits for their outcome (`--role proxy`).
    /// Every pending job may be waited on at once: the shared queue is the
    /// bound.
    pub fn dispatching(
        config: Arc<Config>,
        store: Arc<dyn CacheStore>,
        jobs: Arc<dyn JobQueue>,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        stats: Arc<DomainStats>,
    ) -> Arc<Self> {
        let waiters = config.queue_capacity;
        Self::build(
            config,
            store,
            Executor::Shared(jobs),
            waiters,
            health,
            metrics,
            stats,
        )
    }

    fn build(
        config: Arc<Config>,
        store: Arc<dyn CacheStore>,
        executor: Executor,
        workers: usize,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        stats: Arc<DomainStats>,
    ) -> Arc<Self> {
        let owner = format!(
            "{}-{}-{:016x}",
            hostname(),
            std::process::id(),
            rand::random::<u64>()
        );
        Arc::new(Prerenderer {
            queue: RenderQueue::new(config.queue_capacity, workers),
            config,
            store,
            executor,
            health,
            metrics,
            stats,
            owner,
            observer: OnceLock::new(),
        })
    }

    /// Installs the observer told about every render; only the first call
    /// takes effect (`false` for later ones).
    pub fn set_observer(&self, observer: Arc<dyn RenderObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    pub fn store(&self) -> &Arc<dyn CacheStore> {
        &self.store
    }

    /// This instance's id: owner of its render locks, and its consumer
    /// name in the shared job queue.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn queue_stats(&self) -> QueueStats {
        self.queue.stats()
    }

    /// The public URL a key is rendered as. A key that keeps
    /// `_escaped_fragment_=<state>` is rendered as the page's `#!<state>`
    /// (the AJAX crawling scheme), the parameter taken out of the query.
    pub fn public_url(site: &Site, key: &CacheKey) -> Result<url::Url, RenderFailure> {
        let (path, query) = match key.path().split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (key.path(), None),
        };
        let mut state = None;
        let mut kept = Vec::new();
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some((crate::cache::key::ESCAPED_FRAGMENT, v)) => state = Some(v),
                _ => kept.push(pair),
            }
        }
        let mut url = format!("{}://{}{}", site.scheme, key.domain(), path);
        if !kept.is_empty() {
            url.push('?');
            url.push_str(&kept.join("&"));
        }
        let mut url =
            url::Url::parse(&url).map_err(|e| RenderFailure::new("invalid-url", e.to_string()))?;
        if let Some(state) = state {
            let state = percent_encoding::percent_decode_str(state).decode_utf8_lossy();
            url.set_fragment(Some(&format!("!{state}")));
        }
        Ok(url)
    }

    /// Renders `key` (or joins the render already under way) and waits.
    pub async fn render(
        self: &Arc<Self>,
        key: &CacheKey,
        site: &Arc<Site>,
        priority: Priority,
    ) -> JobResult {
        let waiter = match self.submit(key, site, priority) {
            Ok(w) => w,
            Err(full) => {
                self.metrics.observe_render(RenderMetric::QueueFull, None);
                return Err(RenderFailure::new("queue-full", full.to_string()));
            }
        };
        waiter
            .wait()
            .await
            .unwrap_or_else(|| Err(RenderFailure::new("shutdown", "render queue closed")))
    }

    /// Queues a render of `key` without waiting (warm-up, refresh, stale).
    pub fn enqueue(
        self: &Arc<Self>,
        key: &CacheKey,
        site: &Arc<Site>,
        priority: Priority,
    ) -> Result<(), QueueFull> {
        self.submit(key, site, priority).map(|_| ())
    }

    /// Queues a render of `key` (or joins the one under way) and returns
    /// its outcome's receiver without waiting: the refresher follows its
    /// refreshes this way to re-schedule the ones that fail.
    pub fn enqueue_watched(
        self: &Arc<Self>,
        key: &CacheKey,
        site: &Arc<Site>,
        priority: Priority,
    ) -> Result<Waiter<JobResult>, QueueFull> {
        self.submit(key, site, priority)
    }

    fn submit(
        self: &Arc<Self>,
        key: &CacheKey,
        site: &Arc<Site>,
        priority: Priority,
    ) -> Result<Waiter<JobResult>, QueueFull> {
        let name = key.to_string();
        if let Some(w) = self.queue.join(&name) {
            return Ok(w);
        }
        let job: BoxFuture<'static, JobResult> = match &self.executor {
            Executor::Local(_) => Box::pin(self.clone().job(key.clone(), site.clone())),
            Executor::Shared(jobs) => {
                Box::pin(self.clone().dispatch(jobs.clone(), key.clone(), priority))
            }
        };
        self.queue
            .submit(&name, priority, job)
            .map(|s| s.into_waiter())
    }

    /// Queues the render in the shared job queue and waits for a
    /// renderer's outcome (`--role proxy`).
    async fn dispatch(
        self: Arc<Self>,
        jobs: Arc<dyn JobQueue>,
        key: CacheKey,
        priority: Priority,
    ) -> JobResult {
        let lane = match priority {
            Priority::Live => JobLane::Live,
            Priority::Background => JobLane::Background,
        };
        let job = SharedJob {
            key: key.clone(),
            lane,
            queued_at: SystemTime::now(),
        };
        // Subscribed before the push, so an outcome announced right after
        // it is not missed.
        let mut done = jobs.subscribe_done();
        let id = match store_call(jobs.push_job(&job, self.config.queue_capacity)).await {
            Ok(Some(id)) => id,
            Ok(None) => {
                self.metrics.observe_render(RenderMetric::QueueFull, None);
                return Err(RenderFailure::new(
                    "queue-full",
                    format!(
                        "shared {} queue full ({} pending)",
                        lane.name(),
                        self.config.queue_capacity
                    ),
                ));
            }
            Err(e) => {
                self.store_failed("push_job", &e);
                return Err(RenderFailure::new("store", e.to_string()));
            }
        };
        let deadline =
            tokio::time::Instant::now() + self.config.render_timeout + SHARED_JOB_WAIT_SLACK;
        let wanted = key.to_string();
        loop {
            match store_call(jobs.job_outcome(&key, &id)).await {
                Ok(Some(JobOutcome::Stored)) => {
                    return match store_call(self.store.get(&key)).await {
                        Ok(Some(page)) => Ok(Arc::new(Rendered {
                            page,
                            stored: true,
                            store_error: false,
                            render_time: None,
                        })),
                        Ok(None) => Err(RenderFailure::new(
                            "not-cached",
                            "the rendered page was purged before it could be read",
                        )),
                        Err(e) => {
                            self.store_failed("get", &e);
                            Err(RenderFailure::new("store", e.to_string()))
                        }
                    }
                }
                Ok(Some(JobOutcome::Failed(reason))) => {
                    let known = REMOTE_REASONS
                        .iter()
                        .find(|r| **r == reason)
                        .copied()
                        .unwrap_or("renderer");
                    return Err(RenderFailure::new(
                        known,
                        format!("the renderer reported {reason}"),
                    ));
                }
                Ok(None) => {}
                // Keep waiting: Redis may answer again before the deadline.
                Err(e) => self.store_failed("job_outcome", &e),
            }
            let poll = tokio::time::sleep(WAIT_POLL_INTERVAL);
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(RenderFailure::new(
                            "timeout",
                            "no renderer finished the job in time",
                        ))
                    }
                    _ = &mut poll => break,
                    notice = done.recv() => match notice {
                        Ok(k) if k == wanted => break,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        // Notices are gone for good: polling alone from now on.
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            (&mut poll).await;
                            break;
                        }
                    },
                }
            }
        }
    }

    fn store_failed(&self, op: &str, e: &StoreError) {
        tracing::warn!(operation = op, error = %e, "store call failed");
        self.metrics.observe_store_error();
        self.health.set_degraded("store", true);
    }

    async fn job(self: Arc<Self>, key: CacheKey, site: Arc<Site>) -> JobResult {
        let public_url = Self::public_url(&site, &key)?;
        let ttl = self.config.ttl_for(&site);
        let mut use_store = true;
        let mut locked = false;
        for _ in 0..LOCK_ATTEMPTS {
            match store_call(self.store.try_lock(&key, &self.owner, LOCK_LEASE)).await {
                Ok(true) => {
                    locked = true;
                    break;
                }
                Ok(false) => {
                    let deadline = tokio::time::Instant::now()
                        + self.config.render_timeout
                        + Duration::from_secs(1);
                    match self.store.wait_for_page(&key, deadline).await {
                        Ok(WaitOutcome::Ready(page))
                            if page.settings_hash == site.settings_hash =>
                        {
                            return Ok(Arc::new(Rendered {
                                page,
                                stored: true,
                                store_error: false,
                                render_time: None,
                            }));
                        }
                        Ok(WaitOutcome::Ready(_)) | Ok(WaitOutcome::LockReleased) => continue,
                        Ok(WaitOutcome::TimedOut) => {
                            return Err(RenderFailure::new(
                                "timeout",
                                "another instance's render did not finish",
                            ))
                        }
                        Err(e) => {
                            self.store_failed("wait_for_page", &e);
                            use_store = false;
                            break;
                        }
                    }
                }
                Err(e) => {
                    self.store_failed("try_lock", &e);
                    use_store = false;
                    break;
                }
            }
        }
        let lease = locked.then(|| self.renew_lock_lease(&key));
        let result = self
            .render_locked(&key, &site, public_url, ttl, use_store)
            .await;
        if let Some(lease) = lease {
            lease.abort();
        }
        if locked {
            if let Err(e) = store_call(self.store.unlock(&key, &self.owner)).await {
                self.store_failed("unlock", &e);
            }
        }
        result
    }

    /// Keeps this instance's render lock of `key` alive until aborted.
    fn renew_lock_lease(self: &Arc<Self>, key: &CacheKey) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval_at(
                tokio::time::Instant::now() + LOCK_RENEW_EVERY,
                LOCK_RENEW_EVERY,
            );
            loop {
                every.tick().await;
                match store_call(this.store.extend_lock(&key, &this.owner, LOCK_LEASE)).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(key = %key, "render lock lost; another instance may render this page too");
                        return;
                    }
                    Err(e) => this.store_failed("extend_lock", &e),
                }
            }
        })
    }

    async fn render_locked(
        &self,
        key: &CacheKey,
        site: &Site,
        public_url: url::Url,
        ttl: Duration,
        mut use_store: bool,
    ) -> JobResult {
        let domain = key.domain();
        let month = quota_month(SystemTime::now());
        if let (true, Some(quota)) = (use_store, site.plan.monthly_renders) {
            match store_call(self.store.renders_in_month(domain, &month)).await {
                Ok(used) if used >= quota => {
                    return Err(RenderFailure::new(
                        "quota",
                        format!("{used} of {quota} renders used this month"),
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    self.store_failed("renders_in_month", &e);
                    use_store = false;
                }
            }
        }
        let on_stored = match self.observer.get() {
            Some(observer) => observer.render_starting(key, site).await,
            None => None,
        };
        let job = RenderJob {
            public_url,
            origin: site.origin.clone(),
            origin_host: site.origin_host.clone(),
            strip_scripts: site.strip_scripts,
            mobile: key.is_mobile(),
            shadow_dom: site.snapshot.shadow_dom,
            keep_noscript: site.snapshot.keep_noscript,
            max_render_height: site.snapshot.max_render_height,
            client_redirect_status: site.snapshot.client_redirect_status,
        };
        let renderer = match &self.executor {
            Executor::Local(renderer) => renderer,
            Executor::Shared(_) => {
                return Err(RenderFailure::new(
                    "renderer",
                    "this instance does not render",
                ))
            }
        };
        let mut attempt = 0;
        let rendered = loop {
            match renderer.render(job.clone()).await {
                Ok(r) => break r,
                Err(e) if e.is_retryable() && attempt < RENDER_RETRIES => {
                    attempt += 1;
                    tracing::info!(key = %key, error = %e, attempt, "render failed, retrying");
                }
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "render failed");
                    self.metrics
                        .observe_render(RenderMetric::from_reason(e.reason()), None);
                    return Err(RenderFailure::new(e.reason(), e.to_string()));
                }
            }
        };
        self.metrics
            .observe_render(RenderMetric::Ok, Some(rendered.elapsed));
        self.stats.record_render(domain, rendered.elapsed);
        if use_store {
            if let Err(e) = store_call(self.store.incr_renders(domain, &month)).await {
                self.store_failed("incr_renders", &e);
            }
        }
        let now = SystemTime::now();
        // 404 and 410 are kept only for the plan's error_ttl, with no stale window.
        let fresh_for = site.plan.ttl_for_status(rendered.status, ttl);
        let html = Bytes::from(rendered.html);
        let content_hash = hex::encode(Sha256::digest(&html));
        let page = StoredPage {
            etag: format!("\"{}\"", &content_hash[..20]),
            html,
            status: rendered.status,
            headers: rendered.headers,
            rendered_at: now,
            expires_at: now + fresh_for,
            settings_hash: site.settings_hash.clone(),
            content_hash,
        };
        let mut stored = false;
        let mut store_error = !use_store;
        if use_store && is_cacheable(page.status) && !fresh_for.is_zero() {
            match store_call(
                self.store
                    .put(key, &page, site.plan.stored_ttl(page.status, ttl)),
            )
            .await
            {
                Ok(()) => {
                    stored = true;
                    self.stats.record_stored(domain, page.html.len() as u64);
                    self.health.set_degraded("store", false);
                    self.after_store(key, site, &page).await;
                    if let Some(on_stored) = on_stored {
                        on_stored(&page);
                    }
                }
                Err(e) => {
                    self.store_failed("put", &e);
                    store_error = true;
                }
            }
        }
        Ok(Arc::new(Rendered {
            page,
            stored,
            store_error,
            render_time: Some(rendered.elapsed),
        }))
    }

    /// Schedules the next refresh and keeps the domain within its plan.
    /// An error page is not scheduled: it lives for `error_ttl`, and a
    /// flood of bad links must not become a flood of refreshes.
    async fn after_store(&self, key: &CacheKey, site: &Site, page: &StoredPage) {
        if let Some(every) = site.plan.refresh_interval() {
            if !is_error_status(page.status) {
                let due = page.rendered_at + every;
                if let Err(e) = store_call(self.store.schedule(key, due)).await {
                    self.store_failed("schedule", &e);
                }
            }
        }
        // No count limit: the store's bytes bound the domain.
        let Some(max_entries) = site.plan.max_entries else {
            return;
        };
        match store_call(self.store.evict_over(key.domain(), max_entries)).await {
            Ok(evicted) if !evicted.is_empty() => {
                tracing::info!(
                    domain = key.domain(),
                    evicted = evicted.len(),
                    "evicted least recently used pages"
                )
            }
            Ok(_) => {}
            Err(e) => self.store_failed("evict_over", &e),
        }
    }

    /// Refuses new jobs; running ones finish.
    pub fn close(&self) {
        self.queue.close();
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{MemoryStore, PageStore};
    use crate::cli::ServeArgs;
    use crate::config::file::FileConfig;
    use parking_lot::Mutex;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers from a script of results, counting calls.
    struct ScriptedRenderer {
        script: Mutex<VecDeque<Result<RenderedPage, RenderError>>>,
        calls: AtomicUsize,
    }

    impl PageRenderer for ScriptedRenderer {
        fn render(&self, _job: RenderJob) -> BoxFuture<'_, Result<RenderedPage, RenderError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let next = self
                .script
                .lock()
                .pop_front()
                .unwrap_or(Err(RenderError::Timeout));
            Box::pin(async move { next })
        }
    }

    #[test]
    fn an_escaped_fragment_is_rendered_as_the_hashbang_state() {
        let site = Site::single(
            "d.test".into(),
            url::Url::parse("http://127.0.0.1:1/").unwrap(),
            crate::config::Plan::builtins()["self-hosted"].clone(),
        );
        let url = |target: &str, params: &[String]| {
            let key = CacheKey::new("d.test", target, params, false).unwrap();
            Prerenderer::public_url(&site, &key).unwrap().to_string()
        };
        assert_eq!(
            url("/app?_escaped_fragment_=/x/y%20z", &[]),
            "https://d.test/app#!/x/y%20z"
        );
        assert_eq!(url("/app?_escaped_fragment_=", &[]), "https://d.test/app");
        assert_eq!(
            url("/p?page=2&_escaped_fragment_=/a", &["page".into()]),
            "https://d.test/p?page=2#!/a"
        );
        assert_eq!(
            url("/p?page=2", &["page".into()]),
            "https://d.test/p?page=2"
        );
    }

    fn page(status: u16) -> Result<RenderedPage, RenderError> {
        Ok(RenderedPage {
            status,
            headers: vec![],
            html: format!("<html>status {status}</html>"),
            elapsed: Duration::from_millis(5),
            snapshot_on_ready_timeout: false,
        })
    }

    fn setup(
        toml: &str,
        script: Vec<Result<RenderedPage, RenderError>>,
    ) -> (
        Arc<Prerenderer>,
        Arc<ScriptedRenderer>,
        Arc<MemoryStore>,
        Arc<Site>,
    ) {
        let args = ServeArgs {
            origin: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        };
        let config = Arc::new(Config::from_parts(&args, FileConfig::parse(toml).unwrap()).unwrap());
        let site = config.sites.lookup("a.test").unwrap().clone();
        let renderer = Arc::new(ScriptedRenderer {
            script: Mutex::new(script.into()),
            calls: AtomicUsize::new(0),
        });
        let store = MemoryStore::new(1 << 20);
        let p = Prerenderer::new(
            config,
            store.clone(),
            renderer.clone(),
            Arc::new(Health::new(false)),
            Metrics::new(),
            Arc::new(DomainStats::default()),
        );
        (p, renderer, store, site)
    }

    fn key(path: &str) -> CacheKey {
        CacheKey::new("a.test", path, &[], false).unwrap()
    }

    #[tokio::test]
    async fn retryable_failures_are_retried_twice_then_stored() {
        let script = vec![
            Err(RenderError::BrowserCrashed),
            Err(RenderError::BrowserCrashed),
            page(200),
        ];
        let (p, r, store, site) = setup("", script);
        let out = p.render(&key("/a"), &site, Priority::Live).await.unwrap();
        assert!(out.stored);
        assert_eq!(r.calls.load(Ordering::SeqCst), 3);
        assert!(store.get(&key("/a")).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn timeouts_are_not_retried_and_nothing_is_stored() {
        let (p, r, store, site) = setup("", vec![Err(RenderError::Timeout), page(200)]);
        let err = p
            .render(&key("/a"), &site, Priority::Live)
            .await
            .unwrap_err();
        assert_eq!(err.reason, "timeout");
        assert_eq!(r.calls.load(Ordering::SeqCst), 1);
        assert!(store.get(&key("/a")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn only_cacheable_statuses_are_stored() {
        for (status, cached) in [
            (200, true),
            (301, true),
            (404, true),
            (410, true),
            (403, false),
            (500, false),
            (503, false),
        ] {
            let (p, _, store, site) = setup("", vec![page(status)]);
            let out = p.render(&key("/s"), &site, Priority::Live).await.unwrap();
            assert_eq!(out.stored, cached, "status {status}");
            assert_eq!(
                store.get(&key("/s")).await.unwrap().is_some(),
                cached,
                "status {status}"
            );
        }
    }

    #[tokio::test]
    async fn a_used_up_quota_refuses_renders() {
        let toml = "plan = \"tiny\"\n[plans.tiny]\nmonthly_renders = 2\n";
        let (p, r, _, site) = setup(toml, vec![page(200), page(200), page(200)]);
        assert!(p.render(&key("/1"), &site, Priority::Live).await.is_ok());
        assert!(p.render(&key("/2"), &site, Priority::Live).await.is_ok());
        let err = p
            .render(&key("/3"), &site, Priority::Live)
            .await
            .unwrap_err();
        assert_eq!(err.reason, "quota");
        assert_eq!(r.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn zero_ttl_stores_nothing() {
        let (p, _, store, site) = setup("cache_ttl = 0\n", vec![page(200)]);
        let out = p.render(&key("/a"), &site, Priority::Live).await.unwrap();
        assert!(!out.stored);
        assert!(store.get(&key("/a")).await.unwrap().is_none());
    }
}
