//! Coordination on Redis: render locks, the per-domain LRU index and
//! refresh schedule, the domain set, the render counters and purge
//! notices — the `render-` keys other than the pages themselves. What
//! must be atomic runs as a Lua script on one server (client-side on a
//! cluster, see `cluster`).

use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;
use redis::Script;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{announce_pages, cluster, Conn, RedisStore};
use crate::cache::key::normalize_host;
use crate::cache::{
    from_unix_millis, ttl_millis, unix_millis, wait_for_page_with, CacheKey, Coordination,
    PurgeEvent, StoreResult, WaitOutcome, QUOTA_KEY_TTL, UNVERIFIED_KEY_TTL,
};

/// Releases a render lock only for its owner, then announces the end of
/// the render either way (waiters re-check the page themselves).
const UNLOCK_SCRIPT: &str = r"
local released = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  released = 1
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return released
";

/// Extends a render lock only for its owner.
const EXTEND_LOCK_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Drops index members whose page is gone; returns the live count.
const PRUNE_SCRIPT: &str = r"
local live = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', m) == 1 then live = live + 1 else redis.call('ZREM', KEYS[1], m) end
end
return live
";

/// KEYS: index, schedule. ARGV: max entries, meta prefix, page prefix.
/// Prunes expired members, deletes the least recently used live pages
/// beyond the bound — error pages (status 400 and above) before any
/// other — and trims the schedule of pages no longer cached. Statuses
/// are read only when the domain is over its bound.
const EVICT_SCRIPT: &str = r"
local max = tonumber(ARGV[1])
local live = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', m) == 1 then table.insert(live, m) else redis.call('ZREM', KEYS[1], m) end
end
if #live > max then
  local errors, others = {}, {}
  for _, m in ipairs(live) do
    local meta = ARGV[2] .. string.sub(m, string.len(ARGV[3]) + 1)
    local status = tonumber(redis.call('HGET', meta, 'status')) or 0
    if status >= 400 then table.insert(errors, m) else table.insert(others, m) end
  end
  for _, m in ipairs(others) do table.insert(errors, m) end
  live = errors
end
local evicted = {}
for i = 1, #live - max do
  local m = live[i]
  redis.call('DEL', m, ARGV[2] .. string.sub(m, string.len(ARGV[3]) + 1))
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZREM', KEYS[2], m)
  table.insert(evicted, m)
end
local extra = redis.call('ZCARD', KEYS[2]) - max
if extra > 0 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if extra <= 0 then break end
    if redis.call('EXISTS', m) == 0 then
      redis.call('ZREM', KEYS[2], m)
      extra = extra - 1
    end
  end
end
return evicted
";

/// KEYS: schedule. ARGV: now (ms), limit. Claims due members atomically.
const CLAIM_SCRIPT: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do redis.call('ZREM', KEYS[1], m) end
return due
";

/// The Lua scripts, loaded by digest on first use per connection.
pub(super) struct Scripts {
    unlock: Script,
    extend_lock: Script,
    prune: Script,
    evict: Script,
    claim: Script,
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            unlock: Script::new(UNLOCK_SCRIPT),
            extend_lock: Script::new(EXTEND_LOCK_SCRIPT),
            prune: Script::new(PRUNE_SCRIPT),
            evict: Script::new(EVICT_SCRIPT),
            claim: Script::new(CLAIM_SCRIPT),
        }
    }
}

impl RedisStore {
    /// Sets the time (Unix ms) of `key`'s page in the sorted set `set` (an
    /// index or a schedule); with `only_members`, only if it is one already
    /// (`ZADD XX`).
    async fn set_time(
        &self,
        set: String,
        only_members: bool,
        key: &CacheKey,
        at: SystemTime,
    ) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(set);
        if only_members {
            zadd.arg("XX");
        }
        zadd.arg(unix_millis(at))
            .arg(self.names.page(key))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Adds one to the counter `name` and sets its lifetime to `ttl`, in
    /// one MULTI/EXEC (one key, so one slot on a cluster too); the new count.
    async fn count(&self, name: String, ttl: Duration) -> StoreResult<u64> {
        let mut conn = self.conn().await?;
        let (count,): (u64,) = redis::pipe()
            .atomic()
            .incr(&name, 1)
            .expire(&name, ttl.as_secs() as i64)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(count)
    }
}

impl Coordination for RedisStore {
    fn try_lock<'a>(
        &'a self,
        key: &'a CacheKey,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let mut conn = self.conn().await?;
            let set: Option<String> = redis::cmd("SET")
                .arg(self.names.lock(key))
                .arg(owner)
                .arg("NX")
                .arg("PX")
                .arg(ttl_millis(ttl))
                .query_async(&mut conn)
                .await?;
            Ok(set.is_some())
        }
        .boxed()
    }

    fn extend_lock<'a>(
        &'a self,
        key: &'a CacheKey,
        owner: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let mut conn = self.conn().await?;
            let extended: i64 = self
                .scripts
                .extend_lock
                .key(self.names.lock(key))
                .arg(owner)
                .arg(ttl_millis(ttl))
                .invoke_async(&mut conn)
                .await?;
            Ok(extended == 1)
        }
        .boxed()
    }

    fn unlock<'a>(&'a self, key: &'a CacheKey, owner: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let mut conn = self.conn().await?;
            let released: i64 = self
                .scripts
                .unlock
                .key(self.names.lock(key))
                .arg(owner)
                .arg(self.names.done_channel())
                .arg(key.to_string())
                .invoke_async(&mut conn)
                .await?;
            Ok(released == 1)
        }
        .boxed()
    }

    fn is_locked<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, StoreResult<bool>> {
        self.exists(self.names.lock(key)).boxed()
    }

    fn wait_for_page<'a>(
        &'a self,
        key: &'a CacheKey,
        deadline: Instant,
    ) -> BoxFuture<'a, StoreResult<WaitOutcome>> {
        let done = self.done_tx.subscribe();
        wait_for_page_with(self, done, key, deadline).boxed()
    }

    fn touch<'a>(&'a self, key: &'a CacheKey, at: SystemTime) -> BoxFuture<'a, StoreResult<()>> {
        self.set_time(self.names.index(key.domain()), true, key, at)
            .boxed()
    }

    fn evict_over<'a>(
        &'a self,
        domain: &'a str,
        max_entries: u64,
    ) -> BoxFuture<'a, StoreResult<Vec<CacheKey>>> {
        async move {
            let domain = &normalize_host(domain)?;
            let mut conn = match self.conn().await? {
                Conn::Cluster(conn) => {
                    return cluster::evict_over(conn, &self.names, domain, max_entries).await
                }
                single => single,
            };
            let evicted: Vec<String> = self
                .scripts
                .evict
                .key(self.names.index(domain))
                .key(self.names.due(domain))
                .arg(max_entries)
                .arg(self.names.meta_prefix())
                .arg(self.names.page_prefix())
                .invoke_async(&mut conn)
                .await?;
            let evicted = self.names.parse_members(evicted);
            announce_pages(&mut conn, &self.names, &evicted).await?;
            Ok(evicted)
        }
        .boxed()
    }

    fn entries<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, StoreResult<u64>> {
        async move {
            let domain = &normalize_host(domain)?;
            let mut conn = match self.conn().await? {
                Conn::Cluster(conn) => return cluster::entries(conn, &self.names, domain).await,
                single => single,
            };
            let live: u64 = self
                .scripts
                .prune
                .key(self.names.index(domain))
                .invoke_async(&mut conn)
                .await?;
            Ok(live)
        }
        .boxed()
    }

    fn schedule<'a>(
        &'a self,
        key: &'a CacheKey,
        due: SystemTime,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.set_time(self.names.due(key.domain()), false, key, due)
            .boxed()
    }

    fn claim_due<'a>(
        &'a self,
        domain: &'a str,
        now: SystemTime,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<CacheKey>>> {
        async move {
            let domain = &normalize_host(domain)?;
            if limit == 0 {
                return Ok(Vec::new());
            }
            let mut conn = self.conn().await?;
            let claimed: Vec<String> = self
                .scripts
                .claim
                .key(self.names.due(domain))
                .arg(unix_millis(now))
                .arg(limit)
                .invoke_async(&mut conn)
                .await?;
            Ok(self.names.parse_members(claimed))
        }
        .boxed()
    }

    fn next_due<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, StoreResult<Option<SystemTime>>> {
        async move {
            let domain = &normalize_host(domain)?;
            let mut conn = self.conn().await?;
            let first: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(self.names.due(domain))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await?;
            Ok(first
                .first()
                .map(|(_, score)| from_unix_millis(score.max(0.0) as u64)))
        }
        .boxed()
    }

    fn domains(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        async move {
            let mut conn = self.conn().await?;
            let mut domains: Vec<String> = redis::cmd("SMEMBERS")
                .arg(self.names.domains())
                .query_async(&mut conn)
                .await?;
            domains.sort();
            Ok(domains)
        }
        .boxed()
    }

    fn incr_renders<'a>(
        &'a self,
        domain: &'a str,
        month: &'a str,
    ) -> BoxFuture<'a, StoreResult<u64>> {
        async move {
            let domain = &normalize_host(domain)?;
            self.count(self.names.quota(domain, month), QUOTA_KEY_TTL)
                .await
        }
        .boxed()
    }

    fn renders_in_month<'a>(
        &'a self,
        domain: &'a str,
        month: &'a str,
    ) -> BoxFuture<'a, StoreResult<u64>> {
        async move {
            let domain = &normalize_host(domain)?;
            let mut conn = self.conn().await?;
            let count: Option<u64> = redis::cmd("GET")
                .arg(self.names.quota(domain, month))
                .query_async(&mut conn)
                .await?;
            Ok(count.unwrap_or(0))
        }
        .boxed()
    }

    fn publish_purge<'a>(&'a self, event: &'a PurgeEvent) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let mut conn = self.conn().await?;
            redis::cmd("PUBLISH")
                .arg(self.names.purge_channel())
                .arg(event.to_message())
                .query_async::<()>(&mut conn)
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn subscribe_purges(&self) -> broadcast::Receiver<PurgeEvent> {
        self.purge_tx.subscribe()
    }

    fn incr_unverified_renders<'a>(
        &'a self,
        site: &'a str,
        minute: u64,
    ) -> BoxFuture<'a, StoreResult<u64>> {
        self.count(self.names.unverified(site, minute), UNVERIFIED_KEY_TTL)
            .boxed()
    }
}
