//! Bearer-token check for `/api/v1/*`.
//!
//! The presented token and the configured one are both hashed with SHA-256
//! and the digests compared in constant time, so neither the token's content
//! nor its length leaks through response timing.

use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::http::respond;
use crate::http::Body;

/// The answer to every `/api/v1/*` request while no token is configured.
pub const DISABLED_MESSAGE: &str =
    "the admin API is disabled: set --admin-token or PRERENDER_ADMIN_TOKEN";

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{DISABLED_MESSAGE}")]
    Disabled,
    #[error("missing bearer token: send Authorization: Bearer <admin token>")]
    Missing,
    #[error("invalid bearer token")]
    Invalid,
}

impl AuthError {
    pub fn status(self) -> StatusCode {
        match self {
            AuthError::Disabled => StatusCode::FORBIDDEN,
            AuthError::Missing | AuthError::Invalid => StatusCode::UNAUTHORIZED,
        }
    }

    /// `{"error": …}` with 403, or 401 and `WWW-Authenticate: Bearer`.
    pub fn into_response(self) -> Response<Body> {
        let mut resp = respond::json(
            self.status(),
            &serde_json::json!({ "error": self.to_string() }),
        );
        let challenge = match self {
            AuthError::Disabled => None,
            AuthError::Missing => Some(r#"Bearer realm="prerender-proxy admin""#),
            AuthError::Invalid => {
                Some(r#"Bearer realm="prerender-proxy admin", error="invalid_token""#)
            }
        };
        if let Some(challenge) = challenge {
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        resp
    }
}

/// The admin API's credentials: the SHA-256 digest of the configured token.
#[derive(Clone)]
pub struct AdminAuth {
    token_digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("enabled", &self.token_digest.is_some())
            .finish()
    }
}

impl AdminAuth {
    /// `None` or a blank token disables the API (a blank token would
    /// otherwise let an empty `Bearer` through).
    pub fn new(token: Option<&str>) -> Self {
        let token_digest = token.map(str::trim).filter(|t| !t.is_empty()).map(digest);
        AdminAuth { token_digest }
    }

    pub fn is_enabled(&self) -> bool {
        self.token_digest.is_some()
    }

    /// Checks the `Authorization` header of an `/api/v1/*` request.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let Some(expected) = &self.token_digest else {
            return Err(AuthError::Disabled);
        };
        let presented = bearer_token(headers).ok_or(AuthError::Missing)?;
        if bool::from(digest(presented).ct_eq(expected)) {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive,
/// RFC 7235), or `None` when absent, of another scheme, or empty. Several
/// `Authorization` headers are refused rather than guessed between.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn headers(authorization: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in authorization {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    async fn body_json(resp: Response<Body>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn right_token_passes() {
        let auth = AdminAuth::new(Some("s3cret-token"));
        assert_eq!(auth.check(&headers(&["Bearer s3cret-token"])), Ok(()));
        assert_eq!(auth.check(&headers(&["bearer s3cret-token"])), Ok(()));
        assert_eq!(auth.check(&headers(&["BEARER  s3cret-token "])), Ok(()));
    }

    #[test]
    fn wrong_or_missing_token_is_refused() {
        let auth = AdminAuth::new(Some("s3cret-token"));
        assert_eq!(auth.check(&headers(&[])), Err(AuthError::Missing));
        assert_eq!(auth.check(&headers(&["Bearer"])), Err(AuthError::Missing));
        assert_eq!(auth.check(&headers(&["Bearer "])), Err(AuthError::Missing));
        assert_eq!(
            auth.check(&headers(&["Basic czNjcmV0LXRva2Vu"])),
            Err(AuthError::Missing)
        );
        assert_eq!(
            auth.check(&headers(&["Bearer s3cret-toke"])),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            auth.check(&headers(&["Bearer s3cret-token2"])),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            auth.check(&headers(&["Bearer S3CRET-TOKEN"])),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            auth.check(&headers(&["Bearer wrong", "Bearer s3cret-token"])),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn no_token_configured_disables_the_api() {
        for token in [None, Some(""), Some("   ")] {
            let auth = AdminAuth::new(token);
            assert!(!auth.is_enabled());
            assert_eq!(auth.check(&headers(&["Bearer "])), Err(AuthError::Disabled));
            assert_eq!(
                auth.check(&headers(&["Bearer anything"])),
                Err(AuthError::Disabled)
            );
        }
    }

    #[tokio::test]
    async fn disabled_answers_403_saying_how_to_enable() {
        let resp = AuthError::Disabled.into_response();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(resp.headers().get(WWW_AUTHENTICATE).is_none());
        assert_eq!(
            resp.headers().get("content-type").unwrap(),
            "application/json"
        );
        assert_eq!(
            body_json(resp).await,
            serde_json::json!({"error": "the admin API is disabled: set --admin-token or PRERENDER_ADMIN_TOKEN"})
        );
    }

    #[tokio::test]
    async fn refusals_answer_401_with_a_bearer_challenge() {
        for err in [AuthError::Missing, AuthError::Invalid] {
            let resp = err.into_response();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            let challenge = resp.headers().get(WWW_AUTHENTICATE).unwrap();
            assert!(challenge.to_str().unwrap().starts_with("Bearer "));
            let body = body_json(resp).await;
            assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let auth = AdminAuth::new(Some("s3cret-token"));
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
