//! What the browser shows is what the snapshot holds (SPEC §3): frames and
//! intersection observers in every tab however many render at once, shadow
//! DOM, content loaded when scrolled into view, styles made through the
//! CSSOM, no `<noscript>`, a UTF-8 declaration, client-side redirects.
//! Real Chromium, local origins.

mod common;

use std::sync::Arc;

use common::origin::{Route, TestOrigin};
use prerender_proxy::render::{BrowserPool, PoolConfig, RenderJob, RenderedPage};

const PUBLIC: &str = "https://www.example.test";

/// Text added in an animation frame, in an IntersectionObserver callback
/// and at the end of a chain of nested timers: the first two need a tab
/// that gets frames, the last one whose timers are not throttled.
const FRAMES_PAGE: &str = r#"<!DOCTYPE html><html><head><title>frames</title></head><body>
<div id="frame">no frame yet</div>
<div id="seen">not intersected yet</div>
<div id="timers">timers pending</div>
<script>
let depth = 0;
(function tick() {
  if (++depth < 12) { setTimeout(tick, 5); return; }
  document.getElementById('timers').textContent = 'timer text ' + location.pathname;
})();
requestAnimationFrame(() => requestAnimationFrame(() => {
  document.getElementById('frame').textContent = 'frame text ' + location.pathname;
}));
const target = document.getElementById('seen');
new IntersectionObserver((entries, observer) => {
  if (entries.some((e) => e.isIntersecting)) {
    target.textContent = 'intersection text ' + location.pathname;
    observer.disconnect();
  }
}).observe(target);
</script></body></html>"#;

struct Site {
    pool: Arc<BrowserPool>,
    origin: TestOrigin,
}

impl Site {
    async fn start(cfg: PoolConfig, routes: Vec<(&str, Route)>) -> Self {
        let origin = TestOrigin::start(routes).await;
        let pool = BrowserPool::launch(cfg).await.expect("pool launches");
        Self { pool, origin }
    }

    fn job(&self, path: &str) -> RenderJob {
        RenderJob::new(
            url::Url::parse(&format!("{PUBLIC}{path}")).unwrap(),
            self.origin.url(),
        )
    }

    async fn render(&self, path: &str) -> RenderedPage {
        self.pool
            .render(self.job(path))
            .await
            .unwrap_or_else(|e| panic!("render of {path} failed: {e}"))
    }
}

/// Every render of `browsers × tabs_per_browser` at once gets animation
/// frames and intersection checks, as a render alone does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_concurrent_render_gets_frames_and_intersections() {
    let mut cfg = common::small_pool_config();
    cfg.browsers = 2;
    cfg.tabs_per_browser = 4;
    let capacity = cfg.browsers * cfg.tabs_per_browser;
    let paths: Vec<String> = (0..capacity * 2).map(|i| format!("/frames/{i}")).collect();
    let routes = paths
        .iter()
        .map(|p| (p.as_str(), Route::html(FRAMES_PAGE)))
        .collect();
    let site = Site::start(cfg, routes).await;
    for round in 0..2 {
        let pages = futures::future::join_all(paths.iter().map(|p| site.render(p.as_str()))).await;
        let incomplete: Vec<&String> = paths
            .iter()
            .zip(&pages)
            .filter(|(path, page)| {
                !page.html.contains(&format!("frame text {path}"))
                    || !page.html.contains(&format!("intersection text {path}"))
                    || !page.html.contains(&format!("timer text {path}"))
            })
            .map(|(path, _)| path)
            .collect();
        assert!(
            incomplete.is_empty(),
            "round {round}: {} of {} renders lacked frame, intersection or timer text: {incomplete:?}",
            incomplete.len(),
            paths.len()
        );
    }
    site.pool.shutdown().await;
}
