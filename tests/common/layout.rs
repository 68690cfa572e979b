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
