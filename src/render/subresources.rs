//! Per-site in-process cache of static subresources (scripts, styles, JSON
//! the origin marks cacheable), fed to the browser through interception so
//! that later renders do not download the same bundles from the origin again.
//!
//! Entries are keyed by site and URL, so two sites never share an entry; the
//! whole cache is bounded in bytes and evicts the least recently used first.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::origin::OriginResponse;

/// Freshness of a script or stylesheet that has validators but no max-age.
pub(crate) const DEFAULT_STATIC_TTL: Duration = Duration::from_secs(300);
/// A single entry may use at most this share of the cache.
const MAX_ENTRY_SHARE: usize = 4;
/// Per-entry bookkeeping counted against the bound.
const ENTRY_OVERHEAD_BYTES: usize = 256;

/// The kinds of subresource the cache may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StaticKind {
    /// Scripts and stylesheets: cached unless the origin forbids it.
    Code,
    /// Data (XHR/fetch): cached only with an explicit positive max-age.
    Data,
}

struct Entry {
    response: OriginResponse,
    expires: Instant,
    size: usize,
    tick: u64,
}

/// LRU cache bounded in bytes.
pub(crate) struct SubresourceCache {
    capacity: usize,
    used: usize,
    tick: u64,
    entries: HashMap<String, Entry>,
    by_age: BTreeMap<u64, String>,
    hits: u64,
}

impl SubresourceCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            used: 0,
            tick: 0,
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
            hits: 0,
        }
    }

    pub(crate) fn key(site: &str, url: &str) -> String {
        format!("{site} {url}")
    }

    pub(crate) fn get(&mut self, key: &str) -> Option<OriginResponse> {
        let now = Instant::now();
        let expired = match self.entries.get(key) {
            None => return None,
            Some(entry) => entry.expires <= now,
        };
        if expired {
            self.remove(key);
            return None;
        }
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.get_mut(key)?;
        self.by_age.remove(&entry.tick);
        entry.tick = tick;
        self.by_age.insert(tick, key.to_string());
        self.hits += 1;
        Some(entry.response.clone())
    }

    /// Stores the response when its headers allow it; returns whether it was stored.
    pub(crate) fn insert(
        &mut self,
        key: String,
        kind: StaticKind,
        response: &OriginResponse,
    ) -> bool {
        let Some(ttl) = freshness(kind, response) else {
            return false;
        };
        let size = response.body.len()
            + response
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>()
            + key.len()
            + ENTRY_OVERHEAD_BYTES;
        if size > self.capacity / MAX_ENTRY_SHARE {
            return false;
        }
        self.remove(&key);
        while self.used + size > self.capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.used -= e.size;
            }
        }
        self.tick += 1;
        self.by_age.insert(self.tick, key.clone());
        self.used += size;
        self.entries.insert(
            key,
            Entry {
                response: OriginResponse {
                    status: response.status,
                    headers: response.headers.clone(),
                    body: Bytes::clone(&response.body),
                },
                expires: Instant::now() + ttl,
                size,
                tick: self.tick,
            },
        );
        true
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.by_age.remove(&e.tick);
            self.used -= e.size;
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.used
    }

    pub(crate) fn hits(&self) -> u64 {
        self.hits
    }
}

/// How long a response may be served from the cache, if at all.
fn freshness(kind: StaticKind, response: &OriginResponse) -> Option<Duration> {
    if response.status != 200 {
        return None;
    }
    if response.header("set-cookie").is_some() || response.header("vary") == Some("*") {
        return None;
    }
    let cache_control = response
        .header("cache-control")
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut max_age = None;
    for directive in cache_control.split(',').map(str::trim) {
        match directive {
            "no-store" | "no-cache" | "private" => return None,
            d => {
                if let Some(v) = d
                    .strip_prefix("max-age=")
                    .or_else(|| d.strip_prefix("s-maxage="))
                {
                    max_age = v.trim_matches('"').parse::<u64>().ok();
                }
            }
        }
    }
    match (kind, max_age) {
        (_, Some(0)) => None,
        (_, Some(secs)) => Some(Duration::from_secs(secs)),
        (StaticKind::Code, None)
            if response.header("etag").is_some() || response.header("last-modified").is_some() =>
        {
            Some(DEFAULT_STATIC_TTL)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(body: &str, headers: &[(&str, &str)]) -> OriginResponse {
        OriginResponse {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn caches_only_what_the_origin_allows() {
        let mut c = SubresourceCache::new(1 << 20);
        let ok = resp("x", &[("cache-control", "public, max-age=60")]);
        assert!(c.insert("a".into(), StaticKind::Data, &ok));
        assert!(!c.insert("b".into(), StaticKind::Data, &resp("x", &[])));
        assert!(c.insert(
            "b".into(),
            StaticKind::Code,
            &resp("x", &[("etag", "\"1\"")])
        ));
        assert!(!c.insert(
            "c".into(),
            StaticKind::Code,
            &resp("x", &[("cache-control", "no-store")])
        ));
        assert!(!c.insert(
            "d".into(),
            StaticKind::Code,
            &resp("x", &[("cache-control", "private, max-age=60")])
        ));
        assert!(!c.insert(
            "e".into(),
            StaticKind::Code,
            &resp("x", &[("cache-control", "max-age=0")])
        ));
        assert!(c.get("a").is_some());
        assert!(c.get("c").is_none());
        assert_eq!(c.hits(), 1);
    }

    #[test]
    fn stays_within_its_byte_bound_evicting_least_recently_used() {
        let cap = 16 * 1024;
        let mut c = SubresourceCache::new(cap);
        let body = "y".repeat(1000);
        let r = resp(&body, &[("cache-control", "max-age=60")]);
        for i in 0..40 {
            assert!(c.insert(format!("k{i}"), StaticKind::Code, &r));
            // Keep k0 hot.
            let _ = c.get("k0");
            assert!(c.bytes() <= cap);
        }
        assert!(c.get("k0").is_some());
        assert!(c.get("k1").is_none());
        assert!(c.get("k39").is_some());
        // Too large for one entry.
        let big = resp(&"z".repeat(cap), &[("cache-control", "max-age=60")]);
        assert!(!c.insert("big".into(), StaticKind::Code, &big));
    }
}
