//! A refresher's claiming loop, for tests of "each due page is claimed
//! once" across claimers and instances.
#![allow(dead_code)]

use std::collections::HashSet;
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

/// `count` pages of example.com (`/d0`, `/d1`, …) for the refresher to
/// claim.
pub fn due_keys(count: usize) -> Vec<CacheKey> {
    (0..count)
        .map(|i| CacheKey::new("example.com", &format!("/d{i}"), &[], false).unwrap())
        .collect()
}

/// One claimer on each of `stores` (a store may appear more than once),
/// `batch` pages at a time, all at `now`: together they claim each of
/// `due` exactly once.
pub async fn assert_claimed_once<S>(
    stores: &[&Arc<S>],
    now: SystemTime,
    batch: usize,
    due: &[CacheKey],
) where
    S: Coordination + ?Sized + 'static,
{
    let claimers: Vec<_> = stores
        .iter()
        .map(|store| spawn_claimer((*store).clone(), "example.com", now, batch))
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    assert_eq!(all.len(), due.len(), "each due page claimed exactly once");
    let unique: HashSet<CacheKey> = all.into_iter().collect();
    assert_eq!(unique, due.iter().cloned().collect());
}
