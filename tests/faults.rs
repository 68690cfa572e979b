//! Faults under load, end to end: the real binary, real Chromium, a real
//! redis-server and local JavaScript origins.
//!
//! Covered elsewhere and not repeated here: Redis stopped and restarted
//! (`bot_path.rs`), a browser killed inside the pool and renders that never
//! finish (`render_lifecycle.rs`), malformed requests and slowloris
//! (`hostile_requests.rs`), SIGTERM with a slow human request
//! (`passthrough.rs`).
//!
//! Every deadline here is generous: it catches hangs, it does not measure
//! speed.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::handler_origin::{full, script, uncached_json, Origin};
use common::proxy::{get, ProxyArgs, ProxyProcess, Reply, FIREFOX, GOOGLEBOT};
use common::redis::RedisServer;
use common::spa::{Spa, SHELL as SLOW_SHELL};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response};

const HOST: &str = "www.example.test";
/// What a finished render of `path` shows: written by the page's script.
const RENDERED: &str = "Rendered by JavaScript at ";
/// What the origin's shell document shows before its script has run.
const SHELL: &str = "Loading…";
/// Upper bound for any one bot answer: far above render_timeout + retries.
const ANSWER_DEADLINE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// A JavaScript site whose data request takes a configurable time.

const SLOW_APP_JS: &str = r#"
(function () {
  var path = location.pathname;
  fetch('/api/data.json?path=' + encodeURIComponent(path))
    .then(function (r) { return r.json(); })
    .then(function (d) {
      var app = document.getElementById('app');
      var h = document.createElement('h1');
      h.id = 'title';
      h.textContent = d.title + ' at ' + path;
      app.textContent = '';
      app.appendChild(h);
      window.prerenderReady = true;
    });
})();
"#;

/// Every document is a "Loading…" shell; `app.js` asks `/api/data.json`,
/// which answers after `delay`, and only then writes the page. Renders are
/// therefore in flight for at least `delay`, and the origin knows which
/// pages have reached that point.
struct SlowSite {
    origin: Origin,
    delay_ms: Arc<AtomicU64>,
    /// Pages whose script has asked for its data (render under way).
    data_requests: Arc<Mutex<Vec<String>>>,
}

impl SlowSite {
    async fn start(delay: Duration) -> SlowSite {
        let delay_ms = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let data_requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (d, log) = (delay_ms.clone(), data_requests.clone());
        let origin = Origin::start(move |req: Request<Incoming>| {
            let (d, log) = (d.clone(), log.clone());
            async move {
                match req.uri().path() {
                    "/app.js" => script(SLOW_APP_JS),
                    "/api/data.json" => {
                        let page = req
                            .uri()
                            .query()
                            .and_then(|q| q.strip_prefix("path="))
                            .map(|p| p.replace("%2F", "/"))
                            .unwrap_or_default();
                        log.lock().unwrap().push(page);
                        tokio::time::sleep(Duration::from_millis(d.load(Ordering::SeqCst))).await;
                        uncached_json(r#"{"title":"Rendered by JavaScript"}"#)
                    }
                    _ => Response::builder()
                        .header("content-type", "text/html; charset=utf-8")
                        .body(full(SLOW_SHELL))
                        .unwrap(),
                }
            }
        })
        .await;
        SlowSite {
            origin,
            delay_ms,
            data_requests,
        }
    }

    fn url(&self) -> String {
        self.origin.url()
    }

    fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Pages whose render has reached the data request.
    fn rendering(&self) -> Vec<String> {
        self.data_requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` renders have reached the data request.
    async fn wait_for_renders(&self, n: usize, deadline: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let seen = self.rendering();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                start.elapsed() < deadline,
                "only {} of {n} renders started within {deadline:?}: {seen:?}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// How a bot was answered.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// `X-Prerender-Cache: MISS` with the fully rendered page.
    Rendered,
    /// `X-Prerender-Cache: ERROR`: the origin's own answer, and the reason.
    FailOpen { status: u16, reason: String },
}

/// Classifies a bot's answer for `path`, or says why it is neither a
/// finished render nor a proper fail-open answer.
fn classify(reply: &Reply, path: &str) -> Result<Answer, String> {
    let text = reply.text();
    match reply.header("x-prerender-cache") {
        Some("MISS") | Some("HIT") => {
            if reply.status == 200
                && text.contains(&format!("{RENDERED}{path}<"))
                && !text.contains(SHELL)
            {
                Ok(Answer::Rendered)
            } else {
                Err(format!(
                    "{path}: a {} {:?} that is not the rendered page: {text}",
                    reply.status,
                    reply.header("x-prerender-cache")
                ))
            }
        }
        Some("ERROR") => {
            let reason = reply.header("x-prerender-error").unwrap_or("").to_string();
            if reason.is_empty() {
                return Err(format!("{path}: ERROR without X-Prerender-Error"));
            }
            if text.contains(RENDERED) {
                return Err(format!("{path}: ERROR answer carries rendered content"));
            }
            Ok(Answer::FailOpen {
                status: reply.status.as_u16(),
                reason,
            })
        }
        other => Err(format!(
            "{path}: {} with X-Prerender-Cache {other:?}: {text}",
            reply.status
        )),
    }
}

/// The answer to each of `paths` (the crawls of [`spawn_crawls`]), each
/// one a render or the origin's own 200 page (fail-open), never anything
/// else.
async fn answers_of(
    paths: &[String],
    requests: Vec<tokio::task::JoinHandle<Result<Reply, String>>>,
) -> BTreeMap<String, Answer> {
    let mut answers = BTreeMap::new();
    for (path, request) in paths.iter().zip(requests) {
        let reply = request.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
        let answer = classify(&reply, path).unwrap_or_else(|e| panic!("{e}"));
        if let Answer::FailOpen { status, .. } = &answer {
            assert_eq!(*status, 200, "{path}: fail-open is the origin's own 200");
            assert!(reply.text().contains(SHELL), "{path}: the origin's shell");
        }
        answers.insert(path.clone(), answer);
    }
    answers
}

/// One crawler request per path, all at once, each bounded by
/// `ANSWER_DEADLINE`.
fn spawn_crawls(
    port: u16,
    paths: &[String],
) -> Vec<tokio::task::JoinHandle<Result<Reply, String>>> {
    paths
        .iter()
        .map(|path| {
            let path = path.clone();
            tokio::spawn(async move { crawl_within(port, &path, ANSWER_DEADLINE).await })
        })
        .collect()
}

/// A bot's `GET` with a deadline that turns a hang into a failure.
async fn crawl_within(port: u16, path: &str, deadline: Duration) -> Result<Reply, String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    tokio::time::timeout(
        deadline,
        get(&url, &[("host", HOST), ("user-agent", GOOGLEBOT)]),
    )
    .await
    .map_err(|_| format!("{path}: no answer within {deadline:?}"))
}

// ---------------------------------------------------------------------------
// Redis and process inspection.

/// Every stored page: `render:<domain>:<path>` → HTML.
fn stored_pages(redis: &RedisServer) -> BTreeMap<String, String> {
    let mut conn = redis.raw();
    let keys: Vec<String> = redis::cmd("KEYS").arg("render:*").query(&mut conn).unwrap();
    keys.into_iter()
        .filter_map(|k| {
            let html: Option<String> = redis::cmd("GET").arg(&k).query(&mut conn).ok()?;
            html.map(|h| (k, h))
        })
        .collect()
}

/// Every page in the store is a finished render of its own path, and has
/// its metadata.
fn assert_only_finished_renders_stored(redis: &RedisServer) -> BTreeMap<String, String> {
    let pages = stored_pages(redis);
    let mut conn = redis.raw();
    for (key, html) in &pages {
        let path = key
            .strip_prefix(&format!("render:{HOST}:"))
            .unwrap_or_else(|| panic!("unexpected key {key}"));
        assert!(
            html.contains(&format!("{RENDERED}{path}<")) && !html.contains(SHELL),
            "{key} holds a page that is not a finished render: {html}"
        );
        let status: Option<String> = redis::cmd("HGET")
            .arg(format!("render-meta:{HOST}:{path}"))
            .arg("status")
            .query(&mut conn)
            .unwrap();
        assert_eq!(status.as_deref(), Some("200"), "{key} metadata");
    }
    pages
}

/// A private temporary directory for one proxy: its browsers' profiles go
/// there, so the directory's path on a command line identifies them.
fn browser_tmpdir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    (dir, path)
}

/// One figure of the admin listener's `/metrics`, summed over its labels.
async fn metric(proxy: &ProxyProcess, name: &str) -> f64 {
    let text = get(&proxy.admin_url("/metrics"), &[]).await.text();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `VmRSS` of one process, in bytes.
fn vm_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kb * 1024
}

/// Connections on local `port` (IPv4) that process `pid` has accepted and
/// still holds: its descriptors that are established sockets on that port.
fn accepted_connections(pid: u32, port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X}");
    let inodes: std::collections::HashSet<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 01 = ESTABLISHED, inode.
            (fields.len() > 9 && fields[1].ends_with(&local) && fields[3] == "01")
                .then(|| fields[9].to_string())
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy().into_owned();
                    target
                        .strip_prefix("socket:[")
                        .and_then(|rest| rest.strip_suffix(']'))
                        .map(str::to_string)
                })
                .filter(|inode| inodes.contains(inode))
                .count()
        })
        .unwrap_or(0)
}

/// One browser with `tabs` tabs, renders bounded at 20 s.
fn small_pool(origin: &str, tabs: &str) -> ProxyArgs {
    ProxyArgs::small_pool(origin, HOST)
        .flag("--tabs-per-browser", tabs)
        .quick_ready()
        .flag("--render-timeout", "20")
}

/// Started with `env`, and ready (a browser up) within a minute.
fn start_ready(args: &ProxyArgs, env: &[(&str, &str)]) -> ProxyProcess {
    let mut proxy = args.start_with_env(env);
    proxy.wait_until("/readyz", Duration::from_secs(60));
    proxy
}

// ---------------------------------------------------------------------------
// 1. Chromium killed under load.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_killed_under_load_fails_open_recovers_and_stores_nothing_broken() {
    let site = SlowSite::start(Duration::from_millis(1500)).await;
    let redis = RedisServer::start();
    let (_tmp, marker) = browser_tmpdir();
    let args = small_pool(&site.url(), "4").flag("--redis", &redis.url());
    let proxy = start_ready(&args, &[("TMPDIR", marker.as_str())]);

    let paths: Vec<String> = (0..8).map(|i| format!("/under-load/{i}")).collect();
    let requests = spawn_crawls(proxy.port, &paths);

    // Kill the browser while renders are inside it (their script is
    // waiting for its data).
    let in_flight = site.wait_for_renders(2, Duration::from_secs(60)).await;
    let victims = common::processes_with(&marker);
    assert!(
        !victims.is_empty(),
        "no browser process found under {marker}"
    );
    for &pid in &victims {
        // SAFETY: kill(2) on a pid we just read; no memory effects.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }

    let answers = answers_of(&paths, requests).await;
    eprintln!("in flight at the kill: {in_flight:?}; answers: {answers:?}");

    let mut proxy = proxy;
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "the proxy died with its browser"
    );
    assert!(
        metric(&proxy, "prerender_browser_crashes_total").await >= 1.0,
        "the crash was not noticed"
    );

    // The pool recovers: ready, a browser alive again, and a new page renders.
    proxy.wait_until("/readyz", Duration::from_secs(30));
    let start = Instant::now();
    while metric(&proxy, "prerender_browsers_alive").await < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no browser relaunched"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    site.set_delay(Duration::from_millis(50));
    let after = crawl_within(proxy.port, "/after-the-crash", ANSWER_DEADLINE)
        .await
        .unwrap();
    assert_eq!(
        classify(&after, "/after-the-crash"),
        Ok(Answer::Rendered),
        "{:?}",
        after.header("x-prerender-error")
    );

    // Nothing errored or half-rendered is stored; every rendered answer is.
    let stored = assert_only_finished_renders_stored(&redis);
    for (path, answer) in &answers {
        let key = format!("render:{HOST}:{path}");
        match answer {
            Answer::Rendered => assert!(stored.contains_key(&key), "{key} answered but not stored"),
            // A crawler that stopped waiting does not stop the render: a
            // page finished after it (complete, as checked above) may be
            // stored. Any other failure stores nothing.
            Answer::FailOpen { reason, .. } if reason == "timeout" => {}
            Answer::FailOpen { .. } => assert!(
                !stored.contains_key(&key),
                "{key} failed open but a page was stored"
            ),
        }
    }
    assert!(stored.contains_key(&format!("render:{HOST}:/after-the-crash")));
}

// ---------------------------------------------------------------------------
// 2. Origin down and back.

/// A TCP relay on a fixed port in front of an origin: taken down, its port
/// refuses connections and every relayed connection is cut; brought back,
/// it listens on the same port again.
struct Relay {
    port: u16,
    target: SocketAddr,
    accept: Option<tokio::task::JoinHandle<()>>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let mut relay = Relay {
            port: common::free_port(),
            target,
            accept: None,
            connections: Arc::default(),
        };
        relay.up().await;
        relay
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn up(&mut self) {
        let start = Instant::now();
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        start.elapsed() < Duration::from_secs(10),
                        "cannot listen on {} again: {e}",
                        self.port
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let (target, connections) = (self.target, self.connections.clone());
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections.lock().unwrap().push(task.abort_handle());
            }
        }));
    }

    async fn down(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
        // The port now refuses connections.
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(start.elapsed() < Duration::from_secs(10), "relay still up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

async fn human(proxy: &ProxyProcess, path: &str) -> Reply {
    get(&proxy.url(path), &[("host", HOST), ("user-agent", FIREFOX)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_down_fails_open_caches_nothing_and_recovers_on_the_same_port() {
    let spa = Spa::start().await;
    let mut relay = Relay::start(spa.origin.addr).await;
    let redis = RedisServer::start();
    let args = small_pool(&relay.url(), "2")
        .flag("--redis", &redis.url())
        .flag("--origin-timeout", "5");
    let proxy = start_ready(&args, &[]);

    // Up: a warm-up page renders, so pooled origin connections exist that
    // the outage must cut.
    let warm = crawl_within(proxy.port, "/before", ANSWER_DEADLINE)
        .await
        .unwrap();
    assert_eq!(warm.header("x-prerender-cache"), Some("MISS"));

    relay.down().await;
    let down = crawl_within(proxy.port, "/while-down", ANSWER_DEADLINE)
        .await
        .unwrap();
    // Fail open with the origin's answer; the origin cannot answer, so the
    // bot gets what a person gets: 502 (SPEC §2, Humans: origin down).
    assert_eq!(
        down.header("x-prerender-cache"),
        Some("ERROR"),
        "{}",
        down.text()
    );
    assert_eq!(down.header("x-prerender-error"), Some("origin-error"));
    assert_eq!(down.status, 502, "{}", down.text());
    assert!(!down.text().contains(RENDERED));
    let person = human(&proxy, "/while-down").await;
    assert_eq!(person.status, 502);
    // A page already cached is still served while the origin is down.
    let cached = crawl_within(proxy.port, "/before", ANSWER_DEADLINE)
        .await
        .unwrap();
    assert_eq!(cached.header("x-prerender-cache"), Some("HIT"));

    let mut conn = redis.raw();
    for key in [
        format!("render:{HOST}:/while-down"),
        format!("render-meta:{HOST}:/while-down"),
    ] {
        assert!(
            !redis.exists(&key),
            "{key} stored while the origin was down"
        );
    }

    relay.up().await;
    let first = crawl_within(proxy.port, "/while-down", ANSWER_DEADLINE)
        .await
        .unwrap();
    assert_eq!(
        first.header("x-prerender-cache"),
        Some("MISS"),
        "{:?} {}",
        first.header("x-prerender-error"),
        first.text()
    );
    assert!(first
        .text()
        .contains("Rendered by JavaScript at /while-down"));
    let second = crawl_within(proxy.port, "/while-down", ANSWER_DEADLINE)
        .await
        .unwrap();
    assert_eq!(second.header("x-prerender-cache"), Some("HIT"));
    assert_eq!(second.body, first.body);
    let html: String = redis::cmd("GET")
        .arg(format!("render:{HOST}:/while-down"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(html.as_bytes(), &first.body[..]);
    let person = human(&proxy, "/while-down").await;
    assert_eq!(person.status, 200);
    assert!(person.text().contains(SHELL));
}

// ---------------------------------------------------------------------------
// 3. Many idle connections.

/// Idle connections the proxy must hold at once.
const IDLE_CONNECTIONS: usize = 10_000;
/// Of those, connections that have finished one request first.
const KEPT_ALIVE_CONNECTIONS: usize = 2_000;
/// Bound on the proxy's resident memory while it holds them.
const MAX_PROXY_RSS: u64 = 200 * 1024 * 1024;

/// Lifts this process's open-file limit to its hard limit and checks it
/// leaves room for `needed` sockets.
fn raise_fd_limit(needed: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur as usize >= needed + 1024,
        "the hard open-file limit ({}) leaves no room for {needed} connections",
        lim.rlim_cur
    );
}

/// One keep-alive HTTP/1.1 connection that has finished a request and now
/// sits idle, its driver task alive.
struct KeptAlive {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    _driver: tokio::task::JoinHandle<()>,
}

async fn keep_alive_connection(port: u16) -> KeptAlive {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let status = human_on(&mut sender).await;
    assert_eq!(status, 200);
    KeptAlive {
        sender,
        _driver: driver,
    }
}

async fn human_on(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> u16 {
    let req = Request::get("/kept-alive")
        .header("host", HOST)
        .header("user-agent", FIREFOX)
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .expect("answer on a kept-alive connection")
        .unwrap();
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_cost_bounded_memory_and_new_requests_are_served() {
    raise_fd_limit(IDLE_CONNECTIONS);
    let spa = Spa::start().await;
    // Connections are held for the whole test, not closed as slow heads.
    let args = small_pool(&spa.url(), "2")
        .flag("--max-connections", &(IDLE_CONNECTIONS + 1_000).to_string())
        .flag("--header-read-timeout", "600");
    let proxy = start_ready(&args, &[]);
    let pid = proxy.pid();
    let warm = crawl_within(proxy.port, "/warm", ANSWER_DEADLINE)
        .await
        .unwrap();
    assert_eq!(classify(&warm, "/warm"), Ok(Answer::Rendered));
    let rss_before = vm_rss_bytes(pid);

    // Most have sent nothing at all; the rest finished a request and idle
    // in keep-alive, where hyper keeps its read and write buffers (several
    // times the cost of a silent connection).
    let silent_count = IDLE_CONNECTIONS - KEPT_ALIVE_CONNECTIONS;
    let port = proxy.port;
    let silent = tokio::task::spawn_blocking(move || {
        (0..silent_count)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let mut kept: Vec<KeptAlive> = Vec::with_capacity(IDLE_CONNECTIONS - silent_count);
    for _ in 0..(IDLE_CONNECTIONS - silent_count) / 100 {
        let batch = futures::future::join_all((0..100).map(|_| keep_alive_connection(port))).await;
        kept.extend(batch);
    }
    assert_eq!(silent.len() + kept.len(), IDLE_CONNECTIONS);

    // The proxy has accepted them all.
    let start = Instant::now();
    while accepted_connections(pid, port) < IDLE_CONNECTIONS {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the proxy holds {} connections, expected {IDLE_CONNECTIONS}",
            accepted_connections(pid, port)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss_held = vm_rss_bytes(pid);
    eprintln!(
        "proxy RSS: {} MiB before, {} MiB holding {IDLE_CONNECTIONS} idle connections \
         ({KEPT_ALIVE_CONNECTIONS} after a request): +{} KiB",
        rss_before >> 20,
        rss_held >> 20,
        rss_held.saturating_sub(rss_before) >> 10
    );
    assert!(
        rss_held < MAX_PROXY_RSS,
        "proxy RSS {} MiB with {IDLE_CONNECTIONS} idle connections",
        rss_held >> 20
    );

    // Still serving while they are held: a person, a new bot page, a hit,
    // and requests on connections that have idled all along.
    assert_eq!(human(&proxy, "/new-visitor").await.status, 200);
    let page = crawl_within(proxy.port, "/while-held", ANSWER_DEADLINE)
        .await
        .unwrap();
    assert_eq!(classify(&page, "/while-held"), Ok(Answer::Rendered));
    let hit = crawl_within(proxy.port, "/warm", ANSWER_DEADLINE)
        .await
        .unwrap();
    assert_eq!(hit.header("x-prerender-cache"), Some("HIT"));
    for k in kept.iter_mut().step_by(500) {
        assert_eq!(human_on(&mut k.sender).await, 200);
    }
    assert!(
        accepted_connections(pid, port) >= IDLE_CONNECTIONS,
        "idle connections were dropped while the proxy served others"
    );
    drop(silent);
    drop(kept);
}

/// Which of `conns` the peer closed within `deadline`, all
/// watched at once.
fn closed_within(conns: &mut [TcpStream], deadline: Duration) -> Vec<bool> {
    let start = Instant::now();
    let mut closed = vec![false; conns.len()];
    for s in conns.iter() {
        s.set_nonblocking(true).unwrap();
    }
    let mut buf = [0u8; 512];
    while start.elapsed() < deadline && closed.iter().any(|c| !c) {
        for (s, closed) in conns.iter_mut().zip(closed.iter_mut()) {
            if *closed {
                continue;
            }
            match s.read(&mut buf) {
                Ok(0) => *closed = true,
                // h2c: the server's SETTINGS; HTTP/1.1: a 408 before closing.
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => *closed = true,
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_send_a_request_are_closed_after_the_header_timeout() {
    let spa = Spa::start().await;
    let args = small_pool(&spa.url(), "1").flag("--header-read-timeout", "2");
    let proxy = start_ready(&args, &[]);
    let port = proxy.port;
    let closed = tokio::task::spawn_blocking(move || {
        // Silent connections, and ones stuck part-way through the HTTP/2
        // preface (the bytes that decide between HTTP/1.1 and h2c).
        let mut conns: Vec<TcpStream> = (0..20)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        for _ in 0..5 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
            conns.push(s);
        }
        let mut h2 = TcpStream::connect(("127.0.0.1", port)).unwrap();
        h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        conns.push(h2);
        closed_within(&mut conns, Duration::from_secs(20))
    })
    .await
    .unwrap();
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(
        open,
        0,
        "{open} of {} connections without a request still open 20 s after a 2 s header timeout",
        closed.len()
    );
    assert_eq!(human(&proxy, "/still-serving").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_bound_defers_extra_connections_until_one_closes() {
    const BOUND: usize = 50;
    let spa = Spa::start().await;
    let args = small_pool(&spa.url(), "1")
        .flag("--max-connections", &BOUND.to_string())
        .flag("--header-read-timeout", "120");
    let proxy = start_ready(&args, &[]);
    let (port, pid) = (proxy.port, proxy.pid());
    let mut held: Vec<TcpStream> = (0..BOUND)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let start = Instant::now();
    while accepted_connections(pid, port) < BOUND {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "bound not reached: {} accepted",
            accepted_connections(pid, port)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let answered = tokio::task::spawn_blocking(move || {
        // One more: the kernel completes the handshake, the proxy does not
        // take it while the bound is reached.
        let mut extra = TcpStream::connect(("127.0.0.1", port)).unwrap();
        extra
            .write_all(
                format!("GET /extra HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: {FIREFOX}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut buf = [0u8; 64];
        let early = extra.read(&mut buf);
        assert!(
            matches!(&early, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
            "a connection over the bound was served: {early:?}"
        );
        // One held connection closes: the waiting one is served.
        drop(held.pop());
        extra
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let n = extra.read(&mut buf).unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        (head, held)
    })
    .await
    .unwrap();
    assert!(answered.0.starts_with("HTTP/1.1 200"), "{}", answered.0);
    // The admin listener has its own bound: still answering.
    assert_eq!(
        common::proxy::raw_status(proxy.admin_port, "/healthz"),
        Some(200)
    );
}

// ---------------------------------------------------------------------------
// 4. Graceful shutdown with renders in flight.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_renders_in_flight_answers_them_exits_and_leaves_no_browser() {
    const SHUTDOWN_TIMEOUT: u64 = 10;
    let site = SlowSite::start(Duration::from_secs(2)).await;
    let redis = RedisServer::start();
    let (_tmp, marker) = browser_tmpdir();
    let args = small_pool(&site.url(), "2")
        .flag("--redis", &redis.url())
        .flag("--shutdown-timeout", &SHUTDOWN_TIMEOUT.to_string());
    let mut proxy = start_ready(&args, &[("TMPDIR", marker.as_str())]);
    assert!(
        !common::processes_with(&marker).is_empty(),
        "browser under {marker}"
    );

    // Two render at once; two more wait in the queue.
    let paths: Vec<String> = (0..4).map(|i| format!("/closing/{i}")).collect();
    let requests = spawn_crawls(proxy.port, &paths);
    let in_flight = site.wait_for_renders(2, Duration::from_secs(60)).await;
    // SAFETY: kill(2) on our own child; no memory effects.
    unsafe { libc::kill(proxy.pid() as i32, libc::SIGTERM) };
    let signalled = Instant::now();

    let answers = answers_of(&paths, requests).await;
    eprintln!("in flight at SIGTERM: {in_flight:?}; answers: {answers:?}");
    // Renders already running are finished, not cut off.
    for path in &in_flight {
        assert_eq!(
            answers.get(path),
            Some(&Answer::Rendered),
            "{path} was rendering at SIGTERM"
        );
    }

    let exit_deadline = Duration::from_secs(SHUTDOWN_TIMEOUT + 20);
    let status = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < exit_deadline,
            "still running {exit_deadline:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "exit status {status}");
    let start = Instant::now();
    loop {
        let left = common::processes_with(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "browser processes outlived the proxy: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let stored = assert_only_finished_renders_stored(&redis);
    for (path, answer) in &answers {
        let key = format!("render:{HOST}:{path}");
        match answer {
            Answer::Rendered => assert!(stored.contains_key(&key), "{key} answered but not stored"),
            Answer::FailOpen { .. } => assert!(
                !stored.contains_key(&key),
                "{key} failed open but a page was stored"
            ),
        }
    }
}
