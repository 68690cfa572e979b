//! The dashboard against the real binary, in real headless Chromium: crawler
//! requests by family, the last failed renders with their reasons, and the
//! page list of a domain with a purge button per page (the real admin API
//! and its bearer token behind it).

mod common;

use common::dashboard::{eval, goto, page_route, wait_until, DashboardBrowser};
use common::origin::{Route, TestOrigin};
use common::proxy::{get, send, ProxyArgs};

const HOST: &str = "www.example.test";
const TOKEN: &str = "dashboard-token-0123456789";
const GPTBOT: &str =
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn families_failures_and_a_purge_button_per_page() {
    let origin = TestOrigin::start(vec![
        ("/p/1", page_route("one")),
        ("/p/2", page_route("two")),
        ("/broken", Route::html("<h1>down</h1>").status(500)),
    ])
    .await;
    let mut proxy = ProxyArgs::small_pool(origin.url().as_str(), HOST)
        .flag("--admin-token", TOKEN)
        .flag("--verify-crawlers", "off")
        .start_ready();
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

    let browser = DashboardBrowser::launch().await;
    let (page, problems) = browser.tab().await;
    goto(&page, &proxy.admin_url(&format!("/#token={TOKEN}"))).await;
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
    // Cards are redrawn at every poll (5 s); the list stays. The card
    // drawn now is marked, so a card without the mark is a redrawn one.
    eval::<bool>(
        &page,
        "document.querySelector('#domains .card').dataset.drawn = 'before'; true",
    )
    .await;
    wait_until(
        &page,
        "document.querySelector('#domains .card') !== null
         && document.querySelector('#domains .card').dataset.drawn === undefined",
    )
    .await;
    assert_eq!(
        eval::<u32>(&page, "document.querySelectorAll('#pages-body tr').length").await,
        1
    );
    let seen = problems.lock().clone();
    assert!(seen.is_empty(), "console problems: {seen:#?}");

    browser.close().await;
    proxy.stop();
}
