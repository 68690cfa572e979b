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
    // A small bound is one shard: eviction is exactly least-recently-used.
    let max_bytes = 64 * 1024;
    assert_eq!(MemoryStore::shards_for(max_bytes), 1);
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
        // Read after every write: always the most recently used.
        assert!(
            store.get(&hot).await.unwrap().is_some(),
            "hot page evicted at {i}"
        );
    }
    let mut kept = Vec::new();
    for i in 0..200 {
        if store.get(&key(&format!("/p{i}"))).await.unwrap().is_some() {
            kept.push(i);
        }
    }
    // 64 KiB hold about fifty 1000-byte pages with their bookkeeping: the
    // most recent ones, and no older one.
    assert!((40..=64).contains(&kept.len()), "kept {}", kept.len());
    let first = 200 - kept.len();
    assert_eq!(kept, (first..200).collect::<Vec<_>>());
    // Evicted pages drop out of the domain's entries as well.
    assert_eq!(
        store.entries("example.com").await.unwrap(),
        kept.len() as u64 + 1
    );
}

#[tokio::test]
async fn a_large_bound_is_sharded_and_each_shard_holds_its_share() {
    use prerender_proxy::cache::memory::MIN_SHARD_BYTES;
    assert_eq!(MemoryStore::shards_for(MIN_SHARD_BYTES * 2 - 1), 1);
    assert_eq!(MemoryStore::shards_for(MIN_SHARD_BYTES * 2), 2);
    assert_eq!(MemoryStore::shards_for(u64::MAX), MEMORY_SHARDS);
    let max_bytes = MIN_SHARD_BYTES * MEMORY_SHARDS as u64;
    let store = MemoryStore::new(max_bytes);
    assert_eq!(store.max_page_bytes(), MIN_SHARD_BYTES);
    // The default bound holds pages of several MiB.
    let store = MemoryStore::new(prerender_proxy::cache::DEFAULT_CACHE_MAX_BYTES);
    assert!(store.max_page_bytes() >= MIN_SHARD_BYTES);
}

#[tokio::test]
async fn a_page_larger_than_a_shard_is_refused_not_half_stored() {
    let store = MemoryStore::new(4096);
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
