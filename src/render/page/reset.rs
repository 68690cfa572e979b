//! Between renders a tab keeps the page it rendered, frozen
//! (`Page.setWebLifecycleState`): none of its scripts run again, its loads
//! are stopped, late answers to its requests are refused, and then its
//! storage and cookies are cleared; the next render's navigation replaces
//! it. Leaving it for `about:blank` first costs a second navigation per
//! render, which on two cores was about 40 % of a render's CPU, and still
//! let the page's timers and late responses write after the clearing (the
//! page runs until `about:blank` commits). Workers are not frozen with their
//! page, so a page that started any is still left for `about:blank`, and
//! the clearing waits until its workers are gone.

use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::network::ClearBrowserCookiesParams;
use chromiumoxide::cdp::browser_protocol::page::{
    SetWebLifecycleStateParams, SetWebLifecycleStateState, StopLoadingParams,
};
use chromiumoxide::cdp::browser_protocol::storage::ClearDataForOriginParams;
use chromiumoxide::cdp::browser_protocol::target::{FilterEntry, GetTargetsParams, TargetFilter};
use tokio::time::Instant;

use super::{cdp, Tab};
use crate::render::intercept::RenderCtx;
use crate::render::RenderError;

/// How long a reset waits for answers to a finished render's requests that
/// were on their way (each is refused as soon as the render ends).
const ANSWER_DRAIN_BOUND: Duration = Duration::from_secs(2);
/// How long a reset waits for a left page's workers to end; a tab whose
/// workers outlive this is discarded with its context instead.
const WORKERS_GONE_BOUND: Duration = Duration::from_secs(2);
/// How often a reset looks again whether the workers are gone.
const WORKERS_GONE_POLL: Duration = Duration::from_millis(20);
/// DevTools target types that run a page's scripts outside the page.
const WORKER_TARGET_TYPES: [&str; 3] = ["worker", "shared_worker", "service_worker"];

/// Empties the page's sessionStorage before the tab leaves it.
const CLEAR_SESSION_STORAGE_JS: &str = "(() => { try { sessionStorage.clear(); } catch (e) {} })()";

impl Tab {
    /// Stops the page `finished` rendered and clears everything it stored
    /// (see the module documentation): freeze its scripts, stop its loads,
    /// refuse and wait out answers still on their way, clear its
    /// sessionStorage (reachable only from the page), leave it for
    /// `about:blank` if it started workers, then clear the context's cookies
    /// and the storage (local storage, IndexedDB, cache storage, service
    /// workers) of every origin it touched. An error means the tab must not
    /// be reused.
    pub(crate) async fn reset(&self, finished: &RenderCtx) -> Result<(), RenderError> {
        *self.current.lock() = None;
        finished.finish();
        if !finished.navigation_settled() {
            // chromiumoxide runs a tab's navigations one at a time, each until
            // its page's load event. A navigation refused before it committed
            // (an origin redirect is answered without being followed) or a
            // page snapshotted before its load event would, once frozen, hold
            // the tab's next navigation until chromiumoxide's own 30 s
            // timeout: the tab goes, with its context.
            return Err(RenderError::Protocol(
                "the render's navigation had not completed".into(),
            ));
        }
        self.frames.freeze(&self.page).await?;
        cdp(
            "Page.setWebLifecycleState",
            self.page.execute(SetWebLifecycleStateParams::new(
                SetWebLifecycleStateState::Frozen,
            )),
        )
        .await?;
        cdp(
            "Page.stopLoading",
            self.page.execute(StopLoadingParams::default()),
        )
        .await?;
        if !finished.answers_drained(ANSWER_DRAIN_BOUND).await {
            return Err(RenderError::Protocol(
                "answers to the page's requests did not end".into(),
            ));
        }
        let _ = self.evaluate(CLEAR_SESSION_STORAGE_JS).await;
        if self.has_workers().await? {
            tracing::debug!(url = %finished.job.public_url, "page started workers; leaving it for about:blank");
            cdp("Page.navigate about:blank", self.page.goto("about:blank")).await?;
            let until = Instant::now() + WORKERS_GONE_BOUND;
            while self.has_workers().await? {
                if Instant::now() >= until {
                    return Err(RenderError::Protocol(
                        "the page's workers outlived it".into(),
                    ));
                }
                tokio::time::sleep(WORKERS_GONE_POLL).await;
            }
        }
        for origin in finished.origins() {
            cdp(
                "Storage.clearDataForOrigin",
                self.page
                    .execute(ClearDataForOriginParams::new(origin, "all")),
            )
            .await?;
        }
        cdp(
            "Network.clearBrowserCookies",
            self.page.execute(ClearBrowserCookiesParams::default()),
        )
        .await?;
        if self.is_crashed() {
            return Err(RenderError::BrowserCrashed);
        }
        Ok(())
    }

    /// Whether a worker of this tab's context (dedicated, shared or service)
    /// is running. A worker whose context is not reported counts as ours.
    async fn has_workers(&self) -> Result<bool, RenderError> {
        let filter = TargetFilter::new(
            WORKER_TARGET_TYPES
                .iter()
                .map(|t| FilterEntry::builder().r#type(*t).build())
                .collect::<Vec<_>>(),
        );
        let targets = cdp(
            "Target.getTargets",
            self.page
                .execute(GetTargetsParams::builder().filter(filter).build()),
        )
        .await?;
        Ok(targets.result.target_infos.iter().any(|t| {
            WORKER_TARGET_TYPES.contains(&t.r#type.as_str())
                && t.browser_context_id
                    .as_ref()
                    .is_none_or(|c| *c == self.context)
        }))
    }
}
