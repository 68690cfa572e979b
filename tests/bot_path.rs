//! Crawlers end to end: the real binary, real Chromium, a local JavaScript
//! origin, and either a real redis-server or the embedded store.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{
    config_file, get, one_site_config, ProxyArgs, ProxyProcess, FIREFOX, GOOGLEBOT,
};
use common::redis::RedisServer;
use common::spa::Spa;
use futures::future::join_all;

const HOST: &str = "www.example.test";
const GOOGLEBOT_SMARTPHONE: &str = "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.116 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// A small pool on a shared 2-core machine, for `origin`.
fn small(origin: &str) -> ProxyArgs {
    ProxyArgs::small_pool(origin, HOST).quick_ready()
}

async fn bot(proxy: &ProxyProcess, path: &str) -> common::proxy::Reply {
    proxy.crawl(HOST, path).await
}

#[tokio::test]
async fn miss_then_hit_stored_in_redis_under_the_spec_key() {
    let spa = Spa::start().await;
    let redis = RedisServer::start();
    let proxy = small(&spa.url())
        .flag("--redis", &redis.url())
        .start_ready();

    let first = bot(&proxy, "/app/x").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-prerender-cache"), Some("MISS"));
    assert!(
        first.text().contains("Rendered by JavaScript at /app/x"),
        "{}",
        first.text()
    );
    assert!(
        first.text().contains(&format!("host={HOST}")),
        "rendered as the public host"
    );
    assert!(!first.text().contains("app.js"), "scripts are stripped");
    assert!(
        first.text().contains("application/ld+json"),
        "JSON-LD is kept"
    );
    assert_eq!(
        first.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    // Private by default: an edge that ignores `Vary: User-Agent` must not
    // hand this snapshot to people.
    assert_eq!(first.header("cache-control"), Some("private, max-age=3600"));
    assert!(first.header("vary").unwrap().contains("User-Agent"));

    let second = bot(&proxy, "/app/x").await;
    assert_eq!(second.header("x-prerender-cache"), Some("HIT"));
    assert_eq!(second.body, first.body);
    assert_eq!(spa.documents("/app/x"), 1);

    let mut r = redis.raw();
    let html: String = redis::cmd("GET")
        .arg(format!("render:{HOST}:/app/x"))
        .query(&mut r)
        .unwrap();
    assert_eq!(html.as_bytes(), &first.body[..]);
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("render:{HOST}:/app/x"))
        .query(&mut r)
        .unwrap();
    // Cache TTL (1 h) + the default plan's stale window (until the refresh
    // after expiry, 24 h later): SPEC §6.
    assert!((86_401..=90_000).contains(&ttl), "ttl {ttl}");
    let meta: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("render-meta:{HOST}:/app/x"))
        .query(&mut r)
        .unwrap();
    assert_eq!(meta.get("status").map(String::as_str), Some("200"));
    assert!(meta.contains_key("etag") && meta.contains_key("rendered_at"));

    // Humans still get the origin's shell.
    let human = get(
        &proxy.url("/app/x"),
        &[("host", HOST), ("user-agent", FIREFOX)],
    )
    .await;
    assert!(human.text().contains("Loading…"));
    assert!(human.header("x-prerender-cache").is_none());
}

#[tokio::test]
async fn query_strings_share_one_key_and_concurrent_misses_render_once() {
    let spa = Spa::start().await;
    let proxy = small(&spa.url()).start_ready();
    let a = bot(&proxy, "/products?page=2").await;
    assert_eq!(a.header("x-prerender-cache"), Some("MISS"));
    let b = bot(&proxy, "/products?page=3").await;
    assert_eq!(b.header("x-prerender-cache"), Some("HIT"));

    let replies = join_all((0..20).map(|_| bot(&proxy, "/together"))).await;
    for r in &replies {
        assert_eq!(r.status, 200);
        assert!(r.text().contains("at /together"), "{}", r.text());
    }
    assert_eq!(spa.documents("/together"), 1, "twenty misses, one render");
}

#[tokio::test]
async fn two_instances_on_one_redis_render_a_page_once() {
    let spa = Spa::start().await;
    let redis = RedisServer::start();
    let args = small(&spa.url()).flag("--redis", &redis.url());
    let a = args.start_ready();
    let b = args.start_ready();
    let replies = join_all((0..10).flat_map(|_| [bot(&a, "/shared"), bot(&b, "/shared")])).await;
    for r in &replies {
        assert_eq!(r.status, 200);
        assert!(
            r.text().contains("at /shared"),
            "{} {:?}",
            r.text(),
            r.header("x-prerender-error")
        );
    }
    assert_eq!(
        spa.documents("/shared"),
        1,
        "two instances, twenty misses, one render"
    );
}

#[tokio::test]
async fn validators_compression_head_and_statuses() {
    let spa = Spa::start().await;
    let proxy = small(&spa.url()).start_ready();
    let page = bot(&proxy, "/v").await;
    let etag = page.header("etag").unwrap().to_string();
    let r = get(
        &proxy.url("/v"),
        &[
            ("host", HOST),
            ("user-agent", GOOGLEBOT),
            ("if-none-match", &etag),
        ],
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = get(
        &proxy.url("/v"),
        &[
            ("host", HOST),
            ("user-agent", GOOGLEBOT),
            ("accept-encoding", "gzip"),
        ],
    )
    .await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let mut html = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut html)
        .unwrap();
    assert_eq!(html.as_bytes(), &page.body[..]);
    let r = common::proxy::send(
        "HEAD",
        &proxy.url("/v"),
        &[("host", HOST), ("user-agent", GOOGLEBOT)],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("content-length"),
        Some(page.body.len().to_string().as_str())
    );

    // The page's own status meta is kept and cached.
    let r = bot(&proxy, "/missing").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-prerender-cache"), Some("MISS"));
    let r = bot(&proxy, "/missing").await;
    assert_eq!(
        (r.status.as_u16(), r.header("x-prerender-cache")),
        (404, Some("HIT"))
    );
    // However small a page, a client that accepts br or gzip gets it so.
    let tiny = bot(&proxy, "/tiny").await;
    assert!(tiny.text().contains("a tiny page"), "{}", tiny.text());
    assert!(tiny.body.len() < 200, "{} bytes", tiny.body.len());
    for encoding in ["br", "gzip"] {
        let small = get(
            &proxy.url("/tiny"),
            &[
                ("host", HOST),
                ("user-agent", GOOGLEBOT),
                ("accept-encoding", encoding),
            ],
        )
        .await;
        assert_eq!(small.header("content-encoding"), Some(encoding));
    }

    // An origin 500 is never cached: it fails open with the origin's answer.
    for _ in 0..2 {
        let r = bot(&proxy, "/boom").await;
        assert_eq!(r.status, 500);
        assert_eq!(r.header("x-prerender-cache"), Some("ERROR"));
        assert_eq!(r.header("x-prerender-error"), Some("origin-error"));
        assert!(r.text().contains("origin exploded"));
    }
}

#[tokio::test]
async fn failed_renders_fail_open_or_answer_503_as_the_site_chooses() {
    let spa = Spa::start().await;
    let toml = format!(
        r#"
        browsers = 1
        tabs_per_browser = 2
        render_timeout = 3
        ready_timeout = 2
        [[sites]]
        domain = "{HOST}"
        origin = "{origin}"
        [[sites]]
        domain = "strict.example.test"
        origin = "{origin}"
        on_render_failure = "error"
        "#,
        origin = spa.url()
    );
    let cfg = config_file(&toml);
    let proxy = ProxyProcess::start_with_config(&cfg);
    let started = Instant::now();
    let r = bot(&proxy, "/hang").await;
    assert!(
        started.elapsed() < Duration::from_secs(3 + 2),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(r.header("x-prerender-cache"), Some("ERROR"));
    assert_eq!(r.header("x-prerender-error"), Some("timeout"));
    assert!(r.text().contains("Loading…"), "the origin's own page");
    let r = get(
        &proxy.url("/hang"),
        &[("host", "strict.example.test"), ("user-agent", GOOGLEBOT)],
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.header("x-prerender-cache"), Some("ERROR"));
    // Nothing was cached: the next request renders (and fails) again.
    let r = bot(&proxy, "/hang").await;
    assert_eq!(r.header("x-prerender-cache"), Some("ERROR"));
}

#[tokio::test]
async fn query_params_and_mobile_variants_get_their_own_keys() {
    let spa = Spa::start().await;
    let redis = RedisServer::start();
    let cfg = one_site_config(
        HOST,
        &spa.url(),
        Some(&redis.url()),
        "query_params = [\"page\"]\nmobile_variant = true",
    );
    let proxy = ProxyProcess::start_with_config(&cfg);
    assert_eq!(
        bot(&proxy, "/list?page=2&utm=x")
            .await
            .header("x-prerender-cache"),
        Some("MISS")
    );
    assert_eq!(
        bot(&proxy, "/list?page=3")
            .await
            .header("x-prerender-cache"),
        Some("MISS")
    );
    assert_eq!(
        bot(&proxy, "/list?utm=y&page=2")
            .await
            .header("x-prerender-cache"),
        Some("HIT")
    );
    let m = get(
        &proxy.url("/list?page=2"),
        &[("host", HOST), ("user-agent", GOOGLEBOT_SMARTPHONE)],
    )
    .await;
    assert_eq!(m.header("x-prerender-cache"), Some("MISS"));
    for key in ["/list?page=2", "/list?page=3", "m:/list?page=2"] {
        let key = format!("render:{HOST}:{key}");
        assert!(redis.exists(&key), "{key}");
    }
}

#[tokio::test]
async fn a_redis_outage_degrades_and_caching_resumes_by_itself() {
    let spa = Spa::start().await;
    let mut redis = RedisServer::start();
    let proxy = small(&spa.url())
        .flag("--redis", &redis.url())
        .start_ready();
    assert_eq!(
        bot(&proxy, "/before").await.header("x-prerender-cache"),
        Some("MISS")
    );

    redis.stop();
    let human = get(&proxy.url("/x"), &[("host", HOST), ("user-agent", FIREFOX)]).await;
    assert_eq!(human.status, 200);
    let started = Instant::now();
    let r = bot(&proxy, "/during").await;
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "outage held the crawler {:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-prerender-error"),
        Some("store"),
        "{:?}",
        r.headers
    );

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let path = format!(
            "/after-{}",
            deadline
                .saturating_duration_since(Instant::now())
                .as_millis()
        );
        let first = bot(&proxy, &path).await;
        let second = bot(&proxy, &path).await;
        if first.header("x-prerender-error").is_none()
            && second.header("x-prerender-cache") == Some("HIT")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "caching did not resume within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn the_embedded_store_serves_hits_without_redis() {
    let spa = Spa::start().await;
    let proxy = small(&spa.url()).start_ready();
    assert_eq!(
        bot(&proxy, "/e").await.header("x-prerender-cache"),
        Some("MISS")
    );
    let hit = bot(&proxy, "/e").await;
    assert_eq!(hit.header("x-prerender-cache"), Some("HIT"));
    assert!(hit.text().contains("at /e"));
    // Static assets and ignored methods go to the origin even for crawlers.
    let js = get(
        &proxy.url("/app.js"),
        &[("host", HOST), ("user-agent", GOOGLEBOT)],
    )
    .await;
    assert!(js.header("x-prerender-cache").is_none());
    assert!(js.text().contains("prerenderReady"));
}

#[tokio::test]
async fn a_key_prefix_keeps_every_redis_key_of_the_deployment_under_it() {
    let spa = Spa::start().await;
    let redis = RedisServer::start();
    let proxy = small(&spa.url())
        .flag("--redis", &redis.url())
        .flag("--key-prefix", "shop-a:")
        .flag("--admin-token", "a-token-for-the-api-0123")
        .start_ready();
    let first = bot(&proxy, "/app/x").await;
    assert_eq!(first.header("x-prerender-cache"), Some("MISS"));
    assert_eq!(
        bot(&proxy, "/app/x").await.header("x-prerender-cache"),
        Some("HIT")
    );
    let mut conn = redis.raw();
    let html: String = redis::cmd("GET")
        .arg(format!("shop-a:render:{HOST}:/app/x"))
        .query(&mut conn)
        .unwrap();
    assert!(html.contains("Rendered by JavaScript at /app/x"), "{html}");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert!(
        keys.iter().all(|k| k.starts_with("shop-a:render")),
        "{keys:?}"
    );
    assert!(keys.contains(&format!("shop-a:render-meta:{HOST}:/app/x")));
    // The API names the page by the key it is stored under.
    let entry = get(
        &proxy.admin_url(&format!("/api/v1/cache?url=https%3A%2F%2F{HOST}%2Fapp%2Fx")),
        &[("authorization", "Bearer a-token-for-the-api-0123")],
    )
    .await;
    assert_eq!(entry.status, 200, "{}", entry.text());
    let entry: serde_json::Value = serde_json::from_slice(&entry.body).unwrap();
    assert_eq!(entry["key"], format!("shop-a:render:{HOST}:/app/x"));
}
