//! `/api/v1/*`: cache entries, purges, warm-ups, refreshes and stats. Every
//! call is authorised by `auth` first; bodies are bounded JSON (`body`);
//! errors are `{"error": "…"}` with a fitting 4xx.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::body::{read_json, RefreshRequest, WarmRequest, WarmTarget};
use super::sitemap::{FetchTarget, SitemapFetcher, SitemapLimits};
use crate::cache::store_call;
use crate::cache::{quota_month, CacheKey, StoredPage};
use crate::config::{Config, Site};
use crate::http::respond;
use crate::http::Body;
use crate::pipeline::job::Prerenderer;
use crate::pipeline::queue::Priority;
use crate::proxy::prepared::PreparedPages;
use crate::state::stats::{DomainExtra, DomainStats};

pub struct Api {
    config: Arc<Config>,
    prerender: Arc<Prerenderer>,
    stats: Arc<DomainStats>,
    sitemaps: SitemapFetcher,
    /// This instance's prepared copies: dropped with every purge at once
    /// (other instances drop theirs on the purge notice).
    prepared: Arc<PreparedPages>,
}

/// A refused call: its status and the message of `{"error": …}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn into_response(self) -> Response<Body> {
        respond::json(self.status, &json!({ "error": self.message }))
    }
}

impl From<super::body::BodyError> for ApiError {
    fn from(e: super::body::BodyError) -> Self {
        ApiError {
            status: e.status(),
            message: e.to_string(),
        }
    }
}

type ApiResult<T = Response<Body>> = Result<T, ApiError>;

fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

/// An operation made of many store calls (a page per call): bounded as a
/// whole, more loosely than one call.
async fn many_store_calls<T>(
    fut: impl std::future::Future<Output = crate::cache::StoreResult<T>>,
) -> crate::cache::StoreResult<T> {
    match tokio::time::timeout(std::time::Duration::from_secs(30), fut).await {
        Ok(r) => r,
        Err(_) => Err(crate::cache::StoreError::Pool(
            "store calls took over 30 s".into(),
        )),
    }
}

/// Pages per `GET /api/v1/pages` answer: default and bound (SPEC §5).
pub const DEFAULT_PAGE_LIMIT: usize = 100;
pub const MAX_PAGE_LIMIT: usize = 1000;

/// The value of a query parameter (percent-decoded), if given.
fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A path prefix as the cache keys hold paths: absolute, its
/// percent-encoding normalised (`/café` and `/caf%C3%A9` are one prefix),
/// a trailing `/` kept.
fn path_prefix(raw: &str) -> ApiResult<String> {
    if !raw.starts_with('/') {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "prefix must be a path starting with /",
        ));
    }
    let normalized = crate::cache::key::normalize_path(raw)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid prefix: {e}")))?;
    // The normalisation may drop a trailing slash; the prefix keeps it, so
    // `/blog/` does not also match `/blogroll`.
    if raw.ends_with('/') && !normalized.ends_with('/') {
        return Ok(format!("{normalized}/"));
    }
    Ok(normalized)
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Api {
    pub fn new(
        config: Arc<Config>,
        prerender: Arc<Prerenderer>,
        stats: Arc<DomainStats>,
        prepared: Arc<PreparedPages>,
    ) -> Self {
        Api {
            config,
            prerender,
            stats,
            sitemaps: SitemapFetcher::new(SitemapLimits::default()),
            prepared,
        }
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let outcome = match (req.method().clone(), path.as_str()) {
            (Method::GET, "/api/v1/stats") => Ok(self.stats().await),
            (Method::GET, "/api/v1/cache") => self.entry(&query).await,
            (Method::DELETE, "/api/v1/cache") if query.is_empty() => self.purge_all().await,
            (Method::DELETE, "/api/v1/cache") => self.purge_one(&query).await,
            (Method::DELETE, p) if p.starts_with("/api/v1/cache/domain/") => {
                let domain = &p["/api/v1/cache/domain/".len()..];
                match query_param(&query, "prefix") {
                    Some(prefix) => self.purge_prefix(domain, &prefix).await,
                    None => self.purge_domain(domain).await,
                }
            }
            (Method::GET, "/api/v1/pages") => self.pages(&query).await,
            (Method::POST, "/api/v1/warm") => self.warm(req).await,
            (Method::POST, "/api/v1/refresh") => self.refresh(req).await,
            (
                _,
                "/api/v1/stats" | "/api/v1/cache" | "/api/v1/warm" | "/api/v1/refresh"
                | "/api/v1/pages",
            ) => Err(error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")),
            _ => Err(error(StatusCode::NOT_FOUND, "no such endpoint")),
        };
        outcome.unwrap_or_else(ApiError::into_response)
    }

    /// The name the page is stored under: its cache key behind
    /// `key_prefix` (SPEC §6), what `redis-cli GET` takes.
    fn stored_key(&self, key: &CacheKey) -> String {
        format!("{}{key}", self.config.key_prefix)
    }

    /// The site and cache key of a public URL; 400 for a malformed URL, 404
    /// for a host this proxy does not serve.
    fn key_of(&self, url: &str) -> ApiResult<(CacheKey, Arc<Site>)> {
        let probe = CacheKey::from_public_url(url, &[], false)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid url: {e}")))?;
        let site = self
            .config
            .sites
            .lookup(probe.domain())
            .cloned()
            .ok_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    format!("unknown domain {}", probe.domain()),
                )
            })?;
        let key = CacheKey::from_public_url(url, &site.query_params, false)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid url: {e}")))?;
        Ok((key, site))
    }

    fn url_param(query: &str) -> ApiResult<String> {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "url")
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    "missing ?url= (a page's public URL, percent-encoded)",
                )
            })
    }

    async fn entry(&self, query: &str) -> ApiResult {
        let (key, _) = self.key_of(&Self::url_param(query)?)?;
        let page: Option<StoredPage> = store_call(self.prerender.store().get(&key))
            .await
            .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")))?;
        let page =
            page.ok_or_else(|| error(StatusCode::NOT_FOUND, format!("{key} is not cached")))?;
        Ok(respond::json(
            StatusCode::OK,
            &json!({
                "key": self.stored_key(&key),
                "status": page.status,
                "rendered_at": rfc3339(page.rendered_at),
                "expires_at": rfc3339(page.expires_at),
                "bytes": page.html.len(),
                "etag": page.etag,
            }),
        ))
    }

    async fn purge_one(&self, query: &str) -> ApiResult {
        let (key, site) = self.key_of(&Self::url_param(query)?)?;
        let store = self.prerender.store();
        let mut purged = 0u64;
        let mut keys = vec![key.clone()];
        if site.mobile_variant {
            if let Ok(m) = CacheKey::new(key.domain(), key.path(), &site.query_params, true) {
                keys.push(m);
            }
        }
        for k in &keys {
            let removed = store_call(store.delete(k))
                .await
                .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")))?;
            purged += u64::from(removed);
            self.prepared.remove_prefix(&k.to_string());
        }
        tracing::info!(key = %key, purged, "purged a page");
        Ok(respond::json(
            StatusCode::OK,
            &json!({ "purged": purged, "key": self.stored_key(&key) }),
        ))
    }

    async fn purge_domain(&self, raw: &str) -> ApiResult {
        let domain = crate::cache::key::normalize_host(raw)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid domain: {e}")))?;
        if self.config.sites.lookup(&domain).is_none() {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("unknown domain {domain}"),
            ));
        }
        let purged = store_call(self.prerender.store().purge_domain(&domain))
            .await
            .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")))?;
        self.stats.forget(&domain);
        self.prepared.remove_prefix(&format!("render:{domain}:"));
        tracing::info!(%domain, purged, "purged a domain");
        Ok(respond::json(
            StatusCode::OK,
            &json!({ "purged": purged, "domain": domain }),
        ))
    }

    /// A configured domain named by the API, normalised; 400 if malformed,
    /// 404 if not served here.
    fn served_domain(&self, raw: &str) -> ApiResult<(String, Arc<Site>)> {
        let domain = crate::cache::key::normalize_host(raw)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid domain: {e}")))?;
        let site = self
            .config
            .sites
            .lookup(&domain)
            .cloned()
            .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("unknown domain {domain}")))?;
        Ok((domain, site))
    }

    async fn purge_prefix(&self, raw_domain: &str, raw_prefix: &str) -> ApiResult {
        let (domain, _) = self.served_domain(raw_domain)?;
        let prefix = path_prefix(raw_prefix)?;
        let purged = many_store_calls(crate::cache::purge_prefix(
            &**self.prerender.store(),
            &domain,
            &prefix,
        ))
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")))?;
        for variant in ["", crate::cache::key::MOBILE_MARKER] {
            self.prepared
                .remove_prefix(&format!("render:{domain}:{variant}{prefix}"));
        }
        tracing::info!(%domain, %prefix, purged, "purged pages by path prefix");
        Ok(respond::json(
            StatusCode::OK,
            &json!({ "purged": purged, "domain": domain, "prefix": prefix }),
        ))
    }

    /// `GET /api/v1/pages?domain=D[&prefix=P][&cursor=C][&limit=N]`: the
    /// domain's cached pages ordered by key, `limit` at a time (≤ 1000,
    /// default 100); `next_cursor` continues after the last one.
    async fn pages(&self, query: &str) -> ApiResult {
        let raw_domain = query_param(query, "domain").ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "missing ?domain= (a configured domain)",
            )
        })?;
        let (domain, site) = self.served_domain(&raw_domain)?;
        let prefix = match query_param(query, "prefix") {
            Some(p) => path_prefix(&p)?,
            None => "/".to_string(),
        };
        let limit = match query_param(query, "limit") {
            None => DEFAULT_PAGE_LIMIT,
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE_LIMIT).contains(n))
                .ok_or_else(|| {
                    error(
                        StatusCode::BAD_REQUEST,
                        format!("limit must be a number from 1 to {MAX_PAGE_LIMIT}"),
                    )
                })?,
        };
        let after = match query_param(query, "cursor") {
            None => None,
            Some(raw) => Some(
                hex::decode(&raw)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .filter(|k| k.starts_with(&format!("render:{domain}:")))
                    .ok_or_else(|| {
                        error(
                            StatusCode::BAD_REQUEST,
                            "invalid cursor (pass next_cursor as it was given)",
                        )
                    })?,
            ),
        };
        let list = many_store_calls(crate::cache::list_pages(
            &**self.prerender.store(),
            &domain,
            &prefix,
            after.as_deref(),
            limit,
        ))
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")))?;
        let pages: Vec<serde_json::Value> = list
            .pages
            .iter()
            .map(|p| {
                json!({
                    "url": format!("{}://{}{}", site.scheme, domain, p.key.path()),
                    "mobile": p.key.is_mobile(),
                    "key": self.stored_key(&p.key),
                    "status": p.info.status,
                    "rendered_at": rfc3339(p.info.rendered_at),
                    "expires_at": rfc3339(p.info.expires_at),
                    "bytes": p.info.bytes,
                    "last_hit": rfc3339(p.last_hit),
                })
            })
            .collect();
        Ok(respond::json(
            StatusCode::OK,
            &json!({
                "pages": pages,
                "next_cursor": list.next_after.map(hex::encode),
            }),
        ))
    }

    async fn purge_all(&self) -> ApiResult {
        let purged = store_call(self.prerender.store().purge_all())
            .await
            .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")))?;
        self.prepared.remove_prefix("");
        tracing::info!(purged, "purged everything");
        Ok(respond::json(StatusCode::OK, &json!({ "purged": purged })))
    }

    async fn warm(&self, req: Request<Incoming>) -> ApiResult {
        let (parts, body) = req.into_parts();
        let request: WarmRequest = read_json(&parts.headers, body)
            .await
            .map_err(ApiError::from)?;
        let urls = match request.into_target().map_err(ApiError::from)? {
            WarmTarget::Urls(urls) => urls,
            WarmTarget::Sitemap(sitemap) => {
                let sites = &self.config.sites;
                let pages = self
                    .sitemaps
                    .collect(
                        &sitemap,
                        |host| sites.lookup(host).is_some(),
                        |url| {
                            let site = sites.lookup(url.host_str()?)?;
                            let base = site.origin.as_str().trim_end_matches('/');
                            let pq = &url[url::Position::BeforePath..url::Position::AfterQuery];
                            let url = url::Url::parse(&format!("{base}{pq}")).ok()?;
                            Some(FetchTarget {
                                url,
                                host: site.origin_host.clone(),
                            })
                        },
                    )
                    .await
                    .map_err(|e| {
                        let status = if e.is_client_error() {
                            StatusCode::BAD_REQUEST
                        } else {
                            StatusCode::BAD_GATEWAY
                        };
                        error(status, e.to_string())
                    })?;
                pages.urls
            }
        };
        let mut queued = 0usize;
        let mut refused = Vec::new();
        for url in &urls {
            let (key, site) = match self.key_of(url) {
                Ok(k) => k,
                Err(_) => {
                    refused.push(url.clone());
                    continue;
                }
            };
            match self.prerender.enqueue(&key, &site, Priority::Background) {
                Ok(()) => queued += 1,
                Err(_) => refused.push(url.clone()),
            }
        }
        if queued == 0 && !refused.is_empty() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("no URL could be queued: {}", refused.join(", ")),
            ));
        }
        Ok(respond::json(
            StatusCode::ACCEPTED,
            // `count` as SPEC §5 words it; `queued` says what was counted.
            &json!({ "count": queued, "queued": queued, "skipped": refused }),
        ))
    }

    async fn refresh(&self, req: Request<Incoming>) -> ApiResult {
        let (parts, body) = req.into_parts();
        let request: RefreshRequest = read_json(&parts.headers, body)
            .await
            .map_err(ApiError::from)?;
        request.validate().map_err(ApiError::from)?;
        let (key, site) = self.key_of(&request.url)?;
        self.prerender
            .enqueue(&key, &site, Priority::Live)
            .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        Ok(respond::json(
            StatusCode::ACCEPTED,
            &json!({ "queued": 1, "key": self.stored_key(&key) }),
        ))
    }

    async fn stats(&self) -> Response<Body> {
        let store = self.prerender.store();
        let mut domains: Vec<String> = self
            .config
            .sites
            .iter()
            .map(|s| s.domain.clone())
            .filter(|d| !d.is_empty())
            .collect();
        if let Ok(known) = store_call(store.domains()).await {
            domains.extend(known);
        }
        domains.sort();
        domains.dedup();
        let month = quota_month(SystemTime::now());
        let mut extra = BTreeMap::new();
        for domain in domains {
            let Some(site) = self.config.sites.lookup(&domain) else {
                continue;
            };
            let entries = store_call(store.entries(&domain)).await.unwrap_or(0);
            let renders_this_month = store_call(store.renders_in_month(&domain, &month))
                .await
                .unwrap_or(0);
            let next_refresh = store_call(store.next_due(&domain)).await.ok().flatten();
            extra.insert(
                domain.clone(),
                DomainExtra {
                    entries,
                    max_entries: site.plan.max_entries,
                    bytes: self
                        .stats
                        .average_page_bytes(&domain)
                        .map_or(0, |avg| avg * entries),
                    renders_this_month,
                    monthly_renders: site.plan.monthly_renders,
                    next_refresh,
                },
            );
        }
        respond::json(StatusCode::OK, &self.stats.to_json(&extra))
    }
}
