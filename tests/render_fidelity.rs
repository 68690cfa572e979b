//! What the browser shows is what the snapshot holds (SPEC §3): frames and
//! intersection observers in every tab however many render at once, shadow
//! DOM, content loaded when scrolled into view, styles made through the
//! CSSOM, no `<noscript>`, a UTF-8 declaration, client-side redirects.
//! Real Chromium, local origins.

mod common;

use std::sync::Arc;

use common::origin::{Route, TestOrigin};
use common::proxy::ProxyArgs;
use prerender_proxy::render::{BrowserPool, PoolConfig, RenderJob, RenderedPage, ShadowDom};

const PUBLIC: &str = "https://www.example.test";

/// Text added in an animation frame and in an IntersectionObserver
/// callback: both need a tab that gets frames.
const FRAMES_PAGE: &str = r#"<!DOCTYPE html><html><head><title>frames</title></head><body>
<div id="frame">no frame yet</div>
<div id="seen">not intersected yet</div>
<script>
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

/// Renders twice `browsers × tabs_per_browser` copies of `page` (under
/// `/<prefix>/<n>`) all at once on a pool of 2 × 4 tabs, twice (so on
/// reused tabs), and asserts every render holds `<what> text <path>` for
/// each of `texts`.
async fn every_render_of_a_full_pool_holds(prefix: &str, page: &str, texts: &[&str]) {
    let mut cfg = common::small_pool_config();
    cfg.browsers = 2;
    cfg.tabs_per_browser = 4;
    let capacity = cfg.browsers * cfg.tabs_per_browser;
    let paths: Vec<String> = (0..capacity * 2)
        .map(|i| format!("/{prefix}/{i}"))
        .collect();
    let routes = paths
        .iter()
        .map(|p| (p.as_str(), Route::html(page)))
        .collect();
    let site = Site::start(cfg, routes).await;
    for round in 0..2 {
        let pages = futures::future::join_all(paths.iter().map(|p| site.render(p.as_str()))).await;
        let incomplete: Vec<(&String, Vec<&str>)> = paths
            .iter()
            .zip(&pages)
            .map(|(path, page)| {
                let lacking = texts
                    .iter()
                    .copied()
                    .filter(|what| !page.html.contains(&format!("{what} text {path}")))
                    .collect::<Vec<_>>();
                (path, lacking)
            })
            .filter(|(_, lacking)| !lacking.is_empty())
            .collect();
        assert!(
            incomplete.is_empty(),
            "round {round}: {} of {} renders lacked texts: {incomplete:?}",
            incomplete.len(),
            paths.len()
        );
    }
    site.pool.shutdown().await;
}

/// Every render of `browsers × tabs_per_browser` at once gets animation
/// frames and intersection checks, as a render alone does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_concurrent_render_gets_frames_and_intersections() {
    every_render_of_a_full_pool_holds("frames", FRAMES_PAGE, &["frame", "intersection"]).await;
}

/// A page that asks for no frames (so its tab stays hidden) and is ready
/// (`prerenderReady`) at the end of a chain of 25 nested timers. Unthrottled
/// they take milliseconds, seconds on a starved machine; throttled to one
/// wake-up a second, as background tabs' timers are by default, they would
/// outlast the render's 20 s deadline and the render would fail. (Readiness
/// by network quiet cannot test this: 500 ms after `DOMContentLoaded` is no
/// bound for script work on a machine with every core busy.)
const TIMERS_PAGE: &str = r#"<!DOCTYPE html><html><head><title>timers</title></head><body>
<div id="timers">timers pending</div>
<script>
window.prerenderReady = false;
let depth = 0;
(function tick() {
  if (++depth < 25) { setTimeout(tick, 5); return; }
  document.getElementById('timers').textContent = 'timer text ' + location.pathname;
  window.prerenderReady = true;
})();
</script></body></html>"#;

/// Every render of `browsers × tabs_per_browser` at once runs its timers
/// unthrottled, hidden tab or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_concurrent_render_runs_its_timers() {
    every_render_of_a_full_pool_holds("timers", TIMERS_PAGE, &["timer"]).await;
}

/// Pages that need frames only later, or only in a visible tab: an
/// animation frame asked for from a timer, text written once the page is
/// visible (read, and waited for with `visibilitychange`), a ResizeObserver
/// callback and the end of a Web Animation. A tab gets frames when its page
/// first asks for them (`render::frames`), so each must still come.
const LATE_FRAMES_PAGE: &str = r#"<!DOCTYPE html><html><head><title>late frames</title></head><body>
<div id="late">no late frame</div>
<div id="visible">never visible</div>
<div id="resized">never resized</div>
<div id="animated">animation pending</div>
<script>
const here = location.pathname;
setTimeout(() => requestAnimationFrame(() => {
  document.getElementById('late').textContent = 'late frame text ' + here;
}), 150);
const shown = () => {
  if (document.visibilityState === 'visible') {
    document.getElementById('visible').textContent = 'visible text ' + here;
  }
};
shown();
document.addEventListener('visibilitychange', shown);
new ResizeObserver(() => {
  document.getElementById('resized').textContent = 'resize text ' + here;
}).observe(document.getElementById('resized'));
document.getElementById('animated')
  .animate([{ opacity: 0 }, { opacity: 1 }], { duration: 50 })
  .finished.then(() => {
    document.getElementById('animated').textContent = 'animation text ' + here;
  });
</script></body></html>"#;

/// Every render of twice `browsers × tabs_per_browser` pages that need
/// frames late or a visible tab, all at once, twice (so on reused tabs),
/// gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_that_ask_for_frames_late_or_wait_to_be_visible_get_them() {
    every_render_of_a_full_pool_holds(
        "late",
        LATE_FRAMES_PAGE,
        &["late frame", "visible", "resize", "animation"],
    )
    .await;
}

/// A product card whose text lives in an open shadow root, with a slotted
/// price; a closed root; a panel whose slotted light content is passed on
/// through a nested root's slot.
const SHADOW_PAGE: &str = r#"<!DOCTYPE html><html><head><title>shadow</title></head><body>
<product-card><span slot="price">EUR 12.50</span></product-card>
<closed-box></closed-box>
<outer-panel><em>slotted light text</em></outer-panel>
<script>
customElements.define('product-card', class extends HTMLElement {
  connectedCallback() {
    const root = this.attachShadow({ mode: 'open' });
    root.innerHTML = '<style>h2 { color: rgb(4, 5, 6); }</style><h2>Open card text</h2>'
      + '<p class="price-line">Price: <slot name="price">no price</slot></p><inner-badge></inner-badge>';
  }
});
customElements.define('inner-badge', class extends HTMLElement {
  connectedCallback() {
    this.attachShadow({ mode: 'open' }).innerHTML = '<b>Nested badge text</b>';
  }
});
customElements.define('closed-box', class extends HTMLElement {
  connectedCallback() {
    this.attachShadow({ mode: 'closed' }).innerHTML = '<p>Closed root text</p>';
  }
});
customElements.define('outer-panel', class extends HTMLElement {
  connectedCallback() {
    this.attachShadow({ mode: 'open' }).innerHTML = '<section><inner-frame><slot></slot></inner-frame></section>';
  }
});
customElements.define('inner-frame', class extends HTMLElement {
  connectedCallback() {
    this.attachShadow({ mode: 'open' }).innerHTML = '<div class="frame"><slot></slot></div>';
  }
});
</script></body></html>"#;

/// Rules only in the CSSOM: inserted into an empty `<style>` (as
/// styled-components and emotion do in production), adopted by the
/// document and by a shadow root; and a plain `<style>` left as written.
const CSSOM_PAGE: &str = r#"<!DOCTYPE html><html><head><title>cssom</title>
<style>/* written by hand */ .plain { color: red; }</style>
<style id="runtime"></style></head><body>
<h1 class="title">Styled by script</h1><styled-box></styled-box>
<script>
document.getElementById('runtime').sheet.insertRule('.title { color: rgb(1, 2, 3); }');
document.getElementById('runtime').sheet.insertRule('.sneaky::after { content: "</style><script>alert(1)<\/script>"; }');
const doc = new CSSStyleSheet();
doc.replaceSync('.adopted { margin-top: 7px; }');
document.adoptedStyleSheets = [doc];
customElements.define('styled-box', class extends HTMLElement {
  connectedCallback() {
    const root = this.attachShadow({ mode: 'open' });
    const sheet = new CSSStyleSheet();
    sheet.replaceSync('.inner { padding: 9px; }');
    root.adoptedStyleSheets = [sheet];
    root.innerHTML = '<p class="inner">Box text</p>';
  }
});
</script></body></html>"#;

const NOSCRIPT_PAGE: &str = r#"<!DOCTYPE html><html><head><title>app</title>
<noscript><link rel="stylesheet" href="/nojs.css"></noscript></head><body>
<noscript>You need to enable JavaScript to run this app.</noscript>
<div id="root"></div>
<script>document.getElementById('root').textContent = 'App content';</script>
</body></html>"#;

/// A page in windows-1251: "Привет, мир" (hello, world) in a legacy
/// encoding, declared by `<meta charset>` or by `http-equiv`.
fn windows_1251_page(declaration: &str) -> Vec<u8> {
    let text = format!(
        "<!DOCTYPE html><html><head>{declaration}<title>t</title></head>\
         <body><p id=\"greeting\">Привет, мир</p></body></html>"
    );
    text.chars()
        .map(|c| match c {
            // А..я are contiguous in both Unicode and windows-1251.
            'А'..='я' => (c as u32 - 0x410 + 0xC0) as u8,
            c if c.is_ascii() => c as u8,
            other => panic!("not in the test's windows-1251 table: {other}"),
        })
        .collect()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

fn fidelity_routes() -> Vec<(&'static str, Route)> {
    vec![
        ("/shadow", Route::html(SHADOW_PAGE)),
        ("/cssom", Route::html(CSSOM_PAGE)),
        ("/noscript", Route::html(NOSCRIPT_PAGE)),
        (
            "/cp1251/meta",
            Route::bytes(
                "text/html",
                windows_1251_page(r#"<meta charset="windows-1251">"#),
            ),
        ),
        (
            "/cp1251/http-equiv",
            Route::bytes(
                "text/html; charset=windows-1251",
                windows_1251_page(
                    r#"<meta http-equiv="Content-Type" content="text/html; charset=windows-1251">"#,
                ),
            ),
        ),
    ]
}

/// The texts of the shadow page ([`SHADOW_PAGE`]), each of which a
/// render shows exactly once however it writes the roots.
const SHADOW_TEXTS: &[&str] = &[
    "Open card text",
    "Nested badge text",
    "Closed root text",
    "slotted light text",
    "EUR 12.50",
];

/// Each of `texts` stands exactly once in `html`.
fn each_once(html: &str, texts: &[&str]) {
    for text in texts {
        assert_eq!(count(html, text), 1, "{text} once: {html}");
    }
}

/// `html` holds each fragment; a missing one is named with why it matters.
fn holds(html: &str, fragments: &[(&str, &str)]) {
    for (fragment, why) in fragments {
        assert!(
            html.contains(fragment),
            "{why}: {fragment} missing from {html}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_roots_are_written_as_declarative_shadow_dom() {
    let site = Site::start(common::small_pool_config(), fidelity_routes()).await;
    let html = site.render("/shadow").await.html;
    assert!(!html.contains("<script"), "{html}");
    each_once(&html, SHADOW_TEXTS);
    holds(
        &html,
        &[
            (
                r#"<product-card><template shadowrootmode="open"><style>h2 { color: rgb(4, 5, 6); }</style><h2>Open card text</h2>"#,
                "an open root with its style",
            ),
            (r#"<slot name="price">no price</slot>"#, "slots are kept"),
            (
                r#"<inner-badge><template shadowrootmode="open"><b>Nested badge text</b></template></inner-badge>"#,
                "a nested root",
            ),
            (
                r#"<closed-box><template shadowrootmode="closed"><p>Closed root text</p></template></closed-box>"#,
                "a closed root",
            ),
            // Light content stays where it is: a child of its host, after the root.
            (
                r#"</template><span slot="price">EUR 12.50</span></product-card>"#,
                "light content after its host's root",
            ),
            (
                r#"<div class="frame"><slot></slot></div></template><slot></slot></inner-frame></section></template><em>slotted light text</em></outer-panel>"#,
                "light content passed on through a nested root's slot",
            ),
        ],
    );
    site.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flattened_shadow_roots_put_the_composed_tree_in_the_light_dom() {
    let site = Site::start(common::small_pool_config(), fidelity_routes()).await;
    let mut job = site.job("/shadow");
    job.shadow_dom = ShadowDom::Flatten;
    let html = site.pool.render(job).await.expect("render").html;
    assert!(!html.contains("<template"), "{html}");
    assert!(!html.contains("<slot"), "{html}");
    assert!(!html.contains("<script"), "{html}");
    each_once(&html, SHADOW_TEXTS);
    holds(
        &html,
        &[
            (
                r#"<product-card><h2>Open card text</h2><p class="price-line">Price: <span slot="price">EUR 12.50</span></p><inner-badge><b>Nested badge text</b></inner-badge></product-card>"#,
                "slotted content where its slot shows it; shadow styles left out",
            ),
            (
                r#"<outer-panel><section><inner-frame><div class="frame"><em>slotted light text</em></div></inner-frame></section></outer-panel>"#,
                "content passed through two slots",
            ),
            (
                r#"<closed-box><p>Closed root text</p></closed-box>"#,
                "a closed root",
            ),
        ],
    );
    site.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn styles_made_by_script_are_written_as_style_text() {
    let site = Site::start(common::small_pool_config(), fidelity_routes()).await;
    let html = site.render("/cssom").await.html;
    holds(
        &html,
        &[
            (
                r#".title { color: rgb(1, 2, 3); }</style>"#,
                "inserted rules",
            ),
            (
                "<style>/* written by hand */ .plain { color: red; }</style>",
                "a style nobody changed is kept as written",
            ),
            (
                "<style>.adopted { margin-top: 7px; }</style></head>",
                "the document's adopted sheet",
            ),
            (
                r#"<styled-box><template shadowrootmode="open"><p class="inner">Box text</p><style>.inner { padding: 9px; }</style></template></styled-box>"#,
                "a shadow root's adopted sheet",
            ),
            (
                r#"<style id="runtime">.sneaky::after { content: "<\/style><script>alert(1)</script>"; }"#,
                "a rule cannot end its <style>",
            ),
        ],
    );
    assert!(!html.contains("</style><script"), "{html}");
    site.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noscript_goes_with_the_scripts_unless_kept() {
    let site = Site::start(common::small_pool_config(), fidelity_routes()).await;
    let html = site.render("/noscript").await.html;
    assert!(html.contains("App content"), "{html}");
    assert!(!html.contains("noscript"), "{html}");
    assert!(!html.contains("enable JavaScript"), "{html}");
    let mut job = site.job("/noscript");
    job.keep_noscript = true;
    let kept = site.pool.render(job).await.expect("render").html;
    assert!(
        kept.contains("<noscript>You need to enable JavaScript to run this app.</noscript>"),
        "{kept}"
    );
    assert!(!kept.contains("<script"), "{kept}");
    let mut job = site.job("/noscript");
    job.strip_scripts = false;
    let scripted = site.pool.render(job).await.expect("render").html;
    assert!(
        scripted.contains("<noscript>You need to enable JavaScript"),
        "a page that keeps its scripts keeps its noscript: {scripted}"
    );
    site.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_in_a_legacy_encoding_is_stored_declaring_utf8() {
    let site = Site::start(common::small_pool_config(), fidelity_routes()).await;
    let html = site.render("/cp1251/meta").await.html;
    assert!(html.contains("Привет, мир"), "{html}");
    assert!(html.contains(r#"<meta charset="utf-8">"#), "{html}");
    assert!(
        !html.to_ascii_lowercase().contains("windows-1251"),
        "{html}"
    );
    let html = site.render("/cp1251/http-equiv").await.html;
    assert!(html.contains("Привет, мир"), "{html}");
    assert!(
        html.contains(r#"<meta http-equiv="Content-Type" content="text/html; charset=utf-8">"#),
        "{html}"
    );
    assert!(
        !html.to_ascii_lowercase().contains("windows-1251"),
        "{html}"
    );
    // A page that declares nothing gets a declaration.
    let html = site.render("/noscript").await.html;
    assert!(html.contains(r#"<head><meta charset="utf-8">"#), "{html}");
    site.pool.shutdown().await;
}

/// Reviews loaded by an IntersectionObserver far below the first screen, a
/// lazy image, and an infinite list whose sentinel loads the next page each
/// time it shows.
const LAZY_PAGE: &str = r#"<!DOCTYPE html><html><head><title>lazy</title></head><body>
<h1>Lazy product</h1>
<div style="height: 3000px">Long description</div>
<img id="photo" loading="lazy" src="/img/photo.png" alt="photo" width="400" height="300">
<section id="reviews">Reviews load when scrolled into view</section>
<div id="list"></div><div id="sentinel" style="height: 1px"></div>
<script>
const reviews = document.getElementById('reviews');
new IntersectionObserver((entries, observer) => {
  if (!entries.some((e) => e.isIntersecting)) return;
  observer.disconnect();
  fetch('/api/reviews.json').then((r) => r.json()).then((d) => { reviews.textContent = d.reviews.join(' | '); });
}).observe(reviews);
let page = 1;
new IntersectionObserver((entries) => {
  if (!entries.some((e) => e.isIntersecting) || page >= 3) return;
  const next = ++page;
  fetch('/api/list.json?page=' + next).then((r) => r.json()).then((d) => {
    const item = document.createElement('div');
    item.style.height = '2000px';
    item.textContent = d.text + ' ' + next;
    document.getElementById('list').appendChild(item);
  });
}).observe(document.getElementById('sentinel'));
</script></body></html>"#;

/// A footer filled by a scroll handler (no IntersectionObserver).
const SCROLL_PAGE: &str = r#"<!DOCTYPE html><html><head><title>scroll</title></head><body>
<div style="height: 2500px">Top</div><footer id="footer">footer pending</footer>
<script>
const footer = document.getElementById('footer');
let loaded = false;
window.addEventListener('scroll', () => {
  if (loaded || footer.getBoundingClientRect().top > window.innerHeight) return;
  loaded = true;
  fetch('/api/footer.json').then((r) => r.json()).then((d) => { footer.textContent = d.text; });
});
</script></body></html>"#;

fn lazy_routes() -> Vec<(&'static str, Route)> {
    vec![
        ("/lazy", Route::html(LAZY_PAGE)),
        ("/scroll", Route::html(SCROLL_PAGE)),
        (
            "/api/reviews.json",
            Route::json(r#"{"reviews":["Great kettle","Boils fast"]}"#)
                .delay(std::time::Duration::from_millis(150)),
        ),
        ("/api/list.json", Route::json(r#"{"text":"list page"}"#)),
        (
            "/api/footer.json",
            Route::json(r#"{"text":"Footer loaded on scroll"}"#),
        ),
        ("/img/photo.png", Route::with_type("image/png", "png")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_that_loads_when_scrolled_into_view_is_loaded() {
    let site = Site::start(common::small_pool_config(), lazy_routes()).await;
    let page = site.render("/lazy").await;
    let html = &page.html;
    assert!(!page.snapshot_on_ready_timeout);
    assert!(
        html.contains(r#"<section id="reviews">Great kettle | Boils fast</section>"#),
        "{html}"
    );
    assert!(html.contains("list page 2"), "{html}");
    assert!(
        html.contains("list page 3"),
        "the list's next page, shown once the page grew: {html}"
    );
    assert!(
        html.contains(r#"<img id="photo" loading="lazy" src="/img/photo.png""#),
        "lazy images keep their src: {html}"
    );
    assert_eq!(site.origin.hits("/img/photo.png"), 0, "images stay blocked");
    let html = site.render("/scroll").await.html;
    assert!(html.contains("Footer loaded on scroll"), "{html}");
    let stats = site.pool.stats();
    assert_eq!(
        (stats.tall_layouts, stats.tall_layouts_capped),
        (2, 0),
        "{stats:?}"
    );
    site.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_laid_out_no_taller_than_max_render_height() {
    let site = Site::start(common::small_pool_config(), lazy_routes()).await;
    let mut job = site.job("/lazy");
    job.max_render_height = 2000;
    let html = site.pool.render(job).await.expect("render").html;
    assert!(
        html.contains("Reviews load when scrolled into view"),
        "3000 px down is beyond 2000: {html}"
    );
    let mut job = site.job("/lazy");
    job.max_render_height = 0;
    let html = site.pool.render(job).await.expect("render").html;
    assert!(
        html.contains("Reviews load when scrolled into view"),
        "{html}"
    );
    assert_eq!(site.origin.hits("/api/reviews.json"), 0);
    let stats = site.pool.stats();
    assert_eq!(
        (stats.tall_layouts, stats.tall_layouts_capped),
        (1, 1),
        "one layout, capped at 2000 px; none at 0: {stats:?}"
    );
    site.pool.shutdown().await;
}

/// Pages whose router moves them elsewhere during the render.
fn redirect_routes() -> Vec<(&'static str, Route)> {
    let page = |script: &str| {
        Route::html(&format!(
            "<!DOCTYPE html><html><head><title>r</title></head><body><div id=\"out\">old route</div>\
             <script>{script}</script></body></html>"
        ))
    };
    vec![
        (
            "/old-route",
            page("history.replaceState(null, '', '/new-route?tab=2#top'); document.getElementById('out').textContent = 'new route content';"),
        ),
        (
            "/pushed",
            page("fetch('/api/data.json').then(() => { history.pushState({}, '', '/pushed-to'); });"),
        ),
        ("/replaced", page("location.replace('/target');")),
        (
            "/assigned",
            page("setTimeout(() => { location.href = '/target?from=assigned'; }, 100);"),
        ),
        (
            "/same-path",
            page("history.replaceState(null, '', '/same-path?page=2#reviews'); document.getElementById('out').textContent = 'same path';"),
        ),
        (
            "/elsewhere",
            page("location.href = 'https://accounts.other.test/login';"),
        ),
        (
            "/reloads",
            page("location.reload(); setTimeout(() => { document.getElementById('out').textContent = 'after the reload attempt'; }, 300);"),
        ),
        ("/target", page("")),
        ("/api/data.json", Route::json("{}")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_moves_itself_is_answered_as_a_redirect() {
    let site = Site::start(common::small_pool_config(), redirect_routes()).await;
    let location = |page: &RenderedPage| {
        page.headers
            .iter()
            .find(|(n, _)| n == "Location")
            .map(|(_, v)| v.clone())
    };
    for (path, target) in [
        ("/old-route", "https://www.example.test/new-route?tab=2"),
        ("/pushed", "https://www.example.test/pushed-to"),
        ("/replaced", "https://www.example.test/target"),
        ("/assigned", "https://www.example.test/target?from=assigned"),
    ] {
        let page = site.render(path).await;
        assert_eq!(page.status, 302, "{path}: {}", page.html);
        assert_eq!(location(&page).as_deref(), Some(target), "{path}");
        assert!(page.html.contains(target), "{path}: {}", page.html);
        assert!(!page.html.contains("old route"), "{path}: {}", page.html);
    }
    assert_eq!(
        site.origin.hits("/target"),
        0,
        "the navigation itself is refused; the target renders when asked for"
    );
    // Moves within the path, or to another site, are no redirects.
    let page = site.render("/same-path").await;
    assert_eq!((page.status, location(&page)), (200, None));
    assert!(page.html.contains("same path"), "{}", page.html);
    let page = site.render("/elsewhere").await;
    assert_eq!((page.status, location(&page)), (200, None));
    assert!(page.html.contains("old route"), "{}", page.html);
    let page = site.render("/reloads").await;
    assert_eq!((page.status, location(&page)), (200, None));
    assert!(
        page.html.contains("after the reload attempt"),
        "a reload is refused and the page waited for as usual: {}",
        page.html
    );
    // Another status, or none.
    let mut job = site.job("/old-route");
    job.client_redirect_status = 301;
    let page = site.pool.render(job).await.expect("render");
    assert_eq!(page.status, 301);
    assert_eq!(site.pool.stats().client_redirects, 5);
    let mut job = site.job("/old-route");
    job.client_redirect_status = 0;
    let page = site.pool.render(job).await.expect("render");
    assert_eq!((page.status, location(&page)), (200, None));
    assert!(page.html.contains("new route content"), "{}", page.html);
    let mut job = site.job("/replaced");
    job.client_redirect_status = 0;
    let page = site.pool.render(job).await.expect("render");
    assert_eq!((page.status, location(&page)), (200, None));
    assert!(
        page.html.contains("old route"),
        "a page that left while it was parsed is snapshotted as it was: {}",
        page.html
    );
    site.pool.shutdown().await;
}

/// Through the real binary: a client-side redirect is answered as a
/// redirect and cached like any 3xx; the single site's snapshot flags (and
/// their environment variables) reach the renderer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_answers_and_caches_client_redirects_and_takes_snapshot_flags() {
    const HOST: &str = "www.example.test";
    let mut routes = redirect_routes();
    routes.extend(fidelity_routes());
    let origin = TestOrigin::start(routes).await;
    let mut proxy = ProxyArgs::small_pool(origin.url().as_str(), HOST)
        .quick_ready()
        .flag("--shadow-dom", "flatten")
        .start_with_env(&[
            ("PRERENDER_KEEP_NOSCRIPT", "true"),
            ("PRERENDER_CLIENT_REDIRECT_STATUS", "307"),
        ]);
    proxy.wait_until("/readyz", std::time::Duration::from_secs(30));
    for (round, cache) in ["MISS", "HIT"].iter().enumerate() {
        let reply = proxy.crawl(HOST, "/old-route").await;
        assert_eq!(
            reply.status.as_u16(),
            307,
            "round {round}: {}",
            reply.text()
        );
        assert_eq!(
            reply.header("location"),
            Some("https://www.example.test/new-route?tab=2"),
            "round {round}"
        );
        assert_eq!(
            reply.header("x-prerender-cache"),
            Some(*cache),
            "round {round}"
        );
    }
    assert_eq!(origin.hits("/old-route"), 1);
    let shadow = proxy.crawl(HOST, "/shadow").await.text();
    assert!(!shadow.contains("<template"), "{shadow}");
    assert!(
        shadow.contains(r#"<closed-box><p>Closed root text</p></closed-box>"#),
        "{shadow}"
    );
    let noscript = proxy.crawl(HOST, "/noscript").await.text();
    assert!(
        noscript.contains("<noscript>You need to enable JavaScript"),
        "{noscript}"
    );
    assert!(!noscript.contains("<script"), "{noscript}");
    proxy.stop();
}

/// `prerender-proxy render` takes the same snapshot options.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_render_command_takes_snapshot_options() {
    let origin = TestOrigin::start(fidelity_routes()).await;
    let origin_url = origin.url().to_string();
    let run = |args: Vec<&str>| {
        let mut all = vec!["render", "https://www.example.test/shadow", "--origin"];
        all.push(&origin_url);
        all.extend(args);
        let all: Vec<String> = all.into_iter().map(String::from).collect();
        async move {
            tokio::process::Command::new(common::proxy::BIN)
                .args(&all)
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(vec!["--shadow-dom", "flatten"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(r#"<closed-box><p>Closed root text</p></closed-box>"#),
        "{stdout}"
    );
    let out = run(vec![]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#"<template shadowrootmode="closed">"#),
        "{stdout}"
    );
    let out = run(vec!["--shadow-dom", "open"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shadow-dom"), "{stderr}");
}
