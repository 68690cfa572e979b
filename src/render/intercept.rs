//! Every request of a rendering tab, answered through CDP Fetch interception.
//!
//! A tab runs one event task for its whole life. It receives
//! `Fetch.requestPaused` and answers each pause exactly once — fulfil (from
//! the origin or the subresource cache), continue (allowed third parties) or
//! fail (blocked) — even when there is no render in progress or anything goes
//! wrong, because an unanswered pause hangs the page forever. It also counts
//! the requests in flight for the network-idle rule: requests it answers
//! itself are tracked directly; continued requests until their
//! `Network.loadingFinished/Failed`, which may arrive on their own stream
//! before the pause is recorded, hence the tombstones.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use chromiumoxide::cdp::browser_protocol::fetch::{
    ContinueRequestParams, EventRequestPaused, FailRequestParams, FulfillRequestParams, HeaderEntry,
};
use chromiumoxide::cdp::browser_protocol::inspector::EventTargetCrashed;
use chromiumoxide::cdp::browser_protocol::network::{
    ErrorReason, EventLoadingFailed, EventLoadingFinished, ResourceType,
};
use chromiumoxide::cdp::browser_protocol::page::{EventDomContentEventFired, EventFrameNavigated};
use chromiumoxide::cdp::js_protocol::runtime::EventBindingCalled;
use chromiumoxide::Page;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use url::Url;

use super::frames::{self, Frames};
use super::origin::{OriginClient, OriginRequest, OriginResponse};
use super::policy::{self, Decision};
use super::subresources::{StaticKind, SubresourceCache};
use super::RenderJob;
use crate::upstream::OriginError;

/// Bound of one CDP command; a command whose answer never comes (a crashed
/// renderer, an unparsable response) must not hold a render. Generous: on a
/// saturated machine, healthy calls were seen taking several seconds.
pub(crate) const CDP_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Distinct request ids remembered per render for out-of-order network events.
const MAX_TOMBSTONES: usize = 10_000;

/// State shared by every tab of a pool.
pub(crate) struct Shared {
    pub origin: OriginClient,
    pub subresources: Mutex<SubresourceCache>,
    /// Requests refused by policy (blocked types, trackers, internal addresses).
    pub blocked: std::sync::atomic::AtomicU64,
    /// Of those, requests refused because they aimed at internal addresses or
    /// non-http(s) schemes.
    pub blocked_internal: std::sync::atomic::AtomicU64,
    /// Renders laid out taller than the viewport, and of those the ones
    /// whose document was taller than `max_render_height`.
    pub tall_layouts: std::sync::atomic::AtomicU64,
    pub tall_layouts_capped: std::sync::atomic::AtomicU64,
    /// Renders answered as client-side redirects.
    pub client_redirects: std::sync::atomic::AtomicU64,
}

/// What the origin answered for the document.
#[derive(Debug, Clone)]
pub(crate) enum DocumentOutcome {
    /// Handed to the browser; rendering goes on.
    Page { status: u16 },
    /// A redirect: not followed, returned as is.
    Redirect {
        status: u16,
        location: Option<String>,
        body: String,
    },
    /// A server error: the render fails.
    ServerError(u16),
    /// The origin could not be reached.
    Unreachable(String),
    /// The origin's certificate could not be verified.
    TlsFailure(String),
    /// The origin did not answer before the render's deadline.
    TimedOut,
}

#[derive(Default)]
struct NetState {
    document: Option<DocumentOutcome>,
    document_requested: bool,
    main_frame: Option<String>,
    /// Pauses being answered, by Fetch request id → URL.
    answering: HashMap<String, String>,
    /// Continued requests still loading, by network request id → URL.
    loading: HashMap<String, String>,
    /// Network ids whose loading ended (possibly before we saw their pause).
    ended: HashSet<String>,
    last_activity: Option<Instant>,
    dom_content_loaded: bool,
    crashed: bool,
    /// Origins (scheme://host:port) the page touched, cleared after the render.
    origins: HashSet<String>,
    /// Requests the page started that were not refused for their type
    /// (images, media and fonts are): loading the page's content.
    requests_started: u64,
    /// The first URL the page's main frame tried to navigate to (GET) after
    /// its document; the navigation was refused.
    client_navigation: Option<String>,
}

/// One render in progress on a tab.
pub(crate) struct RenderCtx {
    pub job: RenderJob,
    pub site: String,
    pub deadline: Instant,
    state: Mutex<NetState>,
    pub changed: Notify,
    /// The render is over: pauses still being answered are failed instead
    /// (a late response must not set cookies after the tab was cleared).
    finished: AtomicBool,
    finish: Notify,
    /// The navigation to the page has ended (loaded, or failed) in
    /// chromiumoxide's navigation queue.
    navigation_settled: AtomicBool,
}

impl RenderCtx {
    pub(crate) fn new(job: RenderJob, site: String, deadline: Instant) -> Self {
        let mut state = NetState::default();
        state
            .origins
            .insert(job.public_url.origin().ascii_serialization());
        Self {
            job,
            site,
            deadline,
            state: Mutex::new(state),
            changed: Notify::new(),
            finished: AtomicBool::new(false),
            finish: Notify::new(),
            navigation_settled: AtomicBool::new(false),
        }
    }

    /// Ends the render for its pauses: every one not answered yet is failed.
    pub(crate) fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
        self.finish.notify_waiters();
    }

    pub(crate) fn navigation_settles(&self) {
        self.navigation_settled.store(true, Ordering::SeqCst);
    }

    pub(crate) fn navigation_settled(&self) -> bool {
        self.navigation_settled.load(Ordering::SeqCst)
    }

    fn is_finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    async fn finished(&self) {
        loop {
            let notified = self.finish.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_finished() {
                return;
            }
            notified.await;
        }
    }

    /// Waits until no pause of this render is being answered, at most `bound`.
    pub(crate) async fn answers_drained(&self, bound: Duration) -> bool {
        let until = Instant::now() + bound;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state.lock().answering.is_empty() {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return false;
            }
        }
    }

    fn touch(&self, f: impl FnOnce(&mut NetState)) {
        {
            let mut st = self.state.lock();
            f(&mut st);
            st.last_activity = Some(Instant::now());
        }
        self.changed.notify_waiters();
    }

    pub(crate) fn document(&self) -> Option<DocumentOutcome> {
        self.state.lock().document.clone()
    }

    pub(crate) fn dom_content_loaded(&self) -> bool {
        self.state.lock().dom_content_loaded
    }

    pub(crate) fn crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// No request in flight, and none ended, for `quiet`.
    pub(crate) fn network_idle(&self, quiet: Duration) -> bool {
        let st = self.state.lock();
        st.answering.is_empty()
            && st.loading.is_empty()
            && st.last_activity.is_none_or(|t| t.elapsed() >= quiet)
    }

    pub(crate) fn outstanding(&self) -> Vec<String> {
        let st = self.state.lock();
        st.answering
            .values()
            .chain(st.loading.values())
            .cloned()
            .collect()
    }

    pub(crate) fn requests_started(&self) -> u64 {
        self.state.lock().requests_started
    }

    pub(crate) fn client_navigation(&self) -> Option<String> {
        self.state.lock().client_navigation.clone()
    }

    pub(crate) fn origins(&self) -> Vec<String> {
        self.state.lock().origins.iter().cloned().collect()
    }

    fn loading_ended(&self, network_id: &str) {
        self.touch(|st| {
            if st.loading.remove(network_id).is_none() && st.ended.len() < MAX_TOMBSTONES {
                st.ended.insert(network_id.to_string());
            }
        });
    }
}

/// The render currently using a tab, if any.
pub(crate) type CurrentRender = Arc<Mutex<Option<Arc<RenderCtx>>>>;

/// Subscribes to a tab's events and spawns its event task.
///
/// `frames` knows whether the tab holds the frozen page of a finished
/// render; the first document committed in the main frame after that (the
/// next render's, or `about:blank`) replaced it, and the tab is set active
/// again. A page's call of the frames binding turns its frames on (see
/// `frames`); one that comes while no render uses the tab is a finished
/// page's, late, and ignored.
pub(crate) async fn start_tab_events(
    page: Page,
    current: CurrentRender,
    shared: Arc<Shared>,
    crashed: Arc<AtomicBool>,
    frames: Arc<Frames>,
) -> Result<tokio::task::JoinHandle<()>, chromiumoxide::error::CdpError> {
    let mut paused = page.event_listener::<EventRequestPaused>().await?;
    let mut finished = page.event_listener::<EventLoadingFinished>().await?;
    let mut failed = page.event_listener::<EventLoadingFailed>().await?;
    let mut dcl = page.event_listener::<EventDomContentEventFired>().await?;
    let mut navigated = page.event_listener::<EventFrameNavigated>().await?;
    let mut target_crashed = page.event_listener::<EventTargetCrashed>().await?;
    let mut binding = page.event_listener::<EventBindingCalled>().await?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = paused.next() => {
                    let Some(ev) = ev else { break };
                    let ctx = current.lock().clone();
                    tokio::spawn(answer_pause(page.clone(), ctx, shared.clone(), ev));
                }
                ev = finished.next() => {
                    let Some(ev) = ev else { break };
                    if let Some(ctx) = current.lock().clone() {
                        ctx.loading_ended(ev.request_id.inner());
                    }
                }
                ev = failed.next() => {
                    let Some(ev) = ev else { break };
                    if let Some(ctx) = current.lock().clone() {
                        ctx.loading_ended(ev.request_id.inner());
                    }
                }
                ev = dcl.next() => {
                    let Some(_) = ev else { break };
                    if let Some(ctx) = current.lock().clone() {
                        ctx.touch(|st| st.dom_content_loaded = true);
                    }
                }
                ev = navigated.next() => {
                    let Some(ev) = ev else { break };
                    if ev.frame.parent_id.is_none() && frames.is_frozen() {
                        let (page, frames) = (page.clone(), frames.clone());
                        tokio::spawn(async move { frames.thaw(&page).await });
                    }
                }
                ev = binding.next() => {
                    let Some(ev) = ev else { break };
                    if ev.name == frames::BINDING && current.lock().is_some() {
                        let (page, frames) = (page.clone(), frames.clone());
                        tokio::spawn(async move {
                            if let Err(e) = frames.want(&page).await {
                                tracing::debug!(error = %e, "frames for a page that asked");
                            }
                        });
                    }
                }
                ev = target_crashed.next() => {
                    let Some(_) = ev else { break };
                    crashed.store(true, Ordering::SeqCst);
                    if let Some(ctx) = current.lock().clone() {
                        ctx.touch(|st| st.crashed = true);
                    }
                }
            }
        }
        // The connection is gone: whatever render uses this tab must stop.
        crashed.store(true, Ordering::SeqCst);
        if let Some(ctx) = current.lock().clone() {
            ctx.touch(|st| st.crashed = true);
        }
    }))
}

enum Answer {
    Fulfil(OriginResponse),
    Continue,
    Fail(ErrorReason),
}

async fn answer_pause(
    page: Page,
    ctx: Option<Arc<RenderCtx>>,
    shared: Arc<Shared>,
    ev: Arc<EventRequestPaused>,
) {
    let request_id = ev.request_id.clone();
    let Some(ctx) = ctx else {
        send(&page, Answer::Fail(ErrorReason::Aborted), &ev).await;
        return;
    };
    let pause_id = request_id.inner().to_string();
    ctx.touch(|st| {
        st.answering
            .insert(pause_id.clone(), ev.request.url.clone());
    });
    let answer = tokio::select! {
        answer = decide(&ctx, &shared, &ev) => answer,
        _ = ctx.finished() => Answer::Fail(ErrorReason::Aborted),
    };
    // An answer that comes after the render is over is not delivered.
    let answer = if ctx.is_finished() {
        Answer::Fail(ErrorReason::Aborted)
    } else {
        answer
    };
    let continued = matches!(answer, Answer::Continue);
    send(&page, answer, &ev).await;
    ctx.touch(|st| {
        st.answering.remove(&pause_id);
        if continued {
            if let Some(network_id) = ev.network_id.as_ref() {
                let id = network_id.inner().to_string();
                if !st.ended.remove(&id) {
                    st.loading.insert(id, ev.request.url.clone());
                }
            }
        }
    });
}

async fn send(page: &Page, answer: Answer, ev: &EventRequestPaused) {
    let id = ev.request_id.clone();
    let result = match answer {
        Answer::Fulfil(resp) => {
            let headers: Vec<HeaderEntry> = resp
                .headers
                .iter()
                .map(|(n, v)| HeaderEntry::new(n.clone(), v.clone()))
                .collect();
            let mut params = FulfillRequestParams::new(id, i64::from(resp.status));
            params.response_headers = Some(headers);
            params.body = Some(
                base64::engine::general_purpose::STANDARD
                    .encode(&resp.body)
                    .into(),
            );
            params.response_phrase = Some(
                http::StatusCode::from_u16(resp.status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Unknown")
                    .to_string(),
            );
            tokio::time::timeout(CDP_CALL_TIMEOUT, page.execute(params))
                .await
                .map(|r| r.map(|_| ()))
        }
        Answer::Continue => tokio::time::timeout(
            CDP_CALL_TIMEOUT,
            page.execute(ContinueRequestParams::new(id)),
        )
        .await
        .map(|r| r.map(|_| ())),
        Answer::Fail(reason) => tokio::time::timeout(
            CDP_CALL_TIMEOUT,
            page.execute(FailRequestParams::new(id, reason)),
        )
        .await
        .map(|r| r.map(|_| ())),
    };
    match result {
        Ok(Ok(())) => {}
        // The page navigated away or closed: nothing waits for this answer.
        Ok(Err(e)) => {
            tracing::debug!(url = %ev.request.url, error = %e, "paused request answer refused")
        }
        Err(_) => tracing::debug!(url = %ev.request.url, "paused request answer timed out"),
    }
}

fn static_kind(resource_type: &ResourceType) -> Option<StaticKind> {
    match resource_type {
        ResourceType::Script | ResourceType::Stylesheet => Some(StaticKind::Code),
        ResourceType::Xhr | ResourceType::Fetch => Some(StaticKind::Data),
        _ => None,
    }
}

async fn decide(ctx: &RenderCtx, shared: &Shared, ev: &EventRequestPaused) -> Answer {
    let Ok(url) = Url::parse(&ev.request.url) else {
        return Answer::Fail(ErrorReason::BlockedByClient);
    };
    if policy::is_blocked_type(&ev.resource_type) {
        shared.blocked.fetch_add(1, Ordering::Relaxed);
        return Answer::Fail(ErrorReason::BlockedByClient);
    }
    ctx.state.lock().requests_started += 1;
    let job = &ctx.job;
    let for_site = policy::same_origin(&url, &job.public_url);
    let for_origin = policy::same_origin(&url, &job.origin);
    let frame = ev.frame_id.inner().to_string();

    if ev.resource_type == ResourceType::Document {
        let first = {
            let mut st = ctx.state.lock();
            if st.document_requested {
                if st.main_frame.as_deref() == Some(frame.as_str()) {
                    // The page tries to leave: the snapshot is of this
                    // document, or a redirect to where it went.
                    if ev.request.method == "GET" && st.client_navigation.is_none() {
                        st.client_navigation = Some(url.to_string());
                    }
                    drop(st);
                    ctx.changed.notify_waiters();
                    return Answer::Fail(ErrorReason::Aborted);
                }
                false
            } else {
                st.document_requested = true;
                st.main_frame = Some(frame);
                true
            }
        };
        if first {
            return fetch_document(ctx, shared, ev, &url).await;
        }
    }

    if for_site || for_origin {
        return fetch_subresource(ctx, shared, ev, &url, for_site).await;
    }
    match policy::decide(&url).await {
        Decision::Allow => {
            let origin = url.origin().ascii_serialization();
            ctx.touch(|st| {
                st.origins.insert(origin);
            });
            Answer::Continue
        }
        Decision::Block(reason) => {
            tracing::debug!(url = %url, reason, "request blocked");
            shared.blocked.fetch_add(1, Ordering::Relaxed);
            if reason != "analytics" {
                shared.blocked_internal.fetch_add(1, Ordering::Relaxed);
            }
            Answer::Fail(ErrorReason::BlockedByClient)
        }
    }
}

fn origin_request(
    ctx: &RenderCtx,
    ev: &EventRequestPaused,
    url: &Url,
    for_site: bool,
) -> OriginRequest {
    let job = &ctx.job;
    let (target, host) = if for_site {
        let mut target = job.origin.clone();
        target.set_path(url.path());
        target.set_query(url.query());
        target.set_fragment(None);
        let host = job
            .origin_host
            .clone()
            .unwrap_or_else(|| host_header(&job.public_url));
        (target, host)
    } else {
        (url.clone(), host_header(url))
    };
    let headers = ev
        .request
        .headers
        .inner()
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let body = ev
        .request
        .post_data_entries
        .as_ref()
        .map(|entries| {
            let mut body = Vec::new();
            for entry in entries {
                if let Some(bytes) = &entry.bytes {
                    let text: &str = bytes.as_ref();
                    if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(text) {
                        body.extend_from_slice(&decoded);
                    }
                }
            }
            Bytes::from(body)
        })
        .unwrap_or_default();
    OriginRequest {
        method: ev.request.method.clone(),
        url: target,
        host,
        forwarded_proto: job.public_url.scheme().to_string(),
        headers,
        body,
    }
}

fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

async fn fetch_document(
    ctx: &RenderCtx,
    shared: &Shared,
    ev: &EventRequestPaused,
    url: &Url,
) -> Answer {
    let for_site = policy::same_origin(url, &ctx.job.public_url);
    if !for_site {
        let outcome =
            DocumentOutcome::Unreachable(format!("document is not on the public host: {url}"));
        ctx.touch(|st| st.document = Some(outcome));
        return Answer::Fail(ErrorReason::BlockedByClient);
    }
    let request = origin_request(ctx, ev, url, true);
    let (outcome, answer) = match shared.origin.fetch(request, ctx.deadline).await {
        Ok(resp) if (300..400).contains(&resp.status) && resp.status != 304 => (
            DocumentOutcome::Redirect {
                status: resp.status,
                location: resp.header("location").map(str::to_string),
                body: String::from_utf8_lossy(&resp.body).into_owned(),
            },
            Answer::Fail(ErrorReason::Aborted),
        ),
        Ok(resp) if resp.status >= 500 => (
            DocumentOutcome::ServerError(resp.status),
            Answer::Fail(ErrorReason::Aborted),
        ),
        Ok(resp) => (
            DocumentOutcome::Page {
                status: resp.status,
            },
            Answer::Fulfil(resp),
        ),
        Err(OriginError::Timeout(_)) => (
            DocumentOutcome::TimedOut,
            Answer::Fail(ErrorReason::TimedOut),
        ),
        Err(e @ OriginError::Tls { .. }) => (
            DocumentOutcome::TlsFailure(e.to_string()),
            Answer::Fail(ErrorReason::ConnectionFailed),
        ),
        Err(e) => (
            DocumentOutcome::Unreachable(e.detail()),
            Answer::Fail(ErrorReason::ConnectionFailed),
        ),
    };
    ctx.touch(|st| st.document = Some(outcome));
    answer
}

async fn fetch_subresource(
    ctx: &RenderCtx,
    shared: &Shared,
    ev: &EventRequestPaused,
    url: &Url,
    for_site: bool,
) -> Answer {
    let kind = if ev.request.method == "GET" {
        static_kind(&ev.resource_type)
    } else {
        None
    };
    let key = SubresourceCache::key(&ctx.site, url.as_str());
    if kind.is_some() {
        if let Some(hit) = shared.subresources.lock().get(&key) {
            return Answer::Fulfil(hit);
        }
    }
    let request = origin_request(ctx, ev, url, for_site);
    match shared.origin.fetch(request, ctx.deadline).await {
        Ok(resp) => {
            if let Some(kind) = kind {
                shared.subresources.lock().insert(key, kind, &resp);
            }
            Answer::Fulfil(resp)
        }
        Err(OriginError::Timeout(_)) => Answer::Fail(ErrorReason::TimedOut),
        Err(e) => {
            tracing::debug!(url = %url, error = %e.detail(), "subresource fetch failed");
            Answer::Fail(ErrorReason::Failed)
        }
    }
}
