//! The one HTTP client for origins outside the raw relay: hyper-util's
//! pooled client over [`connector`](super::connector), and the one
//! [`OriginError`] of an exchange with an origin (the passthrough's, the
//! renderer's, the refresher's poll and the sitemap fetches).

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::OriginConnector;
use crate::http::{Body, CollectError};

/// Why an origin could not answer.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("origin unreachable: {0}")]
    Unreachable(String),
    #[error("origin did not answer within {0:?}")]
    Timeout(Duration),
    #[error("bad origin URL: {0}")]
    BadUrl(String),
    /// The origin's certificate could not be verified for its host.
    #[error("origin certificate of {host} could not be verified: {detail}")]
    Tls { host: String, detail: String },
    /// The answer's body is larger than its reader accepts.
    #[error("origin body larger than {0} bytes")]
    TooLarge(usize),
    /// The request could not be built from what was asked for.
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl From<CollectError> for OriginError {
    fn from(e: CollectError) -> Self {
        match e {
            CollectError::TooLarge { limit } => OriginError::TooLarge(limit),
            CollectError::Read(detail) => OriginError::Unreachable(detail),
        }
    }
}

impl OriginError {
    pub fn status(&self) -> StatusCode {
        match self {
            OriginError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// What the client is told: never the origin's URL, address or system
    /// error, which go to the log only (SPEC §2 "Humans").
    pub fn public_message(&self) -> &'static str {
        match self {
            OriginError::Timeout(_) => "origin timeout",
            _ => "origin unreachable",
        }
    }

    /// The one log line of a failed exchange with an origin; a certificate
    /// that cannot be verified names the origin host on its own line.
    pub fn log(&self, origin: &url::Url) {
        match self {
            OriginError::Tls { host, detail } => tracing::warn!(
                origin_host = %host,
                error = %detail,
                "origin TLS certificate could not be verified; check origin_ca_file or the origin's certificate"
            ),
            _ => tracing::warn!(origin = %origin, error = %self, "passthrough failed"),
        }
    }

    /// The error of a failed request of hyper's pooled client to `origin`.
    pub fn from_client(e: &hyper_util::client::legacy::Error, origin_host: &str) -> OriginError {
        if crate::upstream::is_certificate_error(e) {
            OriginError::Tls {
                host: origin_host.to_string(),
                detail: error_chain(e),
            }
        } else {
            OriginError::Unreachable(error_chain(e))
        }
    }

    /// Whether this is a certificate the proxy cannot verify.
    pub fn is_tls(&self) -> bool {
        matches!(self, OriginError::Tls { .. })
    }

    /// What went wrong without the "origin unreachable" prefix of an
    /// unreachable origin, for messages that say it themselves (the
    /// renderer's `RenderError::OriginUnreachable`).
    pub fn detail(&self) -> String {
        match self {
            OriginError::Unreachable(detail) => detail.clone(),
            other => other.to_string(),
        }
    }
}

/// A pooled client for origins: every request answered within `timeout`.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<OriginConnector, Body>,
    timeout: Duration,
}

impl UpstreamClient {
    /// Its connections within `limits`.
    pub fn new(timeout: Duration, limits: super::PoolLimits) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(limits.idle_timeout)
            .pool_max_idle_per_host(limits.max_idle_per_origin)
            .build(super::connector(limits.connect_timeout));
        UpstreamClient { client, timeout }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `req` (an absolute URI) and waits for the answer's head at
    /// most the client's timeout.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, OriginError> {
        let host = req.uri().host().unwrap_or_default().to_string();
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(OriginError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(OriginError::from_client(&e, &host)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

/// The origin URL for a request: the origin's scheme, authority and path
/// prefix followed by the request's path and query.
pub fn origin_uri(origin: &url::Url, request: &Uri) -> Result<Uri, OriginError> {
    let base = origin.as_str().trim_end_matches('/');
    let pq = request.path_and_query().map_or("/", |pq| pq.as_str());
    format!("{base}{pq}")
        .parse()
        .map_err(|e| OriginError::BadUrl(format!("{e}")))
}

/// An error and its sources, one line (`a: b: c`), for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
