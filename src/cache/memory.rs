//! The embedded store: pages in process memory, bounded in bytes with
//! least-recently-used eviction, with the same semantics as Redis. Pages
//! are split over shards by key hash so that concurrent hits do not
//! contend on one lock; each shard holds its share of the bound and evicts
//! its own least recently used pages. A small bound gets fewer shards (one
//! below 8 MiB), so that it still holds pages of ordinary size and its
//! eviction is exactly least-recently-used.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::key::normalize_host;
use super::{
    from_unix_millis, unix_millis, wait_for_page_with, CacheKey, Coordination, PageInfo, PageStore,
    PurgeEvent, StoreError, StoreResult, StoredPage, WaitOutcome, NOTICE_CHANNEL_CAPACITY,
};

/// Most shards of the page map: well above the core count.
pub const MEMORY_SHARDS: usize = 16;
/// Least bound of one shard: a shard must hold several large pages.
pub const MIN_SHARD_BYTES: u64 = 4 << 20;
/// Bookkeeping bytes charged per page on top of its contents (key, map
/// entries, LRU node), so that many tiny pages still respect the bound.
const ENTRY_OVERHEAD_BYTES: u64 = 256;
/// Expired render locks are swept once this many are held.
const LOCK_SWEEP_THRESHOLD: usize = 1024;

struct Entry {
    page: StoredPage,
    key: CacheKey,
    deadline: Instant,
    rank: Rank,
    bytes: u64,
}

/// Eviction order within a shard: error pages (status 400 and above)
/// first, then least recently used first.
type Rank = (bool, u64);

fn rank(page: &StoredPage, tick: u64) -> Rank {
    (!super::is_error_status(page.status), tick)
}

#[derive(Default)]
struct Shard {
    pages: HashMap<String, Entry>,
    /// (not an error page, tick of last use) -> key: the next to evict first.
    lru: BTreeMap<Rank, String>,
    tick: u64,
    bytes: u64,
}

impl Shard {
    fn remove(&mut self, name: &str) -> Option<Entry> {
        let entry = self.pages.remove(name)?;
        self.lru.remove(&entry.rank);
        self.bytes -= entry.bytes;
        Some(entry)
    }

    fn live(&mut self, name: &str, now: Instant) -> Option<&mut Entry> {
        if self.pages.get(name).is_some_and(|e| e.deadline <= now) {
            self.remove(name);
        }
        self.pages.get_mut(name)
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

/// Keys with a time each (Unix ms), also ordered by that time.
#[derive(Default)]
struct Timeline {
    at: HashMap<CacheKey, u64>,
    order: BTreeSet<(u64, CacheKey)>,
}

impl Timeline {
    fn set(&mut self, key: &CacheKey, at: u64) {
        if let Some(old) = self.at.insert(key.clone(), at) {
            self.order.remove(&(old, key.clone()));
        }
        self.order.insert((at, key.clone()));
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some(old) = self.at.remove(key) {
            self.order.remove(&(old, key.clone()));
        }
    }
}

#[derive(Default)]
struct DomainIndex {
    /// Last access of each page: LRU order.
    access: Timeline,
    /// When each page is next due for a refresh: the schedule.
    due: Timeline,
}

/// In-process page store (used when no Redis is configured).
pub struct MemoryStore {
    /// [`MemoryStore::shards_for`] the bound.
    shards: Box<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    shard_max_bytes: u64,
    /// Per-domain indexes. Lock order: `index` before any shard.
    index: Mutex<HashMap<String, DomainIndex>>,
    /// Domains with pages stored since their last purge (`render-domains`).
    domains: Mutex<BTreeSet<String>>,
    locks: Mutex<HashMap<String, (String, Instant)>>,
    /// (domain, month) -> renders; only the latest month per domain is kept.
    quota: Mutex<HashMap<String, (String, u64)>>,
    done_tx: broadcast::Sender<String>,
    purge_tx: broadcast::Sender<PurgeEvent>,
    /// site -> (minute, renders for unverified bots); only the latest
    /// minute per site is kept, and sites come from the configuration.
    unverified: Mutex<HashMap<String, (u64, u64)>>,
}

impl MemoryStore {
    /// How many shards share a bound of `max_bytes`: one per
    /// [`MIN_SHARD_BYTES`], at least one and at most [`MEMORY_SHARDS`].
    pub fn shards_for(max_bytes: u64) -> usize {
        (max_bytes / MIN_SHARD_BYTES).clamp(1, MEMORY_SHARDS as u64) as usize
    }

    /// A store holding at most `max_bytes` of pages (split evenly over
    /// [`Self::shards_for`] shards, so one page can use at most a shard's
    /// share).
    pub fn new(max_bytes: u64) -> Arc<MemoryStore> {
        let count = Self::shards_for(max_bytes);
        let shards = (0..count)
            .map(|_| Mutex::new(Shard::default()))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let (done_tx, _) = broadcast::channel(NOTICE_CHANNEL_CAPACITY);
        let (purge_tx, _) = broadcast::channel(NOTICE_CHANNEL_CAPACITY);
        Arc::new(MemoryStore {
            shards,
            hasher: std::collections::hash_map::RandomState::new(),
            shard_max_bytes: max_bytes / count as u64,
            index: Mutex::new(HashMap::new()),
            domains: Mutex::new(BTreeSet::new()),
            locks: Mutex::new(HashMap::new()),
            quota: Mutex::new(HashMap::new()),
            done_tx,
            purge_tx,
            unverified: Mutex::new(HashMap::new()),
        })
    }

    /// Bytes of pages held now (contents plus bookkeeping). An expired
    /// page counts until it is noticed (read, pruned) or evicted as the
    /// least recently used.
    pub fn bytes_used(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().bytes).sum()
    }

    /// Largest page (contents plus bookkeeping) the store accepts.
    pub fn max_page_bytes(&self) -> u64 {
        self.shard_max_bytes
    }

    fn shard(&self, name: &str) -> &Mutex<Shard> {
        let i = self.hasher.hash_one(name) as usize % self.shards.len();
        &self.shards[i]
    }

    fn page_exists(&self, key: &CacheKey) -> bool {
        self.page_status(key).is_some()
    }

    /// The status of the page stored under `key`, if there is one.
    fn page_status(&self, key: &CacheKey) -> Option<u16> {
        let name = key.to_string();
        self.shard(&name)
            .lock()
            .live(&name, Instant::now())
            .map(|e| e.page.status)
    }

    fn remove_page(&self, key: &CacheKey) -> bool {
        let name = key.to_string();
        self.shard(&name).lock().remove(&name).is_some()
    }

    fn put_now(&self, key: &CacheKey, page: &StoredPage, ttl: Duration) -> StoreResult<()> {
        if ttl.is_zero() {
            return Ok(());
        }
        let name = key.to_string();
        let bytes = page.size_bytes() + name.len() as u64 + ENTRY_OVERHEAD_BYTES;
        if bytes > self.shard_max_bytes {
            return Err(StoreError::TooLarge {
                bytes,
                limit: self.shard_max_bytes,
            });
        }
        let now = Instant::now();
        let deadline = now
            .checked_add(ttl)
            .unwrap_or(now + Duration::from_secs(u32::MAX.into()));
        {
            let mut shard = self.shard(&name).lock();
            shard.remove(&name);
            let error_page = super::is_error_status(page.status);
            while shard.bytes + bytes > self.shard_max_bytes {
                let Some((&(good, _), _)) = shard.lru.first_key_value() else {
                    break;
                };
                if error_page && good {
                    // Only error pages are left to evict: an error page
                    // never pushes out another page, so it is not kept.
                    tracing::debug!(key = %key, "store full of other pages; error page not kept");
                    return Ok(());
                }
                let Some((_, oldest)) = shard.lru.pop_first() else {
                    break;
                };
                if let Some(e) = shard.pages.remove(&oldest) {
                    shard.bytes -= e.bytes;
                }
            }
            let rank = rank(page, shard.next_tick());
            shard.lru.insert(rank, name.clone());
            shard.bytes += bytes;
            shard.pages.insert(
                name,
                Entry {
                    page: page.clone(),
                    key: key.clone(),
                    deadline,
                    rank,
                    bytes,
                },
            );
        }
        let mut index = self.index.lock();
        let access = &mut index.entry(key.domain().to_owned()).or_default().access;
        // A re-rendered page keeps its last access (see `PageStore::put`).
        if !access.at.contains_key(key) {
            access.set(key, unix_millis(SystemTime::now()));
        }
        drop(index);
        self.domains.lock().insert(key.domain().to_owned());
        Ok(())
    }

    fn forget(&self, key: &CacheKey) {
        let mut index = self.index.lock();
        if let Some(d) = index.get_mut(key.domain()) {
            d.access.remove(key);
            d.due.remove(key);
        }
    }

    fn purge_matching(&self, keep: impl Fn(&CacheKey) -> bool) -> u64 {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let doomed: Vec<String> = shard
                .pages
                .iter()
                .filter(|(_, e)| !keep(&e.key))
                .map(|(n, _)| n.clone())
                .collect();
            for name in doomed {
                shard.remove(&name);
                removed += 1;
            }
        }
        removed
    }

    fn announce(&self, event: PurgeEvent) {
        // No receiver is fine: nobody holds in-process copies then.
        let _ = self.purge_tx.send(event);
    }

    /// Drops index members whose page is gone; returns the live keys
    /// oldest access first.
    fn prune(&self, d: &mut DomainIndex) -> Vec<CacheKey> {
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (_, key) in &d.access.order {
            if self.page_exists(key) {
                live.push(key.clone());
            } else {
                dead.push(key.clone());
            }
        }
        for key in &dead {
            d.access.remove(key);
        }
        live
    }
}

impl PageStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, StoreResult<Option<StoredPage>>> {
        let name = key.to_string();
        let mut shard = self.shard(&name).lock();
        let found = match shard.live(&name, Instant::now()) {
            Some(entry) => Some((entry.rank, entry.page.clone())),
            None => None,
        };
        let page = found.map(|(old_rank, page)| {
            let rank = rank(&page, shard.next_tick());
            shard.lru.remove(&old_rank);
            shard.lru.insert(rank, name.clone());
            if let Some(e) = shard.pages.get_mut(&name) {
                e.rank = rank;
            }
            page
        });
        drop(shard);
        futures::future::ready(Ok(page)).boxed()
    }

    fn put<'a>(
        &'a self,
        key: &'a CacheKey,
        page: &'a StoredPage,
        ttl: Duration,
    ) -> BoxFuture<'a, StoreResult<()>> {
        futures::future::ready(self.put_now(key, page, ttl)).boxed()
    }

    fn delete<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, StoreResult<bool>> {
        let removed = self.remove_page(key);
        self.forget(key);
        self.announce(PurgeEvent::Page(key.clone()));
        futures::future::ready(Ok(removed)).boxed()
    }

    fn purge_domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, StoreResult<u64>> {
        let result = normalize_host(domain)
            .map_err(StoreError::from)
            .map(|domain| {
                let removed = self.purge_matching(|k| k.domain() != domain);
                self.index.lock().remove(&domain);
                self.domains.lock().remove(&domain);
                self.announce(PurgeEvent::Domain(domain));
                removed
            });
        futures::future::ready(result).boxed()
    }

    fn purge_all(&self) -> BoxFuture<'_, StoreResult<u64>> {
        let removed = self.purge_matching(|_| false);
        self.index.lock().clear();
        self.domains.lock().clear();
        self.announce(PurgeEvent::All);
        futures::future::ready(Ok(removed)).boxed()
    }

    fn contains<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, StoreResult<bool>> {
        futures::future::ready(Ok(self.page_exists(key))).boxed()
    }

    fn ping(&self) -> BoxFuture<'_, StoreResult<()>> {
        futures::future::ready(Ok(())).boxed()
    }

    fn backend(&self) -> &'static str {
        "memory"
    }

    fn indexed<'a>(
        &'a self,
        domain: &'a str,
    ) -> BoxFuture<'a, StoreResult<Vec<(CacheKey, SystemTime)>>> {
        let result = normalize_host(domain)
            .map_err(StoreError::from)
            .map(|domain| {
                self.index
                    .lock()
                    .get(&domain)
                    .map(|d| {
                        d.access
                            .at
                            .iter()
                            .map(|(k, at)| (k.clone(), from_unix_millis(*at)))
                            .collect()
                    })
                    .unwrap_or_default()
            });
        futures::future::ready(result).boxed()
    }

    fn page_info<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, StoreResult<Option<PageInfo>>> {
        let name = key.to_string();
        let mut shard = self.shard(&name).lock();
        let info = shard.live(&name, Instant::now()).map(|e| PageInfo {
            status: e.page.status,
            rendered_at: e.page.rendered_at,
            expires_at: e.page.expires_at,
            bytes: e.page.html.len() as u64,
        });
        drop(shard);
        futures::future::ready(Ok(info)).boxed()
    }
}

impl Coordination for MemoryStore {
    fn try_lock<'a>(
        &'a self,
        key: &'a CacheKey,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let now = Instant::now();
        let mut locks = self.locks.lock();
        if locks.len() >= LOCK_SWEEP_THRESHOLD {
            locks.retain(|_, (_, until)| *until > now);
        }
        let name = key.to_string();
        let taken = match locks.get(&name) {
            Some((_, until)) if *until > now => false,
            _ => {
                let ttl = Duration::from_millis(super::ttl_millis(ttl));
                locks.insert(name, (owner.to_owned(), now + ttl));
                true
            }
        };
        futures::future::ready(Ok(taken)).boxed()
    }

    fn extend_lock<'a>(
        &'a self,
        key: &'a CacheKey,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let now = Instant::now();
        let mut locks = self.locks.lock();
        let extended = match locks.get_mut(&key.to_string()) {
            Some((holder, until)) if holder == owner && *until > now => {
                *until = now + Duration::from_millis(super::ttl_millis(ttl));
                true
            }
            _ => false,
        };
        futures::future::ready(Ok(extended)).boxed()
    }

    fn unlock<'a>(&'a self, key: &'a CacheKey, owner: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        let name = key.to_string();
        let released = {
            let mut locks = self.locks.lock();
            match locks.get(&name) {
                Some((holder, until)) if holder == owner && *until > Instant::now() => {
                    locks.remove(&name);
                    true
                }
                _ => false,
            }
        };
        let _ = self.done_tx.send(name);
        futures::future::ready(Ok(released)).boxed()
    }

    fn is_locked<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, StoreResult<bool>> {
        let name = key.to_string();
        let now = Instant::now();
        let held = self
            .locks
            .lock()
            .get(&name)
            .is_some_and(|(_, until)| *until > now);
        futures::future::ready(Ok(held)).boxed()
    }

    fn wait_for_page<'a>(
        &'a self,
        key: &'a CacheKey,
        deadline: Instant,
    ) -> BoxFuture<'a, StoreResult<WaitOutcome>> {
        let done = self.done_tx.subscribe();
        wait_for_page_with(self, done, key, deadline).boxed()
    }

    fn touch<'a>(&'a self, key: &'a CacheKey, at: SystemTime) -> BoxFuture<'a, StoreResult<()>> {
        let mut index = self.index.lock();
        if let Some(d) = index.get_mut(key.domain()) {
            if d.access.at.contains_key(key) {
                d.access.set(key, unix_millis(at));
            }
        }
        futures::future::ready(Ok(())).boxed()
    }

    fn evict_over<'a>(
        &'a self,
        domain: &'a str,
        max_entries: u64,
    ) -> BoxFuture<'a, StoreResult<Vec<CacheKey>>> {
        async move {
            let domain = &normalize_host(domain)?;
            let mut evicted = Vec::new();
            let mut index = self.index.lock();
            if let Some(d) = index.get_mut(domain) {
                let mut live = self.prune(d);
                let over = (live.len() as u64).saturating_sub(max_entries) as usize;
                if over > 0 {
                    // Error pages first; the sort is stable, so LRU order within each.
                    live.sort_by_key(|key| {
                        !self.page_status(key).is_some_and(super::is_error_status)
                    });
                }
                for key in live.into_iter().take(over) {
                    self.remove_page(&key);
                    d.access.remove(&key);
                    d.due.remove(&key);
                    evicted.push(key);
                }
                let mut extra = (d.due.at.len() as u64).saturating_sub(max_entries);
                if extra > 0 {
                    let scheduled: Vec<CacheKey> =
                        d.due.order.iter().map(|(_, k)| k.clone()).collect();
                    for key in scheduled {
                        if extra == 0 {
                            break;
                        }
                        if !self.page_exists(&key) {
                            d.due.remove(&key);
                            extra -= 1;
                        }
                    }
                }
            }
            drop(index);
            for key in &evicted {
                self.announce(PurgeEvent::Page(key.clone()));
            }
            Ok(evicted)
        }
        .boxed()
    }

    fn entries<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, StoreResult<u64>> {
        async move {
            let domain = &normalize_host(domain)?;
            let mut index = self.index.lock();
            let n = match index.get_mut(domain) {
                Some(d) => self.prune(d).len() as u64,
                None => 0,
            };
            Ok(n)
        }
        .boxed()
    }

    fn schedule<'a>(
        &'a self,
        key: &'a CacheKey,
        due: SystemTime,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.index
            .lock()
            .entry(key.domain().to_owned())
            .or_default()
            .due
            .set(key, unix_millis(due));
        futures::future::ready(Ok(())).boxed()
    }

    fn claim_due<'a>(
        &'a self,
        domain: &'a str,
        now: SystemTime,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<CacheKey>>> {
        async move {
            let domain = &normalize_host(domain)?;
            let now = unix_millis(now);
            let mut claimed = Vec::new();
            if let Some(d) = self.index.lock().get_mut(domain) {
                let due: Vec<CacheKey> = d
                    .due
                    .order
                    .iter()
                    .take_while(|(at, _)| *at <= now)
                    .take(limit)
                    .map(|(_, k)| k.clone())
                    .collect();
                for key in due {
                    d.due.remove(&key);
                    claimed.push(key);
                }
            }
            Ok(claimed)
        }
        .boxed()
    }

    fn next_due<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, StoreResult<Option<SystemTime>>> {
        async move {
            let domain = &normalize_host(domain)?;
            let next = self.index.lock().get(domain).and_then(|d| {
                d.due
                    .order
                    .first()
                    .map(|(at, _)| super::from_unix_millis(*at))
            });
            Ok(next)
        }
        .boxed()
    }

    fn domains(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        let domains: Vec<String> = self.domains.lock().iter().cloned().collect();
        futures::future::ready(Ok(domains)).boxed()
    }

    fn incr_renders<'a>(
        &'a self,
        domain: &'a str,
        month: &'a str,
    ) -> BoxFuture<'a, StoreResult<u64>> {
        async move {
            let domain = &normalize_host(domain)?;
            let mut quota = self.quota.lock();
            let entry = quota
                .entry(domain.to_owned())
                .or_insert_with(|| (month.to_owned(), 0));
            if entry.0 != month {
                *entry = (month.to_owned(), 0);
            }
            entry.1 += 1;
            let n = entry.1;
            Ok(n)
        }
        .boxed()
    }

    fn renders_in_month<'a>(
        &'a self,
        domain: &'a str,
        month: &'a str,
    ) -> BoxFuture<'a, StoreResult<u64>> {
        async move {
            let domain = &normalize_host(domain)?;
            let n = match self.quota.lock().get(domain) {
                Some((m, n)) if m == month => *n,
                _ => 0,
            };
            Ok(n)
        }
        .boxed()
    }

    fn publish_purge<'a>(&'a self, event: &'a PurgeEvent) -> BoxFuture<'a, StoreResult<()>> {
        self.announce(event.clone());
        futures::future::ready(Ok(())).boxed()
    }

    fn subscribe_purges(&self) -> broadcast::Receiver<PurgeEvent> {
        self.purge_tx.subscribe()
    }

    fn incr_unverified_renders<'a>(
        &'a self,
        site: &'a str,
        minute: u64,
    ) -> BoxFuture<'a, StoreResult<u64>> {
        async move {
            let mut counts = self.unverified.lock();
            let entry = counts.entry(site.to_owned()).or_insert((minute, 0));
            if entry.0 != minute {
                *entry = (minute, 0);
            }
            entry.1 += 1;
            Ok(entry.1)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn page(status: u16, bytes: usize) -> StoredPage {
        StoredPage {
            html: Bytes::from(vec![b'x'; bytes]),
            status,
            headers: vec![],
            etag: "\"e\"".into(),
            rendered_at: SystemTime::now(),
            expires_at: SystemTime::now() + Duration::from_secs(3600),
            settings_hash: "s".into(),
            content_hash: "c".into(),
        }
    }

    #[tokio::test]
    async fn a_flood_of_error_pages_never_pushes_a_good_page_out_of_the_bytes() {
        // One shard with room for about 60 pages of 1 KiB: the 32 good
        // ones and some error pages.
        const BOUND: u64 = 80 * 1024;
        let store = MemoryStore::new(BOUND);
        let hour = Duration::from_secs(3600);
        let good: Vec<CacheKey> = (0..32)
            .map(|i| CacheKey::new("a.test", &format!("/good{i}"), &[], false).unwrap())
            .collect();
        for k in &good {
            store.put(k, &page(200, 1024), hour).await.unwrap();
        }
        let kept_good: Vec<&CacheKey> = {
            let mut v = Vec::new();
            for k in &good {
                if store.get(k).await.unwrap().is_some() {
                    v.push(k);
                }
            }
            v
        };
        assert_eq!(kept_good.len(), good.len());
        let mut errors_kept = 0;
        for i in 0..2000 {
            let k = CacheKey::new("a.test", &format!("/missing{i}"), &[], false).unwrap();
            store
                .put(&k, &page(if i % 2 == 0 { 404 } else { 410 }, 1024), hour)
                .await
                .unwrap();
            errors_kept += usize::from(store.get(&k).await.unwrap().is_some());
        }
        for k in &kept_good {
            assert!(store.get(k).await.unwrap().is_some(), "{k} was pushed out");
        }
        assert!(errors_kept > 0, "error pages still use the room left");
        assert!(store.bytes_used() <= BOUND);
        // A good page still makes room (error pages go first).
        let k = CacheKey::new("a.test", "/new", &[], false).unwrap();
        store.put(&k, &page(200, 1024), hour).await.unwrap();
        assert!(store.get(&k).await.unwrap().is_some());
    }
}
