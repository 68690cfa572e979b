//! The admin listener: bearer auth, entry metadata, purges, warm-ups (list and
//! sitemap), refresh, stats and metrics — against the real binary, Chromium
//! and a local JavaScript origin.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{get, send, ProxyArgs, ProxyProcess};
use common::spa::Spa;

const HOST: &str = "www.example.test";
const TOKEN: &str = "test-admin-token-0123456789";

fn start(spa: &Spa, token: Option<&str>) -> ProxyProcess {
    let mut args = ProxyArgs::small_pool(&spa.url(), HOST);
    if let Some(t) = token {
        args = args.flag("--admin-token", t);
    }
    args.start_ready()
}

/// Asks for `path` as Googlebot and asserts how it was served
/// (`X-Prerender-Cache`).
async fn served(proxy: &ProxyProcess, path: &str, how: &str) {
    let r = bot(proxy, path).await;
    assert_eq!(r.header("x-prerender-cache"), Some(how), "{path}");
}

async fn bot(proxy: &ProxyProcess, path: &str) -> common::proxy::Reply {
    proxy.crawl(HOST, path).await
}

fn auth() -> (&'static str, String) {
    ("authorization", format!("Bearer {TOKEN}"))
}

async fn api(proxy: &ProxyProcess, method: &str, path: &str, body: &str) -> common::proxy::Reply {
    let (k, v) = auth();
    send(
        method,
        &proxy.admin_url(path),
        &[(k, &v), ("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

fn encoded(url: &str) -> String {
    url::form_urlencoded::byte_serialize(url.as_bytes()).collect()
}

async fn wait_cached(proxy: &ProxyProcess, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let q = encoded(&format!("https://{HOST}{path}"));
    while api(proxy, "GET", &format!("/api/v1/cache?url={q}"), "")
        .await
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "{path} not cached within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_api_needs_the_bearer_token() {
    let spa = Spa::start().await;
    let open = start(&spa, None);
    let r = get(&open.admin_url("/api/v1/stats"), &[]).await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("--admin-token"), "{}", r.text());

    let proxy = start(&spa, Some(TOKEN));
    assert_eq!(
        get(&proxy.admin_url("/api/v1/stats"), &[]).await.status,
        401
    );
    let r = get(
        &proxy.admin_url("/api/v1/stats"),
        &[("authorization", "Bearer wrong-token-wrong-token")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["error"].is_string());
    assert_eq!(api(&proxy, "GET", "/api/v1/stats", "").await.status, 200);
    // Never on the public listener.
    let r = get(
        &proxy.url("/api/v1/stats"),
        &[
            ("host", HOST),
            ("authorization", &format!("Bearer {TOKEN}")),
        ],
    )
    .await;
    assert!(
        !r.text().contains("\"domains\""),
        "stats leaked on the public listener"
    );
    let r = get(&proxy.url("/metrics"), &[("host", HOST)]).await;
    assert!(!r.text().contains("prerender_requests_total"));
}

#[tokio::test]
async fn entries_can_be_inspected_and_purged() {
    let spa = Spa::start().await;
    let proxy = start(&spa, Some(TOKEN));
    for p in ["/a", "/b", "/c"] {
        served(&proxy, p, "MISS").await;
    }
    let r = api(
        &proxy,
        "GET",
        &format!(
            "/api/v1/cache?url={}",
            encoded(&format!("https://{HOST}/a?x=1"))
        ),
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let meta: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(meta["key"], format!("render:{HOST}:/a"));
    assert_eq!(meta["status"], 200);
    assert!(meta["bytes"].as_u64().unwrap() > 1000);
    assert!(meta["rendered_at"].as_str().unwrap().contains('T'));
    assert!(meta["expires_at"].as_str().is_some());
    let missing = api(
        &proxy,
        "GET",
        &format!(
            "/api/v1/cache?url={}",
            encoded(&format!("https://{HOST}/nope"))
        ),
        "",
    )
    .await;
    assert_eq!(missing.status, 404);
    let foreign = api(
        &proxy,
        "GET",
        &format!("/api/v1/cache?url={}", encoded("https://other.test/a")),
        "",
    )
    .await;
    assert_eq!(foreign.status, 404);

    let r = api(
        &proxy,
        "DELETE",
        &format!("/api/v1/cache?url={}", encoded(&format!("http://{HOST}/a"))),
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    served(&proxy, "/a", "MISS").await;
    served(&proxy, "/b", "HIT").await;

    let r = api(
        &proxy,
        "DELETE",
        &format!("/api/v1/cache/domain/{HOST}"),
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    served(&proxy, "/b", "MISS").await;
    assert_eq!(
        api(&proxy, "DELETE", "/api/v1/cache/domain/other.test", "")
            .await
            .status,
        404
    );

    let r = api(&proxy, "DELETE", "/api/v1/cache", "").await;
    assert_eq!(r.status, 200);
    served(&proxy, "/b", "MISS").await;
}

/// `POST /api/v1/warm` with `body`, accepted: how many pages it queued.
async fn warm(proxy: &ProxyProcess, body: &serde_json::Value) -> u64 {
    let r = api(proxy, "POST", "/api/v1/warm", &body.to_string()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let answer = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap();
    let queued = answer["queued"]
        .as_u64()
        .unwrap_or_else(|| panic!("no count of queued pages: {}", r.text()));
    assert_eq!(answer["count"].as_u64(), Some(queued), "{}", r.text());
    queued
}

#[tokio::test]
async fn warm_by_list_and_sitemap_and_refresh_now() {
    let spa = Spa::start().await;
    let proxy = start(&spa, Some(TOKEN));
    let body = serde_json::json!({"urls": [
        format!("https://{HOST}/w/1"), format!("https://{HOST}/w/2"), format!("https://{HOST}/w/3")
    ]});
    assert_eq!(warm(&proxy, &body).await, 3);
    for p in ["/w/1", "/w/2", "/w/3"] {
        wait_cached(&proxy, p).await;
        served(&proxy, p, "HIT").await;
    }

    let body = serde_json::json!({"sitemap": format!("http://{HOST}/sitemap.xml")});
    assert_eq!(warm(&proxy, &body).await, 3);
    for p in ["/from-sitemap/1", "/from-sitemap/2", "/from-sitemap/3"] {
        wait_cached(&proxy, p).await;
    }
    assert_eq!(spa.documents("/not-ours"), 0);

    for refused in ["{not json", r#"{"urls": ["https://other.test/x"]}"#] {
        let r = api(&proxy, "POST", "/api/v1/warm", refused).await;
        assert_eq!(r.status, 400, "{refused}");
    }

    // Refresh: the origin changes, a refresh re-renders, the next hit has it.
    spa.set_title("Fresh from the CMS");
    let before = spa.documents("/w/1");
    let body = serde_json::json!({"url": format!("https://{HOST}/w/1")});
    assert_eq!(
        api(&proxy, "POST", "/api/v1/refresh", &body.to_string())
            .await
            .status,
        202
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = bot(&proxy, "/w/1").await;
        if r.text().contains("Fresh from the CMS") {
            assert_eq!(r.header("x-prerender-cache"), Some("HIT"));
            break;
        }
        assert!(Instant::now() < deadline, "refresh not visible within 30 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(spa.documents("/w/1"), before + 1);
}

#[tokio::test]
async fn stats_and_metrics_follow_the_traffic() {
    let spa = Spa::start().await;
    let proxy = start(&spa, Some(TOKEN));
    bot(&proxy, "/s").await;
    bot(&proxy, "/s").await;
    bot(&proxy, "/s").await;
    get(
        &proxy.url("/human"),
        &[
            ("host", HOST),
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            ),
        ],
    )
    .await;
    let stats: serde_json::Value =
        serde_json::from_slice(&api(&proxy, "GET", "/api/v1/stats", "").await.body).unwrap();
    let d = &stats["domains"][HOST];
    assert_eq!(d["hits"], 2, "{stats}");
    assert_eq!(d["misses"], 1);
    assert_eq!(d["renders"], 1);
    assert_eq!(d["entries"], 1);
    // The default plan (self-hosted) has no page-count limit.
    assert!(d["max_entries"].is_null(), "{d}");
    assert!(d["avg_render_ms"].as_f64().unwrap() > 0.0);
    assert!(d["next_refresh"].is_string(), "{d}");

    let text = get(&proxy.admin_url("/metrics"), &[]).await.text();
    let sample = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
    };
    assert_eq!(
        sample("prerender_requests_total{cache=\"hit\",family=\"search-engines\",kind=\"bot\",status_class=\"2xx\"}"),
        2.0
    );
    assert_eq!(
        sample("prerender_requests_total{cache=\"miss\",family=\"search-engines\",kind=\"bot\",status_class=\"2xx\"}"),
        1.0
    );
    assert_eq!(
        sample("prerender_requests_total{cache=\"none\",family=\"none\",kind=\"human\",status_class=\"2xx\"}"),
        1.0
    );
    assert_eq!(sample("prerender_renders_total{outcome=\"ok\"}"), 1.0);
    assert_eq!(sample("prerender_browsers_alive"), 1.0);
    assert_eq!(sample("prerender_render_duration_seconds_count"), 1.0);
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "unparsable sample: {line}");
    }
    let dashboard = get(&proxy.admin_url("/"), &[]).await;
    assert_eq!(dashboard.status, 200);
    assert!(dashboard.text().contains("/api/v1/stats"));
    // HEAD as GET without the body; other methods 405.
    for path in ["/", "/metrics", "/healthz", "/readyz"] {
        let head = common::proxy::send("HEAD", &proxy.admin_url(path), &[], "").await;
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path}");
        let post = common::proxy::send("POST", &proxy.admin_url(path), &[], "").await;
        assert_eq!(post.status, 405, "POST {path}");
        assert_eq!(post.header("allow"), Some("GET, HEAD"), "POST {path}");
    }
}

#[tokio::test]
async fn readiness_says_draining_from_sigterm_until_the_last_request_ends() {
    use common::handler_origin::{full, Origin};
    use hyper::body::Incoming;
    use hyper::{Request, Response};

    let origin = Origin::start(|_req: Request<Incoming>| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Response::new(full("finished"))
    })
    .await;
    let mut proxy = ProxyProcess::start_ready(&["--origin", &origin.url(), "--browsers", "1"]);
    let ready = get(&proxy.admin_url("/readyz"), &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.text());

    let url = proxy.url("/slow");
    let in_flight =
        tokio::spawn(async move { get(&url, &[("user-agent", common::proxy::FIREFOX)]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    unsafe {
        libc::kill(proxy.pid() as i32, libc::SIGTERM);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The public request is still draining: the admin listener answers, and
    // says not ready.
    let draining = get(&proxy.admin_url("/readyz"), &[]).await;
    assert_eq!(draining.status, 503, "{}", draining.text());
    assert!(draining.text().contains("draining"), "{}", draining.text());
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "finished");
    let started = Instant::now();
    while proxy.child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn recycles_write_no_error_line_and_each_crawler_request_one_info_line() {
    let spa = Spa::start().await;
    let log_path = std::env::temp_dir().join(format!("prerender-quiet-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    // RUST_LOG as an operator sets it: a level that does not name
    // chromiumoxide must still keep its recycle noise out.
    let mut proxy = ProxyArgs::small_pool(&spa.url(), HOST)
        .flag("--tabs-per-browser", "1")
        .flag("--renders-per-browser", "1")
        .start_with_stderr(&[("RUST_LOG", "info")], log);
    proxy.wait_until("/readyz", Duration::from_secs(30));
    for path in ["/products/1", "/products/2", "/products/3"] {
        let r = bot(&proxy, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let metrics = get(&proxy.admin_url("/metrics"), &[]).await.text();
    let recycles: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("prerender_browser_recycles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(recycles >= 2.0, "expected recycles:\n{metrics}");
    proxy.stop();
    let text = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(text.contains("listening"), "log not captured:\n{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "ERROR lines on routine recycles:\n{}",
        errors.join("\n")
    );
    // Each crawler request is one info line naming its host, path, family,
    // cache result, status and render time.
    let crawler_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" INFO ") && l.contains("crawler") && l.contains("/products/"))
        .collect();
    assert_eq!(crawler_lines.len(), 3, "{text}");
    for line in crawler_lines {
        for field in [
            HOST,
            "family",
            "search-engines",
            "miss",
            "status=200",
            "render_ms=",
        ] {
            assert!(line.contains(field), "{field} missing from {line}");
        }
    }
}

#[tokio::test]
async fn pages_are_listed_and_purged_by_prefix_on_redis() {
    let spa = Spa::start().await;
    let redis = common::redis::RedisServer::start();
    let args = ProxyArgs::small_pool(&spa.url(), HOST)
        .flag("--admin-token", TOKEN)
        .flag("--redis", &redis.url());
    let proxy = args.start_ready();
    let paths = ["/blog/1", "/blog/2", "/blog/3", "/blogroll", "/shop/1"];
    for path in paths {
        assert_eq!(bot(&proxy, path).await.status, 200, "{path}");
    }

    // Everything, then the blog two at a time.
    let list = |query: String| {
        let proxy = &proxy;
        async move {
            let r = api(proxy, "GET", &format!("/api/v1/pages?{query}"), "").await;
            (
                r.status,
                serde_json::from_slice::<serde_json::Value>(&r.body).unwrap_or_default(),
            )
        }
    };
    let (status, all) = list(format!("domain={HOST}")).await;
    assert_eq!(status, 200, "{all}");
    let urls: Vec<&str> = all["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["url"].as_str().unwrap())
        .collect();
    let mut expected: Vec<String> = paths.iter().map(|p| format!("https://{HOST}{p}")).collect();
    expected.sort();
    assert_eq!(urls, expected);
    assert!(all["next_cursor"].is_null());
    let first = &all["pages"][0];
    assert_eq!(first["status"], 200);
    assert!(first["bytes"].as_u64().unwrap() > 4000, "{first}");
    for field in ["rendered_at", "expires_at", "last_hit"] {
        assert!(
            first[field].as_str().unwrap().ends_with('Z'),
            "{field}: {first}"
        );
    }

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("domain={HOST}&prefix=%2Fblog%2F&limit=2");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = list(q).await;
        assert_eq!(status, 200, "{page}");
        let pages = page["pages"].as_array().unwrap();
        assert!(pages.len() <= 2);
        seen.extend(pages.iter().map(|p| p["url"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(seen.len() <= 3, "{seen:?}");
    }
    assert_eq!(
        seen,
        ["/blog/1", "/blog/2", "/blog/3"].map(|p| format!("https://{HOST}{p}"))
    );

    // Bad parameters are a 400 with a reason; other domains a 404.
    for bad in [
        String::new(),
        format!("domain={HOST}&limit=0"),
        format!("domain={HOST}&limit=1001"),
        format!("domain={HOST}&limit=ten"),
        format!("domain={HOST}&cursor=zz"),
        format!("domain={HOST}&cursor=6162"),
        format!("domain={HOST}&prefix=blog"),
        "domain=bad%20domain".to_string(),
    ] {
        let (status, body) = list(bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
    assert_eq!(list("domain=elsewhere.test".into()).await.0, 404);
    let unauth = get(
        &proxy.admin_url(&format!("/api/v1/pages?domain={HOST}")),
        &[],
    )
    .await;
    assert_eq!(unauth.status, 401);

    // A second instance on the same Redis serves the blog from its
    // in-process copy until the purge reaches it.
    let other = args.start_ready();
    served(&other, "/blog/1", "HIT").await;
    let purge = api(
        &proxy,
        "DELETE",
        &format!("/api/v1/cache/domain/{HOST}?prefix=/blog/"),
        "",
    )
    .await;
    assert_eq!(purge.status, 200, "{}", purge.text());
    let purged: serde_json::Value = serde_json::from_slice(&purge.body).unwrap();
    assert_eq!(purged["purged"], 3, "{purged}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for path in ["/blog/1", "/blog/2", "/blog/3"] {
        let exists = redis.exists(&format!("render:{HOST}:{path}"));
        assert!(!exists, "{path} still in Redis");
    }
    for path in ["/blogroll", "/shop/1"] {
        let exists = redis.exists(&format!("render:{HOST}:{path}"));
        assert!(exists, "{path} purged with the blog");
        served(&other, path, "HIT").await;
    }
    assert_eq!(
        bot(&other, "/blog/1").await.header("x-prerender-cache"),
        Some("MISS"),
        "the other instance forgot its copy"
    );
    let (_, after) = list(format!("domain={HOST}&prefix=/blog/")).await;
    assert_eq!(after["pages"].as_array().unwrap().len(), 1, "{after}");
    let bad = api(
        &proxy,
        "DELETE",
        &format!("/api/v1/cache/domain/{HOST}?prefix=blog"),
        "",
    )
    .await;
    assert_eq!(bad.status, 400);
}
