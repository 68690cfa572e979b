//! The admin listener: liveness, readiness, Prometheus metrics, the
//! dashboard and the operator API (`/api/v1/*`, bearer token). Never mixed
//! with the public listener.

pub mod api;
pub mod auth;
pub mod body;
pub mod dashboard;
pub mod sitemap;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::http::respond;
use crate::http::Body;
use crate::metrics::{Metrics, TEXT_CONTENT_TYPE};
use crate::state::Health;
use api::Api;
use auth::AdminAuth;

pub struct Admin {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    auth: AdminAuth,
    api: Api,
}

impl Admin {
    pub fn new(health: Arc<Health>, metrics: Arc<Metrics>, auth: AdminAuth, api: Api) -> Self {
        Admin {
            health,
            metrics,
            auth,
            api,
        }
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let path = req.uri().path();
        if path.starts_with("/api/") {
            if let Err(refused) = self.auth.check(req.headers()) {
                tracing::warn!(%peer, %path, "admin API call refused");
                return refused.into_response();
            }
            return self.api.handle(req).await;
        }
        match (req.method(), path) {
            (&Method::GET | &Method::HEAD, "/healthz") => respond::error(StatusCode::OK, "ok"),
            (&Method::GET | &Method::HEAD, "/readyz") => {
                let (status, body) = self.health.readiness();
                respond::json(status, &body)
            }
            (&Method::GET | &Method::HEAD, "/metrics") => {
                let mut resp = Response::new(respond::full(self.metrics.render_text()));
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_CONTENT_TYPE));
                resp
            }
            (&Method::GET | &Method::HEAD, "/") => dashboard::response(),
            (_, "/healthz" | "/readyz" | "/metrics" | "/") => {
                let mut resp = respond::json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &serde_json::json!({"error": "use GET or HEAD"}),
                );
                resp.headers_mut()
                    .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                resp
            }
            _ => respond::json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "not found"}),
            ),
        }
    }
}
