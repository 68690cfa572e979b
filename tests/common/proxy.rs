//! The real `prerender-proxy` binary, started on free ports and stopped on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::free_port;

pub const BIN: &str = env!("CARGO_BIN_EXE_prerender-proxy");
pub const GOOGLEBOT: &str =
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
pub const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

pub struct ProxyProcess {
    pub child: Child,
    pub port: u16,
    pub admin_port: u16,
}

impl ProxyProcess {
    /// Starts `serve` with the given extra arguments and waits for /healthz.
    pub fn start(args: &[&str]) -> ProxyProcess {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> ProxyProcess {
        Self::start_with_stderr(args, env, Stdio::inherit())
    }

    /// Like [`ProxyProcess::start_with_env`], with the log lines (stderr)
    /// sent to `stderr`, e.g. a file a test reads afterwards.
    pub fn start_with_stderr(
        args: &[&str],
        env: &[(&str, &str)],
        stderr: impl Into<Stdio>,
    ) -> ProxyProcess {
        let port = free_port();
        let admin_port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin_port}"))
            .args(args)
            .env_remove("REDIS_URL")
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Its own process group: dropping the handle can then reach the
        // browsers it launched even if the proxy itself cannot stop them.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("start prerender-proxy");
        let mut p = ProxyProcess {
            child,
            port,
            admin_port,
        };
        p.wait_until("/healthz", Duration::from_secs(30));
        p
    }

    /// Starts `serve` and waits until `/readyz` says a browser is up.
    pub fn start_ready(args: &[&str]) -> ProxyProcess {
        let mut p = Self::start(args);
        p.wait_until("/readyz", Duration::from_secs(30));
        p
    }

    /// Starts `serve --config config` and waits until `/readyz` says a
    /// browser is up.
    pub fn start_with_config(config: &std::path::Path) -> ProxyProcess {
        Self::start_ready(&["--config", config.to_str().unwrap()])
    }

    /// `GET path` on `host` as Googlebot, asserting how it was served
    /// (`X-Prerender-Cache`: `MISS`, `HIT`, …).
    pub async fn crawl_served(&self, host: &str, path: &str, how: &str) -> Reply {
        let r = self.crawl(host, path).await;
        assert_eq!(
            r.header("x-prerender-cache"),
            Some(how),
            "{path}: {:?} {}",
            r.headers,
            r.text()
        );
        r
    }

    /// The admin API's entry for the page `https://{host}{path}`
    /// (`/api/v1/cache?url=…`).
    pub fn cache_entry_url(&self, host: &str, path: &str) -> String {
        let page = format!("https://{host}{path}")
            .replace(':', "%3A")
            .replace('/', "%2F");
        self.admin_url(&format!("/api/v1/cache?url={page}"))
    }

    /// `GET path` on `host` as Googlebot.
    pub async fn crawl(&self, host: &str, path: &str) -> Reply {
        get(
            &self.url(path),
            &[("host", host), ("user-agent", GOOGLEBOT)],
        )
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    /// Polls an admin path until it answers 200.
    pub fn wait_until(&mut self, path: &str, deadline: Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prerender-proxy exited early: {status}");
            }
            if raw_status(self.admin_port, path) == Some(200) {
                return;
            }
            assert!(
                start.elapsed() < deadline,
                "{path} not ready within {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait (bounded) for the graceful shutdown that closes the
    /// browsers, then SIGKILL whatever is left of the process group.
    pub fn stop(&mut self) {
        let pid = self.child.id() as i32;
        if self.child.try_wait().ok().flatten().is_none() {
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command line of one test proxy: a single site (`--origin`,
/// `--domain`) on a small pool — one browser with two tabs, as much as a
/// shared 2-core machine takes — plus whatever a test adds.
#[derive(Debug, Clone)]
pub struct ProxyArgs {
    args: Vec<String>,
}

impl ProxyArgs {
    /// `--origin origin --domain domain --browsers 1 --tabs-per-browser 2`.
    pub fn small_pool(origin: &str, domain: &str) -> ProxyArgs {
        Self::any_host(origin).flag("--domain", domain)
    }

    /// [`ProxyArgs::small_pool`] without `--domain`: the single site
    /// answers any host.
    pub fn any_host(origin: &str) -> ProxyArgs {
        ProxyArgs { args: Vec::new() }
            .flag("--origin", origin)
            .flag("--browsers", "1")
            .flag("--tabs-per-browser", "2")
    }

    /// Sets `name` to `value`, replacing an earlier value of the same flag
    /// (so `--tabs-per-browser` can be changed); repeatable flags such as
    /// `--site` are added with [`ProxyArgs::arg`].
    pub fn flag(mut self, name: &str, value: &str) -> ProxyArgs {
        if let Some(i) = self.args.iter().position(|a| a == name) {
            self.args[i + 1] = value.to_string();
        } else {
            self.args.extend([name.to_string(), value.to_string()]);
        }
        self
    }

    /// Adds arguments as they are.
    pub fn arg(mut self, args: &[&str]) -> ProxyArgs {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// `--ready-timeout 5`: a browser that cannot start fails the test in
    /// seconds rather than the default's minute.
    pub fn quick_ready(self) -> ProxyArgs {
        self.flag("--ready-timeout", "5")
    }

    pub fn as_strs(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    /// [`ProxyProcess::start`] with these arguments.
    pub fn start(&self) -> ProxyProcess {
        ProxyProcess::start(&self.as_strs())
    }

    /// [`ProxyProcess::start_ready`] with these arguments.
    pub fn start_ready(&self) -> ProxyProcess {
        ProxyProcess::start_ready(&self.as_strs())
    }

    /// [`ProxyProcess::start_with_env`] with these arguments.
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> ProxyProcess {
        ProxyProcess::start_with_env(&self.as_strs(), env)
    }

    /// [`ProxyProcess::start_with_stderr`] with these arguments.
    pub fn start_with_stderr(
        &self,
        env: &[(&str, &str)],
        stderr: impl Into<Stdio>,
    ) -> ProxyProcess {
        ProxyProcess::start_with_stderr(&self.as_strs(), env, stderr)
    }
}

/// The status of `GET path` on a loopback port, over a raw socket.
/// `toml` in a temporary file, removed when the path is dropped.
pub fn config_file(toml: &str) -> tempfile::TempPath {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), toml).unwrap();
    f.into_temp_path()
}

/// A config file with a small pool (one browser, two tabs, a 5 s ready
/// timeout), on Redis at `redis` when given, and one site: `domain` on
/// `origin` with the settings in `site` (tables may follow them).
pub fn one_site_config(
    domain: &str,
    origin: &str,
    redis: Option<&str>,
    site: &str,
) -> tempfile::TempPath {
    let redis = redis
        .map(|url| format!("redis = \"{url}\""))
        .unwrap_or_default();
    config_file(&format!(
        r#"
        browsers = 1
        tabs_per_browser = 2
        ready_timeout = 5
        {redis}
        [[sites]]
        domain = "{domain}"
        origin = "{origin}"
        {site}
        "#
    ))
}

/// `check-config` on a file holding `toml`: whether it passed, its stdout
/// and its stderr.
pub fn check_config(toml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn raw_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    line.split(' ').nth(1)?.parse().ok()
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A collected HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request (HTTP/1.1) and collects the answer.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(60), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("read body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send("GET", url, headers, Bytes::new()).await
}
