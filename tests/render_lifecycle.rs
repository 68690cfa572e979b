//! Browser lifecycle under real Chromium: recycling, crashes, deadlines,
//! launch failures, and no processes left behind.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::origin::{Route, TestOrigin};
use futures::StreamExt;
use prerender_proxy::render::{BrowserPool, PoolConfig, RenderError, RenderJob};

const PUBLIC: &str = "https://shop.example.test";

fn job(origin: &TestOrigin, path: &str) -> RenderJob {
    RenderJob::new(
        url::Url::parse(&format!("{PUBLIC}{path}")).unwrap(),
        origin.url(),
    )
}

const JS_PAGE: &str = r#"<!DOCTYPE html><html><body><div id="out">loading</div><script>
fetch('/api/item.json').then((r) => r.json()).then((d) => {
  document.getElementById('out').textContent = 'item ' + d.id + ' ' + location.pathname;
});
</script></body></html>"#;

const SLOW_READY_PAGE: &str = r#"<!DOCTYPE html><html><head><script>window.prerenderReady = false;</script></head>
<body><div id="out">waiting</div><script>
setTimeout(() => { document.getElementById('out').textContent = 'slow done'; window.prerenderReady = true; }, 1500);
</script></body></html>"#;

async fn origin() -> TestOrigin {
    TestOrigin::start(vec![
        ("/p", Route::html(JS_PAGE)),
        ("/api/item.json", Route::json(r#"{"id":7}"#)),
        ("/slow", Route::html(SLOW_READY_PAGE)),
        (
            "/never-ready",
            Route::html(
                r#"<!DOCTYPE html><html><head><script>window.prerenderReady = false;</script></head><body>x</body></html>"#,
            ),
        ),
        (
            "/never-loads",
            Route::html("<html>late</html>").delay(Duration::from_secs(30)),
        ),
        (
            "/whoami",
            Route::html(
                r#"<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width"></head><body><div id="out"></div><script>
document.getElementById('out').textContent = 'ua=' + navigator.userAgent + ' width=' + window.innerWidth;
</script></body></html>"#,
            ),
        ),
    ])
    .await
}

/// Browsers of the pool rooted at `marker` that still have a process
/// (main or helper): distinct per-browser user-data-dirs on command lines.
fn alive_browser_dirs(marker: &str) -> std::collections::BTreeSet<String> {
    let mut dirs = std::collections::BTreeSet::new();
    for process in common::processes() {
        for arg in process.cmdline().split('\0') {
            if let Some(dir) = arg.strip_prefix("--user-data-dir=") {
                if dir.starts_with(marker) {
                    dirs.insert(dir.to_string());
                }
            }
        }
    }
    dirs
}

async fn assert_no_processes_left(pool: &BrowserPool, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (alive, zombies) = common::count_pool_processes(marker);
        if alive == 0 && zombies == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{alive} browser processes and {zombies} zombies left after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!pool.user_data_root().exists(), "user data dirs removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_renders_recycle_browsers_without_leaks() {
    let origin = origin().await;
    let mut cfg = common::small_pool_config();
    cfg.browsers = 2;
    cfg.tabs_per_browser = 2;
    cfg.renders_per_browser = 5;
    let pool = BrowserPool::launch(cfg).await.expect("pool launches");
    let marker = pool.user_data_root().to_string_lossy().into_owned();

    let max_seen = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (pool, marker, max_seen) = (pool.clone(), marker.clone(), max_seen.clone());
        tokio::spawn(async move {
            loop {
                let dirs = alive_browser_dirs(&marker);
                let stats = pool.stats();
                let n = dirs.len().max(stats.browsers_alive);
                if n > 3 {
                    eprintln!("over limit: {stats:?} {dirs:?}");
                }
                max_seen.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };

    let results: Vec<_> = futures::stream::iter(0..60)
        .map(|i| {
            let pool = pool.clone();
            let job = job(&origin, &format!("/p?n={i}"));
            async move { pool.render(job).await }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    sampler.abort();
    for r in &results {
        let page = r.as_ref().expect("every render succeeds");
        assert!(page.html.contains("item 7 /p"), "{}", page.html);
    }
    let stats = pool.stats();
    assert_eq!(stats.renders_total, 60);
    assert_eq!(stats.renders_failed, 0);
    assert!(
        stats.recycles_renders >= 6,
        "browsers must be recycled after 5 renders: {stats:?}"
    );
    assert_eq!(stats.crashes, 0);
    let max = max_seen.load(Ordering::SeqCst);
    assert!(max <= 3, "at most browsers + 1 alive, saw {max}");
    assert!(max >= 2);

    pool.shutdown().await;
    assert_eq!(pool.stats().browsers_alive, 0);
    assert_no_processes_left(&pool, &marker).await;
    assert!(matches!(
        pool.render(job(&origin, "/p")).await,
        Err(RenderError::PoolShutdown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_browser_fails_its_renders_fast_and_is_replaced() {
    let origin = origin().await;
    let mut cfg = common::small_pool_config();
    cfg.browsers = 2;
    cfg.tabs_per_browser = 4;
    let pool = BrowserPool::launch(cfg).await.expect("pool launches");
    let marker = pool.user_data_root().to_string_lossy().into_owned();
    assert_eq!(pool.stats().browsers_alive, 2);

    let renders: Vec<_> = (0..8)
        .map(|i| {
            let pool = pool.clone();
            let job = job(&origin, &format!("/slow?n={i}"));
            tokio::spawn(async move {
                let result = pool.render(job.clone()).await;
                (job, result, Instant::now())
            })
        })
        .collect();
    // Wait until all eight hold a tab.
    let deadline = Instant::now() + Duration::from_secs(15);
    while pool.stats().tabs_busy < 8 {
        assert!(Instant::now() < deadline, "renders never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let victim = pool.browser_pids()[0];
    let killed_at = Instant::now();
    // SAFETY: signalling a browser process this test's pool launched.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };

    let mut failed = 0;
    for r in renders {
        let (job, result, finished_at) = r.await.unwrap();
        match result {
            Ok(page) => assert!(page.html.contains("slow done")),
            Err(e) => {
                failed += 1;
                assert!(e.is_retryable(), "crash errors are retryable: {e:?}");
                assert_eq!(e.reason(), "browser-crash");
                let after = finished_at.saturating_duration_since(killed_at);
                assert!(
                    after < Duration::from_secs(2),
                    "failed {after:?} after the kill"
                );
                let retry = pool.render(job).await.expect("a retry succeeds");
                assert!(retry.html.contains("slow done"));
            }
        }
    }
    assert!(failed >= 1, "the killed browser had renders in flight");

    let deadline = killed_at + Duration::from_secs(5);
    loop {
        let stats = pool.stats();
        if stats.browsers_alive == 2 && !pool.browser_pids().contains(&victim) {
            assert_eq!(stats.crashes, 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pool not back to size: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.shutdown().await;
    assert_no_processes_left(&pool, &marker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_that_never_finish_time_out_at_render_timeout() {
    let origin = origin().await;
    let mut cfg = common::small_pool_config();
    cfg.render_timeout = Duration::from_secs(6);
    cfg.ready_timeout = Duration::from_secs(2);
    let pool = BrowserPool::launch(cfg).await.expect("pool launches");
    for path in ["/never-ready", "/never-loads"] {
        let started = Instant::now();
        let result = pool.render(job(&origin, path)).await;
        let elapsed = started.elapsed();
        assert!(
            matches!(result, Err(RenderError::Timeout)),
            "{path}: {result:?}"
        );
        assert!(!result.unwrap_err().is_retryable());
        assert!(
            elapsed >= Duration::from_millis(5900),
            "{path}: {elapsed:?}"
        );
        assert!(elapsed < Duration::from_secs(7), "{path}: {elapsed:?}");
    }
    // The pool still renders afterwards.
    let page = pool.render(job(&origin, "/p")).await.expect("render");
    assert!(page.html.contains("item 7"));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mobile_jobs_get_a_mobile_viewport_and_user_agent() {
    let origin = origin().await;
    let pool = BrowserPool::launch(common::small_pool_config())
        .await
        .expect("pool launches");
    let mut mobile = job(&origin, "/whoami");
    mobile.mobile = true;
    let page = pool.render(mobile).await.expect("render");
    assert!(page.html.contains("width=412"), "{}", page.html);
    assert!(page.html.contains("Mobile Safari"), "{}", page.html);
    assert!(!page.html.contains("Headless"), "{}", page.html);
    let desktop = pool.render(job(&origin, "/whoami")).await.expect("render");
    assert!(desktop.html.contains("width=1366"), "{}", desktop.html);
    assert!(!desktop.html.contains("Mobile"), "{}", desktop.html);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_cannot_start_is_reported() {
    let mut cfg = PoolConfig::with_chrome("/bin/false");
    cfg.browsers = 1;
    match BrowserPool::launch(cfg).await {
        Err(RenderError::LaunchFailed(_)) => {}
        Err(e) => panic!("expected LaunchFailed, got {e:?}"),
        Ok(_) => panic!("a browser that exits at once cannot launch"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_keeps_dying_is_relaunched_with_backoff() {
    // A browser binary that works once, then exits at once on every launch.
    let dir = tempfile::tempdir().unwrap();
    let launches = dir.path().join("launches");
    let script = dir.path().join("flaky-chrome");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nn=$(cat {count} 2>/dev/null || echo 0)\necho $((n+1)) > {count}\n\
             if [ \"$n\" = 0 ]; then exec {chrome} \"$@\"; fi\nexit 1\n",
            count = launches.display(),
            chrome = common::chrome().display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cfg = common::small_pool_config();
    cfg.chrome = script;
    let pool = BrowserPool::launch(cfg).await.expect("first launch works");
    let marker = pool.user_data_root().to_string_lossy().into_owned();
    let pid = pool.browser_pids()[0];
    // SAFETY: signalling a browser process this test's pool launched.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };

    tokio::time::sleep(Duration::from_secs(4)).await;
    let stats = pool.stats();
    let attempts: usize = std::fs::read_to_string(&launches)
        .unwrap()
        .trim()
        .parse::<usize>()
        .unwrap()
        - 1;
    assert_eq!(stats.crashes, 1, "{stats:?}");
    assert!(
        stats.launch_failures >= 2,
        "relaunches are reported: {stats:?}"
    );
    // Every 250 ms health check would mean ~16 attempts in 4 s; backoff
    // (0.5 s, 1 s, 2 s, …) allows about four.
    assert!(
        (2..=6).contains(&attempts),
        "{attempts} relaunch attempts in 4 s: {stats:?}"
    );
    assert_eq!(stats.browsers_alive, 0);
    pool.shutdown().await;
    assert_no_processes_left(&pool, &marker).await;
}
