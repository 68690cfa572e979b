//! Every Prometheus metric the proxy exports, in one place.
//!
//! All names carry the `prerender_` prefix and live in one [`Registry`] owned
//! by [`Metrics`] (never the process-global default registry, so tests and
//! several instances in one process do not collide). Each metric has a line
//! saying how to read it. Label values come from enums, so a typo cannot
//! create a new series, and every known label combination is registered at
//! zero up front so `rate()` works from the first scrape.
//!
//! The label vocabularies are in `labels`; every metric's name, help and
//! reading are here.
//!
//! Some figures are owned elsewhere as plain cumulative numbers (the browser
//! pool's recycle and crash counts, the render queue's dedup joins). They are
//! copied in at scrape time by [`Metrics::sync_pool`] and
//! [`Metrics::sync_queue`], usually from a hook added with
//! [`Metrics::on_scrape`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::process_collector::ProcessCollector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::render::PoolStats;

mod labels;

use labels::{family_index, status_class_index, DomainLabels, REQUEST_OUTCOMES};
pub use labels::{
    CacheResult, RenderOutcome, RequestKind, DEFAULT_MAX_DOMAIN_LABELS, FAMILY_LABELS, NO_FAMILY,
    OTHER_DOMAIN_LABEL, STATUS_CLASSES,
};

/// Content type of [`Metrics::render_text`] for the `/metrics` response.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Render-duration histogram buckets in seconds. The render deadline defaults
/// to 20 s, so the top bucket sits past it at 30 s; below 1 s the buckets are
/// dense because warm-context renders of small pages land there.
pub const RENDER_DURATION_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 25.0, 30.0,
];

/// Request-duration histogram buckets in seconds. Hits and passthrough
/// answers take well under a millisecond of the proxy's own time, so the
/// low buckets are dense (a p99 target of 2 ms needs buckets around it);
/// misses wait for a render, so the top bucket sits past the 20 s render
/// deadline.
pub const REQUEST_DURATION_BUCKETS: &[f64] = &[
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
    0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
];

/// The in-process render queue's figures, copied in at scrape time
/// (`dedup_joins` cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueFigures {
    pub live_pending: usize,
    pub background_pending: usize,
    pub dedup_joins: u64,
}

/// A counter fed from a cumulative number owned elsewhere. Remembers the
/// highest value seen and adds only the growth, so concurrent or
/// out-of-order scrapes never count twice and the counter never goes down.
struct SyncedCounter {
    counter: IntCounter,
    seen: AtomicU64,
}

impl SyncedCounter {
    fn new(counter: IntCounter) -> Self {
        SyncedCounter {
            counter,
            seen: AtomicU64::new(0),
        }
    }

    fn sync(&self, cumulative: u64) {
        let previous = self.seen.fetch_max(cumulative, Ordering::AcqRel);
        if cumulative > previous {
            self.counter.inc_by(cumulative - previous);
        }
    }
}

type ScrapeHook = Box<dyn Fn(&Metrics) + Send + Sync>;

/// The metrics of one proxy instance.
pub struct Metrics {
    registry: Registry,
    scrape_hooks: Mutex<Vec<ScrapeHook>>,
    domain_labels: DomainLabels,

    // --- Public listener -------------------------------------------------
    /// `prerender_requests_total{kind,cache,family,status_class}`: every
    /// public request, by who asked (bot/human/asset/rejected), what the
    /// cache did (hit/miss/stale/error/none), the crawler family
    /// ([`FAMILY_LABELS`]) and the answer's status class. Bot hit ratio =
    /// `rate(…{kind="bot",cache=~"hit|stale"}) / rate(…{kind="bot"})`.
    requests_total: IntCounterVec,
    /// Its series by `[kind][cache][family][status_class]` (flattened),
    /// each looked up once.
    request_series: Box<[OnceLock<IntCounter>]>,
    /// `prerender_request_duration_seconds{kind,cache}`: the proxy's own
    /// time for a public request, from its head being read to the response
    /// head being handed to the connection (a body then streams; for hits
    /// and passthrough that is the proxy's share of the latency, without the
    /// client's or the network's). p99 of `kind="bot",cache="hit"` is the
    /// cache-hit latency the proxy adds.
    request_duration_seconds: HistogramVec,
    /// The series of `request_duration_seconds` by `[kind][cache]`, looked up
    /// once: a label lookup per request would cost more than the observation.
    request_duration_series: [[std::sync::OnceLock<Histogram>; 5]; 4],

    // --- Rendering -------------------------------------------------------
    /// `prerender_render_duration_seconds`: wall time of each finished
    /// render attempt, queue wait excluded. Watch p95 against
    /// `render_timeout`.
    render_duration_seconds: Histogram,
    /// `prerender_renders_total{outcome}`: renders by how they ended; any
    /// outcome but `ok` means a bot got the fail-open answer.
    renders_total: IntCounterVec,
    /// `prerender_refreshes_total`: background re-renders started by the
    /// refresher (schedule, origin poll, `POST /api/v1/refresh`).
    refreshes_total: SyncedCounter,
    /// `prerender_quota_exhausted_total{domain}`: renders refused because the
    /// domain's `monthly_renders` was used up; non-zero means bots of that
    /// domain get fail-open answers on misses until the month turns.
    quota_exhausted_total: IntCounterVec,

    /// `prerender_unverified_renders_refused_total{domain}`: misses of bots
    /// that are not verified crawlers refused because the site's
    /// `unverified_renders_per_minute` was used up (`enforce` only); they
    /// got the fail-open answer with `X-Prerender-Error: rate-limited`.
    unverified_renders_refused_total: IntCounterVec,

    // --- Crawler verification ---------------------------------------------
    /// `prerender_crawler_verifications_total{family,result}`: requests
    /// claiming a crawler that publishes how to verify it (`family`:
    /// googlebot, bingbot, gptbot, …), by the check's verdict
    /// (verified/failed/error). With `verify_crawlers = "log"` this is how
    /// many claims `enforce` would turn away (failed + error).
    crawler_verifications_total: IntCounterVec,
    /// `prerender_crawler_verdicts_cached`: verdicts held in process
    /// (bounded by `verify::MAX_CACHED_VERDICTS`), set at scrape time.
    crawler_verdicts_cached: IntGauge,

    // --- Render queue ------------------------------------------------------
    /// `prerender_queue_depth{priority}`: renders waiting in this instance's
    /// own queue, live (bot misses) and background (refresh, warm). Live near
    /// `queue_capacity` means misses are about to be refused with
    /// `queue-full`. Sum it over instances.
    queue_depth: IntGaugeVec,
    /// `prerender_shared_queue_depth{priority}`: with `--role proxy` /
    /// `renderer`, the shared job streams' backlog as this instance last
    /// read it (zero elsewhere). Every instance reports the same backlog, so
    /// take the max over instances, never the sum.
    shared_queue_depth: IntGaugeVec,
    /// `prerender_dedup_joins_total`: requests that joined a render already
    /// running for their key instead of starting one (renders saved by
    /// deduplication).
    dedup_joins_total: SyncedCounter,

    // --- Browser pool ------------------------------------------------------
    /// `prerender_browsers_alive`: browser processes running now; below
    /// `browsers` for long means launches are failing.
    browsers_alive: IntGauge,
    /// `prerender_origin_idle_connections`: idle keep-alive connections to
    /// origins held by the passthrough relay, all public threads together,
    /// updated by each thread every 10 s. Bounded by `origin_max_idle` per
    /// origin and thread.
    origin_idle_connections: IntGauge,
    /// `prerender_browser_recycles_total{reason}`: planned browser
    /// replacements by trigger (renders/age/rss). Many `rss` recycles point
    /// at a page that leaks memory.
    browser_recycles_renders: SyncedCounter,
    browser_recycles_age: SyncedCounter,
    browser_recycles_rss: SyncedCounter,
    /// `prerender_browser_crashes_total`: browsers that died unplanned; their
    /// renders were retried elsewhere.
    browser_crashes_total: SyncedCounter,
    /// `prerender_browser_tabs_total{outcome}`: tabs after a render, reset
    /// and kept for the site's next render (`reused`) or closed with their
    /// context (`discarded`: a failed render, or a page that could not be
    /// reset safely). Mostly `discarded` means every render pays for a new
    /// tab.
    browser_tabs_reused: SyncedCounter,
    browser_tabs_discarded: SyncedCounter,
    tall_layouts_whole: SyncedCounter,
    tall_layouts_capped: SyncedCounter,
    client_redirects_total: SyncedCounter,

    // --- Store -------------------------------------------------------------
    /// `prerender_store_errors_total`: failed store operations (Redis down,
    /// timeouts). While it rises, bots are served uncached or fail open.
    store_errors_total: IntCounter,
    /// `prerender_cache_entries{domain}`: pages cached per domain, set at
    /// scrape time; compare with the plan's `max_entries`.
    cache_entries: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Self::with_max_domain_labels(DEFAULT_MAX_DOMAIN_LABELS)
    }

    pub fn with_max_domain_labels(max_domain_labels: usize) -> Arc<Metrics> {
        let registry = Registry::new();

        // Registration can only fail on a duplicate or malformed name; the
        // names below are constants, so failing here is a programming error
        // caught by the unit tests.
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone()))
                .expect("metric names are unique constants");
            c
        }
        let counter = |name: &str, help: &str| {
            reg(
                &registry,
                IntCounter::with_opts(Opts::new(name, help)).expect("valid metric"),
            )
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };

        // The standard process metrics (CPU, memory, open file descriptors,
        // start time), with the prefix every metric here carries:
        // `prerender_process_cpu_seconds_total` and so on.
        registry
            .register(Box::new(ProcessCollector::new(
                std::process::id() as i32,
                "prerender",
            )))
            .expect("metric names are unique constants");
        gauge_vec(
            "prerender_build_info",
            "Always 1; the version label says which build is running.",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);

        let requests_total = counter_vec(
            "prerender_requests_total",
            "Public requests by kind (bot, human, asset, rejected), cache result (hit, miss, stale, error, none), crawler family and status class of the answer.",
            &["kind", "cache", "family", "status_class"],
        );
        let request_duration_seconds = reg(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "prerender_request_duration_seconds",
                    "Proxy time of public requests in seconds, from the request head to the response head, by kind and cache result.",
                )
                .buckets(REQUEST_DURATION_BUCKETS.to_vec()),
                &["kind", "cache"],
            )
            .expect("valid metric"),
        );
        let request_duration_series: [[std::sync::OnceLock<Histogram>; 5]; 4] = Default::default();
        for (kind, cache) in REQUEST_OUTCOMES {
            let series =
                request_duration_seconds.with_label_values(&[kind.as_str(), cache.as_str()]);
            let _ = request_duration_series[kind.index()][cache.index()].set(series);
        }
        let render_duration_seconds = reg(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "prerender_render_duration_seconds",
                    "Wall time of finished renders in seconds, queue wait excluded.",
                )
                .buckets(RENDER_DURATION_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
        );
        let renders_total = counter_vec(
            "prerender_renders_total",
            "Renders by outcome (ok, or the X-Prerender-Error reason).",
            &["outcome"],
        );
        let refreshes_total = counter(
            "prerender_refreshes_total",
            "Background re-renders started by the refresher.",
        );
        let quota_exhausted_total = counter_vec(
            "prerender_quota_exhausted_total",
            "Renders refused because the domain's monthly render quota is used up.",
            &["domain"],
        );
        let unverified_renders_refused_total = counter_vec(
            "prerender_unverified_renders_refused_total",
            "Misses of bots that are not verified crawlers refused by the site's unverified_renders_per_minute.",
            &["domain"],
        );
        let crawler_verifications_total = counter_vec(
            "prerender_crawler_verifications_total",
            "Requests claiming a verifiable crawler, by crawler (family) and verdict (verified, failed, error).",
            &["family", "result"],
        );
        let crawler_verdicts_cached = reg(
            &registry,
            IntGauge::new(
                "prerender_crawler_verdicts_cached",
                "Crawler verification verdicts cached in process.",
            )
            .expect("valid metric"),
        );
        let queue_depth = gauge_vec(
            "prerender_queue_depth",
            "Renders waiting in this instance's queue by priority (live, background).",
            &["priority"],
        );
        let shared_queue_depth = gauge_vec(
            "prerender_shared_queue_depth",
            "Backlog of the job streams shared by --role proxy/renderer instances, by priority; the same on every instance (aggregate with max).",
            &["priority"],
        );
        let dedup_joins_total = counter(
            "prerender_dedup_joins_total",
            "Requests that joined a render already running for their cache key.",
        );
        let browsers_alive = reg(
            &registry,
            IntGauge::new("prerender_browsers_alive", "Browser processes running now.")
                .expect("valid metric"),
        );
        let origin_idle_connections = reg(
            &registry,
            IntGauge::new(
                "prerender_origin_idle_connections",
                "Idle keep-alive connections to origins held by the passthrough relay.",
            )
            .expect("valid metric"),
        );
        let browser_recycles = counter_vec(
            "prerender_browser_recycles_total",
            "Planned browser replacements by reason (renders, age, rss).",
            &["reason"],
        );
        let browser_crashes_total = counter(
            "prerender_browser_crashes_total",
            "Browsers that died unplanned.",
        );
        let browser_tabs = counter_vec(
            "prerender_browser_tabs_total",
            "Tabs after a render: reused for the site's next render, or discarded.",
            &["outcome"],
        );
        let tall_layouts = counter_vec(
            "prerender_tall_layouts_total",
            "Renders laid out taller than the viewport to load content scrolled into view; \
             capped=\"true\" when the document was taller than max_render_height.",
            &["capped"],
        );
        let client_redirects_total = counter(
            "prerender_client_redirects_total",
            "Renders answered as a redirect because the page's script moved it to another path.",
        );
        let store_errors_total = counter(
            "prerender_store_errors_total",
            "Failed page store operations.",
        );
        let cache_entries = gauge_vec(
            "prerender_cache_entries",
            "Pages cached per domain.",
            &["domain"],
        );

        let request_series = (0..RequestKind::ALL.len()
            * CacheResult::ALL.len()
            * FAMILY_LABELS.len()
            * STATUS_CLASSES.len())
            .map(|_| OnceLock::new())
            .collect();
        for outcome in RenderOutcome::ALL {
            renders_total.with_label_values(&[outcome.as_str()]);
        }
        for priority in ["live", "background"] {
            queue_depth.with_label_values(&[priority]);
            shared_queue_depth.with_label_values(&[priority]);
        }

        Arc::new(Metrics {
            registry,
            scrape_hooks: Mutex::new(Vec::new()),
            domain_labels: DomainLabels::new(max_domain_labels),
            requests_total,
            request_series,
            request_duration_seconds,
            request_duration_series,
            render_duration_seconds,
            renders_total,
            refreshes_total: SyncedCounter::new(refreshes_total),
            quota_exhausted_total,
            unverified_renders_refused_total,
            crawler_verifications_total,
            crawler_verdicts_cached,
            queue_depth,
            shared_queue_depth,
            dedup_joins_total: SyncedCounter::new(dedup_joins_total),
            browsers_alive,
            origin_idle_connections,
            browser_recycles_renders: SyncedCounter::new(
                browser_recycles.with_label_values(&["renders"]),
            ),
            browser_recycles_age: SyncedCounter::new(browser_recycles.with_label_values(&["age"])),
            browser_recycles_rss: SyncedCounter::new(browser_recycles.with_label_values(&["rss"])),
            browser_crashes_total: SyncedCounter::new(browser_crashes_total),
            browser_tabs_reused: SyncedCounter::new(browser_tabs.with_label_values(&["reused"])),
            browser_tabs_discarded: SyncedCounter::new(
                browser_tabs.with_label_values(&["discarded"]),
            ),
            tall_layouts_whole: SyncedCounter::new(tall_layouts.with_label_values(&["false"])),
            tall_layouts_capped: SyncedCounter::new(tall_layouts.with_label_values(&["true"])),
            client_redirects_total: SyncedCounter::new(client_redirects_total),
            store_errors_total,
            cache_entries,
        })
    }

    /// One public request, once its answer's status is known: its kind,
    /// cache result, crawler family (a [`FAMILY_LABELS`] name; anything
    /// else counts as `other`; [`NO_FAMILY`] for all but rendered
    /// crawlers) and status.
    pub fn observe_request(
        &self,
        kind: RequestKind,
        cache: CacheResult,
        family: &str,
        status: u16,
    ) {
        let (f, c) = (family_index(family), status_class_index(status));
        let index = ((kind.index() * CacheResult::ALL.len() + cache.index()) * FAMILY_LABELS.len()
            + f)
            * STATUS_CLASSES.len()
            + c;
        self.request_series[index]
            .get_or_init(|| {
                self.requests_total.with_label_values(&[
                    kind.as_str(),
                    cache.as_str(),
                    FAMILY_LABELS[f],
                    STATUS_CLASSES[c],
                ])
            })
            .inc();
    }

    /// A request refused before any other handling (a 4xx of the request
    /// checks): counted and timed as `rejected`.
    pub fn observe_rejected(&self, status: u16, elapsed: Duration) {
        self.observe_uncached(RequestKind::Rejected, status, elapsed);
    }

    /// A request answered without the page cache (passed to the origin, or
    /// refused): its count and its duration.
    pub fn observe_uncached(&self, kind: RequestKind, status: u16, elapsed: Duration) {
        self.observe_request(kind, CacheResult::None, NO_FAMILY, status);
        self.observe_request_duration(kind, CacheResult::None, elapsed);
    }

    /// The proxy's time for one public request (see
    /// `prerender_request_duration_seconds`).
    pub fn observe_request_duration(&self, kind: RequestKind, cache: CacheResult, took: Duration) {
        self.request_duration_series[kind.index()][cache.index()]
            .get_or_init(|| {
                self.request_duration_seconds
                    .with_label_values(&[kind.as_str(), cache.as_str()])
            })
            .observe(took.as_secs_f64());
    }

    /// One finished render attempt: its outcome and, when it ran in a
    /// browser, how long it took (`None` for renders refused before running,
    /// e.g. `queue-full` or `quota`).
    pub fn observe_render(&self, outcome: RenderOutcome, took: Option<Duration>) {
        self.renders_total
            .with_label_values(&[outcome.as_str()])
            .inc();
        if let Some(took) = took {
            self.render_duration_seconds.observe(took.as_secs_f64());
        }
    }

    /// Copies the refresher's cumulative count of re-renders it started.
    pub fn sync_refreshes(&self, total: u64) {
        self.refreshes_total.sync(total);
    }

    /// A render of `domain` was refused because its quota is used up.
    pub fn observe_quota_exhausted(&self, domain: &str) {
        self.quota_exhausted_total
            .with_label_values(&[self.counter_domain_label(domain).as_str()])
            .inc();
    }

    /// A miss of an unverified bot on `domain` was refused by its budget.
    pub fn observe_unverified_render_refused(&self, domain: &str) {
        self.unverified_renders_refused_total
            .with_label_values(&[self.counter_domain_label(domain).as_str()])
            .inc();
    }

    /// The `domain` label of a counter sample: the domain, or
    /// [`OTHER_DOMAIN_LABEL`] past the label bound.
    fn counter_domain_label(&self, domain: &str) -> String {
        self.domain_labels
            .admit(domain)
            .unwrap_or_else(|| OTHER_DOMAIN_LABEL.to_owned())
    }

    /// The series of `prerender_crawler_verifications_total` for one
    /// crawler and verdict (registered at zero), to keep and increment
    /// without a label lookup per request.
    pub fn crawler_verifications(&self, family: &str, result: &str) -> IntCounter {
        self.crawler_verifications_total
            .with_label_values(&[family, result])
    }

    /// Sets `prerender_crawler_verdicts_cached`.
    pub fn set_crawler_verdicts_cached(&self, verdicts: usize) {
        self.crawler_verdicts_cached.set(clamp_i64(verdicts as u64));
    }

    /// One failed store operation.
    pub fn observe_store_error(&self) {
        self.store_errors_total.inc();
    }

    /// Sets `prerender_cache_entries{domain}`. Past the domain-label bound a
    /// new domain is not exported.
    pub fn set_cache_entries(&self, domain: &str, entries: u64) {
        if let Some(label) = self.domain_labels.admit(domain) {
            self.cache_entries
                .with_label_values(&[label.as_str()])
                .set(clamp_i64(entries));
            self.zero_domain_counters(&label);
        }
    }

    /// A domain the proxy serves (a configured site): its counters are
    /// exported at zero from the start, so `/metrics` lists every family
    /// before anything happened and a rate over them starts at 0.
    pub fn register_domain(&self, domain: &str) {
        if let Some(label) = self.domain_labels.admit(domain) {
            self.zero_domain_counters(&label);
        }
    }

    fn zero_domain_counters(&self, label: &str) {
        let _ = self.quota_exhausted_total.with_label_values(&[label]);
        let _ = self
            .unverified_renders_refused_total
            .with_label_values(&[label]);
    }

    /// Drops a domain's series (the domain left the configuration or was
    /// purged entirely) and frees its label slot.
    pub fn forget_domain(&self, domain: &str) {
        let _ = self.cache_entries.remove_label_values(&[domain]);
        let _ = self.quota_exhausted_total.remove_label_values(&[domain]);
        let _ = self
            .unverified_renders_refused_total
            .remove_label_values(&[domain]);
        self.domain_labels.forget(domain);
    }

    /// Copies the render queue's figures: depth gauges and the cumulative
    /// dedup-join count.
    pub fn sync_queue(&self, stats: &QueueFigures) {
        self.set_queue_depth(stats.live_pending, stats.background_pending);
        self.dedup_joins_total.sync(stats.dedup_joins);
    }

    /// Sets this instance's queue depth gauges.
    pub fn set_queue_depth(&self, live: usize, background: usize) {
        set_by_priority(&self.queue_depth, live as u64, background as u64);
    }

    /// Sets the shared job streams' backlog (split roles).
    pub fn set_shared_queue_depth(&self, live: u64, background: u64) {
        set_by_priority(&self.shared_queue_depth, live, background);
    }

    /// Adds a public thread's change in idle origin connections.
    pub fn add_origin_idle_connections(&self, change: i64) {
        self.origin_idle_connections.add(change);
    }

    /// Copies the browser pool's figures (every count in [`PoolStats`] is
    /// cumulative over the life of the pool, never reset).
    pub fn sync_pool(&self, pool: &PoolStats) {
        self.browsers_alive
            .set(clamp_i64(pool.browsers_alive as u64));
        self.browser_recycles_renders.sync(pool.recycles_renders);
        self.browser_recycles_age.sync(pool.recycles_age);
        self.browser_recycles_rss.sync(pool.recycles_rss);
        self.browser_crashes_total.sync(pool.crashes);
        self.browser_tabs_reused.sync(pool.tabs_reused);
        self.browser_tabs_discarded.sync(pool.tabs_discarded);
        self.tall_layouts_whole
            .sync(pool.tall_layouts.saturating_sub(pool.tall_layouts_capped));
        self.tall_layouts_capped.sync(pool.tall_layouts_capped);
        self.client_redirects_total.sync(pool.client_redirects);
    }

    /// Runs `hook` at the start of every [`Metrics::render_text`], to copy
    /// figures owned elsewhere (e.g. `move |m| m.sync_queue(&queue.stats())`).
    /// The hook must not call `render_text` or `on_scrape`.
    pub fn on_scrape(&self, hook: impl Fn(&Metrics) + Send + Sync + 'static) {
        self.scrape_hooks.lock().push(Box::new(hook));
    }

    /// The Prometheus text exposition of every metric (serve with
    /// [`TEXT_CONTENT_TYPE`]).
    pub fn render_text(&self) -> String {
        for hook in self.scrape_hooks.lock().iter() {
            hook(self);
        }
        let families = self.registry.gather();
        let mut out = Vec::new();
        // The text encoder only fails on an I/O error of its writer, and a
        // Vec never has one.
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn set_by_priority(gauge: &IntGaugeVec, live: u64, background: u64) {
    gauge.with_label_values(&["live"]).set(clamp_i64(live));
    gauge
        .with_label_values(&["background"])
        .set(clamp_i64(background));
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// The metric names of SPEC §5, with the `prerender_` prefix.
    const SPEC_METRICS: &[&str] = &[
        "prerender_requests_total",
        "prerender_render_duration_seconds",
        "prerender_renders_total",
        "prerender_queue_depth",
        "prerender_dedup_joins_total",
        "prerender_browsers_alive",
        "prerender_browser_recycles_total",
        "prerender_browser_crashes_total",
        "prerender_refreshes_total",
        "prerender_store_errors_total",
        "prerender_cache_entries",
        "prerender_quota_exhausted_total",
        "prerender_build_info",
        "prerender_process_cpu_seconds_total",
        "prerender_process_resident_memory_bytes",
        "prerender_process_open_fds",
        "prerender_crawler_verifications_total",
    ];

    /// The value of the sample whose name-and-labels part is exactly `series`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
    }

    #[test]
    fn a_registered_domain_has_its_counters_at_zero() {
        let m = Metrics::new();
        let text = m.render_text();
        assert!(!text.contains("prerender_quota_exhausted_total"), "{text}");
        m.register_domain("shop.example");
        let text = m.render_text();
        for series in [
            "prerender_quota_exhausted_total{domain=\"shop.example\"}",
            "prerender_unverified_renders_refused_total{domain=\"shop.example\"}",
        ] {
            assert_eq!(sample(&text, series), Some(0.0), "{series}\n{text}");
        }
    }

    fn observe_everything(m: &Metrics) {
        m.observe_request(RequestKind::Bot, CacheResult::Hit, "search-engines", 200);
        m.observe_render(RenderOutcome::Ok, Some(Duration::from_millis(1200)));
        m.sync_refreshes(1);
        m.observe_quota_exhausted("example.com");
        m.crawler_verifications("googlebot", "failed").inc();
        m.observe_store_error();
        m.set_cache_entries("example.com", 42);
        m.sync_queue(&QueueFigures {
            live_pending: 3,
            background_pending: 7,
            dedup_joins: 5,
        });
        m.sync_pool(&PoolStats {
            browsers_alive: 2,
            recycles_renders: 4,
            recycles_age: 1,
            recycles_rss: 2,
            crashes: 1,
            tabs_reused: 9,
            tabs_discarded: 2,
            tall_layouts: 3,
            tall_layouts_capped: 1,
            client_redirects: 1,
            ..PoolStats::default()
        });
    }

    #[test]
    fn every_spec_metric_is_exported_after_one_observation_each() {
        let m = Metrics::new();
        observe_everything(&m);
        let text = m.render_text();
        for name in SPEC_METRICS {
            assert!(
                text.lines().any(|l| l.starts_with("# TYPE ")
                    && l.split_whitespace().nth(2) == Some(*name)),
                "no # TYPE line for {name} in\n{text}"
            );
            assert!(
                text.lines()
                    .any(|l| !l.starts_with('#') && l.starts_with(name)),
                "no sample for {name}"
            );
        }
    }

    #[test]
    fn the_grafana_dashboard_only_queries_exported_metrics() {
        let dashboard = include_str!("../docs/grafana-dashboard.json");
        let m = Metrics::new();
        observe_everything(&m);
        let text = m.render_text();
        let names = regex::Regex::new(r"prerender_[a-z_]+").unwrap();
        let mut seen = 0;
        for found in names.find_iter(dashboard) {
            let name = found.as_str();
            let name = name.strip_suffix("_bucket").unwrap_or(name);
            if name == "prerender_proxy" || name == "prerender_" {
                continue;
            }
            seen += 1;
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "the dashboard queries {name}, which is not exported"
            );
        }
        assert!(seen >= 10, "the dashboard queries only {seen} metrics");
    }

    #[test]
    fn exposition_text_is_well_formed() {
        let m = Metrics::new();
        observe_everything(&m);
        let text = m.render_text();
        let mut typed = HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let name = parts.next().unwrap();
                let kind = parts.next().unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(name.starts_with("prerender_"), "{line}");
                typed.insert(name.to_owned());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            assert!(!line.starts_with('#'), "stray comment {line}");
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line}"));
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "sample before its # TYPE: {line}");
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                }
            }
        }
    }

    #[test]
    fn request_labels_are_bounded() {
        let m = Metrics::new();
        m.observe_request(RequestKind::Bot, CacheResult::Miss, "ai-training", 404);
        m.observe_request(RequestKind::Bot, CacheResult::Miss, "ai-training", 410);
        m.observe_request(RequestKind::Bot, CacheResult::Error, "/etc/bots/mine", 503);
        m.observe_request(RequestKind::Bot, CacheResult::Hit, "woothee", 301);
        m.observe_request(RequestKind::Human, CacheResult::None, NO_FAMILY, 101);
        m.observe_request(RequestKind::Rejected, CacheResult::None, NO_FAMILY, 421);
        let text = m.render_text();
        for (series, value) in [
            (
                r#"prerender_requests_total{cache="miss",family="ai-training",kind="bot",status_class="4xx"}"#,
                2.0,
            ),
            (
                r#"prerender_requests_total{cache="error",family="other",kind="bot",status_class="5xx"}"#,
                1.0,
            ),
            (
                r#"prerender_requests_total{cache="hit",family="woothee",kind="bot",status_class="3xx"}"#,
                1.0,
            ),
            (
                r#"prerender_requests_total{cache="none",family="none",kind="human",status_class="1xx"}"#,
                1.0,
            ),
            (
                r#"prerender_requests_total{cache="none",family="none",kind="rejected",status_class="4xx"}"#,
                1.0,
            ),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series}\n{text}");
        }
        let families: HashSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("prerender_requests_total{"))
            .filter_map(|l| l.split("family=\"").nth(1)?.split('"').next())
            .collect();
        assert!(
            families.iter().all(|f| FAMILY_LABELS.contains(f)),
            "{families:?}"
        );
        for family in crate::bot::Family::ALL {
            assert!(FAMILY_LABELS.contains(&family.name()), "{}", family.name());
        }
    }

    #[test]
    fn figures_land_in_the_right_series() {
        let m = Metrics::new();
        observe_everything(&m);
        let text = m.render_text();
        let expect = [
            (
                r#"prerender_requests_total{cache="hit",family="search-engines",kind="bot",status_class="2xx"}"#,
                1.0,
            ),
            (r#"prerender_renders_total{outcome="ok"}"#, 1.0),
            (r#"prerender_renders_total{outcome="browser-crash"}"#, 0.0),
            (r#"prerender_render_duration_seconds_bucket{le="1"}"#, 0.0),
            (r#"prerender_render_duration_seconds_bucket{le="1.5"}"#, 1.0),
            (r#"prerender_render_duration_seconds_bucket{le="30"}"#, 1.0),
            ("prerender_render_duration_seconds_count", 1.0),
            (r#"prerender_queue_depth{priority="live"}"#, 3.0),
            (r#"prerender_queue_depth{priority="background"}"#, 7.0),
            ("prerender_dedup_joins_total", 5.0),
            ("prerender_browsers_alive", 2.0),
            (r#"prerender_browser_recycles_total{reason="renders"}"#, 4.0),
            (r#"prerender_browser_recycles_total{reason="age"}"#, 1.0),
            (r#"prerender_browser_recycles_total{reason="rss"}"#, 2.0),
            ("prerender_browser_crashes_total", 1.0),
            (r#"prerender_browser_tabs_total{outcome="reused"}"#, 9.0),
            (r#"prerender_browser_tabs_total{outcome="discarded"}"#, 2.0),
            ("prerender_refreshes_total", 1.0),
            ("prerender_store_errors_total", 1.0),
            (r#"prerender_cache_entries{domain="example.com"}"#, 42.0),
            (
                r#"prerender_quota_exhausted_total{domain="example.com"}"#,
                1.0,
            ),
        ];
        for (series, want) in expect {
            assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
        }
    }

    #[test]
    fn request_durations_land_in_their_kind_and_cache_series() {
        let m = Metrics::new();
        let text = m.render_text();
        // Every outcome a request can have is exported from the start.
        for (kind, cache) in REQUEST_OUTCOMES {
            let series = format!(
                r#"prerender_request_duration_seconds_count{{cache="{}",kind="{}"}}"#,
                cache.as_str(),
                kind.as_str()
            );
            assert_eq!(sample(&text, &series), Some(0.0), "{series} in\n{text}");
        }
        m.observe_request_duration(
            RequestKind::Bot,
            CacheResult::Hit,
            Duration::from_micros(300),
        );
        m.observe_request_duration(
            RequestKind::Bot,
            CacheResult::Hit,
            Duration::from_micros(1800),
        );
        m.observe_request_duration(
            RequestKind::Human,
            CacheResult::None,
            Duration::from_secs(3),
        );
        let text = m.render_text();
        let hit = |le: &str| {
            sample(
                &text,
                &format!(
                    r#"prerender_request_duration_seconds_bucket{{cache="hit",kind="bot",le="{le}"}}"#
                ),
            )
        };
        assert_eq!(hit("0.00025"), Some(0.0));
        assert_eq!(hit("0.0005"), Some(1.0));
        assert_eq!(hit("0.0015"), Some(1.0));
        assert_eq!(hit("0.002"), Some(2.0));
        assert_eq!(
            sample(
                &text,
                r#"prerender_request_duration_seconds_count{cache="none",kind="human"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"prerender_request_duration_seconds_count{cache="miss",kind="bot"}"#
            ),
            Some(0.0)
        );
        // A pair outside the usual ones still gets its own series.
        m.observe_request_duration(RequestKind::Human, CacheResult::Hit, Duration::ZERO);
        assert_eq!(
            sample(
                &m.render_text(),
                r#"prerender_request_duration_seconds_count{cache="hit",kind="human"}"#
            ),
            Some(1.0)
        );
    }

    #[test]
    fn synced_counters_add_only_growth_and_never_go_down() {
        let m = Metrics::new();
        let pool = |crashes| PoolStats {
            crashes,
            ..PoolStats::default()
        };
        m.sync_pool(&pool(3));
        m.sync_pool(&pool(3));
        assert_eq!(
            sample(&m.render_text(), "prerender_browser_crashes_total"),
            Some(3.0)
        );
        m.sync_pool(&pool(5));
        // An older snapshot arriving late changes nothing.
        m.sync_pool(&pool(4));
        assert_eq!(
            sample(&m.render_text(), "prerender_browser_crashes_total"),
            Some(5.0)
        );
    }

    #[test]
    fn scrape_hooks_run_before_encoding() {
        let m = Metrics::new();
        let joins = Arc::new(AtomicU64::new(0));
        let source = joins.clone();
        m.on_scrape(move |m| {
            m.sync_queue(&QueueFigures {
                dedup_joins: source.load(Ordering::Relaxed),
                live_pending: 2,
                ..QueueFigures::default()
            })
        });
        joins.store(9, Ordering::Relaxed);
        let text = m.render_text();
        assert_eq!(sample(&text, "prerender_dedup_joins_total"), Some(9.0));
        assert_eq!(
            sample(&text, r#"prerender_queue_depth{priority="live"}"#),
            Some(2.0)
        );
        // The shared backlog is a series of its own: an instance's own
        // queue and the streams' backlog never overwrite each other.
        assert_eq!(
            sample(&text, r#"prerender_shared_queue_depth{priority="live"}"#),
            Some(0.0)
        );
        m.set_shared_queue_depth(5, 1);
        let text = m.render_text();
        assert_eq!(
            sample(&text, r#"prerender_shared_queue_depth{priority="live"}"#),
            Some(5.0)
        );
        assert_eq!(
            sample(&text, r#"prerender_queue_depth{priority="live"}"#),
            Some(2.0)
        );
    }

    #[test]
    fn domain_labels_are_bounded() {
        let m = Metrics::with_max_domain_labels(2);
        m.set_cache_entries("a.example", 1);
        m.set_cache_entries("b.example", 2);
        m.set_cache_entries("c.example", 3);
        m.observe_quota_exhausted("d.example");
        let text = m.render_text();
        assert_eq!(
            sample(&text, r#"prerender_cache_entries{domain="b.example"}"#),
            Some(2.0)
        );
        assert!(!text.contains("c.example"), "{text}");
        assert_eq!(
            sample(&text, r#"prerender_quota_exhausted_total{domain="_other"}"#),
            Some(1.0)
        );
        m.forget_domain("a.example");
        m.set_cache_entries("c.example", 3);
        let text = m.render_text();
        assert!(!text.contains("a.example"), "{text}");
        assert_eq!(
            sample(&text, r#"prerender_cache_entries{domain="c.example"}"#),
            Some(3.0)
        );
    }

    #[test]
    fn render_failure_reasons_map_to_fixed_outcomes() {
        assert_eq!(
            RenderOutcome::from_reason("timeout"),
            RenderOutcome::Timeout
        );
        assert_eq!(
            RenderOutcome::from_reason("browser-crash"),
            RenderOutcome::BrowserCrash
        );
        assert_eq!(RenderOutcome::from_reason("quota"), RenderOutcome::Quota);
        assert_eq!(RenderOutcome::from_reason("ok"), RenderOutcome::Error);
        assert_eq!(
            RenderOutcome::from_reason("something-new"),
            RenderOutcome::Error
        );
        for o in RenderOutcome::ALL {
            if o != RenderOutcome::Ok {
                assert_eq!(RenderOutcome::from_reason(o.as_str()), o);
            }
        }
    }

    #[test]
    fn pool_stats_land_in_their_series() {
        let stats = PoolStats {
            browsers_alive: 2,
            recycles_renders: 5,
            recycles_age: 1,
            recycles_rss: 3,
            crashes: 4,
            tabs_reused: 7,
            tabs_discarded: 2,
            tall_layouts: 5,
            tall_layouts_capped: 2,
            client_redirects: 3,
            ..PoolStats::default()
        };
        let m = Metrics::new();
        m.sync_pool(&stats);
        let text = m.render_text();
        for (series, value) in [
            ("prerender_browsers_alive", 2.0),
            (r#"prerender_browser_recycles_total{reason="renders"}"#, 5.0),
            (r#"prerender_browser_recycles_total{reason="age"}"#, 1.0),
            (r#"prerender_browser_recycles_total{reason="rss"}"#, 3.0),
            ("prerender_browser_crashes_total", 4.0),
            (r#"prerender_browser_tabs_total{outcome="reused"}"#, 7.0),
            (r#"prerender_browser_tabs_total{outcome="discarded"}"#, 2.0),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series}");
        }
        assert_eq!(
            sample(&text, r#"prerender_tall_layouts_total{capped="false"}"#),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, r#"prerender_tall_layouts_total{capped="true"}"#),
            Some(2.0)
        );
        assert_eq!(sample(&text, "prerender_client_redirects_total"), Some(3.0));
    }

    #[test]
    fn two_instances_do_not_share_a_registry() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.observe_store_error();
        assert_eq!(
            sample(&b.render_text(), "prerender_store_errors_total"),
            Some(0.0)
        );
    }
}
