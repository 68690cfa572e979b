//! The HTTP client the renderer uses to fetch a site's bytes from its origin
//! on behalf of the browser.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

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

#[derive(Debug, thiserror::Error)]
pub(crate) enum OriginError {
    #[error("origin request timed out")]
    Timeout,
    #[error("{0}")]
    Transport(String),
    #[error("origin body larger than {MAX_ORIGIN_BODY_BYTES} bytes")]
    TooLarge,
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The origin's certificate could not be verified for its host.
    #[error("origin certificate of {0} could not be verified: {1}")]
    Tls(String, String),
}

/// Shared client with connection reuse.
#[derive(Clone)]
pub(crate) struct OriginClient {
    client: Client<crate::upstream::OriginConnector, Full<Bytes>>,
}

impl OriginClient {
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        let connector = crate::upstream::connector(connect_timeout);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self { client }
    }

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
        let forwarded_host = req.host.clone();
        builder = builder
            .header(http::header::HOST, req.host.as_str())
            .header("x-forwarded-proto", req.forwarded_proto.as_str())
            .header("x-forwarded-host", forwarded_host.as_str())
            .header("x-prerender", "1")
            .header(http::header::ACCEPT_ENCODING, "identity");
        let request = builder
            .body(Full::new(req.body))
            .map_err(|e| OriginError::BadRequest(e.to_string()))?;

        let origin_host = req.url.host_str().unwrap_or_default().to_string();
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if crate::upstream::is_certificate_error(&e) {
                    OriginError::Tls(origin_host, crate::upstream::error_chain(&e))
                } else {
                    OriginError::Transport(crate::upstream::error_chain(&e))
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ORIGIN_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        OriginError::TooLarge
                    } else {
                        OriginError::Transport(e.to_string())
                    }
                })?
                .to_bytes();
            Ok::<_, OriginError>((parts, body))
        };
        let (parts, body) = tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| OriginError::Timeout)??;

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
            return Err(OriginError::Transport(format!(
                "unsupported content-encoding {other}"
            )))
        }
    };
    result.map_err(|e| OriginError::Transport(format!("bad {encoding} body: {e}")))?;
    if out.len() > MAX_ORIGIN_BODY_BYTES {
        return Err(OriginError::TooLarge);
    }
    Ok(Bytes::from(out))
}
