//! An in-process origin server for render tests: serves fixed routes
//! (JavaScript-built pages, scripts, JSON) and, optionally, the files of a
//! directory; counts requests by path and records request headers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// One fixed answer.
#[derive(Clone, Debug)]
pub struct Route {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delay: Duration,
}

impl Route {
    pub fn html(body: &str) -> Self {
        Self::with_type("text/html; charset=utf-8", body)
    }
    pub fn js(body: &str) -> Self {
        Self::with_type("application/javascript", body)
            .header("cache-control", "public, max-age=3600")
    }
    pub fn json(body: &str) -> Self {
        Self::with_type("application/json", body)
    }
    pub fn with_type(content_type: &str, body: &str) -> Self {
        Self::bytes(content_type, body.as_bytes().to_vec())
    }
    /// A body that need not be UTF-8 (a page in a legacy encoding).
    pub fn bytes(content_type: &str, body: Vec<u8>) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            body: Bytes::from(body),
            delay: Duration::ZERO,
        }
    }
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request as the origin saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HashMap<String, String>,
}

pub struct TestOrigin {
    pub addr: SocketAddr,
    /// `https` when the origin speaks TLS.
    scheme: &'static str,
    /// Connections accepted (TLS ones once their handshake completed).
    connections: Arc<std::sync::atomic::AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestOrigin {
    /// Serves `routes` (exact path match, query ignored); anything else is 404.
    pub async fn start(routes: Vec<(&str, Route)>) -> Self {
        Self::start_with_files(routes, None).await
    }

    /// Serves `routes`, then the files under `dir` (`/x/y.js` is
    /// `dir/x/y.js`; paths with `..` are 404).
    pub async fn start_with_files(routes: Vec<(&str, Route)>, dir: Option<PathBuf>) -> Self {
        Self::start_inner(routes, dir, None).await
    }

    /// Serves `routes` over TLS with the given server configuration.
    pub async fn start_tls(routes: Vec<(&str, Route)>, tls: Arc<rustls::ServerConfig>) -> Self {
        Self::start_inner(routes, None, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn start_inner(
        routes: Vec<(&str, Route)>,
        dir: Option<PathBuf>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        let dir = Arc::new(dir);
        let routes: Arc<HashMap<String, Route>> = Arc::new(
            routes
                .into_iter()
                .map(|(p, r)| (p.to_string(), r))
                .collect(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Default::default();
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let routes = routes.clone();
                let seen = seen2.clone();
                let dir = dir.clone();
                let tls = tls.clone();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let routes = routes.clone();
                        let seen = seen.clone();
                        let dir = dir.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(n, v)| {
                                    (n.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                                })
                                .collect();
                            seen.lock().unwrap().push(Seen {
                                path: path.clone(),
                                headers,
                            });
                            let route = routes
                                .get(&path)
                                .cloned()
                                .or_else(|| file_route(dir.as_ref().as_deref(), &path))
                                .unwrap_or_else(|| {
                                    Route::with_type("text/plain", "not found").status(404)
                                });
                            if !route.delay.is_zero() {
                                tokio::time::sleep(route.delay).await;
                            }
                            let mut resp = Response::builder().status(route.status);
                            for (n, v) in &route.headers {
                                resp = resp.header(n.as_str(), v.as_str());
                            }
                            Ok::<_, Infallible>(resp.body(Full::new(route.body)).unwrap())
                        }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            // A handshake the client gives up (an unknown CA) is no connection.
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            scheme,
            connections,
            seen,
            task,
        }
    }

    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("{}://{}/", self.scheme, self.addr)).unwrap()
    }

    /// The origin's URL with `host` in place of its address (the name its
    /// certificate carries).
    pub fn url_named(&self, host: &str) -> url::Url {
        url::Url::parse(&format!("{}://{host}:{}/", self.scheme, self.addr.port())).unwrap()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .count()
    }

    pub fn total_hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn requests(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    pub fn paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.path.clone())
            .collect()
    }
}

/// The file under `dir` for a request path, with a content type by extension.
fn file_route(dir: Option<&Path>, path: &str) -> Option<Route> {
    let relative = path.strip_prefix('/')?;
    if relative
        .split('/')
        .any(|part| part == ".." || part.is_empty())
    {
        return None;
    }
    let file = dir?.join(relative);
    let body = std::fs::read(&file).ok()?;
    let content_type = match file.extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs") => "application/javascript",
        Some("json") => "application/json",
        Some("css") => "text/css",
        Some("html") => "text/html; charset=utf-8",
        Some("yaml" | "yml") => "application/yaml",
        _ => "application/octet-stream",
    };
    Some(Route::bytes(content_type, body).header("cache-control", "public, max-age=3600"))
}
