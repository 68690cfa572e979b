//! The dashboard in real headless Chromium, pointed at the real binary's
//! admin listener: the browser, evaluation bounded against hangs, waiting
//! for a condition in the page, and the problems a page reports (console
//! errors and warnings, uncaught exceptions, browser log errors such as
//! Content-Security-Policy violations).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::log::{EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown,
};
use chromiumoxide::Page;
use futures::StreamExt;
use parking_lot::Mutex;

use super::origin::Route;

/// Generous deadline that only catches hangs.
pub const HANG: Duration = Duration::from_secs(30);

pub fn chrome_path() -> PathBuf {
    std::env::var_os("CHROME_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/chromium/chromium"))
}

/// An origin page whose text exists only once its script ran.
pub fn page_route(text: &str) -> Route {
    Route::html(&format!(
        "<!DOCTYPE html><html><head><title>t</title></head><body><div id=\"app\"></div><script>document.getElementById('app').textContent = '{text}';</script></body></html>"
    ))
}

/// A headless Chromium of the test's own (its own profile), closed by
/// [`DashboardBrowser::close`].
pub struct DashboardBrowser {
    pub browser: Browser,
    handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl DashboardBrowser {
    pub async fn launch() -> DashboardBrowser {
        let profile = tempfile::tempdir().unwrap();
        let config = BrowserConfig::builder()
            .chrome_executable(chrome_path())
            .no_sandbox()
            .new_headless_mode()
            .user_data_dir(profile.path())
            .args(["disable-gpu", "disable-component-update"])
            .build()
            .unwrap();
        let (browser, mut handler) = Browser::launch(config).await.expect("launch chromium");
        let handler = tokio::spawn(async move {
            while let Some(event) = handler.next().await {
                if event.is_err() {
                    break;
                }
            }
        });
        DashboardBrowser {
            browser,
            handler,
            _profile: profile,
        }
    }

    /// A new tab on `about:blank`, its problems collected from the start.
    pub async fn tab(&self) -> (Page, Problems) {
        let page = self.browser.new_page("about:blank").await.unwrap();
        let problems = collect_problems(&page).await;
        (page, problems)
    }

    pub async fn close(mut self) {
        self.browser.close().await.unwrap();
        let _ = self.browser.wait().await;
        self.handler.abort();
    }
}

/// What a page reported, as lines.
pub type Problems = Arc<Mutex<Vec<String>>>;

/// Console errors, warnings, uncaught exceptions and browser log errors and
/// warnings (CSP violations, failed loads) of `page`, collected from now on.
pub async fn collect_problems(page: &Page) -> Problems {
    use chromiumoxide::cdp::browser_protocol::log::EnableParams as LogEnable;
    use chromiumoxide::cdp::js_protocol::runtime::EnableParams as RuntimeEnable;
    let problems: Problems = Arc::default();
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

/// Navigates `page` to `url`, bounded against hangs.
pub async fn goto(page: &Page, url: &str) {
    tokio::time::timeout(HANG, page.goto(url))
        .await
        .expect("navigation hung")
        .unwrap_or_else(|e| panic!("{url}: {e}"));
}

/// Reloads `page`, bounded against hangs.
pub async fn reload(page: &Page) {
    tokio::time::timeout(HANG, page.reload())
        .await
        .expect("reload hung")
        .unwrap();
}

/// The value of `js` in `page`.
pub async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> T {
    tokio::time::timeout(HANG, page.evaluate(js))
        .await
        .expect("evaluate hung")
        .unwrap_or_else(|e| panic!("{js}: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("{js}: {e}"))
}

/// Polls `js` until it is true or the hang deadline passes.
pub async fn wait_until(page: &Page, js: &str) {
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
