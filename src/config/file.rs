//! The TOML config file: the `serve` options in snake_case plus `[[sites]]`
//! and `[plans.NAME]`. Unknown keys are rejected so a typo never silently
//! falls back to a default.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::{DeTable, ValueDeserializer};

use super::ConfigError;
use crate::cli::ServeArgs;

/// A config file: its top-level options (the `serve` options, read into
/// the same struct as the command line) and its sites and plans.
#[derive(Debug, Default)]
pub struct FileConfig {
    pub options: ServeArgs,
    pub sites: Vec<SiteFile>,
    pub plans: BTreeMap<String, PlanFile>,
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
    /// `Cache-Control` of rendered answers over the plan's.
    pub cache_control: Option<String>,
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
#[serde(untagged, expecting = "a number of pages or \"unlimited\"")]
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
    /// `[[sites]]` and `[plans.NAME]` are taken out first; every other key
    /// must be a `serve` option.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        // An error whose message names no key is the file's, the table's or
        // that of the option whose value it is in.
        let mut root = DeTable::parse(text).map_err(|e| file_error(text, e, "config"))?;
        let sites = take(root.get_mut(), "sites").map_err(|e| file_error(text, e, "sites"))?;
        let plans = take(root.get_mut(), "plans").map_err(|e| file_error(text, e, "plans"))?;
        // Where each remaining key and its value stand.
        let keys: Vec<(String, std::ops::Range<usize>)> = root
            .get_ref()
            .iter()
            .map(|(key, value)| {
                (
                    key.get_ref().to_string(),
                    key.span().start..value.span().end,
                )
            })
            .collect();
        let options = ServeArgs::deserialize(toml::de::Deserializer::from(root)).map_err(|e| {
            let option = e.span().and_then(|at| {
                keys.iter()
                    .find(|(_, span)| span.start <= at.start && at.end <= span.end)
                    .map(|(key, _)| key.as_str())
            });
            let mut e = file_error(text, e, option.unwrap_or("config"));
            // The keys serde lists for an unknown one: the options, and the
            // tables taken out above.
            if e.message.contains("expected one of") {
                e.message.push_str(", `sites`, `plans`");
            }
            e
        })?;
        Ok(FileConfig {
            options,
            sites: sites.unwrap_or_default(),
            plans: plans.unwrap_or_default(),
        })
    }
}

/// Removes `key` from the table and reads its value.
fn take<T: DeserializeOwned>(
    table: &mut DeTable<'_>,
    key: &str,
) -> Result<Option<T>, toml::de::Error> {
    table
        .remove(key)
        .map(|value| T::deserialize(ValueDeserializer::from(value)))
        .transpose()
}

/// One line with the line number and the key: the one serde names, else
/// `context`.
fn file_error(text: &str, e: toml::de::Error, context: &str) -> ConfigError {
    let line = e
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let message = e.message().trim().replace('\n', " ");
    let field = key_named_in(&message)
        // An empty key (`"" = 1`) names nothing: the error is the file's.
        .or_else(|| Some(context.to_string()).filter(|key| !key.is_empty()))
        .unwrap_or_else(|| "config".to_string());
    ConfigError {
        field,
        message: match line {
            Some(line) => format!("line {line}: {message}"),
            None => message,
        },
    }
}

/// serde names an unknown or missing key as "unknown field `x`" or
/// "missing field `x`": pull it out so the one-line error names the field.
/// (A syntax error quotes the character it stopped at, which is no field.)
fn key_named_in(message: &str) -> Option<String> {
    let start = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|lead| message.find(lead).map(|at| at + lead.len()))?;
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
    fn a_syntax_error_names_the_file_or_the_key_and_its_line() {
        for (text, field, line) in [
            ("listen = \"127.0.0.1:1\n", "config", 1),
            ("browsers = 2\nlisten = [broken\n", "config", 2),
            ("x y = 1\n", "config", 1),
            ("browsers = 2\nbrowsers = 3\n", "config", 2),
            ("[[sites]]\ndomain = \"a.test\"\n", "origin", 1),
        ] {
            let err = FileConfig::parse(text).unwrap_err();
            assert_eq!(err.field, field, "{text:?}: {}", err.message);
            assert!(
                err.message.contains(&format!("line {line}")),
                "{text:?}: {}",
                err.message
            );
        }
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
        assert_eq!(c.options.redis.unwrap(), "redis://a:1,redis://b:2");
    }

    #[test]
    fn a_value_of_the_wrong_kind_names_its_key_and_what_it_takes() {
        for (text, field, takes) in [
            (
                "listen = \"127.0.0.1:1\"\nbrowsers = \"two\"\n",
                "browsers",
                "expected u64",
            ),
            (
                "redis = 5\n",
                "redis",
                "a comma-separated string or an array of strings",
            ),
            (
                "cache_ttl = true\n",
                "cache_ttl",
                "a number of seconds or a duration such as \"90s\"",
            ),
            (
                "[plans.x]\nmax_entries = true\n",
                "plans",
                "a number of pages or \"unlimited\"",
            ),
            (
                "[plans.x]\ncache_ttl = [1]\n",
                "plans",
                "a duration such as",
            ),
        ] {
            let err = FileConfig::parse(text).unwrap_err();
            assert_eq!(err.field, field, "{text}");
            assert!(err.message.contains(takes), "{text}: {}", err.message);
            assert!(!err.message.contains("untagged"), "{text}: {}", err.message);
        }
    }
}
