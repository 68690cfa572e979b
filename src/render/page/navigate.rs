//! A render's way to the snapshot: the navigation, the document fetched
//! once from the origin, DOMContentLoaded, readiness (`prerenderReady`,
//! else network quiet, else the ready timeout) and the content a page
//! loads when scrolled into view.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use tokio::time::Instant;

use super::snapshot::client_redirect;
use super::{cdp, Tab, DESKTOP_VIEWPORT, MOBILE_VIEWPORT};
use crate::render::intercept::{DocumentOutcome, RenderCtx};
use crate::render::{RenderError, RenderJob, RenderedPage};

/// No request in flight for this long after DOMContentLoaded = ready (SPEC §3).
const NETWORK_QUIET: Duration = Duration::from_millis(500);
/// How often readiness is re-checked when nothing wakes the render earlier.
const READY_POLL: Duration = Duration::from_millis(50);
/// Time kept before `render_timeout` for taking the snapshot.
const SNAPSHOT_RESERVE: Duration = Duration::from_millis(750);
/// Times a page is laid out taller when the content loaded at one height
/// makes the document grow (an infinite list's next screens), up to
/// `max_render_height`.
const TALL_LAYOUT_ROUNDS: usize = 3;
/// How long after a layout change's frames a request they started may take
/// to be reported by the interception.
const REQUEST_REPORT_GRACE: Duration = Duration::from_millis(100);
/// Bound of waiting for the animation frames after a layout change (the
/// page's own timer ends it after 2 s; this covers a page that stalls).
const FRAMES_BOUND: Duration = Duration::from_secs(3);

/// 1 when ready, 0 when the page declared `prerenderReady = false` and has
/// not set it yet, -1 when it never declared it.
const PRERENDER_READY_JS: &str = "(() => { const v = window.prerenderReady; \
    return v === true ? 1 : (v === false ? 0 : -1); })()";

/// Whether the page watches for content scrolled into view (see
/// [`PAGE_HOOKS_JS`]), and then the document's height in CSS pixels (only
/// then: reading it lays the page out).
const LAYOUT_JS: &str = r#"(() => {
  const hooks = window[Symbol.for('prerender-proxy')];
  if (!hooks || !hooks.watchesViewport()) return { lazy: false, height: 0 };
  const d = document.documentElement, b = document.body;
  return {
    lazy: true,
    height: Math.ceil(Math.max(d ? d.scrollHeight : 0, b ? b.scrollHeight : 0)),
  };
})()"#;

/// After a layout change: tells scroll handlers to look again (a scroll
/// event, as scrolling would) in the next frame, and resolves after a
/// second frame and a task, when intersection observers have computed the
/// new layout's intersections and their callbacks have run. A timer bounds
/// it for a page whose frames stall (generous: on a saturated machine a
/// frame can take hundreds of milliseconds).
const FRAMES_JS: &str = r#"new Promise((done) => {
  const bound = setTimeout(done, 2000);
  requestAnimationFrame(() => {
    document.dispatchEvent(new Event('scroll', { bubbles: true }));
    requestAnimationFrame(() => setTimeout(() => {
      clearTimeout(bound);
      done();
    }, 0));
  });
})"#;

impl Tab {
    /// Renders `job`; `deadline` is the job's hard deadline.
    pub(crate) async fn render(
        &mut self,
        job: RenderJob,
        site: String,
        deadline: Instant,
        ready_timeout: Duration,
        chrome_version: &str,
        user_agent: Option<&str>,
    ) -> (Result<RenderedPage, RenderError>, Arc<RenderCtx>) {
        let started = Instant::now();
        let ctx = Arc::new(RenderCtx::new(job, site, deadline));
        if let Err(e) = self
            .emulate(ctx.job.mobile, chrome_version, user_agent)
            .await
        {
            return (Err(e), ctx);
        }
        *self.current.lock() = Some(ctx.clone());
        let result = tokio::time::timeout_at(deadline, self.run(&ctx, started, ready_timeout))
            .await
            .unwrap_or(Err(RenderError::Timeout));
        *self.current.lock() = None;
        (result, ctx)
    }
    async fn run(
        &mut self,
        ctx: &Arc<RenderCtx>,
        started: Instant,
        ready_timeout: Duration,
    ) -> Result<RenderedPage, RenderError> {
        let page = self.page.clone();
        let url = ctx.job.public_url.to_string();
        // A URL with a fragment (`#!/x`, an `_escaped_fragment_` render)
        // would only scroll a tab still showing the same page: leave that
        // page first, so the document loads anew.
        if ctx.job.public_url.fragment().is_some() {
            cdp("Page.navigate about:blank", self.page.goto("about:blank")).await?;
        }
        let (nav_tx, mut nav_rx) = tokio::sync::oneshot::channel();
        let settled = ctx.clone();
        let navigation = tokio::spawn(async move {
            let result = page.goto(url).await.map(|_| ()).map_err(|e| e.to_string());
            settled.navigation_settles();
            let _ = nav_tx.send(result);
        });
        let _abort_navigation = AbortOnDrop(navigation);
        let mut nav_error: Option<String> = None;

        // 1. The document, fetched once from the origin.
        let status = loop {
            self.check_crash(ctx)?;
            match ctx.document() {
                Some(DocumentOutcome::Page { status }) => break status,
                Some(DocumentOutcome::Redirect {
                    status,
                    location,
                    body,
                }) => {
                    return Ok(RenderedPage {
                        status,
                        headers: location
                            .map(|l| vec![("Location".to_string(), l)])
                            .unwrap_or_default(),
                        html: body,
                        elapsed: started.elapsed(),
                        snapshot_on_ready_timeout: false,
                    })
                }
                Some(DocumentOutcome::ServerError(status)) => {
                    return Err(RenderError::OriginStatus(status))
                }
                Some(DocumentOutcome::Unreachable(msg)) => {
                    return Err(RenderError::OriginUnreachable(msg))
                }
                Some(DocumentOutcome::TlsFailure(msg)) => return Err(RenderError::OriginTls(msg)),
                Some(DocumentOutcome::TimedOut) => return Err(RenderError::Timeout),
                None => {}
            }
            if let Some(e) = poll_navigation(&mut nav_rx, &mut nav_error) {
                return Err(RenderError::Navigation(e));
            }
            wait_change(ctx).await;
        };

        // 2. DOMContentLoaded. A page that tries to leave while it is
        // parsed stops its own loading: it never comes then.
        while !ctx.dom_content_loaded() && ctx.client_navigation().is_none() {
            self.check_crash(ctx)?;
            if let Some(e) = poll_navigation(&mut nav_rx, &mut nav_error) {
                return Err(RenderError::Navigation(e));
            }
            wait_change(ctx).await;
        }

        // 3. Ready: prerenderReady, else network quiet, else ready_timeout.
        let snapshot_by = (started + ready_timeout).min(ctx.deadline - SNAPSHOT_RESERVE);
        let mut on_ready_timeout = self.wait_ready(ctx, snapshot_by, true).await?;

        // 4. Content that loads when scrolled into view.
        if !self.redirects(ctx) && ctx.job.max_render_height > 0 {
            on_ready_timeout |= self.load_lazy_content(ctx, snapshot_by).await?;
        }

        // 5. Snapshot.
        self.snapshot(ctx, status, started, on_ready_timeout).await
    }

    /// The page tried to leave for another path of its site and such moves
    /// are answered as redirects: nothing it does afterwards matters. (A
    /// reload, or a move to another site, is snapshotted as usual.)
    fn redirects(&self, ctx: &RenderCtx) -> bool {
        ctx.job.client_redirect_status != 0
            && client_redirect(
                &ctx.job.public_url,
                ctx.client_navigation().as_deref(),
                None,
            )
            .is_some()
    }

    /// Waits until the page is ready (SPEC §3): `prerenderReady` when the
    /// page declared it, else no request in flight for [`NETWORK_QUIET`];
    /// at `snapshot_by` it is snapshotted anyway (returns true). With
    /// `declared_true_is_ready` false, a page whose `prerenderReady` is
    /// already true waits for the network too (content it loads later).
    async fn wait_ready(
        &self,
        ctx: &RenderCtx,
        snapshot_by: Instant,
        declared_true_is_ready: bool,
    ) -> Result<bool, RenderError> {
        loop {
            self.check_crash(ctx)?;
            if self.redirects(ctx) {
                return Ok(false);
            }
            let declared = self
                .evaluate(PRERENDER_READY_JS)
                .await
                .ok()
                .and_then(|v| v.as_i64());
            match declared {
                Some(1) if declared_true_is_ready => return Ok(false),
                Some(0) => {}
                _ => {
                    if ctx.network_idle(NETWORK_QUIET) {
                        return Ok(false);
                    }
                }
            }
            if Instant::now() >= snapshot_by && declared != Some(0) {
                tracing::warn!(
                    url = %ctx.job.public_url,
                    outstanding = ?ctx.outstanding(),
                    "network never settled; snapshot at ready timeout"
                );
                return Ok(true);
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Lays a page that watches for content scrolled into view out as tall
    /// as its document (up to `max_render_height`), so its intersection
    /// observers and scroll handlers load that content, then applies the
    /// readiness rules again if it started loading anything — again while
    /// the document keeps growing, a few times. A page that watches nothing
    /// (most) or fits in the viewport costs one evaluation. Returns whether
    /// the wait ended at `snapshot_by`.
    async fn load_lazy_content(
        &mut self,
        ctx: &RenderCtx,
        snapshot_by: Instant,
    ) -> Result<bool, RenderError> {
        let mobile = ctx.job.mobile;
        let (width, viewport_height, scale) = if mobile {
            MOBILE_VIEWPORT
        } else {
            DESKTOP_VIEWPORT
        };
        let max = i64::from(ctx.job.max_render_height);
        let mut laid_out = viewport_height;
        let mut on_ready_timeout = false;
        for _ in 0..TALL_LAYOUT_ROUNDS {
            self.check_crash(ctx)?;
            let layout = self.evaluate(LAYOUT_JS).await?;
            let watches = layout.get("lazy").and_then(|v| v.as_bool()) == Some(true);
            let height = layout.get("height").and_then(|v| v.as_i64()).unwrap_or(0);
            let target = height.min(max);
            if !watches || target <= laid_out {
                break;
            }
            let started_before = ctx.requests_started();
            // Intersections and scroll events are computed in frames.
            self.frames.want(&self.page).await?;
            // Only the layout grows: the view's visible size, which the
            // compositor draws, stays the screen's, so a tall layout does
            // not mean rastering 16,000 px of page.
            let mut tall = SetDeviceMetricsOverrideParams::new(width, target, scale, mobile);
            tall.dont_set_visible_size = Some(true);
            cdp(
                "Emulation.setDeviceMetricsOverride",
                self.page.execute(tall),
            )
            .await?;
            if !self.tall {
                self.shared.tall_layouts.fetch_add(1, Ordering::Relaxed);
            }
            if height > max && target > laid_out {
                // Counted once: the next round finds target == laid_out.
                self.shared
                    .tall_layouts_capped
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.tall = true;
            laid_out = target;
            let mut frames = EvaluateParams::new(FRAMES_JS);
            frames.await_promise = Some(true);
            let _ = tokio::time::timeout(FRAMES_BOUND, self.page.execute(frames)).await;
            // A request those frames started is reported by the browser's
            // interception, not with the evaluation's answer: it can arrive
            // a moment after it. Give it that moment before deciding that
            // the new layout loaded nothing.
            let grace_end = Instant::now() + REQUEST_REPORT_GRACE;
            let nothing_started =
                || ctx.requests_started() == started_before && ctx.network_idle(Duration::ZERO);
            while nothing_started() && Instant::now() < grace_end {
                let _ = tokio::time::timeout_at(grace_end, ctx.changed.notified()).await;
            }
            if nothing_started() {
                continue;
            }
            if Instant::now() >= snapshot_by {
                break;
            }
            on_ready_timeout = self.wait_ready(ctx, snapshot_by, false).await?;
            if on_ready_timeout {
                break;
            }
        }
        Ok(on_ready_timeout)
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn wait_change(ctx: &RenderCtx) {
    let _ = tokio::time::timeout(READY_POLL, ctx.changed.notified()).await;
}

/// A navigation that ended in an error before the page became usable.
fn poll_navigation(
    rx: &mut tokio::sync::oneshot::Receiver<Result<(), String>>,
    seen: &mut Option<String>,
) -> Option<String> {
    if seen.is_none() {
        if let Ok(Err(e)) = rx.try_recv() {
            *seen = Some(e);
        }
    }
    seen.clone()
}
