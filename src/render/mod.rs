//! The rendering engine: a pool of headless Chromium processes and the
//! rendering of one public URL from a private origin.
//!
//! - `pool`: [`BrowserPool`] — launches, leases, recycles and reaps browsers.
//! - `page`: one render on a tab (navigation, readiness, snapshot).
//! - `frames`: a tab's page gets animation frames once it needs them.
//! - `intercept`: every request of a rendering tab, answered through CDP Fetch.
//! - `policy`: which requests a page may make (blocked types/hosts, SSRF guard).
//! - `origin`: the HTTP client that fetches from the site's origin.
//! - `subresources`: per-site in-process cache of static subresources.
//! - `process`: /proc helpers (process tree, RSS, signals).
//!
//! The engine knows nothing of the proxy, the cache of rendered pages or the
//! queue: it turns a [`RenderJob`] into a [`RenderedPage`] or a [`RenderError`].

mod frames;
mod intercept;
mod origin;
mod page;
mod policy;
mod pool;
mod process;
mod subresources;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use pool::{BrowserPool, PoolStats};

/// Browsers in the pool (SPEC §1 `--browsers`).
pub const DEFAULT_BROWSERS: usize = 2;
/// Concurrent renders per browser (SPEC §1 `--tabs-per-browser`).
pub const DEFAULT_TABS_PER_BROWSER: usize = 4;
/// Renders after which a browser is recycled (SPEC §1 `--renders-per-browser`).
pub const DEFAULT_RENDERS_PER_BROWSER: u32 = 20;
/// Age after which a browser is recycled (SPEC §1 `--browser-max-age`).
pub const DEFAULT_BROWSER_MAX_AGE: Duration = Duration::from_secs(3600);
/// Process-tree RSS above which a browser is recycled (SPEC §1 `--browser-max-rss`, 1024 MB).
pub const DEFAULT_BROWSER_MAX_RSS_BYTES: u64 = 1024 * 1024 * 1024;
/// Hard deadline of one render (SPEC §1 `--render-timeout`).
pub const DEFAULT_RENDER_TIMEOUT: Duration = Duration::from_secs(20);
/// Snapshot deadline of a loaded page whose network never settles (SPEC §1 `--ready-timeout`).
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Height in CSS pixels up to which a page is laid out before its snapshot,
/// so content that loads when scrolled into view is loaded (SPEC §3 site
/// option `max_render_height`; Googlebot renders in a tall viewport too).
pub const DEFAULT_MAX_RENDER_HEIGHT: u32 = 16_000;
/// Status of the answer to a page whose script moved it to another path of
/// its site (SPEC §3 site option `client_redirect_status`).
pub const DEFAULT_CLIENT_REDIRECT_STATUS: u16 = 302;
/// Bound of the in-process static subresource cache (all sites together).
pub const DEFAULT_SUBRESOURCE_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Browser binaries looked up on PATH, in order (SPEC §1 `--chrome`).
const CHROME_NAMES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];
/// Debian's `/usr/bin/chromium` is a shell wrapper that adds its own flags;
/// the real binary lives here.
const DEBIAN_CHROMIUM_BINARY: &str = "/usr/lib/chromium/chromium";

/// Everything the pool needs; the caller maps its own configuration onto it.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Browser binary.
    pub chrome: PathBuf,
    /// Browser processes kept running.
    pub browsers: usize,
    /// Concurrent renders per browser.
    pub tabs_per_browser: usize,
    /// Renders after which a browser is recycled.
    pub renders_per_browser: u32,
    /// Age after which a browser is recycled.
    pub browser_max_age: Duration,
    /// Process-tree resident memory above which a browser is recycled.
    pub browser_max_rss_bytes: u64,
    /// Hard deadline of one render, waiting for a tab included.
    pub render_timeout: Duration,
    /// A loaded page whose network never settles is snapshotted after this.
    pub ready_timeout: Duration,
    /// Bound in bytes of the static subresource cache.
    pub subresource_cache_bytes: usize,
    /// A new connection to an origin, for the documents and subresources a
    /// render fetches, must be established within this.
    pub origin_connect_timeout: Duration,
    /// User-Agent of every render (`render_user_agent`); `None`: the
    /// browser's own, desktop or mobile, with the `Prerender` token.
    pub user_agent: Option<String>,
}

impl PoolConfig {
    /// A configuration with every default and the given browser binary.
    pub fn with_chrome(chrome: impl Into<PathBuf>) -> Self {
        Self {
            chrome: chrome.into(),
            browsers: DEFAULT_BROWSERS,
            tabs_per_browser: DEFAULT_TABS_PER_BROWSER,
            renders_per_browser: DEFAULT_RENDERS_PER_BROWSER,
            browser_max_age: DEFAULT_BROWSER_MAX_AGE,
            browser_max_rss_bytes: DEFAULT_BROWSER_MAX_RSS_BYTES,
            render_timeout: DEFAULT_RENDER_TIMEOUT,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            subresource_cache_bytes: DEFAULT_SUBRESOURCE_CACHE_BYTES,
            origin_connect_timeout: crate::upstream::limits::DEFAULT_CONNECT_TIMEOUT,
            user_agent: None,
        }
    }

    /// The first of chromium, chromium-browser, google-chrome on PATH. When
    /// that is Debian's `/usr/bin/chromium` wrapper, the real binary
    /// `/usr/lib/chromium/chromium` is returned instead.
    pub fn find_chrome() -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        find_chrome_in(&path, Path::new(DEBIAN_CHROMIUM_BINARY))
    }
}

/// Whether `chrome` (a path, or a bare name looked up on PATH as the
/// launch does) is an executable file; the error says what is wrong.
pub fn check_chrome(chrome: &Path) -> Result<(), String> {
    let found = if chrome.components().count() > 1 {
        is_executable(chrome)
    } else {
        std::env::var_os("PATH").is_some_and(|path| on_path(&path, chrome).is_some())
    };
    match found {
        true => Ok(()),
        false => Err(format!(
            "{} is not an executable browser binary",
            chrome.display()
        )),
    }
}

fn find_chrome_in(path: &std::ffi::OsStr, debian_binary: &Path) -> Option<PathBuf> {
    for name in CHROME_NAMES {
        let Some(candidate) = on_path(path, Path::new(name)) else {
            continue;
        };
        if name == "chromium" && is_shell_script(&candidate) && is_executable(debian_binary) {
            return Some(debian_binary.to_path_buf());
        }
        return Some(candidate);
    }
    None
}

/// The first executable `name` in the directories of `path` (a PATH value).
fn on_path(path: &std::ffi::OsStr, name: &Path) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn is_shell_script(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map(|_| &head == b"#!")
        .unwrap_or(false)
}

/// One page to render.
#[derive(Debug, Clone)]
pub struct RenderJob {
    /// The URL the page is rendered as (`location`, relative URLs, cookies).
    pub public_url: url::Url,
    /// Where requests for the public URL's host are fetched from (http or
    /// https; its path is ignored: the public path is appended to its
    /// scheme, host and port).
    pub origin: url::Url,
    /// Host header of requests to the origin (`origin_host`); `None`: the
    /// public URL's host.
    pub origin_host: Option<String>,
    /// Remove `<script>` elements (except JSON-LD) from the snapshot.
    pub strip_scripts: bool,
    /// Render with a mobile viewport and a smartphone crawler's User-Agent.
    pub mobile: bool,
    /// How shadow roots are written into the snapshot.
    pub shadow_dom: ShadowDom,
    /// Keep `<noscript>` elements (removed with the scripts otherwise).
    pub keep_noscript: bool,
    /// The page is laid out up to this tall (CSS pixels) before the
    /// snapshot; 0 keeps the viewport's height.
    pub max_render_height: u32,
    /// Status of the answer when the page's script moves it to another path
    /// of its site during the render; 0 snapshots the new route at the old URL.
    pub client_redirect_status: u16,
}

impl RenderJob {
    /// A job with every site option at its default: scripts stripped,
    /// desktop, declarative shadow DOM, lazy content loaded up to
    /// [`DEFAULT_MAX_RENDER_HEIGHT`], client redirects answered with
    /// [`DEFAULT_CLIENT_REDIRECT_STATUS`].
    pub fn new(public_url: url::Url, origin: url::Url) -> Self {
        Self {
            public_url,
            origin,
            origin_host: None,
            strip_scripts: true,
            mobile: false,
            shadow_dom: ShadowDom::default(),
            keep_noscript: false,
            max_render_height: DEFAULT_MAX_RENDER_HEIGHT,
            client_redirect_status: DEFAULT_CLIENT_REDIRECT_STATUS,
        }
    }
}

/// How shadow roots are written into the snapshot (site option `shadow_dom`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ShadowDom {
    /// Each shadow root as `<template shadowrootmode="…">` inside its host
    /// (declarative shadow DOM): browsers and crawlers that lay pages out
    /// rebuild the same tree.
    #[default]
    Declarative,
    /// The composed tree written into the light DOM, slots replaced by what
    /// they show: for crawlers that read text only.
    Flatten,
}

impl ShadowDom {
    /// The option's value as written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowDom::Declarative => "declarative",
            ShadowDom::Flatten => "flatten",
        }
    }

    /// Parses a configuration value.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "declarative" => Some(ShadowDom::Declarative),
            "flatten" => Some(ShadowDom::Flatten),
            _ => None,
        }
    }
}

/// The result of a render.
#[derive(Debug, Clone)]
pub struct RenderedPage {
    /// The origin's status for the document, or the page's
    /// `<meta name="prerender-status-code">`.
    pub status: u16,
    /// Headers set by the page through `<meta name="prerender-header">`, and
    /// `Location` of an origin redirect.
    pub headers: Vec<(String, String)>,
    /// The final DOM serialised with its doctype (or the origin's body for a redirect).
    pub html: String,
    /// Time from the start of the render (tab acquired) to the snapshot.
    pub elapsed: Duration,
    /// The page's network never settled: snapshot taken at `ready_timeout`.
    pub snapshot_on_ready_timeout: bool,
}

/// Why a render failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The render did not finish within `render_timeout`.
    #[error("render timed out")]
    Timeout,
    /// The navigation failed in the browser.
    #[error("navigation failed: {0}")]
    Navigation(String),
    /// The origin could not be reached for the document.
    #[error("origin unreachable: {0}")]
    OriginUnreachable(String),
    /// The origin's certificate could not be verified (not retried: the
    /// next attempt meets the same certificate).
    #[error("origin TLS: {0}")]
    OriginTls(String),
    /// The origin answered the document with a server error.
    #[error("origin answered {0}")]
    OriginStatus(u16),
    /// The browser process or the tab's renderer died during the render.
    #[error("browser crashed")]
    BrowserCrashed,
    /// The tab stopped answering the DevTools protocol.
    #[error("devtools protocol failure: {0}")]
    Protocol(String),
    /// The pool is shutting down.
    #[error("browser pool is shut down")]
    PoolShutdown,
    /// No browser could be launched.
    #[error("browser launch failed: {0}")]
    LaunchFailed(String),
    /// The job cannot be rendered (bad URL or origin).
    #[error("invalid render job: {0}")]
    InvalidJob(String),
    /// The rendered document is larger than the renderer accepts.
    #[error("rendered page too large ({0} bytes)")]
    TooLarge(usize),
}

impl RenderError {
    /// Whether another attempt (on another tab or browser) may succeed.
    /// Timeouts are not retried (SPEC §3); crashes and connection failures are.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RenderError::BrowserCrashed
                | RenderError::Protocol(_)
                | RenderError::OriginUnreachable(_)
        )
    }

    /// Short reason for `X-Prerender-Error` and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            RenderError::Timeout => "timeout",
            RenderError::Navigation(_) => "navigation",
            RenderError::OriginUnreachable(_) | RenderError::OriginStatus(_) => "origin-error",
            RenderError::BrowserCrashed => "browser-crash",
            RenderError::Protocol(_) => "renderer",
            RenderError::PoolShutdown => "shutdown",
            RenderError::LaunchFailed(_) => "launch-failed",
            RenderError::InvalidJob(_) => "invalid-url",
            RenderError::OriginTls(_) => "origin-tls",
            RenderError::TooLarge(_) => "too-large",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_are_crashes_and_connection_failures() {
        assert!(RenderError::BrowserCrashed.is_retryable());
        assert!(RenderError::OriginUnreachable("refused".into()).is_retryable());
        assert!(!RenderError::Timeout.is_retryable());
        assert!(!RenderError::OriginStatus(500).is_retryable());
        assert_eq!(RenderError::BrowserCrashed.reason(), "browser-crash");
        assert_eq!(RenderError::OriginStatus(502).reason(), "origin-error");
    }

    #[test]
    fn debian_wrapper_resolves_to_real_binary() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let wrapper = bin.join("chromium");
        std::fs::write(&wrapper, "#!/bin/sh\nexec true\n").unwrap();
        let real = dir.path().join("real-chromium");
        std::fs::write(&real, "\x7fELF").unwrap();
        for p in [&wrapper, &real] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = std::env::join_paths([&bin]).unwrap();
        assert_eq!(find_chrome_in(&path, &real), Some(real.clone()));
        // Without the real binary the wrapper is all there is.
        assert_eq!(
            find_chrome_in(&path, &dir.path().join("missing")),
            Some(wrapper)
        );
        let empty = std::env::join_paths([dir.path().join("nothing")]).unwrap();
        assert_eq!(find_chrome_in(&empty, &real), None);
    }
}
