//! The Redis store against a real redis-server: the documented key
//! layout, outages (fail fast, recover by itself) and several instances
//! sharing one server.

#[path = "common/ports.rs"]
mod ports;
use ports::free_port;
#[path = "common/claims.rs"]
mod claims;
#[path = "common/layout.rs"]
mod layout;
#[path = "common/redis.rs"]
mod redis_server;
#[path = "common/store.rs"]
mod store;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use prerender_proxy::cache::{
    quota_month, CacheKey, Coordination, PageStore, PurgeEvent, RedisOptions, RedisStore,
    WaitOutcome,
};
use redis::Commands;
use redis_server::RedisServer;
use store::{
    assert_no_purge_heard, assert_store_comes_up_late, at_ms, eventually_ok, key, next_purge, page,
    DEADLINE, HOUR,
};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_is_the_documented_render_key_family() {
    let server = RedisServer::start();
    let store = server.store().await;
    let mut raw = server.raw();

    // A redirect, stored with its Location header.
    let mut p = page("<html><body>rendered</body></html>");
    p.status = 301;
    let (k, meta) = layout::assert_stored_layout(&*store, &mut raw, &p).await;
    assert_eq!(meta["rendered_at"], "1790000000123");

    store.schedule(&k, at_ms(1_790_086_400_000)).await.unwrap();
    let due: Option<f64> = raw
        .zscore("render-due:example.com", "render:example.com:/a/b")
        .unwrap();
    assert_eq!(due, Some(1_790_086_400_000.0));

    let lock_ttl: i64 = raw.pttl("render-lock:example.com:/a/b").unwrap();
    assert!(lock_ttl > 0);

    let month = quota_month(SystemTime::now());
    store.incr_renders("example.com", &month).await.unwrap();
    let quota_key = format!("render-quota:example.com:{month}");
    let count: u64 = raw.get(&quota_key).unwrap();
    assert_eq!(count, 1);
    let quota_ttl: i64 = raw.ttl(&quota_key).unwrap();
    assert!(
        quota_ttl > 31 * 86_400 && quota_ttl <= 32 * 86_400,
        "{quota_ttl}"
    );

    let mobile = CacheKey::new("example.com", "/a/b", &[], true).unwrap();
    store.put(&mobile, &page("mobile"), HOUR).await.unwrap();
    let html: String = raw.get("render:example.com:m:/a/b").unwrap();
    assert_eq!(html, "mobile");

    // Eviction takes the page, its metadata and its index entries.
    store
        .touch(&mobile, SystemTime::now() + HOUR)
        .await
        .unwrap();
    assert_eq!(
        store.evict_over("example.com", 1).await.unwrap(),
        vec![k.clone()]
    );
    for gone in ["render:example.com:/a/b", "render-meta:example.com:/a/b"] {
        let exists: bool = raw.exists(gone).unwrap();
        assert!(!exists, "{gone}");
    }
    let indexed: Option<f64> = raw
        .zscore("render-index:example.com", "render:example.com:/a/b")
        .unwrap();
    assert_eq!(indexed, None);
    let scheduled: Option<f64> = raw
        .zscore("render-due:example.com", "render:example.com:/a/b")
        .unwrap();
    assert_eq!(scheduled, None);
    let meta: bool = raw.exists("render-meta:example.com:m:/a/b").unwrap();
    assert!(meta, "the kept page keeps its metadata");

    // Nothing outside the family.
    let keys: Vec<String> = raw.keys("*").unwrap();
    assert!(keys.iter().all(|k| k.starts_with("render")), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_written_or_unreadable_pages_are_misses() {
    let server = RedisServer::start();
    let store = server.store().await;
    let mut raw = server.raw();

    let () = raw.set("render:example.com:/orphan", "<html>").unwrap();
    assert_eq!(
        store.get(&key("example.com", "/orphan")).await.unwrap(),
        None
    );

    let () = raw.set("render:example.com:/bad", "<html>").unwrap();
    let () = raw
        .hset_multiple(
            "render-meta:example.com:/bad",
            &[("status", "not-a-number"), ("headers", "[]")],
        )
        .unwrap();
    assert_eq!(store.get(&key("example.com", "/bad")).await.unwrap(), None);

    // A re-render overwrites the broken entry.
    store
        .put(&key("example.com", "/bad"), &page("good"), HOUR)
        .await
        .unwrap();
    assert!(store
        .get(&key("example.com", "/bad"))
        .await
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_fast_and_the_store_recovers_by_itself() {
    let mut server = RedisServer::start();
    let store = server.store().await;
    let mut purges = store.subscribe_purges();
    let k = key("example.com", "/");
    store.put(&k, &page("before"), HOUR).await.unwrap();

    server.stop();
    let started = Instant::now();
    assert!(store.get(&k).await.is_err());
    assert!(store.put(&k, &page("during"), HOUR).await.is_err());
    assert!(store.try_lock(&k, "me", HOUR).await.is_err());
    assert!(store.ping().await.is_err());
    // Several commands, each bounded by the connect timeout (1 s).
    assert!(started.elapsed() < DEADLINE, "took {:?}", started.elapsed());

    server.restart();
    eventually_ok("the store recovered", || store.ping()).await;
    store.put(&k, &page("after"), HOUR).await.unwrap();
    assert_eq!(
        store.get(&k).await.unwrap().unwrap().html,
        Bytes::from("after")
    );

    // The notice channel comes back too, and says that purges may have
    // been missed meanwhile.
    assert!(store.wait_notices_connected(DEADLINE).await);
    assert_eq!(next_purge(&mut purges).await, PurgeEvent::All);
    store.delete(&k).await.unwrap();
    assert_eq!(next_purge(&mut purges).await, PurgeEvent::Page(k));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_times_out_instead_of_holding_requests() {
    let server = RedisServer::start();
    let options = RedisOptions {
        response_timeout: Duration::from_millis(500),
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(&server.url(), options).unwrap();
    let k = key("example.com", "/");
    store.put(&k, &page("p"), HOUR).await.unwrap();

    server.pause();
    let started = Instant::now();
    let result = tokio::time::timeout(DEADLINE, store.get(&k)).await;
    let elapsed = started.elapsed();
    server.resume();
    assert!(
        matches!(result, Ok(Err(_))),
        "a hung server must give an error, not a hang"
    );
    assert!(elapsed < DEADLINE, "took {elapsed:?}");

    let got = eventually_ok("the server answered again", || store.get(&k)).await;
    assert!(got.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_may_come_up_after_the_store() {
    let mut server = RedisServer::unstarted();
    let store = RedisStore::connect(&server.url(), RedisOptions::default()).unwrap();
    assert_store_comes_up_late(&store, || server.restart()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_redis_render_once_and_see_each_others_purges() {
    let server = RedisServer::start();
    let a = server.store().await;
    let b = server.store().await;
    let k = key("example.com", "/shared");

    assert!(a.try_lock(&k, "a", HOUR).await.unwrap());
    assert!(!b.try_lock(&k, "b", HOUR).await.unwrap());
    let waiter = {
        let b = b.clone();
        let k = k.clone();
        tokio::spawn(async move { b.wait_for_page(&k, Instant::now() + DEADLINE).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let p = page("rendered by a");
    a.put(&k, &p, HOUR).await.unwrap();
    assert!(a.unlock(&k, "a").await.unwrap());
    assert_eq!(waiter.await.unwrap().unwrap(), WaitOutcome::Ready(p));

    let mut b_purges = b.subscribe_purges();
    a.delete(&k).await.unwrap();
    assert_eq!(next_purge(&mut b_purges).await, PurgeEvent::Page(k.clone()));
    a.purge_domain("example.com").await.unwrap();
    assert_eq!(
        next_purge(&mut b_purges).await,
        PurgeEvent::Domain("example.com".to_owned())
    );

    // Each due page is refreshed by exactly one instance.
    let now = SystemTime::now();
    let due = claims::due_keys(40);
    for k in &due {
        a.schedule(k, now - Duration::from_secs(1)).await.unwrap();
    }
    claims::assert_claimed_once(&[&a, &b], now, 4, &due).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_walk_large_keyspaces_and_spare_other_domains() {
    let server = RedisServer::start();
    let store = server.store().await;
    let all_keys = || {
        let keys: Vec<String> = server.raw().keys("*").unwrap();
        keys
    };
    layout::assert_purges_walk_large_keyspaces(&*store, &mut server.raw(), &page("p"), all_keys)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_prefixes_keep_deployments_apart_on_one_server() {
    use prerender_proxy::pipeline::shared_queue::{JobLane, JobQueue, SharedJob};
    let server = RedisServer::start();
    let prefixed = |prefix: &str| RedisOptions {
        key_prefix: prefix.to_string(),
        ..RedisOptions::default()
    };
    let blue = server.store_with(prefixed("blue:")).await;
    let green = server.store_with(prefixed("green:")).await;
    let mut raw = server.raw();

    // Everything blue writes starts with its prefix.
    let k = key("example.com", "/a");
    let other = key("example.com", "/b");
    blue.put(&k, &page("blue page"), HOUR).await.unwrap();
    blue.put(&other, &page("blue b"), HOUR).await.unwrap();
    blue.schedule(&k, at_ms(0)).await.unwrap();
    assert!(blue.try_lock(&k, "me", HOUR).await.unwrap());
    blue.incr_renders("example.com", "2026-11").await.unwrap();
    blue.incr_unverified_renders("example.com", 42)
        .await
        .unwrap();
    let job = SharedJob {
        key: k.clone(),
        lane: JobLane::Live,
        queued_at: SystemTime::now(),
    };
    assert!(blue.push_job(&job, 10).await.unwrap().is_some());
    let keys: Vec<String> = raw.keys("*").unwrap();
    assert!(keys.len() >= 9, "{keys:?}");
    assert!(
        keys.iter().all(|k| k.starts_with("blue:render")),
        "{keys:?}"
    );
    let html: String = raw.get("blue:render:example.com:/a").unwrap();
    assert_eq!(html, "blue page");
    let member: Option<f64> = raw
        .zscore(
            "blue:render-index:example.com",
            "blue:render:example.com:/a",
        )
        .unwrap();
    assert!(member.is_some());

    // The other deployment sees none of it and keeps its own pages.
    assert_eq!(green.get(&k).await.unwrap(), None);
    assert!(!green.is_locked(&k).await.unwrap());
    assert_eq!(green.entries("example.com").await.unwrap(), 0);
    assert!(green.domains().await.unwrap().is_empty());
    assert_eq!(
        green
            .renders_in_month("example.com", "2026-11")
            .await
            .unwrap(),
        0
    );
    green.put(&k, &page("green page"), HOUR).await.unwrap();
    let mut green_purges = green.subscribe_purges();
    let mut blue_purges = blue.subscribe_purges();

    // Scripts (eviction, claims) and purges stay inside the prefix.
    blue.touch(&other, SystemTime::now() + HOUR).await.unwrap();
    assert_eq!(
        blue.evict_over("example.com", 1).await.unwrap(),
        vec![k.clone()]
    );
    assert_eq!(
        blue.claim_due("example.com", SystemTime::now(), 10)
            .await
            .unwrap(),
        Vec::<CacheKey>::new(),
        "the evicted page left the schedule"
    );
    blue.schedule(&other, at_ms(0)).await.unwrap();
    assert_eq!(
        blue.claim_due("example.com", SystemTime::now(), 10)
            .await
            .unwrap(),
        vec![other.clone()]
    );
    assert_eq!(blue.purge_all().await.unwrap(), 1);
    assert_eq!(
        next_purge(&mut blue_purges).await,
        PurgeEvent::Page(k.clone()),
        "the eviction's notice"
    );
    assert_eq!(next_purge(&mut blue_purges).await, PurgeEvent::All);
    assert_eq!(
        green.get(&k).await.unwrap().map(|p| p.html),
        Some(Bytes::from_static(b"green page"))
    );
    assert_no_purge_heard(&mut green_purges).await;
    assert_eq!(green.purge_domain("example.com").await.unwrap(), 1);
    let left: Vec<String> = raw.keys("green:render:*").unwrap();
    assert!(left.is_empty(), "{left:?}");
}
