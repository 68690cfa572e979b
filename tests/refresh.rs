//! Keeping cached pages fresh, end to end: the real binary, real Chromium,
//! a local JavaScript origin and a real redis-server. Scheduled refreshes,
//! agency_plus content polling, stale-while-revalidate, refreshes shared by
//! two instances, LRU eviction and the monthly render quota.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use common::proxy::{get, one_site_config, ProxyProcess, GOOGLEBOT};
use common::redis::RedisServer;
use common::spa::Spa;
use futures::future::join_all;

const HOST: &str = "www.example.test";

/// A local JavaScript origin, a real redis-server and a config file with
/// a small pool and one site on `plan`, whose table holds `settings`.
struct Deployment {
    spa: Spa,
    redis: RedisServer,
    cfg: tempfile::TempPath,
}

impl Deployment {
    async fn new(plan: &str, settings: &str) -> Deployment {
        let spa = Spa::start().await;
        let redis = RedisServer::start();
        let cfg = one_site_config(
            HOST,
            &spa.url(),
            Some(&redis.url()),
            &format!("plan = \"{plan}\"\n[plans.{plan}]\n{settings}"),
        );
        Deployment { spa, redis, cfg }
    }
}

/// Asks for `path` as Googlebot and asserts how it was served
/// (`X-Prerender-Cache`); the answer, for more checks.
async fn served(proxy: &ProxyProcess, path: &str, how: &str) -> common::proxy::Reply {
    proxy.crawl_served(HOST, path, how).await
}

async fn bot(proxy: &ProxyProcess, path: &str) -> common::proxy::Reply {
    get(
        &proxy.url(path),
        &[("host", HOST), ("user-agent", GOOGLEBOT)],
    )
    .await
}

/// The cached HTML of `path`, straight from Redis.
fn cached(redis: &RedisServer, path: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(format!("render:{HOST}:{path}"))
        .query(&mut redis.raw())
        .unwrap()
}

fn rendered_at(redis: &RedisServer, path: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(format!("render-meta:{HOST}:{path}"))
        .arg("rendered_at")
        .query(&mut redis.raw())
        .unwrap()
}

/// Polls `check` every 100 ms until it holds; panics with `what` after `deadline`.
async fn eventually(deadline: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < deadline, "{what} within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_refresh_swaps_new_content_in_without_a_bot_request() {
    let Deployment { spa, redis, cfg } = Deployment::new("fast", "refresh_every = \"3s\"").await;
    let proxy = ProxyProcess::start_with_config(&cfg);

    let first = served(&proxy, "/news", "MISS").await;
    assert!(first.text().contains("Rendered by JavaScript at /news"));

    spa.set_title("Fresh headline");
    // No crawler asks meanwhile; the page is never missing from the store.
    let mut always_cached = true;
    eventually(Duration::from_secs(15), "refreshed page in Redis", || {
        let html = cached(&redis, "/news");
        always_cached &= html.is_some();
        html.is_some_and(|h| h.contains("Fresh headline at /news"))
    })
    .await;
    assert!(
        always_cached,
        "the old page stays until the new one is stored"
    );
    assert!(spa.documents("/news") >= 2);

    let hit = served(&proxy, "/news", "HIT").await;
    assert!(
        hit.text().contains("Fresh headline at /news"),
        "{}",
        hit.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_the_old_page_at_once_then_the_new_one() {
    let Deployment {
        spa,
        redis: _redis,
        cfg,
    } = Deployment::new(
        "swr",
        "cache_ttl = \"2s\"\nstale_while_revalidate = \"30s\"",
    )
    .await;
    let proxy = ProxyProcess::start_with_config(&cfg);

    let first = served(&proxy, "/s", "MISS").await;
    assert!(first.text().contains("Rendered by JavaScript at /s"));
    spa.set_title("Second edition");

    // Hits until the 2 s TTL runs out (a hit starts no re-render), then the
    // first answer past it is the stale page.
    let started = Instant::now();
    let stale = loop {
        let r = bot(&proxy, "/s").await;
        if r.header("x-prerender-cache") != Some("HIT") {
            break r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still a HIT long after the TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stale.header("x-prerender-cache"), Some("STALE"));
    assert_eq!(stale.body, first.body, "the old page, at once");

    let started = Instant::now();
    let fresh = loop {
        let r = bot(&proxy, "/s").await;
        match r.header("x-prerender-cache") {
            Some("HIT") => break r,
            Some("STALE") => {}
            other => panic!("unexpected {other:?} while revalidating"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no HIT after revalidation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        fresh.text().contains("Second edition at /s"),
        "{}",
        fresh.text()
    );
    assert_eq!(
        spa.documents("/s"),
        2,
        "one render, one background re-render"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agency_plus_polls_the_origin_and_re_renders_only_on_change() {
    let Deployment { spa, redis, cfg } =
        Deployment::new("agency_plus", "poll_every = \"2s\"").await;
    spa.set_validators(true);
    let proxy = ProxyProcess::start_with_config(&cfg);

    served(&proxy, "/article", "MISS").await;
    let unconditional = spa.unconditional_documents("/article");
    let rendered = rendered_at(&redis, "/article");
    assert!(rendered.is_some());

    // Unchanged document: conditional polls only, no re-render. Waits for
    // the polls themselves rather than a fixed time.
    eventually(Duration::from_secs(20), "two conditional polls", || {
        spa.conditional_documents("/article") >= 2
    })
    .await;
    assert_eq!(
        spa.unconditional_documents("/article"),
        unconditional,
        "no unconditional fetch (no render) while the document is unchanged"
    );
    assert_eq!(rendered_at(&redis, "/article"), rendered, "not re-rendered");
    assert!(
        spa.conditional_documents("/article") >= 2,
        "polled with If-None-Match: {:?}",
        spa.document_requests("/article")
    );

    // The document changes: re-rendered within 10 s, still with no crawler asking.
    spa.set_shell_marker("edition-2");
    eventually(
        Duration::from_secs(10),
        "re-render after the change",
        || cached(&redis, "/article").is_some_and(|h| h.contains("edition-2")),
    )
    .await;
    assert!(spa.unconditional_documents("/article") > unconditional);
    let hit = served(&proxy, "/article", "HIT").await;
    assert!(hit.text().contains("edition-2"));

    // And the new baseline holds: no further renders while unchanged again.
    let after_change = spa.unconditional_documents("/article");
    let polled = spa.conditional_documents("/article");
    eventually(
        Duration::from_secs(20),
        "two more conditional polls",
        || spa.conditional_documents("/article") >= polled + 2,
    )
    .await;
    assert_eq!(spa.unconditional_documents("/article"), after_change);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_polled_page_is_re_rendered_before_it_expires() {
    let Deployment { spa, redis, cfg } =
        Deployment::new("agency_plus", "poll_every = \"2s\"\ncache_ttl = \"8s\"").await;
    spa.set_validators(true);
    let proxy = ProxyProcess::start_with_config(&cfg);
    served(&proxy, "/evergreen", "MISS").await;
    let rendered = rendered_at(&redis, "/evergreen");
    // Twice the TTL later, crawlers have been served from the cache all along.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(16) {
        let r = bot(&proxy, "/evergreen").await;
        assert_eq!(
            r.header("x-prerender-cache"),
            Some("HIT"),
            "after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_ne!(rendered_at(&redis, "/evergreen"), rendered, "re-rendered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_refresh_each_due_page_once_per_period() {
    let Deployment {
        spa,
        redis: _redis,
        cfg,
    } = Deployment::new("fast", "refresh_every = \"3s\"").await;
    let a = ProxyProcess::start_with_config(&cfg);
    let b = ProxyProcess::start_with_config(&cfg);
    served(&a, "/one", "MISS").await;
    served(&b, "/two", "MISS").await;
    // Until each page has been refreshed twice (three document fetches).
    let started = Instant::now();
    eventually(
        Duration::from_secs(30),
        "two refreshes of each page",
        || {
            ["/one", "/two"]
                .iter()
                .all(|p| spa.document_requests(p).len() >= 3)
        },
    )
    .await;
    let window = started.elapsed() + Duration::from_secs(1);

    for path in ["/one", "/two"] {
        let requests = spa.document_requests(path);
        // The next refresh is due 3 s after the previous one was stored,
        // which is after its document was fetched: fetches are > 3 s apart
        // when each period's refresh runs once, cluster-wide.
        for pair in requests.windows(2) {
            let gap = pair[1].at.duration_since(pair[0].at);
            assert!(
                gap >= Duration::from_secs(3),
                "{path} fetched twice within one period ({gap:?}): {requests:?}"
            );
        }
        assert!(
            (2..=1 + (window.as_secs() / 3) as usize).contains(&requests.len()),
            "{path}: {} document requests in {window:?}",
            requests.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_entries_evicts_the_least_recently_used_pages() {
    let Deployment {
        spa: _spa,
        redis,
        cfg,
    } = Deployment::new("small", "max_entries = 3").await;
    let proxy = ProxyProcess::start_with_config(&cfg);
    for path in ["/e1", "/e2", "/e3"] {
        served(&proxy, path, "MISS").await;
    }
    // Reading /e1 makes it the most recently used.
    served(&proxy, "/e1", "HIT").await;
    let index = format!("render-index:{HOST}");
    let score = |path: &str| -> Option<f64> {
        redis::cmd("ZSCORE")
            .arg(&index)
            .arg(format!("render:{HOST}:{path}"))
            .query(&mut redis.raw())
            .unwrap()
    };
    eventually(
        Duration::from_secs(5),
        "the hit recorded in the index",
        || score("/e1") > score("/e3"),
    )
    .await;
    for path in ["/e4", "/e5"] {
        served(&proxy, path, "MISS").await;
    }

    for gone in ["/e2", "/e3"] {
        assert!(!redis.exists(&format!("render:{HOST}:{gone}")), "{gone}");
        assert!(
            !redis.exists(&format!("render-meta:{HOST}:{gone}")),
            "{gone}"
        );
        assert_eq!(score(gone), None, "{gone} still indexed");
    }
    for kept in ["/e1", "/e4", "/e5"] {
        assert!(redis.exists(&format!("render:{HOST}:{kept}")), "{kept}");
    }
    let mut members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&index)
        .arg(0)
        .arg(-1)
        .query(&mut redis.raw())
        .unwrap();
    members.sort();
    assert_eq!(
        members,
        ["/e1", "/e4", "/e5"].map(|p| format!("render:{HOST}:{p}"))
    );
    let due: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("render-due:{HOST}"))
        .arg(0)
        .arg(-1)
        .query(&mut redis.raw())
        .unwrap();
    assert_eq!(due.len(), 3, "evicted pages are not refreshed: {due:?}");
    // An evicted page renders again on demand.
    served(&proxy, "/e2", "MISS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_quota_fails_open_keeps_hits_and_pauses_the_refresher() {
    let Deployment { spa, redis, cfg } =
        Deployment::new("metered", "monthly_renders = 3\nrefresh_every = \"5s\"").await;
    let proxy = ProxyProcess::start_with_config(&cfg);
    let pages = ["/q1", "/q2", "/q3"];
    // Together, so all three are rendered well before their first refresh is due.
    for r in join_all(pages.map(|p| bot(&proxy, p))).await {
        assert_eq!(
            r.header("x-prerender-cache"),
            Some("MISS"),
            "{:?}",
            r.headers
        );
    }

    let over = bot(&proxy, "/q4").await;
    assert_eq!(over.status, 200);
    assert_eq!(over.header("x-prerender-cache"), Some("ERROR"));
    assert_eq!(over.header("x-prerender-error"), Some("quota"));
    assert!(over.text().contains("Loading…"), "the origin's own page");
    for p in pages {
        served(&proxy, p, "HIT").await;
    }

    // Their refreshes come due, but the quota is used up: nothing is
    // fetched. Waits until all three have been due for two refresher ticks
    // (a claimed page would have left the due set or moved into the future).
    let due_ms = || -> Vec<f64> {
        redis::cmd("ZRANGE")
            .arg(format!("render-due:{HOST}"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query::<Vec<(String, f64)>>(&mut redis.raw())
            .unwrap()
            .into_iter()
            .map(|(_, at)| at)
            .collect()
    };
    let two_ticks_ago_ms = || {
        (SystemTime::now() - 2 * prerender_proxy::pipeline::refresh::REFRESH_TICK)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as f64
    };
    eventually(
        Duration::from_secs(20),
        "all three refreshes due for two ticks",
        || {
            let due = due_ms();
            due.len() == 3 && due.iter().all(|&at| at <= two_ticks_ago_ms())
        },
    )
    .await;
    let counts: HashMap<&str, usize> = pages.iter().map(|p| (*p, spa.documents(p))).collect();
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let month = prerender_proxy::cache::quota_month(SystemTime::now());
    let used: u64 = redis::cmd("GET")
        .arg(format!("render-quota:{HOST}:{month}"))
        .query(&mut redis.raw())
        .unwrap();
    assert_eq!(used, 3);
    // The skipped refreshes are kept for next month, not dropped.
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    let due: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(format!("render-due:{HOST}"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut redis.raw())
        .unwrap();
    assert_eq!(due.len(), 3, "{due:?}");
    assert!(due.iter().all(|(_, at)| *at <= now_ms), "all due: {due:?}");
}
