//! The dashboard page of `GET /`: one self-contained HTML file (inline CSS
//! and JavaScript, no external assets) that polls `/api/v1/stats`.
//!
//! It is served with a Content-Security-Policy that allows exactly its own
//! inline script and style (by SHA-256 hash) and requests to its own origin,
//! so even a rendering bug could not run injected script or send data away.

use std::sync::LazyLock;

use base64::Engine;
use hyper::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
};
use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::http::respond;
use crate::http::Body;

/// The page itself.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// The policy the page is served with (hashes computed from the page once).
pub static DASHBOARD_CSP: LazyLock<String> = LazyLock::new(|| {
    let script = inline_hashes(DASHBOARD_HTML, "script");
    let style = inline_hashes(DASHBOARD_HTML, "style");
    format!(
        "default-src 'none'; script-src {script}; style-src {style}; \
         connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
});

/// The `GET /` answer: the page, no caching, with its security headers.
pub fn response() -> Response<Body> {
    let mut resp = Response::new(respond::full(DASHBOARD_HTML));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(csp) = HeaderValue::from_str(&DASHBOARD_CSP) {
        h.insert(CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// `'sha256-…'` sources of every inline `<tag>…</tag>` block of `html`.
fn inline_hashes(html: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut sources = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let body_start = start + open.len();
        let Some(len) = rest[body_start..].find(&close) else {
            break;
        };
        let body = &rest[body_start..body_start + len];
        let digest = Sha256::digest(body.as_bytes());
        sources.push(format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        ));
        rest = &rest[body_start + len + close.len()..];
    }
    if sources.is_empty() {
        "'none'".to_owned()
    } else {
        sources.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained() {
        let html = DASHBOARD_HTML.to_ascii_lowercase();
        // No external scripts, styles, images or fonts.
        for needle in [
            "src=",
            "<link rel=\"stylesheet\"",
            "@import",
            "url(",
            "http://",
            "https://",
        ] {
            assert!(!html.contains(needle), "dashboard references {needle}");
        }
        assert!(html.contains("<link rel=\"icon\" href=\"data:,\">"));
        assert_eq!(html.matches("<script>").count(), 1);
        assert_eq!(html.matches("<style>").count(), 1);
    }

    #[test]
    fn page_never_inserts_markup() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!DASHBOARD_HTML.contains(sink), "dashboard uses {sink}");
        }
        // Inline style attributes would be refused by the policy.
        assert!(!DASHBOARD_HTML.contains(" style=\""));
    }

    #[test]
    fn page_polls_stats_with_the_bearer_token_from_session_storage() {
        assert!(DASHBOARD_HTML.contains("fetch(\"/api/v1/stats\""));
        assert!(DASHBOARD_HTML.contains("\"Bearer \" + token"));
        assert!(DASHBOARD_HTML.contains("sessionStorage"));
        assert!(!DASHBOARD_HTML.contains("localStorage"));
        assert!(DASHBOARD_HTML.contains("var POLL_MS = 5000;"));
        for field in crate::state::stats::DOMAIN_FIELDS {
            assert!(
                DASHBOARD_HTML.contains(&format!("d.{field}")),
                "{field} not shown"
            );
        }
    }

    #[test]
    fn policy_allows_exactly_the_inline_blocks() {
        let csp = DASHBOARD_CSP.as_str();
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let script_start = DASHBOARD_HTML.find("<script>").unwrap() + "<script>".len();
        let script_end = DASHBOARD_HTML.find("</script>").unwrap();
        let digest = Sha256::digest(&DASHBOARD_HTML.as_bytes()[script_start..script_end]);
        let want = format!(
            "script-src 'sha256-{}';",
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        assert!(csp.contains(&want), "{csp}");
        assert_eq!(inline_hashes("<p>none</p>", "script"), "'none'");
    }

    #[test]
    fn response_is_html_and_uncached() {
        let resp = response();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(resp.headers()[CACHE_CONTROL], "no-store");
        assert!(resp.headers().contains_key(CONTENT_SECURITY_POLICY));
    }
}
