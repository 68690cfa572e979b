//! What the store tests share: keys, a stored page with every field set,
//! the bound that only catches hangs, and waiting for what a store (or
//! Redis) decides: a TTL or lease ending, a reconnect, a purge notice.
//!
//! Included by `#[path]` from the store tests, so it depends on nothing
//! else of `common`.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prerender_proxy::cache::{CacheKey, PageStore, PurgeEvent, RedisStore, StoredPage};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Generous bound for anything that should happen "soon"; only catches hangs.
pub const DEADLINE: Duration = Duration::from_secs(10);
pub const HOUR: Duration = Duration::from_secs(3600);

/// The desktop variant of `path` on `domain`, without query parameters.
pub fn key(domain: &str, path: &str) -> CacheKey {
    CacheKey::new(domain, path, &[], false).unwrap()
}

pub fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A page of `html` with every field set, headers with non-ASCII text and
/// quotes among them.
pub fn page(html: &str) -> StoredPage {
    StoredPage {
        html: Bytes::copy_from_slice(html.as_bytes()),
        status: 200,
        headers: vec![
            (
                "Location".to_owned(),
                "https://example.com/ü?a=\"b\"".to_owned(),
            ),
            ("X-Custom".to_owned(), "1".to_owned()),
        ],
        etag: "\"abc123\"".to_owned(),
        rendered_at: at_ms(1_790_000_000_123),
        expires_at: at_ms(1_790_003_600_123),
        settings_hash: "settings-1".to_owned(),
        content_hash: "content-1".to_owned(),
    }
}

/// Polls `check` every 50 ms until it holds; panics naming `what` once
/// [`DEADLINE`] has passed.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < DEADLINE, "{what} within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Retries `op` every 100 ms until it succeeds; panics naming `what` and
/// the last error once [`DEADLINE`] has passed.
pub async fn eventually_ok<T, E: std::fmt::Debug, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let until = Instant::now() + DEADLINE;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= until => panic!("{what}: never, last {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A store made before its Redis runs: it fails at first; once `bring_up`
/// has started Redis it connects by itself, notices included, and stores
/// pages.
pub async fn assert_store_comes_up_late(store: &RedisStore, bring_up: impl FnOnce()) {
    assert!(store.ping().await.is_err());
    assert!(!store.notices_connected());
    bring_up();
    eventually_ok("the store connected", || store.ping()).await;
    assert!(store.wait_notices_connected(DEADLINE).await);
    let k = key("example.com", "/late");
    store.put(&k, &page("p"), HOUR).await.unwrap();
    assert!(store.get(&k).await.unwrap().is_some());
}

/// The next purge notice, within [`DEADLINE`].
pub async fn next_purge(rx: &mut broadcast::Receiver<PurgeEvent>) -> PurgeEvent {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("purge notice within the deadline")
        .expect("purge channel open")
}

/// No purge notice within 300 ms: another deployment's purges are not heard.
pub async fn assert_no_purge_heard(rx: &mut broadcast::Receiver<PurgeEvent>) {
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "another deployment's purge is not heard"
    );
}
