//! Plans (SPEC §4): how often a site's pages are refreshed, how long they
//! live, how many a domain may keep and what clients are told to cache.

use std::collections::BTreeMap;
use std::time::Duration;

use super::file::{DurationValue, PlanFile};
use super::ConfigError;

pub const DEFAULT_PLAN: &str = "starter";
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
/// agency_plus watches content instead of a clock: the origin is polled this often.
const AGENCY_PLUS_POLL: Duration = Duration::from_secs(60);
const DEFAULT_CACHE_CONTROL: &str = "public, max-age=3600";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    /// Re-render every cached page this often (`None`: only on change or on demand).
    pub refresh_every: Option<Duration>,
    /// Lifetime of a cached page; `None` uses the global `cache_ttl`.
    pub cache_ttl: Option<Duration>,
    /// Pages a domain may keep before its least recently used ones go.
    pub max_entries: u64,
    /// After the TTL, the old page is served (STALE) this long while it re-renders.
    pub stale_while_revalidate: Duration,
    /// Poll the origin document for changes this often (conditional requests).
    pub poll_every: Option<Duration>,
    pub cache_control: String,
    /// Renders per domain per calendar month (UTC); `None` is unlimited.
    pub monthly_renders: Option<u64>,
}

impl Plan {
    fn base(name: &str, refresh_every: Option<Duration>, max_entries: u64) -> Plan {
        Plan {
            name: name.to_string(),
            refresh_every,
            cache_ttl: None,
            max_entries,
            stale_while_revalidate: Duration::ZERO,
            poll_every: None,
            cache_control: DEFAULT_CACHE_CONTROL.to_string(),
            monthly_renders: None,
        }
    }

    /// The built-in plans of SPEC §4.
    pub fn builtins() -> BTreeMap<String, Plan> {
        let agency_plus = Plan {
            poll_every: Some(AGENCY_PLUS_POLL),
            ..Plan::base("agency_plus", None, 10_000)
        };
        [
            Plan::base("starter", Some(DAY), 50),
            Plan::base("pro", Some(DAY), 500),
            Plan::base("agency", Some(HOUR), 2_000),
            agency_plus,
        ]
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect()
    }

    fn apply(&mut self, name: &str, o: &PlanFile) -> Result<(), ConfigError> {
        let field = |f: &str| format!("plans.{name}.{f}");
        if let Some(v) = &o.refresh_every {
            self.refresh_every =
                Some(parse_duration(v, &field("refresh_every"))?).filter(|d| !d.is_zero());
        }
        if let Some(v) = &o.cache_ttl {
            self.cache_ttl = Some(parse_duration(v, &field("cache_ttl"))?);
        }
        if let Some(v) = o.max_entries {
            if v == 0 {
                return Err(ConfigError::new(field("max_entries"), "must be at least 1"));
            }
            self.max_entries = v;
        }
        if let Some(v) = &o.stale_while_revalidate {
            self.stale_while_revalidate = parse_duration(v, &field("stale_while_revalidate"))?;
        }
        if let Some(v) = &o.poll_every {
            self.poll_every =
                Some(parse_duration(v, &field("poll_every"))?).filter(|d| !d.is_zero());
        }
        if let Some(v) = &o.cache_control {
            if v.chars().any(|c| c.is_control()) {
                return Err(ConfigError::new(
                    field("cache_control"),
                    "control characters",
                ));
            }
            self.cache_control = v.clone();
        }
        if let Some(v) = o.monthly_renders {
            self.monthly_renders = Some(v);
        }
        Ok(())
    }
}

/// Built-in plans with `[plans.NAME]` applied: a known name overrides fields
/// of the built-in, a new name starts from `starter`'s values.
pub fn resolve_plans(
    overrides: &BTreeMap<String, PlanFile>,
) -> Result<BTreeMap<String, Plan>, ConfigError> {
    let mut plans = Plan::builtins();
    for (name, o) in overrides {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ConfigError::new(
                format!("plans.{name}"),
                "plan names are letters, digits, _ and -",
            ));
        }
        let mut plan = plans.get(name).cloned().unwrap_or_else(|| Plan {
            name: name.clone(),
            ..plans[DEFAULT_PLAN].clone()
        });
        plan.apply(name, o)?;
        plans.insert(name.clone(), plan);
    }
    Ok(plans)
}

/// `90s`, `15m`, `24h`, `1h30m` or a bare number of seconds.
/// At most [`super::MAX_DURATION`].
pub fn parse_duration(v: &DurationValue, field: &str) -> Result<Duration, ConfigError> {
    let d = match v {
        DurationValue::Secs(s) => Duration::from_secs(*s),
        DurationValue::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            ConfigError::new(
                field,
                format!("{t:?} is not a duration like 90s, 15m or 24h ({e})"),
            )
        })?,
    };
    super::check_duration(field, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_match_the_spec_table() {
        let p = Plan::builtins();
        assert_eq!(p["starter"].max_entries, 50);
        assert_eq!(p["pro"].max_entries, 500);
        assert_eq!(p["agency"].refresh_every, Some(HOUR));
        assert_eq!(p["agency_plus"].poll_every, Some(Duration::from_secs(60)));
        assert_eq!(p["agency_plus"].max_entries, 10_000);
        assert_eq!(p["starter"].cache_control, "public, max-age=3600");
    }

    #[test]
    fn overrides_apply_per_field_and_new_plans_start_from_starter() {
        let mut o = BTreeMap::new();
        o.insert(
            "pro".to_string(),
            PlanFile {
                refresh_every: Some(DurationValue::Text("12h".into())),
                ..Default::default()
            },
        );
        o.insert(
            "news".to_string(),
            PlanFile {
                refresh_every: Some(DurationValue::Text("10m".into())),
                ..Default::default()
            },
        );
        let p = resolve_plans(&o).unwrap();
        assert_eq!(p["pro"].refresh_every, Some(Duration::from_secs(12 * 3600)));
        assert_eq!(p["pro"].max_entries, 500);
        assert_eq!(p["news"].refresh_every, Some(Duration::from_secs(600)));
        assert_eq!(p["news"].max_entries, 50);
    }

    #[test]
    fn bad_duration_names_the_field() {
        let mut o = BTreeMap::new();
        o.insert(
            "x".to_string(),
            PlanFile {
                poll_every: Some(DurationValue::Text("soon".into())),
                ..Default::default()
            },
        );
        let e = resolve_plans(&o).unwrap_err();
        assert_eq!(e.field, "plans.x.poll_every");
    }
}
