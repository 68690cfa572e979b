//! A tiny static origin for trying prerender-proxy locally: serves a folder
//! with a single-page-app fallback, like `try_files $uri /index.html`.
//!
//! ```text
//! cargo run --release --example origin -- --dir examples/site --listen 127.0.0.1:8080
//! ```
//!
//! - an existing file is served with a Content-Type from its extension;
//! - a missing `/api/…` path, or a missing path whose last segment has an
//!   extension (`/app.js`, `/logo.png`), is a 404;
//! - any other path gets `index.html`, so the app's router decides.
//!
//! Paths are percent-decoded and must stay inside the folder: `..`, NUL and
//! backslashes are refused with 400.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const DEFAULT_DIR: &str = "examples/site";
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Files larger than this are refused: the example serves small sites only.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

const USAGE: &str = "usage: origin [--dir DIR] [--listen ADDR]
  --dir DIR      folder to serve (default examples/site)
  --listen ADDR  address to listen on (default 127.0.0.1:8080)";

struct Args {
    dir: PathBuf,
    listen: SocketAddr,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut dir = PathBuf::from(DEFAULT_DIR);
    let mut listen = DEFAULT_LISTEN.to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (arg, None),
        };
        let mut value = || -> anyhow::Result<String> {
            match inline.clone() {
                Some(value) => Ok(value),
                None => args
                    .next()
                    .with_context(|| format!("{name} needs a value\n{USAGE}")),
            }
        };
        match name.as_str() {
            "--dir" => dir = PathBuf::from(value()?),
            "--listen" => listen = value()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("--dir {}: cannot open", dir.display()))?;
    if !dir.join("index.html").is_file() {
        bail!("--dir {}: has no index.html", dir.display());
    }
    let listen = listen
        .parse()
        .with_context(|| format!("--listen {listen:?}: not an address like 127.0.0.1:8080"))?;
    Ok(Args { dir, listen })
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// HTML must be revalidated (it names the current bundle); assets may be
/// cached for a while, which also lets a renderer keep them between renders.
fn cache_control(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") | Some("htm") => "no-cache",
        _ => "public, max-age=300",
    }
}

/// What a request path maps to.
#[derive(Debug, PartialEq)]
enum Lookup {
    File(PathBuf),
    NotFound,
    BadPath,
}

/// Turns a URL path into a file below `root`, or decides it is a 404 or a
/// bad path. Pure (only `is_file` touches the disk) so it is easy to reason about.
fn lookup(root: &Path, url_path: &str, is_file: impl Fn(&Path) -> bool) -> Lookup {
    let decoded = match percent_encoding::percent_decode_str(url_path).decode_utf8() {
        Ok(decoded) => decoded,
        Err(_) => return Lookup::BadPath,
    };
    if decoded.contains('\0') || decoded.contains('\\') {
        return Lookup::BadPath;
    }
    let relative = decoded.trim_start_matches('/');
    let mut file = root.to_path_buf();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => file.push(part),
            Component::CurDir => {}
            // `..`, a root or a prefix would leave the folder.
            _ => return Lookup::BadPath,
        }
    }
    if relative.is_empty() {
        file.push("index.html");
    }
    if is_file(&file) {
        return Lookup::File(file);
    }
    let last_segment = relative.rsplit('/').next().unwrap_or("");
    if decoded.starts_with("/api/") || last_segment.contains('.') {
        return Lookup::NotFound;
    }
    Lookup::File(root.join("index.html"))
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn serve_file(path: &Path, head: bool) -> Response<Full<Bytes>> {
    let metadata = match tokio::fs::metadata(path).await {
        Ok(metadata) => metadata,
        Err(_) => return plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    if metadata.len() > MAX_FILE_BYTES {
        return plain(
            StatusCode::FORBIDDEN,
            "file too large for this example server\n",
        );
    }
    let body = match tokio::fs::read(path).await {
        Ok(body) => body,
        Err(_) => return plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    let length = body.len();
    let mut response = Response::new(Full::new(if head {
        Bytes::new()
    } else {
        Bytes::from(body)
    }));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type(path)),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static(cache_control(path)),
    );
    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(length));
    response
}

async fn handle(root: Arc<PathBuf>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let head = request.method() == Method::HEAD;
    let response = if request.method() != Method::GET && !head {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        response
    } else {
        match lookup(&root, request.uri().path(), |p| p.is_file()) {
            Lookup::File(path) => serve_file(&path, head).await,
            Lookup::NotFound => plain(StatusCode::NOT_FOUND, "not found\n"),
            Lookup::BadPath => plain(StatusCode::BAD_REQUEST, "bad path\n"),
        }
    };
    // The renderer marks its own requests; showing that makes the log a
    // simple way to watch a render happen.
    let from_renderer = request.headers().contains_key("x-prerender");
    eprintln!(
        "{} {} {}{}",
        request.method(),
        request.uri(),
        response.status().as_u16(),
        if from_renderer { " (renderer)" } else { "" }
    );
    response
}

#[tokio::main]
async fn main() {
    // One clear line instead of anyhow's debug output (and backtrace).
    if let Err(err) = run().await {
        eprintln!("origin: {err:#}");
        std::process::exit(2);
    }
}

async fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!(
        "origin: serving {} on http://{}",
        args.dir.display(),
        listener.local_addr()?
    );
    let root = Arc::new(args.dir);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: keep serving.
                    eprintln!("origin: accept failed: {err}");
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let root = Arc::clone(&root);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let root = Arc::clone(&root);
                async move { Ok::<_, Infallible>(handle(root, request).await) }
            });
            // Client disconnects are routine; nothing to report.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        PathBuf::from("/srv/site")
    }

    fn existing(files: &'static [&'static str]) -> impl Fn(&Path) -> bool {
        move |p: &Path| files.iter().any(|f| root().join(f) == p)
    }

    #[test]
    fn existing_files_are_served() {
        let is_file = existing(&["app.js", "api/site.json", "index.html"]);
        assert_eq!(
            lookup(&root(), "/app.js", &is_file),
            Lookup::File(root().join("app.js"))
        );
        assert_eq!(
            lookup(&root(), "/api/site.json", &is_file),
            Lookup::File(root().join("api/site.json"))
        );
        assert_eq!(
            lookup(&root(), "/", &is_file),
            Lookup::File(root().join("index.html"))
        );
    }

    #[test]
    fn app_routes_fall_back_to_index() {
        let is_file = existing(&["index.html"]);
        for path in ["/about", "/products/1", "/products/1/", "/no/such/page"] {
            assert_eq!(
                lookup(&root(), path, &is_file),
                Lookup::File(root().join("index.html")),
                "{path}"
            );
        }
    }

    #[test]
    fn missing_api_and_asset_paths_are_404() {
        let is_file = existing(&["index.html"]);
        for path in [
            "/api/product-9.json",
            "/api/anything",
            "/missing.js",
            "/img/logo.png",
        ] {
            assert_eq!(lookup(&root(), path, &is_file), Lookup::NotFound, "{path}");
        }
    }

    #[test]
    fn escapes_are_refused() {
        let is_file = |_: &Path| true;
        for path in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/a%00b",
            "/a%5c..%5cb",
            "/%ff",
        ] {
            assert_eq!(lookup(&root(), path, &is_file), Lookup::BadPath, "{path}");
        }
    }
}
