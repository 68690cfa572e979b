//! The request-level half of "who is a bot" (SPEC §2): method, loop guard,
//! static assets and the `_escaped_fragment_` query.

use std::fmt;

use http::{HeaderMap, Method};

/// Header the renderer puts on every request it sends to an origin; a
/// request carrying it with value `1` is never rendered (loop guard).
pub const LOOP_GUARD_HEADER: &str = "x-prerender";

/// Value of [`LOOP_GUARD_HEADER`] that marks the renderer's own requests.
pub const LOOP_GUARD_VALUE: &str = "1";

/// Query parameter of the old AJAX crawling scheme: a request carrying it is
/// rendered whatever its User-Agent.
pub const ESCAPED_FRAGMENT_PARAM: &str = "_escaped_fragment_";

/// Rule named in a render decision made by [`ESCAPED_FRAGMENT_PARAM`].
pub const ESCAPED_FRAGMENT_RULE: &str = "escaped-fragment";

/// Path extensions (compared without case) of files that are never
/// rendered: rendering a script, image or feed in a browser would replace
/// the file with an HTML page.
pub const STATIC_ASSET_EXTENSIONS: &[&str] = &[
    // Scripts, styles, source maps, WebAssembly.
    "js",
    "mjs",
    "cjs",
    "jsx",
    "ts",
    "tsx",
    "css",
    "scss",
    "less",
    "map",
    "wasm",
    // Images.
    "png",
    "jpg",
    "jpeg",
    "jpe",
    "jfif",
    "pjpeg",
    "gif",
    "webp",
    "avif",
    "apng",
    "svg",
    "svgz",
    "ico",
    "cur",
    "bmp",
    "tif",
    "tiff",
    "heic",
    "heif",
    "jxl",
    "psd",
    // Fonts.
    "woff",
    "woff2",
    "ttf",
    "otf",
    "eot",
    // Audio and video.
    "mp3",
    "mp4",
    "m4a",
    "m4v",
    "aac",
    "oga",
    "ogg",
    "ogv",
    "opus",
    "wav",
    "flac",
    "weba",
    "webm",
    "mov",
    "avi",
    "mkv",
    "wmv",
    "flv",
    "mpg",
    "mpeg",
    "3gp",
    "m3u8",
    "mpd",
    "vtt",
    "srt",
    // Archives and packages.
    "zip",
    "gz",
    "tgz",
    "bz2",
    "xz",
    "zst",
    "br",
    "7z",
    "rar",
    "tar",
    "jar",
    "apk",
    "dmg",
    "exe",
    "msi",
    "deb",
    "rpm",
    "iso",
    "bin",
    // Data and feeds.
    "json",
    "jsonld",
    "geojson",
    "webmanifest",
    "xml",
    "rss",
    "atom",
    "xsl",
    "txt",
    "csv",
    "tsv",
    "yaml",
    "yml",
    "ics",
    "vcf",
    "md",
    // Documents.
    "pdf",
    "doc",
    "docx",
    "xls",
    "xlsx",
    "ppt",
    "pptx",
    "odt",
    "ods",
    "odp",
    "rtf",
    "epub",
    // Other binary formats.
    "swf",
    "torrent",
];

/// Why a request is passed through to the origin instead of rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PassReason {
    /// The method is not GET or HEAD.
    Method,
    /// The request comes from the renderer itself (`X-Prerender: 1`).
    LoopGuard,
    /// The path names a static file (`.js`, `.png`, …).
    StaticAsset,
    /// The User-Agent is not a rendered bot and there is no `_escaped_fragment_`.
    Human,
    /// The path matches one of the site's `ignore` patterns.
    Ignored,
}

impl PassReason {
    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PassReason::Method => "method",
            PassReason::LoopGuard => "loop-guard",
            PassReason::StaticAsset => "static-asset",
            PassReason::Human => "human",
            PassReason::Ignored => "ignored",
        }
    }
}

impl fmt::Display for PassReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a request is rendered, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderDecision {
    /// Render (or serve from cache); `rule` is the bot rule that matched the
    /// User-Agent, or [`ESCAPED_FRAGMENT_RULE`].
    Render { rule: String },
    /// Pass through to the origin.
    Pass(PassReason),
}

impl RenderDecision {
    /// Whether the request is rendered.
    pub fn is_render(&self) -> bool {
        matches!(self, RenderDecision::Render { .. })
    }
}

impl fmt::Display for RenderDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderDecision::Render { rule } => write!(f, "render {rule}"),
            RenderDecision::Pass(reason) => write!(f, "pass {reason}"),
        }
    }
}

/// GET and HEAD are rendered; every other method goes to the origin.
pub fn is_renderable_method(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Whether the request carries the renderer's `X-Prerender: 1`.
pub fn carries_loop_guard(headers: &HeaderMap) -> bool {
    headers
        .get_all(LOOP_GUARD_HEADER)
        .iter()
        .any(|value| value.as_bytes().trim_ascii() == LOOP_GUARD_VALUE.as_bytes())
}

/// Whether the path's last segment has a static-asset extension. Path
/// parameters (`/app.js;v=3`) are ignored, as is anything after `?` or `#`
/// should the caller pass a full request target.
pub fn is_static_asset(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let last_segment = path.rsplit('/').next().unwrap_or_default();
    let file_name = last_segment.split(';').next().unwrap_or_default();
    file_name.rsplit_once('.').is_some_and(|(_, extension)| {
        STATIC_ASSET_EXTENSIONS
            .iter()
            .any(|known| known.eq_ignore_ascii_case(extension))
    })
}

/// Whether the query string has an `_escaped_fragment_` parameter (with or
/// without a value).
pub fn has_escaped_fragment(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(ESCAPED_FRAGMENT_PARAM))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_assets_are_recognised_without_case() {
        for path in [
            "/static/app.js",
            "/APP.JS",
            "/a/b/c.Min.Css",
            "/bundle.mjs",
            "/x.js.map",
            "/module.wasm",
            "/logo.svg",
            "/favicon.ico",
            "/hero.WebP",
            "/photo.avif",
            "/font.woff2",
            "/clip.mp4",
            "/archive.tar.gz",
            "/data.json",
            "/sitemap.xml",
            "/robots.txt",
            "/paper.pdf",
            "/app.js;jsessionid=1",
            "/app.js?v=3",
        ] {
            assert!(is_static_asset(path), "{path}");
        }
    }

    #[test]
    fn pages_are_not_static_assets() {
        for path in [
            "/",
            "/products",
            "/products/",
            "/blog/2024/hello-world",
            "/index.html",
            "/page.php",
            "/report.aspx",
            "/v1.2/docs",
            "/files.js/",
            "/.well-known/x",
            "/name.",
            "/archive.tar.gz/details",
        ] {
            assert!(!is_static_asset(path), "{path}");
        }
    }

    #[test]
    fn escaped_fragment_is_a_parameter_name() {
        assert!(has_escaped_fragment(Some("_escaped_fragment_=")));
        assert!(has_escaped_fragment(Some("_escaped_fragment_")));
        assert!(has_escaped_fragment(Some("a=1&_escaped_fragment_=/x")));
        assert!(!has_escaped_fragment(None));
        assert!(!has_escaped_fragment(Some("")));
        assert!(!has_escaped_fragment(Some("q=_escaped_fragment_")));
        assert!(!has_escaped_fragment(Some("x_escaped_fragment_=1")));
    }

    #[test]
    fn loop_guard_needs_the_value_one() {
        let mut headers = HeaderMap::new();
        assert!(!carries_loop_guard(&headers));
        headers.insert("X-Prerender", " 1 ".parse().unwrap());
        assert!(carries_loop_guard(&headers));
        headers.insert("x-prerender", "0".parse().unwrap());
        assert!(!carries_loop_guard(&headers));
    }
}
