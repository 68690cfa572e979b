//! Origins on HTTPS, end to end: the real binary, real Chromium and local
//! TLS origins whose certificates come from a CA made in the test (rcgen),
//! trusted through `origin_ca_file`. People, crawlers (a render through
//! interception), sitemap warming and the conditional poller all reach the
//! origin over TLS on kept-alive connections; an origin whose certificate
//! is signed by a CA nobody trusts is a clear error; `origin_host` is the
//! Host the origin sees while cache keys keep the public host.

mod common;

use std::time::{Duration, Instant};

use common::origin::{Route, TestOrigin};
use common::proxy::{config_file, get, send, ProxyArgs, ProxyProcess, FIREFOX, GOOGLEBOT};
use common::tls::TestCa;

const HOST: &str = "www.example.test";
const TOKEN: &str = "test-admin-token-0123456789";

fn page(text: &str) -> Route {
    Route::html(&format!(
        "<!doctype html><html><head><title>t</title></head><body><div id=app></div>\
         <script>document.getElementById('app').textContent = {text:?};</script></body></html>"
    ))
    .header("etag", "\"v1\"")
}

fn routes() -> Vec<(&'static str, Route)> {
    vec![
        ("/", Route::with_type("text/plain", "hello over tls")),
        ("/page", page("rendered over tls")),
        ("/article", page("polled over tls")),
        ("/warm-me", page("warmed over tls")),
        (
            "/sitemap.xml",
            Route::with_type(
                "application/xml",
                &format!(
                    "<?xml version=\"1.0\"?><urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\
                     <url><loc>https://{HOST}/warm-me</loc></url></urlset>"
                ),
            ),
        ),
    ]
}

/// A TLS origin whose certificate (for `localhost`) the returned CA signed.
async fn tls_origin() -> (TestOrigin, TestCa) {
    let ca = TestCa::new("prerender-proxy test origin CA");
    let leaf = ca.leaf(&["localhost"]);
    let origin = TestOrigin::start_tls(routes(), leaf.server_config(&[b"http/1.1"])).await;
    (origin, ca)
}

async fn eventually(deadline: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_crawlers_warming_and_polls_reach_an_https_origin_over_kept_alive_connections() {
    let (origin, ca) = tls_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "ca.pem");
    let config = config_file(&format!(
        r#"
        browsers = 1
        tabs_per_browser = 2
        ready_timeout = 5
        # Origin connections are pooled per listener thread: one thread,
        # one pool, so reuse shows in the origin's connection count.
        public_threads = 1
        admin_token = "{TOKEN}"
        origin_ca_file = "{ca}"
        [[sites]]
        domain = "{HOST}"
        origin = "{origin}"
        plan = "agency_plus"
        [plans.agency_plus]
        poll_every = "1s"
        "#,
        ca = ca_file.display(),
        origin = origin.url_named("localhost"),
    ));
    let proxy = ProxyProcess::start_with_config(&config);

    // People: the origin's bytes, three requests on one TLS connection.
    for _ in 0..3 {
        let r = get(&proxy.url("/"), &[("host", HOST), ("user-agent", FIREFOX)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "hello over tls");
    }
    assert_eq!(origin.connections(), 1, "TLS connections are kept alive");
    let seen = &origin.requests("/")[0];
    assert_eq!(seen.headers.get("host").map(String::as_str), Some(HOST));

    // A body from a person (the hyper path) goes over TLS too.
    let posted = send(
        "POST",
        &proxy.url("/"),
        &[("host", HOST), ("user-agent", FIREFOX)],
        "x=1",
    )
    .await;
    assert_eq!(posted.status, 200);
    assert_eq!(posted.text(), "hello over tls");

    // Crawlers: rendered through interception from the TLS origin.
    let r = proxy.crawl(HOST, "/page").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-prerender-cache"), Some("MISS"));
    assert!(r.text().contains("rendered over tls"), "{}", r.text());
    assert!(!r.text().contains("<script>document"), "scripts stripped");
    let hit = proxy.crawl(HOST, "/page").await;
    assert_eq!(hit.header("x-prerender-cache"), Some("HIT"));

    // Sitemap warm: the sitemap is fetched from the TLS origin and its page rendered.
    let warm = send(
        "POST",
        &proxy.admin_url("/api/v1/warm"),
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        format!(r#"{{"sitemap":"https://{HOST}/sitemap.xml"}}"#),
    )
    .await;
    assert_eq!(warm.status, 202, "{}", warm.text());
    assert_eq!(origin.hits("/sitemap.xml"), 1);
    let cache_url = proxy.cache_entry_url(HOST, "/warm-me");
    eventually(Duration::from_secs(30), "warmed page cached", async || {
        get(&cache_url, &[("authorization", &format!("Bearer {TOKEN}"))])
            .await
            .status
            == 200
    })
    .await;

    // The conditional poller (agency_plus) asks the TLS origin with the
    // validators of the rendered page.
    let r = proxy.crawl(HOST, "/article").await;
    assert_eq!(r.header("x-prerender-cache"), Some("MISS"));
    eventually(
        Duration::from_secs(15),
        "a conditional poll of /article",
        async || {
            origin.requests("/article").iter().any(|s| {
                s.headers.get("if-none-match").map(String::as_str) == Some("\"v1\"")
                    && s.headers
                        .get("user-agent")
                        .is_some_and(|ua| ua.contains("(poll)"))
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_certificate_from_an_unknown_ca_is_a_502_for_people_and_origin_tls_for_bots() {
    let (origin, _trusted_by_nobody) = tls_origin().await;
    let dir = tempfile::tempdir().unwrap();
    // Another CA in origin_ca_file: the origin's issuer is still unknown.
    let other = TestCa::new("some other CA");
    let ca_file = other.write(dir.path(), "other.pem");
    let log = dir.path().join("proxy.log");
    let origin_url = origin.url_named("localhost");
    let mut proxy = ProxyArgs::any_host(origin_url.as_str())
        .flag("--origin-ca-file", ca_file.to_str().unwrap())
        .flag("--tabs-per-browser", "1")
        .quick_ready()
        .start_with_stderr(
            &[("RUST_LOG", "warn")],
            std::fs::File::create(&log).unwrap(),
        );
    proxy.wait_until("/readyz", Duration::from_secs(30));

    let r = get(&proxy.url("/"), &[("host", HOST), ("user-agent", FIREFOX)]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.text().trim(), "origin unreachable");
    let lines = std::fs::read_to_string(&log).unwrap();
    let named: Vec<&str> = lines
        .lines()
        .filter(|l| l.contains("origin TLS certificate could not be verified"))
        .collect();
    assert_eq!(named.len(), 1, "one line for one request: {lines}");
    assert!(
        named[0].contains("localhost"),
        "names the host: {}",
        named[0]
    );

    let bot = get(
        &proxy.url("/page"),
        &[("host", HOST), ("user-agent", GOOGLEBOT)],
    )
    .await;
    assert_eq!(bot.header("x-prerender-cache"), Some("ERROR"));
    assert_eq!(bot.header("x-prerender-error"), Some("origin-tls"));
    assert_eq!(bot.status, 502);
    assert_eq!(
        origin.total_hits(),
        0,
        "nothing was sent to an unverified origin"
    );
    let metrics = get(&proxy.admin_url("/metrics"), &[]).await.text();
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("prerender_renders_total{") && l.contains("outcome=\"origin-tls\""))
        .unwrap_or_else(|| panic!("no origin-tls render outcome: {metrics}"));
    assert!(
        counted.ends_with(" 1"),
        "one failed render, not retried: {counted}"
    );
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_host_is_the_host_the_origin_sees_and_cache_keys_keep_the_public_host() {
    let (origin, ca) = tls_origin().await;
    let plain = TestOrigin::start(routes()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "ca.pem");
    for (origin_url, seen_by) in [
        (origin.url_named("localhost"), &origin),
        (plain.url(), &plain),
    ] {
        let mut proxy = ProxyArgs::any_host(origin_url.as_str())
            .flag("--tabs-per-browser", "1")
            .quick_ready()
            .flag("--admin-token", TOKEN)
            .start_with_env(&[
                ("PRERENDER_ORIGIN_HOST", "shop.netlify.test"),
                ("PRERENDER_ORIGIN_CA_FILE", ca_file.to_str().unwrap()),
            ]);
        proxy.wait_until("/readyz", Duration::from_secs(30));
        let r = get(&proxy.url("/"), &[("host", HOST), ("user-agent", FIREFOX)]).await;
        assert_eq!(r.status, 200, "{origin_url}");
        let person = seen_by.requests("/").pop().unwrap();
        assert_eq!(person.headers["host"], "shop.netlify.test");
        assert_eq!(person.headers["x-forwarded-host"], HOST);

        let r = proxy.crawl_served(HOST, "/page", "MISS").await;
        assert!(r.text().contains("rendered over tls"));
        let render = seen_by.requests("/page").pop().unwrap();
        assert_eq!(render.headers["host"], "shop.netlify.test");
        assert_eq!(render.headers["x-prerender"], "1");

        let entry = get(
            &proxy.cache_entry_url(HOST, "/page"),
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await;
        assert_eq!(entry.status, 200, "{}", entry.text());
        let body: serde_json::Value = serde_json::from_slice(&entry.body).unwrap();
        assert_eq!(body["key"], format!("render:{HOST}:/page"));
        drop(proxy);
    }
}
