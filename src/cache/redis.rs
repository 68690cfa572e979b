//! The Redis store: pages as `render:<key>` strings plus
//! `render-meta:<key>` hashes, and the coordination keys of the
//! `render-` family (see the module documentation of `cache` for the
//! layout). Commands fail fast when Redis is unreachable and the pool
//! reconnects by itself when it returns.
//!
//! The same store runs on a Redis Cluster ([`RedisStore::connect_cluster`]);
//! the few operations that span slots differ there (see `cluster`).

mod cluster;
pub(crate) mod names;

use names::Names;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_redis::{Manager, Pool, Runtime};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Script};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::key::normalize_host;
use super::{
    from_unix_millis, ttl_millis, unix_millis, wait_for_page_with, CacheKey, Coordination,
    PageInfo, PageStore, PurgeEvent, StoreError, StoreResult, StoredPage, WaitOutcome,
    DUE_KEY_PREFIX, INDEX_KEY_PREFIX, NOTICE_CHANNEL_CAPACITY, QUOTA_KEY_TTL,
};
use crate::cache::key::{META_KEY_PREFIX, PAGE_KEY_PREFIX};

/// Pooled connections per instance; each is multiplexed, so a few carry
/// many concurrent requests.
pub const DEFAULT_POOL_MAX_SIZE: usize = 16;
/// Connecting to Redis gives up after this, so an outage answers fast.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A command without an answer after this fails (a hung server must not
/// hold crawlers for longer than a render would).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// First and longest pause before the notice subscriber reconnects.
const SUBSCRIBER_RETRY_MIN: Duration = Duration::from_millis(100);
const SUBSCRIBER_RETRY_MAX: Duration = Duration::from_secs(2);
/// The notice connection is pinged this often to notice a dead server
/// that never closed the socket.
const SUBSCRIBER_PING_INTERVAL: Duration = Duration::from_secs(5);
/// Keys asked of each SCAN step during purges.
const SCAN_BATCH: usize = 500;

// Metadata hash fields.
const F_STATUS: &str = "status";
const F_HEADERS: &str = "headers";
const F_ETAG: &str = "etag";
const F_RENDERED_AT: &str = "rendered_at";
const F_EXPIRES_AT: &str = "expires_at";
const F_SETTINGS_HASH: &str = "settings_hash";
const F_CONTENT_HASH: &str = "content_hash";

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

/// Connection settings; every bound explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    pub pool_max_size: usize,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Prepended to every key and channel name (`key_prefix`, SPEC §6).
    pub key_prefix: String,
    /// PEM roots `rediss://` servers are checked against (the system's
    /// plus `origin_ca_file`: see `upstream::roots_pem`); `None`: the
    /// system's alone.
    pub tls_roots: Option<Arc<Vec<u8>>>,
}

/// A client for one Redis URL: `rediss://` ones check the server's
/// certificate against `tls_roots` when given (else the system's roots).
pub fn redis_client(url: &str, tls_roots: Option<&[u8]>) -> redis::RedisResult<redis::Client> {
    match tls_roots {
        Some(roots) if url.trim_start().starts_with("rediss://") => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(roots.to_vec()),
            },
        ),
        _ => redis::Client::open(url),
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            pool_max_size: DEFAULT_POOL_MAX_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            key_prefix: String::new(),
            tls_roots: None,
        }
    }
}

/// Where the commands go.
enum Backend {
    Single(Pool),
    Cluster(Arc<cluster::LazyCluster>),
}

/// Where the notice subscription connects: the configured nodes and, on
/// a cluster, every node the cluster reports, so that it can move on when
/// its node fails even if only one was configured.
struct NoticeNodes {
    configured: Vec<redis::Client>,
    cluster: Option<Arc<cluster::LazyCluster>>,
}

impl NoticeNodes {
    /// The nodes to try in turn, configured ones first.
    async fn candidates(&self) -> Vec<redis::Client> {
        let mut nodes = self.configured.clone();
        if let (Some(cluster), Some(template)) = (&self.cluster, self.configured.first()) {
            match cluster::node_clients(cluster, template).await {
                Ok(found) => {
                    for node in found {
                        let addr = node.get_connection_info().addr();
                        if !nodes.iter().any(|n| n.get_connection_info().addr() == addr) {
                            nodes.push(node);
                        }
                    }
                }
                Err(error) => tracing::debug!(%error, "redis cluster nodes not listed"),
            }
        }
        nodes
    }
}

/// One connection of either backend, so that commands on a single key
/// (which the cluster routes by slot) are written once for both.
pub(crate) enum Conn {
    Single(deadpool_redis::Connection),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Page store and coordination on one Redis server or a Redis Cluster.
pub struct RedisStore {
    backend: Backend,
    names: Names,
    done_tx: broadcast::Sender<String>,
    purge_tx: broadcast::Sender<PurgeEvent>,
    notices_connected: watch::Receiver<bool>,
    subscriber: tokio::task::JoinHandle<()>,
    unlock_script: Script,
    extend_lock_script: Script,
    prune_script: Script,
    evict_script: Script,
    claim_script: Script,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

impl RedisStore {
    /// Prepares the pool and starts the notice subscriber (needs a Tokio
    /// runtime). Only the URL is checked here: Redis may be down at start
    /// and come up later; [`PageStore::ping`] says whether it answers.
    pub fn connect(url: &str, options: RedisOptions) -> StoreResult<Arc<RedisStore>> {
        let runtime = current_runtime()?;
        if options.pool_max_size == 0 {
            return Err(StoreError::Config(
                "redis pool size must be at least 1".to_owned(),
            ));
        }
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout));
        let client = redis_client(url, options.tls_roots.as_deref().map(Vec::as_slice))?;
        let manager =
            Manager::new_with_config(client.get_connection_info().clone(), connection_config)?;
        let pool = Pool::builder(manager)
            .max_size(options.pool_max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.response_timeout))
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(RedisStore::start(
            &runtime,
            Backend::Single(pool),
            vec![client],
            options,
        ))
    }

    /// Starts the notice subscriber (on the next of `notice_nodes` after
    /// each failure) around a prepared backend.
    fn start(
        runtime: &tokio::runtime::Handle,
        backend: Backend,
        notice_nodes: Vec<redis::Client>,
        options: RedisOptions,
    ) -> Arc<RedisStore> {
        let notice_nodes = NoticeNodes {
            configured: notice_nodes,
            cluster: match &backend {
                Backend::Cluster(cluster) => Some(cluster.clone()),
                Backend::Single(_) => None,
            },
        };
        let (done_tx, _) = broadcast::channel(NOTICE_CHANNEL_CAPACITY);
        let (purge_tx, _) = broadcast::channel(NOTICE_CHANNEL_CAPACITY);
        let (connected_tx, notices_connected) = watch::channel(false);
        let names = Names::new(&options.key_prefix);
        let subscriber = runtime.spawn(run_subscriber(
            names.clone(),
            notice_nodes,
            done_tx.clone(),
            purge_tx.clone(),
            connected_tx,
            options,
        ));
        Arc::new(RedisStore {
            backend,
            names,
            done_tx,
            purge_tx,
            notices_connected,
            subscriber,
            unlock_script: Script::new(UNLOCK_SCRIPT),
            extend_lock_script: Script::new(EXTEND_LOCK_SCRIPT),
            prune_script: Script::new(PRUNE_SCRIPT),
            evict_script: Script::new(EVICT_SCRIPT),
            claim_script: Script::new(CLAIM_SCRIPT),
        })
    }

    /// Whether the notice subscription (`render-done`, `render-purge`)
    /// is up right now.
    pub fn notices_connected(&self) -> bool {
        *self.notices_connected.borrow()
    }

    /// Waits up to `timeout` for the notice subscription; `false` if it
    /// did not come up.
    pub async fn wait_notices_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.notices_connected.clone();
        tokio::time::timeout(timeout, rx.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A connection from the pool (or the cluster client); for the shared
    /// job queue, which keeps its Redis commands beside the pipeline.
    /// The Redis names of this store's `key_prefix`.
    pub(crate) fn names(&self) -> &Names {
        &self.names
    }

    /// Subscribes to `render-done` announcements.
    pub(crate) fn done_notices(&self) -> broadcast::Receiver<String> {
        self.done_tx.subscribe()
    }

    pub(crate) async fn conn(&self) -> StoreResult<Conn> {
        match &self.backend {
            Backend::Single(pool) => pool.get().await.map(Conn::Single).map_err(|e| match e {
                deadpool_redis::PoolError::Backend(e) => StoreError::Redis(e),
                other => StoreError::Pool(other.to_string()),
            }),
            Backend::Cluster(cluster) => cluster.get().await.map(Conn::Cluster),
        }
    }

    async fn get_page(&self, key: &CacheKey) -> StoreResult<Option<StoredPage>> {
        let mut conn = match self.conn().await? {
            Conn::Cluster(conn) => return cluster::get_page(conn, &self.names, key).await,
            single => single,
        };
        let (html, meta): (Option<Vec<u8>>, HashMap<String, String>) = redis::pipe()
            .get(self.names.page(key))
            .hgetall(self.names.meta(key))
            .query_async(&mut conn)
            .await?;
        Ok(html.and_then(|html| decode_page(key, html, &meta)))
    }

    async fn put_page(&self, key: &CacheKey, page: &StoredPage, ttl: Duration) -> StoreResult<()> {
        if ttl.is_zero() {
            return Ok(());
        }
        let ttl_ms = ttl_millis(ttl);
        let mut conn = match self.conn().await? {
            Conn::Cluster(conn) => {
                return cluster::put_page(conn, &self.names, key, page, ttl_ms).await
            }
            single => single,
        };
        let name = self.names.page(key);
        let fields = encode_meta(page)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&name)
            .arg(page.html.as_ref())
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        write_meta(&mut pipe, &self.names.meta(key), &fields, ttl_ms)
            .zadd(
                self.names.index(key.domain()),
                &name,
                unix_millis(SystemTime::now()),
            )
            .ignore()
            .sadd(self.names.domains(), key.domain())
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn delete_page(&self, key: &CacheKey) -> StoreResult<bool> {
        let name = self.names.page(key);
        let mut conn = match self.conn().await? {
            Conn::Cluster(conn) => return cluster::delete_page(conn, &self.names, key).await,
            single => single,
        };
        let (removed,): (u64,) = redis::pipe()
            .atomic()
            .del(&[name.as_str(), self.names.meta(key).as_str()])
            .zrem(self.names.index(key.domain()), &name)
            .ignore()
            .zrem(self.names.due(key.domain()), &name)
            .ignore()
            .publish(
                self.names.purge_channel(),
                PurgeEvent::Page(key.clone()).to_message(),
            )
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(removed > 0)
    }

    async fn purge_domain_pages(&self, domain: &str) -> StoreResult<u64> {
        let domain = normalize_host(domain)?;
        let mut conn = self.conn().await?;
        let names = &self.names;
        let removed = scan_unlink(
            &mut conn,
            &names.pattern(&format!("{PAGE_KEY_PREFIX}{domain}:*")),
        )
        .await?;
        scan_unlink(
            &mut conn,
            &names.pattern(&format!("{META_KEY_PREFIX}{domain}:*")),
        )
        .await?;
        run_each(
            &mut conn,
            vec![
                redis::Cmd::del(names.index(&domain)),
                redis::Cmd::del(names.due(&domain)),
                redis::Cmd::srem(names.domains(), &domain),
                redis::Cmd::publish(
                    names.purge_channel(),
                    PurgeEvent::Domain(domain.clone()).to_message(),
                ),
            ],
        )
        .await?;
        Ok(removed)
    }

    async fn purge_all_pages(&self) -> StoreResult<u64> {
        let mut conn = self.conn().await?;
        let names = &self.names;
        let removed =
            scan_unlink(&mut conn, &names.pattern(&format!("{PAGE_KEY_PREFIX}*"))).await?;
        for prefix in [META_KEY_PREFIX, INDEX_KEY_PREFIX, DUE_KEY_PREFIX] {
            scan_unlink(&mut conn, &names.pattern(&format!("{prefix}*"))).await?;
        }
        run_each(
            &mut conn,
            vec![
                redis::Cmd::del(names.domains()),
                redis::Cmd::publish(names.purge_channel(), PurgeEvent::All.to_message()),
            ],
        )
        .await?;
        Ok(removed)
    }
}

/// Commands that need not be atomic together: one pipeline on a single
/// server; one by one, in order, on a cluster, where their keys may sit on
/// different slots.
async fn run_each(conn: &mut Conn, commands: Vec<redis::Cmd>) -> StoreResult<()> {
    if let Conn::Cluster(conn) = conn {
        return cluster::run_all(conn, commands).await;
    }
    let mut pipe = redis::pipe();
    for command in commands {
        pipe.add_command(command).ignore();
    }
    pipe.query_async::<()>(conn).await?;
    Ok(())
}

fn current_runtime() -> StoreResult<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current()
        .map_err(|_| StoreError::Config("the redis store needs a Tokio runtime".to_owned()))
}

/// Replaces the metadata hash of a page, with its TTL.
fn write_meta<'p>(
    pipe: &'p mut redis::Pipeline,
    meta_key: &str,
    fields: &[(&str, String)],
    ttl_ms: u64,
) -> &'p mut redis::Pipeline {
    pipe.del(meta_key)
        .ignore()
        .hset_multiple(meta_key, fields)
        .ignore()
        .cmd("PEXPIRE")
        .arg(meta_key)
        .arg(ttl_ms)
        .ignore()
}

/// Announces on the purge channel that these pages went.
async fn announce_pages<C>(conn: &mut C, names: &Names, keys: &[CacheKey]) -> StoreResult<()>
where
    C: redis::aio::ConnectionLike + Send,
{
    if keys.is_empty() {
        return Ok(());
    }
    let mut announce = redis::pipe();
    for key in keys {
        announce
            .publish(
                names.purge_channel(),
                PurgeEvent::Page(key.clone()).to_message(),
            )
            .ignore();
    }
    announce.query_async::<()>(conn).await?;
    Ok(())
}

/// The metadata hash of a page.
fn encode_meta(page: &StoredPage) -> StoreResult<Vec<(&'static str, String)>> {
    let headers = serde_json::to_string(&page.headers)
        .map_err(|e| StoreError::Config(format!("headers not serialisable: {e}")))?;
    Ok(vec![
        (F_STATUS, page.status.to_string()),
        (F_HEADERS, headers),
        (F_ETAG, page.etag.clone()),
        (F_RENDERED_AT, unix_millis(page.rendered_at).to_string()),
        (F_EXPIRES_AT, unix_millis(page.expires_at).to_string()),
        (F_SETTINGS_HASH, page.settings_hash.clone()),
        (F_CONTENT_HASH, page.content_hash.clone()),
    ])
}

/// Deletes every key matching `pattern`, SCAN by SCAN (never KEYS, which
/// would stall the server on a large keyspace); returns how many went.
/// On a cluster every primary is scanned.
async fn scan_unlink(conn: &mut Conn, pattern: &str) -> StoreResult<u64> {
    let conn = match conn {
        Conn::Cluster(conn) => return cluster::scan_unlink(conn, pattern).await,
        Conn::Single(conn) => conn,
    };
    let mut cursor: u64 = 0;
    let mut removed = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_BATCH)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            removed += redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<u64>(conn)
                .await?;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// The page from its two halves; `None` (a miss, never served) when the
/// metadata is missing (half of a page, e.g. torn by a failover) or
/// unreadable.
fn decode_page(
    key: &CacheKey,
    html: Vec<u8>,
    meta: &HashMap<String, String>,
) -> Option<StoredPage> {
    if meta.is_empty() {
        return None;
    }
    let page = decode_meta(html, meta);
    if page.is_none() {
        tracing::warn!(key = %key, "unreadable page metadata; treated as a miss");
    }
    page
}

fn decode_meta(html: Vec<u8>, meta: &HashMap<String, String>) -> Option<StoredPage> {
    let field = |name: &str| meta.get(name);
    let millis = |name: &str| field(name)?.parse::<u64>().ok().map(from_unix_millis);
    Some(StoredPage {
        html: bytes::Bytes::from(html),
        status: field(F_STATUS)?.parse().ok()?,
        headers: serde_json::from_str(field(F_HEADERS)?).ok()?,
        etag: field(F_ETAG)?.clone(),
        rendered_at: millis(F_RENDERED_AT)?,
        expires_at: millis(F_EXPIRES_AT)?,
        settings_hash: field(F_SETTINGS_HASH)?.clone(),
        content_hash: field(F_CONTENT_HASH)?.clone(),
    })
}

/// Keeps one subscription to `render-done` and `render-purge` alive,
/// reconnecting with backoff (to the next of `nodes` each time); after a
/// reconnect it announces [`PurgeEvent::All`] because purges may have been
/// missed meanwhile.
async fn run_subscriber(
    names: Names,
    nodes: NoticeNodes,
    done_tx: broadcast::Sender<String>,
    purge_tx: broadcast::Sender<PurgeEvent>,
    connected: watch::Sender<bool>,
    options: RedisOptions,
) {
    let (done_channel, purge_channel) = (names.done_channel(), names.purge_channel());
    let mut retry = SUBSCRIBER_RETRY_MIN;
    let mut was_connected = false;
    let mut candidates = Vec::new();
    let mut next = 0;
    loop {
        if next >= candidates.len() {
            candidates = nodes.candidates().await;
            next = 0;
        }
        let Some(client) = candidates.get(next) else {
            return;
        };
        next += 1;
        let subscribed = async {
            let pubsub = tokio::time::timeout(options.connect_timeout, client.get_async_pubsub())
                .await
                .map_err(|_| "connect timeout".to_owned())?
                .map_err(|e| e.to_string())?;
            let (mut sink, stream) = pubsub.split();
            tokio::time::timeout(
                options.response_timeout,
                sink.subscribe(&[&done_channel, &purge_channel]),
            )
            .await
            .map_err(|_| "subscribe timeout".to_owned())?
            .map_err(|e| e.to_string())?;
            Ok::<_, String>((sink, stream))
        }
        .await;
        let (mut sink, mut stream) = match subscribed {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "redis notice subscription failed; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(SUBSCRIBER_RETRY_MAX);
                continue;
            }
        };
        connected.send_replace(true);
        if was_connected {
            tracing::info!("redis notice subscription restored");
            let _ = purge_tx.send(PurgeEvent::All);
        }
        was_connected = true;
        retry = SUBSCRIBER_RETRY_MIN;
        let mut ping = tokio::time::interval(SUBSCRIBER_PING_INTERVAL);
        ping.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let Ok(payload) = message.get_payload::<String>() else { continue };
                    let channel = message.get_channel_name();
                    if channel == done_channel {
                        let _ = done_tx.send(payload);
                    } else if channel == purge_channel {
                        if let Some(event) = PurgeEvent::from_message(&payload) {
                            let _ = purge_tx.send(event);
                        }
                    }
                }
                _ = ping.tick() => {
                    let answered = tokio::time::timeout(
                        options.response_timeout,
                        sink.ping::<redis::Value>(),
                    )
                    .await;
                    if !matches!(answered, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        connected.send_replace(false);
        tracing::warn!("redis notice subscription lost; reconnecting");
    }
}

impl PageStore for RedisStore {
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, StoreResult<Option<StoredPage>>> {
        self.get_page(key).boxed()
    }

    fn put<'a>(
        &'a self,
        key: &'a CacheKey,
        page: &'a StoredPage,
        ttl: Duration,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.put_page(key, page, ttl).boxed()
    }

    fn delete<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, StoreResult<bool>> {
        self.delete_page(key).boxed()
    }

    fn purge_domain<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, StoreResult<u64>> {
        self.purge_domain_pages(domain).boxed()
    }

    fn purge_all(&self) -> BoxFuture<'_, StoreResult<u64>> {
        self.purge_all_pages().boxed()
    }

    fn contains<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            // One key, so one slot on a cluster too; the metadata half is
            // not checked (a reader treats a lone half as a miss anyway).
            let mut conn = self.conn().await?;
            let n: u64 = redis::cmd("EXISTS")
                .arg(self.names.page(key))
                .query_async(&mut conn)
                .await?;
            Ok(n == 1)
        }
        .boxed()
    }

    fn ping(&self) -> BoxFuture<'_, StoreResult<()>> {
        async move {
            let mut conn = self.conn().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            Ok(())
        }
        .boxed()
    }

    fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Single(_) => "redis",
            Backend::Cluster(_) => "redis-cluster",
        }
    }

    fn indexed<'a>(
        &'a self,
        domain: &'a str,
    ) -> BoxFuture<'a, StoreResult<Vec<(CacheKey, SystemTime)>>> {
        async move {
            let domain = normalize_host(domain)?;
            let mut conn = self.conn().await?;
            let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(self.names.index(&domain))
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await?;
            Ok(members
                .into_iter()
                .filter_map(|(member, score)| {
                    let key = self.names.parse_members(vec![member]).pop()?;
                    Some((key, from_unix_millis(score.max(0.0) as u64)))
                })
                .collect())
        }
        .boxed()
    }

    fn page_info<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, StoreResult<Option<PageInfo>>> {
        async move {
            let mut conn = self.conn().await?;
            // Two commands, not a pipeline: on a cluster the halves may sit
            // on different slots. A missing half is no page, as for `get`.
            let (status, rendered_at, expires_at): (Option<u16>, Option<u64>, Option<u64>) =
                redis::cmd("HMGET")
                    .arg(self.names.meta(key))
                    .arg(&[F_STATUS, F_RENDERED_AT, F_EXPIRES_AT])
                    .query_async(&mut conn)
                    .await?;
            let (Some(status), Some(rendered_at), Some(expires_at)) =
                (status, rendered_at, expires_at)
            else {
                return Ok(None);
            };
            let bytes: u64 = redis::cmd("STRLEN")
                .arg(self.names.page(key))
                .query_async(&mut conn)
                .await?;
            if bytes == 0 {
                return Ok(None);
            }
            Ok(Some(PageInfo {
                status,
                rendered_at: from_unix_millis(rendered_at),
                expires_at: from_unix_millis(expires_at),
                bytes,
            }))
        }
        .boxed()
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
                .extend_lock_script
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
                .unlock_script
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
        async move {
            let mut conn = self.conn().await?;
            let n: u64 = redis::cmd("EXISTS")
                .arg(self.names.lock(key))
                .query_async(&mut conn)
                .await?;
            Ok(n == 1)
        }
        .boxed()
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
        async move {
            let mut conn = self.conn().await?;
            redis::cmd("ZADD")
                .arg(self.names.index(key.domain()))
                .arg("XX")
                .arg(unix_millis(at))
                .arg(self.names.page(key))
                .query_async::<()>(&mut conn)
                .await?;
            Ok(())
        }
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
                .evict_script
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
                .prune_script
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
        async move {
            let mut conn = self.conn().await?;
            redis::cmd("ZADD")
                .arg(self.names.due(key.domain()))
                .arg(unix_millis(due))
                .arg(self.names.page(key))
                .query_async::<()>(&mut conn)
                .await?;
            Ok(())
        }
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
                .claim_script
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
            let mut conn = self.conn().await?;
            let key = self.names.quota(domain, month);
            let (count,): (u64,) = redis::pipe()
                .atomic()
                .incr(&key, 1)
                .expire(&key, QUOTA_KEY_TTL.as_secs() as i64)
                .ignore()
                .query_async(&mut conn)
                .await?;
            Ok(count)
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
        async move {
            let mut conn = self.conn().await?;
            let key = self.names.unverified(site, minute);
            let (count,): (u64,) = redis::pipe()
                .atomic()
                .incr(&key, 1)
                .expire(&key, super::UNVERIFIED_KEY_TTL.as_secs() as i64)
                .ignore()
                .query_async(&mut conn)
                .await?;
            Ok(count)
        }
        .boxed()
    }
}
