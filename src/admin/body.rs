//! JSON request bodies of the admin API: bounded reading, typed requests,
//! and `{"error": …}` answers for bodies that do not fit.

use bytes::Bytes;
use hyper::header::{HeaderMap, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::http::respond;
use crate::http::{collect_bounded, Body, BoxError, CollectError};

/// Largest admin request body. A warm request of 10,000 URLs of ~100 bytes
/// fits with room to spare.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Most URLs one `POST /api/v1/warm` may list.
pub const MAX_WARM_URLS: usize = 10_000;

/// Longest URL accepted in a request: the public listener's request-target
/// bound (SPEC §2), so nothing is accepted here that a crawler could not ask for.
pub const MAX_URL_BYTES: usize = 8 * 1024;

/// Longest piece of client-supplied text (a parser's message quoting an
/// unknown key, a Content-Type) repeated in an error answer: the answer
/// stays small whatever the body held.
pub const MAX_ERROR_DETAIL_BYTES: usize = 256;

/// `text` cut to [`MAX_ERROR_DETAIL_BYTES`] on a character boundary.
fn bounded_detail(text: String) -> String {
    if text.len() <= MAX_ERROR_DETAIL_BYTES {
        return text;
    }
    let mut end = MAX_ERROR_DETAIL_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Why a request body was refused.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("send the body as JSON with Content-Type: application/json (got {0:?})")]
    UnsupportedMediaType(String),
    #[error("reading the request body failed: {0}")]
    Read(String),
    #[error("invalid JSON body: {0}")]
    Json(String),
    #[error("{0}")]
    Invalid(String),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyError::Read(_) | BodyError::Json(_) | BodyError::Invalid(_) => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    /// `{"error": …}` with the fitting 4xx.
    pub fn into_response(self) -> Response<Body> {
        respond::json(
            self.status(),
            &serde_json::json!({ "error": self.to_string() }),
        )
    }
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`] into `T`. A missing
/// `Content-Type` is accepted (webhook senders often omit it), and so are
/// the two types tools send JSON under by default: `curl -d` labels it
/// `application/x-www-form-urlencoded`, some hooks `text/plain`. (No
/// cross-site form can use that leniency: it cannot send the bearer
/// token.) The body must parse as JSON either way; any other type than
/// those and `application/json` or `application/*+json` is a 415.
pub async fn read_json<T, B>(headers: &HeaderMap, body: B) -> Result<T, BodyError>
where
    T: DeserializeOwned,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    check_content_type(headers)?;
    // A declared length over the bound is refused before reading anything.
    if let Some(len) = body.size_hint().exact() {
        if len > MAX_BODY_BYTES as u64 {
            return Err(BodyError::TooLarge);
        }
    }
    let bytes = collect_bounded(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| match e {
            CollectError::TooLarge { .. } => BodyError::TooLarge,
            CollectError::Read(detail) => BodyError::Read(bounded_detail(detail)),
        })?;
    serde_json::from_slice(&bytes).map_err(|e| BodyError::Json(bounded_detail(e.to_string())))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), BodyError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let raw = String::from_utf8_lossy(value.as_bytes()).into_owned();
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    let labelled_by_default = matches!(
        essence.as_str(),
        "application/x-www-form-urlencoded" | "text/plain"
    );
    if is_json || labelled_by_default {
        Ok(())
    } else {
        Err(BodyError::UnsupportedMediaType(bounded_detail(raw)))
    }
}

/// `POST /api/v1/warm`: `{"urls": [...]}` or `{"sitemap": "URL"}`, exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmRequest {
    pub urls: Option<Vec<String>>,
    pub sitemap: Option<String>,
}

/// What a valid [`WarmRequest`] asks to warm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarmTarget {
    Urls(Vec<String>),
    Sitemap(String),
}

impl WarmRequest {
    /// Checks the request: exactly one of `urls` and `sitemap`, a non-empty
    /// list of at most [`MAX_WARM_URLS`] non-empty URLs of at most
    /// [`MAX_URL_BYTES`] each. The URLs themselves (host allowed, path
    /// valid) are checked by the caller, which knows the sites.
    pub fn into_target(self) -> Result<WarmTarget, BodyError> {
        match (self.urls, self.sitemap) {
            (Some(urls), None) => {
                if urls.is_empty() {
                    return Err(BodyError::Invalid("\"urls\" is empty".into()));
                }
                if urls.len() > MAX_WARM_URLS {
                    return Err(BodyError::Invalid(format!(
                        "\"urls\" lists {} URLs; at most {MAX_WARM_URLS} per request",
                        urls.len()
                    )));
                }
                for (i, url) in urls.iter().enumerate() {
                    check_url(url, &format!("urls[{i}]"))?;
                }
                Ok(WarmTarget::Urls(urls))
            }
            (None, Some(sitemap)) => {
                check_url(&sitemap, "sitemap")?;
                Ok(WarmTarget::Sitemap(sitemap))
            }
            (Some(_), Some(_)) => Err(BodyError::Invalid(
                "send either \"urls\" or \"sitemap\", not both".into(),
            )),
            (None, None) => Err(BodyError::Invalid(
                "send {\"urls\": [...]} or {\"sitemap\": \"URL\"}".into(),
            )),
        }
    }
}

/// `POST /api/v1/refresh`: `{"url": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub url: String,
}

impl RefreshRequest {
    /// Checks the URL is present and of sane length; the caller checks the
    /// host and path.
    pub fn validate(&self) -> Result<(), BodyError> {
        check_url(&self.url, "url")
    }
}

fn check_url(url: &str, field: &str) -> Result<(), BodyError> {
    if url.trim().is_empty() {
        return Err(BodyError::Invalid(format!("{field:?} is empty")));
    }
    if url.len() > MAX_URL_BYTES {
        return Err(BodyError::Invalid(format!(
            "{field:?} is longer than {MAX_URL_BYTES} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;
    use hyper::header::HeaderValue;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h
    }

    async fn read<T: DeserializeOwned>(headers: &HeaderMap, body: &str) -> Result<T, BodyError> {
        read_json(headers, Full::new(Bytes::from(body.to_owned()))).await
    }

    #[tokio::test]
    async fn reads_warm_and_refresh_requests() {
        let h = json_headers();
        let warm: WarmRequest = read(&h, r#"{"urls": ["https://a.example/x"]}"#)
            .await
            .unwrap();
        assert_eq!(
            warm.into_target().unwrap(),
            WarmTarget::Urls(vec!["https://a.example/x".into()])
        );
        let warm: WarmRequest = read(&h, r#"{"sitemap": "https://a.example/sitemap.xml"}"#)
            .await
            .unwrap();
        assert_eq!(
            warm.into_target().unwrap(),
            WarmTarget::Sitemap("https://a.example/sitemap.xml".into())
        );
        let refresh: RefreshRequest = read(&h, r#"{"url": "https://a.example/"}"#).await.unwrap();
        assert_eq!(refresh.url, "https://a.example/");
        refresh.validate().unwrap();
    }

    #[tokio::test]
    async fn content_type_is_checked() {
        let mut h = HeaderMap::new();
        // Missing is accepted.
        read::<RefreshRequest>(&h, r#"{"url": "/"}"#).await.unwrap();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        read::<RefreshRequest>(&h, r#"{"url": "/"}"#).await.unwrap();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/merge-patch+json"),
        );
        read::<RefreshRequest>(&h, r#"{"url": "/"}"#).await.unwrap();
        // What curl -d and some hooks label JSON with: read as JSON.
        for label in [
            "application/x-www-form-urlencoded",
            "text/plain;charset=UTF-8",
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(label));
            read::<RefreshRequest>(&h, r#"{"url": "/"}"#).await.unwrap();
            let err = read::<RefreshRequest>(&h, "url=%2F").await.unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{label}");
        }
        for other in ["multipart/form-data; boundary=x", "application/xml"] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(other));
            let err = read::<RefreshRequest>(&h, r#"{"url": "/"}"#)
                .await
                .unwrap_err();
            assert_eq!(err.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
            assert!(err.to_string().contains("application/json"));
        }
    }

    #[tokio::test]
    async fn malformed_and_unknown_fields_are_400() {
        let h = json_headers();
        for body in [
            "",
            "{",
            "[]",
            r#"{"url": 5}"#,
            r#"{"url": "/", "extra": 1}"#,
            r#"{"urls": ["/"], "sitemaps": "x"}"#,
        ] {
            let refresh = read::<RefreshRequest>(&h, body).await.unwrap_err();
            let warm = read::<WarmRequest>(&h, body).await.unwrap_err();
            for err in [refresh, warm] {
                assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}: {err}");
            }
        }
    }

    #[tokio::test]
    async fn bodies_over_one_mebibyte_are_413() {
        let h = json_headers();
        let big = format!(r#"{{"url": "{}"}}"#, "a".repeat(MAX_BODY_BYTES));
        let err = read::<RefreshRequest>(&h, &big).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);

        // A streamed body without a declared length is cut off at the bound.
        let chunk = Bytes::from(vec![b' '; 64 * 1024]);
        let frames = (0..20).map(move |_| Ok::<_, BoxError>(Frame::data(chunk.clone())));
        let stream = StreamBody::new(futures::stream::iter(frames));
        let err = read_json::<RefreshRequest, _>(&h, stream)
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);

        // Exactly at the bound is read.
        let url = "a".repeat(MAX_BODY_BYTES - r#"{"url": ""}"#.len());
        let exact = format!(r#"{{"url": "{url}"}}"#);
        assert_eq!(exact.len(), MAX_BODY_BYTES);
        let ok: RefreshRequest = read(&h, &exact).await.unwrap();
        assert_eq!(ok.url.len(), url.len());
    }

    #[tokio::test]
    async fn a_failing_body_stream_is_400() {
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"{\"url\""))),
            Err::<Frame<Bytes>, BoxError>("connection reset".into()),
        ];
        let stream = StreamBody::new(futures::stream::iter(frames));
        let err = read_json::<RefreshRequest, _>(&json_headers(), stream)
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("connection reset"), "{err}");
    }

    #[test]
    fn warm_requests_need_exactly_one_source() {
        let both = WarmRequest {
            urls: Some(vec!["/a".into()]),
            sitemap: Some("/s.xml".into()),
        };
        assert!(both
            .into_target()
            .unwrap_err()
            .to_string()
            .contains("not both"));
        let neither = WarmRequest {
            urls: None,
            sitemap: None,
        };
        assert_eq!(
            neither.into_target().unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        let empty = WarmRequest {
            urls: Some(vec![]),
            sitemap: None,
        };
        assert!(empty.into_target().is_err());
        let blank = WarmRequest {
            urls: Some(vec!["https://a.example/".into(), " ".into()]),
            sitemap: None,
        };
        assert!(blank
            .into_target()
            .unwrap_err()
            .to_string()
            .contains("urls[1]"));
    }

    #[test]
    fn warm_url_lists_are_bounded() {
        let at_bound = WarmRequest {
            urls: Some(vec!["/p".into(); MAX_WARM_URLS]),
            sitemap: None,
        };
        assert!(at_bound.into_target().is_ok());
        let over = WarmRequest {
            urls: Some(vec!["/p".into(); MAX_WARM_URLS + 1]),
            sitemap: None,
        };
        let err = over.into_target().unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("10000"), "{err}");
        let long = RefreshRequest {
            url: format!("https://a.example/{}", "x".repeat(MAX_URL_BYTES)),
        };
        assert!(long.validate().is_err());
    }

    #[tokio::test]
    async fn errors_quote_at_most_a_bounded_piece_of_the_body() {
        // serde names an unknown field in full: a 1 MiB key came back whole.
        let h = json_headers();
        let long_key = format!(r#"{{"{}": 1}}"#, "\u{e9}".repeat(100_000));
        for err in [
            read::<RefreshRequest>(&h, &long_key).await.unwrap_err(),
            read::<WarmRequest>(&h, &long_key).await.unwrap_err(),
        ] {
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert!(
                err.to_string().len() < MAX_ERROR_DETAIL_BYTES + 64,
                "{} bytes",
                err.to_string().len()
            );
        }
        let mut h = HeaderMap::new();
        let odd_type = format!("text/{}", "x".repeat(4096));
        h.insert(CONTENT_TYPE, HeaderValue::from_str(&odd_type).unwrap());
        let err = read::<RefreshRequest>(&h, "{}").await.unwrap_err();
        assert_eq!(err.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(err.to_string().len() < MAX_ERROR_DETAIL_BYTES + 128);
    }

    #[tokio::test]
    async fn error_responses_are_json() {
        let resp = BodyError::TooLarge.into_response();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v["error"].as_str().unwrap().contains("larger than"));
    }
}
