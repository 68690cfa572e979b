//! The dashboard against the real binary, in real headless Chromium: crawler
//! requests by family, the last failed renders with their reasons, and the
//! page list of a domain with a purge button per page (the real admin API
//! and its bearer token behind it).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::js_protocol::runtime::EventExceptionThrown;
use chromiumoxide::Page;
use futures::StreamExt;
use parking_lot::Mutex;

use common::origin::{Route, TestOrigin};
use common::proxy::{get, send, ProxyProcess};

const HOST: &str = "www.example.test";
const TOKEN: &str = "dashboard-token-0123456789";
const GPTBOT: &str =
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";
const HANG: Duration = Duration::from_secs(30);

fn chrome_path() -> PathBuf {
    std::env::var_os("CHROME_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/chromium/chromium"))
}

async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> T {
    tokio::time::timeout(HANG, page.evaluate(js))
        .await
        .expect("evaluate hung")
        .unwrap_or_else(|e| panic!("{js}: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("{js}: {e}"))
}

async fn wait_until(page: &Page, js: &str) {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        if eval::<bool>(page, js).await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never became true: {js}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn page_route(text: &str) -> Route {
    Route::html(&format!(
        "<!DOCTYPE html><html><head><title>t</title></head><body><div id=\"app\"></div><script>document.getElementById('app').textContent = '{text}';</script></body></html>"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn families_failures_and_a_purge_button_per_page() {
    let origin = TestOrigin::start(vec![
        ("/p/1", page_route("one")),
        ("/p/2", page_route("two")),
        ("/broken", Route::html("<h1>down</h1>").status(500)),
    ])
    .await;
    let origin_url = origin.url().to_string();
    let mut proxy = ProxyProcess::start_ready(&[
        "--origin",
        &origin_url,
        "--domain",
        HOST,
        "--browsers",
        "1",
        "--admin-token",
        TOKEN,
        "--verify-crawlers",
        "off",
    ]);
    for path in ["/p/1", "/p/2", "/p/1"] {
        assert_eq!(proxy.crawl(HOST, path).await.status, 200, "{path}");
    }
    let gpt = get(
        &proxy.url("/p/2"),
        &[("host", HOST), ("user-agent", GPTBOT)],
    )
    .await;
    assert_eq!(gpt.header("x-prerender-cache"), Some("HIT"));
    let broken = proxy.crawl(HOST, "/broken").await;
    assert_eq!(broken.header("x-prerender-error"), Some("origin-error"));

    let profile = tempfile::tempdir().unwrap();
    let config = BrowserConfig::builder()
        .chrome_executable(chrome_path())
        .no_sandbox()
        .new_headless_mode()
        .user_data_dir(profile.path())
        .args(["disable-gpu", "disable-component-update"])
        .build()
        .unwrap();
    let (mut browser, mut handler) = Browser::launch(config).await.expect("launch chromium");
    let handler_task = tokio::spawn(async move {
        while let Some(event) = handler.next().await {
            if event.is_err() {
                break;
            }
        }
    });
    let page = browser.new_page("about:blank").await.unwrap();
    let problems: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        use chromiumoxide::cdp::browser_protocol::log::EnableParams as LogEnable;
        use chromiumoxide::cdp::js_protocol::runtime::EnableParams as RuntimeEnable;
        let mut log = page.event_listener::<EventEntryAdded>().await.unwrap();
        let mut exceptions = page.event_listener::<EventExceptionThrown>().await.unwrap();
        page.execute(LogEnable::default()).await.unwrap();
        page.execute(RuntimeEnable::default()).await.unwrap();
        let sink = problems.clone();
        tokio::spawn(async move {
            while let Some(e) = log.next().await {
                if matches!(e.entry.level, LogEntryLevel::Error) {
                    sink.lock().push(format!("log: {}", e.entry.text));
                }
            }
        });
        let sink = problems.clone();
        tokio::spawn(async move {
            while let Some(e) = exceptions.next().await {
                sink.lock()
                    .push(format!("exception: {}", e.exception_details.text));
            }
        });
    }
    tokio::time::timeout(
        HANG,
        page.goto(proxy.admin_url(&format!("/#token={TOKEN}"))),
    )
    .await
    .expect("navigation hung")
    .unwrap();
    wait_until(
        &page,
        "document.querySelectorAll('#domains .card').length === 1",
    )
    .await;
    let card: String = eval(&page, "document.querySelector('#domains .card').innerText").await;
    for want in [
        "Crawler requests by family",
        "search-engines\n4",
        "ai-training\n1",
        "Last failed renders",
        "/broken",
        "origin-error",
    ] {
        assert!(card.contains(want), "{want:?} missing from card:\n{card}");
    }

    // The page list, then one page purged with its button.
    eval::<bool>(
        &page,
        "document.querySelector('#domains .card .pages-button').click(); true",
    )
    .await;
    wait_until(
        &page,
        "document.querySelectorAll('#pages-body tr').length === 2",
    )
    .await;
    let urls: Vec<String> = eval(
        &page,
        "Array.from(document.querySelectorAll('#pages-body td.url')).map(t => t.textContent)",
    )
    .await;
    assert_eq!(
        urls,
        [format!("https://{HOST}/p/1"), format!("https://{HOST}/p/2")]
    );
    eval::<bool>(
        &page,
        "Array.from(document.querySelectorAll('#pages-body tr'))
             .find(r => r.querySelector('td.url').textContent.endsWith('/p/1'))
             .querySelector('button.danger').click(); true",
    )
    .await;
    wait_until(
        &page,
        "document.querySelectorAll('#pages-body tr').length === 1
         && document.getElementById('pages-status').textContent.startsWith('Purged ')",
    )
    .await;
    let cached = |path: &'static str| {
        let proxy = &proxy;
        async move {
            let url: String =
                url::form_urlencoded::byte_serialize(format!("https://{HOST}{path}").as_bytes())
                    .collect();
            send(
                "GET",
                &proxy.admin_url(&format!("/api/v1/cache?url={url}")),
                &[("authorization", &format!("Bearer {TOKEN}"))],
                "",
            )
            .await
            .status
        }
    };
    assert_eq!(cached("/p/1").await, 404, "purged");
    assert_eq!(cached("/p/2").await, 200, "kept");
    // Cards are redrawn every 5 s; the list stays.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert_eq!(
        eval::<u32>(&page, "document.querySelectorAll('#pages-body tr').length").await,
        1
    );
    let seen = problems.lock().clone();
    assert!(seen.is_empty(), "console problems: {seen:#?}");

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    handler_task.abort();
    proxy.stop();
}
