//! The Redis names of the layout with `key_prefix` in front (SPEC §6): every
//! key the proxy writes, and its pub/sub channels, start with the prefix, so
//! several deployments can share one Redis. The logical names
//! (`render:<key>`, `render-meta:<key>`, …) stay what logs, the API and the
//! purge notices speak; only what is sent to Redis is prefixed. Members of
//! the per-domain index and schedule are physical page names, so scripts
//! use them as keys directly.

use std::sync::Arc;

use crate::cache::key::{META_KEY_PREFIX, PAGE_KEY_PREFIX};
use crate::cache::{
    due_key, index_key, lock_key, quota_key, unverified_key, CacheKey, DOMAINS_KEY, DONE_CHANNEL,
    PURGE_CHANNEL,
};

#[derive(Debug, Clone, Default)]
pub(crate) struct Names {
    prefix: Arc<str>,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.into(),
        }
    }

    /// `logical` with the prefix in front: for names other modules keep
    /// (the shared job queue's streams and results).
    pub(crate) fn prefixed(&self, logical: &str) -> String {
        self.raw(logical)
    }

    fn raw(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    /// `<prefix>render:<key>`: the page's HTML, and its member name in the
    /// index and schedule sets.
    pub(crate) fn page(&self, key: &CacheKey) -> String {
        self.raw(&key.to_string())
    }

    pub(crate) fn meta(&self, key: &CacheKey) -> String {
        self.raw(&key.meta_key())
    }

    pub(crate) fn lock(&self, key: &CacheKey) -> String {
        self.raw(&lock_key(key))
    }

    pub(crate) fn index(&self, domain: &str) -> String {
        self.raw(&index_key(domain))
    }

    pub(crate) fn due(&self, domain: &str) -> String {
        self.raw(&due_key(domain))
    }

    pub(crate) fn domains(&self) -> String {
        self.raw(DOMAINS_KEY)
    }

    pub(crate) fn quota(&self, domain: &str, month: &str) -> String {
        self.raw(&quota_key(domain, month))
    }

    pub(crate) fn unverified(&self, site: &str, minute: u64) -> String {
        self.raw(&unverified_key(site, minute))
    }

    pub(crate) fn done_channel(&self) -> String {
        self.raw(DONE_CHANNEL)
    }

    pub(crate) fn purge_channel(&self) -> String {
        self.raw(PURGE_CHANNEL)
    }

    /// `<prefix>render:`, what every page name starts with.
    pub(crate) fn page_prefix(&self) -> String {
        self.raw(PAGE_KEY_PREFIX)
    }

    /// `<prefix>render-meta:`.
    pub(crate) fn meta_prefix(&self) -> String {
        self.raw(META_KEY_PREFIX)
    }

    /// A SCAN pattern: `logical` (a pattern of logical names) prefixed,
    /// the prefix's own glob characters escaped.
    pub(crate) fn pattern(&self, logical: &str) -> String {
        let mut escaped = String::with_capacity(self.prefix.len() + logical.len());
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        escaped.push_str(logical);
        escaped
    }

    /// The keys of physical page names (index or schedule members);
    /// anything else is skipped with a warning.
    pub(crate) fn parse_members(&self, members: Vec<String>) -> Vec<CacheKey> {
        members
            .into_iter()
            .filter_map(|m| {
                let parsed = match m.strip_prefix(&*self.prefix) {
                    Some(rest) => CacheKey::parse(rest).map_err(|e| e.to_string()),
                    None => Err("not of this key_prefix".to_string()),
                };
                match parsed {
                    Ok(key) => Some(key),
                    Err(e) => {
                        tracing::warn!(member = %m, error = %e, "ignoring a foreign index member");
                        None
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_starts_with_the_prefix_and_members_parse_back() {
        let names = Names::new("blue:");
        let key = CacheKey::new("example.com", "/p", &[], true).unwrap();
        assert_eq!(names.page(&key), "blue:render:example.com:m:/p");
        assert_eq!(names.meta(&key), "blue:render-meta:example.com:m:/p");
        assert_eq!(names.lock(&key), "blue:render-lock:example.com:m:/p");
        assert_eq!(names.index("example.com"), "blue:render-index:example.com");
        assert_eq!(names.due("example.com"), "blue:render-due:example.com");
        assert_eq!(names.domains(), "blue:render-domains");
        assert_eq!(names.done_channel(), "blue:render-done");
        assert_eq!(names.prefixed("render-jobs:live"), "blue:render-jobs:live");
        assert_eq!(
            names.parse_members(vec![names.page(&key), key.to_string()]),
            vec![key.clone()],
            "a member of another deployment is not ours"
        );
        assert_eq!(
            Names::new("a*[b]:").pattern("render:*"),
            "a\\*\\[b\\]:render:*"
        );
        let plain = Names::default();
        assert_eq!(plain.page(&key), key.to_string());
        assert_eq!(plain.parse_members(vec![key.to_string()]), vec![key]);
    }
}
