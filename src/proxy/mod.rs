//! The public listener's request path. Every request walks the same phases:
//!
//! 1. `request::resolve` — limits, Host, path; which site (else 4xx / 421);
//! 2. classify — bot or human (`bot`);
//! 3. humans: `forward` to the site's origin, streamed both ways.

pub mod forward;
pub mod prepared;
pub mod request;
pub mod respond;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::config::Config;
use crate::listener::Body;
use forward::OriginClient;

/// Shared state of the public listener.
pub struct PublicProxy {
    config: Arc<Config>,
    origin: OriginClient,
}

impl PublicProxy {
    pub fn new(config: Arc<Config>) -> Self {
        let origin = OriginClient::new(config.origin_timeout);
        PublicProxy { config, origin }
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let target = match request::resolve(&req, &self.config.sites) {
            Ok(t) => t,
            Err(rejection) => {
                tracing::warn!(
                    %peer,
                    status = rejection.status.as_u16(),
                    reason = rejection.reason,
                    method = %req.method(),
                    "request refused"
                );
                return respond::error(rejection.status, rejection.reason);
            }
        };
        tracing::debug!(%peer, method = %req.method(), host = %target.host, path = req.uri().path(), "human");
        self.origin
            .forward(req, &target.site.origin, &target.host, peer)
            .await
    }
}
