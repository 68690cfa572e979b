//! One render on a tab: navigate to the public URL, wait until the page is
//! ready, snapshot the DOM. Also opens tabs and resets them between renders
//! so nothing a page stored survives into the next render.
//!
//! A [`Tab`] is opened and set up here (interception, hooks, emulation);
//! its render runs in `navigate` (document, DOMContentLoaded, readiness,
//! content loaded by scrolling), ends in `snapshot` (the DOM serialised,
//! metas applied, client-side moves answered as redirects), and `reset`
//! clears what the page left before the tab's next render.

mod navigate;
mod reset;
mod snapshot;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::emulation::{
    SetDeviceMetricsOverrideParams, SetTouchEmulationEnabledParams, SetUserAgentOverrideParams,
};
use chromiumoxide::cdp::browser_protocol::fetch;
use chromiumoxide::cdp::browser_protocol::inspector;
use chromiumoxide::cdp::browser_protocol::network::{
    BlockPattern, SetBlockedUrLsParams, SetBypassServiceWorkerParams,
};
use chromiumoxide::cdp::browser_protocol::page::{
    AddScriptToEvaluateOnNewDocumentParams, SetWebLifecycleStateParams, SetWebLifecycleStateState,
};
use chromiumoxide::cdp::browser_protocol::target::CreateTargetParams;
use chromiumoxide::cdp::js_protocol::runtime::{AddBindingParams, EvaluateParams};
use chromiumoxide::{Browser, Page};

use super::frames::{self, Frames};
use super::intercept::{self, CurrentRender, RenderCtx, Shared, CDP_CALL_TIMEOUT};
use super::RenderError;

/// URL patterns (URLPattern syntax) of every WebSocket.
const WEBSOCKET_PATTERNS: [&str; 2] = ["ws://*:*/*", "wss://*:*/*"];

/// Desktop viewport (a common laptop size).
const DESKTOP_VIEWPORT: (i64, i64, f64) = (1366, 768, 1.0);
/// Mobile viewport: the Pixel/Nexus-class size Google's smartphone crawler uses.
const MOBILE_VIEWPORT: (i64, i64, f64) = (412, 915, 2.625);

/// The product token of every render's User-Agent: `Prerender`, which apps
/// written for prerender.io's renderer look for (to skip analytics, say),
/// and this renderer's name.
pub const RENDER_UA_TOKEN: &str = "Prerender (compatible; prerender-proxy)";

/// User-Agent of desktop renders: the browser's own Chrome version, without
/// "Headless", plus a product token so origins can tell the renderer apart.
fn desktop_user_agent(chrome_version: &str) -> String {
    format!(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/{chrome_version} Safari/537.36 {RENDER_UA_TOKEN}"
    )
}

/// User-Agent of mobile renders: shaped like Googlebot Smartphone's
/// (Android Nexus 5X, Mobile Safari) so sites serve their mobile markup, with
/// the renderer's product token instead of Googlebot's.
fn mobile_user_agent(chrome_version: &str) -> String {
    format!(
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 \
         (KHTML, like Gecko) Chrome/{chrome_version} Mobile Safari/537.36 \
         {RENDER_UA_TOKEN}"
    )
}

/// Added before any script of every document a tab loads
/// (`Page.addScriptToEvaluateOnNewDocument`): remembers closed shadow roots
/// (their hosts do not expose them) so the snapshot can write them; notes
/// whether the page watches for content scrolled into view (an
/// IntersectionObserver target, a scroll listener on the window or the
/// document), which decides whether it is laid out tall before the
/// snapshot; and asks for frames (see `frames`) the first time the page
/// uses something that needs them: animation frames, intersection or
/// resize observers, Web Animations, scroll, animation or transition
/// events, or its visibility. The wrappers keep the native methods' names
/// and arities; the binding is taken off the window.
const PAGE_HOOKS_JS: &str = r#"(() => {
  const key = Symbol.for('prerender-proxy');
  if (Object.prototype.hasOwnProperty.call(window, key)) return;
  const apply = Reflect.apply;
  const closedRoots = new WeakMap();
  let watchesViewport = false;
  const binding = window.__prerenderProxyNeedsFrames;
  delete window.__prerenderProxyNeedsFrames;
  let askedFrames = typeof binding !== 'function';
  const needFrames = () => {
    if (askedFrames) return;
    askedFrames = true;
    try { binding(''); } catch (e) { /* the tab keeps its state */ }
  };
  const wrap = (proto, name, make) => {
    const d = proto && Object.getOwnPropertyDescriptor(proto, name);
    if (d && typeof d.value === 'function') {
      Object.defineProperty(proto, name, Object.assign({}, d, { value: make(d.value) }));
    }
  };
  const wrapGetter = (proto, name) => {
    const d = proto && Object.getOwnPropertyDescriptor(proto, name);
    if (d && typeof d.get === 'function') {
      const native = d.get;
      Object.defineProperty(proto, name, Object.assign({}, d, { get: Object.getOwnPropertyDescriptor({
        get [name]() { needFrames(); return apply(native, this, []); } }, name).get }));
    }
  };
  const asks = (proto, name) => wrap(proto, name, (native) => ({
    [name]() { needFrames(); return apply(native, this, arguments); } })[name]);
  asks(window, 'requestAnimationFrame');
  asks(window.ResizeObserver && ResizeObserver.prototype, 'observe');
  asks(window.Element && Element.prototype, 'animate');
  wrapGetter(window.Document && Document.prototype, 'visibilityState');
  wrapGetter(window.Document && Document.prototype, 'hidden');
  const frameEvents = /^(scroll|scrollend|visibilitychange|animation|transition)/;
  wrap(window.Element && Element.prototype, 'attachShadow', (native) => ({
    attachShadow(init) {
      const root = apply(native, this, arguments);
      if (root && root.mode === 'closed') closedRoots.set(this, root);
      return root;
    } }).attachShadow);
  wrap(window.IntersectionObserver && IntersectionObserver.prototype, 'observe', (native) => ({
    observe(target) {
      watchesViewport = true;
      needFrames();
      return apply(native, this, arguments);
    } }).observe);
  wrap(window.EventTarget && EventTarget.prototype, 'addEventListener', (native) => ({
    addEventListener(type, listener) {
      if (type === 'scroll' && (this === window || this === document)) watchesViewport = true;
      if (typeof type === 'string' && frameEvents.test(type)) needFrames();
      return apply(native, this, arguments);
    } }).addEventListener);
  Object.defineProperty(window, key, { value: Object.freeze({
    closedShadowRoot: (host) => closedRoots.get(host) || null,
    watchesViewport: () => watchesViewport,
  }) });
})()"#;

/// A tab in its own browser context, reused across renders of one site.
pub(crate) struct Tab {
    pub page: Page,
    /// The tab's own browser context: storage is never shared with a
    /// concurrent render, even of the same site.
    pub context: BrowserContextId,
    current: CurrentRender,
    crashed: Arc<AtomicBool>,
    events: tokio::task::JoinHandle<()>,
    mobile: Option<bool>,
    /// The last render laid its page out taller than the viewport: the next
    /// one sets the viewport again.
    tall: bool,
    /// Whether the page gets frames; frozen between renders (thawed by the
    /// event task when the next document commits).
    frames: Arc<Frames>,
    /// The pool's shared state (its counters).
    shared: Arc<Shared>,
}

impl Drop for Tab {
    fn drop(&mut self) {
        self.events.abort();
    }
}

/// Runs one DevTools call under its own timeout.
async fn cdp<T, F>(what: &str, fut: F) -> Result<T, RenderError>
where
    F: std::future::Future<Output = Result<T, chromiumoxide::error::CdpError>>,
{
    match tokio::time::timeout(CDP_CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(RenderError::Protocol(format!("{what}: {e}"))),
        Err(_) => Err(RenderError::Protocol(format!("{what}: timed out"))),
    }
}

impl Tab {
    /// Opens a blank tab in `context` with interception enabled.
    pub(crate) async fn open(
        browser: &Browser,
        context: BrowserContextId,
        shared: Arc<Shared>,
    ) -> Result<Tab, RenderError> {
        let mut params = CreateTargetParams::new("about:blank");
        params.browser_context_id = Some(context.clone());
        let page = cdp("Target.createTarget", browser.new_page(params)).await?;
        let setup = async {
            cdp(
                "Fetch.enable",
                page.execute(fetch::EnableParams {
                    patterns: Some(vec![fetch::RequestPattern {
                        url_pattern: Some("*".into()),
                        resource_type: None,
                        request_stage: Some(fetch::RequestStage::Request),
                    }]),
                    handle_auth_requests: None,
                }),
            )
            .await?;
            cdp(
                "Inspector.enable",
                page.execute(inspector::EnableParams::default()),
            )
            .await?;
            cdp(
                "Network.setBypassServiceWorker",
                page.execute(SetBypassServiceWorkerParams::new(true)),
            )
            .await?;
            // WebSockets bypass Fetch interception, so the SSRF guard cannot
            // vet them: a snapshot needs no live socket, block them all.
            let block_sockets = SetBlockedUrLsParams {
                url_patterns: Some(
                    WEBSOCKET_PATTERNS
                        .iter()
                        .map(|p| BlockPattern::new(*p, true))
                        .collect(),
                ),
            };
            cdp("Network.setBlockedURLs", page.execute(block_sockets)).await?;
            // Frames on demand (see `frames`): the page calls the binding,
            // the event task turns focus emulation on.
            cdp(
                "Runtime.addBinding",
                page.execute(AddBindingParams::new(frames::BINDING)),
            )
            .await?;
            cdp(
                "Page.addScriptToEvaluateOnNewDocument",
                page.execute(AddScriptToEvaluateOnNewDocumentParams::new(PAGE_HOOKS_JS)),
            )
            .await?;
            // A new tab is visible; frozen once, it is hidden like a reused
            // one, so every render starts without frames until it asks.
            for state in [
                SetWebLifecycleStateState::Frozen,
                SetWebLifecycleStateState::Active,
            ] {
                cdp(
                    "Page.setWebLifecycleState",
                    page.execute(SetWebLifecycleStateParams::new(state)),
                )
                .await?;
            }
            Ok::<_, RenderError>(())
        };
        if let Err(e) = setup.await {
            close_page(page).await;
            return Err(e);
        }
        let current: CurrentRender = Default::default();
        let crashed = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(Frames::default());
        let events = match cdp(
            "event subscriptions",
            intercept::start_tab_events(
                page.clone(),
                current.clone(),
                shared.clone(),
                crashed.clone(),
                frames.clone(),
            ),
        )
        .await
        {
            Ok(events) => events,
            Err(e) => {
                close_page(page).await;
                return Err(e);
            }
        };
        Ok(Tab {
            page,
            context,
            current,
            crashed,
            events,
            mobile: None,
            tall: false,
            frames,
            shared,
        })
    }

    pub(crate) fn is_crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Closes the tab (best effort, bounded).
    pub(crate) async fn close(self) {
        close_page(self.page.clone()).await;
    }

    async fn emulate(
        &mut self,
        mobile: bool,
        chrome_version: &str,
        user_agent: Option<&str>,
    ) -> Result<(), RenderError> {
        if self.mobile == Some(mobile) && !self.tall {
            return Ok(());
        }
        let ((w, h, scale), ua) = if mobile {
            (MOBILE_VIEWPORT, mobile_user_agent(chrome_version))
        } else {
            (DESKTOP_VIEWPORT, desktop_user_agent(chrome_version))
        };
        let ua = user_agent.map_or(ua, str::to_string);
        cdp(
            "Emulation.setDeviceMetricsOverride",
            self.page
                .execute(SetDeviceMetricsOverrideParams::new(w, h, scale, mobile)),
        )
        .await?;
        self.tall = false;
        if self.mobile == Some(mobile) {
            return Ok(());
        }
        cdp(
            "Emulation.setTouchEmulationEnabled",
            self.page
                .execute(SetTouchEmulationEnabledParams::new(mobile)),
        )
        .await?;
        cdp(
            "Emulation.setUserAgentOverride",
            self.page.execute(SetUserAgentOverrideParams::new(ua)),
        )
        .await?;
        self.mobile = Some(mobile);
        Ok(())
    }

    fn check_crash(&self, ctx: &RenderCtx) -> Result<(), RenderError> {
        if ctx.crashed() || self.is_crashed() {
            Err(RenderError::BrowserCrashed)
        } else {
            Ok(())
        }
    }

    async fn evaluate(&self, expression: &str) -> Result<serde_json::Value, RenderError> {
        let mut params = EvaluateParams::new(expression);
        params.return_by_value = Some(true);
        params.await_promise = Some(false);
        let resp = cdp("Runtime.evaluate", self.page.execute(params)).await?;
        if let Some(ex) = &resp.result.exception_details {
            return Err(RenderError::Protocol(format!(
                "page script failed: {}",
                ex.text
            )));
        }
        Ok(resp
            .result
            .result
            .value
            .clone()
            .unwrap_or(serde_json::Value::Null))
    }
}

async fn close_page(page: Page) {
    let _ = tokio::time::timeout(CDP_CALL_TIMEOUT, page.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_hooks_take_the_frames_binding_by_its_name() {
        // Under another name the page could never ask for frames.
        let taken = format!("const binding = window.{};", frames::BINDING);
        assert!(PAGE_HOOKS_JS.contains(&taken));
        assert!(PAGE_HOOKS_JS.contains(&format!("delete window.{};", frames::BINDING)));
    }
}
