//! Proxies apart from renderers (`--role proxy` / `--role renderer`) on one
//! real Redis: jobs go through the shared queue, are split over the
//! renderers, survive a renderer killed with `kill -9` and a proxy
//! restart, and nothing partial is stored.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::proxy::{send, ProxyArgs, ProxyProcess, GOOGLEBOT};
use common::redis::RedisServer;
use common::spa::Spa;
use futures::future::join_all;

const HOST: &str = "www.example.test";
const TOKEN: &str = "roles-admin-token-0123456789";
/// Render timeout of every instance here.
const RENDER_TIMEOUT_SECS: u64 = 20;

fn instance(spa: &Spa, redis: &RedisServer, role: &str, tabs: &str) -> ProxyProcess {
    ProxyArgs::small_pool(&spa.url(), HOST)
        .flag("--role", role)
        .flag("--tabs-per-browser", tabs)
        .flag("--render-timeout", &RENDER_TIMEOUT_SECS.to_string())
        .flag("--redis", &redis.url())
        .flag("--admin-token", TOKEN)
        .start_ready()
}

fn cached(redis: &RedisServer, path: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(format!("render:{HOST}:{path}"))
        .query(&mut redis.raw())
        .unwrap()
}

/// Pending jobs of the live lane: entry id → consumer holding it.
fn pending_live(redis: &RedisServer) -> HashMap<String, String> {
    let reply: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg("render-jobs:live")
        .arg("renderers")
        .arg("-")
        .arg("+")
        .arg(100)
        .query(&mut redis.raw())
        .unwrap_or_default();
    reply.into_iter().map(|(id, who, _, _)| (id, who)).collect()
}

/// The page key a live job is for.
fn job_key(redis: &RedisServer, id: &str) -> Option<String> {
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg("render-jobs:live")
        .arg(id)
        .arg(id)
        .query(&mut redis.raw())
        .unwrap();
    entries.into_iter().next()?.1.remove("key")
}

/// Consumer names start with `<hostname>-<pid>-`.
fn held_by(consumer: &str, proxy: &ProxyProcess) -> bool {
    consumer.contains(&format!("-{}-", proxy.pid()))
}

async fn eventually(deadline: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < deadline,
            "not within {deadline:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renderers_split_the_proxys_misses_and_take_over_from_one_killed_mid_job() {
    let spa = Spa::start().await;
    // Each render waits 1.5 s for its data: jobs are in flight long
    // enough to kill a renderer in the middle of some.
    spa.set_data_delay(Duration::from_millis(1500));
    let redis = RedisServer::start();
    let proxy = instance(&spa, &redis, "proxy", "1");
    let doomed = instance(&spa, &redis, "renderer", "2");
    let survivor = instance(&spa, &redis, "renderer", "2");

    let paths: Vec<String> = (0..20).map(|i| format!("/split/{i}")).collect();
    let requests = paths.iter().map(|path| {
        let url = proxy.url(path);
        async move {
            let started = Instant::now();
            let reply = send(
                "GET",
                &url,
                &[("host", HOST), ("user-agent", GOOGLEBOT)],
                "",
            )
            .await;
            (reply, started.elapsed())
        }
    });
    let replies = tokio::spawn(join_all(requests));

    // Both renderers hold jobs at once: the queue splits the work.
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    eventually(
        Duration::from_secs(30),
        "jobs held by both renderers at once",
        || {
            let holders: Vec<String> = pending_live(&redis).into_values().collect();
            if holders.iter().any(|c| held_by(c, &doomed)) {
                seen.insert("doomed");
            }
            if holders.iter().any(|c| held_by(c, &survivor)) {
                seen.insert("survivor");
            }
            holders.iter().any(|c| held_by(c, &doomed))
                && holders.iter().any(|c| held_by(c, &survivor))
        },
    )
    .await;
    // kill -9 one renderer in the middle of its jobs.
    let orphaned: Vec<String> = pending_live(&redis)
        .into_iter()
        .filter(|(_, who)| held_by(who, &doomed))
        .filter_map(|(id, _)| job_key(&redis, &id))
        .collect();
    assert!(!orphaned.is_empty(), "the killed renderer held jobs");
    // SAFETY: kill(2) on a child we started.
    assert_eq!(unsafe { libc::kill(doomed.pid() as i32, libc::SIGKILL) }, 0);

    let replies = replies.await.unwrap();
    let patience = Duration::from_secs(RENDER_TIMEOUT_SECS + 10);
    for ((reply, took), path) in replies.iter().zip(&paths) {
        assert!(*took < patience, "{path} answered after {took:?}");
        assert_eq!(reply.status, 200, "{path}");
        match reply.header("x-prerender-cache") {
            Some("MISS") => assert!(
                reply.text().contains(&format!("at {path}")),
                "{path}: {}",
                reply.text()
            ),
            // Fail open: the origin's own shell, never a broken page.
            Some("ERROR") => assert!(reply.text().contains("Loading…"), "{path}"),
            other => panic!("{path}: unexpected cache result {other:?}"),
        }
    }
    // The killed renderer's jobs were rendered by the survivor; every page
    // ends up stored, complete.
    eventually(
        Duration::from_secs(60),
        "every page stored after the failover",
        || paths.iter().all(|p| cached(&redis, p).is_some()),
    )
    .await;
    for path in &paths {
        let html = cached(&redis, path).unwrap();
        assert!(html.contains(&format!("at {path}")), "{path}: {html}");
    }
    for key in &orphaned {
        let path = key.trim_start_matches(&format!("render:{HOST}:"));
        assert!(cached(&redis, path).is_some(), "{key} finished elsewhere");
    }
    // The queue is empty again: nothing left pending or unread.
    eventually(Duration::from_secs(10), "an empty job queue", || {
        let len: u64 = redis::cmd("XLEN")
            .arg("render-jobs:live")
            .query(&mut redis.raw())
            .unwrap();
        len == 0
    })
    .await;
    // Later misses still render on the survivor.
    let reply = proxy.crawl(HOST, "/split/after").await;
    assert_eq!(reply.header("x-prerender-cache"), Some("MISS"));
    assert!(reply.text().contains("at /split/after"));
    drop(survivor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queued_before_a_proxy_restart_are_all_rendered() {
    let spa = Spa::start().await;
    spa.set_data_delay(Duration::from_millis(700));
    let redis = RedisServer::start();
    let mut proxy = instance(&spa, &redis, "proxy", "1");
    let renderer = instance(&spa, &redis, "renderer", "1");

    let paths: Vec<String> = (0..10).map(|i| format!("/queued/{i}")).collect();
    let urls: Vec<String> = paths.iter().map(|p| format!("https://{HOST}{p}")).collect();
    let warm = send(
        "POST",
        &proxy.admin_url("/api/v1/warm"),
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        serde_json::json!({ "urls": urls }).to_string(),
    )
    .await;
    assert_eq!(warm.status, 202, "{}", warm.text());
    // All ten are in the shared queue, most not yet rendered …
    eventually(Duration::from_secs(10), "ten jobs queued", || {
        let len: u64 = redis::cmd("XLEN")
            .arg("render-jobs:background")
            .query(&mut redis.raw())
            .unwrap();
        let stored = paths.iter().filter(|p| cached(&redis, p).is_some()).count();
        len as usize + stored >= 10
    })
    .await;
    assert!(
        paths.iter().filter(|p| cached(&redis, p).is_some()).count() < 10,
        "jobs were still queued at the restart"
    );
    // … when the only proxy dies outright and comes back.
    // SAFETY: kill(2) on a child we started.
    assert_eq!(unsafe { libc::kill(proxy.pid() as i32, libc::SIGKILL) }, 0);
    proxy.stop();
    let proxy = instance(&spa, &redis, "proxy", "1");

    eventually(
        Duration::from_secs(60),
        "all ten rendered and stored",
        || paths.iter().all(|p| cached(&redis, p).is_some()),
    )
    .await;
    for path in &paths {
        assert_eq!(spa.documents(path), 1, "{path} rendered once");
        let reply = proxy.crawl(HOST, path).await;
        assert_eq!(reply.header("x-prerender-cache"), Some("HIT"), "{path}");
        assert!(reply.text().contains(&format!("at {path}")));
    }
    drop(renderer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renderer_answers_no_public_traffic_and_a_proxy_launches_no_browser() {
    let spa = Spa::start().await;
    let redis = RedisServer::start();
    let proxy = instance(&spa, &redis, "proxy", "1");
    let renderer = instance(&spa, &redis, "renderer", "1");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", renderer.port)).is_err(),
        "the renderer's public port is closed"
    );
    assert_eq!(
        common::chromium_in_group(proxy.pid()),
        0,
        "the proxy runs no browser"
    );
    assert!(
        common::chromium_in_group(renderer.pid()) > 0,
        "the renderer runs browsers"
    );
    // Humans pass through the proxy as ever.
    let human = send(
        "GET",
        &proxy.url("/human"),
        &[("host", HOST), ("user-agent", common::proxy::FIREFOX)],
        "",
    )
    .await;
    assert_eq!(human.status, 200);
    assert!(human.header("x-prerender-cache").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_queue_one_new_page_and_it_is_rendered_once() {
    let spa = Spa::start().await;
    spa.set_data_delay(Duration::from_millis(500));
    let redis = RedisServer::start();
    let a = instance(&spa, &redis, "proxy", "1");
    let b = instance(&spa, &redis, "proxy", "1");
    let _renderers = [
        instance(&spa, &redis, "renderer", "2"),
        instance(&spa, &redis, "renderer", "2"),
    ];
    let replies =
        join_all((0..10).flat_map(|_| [a.crawl(HOST, "/once"), b.crawl(HOST, "/once")])).await;
    for r in &replies {
        assert_eq!(r.header("x-prerender-cache"), Some("MISS"));
        assert!(r.text().contains("at /once"), "{}", r.text());
    }
    assert_eq!(spa.documents("/once"), 1, "one render for both proxies");
}

#[tokio::test]
async fn a_redis_that_evicts_keys_without_ttl_is_warned_about_and_no_password_is_logged() {
    let redis = RedisServer::start();
    let mut raw = redis.raw();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut raw)
        .unwrap();
    // An ACL user whose password must never be logged.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("proxy")
        .arg("on")
        .arg(">pw-never-logged-7f3a")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query(&mut raw)
        .unwrap();
    let url = format!(
        "redis://proxy:pw-never-logged-7f3a@127.0.0.1:{}",
        redis.port()
    );
    let spa = Spa::start().await;
    let log_path = std::env::temp_dir().join(format!("prerender-evict-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut proxy = ProxyProcess::start_with_stderr(
        &["--origin", &spa.url(), "--redis", &url, "--browsers", "1"],
        &[("RUST_LOG", "info")],
        log,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap();
        if text.contains("maxmemory-policy") {
            assert!(text.contains("allkeys-lru"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no eviction warning:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The store works with the ACL user: a crawler's page is rendered and
    // cached.
    proxy.wait_until("/readyz", Duration::from_secs(30));
    let r = send(
        "GET",
        &proxy.url("/acl-page"),
        &[("user-agent", GOOGLEBOT)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    proxy.stop();
    let text = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(
        text.contains("proxy:***@"),
        "the start-up line names the store:\n{text}"
    );
    assert!(
        !text.contains("pw-never-logged-7f3a"),
        "password in the log:\n{text}"
    );
}
