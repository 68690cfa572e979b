//! Sites: which public hosts the proxy answers for, where their bytes come
//! from and how their pages are rendered.

use std::collections::HashMap;
use std::sync::Arc;

use regex::RegexSet;
use url::Url;

use super::file::SiteFile;
use super::plan::Plan;
use super::ConfigError;
use crate::cli::ServeArgs;
use crate::domain::Domain;
use crate::render::ShadowDom;

/// Largest `max_render_height`: a taller layout costs raster time and
/// memory on every render of the site for content few pages have.
pub const MAX_MAX_RENDER_HEIGHT: u32 = 100_000;
/// Statuses `client_redirect_status` may be (0 turns client redirects off).
pub const CLIENT_REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// How a site's snapshots are taken beyond `strip_scripts` (SPEC §3): the
/// site options `shadow_dom`, `keep_noscript`, `max_render_height` and
/// `client_redirect_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotOptions {
    pub shadow_dom: ShadowDom,
    pub keep_noscript: bool,
    /// CSS pixels; 0 keeps the viewport's height.
    pub max_render_height: u32,
    /// 0: a client-side redirect is snapshotted at the old URL.
    pub client_redirect_status: u16,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        Self {
            shadow_dom: ShadowDom::default(),
            keep_noscript: false,
            max_render_height: crate::render::DEFAULT_MAX_RENDER_HEIGHT,
            client_redirect_status: crate::render::DEFAULT_CLIENT_REDIRECT_STATUS,
        }
    }
}

impl SnapshotOptions {
    /// Validates raw values (absent = default); `field` turns an option's
    /// name into the name an error reports.
    pub fn parse(
        shadow_dom: Option<&str>,
        keep_noscript: Option<bool>,
        max_render_height: Option<u64>,
        client_redirect_status: Option<u64>,
        field: impl Fn(&str) -> String,
    ) -> Result<SnapshotOptions, ConfigError> {
        let defaults = SnapshotOptions::default();
        let shadow_dom = match shadow_dom {
            None => defaults.shadow_dom,
            Some(raw) => ShadowDom::parse(raw).ok_or_else(|| {
                ConfigError::new(
                    field("shadow_dom"),
                    format!("{raw:?} is not \"declarative\" or \"flatten\""),
                )
            })?,
        };
        let max_render_height = match max_render_height {
            None => defaults.max_render_height,
            Some(h) if h <= u64::from(MAX_MAX_RENDER_HEIGHT) => h as u32,
            Some(h) => {
                return Err(ConfigError::new(
                    field("max_render_height"),
                    format!("{h} is more than the maximum of {MAX_MAX_RENDER_HEIGHT} pixels"),
                ))
            }
        };
        let client_redirect_status = match client_redirect_status {
            None => defaults.client_redirect_status,
            Some(0) => 0,
            Some(s) => match CLIENT_REDIRECT_STATUSES
                .iter()
                .find(|&&c| u64::from(c) == s)
            {
                Some(&c) => c,
                None => {
                    return Err(ConfigError::new(
                        field("client_redirect_status"),
                        format!("{s} is not 0 (off) or one of 301, 302, 303, 307, 308"),
                    ))
                }
            },
        };
        Ok(SnapshotOptions {
            shadow_dom,
            keep_noscript: keep_noscript.unwrap_or(defaults.keep_noscript),
            max_render_height,
            client_redirect_status,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRenderFailure {
    /// The origin's raw response with `X-Prerender-Cache: ERROR`.
    Passthrough,
    /// `503` with `Retry-After`.
    Error,
}

#[derive(Debug, Clone)]
pub struct Site {
    /// Public host, lowercase. Empty for the catch-all single site that
    /// answers any host (its pages are rendered as the request's host).
    pub domain: String,
    pub origin: Url,
    /// The origin is `https://`.
    pub origin_tls: bool,
    /// Host header sent to the origin (`origin_host`); `None`: the
    /// request's own host.
    pub origin_host: Option<String>,
    pub plan: Plan,
    /// Scheme of the public URL a page is rendered as.
    pub scheme: String,
    pub ignore: RegexSet,
    /// Path regexes that limit rendering (`only`); empty: every path.
    pub only: RegexSet,
    pub strip_scripts: bool,
    pub on_render_failure: OnRenderFailure,
    /// Significant query parameters, sorted: only these are kept in cache keys.
    pub query_params: Vec<String>,
    pub mobile_variant: bool,
    pub snapshot: SnapshotOptions,
    /// Hash of everything above that changes a render: a page rendered
    /// under other settings is a miss.
    pub settings_hash: String,
}

/// Bumped when what the renderer blocks or strips changes, so pages
/// rendered by an older rule set count as misses. 2: shadow DOM, lazy
/// content, CSSOM styles, `<noscript>`, the UTF-8 declaration, client
/// redirects.
const RENDER_RULES_VERSION: u32 = 2;

impl Site {
    /// The site's `ignore` and `only` patterns, as the render decision
    /// reads them.
    pub fn path_rules(&self) -> crate::bot::PathRules<'_> {
        crate::bot::PathRules {
            ignore: &self.ignore,
            only: &self.only,
        }
    }

    fn with_settings_hash(mut self) -> Site {
        use sha2::{Digest, Sha256};
        let canonical = format!(
            "v{RENDER_RULES_VERSION}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.origin,
            self.scheme,
            self.strip_scripts,
            self.query_params.join("&"),
            self.mobile_variant,
            self.snapshot.shadow_dom.as_str(),
            self.snapshot.keep_noscript,
            self.snapshot.max_render_height,
            self.snapshot.client_redirect_status,
        );
        // Added only when set, so the hashes of sites without it stay as
        // they were (their pages stay fresh across the upgrade).
        let canonical = match &self.origin_host {
            Some(host) => format!("{canonical}|origin_host={host}"),
            None => canonical,
        };
        self.settings_hash = hex::encode(&Sha256::digest(canonical.as_bytes())[..8]);
        self
    }

    pub fn from_file(
        index: usize,
        f: &SiteFile,
        plans: &std::collections::BTreeMap<String, Plan>,
    ) -> Result<Site, ConfigError> {
        let field = |name: &str| format!("sites[{index}].{name}");
        let domain = normalise_domain(&f.domain).ok_or_else(|| {
            ConfigError::new(
                field("domain"),
                format!("{:?} is not a host name", f.domain),
            )
        })?;
        let origin = parse_origin(&f.origin, &field("origin"))?;
        let plan_name = f.plan.as_deref().unwrap_or(super::plan::DEFAULT_PLAN);
        let plan = plans.get(plan_name).cloned().ok_or_else(|| {
            ConfigError::new(field("plan"), format!("unknown plan {plan_name:?}"))
        })?;
        let options = SingleSiteOptions::parse(
            f.origin_host.as_deref(),
            f.scheme.as_deref(),
            &f.ignore,
            &f.only,
            &f.query_params,
            f.mobile_variant,
            f.strip_scripts,
            f.on_render_failure.as_deref(),
            f.cache_control.as_deref(),
            &field,
        )?;
        let snapshot = SnapshotOptions::parse(
            f.shadow_dom.as_deref(),
            f.keep_noscript,
            f.max_render_height,
            f.client_redirect_status,
            field,
        )?;
        Ok(Site::single(domain, origin, plan)
            .with_snapshot(snapshot)
            .with_options(&options))
    }

    /// The single site of `--origin` mode, for one domain or (empty) any host.
    pub fn single(domain: String, origin: Url, plan: Plan) -> Site {
        Site {
            domain,
            origin_tls: origin.scheme() == "https",
            origin,
            origin_host: None,
            plan,
            scheme: "https".to_string(),
            ignore: RegexSet::empty(),
            only: RegexSet::empty(),
            strip_scripts: true,
            on_render_failure: OnRenderFailure::Passthrough,
            query_params: Vec::new(),
            mobile_variant: false,
            snapshot: SnapshotOptions::default(),
            settings_hash: String::new(),
        }
        .with_settings_hash()
    }

    /// The site with the `[[sites]]` keys of `options` (its settings hash
    /// follows).
    pub fn with_options(mut self, options: &SingleSiteOptions) -> Site {
        self.origin_host = options.origin_host.clone();
        self.scheme = options.scheme.clone();
        self.ignore = options.ignore.clone();
        self.only = options.only.clone();
        self.query_params = options.query_params.clone();
        self.mobile_variant = options.mobile_variant;
        self.strip_scripts = options.strip_scripts;
        self.on_render_failure = options.on_render_failure;
        if let Some(value) = &options.cache_control {
            // The site's own choice over its plan's (SPEC §4).
            self.plan.cache_control = Some(value.clone());
        }
        self.with_settings_hash()
    }

    /// The site with other snapshot options (its settings hash follows).
    pub fn with_snapshot(mut self, snapshot: SnapshotOptions) -> Site {
        self.snapshot = snapshot;
        self.with_settings_hash()
    }
}

/// The `[[sites]]` keys beside a site's domain, origin, plan and snapshot
/// options, validated: read from a `[[sites]]` entry or, for the single
/// site of `--origin` mode, from flags and environment variables.
#[derive(Debug, Clone)]
pub struct SingleSiteOptions {
    pub origin_host: Option<String>,
    pub scheme: String,
    pub ignore: RegexSet,
    /// Path regexes that limit rendering; empty: every path.
    pub only: RegexSet,
    /// Sorted, without repeats.
    pub query_params: Vec<String>,
    pub mobile_variant: bool,
    pub strip_scripts: bool,
    pub on_render_failure: OnRenderFailure,
    /// `Cache-Control` of rendered answers over the plan's (a site opting
    /// in to shared caching).
    pub cache_control: Option<String>,
}

impl SingleSiteOptions {
    /// Validates a site's options; `field` turns an option's name into the
    /// name an error reports.
    #[allow(clippy::too_many_arguments)]
    pub fn parse(
        origin_host: Option<&str>,
        scheme: Option<&str>,
        ignore: &[String],
        only: &[String],
        query_params: &[String],
        mobile_variant: Option<bool>,
        strip_scripts: Option<bool>,
        on_render_failure: Option<&str>,
        cache_control: Option<&str>,
        field: &dyn Fn(&str) -> String,
    ) -> Result<SingleSiteOptions, ConfigError> {
        let origin_host = parse_origin_host(origin_host, &field("origin_host"))?;
        let scheme = match scheme.unwrap_or("https") {
            s @ ("http" | "https") => s.to_string(),
            other => {
                return Err(ConfigError::new(
                    field("scheme"),
                    format!("{other:?} is not http or https"),
                ))
            }
        };
        let ignore = RegexSet::new(ignore)
            .map_err(|e| ConfigError::new(field("ignore"), e.to_string().replace('\n', " ")))?;
        let only = RegexSet::new(only)
            .map_err(|e| ConfigError::new(field("only"), e.to_string().replace('\n', " ")))?;
        let on_render_failure = match on_render_failure.unwrap_or("passthrough") {
            "passthrough" => OnRenderFailure::Passthrough,
            "error" => OnRenderFailure::Error,
            other => {
                return Err(ConfigError::new(
                    field("on_render_failure"),
                    format!("{other:?} is not \"passthrough\" or \"error\""),
                ))
            }
        };
        let mut query_params = query_params.to_vec();
        if let Some(bad) = query_params
            .iter()
            .find(|p| p.is_empty() || p.contains(['&', '=', '#']))
        {
            return Err(ConfigError::new(
                field("query_params"),
                format!("{bad:?} is not a parameter name"),
            ));
        }
        query_params.sort();
        query_params.dedup();
        let cache_control = cache_control
            .map(|v| super::plan::check_cache_control(v, &field("cache_control")))
            .transpose()?;
        Ok(SingleSiteOptions {
            cache_control,
            origin_host,
            scheme,
            ignore,
            only,
            query_params,
            mobile_variant: mobile_variant.unwrap_or(false),
            strip_scripts: strip_scripts.unwrap_or(true),
            on_render_failure,
        })
    }
}

/// Host → site. Either a list of known hosts (anything else is 421) or one
/// catch-all site.
#[derive(Debug, Clone, Default)]
pub struct SiteTable {
    by_domain: HashMap<String, Arc<Site>>,
    any_host: Option<Arc<Site>>,
}

impl SiteTable {
    pub fn new(sites: Vec<Site>) -> Result<SiteTable, ConfigError> {
        let mut table = SiteTable::default();
        for (i, site) in sites.into_iter().enumerate() {
            if site.domain.is_empty() {
                table.any_host = Some(Arc::new(site));
                continue;
            }
            let domain = site.domain.clone();
            if table
                .by_domain
                .insert(domain.clone(), Arc::new(site))
                .is_some()
            {
                return Err(ConfigError::new(
                    format!("sites[{i}].domain"),
                    format!("{domain:?} is listed twice"),
                ));
            }
        }
        Ok(table)
    }

    /// The site for a normalised host (lowercase, no port, no trailing dot).
    pub fn lookup(&self, host: &str) -> Option<&Arc<Site>> {
        self.by_domain.get(host).or(self.any_host.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Site>> {
        self.by_domain.values().chain(self.any_host.iter())
    }

    pub fn is_empty(&self) -> bool {
        self.by_domain.is_empty() && self.any_host.is_none()
    }

    pub fn answers_any_host(&self) -> bool {
        self.any_host.is_some()
    }
}

/// A configured domain (`sites[].domain`, `--domain`) as [`Domain`] reads
/// it, surrounding spaces aside: the same parse as a request's Host and a
/// cache key's domain.
pub fn normalise_domain(raw: &str) -> Option<String> {
    Domain::parse(raw.trim()).ok().map(String::from)
}

/// `origin_host`: a host name, optionally with a port, as a Host header
/// carries it.
pub fn parse_origin_host(raw: Option<&str>, field: &str) -> Result<Option<String>, ConfigError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let valid = raw.parse::<http::uri::Authority>().is_ok_and(|a| {
        a.as_str() == raw && !raw.contains('@') && http::HeaderValue::from_str(raw).is_ok()
    });
    if !valid {
        return Err(ConfigError::new(
            field,
            format!("{raw:?} is not a host name (with an optional :port)"),
        ));
    }
    Ok(Some(raw.to_ascii_lowercase()))
}

/// An origin URL: http(s), with a host, no query or fragment. A user and
/// password in it are removed (see [`origin_credentials`]): the proxy does
/// not send them, and they must not reach a log line. Errors show the URL
/// redacted.
pub fn parse_origin(raw: &str, field: &str) -> Result<Url, ConfigError> {
    let shown = super::redact::redact_url(raw);
    let mut url = Url::parse(raw)
        .map_err(|e| ConfigError::new(field, format!("{shown:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(
            field,
            format!("{shown:?} is not an http(s) URL with a host"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            field,
            format!("{shown:?}: an origin has no query or fragment"),
        ));
    }
    // Cannot fail for an http(s) URL with a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok(url)
}

/// Whether an origin URL carries a user or password, which
/// [`parse_origin`] removes: a start-up warning says so.
pub fn origin_credentials(raw: &str) -> bool {
    Url::parse(raw).is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
}

/// The single site's options (flags, environment variables and the same
/// keys at the top of the config file) apply to the single site of
/// `--origin` mode; without one they would silently do nothing: refused.
pub(super) fn refuse_single_site_options(
    args: &ServeArgs,
    file: &ServeArgs,
    single_site: bool,
) -> Result<(), ConfigError> {
    if single_site {
        return Ok(());
    }
    let given = |o: &ServeArgs| {
        [
            ("shadow_dom", o.shadow_dom.is_some()),
            ("max_render_height", o.max_render_height.is_some()),
            ("keep_noscript", o.keep_noscript.is_some()),
            ("client_redirect_status", o.client_redirect_status.is_some()),
            ("origin_host", o.origin_host.is_some()),
            ("scheme", o.scheme.is_some()),
            ("ignore", o.ignore.is_some()),
            ("only", o.only.is_some()),
            ("query_params", o.query_params.is_some()),
            ("mobile_variant", o.mobile_variant.is_some()),
            ("strip_scripts", o.strip_scripts.is_some()),
            ("on_render_failure", o.on_render_failure.is_some()),
            ("cache_control", o.cache_control.is_some()),
        ]
        .into_iter()
        .find_map(|(name, given)| given.then_some(name))
    };
    if let Some(name) = given(args) {
        return Err(ConfigError::new(
            name,
            format!(
                "--{} applies to the single site of --origin mode; set {name} in [[sites]] instead",
                name.replace('_', "-")
            ),
        ));
    }
    if let Some(name) = given(file) {
        return Err(ConfigError::new(
            name,
            format!(
                "{name} at the top of the file applies to the single site of origin mode; set it in [[sites]] instead"
            ),
        ));
    }
    Ok(())
}

/// The single site of `--origin` mode, one per listed domain (or one for
/// any host), with its options from flags and environment variables.
fn single_sites(
    o: &ServeArgs,
    origin: &str,
    plans: &std::collections::BTreeMap<String, Plan>,
) -> Result<Vec<Site>, ConfigError> {
    let snapshot = SnapshotOptions::parse(
        o.shadow_dom.as_deref(),
        o.keep_noscript,
        o.max_render_height,
        o.client_redirect_status,
        str::to_string,
    )?;
    // One regex a line in the environment: blank lines are no pattern.
    let patterns = |given: &Option<Vec<String>>| -> Vec<String> {
        given
            .iter()
            .flatten()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect()
    };
    let query_params: Vec<String> = o
        .query_params
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let options = SingleSiteOptions::parse(
        o.origin_host.as_deref(),
        o.scheme.as_deref(),
        &patterns(&o.ignore),
        &patterns(&o.only),
        &query_params,
        o.mobile_variant,
        o.strip_scripts,
        o.on_render_failure.as_deref(),
        o.cache_control.as_deref(),
        &str::to_string,
    )?;
    let origin = parse_origin(origin, "origin")?;
    let plan_name = o.plan.as_deref().unwrap_or(super::plan::DEFAULT_PLAN);
    let plan = plans
        .get(plan_name)
        .ok_or_else(|| ConfigError::new("plan", format!("unknown plan {plan_name:?}")))?;
    let site = |domain| {
        Site::single(domain, origin.clone(), plan.clone())
            .with_options(&options)
            .with_snapshot(snapshot)
    };
    let domains = o.domains.as_deref().unwrap_or_default();
    let mut sites = Vec::new();
    if domains.is_empty() {
        sites.push(site(String::new()));
    }
    for d in domains.iter().filter(|d| !d.trim().is_empty()) {
        let domain = normalise_domain(d)
            .ok_or_else(|| ConfigError::new("domain", format!("{d:?} is not a host name")))?;
        sites.push(site(domain));
    }
    Ok(sites)
}

/// The `[[sites]]` entries, or the single site of `--origin` mode.
pub(super) fn resolve_sites(
    files: &[SiteFile],
    o: &ServeArgs,
    plans: &std::collections::BTreeMap<String, Plan>,
) -> Result<SiteTable, ConfigError> {
    let mut sites = Vec::new();
    for (i, f) in files.iter().enumerate() {
        sites.push(Site::from_file(i, f, plans)?);
    }
    match &o.origin {
        Some(_) if !files.is_empty() => {
            return Err(ConfigError::new(
                "origin",
                "give either [[sites]] or a single-site origin, not both",
            ))
        }
        Some(origin) => sites = single_sites(o, origin, plans)?,
        None if o.domains.as_ref().is_some_and(|d| !d.is_empty()) => {
            return Err(ConfigError::new(
                "domain",
                "--domain needs --origin (or use [[sites]])",
            ))
        }
        None => match &o.plan {
            Some(p) if !plans.contains_key(p) => {
                return Err(ConfigError::new("plan", format!("unknown plan {p:?}")))
            }
            _ => {}
        },
    }
    SiteTable::new(sites)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalised() {
        assert_eq!(
            normalise_domain("WWW.Example.COM.").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(normalise_domain("a..b"), None);
        assert_eq!(normalise_domain("evil.com/x"), None);
        assert_eq!(normalise_domain("host:80"), None);
        // What a Host header or a cache key accepts, the configuration
        // accepts, and the reverse.
        assert_eq!(
            normalise_domain(" My_App.example.com ").as_deref(),
            Some("my_app.example.com")
        );
        assert_eq!(normalise_domain("[::1]").as_deref(), Some("[::1]"));
    }

    #[test]
    fn render_settings_change_the_hash() {
        let origin = Url::parse("http://127.0.0.1:1").unwrap();
        let plan = crate::config::Plan::builtins()["starter"].clone();
        let a = Site::single("a.test".into(), origin.clone(), plan.clone());
        let mut b = a.clone();
        b.strip_scripts = false;
        assert_ne!(a.settings_hash, b.with_settings_hash().settings_hash);
        let defaults = SnapshotOptions::default();
        for changed in [
            SnapshotOptions {
                shadow_dom: ShadowDom::Flatten,
                ..defaults
            },
            SnapshotOptions {
                keep_noscript: true,
                ..defaults
            },
            SnapshotOptions {
                max_render_height: 0,
                ..defaults
            },
            SnapshotOptions {
                client_redirect_status: 301,
                ..defaults
            },
        ] {
            let c = a.clone().with_snapshot(changed);
            assert_ne!(a.settings_hash, c.settings_hash, "{changed:?}");
        }
        assert_eq!(
            a.settings_hash,
            a.clone().with_snapshot(defaults).settings_hash
        );
        let other_origin = Site::single(
            "a.test".into(),
            Url::parse("http://127.0.0.1:2").unwrap(),
            plan,
        );
        assert_ne!(a.settings_hash, other_origin.settings_hash);
    }

    #[test]
    fn snapshot_options_are_validated() {
        let field = |name: &str| format!("sites[0].{name}");
        let parsed = SnapshotOptions::parse(None, None, None, None, field).unwrap();
        assert_eq!(parsed, SnapshotOptions::default());
        assert_eq!(
            (
                parsed.shadow_dom,
                parsed.keep_noscript,
                parsed.max_render_height,
                parsed.client_redirect_status
            ),
            (ShadowDom::Declarative, false, 16_000, 302)
        );
        let parsed =
            SnapshotOptions::parse(Some("flatten"), Some(true), Some(0), Some(0), field).unwrap();
        assert_eq!(
            parsed,
            SnapshotOptions {
                shadow_dom: ShadowDom::Flatten,
                keep_noscript: true,
                max_render_height: 0,
                client_redirect_status: 0
            }
        );
        let err = SnapshotOptions::parse(Some("open"), None, None, None, field).unwrap_err();
        assert_eq!(err.field, "sites[0].shadow_dom");
        let err = SnapshotOptions::parse(None, None, Some(100_001), None, field).unwrap_err();
        assert_eq!(err.field, "sites[0].max_render_height");
        let err = SnapshotOptions::parse(None, None, None, Some(200), field).unwrap_err();
        assert_eq!(err.field, "sites[0].client_redirect_status");
        assert_eq!(
            SnapshotOptions::parse(None, None, None, Some(308), field)
                .unwrap()
                .client_redirect_status,
            308
        );
    }

    #[test]
    fn origins_must_be_http_urls() {
        assert!(parse_origin("http://127.0.0.1:8080", "origin").is_ok());
        assert_eq!(
            parse_origin("ftp://x", "origin").unwrap_err().field,
            "origin"
        );
        assert!(parse_origin("not a url", "origin").is_err());
        // Credentials are removed, and never shown in an error.
        let url = parse_origin("http://bob:hunter2@127.0.0.1:8080/", "origin").unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/");
        assert!(origin_credentials("http://bob:hunter2@127.0.0.1:8080/"));
        assert!(origin_credentials("http://token@127.0.0.1:8080/"));
        assert!(!origin_credentials("http://127.0.0.1:8080/"));
        for bad in [
            "https://u:hunter2@h:99999",
            "ftp://u:hunter2@h",
            "http://u:hunter2@h/?q",
        ] {
            let e = parse_origin(bad, "origin").unwrap_err();
            assert!(!e.message.contains("hunter2"), "{e}");
        }
    }
}
