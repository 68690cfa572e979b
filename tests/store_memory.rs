//! The embedded store's own bounds: total bytes with least-recently-used
//! eviction, and honest accounting.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use prerender_proxy::cache::memory::MEMORY_SHARDS;
use prerender_proxy::cache::{
    CacheKey, Coordination, MemoryStore, PageStore, StoreError, StoredPage,
};

const HOUR: Duration = Duration::from_secs(3600);

fn key(path: &str) -> CacheKey {
    CacheKey::new("example.com", path, &[], false).unwrap()
}

fn page(bytes: usize) -> StoredPage {
    StoredPage {
        html: Bytes::from(vec![b'x'; bytes]),
        status: 200,
        headers: vec![],
        etag: "\"e\"".to_owned(),
        rendered_at: SystemTime::now(),
        expires_at: SystemTime::now() + HOUR,
        settings_hash: "s".to_owned(),
        content_hash: "c".to_owned(),
    }
}

#[tokio::test]
async fn the_byte_bound_holds_and_recently_read_pages_survive() {
    let max_bytes = (MEMORY_SHARDS * 4096) as u64;
    let store = MemoryStore::new(max_bytes);
    let hot = key("/hot");
    store.put(&hot, &page(1000), HOUR).await.unwrap();
    for i in 0..200 {
        store
            .put(&key(&format!("/p{i}")), &page(1000), HOUR)
            .await
            .unwrap();
        assert!(
            store.bytes_used() <= max_bytes,
            "{} > {max_bytes}",
            store.bytes_used()
        );
        // Read after every write: always the most recently used of its shard.
        assert!(
            store.get(&hot).await.unwrap().is_some(),
            "hot page evicted at {i}"
        );
    }
    let mut kept = 0;
    for i in 0..200 {
        if store.get(&key(&format!("/p{i}"))).await.unwrap().is_some() {
            kept += 1;
        }
    }
    // 4096 bytes a shard hold at most three 1000-byte pages (plus bookkeeping).
    assert!(kept <= MEMORY_SHARDS * 3, "kept {kept}");
    assert!(
        kept >= MEMORY_SHARDS,
        "kept only {kept}: eviction is too eager"
    );
    // Evicted pages drop out of the domain's entries as well.
    assert_eq!(store.entries("example.com").await.unwrap(), kept as u64 + 1);
}

#[tokio::test]
async fn a_page_larger_than_a_shard_is_refused_not_half_stored() {
    let store = MemoryStore::new(MEMORY_SHARDS as u64 * 4096);
    assert_eq!(store.max_page_bytes(), 4096);
    let k = key("/huge");
    let err = store.put(&k, &page(5000), HOUR).await.unwrap_err();
    assert!(
        matches!(err, StoreError::TooLarge { limit: 4096, .. }),
        "{err}"
    );
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert_eq!(store.bytes_used(), 0);
    assert_eq!(store.entries("example.com").await.unwrap(), 0);
}

#[tokio::test]
async fn bytes_used_follows_puts_replacements_and_removals() {
    let store = MemoryStore::new(prerender_proxy::cache::DEFAULT_CACHE_MAX_BYTES);
    assert_eq!(store.bytes_used(), 0);
    let a = key("/a");
    store.put(&a, &page(10_000), HOUR).await.unwrap();
    let one = store.bytes_used();
    assert!(one >= 10_000, "{one}");
    store.put(&a, &page(10_000), HOUR).await.unwrap();
    assert_eq!(
        store.bytes_used(),
        one,
        "a replacement is not counted twice"
    );
    store.put(&key("/b"), &page(10_000), HOUR).await.unwrap();
    assert_eq!(store.bytes_used(), 2 * one);
    store.delete(&a).await.unwrap();
    assert_eq!(store.bytes_used(), one);
    store.purge_all().await.unwrap();
    assert_eq!(store.bytes_used(), 0);

    store
        .put(&a, &page(10_000), Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.get(&a).await.unwrap(), None);
    assert_eq!(
        store.bytes_used(),
        0,
        "an expired page frees its bytes when noticed"
    );
}

#[test]
fn the_default_bound_is_256_mib() {
    assert_eq!(
        prerender_proxy::cache::DEFAULT_CACHE_MAX_BYTES,
        256 * 1024 * 1024
    );
}
