//! One contract, three stores: every test here runs against the embedded
//! store, a real redis-server and a real 3-primary Redis Cluster, so all
//! keep the same semantics.

#[path = "common/ports.rs"]
mod ports;
use ports::free_port;
#[path = "common/claims.rs"]
mod claims;
#[path = "common/redis_cluster.rs"]
mod cluster_nodes;
#[path = "common/redis.rs"]
mod redis_server;
#[path = "common/store.rs"]
mod store;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use prerender_proxy::cache::{
    list_pages, purge_prefix, CacheKey, CacheStore, PurgeEvent, WaitOutcome,
    DEFAULT_CACHE_MAX_BYTES,
};
use store::{at_ms, eventually, key, page, unix_ms, DEADLINE, HOUR};
use tokio::time::Instant;

struct Fixture {
    store: Arc<dyn CacheStore>,
    _server: Option<redis_server::RedisServer>,
    _cluster: Option<cluster_nodes::RedisCluster>,
}

mod fixtures {
    use super::*;
    use prerender_proxy::cache::MemoryStore;

    pub async fn memory() -> Fixture {
        Fixture {
            store: MemoryStore::new(DEFAULT_CACHE_MAX_BYTES),
            _server: None,
            _cluster: None,
        }
    }

    pub async fn redis() -> Fixture {
        let server = redis_server::RedisServer::start();
        Fixture {
            store: server.store().await,
            _server: Some(server),
            _cluster: None,
        }
    }

    pub async fn redis_cluster() -> Fixture {
        let cluster = cluster_nodes::RedisCluster::start();
        Fixture {
            store: cluster.store().await,
            _server: None,
            _cluster: Some(cluster),
        }
    }
}

mod contract {
    use super::*;

    pub async fn put_then_get_round_trips_every_field(store: &Arc<dyn CacheStore>) {
        let k = key("example.com", "/a/b");
        let mut p = page("<html><body>Hello ✓</body></html>");
        p.html = Bytes::from_static(b"<html>\xff\x00 binary-safe</html>");
        p.status = 404;
        store.put(&k, &p, HOUR).await.unwrap();
        assert_eq!(store.get(&k).await.unwrap(), Some(p));
        let mobile = CacheKey::new("example.com", "/a/b", &[], true).unwrap();
        assert_eq!(
            store.get(&mobile).await.unwrap(),
            None,
            "variants are apart"
        );
    }

    pub async fn missing_page_is_none(store: &Arc<dyn CacheStore>) {
        assert_eq!(store.get(&key("example.com", "/nope")).await.unwrap(), None);
    }

    pub async fn contains_says_whether_a_page_is_stored(store: &Arc<dyn CacheStore>) {
        let k = key("example.com", "/here");
        assert!(!store.contains(&k).await.unwrap());
        store.put(&k, &page("p"), HOUR).await.unwrap();
        assert!(store.contains(&k).await.unwrap());
        assert!(!store.contains(&key("example.com", "/there")).await.unwrap());
        store.delete(&k).await.unwrap();
        assert!(!store.contains(&k).await.unwrap());
    }

    pub async fn put_replaces_the_previous_page(store: &Arc<dyn CacheStore>) {
        let k = key("example.com", "/");
        store.put(&k, &page("old"), HOUR).await.unwrap();
        let mut new = page("new");
        new.headers = vec![];
        new.content_hash = "content-2".to_owned();
        store.put(&k, &new, HOUR).await.unwrap();
        assert_eq!(store.get(&k).await.unwrap(), Some(new));
        assert_eq!(store.entries("example.com").await.unwrap(), 1);
    }

    pub async fn zero_ttl_stores_nothing(store: &Arc<dyn CacheStore>) {
        let k = key("example.com", "/fresh");
        store.put(&k, &page("x"), Duration::ZERO).await.unwrap();
        assert_eq!(store.get(&k).await.unwrap(), None);
        assert_eq!(store.entries("example.com").await.unwrap(), 0);
    }

    pub async fn page_is_gone_after_its_ttl(store: &Arc<dyn CacheStore>) {
        let k = key("example.com", "/short");
        store
            .put(&k, &page("x"), Duration::from_millis(200))
            .await
            .unwrap();
        assert!(store.get(&k).await.unwrap().is_some());
        eventually("the page expired", || async {
            store.get(&k).await.unwrap().is_none()
        })
        .await;
        // An expired page leaves the LRU index too.
        assert_eq!(store.entries("example.com").await.unwrap(), 0);
    }

    pub async fn delete_removes_one_page(store: &Arc<dyn CacheStore>) {
        let a = key("example.com", "/a");
        let b = key("example.com", "/b");
        store.put(&a, &page("a"), HOUR).await.unwrap();
        store.put(&b, &page("b"), HOUR).await.unwrap();
        store.schedule(&a, at_ms(0)).await.unwrap();
        assert!(store.delete(&a).await.unwrap());
        assert!(!store.delete(&a).await.unwrap());
        assert_eq!(store.get(&a).await.unwrap(), None);
        assert!(store.get(&b).await.unwrap().is_some());
        assert_eq!(store.entries("example.com").await.unwrap(), 1);
        // A purged page is forgotten by the refresher too.
        let claimed = store
            .claim_due("example.com", SystemTime::now(), 10)
            .await
            .unwrap();
        assert!(claimed.is_empty(), "{claimed:?}");
    }

    pub async fn purge_domain_removes_only_that_domain(store: &Arc<dyn CacheStore>) {
        let mine = [
            key("example.com", "/"),
            key("example.com", "/a?x=1"),
            CacheKey::new("example.com", "/a", &[], true).unwrap(),
        ];
        let others = [key("example.co", "/"), key("www.example.com", "/")];
        for k in mine.iter().chain(&others) {
            store.put(k, &page("p"), HOUR).await.unwrap();
            store.schedule(k, at_ms(0)).await.unwrap();
        }
        assert_eq!(
            store.domains().await.unwrap(),
            vec!["example.co", "example.com", "www.example.com"]
        );
        assert_eq!(store.purge_domain("EXAMPLE.com").await.unwrap(), 3);
        for k in &mine {
            assert_eq!(store.get(k).await.unwrap(), None, "{k}");
        }
        for k in &others {
            assert!(store.get(k).await.unwrap().is_some(), "{k}");
        }
        assert_eq!(store.entries("example.com").await.unwrap(), 0);
        assert!(store
            .claim_due("example.com", SystemTime::now(), 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.domains().await.unwrap(),
            vec!["example.co", "www.example.com"]
        );
        assert!(store.purge_domain("bad domain").await.is_err());
        assert_eq!(store.purge_domain("unknown.test").await.unwrap(), 0);
    }

    pub async fn pages_are_listed_by_prefix_in_key_order_and_paged(store: &Arc<dyn CacheStore>) {
        let blog = [
            key("example.com", "/blog/a"),
            key("example.com", "/blog/b?page=2"),
            CacheKey::new("example.com", "/blog/c", &[], true).unwrap(),
            key("example.com", "/blog/d"),
        ];
        let others = [
            key("example.com", "/blogroll"),
            key("example.com", "/"),
            key("www.example.com", "/blog/x"),
        ];
        for (i, k) in blog.iter().chain(&others).enumerate() {
            let mut p = page(&"x".repeat(10 + i));
            p.status = if i == 1 { 404 } else { 200 };
            store.put(k, &p, HOUR).await.unwrap();
        }
        store
            .touch(&blog[0], at_ms(1_800_000_000_000))
            .await
            .unwrap();
        // A page that is gone (expired) is not listed though still indexed.
        let gone = key("example.com", "/blog/gone");
        store
            .put(&gone, &page("p"), Duration::from_millis(50))
            .await
            .unwrap();
        eventually("the short-lived page expired", || async {
            store.get(&gone).await.unwrap().is_none()
        })
        .await;

        let all = list_pages(&**store, "Example.COM", "/blog/", None, 1000)
            .await
            .unwrap();
        let names: Vec<String> = all.pages.iter().map(|p| p.key.to_string()).collect();
        let mut expected: Vec<String> = blog.iter().map(|k| k.to_string()).collect();
        expected.sort();
        assert_eq!(names, expected);
        assert_eq!(all.next_after, None);
        let a = all.pages.iter().find(|p| p.key == blog[0]).unwrap();
        assert_eq!(a.info.bytes, 10);
        assert_eq!(a.info.status, 200);
        assert_eq!(a.info.rendered_at, at_ms(1_790_000_000_123));
        assert_eq!(a.info.expires_at, at_ms(1_790_003_600_123));
        assert_eq!(a.last_hit, at_ms(1_800_000_000_000));
        let b = all.pages.iter().find(|p| p.key == blog[1]).unwrap();
        assert_eq!(b.info.status, 404);

        // Two at a time: every page once, in order, then the end.
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..4 {
            let list = list_pages(&**store, "example.com", "/blog/", after.as_deref(), 2)
                .await
                .unwrap();
            assert!(list.pages.len() <= 2);
            paged.extend(list.pages.iter().map(|p| p.key.to_string()));
            after = list.next_after;
            if after.is_none() {
                break;
            }
        }
        assert_eq!(paged, expected);
        assert_eq!(after, None);
        let everything = list_pages(&**store, "example.com", "/", None, 1000)
            .await
            .unwrap();
        assert_eq!(everything.pages.len(), 6);
        assert!(list_pages(&**store, "bad domain", "/", None, 10)
            .await
            .is_err());
    }

    pub async fn purge_prefix_removes_only_matching_pages(store: &Arc<dyn CacheStore>) {
        let blog = [
            key("example.com", "/blog/a"),
            key("example.com", "/blog/b/c?page=2"),
            CacheKey::new("example.com", "/blog/d", &[], true).unwrap(),
        ];
        let others = [
            key("example.com", "/blogroll"),
            key("example.com", "/"),
            key("www.example.com", "/blog/a"),
        ];
        for k in blog.iter().chain(&others) {
            store.put(k, &page("p"), HOUR).await.unwrap();
            store.schedule(k, at_ms(0)).await.unwrap();
        }
        let mut events = store.subscribe_purges();
        assert_eq!(
            purge_prefix(&**store, "example.com", "/blog/")
                .await
                .unwrap(),
            3
        );
        for k in &blog {
            assert_eq!(store.get(k).await.unwrap(), None, "{k}");
        }
        for k in &others {
            assert!(store.get(k).await.unwrap().is_some(), "{k}");
        }
        assert_eq!(store.entries("example.com").await.unwrap(), 2);
        let due = store
            .claim_due("example.com", SystemTime::now(), 10)
            .await
            .unwrap();
        assert_eq!(due.len(), 2, "purged pages leave the schedule: {due:?}");
        // Every instance hears of each purged page.
        let mut heard = HashSet::new();
        while heard.len() < 3 {
            match tokio::time::timeout(DEADLINE, events.recv()).await {
                Ok(Ok(PurgeEvent::Page(k))) => {
                    heard.insert(k.to_string());
                }
                other => panic!("expected page purges, got {other:?}"),
            }
        }
        assert_eq!(
            purge_prefix(&**store, "example.com", "/blog/")
                .await
                .unwrap(),
            0
        );
    }

    pub async fn purge_all_keeps_only_quota_counters(store: &Arc<dyn CacheStore>) {
        for (d, p) in [("a.test", "/"), ("a.test", "/x"), ("b.test", "/")] {
            store.put(&key(d, p), &page("p"), HOUR).await.unwrap();
        }
        store.incr_renders("a.test", "2026-11").await.unwrap();
        assert_eq!(store.purge_all().await.unwrap(), 3);
        assert_eq!(store.get(&key("a.test", "/")).await.unwrap(), None);
        assert!(store.domains().await.unwrap().is_empty());
        assert_eq!(store.entries("a.test").await.unwrap(), 0);
        assert_eq!(
            store.renders_in_month("a.test", "2026-11").await.unwrap(),
            1
        );
        assert_eq!(store.purge_all().await.unwrap(), 0);
    }

    async fn next_event(rx: &mut tokio::sync::broadcast::Receiver<PurgeEvent>) -> PurgeEvent {
        tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("purge notice within the deadline")
            .expect("purge channel open")
    }

    pub async fn purges_are_announced(store: &Arc<dyn CacheStore>) {
        let mut rx = store.subscribe_purges();
        let k = key("example.com", "/a");
        store.put(&k, &page("a"), HOUR).await.unwrap();
        store.delete(&k).await.unwrap();
        assert_eq!(next_event(&mut rx).await, PurgeEvent::Page(k));
        store.purge_domain("Example.com").await.unwrap();
        assert_eq!(
            next_event(&mut rx).await,
            PurgeEvent::Domain("example.com".to_owned())
        );
        store.purge_all().await.unwrap();
        assert_eq!(next_event(&mut rx).await, PurgeEvent::All);
        let custom = PurgeEvent::Page(key("other.test", "/z"));
        store.publish_purge(&custom).await.unwrap();
        assert_eq!(next_event(&mut rx).await, custom);
    }

    pub async fn render_lock_is_exclusive_and_owner_checked(store: &Arc<dyn CacheStore>) {
        let k = key("example.com", "/p");
        assert!(!store.is_locked(&k).await.unwrap());
        assert!(store.try_lock(&k, "one", HOUR).await.unwrap());
        assert!(!store.try_lock(&k, "two", HOUR).await.unwrap());
        assert!(store.is_locked(&k).await.unwrap());
        assert!(
            !store.unlock(&k, "two").await.unwrap(),
            "only the owner unlocks"
        );
        assert!(store.is_locked(&k).await.unwrap());
        assert!(store.unlock(&k, "one").await.unwrap());
        assert!(!store.is_locked(&k).await.unwrap());
        assert!(store.try_lock(&k, "two", HOUR).await.unwrap());
        // Another key is independent.
        assert!(store
            .try_lock(&key("example.com", "/q"), "one", HOUR)
            .await
            .unwrap());
    }

    pub async fn render_lock_expires(store: &Arc<dyn CacheStore>) {
        let k = key("example.com", "/p");
        assert!(store
            .try_lock(&k, "dead", Duration::from_millis(200))
            .await
            .unwrap());
        eventually("the lock expired", || async {
            !store.is_locked(&k).await.unwrap()
        })
        .await;
        assert!(
            !store.unlock(&k, "dead").await.unwrap(),
            "an expired lock is not ours"
        );
        assert!(store.try_lock(&k, "alive", HOUR).await.unwrap());
    }

    pub async fn render_lock_lease_is_extended_only_by_its_owner(store: &Arc<dyn CacheStore>) {
        let k = key("example.com", "/lease");
        // Taken after `k` with the same lease and never extended: once it
        // is gone, `k`'s original lease has run out too.
        let gone = key("example.com", "/gone");
        let lease = Duration::from_millis(600);
        assert!(store.try_lock(&k, "one", lease).await.unwrap());
        assert!(store.try_lock(&gone, "one", lease).await.unwrap());
        assert!(!store.extend_lock(&k, "two", HOUR).await.unwrap());
        assert!(store.extend_lock(&k, "one", HOUR).await.unwrap());
        eventually("the lease that was not extended ran out", || async {
            !store.is_locked(&gone).await.unwrap()
        })
        .await;
        assert!(
            store.is_locked(&k).await.unwrap(),
            "the extended lease holds"
        );
        assert!(!store.try_lock(&k, "two", HOUR).await.unwrap());
        // A lease that ran out is not extended: someone else may hold it now.
        assert!(!store.extend_lock(&gone, "one", HOUR).await.unwrap());
        assert!(!store.is_locked(&gone).await.unwrap());
    }

    pub async fn waiter_gets_the_page_when_the_render_finishes(store: &Arc<dyn CacheStore>) {
        let k = key("example.com", "/slow");
        assert!(store.try_lock(&k, "renderer", HOUR).await.unwrap());
        let waiters: Vec<_> = (0..5)
            .map(|_| {
                let store = store.clone();
                let k = k.clone();
                tokio::spawn(async move {
                    store
                        .wait_for_page(&k, Instant::now() + DEADLINE)
                        .await
                        .unwrap()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let p = page("rendered");
        store.put(&k, &p, HOUR).await.unwrap();
        assert!(store.unlock(&k, "renderer").await.unwrap());
        for w in waiters {
            assert_eq!(w.await.unwrap(), WaitOutcome::Ready(p.clone()));
        }
    }

    pub async fn waiters_compete_again_when_the_renderer_dies(store: &Arc<dyn CacheStore>) {
        let k = key("example.com", "/crash");
        assert!(store
            .try_lock(&k, "dying", Duration::from_millis(300))
            .await
            .unwrap());
        let outcome = store
            .wait_for_page(&k, Instant::now() + DEADLINE)
            .await
            .unwrap();
        assert_eq!(outcome, WaitOutcome::LockReleased);
        assert!(store.try_lock(&k, "next", HOUR).await.unwrap());
    }

    pub async fn failed_render_releases_waiters_without_a_page(store: &Arc<dyn CacheStore>) {
        let k = key("example.com", "/fails");
        assert!(store.try_lock(&k, "r", HOUR).await.unwrap());
        let waiter = {
            let store = store.clone();
            let k = k.clone();
            tokio::spawn(async move { store.wait_for_page(&k, Instant::now() + DEADLINE).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(store.unlock(&k, "r").await.unwrap());
        assert_eq!(waiter.await.unwrap().unwrap(), WaitOutcome::LockReleased);
    }

    pub async fn waiting_stops_at_the_deadline(store: &Arc<dyn CacheStore>) {
        let k = key("example.com", "/stuck");
        assert!(store.try_lock(&k, "r", HOUR).await.unwrap());
        let outcome = tokio::time::timeout(
            DEADLINE,
            store.wait_for_page(&k, Instant::now() + Duration::from_millis(300)),
        )
        .await
        .expect("wait_for_page honours its deadline")
        .unwrap();
        assert_eq!(outcome, WaitOutcome::TimedOut);
    }

    pub async fn least_recently_used_pages_are_evicted_over_the_limit(store: &Arc<dyn CacheStore>) {
        let keys: Vec<CacheKey> = (0..5)
            .map(|i| key("example.com", &format!("/p{i}")))
            .collect();
        for k in &keys {
            store.put(k, &page("p"), HOUR).await.unwrap();
            store.schedule(k, at_ms(0)).await.unwrap();
        }
        let other = key("other.test", "/");
        store.put(&other, &page("o"), HOUR).await.unwrap();
        // Access order, oldest first: p3, p1, p4, p0, p2.
        for (t, i) in [3, 1, 4, 0, 2].into_iter().enumerate() {
            let at = SystemTime::now() + Duration::from_secs(60 + t as u64);
            store.touch(&keys[i], at).await.unwrap();
        }
        assert_eq!(store.entries("example.com").await.unwrap(), 5);
        let evicted = store.evict_over("example.com", 3).await.unwrap();
        assert_eq!(evicted, vec![keys[3].clone(), keys[1].clone()]);
        for i in [3, 1] {
            assert_eq!(store.get(&keys[i]).await.unwrap(), None);
        }
        for i in [4, 0, 2] {
            assert!(store.get(&keys[i]).await.unwrap().is_some());
        }
        assert!(store.get(&other).await.unwrap().is_some());
        assert_eq!(store.entries("example.com").await.unwrap(), 3);
        assert!(store.evict_over("example.com", 3).await.unwrap().is_empty());
        // Evicted pages are no longer refreshed.
        let claimed: HashSet<CacheKey> = store
            .claim_due("example.com", SystemTime::now(), 100)
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            claimed,
            [4, 0, 2].iter().map(|&i| keys[i].clone()).collect()
        );
    }

    /// A re-render (the refresher's) is no use: the page keeps its place in
    /// the LRU order; a touch (a crawler's hit or miss) moves it.
    pub async fn a_re_rendered_page_keeps_its_last_access(store: &Arc<dyn CacheStore>) {
        let (old, recent) = (key("example.com", "/old"), key("example.com", "/recent"));
        store.put(&old, &page("old"), HOUR).await.unwrap();
        store.put(&recent, &page("recent"), HOUR).await.unwrap();
        // Accesses before now: a put that set "now" would move a page last.
        let base = SystemTime::now() - Duration::from_secs(120);
        store.touch(&old, base).await.unwrap();
        store
            .touch(&recent, base + Duration::from_secs(1))
            .await
            .unwrap();
        store
            .put(&old, &page("old, refreshed"), HOUR)
            .await
            .unwrap();
        assert_eq!(
            store.evict_over("example.com", 1).await.unwrap(),
            vec![old.clone()]
        );
        assert!(store.get(&recent).await.unwrap().is_some());
        // Used after its re-render, it is the recent one.
        store.put(&old, &page("old"), HOUR).await.unwrap();
        store
            .put(&recent, &page("recent, refreshed"), HOUR)
            .await
            .unwrap();
        store
            .touch(&old, base + Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(
            store.evict_over("example.com", 1).await.unwrap(),
            vec![recent.clone()]
        );
    }

    pub async fn error_pages_are_evicted_before_any_other_page(store: &Arc<dyn CacheStore>) {
        let good: Vec<CacheKey> = (0..3)
            .map(|i| key("example.com", &format!("/good{i}")))
            .collect();
        for k in &good {
            store.put(k, &page("p"), HOUR).await.unwrap();
        }
        // A flood of bad links, each rendered (and accessed) after the good
        // pages, so plain LRU would take the good ones first.
        let mut kept_errors = Vec::new();
        for i in 0..20 {
            let k = key("example.com", &format!("/missing{i}"));
            let mut p = page("not found");
            p.status = if i % 2 == 0 { 404 } else { 410 };
            store.put(&k, &p, HOUR).await.unwrap();
            let at = SystemTime::now() + Duration::from_secs(60 + i);
            store.touch(&k, at).await.unwrap();
            let evicted = store.evict_over("example.com", 5).await.unwrap();
            assert!(
                evicted.iter().all(|e| !good.contains(e)),
                "a good page went for {k}: {evicted:?}"
            );
            kept_errors.push(k);
            kept_errors.retain(|e| !evicted.contains(e));
            assert!(kept_errors.len() <= 2, "{kept_errors:?}");
        }
        for k in &good {
            assert!(store.get(k).await.unwrap().is_some(), "{k}");
        }
        // The least recently used error pages went first: the last two stay.
        assert_eq!(kept_errors.len(), 2);
        assert!(kept_errors[1].to_string().ends_with("/missing19"));
        assert_eq!(store.entries("example.com").await.unwrap(), 5);
        // With no error page left, plain LRU order again.
        let evicted = store.evict_over("example.com", 2).await.unwrap();
        assert_eq!(evicted.len(), 3);
        assert!(
            kept_errors.iter().all(|k| evicted.contains(k)),
            "{evicted:?}"
        );
    }

    pub async fn touch_does_not_bring_back_a_deleted_page(store: &Arc<dyn CacheStore>) {
        let k = key("example.com", "/gone");
        store.put(&k, &page("p"), HOUR).await.unwrap();
        store.delete(&k).await.unwrap();
        store.touch(&k, SystemTime::now()).await.unwrap();
        assert_eq!(store.entries("example.com").await.unwrap(), 0);
        assert!(store.evict_over("example.com", 0).await.unwrap().is_empty());
    }

    pub async fn due_pages_are_claimed_once_across_claimers(store: &Arc<dyn CacheStore>) {
        let now = SystemTime::now();
        let due = super::claims::due_keys(30);
        for k in &due {
            store.put(k, &page("p"), HOUR).await.unwrap();
            store
                .schedule(k, now - Duration::from_secs(1))
                .await
                .unwrap();
        }
        let later = key("example.com", "/later");
        let later_at = at_ms(unix_ms(now) + 3_600_000);
        store.schedule(&later, later_at).await.unwrap();
        assert_eq!(
            store.next_due("example.com").await.unwrap(),
            Some(at_ms(unix_ms(now) - 1000))
        );
        super::claims::assert_claimed_once(&[store; 8], now, 3, &due).await;
        assert_eq!(store.next_due("example.com").await.unwrap(), Some(later_at));
        assert!(store
            .claim_due("example.com", now, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.claim_due("example.com", later_at, 10).await.unwrap(),
            vec![later]
        );
        assert_eq!(store.next_due("example.com").await.unwrap(), None);
    }

    pub async fn schedule_remembers_pages_past_their_ttl(store: &Arc<dyn CacheStore>) {
        let k = key("example.com", "/remembered");
        store
            .put(&k, &page("p"), Duration::from_millis(200))
            .await
            .unwrap();
        store.schedule(&k, at_ms(1)).await.unwrap();
        eventually("the page expired", || async {
            store.get(&k).await.unwrap().is_none()
        })
        .await;
        assert_eq!(store.entries("example.com").await.unwrap(), 0);
        assert_eq!(
            store
                .claim_due("example.com", SystemTime::now(), 10)
                .await
                .unwrap(),
            vec![k]
        );
    }

    pub async fn schedule_is_trimmed_to_the_limit_dropping_uncached_pages(
        store: &Arc<dyn CacheStore>,
    ) {
        let cached = key("example.com", "/cached");
        store.put(&cached, &page("p"), HOUR).await.unwrap();
        store.schedule(&cached, at_ms(1)).await.unwrap();
        for i in 0..4 {
            store
                .schedule(&key("example.com", &format!("/old{i}")), at_ms(2))
                .await
                .unwrap();
        }
        assert!(store.evict_over("example.com", 2).await.unwrap().is_empty());
        let claimed = store
            .claim_due("example.com", SystemTime::now(), 100)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        assert!(claimed.contains(&cached), "the cached page stays scheduled");
    }

    pub async fn renders_are_counted_per_domain_and_month(store: &Arc<dyn CacheStore>) {
        assert_eq!(
            store.renders_in_month("a.test", "2026-11").await.unwrap(),
            0
        );
        for expected in 1..=3 {
            assert_eq!(
                store.incr_renders("a.test", "2026-11").await.unwrap(),
                expected
            );
        }
        assert_eq!(store.incr_renders("b.test", "2026-11").await.unwrap(), 1);
        assert_eq!(
            store.renders_in_month("a.test", "2026-11").await.unwrap(),
            3
        );
        assert_eq!(
            store.renders_in_month("a.test", "2026-10").await.unwrap(),
            0
        );
        // A new month starts from zero.
        assert_eq!(store.incr_renders("a.test", "2026-12").await.unwrap(), 1);
    }

    pub async fn unverified_renders_are_counted_per_site_and_minute(store: &Arc<dyn CacheStore>) {
        for expected in 1..=3 {
            assert_eq!(
                store
                    .incr_unverified_renders("a.test", 29_000_000)
                    .await
                    .unwrap(),
                expected
            );
        }
        assert_eq!(
            store
                .incr_unverified_renders("_any", 29_000_000)
                .await
                .unwrap(),
            1
        );
        // The next minute starts from zero.
        assert_eq!(
            store
                .incr_unverified_renders("a.test", 29_000_001)
                .await
                .unwrap(),
            1
        );
    }

    pub async fn domain_arguments_are_normalised_like_hosts(store: &Arc<dyn CacheStore>) {
        let k = key("example.com", "/");
        store.put(&k, &page("p"), HOUR).await.unwrap();
        store.schedule(&k, at_ms(1)).await.unwrap();
        assert_eq!(store.entries("EXAMPLE.com:443").await.unwrap(), 1);
        assert_eq!(
            store.next_due("Example.com.").await.unwrap(),
            Some(at_ms(1))
        );
        assert_eq!(
            store.incr_renders("Example.COM", "2026-11").await.unwrap(),
            1
        );
        assert_eq!(
            store
                .renders_in_month("example.com", "2026-11")
                .await
                .unwrap(),
            1
        );
        assert!(store.evict_over("EXAMPLE.COM", 5).await.unwrap().is_empty());
        assert_eq!(
            store
                .claim_due("EXAMPLE.COM", SystemTime::now(), 5)
                .await
                .unwrap(),
            vec![k]
        );
        for bad in ["", "a b", "*", "render:x"] {
            assert!(store.entries(bad).await.is_err(), "{bad:?}");
            assert!(
                store.claim_due(bad, SystemTime::now(), 1).await.is_err(),
                "{bad:?}"
            );
            assert!(store.incr_renders(bad, "2026-11").await.is_err(), "{bad:?}");
        }
    }

    pub async fn concurrent_hits_all_see_the_page(store: &Arc<dyn CacheStore>) {
        let keys: Vec<CacheKey> = (0..50)
            .map(|i| key("example.com", &format!("/h{i}")))
            .collect();
        for k in &keys {
            store.put(k, &page(&k.to_string()), HOUR).await.unwrap();
        }
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let store = store.clone();
                let keys = keys.clone();
                tokio::spawn(async move {
                    for round in 0..20 {
                        let k = &keys[(t * 7 + round) % keys.len()];
                        let got = store.get(k).await.unwrap().expect("hit");
                        assert_eq!(got.html, Bytes::from(k.to_string()));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fixture = super::fixtures::memory().await;
                    super::contract::$name(&fixture.store).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fixture = super::fixtures::redis().await;
                    super::contract::$name(&fixture.store).await;
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let fixture = super::fixtures::redis_cluster().await;
                    super::contract::$name(&fixture.store).await;
                }
            )*
        }
    };
}

contract_tests!(
    put_then_get_round_trips_every_field,
    missing_page_is_none,
    contains_says_whether_a_page_is_stored,
    put_replaces_the_previous_page,
    zero_ttl_stores_nothing,
    page_is_gone_after_its_ttl,
    delete_removes_one_page,
    purge_domain_removes_only_that_domain,
    purge_all_keeps_only_quota_counters,
    pages_are_listed_by_prefix_in_key_order_and_paged,
    purge_prefix_removes_only_matching_pages,
    purges_are_announced,
    render_lock_is_exclusive_and_owner_checked,
    render_lock_expires,
    render_lock_lease_is_extended_only_by_its_owner,
    waiter_gets_the_page_when_the_render_finishes,
    waiters_compete_again_when_the_renderer_dies,
    failed_render_releases_waiters_without_a_page,
    waiting_stops_at_the_deadline,
    least_recently_used_pages_are_evicted_over_the_limit,
    a_re_rendered_page_keeps_its_last_access,
    error_pages_are_evicted_before_any_other_page,
    touch_does_not_bring_back_a_deleted_page,
    due_pages_are_claimed_once_across_claimers,
    schedule_remembers_pages_past_their_ttl,
    schedule_is_trimmed_to_the_limit_dropping_uncached_pages,
    renders_are_counted_per_domain_and_month,
    unverified_renders_are_counted_per_site_and_minute,
    domain_arguments_are_normalised_like_hosts,
    concurrent_hits_all_see_the_page,
);
