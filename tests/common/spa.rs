//! A JavaScript-built single-page site served by a local origin: every
//! document is a "Loading…" shell; `app.js` fetches `/api/data.json`, waits
//! a little, then writes the page (title + path + host) and sets
//! `window.prerenderReady = true`. A few paths misbehave on purpose.

use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Request, Response};

use super::handler_origin::{full, Origin};

const SHELL: &str = r#"<!doctype html><html><head><title>Loading</title>
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
      if (path === '/missing') {
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

pub struct Spa {
    pub origin: Origin,
    /// What `/api/data.json` calls the page: change it to change the site.
    pub title: Arc<Mutex<String>>,
}

impl Spa {
    pub async fn start() -> Spa {
        let title = Arc::new(Mutex::new("Rendered by JavaScript".to_string()));
        let t = title.clone();
        let origin = Origin::start(move |req: Request<Incoming>| {
            let t = t.clone();
            async move {
                match req.uri().path() {
                    "/app.js" => Response::builder()
                        .header("content-type", "application/javascript")
                        .header("cache-control", "public, max-age=600")
                        .body(full(APP_JS))
                        .unwrap(),
                    "/api/data.json" => {
                        let title = t.lock().unwrap().clone();
                        Response::builder()
                            .header("content-type", "application/json")
                            .header("cache-control", "no-store")
                            .body(full(serde_json::json!({ "title": title }).to_string()))
                            .unwrap()
                    }
                    "/sitemap.xml" => Response::builder()
                        .header("content-type", "application/xml")
                        .body(full(SITEMAP))
                        .unwrap(),
                    "/boom" => Response::builder()
                        .status(500)
                        .header("content-type", "text/html")
                        .body(full("<h1>origin exploded</h1>"))
                        .unwrap(),
                    _ => Response::builder()
                        .header("content-type", "text/html; charset=utf-8")
                        .body(full(SHELL))
                        .unwrap(),
                }
            }
        })
        .await;
        Spa { origin, title }
    }

    pub fn url(&self) -> String {
        self.origin.url()
    }

    pub fn set_title(&self, title: &str) {
        *self.title.lock().unwrap() = title.to_string();
    }

    /// Document requests the origin saw for `path`.
    pub fn documents(&self, path: &str) -> usize {
        self.origin.hits(path)
    }
}
