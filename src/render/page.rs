//! One render on a tab: navigate to the public URL, wait until the page is
//! ready, snapshot the DOM. Also opens tabs and resets them between renders
//! so nothing a page stored survives into the next render.
//!
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::emulation::{
    SetDeviceMetricsOverrideParams, SetTouchEmulationEnabledParams, SetUserAgentOverrideParams,
};
use chromiumoxide::cdp::browser_protocol::fetch;
use chromiumoxide::cdp::browser_protocol::inspector;
use chromiumoxide::cdp::browser_protocol::network::{
    BlockPattern, ClearBrowserCookiesParams, SetBlockedUrLsParams, SetBypassServiceWorkerParams,
};
use chromiumoxide::cdp::browser_protocol::page::{
    AddScriptToEvaluateOnNewDocumentParams, SetWebLifecycleStateParams, SetWebLifecycleStateState,
    StopLoadingParams,
};
use chromiumoxide::cdp::browser_protocol::storage::ClearDataForOriginParams;
use chromiumoxide::cdp::browser_protocol::target::{
    CreateTargetParams, FilterEntry, GetTargetsParams, TargetFilter,
};
use chromiumoxide::cdp::js_protocol::runtime::{AddBindingParams, EvaluateParams};
use chromiumoxide::{Browser, Page};
use tokio::time::Instant;

use super::frames::{self, Frames};
use super::intercept::{self, CurrentRender, DocumentOutcome, RenderCtx, Shared, CDP_CALL_TIMEOUT};
use super::{RenderError, RenderJob, RenderedPage, ShadowDom};

/// No request in flight for this long after DOMContentLoaded = ready (SPEC §3).
pub(crate) const NETWORK_QUIET: Duration = Duration::from_millis(500);
/// How often readiness is re-checked when nothing wakes the render earlier.
const READY_POLL: Duration = Duration::from_millis(50);
/// Time kept before `render_timeout` for taking the snapshot.
const SNAPSHOT_RESERVE: Duration = Duration::from_millis(750);
/// URL patterns (URLPattern syntax) of every WebSocket.
const WEBSOCKET_PATTERNS: [&str; 2] = ["ws://*:*/*", "wss://*:*/*"];
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
/// Largest serialised page accepted.
pub(crate) const MAX_HTML_BYTES: usize = 16 * 1024 * 1024;
/// Most `<meta name="prerender-header">` headers taken from one page.
const MAX_META_HEADERS: usize = 16;
/// Times a page is laid out taller when the content loaded at one height
/// makes the document grow (an infinite list's next screens), up to
/// `max_render_height`.
const TALL_LAYOUT_ROUNDS: usize = 3;
/// Bound of waiting for the animation frames after a layout change (the
/// page's own timer ends it after 2 s; this covers a page that stalls).
const FRAMES_BOUND: Duration = Duration::from_secs(3);

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

/// 1 when ready, 0 when the page declared `prerenderReady = false` and has
/// not set it yet, -1 when it never declared it.
const PRERENDER_READY_JS: &str = "(() => { const v = window.prerenderReady; \
    return v === true ? 1 : (v === false ? 0 : -1); })()";

/// Empties the page's sessionStorage before the tab leaves it.
const CLEAR_SESSION_STORAGE_JS: &str = "(() => { try { sessionStorage.clear(); } catch (e) {} })()";

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

/// Reads the status/header metas and serialises the document with its
/// doctype, after, in the document and in every shadow root: writing styles
/// that live only in the CSSOM (rules added with `insertRule`, adopted
/// constructed sheets) as `<style>` text; removing scripts (except JSON-LD)
/// and, with them, `<noscript>` when asked; declaring UTF-8. Shadow roots —
/// open ones and the closed ones [`PAGE_HOOKS_JS`] remembered — are written
/// as declarative shadow DOM (`getHTML`), or, flattened, the composed tree
/// goes into the light DOM with slots replaced by what they show (styles of
/// shadow trees are left out there: in the light DOM they would apply to
/// the whole page). Everything runs in one task: no page script or
/// observer runs between the changes and the serialisation.
const SNAPSHOT_JS: &str = r#"((opts) => {
  const metas = (name) => Array.from(document.querySelectorAll('meta[name="' + name + '"]'))
    .map((m) => m.getAttribute('content') || '');
  const status = metas('prerender-status-code');
  const headers = metas('prerender-header');
  const href = location.href;
  const hooks = window[Symbol.for('prerender-proxy')];
  const shadowRootOf = (el) => el.shadowRoot || (hooks ? hooks.closedShadowRoot(el) : null);
  const roots = [];
  const collect = (scope) => {
    for (const el of scope.querySelectorAll('*')) {
      const root = shadowRootOf(el);
      if (root) { roots.push(root); collect(root); }
    }
  };
  collect(document);
  const scopes = [document].concat(roots);
  const rulesOf = (sheet) => {
    try { return Array.from(sheet.cssRules, (r) => r.cssText).join('\n'); } catch (e) { return null; }
  };
  // A rule's text may hold "</style" (in a string): it must not end the element.
  const styleText = (css) => css.replace(/<\/(style)/gi, '<\\/$1');
  for (const scope of scopes) {
    for (const style of scope.querySelectorAll('style')) {
      const live = style.sheet ? rulesOf(style.sheet) : null;
      if (live === null) continue;
      let parsed = null;
      try {
        const fresh = new CSSStyleSheet();
        fresh.replaceSync(style.textContent);
        parsed = rulesOf(fresh);
      } catch (e) {}
      if (live !== parsed) style.textContent = styleText(live);
    }
    const adopted = (scope.adoptedStyleSheets || []).map(rulesOf).filter((t) => t);
    if (adopted.length) {
      const style = document.createElement('style');
      style.textContent = styleText(adopted.join('\n'));
      if (scope === document) (document.head || document.documentElement).appendChild(style);
      else scope.appendChild(style);
    }
    if (opts.strip) {
      for (const s of scope.querySelectorAll('script')) {
        const type = (s.getAttribute('type') || '').trim().toLowerCase();
        if (type !== 'application/ld+json') s.remove();
      }
      if (!opts.keepNoscript) for (const n of scope.querySelectorAll('noscript')) n.remove();
    }
  }
  let declared = false;
  for (const m of document.querySelectorAll('meta[charset]')) {
    m.setAttribute('charset', 'utf-8');
    declared = true;
  }
  for (const m of document.querySelectorAll('meta[http-equiv]')) {
    if (m.getAttribute('http-equiv').trim().toLowerCase() === 'content-type') {
      m.setAttribute('content', 'text/html; charset=utf-8');
      declared = true;
    }
  }
  if (!declared && document.head) {
    const m = document.createElement('meta');
    m.setAttribute('charset', 'utf-8');
    document.head.prepend(m);
  }
  const flatten = (root) => {
    const inert = document.implementation.createHTMLDocument('');
    const copy = (node, parent) => {
      if (node.nodeType !== Node.ELEMENT_NODE) {
        parent.appendChild(inert.importNode(node, false));
        return;
      }
      const name = node.localName;
      const inShadow = node.getRootNode() !== document;
      if (name === 'slot' && inShadow) {
        const assigned = node.assignedNodes();
        for (const c of (assigned.length ? assigned : Array.from(node.childNodes))) copy(c, parent);
        return;
      }
      if (inShadow && (name === 'style' || (name === 'link' && /\bstylesheet\b/i.test(node.rel)))) return;
      if (name === 'template') {
        parent.appendChild(inert.importNode(node, true));
        return;
      }
      const el = inert.importNode(node, false);
      const root = shadowRootOf(node);
      for (const c of Array.from((root || node).childNodes)) copy(c, el);
      parent.appendChild(el);
    };
    const holder = inert.createDocumentFragment();
    copy(root, holder);
    return holder.firstChild.outerHTML;
  };
  const serialize = (root) => {
    if (!roots.length || typeof root.getHTML !== 'function') return root.outerHTML;
    if (opts.flatten) {
      try { return flatten(root); } catch (e) { /* too deep a tree: declarative instead */ }
    }
    const shell = root.cloneNode(false).outerHTML;
    const end = '</' + root.localName + '>';
    if (!shell.endsWith(end)) return root.outerHTML;
    return shell.slice(0, shell.length - end.length)
      + root.getHTML({ serializableShadowRoots: true, shadowRoots: roots }) + end;
  };
  const d = document.doctype;
  let doctype = '<!DOCTYPE html>';
  if (d) {
    doctype = '<!DOCTYPE ' + d.name
      + (d.publicId ? ' PUBLIC "' + d.publicId + '"' : '')
      + (d.systemId ? (d.publicId ? '' : ' SYSTEM') + ' "' + d.systemId + '"' : '')
      + '>';
  }
  const root = document.documentElement;
  return { status, headers, href, html: doctype + '\n' + (root ? serialize(root) : '') };
})"#;

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
        self.check_crash(ctx)?;
        let options = serde_json::json!({
            "strip": ctx.job.strip_scripts,
            "keepNoscript": ctx.job.keep_noscript,
            "flatten": ctx.job.shadow_dom == ShadowDom::Flatten,
        });
        let expression = format!("{SNAPSHOT_JS}({options})");
        let snapshot = self.evaluate(&expression).await?;
        if ctx.job.client_redirect_status != 0 {
            let href = snapshot.get("href").and_then(|h| h.as_str());
            if let Some(target) = client_redirect(
                &ctx.job.public_url,
                ctx.client_navigation().as_deref(),
                href,
            ) {
                tracing::info!(url = %ctx.job.public_url, to = %target, "page moved itself: answered as a redirect");
                self.shared.client_redirects.fetch_add(1, Ordering::Relaxed);
                return Ok(RenderedPage {
                    status: ctx.job.client_redirect_status,
                    headers: vec![("Location".to_string(), target.to_string())],
                    html: redirect_body(&target),
                    elapsed: started.elapsed(),
                    snapshot_on_ready_timeout: false,
                });
            }
        }
        let html = snapshot
            .get("html")
            .and_then(|h| h.as_str())
            .ok_or_else(|| RenderError::Protocol("snapshot returned no html".into()))?;
        if html.len() > MAX_HTML_BYTES {
            return Err(RenderError::TooLarge(html.len()));
        }
        let (status, headers) = apply_metas(status, &snapshot);
        Ok(RenderedPage {
            status,
            headers,
            html: html.to_string(),
            elapsed: started.elapsed(),
            snapshot_on_ready_timeout: on_ready_timeout,
        })
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
            if ctx.requests_started() == started_before && ctx.network_idle(Duration::ZERO) {
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

async fn close_page(page: Page) {
    let _ = tokio::time::timeout(CDP_CALL_TIMEOUT, page.close()).await;
}

/// Where a page moved itself during its render, if that is another path of
/// its site: the URL it tried to navigate to (`location.href`,
/// `location.replace`, a meta refresh; the navigation itself was refused),
/// else the URL it shows (`history.pushState`/`replaceState`). A move to
/// another site, or within the same path (query, fragment), is none.
fn client_redirect(
    public: &url::Url,
    navigated: Option<&str>,
    shown: Option<&str>,
) -> Option<url::Url> {
    let decoded = |path: &str| percent_encoding::percent_decode_str(path).collect::<Vec<u8>>();
    [navigated, shown].into_iter().flatten().find_map(|raw| {
        let mut url = url::Url::parse(raw).ok()?;
        if !super::policy::same_origin(&url, public)
            || decoded(url.path()) == decoded(public.path())
        {
            return None;
        }
        url.set_fragment(None);
        Some(url)
    })
}

/// The body stored with a client-side redirect: a link to its target.
fn redirect_body(target: &url::Url) -> String {
    let href = html_escape::encode_double_quoted_attribute(target.as_str());
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Moved</title></head>\
         <body><a href=\"{href}\">{href}</a></body></html>\n"
    )
}

/// Applies `<meta name="prerender-status-code">` (last valid one wins) and
/// `<meta name="prerender-header" content="Name: value">`.
fn apply_metas(status: u16, snapshot: &serde_json::Value) -> (u16, Vec<(String, String)>) {
    let strings = |key: &str| -> Vec<String> {
        snapshot
            .get(key)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let status = strings("status")
        .iter()
        .filter_map(|s| s.trim().parse::<u16>().ok())
        .rfind(|s| (100..=599).contains(s))
        .unwrap_or(status);
    let headers = strings("headers")
        .iter()
        .filter_map(|h| parse_meta_header(h))
        .take(MAX_META_HEADERS)
        .collect();
    (status, headers)
}

fn parse_meta_header(raw: &str) -> Option<(String, String)> {
    let (name, value) = raw.split_once(':')?;
    let name = http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
    let value = value.trim();
    http::HeaderValue::from_str(value).ok()?;
    Some((canonical_header_name(name.as_str()), value.to_string()))
}

fn canonical_header_name(lower: &str) -> String {
    lower
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
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

    #[test]
    fn client_redirects_are_moves_to_another_path_of_the_site() {
        let public = url::Url::parse("https://www.example.test/old?x=1").unwrap();
        let moved = |navigated: Option<&str>, shown: Option<&str>| {
            client_redirect(&public, navigated, shown).map(|u| u.to_string())
        };
        assert_eq!(moved(None, Some("https://www.example.test/old?x=1")), None);
        assert_eq!(
            moved(None, Some("https://www.example.test/old?x=2#top")),
            None
        );
        assert_eq!(moved(None, Some("https://www.example.test/%6Fld")), None);
        assert_eq!(
            moved(None, Some("https://www.example.test/new?y=2#top")).as_deref(),
            Some("https://www.example.test/new?y=2")
        );
        assert_eq!(
            moved(
                Some("https://www.example.test/login"),
                Some("https://www.example.test/new")
            )
            .as_deref(),
            Some("https://www.example.test/login"),
            "the navigation the page started wins"
        );
        assert_eq!(
            moved(
                Some("https://www.example.test/old"),
                Some("https://www.example.test/new")
            )
            .as_deref(),
            Some("https://www.example.test/new")
        );
        assert_eq!(moved(Some("https://accounts.other.test/login"), None), None);
        assert_eq!(moved(None, Some("http://www.example.test/new")), None);
        assert_eq!(moved(Some("not a url"), Some("about:blank")), None);
        let body = redirect_body(&url::Url::parse("https://www.example.test/a?b=1&c=\"2").unwrap());
        assert!(
            body.contains(r#"href="https://www.example.test/a?b=1&amp;c=%222""#),
            "{body}"
        );
    }

    #[test]
    fn metas_override_status_and_add_headers() {
        let snap = serde_json::json!({
            "status": ["200", "301"],
            "headers": ["Location: https://www.example.test/new", "bad header", "X-Evil: a\r\nb", "x-robots-tag: noindex"],
            "html": ""
        });
        let (status, headers) = apply_metas(200, &snap);
        assert_eq!(status, 301);
        assert_eq!(
            headers,
            vec![
                (
                    "Location".to_string(),
                    "https://www.example.test/new".to_string()
                ),
                ("X-Robots-Tag".to_string(), "noindex".to_string())
            ]
        );
        let (status, _) = apply_metas(404, &serde_json::json!({"status": ["abc", "9999"]}));
        assert_eq!(status, 404);
    }
}
