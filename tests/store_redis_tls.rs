//! Redis over TLS, end to end: a real `redis-server` that speaks TLS only,
//! its certificate from a CA made in the test and trusted through
//! `origin_ca_file`, reached as a Redis ACL user (`rediss://user:pass@…`).
//! Cache, dedup and purge work over it, and the password appears in no log
//! line, API answer or dashboard of the whole run.

mod common;

use std::time::Duration;

use common::origin::{Route, TestOrigin};
use common::proxy::{get, send, ProxyArgs, ProxyProcess, GOOGLEBOT};
use common::redis::TlsRedisServer;
use common::tls::TestCa;
use futures::future::join_all;

const HOST: &str = "www.example.test";
const TOKEN: &str = "test-admin-token-0123456789";
const PASSWORD: &str = "Sup3r-s3cret-redis-pa55";

fn page(text: &str) -> Route {
    Route::html(&format!(
        "<!doctype html><html><body><div id=app></div>\
         <script>document.getElementById('app').textContent = {text:?};</script></body></html>"
    ))
}

/// Purges `path` of the site through the admin API.
async fn purge(proxy: &ProxyProcess, path: &str) {
    let purged = send(
        "DELETE",
        &proxy.cache_entry_url(HOST, path),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .await;
    assert!(purged.status.is_success(), "{}", purged.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_dedup_and_purge_work_over_rediss_and_the_password_is_never_shown() {
    let ca = TestCa::new("prerender-proxy test redis CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf(&["localhost"]).write(dir.path(), "redis");
    let redis = TlsRedisServer::start(&ca.pem, &cert, &key, "prerender", PASSWORD);
    let origin = TestOrigin::start(vec![
        ("/page", page("cached over rediss")),
        (
            "/shared",
            page("rendered once").delay(Duration::from_millis(500)),
        ),
    ])
    .await;
    let ca_file = ca.write(dir.path(), "ca.pem");
    let log = dir.path().join("proxy.log");
    let mut proxy = ProxyArgs::any_host(origin.url().as_str())
        .quick_ready()
        .flag("--admin-token", TOKEN)
        .start_with_stderr(
            &[
                ("REDIS_URL", redis.url().as_str()),
                ("PRERENDER_ORIGIN_CA_FILE", ca_file.to_str().unwrap()),
                ("RUST_LOG", "debug"),
            ],
            std::fs::File::create(&log).unwrap(),
        );
    proxy.wait_until("/readyz", Duration::from_secs(30));

    // Cache: a miss renders and stores in the TLS Redis, then a hit.
    let miss = proxy.crawl_served(HOST, "/page", "MISS").await;
    assert!(miss.text().contains("cached over rediss"));
    assert!(redis.exists(&format!("render:{HOST}:/page")));
    proxy.crawl_served(HOST, "/page", "HIT").await;

    // Dedup: three crawlers at once, one render (one document fetch).
    let answers = join_all((0..3).map(|_| proxy.crawl(HOST, "/shared"))).await;
    for a in &answers {
        assert_eq!(a.status, 200);
        assert!(a.text().contains("rendered once"));
    }
    assert_eq!(origin.hits("/shared"), 1, "{:?}", origin.paths());

    // Purge: the key leaves Redis; the next crawler is a miss.
    let auth = format!("Bearer {TOKEN}");
    purge(&proxy, "/page").await;
    assert!(!redis.exists(&format!("render:{HOST}:/page")));
    proxy.crawl_served(HOST, "/page", "MISS").await;

    // No secret anywhere: the API, the dashboard, the metrics, the log.
    for path in ["/api/v1/stats", "/", "/metrics", "/readyz"] {
        let r = get(&proxy.admin_url(path), &[("authorization", &auth)]).await;
        assert!(!r.text().contains(PASSWORD), "{path} shows the password");
    }
    let r = get(
        &proxy.url("/page"),
        &[("host", HOST), ("user-agent", GOOGLEBOT)],
    )
    .await;
    assert!(!r.text().contains(PASSWORD));
    proxy.stop();
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(
        lines.contains("listening"),
        "the run's log was captured: {lines}"
    );
    assert!(
        lines.contains("prerender:***@localhost"),
        "the start-up line names the store, redacted: {lines}"
    );
    assert!(!lines.contains(PASSWORD), "the log shows the password");
}

/// A Redis Cluster that speaks TLS only (clients and the cluster bus): the
/// proxy reaches every node with `rediss://` node URLs, trusting the test
/// CA through `origin_ca_file`, also the nodes it only learns of from the
/// cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_and_purge_work_on_a_redis_cluster_over_tls() {
    use common::redis_cluster::{ClusterTls, RedisCluster};
    let ca = TestCa::new("prerender-proxy test cluster CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca
        .leaf(&["127.0.0.1", "localhost"])
        .write(dir.path(), "node");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let cluster = RedisCluster::start_tls(ClusterTls {
        ca: ca_file.clone(),
        cert,
        key,
    });
    let origin = TestOrigin::start(vec![("/page", page("cached in a TLS cluster"))]).await;
    // One node is enough: the others are discovered.
    let first = cluster.urls()[0].clone();
    let mut proxy = ProxyArgs::any_host(origin.url().as_str())
        .flag("--tabs-per-browser", "1")
        .quick_ready()
        .flag("--admin-token", TOKEN)
        .start_with_env(&[
            ("REDIS_URL", format!("{first},{first}").as_str()),
            ("PRERENDER_ORIGIN_CA_FILE", ca_file.to_str().unwrap()),
        ]);
    proxy.wait_until("/readyz", Duration::from_secs(30));
    proxy.crawl_served(HOST, "/page", "MISS").await;
    let key = format!("render:{HOST}:/page");
    let stored: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query(&mut cluster.raw())
        .unwrap();
    assert!(stored.unwrap().contains("cached in a TLS cluster"));
    proxy.crawl_served(HOST, "/page", "HIT").await;
    purge(&proxy, "/page").await;
    let gone: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query(&mut cluster.raw())
        .unwrap();
    assert_eq!(gone, None);
}
