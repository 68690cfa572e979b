//! The label values of the metrics: fixed vocabularies (request kinds,
//! cache results, render outcomes, crawler families, status classes) and
//! the bounded set of `domain` values, so that no label's cardinality can
//! grow with traffic.

use std::collections::HashSet;

use parking_lot::Mutex;

/// The `(kind, cache)` pairs a public request can end with; their
/// request-duration series are exported from the start.
pub(super) const REQUEST_OUTCOMES: [(RequestKind, CacheResult); 7] = [
    (RequestKind::Bot, CacheResult::Hit),
    (RequestKind::Bot, CacheResult::Miss),
    (RequestKind::Bot, CacheResult::Stale),
    (RequestKind::Bot, CacheResult::Error),
    (RequestKind::Human, CacheResult::None),
    (RequestKind::Asset, CacheResult::None),
    (RequestKind::Rejected, CacheResult::None),
];

/// The `family` label values of `prerender_requests_total`: the
/// `bot-patterns/` families, then the rules that name no family (woothee's
/// crawler list, `_escaped_fragment_`), `other` (a service request whose
/// User-Agent matches no rendered pattern, or a pattern file of another
/// name) and `none` (every request that is not a rendered crawler's). A
/// fixed list, so the label's cardinality is bounded.
pub const FAMILY_LABELS: [&str; 13] = [
    "search-engines",
    "social-previews",
    "ai-training",
    "ai-search",
    "ai-user-fetch",
    "seo-tools",
    "feed-readers",
    "monitoring",
    "http-libraries",
    "woothee",
    "escaped-fragment",
    "other",
    "none",
];

/// The `family` label of requests that are not a rendered crawler's.
pub const NO_FAMILY: &str = "none";

/// The `status_class` label values, by the answer's first digit.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub(super) fn family_index(family: &str) -> usize {
    FAMILY_LABELS
        .iter()
        .position(|f| *f == family)
        .unwrap_or(FAMILY_LABELS.len() - 2)
}

pub(super) fn status_class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// Most distinct `domain` label values kept per metric. Domains come from the
/// Host header of allowed requests, which in "any host" mode is unbounded;
/// past this, counters fold new domains into [`OTHER_DOMAIN_LABEL`] and
/// per-domain gauges are not exported for them.
pub const DEFAULT_MAX_DOMAIN_LABELS: usize = 1000;

/// The `domain` label of counter samples for domains past the label bound.
pub const OTHER_DOMAIN_LABEL: &str = "_other";

/// What a public request was, for `prerender_requests_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// A crawler whose request takes the render path.
    Bot,
    /// Passed through to the origin.
    Human,
    /// A crawler asking for a static asset: passed through.
    Asset,
    /// Refused before routing (421, 400, 414, 431).
    Rejected,
}

impl RequestKind {
    pub(super) fn index(self) -> usize {
        match self {
            RequestKind::Bot => 0,
            RequestKind::Human => 1,
            RequestKind::Asset => 2,
            RequestKind::Rejected => 3,
        }
    }

    pub const ALL: [RequestKind; 4] = [
        RequestKind::Bot,
        RequestKind::Human,
        RequestKind::Asset,
        RequestKind::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Bot => "bot",
            RequestKind::Human => "human",
            RequestKind::Asset => "asset",
            RequestKind::Rejected => "rejected",
        }
    }
}

/// What the cache did for a request, for `prerender_requests_total{cache}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheResult {
    Hit,
    Miss,
    Stale,
    /// The render failed and the request failed open (or got a 503).
    Error,
    /// The cache was not consulted (humans, assets, rejected requests).
    None,
}

impl CacheResult {
    pub(super) fn index(self) -> usize {
        match self {
            CacheResult::Hit => 0,
            CacheResult::Miss => 1,
            CacheResult::Stale => 2,
            CacheResult::Error => 3,
            CacheResult::None => 4,
        }
    }

    pub const ALL: [CacheResult; 5] = [
        CacheResult::Hit,
        CacheResult::Miss,
        CacheResult::Stale,
        CacheResult::Error,
        CacheResult::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Stale => "stale",
            CacheResult::Error => "error",
            CacheResult::None => "none",
        }
    }
}

/// How a render ended, for `prerender_renders_total{outcome}`. The failure
/// names are the `X-Prerender-Error` reasons of the fail-open answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RenderOutcome {
    Ok,
    Timeout,
    BrowserCrash,
    OriginError,
    /// The origin's certificate could not be verified.
    OriginTls,
    QueueFull,
    Quota,
    Store,
    LaunchFailed,
    Navigation,
    TooLarge,
    Refused,
    Renderer,
    InvalidUrl,
    Shutdown,
    /// A reason not listed above.
    Error,
}

impl RenderOutcome {
    pub const ALL: [RenderOutcome; 16] = [
        RenderOutcome::Ok,
        RenderOutcome::Timeout,
        RenderOutcome::BrowserCrash,
        RenderOutcome::OriginError,
        RenderOutcome::OriginTls,
        RenderOutcome::QueueFull,
        RenderOutcome::Quota,
        RenderOutcome::Store,
        RenderOutcome::LaunchFailed,
        RenderOutcome::Navigation,
        RenderOutcome::TooLarge,
        RenderOutcome::Refused,
        RenderOutcome::Renderer,
        RenderOutcome::InvalidUrl,
        RenderOutcome::Shutdown,
        RenderOutcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RenderOutcome::Ok => "ok",
            RenderOutcome::Timeout => "timeout",
            RenderOutcome::BrowserCrash => "browser-crash",
            RenderOutcome::OriginError => "origin-error",
            RenderOutcome::OriginTls => "origin-tls",
            RenderOutcome::QueueFull => "queue-full",
            RenderOutcome::Quota => "quota",
            RenderOutcome::Store => "store",
            RenderOutcome::LaunchFailed => "launch-failed",
            RenderOutcome::Navigation => "navigation",
            RenderOutcome::TooLarge => "too-large",
            RenderOutcome::Refused => "refused",
            RenderOutcome::Renderer => "renderer",
            RenderOutcome::InvalidUrl => "invalid-url",
            RenderOutcome::Shutdown => "shutdown",
            RenderOutcome::Error => "error",
        }
    }

    /// The outcome of an `X-Prerender-Error` reason (`RenderFailure::reason`);
    /// an unknown reason is [`RenderOutcome::Error`], so the label set stays
    /// fixed.
    pub fn from_reason(reason: &str) -> RenderOutcome {
        RenderOutcome::ALL
            .into_iter()
            .find(|o| *o != RenderOutcome::Ok && o.as_str() == reason)
            .unwrap_or(RenderOutcome::Error)
    }
}

/// The set of `domain` label values in use, bounded.
pub(super) struct DomainLabels {
    max: usize,
    known: Mutex<HashSet<String>>,
}

impl DomainLabels {
    /// At most `max` values.
    pub(super) fn new(max: usize) -> DomainLabels {
        DomainLabels {
            max,
            known: Mutex::new(HashSet::new()),
        }
    }

    /// The label to use for `domain`, or `None` when the bound is reached and
    /// `domain` is not already known.
    pub(super) fn admit(&self, domain: &str) -> Option<String> {
        let mut known = self.known.lock();
        if known.contains(domain) {
            return Some(domain.to_owned());
        }
        if known.len() >= self.max {
            return None;
        }
        known.insert(domain.to_owned());
        Some(domain.to_owned())
    }

    pub(super) fn forget(&self, domain: &str) {
        self.known.lock().remove(domain);
    }
}
