//! The documented Redis layout of one stored page, checked on the raw
//! keys of a server or a cluster.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use prerender_proxy::cache::{CacheKey, StoredPage};
use redis::Commands;

/// Checks that `page`, stored under `key` for at most `ttl`, is laid out
/// as documented: the HTML as a plain string (`redis-cli GET` shows the
/// page), the metadata hash, both with the TTL, the LRU index entry and
/// the domain set. Returns the metadata hash for backend-specific checks.
pub fn assert_page_layout<C: redis::ConnectionLike>(
    raw: &mut C,
    key: &CacheKey,
    page: &StoredPage,
    ttl: Duration,
) -> HashMap<String, String> {
    let name = key.to_string();
    let millis = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
            .to_string()
    };
    let html: Vec<u8> = raw.get(&name).unwrap();
    assert_eq!(html, page.html.to_vec());
    let meta: HashMap<String, String> = raw.hgetall(key.meta_key()).unwrap();
    assert_eq!(meta["status"], page.status.to_string());
    assert_eq!(meta["etag"], page.etag);
    assert_eq!(meta["rendered_at"], millis(page.rendered_at));
    assert_eq!(meta["expires_at"], millis(page.expires_at));
    assert_eq!(meta["settings_hash"], page.settings_hash);
    assert_eq!(meta["content_hash"], page.content_hash);
    let headers: Vec<(String, String)> = serde_json::from_str(&meta["headers"]).unwrap();
    assert_eq!(headers, page.headers);
    for stored in [name.clone(), key.meta_key()] {
        let pttl: i64 = raw.pttl(&stored).unwrap();
        assert!(
            pttl > 0 && pttl as u128 <= ttl.as_millis(),
            "{stored}: {pttl}"
        );
    }
    let score: Option<f64> = raw
        .zscore(format!("render-index:{}", key.domain()), &name)
        .unwrap();
    assert!(score.is_some(), "{name} is in the LRU index");
    let member: bool = raw.sismember("render-domains", key.domain()).unwrap();
    assert!(member, "{} is in the domain set", key.domain());
    meta
}

/// Stores `page` under `Example.com:443` `/a/b` for an hour and checks
/// that the key is normalised (`render:example.com:/a/b`), that the page
/// is laid out as [`assert_page_layout`] says, and that a render lock is
/// a plain key holding its owner. Returns the key and the metadata hash.
pub async fn assert_stored_layout<S, C>(
    store: &S,
    raw: &mut C,
    page: &StoredPage,
) -> (CacheKey, HashMap<String, String>)
where
    S: prerender_proxy::cache::CacheStore + ?Sized,
    C: redis::ConnectionLike,
{
    let hour = Duration::from_secs(3600);
    let key = CacheKey::new("Example.com:443", "/a/b", &[], false).unwrap();
    store.put(&key, page, hour).await.unwrap();
    assert_eq!(key.to_string(), "render:example.com:/a/b");
    let meta = assert_page_layout(raw, &key, page, hour);
    assert!(store.try_lock(&key, "instance-1", hour).await.unwrap());
    let owner: String = raw.get("render-lock:example.com:/a/b").unwrap();
    assert_eq!(owner, "instance-1");
    (key, meta)
}

/// Purges on a keyspace like a long-running deployment's: 3000 pages of
/// `big.test` written directly through `raw`, 10 stored ones of
/// `small.test`, a running render's lock and a quota counter. A domain
/// purge removes exactly the 3000 pages and spares the lock, the counter
/// and the other domain; a full purge leaves only the lock and the
/// counter. `all_keys` lists every key in the store.
pub async fn assert_purges_walk_large_keyspaces<S, C>(
    store: &S,
    raw: &mut C,
    page: &StoredPage,
    all_keys: impl Fn() -> Vec<String>,
) where
    S: prerender_proxy::cache::CacheStore + ?Sized,
    C: redis::ConnectionLike,
{
    for i in 0..3000 {
        let () = raw.set(format!("render:big.test:/p{i}"), "x").unwrap();
        let () = raw
            .hset(format!("render-meta:big.test:/p{i}"), "status", "200")
            .unwrap();
    }
    let key = |domain: &str, path: &str| CacheKey::new(domain, path, &[], false).unwrap();
    for i in 0..10 {
        let small = key("small.test", &format!("/p{i}"));
        store
            .put(&small, page, Duration::from_secs(3600))
            .await
            .unwrap();
    }
    store.incr_renders("big.test", "2026-11").await.unwrap();
    let lock_ttl = Duration::from_secs(3600);
    assert!(store
        .try_lock(&key("big.test", "/p1"), "r", lock_ttl)
        .await
        .unwrap());
    let sorted_keys = || {
        let mut keys = all_keys();
        keys.sort();
        keys
    };

    assert_eq!(store.purge_domain("big.test").await.unwrap(), 3000);
    let left: Vec<String> = sorted_keys()
        .into_iter()
        .filter(|k| k.contains(":big.test:"))
        .collect();
    // The running render's lock and the month's count survive a purge.
    assert_eq!(
        left,
        vec!["render-lock:big.test:/p1", "render-quota:big.test:2026-11"]
    );
    assert_eq!(store.entries("small.test").await.unwrap(), 10);

    assert_eq!(store.purge_all().await.unwrap(), 10);
    assert_eq!(
        sorted_keys(),
        vec!["render-lock:big.test:/p1", "render-quota:big.test:2026-11"]
    );
}
