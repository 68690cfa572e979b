//! Tracing set-up: text or JSON lines on stderr, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// chromiumoxide logs one WARN per request for CDP events Chromium renamed
/// (harmless protocol drift) and an ERROR for every browser it closes (a
/// recycle or a shutdown resets the DevTools socket); the pool reports
/// crashes and recycles itself, so its handler and connection stay quiet.
const QUIET_CHROMIUMOXIDE: &str = "chromiumoxide::handler=off,chromiumoxide::conn=off";

/// The filter for a `RUST_LOG` value (`None`: unset). A filter that does not
/// name chromiumoxide still keeps it quiet, so `RUST_LOG=debug` does not
/// turn every browser recycle into an ERROR line; naming it
/// (`RUST_LOG=info,chromiumoxide=debug`) shows everything.
fn filter_directives(rust_log: Option<&str>) -> String {
    match rust_log.map(str::trim).filter(|v| !v.is_empty()) {
        None => format!("info,{QUIET_CHROMIUMOXIDE}"),
        Some(v) if v.contains("chromiumoxide") => v.to_string(),
        Some(v) => format!("{v},{QUIET_CHROMIUMOXIDE}"),
    }
}

pub fn init(format: LogFormat) {
    let directives = filter_directives(std::env::var("RUST_LOG").ok().as_deref());
    let filter =
        EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(filter_directives(None)));
    // Colours only on a terminal: journald, `docker logs` and log files get
    // plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second init (tests running several servers in one process) is harmless.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chromiumoxide_stays_quiet_unless_named() {
        assert_eq!(
            filter_directives(None),
            format!("info,{QUIET_CHROMIUMOXIDE}")
        );
        assert_eq!(
            filter_directives(Some(" ")),
            format!("info,{QUIET_CHROMIUMOXIDE}")
        );
        assert_eq!(
            filter_directives(Some("debug")),
            format!("debug,{QUIET_CHROMIUMOXIDE}")
        );
        assert_eq!(
            filter_directives(Some("info,chromiumoxide=debug")),
            "info,chromiumoxide=debug"
        );
        for v in [None, Some("debug"), Some("warn,prerender_proxy=trace")] {
            assert!(EnvFilter::try_new(filter_directives(v)).is_ok());
        }
    }
}
