//! One render, end to end: real Chromium, a local origin serving pages that
//! JavaScript builds, the page rendered as its public URL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::origin::{Route, TestOrigin};
use prerender_proxy::render::{
    BrowserPool, PoolConfig, PoolStats, RenderError, RenderJob, RenderedPage,
};

const PUBLIC: &str = "https://www.example.test";

const APP_JS: &str = r#"
async function main() {
  const out = document.getElementById('out');
  const r = await fetch('/api/data.json');
  const d = await r.json();
  await new Promise((res) => setTimeout(res, 200));
  out.textContent = d.msg + ' @' + location.host;
  out.setAttribute('data-ready', '1');
}
main();
"#;

fn page(body_script: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html><head><title>t</title>
<style>@font-face {{ font-family: F; src: url(/assets/font.woff2); }} body {{ font-family: F; }}</style>
<script type="application/ld+json">{{"@type":"Product","name":"Thing"}}</script>
</head><body><div id="out">loading</div><img src="/assets/logo.png">
<script src="/assets/app.js"></script>
<script>{body_script}</script>
</body></html>"#
    )
}

fn routes(other_port: u16) -> Vec<(&'static str, Route)> {
    let ssrf = format!(
        r#"<!DOCTYPE html><html><body><div id="out">start</div>
<iframe src="http://127.0.0.1:{other_port}/frame"></iframe>
<script>
const out = document.getElementById('out');
const tries = ['http://127.0.0.1:{other_port}/internal', 'http://169.254.169.254/latest/meta-data/', 'http://localhost:{other_port}/internal'];
Promise.all(tries.map((u) => fetch(u).then(() => 'reached ' + u, () => 'refused'))).then((r) => {{ out.textContent = r.join(','); }});
</script></body></html>"#
    );
    let side_channels = format!(
        r#"<!DOCTYPE html><html><body><div id="ws">ws pending</div><div id="worker">worker pending</div>
<script>
const ws = new WebSocket('ws://127.0.0.1:{other_port}/socket');
ws.onopen = () => {{ document.getElementById('ws').textContent = 'ws open'; }};
ws.onerror = () => {{ document.getElementById('ws').textContent = 'ws refused'; }};
const src = "fetch('http://127.0.0.1:{other_port}/from-worker').then(() => postMessage('reached'), () => postMessage('refused'));";
const w = new Worker(URL.createObjectURL(new Blob([src], {{ type: 'text/javascript' }})));
w.onmessage = (e) => {{ document.getElementById('worker').textContent = 'worker ' + e.data; }};
</script></body></html>"#
    );
    vec![
        ("/side-channels", Route::html(&side_channels)),
        ("/p/1", Route::html(&page(""))),
        ("/p/2", Route::html(&page(""))),
        ("/assets/app.js", Route::js(APP_JS)),
        ("/assets/logo.png", Route::with_type("image/png", "png")),
        ("/assets/font.woff2", Route::with_type("font/woff2", "font")),
        ("/api/data.json", Route::json(r#"{"msg":"hello from api"}"#)),
        (
            "/ready",
            Route::html(
                r#"<!DOCTYPE html><html><head><script>window.prerenderReady = false;</script></head>
<body><div id="out">early</div><script>
window.addEventListener('load', () => setTimeout(() => {
  document.getElementById('out').textContent = 'final content';
  window.prerenderReady = true;
}, 800));
</script></body></html>"#,
            ),
        ),
        (
            "/poll",
            Route::html(
                r#"<!DOCTYPE html><html><body><div id="out">polling page</div><script>
function poll() { fetch('/api/slow?' + Math.random()).finally(() => setTimeout(poll, 50)); }
poll();
</script></body></html>"#,
            ),
        ),
        (
            "/api/slow",
            Route::json("{}").delay(Duration::from_millis(300)),
        ),
        (
            "/missing",
            Route::html(
                r#"<!DOCTYPE html><html><head></head><body><script>
const m = document.createElement('meta'); m.name = 'prerender-status-code'; m.content = '404';
document.head.appendChild(m); document.body.append('not here');
</script></body></html>"#,
            ),
        ),
        (
            "/moved",
            Route::html(
                r#"<!DOCTYPE html><html><head></head><body><script>
for (const [n, c] of [['prerender-status-code', '301'], ['prerender-header', 'Location: https://www.example.test/new']]) {
  const m = document.createElement('meta'); m.name = n; m.content = c; document.head.appendChild(m);
}
</script></body></html>"#,
            ),
        ),
        (
            "/redirect",
            Route::html("moved").status(302).header("location", "/p/1"),
        ),
        ("/boom", Route::html("<h1>error</h1>").status(500)),
        (
            "/early",
            Route::html(
                r#"<!DOCTYPE html><html><head><script>window.prerenderReady = true;</script>
<script async src="/assets/slow.js"></script></head><body>ready before load</body></html>"#,
            ),
        ),
        (
            "/assets/slow.js",
            Route::js("window.slow = 1;").delay(Duration::from_secs(4)),
        ),
        ("/ssrf", Route::html(&ssrf)),
        (
            "/leaky-timer",
            Route::html(
                r#"<!DOCTYPE html><html><body><div id="out">leaky</div><script>
window.prerenderReady = false;
setInterval(() => { localStorage.setItem('leak', 'timer'); document.cookie = 'leak=timer; path=/'; }, 5);
window.addEventListener('load', () => {
  fetch('/api/late-cookie').catch(() => {});
  setTimeout(() => { window.prerenderReady = true; }, 150);
});
</script></body></html>"#,
            ),
        ),
        (
            "/leaky-workers",
            Route::html(
                r#"<!DOCTYPE html><html><body><div id="out">leaky</div><script>
window.prerenderReady = false;
const src = "setInterval(() => { const r = indexedDB.open('leakdb', 1); " +
  "r.onupgradeneeded = () => r.result.createObjectStore('s'); " +
  "r.onsuccess = () => { try { r.result.transaction('s', 'readwrite').objectStore('s').put('worker', 'k'); } catch (e) {} r.result.close(); }; }, 5);";
const url = URL.createObjectURL(new Blob([src], { type: 'text/javascript' }));
new Worker(url);
new SharedWorker(url);
window.addEventListener('load', () => setTimeout(() => { window.prerenderReady = true; }, 150));
</script></body></html>"#,
            ),
        ),
        (
            "/api/late-cookie",
            Route::json("{}")
                .header("set-cookie", "late=1; Path=/")
                .delay(Duration::from_millis(1500)),
        ),
        (
            "/report",
            Route::html(
                r#"<!DOCTYPE html><html><body><div id="out">pending</div><script>
window.prerenderReady = false;
const local = localStorage.getItem('leak') || '';
const cookie = document.cookie;
function finish(idb) {
  document.getElementById('out').textContent = 'cookie=[' + cookie + '] local=[' + local + '] idb=[' + idb + ']';
  window.prerenderReady = true;
}
const req = indexedDB.open('leakdb', 1);
req.onupgradeneeded = () => req.result.createObjectStore('s');
req.onerror = () => finish('open-error');
req.onsuccess = () => {
  const get = req.result.transaction('s', 'readonly').objectStore('s').get('k');
  get.onsuccess = () => finish(get.result || '');
  get.onerror = () => finish('read-error');
};
</script></body></html>"#,
            ),
        ),
        (
            "/iso",
            Route::html(
                r#"<!DOCTYPE html><html><body><div id="out"></div><script>
const seen = 'cookie=[' + document.cookie + '] local=[' + (localStorage.getItem('k') || '') +
  '] session=[' + (sessionStorage.getItem('k') || '') + ']';
document.cookie = 'k=secret-cookie; path=/';
localStorage.setItem('k', 'secret-local');
sessionStorage.setItem('k', 'secret-session');
document.getElementById('out').textContent = seen;
</script></body></html>"#,
            ),
        ),
    ]
}

struct Site {
    pool: Arc<BrowserPool>,
    origin: TestOrigin,
    other: TestOrigin,
}

impl Site {
    async fn start() -> Self {
        Self::start_with(common::small_pool_config()).await
    }

    /// A pool of one browser with one tab: every render reuses (or
    /// replaces) the same tab.
    async fn one_tab() -> Self {
        let mut cfg = common::small_pool_config();
        cfg.tabs_per_browser = 1;
        Self::start_with(cfg).await
    }

    async fn start_with(cfg: PoolConfig) -> Self {
        let other = TestOrigin::start(vec![
            ("/internal", Route::html("internal secret")),
            ("/frame", Route::html("internal frame")),
        ])
        .await;
        let origin = TestOrigin::start(routes(other.addr.port())).await;
        let pool = BrowserPool::launch(cfg).await.expect("pool launches");
        Self {
            pool,
            origin,
            other,
        }
    }

    fn job(&self, path: &str) -> RenderJob {
        RenderJob::new(
            url::Url::parse(&format!("{PUBLIC}{path}")).unwrap(),
            self.origin.url(),
        )
    }

    async fn render(&self, path: &str) -> Result<RenderedPage, RenderError> {
        self.pool.render(self.job(path)).await
    }
}

/// The pool's figures once no tab is busy: a tab is reset (or closed)
/// after its render's answer, so counts of reused tabs settle a little
/// later.
async fn settled_stats(pool: &BrowserPool) -> PoolStats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool.stats().tabs_busy > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pool.stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_content_is_rendered_as_the_public_url() {
    let site = Site::start().await;
    let page = site.render("/p/1").await.expect("render succeeds");
    assert_eq!(page.status, 200);
    assert!(
        page.html.contains("hello from api @www.example.test"),
        "content written after fetch + timer, with the public host: {}",
        page.html
    );
    assert!(page.html.starts_with("<!DOCTYPE html>"));
    assert!(!page.snapshot_on_ready_timeout);
    // Scripts stripped, JSON-LD kept.
    assert!(!page.html.contains("/assets/app.js"), "{}", page.html);
    assert!(!page.html.contains("<script>"), "{}", page.html);
    assert!(page.html.contains(r#"<script type="application/ld+json">"#));
    // The document was fetched once, with the public Host and the loop guard.
    assert_eq!(site.origin.hits("/p/1"), 1);
    let doc = &site.origin.requests("/p/1")[0];
    assert_eq!(
        doc.headers.get("host").map(String::as_str),
        Some("www.example.test")
    );
    assert_eq!(
        doc.headers.get("x-prerender").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        doc.headers.get("x-forwarded-proto").map(String::as_str),
        Some("https")
    );
    assert_eq!(
        doc.headers.get("x-forwarded-host").map(String::as_str),
        Some("www.example.test")
    );
    for seen in site.origin.requests("/api/data.json") {
        assert_eq!(
            seen.headers.get("x-prerender").map(String::as_str),
            Some("1")
        );
    }
    // Images and fonts never reach the origin.
    assert_eq!(site.origin.hits("/assets/logo.png"), 0);
    assert_eq!(site.origin.hits("/assets/font.woff2"), 0);
    site.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_page_of_a_site_reuses_the_cached_bundle() {
    let site = Site::start().await;
    let first = site.render("/p/1").await.expect("first render");
    assert!(first.html.contains("hello from api"));
    assert_eq!(site.origin.hits("/assets/app.js"), 1);
    let second = site.render("/p/2").await.expect("second render");
    assert!(second.html.contains("hello from api @www.example.test"));
    assert_eq!(site.origin.hits("/p/2"), 1);
    assert_eq!(
        site.origin.hits("/assets/app.js"),
        1,
        "the bundle must come from the subresource cache"
    );
    assert!(site.pool.stats().subresource_cache_hits >= 1);
    site.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_kept_when_stripping_is_off() {
    let site = Site::start().await;
    let mut job = site.job("/p/1");
    job.strip_scripts = false;
    let page = site.pool.render(job).await.expect("render");
    assert!(
        page.html.contains(r#"<script src="/assets/app.js">"#),
        "{}",
        page.html
    );
    site.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prerender_ready_flag_is_awaited() {
    let site = Site::start().await;
    let page = site.render("/ready").await.expect("render");
    assert!(page.html.contains("final content"), "{}", page.html);
    assert!(!page.html.contains("early"));
    site.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_that_polls_forever_is_snapshotted_at_ready_timeout() {
    let site = Site::start().await;
    let started = std::time::Instant::now();
    let page = site.render("/poll").await.expect("render");
    let elapsed = started.elapsed();
    assert!(page.html.contains("polling page"));
    assert!(page.snapshot_on_ready_timeout);
    assert!(elapsed >= Duration::from_secs(3), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    site.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_metas_and_origin_statuses_are_reflected() {
    let site = Site::start().await;
    let missing = site.render("/missing").await.expect("render");
    assert_eq!(missing.status, 404);
    let moved = site.render("/moved").await.expect("render");
    assert_eq!(moved.status, 301);
    assert!(moved.headers.contains(&(
        "Location".to_string(),
        "https://www.example.test/new".to_string()
    )));
    let redirect = site.render("/redirect").await.expect("render");
    assert_eq!(redirect.status, 302);
    assert!(redirect
        .headers
        .contains(&("Location".to_string(), "/p/1".to_string())));
    assert_eq!(site.origin.hits("/p/1"), 0, "the redirect is not followed");
    assert_eq!(site.origin.hits("/redirect"), 1);
    match site.render("/boom").await {
        Err(RenderError::OriginStatus(500)) => {}
        other => panic!("expected OriginStatus(500), got {other:?}"),
    }
    assert_eq!(site.origin.hits("/boom"), 1);
    site.pool.shutdown().await;
}

/// Renders whose navigation never completes leave their tab usable: an
/// origin redirect (answered without following it, so its document never
/// commits), an origin 500, and a page ready before its load event, each
/// followed by an ordinary page on the same single tab.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_navigations_leave_the_tab_usable() {
    let site = Site::one_tab().await;
    for round in 0..2 {
        let missing = site.render("/missing").await.expect("render");
        assert_eq!(missing.status, 404, "round {round}");
        let redirect = site.render("/redirect").await.expect("render");
        assert_eq!(redirect.status, 302, "round {round}");
        match site.render("/boom").await {
            Err(RenderError::OriginStatus(500)) => {}
            other => panic!("round {round}: expected OriginStatus(500), got {other:?}"),
        }
        match site.render("/boom").await {
            Err(RenderError::OriginStatus(500)) => {}
            other => panic!("round {round}: expected OriginStatus(500), got {other:?}"),
        }
        let page = site.render("/p/1").await.expect("render");
        assert!(page.html.contains("hello from api"), "round {round}");
        let early = site.render("/early").await.expect("render");
        assert!(early.html.contains("ready before load"), "round {round}");
        let page = site.render("/p/2").await.expect("render");
        assert!(page.html.contains("hello from api"), "round {round}");
    }
    // Ordinary pages keep their tab; the rest take a fresh one.
    let stats = settled_stats(&site.pool).await;
    assert_eq!(
        (stats.tabs_reused, stats.tabs_discarded),
        (6, 8),
        "{stats:?}"
    );
    site.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_are_never_reached() {
    let site = Site::start().await;
    let page = site.render("/ssrf").await.expect("render");
    assert!(
        page.html.contains("refused,refused,refused"),
        "every internal fetch must fail: {}",
        page.html
    );
    assert_eq!(site.other.total_hits(), 0, "{:?}", site.other.paths());
    let stats = site.pool.stats();
    eprintln!("{stats:?}");
    assert!(
        stats.requests_blocked_internal >= 4,
        "the renderer itself refused the iframe and the three fetches: {stats:?}"
    );
    site.pool.shutdown().await;
}

/// Pages that keep writing after their render — a 5 ms timer writing
/// localStorage and a cookie with an answer that sets a cookie 1.5 s
/// later; a dedicated and a shared worker writing IndexedDB — leave nothing
/// for the next render on the same tab.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_keeps_writing_leaves_nothing_behind() {
    let site = Site::one_tab().await;
    for (round, leaky) in ["/leaky-timer", "/leaky-workers"]
        .iter()
        .cycle()
        .take(6)
        .enumerate()
    {
        let reused_before = settled_stats(&site.pool).await.tabs_reused;
        let leaky = site.render(leaky).await.expect("render");
        assert!(leaky.html.contains("leaky"), "round {round}");
        // The reset ran and kept the tab (the pool's only one), so the
        // report below renders in the context the leaky page used.
        let stats = settled_stats(&site.pool).await;
        assert_eq!(
            stats.tabs_reused,
            reused_before + 1,
            "round {round}: {stats:?}"
        );
        let report = site.render("/report").await.expect("render");
        assert!(
            report.html.contains("cookie=[] local=[] idb=[]"),
            "round {round}: {}",
            report.html
        );
    }
    site.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_and_storage_do_not_carry_over() {
    let site = Site::start().await;
    let empty = "cookie=[] local=[] session=[]";
    for round in 0..3 {
        let page = site.render("/iso").await.expect("render");
        assert!(page.html.contains(empty), "round {round}: {}", page.html);
    }
    // Concurrent renders of one site do not see each other either.
    for round in 0..3 {
        let pages = futures::future::join_all((0..4).map(|_| site.render("/iso"))).await;
        for page in pages {
            let page = page.expect("render");
            assert!(
                page.html.contains(empty),
                "concurrent round {round}: {}",
                page.html
            );
        }
    }
    // Same host through another origin is another site: another context.
    let other_site = TestOrigin::start(routes(1)).await;
    let mut job = site.job("/iso");
    job.origin = other_site.url();
    let page = site.pool.render(job).await.expect("render");
    assert!(page.html.contains(empty), "{}", page.html);
    site.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_and_workers_cannot_reach_internal_addresses() {
    let site = Site::start().await;
    let page = site.render("/side-channels").await.expect("render");
    assert!(page.html.contains("ws refused"), "{}", page.html);
    assert!(page.html.contains("worker refused"), "{}", page.html);
    assert_eq!(site.other.total_hits(), 0, "{:?}", site.other.paths());
    let stats = site.pool.stats();
    eprintln!("{stats:?}");
    assert!(
        stats.requests_blocked_internal >= 1,
        "the renderer itself refused the worker's fetch: {stats:?}"
    );
    site.pool.shutdown().await;
}
