//! The service listener behind the real prerender-node middleware (npm,
//! tests/fixtures/prerender-node) in a small Express app: moving from
//! prerender.io is one changed service URL. A crawler through Express gets
//! the rendered page, a person gets the app, and the second crawler request
//! is a cache hit.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::free_port;
use common::proxy::{get, ProxyArgs, FIREFOX, GOOGLEBOT};

const HOST: &str = "www.example.test";
const TOKEN: &str = "prerender-node-token-42";

/// The Express app of tests/fixtures/prerender-node, killed when dropped.
struct ExpressApp {
    child: Child,
    port: u16,
}

impl ExpressApp {
    fn start(service_url: &str, token: &str) -> ExpressApp {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/prerender-node");
        assert!(
            dir.join("node_modules/prerender-node/index.js").is_file()
                && dir.join("node_modules/express/index.js").is_file(),
            "the npm packages of {} are missing: run .ci/install-deps",
            dir.display()
        );
        let node = ["node", "nodejs"]
            .into_iter()
            .find(|n| {
                Command::new(n)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .expect("node is installed (.ci/install-deps)");
        let mut child = Command::new(node)
            .arg("app.js")
            .current_dir(&dir)
            .env("PRERENDER_SERVICE_URL", service_url)
            .env("PRERENDER_TOKEN", token)
            .env("PUBLIC_HOST", HOST)
            .env("PUBLIC_PROTOCOL", "https")
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Express app");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the Express app did not start: {line:?}"));
        ExpressApp { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for ExpressApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy for `app`, with its service listener on `service_port`
/// taking [`TOKEN`].
fn service_proxy(app: &ExpressApp, service_port: u16) -> ProxyArgs {
    ProxyArgs::small_pool(&app.url(""), HOST)
        .quick_ready()
        .flag("--service-listen", &format!("127.0.0.1:{service_port}"))
        .flag("--service-tokens", TOKEN)
}

#[tokio::test]
async fn prerender_node_in_express_serves_crawlers_from_the_service() {
    let service_port = free_port();
    let app = ExpressApp::start(&format!("http://127.0.0.1:{service_port}/"), TOKEN);
    let mut proxy = service_proxy(&app, service_port).start();
    proxy.wait_until("/readyz", Duration::from_secs(30));

    // A person gets the app itself.
    let person = get(&app.url("/products/1"), &[("user-agent", FIREFOX)]).await;
    assert_eq!(person.status, 200);
    assert_eq!(person.header("x-served-by"), Some("express"));
    assert!(person.text().contains("<script>"), "{}", person.text());
    assert_eq!(person.header("x-prerender-cache"), None);

    // A crawler gets the rendered page, rendered as its public URL; the
    // renderer's own requests reached the app (prerender-node lets them
    // through by their X-Prerender header).
    let first = get(&app.url("/products/1"), &[("user-agent", GOOGLEBOT)]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-prerender-cache"), Some("MISS"));
    assert!(
        first.text().contains("Rendered by the app at /products/1"),
        "{}",
        first.text()
    );
    assert!(!first.text().contains("<script>"), "scripts stripped");
    assert_eq!(
        first.header("content-type"),
        Some("text/html; charset=utf-8")
    );

    // The second crawler request is a hit, with the same page.
    let second = get(&app.url("/products/1"), &[("user-agent", GOOGLEBOT)]).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-prerender-cache"), Some("HIT"));
    assert_eq!(second.body, first.body);
    // The public listener's crawlers share that page.
    let via_proxy = proxy.crawl(HOST, "/products/1").await;
    assert_eq!(via_proxy.header("x-prerender-cache"), Some("HIT"));

    // The page's status and Location reach the crawler through the app.
    let gone = get(&app.url("/gone"), &[("user-agent", GOOGLEBOT)]).await;
    assert_eq!(gone.status, 301, "{}", gone.text());
    assert_eq!(
        gone.header("location"),
        Some("https://www.example.test/new-home")
    );

    let metrics = get(&proxy.admin_url("/metrics"), &[]).await.text();
    let count = |cache: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("prerender_requests_total{")
                    && l.contains("kind=\"bot\"")
                    && l.contains(&format!("cache=\"{cache}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(count("miss"), 2.0, "{metrics}");
    assert_eq!(count("hit"), 2.0, "{metrics}");
    proxy.stop();
}

#[tokio::test]
async fn a_wrong_token_in_the_middleware_is_refused() {
    let service_port = free_port();
    let app = ExpressApp::start(
        &format!("http://127.0.0.1:{service_port}/"),
        "not-the-right-token",
    );
    let mut proxy = service_proxy(&app, service_port).start();
    let crawler = get(&app.url("/products/1"), &[("user-agent", GOOGLEBOT)]).await;
    assert_eq!(crawler.status, 401, "{}", crawler.text());
    assert!(!crawler.text().contains(TOKEN));
    proxy.stop();
}
