//! Per-domain figures for `GET /api/v1/stats` and the dashboard: cache
//! results and recent render times, counted in process since start.
//!
//! What the proxy does not count itself (entries, bytes, quota use, next
//! refresh) comes from the store and the refresher at snapshot time as a
//! [`DomainExtra`] per domain.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};

/// Recent render times kept per domain for the average and p95: enough for
/// a stable p95, small enough (8 KiB a domain) to keep for every domain.
pub const DEFAULT_RENDER_SAMPLES: usize = 1024;

/// Failed renders remembered per domain for the dashboard, newest last.
pub const RECENT_FAILURES: usize = 10;
/// Longest path kept with a failure (longer ones are cut, marked with `…`).
const FAILURE_PATH_CHARS: usize = 200;

/// Most domains counted. Domains come from allowed Host headers, unbounded
/// in "any host" mode; events of further domains are dropped (and counted in
/// [`DomainStats::untracked_events`]).
pub const DEFAULT_MAX_DOMAINS: usize = 1000;

/// Figures of one domain supplied by the store and the refresher.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainExtra {
    pub entries: u64,
    /// `None` = no count limit (the store's bytes bound the domain).
    pub max_entries: Option<u64>,
    pub bytes: u64,
    pub renders_this_month: u64,
    /// `None` = unlimited.
    pub monthly_renders: Option<u64>,
    /// When the refresher next re-renders a page of this domain.
    pub next_refresh: Option<SystemTime>,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    errors: AtomicU64,
    renders: AtomicU64,
    /// Pages stored by this instance and their HTML bytes: the average
    /// page size that turns an entry count into a storage estimate.
    pages_stored: AtomicU64,
    page_bytes_stored: AtomicU64,
    /// Most recent render times in milliseconds, oldest first.
    recent_ms: Mutex<VecDeque<u32>>,
    /// Crawler requests by family (a `metrics::FAMILY_LABELS` name, so
    /// the map stays small).
    families: Mutex<BTreeMap<&'static str, u64>>,
    /// The last failed renders: when, which path, why.
    failures: Mutex<VecDeque<(SystemTime, String, &'static str)>>,
}

/// In-process per-domain counters. Cheap on the request path: a read lock
/// and an atomic add for a domain already known.
pub struct DomainStats {
    domains: RwLock<HashMap<String, Arc<Counters>>>,
    max_domains: usize,
    render_samples: usize,
    untracked_events: AtomicU64,
}

impl Default for DomainStats {
    fn default() -> Self {
        DomainStats::new(DEFAULT_MAX_DOMAINS, DEFAULT_RENDER_SAMPLES)
    }
}

impl DomainStats {
    pub fn new(max_domains: usize, render_samples: usize) -> Self {
        DomainStats {
            domains: RwLock::new(HashMap::new()),
            max_domains,
            render_samples: render_samples.max(1),
            untracked_events: AtomicU64::new(0),
        }
    }

    pub fn record_hit(&self, domain: &str) {
        self.count(domain, |c| &c.hits);
    }

    pub fn record_miss(&self, domain: &str) {
        self.count(domain, |c| &c.misses);
    }

    pub fn record_stale(&self, domain: &str) {
        self.count(domain, |c| &c.stale);
    }

    /// A bot request whose render failed (answered fail-open or 503).
    pub fn record_error(&self, domain: &str) {
        self.count(domain, |c| &c.errors);
    }

    /// A crawler request of `family` (any name; those outside
    /// `metrics::FAMILY_LABELS` count as `other`).
    pub fn record_family(&self, domain: &str, family: &str) {
        let label = crate::metrics::FAMILY_LABELS
            .iter()
            .find(|f| **f == family)
            .copied()
            .unwrap_or("other");
        if let Some(counters) = self.counters(domain) {
            *counters.families.lock().entry(label).or_default() += 1;
        }
    }

    /// A crawler request whose render failed, with the
    /// `X-Prerender-Error` reason; the last [`RECENT_FAILURES`] are kept.
    pub fn record_failure(&self, domain: &str, path: &str, reason: &'static str) {
        let Some(counters) = self.counters(domain) else {
            return;
        };
        let path = match path.char_indices().nth(FAILURE_PATH_CHARS) {
            Some((cut, _)) => format!("{}…", &path[..cut]),
            None => path.to_string(),
        };
        let mut failures = counters.failures.lock();
        if failures.len() >= RECENT_FAILURES {
            failures.pop_front();
        }
        failures.push_back((SystemTime::now(), path, reason));
    }

    /// One finished render of `domain` (live, refresh or warm) and its time.
    /// A page of `bytes` was stored for `domain`.
    pub fn record_stored(&self, domain: &str, bytes: u64) {
        if let Some(counters) = self.counters(domain) {
            counters.pages_stored.fetch_add(1, Ordering::Relaxed);
            counters
                .page_bytes_stored
                .fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Average size of the pages this instance stored for `domain`.
    pub fn average_page_bytes(&self, domain: &str) -> Option<u64> {
        let domains = self.domains.read();
        let c = domains.get(domain)?;
        let n = c.pages_stored.load(Ordering::Relaxed);
        (n > 0).then(|| c.page_bytes_stored.load(Ordering::Relaxed) / n)
    }

    pub fn record_render(&self, domain: &str, took: Duration) {
        let Some(counters) = self.counters(domain) else {
            return;
        };
        counters.renders.fetch_add(1, Ordering::Relaxed);
        let ms = u32::try_from(took.as_millis()).unwrap_or(u32::MAX);
        let mut recent = counters.recent_ms.lock();
        if recent.len() >= self.render_samples {
            recent.pop_front();
        }
        recent.push_back(ms);
    }

    /// Events dropped because [`DEFAULT_MAX_DOMAINS`] (or the configured
    /// bound) domains were already tracked.
    pub fn untracked_events(&self) -> u64 {
        self.untracked_events.load(Ordering::Relaxed)
    }

    /// Stops counting a domain (it left the configuration).
    pub fn forget(&self, domain: &str) {
        self.domains.write().remove(domain);
    }

    /// The `GET /api/v1/stats` body: every domain counted here or present in
    /// `extra`. Figures nobody supplied are `null`; `hit_rate` is
    /// (hits + stale) / (hits + stale + misses + errors), 0 before any bot
    /// request; `avg_render_ms` and `p95_render_ms` cover the most recent
    /// renders and are `null` before the first.
    pub fn to_json(&self, extra: &BTreeMap<String, DomainExtra>) -> Value {
        let counted: BTreeMap<String, Arc<Counters>> = self
            .domains
            .read()
            .iter()
            .map(|(d, c)| (d.clone(), c.clone()))
            .collect();
        let empty = Counters::default();
        let mut domains = serde_json::Map::new();
        let names: BTreeSet<&String> = counted.keys().chain(extra.keys()).collect();
        for name in names {
            let c = counted.get(name).map(|c| &**c).unwrap_or(&empty);
            domains.insert(name.clone(), domain_json(c, extra.get(name)));
        }
        json!({ "domains": domains })
    }

    fn count(&self, domain: &str, field: impl Fn(&Counters) -> &AtomicU64) {
        if let Some(counters) = self.counters(domain) {
            field(&counters).fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counters(&self, domain: &str) -> Option<Arc<Counters>> {
        if let Some(c) = self.domains.read().get(domain) {
            return Some(c.clone());
        }
        let mut domains = self.domains.write();
        if let Some(c) = domains.get(domain) {
            return Some(c.clone());
        }
        if domains.len() >= self.max_domains {
            self.untracked_events.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let c = Arc::new(Counters::default());
        domains.insert(domain.to_owned(), c.clone());
        Some(c)
    }
}

fn domain_json(c: &Counters, extra: Option<&DomainExtra>) -> Value {
    let hits = c.hits.load(Ordering::Relaxed);
    let misses = c.misses.load(Ordering::Relaxed);
    let stale = c.stale.load(Ordering::Relaxed);
    let errors = c.errors.load(Ordering::Relaxed);
    let renders = c.renders.load(Ordering::Relaxed);
    let served_from_cache = hits + stale;
    let lookups = served_from_cache + misses + errors;
    let hit_rate = if lookups == 0 {
        0.0
    } else {
        served_from_cache as f64 / lookups as f64
    };
    let (avg, p95) = render_times(&c.recent_ms.lock());
    let families: serde_json::Map<String, Value> = c
        .families
        .lock()
        .iter()
        .map(|(f, n)| (f.to_string(), json!(n)))
        .collect();
    let failures: Vec<Value> = c
        .failures
        .lock()
        .iter()
        .rev()
        .map(|(at, path, reason)| json!({ "at": rfc3339(*at), "path": path, "reason": reason }))
        .collect();
    json!({
        "families": families,
        "recent_failures": failures,
        "hits": hits,
        "misses": misses,
        "stale": stale,
        "errors": errors,
        "renders": renders,
        "renders_saved": served_from_cache,
        "hit_rate": hit_rate,
        "entries": extra.map(|e| e.entries),
        "max_entries": extra.map(|e| e.max_entries),
        "bytes": extra.map(|e| e.bytes),
        "avg_render_ms": avg,
        "p95_render_ms": p95,
        "renders_this_month": extra.map(|e| e.renders_this_month),
        "monthly_renders": extra.and_then(|e| e.monthly_renders),
        "next_refresh": extra.and_then(|e| e.next_refresh).and_then(rfc3339),
    })
}

/// Mean (rounded) and nearest-rank 95th percentile of `samples`, in ms.
fn render_times(samples: &VecDeque<u32>) -> (Option<u64>, Option<u64>) {
    if samples.is_empty() {
        return (None, None);
    }
    let sum: u64 = samples.iter().map(|&ms| u64::from(ms)).sum();
    let n = samples.len() as u64;
    let avg = (sum + n / 2) / n;
    let mut sorted: Vec<u32> = samples.iter().copied().collect();
    sorted.sort_unstable();
    // Nearest rank: the smallest value with at least 95 % of samples at or below it.
    let rank = (sorted.len() * 95).div_ceil(100).max(1);
    (Some(avg), Some(u64::from(sorted[rank - 1])))
}

fn rfc3339(at: SystemTime) -> Option<String> {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// The fields of a domain's figures in `/api/v1/stats` (SPEC §6), which
/// the dashboard shows.
#[cfg(test)]
pub(crate) const DOMAIN_FIELDS: [&str; 17] = [
    "hits",
    "misses",
    "stale",
    "errors",
    "renders",
    "renders_saved",
    "hit_rate",
    "entries",
    "max_entries",
    "bytes",
    "avg_render_ms",
    "p95_render_ms",
    "renders_this_month",
    "monthly_renders",
    "next_refresh",
    "families",
    "recent_failures",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_the_last_failures_per_domain() {
        let s = DomainStats::default();
        for _ in 0..3 {
            s.record_family("a.example", "search-engines");
        }
        s.record_family("a.example", "ai-training");
        s.record_family("a.example", "/etc/bots/mine");
        for i in 0..12 {
            s.record_failure("a.example", &format!("/p/{i}"), "timeout");
        }
        s.record_failure("a.example", &"x".repeat(500), "origin-error");
        let v = s.to_json(&BTreeMap::new());
        let a = &v["domains"]["a.example"];
        assert_eq!(
            a["families"],
            json!({"search-engines": 3, "ai-training": 1, "other": 1})
        );
        let failures = a["recent_failures"].as_array().unwrap();
        assert_eq!(failures.len(), RECENT_FAILURES);
        assert_eq!(failures[0]["reason"], "origin-error", "newest first");
        assert_eq!(
            failures[0]["path"].as_str().unwrap().chars().count(),
            FAILURE_PATH_CHARS + 1
        );
        assert_eq!(failures[1]["path"], "/p/11");
        assert_eq!(failures[9]["path"], "/p/3");
        assert!(failures[0]["at"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn counts_cache_results_per_domain() {
        let s = DomainStats::default();
        for _ in 0..6 {
            s.record_hit("a.example");
        }
        s.record_stale("a.example");
        s.record_miss("a.example");
        s.record_error("a.example");
        s.record_miss("b.example");
        let v = s.to_json(&BTreeMap::new());
        let a = &v["domains"]["a.example"];
        assert_eq!(a["hits"], 6);
        assert_eq!(a["stale"], 1);
        assert_eq!(a["misses"], 1);
        assert_eq!(a["errors"], 1);
        assert_eq!(a["renders_saved"], 7);
        assert_eq!(a["hit_rate"], 7.0 / 9.0);
        let b = &v["domains"]["b.example"];
        assert_eq!(b["hits"], 0);
        assert_eq!(b["misses"], 1);
        assert_eq!(b["hit_rate"], 0.0);
        assert_eq!(b["renders_saved"], 0);
    }

    #[test]
    fn snapshot_has_every_spec_field() {
        let s = DomainStats::default();
        s.record_hit("a.example");
        let v = s.to_json(&BTreeMap::new());
        let a = v["domains"]["a.example"].as_object().unwrap();
        let mut keys: Vec<&str> = a.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = DOMAIN_FIELDS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
        assert!(a["avg_render_ms"].is_null());
        assert!(a["p95_render_ms"].is_null());
        assert!(a["entries"].is_null());
    }

    #[test]
    fn render_times_give_average_and_p95() {
        let s = DomainStats::default();
        // 1..=100 ms: mean 50.5 → 51 (rounded), p95 = 95.
        for ms in (1..=100).rev() {
            s.record_render("a.example", Duration::from_millis(ms));
        }
        let v = s.to_json(&BTreeMap::new());
        let a = &v["domains"]["a.example"];
        assert_eq!(a["renders"], 100);
        assert_eq!(a["avg_render_ms"], 51);
        assert_eq!(a["p95_render_ms"], 95);

        let one = DomainStats::default();
        one.record_render("b.example", Duration::from_millis(1234));
        let v = one.to_json(&BTreeMap::new());
        assert_eq!(v["domains"]["b.example"]["avg_render_ms"], 1234);
        assert_eq!(v["domains"]["b.example"]["p95_render_ms"], 1234);
    }

    #[test]
    fn render_samples_are_bounded_to_the_most_recent() {
        let s = DomainStats::new(10, 4);
        for ms in [5000, 5000, 5000, 10, 20, 30, 40] {
            s.record_render("a.example", Duration::from_millis(ms));
        }
        let v = s.to_json(&BTreeMap::new());
        let a = &v["domains"]["a.example"];
        assert_eq!(a["renders"], 7);
        assert_eq!(a["avg_render_ms"], 25);
        assert_eq!(a["p95_render_ms"], 40);
    }

    #[test]
    fn tracked_domains_are_bounded() {
        let s = DomainStats::new(2, 8);
        s.record_hit("a.example");
        s.record_hit("b.example");
        s.record_hit("c.example");
        s.record_render("c.example", Duration::from_millis(5));
        s.record_hit("a.example");
        let v = s.to_json(&BTreeMap::new());
        let domains = v["domains"].as_object().unwrap();
        assert_eq!(domains.len(), 2);
        assert_eq!(domains["a.example"]["hits"], 2);
        assert!(!domains.contains_key("c.example"));
        assert_eq!(s.untracked_events(), 2);
        s.forget("b.example");
        s.record_hit("c.example");
        let v = s.to_json(&BTreeMap::new());
        assert_eq!(v["domains"]["c.example"]["hits"], 1);
        assert!(v["domains"].get("b.example").is_none());
    }

    #[test]
    fn extra_figures_are_merged_and_configured_domains_listed() {
        let s = DomainStats::default();
        s.record_miss("a.example");
        s.record_render("a.example", Duration::from_millis(800));
        let mut extra = BTreeMap::new();
        extra.insert(
            "a.example".to_owned(),
            DomainExtra {
                entries: 12,
                max_entries: Some(50),
                bytes: 345_678,
                renders_this_month: 3,
                monthly_renders: Some(1000),
                next_refresh: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
            },
        );
        extra.insert(
            "quiet.example".to_owned(),
            DomainExtra {
                max_entries: Some(500),
                ..DomainExtra::default()
            },
        );
        let v = s.to_json(&extra);
        let a = &v["domains"]["a.example"];
        assert_eq!(a["misses"], 1);
        assert_eq!(a["renders"], 1);
        assert_eq!(a["entries"], 12);
        assert_eq!(a["max_entries"], 50);
        assert_eq!(a["bytes"], 345_678);
        assert_eq!(a["renders_this_month"], 3);
        assert_eq!(a["monthly_renders"], 1000);
        assert_eq!(a["next_refresh"], "2027-01-15T08:00:00Z");
        let q = &v["domains"]["quiet.example"];
        assert_eq!(q["hits"], 0);
        assert_eq!(q["hit_rate"], 0.0);
        assert_eq!(q["max_entries"], 500);
        assert!(q["monthly_renders"].is_null(), "unlimited is null");
        assert!(q["next_refresh"].is_null());
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let s = Arc::new(DomainStats::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        s.record_hit(&format!("d{}.example", (t + i) % 3));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let v = s.to_json(&BTreeMap::new());
        let total: u64 = v["domains"]
            .as_object()
            .unwrap()
            .values()
            .map(|d| d["hits"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 4000);
    }
}
