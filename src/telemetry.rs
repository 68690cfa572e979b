//! Tracing set-up: text or JSON lines on stderr, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// chromiumoxide logs one WARN per request for CDP events Chromium renamed
/// (harmless protocol drift) and an ERROR for every browser it closes; the
/// pool reports crashes and recycles itself, so its handler stays quiet.
const DEFAULT_FILTER: &str = "info,chromiumoxide::handler=off,chromiumoxide::conn=off";

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests running several servers in one process) is harmless.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
