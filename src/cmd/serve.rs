//! `prerender-proxy serve` (also a bare `prerender-proxy`): builds the parts (store, bot detector, browser
//! pool, prerenderer), binds the listeners and runs until SIGTERM/SIGINT,
//! then shuts down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::api::Api;
use crate::admin::auth::AdminAuth;
use crate::admin::Admin;
use crate::bot::{BotDetector, Family};
use crate::cache::store_call;
use crate::cache::{CacheStore, MemoryStore, PurgeEvent, RedisOptions, RedisStore};
use crate::config::{Config, Role, StoreTarget, DEFAULT_PUBLIC_THREADS_PER_CORE};
use crate::listener::{self, ListenerLimits};
use crate::metrics::Metrics;
use crate::pipeline::consumer::{spawn_backlog_watch, JobConsumer, SharedQueueFigures};
use crate::pipeline::job::Prerenderer;
use crate::pipeline::refresh::Refresher;
use crate::pipeline::shared_queue::JobQueue;
use crate::proxy::client_addr::TrustedProxies;
use crate::proxy::crawler::CrawlerPath;
use crate::proxy::forward::OriginClient;
use crate::proxy::prepared::PreparedPages;
use crate::proxy::service::ServiceEndpoint;
use crate::proxy::PublicProxy;
use crate::render::{BrowserPool, PoolConfig};
use crate::state::stats::DomainStats;
use crate::state::Health;
use crate::upstream::PoolLimits;
use crate::verify::budget::UnverifiedBudget;
use crate::verify::dns::{CrawlerDns, HickoryDns};
use crate::verify::ranges::IpRanges;
use crate::verify::{CrawlerVerifier, RenderGate, VerifyMode};

/// How often the store is pinged to keep readiness's `store` flag current.
const STORE_HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// A running server: its bound addresses and the handle to stop it.
pub struct Running {
    /// The public listener's address (`None` for `--role renderer`, which
    /// answers no public traffic).
    pub public_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    /// The service listener's address (`service_listen`; `None`: off, or
    /// `--role renderer`).
    pub service_addr: Option<SocketAddr>,
    pub health: Arc<Health>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// The admin listener stops last, so `/readyz` says `draining` while
    /// the public listener's requests finish.
    admin_stop: watch::Sender<bool>,
    admin_task: JoinSet<()>,
    prerender: Arc<Prerenderer>,
    /// The browser pool (`None` for `--role proxy`).
    pool: Option<Arc<BrowserPool>>,
    /// The refresher, when this instance's role runs one.
    pub refresher: Option<Arc<Refresher>>,
}

/// Listener threads when `public_threads` is not set: one per core. With
/// the proxy in a session of its own (as a service runs), two per core
/// gave both fewer requests per second and a longer tail on 2 shared
/// cores (bench/HISTORY.md, "Autogroup scheduling").
fn default_public_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) * DEFAULT_PUBLIC_THREADS_PER_CORE
}

/// The browser pool's settings from the configuration.
pub fn pool_config(config: &Config) -> anyhow::Result<PoolConfig> {
    let chrome = match &config.chrome {
        Some(c) => c.clone(),
        None => PoolConfig::find_chrome()
            .context("no browser found: install chromium or set --chrome / CHROME_PATH")?,
    };
    let mut pool = PoolConfig::with_chrome(chrome);
    pool.browsers = config.browsers;
    pool.tabs_per_browser = config.tabs_per_browser;
    pool.renders_per_browser = config.renders_per_browser;
    pool.browser_max_age = config.browser_max_age;
    pool.browser_max_rss_bytes = config.browser_max_rss_mb * 1024 * 1024;
    pool.render_timeout = config.render_timeout;
    pool.ready_timeout = config.ready_timeout;
    pool.origin_connect_timeout = config.origin_connect_timeout;
    pool.user_agent = config.render_user_agent.clone();
    Ok(pool)
}

fn bot_detector(
    families: &[Family],
    extra: Option<&std::path::Path>,
) -> anyhow::Result<BotDetector> {
    BotDetector::new(families, extra).context("bot_patterns")
}

/// The crawler verifier of `verify_crawlers`, on the current runtime.
fn crawler_verifier(config: &Config, metrics: &Metrics) -> anyhow::Result<Arc<CrawlerVerifier>> {
    let mode = config.verify_crawlers;
    let ranges =
        IpRanges::load(config.crawler_ip_ranges.as_deref()).context("crawler_ip_ranges")?;
    let dns: Option<Arc<dyn CrawlerDns>> = if mode == VerifyMode::Off {
        None
    } else {
        match HickoryDns::new(config.dns_resolver) {
            Ok(dns) => Some(Arc::new(dns)),
            // Enforce without a resolver would answer every real Googlebot
            // like a person: refuse to start instead.
            Err(e) if mode == VerifyMode::Enforce => anyhow::bail!("dns_resolver: {e}"),
            Err(e) => {
                tracing::warn!(error = %e, "crawler verification has no resolver: DNS-verified crawlers count as errors; set dns_resolver");
                None
            }
        }
    };
    if mode != VerifyMode::Off {
        for (crawler, ranges, source) in ranges.sources() {
            tracing::debug!(crawler, ranges, source, "crawler IP ranges");
        }
        if mode == VerifyMode::Enforce && config.crawler_ip_ranges.is_none() {
            tracing::warn!("verify_crawlers = enforce with the built-in IP range snapshots: point crawler_ip_ranges at current copies of the operators' lists (README, \"Crawlers that lie\")");
        }
    }
    Ok(CrawlerVerifier::new(mode, ranges, dns, metrics))
}

/// The page store and, on Redis, the shared job queue the split roles use.
type Stores = (Arc<dyn CacheStore>, Option<Arc<dyn JobQueue>>);

async fn open_store(config: &Config) -> anyhow::Result<Stores> {
    Ok(match &config.store {
        StoreTarget::Embedded => (MemoryStore::new(config.cache_max_bytes), None),
        StoreTarget::Redis(url) => {
            let store = RedisStore::connect(url, redis_options(config)?).context("redis")?;
            (store.clone(), Some(store))
        }
        StoreTarget::RedisCluster(nodes) => {
            let store =
                RedisStore::connect_cluster(nodes, redis_options(config)?).context("redis")?;
            (store.clone(), Some(store))
        }
    })
}

/// The Redis client options: `rediss://` servers are checked against the
/// system's roots plus `origin_ca_file`.
fn redis_options(config: &Config) -> anyhow::Result<RedisOptions> {
    Ok(RedisOptions {
        tls_roots: redis_tls_roots(config)?,
        key_prefix: config.key_prefix.clone(),
        ..RedisOptions::default()
    })
}

fn redis_tls_roots(config: &Config) -> anyhow::Result<Option<Arc<Vec<u8>>>> {
    match &config.origin_ca_file {
        None => Ok(None),
        Some(path) => crate::upstream::roots_pem(Some(path))
            .map(|pem| Some(Arc::new(pem)))
            .map_err(|e| anyhow::anyhow!("origin_ca_file: {e}")),
    }
}

/// How long the start-up check of Redis' eviction policy may take; it runs
/// in the background, so a Redis that is down does not delay the start.
const EVICTION_POLICY_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Warns once when Redis would evict keys that carry no TTL: the indexes,
/// refresh schedules and job streams, whose loss forgets pages or jobs.
/// Only pages carry a TTL, so `volatile-*` policies (or `noeviction`) fit.
async fn warn_if_redis_evicts_keys_without_ttl(url: String, tls_roots: Option<Arc<Vec<u8>>>) {
    let policy = async {
        let client =
            crate::cache::redis::redis_client(&url, tls_roots.as_deref().map(Vec::as_slice))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let (_, value): (String, String) = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut conn)
            .await?;
        Ok::<String, redis::RedisError>(value)
    };
    match tokio::time::timeout(EVICTION_POLICY_CHECK_TIMEOUT, policy).await {
        Ok(Ok(p)) if p.starts_with("allkeys-") => tracing::warn!(
            maxmemory_policy = %p,
            "redis may evict keys without a TTL (page indexes, refresh schedules, job streams); \
             set maxmemory-policy volatile-lru so only pages are evicted"
        ),
        Ok(Ok(p)) => tracing::debug!(maxmemory_policy = %p, "redis eviction policy"),
        // CONFIG is often disabled on managed Redis; nothing to say then.
        Ok(Err(e)) => tracing::debug!(error = %e, "cannot read redis' maxmemory-policy"),
        Err(_) => tracing::debug!("redis' maxmemory-policy not read in time"),
    }
}

pub async fn start(config: Arc<Config>) -> anyhow::Result<Running> {
    // Watched from the start: a SIGHUP's default action ends the process,
    // and one can come (`systemctl reload`) while the browsers launch.
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    raise_fd_limit();
    crate::upstream::install_crypto_provider();
    crate::upstream::init(config.origin_ca_file.as_deref())
        .map_err(|e| anyhow::anyhow!("origin_ca_file: {e}"))?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    match &config.store {
        StoreTarget::Redis(url) => {
            tokio::spawn(warn_if_redis_evicts_keys_without_ttl(
                url.clone(),
                redis_tls_roots(&config)?,
            ));
        }
        StoreTarget::RedisCluster(nodes) => {
            if let Some(first) = nodes.first() {
                tokio::spawn(warn_if_redis_evicts_keys_without_ttl(
                    first.clone(),
                    redis_tls_roots(&config)?,
                ));
            }
        }
        StoreTarget::Embedded => {}
    }
    let bots = Arc::new(bot_detector(
        &config.bot_families,
        config.bot_patterns.as_deref(),
    )?);
    let (store, jobs) = open_store(&config).await?;
    let jobs = match (config.role, jobs) {
        (Role::All, _) => None,
        (_, Some(jobs)) => Some(jobs),
        (role, None) => anyhow::bail!("role: {role:?} needs --redis (the shared job queue)"),
    };
    let public = match config.role {
        Role::Renderer => None,
        _ => Some(
            TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {} (listen)", config.listen))?,
        ),
    };
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin_listen)", config.admin_listen))?;
    let service = match (config.role, config.service.listen) {
        (Role::Renderer, _) | (_, None) => None,
        (_, Some(addr)) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (service_listen)"))?,
        ),
    };
    let public_addr = public.as_ref().map(|l| l.local_addr()).transpose()?;
    let service_addr = service.as_ref().map(|l| l.local_addr()).transpose()?;
    let admin_addr = admin.local_addr()?;

    let renders_here = config.role != Role::Proxy;
    let health = Arc::new(Health::new(renders_here));
    let metrics = Metrics::new();
    for site in config.sites.iter().filter(|s| !s.domain.is_empty()) {
        metrics.register_domain(&site.domain);
    }
    let stats = Arc::new(DomainStats::default());
    let (pool, prerender) = match (&jobs, renders_here) {
        (Some(jobs), false) => {
            let prerender = Prerenderer::dispatching(
                config.clone(),
                store.clone(),
                jobs.clone(),
                health.clone(),
                metrics.clone(),
                stats.clone(),
            );
            (None, prerender)
        }
        _ => {
            let pool = BrowserPool::launch(pool_config(&config)?)
                .await
                .context("cannot launch the browser pool")?;
            health.set_browser_up();
            let prerender = Prerenderer::new(
                config.clone(),
                store.clone(),
                pool.clone(),
                health.clone(),
                metrics.clone(),
                stats.clone(),
            );
            (Some(pool), prerender)
        }
    };
    let shared_queue = Arc::new(SharedQueueFigures::default());
    {
        let pool = pool.clone();
        let prerender = prerender.clone();
        let shared_queue = jobs.as_ref().map(|_| shared_queue.clone());
        metrics.on_scrape(move |m| {
            if let Some(pool) = &pool {
                m.sync_pool(&pool.stats());
            }
            m.sync_queue(&(&prerender.queue_stats()).into());
            if let Some(shared) = &shared_queue {
                let backlog = shared.backlog();
                m.set_shared_queue_depth(backlog.live, backlog.background);
            }
        });
    }
    let origin = OriginClient::with_limits(
        config.origin_timeout,
        PoolLimits {
            max_idle_per_origin: config.origin_max_idle,
            idle_timeout: config.origin_idle_timeout,
            connect_timeout: config.origin_connect_timeout,
        },
    );
    let refresher = Refresher::runs_in(config.role)
        .then(|| Refresher::new(config.clone(), prerender.clone(), origin.upstream().clone()));
    if let Some(refresher) = refresher.clone() {
        metrics.on_scrape(move |m| m.sync_refreshes(refresher.refreshes()));
    }
    // Compressed copies of hot pages: a quarter of the embedded store's bound.
    let prepared = Arc::new(PreparedPages::new(config.cache_max_bytes / 4));
    let verifier = crawler_verifier(&config, &metrics)?;
    {
        let verifier = verifier.clone();
        metrics.on_scrape(move |m| m.set_crawler_verdicts_cached(verifier.cached_verdicts()));
    }
    let mut crawler = CrawlerPath::new(
        config.clone(),
        prerender.clone(),
        origin.clone(),
        prepared.clone(),
    );
    if config.verify_crawlers == VerifyMode::Enforce {
        let budget = UnverifiedBudget::new(
            config.unverified_renders_per_minute,
            store.clone(),
            metrics.clone(),
        );
        crawler = crawler.with_render_gate(RenderGate::new(config.verify_crawlers, budget));
    }
    let crawler = Arc::new(crawler);
    let service_endpoint = service.as_ref().map(|_| {
        Arc::new(ServiceEndpoint::new(
            config.sites.clone(),
            bots.clone(),
            crawler.clone(),
            origin.clone(),
            metrics.clone(),
            stats.clone(),
            &config.service.tokens,
        ))
    });
    let proxy = Arc::new(
        PublicProxy::new(
            config.sites.clone(),
            bots,
            crawler.clone(),
            origin,
            metrics.clone(),
            stats.clone(),
        )
        .with_verification(
            verifier,
            TrustedProxies::new(config.trusted_proxies.clone()),
        ),
    );
    let api = Api::new(config.clone(), prerender.clone(), stats, prepared);
    let admin_api = Arc::new(Admin::new(
        health.clone(),
        metrics.clone(),
        AdminAuth::new(config.admin_token.as_deref()),
        api,
    ));
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let limits = ListenerLimits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
    };
    let certificates = match &config.tls {
        None => None,
        Some(plan) => Some(
            crate::listener::tls::SniCertificates::load(plan.clone())
                .map_err(|e| anyhow::anyhow!("tls_cert: {e}"))?,
        ),
    };
    let tls = certificates.as_ref().map(|c| c.server_config());
    tasks.spawn(reload_certificates_on_sighup(
        hangups,
        certificates,
        stop_rx.clone(),
    ));
    let proxy_protocol = config.proxy_protocol.then(|| {
        let trusted = TrustedProxies::new(config.trusted_proxies.clone());
        Arc::new(move |ip: std::net::IpAddr| trusted.contains(ip)) as listener::ProxyProtocolPeers
    });
    if let Some(public) = public {
        let threads = listener::ThreadPlan {
            count: config.public_threads.unwrap_or_else(default_public_threads),
            scheduling: config.public_scheduling,
        };
        tasks.spawn(listener::serve_on_threads(
            "public",
            public,
            threads,
            limits.clone(),
            proxy.clone(),
            move |req, peer| proxy.clone().handle(req, peer),
            listener::ConnectionSetup {
                tls,
                proxy_protocol,
            },
            stop_rx.clone(),
            config.shutdown_timeout,
        ));
    }
    if let (Some(service), Some(endpoint)) = (service, service_endpoint) {
        tasks.spawn(listener::serve(
            "service",
            service,
            limits.clone(),
            move |req, peer| endpoint.clone().handle(req, peer),
            stop_rx.clone(),
            config.shutdown_timeout,
        ));
    }
    let (admin_stop, admin_stop_rx) = watch::channel(false);
    let mut admin_task = JoinSet::new();
    admin_task.spawn(listener::serve(
        "admin",
        admin,
        limits,
        move |req, peer| admin_api.clone().handle(req, peer),
        admin_stop_rx,
        config.shutdown_timeout,
    ));
    tasks.spawn(forget_purged_pages(store.clone(), crawler, stop_rx.clone()));
    if let Some(refresher) = &refresher {
        refresher.spawn(&mut tasks, stop_rx.clone());
    }
    if let Some(jobs) = &jobs {
        spawn_backlog_watch(
            jobs.clone(),
            shared_queue.clone(),
            &mut tasks,
            stop_rx.clone(),
        );
        if config.role == Role::Renderer {
            JobConsumer::new(
                config.clone(),
                jobs.clone(),
                prerender.clone(),
                shared_queue,
            )
            .spawn(&mut tasks, stop_rx.clone());
        }
    }
    tasks.spawn(watch_store(store, health.clone(), metrics, stop_rx));
    health.set_listeners_up();
    tracing::info!(public_addr = ?public_addr, %admin_addr, service_addr = ?service_addr, tls = config.tls.is_some(), role = ?config.role, store = ?config.store, "listening");
    Ok(Running {
        public_addr,
        admin_addr,
        service_addr,
        health,
        stop,
        tasks,
        admin_stop,
        admin_task,
        prerender,
        pool,
        refresher,
    })
}

/// Reads the TLS listener's certificate files again on each SIGHUP: new
/// handshakes get the new certificates, open connections keep theirs. A
/// file that does not load keeps the old certificates (and says why).
/// Without TLS a SIGHUP (`systemctl reload`) changes nothing and does not
/// end the process.
async fn reload_certificates_on_sighup(
    hangups: std::io::Result<tokio::signal::unix::Signal>,
    certificates: Option<Arc<crate::listener::tls::SniCertificates>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut hangups = match hangups {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; TLS certificates are not reloaded");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            got = hangups.recv() => {
                if got.is_none() {
                    return;
                }
                match certificates.as_ref().map(|c| c.reload()) {
                    None => tracing::info!("SIGHUP: no TLS certificates to reload"),
                    Some(Ok(())) => tracing::info!("SIGHUP: TLS certificates reloaded"),
                    Some(Err(e)) => tracing::warn!(error = %e, "SIGHUP: TLS certificates not reloaded; the old ones stay"),
                }
            }
        }
    }
}

/// Purges announced by any instance drop this instance's prepared copies.
async fn forget_purged_pages(
    store: Arc<dyn CacheStore>,
    crawler: Arc<CrawlerPath>,
    mut stop: watch::Receiver<bool>,
) {
    let mut purges = store.subscribe_purges();
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return,
            e = purges.recv() => e,
        };
        match event {
            Ok(PurgeEvent::Page(key)) => crawler.forget(&key.to_string()),
            Ok(PurgeEvent::Domain(d)) => {
                crawler.forget(&format!("render:{d}:"));
            }
            Ok(PurgeEvent::All) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                crawler.forget("")
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Keeps readiness's `store` flag and the per-domain entry gauges current.
async fn watch_store(
    store: Arc<dyn CacheStore>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let ok = store_call(store.ping()).await.is_ok();
        health.set_degraded("store", !ok);
        if ok {
            if let Ok(domains) = store_call(store.domains()).await {
                for domain in domains {
                    if let Ok(n) = store_call(store.entries(&domain)).await {
                        metrics.set_cache_entries(&domain, n);
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(STORE_HEALTH_INTERVAL) => {}
        }
    }
}

impl Running {
    /// Turns readiness to `draining`, stops accepting, waits for in-flight
    /// requests (bounded by `shutdown_timeout` inside each listener), closes
    /// the browsers, and stops the admin listener last.
    pub async fn shutdown(mut self) {
        self.health.set_draining();
        let _ = self.stop.send(true);
        self.prerender.close();
        while self.tasks.join_next().await.is_some() {}
        if let Some(pool) = self.pool {
            pool.shutdown().await;
        }
        let _ = self.admin_stop.send(true);
        while self.admin_task.join_next().await.is_some() {}
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = start(Arc::new(config)).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Idle crawler connections are cheap but each is a file descriptor: lift
/// the soft limit to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// `serve` from the command line: resolves the config, starts logging and the
/// runtime, runs, and maps the outcome to an exit code.
pub fn main(args: &crate::cli::ServeArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let config = match Config::resolve(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("prerender-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("prerender-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prerender-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}
