//! The HTTP client the renderer uses to fetch a site's bytes from its origin
//! on behalf of the browser: requests and answers as the browser sees them,
//! over the one [`UpstreamClient`] and its [`OriginError`].

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::http::collect_bounded;
use crate::upstream::{OriginError, PoolLimits, UpstreamClient};

/// Largest response body accepted from the origin for one request.
pub(crate) const MAX_ORIGIN_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Request headers that are not forwarded from the browser to the origin:
/// hop-by-hop headers, and those the renderer sets itself.
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "accept-encoding",
    "content-length",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-prerender",
];

/// Response headers that are not handed to the browser: hop-by-hop, and
/// framing headers that no longer match once the body is decoded.
const DROPPED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-encoding",
];

/// One request to the origin.
#[derive(Debug)]
pub(crate) struct OriginRequest {
    pub method: String,
    /// Absolute http URL on the origin.
    pub url: url::Url,
    /// Host header: the public host, so virtual hosting at the origin works.
    pub host: String,
    pub forwarded_proto: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// The origin's answer, body decoded.
#[derive(Debug, Clone)]
pub(crate) struct OriginResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl OriginResponse {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How long an idle connection to an origin is kept for the next fetch
/// (hyper-util's own default, which this client used before it shared
/// [`UpstreamClient`]).
const ORIGIN_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Shared client with connection reuse: the one [`UpstreamClient`], each
/// fetch bounded by its render's deadline rather than a timeout of its own.
#[derive(Clone)]
pub(crate) struct OriginClient {
    client: UpstreamClient,
}

impl OriginClient {
    /// `render_timeout` is the client's own bound; a fetch's render
    /// deadline always comes sooner (see [`OriginClient::fetch`]).
    pub(crate) fn new(connect_timeout: Duration, render_timeout: Duration) -> Self {
        let client = UpstreamClient::new(
            render_timeout,
            PoolLimits {
                max_idle_per_origin: usize::MAX,
                idle_timeout: ORIGIN_IDLE_TIMEOUT,
                connect_timeout,
            },
        );
        Self { client }
    }

    /// The request, its answer's head and its whole body within `deadline`.
    pub(crate) async fn fetch(
        &self,
        req: OriginRequest,
        deadline: Instant,
    ) -> Result<OriginResponse, OriginError> {
        let mut builder = http::Request::builder()
            .method(req.method.as_str())
            .uri(req.url.as_str());
        for (name, value) in &req.headers {
            let lower = name.to_ascii_lowercase();
            if DROPPED_REQUEST_HEADERS.contains(&lower.as_str()) || lower.starts_with(':') {
                continue;
            }
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder = builder
            .header(http::header::HOST, req.host.as_str())
            .header("x-forwarded-proto", req.forwarded_proto.as_str())
            .header("x-forwarded-host", req.host.as_str())
            .header("x-prerender", "1")
            .header(http::header::ACCEPT_ENCODING, "identity");
        let request = builder
            .body(crate::http::respond::full(req.body))
            .map_err(|e| OriginError::BadRequest(e.to_string()))?;

        let budget = deadline.saturating_duration_since(Instant::now());
        let exchange = async {
            // The client's own timeout (`render_timeout`) is never the
            // first: `deadline` comes sooner (below).
            let response = self.client.send(request).await?;
            let (parts, body) = response.into_parts();
            let body = collect_bounded(body, MAX_ORIGIN_BODY_BYTES).await?;
            Ok::<_, OriginError>((parts, body))
        };
        let (parts, body) = tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| OriginError::Timeout(budget))??;

        let encoding = parts
            .headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase());
        let body = match encoding.as_deref() {
            None | Some("") | Some("identity") => body,
            Some(enc) => decode(enc, &body)?,
        };
        let headers = parts
            .headers
            .iter()
            .filter(|(name, _)| !DROPPED_RESPONSE_HEADERS.contains(&name.as_str()))
            .filter_map(|(name, value)| {
                value
                    .to_str()
                    .ok()
                    .map(|v| (name.as_str().to_string(), v.to_string()))
            })
            .collect();
        Ok(OriginResponse {
            status: parts.status.as_u16(),
            headers,
            body,
        })
    }
}

fn decode(encoding: &str, body: &[u8]) -> Result<Bytes, OriginError> {
    use std::io::Read;
    let mut out = Vec::new();
    let limit = MAX_ORIGIN_BODY_BYTES as u64 + 1;
    let result = match encoding {
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
        "br" => brotli::Decompressor::new(body, 8192)
            .take(limit)
            .read_to_end(&mut out),
        other => {
            return Err(OriginError::Unreachable(format!(
                "unsupported content-encoding {other}"
            )))
        }
    };
    result.map_err(|e| OriginError::Unreachable(format!("bad {encoding} body: {e}")))?;
    if out.len() > MAX_ORIGIN_BODY_BYTES {
        return Err(OriginError::TooLarge(MAX_ORIGIN_BODY_BYTES));
    }
    Ok(Bytes::from(out))
}
