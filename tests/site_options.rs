//! Site options for sites moving from prerender.io (SPEC §2, "The
//! prerender.io service protocol"): `only` patterns beside `ignore`, the
//! `_escaped_fragment_` state rendered as `#!…` and cached apart, and the
//! render User-Agent (`render_user_agent`) — the real binary, Chromium and a
//! local origin.

mod common;

use common::origin::{Route, TestOrigin};
use common::proxy::{config_file, get, ProxyProcess, FIREFOX, GOOGLEBOT};

const HOST: &str = "www.example.test";
const RENDER_UA: &str = "Mozilla/5.0 (compatible; ShopRenderer/1.0; Prerender)";

fn page(script: &str) -> Route {
    Route::html(&format!(
        "<!DOCTYPE html><html><head><title>t</title></head><body><div id=\"app\">Loading</div><script>{script}</script></body></html>"
    ))
}

#[tokio::test]
async fn only_patterns_escaped_fragments_and_the_render_user_agent() {
    let origin = TestOrigin::start(vec![
        (
            "/products/1",
            page("document.getElementById('app').textContent = 'Product one, prerender in UA: ' + navigator.userAgent.includes('Prerender');"),
        ),
        (
            "/products/secret",
            page("document.getElementById('app').textContent = 'Secret rendered';"),
        ),
        (
            "/about",
            page("document.getElementById('app').textContent = 'About rendered';"),
        ),
        (
            "/app",
            page("document.getElementById('app').textContent = 'state=[' + location.hash + '] path=' + location.pathname + location.search;"),
        ),
    ])
    .await;
    let cfg = config_file(&format!(
        r#"
browsers = 1
tabs_per_browser = 2
ready_timeout = 3
render_user_agent = "{RENDER_UA}"

[[sites]]
domain = "{HOST}"
origin = "{}"
only = ["^/products/", "^/app$"]
ignore = ["^/products/secret"]
"#,
        origin.url()
    ));
    let mut proxy = ProxyProcess::start_with_config(&cfg);

    // Listed paths are rendered, with the configured User-Agent.
    let product = proxy.crawl(HOST, "/products/1").await;
    assert_eq!(product.status, 200);
    assert_eq!(product.header("x-prerender-cache"), Some("MISS"));
    assert!(
        product
            .text()
            .contains("Product one, prerender in UA: true"),
        "{}",
        product.text()
    );
    let seen = origin.requests("/products/1");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].headers.get("user-agent").map(String::as_str),
        Some(RENDER_UA)
    );

    // Paths outside `only` (and inside `ignore`) reach the origin as they are.
    for path in ["/about", "/products/secret"] {
        let r = proxy.crawl(HOST, path).await;
        assert_eq!(r.header("x-prerender-cache"), None, "{path}");
        assert!(
            r.text().contains("<div id=\"app\">Loading</div><script>"),
            "{path}: the origin's document: {}",
            r.text()
        );
        assert!(
            origin
                .requests(path)
                .iter()
                .all(|s| s.headers.get("user-agent").map(String::as_str) == Some(GOOGLEBOT)),
            "{path} was rendered"
        );
    }

    // `?_escaped_fragment_=/x` renders the `#!/x` state, for anyone, cached
    // apart from the page itself and from other states.
    let x = get(
        &proxy.url("/app?_escaped_fragment_=/x"),
        &[("host", HOST), ("user-agent", FIREFOX)],
    )
    .await;
    assert_eq!(x.status, 200, "{}", x.text());
    assert_eq!(x.header("x-prerender-cache"), Some("MISS"));
    assert!(x.text().contains("state=[#!/x] path=/app<"), "{}", x.text());
    let plain = proxy.crawl(HOST, "/app").await;
    assert_eq!(plain.header("x-prerender-cache"), Some("MISS"));
    assert!(
        plain.text().contains("state=[] path=/app<"),
        "{}",
        plain.text()
    );
    let again = proxy
        .crawl(HOST, "/app?_escaped_fragment_=%2Fx&utm=1")
        .await;
    assert_eq!(again.header("x-prerender-cache"), Some("HIT"));
    assert_eq!(again.body, x.body);
    let y = proxy.crawl(HOST, "/app?_escaped_fragment_=/y").await;
    assert_eq!(y.header("x-prerender-cache"), Some("MISS"));
    assert!(y.text().contains("state=[#!/y]"), "{}", y.text());
    // The origin saw the page without the parameter, as a browser asks.
    assert!(origin.requests("/app").iter().all(|s| s
        .headers
        .get("user-agent")
        .map(String::as_str)
        == Some(RENDER_UA)));
    proxy.stop();
}
