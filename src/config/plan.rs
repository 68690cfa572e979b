//! Plans (SPEC §4): how often a site's pages are refreshed, how long they
//! live (fresh, then stale while a background render replaces them), how
//! many a domain may keep and what clients are told to cache.

use std::collections::BTreeMap;
use std::time::Duration;

use super::file::{DurationValue, MaxEntriesValue, PlanFile};
use super::ConfigError;
use crate::cache::is_error_status;

/// The plan of `--origin` mode and of sites that name none: a site owner
/// running the proxy for their own site.
pub const DEFAULT_PLAN: &str = "self-hosted";
/// Plan whose values a new `[plans.NAME]` starts from (SPEC §1).
pub const NEW_PLAN_BASE: &str = "starter";
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
/// agency_plus watches content instead of a clock: the origin is polled this often.
const AGENCY_PLUS_POLL: Duration = Duration::from_secs(60);
/// 404 and 410 renders are kept this long (SPEC §2): long enough to spare
/// Chromium a flood of repeated bad links, short enough that a page that
/// comes back is seen soon.
pub const DEFAULT_ERROR_TTL: Duration = Duration::from_secs(300);
/// Stale window of a plan that never refreshes its pages and sets none:
/// a day, so a page is re-rendered on its first crawl after expiry
/// instead of being a cold miss, and an unvisited one still goes.
pub const DEFAULT_STALE_WITHOUT_REFRESH: Duration = DAY;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    /// Re-render every cached page this often (`None`: only on change or on demand).
    pub refresh_every: Option<Duration>,
    /// Lifetime of a cached page; `None` uses the global `cache_ttl`.
    pub cache_ttl: Option<Duration>,
    /// Pages a domain may keep before its least recently used ones go;
    /// `None`: no count limit (the store's bytes bound it).
    pub max_entries: Option<u64>,
    /// After the TTL, the old page is served (STALE) this long while it
    /// re-renders; `None`: until the next scheduled refresh (see
    /// [`Plan::stale_window`]).
    pub stale_while_revalidate: Option<Duration>,
    /// Poll the origin document for changes this often (conditional requests).
    pub poll_every: Option<Duration>,
    /// `Cache-Control` of rendered answers; `None`: `private, max-age=<TTL>`.
    pub cache_control: Option<String>,
    /// Renders per domain per calendar month (UTC); `None` is unlimited.
    pub monthly_renders: Option<u64>,
    /// Lifetime of 404 and 410 renders (never longer than the TTL).
    pub error_ttl: Duration,
}

impl Plan {
    fn base(name: &str, refresh_every: Option<Duration>, max_entries: Option<u64>) -> Plan {
        Plan {
            name: name.to_string(),
            refresh_every,
            cache_ttl: None,
            max_entries,
            stale_while_revalidate: None,
            poll_every: None,
            cache_control: None,
            monthly_renders: None,
            error_ttl: DEFAULT_ERROR_TTL,
        }
    }

    /// The built-in plans of SPEC §4.
    pub fn builtins() -> BTreeMap<String, Plan> {
        let agency_plus = Plan {
            poll_every: Some(AGENCY_PLUS_POLL),
            ..Plan::base("agency_plus", None, Some(10_000))
        };
        [
            Plan::base(DEFAULT_PLAN, Some(DAY), None),
            Plan::base("starter", Some(DAY), Some(50)),
            Plan::base("pro", Some(DAY), Some(500)),
            Plan::base("agency", Some(HOUR), Some(2_000)),
            agency_plus,
        ]
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect()
    }

    /// How often the refresher comes back to a page: its re-render
    /// interval, else its poll interval (`None`: only on demand).
    pub fn refresh_interval(&self) -> Option<Duration> {
        self.refresh_every.or(self.poll_every)
    }

    /// How long a page stays servable (STALE) past its TTL. By default
    /// until the refresh after its expiry is due and one refresh
    /// interval more, so a refresh that runs late, is retried or fails
    /// still finds the old page to serve.
    pub fn stale_window(&self) -> Duration {
        self.stale_while_revalidate.unwrap_or_else(|| {
            self.refresh_interval()
                .unwrap_or(DEFAULT_STALE_WITHOUT_REFRESH)
        })
    }

    /// How long a render of `status` is kept fresh, given the plan's TTL.
    pub fn ttl_for_status(&self, status: u16, ttl: Duration) -> Duration {
        if is_error_status(status) {
            ttl.min(self.error_ttl)
        } else {
            ttl
        }
    }

    /// How long a render of `status` stays in the store: its TTL plus
    /// the stale window (error pages get none: they are only kept for
    /// `error_ttl`).
    pub fn stored_ttl(&self, status: u16, ttl: Duration) -> Duration {
        if is_error_status(status) {
            self.ttl_for_status(status, ttl)
        } else {
            ttl.saturating_add(self.stale_window())
        }
    }

    /// `Cache-Control` of a rendered answer that is fresh for `ttl`: the
    /// plan's own value, else `private, max-age=<ttl>`. Private because
    /// CDNs that ignore `Vary: User-Agent` must not hand a crawler's
    /// snapshot to people.
    pub fn cache_control_for(&self, ttl: Duration) -> String {
        match &self.cache_control {
            Some(v) => v.clone(),
            None => format!("private, max-age={}", ttl.as_secs()),
        }
    }

    /// Whether a page of this plan, fresh for `ttl`, is still stored when
    /// its next refresh is due (so one that is gone by then was evicted).
    pub fn keeps_pages_until_refresh(&self, ttl: Duration) -> bool {
        match self.refresh_interval() {
            Some(every) => !ttl.is_zero() && ttl.saturating_add(self.stale_window()) >= every,
            None => false,
        }
    }

    /// Why pages of this plan, fresh for `ttl`, become cold misses before
    /// the refresher replaces them; `None` when they do not.
    pub fn stale_gap_warning(&self, ttl: Duration) -> Option<String> {
        let every = self.refresh_interval()?;
        let window = self.stale_while_revalidate?;
        if ttl.is_zero() || ttl.saturating_add(window) >= every {
            return None;
        }
        Some(format!(
            "plan {}: pages leave the cache {} after rendering (cache_ttl {} + stale_while_revalidate {}) but are refreshed only every {}: crawlers get a MISS in between (raise stale_while_revalidate to at least {} or remove it to keep pages until their refresh)",
            self.name,
            humantime::format_duration(ttl.saturating_add(window)),
            humantime::format_duration(ttl),
            humantime::format_duration(window),
            humantime::format_duration(every),
            humantime::format_duration(every.saturating_sub(ttl)),
        ))
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
        if let Some(v) = &o.max_entries {
            self.max_entries = match v {
                MaxEntriesValue::Count(0) => {
                    return Err(ConfigError::new(
                        field("max_entries"),
                        "must be at least 1 (or \"unlimited\")",
                    ))
                }
                MaxEntriesValue::Count(n) => Some(*n),
                MaxEntriesValue::Text(t) if t.trim() == "unlimited" => None,
                MaxEntriesValue::Text(t) => {
                    return Err(ConfigError::new(
                        field("max_entries"),
                        format!("{t:?} is not a number of pages or \"unlimited\""),
                    ))
                }
            };
        }
        if let Some(v) = &o.stale_while_revalidate {
            self.stale_while_revalidate =
                Some(parse_duration(v, &field("stale_while_revalidate"))?);
        }
        if let Some(v) = &o.poll_every {
            self.poll_every =
                Some(parse_duration(v, &field("poll_every"))?).filter(|d| !d.is_zero());
        }
        if let Some(v) = &o.cache_control {
            self.cache_control = Some(check_cache_control(v, &field("cache_control"))?);
        }
        if let Some(v) = o.monthly_renders {
            self.monthly_renders = Some(v);
        }
        if let Some(v) = &o.error_ttl {
            self.error_ttl = parse_duration(v, &field("error_ttl"))?;
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
            ..plans[NEW_PLAN_BASE].clone()
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

/// A `cache_control` value (a plan's or a site's): a non-empty header
/// value of visible ASCII, trimmed.
pub(super) fn check_cache_control(v: &str, field: &str) -> Result<String, ConfigError> {
    if v.trim().is_empty() || !v.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        return Err(ConfigError::new(
            field,
            "must be a non-empty header value of visible ASCII (e.g. \"public, max-age=600\")",
        ));
    }
    Ok(v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = HOUR;

    #[test]
    fn builtins_match_the_spec_table() {
        let p = Plan::builtins();
        assert_eq!(DEFAULT_PLAN, "self-hosted");
        let own = &p["self-hosted"];
        assert_eq!(own.max_entries, None);
        assert_eq!(own.refresh_every, Some(DAY));
        assert_eq!(p["starter"].max_entries, Some(50));
        assert_eq!(p["pro"].max_entries, Some(500));
        assert_eq!(p["agency"].refresh_every, Some(HOUR));
        assert_eq!(p["agency"].max_entries, Some(2_000));
        assert_eq!(p["agency_plus"].poll_every, Some(Duration::from_secs(60)));
        assert_eq!(p["agency_plus"].max_entries, Some(10_000));
        for plan in p.values() {
            assert_eq!(plan.cache_ttl, None, "{}: the global 1 h", plan.name);
            assert_eq!(plan.cache_control_for(TTL), "private, max-age=3600");
            assert_eq!(plan.error_ttl, Duration::from_secs(300));
            assert_eq!(plan.stale_gap_warning(TTL), None, "{}", plan.name);
        }
    }

    #[test]
    fn the_default_stale_window_reaches_past_the_next_refresh() {
        let p = Plan::builtins();
        // Rendered at 0, stale from 1 h, refreshed at 24 h, gone at 49 h.
        assert_eq!(p["self-hosted"].stale_window(), DAY);
        assert_eq!(p["self-hosted"].stored_ttl(200, TTL), TTL + DAY);
        assert_eq!(p["agency"].stored_ttl(301, TTL), 2 * HOUR);
        assert_eq!(p["agency_plus"].stale_window(), Duration::from_secs(60));
        let on_demand = Plan {
            refresh_every: None,
            ..p["starter"].clone()
        };
        assert_eq!(on_demand.stale_window(), DEFAULT_STALE_WITHOUT_REFRESH);
        let explicit = Plan {
            stale_while_revalidate: Some(Duration::ZERO),
            ..p["starter"].clone()
        };
        assert_eq!(explicit.stored_ttl(200, TTL), TTL);
    }

    #[test]
    fn error_pages_live_for_error_ttl_without_a_stale_window() {
        let plan = &Plan::builtins()["self-hosted"];
        for status in [404, 410] {
            assert_eq!(plan.ttl_for_status(status, TTL), DEFAULT_ERROR_TTL);
            assert_eq!(plan.stored_ttl(status, TTL), DEFAULT_ERROR_TTL);
        }
        assert_eq!(plan.ttl_for_status(200, TTL), TTL);
        // Never longer than the TTL itself.
        let short = Duration::from_secs(30);
        assert_eq!(plan.stored_ttl(404, short), short);
    }

    #[test]
    fn a_window_that_ends_before_the_refresh_is_warned_about_by_plan_name() {
        let mut plan = Plan::builtins()["pro"].clone();
        plan.stale_while_revalidate = Some(Duration::ZERO);
        let warning = plan.stale_gap_warning(TTL).unwrap();
        assert!(warning.starts_with("plan pro: "), "{warning}");
        assert!(!warning.contains('\n'));
        assert!(warning.contains("23h"), "{warning}");
        plan.stale_while_revalidate = Some(23 * HOUR);
        assert_eq!(plan.stale_gap_warning(TTL), None);
        // cache_ttl = 0 keeps nothing to be stale.
        plan.stale_while_revalidate = Some(Duration::ZERO);
        assert_eq!(plan.stale_gap_warning(Duration::ZERO), None);
    }

    #[test]
    fn cache_control_is_the_plans_own_or_private_with_the_ttl() {
        let mut o = BTreeMap::new();
        o.insert(
            "shared".to_string(),
            PlanFile {
                cache_control: Some("public, max-age=600".into()),
                ..Default::default()
            },
        );
        let p = resolve_plans(&o).unwrap();
        assert_eq!(p["shared"].cache_control_for(TTL), "public, max-age=600");
        assert_eq!(
            p["starter"].cache_control_for(Duration::from_secs(90)),
            "private, max-age=90"
        );
        for bad in ["", "caf\u{e9}", "a\r\nb"] {
            let mut o = BTreeMap::new();
            o.insert(
                "x".to_string(),
                PlanFile {
                    cache_control: Some(bad.into()),
                    ..Default::default()
                },
            );
            assert_eq!(
                resolve_plans(&o).unwrap_err().field,
                "plans.x.cache_control",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn overrides_apply_per_field_and_new_plans_start_from_starter() {
        let mut o = BTreeMap::new();
        o.insert(
            "pro".to_string(),
            PlanFile {
                refresh_every: Some(DurationValue::Text("12h".into())),
                error_ttl: Some(DurationValue::Text("1m".into())),
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
        o.insert(
            "big".to_string(),
            PlanFile {
                max_entries: Some(MaxEntriesValue::Text("unlimited".into())),
                stale_while_revalidate: Some(DurationValue::Secs(0)),
                ..Default::default()
            },
        );
        let p = resolve_plans(&o).unwrap();
        assert_eq!(p["pro"].refresh_every, Some(Duration::from_secs(12 * 3600)));
        assert_eq!(p["pro"].max_entries, Some(500));
        assert_eq!(p["pro"].error_ttl, Duration::from_secs(60));
        assert_eq!(p["news"].refresh_every, Some(Duration::from_secs(600)));
        assert_eq!(p["news"].max_entries, Some(50));
        assert_eq!(p["big"].max_entries, None);
        assert_eq!(p["big"].stale_while_revalidate, Some(Duration::ZERO));
    }

    #[test]
    fn bad_values_name_the_field() {
        for (file, field) in [
            (
                PlanFile {
                    poll_every: Some(DurationValue::Text("soon".into())),
                    ..Default::default()
                },
                "plans.x.poll_every",
            ),
            (
                PlanFile {
                    error_ttl: Some(DurationValue::Text("a while".into())),
                    ..Default::default()
                },
                "plans.x.error_ttl",
            ),
            (
                PlanFile {
                    max_entries: Some(MaxEntriesValue::Count(0)),
                    ..Default::default()
                },
                "plans.x.max_entries",
            ),
            (
                PlanFile {
                    max_entries: Some(MaxEntriesValue::Text("lots".into())),
                    ..Default::default()
                },
                "plans.x.max_entries",
            ),
        ] {
            let mut o = BTreeMap::new();
            o.insert("x".to_string(), file);
            assert_eq!(resolve_plans(&o).unwrap_err().field, field);
        }
    }
}
