//! Configuration: command-line flags, environment variables and the TOML
//! file resolved into one validated `Config` (flag > env > file > default;
//! clap already applies flag > env). Bad configuration is one `ConfigError`
//! naming the field, and the program never starts half-configured.

pub mod file;
pub mod plan;
pub mod redact;
pub mod service;
pub mod site;
mod value;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::bot::Family;
use crate::cli::ServeArgs;
use crate::verify::VerifyMode;
use file::FileConfig;
pub use plan::Plan;
pub use service::ServiceConfig;
pub use site::{OnRenderFailure, Site, SiteTable};
use value::{
    check_admin_token, check_dir, check_key_prefix, check_user_agent, check_with, count, one_of,
    parse_addr, parse_dns_resolver, parse_store, secs,
};
pub use value::{parse_families, parse_nets};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:3000";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:3001";
// Defaults of the parts are owned by the parts; these are their config-facing forms.
pub const DEFAULT_BROWSERS: u64 = crate::render::DEFAULT_BROWSERS as u64;
pub const DEFAULT_TABS_PER_BROWSER: u64 = crate::render::DEFAULT_TABS_PER_BROWSER as u64;
pub const DEFAULT_RENDERS_PER_BROWSER: u64 = crate::render::DEFAULT_RENDERS_PER_BROWSER as u64;
pub const DEFAULT_BROWSER_MAX_AGE: Duration = crate::render::DEFAULT_BROWSER_MAX_AGE;
pub const DEFAULT_BROWSER_MAX_RSS_MB: u64 =
    crate::render::DEFAULT_BROWSER_MAX_RSS_BYTES / (1024 * 1024);
pub const DEFAULT_RENDER_TIMEOUT: Duration = crate::render::DEFAULT_RENDER_TIMEOUT;
pub const DEFAULT_READY_TIMEOUT: Duration = crate::render::DEFAULT_READY_TIMEOUT;
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(3600);
/// Tokens shorter than these are allowed, with a warning at start.
const MIN_ADMIN_TOKEN_LEN: usize = 16;
const MIN_SERVICE_TOKEN_LEN: usize = 8;
pub const DEFAULT_QUEUE_CAPACITY: u64 = 1000;
pub const DEFAULT_CACHE_MAX_BYTES: u64 = crate::cache::DEFAULT_CACHE_MAX_BYTES;
/// Passthrough waits this long for the origin's response head before a 504.
pub const DEFAULT_ORIGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The origin connection bounds' defaults are those of `upstream::limits`.
pub const DEFAULT_ORIGIN_CONNECT_TIMEOUT: Duration =
    crate::upstream::limits::DEFAULT_CONNECT_TIMEOUT;
pub const DEFAULT_ORIGIN_MAX_IDLE: u64 = crate::upstream::limits::DEFAULT_MAX_IDLE;
pub const MAX_ORIGIN_MAX_IDLE: u64 = 65_536;
pub const DEFAULT_ORIGIN_IDLE_TIMEOUT: Duration = crate::upstream::limits::DEFAULT_IDLE_TIMEOUT;
/// Slowloris guard: a client has this long to send a complete request head.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Tens of thousands of idle crawlers: measured, a connection that has sent
/// nothing costs ≈ 5 KiB of proxy memory and one idle in keep-alive after a
/// request ≈ 30 KiB (hyper's read and write buffers), so 20,000 keep-alive
/// connections can take ≈ 600 MiB; lower it on small machines.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 20_000;
/// Listener threads per core when `public_threads` is not set.
pub const DEFAULT_PUBLIC_THREADS_PER_CORE: usize = 1;
/// Upper bound of `public_threads`.
pub const MAX_PUBLIC_THREADS: u64 = 1024;
/// Slightly above the render timeout so renders in flight can finish.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);
/// Upper bound of `unverified_renders_per_minute` (0 renders nothing for
/// unverified bots).
pub const MAX_UNVERIFIED_RENDERS_PER_MINUTE: u64 = 1_000_000;

/// Longest duration any setting accepts. Durations are added to the clock
/// and to each other (a render lock lives `render_timeout` × 3 + 5 s, a page
/// until `now + cache_ttl + stale_while_revalidate`); this keeps every such
/// sum far inside `SystemTime`, `Instant` and Redis's millisecond expiries.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// One line naming the field: `invalid browsers: must be at least 1`.
/// Control characters (a quoted TOML key may hold a newline) are shown
/// escaped, so the error stays one line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid {}: {}", one_line(field), one_line(message))]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Refuses a duration over [`MAX_DURATION`], naming `field`.
pub fn check_duration(field: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d > MAX_DURATION {
        return Err(ConfigError::new(
            field,
            format!(
                "{} s is more than the maximum of {} s (10 years)",
                d.as_secs(),
                MAX_DURATION.as_secs()
            ),
        ));
    }
    Ok(d)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    All,
    Proxy,
    Renderer,
}

/// Linux scheduling policy of the public listener's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadScheduling {
    /// `SCHED_OTHER`: a thread that wakes may preempt the running one.
    Normal,
    /// `SCHED_BATCH`: a thread that wakes waits for the running one's turn
    /// to end. On cores shared with the origin or Chromium, the proxy then
    /// handles more events per wake-up and stops starving the processes
    /// its requests wait on (see docs/PERFORMANCE.md).
    Batch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where pages, locks and queues live.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreTarget {
    /// In-process, bounded by `cache_max_bytes`.
    Embedded,
    Redis(String),
    /// Several node URLs: a Redis Cluster.
    RedisCluster(Vec<String>),
}

/// Shown in logs (the start-up line prints it): credentials redacted.
impl std::fmt::Debug for StoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreTarget::Embedded => f.write_str("Embedded"),
            StoreTarget::Redis(url) => f
                .debug_tuple("Redis")
                .field(&redact::redact_url(url))
                .finish(),
            StoreTarget::RedisCluster(nodes) => f
                .debug_tuple("RedisCluster")
                .field(
                    &nodes
                        .iter()
                        .map(|n| redact::redact_url(n))
                        .collect::<Vec<_>>(),
                )
                .finish(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub store: StoreTarget,
    /// Prepended to every Redis key and channel (`key_prefix`); empty: none.
    pub key_prefix: String,
    pub role: Role,
    pub admin_token: Option<String>,
    /// The prerender.io-compatible service listener (`service_listen`).
    pub service: ServiceConfig,
    pub chrome: Option<PathBuf>,
    /// User-Agent of every render (`render_user_agent`); `None`: the default.
    pub render_user_agent: Option<String>,
    pub browsers: usize,
    pub tabs_per_browser: usize,
    pub renders_per_browser: u32,
    pub browser_max_age: Duration,
    pub browser_max_rss_mb: u64,
    pub render_timeout: Duration,
    pub ready_timeout: Duration,
    pub cache_ttl: Duration,
    pub queue_capacity: usize,
    pub cache_max_bytes: u64,
    pub bot_families: Vec<Family>,
    pub bot_patterns: Option<PathBuf>,
    pub log_format: LogFormat,
    pub origin_timeout: Duration,
    pub origin_connect_timeout: Duration,
    pub origin_max_idle: usize,
    pub origin_idle_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// Threads serving public connections; `None`: one per core.
    pub public_threads: Option<usize>,
    pub public_scheduling: ThreadScheduling,
    pub shutdown_timeout: Duration,
    /// Peers whose `X-Forwarded-For` names the client (`trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub verify_crawlers: VerifyMode,
    /// DNS server for crawler verification; `None`: the system's.
    pub dns_resolver: Option<SocketAddr>,
    pub unverified_renders_per_minute: u64,
    /// Directory of crawler IP range files replacing the built-in ones.
    pub crawler_ip_ranges: Option<PathBuf>,
    /// Extra CAs for `https://` origins and `rediss://` Redis, added to the
    /// system roots (checked at start: a readable PEM file with at least one
    /// certificate).
    pub origin_ca_file: Option<PathBuf>,
    /// TLS on the public listener: the default certificate and the
    /// sites' own (checked at start); `None`: plain HTTP.
    pub tls: Option<crate::certificates::CertPlan>,
    /// Connections from `trusted_proxies` start with a PROXY protocol header.
    pub proxy_protocol: bool,
    pub plans: BTreeMap<String, Plan>,
    pub sites: SiteTable,
    /// Fields whose origin URL held a user or password, removed from it.
    pub origin_credentials: Vec<String>,
}

/// `named!(check(o.field, …))` is `check("field", o.field.clone(), …)`: the
/// errors of a check name the option it was given.
macro_rules! named {
    ($check:ident($o:ident.$field:ident $(, $arg:expr)* $(,)?)) => {
        $check(stringify!($field), $o.$field.clone() $(, $arg)*)
    };
}

impl Config {
    /// Resolves flags/env (already merged by clap) over the config file over defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Self::from_parts(args, file)
    }

    /// Flags and environment variables (`args`, already merged by clap) over
    /// the file's options over defaults, each option checked by name.
    pub fn from_parts(args: &ServeArgs, file: FileConfig) -> Result<Config, ConfigError> {
        let FileConfig {
            options,
            sites: site_files,
            plans,
        } = file;
        let single_site = args.origin.is_some() || options.origin.is_some();
        site::refuse_single_site_options(args, &options, single_site)?;
        let o = args.clone().over(options);

        let store = parse_store(o.redis.as_deref())?;
        let key_prefix = check_key_prefix(o.key_prefix.clone().unwrap_or_default(), &store)?;
        let role = named!(one_of(
            o.role,
            Role::All,
            &[
                ("all", Role::All),
                ("proxy", Role::Proxy),
                ("renderer", Role::Renderer),
            ]
        ))?;
        if role != Role::All && store == StoreTarget::Embedded {
            return Err(ConfigError::new(
                "role",
                "roles proxy and renderer share work through Redis: set --redis",
            ));
        }
        let trusted_proxies = parse_nets(o.trusted_proxies.as_deref().unwrap_or("").split(','))
            .map_err(|e| ConfigError::new("trusted_proxies", e))?;
        let proxy_protocol = o.proxy_protocol.unwrap_or(false);
        if proxy_protocol && trusted_proxies.is_empty() {
            return Err(ConfigError::new(
                "proxy_protocol",
                "the PROXY header is read only from trusted_proxies: list your load balancers there",
            ));
        }
        let unverified_renders_per_minute = o
            .unverified_renders_per_minute
            .unwrap_or(crate::verify::budget::DEFAULT_UNVERIFIED_RENDERS_PER_MINUTE);
        if unverified_renders_per_minute > MAX_UNVERIFIED_RENDERS_PER_MINUTE {
            return Err(ConfigError::new(
                "unverified_renders_per_minute",
                format!(
                    "{unverified_renders_per_minute} is out of range 0..={MAX_UNVERIFIED_RENDERS_PER_MINUTE}"
                ),
            ));
        }
        let tls = resolve_tls(o.tls_cert.clone(), o.tls_key.clone(), &site_files)?;
        let plans = plan::resolve_plans(&plans)?;
        let sites = site::resolve_sites(&site_files, &o, &plans)?;
        let origin_credentials = o
            .origin
            .iter()
            .map(|origin| ("origin".to_string(), origin))
            .chain(
                site_files
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (format!("sites[{i}].origin"), &f.origin)),
            )
            .filter(|(_, origin)| site::origin_credentials(origin))
            .map(|(field, _)| field)
            .collect();

        Ok(Config {
            listen: named!(parse_addr(o.listen, DEFAULT_LISTEN))?,
            admin_listen: named!(parse_addr(o.admin_listen, DEFAULT_ADMIN_LISTEN))?,
            store,
            key_prefix,
            role,
            admin_token: check_admin_token(o.admin_token)?,
            service: ServiceConfig::parse(o.service_listen, o.service_tokens)?,
            // Only a process that renders launches it.
            chrome: match role {
                Role::Proxy => o.chrome,
                _ => named!(check_with(o.chrome, crate::render::check_chrome))?,
            },
            render_user_agent: check_user_agent(o.render_user_agent)?,
            browsers: named!(count(o.browsers, DEFAULT_BROWSERS, 64))? as usize,
            tabs_per_browser: named!(count(o.tabs_per_browser, DEFAULT_TABS_PER_BROWSER, 64))?
                as usize,
            renders_per_browser: named!(count(
                o.renders_per_browser,
                DEFAULT_RENDERS_PER_BROWSER,
                1_000_000
            ))? as u32,
            browser_max_age: named!(secs(o.browser_max_age, DEFAULT_BROWSER_MAX_AGE))?,
            browser_max_rss_mb: named!(count(
                o.browser_max_rss,
                DEFAULT_BROWSER_MAX_RSS_MB,
                1 << 20
            ))?,
            render_timeout: named!(secs(o.render_timeout, DEFAULT_RENDER_TIMEOUT))?,
            ready_timeout: named!(secs(o.ready_timeout, DEFAULT_READY_TIMEOUT))?,
            // cache_ttl = 0 is meaningful: store nothing.
            cache_ttl: match &o.cache_ttl {
                Some(v) => plan::parse_duration(v, "cache_ttl")?,
                None => DEFAULT_CACHE_TTL,
            },
            queue_capacity: named!(count(o.queue_capacity, DEFAULT_QUEUE_CAPACITY, 1 << 24))?
                as usize,
            cache_max_bytes: named!(count(o.cache_max_bytes, DEFAULT_CACHE_MAX_BYTES, u64::MAX))?,
            bot_families: parse_families(o.bot_families)?,
            bot_patterns: named!(check_dir(o.bot_patterns))?,
            log_format: named!(one_of(
                o.log_format,
                LogFormat::Text,
                &[("text", LogFormat::Text), ("json", LogFormat::Json)]
            ))?,
            origin_timeout: named!(secs(o.origin_timeout, DEFAULT_ORIGIN_TIMEOUT))?,
            origin_connect_timeout: named!(secs(
                o.origin_connect_timeout,
                DEFAULT_ORIGIN_CONNECT_TIMEOUT
            ))?,
            origin_max_idle: named!(count(
                o.origin_max_idle,
                DEFAULT_ORIGIN_MAX_IDLE,
                MAX_ORIGIN_MAX_IDLE
            ))? as usize,
            origin_idle_timeout: named!(secs(o.origin_idle_timeout, DEFAULT_ORIGIN_IDLE_TIMEOUT))?,
            header_read_timeout: named!(secs(o.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT))?,
            max_connections: named!(count(o.max_connections, DEFAULT_MAX_CONNECTIONS, 1 << 24))?
                as usize,
            public_threads: match o.public_threads {
                None => None,
                threads => Some(count("public_threads", threads, 1, MAX_PUBLIC_THREADS)? as usize),
            },
            public_scheduling: named!(one_of(
                o.public_scheduling,
                ThreadScheduling::Batch,
                &[
                    ("batch", ThreadScheduling::Batch),
                    ("normal", ThreadScheduling::Normal),
                ]
            ))?,
            shutdown_timeout: named!(secs(o.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT))?,
            trusted_proxies,
            verify_crawlers: named!(one_of(
                o.verify_crawlers,
                VerifyMode::Log,
                &[
                    ("off", VerifyMode::Off),
                    ("log", VerifyMode::Log),
                    ("enforce", VerifyMode::Enforce),
                ]
            ))?,
            dns_resolver: parse_dns_resolver(o.dns_resolver)?,
            unverified_renders_per_minute,
            crawler_ip_ranges: named!(check_with(o.crawler_ip_ranges, |dir| {
                crate::verify::ranges::IpRanges::load(Some(dir))
                    .map(drop)
                    .map_err(|e| e.to_string())
            }))?,
            origin_ca_file: named!(check_with(o.origin_ca_file, |path| {
                crate::upstream::load_ca_file(path).map(drop)
            }))?,
            tls,
            proxy_protocol,
            plans,
            sites,
            origin_credentials,
        })
    }

    /// The cache lifetime of a site's pages: its plan's `cache_ttl` if the
    /// plan sets one, else the global `cache_ttl`.
    pub fn ttl_for(&self, site: &Site) -> Duration {
        site.plan.cache_ttl.unwrap_or(self.cache_ttl)
    }

    /// Lines for `check-config` and the start-up log: one per plan whose
    /// pages leave the stale window before the refresher replaces them
    /// (crawlers then get cold misses, a choice some sites make on purpose,
    /// so a warning and not an error), one per origin URL whose credentials
    /// were removed and one per short token.
    pub fn warnings(&self) -> Vec<String> {
        self.plans
            .values()
            .filter_map(|plan| plan.stale_gap_warning(plan.cache_ttl.unwrap_or(self.cache_ttl)))
            .chain(self.origin_credentials.iter().map(|field| {
                format!(
                    "{field}: the user and password in the origin URL are not sent to the origin; they were removed"
                )
            }))
            .chain(
                self.admin_token
                    .as_ref()
                    .filter(|t| t.len() < MIN_ADMIN_TOKEN_LEN)
                    .map(|_| {
                        format!(
                            "admin_token: shorter than {MIN_ADMIN_TOKEN_LEN} characters, easy to guess (e.g. `openssl rand -hex 24`)"
                        )
                    }),
            )
            .chain(
                self.service
                    .tokens
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.len() < MIN_SERVICE_TOKEN_LEN)
                    .map(|(i, _)| {
                        format!(
                            "service_tokens: token {} is shorter than {MIN_SERVICE_TOKEN_LEN} characters, easy to guess",
                            i + 1
                        )
                    }),
            )
            .collect()
    }
}

/// The certificates of a TLS listener: `tls_cert` + `tls_key` (the
/// default, for any name no site claims) and the sites' own, each file
/// read and each key checked against its certificate now, so a bad file
/// stops the start with its field named.
fn resolve_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    sites: &[file::SiteFile],
) -> Result<Option<crate::certificates::CertPlan>, ConfigError> {
    use crate::certificates::{load_pair, CertFiles, CertPlan};
    let mut site_certs = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        let field = |name: &str| format!("sites[{i}].{name}");
        let files = match (&site.tls_cert, &site.tls_key) {
            (None, None) => continue,
            (Some(cert), Some(key)) => CertFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            },
            (Some(_), None) => {
                return Err(ConfigError::new(field("tls_key"), "tls_cert needs tls_key"))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    field("tls_cert"),
                    "tls_key needs tls_cert",
                ))
            }
        };
        load_pair(&files).map_err(|e| ConfigError::new(field("tls_cert"), e))?;
        let domain = site::normalise_domain(&site.domain).unwrap_or_default();
        site_certs.push((domain, files));
    }
    let default = match (cert, key) {
        (None, None) if site_certs.is_empty() => return Ok(None),
        (None, None) => {
            return Err(ConfigError::new(
                "tls_cert",
                "sites have certificates: set tls_cert and tls_key too (the certificate for any other name)",
            ))
        }
        (Some(cert), Some(key)) => CertFiles { cert, key },
        (Some(_), None) => return Err(ConfigError::new("tls_key", "tls_cert needs tls_key")),
        (None, Some(_)) => return Err(ConfigError::new("tls_cert", "tls_key needs tls_cert")),
    };
    load_pair(&default).map_err(|e| ConfigError::new("tls_cert", e))?;
    Ok(Some(CertPlan {
        default,
        sites: site_certs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::DurationValue;

    /// Held by tests that parse the command line (which reads the
    /// environment) or set environment variables.
    static ENV: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

    fn resolve(args: ServeArgs, toml: &str) -> Result<Config, ConfigError> {
        Config::from_parts(&args, FileConfig::parse(toml)?)
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = resolve(ServeArgs::default(), "").unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:3000");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:3001");
        assert_eq!(c.store, StoreTarget::Embedded);
        assert_eq!(
            (c.browsers, c.tabs_per_browser, c.renders_per_browser),
            (2, 4, 20)
        );
        assert_eq!(c.render_timeout, Duration::from_secs(20));
        assert_eq!(c.ready_timeout, Duration::from_secs(10));
        assert_eq!(c.cache_max_bytes, 268_435_456);
        assert!(!c
            .bot_families
            .iter()
            .any(|f| matches!(f, Family::Monitoring | Family::HttpLibraries)));
        assert_eq!(c.bot_families.len(), 7);
        assert!(c.sites.is_empty());
    }

    #[test]
    fn key_prefix_service_and_render_user_agent_from_flag_env_or_file() {
        let c = resolve(
            ServeArgs::default(),
            "redis = \"redis://127.0.0.1:6379\"\nkey_prefix = \"shop-a:\"\n\
             service_listen = \"127.0.0.1:3002\"\nservice_tokens = [\"token-number-1\"]\n\
             render_user_agent = \"MyRenderer/1.0 Prerender\"",
        )
        .unwrap();
        assert_eq!(c.key_prefix, "shop-a:");
        assert_eq!(c.service.listen, Some("127.0.0.1:3002".parse().unwrap()));
        assert_eq!(c.service.tokens, ["token-number-1"]);
        assert_eq!(
            c.render_user_agent.as_deref(),
            Some("MyRenderer/1.0 Prerender")
        );
        let flag = ServeArgs {
            key_prefix: Some("flag:".into()),
            ..Default::default()
        };
        let c = resolve(
            flag,
            "redis = \"redis://127.0.0.1:6379\"\nkey_prefix = \"file:\"",
        )
        .unwrap();
        assert_eq!(c.key_prefix, "flag:", "a flag wins over the file");
        assert_eq!(resolve(ServeArgs::default(), "").unwrap().key_prefix, "");
        for (toml, field) in [
            ("key_prefix = \"a:\"", "key_prefix"),
            ("redis = \"redis://h\"\nkey_prefix = \"a b\"", "key_prefix"),
            ("render_user_agent = \"a\\nb\"", "render_user_agent"),
            ("service_listen = \"nowhere\"", "service_listen"),
        ] {
            let e = resolve(ServeArgs::default(), toml).unwrap_err();
            assert_eq!(e.field, field, "{toml}: {e}");
        }
    }

    #[test]
    fn the_default_plan_is_self_hosted_for_origin_mode_and_sites_without_one() {
        let args = ServeArgs {
            origin: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        };
        let c = resolve(args, "").unwrap();
        let site = c.sites.lookup("any.test").unwrap();
        assert_eq!(site.plan.name, "self-hosted");
        assert_eq!(site.plan.max_entries, None);
        let c = resolve(
            ServeArgs::default(),
            "[[sites]]\ndomain = \"a.test\"\norigin = \"http://x\"",
        )
        .unwrap();
        assert_eq!(c.sites.lookup("a.test").unwrap().plan.name, "self-hosted");
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn cache_ttl_takes_seconds_or_a_duration() {
        for (toml, secs) in [
            ("cache_ttl = 600", 600),
            ("cache_ttl = \"10m\"", 600),
            ("cache_ttl = \"1h\"", 3600),
            ("cache_ttl = 0", 0),
        ] {
            let c = resolve(ServeArgs::default(), toml).unwrap();
            assert_eq!(c.cache_ttl, Duration::from_secs(secs), "{toml}");
        }
        let e = resolve(ServeArgs::default(), "cache_ttl = \"soon\"").unwrap_err();
        assert_eq!(e.field, "cache_ttl");
        // The flag (seconds) wins over the file.
        let args = ServeArgs {
            cache_ttl: Some(DurationValue::Secs(5)),
            ..Default::default()
        };
        assert_eq!(
            resolve(args, "cache_ttl = \"1h\"").unwrap().cache_ttl,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn every_duration_option_takes_seconds_or_a_duration_on_flags_env_and_file() {
        use clap::Parser;
        let fields = [
            "browser_max_age",
            "render_timeout",
            "ready_timeout",
            "cache_ttl",
            "origin_timeout",
            "origin_connect_timeout",
            "origin_idle_timeout",
            "header_read_timeout",
            "shutdown_timeout",
        ];
        let value = |c: &Config, field: &str| match field {
            "browser_max_age" => c.browser_max_age,
            "render_timeout" => c.render_timeout,
            "ready_timeout" => c.ready_timeout,
            "cache_ttl" => c.cache_ttl,
            "origin_timeout" => c.origin_timeout,
            "origin_connect_timeout" => c.origin_connect_timeout,
            "origin_idle_timeout" => c.origin_idle_timeout,
            "header_read_timeout" => c.header_read_timeout,
            "shutdown_timeout" => c.shutdown_timeout,
            other => panic!("{other}"),
        };
        for field in fields {
            for (toml, secs) in [("\"90s\"", 90), ("\"2m\"", 120), ("45", 45)] {
                let c = resolve(ServeArgs::default(), &format!("{field} = {toml}")).unwrap();
                assert_eq!(
                    value(&c, field),
                    Duration::from_secs(secs),
                    "{field} = {toml}"
                );
            }
            let flag = format!("--{}", field.replace('_', "-"));
            let _env = ENV.lock();
            for (given, secs) in [("1m", 60), ("30", 30)] {
                let cli =
                    crate::cli::Cli::try_parse_from(["prerender-proxy", flag.as_str(), given])
                        .unwrap();
                let c = resolve(cli.serve, "").unwrap();
                assert_eq!(
                    value(&c, field),
                    Duration::from_secs(secs),
                    "{flag} {given}"
                );
            }
            let e = resolve(ServeArgs::default(), &format!("{field} = \"soon\"")).unwrap_err();
            assert_eq!(e.field, field);
        }
        // Below a second is refused where zero is (every option but cache_ttl).
        let e = resolve(ServeArgs::default(), "render_timeout = \"500ms\"").unwrap_err();
        assert_eq!(e.field, "render_timeout");
    }

    #[test]
    fn flag_wins_over_file() {
        let args = ServeArgs {
            browsers: Some(3),
            ..Default::default()
        };
        let c = resolve(args, "browsers = 5\ntabs_per_browser = 2").unwrap();
        assert_eq!(c.browsers, 3);
        assert_eq!(c.tabs_per_browser, 2);
    }

    #[test]
    fn a_flag_beats_the_environment_beats_the_file_beats_the_default() {
        use clap::{CommandFactory, Parser};
        type Read = fn(&Config) -> String;
        fn list(items: Vec<String>) -> String {
            items.join(" ")
        }
        let nets: Read = |c| list(c.trusted_proxies.iter().map(|n| n.to_string()).collect());
        let families: Read = |c| list(c.bot_families.iter().map(|f| f.name().into()).collect());
        // An option; its value on the flag, in the environment and in the
        // file (TOML, with what else it needs); how `Config` shows it; and
        // what it is from the default, the file, the environment, the flag.
        let cases: [(&str, [&str; 3], Read, [&str; 4]); 8] = [
            ("browsers", ["3", "4", "5"], |c| c.browsers.to_string(), ["2", "5", "4", "3"]),
            (
                "listen",
                ["127.0.0.1:1", "127.0.0.1:2", "\"127.0.0.1:3\""],
                |c| c.listen.to_string(),
                ["0.0.0.0:3000", "127.0.0.1:3", "127.0.0.1:2", "127.0.0.1:1"],
            ),
            (
                "render_timeout",
                ["1m", "30", "\"2m\""],
                |c| c.render_timeout.as_secs().to_string(),
                ["20", "120", "30", "60"],
            ),
            (
                "cache_ttl",
                ["45", "1h", "600"],
                |c| c.cache_ttl.as_secs().to_string(),
                ["3600", "600", "3600", "45"],
            ),
            (
                "trusted_proxies",
                ["10.0.0.0/8", "192.0.2.1, ::1", "[\"198.51.100.0/24\", \"198.51.100.7\"]"],
                nets,
                ["", "198.51.100.0/24 198.51.100.7/32", "192.0.2.1/32 ::1/128", "10.0.0.0/8"],
            ),
            (
                "bot_families",
                ["search-engines", "seo-tools,monitoring", "[\"ai-search\"]"],
                families,
                [
                    "search-engines social-previews ai-training ai-search ai-user-fetch seo-tools feed-readers",
                    "ai-search",
                    "seo-tools monitoring",
                    "search-engines",
                ],
            ),
            (
                "redis",
                ["redis://f:1", "redis://e:1,redis://e:2", "[\"redis://t:1\", \"redis://t:2\"]"],
                |c| format!("{:?}", c.store),
                [
                    "Embedded",
                    "RedisCluster([\"redis://t:1\", \"redis://t:2\"])",
                    "RedisCluster([\"redis://e:1\", \"redis://e:2\"])",
                    "Redis(\"redis://f:1\")",
                ],
            ),
            (
                "proxy_protocol",
                ["true", "off", "true\ntrusted_proxies = \"10.0.0.1\""],
                |c| c.proxy_protocol.to_string(),
                ["false", "true", "false", "true"],
            ),
        ];
        let command = crate::cli::Cli::command();
        let _env = ENV.lock();
        for (option, [flag, env_value, file], read, expected) in cases {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == option)
                .unwrap();
            let env = arg.get_env().unwrap().to_owned();
            let flag = format!("--{}={flag}", arg.get_long().unwrap());
            let file = format!("{option} = {file}");
            let resolved = |argv: &[&str], toml: &str| {
                let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
                read(&resolve(cli.serve, toml).unwrap())
            };
            std::env::remove_var(&env);
            let default = resolved(&["prerender-proxy"], "");
            let from_file = resolved(&["prerender-proxy"], &file);
            std::env::set_var(&env, env_value);
            let from_env = resolved(&["prerender-proxy"], &file);
            let from_flag = resolved(&["prerender-proxy", &flag], &file);
            std::env::remove_var(&env);
            assert_eq!(
                [default, from_file, from_env, from_flag],
                expected,
                "{option}"
            );
        }
    }

    #[test]
    fn durations_in_the_file_are_seconds_or_text_at_the_top_and_in_plans() {
        for (value, secs) in [("3600", 3600), ("\"1h\"", 3600), ("\"90s\"", 90)] {
            let c = resolve(
                ServeArgs::default(),
                &format!("cache_ttl = {value}\n[plans.x]\ncache_ttl = {value}"),
            )
            .unwrap();
            assert_eq!(c.cache_ttl, Duration::from_secs(secs), "{value}");
            assert_eq!(c.plans["x"].cache_ttl, Some(Duration::from_secs(secs)));
        }
    }

    #[test]
    fn keys_that_are_no_top_level_option_are_refused_by_name() {
        // `config` names the file itself.
        for key in ["browserz", "config", "site"] {
            let e = FileConfig::parse(&format!("{key} = 1")).unwrap_err();
            assert_eq!(e.field, key);
            assert!(e.message.contains("unknown field"), "{e}");
            assert!(e.message.contains("`sites`, `plans`"), "{e}");
        }
    }

    #[test]
    fn public_threads_default_to_one_per_core_and_are_bounded() {
        assert_eq!(
            resolve(ServeArgs::default(), "").unwrap().public_threads,
            None
        );
        let args = ServeArgs {
            public_threads: Some(3),
            ..Default::default()
        };
        assert_eq!(
            resolve(args, "public_threads = 1").unwrap().public_threads,
            Some(3)
        );
        assert_eq!(
            resolve(ServeArgs::default(), "public_threads = 1")
                .unwrap()
                .public_threads,
            Some(1)
        );
        for bad in ["public_threads = 0", "public_threads = 1025"] {
            assert_eq!(
                resolve(ServeArgs::default(), bad).unwrap_err().field,
                "public_threads"
            );
        }
    }

    #[test]
    fn origin_idle_bounds_have_defaults_and_are_checked_by_name() {
        let c = resolve(ServeArgs::default(), "").unwrap();
        assert_eq!(c.origin_max_idle, 256);
        assert_eq!(c.origin_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.origin_connect_timeout, Duration::from_secs(5));
        let args = ServeArgs {
            origin_max_idle: Some(4),
            ..Default::default()
        };
        let c = resolve(
            args,
            "origin_max_idle = 8\norigin_idle_timeout = 5\norigin_connect_timeout = 2",
        )
        .unwrap();
        assert_eq!(c.origin_max_idle, 4);
        assert_eq!(c.origin_idle_timeout, Duration::from_secs(5));
        assert_eq!(c.origin_connect_timeout, Duration::from_secs(2));
        for (bad, field) in [
            ("origin_max_idle = 0", "origin_max_idle"),
            ("origin_max_idle = 65537", "origin_max_idle"),
            ("origin_idle_timeout = 0", "origin_idle_timeout"),
            ("origin_connect_timeout = 0", "origin_connect_timeout"),
        ] {
            assert_eq!(resolve(ServeArgs::default(), bad).unwrap_err().field, field);
        }
    }

    #[test]
    fn a_named_choice_outside_its_set_lists_the_names_allowed() {
        for (bad, message) in [
            ("role = \"both\"", "\"both\" is not all, proxy or renderer"),
            ("log_format = \"xml\"", "\"xml\" is not text or json"),
            (
                "public_scheduling = \"fifo\"",
                "\"fifo\" is not batch or normal",
            ),
        ] {
            assert_eq!(
                resolve(ServeArgs::default(), bad).unwrap_err().message,
                message
            );
        }
    }

    #[test]
    fn public_threads_are_batch_scheduled_unless_set_to_normal() {
        assert_eq!(
            resolve(ServeArgs::default(), "").unwrap().public_scheduling,
            ThreadScheduling::Batch
        );
        let args = ServeArgs {
            public_scheduling: Some("normal".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(args, "public_scheduling = \"batch\"")
                .unwrap()
                .public_scheduling,
            ThreadScheduling::Normal
        );
        assert_eq!(
            resolve(ServeArgs::default(), "public_scheduling = \"fifo\"")
                .unwrap_err()
                .field,
            "public_scheduling"
        );
    }

    #[test]
    fn crawler_verification_options_have_spec_defaults_and_named_errors() {
        let c = resolve(ServeArgs::default(), "").unwrap();
        assert_eq!(c.verify_crawlers, VerifyMode::Log);
        assert_eq!(c.unverified_renders_per_minute, 60);
        assert!(c.trusted_proxies.is_empty());
        assert_eq!(c.dns_resolver, None);
        assert_eq!(c.crawler_ip_ranges, None);
        let args = ServeArgs {
            verify_crawlers: Some("enforce".into()),
            trusted_proxies: Some("10.0.0.0/8, 127.0.0.1".into()),
            ..Default::default()
        };
        let c = resolve(
            args,
            "verify_crawlers = \"off\"\ntrusted_proxies = [\"192.0.2.0/24\"]\n\
             dns_resolver = \"127.0.0.1:5353\"\nunverified_renders_per_minute = 0",
        )
        .unwrap();
        assert_eq!(c.verify_crawlers, VerifyMode::Enforce);
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.dns_resolver, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(c.unverified_renders_per_minute, 0);
        for (bad, field) in [
            ("verify_crawlers = \"strict\"", "verify_crawlers"),
            ("trusted_proxies = \"10.0.0.0/40\"", "trusted_proxies"),
            ("dns_resolver = \"ns1.example\"", "dns_resolver"),
            (
                "unverified_renders_per_minute = 1000001",
                "unverified_renders_per_minute",
            ),
            (
                "crawler_ip_ranges = \"/nonexistent-dir\"",
                "crawler_ip_ranges",
            ),
        ] {
            assert_eq!(resolve(ServeArgs::default(), bad).unwrap_err().field, field);
        }
    }

    #[test]
    fn every_sites_key_is_a_flag_and_an_env_variable_of_the_single_site() {
        use clap::Parser;
        // The one test that reads PRERENDER_IGNORE: one regex a line.
        let _env = ENV.lock();
        std::env::set_var("PRERENDER_IGNORE", "^/api/\n\n^/admin\n");
        let cli = crate::cli::Cli::try_parse_from([
            "prerender-proxy",
            "--origin",
            "https://shop.netlify.test",
            "--origin-host",
            "Shop.Netlify.test",
            "--scheme",
            "http",
            "--query-params",
            "sort, page",
            "--mobile-variant",
            "--strip-scripts=false",
            "--on-render-failure",
            "error",
        ]);
        let repeated = crate::cli::Cli::try_parse_from([
            "prerender-proxy",
            "--origin",
            "http://127.0.0.1:9",
            "--ignore",
            "^/a",
            "--ignore",
            "^/b",
            "--only",
            "^/products/",
            "--only",
            "^/blog/",
            "--strip-scripts=off",
            "--mobile-variant=1",
        ]);
        std::env::remove_var("PRERENDER_IGNORE");
        let c = resolve(cli.unwrap().serve, "").unwrap();
        let site = c.sites.lookup("www.example.test").unwrap();
        assert_eq!(site.origin_host.as_deref(), Some("shop.netlify.test"));
        assert!(site.origin_tls);
        assert_eq!(site.scheme, "http");
        assert_eq!(site.query_params, ["page", "sort"]);
        assert!(site.mobile_variant);
        assert!(!site.strip_scripts);
        assert_eq!(site.on_render_failure, OnRenderFailure::Error);
        assert!(site.ignore.is_match("/api/x") && site.ignore.is_match("/admin"));
        assert!(!site.ignore.is_match("/products"));
        // Settings that change renders change the settings hash.
        let plain = resolve(
            ServeArgs {
                origin: Some("https://shop.netlify.test".into()),
                ..Default::default()
            },
            "",
        )
        .unwrap();
        assert_ne!(
            plain.sites.lookup("x.test").unwrap().settings_hash,
            site.settings_hash
        );
        let site = resolve(repeated.unwrap().serve, "").unwrap();
        let site = site.sites.lookup("x.test").unwrap();
        assert!(site.ignore.is_match("/a1") && site.ignore.is_match("/b1"));
        assert!(!site.ignore.is_match("/c"));
        assert!(site.only.is_match("/products/1") && site.only.is_match("/blog/x"));
        assert!(!site.only.is_match("/about"));
        // Booleans read as the environment writes them (1/0, yes/no, on/off).
        assert!(!site.strip_scripts);
        assert!(site.mobile_variant);
    }

    #[test]
    fn the_single_sites_options_are_also_keys_at_the_top_of_the_file() {
        let toml = r#"
            origin = "https://shop.netlify.test"
            domains = ["www.example.test"]
            origin_host = "shop.netlify.test"
            scheme = "http"
            ignore = ["^/api/", "^/admin"]
            only = "^/products/\n^/blog/"
            query_params = ["sort", "page"]
            mobile_variant = true
            strip_scripts = false
            on_render_failure = "error"
            shadow_dom = "flatten"
            keep_noscript = true
            max_render_height = 4000
            client_redirect_status = 301
        "#;
        let c = resolve(ServeArgs::default(), toml).unwrap();
        assert!(c.sites.lookup("other.test").is_none());
        let s = c.sites.lookup("www.example.test").unwrap();
        assert_eq!(s.origin_host.as_deref(), Some("shop.netlify.test"));
        assert_eq!(s.scheme, "http");
        assert!(s.ignore.is_match("/api/x") && s.ignore.is_match("/admin"));
        assert!(s.only.is_match("/products/1") && s.only.is_match("/blog/x"));
        assert!(!s.only.is_match("/about"));
        assert_eq!(s.query_params, ["page", "sort"]);
        assert!(s.mobile_variant);
        assert!(!s.strip_scripts);
        assert_eq!(s.on_render_failure, OnRenderFailure::Error);
        let snapshot = site::SnapshotOptions {
            shadow_dom: crate::render::ShadowDom::Flatten,
            keep_noscript: true,
            max_render_height: 4000,
            client_redirect_status: 301,
        };
        assert_eq!(s.snapshot, snapshot);
        // `domain`, as the flag is named, and a comma list, as the
        // environment holds it.
        for domains in [
            "domain = \"www.example.test\"",
            "domains = \"www.example.test, shop.example.test\"",
            "domain = [\"www.example.test\"]",
        ] {
            let file = toml.replace("domains = [\"www.example.test\"]", domains);
            let c = resolve(ServeArgs::default(), &file).unwrap();
            assert!(c.sites.lookup("www.example.test").is_some(), "{domains}");
            assert!(c.sites.lookup("other.test").is_none(), "{domains}");
        }
        // A flag wins over the file's key.
        let flag = ServeArgs {
            scheme: Some("https".into()),
            strip_scripts: Some(true),
            keep_noscript: Some(false),
            ..Default::default()
        };
        let s = resolve(flag, toml).unwrap();
        let s = s.sites.lookup("www.example.test").unwrap();
        assert_eq!(s.scheme, "https");
        assert!(s.strip_scripts);
        assert!(!s.snapshot.keep_noscript);
        // Bad values are named; without `origin` the keys would do nothing.
        let e = resolve(ServeArgs::default(), &toml.replace("\"http\"", "\"ftp\"")).unwrap_err();
        assert_eq!(e.field, "scheme");
        let e = resolve(ServeArgs::default(), "strip_scripts = \"no\"").unwrap_err();
        assert_eq!(e.field, "strip_scripts");
        for key in [
            "scheme = \"http\"",
            "keep_noscript = true",
            "ignore = [\"^/a\"]",
        ] {
            let e = resolve(ServeArgs::default(), key).unwrap_err();
            assert_eq!(e.field, key.split(' ').next().unwrap(), "{key}");
            assert!(e.message.contains("top of the file"), "{e}");
            assert!(e.message.contains("[[sites]]"), "{e}");
        }
    }

    #[test]
    fn a_chrome_that_is_no_executable_is_refused_by_name() {
        for bad in ["/nonexistent/chrome", "/etc", "no-such-browser-here"] {
            let args = ServeArgs {
                chrome: Some(bad.into()),
                ..Default::default()
            };
            let e = resolve(args, "").unwrap_err();
            assert_eq!(e.field, "chrome", "{bad}");
            assert!(e.message.contains(bad), "{e}");
        }
        for good in ["/bin/sh", "sh"] {
            let args = ServeArgs {
                chrome: Some(good.into()),
                ..Default::default()
            };
            assert!(resolve(args, "").is_ok(), "{good}");
        }
    }

    #[test]
    fn listeners_take_host_names_resolved_at_start() {
        let c = resolve(
            ServeArgs::default(),
            "listen = \"localhost:3000\"\nadmin_listen = \"127.0.0.1:3001\"\nservice_listen = \"localhost:3002\"",
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(c.service.listen, Some("127.0.0.1:3002".parse().unwrap()));
        // (None needs a DNS server: the test runs offline.)
        for bad in ["localhost", "localhost:http", ":3000", "127.0.0.1:99999"] {
            let e = resolve(ServeArgs::default(), &format!("listen = \"{bad}\"")).unwrap_err();
            assert_eq!(e.field, "listen", "{bad}");
        }
    }

    #[test]
    fn short_tokens_start_with_a_warning_and_tokens_with_spaces_are_refused() {
        let c = resolve(
            ServeArgs::default(),
            "admin_token = \"secret\"\nservice_listen = \"127.0.0.1:1\"\nservice_tokens = \"tok1,a-long-enough-token\"",
        )
        .unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("secret"));
        let warnings = c.warnings().join("\n");
        assert!(
            warnings.contains("admin_token: shorter than 16"),
            "{warnings}"
        );
        assert!(warnings.contains("token 1 is shorter than 8"), "{warnings}");
        assert!(!warnings.contains("token 2"), "{warnings}");
        assert!(!warnings.contains("secret") && !warnings.contains("tok1"));
        let long = resolve(ServeArgs::default(), "admin_token = \"0123456789abcdef\"").unwrap();
        assert!(long.warnings().is_empty(), "{:?}", long.warnings());
        let e = resolve(ServeArgs::default(), "admin_token = \"two words\"").unwrap_err();
        assert_eq!(e.field, "admin_token");
        assert!(!e.message.contains("words"), "{e}");
    }

    #[test]
    fn a_site_may_set_its_own_cache_control_over_its_plans() {
        let toml = r#"
            [[sites]]
            domain = "shared.test"
            origin = "http://10.0.0.5:8080"
            plan = "pro"
            cache_control = " public, max-age=600 "
            [[sites]]
            domain = "plain.test"
            origin = "http://10.0.0.5:8080"
            plan = "pro"
            [plans.pro]
            cache_control = "private, max-age=60"
        "#;
        let c = resolve(ServeArgs::default(), toml).unwrap();
        let shared = c.sites.lookup("shared.test").unwrap();
        let plain = c.sites.lookup("plain.test").unwrap();
        let ttl = Duration::from_secs(3600);
        assert_eq!(shared.plan.cache_control_for(ttl), "public, max-age=600");
        assert_eq!(plain.plan.cache_control_for(ttl), "private, max-age=60");
        // Not a render setting: pages stay fresh when it changes.
        assert_eq!(shared.settings_hash, plain.settings_hash);
        let e = resolve(
            ServeArgs::default(),
            &toml.replace(" public, max-age=600 ", ""),
        )
        .unwrap_err();
        assert_eq!(e.field, "sites[0].cache_control");
        // The single site's flag, and without a single site it is refused.
        let flag = ServeArgs {
            cache_control: Some("public, max-age=60".into()),
            ..Default::default()
        };
        let single = ServeArgs {
            origin: Some("http://127.0.0.1:9".into()),
            ..flag.clone()
        };
        let c = resolve(single, "").unwrap();
        let s = c.sites.lookup("any.test").unwrap();
        assert_eq!(s.plan.cache_control_for(ttl), "public, max-age=60");
        assert_eq!(resolve(flag, "").unwrap_err().field, "cache_control");
    }

    #[test]
    fn single_site_keys_need_the_single_site_and_bad_values_are_named() {
        let without_origin = ServeArgs {
            scheme: Some("http".into()),
            ..Default::default()
        };
        assert_eq!(resolve(without_origin, "").unwrap_err().field, "scheme");
        // Each change to a single site's flags, and the field it makes bad.
        type Change = fn(&mut ServeArgs);
        let cases: [(Change, Result<(), &str>); 11] = [
            (|a| a.scheme = Some("ftp".into()), Err("scheme")),
            (|a| a.ignore = Some(vec!["(".into()]), Err("ignore")),
            (|a| a.only = Some(vec!["[".into()]), Err("only")),
            (
                |a| a.on_render_failure = Some("maybe".into()),
                Err("on_render_failure"),
            ),
            (|a| a.origin_host = Some("a b".into()), Err("origin_host")),
            (
                |a| a.origin_host = Some("user@host".into()),
                Err("origin_host"),
            ),
            (
                |a| a.origin_ca_file = Some("/nonexistent/ca.pem".into()),
                Err("origin_ca_file"),
            ),
            (
                |a| a.tls_cert = Some("/nonexistent/cert.pem".into()),
                Err("tls_key"),
            ),
            (
                |a| {
                    a.tls_cert = Some("/nonexistent/cert.pem".into());
                    a.tls_key = Some("/nonexistent/key.pem".into());
                },
                Err("tls_cert"),
            ),
            (|a| a.proxy_protocol = Some(true), Err("proxy_protocol")),
            (|a| a.origin_host = Some("shop.test:8443".into()), Ok(())),
        ];
        for (i, (change, expected)) in cases.into_iter().enumerate() {
            let mut args = ServeArgs {
                origin: Some("http://127.0.0.1:9".into()),
                ..Default::default()
            };
            change(&mut args);
            let got = resolve(args, "").map(|_| ()).map_err(|e| e.field);
            assert_eq!(got, expected.map_err(str::to_string), "case {i}");
        }
        // In the file: a site's origin_host, and certificates that need
        // the default one.
        let file = |toml: &str| {
            resolve(ServeArgs::default(), toml)
                .map(|_| ())
                .map_err(|e| e.field)
        };
        let c = resolve(
            ServeArgs::default(),
            "[[sites]]\ndomain = \"a.test\"\norigin = \"https://o.test\"\norigin_host = \"o.netlify.test\"",
        )
        .unwrap();
        assert_eq!(
            c.sites.lookup("a.test").unwrap().origin_host.as_deref(),
            Some("o.netlify.test")
        );
        assert_eq!(
            file("[[sites]]\ndomain = \"a.test\"\norigin = \"https://o.test\"\ntls_cert = \"/x.pem\""),
            Err("sites[0].tls_key".into())
        );
    }

    #[test]
    fn zero_browsers_is_rejected_by_name() {
        assert_eq!(
            resolve(ServeArgs::default(), "browsers = 0")
                .unwrap_err()
                .field,
            "browsers"
        );
    }

    #[test]
    fn bad_urls_are_rejected_by_name() {
        let e = resolve(
            ServeArgs::default(),
            "[[sites]]\ndomain = \"a.test\"\norigin = \"::nope\"",
        )
        .unwrap_err();
        assert_eq!(e.field, "sites[0].origin");
        let e = resolve(ServeArgs::default(), "redis = \"http://x\"").unwrap_err();
        assert_eq!(e.field, "redis");
    }

    #[test]
    fn redis_lists_are_clusters() {
        let c = resolve(ServeArgs::default(), "redis = \"redis://a:1,redis://b:2\"").unwrap();
        assert_eq!(
            c.store,
            StoreTarget::RedisCluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
    }

    #[test]
    fn split_roles_need_redis() {
        let args = ServeArgs {
            role: Some("proxy".into()),
            ..Default::default()
        };
        assert_eq!(resolve(args, "").unwrap_err().field, "role");
    }

    #[test]
    fn single_site_mode_answers_listed_domains_only() {
        let args = ServeArgs {
            origin: Some("http://127.0.0.1:9".into()),
            domains: Some(vec!["WWW.A.test".into()]),
            ..Default::default()
        };
        let c = resolve(args, "").unwrap();
        assert!(c.sites.lookup("www.a.test").is_some());
        assert!(c.sites.lookup("other.test").is_none());
    }

    #[test]
    fn sites_take_plans_and_options() {
        let toml = r#"
            [[sites]]
            domain = "www.example.com"
            origin = "http://10.0.0.5:8080"
            plan = "news"
            ignore = ["^/api/"]
            on_render_failure = "error"
            query_params = ["page", "b"]
            [plans.news]
            refresh_every = "10m"
        "#;
        let c = resolve(ServeArgs::default(), toml).unwrap();
        let s = c.sites.lookup("www.example.com").unwrap();
        assert_eq!(s.plan.refresh_every, Some(Duration::from_secs(600)));
        assert_eq!(s.on_render_failure, OnRenderFailure::Error);
        assert_eq!(s.query_params, vec!["b".to_string(), "page".to_string()]);
        assert!(s.ignore.is_match("/api/x"));
        assert!(s.strip_scripts);
        assert_eq!(s.snapshot, site::SnapshotOptions::default());
    }

    #[test]
    fn snapshot_options_from_the_file_and_the_single_site_flags() {
        let toml = r#"
            [[sites]]
            domain = "www.example.com"
            origin = "http://10.0.0.5:8080"
            shadow_dom = "flatten"
            keep_noscript = true
            max_render_height = 4000
            client_redirect_status = 301
        "#;
        let c = resolve(ServeArgs::default(), toml).unwrap();
        let expected = site::SnapshotOptions {
            shadow_dom: crate::render::ShadowDom::Flatten,
            keep_noscript: true,
            max_render_height: 4000,
            client_redirect_status: 301,
        };
        let s = c.sites.lookup("www.example.com").unwrap();
        assert_eq!(s.snapshot, expected);
        let e = resolve(ServeArgs::default(), &toml.replace("301", "200")).unwrap_err();
        assert_eq!(e.field, "sites[0].client_redirect_status");

        let flags = ServeArgs {
            shadow_dom: Some("flatten".into()),
            keep_noscript: Some(true),
            max_render_height: Some(4000),
            client_redirect_status: Some(301),
            ..Default::default()
        };
        let single = ServeArgs {
            origin: Some("http://127.0.0.1:9".into()),
            ..flags.clone()
        };
        let c = resolve(single.clone(), "").unwrap();
        let s = c.sites.lookup("any.test").unwrap();
        assert_eq!(s.snapshot, expected);
        let plain = resolve(
            ServeArgs {
                origin: Some("http://127.0.0.1:9".into()),
                ..Default::default()
            },
            "",
        )
        .unwrap();
        assert_ne!(
            plain.sites.lookup("any.test").unwrap().settings_hash,
            s.settings_hash
        );
        let e = resolve(
            ServeArgs {
                shadow_dom: Some("open".into()),
                ..single
            },
            "",
        )
        .unwrap_err();
        assert_eq!(e.field, "shadow_dom");
        // Without a single site they would do nothing: refused.
        let e = resolve(flags, toml).unwrap_err();
        assert_eq!(e.field, "shadow_dom");
        assert!(e.message.contains("[[sites]]"), "{}", e.message);
    }

    #[test]
    fn unknown_plan_and_family_are_named() {
        let e = resolve(
            ServeArgs::default(),
            "[[sites]]\ndomain=\"a.b\"\norigin=\"http://x\"\nplan=\"gold\"",
        )
        .unwrap_err();
        assert_eq!(e.field, "sites[0].plan");
        let e = resolve(
            ServeArgs::default(),
            "bot_families = \"search-engines,robots\"",
        )
        .unwrap_err();
        assert_eq!(e.field, "bot_families");
    }

    #[test]
    fn durations_past_the_bound_are_refused_by_name() {
        // Accepted before, these made every render panic on clock overflow.
        for (toml, field) in [
            ("cache_ttl = 18446744073709551615", "cache_ttl"),
            ("render_timeout = 18446744073709551615", "render_timeout"),
            ("shutdown_timeout = 315360001", "shutdown_timeout"),
            (
                "[plans.pro]\nstale_while_revalidate = \"500000000years\"",
                "plans.pro.stale_while_revalidate",
            ),
            (
                "[plans.news]\nrefresh_every = 18446744073709551615",
                "plans.news.refresh_every",
            ),
        ] {
            let e = resolve(ServeArgs::default(), toml).unwrap_err();
            assert_eq!(e.field, field, "{toml}");
            assert!(e.message.contains("maximum"), "{e}");
        }
        let c = resolve(
            ServeArgs::default(),
            "cache_ttl = 315360000\n[plans.pro]\ncache_ttl = \"3650days\"",
        )
        .unwrap();
        assert_eq!(c.cache_ttl, MAX_DURATION);
        assert_eq!(c.plans["pro"].cache_ttl, Some(MAX_DURATION));
    }

    #[test]
    fn errors_stay_one_line_and_name_a_field() {
        let e = resolve(
            ServeArgs::default(),
            "[plans.\"bad\\nname\"]\nrefresh_every = \"1h\"",
        )
        .unwrap_err();
        assert_eq!(e.field, "plans.bad\nname");
        assert_eq!(
            e.to_string(),
            "invalid plans.bad\\nname: plan names are letters, digits, _ and -"
        );
        let e = resolve(ServeArgs::default(), "\"\" = 1").unwrap_err();
        assert_eq!(e.field, "config", "{e}");
    }
}
