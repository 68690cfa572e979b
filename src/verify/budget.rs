//! `unverified_renders_per_minute`: with `verify_crawlers = "enforce"`,
//! renders of pages not yet cached for bots that are not verified crawlers
//! share one budget per site and minute. The counter lives in the store
//! (`render-unverified:<site>:<minute>` on Redis, so every instance on one
//! Redis shares it; in process for the embedded store).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cache::store_call;
use crate::cache::CacheStore;
use crate::metrics::Metrics;

/// Default of `unverified_renders_per_minute` (SPEC §1).
pub const DEFAULT_UNVERIFIED_RENDERS_PER_MINUTE: u64 = 60;

/// The budget key of a site: its domain, or `_any` for the single site
/// that answers any host (one budget however many hosts are sent).
pub fn site_key(domain: &str) -> &str {
    if domain.is_empty() {
        "_any"
    } else {
        domain
    }
}

/// The minute a moment falls in, as counted by every instance.
pub fn minute_of(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

pub struct UnverifiedBudget {
    per_minute: u64,
    store: Arc<dyn CacheStore>,
    metrics: Arc<Metrics>,
}

impl UnverifiedBudget {
    pub fn new(per_minute: u64, store: Arc<dyn CacheStore>, metrics: Arc<Metrics>) -> Self {
        UnverifiedBudget {
            per_minute,
            store,
            metrics,
        }
    }

    /// Counts one render for an unverified bot on `site`; `false` once the
    /// minute's budget is used up. A store that cannot count does not stop
    /// renders: the queue bound still holds, and a Redis outage must not
    /// turn every unverified bot away.
    pub async fn admit(&self, site: &str) -> bool {
        self.admit_at(site, SystemTime::now()).await
    }

    /// [`UnverifiedBudget::admit`] at a given moment.
    pub async fn admit_at(&self, site: &str, now: SystemTime) -> bool {
        let admitted = if self.per_minute == 0 {
            false
        } else {
            let minute = minute_of(now);
            match store_call(self.store.incr_unverified_renders(site, minute)).await {
                Ok(count) => count <= self.per_minute,
                Err(e) => {
                    tracing::warn!(site, error = %e, "cannot count unverified renders; rendering");
                    true
                }
            }
        };
        if !admitted {
            self.metrics.observe_unverified_render_refused(site);
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::MemoryStore;

    #[tokio::test]
    async fn the_budget_refuses_past_its_count_and_per_site() {
        let metrics = Metrics::new();
        let budget = UnverifiedBudget::new(3, MemoryStore::new(1 << 20), metrics.clone());
        let now = UNIX_EPOCH + std::time::Duration::from_secs(600);
        for _ in 0..3 {
            assert!(budget.admit_at("a.example", now).await);
        }
        assert!(!budget.admit_at("a.example", now).await);
        assert!(budget.admit_at("b.example", now).await);
        // The next minute starts afresh.
        let later = now + std::time::Duration::from_secs(60);
        assert!(budget.admit_at("a.example", later).await);
        let zero = UnverifiedBudget::new(0, MemoryStore::new(1 << 20), metrics.clone());
        assert!(!zero.admit_at("a.example", now).await);
        assert_eq!(
            metrics.render_text().lines().find(|l| l
                .starts_with("prerender_unverified_renders_refused_total{domain=\"a.example\"}")),
            Some("prerender_unverified_renders_refused_total{domain=\"a.example\"} 2")
        );
        assert_eq!(site_key(""), "_any");
        assert_eq!(site_key("a.example"), "a.example");
    }

    #[test]
    fn minutes_are_wall_clock_minutes() {
        let at = UNIX_EPOCH + std::time::Duration::from_secs(120);
        assert_eq!(minute_of(at), 2);
        assert_eq!(minute_of(at + std::time::Duration::from_secs(59)), 2);
    }
}
