//! The Redis store on a real 3-primary Redis Cluster: the documented key
//! layout across slots, torn writes never served, and several instances
//! sharing one cluster (one render per key, purges seen everywhere, each
//! due page claimed once), plus notices surviving the loss of a node.

#[path = "common/ports.rs"]
mod ports;
use ports::free_port;
#[path = "common/claims.rs"]
mod claims;
#[path = "common/redis_cluster.rs"]
mod cluster_nodes;
#[path = "common/layout.rs"]
mod layout;
#[path = "common/store.rs"]
mod store;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cluster_nodes::RedisCluster;
use prerender_proxy::cache::{
    CacheKey, Coordination, PageStore, PurgeEvent, RedisOptions, RedisStore, WaitOutcome,
};
use redis::Commands;
use sha2::{Digest, Sha256};
use store::{
    assert_no_purge_heard, assert_store_comes_up_late, eventually_ok, key, next_purge, page,
    DEADLINE, HOUR,
};
use tokio::time::Instant;

fn slot(raw: &mut redis::cluster::ClusterConnection, name: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(name)
        .query(raw)
        .unwrap()
}

/// Every key on one node (test keyspaces are small).
fn keys_on(port: u16) -> Vec<String> {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection()
        .unwrap();
    conn.keys("*").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_is_the_render_key_family_without_hash_tags() {
    let cluster = RedisCluster::start();
    let store = cluster.store().await;
    let mut raw = cluster.raw();
    assert_eq!(store.backend(), "redis-cluster");

    let p = page("<html><body>rendered</body></html>");
    let (k, meta) = layout::assert_stored_layout(&*store, &mut raw, &p).await;
    assert_eq!(
        meta["html_sha256"],
        hex::encode(Sha256::digest(&p.html)),
        "the metadata names the HTML it belongs to"
    );
    // The two halves of this page live on different slots: the write
    // really spans slots.
    assert_ne!(
        slot(&mut raw, "render:example.com:/a/b"),
        slot(&mut raw, "render-meta:example.com:/a/b")
    );
    assert_eq!(store.get(&k).await.unwrap(), Some(p));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_or_half_written_pages_are_misses() {
    let cluster = RedisCluster::start();
    let store = cluster.store().await;
    let mut raw = cluster.raw();
    let k = key("example.com", "/torn");
    store.put(&k, &page("old"), HOUR).await.unwrap();

    // A replacement cut short after its HTML: new HTML, old metadata.
    let () = raw.set("render:example.com:/torn", "new").unwrap();
    assert_eq!(store.get(&k).await.unwrap(), None);

    // A first write cut short: HTML without metadata.
    let () = raw.set("render:example.com:/orphan", "<html>").unwrap();
    assert_eq!(
        store.get(&key("example.com", "/orphan")).await.unwrap(),
        None
    );

    // Metadata whose HTML is gone.
    store.put(&k, &page("again"), HOUR).await.unwrap();
    assert!(store.get(&k).await.unwrap().is_some());
    let () = raw.del("render:example.com:/torn").unwrap();
    assert_eq!(store.get(&k).await.unwrap(), None);

    // A complete re-render is served again.
    store.put(&k, &page("whole"), HOUR).await.unwrap();
    assert_eq!(store.get(&k).await.unwrap().unwrap().html, "whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacements_racing_reads_are_never_served_torn() {
    let cluster = RedisCluster::start();
    let store = cluster.store().await;
    let k = key("example.com", "/busy");
    let version = |i: usize| {
        let mut p = page(&format!("<html>version {i}</html>"));
        p.etag = format!("\"v{i}\"");
        p
    };
    store.put(&k, &version(0), HOUR).await.unwrap();
    let writer = {
        let store = store.clone();
        let k = k.clone();
        tokio::spawn(async move {
            for i in 1..200 {
                store.put(&k, &version(i), HOUR).await.unwrap();
            }
        })
    };
    let mut served = 0;
    while !writer.is_finished() {
        if let Some(got) = store.get(&k).await.unwrap() {
            let i: usize = got
                .etag
                .trim_matches(|c| c == '"' || c == 'v')
                .parse()
                .unwrap();
            assert_eq!(got, version(i), "HTML and metadata of one render");
            served += 1;
        }
    }
    writer.await.unwrap();
    assert!(served > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_render_once_and_waiters_get_the_page() {
    let cluster = RedisCluster::start();
    let instances = [cluster.store().await, cluster.store().await];
    let k = key("example.com", "/new");
    let renders = Arc::new(AtomicUsize::new(0));
    let p = page("rendered once");
    let mut requests = Vec::new();
    for (n, store) in instances.iter().enumerate() {
        for r in 0..10 {
            let (store, k, p, renders) = (store.clone(), k.clone(), p.clone(), renders.clone());
            let owner = format!("instance-{n}-request-{r}");
            requests.push(tokio::spawn(async move {
                loop {
                    if let Some(found) = store.get(&k).await.unwrap() {
                        return found;
                    }
                    if store.try_lock(&k, &owner, HOUR).await.unwrap() {
                        renders.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        store.put(&k, &p, HOUR).await.unwrap();
                        assert!(store.unlock(&k, &owner).await.unwrap());
                        return p;
                    }
                    match store
                        .wait_for_page(&k, Instant::now() + DEADLINE)
                        .await
                        .unwrap()
                    {
                        WaitOutcome::Ready(found) => return found,
                        WaitOutcome::LockReleased => continue,
                        WaitOutcome::TimedOut => panic!("waited past the deadline"),
                    }
                }
            }));
        }
    }
    for request in requests {
        assert_eq!(request.await.unwrap(), p);
    }
    assert_eq!(renders.load(Ordering::SeqCst), 1, "one render cluster-wide");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_on_one_instance_are_seen_by_the_other_on_every_primary() {
    let cluster = RedisCluster::start();
    let a = cluster.store().await;
    let b = cluster.store().await;
    let mut b_purges = b.subscribe_purges();
    let pages: Vec<CacheKey> = (0..30)
        .map(|i| key("example.com", &format!("/p{i}")))
        .collect();
    for k in &pages {
        a.put(k, &page("p"), HOUR).await.unwrap();
    }
    let other = key("other.test", "/");
    a.put(&other, &page("o"), HOUR).await.unwrap();
    for &port in cluster.ports() {
        assert!(
            keys_on(port).iter().any(|k| k.contains(":example.com:/p")),
            "every primary holds some pages (port {port})"
        );
    }

    a.delete(&pages[0]).await.unwrap();
    assert_eq!(
        next_purge(&mut b_purges).await,
        PurgeEvent::Page(pages[0].clone())
    );
    assert_eq!(b.get(&pages[0]).await.unwrap(), None);

    assert_eq!(a.purge_domain("example.com").await.unwrap(), 29);
    assert_eq!(
        next_purge(&mut b_purges).await,
        PurgeEvent::Domain("example.com".to_owned())
    );
    for k in &pages {
        assert_eq!(b.get(k).await.unwrap(), None, "{k}");
    }
    for &port in cluster.ports() {
        let left: Vec<String> = keys_on(port)
            .into_iter()
            .filter(|k| k.contains("example.com"))
            .collect();
        assert!(left.is_empty(), "port {port} kept {left:?}");
    }
    assert!(b.get(&other).await.unwrap().is_some());
    assert_eq!(b.entries("example.com").await.unwrap(), 0);

    assert_eq!(b.purge_all().await.unwrap(), 1);
    assert_eq!(next_purge(&mut b_purges).await, PurgeEvent::All);
    assert_eq!(a.get(&other).await.unwrap(), None);
    assert!(a.domains().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_pages_are_claimed_once_across_instances() {
    let cluster = RedisCluster::start();
    let a = cluster.store().await;
    let b = cluster.store().await;
    let now = SystemTime::now();
    let due = claims::due_keys(40);
    for k in &due {
        a.schedule(k, now - Duration::from_secs(1)).await.unwrap();
    }
    claims::assert_claimed_once(&[&a, &b, &a, &b], now, 3, &due).await;
    assert_eq!(b.next_due("example.com").await.unwrap(), None);
}

/// Kills the node the second instance's notice subscription is on (the
/// first configured one) and checks that notices still reach it.
async fn check_notices_fail_over(configured_nodes: usize) {
    let mut cluster = RedisCluster::start();
    let a = cluster
        .store_with(configured_nodes, RedisOptions::default())
        .await;
    let b = cluster
        .store_with(configured_nodes, RedisOptions::default())
        .await;
    let mut b_purges = b.subscribe_purges();

    cluster.kill(0);
    assert_eq!(
        next_purge(&mut b_purges).await,
        PurgeEvent::All,
        "after reconnecting, purges may have been missed"
    );
    assert!(b.wait_notices_connected(DEADLINE).await);

    let event = PurgeEvent::Domain("example.com".to_owned());
    // PUBLISH may be routed to the dead node; the store then errs and
    // the caller retries.
    eventually_ok("publish got through", || a.publish_purge(&event)).await;
    assert_eq!(next_purge(&mut b_purges).await, event);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_move_to_another_configured_node_when_theirs_fails() {
    check_notices_fail_over(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_move_to_a_discovered_node_when_the_only_configured_one_fails() {
    check_notices_fail_over(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_fails_fast() {
    let ports: Vec<String> = (0..3)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!(
                "redis://127.0.0.1:{}",
                listener.local_addr().unwrap().port()
            )
        })
        .collect();
    let store = RedisStore::connect_cluster(&ports, RedisOptions::default()).unwrap();
    let started = Instant::now();
    assert!(store.ping().await.is_err());
    assert!(store.get(&key("example.com", "/")).await.is_err());
    assert!(!store.notices_connected());
    assert!(started.elapsed() < DEADLINE, "took {:?}", started.elapsed());
    assert!(RedisStore::connect_cluster(&[], RedisOptions::default()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_may_come_up_after_the_store() {
    let mut cluster = RedisCluster::unstarted();
    let store = RedisStore::connect_cluster(&cluster.urls(), RedisOptions::default()).unwrap();
    assert_store_comes_up_late(&store, || cluster.create()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_walk_large_keyspaces_on_every_primary() {
    let cluster = RedisCluster::start();
    let store = cluster.store().await;
    let all_keys = || cluster.ports().iter().flat_map(|&p| keys_on(p)).collect();
    layout::assert_purges_walk_large_keyspaces(&*store, &mut cluster.raw(), &page("p"), all_keys)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_reach_subscribers_on_every_node() {
    let cluster = RedisCluster::start();
    let store = cluster.store().await;
    let mut listeners: Vec<redis::Connection> = cluster
        .ports()
        .iter()
        .map(|port| {
            let conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .unwrap()
                .get_connection()
                .unwrap();
            conn.set_read_timeout(Some(DEADLINE)).unwrap();
            conn
        })
        .collect();
    let mut subscriptions: Vec<redis::PubSub<'_>> = listeners
        .iter_mut()
        .map(|conn| {
            let mut pubsub = conn.as_pubsub();
            pubsub.subscribe(&["render-done", "render-purge"]).unwrap();
            pubsub
        })
        .collect();

    // The end of a render is published by the unlock script on the lock
    // key's node, a purge by whichever node takes the PUBLISH.
    let k = key("example.com", "/announced");
    assert!(store.try_lock(&k, "r", HOUR).await.unwrap());
    assert!(store.unlock(&k, "r").await.unwrap());
    store.delete(&k).await.unwrap();
    let expected: HashSet<(String, String)> = [
        ("render-done".to_owned(), k.to_string()),
        (
            "render-purge".to_owned(),
            PurgeEvent::Page(k.clone()).to_message(),
        ),
    ]
    .into();
    for pubsub in &mut subscriptions {
        // Notices from different nodes may arrive in either order.
        let got: HashSet<(String, String)> = (0..2)
            .map(|_| {
                let message = pubsub.get_message().unwrap();
                let payload: String = message.get_payload().unwrap();
                (message.get_channel_name().to_owned(), payload)
            })
            .collect();
        assert_eq!(got, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seed_node_finds_the_whole_cluster() {
    let cluster = RedisCluster::start();
    let store = cluster.store_with(1, RedisOptions::default()).await;
    let pages: Vec<CacheKey> = (0..20)
        .map(|i| key("example.com", &format!("/s{i}")))
        .collect();
    for k in &pages {
        store.put(k, &page("p"), HOUR).await.unwrap();
    }
    for k in &pages {
        assert!(store.get(k).await.unwrap().is_some(), "{k}");
    }
    assert_eq!(store.entries("example.com").await.unwrap(), 20);
    assert_eq!(store.purge_domain("example.com").await.unwrap(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_prefixes_keep_deployments_apart_on_one_cluster() {
    let cluster = RedisCluster::start();
    let prefixed = |prefix: &str| RedisOptions {
        key_prefix: prefix.to_string(),
        ..RedisOptions::default()
    };
    let blue = cluster
        .store_with(cluster.ports().len(), prefixed("blue:"))
        .await;
    let green = cluster
        .store_with(cluster.ports().len(), prefixed("green:"))
        .await;
    // Pages on several slots, evicted client-side as a cluster does.
    let keys: Vec<CacheKey> = (0..6)
        .map(|i| key("example.com", &format!("/p/{i}")))
        .collect();
    for k in &keys {
        blue.put(k, &page("blue"), HOUR).await.unwrap();
        blue.schedule(k, UNIX_EPOCH).await.unwrap();
    }
    green.put(&keys[0], &page("green"), HOUR).await.unwrap();
    blue.touch(&keys[0], SystemTime::now() + HOUR)
        .await
        .unwrap();
    let evicted = blue.evict_over("example.com", 5).await.unwrap();
    assert_eq!(evicted.len(), 1, "{evicted:?}");
    assert_ne!(evicted[0], keys[0], "the most recently used page stays");
    assert_eq!(blue.entries("example.com").await.unwrap(), 5);
    assert_eq!(green.entries("example.com").await.unwrap(), 1);
    for port in cluster.ports() {
        for name in keys_on(*port) {
            assert!(
                name.starts_with("blue:render") || name.starts_with("green:render"),
                "{name} on {port}"
            );
        }
    }
    let mut green_purges = green.subscribe_purges();
    assert_eq!(blue.purge_all().await.unwrap(), 5);
    assert_eq!(
        green.get(&keys[0]).await.unwrap().map(|p| p.html),
        Some(Bytes::from_static(b"green"))
    );
    assert_no_purge_heard(&mut green_purges).await;
    let left: usize = cluster
        .ports()
        .iter()
        .map(|p| {
            keys_on(*p)
                .iter()
                .filter(|k| k.starts_with("blue:"))
                .count()
        })
        .sum();
    assert_eq!(left, 0);
}
