//! The TOML config file: the `serve` options in snake_case plus `[[sites]]`
//! and `[plans.NAME]`. Unknown keys are rejected so a typo never silently
//! falls back to a default.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub origin: Option<String>,
    pub domains: Option<Vec<String>>,
    pub redis: Option<RedisValue>,
    pub key_prefix: Option<String>,
    pub role: Option<String>,
    pub admin_token: Option<String>,
    pub service_listen: Option<String>,
    pub service_tokens: Option<StringList>,
    pub chrome: Option<String>,
    pub render_user_agent: Option<String>,
    pub browsers: Option<u64>,
    pub tabs_per_browser: Option<u64>,
    pub renders_per_browser: Option<u64>,
    pub browser_max_age: Option<DurationValue>,
    pub browser_max_rss: Option<u64>,
    pub render_timeout: Option<DurationValue>,
    pub ready_timeout: Option<DurationValue>,
    /// Seconds, or a duration string (`"1h"`).
    pub cache_ttl: Option<DurationValue>,
    pub queue_capacity: Option<u64>,
    pub cache_max_bytes: Option<u64>,
    pub bot_families: Option<StringList>,
    pub plan: Option<String>,
    pub bot_patterns: Option<String>,
    pub log_format: Option<String>,
    pub origin_timeout: Option<DurationValue>,
    pub origin_connect_timeout: Option<DurationValue>,
    pub origin_max_idle: Option<u64>,
    pub origin_idle_timeout: Option<DurationValue>,
    pub header_read_timeout: Option<DurationValue>,
    pub max_connections: Option<u64>,
    pub public_threads: Option<u64>,
    pub public_scheduling: Option<String>,
    pub shutdown_timeout: Option<DurationValue>,
    pub trusted_proxies: Option<StringList>,
    pub verify_crawlers: Option<String>,
    pub dns_resolver: Option<String>,
    pub unverified_renders_per_minute: Option<u64>,
    pub crawler_ip_ranges: Option<String>,
    pub origin_ca_file: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub proxy_protocol: Option<bool>,
    /// `origin_host` of the single site of `origin` mode.
    pub origin_host: Option<String>,
    #[serde(default)]
    pub sites: Vec<SiteFile>,
    #[serde(default)]
    pub plans: BTreeMap<String, PlanFile>,
}

/// `redis` may be one string (a URL or a comma list) or an array of node URLs.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RedisValue {
    One(String),
    Nodes(Vec<String>),
}

impl RedisValue {
    pub fn joined(&self) -> String {
        match self {
            RedisValue::One(s) => s.clone(),
            RedisValue::Nodes(v) => v.join(","),
        }
    }
}

/// A list given as a TOML array or as one comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StringList {
    One(String),
    Many(Vec<String>),
}

impl StringList {
    pub fn joined(&self) -> String {
        match self {
            StringList::One(s) => s.clone(),
            StringList::Many(v) => v.join(","),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFile {
    pub domain: String,
    pub origin: String,
    pub origin_host: Option<String>,
    /// Served for this domain by SNI on a TLS listener.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub plan: Option<String>,
    pub scheme: Option<String>,
    #[serde(default)]
    pub ignore: Vec<String>,
    #[serde(default)]
    pub only: Vec<String>,
    pub strip_scripts: Option<bool>,
    pub on_render_failure: Option<String>,
    #[serde(default)]
    pub query_params: Vec<String>,
    pub mobile_variant: Option<bool>,
    pub shadow_dom: Option<String>,
    pub keep_noscript: Option<bool>,
    pub max_render_height: Option<u64>,
    pub client_redirect_status: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub refresh_every: Option<DurationValue>,
    pub cache_ttl: Option<DurationValue>,
    pub max_entries: Option<MaxEntriesValue>,
    pub stale_while_revalidate: Option<DurationValue>,
    pub poll_every: Option<DurationValue>,
    pub cache_control: Option<String>,
    pub monthly_renders: Option<u64>,
    pub error_ttl: Option<DurationValue>,
}

/// `max_entries`: a number of pages, or `"unlimited"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MaxEntriesValue {
    Count(u64),
    Text(String),
}

pub use crate::cli::DurationValue;

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            field: "config".into(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(&text).map_err(|e| ConfigError {
            field: e.field,
            message: format!("{}: {}", path.display(), e.message),
        })
    }

    /// Parses TOML text; an error names the line and, where known, the key.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim().replace('\n', " ");
            let field = key_named_in(&message).unwrap_or_else(|| "config".to_string());
            ConfigError {
                field,
                message: match line {
                    Some(line) => format!("line {line}: {message}"),
                    None => message,
                },
            }
        })
    }
}

/// serde names an unknown key as "unknown field `x`": pull it out so the
/// one-line error names the field.
fn key_named_in(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    // An empty key (`"" = 1`) names nothing: the error is the file's.
    Some(message[start..start + len].to_string()).filter(|key| !key.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = FileConfig::parse("listen = \"127.0.0.1:1\"\nbrowserz = 2\n").unwrap_err();
        assert_eq!(err.field, "browserz");
        assert!(err.message.contains("line 2"), "{}", err.message);
    }

    #[test]
    fn unknown_site_key_is_rejected() {
        let err =
            FileConfig::parse("[[sites]]\ndomain = \"a\"\norigin = \"http://x\"\nplna = \"pro\"\n")
                .unwrap_err();
        assert_eq!(err.field, "plna");
    }

    #[test]
    fn redis_accepts_string_or_array() {
        let c = FileConfig::parse("redis = [\"redis://a:1\", \"redis://b:2\"]").unwrap();
        assert_eq!(c.redis.unwrap().joined(), "redis://a:1,redis://b:2");
    }
}
