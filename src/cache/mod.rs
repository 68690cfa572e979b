//! Cache keys and the page store: where rendered pages live (Redis or an
//! embedded in-process store, same semantics) and the coordination that
//! lets several instances share one Redis (render locks, per-domain
//! indexes, render quota, purge notices). Nothing here speaks HTTP or
//! renders.
//!
//! # Key layout (Redis)
//!
//! `<key>` below is a [`CacheKey`]'s suffix `<domain>:<path>`, or
//! `<domain>:m:<path>` for the mobile variant; `<path>` is normalised and
//! may end with the kept query (`/products?page=2`).
//!
//! | key | type | holds | lifetime |
//! |---|---|---|---|
//! | `render:<key>` | string | the complete rendered HTML (`redis-cli GET` shows the page) | page TTL (cache TTL + the plan's stale window; 404/410: `error_ttl`) |
//! | `render-meta:<key>` | hash | `status`, `headers` (JSON list of `[name, value]`), `etag`, `rendered_at`, `expires_at` (Unix ms), `settings_hash`, `content_hash`; on a Redis Cluster also `html_sha256` (hex SHA-256 of the HTML it belongs to) | same TTL, written with the page in one MULTI/EXEC (on a Redis Cluster: right after the HTML) |
//! | `render-lock:<key>` | string | owner id of the instance rendering the page (`SET NX PX`) | a short lease renewed while the render runs; released by an owner-checked script |
//! | `render-index:<domain>` | sorted set | member `render:<key>`, score = last access (Unix ms): LRU order for `max_entries` eviction (pages with status ≥ 400 go first) | no TTL; members of expired pages are dropped when noticed |
//! | `render-due:<domain>` | sorted set | member `render:<key>`, score = next refresh due (Unix ms) | no TTL; claimed members are removed (each refreshed once cluster-wide) |
//! | `render-domains` | set | every domain with cached pages | no TTL |
//! | `render-quota:<domain>:<YYYY-MM>` | string (counter) | renders of the domain in that UTC month | 32 days |
//! | `render-unverified:<site>:<minute>` | string (counter) | renders of new pages for bots that are not verified crawlers (`verify_crawlers = "enforce"`), per site (`_any` for the any-host site) and minute since the Unix epoch | 120 s |
//! | `render-jobs:live`, `render-jobs:background` | stream, consumer group `renderers` | shared render jobs (`key`, `queued_at`) of `--role proxy`/`renderer` (see `pipeline::shared_queue`) | entries deleted when finished |
//! | `render-result:<key>` | hash | job id → `stored` / `failed <reason>` | 120 s |
//!
//! Pub/sub channels: `render-done` (message: `render:<key>`, a render of
//! that page finished) and `render-purge` (message: `page render:<key>`,
//! `domain <domain>` or `all`: drop in-process copies).
//!
//! With `key_prefix` (see `redis::names`) every key and channel name above
//! starts with the prefix; index and schedule members are the prefixed page
//! names; the messages stay unprefixed.
//!
//! # Redis Cluster
//!
//! The same layout, with no hash tags, on a Redis Cluster
//! ([`RedisStore::connect_cluster`]). `render:<key>` and
//! `render-meta:<key>` may live on different slots, so the page write is
//! two writes (HTML first, then the metadata naming the HTML's digest) and
//! a reader treats a missing half or a digest mismatch as a miss: a torn
//! write is never served. Operations whose scripts would touch undeclared
//! keys (eviction, pruning) run client-side there, and purges SCAN every
//! primary. The reasoning is in the documentation of the cluster module
//! (`cache::redis::cluster`).

pub mod key;
pub mod memory;
pub mod redis;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::broadcast;

pub use key::{CacheKey, KeyError};
pub use memory::MemoryStore;
pub use redis::{RedisOptions, RedisStore};

/// Default bound of the embedded store (`cache_max_bytes`): 256 MiB.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Prefix of render locks.
pub const LOCK_KEY_PREFIX: &str = "render-lock:";
/// Prefix of the per-domain LRU index.
pub const INDEX_KEY_PREFIX: &str = "render-index:";
/// Prefix of the per-domain refresh schedule.
pub const DUE_KEY_PREFIX: &str = "render-due:";
/// Set of domains with cached pages.
pub const DOMAINS_KEY: &str = "render-domains";
/// Prefix of the monthly render counters.
pub const QUOTA_KEY_PREFIX: &str = "render-quota:";
/// A quota counter outlives its month by a day or so, then goes.
pub const QUOTA_KEY_TTL: Duration = Duration::from_secs(32 * 24 * 3600);
/// Prefix of the per-minute counters of renders for unverified bots.
pub const UNVERIFIED_KEY_PREFIX: &str = "render-unverified:";
/// Such a counter outlives its minute by a minute, then goes.
pub const UNVERIFIED_KEY_TTL: Duration = Duration::from_secs(120);
/// Channel announcing that a render of a key finished.
pub const DONE_CHANNEL: &str = "render-done";
/// Channel announcing purges to every instance.
pub const PURGE_CHANNEL: &str = "render-purge";
/// Waiters re-check the page and the lock at least this often, so a
/// missed notice or a lock that expired (its renderer died) is noticed.
pub const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Buffered notices per subscriber before the slowest one lags.
pub const NOTICE_CHANNEL_CAPACITY: usize = 1024;

/// One rendered page with what is needed to answer a crawler with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPage {
    pub html: Bytes,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub etag: String,
    pub rendered_at: SystemTime,
    /// When the page stops being fresh; it may be kept past this for the
    /// stale window (the store TTL decides when it is gone).
    pub expires_at: SystemTime,
    /// Hash of the site settings the page was rendered under.
    pub settings_hash: String,
    /// Hash of the HTML, to tell a changed page from an identical re-render.
    pub content_hash: String,
}

impl StoredPage {
    /// Bytes the page accounts for in the embedded store.
    pub fn size_bytes(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        (self.html.len()
            + headers
            + self.etag.len()
            + self.settings_hash.len()
            + self.content_hash.len()) as u64
    }
}

/// A store operation that failed; the proxy fails open on it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(String),
    #[error("invalid key: {0}")]
    Key(#[from] KeyError),
    #[error("page of {bytes} bytes exceeds the store's per-shard bound of {limit} bytes")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("invalid store configuration: {0}")]
    Config(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What happened while waiting for another render of the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The page is in the store.
    Ready(StoredPage),
    /// Nobody holds the render lock and there is no page (the render
    /// failed, stored nothing, or its instance died): compete again.
    LockReleased,
    /// The deadline passed.
    TimedOut,
}

/// A purge other instances must apply to their in-process copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeEvent {
    Page(CacheKey),
    Domain(String),
    /// Everything; also sent after the notice channel reconnects, since
    /// purges may have been missed meanwhile.
    All,
}

impl PurgeEvent {
    /// Wire form on the `render-purge` channel.
    pub fn to_message(&self) -> String {
        match self {
            PurgeEvent::Page(key) => format!("page {key}"),
            PurgeEvent::Domain(domain) => format!("domain {domain}"),
            PurgeEvent::All => "all".to_owned(),
        }
    }

    /// Parses the wire form; `None` for anything else.
    pub fn from_message(message: &str) -> Option<PurgeEvent> {
        match message.split_once(' ') {
            Some(("page", key)) => CacheKey::parse(key).ok().map(PurgeEvent::Page),
            Some(("domain", domain)) => key::normalize_host(domain).ok().map(PurgeEvent::Domain),
            _ if message == "all" => Some(PurgeEvent::All),
            _ => None,
        }
    }
}

/// Rendered pages by key. Both backends have the same semantics; the
/// shared contract tests (`tests/store_contract.rs`) run against each.
pub trait PageStore: Send + Sync {
    /// The page, fresh or stale (compare `expires_at`), or `None`.
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, StoreResult<Option<StoredPage>>>;

    /// Stores the page for `ttl` (freshness plus any stale window),
    /// replacing any previous one atomically, and records it in the
    /// domain's LRU index and the domain set. `ttl` zero stores nothing.
    /// A page new to the index is accessed now; a page already in it keeps
    /// its last access, since a re-render (the refresher, a stale page's
    /// background render) is no use by a crawler: the crawler path records
    /// those with [`Coordination::touch`]. Callers schedule its refresh
    /// with [`Coordination::schedule`].
    fn put<'a>(
        &'a self,
        key: &'a CacheKey,
        page: &'a StoredPage,
        ttl: Duration,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// Removes one page (and forgets it in the indexes); `true` if there
    /// was one. Announced on the purge channel.
    fn delete<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, StoreResult<bool>>;

    /// Removes every page of a domain (both variants) and its indexes;
    /// returns the number of pages removed. Announced.
    fn purge_domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, StoreResult<u64>>;

    /// Removes every page and index (render quota counters are kept);
    /// returns the number of pages removed. Announced.
    fn purge_all(&self) -> BoxFuture<'_, StoreResult<u64>>;

    /// Whether a page (fresh or stale) is stored under `key`, without
    /// reading it.
    fn contains<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, StoreResult<bool>>;

    /// Whether the store answers (readiness: a failure means degraded).
    fn ping(&self) -> BoxFuture<'_, StoreResult<()>>;

    /// `"redis"`, `"redis-cluster"` or `"memory"`, for logs and the
    /// dashboard.
    fn backend(&self) -> &'static str;

    /// Every page of `domain` (both variants) in its index, with its last
    /// access. Members of pages that are gone may still be listed:
    /// [`PageStore::page_info`] tells.
    fn indexed<'a>(
        &'a self,
        domain: &'a str,
    ) -> BoxFuture<'a, StoreResult<Vec<(CacheKey, SystemTime)>>>;

    /// A page's metadata without its HTML, or `None` when it is not stored.
    fn page_info<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, StoreResult<Option<PageInfo>>>;
}

/// What the page list and the entry API show of a stored page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageInfo {
    pub status: u16,
    pub rendered_at: SystemTime,
    pub expires_at: SystemTime,
    /// Bytes of the stored HTML.
    pub bytes: u64,
}

/// One page of a domain's page list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPage {
    pub key: CacheKey,
    pub info: PageInfo,
    /// Last access recorded for LRU eviction (hits are recorded in batches,
    /// about once a second).
    pub last_hit: SystemTime,
}

/// A page of a domain's cached pages, ordered by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageList {
    pub pages: Vec<ListedPage>,
    /// The key (`render:…`) to continue after, or `None` at the end.
    pub next_after: Option<String>,
}

/// The cached pages of `domain` whose path starts with `prefix` (both
/// variants), ordered by key, after the key `after`, at most `limit`.
/// Built on the domain's index, so it is one read of the index and one
/// metadata read per page shown, on every store alike (a Redis Cluster
/// included: the index is one key).
pub async fn list_pages<S: PageStore + ?Sized>(
    store: &S,
    domain: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<PageList> {
    let domain = key::normalize_host(domain)?;
    let mut candidates: Vec<(String, CacheKey, SystemTime)> = store
        .indexed(&domain)
        .await?
        .into_iter()
        .filter(|(k, _)| k.path().starts_with(prefix))
        .map(|(k, at)| (k.to_string(), k, at))
        .filter(|(name, _, _)| after.is_none_or(|a| name.as_str() > a))
        .collect();
    candidates.sort_by(|a, b| a.0.cmp(&b.0));
    candidates.dedup_by(|a, b| a.0 == b.0);
    let mut pages = Vec::new();
    let mut rest = candidates.into_iter();
    for (_, key, last_hit) in rest.by_ref() {
        if let Some(info) = store.page_info(&key).await? {
            pages.push(ListedPage {
                key,
                info,
                last_hit,
            });
            if pages.len() >= limit {
                break;
            }
        }
    }
    let next_after = match rest.next() {
        Some(_) => pages.last().map(|p| p.key.to_string()),
        None => None,
    };
    Ok(PageList { pages, next_after })
}

/// Removes the cached pages of `domain` whose path starts with `prefix`
/// (both variants), each as [`PageStore::delete`] does (announced, so every
/// instance drops its copies); returns how many there were.
pub async fn purge_prefix<S: PageStore + ?Sized>(
    store: &S,
    domain: &str,
    prefix: &str,
) -> StoreResult<u64> {
    let domain = key::normalize_host(domain)?;
    let mut purged = 0;
    for (key, _) in store.indexed(&domain).await? {
        if key.path().starts_with(prefix) && store.delete(&key).await? {
            purged += 1;
        }
    }
    Ok(purged)
}

/// What several instances sharing a store agree on. The in-process
/// versions have the same semantics for a single instance.
///
/// Every `domain` argument is normalised like a Host header (lowercased,
/// port and trailing dot dropped); an invalid one is a
/// [`StoreError::Key`].
pub trait Coordination: Send + Sync {
    /// Takes the render lock of `key` for `ttl` if nobody holds it.
    fn try_lock<'a>(
        &'a self,
        key: &'a CacheKey,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Extends the lock of `key` to `ttl` from now if `owner` still holds
    /// it (`true` then). A render holds its lock as a short lease renewed
    /// while it runs, so the lock of an instance that died goes quickly.
    fn extend_lock<'a>(
        &'a self,
        key: &'a CacheKey,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Releases the lock if `owner` still holds it (`true` then), and
    /// announces on `render-done` that this render is over either way.
    fn unlock<'a>(&'a self, key: &'a CacheKey, owner: &'a str) -> BoxFuture<'a, StoreResult<bool>>;

    /// Whether someone holds the render lock of `key`.
    fn is_locked<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, StoreResult<bool>>;

    /// Waits until the page is stored, the lock is released without a
    /// page, or `deadline` passes.
    fn wait_for_page<'a>(
        &'a self,
        key: &'a CacheKey,
        deadline: tokio::time::Instant,
    ) -> BoxFuture<'a, StoreResult<WaitOutcome>>;

    /// Records an access for LRU eviction (no effect on pages not indexed).
    fn touch<'a>(&'a self, key: &'a CacheKey, at: SystemTime) -> BoxFuture<'a, StoreResult<()>>;

    /// Deletes the least recently used pages of `domain` beyond
    /// `max_entries` (dropping index members of expired pages first),
    /// pages whose status is 400 or more before any other, and returns
    /// the evicted keys. Also trims the refresh schedule to
    /// `max_entries`, dropping pages that are no longer cached first.
    fn evict_over<'a>(
        &'a self,
        domain: &'a str,
        max_entries: u64,
    ) -> BoxFuture<'a, StoreResult<Vec<CacheKey>>>;

    /// Number of cached pages of `domain` (index members of expired pages
    /// are dropped on the way).
    fn entries<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, StoreResult<u64>>;

    /// Sets when `key` is next due for a refresh.
    fn schedule<'a>(&'a self, key: &'a CacheKey, due: SystemTime)
        -> BoxFuture<'a, StoreResult<()>>;

    /// Claims up to `limit` keys of `domain` due at `now`, removing them
    /// from the schedule atomically so that of N instances exactly one
    /// gets each. The claimer re-schedules after refreshing.
    fn claim_due<'a>(
        &'a self,
        domain: &'a str,
        now: SystemTime,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<CacheKey>>>;

    /// Earliest scheduled refresh of `domain`.
    fn next_due<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, StoreResult<Option<SystemTime>>>;

    /// Domains with cached pages.
    fn domains(&self) -> BoxFuture<'_, StoreResult<Vec<String>>>;

    /// Counts one render of `domain` in `month` (`"2026-11"`, see
    /// [`quota_month`]) and returns the new count.
    fn incr_renders<'a>(
        &'a self,
        domain: &'a str,
        month: &'a str,
    ) -> BoxFuture<'a, StoreResult<u64>>;

    /// Renders of `domain` counted in `month`.
    fn renders_in_month<'a>(
        &'a self,
        domain: &'a str,
        month: &'a str,
    ) -> BoxFuture<'a, StoreResult<u64>>;

    /// Announces a purge to every instance (the purge operations of
    /// [`PageStore`] already do).
    fn publish_purge<'a>(&'a self, event: &'a PurgeEvent) -> BoxFuture<'a, StoreResult<()>>;

    /// Purges announced by any instance, this one included.
    fn subscribe_purges(&self) -> broadcast::Receiver<PurgeEvent>;

    /// Counts one render for a bot that is not a verified crawler on
    /// `site` in `minute` (minutes since the Unix epoch) and returns the
    /// minute's count so far, shared by every instance on the store.
    fn incr_unverified_renders<'a>(
        &'a self,
        site: &'a str,
        minute: u64,
    ) -> BoxFuture<'a, StoreResult<u64>>;
}

/// Both halves, as the proxy, refresher and admin API hold them:
/// `Arc<dyn CacheStore>`.
pub trait CacheStore: PageStore + Coordination {}
impl<T: PageStore + Coordination> CacheStore for T {}

/// Pages with these statuses (of those cached, 404 and 410) are kept
/// only for their plan's `error_ttl` and are evicted before any other
/// page when a domain or the store is over its bound.
pub fn is_error_status(status: u16) -> bool {
    status >= 400
}

/// The quota month of a moment: `"YYYY-MM"` in UTC.
pub fn quota_month(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    format!("{:04}-{:02}", at.year(), u8::from(at.month()))
}

/// The quota counter's key: `render-quota:<domain>:<YYYY-MM>`.
pub fn quota_key(domain: &str, month: &str) -> String {
    format!("{QUOTA_KEY_PREFIX}{domain}:{month}")
}

/// The unverified-render counter's key: `render-unverified:<site>:<minute>`.
pub fn unverified_key(site: &str, minute: u64) -> String {
    format!("{UNVERIFIED_KEY_PREFIX}{site}:{minute}")
}

/// The render lock's key: `render-lock:<domain>:[m:]<path>`.
pub fn lock_key(key: &CacheKey) -> String {
    format!("{LOCK_KEY_PREFIX}{}", key.suffix())
}

/// The LRU index of a domain: `render-index:<domain>`.
pub fn index_key(domain: &str) -> String {
    format!("{INDEX_KEY_PREFIX}{domain}")
}

/// The refresh schedule of a domain: `render-due:<domain>`.
pub fn due_key(domain: &str) -> String {
    format!("{DUE_KEY_PREFIX}{domain}")
}

pub(crate) fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn from_unix_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Whole milliseconds of a TTL, at least 1 for any non-zero TTL.
pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The waiting loop shared by both backends: subscribe first, then check,
/// so that a notice between the check and the wait is not lost; poll as
/// a fallback for lost notices and expired locks.
pub(crate) async fn wait_for_page_with<S>(
    store: &S,
    mut done: broadcast::Receiver<String>,
    key: &CacheKey,
    deadline: tokio::time::Instant,
) -> StoreResult<WaitOutcome>
where
    S: PageStore + Coordination + ?Sized,
{
    let wanted = key.to_string();
    let mut notices_open = true;
    loop {
        if let Some(page) = store.get(key).await? {
            return Ok(WaitOutcome::Ready(page));
        }
        if !store.is_locked(key).await? {
            // The page may have landed between the two checks.
            return Ok(match store.get(key).await? {
                Some(page) => WaitOutcome::Ready(page),
                None => WaitOutcome::LockReleased,
            });
        }
        let poll = tokio::time::sleep(WAIT_POLL_INTERVAL);
        tokio::pin!(poll);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(WaitOutcome::TimedOut),
                _ = &mut poll => break,
                notice = done.recv(), if notices_open => match notice {
                    Ok(k) if k == wanted => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    // No more notices; polling alone still works.
                    Err(broadcast::error::RecvError::Closed) => notices_open = false,
                },
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(WaitOutcome::TimedOut);
        }
    }
}

/// Store calls on the bot path give up after this: an outage must not hold crawlers.
pub const STORE_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A store call bounded by `STORE_CALL_TIMEOUT`.
pub async fn store_call<T>(fut: BoxFuture<'_, Result<T, StoreError>>) -> Result<T, StoreError> {
    match tokio::time::timeout(STORE_CALL_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Pool("store call timed out".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_month_is_the_utc_calendar_month() {
        // 2026-11-30T23:59:59Z and one second later.
        assert_eq!(quota_month(from_unix_millis(1_796_083_199_000)), "2026-11");
        assert_eq!(quota_month(from_unix_millis(1_796_083_200_000)), "2026-12");
        assert_eq!(
            quota_key("example.com", "2026-11"),
            "render-quota:example.com:2026-11"
        );
    }

    #[test]
    fn purge_events_round_trip_their_wire_form() {
        let key = CacheKey::new("example.com", "/a?b", &[], true).unwrap();
        for event in [
            PurgeEvent::Page(key),
            PurgeEvent::Domain("example.com".to_owned()),
            PurgeEvent::All,
        ] {
            assert_eq!(PurgeEvent::from_message(&event.to_message()), Some(event));
        }
        for junk in ["", "page", "page nope", "domain a b", "everything", "all "] {
            assert_eq!(PurgeEvent::from_message(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn per_page_keys_share_one_suffix() {
        let key = CacheKey::new("example.com", "/p", &[], false).unwrap();
        assert_eq!(key.to_string(), "render:example.com:/p");
        assert_eq!(key.meta_key(), "render-meta:example.com:/p");
        assert_eq!(lock_key(&key), "render-lock:example.com:/p");
        assert_eq!(index_key("example.com"), "render-index:example.com");
        assert_eq!(due_key("example.com"), "render-due:example.com");
    }

    #[test]
    fn ttls_round_up_to_a_millisecond() {
        assert_eq!(ttl_millis(Duration::from_micros(10)), 1);
        assert_eq!(ttl_millis(Duration::from_secs(3600)), 3_600_000);
    }
}
