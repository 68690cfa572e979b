//! `prerender-proxy render URL [--origin URL]`: one render on a one-browser
//! pool — the HTML to stdout, status, time and size to stderr; exit 1 on
//! failure. The tool to reach for when a page renders wrong.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cli::RenderArgs;
use crate::render::{BrowserPool, PoolConfig, RenderJob};

pub fn run(args: &RenderArgs) -> ExitCode {
    crate::telemetry::init(crate::config::LogFormat::Text);
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(render(args)),
        Err(e) => {
            eprintln!("prerender-proxy: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn render(args: &RenderArgs) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("prerender-proxy: {msg}");
        ExitCode::FAILURE
    };
    let public_url = match url::Url::parse(&args.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        _ => return fail(format!("{:?} is not an http(s) URL", args.url)),
    };
    let origin = match &args.origin {
        Some(o) => match crate::config::site::parse_origin(o, "origin") {
            Ok(u) => u,
            Err(e) => return fail(e.to_string()),
        },
        None => match url::Url::parse(&format!(
            "{}://{}",
            public_url.scheme(),
            &public_url[url::Position::BeforeHost..url::Position::AfterPort]
        )) {
            Ok(u) => u,
            Err(e) => return fail(format!("cannot derive the origin: {e}")),
        },
    };
    let snapshot = match crate::config::site::SnapshotOptions::parse(
        Some(&args.shadow_dom),
        Some(args.keep_noscript),
        Some(args.max_render_height),
        Some(args.client_redirect_status),
        |name| name.replace('_', "-"),
    ) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let chrome = match args.chrome.clone().or_else(PoolConfig::find_chrome) {
        Some(c) => c,
        None => {
            return fail("no browser found: install chromium or set --chrome / CHROME_PATH".into())
        }
    };
    let mut cfg = PoolConfig::with_chrome(chrome);
    cfg.browsers = 1;
    cfg.tabs_per_browser = 1;
    cfg.render_timeout = Duration::from_secs(args.render_timeout.max(1));
    cfg.ready_timeout = Duration::from_secs(args.ready_timeout.max(1));
    let started = Instant::now();
    let pool = match BrowserPool::launch(cfg).await {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot launch the browser: {e}")),
    };
    let launched = started.elapsed();
    let job = RenderJob {
        public_url: public_url.clone(),
        origin,
        origin_host: None,
        strip_scripts: !args.keep_scripts,
        mobile: args.mobile,
        shadow_dom: snapshot.shadow_dom,
        keep_noscript: snapshot.keep_noscript,
        max_render_height: snapshot.max_render_height,
        client_redirect_status: snapshot.client_redirect_status,
    };
    let result = pool.render(job).await;
    pool.shutdown().await;
    match result {
        Ok(page) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(page.html.as_bytes());
            let _ = out.flush();
            eprintln!(
                "{public_url}: status {} · render {} ms · launch {} ms · {} bytes{}",
                page.status,
                page.elapsed.as_millis(),
                launched.as_millis(),
                page.html.len(),
                if page.snapshot_on_ready_timeout {
                    " · snapshot at ready timeout"
                } else {
                    ""
                }
            );
            for (name, value) in &page.headers {
                eprintln!("{name}: {value}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{public_url}: render failed ({}): {e}", e.reason())),
    }
}
