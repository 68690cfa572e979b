//! The dashboard in real headless Chromium: it asks for the token, polls
//! `/api/v1/stats` with it (the real bearer check and stats registry behind
//! a local server), shows every figure, never turns data into markup, and
//! loads without a console error under its Content-Security-Policy.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown,
};
use chromiumoxide::Page;
use futures::StreamExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_SECURITY_POLICY};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use prerender_proxy::admin::auth::AdminAuth;
use prerender_proxy::admin::dashboard;
use prerender_proxy::http::respond;
use prerender_proxy::http::Body;
use prerender_proxy::state::stats::{DomainExtra, DomainStats};
use tokio::net::TcpListener;

const TOKEN: &str = "dash-s3cret";
/// A domain name built to run script if the page ever inserted it as markup.
const HOSTILE_DOMAIN: &str = "<img src=x onerror=\"window.__injected=1\">.example";
/// Generous deadline that only catches hangs.
const HANG: Duration = Duration::from_secs(30);

struct AdminStub {
    auth: AdminAuth,
    stats: DomainStats,
    extra: BTreeMap<String, DomainExtra>,
    authorised_polls: AtomicUsize,
}

async fn serve_admin(stub: Arc<AdminStub>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let stub = stub.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let stub = stub.clone();
                    async move { Ok::<_, Infallible>(route(&stub, req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn route(stub: &AdminStub, req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/" => dashboard::response(),
        // The same page under a policy that refuses its script: proves this
        // test sees console errors when there are some.
        "/refused" => {
            let mut resp = dashboard::response();
            resp.headers_mut().insert(
                CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; script-src 'none'"),
            );
            resp
        }
        "/api/v1/stats" => match stub.auth.check(req.headers()) {
            Ok(()) => {
                stub.authorised_polls.fetch_add(1, Ordering::SeqCst);
                respond::json(hyper::StatusCode::OK, &stub.stats.to_json(&stub.extra))
            }
            Err(e) => e.into_response(),
        },
        _ => respond::json(
            hyper::StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not found"}),
        ),
    }
}

fn stub() -> Arc<AdminStub> {
    let stats = DomainStats::default();
    for _ in 0..3 {
        stats.record_hit("shop.example");
    }
    stats.record_miss("shop.example");
    stats.record_render("shop.example", Duration::from_millis(640));
    stats.record_render("shop.example", Duration::from_millis(900));
    stats.record_miss(HOSTILE_DOMAIN);
    let mut extra = BTreeMap::new();
    extra.insert(
        "shop.example".to_owned(),
        DomainExtra {
            entries: 12,
            max_entries: Some(50),
            bytes: 3 * 1024 * 1024,
            renders_this_month: 90,
            monthly_renders: Some(100),
            next_refresh: Some(std::time::SystemTime::now() + Duration::from_secs(1800)),
        },
    );
    extra.insert(
        HOSTILE_DOMAIN.to_owned(),
        DomainExtra {
            max_entries: Some(500),
            renders_this_month: 7,
            monthly_renders: None,
            ..DomainExtra::default()
        },
    );
    Arc::new(AdminStub {
        auth: AdminAuth::new(Some(TOKEN)),
        stats,
        extra,
        authorised_polls: AtomicUsize::new(0),
    })
}

fn chrome_path() -> PathBuf {
    std::env::var_os("CHROME_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/chromium/chromium"))
}

/// Console errors, warnings, uncaught exceptions and browser log errors
/// (CSP violations, failed loads) of `page`, collected from now on.
async fn collect_problems(page: &Page) -> Arc<Mutex<Vec<String>>> {
    use chromiumoxide::cdp::browser_protocol::log::EnableParams as LogEnable;
    use chromiumoxide::cdp::js_protocol::runtime::EnableParams as RuntimeEnable;
    let problems = Arc::new(Mutex::new(Vec::new()));
    let mut log = page.event_listener::<EventEntryAdded>().await.unwrap();
    let mut console = page
        .event_listener::<EventConsoleApiCalled>()
        .await
        .unwrap();
    let mut exceptions = page.event_listener::<EventExceptionThrown>().await.unwrap();
    page.execute(LogEnable::default()).await.unwrap();
    page.execute(RuntimeEnable::default()).await.unwrap();
    let sink = problems.clone();
    tokio::spawn(async move {
        while let Some(e) = log.next().await {
            if matches!(e.entry.level, LogEntryLevel::Error | LogEntryLevel::Warning) {
                sink.lock().push(format!("log: {}", e.entry.text));
            }
        }
    });
    let sink = problems.clone();
    tokio::spawn(async move {
        while let Some(e) = console.next().await {
            if matches!(
                e.r#type,
                ConsoleApiCalledType::Error | ConsoleApiCalledType::Warning
            ) {
                sink.lock().push(format!("console: {:?}", e.args));
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
    problems
}

async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> T {
    tokio::time::timeout(HANG, page.evaluate(js))
        .await
        .expect("evaluate hung")
        .unwrap_or_else(|e| panic!("{js}: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("{js}: {e}"))
}

/// Polls `js` until it is true or the hang deadline passes.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_stats_in_headless_chromium_without_console_errors() {
    let stub = stub();
    let addr = serve_admin(stub.clone()).await;

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
    let problems = collect_problems(&page).await;
    tokio::time::timeout(HANG, page.goto(format!("http://{addr}/")))
        .await
        .expect("navigation hung")
        .unwrap();

    // No token yet: the form, and no request to the API.
    wait_until(&page, "!document.getElementById('login').hidden").await;
    assert_eq!(stub.authorised_polls.load(Ordering::SeqCst), 0);

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
    let shop: String = eval(
        &page,
        "Array.from(document.querySelectorAll('#domains .card'))
             .find(c => c.querySelector('h2').textContent === 'shop.example').innerText",
    )
    .await;
    for want in [
        "75.0 %",
        "hit rate",
        "12 / 50",
        "90 / 100",
        "Hits\n3",
        "Misses\n1",
        "Stale\n0",
        "Errors\n0",
        "Renders\n2",
        "Renders saved\n3",
        "3.0 MiB",
        "770 ms",
        "900 ms",
        "in 30 min",
    ] {
        assert!(shop.contains(want), "{want:?} missing from card:\n{shop}");
    }
    let bars: Vec<String> = eval(
        &page,
        "Array.from(Array.from(document.querySelectorAll('#domains .card'))
             .find(c => c.querySelector('h2').textContent === 'shop.example')
             .querySelectorAll('.meter-fill')).map(f => f.style.width + ' ' + f.className)",
    )
    .await;
    assert_eq!(bars, vec!["24% meter-fill", "90% meter-fill warn"]);
    let hostile: String = eval(
        &page,
        "Array.from(document.querySelectorAll('#domains .card'))
             .find(c => c.querySelector('h2').textContent !== 'shop.example').innerText",
    )
    .await;
    assert!(hostile.contains("7 (unlimited)"), "{hostile}");
    assert!(hostile.contains("0 / 500"), "{hostile}");

    // It keeps polling (every 5 s) and survives a reload on the stored token.
    let deadline = tokio::time::Instant::now() + HANG;
    while stub.authorised_polls.load(Ordering::SeqCst) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no second poll");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::timeout(HANG, page.reload())
        .await
        .expect("reload hung")
        .unwrap();
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
    tokio::time::timeout(HANG, page.reload())
        .await
        .expect("reload hung")
        .unwrap();
    wait_until(
        &page,
        "!document.getElementById('login').hidden
         && document.getElementById('login-error').textContent === 'The token was refused.'
         && sessionStorage.getItem('prerender-proxy.admin-token') === null",
    )
    .await;

    // A link with the token in its fragment (what examples/run.sh prints)
    // signs in without the form and leaves no token in the address bar.
    let linked = browser.new_page("about:blank").await.unwrap();
    tokio::time::timeout(HANG, linked.goto(format!("http://{addr}/#token={TOKEN}")))
        .await
        .expect("navigation hung")
        .unwrap();
    wait_until(
        &linked,
        "document.getElementById('login').hidden
         && document.querySelectorAll('#domains .card').length === 2",
    )
    .await;
    assert_eq!(
        eval::<String>(&linked, "location.href").await,
        format!("http://{addr}/")
    );

    // Control: the same page with its script refused by policy is reported,
    // so an empty problem list above means something.
    let control = browser.new_page("about:blank").await.unwrap();
    let control_problems = collect_problems(&control).await;
    tokio::time::timeout(HANG, control.goto(format!("http://{addr}/refused")))
        .await
        .expect("navigation hung")
        .unwrap();
    let deadline = tokio::time::Instant::now() + HANG;
    while control_problems.lock().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a refused script was not reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    browser.close().await.unwrap();
    let _ = browser.wait().await;
    handler_task.abort();
}
