//! The command line (SPEC §1). Every `serve` option is also an environment
//! variable (clap's `env`) and a config-file key: this module declares each
//! once, in `ServeArgs`, with the field-by-field precedence of the command
//! line over the file; `config` reads the file and checks the values.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

#[derive(Debug, Parser)]
#[command(
    name = "prerender-proxy",
    version,
    about = "A reverse proxy that serves JavaScript websites to crawlers as rendered HTML",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options of `serve`, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Serve(Box<ServeArgs>),
    /// Render one page: HTML to stdout, timings to stderr; exit 1 on failure.
    Render(RenderArgs),
    /// Print `bot` or `human` and the rule that decided; exit 0 for bot, 1 for human.
    IsBot(IsBotArgs),
    /// Validate a config file; exit 0 when it is valid.
    CheckConfig(CheckConfigArgs),
}

/// Declares `ServeArgs` and [`ServeArgs::over`] from one list of fields, so
/// an option is named in one place and the precedence cannot miss one.
macro_rules! serve_options {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl $name {
            /// These options over `under`'s, field by field: a flag or an
            /// environment variable (clap already put the flag first) over
            /// the config file.
            pub fn over(self, under: $name) -> $name {
                $name {
                    $( $field: Overlay::over(self.$field, under.$field), )*
                }
            }
        }
    };
}

/// One option's value laid over another's: the one that is set wins.
trait Overlay {
    fn over(self, under: Self) -> Self;
}

impl<T> Overlay for Option<T> {
    fn over(self, under: Self) -> Self {
        self.or(under)
    }
}

/// A flag that is only ever switched on.
impl Overlay for bool {
    fn over(self, under: Self) -> Self {
        self || under
    }
}

serve_options! {
/// Every option of `serve`, declared once: a flag with its environment
/// variable, and the same key at the top of the config file (`config::file`
/// reads the file's top level into this struct; `config` itself, marked
/// `serde(skip)`, has no such key). All are
/// optional so that the file can fill what neither a flag nor the
/// environment set: [`ServeArgs::over`] lays one over the other.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[command(mut_args(switch))]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file: sites, plans and every option below.
    #[arg(long, env = "PRERENDER_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Public proxy listener [default: 0.0.0.0:3000].
    #[arg(long, env = "PRERENDER_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Admin API, /metrics, /healthz, dashboard [default: 127.0.0.1:3001].
    #[arg(long, env = "PRERENDER_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Single-site mode: every allowed host is served from this origin.
    #[arg(long, env = "PRERENDER_ORIGIN", value_name = "URL")]
    pub origin: Option<String>,
    /// Hosts allowed in single-site mode (repeatable) [default: any].
    #[arg(long = "domain", env = "PRERENDER_DOMAINS", value_name = "NAME", value_delimiter = ',')]
    #[serde(alias = "domain", default, deserialize_with = "name_list")]
    pub domains: Option<Vec<String>>,
    /// Redis: one redis:// or rediss:// URL, or several comma-separated node URLs for a
    /// Redis Cluster; without it, the embedded in-process store [default: none].
    #[arg(long, env = "REDIS_URL", value_name = "URL[,URL…]")]
    #[serde(default, deserialize_with = "comma_list")]
    pub redis: Option<String>,
    /// Prepended to every Redis key and channel the proxy uses, so several
    /// deployments can share one Redis (e.g. `shop-a:`) [default: empty].
    #[arg(long, env = "PRERENDER_KEY_PREFIX", value_name = "STR")]
    pub key_prefix: Option<String>,
    /// all | proxy | renderer [default: all].
    #[arg(long, env = "PRERENDER_ROLE", value_name = "ROLE")]
    pub role: Option<String>,
    /// Bearer token for /api/v1/*; without it the API answers 403 [default: none].
    #[arg(long, env = "PRERENDER_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Also serve prerender.io's protocol (`GET /<absolute URL>`, `GET /render?url=`) on this
    /// address, for edge middleware such as prerender-node [default: off].
    #[arg(long, env = "PRERENDER_SERVICE_LISTEN", value_name = "ADDR")]
    pub service_listen: Option<String>,
    /// Comma list of tokens the service listener accepts in X-Prerender-Token;
    /// without them every request is served [default: none].
    #[arg(long, env = "PRERENDER_SERVICE_TOKENS", value_name = "TOKEN[,…]", hide_env_values = true)]
    #[serde(default, deserialize_with = "comma_list")]
    pub service_tokens: Option<String>,
    /// Browser binary [default: first of chromium, chromium-browser, google-chrome on PATH].
    #[arg(long, env = "CHROME_PATH", value_name = "PATH")]
    pub chrome: Option<PathBuf>,
    /// User-Agent of every render [default: the browser's own, with
    /// Prerender (compatible; prerender-proxy)].
    #[arg(long, env = "PRERENDER_RENDER_USER_AGENT", value_name = "UA")]
    pub render_user_agent: Option<String>,
    /// Browser processes in the pool [default: 2].
    #[arg(long, env = "PRERENDER_BROWSERS", value_name = "N")]
    pub browsers: Option<u64>,
    /// Concurrent renders per browser [default: 4].
    #[arg(long, env = "PRERENDER_TABS_PER_BROWSER", value_name = "N")]
    pub tabs_per_browser: Option<u64>,
    /// A browser is recycled after this many renders [default: 20].
    #[arg(long, env = "PRERENDER_RENDERS_PER_BROWSER", value_name = "N")]
    pub renders_per_browser: Option<u64>,
    /// A browser is recycled after this long [default: 3600].
    #[arg(long, env = "PRERENDER_BROWSER_MAX_AGE", value_name = "SECS")]
    pub browser_max_age: Option<DurationValue>,
    /// A browser is recycled when its process tree's RSS exceeds this [default: 1024].
    #[arg(long, env = "PRERENDER_BROWSER_MAX_RSS", value_name = "MB")]
    pub browser_max_rss: Option<u64>,
    /// Hard deadline of one render [default: 20].
    #[arg(long, env = "PRERENDER_RENDER_TIMEOUT", value_name = "SECS")]
    pub render_timeout: Option<DurationValue>,
    /// Snapshot a loaded page whose network never settles after this [default: 10].
    #[arg(long, env = "PRERENDER_READY_TIMEOUT", value_name = "SECS")]
    pub ready_timeout: Option<DurationValue>,
    /// How long a cached page is fresh; past it, it is served STALE for its plan's stale window [default: 3600].
    #[arg(long, env = "PRERENDER_CACHE_TTL", value_name = "SECS")]
    pub cache_ttl: Option<DurationValue>,
    /// Pending renders before new misses are refused [default: 1000].
    #[arg(long, env = "PRERENDER_QUEUE_CAPACITY", value_name = "N")]
    pub queue_capacity: Option<u64>,
    /// Bound of the embedded store in bytes [default: 268435456].
    #[arg(long, env = "PRERENDER_CACHE_MAX_BYTES", value_name = "BYTES")]
    pub cache_max_bytes: Option<u64>,
    /// Comma list of bot-patterns families that are rendered
    /// [default: all but monitoring, http-libraries].
    #[arg(long, env = "PRERENDER_BOT_FAMILIES", value_name = "LIST")]
    #[serde(default, deserialize_with = "comma_list")]
    pub bot_families: Option<String>,
    /// Plan of the single site [default: self-hosted].
    #[arg(long, env = "PRERENDER_PLAN", value_name = "NAME")]
    pub plan: Option<String>,
    /// Directory of extra bot-pattern files (the repo's bot-patterns/ is built in).
    #[arg(long, env = "PRERENDER_BOT_PATTERNS", value_name = "DIR")]
    pub bot_patterns: Option<PathBuf>,
    /// text | json [default: text].
    #[arg(long, env = "PRERENDER_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Origin response-header deadline for passthrough; past it the client gets 504 [default: 30].
    #[arg(long, env = "PRERENDER_ORIGIN_TIMEOUT", value_name = "SECS")]
    pub origin_timeout: Option<DurationValue>,
    /// A new origin connection must be established within this, or the request gets 502 [default: 5].
    #[arg(long, env = "PRERENDER_ORIGIN_CONNECT_TIMEOUT", value_name = "SECS")]
    pub origin_connect_timeout: Option<DurationValue>,
    /// Idle keep-alive connections kept per origin (per public thread) [default: 256].
    #[arg(long, env = "PRERENDER_ORIGIN_MAX_IDLE", value_name = "N")]
    pub origin_max_idle: Option<u64>,
    /// An idle origin connection is closed after this [default: 60].
    #[arg(long, env = "PRERENDER_ORIGIN_IDLE_TIMEOUT", value_name = "SECS")]
    pub origin_idle_timeout: Option<DurationValue>,
    /// A client must send its request head within this (slowloris guard) [default: 10].
    #[arg(long, env = "PRERENDER_HEADER_READ_TIMEOUT", value_name = "SECS")]
    pub header_read_timeout: Option<DurationValue>,
    /// Open client connections on the public listener before new ones wait [default: 20000].
    #[arg(long, env = "PRERENDER_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<u64>,
    /// Threads serving public connections, each with its own event loop [default: one per core].
    #[arg(long, env = "PRERENDER_PUBLIC_THREADS", value_name = "N")]
    pub public_threads: Option<u64>,
    /// Linux scheduling policy of those threads: batch | normal [default: batch].
    #[arg(long, env = "PRERENDER_PUBLIC_SCHEDULING", value_name = "POLICY")]
    pub public_scheduling: Option<String>,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish [default: 25].
    #[arg(long, env = "PRERENDER_SHUTDOWN_TIMEOUT", value_name = "SECS")]
    pub shutdown_timeout: Option<DurationValue>,
    /// Peers (CDN, load balancer) whose X-Forwarded-For is appended to and whose
    /// X-Forwarded-Proto is passed on (from any other peer both are replaced): CIDRs or
    /// addresses, comma-separated [default: none].
    #[arg(long, env = "PRERENDER_TRUSTED_PROXIES", value_name = "CIDR[,…]")]
    #[serde(default, deserialize_with = "comma_list")]
    pub trusted_proxies: Option<String>,
    /// Check that requests claiming a major crawler come from it: off | log | enforce
    /// [default: log].
    #[arg(long, env = "PRERENDER_VERIFY_CRAWLERS", value_name = "MODE")]
    pub verify_crawlers: Option<String>,
    /// DNS server for crawler verification, IP:PORT (UDP and TCP) [default: the system's].
    #[arg(long, env = "PRERENDER_DNS_RESOLVER", value_name = "ADDR")]
    pub dns_resolver: Option<String>,
    /// With verify_crawlers = enforce, per site: renders of new pages per minute for bots
    /// that are not verified crawlers [default: 60].
    #[arg(long, env = "PRERENDER_UNVERIFIED_RENDERS_PER_MINUTE", value_name = "N")]
    pub unverified_renders_per_minute: Option<u64>,
    /// Directory of crawler IP range files (<crawler>.json, as their operators publish them)
    /// replacing the built-in snapshots [default: built in].
    #[arg(long, env = "PRERENDER_CRAWLER_IP_RANGES", value_name = "DIR")]
    pub crawler_ip_ranges: Option<PathBuf>,
    /// Single site: shadow roots as declarative shadow DOM, or the composed tree
    /// written into the light DOM: declarative | flatten [default: declarative].
    #[arg(long, env = "PRERENDER_SHADOW_DOM", value_name = "MODE")]
    pub shadow_dom: Option<String>,
    /// Single site: lay pages out up to this tall before the snapshot so content
    /// that loads when scrolled into view is loaded; 0 = off [default: 16000].
    #[arg(long, env = "PRERENDER_MAX_RENDER_HEIGHT", value_name = "PX")]
    pub max_render_height: Option<u64>,
    /// Single site: keep <noscript> elements in rendered pages (true | false)
    /// [default: false].
    #[arg(long, env = "PRERENDER_KEEP_NOSCRIPT", value_name = "BOOL")]
    pub keep_noscript: Option<bool>,
    /// Single site: status of the answer when a page's script moves it to another
    /// path; 0 = off (the new route's content at the old URL) [default: 302].
    #[arg(long, env = "PRERENDER_CLIENT_REDIRECT_STATUS", value_name = "STATUS")]
    pub client_redirect_status: Option<u64>,
    /// Extra PEM CA certificates trusted for https:// origins and rediss:// Redis, added to
    /// the system roots [default: system roots only].
    #[arg(long, env = "PRERENDER_ORIGIN_CA_FILE", value_name = "FILE")]
    pub origin_ca_file: Option<PathBuf>,
    /// Single site: Host header sent to the origin (e.g. shop.netlify.app); TLS SNI and
    /// certificate checks always use the origin URL's host [default: the request's Host].
    #[arg(long, env = "PRERENDER_ORIGIN_HOST", value_name = "NAME")]
    pub origin_host: Option<String>,
    /// Single site: scheme of the public URL pages are rendered as: http | https
    /// [default: https].
    #[arg(long, env = "PRERENDER_SCHEME", value_name = "SCHEME")]
    pub scheme: Option<String>,
    /// Single site: path regex never rendered (repeatable; PRERENDER_IGNORE holds one
    /// regex a line).
    #[arg(long = "ignore", env = "PRERENDER_IGNORE", value_name = "REGEX", value_delimiter = '\n')]
    #[serde(default, deserialize_with = "regex_list")]
    pub ignore: Option<Vec<String>>,
    /// Single site: render only paths matching one of these regexes (repeatable;
    /// PRERENDER_ONLY holds one regex a line) [default: every path].
    #[arg(long = "only", env = "PRERENDER_ONLY", value_name = "REGEX", value_delimiter = '\n')]
    #[serde(default, deserialize_with = "regex_list")]
    pub only: Option<Vec<String>>,
    /// Single site: significant query parameters kept in cache keys, comma-separated
    /// [default: none].
    #[arg(long, env = "PRERENDER_QUERY_PARAMS", value_name = "LIST")]
    #[serde(default, deserialize_with = "comma_list")]
    pub query_params: Option<String>,
    /// Single site: keep mobile crawlers' renders apart (true | false) [default: false].
    #[arg(long, env = "PRERENDER_MOBILE_VARIANT", value_name = "BOOL")]
    pub mobile_variant: Option<bool>,
    /// Single site: remove <script> elements (but JSON-LD) from rendered pages
    /// (true | false) [default: true].
    #[arg(long, env = "PRERENDER_STRIP_SCRIPTS", value_name = "BOOL")]
    pub strip_scripts: Option<bool>,
    /// Single site: when a render fails, the origin's own answer or a 503:
    /// passthrough | error [default: passthrough].
    #[arg(long, env = "PRERENDER_ON_RENDER_FAILURE", value_name = "MODE")]
    pub on_render_failure: Option<String>,
    /// Single site: Cache-Control of rendered answers, over the plan's (e.g. "public,
    /// max-age=600" to let a CDN cache them) [default: the plan's].
    #[arg(long, env = "PRERENDER_CACHE_CONTROL", value_name = "VALUE")]
    pub cache_control: Option<String>,
    /// PEM certificate chain: the public listener speaks TLS (HTTP/1.1 and h2 by ALPN), with
    /// this as the default certificate; re-read on SIGHUP without dropping connections.
    #[arg(long, env = "PRERENDER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "PRERENDER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Connections from trusted_proxies start with a PROXY protocol v1 or v2 header (TCP
    /// load balancers); its source address is the client's [default: off].
    #[arg(long, env = "PRERENDER_PROXY_PROTOCOL", value_name = "BOOL")]
    pub proxy_protocol: Option<bool>,
}
}

/// `mut_args` of `ServeArgs`: an option whose value is a `BOOL` is also a
/// bare switch (`--strip-scripts` = `--strip-scripts=true`), and reads a
/// boolean as the environment writes it (1/0, yes/no, on/off).
fn switch(arg: clap::Arg) -> clap::Arg {
    if arg.get_value_names() != Some(&["BOOL".into()]) {
        return arg;
    }
    arg.num_args(0..=1)
        .default_missing_value("true")
        .value_parser(clap::builder::BoolishValueParser::new())
}

/// A list option in the config file: one comma-separated string, as on the
/// command line, or an array of strings (joined with commas).
fn comma_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(
        untagged,
        expecting = "a comma-separated string or an array of strings"
    )]
    enum StringList {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match StringList::deserialize(d)? {
        StringList::One(s) => s,
        StringList::Many(v) => v.join(","),
    }))
}

/// A list of names in the config file: an array of strings, or one
/// comma-separated string as on the command line.
fn name_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(comma_list(d)?.map(|joined| {
        joined
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect()
    }))
}

/// A list of regexes in the config file: an array of strings, or one
/// string holding one a line (as `PRERENDER_IGNORE` does).
fn regex_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(
        untagged,
        expecting = "an array of regexes or a string of one regex a line"
    )]
    enum RegexList {
        Lines(String),
        Many(Vec<String>),
    }
    Ok(Some(match RegexList::deserialize(d)? {
        RegexList::Lines(s) => s.lines().map(str::to_string).collect(),
        RegexList::Many(v) => v,
    }))
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The page's public URL, e.g. https://www.example.com/products/1
    pub url: String,
    /// Fetch the page and its same-host resources from this origin instead of the public host.
    #[arg(long, value_name = "URL")]
    pub origin: Option<String>,
    /// Browser binary.
    #[arg(long, env = "CHROME_PATH", value_name = "PATH")]
    pub chrome: Option<PathBuf>,
    /// Hard deadline of the render in seconds.
    #[arg(
        long,
        env = "PRERENDER_RENDER_TIMEOUT",
        value_name = "SECS",
        default_value_t = 20
    )]
    pub render_timeout: u64,
    /// Snapshot a loaded page whose network never settles after this many seconds.
    #[arg(
        long,
        env = "PRERENDER_READY_TIMEOUT",
        value_name = "SECS",
        default_value_t = 10
    )]
    pub ready_timeout: u64,
    /// Keep <script> elements in the output.
    #[arg(long)]
    pub keep_scripts: bool,
    /// Render with a mobile viewport and a smartphone crawler's User-Agent.
    #[arg(long)]
    pub mobile: bool,
    /// Shadow roots as declarative shadow DOM, or the composed tree in the
    /// light DOM: declarative | flatten.
    #[arg(long, value_name = "MODE", default_value = "declarative")]
    pub shadow_dom: String,
    /// Lay the page out up to this tall before the snapshot (0 = off).
    #[arg(long, value_name = "PX", default_value_t = crate::render::DEFAULT_MAX_RENDER_HEIGHT as u64)]
    pub max_render_height: u64,
    /// Keep <noscript> elements in the output.
    #[arg(long)]
    pub keep_noscript: bool,
    /// Status of the answer when the page's script moves it to another path (0 = off).
    #[arg(long, value_name = "STATUS", default_value_t = crate::render::DEFAULT_CLIENT_REDIRECT_STATUS as u64)]
    pub client_redirect_status: u64,
}

#[derive(Debug, Args)]
pub struct IsBotArgs {
    /// The User-Agent string to classify.
    pub user_agent: String,
    /// Comma list of families that are rendered.
    #[arg(long, env = "PRERENDER_BOT_FAMILIES", value_name = "LIST")]
    pub bot_families: Option<String>,
    /// Directory of extra bot-pattern files.
    #[arg(long, env = "PRERENDER_BOT_PATTERNS", value_name = "DIR")]
    pub bot_patterns: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The TOML file to validate.
    #[arg(long, env = "PRERENDER_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
}

/// A duration option: a number of seconds, or a duration such as `90s`,
/// `15m`, `24h` (flags, environment and the config file alike). Checked when
/// the config is resolved, so an error names the option.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "a number of seconds or a duration such as \"90s\" or \"1h\""
)]
pub enum DurationValue {
    Secs(u64),
    Text(String),
}

impl std::str::FromStr for DurationValue {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().parse::<u64>() {
            Ok(secs) => DurationValue::Secs(secs),
            Err(_) => DurationValue::Text(s.to_string()),
        })
    }
}
