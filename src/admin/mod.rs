//! The admin listener: liveness, readiness (and, beside them, the operator
//! API). Never mixed with the public listener.

pub mod auth;
pub mod body;
pub mod dashboard;
pub mod health;
pub mod sitemap;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::listener::Body;
use crate::proxy::respond;
pub use health::Health;

pub struct Admin {
    health: Arc<Health>,
}

impl Admin {
    pub fn new(health: Arc<Health>) -> Self {
        Admin { health }
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        _peer: SocketAddr,
    ) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => respond::error(StatusCode::OK, "ok"),
            (&Method::GET | &Method::HEAD, "/readyz") => {
                let (status, body) = self.health.readiness();
                respond::json(status, &body)
            }
            _ => respond::json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "not found"}),
            ),
        }
    }
}
