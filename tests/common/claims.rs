//! A refresher's claiming loop, for tests of "each due page is claimed
//! once" across claimers and instances.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::SystemTime;

use prerender_proxy::cache::{CacheKey, Coordination};

/// Claims `batch` due pages of `domain` at a time until none is left;
/// returns what this claimer got.
pub fn spawn_claimer<S>(
    store: Arc<S>,
    domain: &'static str,
    now: SystemTime,
    batch: usize,
) -> tokio::task::JoinHandle<Vec<CacheKey>>
where
    S: Coordination + ?Sized + 'static,
{
    tokio::spawn(async move {
        let mut mine = Vec::new();
        loop {
            let claimed = store.claim_due(domain, now, batch).await.unwrap();
            if claimed.is_empty() {
                return mine;
            }
            mine.extend(claimed);
        }
    })
}
