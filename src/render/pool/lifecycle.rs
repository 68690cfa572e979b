//! A browser's life in the pool: launched with the switches below,
//! watched by the maintenance task (crashes, due recycles, RSS, drained
//! browsers, missing ones), replaced, and closed (SIGTERM, SIGKILL after
//! the grace period, helpers reaped, user-data-dir removed); failed
//! launches back off exponentially.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{watch, RwLock};
use tokio::time::Instant;

use super::{BrowserSlot, PoolInner, PoolState, SlotEntry};
use crate::render::intercept::CDP_CALL_TIMEOUT;
use crate::render::process;

/// How long Chromium may take to print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);
/// chromiumoxide's own bound on a command; ours (CDP_CALL_TIMEOUT) is tighter.
const CDP_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace period between SIGTERM and SIGKILL when closing a browser (SPEC §4).
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a closed browser's helper processes get to exit before SIGKILL.
const CHILDREN_GRACE: Duration = Duration::from_secs(2);
/// Period of the process-tree RSS measurement of a browser that rendered
/// since its last one (a measurement reads every process's /proc entry:
/// ≈ 1 % of a core when taken every 2 s whatever the load)…
const RSS_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// …and of a browser that did not: an idle browser's memory barely moves.
const RSS_IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// A browser that dies sooner than this after launch, before serving any
/// render, counts as a failed launch (and delays the next one).
const EARLY_DEATH: Duration = Duration::from_secs(10);
/// First and largest delay before relaunching after failed launches.
const LAUNCH_BACKOFF_BASE: Duration = Duration::from_millis(500);
const LAUNCH_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Extra Chromium switches, without the leading `--` (chromiumoxide adds it).
const EXTRA_ARGS: &[&str] = &[
    // A render is the same whether its tab is alone or one of many (SPEC
    // §3): no tab's timers, frames or renderer priority are cut because
    // it counts as in the background or hidden behind another window.
    "disable-background-timer-throttling",
    "disable-renderer-backgrounding",
    "disable-backgrounding-occluded-windows",
    "disable-gpu",
    "disable-component-update",
    "disable-domain-reliability",
    "disable-print-preview",
    "disable-site-isolation-trials",
    "no-default-browser-check",
    "no-pings",
    // Without it every browser opens the new-tab page at start, in a
    // renderer of its own that no render uses (≈ 110 MB PSS per browser,
    // measured on Chromium 156); renders open their own tabs.
    "no-startup-window",
];
/// Merged into chromiumoxide's own `--disable-features`: keeping frames of
/// other sites in-process means their requests pass through the page's
/// interception (and saves processes). The omnibox popup's WebUI pages are
/// loaded by every headless browser at start in a renderer of their own
/// (≈ 0.8 s of CPU and ≈ 150 MB per launch, measured on Chromium 156): a
/// browser without a window never shows them. Pages never come back from
/// the back/forward cache here, so it only holds replaced pages in memory.
const DISABLED_FEATURES: &str = "IsolateOrigins,site-per-process,OptimizationHints,MediaRouter,\
WebUIOmniboxPopup,WebUIOmniboxAimPopup,WebUIOmniboxFullPopup,BackForwardCache";

#[derive(Debug, Clone, Copy)]
enum RecycleReason {
    Renders,
    Age,
    Rss,
}

impl PoolInner {
    pub(super) fn add_slot(&self, slot: Arc<BrowserSlot>) {
        push_slot(&mut self.state.lock(), slot);
        self.changed.notify_waiters();
    }

    pub(super) fn launch_failed(&self, error: &str) {
        self.counters
            .launch_failures
            .fetch_add(1, Ordering::Relaxed);
        let mut st = self.state.lock();
        st.launch_failures_in_row += 1;
        let delay = backoff(st.launch_failures_in_row);
        st.next_launch_at = Some(Instant::now() + delay);
        tracing::warn!(error, retry_in = ?delay, "browser launch failed");
    }

    pub(super) async fn launch_browser(&self) -> Result<Arc<BrowserSlot>, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let dir = self.root_path.join(format!("browser-{id}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("user data directory: {e}"))?;
        let config = BrowserConfig::builder()
            .chrome_executable(&self.cfg.chrome)
            .no_sandbox()
            .new_headless_mode()
            .user_data_dir(&dir)
            .launch_timeout(LAUNCH_TIMEOUT)
            .request_timeout(CDP_REQUEST_TIMEOUT)
            .viewport(None)
            .args(EXTRA_ARGS.iter().copied())
            .arg(("disable-features", DISABLED_FEATURES))
            .build()
            .inspect_err(|_| {
                let _ = std::fs::remove_dir_all(&dir);
            })?;
        let (mut browser, mut handler) = match Browser::launch(config).await {
            Ok(launched) => launched,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e.to_string());
            }
        };
        let pid = browser
            .get_mut_child()
            .and_then(|c| c.inner.id())
            .unwrap_or_default();
        let (dead_tx, dead) = watch::channel(false);
        let wake = self.wake.clone();
        let handler_task = tokio::spawn(async move {
            // Ends on the first error: a dead connection must fail pending
            // calls at once instead of being polled forever.
            while let Some(event) = handler.next().await {
                if let Err(e) = event {
                    tracing::debug!(error = %e, "devtools connection ended");
                    break;
                }
            }
            let _ = dead_tx.send(true);
            wake.notify_one();
        });
        let version = match tokio::time::timeout(CDP_CALL_TIMEOUT, browser.version()).await {
            Ok(Ok(v)) => v.product,
            other => {
                let error = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer to Browser.getVersion".into(),
                };
                handler_task.abort();
                let _ = browser.kill().await;
                let _ = std::fs::remove_dir_all(&dir);
                return Err(error);
            }
        };
        let chrome_version = version
            .rsplit('/')
            .next()
            .unwrap_or("120.0.0.0")
            .to_string();
        tracing::info!(pid, id, %version, "browser launched");
        Ok(Arc::new(BrowserSlot {
            id,
            pid,
            launched_at: Instant::now(),
            dir,
            chrome_version,
            browser: RwLock::new(browser),
            dead,
            handler: Mutex::new(Some(handler_task)),
            idle: Mutex::new(Vec::new()),
        }))
    }

    /// Health check: crashes, due recycles, drained browsers, missing browsers.
    pub(super) fn maintain(self: &Arc<Self>) {
        let now = Instant::now();
        let mut to_close = Vec::new();
        let mut to_launch = 0;
        let mut replace: Option<(u64, RecycleReason)> = None;
        {
            let mut st = self.state.lock();
            // Crashed browsers.
            let mut i = 0;
            while i < st.slots.len() {
                let e = &st.slots[i];
                if e.slot.is_dead() || !process::is_running(e.slot.pid) {
                    let e = st.slots.remove(i);
                    if !e.retiring {
                        self.counters.crashes.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(pid = e.slot.pid, "browser crashed");
                        if e.renders == 0 && now.duration_since(e.slot.launched_at) < EARLY_DEATH {
                            self.counters
                                .launch_failures
                                .fetch_add(1, Ordering::Relaxed);
                            st.launch_failures_in_row += 1;
                            st.next_launch_at = Some(now + backoff(st.launch_failures_in_row));
                        }
                    }
                    if st.recycling == Some(e.slot.id) {
                        st.recycling = None;
                    }
                    st.closing += 1;
                    to_close.push(e.slot);
                    continue;
                }
                i += 1;
            }
            // Drained retiring browsers.
            let mut i = 0;
            while i < st.slots.len() {
                if st.slots[i].retiring && st.slots[i].in_flight == 0 {
                    let e = st.slots.remove(i);
                    st.closing += 1;
                    to_close.push(e.slot);
                    continue;
                }
                i += 1;
            }
            // Memory.
            for e in st.slots.iter_mut() {
                let interval = if e.renders != e.rss_checked_renders {
                    RSS_CHECK_INTERVAL
                } else {
                    RSS_IDLE_CHECK_INTERVAL
                };
                if e.rss_checked
                    .is_none_or(|t| now.duration_since(t) >= interval)
                {
                    e.rss_checked_renders = e.renders;
                    e.rss = process::tree_rss_bytes(e.slot.pid);
                    e.rss_checked = Some(now);
                }
            }
            // One recycle at a time: at most browsers + 1 alive.
            let recycle_busy = st.recycling.is_some()
                || st.closing > 0
                || st.launching > 0
                || st.slots.iter().any(|e| e.retiring);
            if !recycle_busy && st.next_launch_at.is_none_or(|t| now >= t) {
                let cfg = &self.cfg;
                replace = st.slots.iter().find_map(|e| {
                    let reason = if e.renders >= cfg.renders_per_browser {
                        RecycleReason::Renders
                    } else if now.duration_since(e.slot.launched_at) >= cfg.browser_max_age {
                        RecycleReason::Age
                    } else if e.rss > cfg.browser_max_rss_bytes {
                        RecycleReason::Rss
                    } else {
                        return None;
                    };
                    Some((e.slot.id, reason))
                });
                if let Some((id, _)) = replace {
                    st.recycling = Some(id);
                    st.launching += 1;
                }
            }
            // Missing browsers (crashes, failed launches).
            let serving = st.slots.iter().filter(|e| !e.retiring).count();
            let pending = st.launching - usize::from(st.recycling.is_some());
            let deficit = self.cfg.browsers.saturating_sub(serving + pending);
            if deficit > 0 && st.next_launch_at.is_none_or(|t| now >= t) {
                to_launch = deficit;
                st.launching += deficit;
            }
        }
        if !to_close.is_empty() {
            self.changed.notify_waiters();
        }
        for slot in to_close {
            self.clone().spawn_close(slot);
        }
        if let Some((old, reason)) = replace {
            let counter = match reason {
                RecycleReason::Renders => &self.counters.recycles_renders,
                RecycleReason::Age => &self.counters.recycles_age,
                RecycleReason::Rss => &self.counters.recycles_rss,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            tracing::info!(?reason, "recycling browser");
            let inner = self.clone();
            tokio::spawn(async move {
                let launched = inner.launch_browser().await;
                let mut st = inner.state.lock();
                st.launching -= 1;
                st.recycling = None;
                match launched {
                    Ok(slot) if inner.shutting_down.load(Ordering::SeqCst) => {
                        // The pool shut down while the replacement started.
                        st.closing += 1;
                        drop(st);
                        inner.clone().spawn_close(slot);
                    }
                    Ok(slot) => {
                        // One critical section: the pool never looks one browser short.
                        st.launch_failures_in_row = 0;
                        if let Some(e) = st.slots.iter_mut().find(|e| e.slot.id == old) {
                            e.retiring = true;
                        }
                        push_slot(&mut st, slot);
                        drop(st);
                        inner.changed.notify_waiters();
                    }
                    Err(e) => {
                        drop(st);
                        inner.launch_failed(&e);
                    }
                }
                inner.wake.notify_one();
            });
        }
        for _ in 0..to_launch {
            let inner = self.clone();
            tokio::spawn(async move {
                let launched = inner.launch_browser().await;
                let mut st = inner.state.lock();
                st.launching -= 1;
                match launched {
                    Ok(slot) if !inner.shutting_down.load(Ordering::SeqCst) => {
                        st.launch_failures_in_row = 0;
                        push_slot(&mut st, slot);
                        drop(st);
                        inner.changed.notify_waiters();
                    }
                    Ok(slot) => {
                        st.closing += 1;
                        drop(st);
                        inner.clone().spawn_close(slot);
                    }
                    Err(e) => {
                        drop(st);
                        inner.launch_failed(&e);
                    }
                }
            });
        }
    }

    /// Closes a browser: SIGTERM, SIGKILL after the grace period, reap it
    /// and its helpers, remove its user-data-dir. The caller has counted it
    /// in `closing`.
    pub(super) fn spawn_close(self: Arc<Self>, slot: Arc<BrowserSlot>) {
        tokio::spawn(async move {
            close_browser(&slot).await;
            let remaining = {
                let mut st = self.state.lock();
                st.closing -= 1;
                st.closing
            };
            if remaining == 0 {
                self.closed.notify_waiters();
            }
            self.wake.notify_one();
        });
    }
}

async fn close_browser(slot: &BrowserSlot) {
    let helpers = process::process_tree(slot.pid);
    // Tabs hold nothing the browser needs; dropping them stops their tasks.
    slot.idle.lock().clear();
    process::signal(slot.pid, libc::SIGTERM);
    match tokio::time::timeout(CLOSE_GRACE * 2, slot.browser.write()).await {
        Ok(mut browser) => {
            if tokio::time::timeout(CLOSE_GRACE, browser.wait())
                .await
                .is_err()
            {
                tracing::warn!(pid = slot.pid, "browser ignored SIGTERM; killing it");
                let _ = browser.kill().await;
            }
        }
        Err(_) => {
            // Someone still holds the browser; kill it, the runtime reaps it
            // once the handle is dropped.
            process::signal(slot.pid, libc::SIGKILL);
        }
    }
    if let Some(task) = slot.handler.lock().take() {
        task.abort();
    }
    let helpers: Vec<u32> = helpers.into_iter().filter(|&p| p != slot.pid).collect();
    let until = Instant::now() + CHILDREN_GRACE;
    while helpers.iter().any(|&p| process::is_running(p)) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for &pid in &helpers {
        if process::is_running(pid) {
            process::signal(pid, libc::SIGKILL);
        }
    }
    let dir = slot.dir.clone();
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    tracing::info!(pid = slot.pid, id = slot.id, "browser closed");
}

fn push_slot(st: &mut PoolState, slot: Arc<BrowserSlot>) {
    st.slots.push(SlotEntry {
        slot,
        in_flight: 0,
        renders: 0,
        retiring: false,
        rss: 0,
        rss_checked: None,
        rss_checked_renders: 0,
    });
}

fn backoff(failures_in_row: u32) -> Duration {
    let exp = failures_in_row.saturating_sub(1).min(16);
    LAUNCH_BACKOFF_BASE
        .saturating_mul(1u32 << exp)
        .min(LAUNCH_BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(10), LAUNCH_BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), LAUNCH_BACKOFF_MAX);
    }
}
