//! A JavaScript-built single-page site served by a local origin: every
//! document is a "Loading…" shell; `app.js` fetches `/api/data.json`, waits
//! a little, then writes the page (title + path + host) and sets
//! `window.prerenderReady = true`. A few paths misbehave on purpose.
//!
//! The shell document itself can change too ([`Spa::set_shell_marker`])
//! and can carry an `ETag` honoured by `If-None-Match`
//! ([`Spa::set_validators`]); every shell request is logged with its
//! time and whether it was conditional.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};

use hyper::body::Incoming;
use hyper::{Request, Response};

use super::handler_origin::{full, script, uncached_json, Origin};

/// The shell document: a "Loading…" page that loads `/app.js`.
pub const SHELL: &str = r#"<!doctype html><html><head><title>Loading</title>
<script>window.prerenderReady = false;</script>
<script src="/app.js"></script></head><body><div id="app">Loading…</div></body></html>"#;

const APP_JS: &str = r#"
(function () {
  var path = location.pathname;
  if (path === '/hang') { return; }
  fetch('/api/data.json').then(function (r) { return r.json(); }).then(function (d) {
    setTimeout(function () {
      var app = document.getElementById('app');
      var h = document.createElement('h1');
      h.id = 'title';
      h.textContent = d.title + ' at ' + path;
      app.textContent = '';
      app.appendChild(h);
      var p = document.createElement('p');
      p.id = 'host';
      p.textContent = 'host=' + location.host;
      app.appendChild(p);
      var ld = document.createElement('script');
      ld.type = 'application/ld+json';
      ld.textContent = '{"@type":"Product"}';
      document.head.appendChild(ld);
      if (path === '/missing' || path.indexOf('/missing/') === 0) {
        var m = document.createElement('meta');
        m.name = 'prerender-status-code';
        m.content = '404';
        document.head.appendChild(m);
      }
      document.title = d.title;
      app.appendChild(document.createTextNode(' ' + 'x'.repeat(4000)));
      window.prerenderReady = true;
    }, 50);
  });
})();
"#;

/// Lists three pages of www.example.test and one foreign page.
const SITEMAP: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
<url><loc>https://www.example.test/from-sitemap/1</loc></url>
<url><loc>https://www.example.test/from-sitemap/2</loc></url>
<url><loc>https://www.example.test/from-sitemap/3</loc></url>
<url><loc>https://elsewhere.test/not-ours</loc></url>
</urlset>"#;

/// One request for a shell document.
#[derive(Debug, Clone, Copy)]
pub struct DocumentRequest {
    pub at: Instant,
    /// It carried `If-None-Match` or `If-Modified-Since`.
    pub conditional: bool,
}

/// What the shell documents look like; shared with the origin's handler.
#[derive(Default)]
struct Shell {
    /// Shown in a `<footer id="edition">` outside the app's element.
    marker: Mutex<Option<String>>,
    /// Send an `ETag` (and answer a matching `If-None-Match` with 304).
    validators: AtomicBool,
    log: Mutex<HashMap<String, Vec<DocumentRequest>>>,
}

impl Shell {
    fn html(&self) -> String {
        match self.marker.lock().unwrap().as_deref() {
            None => SHELL.to_string(),
            Some(m) => SHELL.replace(
                "</body>",
                &format!("<footer id=\"edition\">{m}</footer></body>"),
            ),
        }
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<super::handler_origin::OriginBody> {
        let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
        let conditional = h("if-none-match").is_some() || h("if-modified-since").is_some();
        self.log
            .lock()
            .unwrap()
            .entry(req.uri().path().to_string())
            .or_default()
            .push(DocumentRequest {
                at: Instant::now(),
                conditional,
            });
        let html = self.html();
        let resp = Response::builder().header("content-type", "text/html; charset=utf-8");
        if !self.validators.load(Ordering::SeqCst) {
            return resp.body(full(html)).unwrap();
        }
        let etag = format!(
            "\"{}\"",
            &hex::encode(Sha256::digest(html.as_bytes()))[..16]
        );
        // no-store: browsers never revalidate it themselves; only pollers are conditional.
        let resp = resp
            .header("etag", &etag)
            .header("cache-control", "no-store");
        if h("if-none-match") == Some(etag.as_str()) {
            resp.status(304).body(full("")).unwrap()
        } else {
            resp.body(full(html)).unwrap()
        }
    }
}

pub struct Spa {
    pub origin: Origin,
    /// Milliseconds `/api/data.json` waits before answering: slows renders.
    data_delay_ms: Arc<std::sync::atomic::AtomicU64>,
    /// What `/api/data.json` calls the page: change it to change the site.
    pub title: Arc<Mutex<String>>,
    shell: Arc<Shell>,
}

impl Spa {
    pub async fn start() -> Spa {
        let title = Arc::new(Mutex::new("Rendered by JavaScript".to_string()));
        let t = title.clone();
        let shell: Arc<Shell> = Arc::default();
        let sh = shell.clone();
        let data_delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let delay = data_delay_ms.clone();
        let origin = Origin::start(move |req: Request<Incoming>| {
            let t = t.clone();
            let sh = sh.clone();
            let delay = delay.load(Ordering::SeqCst);
            async move {
                if delay > 0 && req.uri().path() == "/api/data.json" {
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                }
                match req.uri().path() {
                    "/app.js" => script(APP_JS),
                    "/api/data.json" => {
                        let title = t.lock().unwrap().clone();
                        uncached_json(serde_json::json!({ "title": title }).to_string())
                    }
                    "/sitemap.xml" => Response::builder()
                        .header("content-type", "application/xml")
                        .body(full(SITEMAP))
                        .unwrap(),
                    "/tiny" => Response::builder()
                        .header("content-type", "text/html")
                        .body(full("<!doctype html><title>tiny</title><p>a tiny page</p>"))
                        .unwrap(),
                    "/boom" => Response::builder()
                        .status(500)
                        .header("content-type", "text/html")
                        .body(full("<h1>origin exploded</h1>"))
                        .unwrap(),
                    _ => sh.respond(&req),
                }
            }
        })
        .await;
        Spa {
            origin,
            data_delay_ms,
            title,
            shell,
        }
    }

    pub fn url(&self) -> String {
        self.origin.url()
    }

    /// Makes every render take at least `delay` (the page waits for its data).
    pub fn set_data_delay(&self, delay: std::time::Duration) {
        self.data_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn set_title(&self, title: &str) {
        *self.title.lock().unwrap() = title.to_string();
    }

    /// Document requests the origin saw for `path`.
    pub fn documents(&self, path: &str) -> usize {
        self.origin.hits(path)
    }
}

impl Spa {
    /// Changes the shell document itself (not just what the script
    /// writes): `marker` appears in a `<footer id="edition">`.
    pub fn set_shell_marker(&self, marker: &str) {
        *self.shell.marker.lock().unwrap() = Some(marker.to_string());
    }

    /// Shell documents carry an `ETag` (a hash of their bytes) and answer a
    /// matching `If-None-Match` with 304.
    pub fn set_validators(&self, on: bool) {
        self.shell.validators.store(on, Ordering::SeqCst);
    }

    /// Every shell request for `path`, in order.
    pub fn document_requests(&self, path: &str) -> Vec<DocumentRequest> {
        self.shell
            .log
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Shell requests for `path` with `If-None-Match` / `If-Modified-Since`.
    pub fn conditional_documents(&self, path: &str) -> usize {
        self.document_requests(path)
            .iter()
            .filter(|r| r.conditional)
            .count()
    }

    /// Shell requests for `path` without conditional headers (renders,
    /// passthrough, first polls).
    pub fn unconditional_documents(&self, path: &str) -> usize {
        self.document_requests(path)
            .iter()
            .filter(|r| !r.conditional)
            .count()
    }
}
