//! The browser pool: `browsers` Chromium processes × `tabs_per_browser`
//! concurrent renders.
//!
//! Lifecycle of a browser: launching → serving → (recycle due) → a
//! replacement is launched while it keeps serving → retiring (no new renders,
//! in-flight renders drain) → closing (SIGTERM, SIGKILL after 5 s, reaped,
//! user-data-dir removed). One recycle at a time, so at most `browsers + 1`
//! browsers are alive. A browser whose DevTools connection ends or whose
//! process disappears is crashed: its renders fail with the retryable
//! `BrowserCrashed` at once, it is reaped and replaced; launches that fail
//! (or browsers that die right after launch) back off exponentially.
//!
//! Isolation: each site gets its own browser context in a browser, with tabs
//! reused across that site's renders; after every render the tab's page is
//! frozen and the context's cookies and the touched origins' storage are
//! cleared (see `page`).
//!
//! The pool's interface, the render path (a tab reserved, checked out,
//! rendered on, checked in) and the idle tabs are here; launching,
//! maintaining and closing browsers are in `lifecycle`.

mod lifecycle;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::browser::Browser;
use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::target::{
    CreateBrowserContextParams, DisposeBrowserContextParams,
};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify, RwLock};
use tokio::time::Instant;

use super::intercept::{Shared, CDP_CALL_TIMEOUT};
use super::origin::OriginClient;
use super::page::Tab;
use super::process;
use super::subresources::SubresourceCache;
use super::{PoolConfig, RenderError, RenderJob, RenderedPage};

/// Period of the pool's health check (crash detection within a second).
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(250);
/// Extra time past `render_timeout` a render may take to give up cleanly.
const RENDER_SLACK: Duration = Duration::from_millis(500);
/// Idle tabs (each with its own context) kept per browser; the least
/// recently used beyond this are disposed.
const MAX_IDLE_TABS_PER_BROWSER: usize = 8;
/// How long a failed call waits for the browser's death to be confirmed.
const CRASH_CONFIRM: Duration = Duration::from_millis(250);
/// Bound of shutdown: closing every browser.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// Prefix of each pool's directory of browser profiles in the temp dir; it
/// also marks the browsers of an instance that died (see
/// `process::reap_orphaned_browsers`).
const USER_DATA_PREFIX: &str = "prerender-browsers-";

/// Figures for metrics and health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Browser processes in the pool (serving or draining).
    pub browsers_alive: usize,
    /// Launches in progress.
    pub browsers_launching: usize,
    /// Renders holding a tab.
    pub tabs_busy: usize,
    /// `browsers × tabs_per_browser`.
    pub tab_capacity: usize,
    /// Renders finished (either way).
    pub renders_total: u64,
    /// Renders that returned an error.
    pub renders_failed: u64,
    /// Recycles because of `renders_per_browser`.
    pub recycles_renders: u64,
    /// Recycles because of `browser_max_age`.
    pub recycles_age: u64,
    /// Recycles because of `browser_max_rss`.
    pub recycles_rss: u64,
    /// Browsers that died unexpectedly.
    pub crashes: u64,
    /// Launches that failed (including browsers dead right after launch).
    pub launch_failures: u64,
    /// Subresources served from the in-process cache.
    pub subresource_cache_hits: u64,
    /// Bytes held by the subresource cache.
    pub subresource_cache_bytes: usize,
    /// Tabs reset and kept for the next render of their site.
    pub tabs_reused: u64,
    /// Tabs closed with their context after a render (a failed render, or
    /// one whose page could not be reset safely) instead of being reused.
    pub tabs_discarded: u64,
    /// Page requests refused (images/media/fonts, trackers, internal addresses).
    pub requests_blocked: u64,
    /// Of those, requests to internal addresses or non-http(s) schemes (SSRF guard).
    pub requests_blocked_internal: u64,
    /// Renders whose page was laid out taller than the viewport to load
    /// content scrolled into view…
    pub tall_layouts: u64,
    /// …of which the document was taller than `max_render_height`.
    pub tall_layouts_capped: u64,
    /// Renders answered as a redirect: the page's script moved it to
    /// another path of its site.
    pub client_redirects: u64,
}

/// An idle tab (with its own context) kept for the next render of its site.
struct IdleTab {
    site: String,
    tab: Tab,
    last_used: Instant,
}

/// One Chromium process.
struct BrowserSlot {
    id: u64,
    pid: u32,
    launched_at: Instant,
    dir: PathBuf,
    chrome_version: String,
    browser: RwLock<Browser>,
    dead: watch::Receiver<bool>,
    handler: Mutex<Option<tokio::task::JoinHandle<()>>>,
    idle: Mutex<Vec<IdleTab>>,
}

impl BrowserSlot {
    fn is_dead(&self) -> bool {
        *self.dead.borrow()
    }

    /// A protocol failure on a browser that is dying is a crash: the
    /// DevTools connection often fails a call a moment before the handler
    /// reports the connection lost.
    async fn explain(&self, error: RenderError) -> RenderError {
        if !matches!(error, RenderError::Protocol(_)) {
            return error;
        }
        let mut dead = self.dead.clone();
        let died = tokio::time::timeout(CRASH_CONFIRM, dead.wait_for(|d| *d))
            .await
            .is_ok();
        if died || !process::is_running(self.pid) {
            RenderError::BrowserCrashed
        } else {
            error
        }
    }
}

struct SlotEntry {
    slot: Arc<BrowserSlot>,
    in_flight: usize,
    renders: u32,
    retiring: bool,
    rss: u64,
    rss_checked: Option<Instant>,
    /// `renders` when the RSS was last measured.
    rss_checked_renders: u32,
}

#[derive(Default)]
struct PoolState {
    slots: Vec<SlotEntry>,
    launching: usize,
    /// A replacement is being launched for this browser.
    recycling: Option<u64>,
    /// Browsers being closed (still alive as processes).
    closing: usize,
    launch_failures_in_row: u32,
    next_launch_at: Option<Instant>,
}

#[derive(Default)]
struct Counters {
    renders_total: AtomicU64,
    renders_failed: AtomicU64,
    recycles_renders: AtomicU64,
    recycles_age: AtomicU64,
    recycles_rss: AtomicU64,
    crashes: AtomicU64,
    launch_failures: AtomicU64,
    tabs_reused: AtomicU64,
    tabs_discarded: AtomicU64,
}

struct PoolInner {
    cfg: PoolConfig,
    root: Mutex<Option<tempfile::TempDir>>,
    root_path: PathBuf,
    state: Mutex<PoolState>,
    /// Tabs freed, browsers added or removed, shutdown.
    changed: Notify,
    /// Wakes the maintenance task early.
    wake: Arc<Notify>,
    /// Fires when the last closing browser is reaped.
    closed: Notify,
    shared: Arc<Shared>,
    counters: Counters,
    shutting_down: AtomicBool,
    next_id: AtomicU64,
}

/// A pool of headless Chromium browsers rendering [`RenderJob`]s.
pub struct BrowserPool {
    inner: Arc<PoolInner>,
    maintenance: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl BrowserPool {
    /// Starts the browsers. Fails when the first one cannot be launched;
    /// later failures are retried in the background with backoff.
    pub async fn launch(cfg: PoolConfig) -> Result<Arc<Self>, RenderError> {
        if cfg.browsers == 0 || cfg.tabs_per_browser == 0 {
            return Err(RenderError::LaunchFailed(
                "browsers and tabs_per_browser must be at least 1".into(),
            ));
        }
        let reaped =
            super::process::reap_orphaned_browsers(&std::env::temp_dir(), USER_DATA_PREFIX);
        if reaped > 0 {
            tracing::warn!(
                processes = reaped,
                "killed browsers left behind by an instance that died"
            );
        }
        // Named after this process, so that the next instance can tell the
        // directory of one that died (see `reap_orphaned_browsers`).
        let root = tempfile::Builder::new()
            .prefix(&format!("{USER_DATA_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(|e| RenderError::LaunchFailed(format!("user data directory: {e}")))?;
        let root_path = root.path().to_path_buf();
        let inner = Arc::new(PoolInner {
            shared: Arc::new(Shared {
                origin: OriginClient::new(cfg.origin_connect_timeout, cfg.render_timeout),
                subresources: Mutex::new(SubresourceCache::new(cfg.subresource_cache_bytes)),
                blocked: AtomicU64::new(0),
                blocked_internal: AtomicU64::new(0),
                tall_layouts: AtomicU64::new(0),
                tall_layouts_capped: AtomicU64::new(0),
                client_redirects: AtomicU64::new(0),
            }),
            cfg,
            root: Mutex::new(Some(root)),
            root_path,
            state: Mutex::new(PoolState::default()),
            changed: Notify::new(),
            wake: Arc::new(Notify::new()),
            closed: Notify::new(),
            counters: Counters::default(),
            shutting_down: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        });
        let first = inner.launch_browser().await.map_err(|e| {
            inner
                .counters
                .launch_failures
                .fetch_add(1, Ordering::Relaxed);
            RenderError::LaunchFailed(e)
        })?;
        inner.add_slot(first);
        for _ in 1..inner.cfg.browsers {
            match inner.launch_browser().await {
                Ok(slot) => inner.add_slot(slot),
                Err(e) => inner.launch_failed(&e),
            }
        }
        let weak = Arc::downgrade(&inner);
        let wake = inner.wake.clone();
        let maintenance = tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(MAINTENANCE_INTERVAL, wake.notified()).await;
                let Some(inner) = weak.upgrade() else { break };
                if inner.shutting_down.load(Ordering::SeqCst) {
                    break;
                }
                inner.maintain();
            }
        });
        Ok(Arc::new(Self {
            inner,
            maintenance: Mutex::new(Some(maintenance)),
        }))
    }

    /// Renders one job on a free tab, waiting for one if all are busy (the
    /// wait counts against `render_timeout`). Never retries: the caller
    /// retries errors for which [`RenderError::is_retryable`] holds.
    pub async fn render(&self, job: RenderJob) -> Result<RenderedPage, RenderError> {
        let inner = &self.inner;
        validate_job(&job)?;
        let deadline = Instant::now() + inner.cfg.render_timeout;
        let result = match tokio::time::timeout_at(deadline + RENDER_SLACK, async {
            let lease = inner.acquire(deadline).await?;
            inner.render_on(lease, job, deadline).await
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(RenderError::Timeout),
        };
        let result = match result {
            Err(_) if inner.shutting_down.load(Ordering::SeqCst) => Err(RenderError::PoolShutdown),
            other => other,
        };
        inner.counters.renders_total.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &result {
            inner
                .counters
                .renders_failed
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "render failed");
        }
        result
    }

    /// Current figures.
    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        let st = inner.state.lock();
        let (hits, bytes) = {
            let cache = inner.shared.subresources.lock();
            (cache.hits(), cache.bytes())
        };
        let c = &inner.counters;
        PoolStats {
            browsers_alive: st.slots.len(),
            browsers_launching: st.launching,
            tabs_busy: st.slots.iter().map(|s| s.in_flight).sum(),
            tab_capacity: inner.cfg.browsers * inner.cfg.tabs_per_browser,
            renders_total: c.renders_total.load(Ordering::Relaxed),
            renders_failed: c.renders_failed.load(Ordering::Relaxed),
            recycles_renders: c.recycles_renders.load(Ordering::Relaxed),
            recycles_age: c.recycles_age.load(Ordering::Relaxed),
            recycles_rss: c.recycles_rss.load(Ordering::Relaxed),
            crashes: c.crashes.load(Ordering::Relaxed),
            launch_failures: c.launch_failures.load(Ordering::Relaxed),
            tabs_reused: c.tabs_reused.load(Ordering::Relaxed),
            tabs_discarded: c.tabs_discarded.load(Ordering::Relaxed),
            subresource_cache_hits: hits,
            subresource_cache_bytes: bytes,
            requests_blocked: inner.shared.blocked.load(Ordering::Relaxed),
            requests_blocked_internal: inner.shared.blocked_internal.load(Ordering::Relaxed),
            tall_layouts: inner.shared.tall_layouts.load(Ordering::Relaxed),
            tall_layouts_capped: inner.shared.tall_layouts_capped.load(Ordering::Relaxed),
            client_redirects: inner.shared.client_redirects.load(Ordering::Relaxed),
        }
    }

    /// Pids of the browser processes in the pool (serving or draining).
    pub fn browser_pids(&self) -> Vec<u32> {
        self.inner
            .state
            .lock()
            .slots
            .iter()
            .map(|s| s.slot.pid)
            .collect()
    }

    /// Directory holding the browsers' user-data-dirs; removed at shutdown.
    pub fn user_data_root(&self) -> &Path {
        &self.inner.root_path
    }

    /// Closes every browser (SIGTERM, SIGKILL after 5 s), reaps them and
    /// removes their user-data-dirs. Renders still running fail with
    /// `PoolShutdown`; later calls to `render` too.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutting_down.store(true, Ordering::SeqCst);
        if let Some(task) = self.maintenance.lock().take() {
            task.abort();
        }
        inner.changed.notify_waiters();
        let slots: Vec<Arc<BrowserSlot>> = {
            let mut st = inner.state.lock();
            let slots: Vec<_> = st.slots.drain(..).map(|e| e.slot).collect();
            st.closing += slots.len();
            slots
        };
        for slot in slots {
            inner.clone().spawn_close(slot);
        }
        let wait_closed = async {
            loop {
                let notified = inner.closed.notified();
                {
                    // Browsers still starting are closed as soon as they are up.
                    let st = inner.state.lock();
                    if st.closing == 0 && st.launching == 0 {
                        break;
                    }
                }
                let _ = tokio::time::timeout(MAINTENANCE_INTERVAL, notified).await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, wait_closed)
            .await
            .is_err()
        {
            tracing::warn!("browser pool shutdown timed out");
        }
        if let Some(root) = inner.root.lock().take() {
            if let Err(e) = root.close() {
                tracing::warn!(error = %e, "could not remove browser user data directories");
            }
        }
    }
}

fn validate_job(job: &RenderJob) -> Result<(), RenderError> {
    if !matches!(job.public_url.scheme(), "http" | "https") || job.public_url.host_str().is_none() {
        return Err(RenderError::InvalidJob(format!(
            "public URL must be http(s) with a host: {}",
            job.public_url
        )));
    }
    if !matches!(job.origin.scheme(), "http" | "https") || job.origin.host_str().is_none() {
        return Err(RenderError::InvalidJob(format!(
            "origin must be an http(s) URL with a host: {}",
            job.origin
        )));
    }
    Ok(())
}

/// Site key: public origin + origin server; one browser context each.
fn site_key(job: &RenderJob) -> String {
    format!(
        "{} {}",
        job.public_url.origin().ascii_serialization(),
        job.origin.origin().ascii_serialization()
    )
}

/// A tab reserved on a browser; frees it when dropped.
struct Lease {
    inner: Arc<PoolInner>,
    slot: Arc<BrowserSlot>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut st = self.inner.state.lock();
            if let Some(e) = st.slots.iter_mut().find(|e| e.slot.id == self.slot.id) {
                e.in_flight = e.in_flight.saturating_sub(1);
            }
        }
        self.inner.changed.notify_waiters();
        self.inner.wake.notify_one();
    }
}

impl PoolInner {
    /// Reserves a tab, preferring browsers not yet due for recycling, then
    /// the least busy.
    fn try_acquire(self: &Arc<Self>) -> Option<Lease> {
        let mut st = self.state.lock();
        let limit = self.cfg.renders_per_browser;
        let tabs = self.cfg.tabs_per_browser;
        let entry = st
            .slots
            .iter_mut()
            .filter(|e| !e.retiring && !e.slot.is_dead() && e.in_flight < tabs)
            .min_by_key(|e| (e.renders >= limit, e.in_flight))?;
        entry.in_flight += 1;
        entry.renders += 1;
        if entry.renders >= limit {
            self.wake.notify_one();
        }
        Some(Lease {
            inner: self.clone(),
            slot: entry.slot.clone(),
        })
    }

    async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Lease, RenderError> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shutting_down.load(Ordering::SeqCst) {
                return Err(RenderError::PoolShutdown);
            }
            if let Some(lease) = self.try_acquire() {
                return Ok(lease);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(RenderError::Timeout);
            }
        }
    }

    async fn render_on(
        self: &Arc<Self>,
        lease: Lease,
        job: RenderJob,
        deadline: Instant,
    ) -> Result<RenderedPage, RenderError> {
        let slot = lease.slot.clone();
        let site = site_key(&job);
        let mut dead = slot.dead.clone();
        let work = async {
            let mut tab = slot.checkout(&site, &self.shared).await?;
            let (result, finished) = tab
                .render(
                    job,
                    site.clone(),
                    deadline,
                    self.cfg.ready_timeout,
                    &slot.chrome_version,
                    self.cfg.user_agent.as_deref(),
                )
                .await;
            Ok::<_, RenderError>((tab, result, finished))
        };
        let outcome = tokio::select! {
            _ = dead.wait_for(|d| *d) => return Err(RenderError::BrowserCrashed),
            outcome = work => outcome,
        };
        let (tab, result, finished) = match outcome {
            Ok(v) => v,
            Err(e) => return Err(slot.explain(e).await),
        };
        let result = match result {
            Err(e) => Err(slot.explain(e).await),
            ok => ok,
        };
        // Reset or close the tab in the background; the lease keeps the tab
        // counted as busy until that is done.
        let keep = result.is_ok() && !tab.is_crashed();
        tokio::spawn(async move {
            let counters = &lease.inner.counters;
            let reusable = keep
                && match tab.reset(&finished).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!(url = %finished.job.public_url, error = %e, "tab not reused");
                        false
                    }
                };
            if reusable {
                counters.tabs_reused.fetch_add(1, Ordering::Relaxed);
                slot.checkin(site, tab).await;
            } else {
                counters.tabs_discarded.fetch_add(1, Ordering::Relaxed);
                // Whatever the page left in its context goes with it.
                slot.discard(tab).await;
            }
        });
        result
    }
}

impl BrowserSlot {
    /// An idle tab of the site, or a new tab in a new context.
    async fn checkout(&self, site: &str, shared: &Arc<Shared>) -> Result<Tab, RenderError> {
        let reused = {
            let mut idle = self.idle.lock();
            idle.iter()
                .rposition(|t| t.site == site)
                .map(|i| idle.remove(i).tab)
        };
        if let Some(tab) = reused {
            return Ok(tab);
        }
        let browser = self.browser.read().await;
        let context = match tokio::time::timeout(
            CDP_CALL_TIMEOUT,
            browser.create_browser_context(CreateBrowserContextParams::default()),
        )
        .await
        {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => {
                return Err(RenderError::Protocol(format!(
                    "Target.createBrowserContext: {e}"
                )))
            }
            Err(_) => {
                return Err(RenderError::Protocol(
                    "Target.createBrowserContext: timed out".into(),
                ))
            }
        };
        match Tab::open(&browser, context.clone(), shared.clone()).await {
            Ok(tab) => Ok(tab),
            Err(e) => {
                dispose_context(&browser, context).await;
                Err(e)
            }
        }
    }

    /// Keeps a clean tab for the site's next render, disposing the least
    /// recently used idle tab beyond the bound.
    async fn checkin(&self, site: String, tab: Tab) {
        let evicted = {
            let mut idle = self.idle.lock();
            idle.push(IdleTab {
                site,
                tab,
                last_used: Instant::now(),
            });
            if idle.len() > MAX_IDLE_TABS_PER_BROWSER {
                idle.iter()
                    .enumerate()
                    .min_by_key(|(_, t)| t.last_used)
                    .map(|(i, _)| i)
                    .map(|i| idle.remove(i).tab)
            } else {
                None
            }
        };
        if let Some(tab) = evicted {
            self.discard(tab).await;
        }
    }

    /// Closes a tab and disposes its context with everything stored in it.
    async fn discard(&self, tab: Tab) {
        let context = tab.context.clone();
        tab.close().await;
        if self.is_dead() {
            return;
        }
        if let Ok(browser) = tokio::time::timeout(CDP_CALL_TIMEOUT, self.browser.read()).await {
            dispose_context(&browser, context).await;
        }
    }
}

async fn dispose_context(browser: &Browser, context: BrowserContextId) {
    let _ = tokio::time::timeout(
        CDP_CALL_TIMEOUT,
        browser.execute(DisposeBrowserContextParams::new(context)),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_need_http_or_https_urls_with_hosts() {
        let job = |public: &str, origin: &str| {
            RenderJob::new(
                url::Url::parse(public).unwrap(),
                url::Url::parse(origin).unwrap(),
            )
        };
        assert!(validate_job(&job("https://www.example.com/p", "http://10.0.0.5:8080")).is_ok());
        assert!(validate_job(&job("file:///etc/passwd", "http://10.0.0.5:8080")).is_err());
        assert!(validate_job(&job("https://www.example.com/", "https://10.0.0.5")).is_ok());
        assert!(validate_job(&job("https://www.example.com/", "ftp://10.0.0.5")).is_err());
        assert_eq!(
            site_key(&job(
                "https://www.example.com/a?b",
                "http://10.0.0.5:8080/x"
            )),
            "https://www.example.com http://10.0.0.5:8080"
        );
    }
}
