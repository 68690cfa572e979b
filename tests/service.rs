//! The service listener (prerender.io's protocol, SPEC §2) end to end: the
//! real binary, real Chromium, a local origin and a real redis-server,
//! spoken to over plain HTTP as prerender-node and the nginx snippet do.

mod common;

use std::io::Read;
use std::time::Duration;

use common::free_port;
use common::origin::{Route, TestOrigin};
use common::proxy::{config_file, get, send, ProxyArgs, ProxyProcess, GOOGLEBOT};
use common::redis::RedisServer;

const HOST: &str = "www.example.test";
const TOKEN: &str = "service-token-0123456789";
const OTHER_TOKEN: &str = "second-token-abcdefgh";

fn page(body_script: &str) -> Route {
    Route::html(&format!(
        "<!DOCTYPE html><html><head><title>t</title></head><body><div id=\"app\">Loading</div><script>{body_script}</script></body></html>"
    ))
}

async fn origin() -> TestOrigin {
    TestOrigin::start(vec![
        (
            "/p/1",
            page("document.getElementById('app').textContent = 'Rendered ' + location.pathname + location.search + ' on ' + location.host;"),
        ),
        (
            "/p/2",
            page("document.getElementById('app').textContent = 'Second ' + 'x'.repeat(3000);"),
        ),
        (
            "/moved",
            page("for (const [n, c] of [['prerender-status-code', '301'], ['prerender-header', 'Location: https://www.example.test/new']]) { const m = document.createElement('meta'); m.name = n; m.content = c; document.head.appendChild(m); }"),
        ),
        (
            "/never",
            Route::html("<!DOCTYPE html><html><head><script>window.prerenderReady = false;</script></head><body>shell of never</body></html>"),
        ),
        ("/skipped/1", page("document.getElementById('app').textContent = 'Rendered skipped';")),
        ("/app.js", Route::js("console.log('asset')")),
    ])
    .await
}

fn config(origin: &TestOrigin) -> tempfile::TempPath {
    let toml = format!(
        r#"
render_timeout = 3
ready_timeout = 2
browsers = 1
tabs_per_browser = 2
service_tokens = ["{TOKEN}", "{OTHER_TOKEN}"]

[[sites]]
domain = "{HOST}"
origin = "{}"
ignore = ["^/skipped/"]
"#,
        origin.url()
    );
    config_file(&toml)
}

fn service_url(port: u16, target: &str) -> String {
    format!("http://127.0.0.1:{port}{target}")
}

/// `GET target` on the service as prerender-node sends it.
async fn ask(port: u16, target: &str, token: Option<&str>) -> common::proxy::Reply {
    let mut headers = vec![("user-agent", GOOGLEBOT)];
    if let Some(t) = token {
        headers.push(("x-prerender-token", t));
    }
    get(&service_url(port, target), &headers).await
}

#[tokio::test]
async fn the_service_protocol_answers_from_the_proxys_cache() {
    let origin = origin().await;
    let redis = RedisServer::start();
    let cfg = config(&origin);
    let service_port = free_port();
    let log_path = std::env::temp_dir().join(format!("service-log-{}.txt", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let listen = format!("127.0.0.1:{service_port}");
    let mut proxy = ProxyProcess::start_with_stderr(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--redis",
            &redis.url(),
            "--service-listen",
            &listen,
        ],
        &[("RUST_LOG", "info")],
        log,
    );
    proxy.wait_until("/readyz", Duration::from_secs(30));
    let page = format!("/http://{HOST}/p/1?utm=x");

    // Tokens: missing and wrong are refused before anything is rendered.
    let missing = ask(service_port, &page, None).await;
    assert_eq!(missing.status, 401, "{}", missing.text());
    let wrong = ask(service_port, &page, Some("service-token-0123456780")).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    let prefix = ask(service_port, &page, Some(&TOKEN[..10])).await;
    assert_eq!(prefix.status, 401);
    assert_eq!(origin.hits("/p/1"), 0, "a refused request renders nothing");

    // Miss, then a hit under the proxy's own key.
    let miss = ask(service_port, &page, Some(TOKEN)).await;
    assert_eq!(miss.status, 200, "{}", miss.text());
    assert_eq!(miss.header("x-prerender-cache"), Some("MISS"));
    assert!(
        miss.text().contains(&format!("Rendered /p/1 on {HOST}")),
        "rendered as its public URL, without the insignificant query: {}",
        miss.text()
    );
    assert!(
        !miss.text().contains("<script>document"),
        "scripts stripped"
    );
    assert_eq!(
        miss.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let mut conn = redis.raw();
    let stored: Option<String> = redis::cmd("GET")
        .arg(format!("render:{HOST}:/p/1"))
        .query(&mut conn)
        .unwrap();
    assert!(
        stored.is_some_and(|html| html.contains("Rendered /p/1")),
        "stored under the proxy's key render:<domain>:<path>"
    );
    let hit = ask(service_port, &page, Some(OTHER_TOKEN)).await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.header("x-prerender-cache"), Some("HIT"));
    assert_eq!(hit.body, miss.body);

    // The other form, an https URL and the public listener: the same page.
    let encoded = format!("/render?url=https%3A%2F%2F{HOST}%2Fp%2F1%3Fother%3D1");
    let render_form = ask(service_port, &encoded, Some(TOKEN)).await;
    assert_eq!(render_form.status, 200, "{}", render_form.text());
    assert_eq!(render_form.header("x-prerender-cache"), Some("HIT"));
    let via_proxy = proxy.crawl(HOST, "/p/1").await;
    assert_eq!(via_proxy.header("x-prerender-cache"), Some("HIT"));
    assert_eq!(via_proxy.body, miss.body);
    assert_eq!(origin.hits("/p/1"), 1, "one render for every form");
    // Renders say who they are, as apps written for prerender.io expect.
    let ua = origin.requests("/p/1")[0].headers["user-agent"].clone();
    assert!(
        ua.contains("Prerender (compatible; prerender-proxy)"),
        "{ua}"
    );

    // HEAD: the page's head, no body.
    let head = send(
        "HEAD",
        &service_url(service_port, &page),
        &[("user-agent", GOOGLEBOT), ("x-prerender-token", TOKEN)],
        "",
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-prerender-cache"), Some("HIT"));
    assert!(head.body.is_empty());

    // gzip when asked for, as prerender-node does.
    let gz = get(
        &service_url(service_port, &format!("/https://{HOST}/p/2")),
        &[
            ("user-agent", GOOGLEBOT),
            ("x-prerender-token", TOKEN),
            ("accept-encoding", "gzip"),
        ],
    )
    .await;
    assert_eq!(gz.status, 200, "{}", gz.text());
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("Second xxx"), "{text}");

    // The page's own status and Location are the answer's.
    let moved = ask(service_port, &format!("/https://{HOST}/moved"), Some(TOKEN)).await;
    assert_eq!(moved.status, 301, "{}", moved.text());
    assert_eq!(
        moved.header("location"),
        Some("https://www.example.test/new")
    );

    // Sites not configured here: 421, never rendered.
    let foreign = ask(service_port, "/https://elsewhere.test/p/1", Some(TOKEN)).await;
    assert_eq!(foreign.status, 421, "{}", foreign.text());

    // Malformed targets: 400 with a reason; other methods: 405.
    for bad in [
        "/",
        "/favicon.ico",
        "/www.example.test/p/1",
        "/ftp://www.example.test/p/1",
        "/render",
        "/render?url=",
        "/render?url=www.example.test%2Fp",
        "/https://user:pw@www.example.test/p/1",
        "/https://www.example.test/a%zz",
        "/https://www.example.test/a%00b",
        "/render?url=https%3A%2F%2Fwww.example.test%2F%0D%0Ax",
    ] {
        let r = ask(service_port, bad, Some(TOKEN)).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(!r.text().is_empty(), "{bad}: a reason");
    }
    let post = send(
        "POST",
        &service_url(service_port, &page),
        &[("x-prerender-token", TOKEN)],
        "x",
    )
    .await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));

    // Assets and ignored paths are not rendered: the origin's answer.
    let asset = ask(
        service_port,
        &format!("/https://{HOST}/app.js"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(asset.status, 200);
    assert_eq!(asset.text(), "console.log('asset')");
    assert_eq!(asset.header("x-prerender-cache"), None);
    let ignored = ask(
        service_port,
        &format!("/https://{HOST}/skipped/1"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(ignored.status, 200);
    assert_eq!(ignored.header("x-prerender-cache"), None);
    assert!(
        ignored
            .text()
            .contains("<div id=\"app\">Loading</div><script>"),
        "the origin's document as it is: {}",
        ignored.text()
    );

    // Fail open: the origin's own page, asked for with the loop guard and
    // without the token, marked as an error; nothing cached.
    let failed = ask(service_port, &format!("/https://{HOST}/never"), Some(TOKEN)).await;
    assert_eq!(failed.status, 200, "{}", failed.text());
    assert_eq!(failed.header("x-prerender-cache"), Some("ERROR"));
    assert_eq!(failed.header("x-prerender-error"), Some("timeout"));
    assert!(failed.text().contains("shell of never"));
    let fetches = origin.requests("/never");
    assert!(fetches.len() >= 2, "render + fail-open fetch: {fetches:?}");
    for seen in &fetches {
        assert_eq!(
            seen.headers.get("x-prerender").map(String::as_str),
            Some("1")
        );
        assert!(!seen.headers.contains_key("x-prerender-token"));
        assert!(!seen.headers.values().any(|v| v.contains(TOKEN)));
    }
    assert!(!redis.exists(&format!("render:{HOST}:/never")));

    // Counted with the proxy's requests; the token never in the log.
    let metrics = get(&proxy.admin_url("/metrics"), &[]).await.text();
    let hits: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("prerender_requests_total{")
                && l.contains("kind=\"bot\"")
                && l.contains("cache=\"hit\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(hits >= 4.0, "{metrics}");
    proxy.stop();
    let text = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(text.contains("service_addr"), "log not captured:\n{text}");
    assert!(
        !text.contains(TOKEN) && !text.contains(OTHER_TOKEN),
        "{text}"
    );
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" INFO ") && l.contains("via=\"service\"") && l.contains("/p/1"))
        .collect();
    assert_eq!(lines.len(), 4, "one line per crawler request:\n{text}");
    assert!(lines[0].contains("cache=\"miss\"") && lines[0].contains("search-engines"));
    assert!(text.contains("service request refused"), "{text}");
}

#[tokio::test]
async fn without_tokens_every_request_is_served_and_the_service_is_off_by_default() {
    let origin = origin().await;
    let service_port = free_port();
    let listen = format!("127.0.0.1:{service_port}");
    let origin_url = origin.url().to_string();
    let mut proxy = ProxyArgs::small_pool(&origin_url, HOST)
        .flag("--service-listen", &listen)
        .start();
    proxy.wait_until("/readyz", Duration::from_secs(30));
    let r = ask(service_port, &format!("/http://{HOST}/p/1"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-prerender-cache"), Some("MISS"));
    proxy.stop();
    drop(proxy);

    // Off by default: nothing listens on the service port.
    let mut plain = ProxyProcess::start(&["--origin", &origin_url, "--browsers", "1"]);
    assert!(std::net::TcpStream::connect(("127.0.0.1", service_port)).is_err());
    plain.stop();
}
