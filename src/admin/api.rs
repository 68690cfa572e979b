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
use super::stats::{DomainExtra, DomainStats};
use crate::cache::{quota_month, CacheKey, StoredPage};
use crate::config::{Config, Site};
use crate::listener::Body;
use crate::prerender::{store_call, Prerenderer};
use crate::proxy::prepared::PreparedPages;
use crate::proxy::respond;
use crate::render::queue::Priority;

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
                self.purge_domain(&p["/api/v1/cache/domain/".len()..]).await
            }
            (Method::POST, "/api/v1/warm") => self.warm(req).await,
            (Method::POST, "/api/v1/refresh") => self.refresh(req).await,
            (_, "/api/v1/stats" | "/api/v1/cache" | "/api/v1/warm" | "/api/v1/refresh") => {
                Err(error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"))
            }
            _ => Err(error(StatusCode::NOT_FOUND, "no such endpoint")),
        };
        outcome.unwrap_or_else(ApiError::into_response)
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
                "key": key.to_string(),
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
            &json!({ "purged": purged, "key": key.to_string() }),
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
            &json!({ "queued": queued, "skipped": refused }),
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
            &json!({ "queued": 1, "key": key.to_string() }),
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
