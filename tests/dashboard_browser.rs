//! The dashboard in real headless Chromium against the real binary's admin
//! listener: it asks for the token, polls `/api/v1/stats` with it (the real
//! bearer check, stats registry and store behind it), shows every figure,
//! never turns data into markup (a hostile domain name in the store), and
//! loads without a console error under its Content-Security-Policy.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::network::EventRequestWillBeSent;
use chromiumoxide::Page;
use futures::StreamExt;

use common::dashboard::{eval, goto, page_route, reload, wait_until, DashboardBrowser, HANG};
use common::origin::TestOrigin;
use common::proxy::{config_file, ProxyProcess};
use common::redis::RedisServer;

const TOKEN: &str = "dash-s3cret-0123456789";
/// The site's public host: any host reaches the single site of `origin`.
const SHOP: &str = "shop.example";
/// A domain name built to run script if the page ever inserted it as
/// markup; no request can carry it, so the test puts it in the store's
/// domain set, where the stats API finds the domains it lists.
const HOSTILE_DOMAIN: &str = "<img src=x onerror=\"window.__injected=1\">.example";

/// One site for any host on `origin`, on a plan with every limit the
/// dashboard draws (5 pages, 10 renders a month, refreshed every 30 min),
/// with Redis and the admin token.
fn config(origin: &str, redis: &RedisServer) -> tempfile::TempPath {
    let toml = format!(
        r#"
        origin = "{origin}"
        plan = "shop"
        redis = "{redis}"
        admin_token = "{TOKEN}"
        verify_crawlers = "off"
        browsers = 1
        tabs_per_browser = 2
        ready_timeout = 5
        [plans.shop]
        max_entries = 5
        monthly_renders = 10
        refresh_every = "30m"
        "#,
        redis = redis.url(),
    );
    config_file(&toml)
}

/// Counts the `/api/v1/stats` requests `page` sends with an
/// `Authorization` header.
async fn count_authorised_polls(page: &Page) -> Arc<AtomicUsize> {
    let polls = Arc::new(AtomicUsize::new(0));
    let mut requests = page
        .event_listener::<EventRequestWillBeSent>()
        .await
        .unwrap();
    let count = polls.clone();
    tokio::spawn(async move {
        while let Some(e) = requests.next().await {
            let authorised = e
                .request
                .headers
                .inner()
                .as_object()
                .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("authorization")));
            if e.request.url.ends_with("/api/v1/stats") && authorised {
                count.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    polls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_stats_in_headless_chromium_without_console_errors() {
    let pages = ["/p/1", "/p/2", "/p/3", "/p/4"];
    let origin = TestOrigin::start(pages.iter().map(|p| (*p, page_route(p))).collect()).await;
    let redis = RedisServer::start();
    let cfg = config(origin.url().as_str(), &redis);
    let mut proxy = ProxyProcess::start_with_config(&cfg);

    // Four renders, then twelve hits: 75 % of lookups served from the cache.
    for path in pages {
        let r = proxy.crawl(SHOP, path).await;
        assert_eq!(r.header("x-prerender-cache"), Some("MISS"), "{path}");
    }
    for path in pages.iter().cycle().take(12) {
        let r = proxy.crawl(SHOP, path).await;
        assert_eq!(r.header("x-prerender-cache"), Some("HIT"), "{path}");
    }
    let _: () = redis::cmd("SADD")
        .arg(prerender_proxy::cache::DOMAINS_KEY)
        .arg(HOSTILE_DOMAIN)
        .query(&mut redis.raw())
        .unwrap();

    let browser = DashboardBrowser::launch().await;
    let (page, problems) = browser.tab().await;
    let polls = count_authorised_polls(&page).await;
    goto(&page, &proxy.admin_url("/")).await;

    // No token yet: the form, and no request to the API.
    wait_until(&page, "!document.getElementById('login').hidden").await;
    assert_eq!(polls.load(Ordering::SeqCst), 0);

    // Enter the token as a user would.
    eval::<bool>(
        &page,
        &format!(
            "document.getElementById('token').value = {TOKEN:?};
             document.getElementById('login').requestSubmit(); true"
        ),
    )
    .await;
    wait_until(
        &page,
        "document.querySelectorAll('#domains .card').length === 2",
    )
    .await;
    assert_eq!(
        eval::<Option<String>>(
            &page,
            "sessionStorage.getItem('prerender-proxy.admin-token')"
        )
        .await
        .as_deref(),
        Some(TOKEN)
    );

    // The hostile domain is shown as text, never parsed as markup.
    let titles: Vec<String> = eval(
        &page,
        "Array.from(document.querySelectorAll('#domains .card h2')).map(h => h.textContent)",
    )
    .await;
    assert!(titles.contains(&HOSTILE_DOMAIN.to_owned()), "{titles:?}");
    assert_eq!(
        eval::<u32>(
            &page,
            "document.querySelectorAll('#domains img, #domains script').length"
        )
        .await,
        0
    );
    assert!(!eval::<bool>(&page, "window.__injected === 1").await);

    // Every figure of the shop card.
    let card_of_shop = format!(
        "Array.from(document.querySelectorAll('#domains .card'))
             .find(c => c.querySelector('h2').textContent === '{SHOP}')"
    );
    let shop: String = eval(&page, &format!("{card_of_shop}.innerText")).await;
    for want in [
        "75.0 %",
        "hit rate",
        "4 / 5",
        "4 / 10",
        "Hits\n12",
        "Misses\n4",
        "Stale\n0",
        "Errors\n0",
        "Renders\n4",
        "Renders saved\n12",
        "in 30 min",
    ] {
        assert!(shop.contains(want), "{want:?} missing from card:\n{shop}");
    }
    // Sizes and times are the real ones: formatted, never missing.
    let figure = |name: &str| {
        format!(
            "Array.from({card_of_shop}.querySelectorAll('dt'))
                 .find(t => t.textContent === '{name}').nextElementSibling.textContent"
        )
    };
    let size: String = eval(&page, &figure("Cache size")).await;
    assert!(size.ends_with("B") && size != "0 B", "cache size {size:?}");
    for name in ["Render time avg", "Render time p95"] {
        let time: String = eval(&page, &figure(name)).await;
        assert!(
            time.ends_with(" ms") || time.ends_with(" s"),
            "{name} {time:?}"
        );
    }
    let bars: Vec<String> = eval(
        &page,
        &format!(
            "Array.from({card_of_shop}.querySelectorAll('.meter-fill'))
                 .map(f => f.style.width + ' ' + f.className)"
        ),
    )
    .await;
    assert_eq!(bars, vec!["80% meter-fill warn", "40% meter-fill"]);
    let hostile: String = eval(
        &page,
        &format!(
            "Array.from(document.querySelectorAll('#domains .card'))
                 .find(c => c.querySelector('h2').textContent !== '{SHOP}').innerText"
        ),
    )
    .await;
    assert!(hostile.contains("0 / 5"), "{hostile}");
    assert!(hostile.contains("0 / 10"), "{hostile}");

    // It keeps polling (every 5 s) and survives a reload on the stored token.
    let deadline = tokio::time::Instant::now() + HANG;
    while polls.load(Ordering::SeqCst) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no second poll");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reload(&page).await;
    wait_until(
        &page,
        "document.querySelectorAll('#domains .card').length === 2
         && document.getElementById('login').hidden",
    )
    .await;

    let seen = problems.lock().clone();
    assert!(seen.is_empty(), "console problems: {seen:#?}");

    // A refused token brings the form back with a message.
    eval::<bool>(
        &page,
        "sessionStorage.setItem('prerender-proxy.admin-token', 'wrong'); true",
    )
    .await;
    reload(&page).await;
    wait_until(
        &page,
        "!document.getElementById('login').hidden
         && document.getElementById('login-error').textContent === 'The token was refused.'
         && sessionStorage.getItem('prerender-proxy.admin-token') === null",
    )
    .await;

    // A link with the token in its fragment (what examples/run.sh prints)
    // signs in without the form and leaves no token in the address bar.
    let (linked, _) = browser.tab().await;
    goto(&linked, &proxy.admin_url(&format!("/#token={TOKEN}"))).await;
    wait_until(
        &linked,
        "document.getElementById('login').hidden
         && document.querySelectorAll('#domains .card').length === 2",
    )
    .await;
    assert_eq!(
        eval::<String>(&linked, "location.href").await,
        proxy.admin_url("/")
    );

    // Control: a script the dashboard's own policy refuses is reported, so
    // an empty problem list above means something.
    let (control, control_problems) = browser.tab().await;
    goto(&control, &proxy.admin_url("/")).await;
    eval::<bool>(
        &control,
        "const s = document.createElement('script');
         s.textContent = 'window.__ran = 1';
         document.body.appendChild(s); true",
    )
    .await;
    let deadline = tokio::time::Instant::now() + HANG;
    while control_problems.lock().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a refused script was not reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!eval::<bool>(&control, "window.__ran === 1").await);

    browser.close().await;
    proxy.stop();
}
