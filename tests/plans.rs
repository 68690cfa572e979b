//! Plans end to end (SPEC §4), with the real binary, real Chromium, a local
//! JavaScript origin and both stores (a real redis-server and the embedded
//! one): a page once rendered is never a cold miss again while its plan's
//! stale window lasts, each expiry costs exactly one background re-render,
//! error pages live for `error_ttl` and never push a good page out, and
//! rendered answers are `private` by default.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::proxy::{check_config, one_site_config, ProxyProcess, BIN};
use common::redis::RedisServer;
use common::spa::Spa;

const HOST: &str = "www.example.test";

/// Two tests of one `scenario`: on a real redis-server, and on the
/// embedded store.
macro_rules! on_both_stores {
    ($scenario:ident: $on_redis:ident, $embedded:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $on_redis() {
            let redis = RedisServer::start();
            $scenario(Some(&redis)).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $embedded() {
            $scenario(None).await;
        }
    };
}

/// A config file with a small pool and one site on `plan`, on Redis when
/// given (else the embedded store).
fn config(spa: &Spa, redis: Option<&RedisServer>, plan: &str, plans: &str) -> tempfile::TempPath {
    one_site_config(
        HOST,
        &spa.url(),
        redis.map(RedisServer::url).as_deref(),
        &format!("plan = \"{plan}\"\n{plans}"),
    )
}

/// Remaining lifetime of a Redis key in milliseconds (-2: no such key).
fn pttl(redis: &RedisServer, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(&mut redis.raw()).unwrap()
}

/// Asks for one page every 150 ms for three TTLs and more: after the first
/// MISS every answer is HIT or STALE, and each run of STALE answers (one
/// expiry) costs exactly one render.
async fn never_a_miss_again(redis: Option<&RedisServer>) {
    const TTL: Duration = Duration::from_secs(3);
    let spa = Spa::start().await;
    // The default plan with a short TTL: its stale window lasts until the
    // next refresh, 24 h away.
    let cfg = config(
        &spa,
        redis,
        "self-hosted",
        "[plans.self-hosted]\ncache_ttl = \"3s\"",
    );
    let proxy = ProxyProcess::start_with_config(&cfg);

    let first = proxy.crawl_served(HOST, "/article", "MISS").await;
    assert_eq!(first.header("cache-control"), Some("private, max-age=3"));
    if let Some(redis) = redis {
        // Stored for the TTL plus the stale window (SPEC §6).
        let left = pttl(redis, &format!("render:{HOST}:/article"));
        assert!(left > 24 * 3600 * 1000, "PTTL {left}");
        let meta = pttl(redis, &format!("render-meta:{HOST}:/article"));
        assert!(meta > 24 * 3600 * 1000, "meta PTTL {meta}");
    }

    let started = Instant::now();
    let mut expiries = 0;
    let mut previous = "MISS".to_string();
    let mut answers = Vec::new();
    while started.elapsed() < TTL * 3 + Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let r = proxy.crawl(HOST, "/article").await;
        let state = r.header("x-prerender-cache").unwrap_or("none").to_string();
        assert!(
            state == "HIT" || state == "STALE",
            "a known page was {state} after {:?}: {answers:?}",
            started.elapsed()
        );
        assert!(r.text().contains("Rendered by JavaScript at /article"));
        if state == "STALE" && previous != "STALE" {
            expiries += 1;
        }
        answers.push(state.clone());
        previous = state;
    }
    assert!(
        expiries >= 2,
        "the page expired {expiries} times: {answers:?}"
    );
    // Let the last re-render finish: the next answer is a HIT again.
    let settle = Instant::now();
    loop {
        let r = proxy.crawl(HOST, "/article").await;
        match r.header("x-prerender-cache") {
            Some("HIT") => break,
            Some("STALE") => {}
            other => panic!("{other:?} while the last re-render runs"),
        }
        assert!(settle.elapsed() < Duration::from_secs(20), "no HIT again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The HIT above may start a new expiry only after TTL; none yet.
    assert_eq!(
        spa.documents("/article"),
        1 + expiries,
        "one render, then one re-render per expiry: {answers:?}"
    );
}

on_both_stores!(
    never_a_miss_again:
    a_page_rendered_once_is_never_a_miss_again_across_three_ttls_on_redis,
    a_page_rendered_once_is_never_a_miss_again_across_three_ttls_embedded
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_stale_window_restores_expire_then_miss() {
    let spa = Spa::start().await;
    let cfg = config(
        &spa,
        None,
        "strict",
        "[plans.strict]\ncache_ttl = \"2s\"\nstale_while_revalidate = \"0s\"",
    );
    let proxy = ProxyProcess::start_with_config(&cfg);
    proxy.crawl_served(HOST, "/p", "MISS").await;
    proxy.crawl_served(HOST, "/p", "HIT").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    proxy.crawl_served(HOST, "/p", "MISS").await;
    assert_eq!(spa.documents("/p"), 2);
}

/// A page of the site rendered as 404 (`prerender-status-code`).
fn missing(i: usize) -> String {
    format!("/missing/{i}")
}

async fn error_pages_stay_out_of_the_way(redis: Option<&RedisServer>) {
    let spa = Spa::start().await;
    let cfg = config(
        &spa,
        redis,
        "small",
        "[plans.small]\nmax_entries = 3\nerror_ttl = \"4s\"",
    );
    let proxy = ProxyProcess::start_with_config(&cfg);

    let good = proxy.crawl(HOST, "/good").await;
    assert_eq!(good.status, 200);
    assert_eq!(good.header("x-prerender-cache"), Some("MISS"));
    assert_eq!(good.header("cache-control"), Some("private, max-age=3600"));

    // A flood of bad links, each more recently used than the good page.
    for i in 0..6 {
        let r = proxy.crawl(HOST, &missing(i)).await;
        assert_eq!(r.status, 404, "{}", missing(i));
        assert_eq!(r.header("x-prerender-cache"), Some("MISS"));
        assert_eq!(r.header("cache-control"), Some("private, max-age=4"));
    }
    proxy.crawl_served(HOST, "/good", "HIT").await;
    assert_eq!(
        spa.documents("/good"),
        1,
        "the good page was never pushed out"
    );

    // The most recent error page is cached, for error_ttl only.
    let hit = proxy.crawl(HOST, &missing(5)).await;
    assert_eq!(
        (hit.status.as_u16(), hit.header("x-prerender-cache")),
        (404, Some("HIT"))
    );
    if let Some(redis) = redis {
        let left = pttl(redis, &format!("render:{HOST}:{}", missing(5)));
        assert!(left > 0 && left <= 4000, "PTTL {left}");
        // Evicted: the oldest error pages, not the good page.
        assert_eq!(pttl(redis, &format!("render:{HOST}:{}", missing(0))), -2);
    }
    tokio::time::sleep(Duration::from_millis(4500)).await;
    // Expired error pages are rendered again, never served stale.
    let after = proxy.crawl(HOST, &missing(5)).await;
    assert_eq!(after.header("x-prerender-cache"), Some("MISS"));
    assert_eq!(spa.documents(&missing(5)), 2);
    proxy.crawl_served(HOST, "/good", "HIT").await;
    assert_eq!(spa.documents("/good"), 1);
}

on_both_stores!(
    error_pages_stay_out_of_the_way:
    error_pages_live_for_error_ttl_and_never_push_a_good_page_out_on_redis,
    error_pages_live_for_error_ttl_and_never_push_a_good_page_out_embedded
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_may_opt_in_to_shared_caching() {
    let spa = Spa::start().await;
    let cfg = config(
        &spa,
        None,
        "edge",
        "[plans.edge]\ncache_control = \"public, max-age=600\"",
    );
    let proxy = ProxyProcess::start_with_config(&cfg);
    let r = proxy.crawl_served(HOST, "/shared", "MISS").await;
    assert_eq!(r.header("cache-control"), Some("public, max-age=600"));
    let r = proxy.crawl_served(HOST, "/shared", "HIT").await;
    assert_eq!(r.header("cache-control"), Some("public, max-age=600"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_may_opt_in_to_shared_caching_over_its_plan() {
    let spa = Spa::start().await;
    let cfg = config(
        &spa,
        None,
        "pro",
        "cache_control = \"public, max-age=900\"\n[plans.pro]\ncache_control = \"private, max-age=5\"",
    );
    let proxy = ProxyProcess::start_with_config(&cfg);
    let r = proxy.crawl_served(HOST, "/shared", "MISS").await;
    assert_eq!(r.header("cache-control"), Some("public, max-age=900"));
    let r = proxy.crawl_served(HOST, "/shared", "HIT").await;
    assert_eq!(r.header("cache-control"), Some("public, max-age=900"));
}

#[test]
fn check_config_warns_naming_a_plan_whose_pages_leave_the_stale_window_before_a_refresh() {
    let (ok, stdout, stderr) = check_config(
        "cache_ttl = \"1h\"\n[plans.pro]\nstale_while_revalidate = \"0s\"\n[plans.news]\nrefresh_every = \"10m\"\nstale_while_revalidate = \"1m\"\n",
    );
    assert!(ok, "a warning, not an error: {stderr}");
    assert!(stdout.contains("ok"), "{stdout}");
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("warning: plan pro:") && warnings[0].contains("MISS"),
        "{stderr}"
    );
    // The defaults never warn; nor does a window that reaches the refresh.
    let (ok, _, stderr) = check_config(
        "cache_ttl = 3600\n[plans.pro]\nstale_while_revalidate = \"23h\"\n[[sites]]\ndomain = \"a.test\"\norigin = \"http://127.0.0.1:9\"\n",
    );
    assert!(ok);
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn the_start_up_log_warns_naming_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[[sites]]\ndomain = \"a.test\"\norigin = \"http://127.0.0.1:9\"\nplan = \"strict\"\n[plans.strict]\nstale_while_revalidate = \"0s\"\n",
    )
    .unwrap();
    let listen = common::free_port();
    let admin = common::free_port();
    let mut command = Command::new(BIN);
    // Its own process group, so that stopping it reaches any browser it launched.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg(format!("127.0.0.1:{listen}"))
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{admin}"))
        .env("RUST_LOG", "warn")
        .env_remove("REDIS_URL")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let warning = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("plan strict:") => break line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no warning naming the plan: {seen:#?}"),
        }
    };
    // SIGTERM, a bounded wait for the graceful shutdown, then the group.
    drop(ProxyProcess {
        child,
        port: listen,
        admin_port: admin,
    });
    assert!(
        warning.contains("WARN") && warning.contains("MISS"),
        "{warning}"
    );
}
