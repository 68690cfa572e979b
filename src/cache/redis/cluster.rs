//! The Redis store on a Redis Cluster: the operations whose keys span
//! hash slots. Everything that touches one key (locks, quota counters,
//! the per-domain index and schedule, touch, claim) is shared with the
//! single-server store; the cluster routes it by slot.
//!
//! # Design
//!
//! The key layout is the product's contract and stays exactly as on a
//! single server, with no hash tags: `render:<key>` and
//! `render-meta:<key>` usually hash to different slots (and nodes), and
//! so do the per-domain `render-index:` / `render-due:` sets and the
//! pages they list. Hash-tagging the page keys (`render:{<key>}`) would
//! keep a page on one slot but change the names operators and tools rely
//! on (`redis-cli GET render:<domain>:<path>`), so instead nothing that
//! spans slots needs to be atomic:
//!
//! - **Page write**: the HTML first (`SET … PX`), then the metadata hash
//!   (`DEL` + `HSET` + `PEXPIRE` in one MULTI/EXEC on its own slot), then
//!   the index and domain set. The metadata carries an extra field,
//!   `html_sha256`, the digest of the HTML it belongs to. A reader takes
//!   the HTML, then the metadata, and treats the page as a miss if either
//!   is missing (a write cut short, or one half expired first); if the
//!   digest does not match, a replacement landed between its two reads
//!   and it reads again (a few times, then a miss). So a torn write — old
//!   HTML with new headers or the reverse — is never served.
//! - **Delete and purges**: a server refuses a multi-key `DEL`/`UNLINK`
//!   spanning slots; the cluster client splits such a command by slot
//!   and sums the answers, so a page's two halves go in one call (not
//!   atomically: a reader seeing one half treats it as a miss). Domain and
//!   full purges SCAN every primary (listed by `CLUSTER SLOTS`, each
//!   scanned by routing to a slot it owns) and unlink each batch found.
//! - **LRU eviction and pruning** run client-side instead of as Lua
//!   scripts (a cluster refuses scripts touching keys they do not
//!   declare): `ZRANGE` the index, `EXISTS` each member, `ZREM` the gone
//!   ones; an over-full domain's least recently used pages are evicted by
//!   whoever removes their index entry (`ZREM` answering 1), so two
//!   instances evicting at once never both delete or report a page. A
//!   page touched between the read and the eviction may still go: the
//!   bound is kept, the order is approximate under races.
//! - **Refresh claims** keep the single-server script: it only touches the
//!   declared `render-due:<domain>` key, so it runs atomically on that
//!   key's node, and each due page is claimed once cluster-wide. (A
//!   client-side `ZRANGEBYSCORE` + `ZREM` would be claimed once too, but
//!   a claimer delayed between its two commands could remove an entry
//!   already refreshed and re-scheduled by another instance.)
//! - **Render locks**: `SET render-lock:<key> owner NX PX` and the
//!   owner-checked release script, both on one key.
//! - **Notices** (`render-done`, `render-purge`): a cluster broadcasts a
//!   `PUBLISH` received by any node (from a client or a script) to
//!   subscribers on every node, so each instance subscribes with a plain
//!   connection to one node and, when that node fails, moves to the next
//!   one: the configured nodes first, then every node `CLUSTER SLOTS`
//!   reports (so one configured node is enough), announcing a full purge
//!   after reconnecting as on a single server. The crate's cluster-wide
//!   RESP3 subscriptions would work too but need RESP3 and a push
//!   channel; one node is enough here.
//!
//! The connection to the cluster is made on first use (so the proxy
//! starts while the cluster is down) and then follows topology changes
//! and reconnects by itself.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{ConnectionAddr, Value};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::{
    announce_pages, current_runtime, decode_page, encode_meta, write_meta, Backend, Names,
    RedisOptions, RedisStore, SCAN_BATCH,
};
use crate::cache::{is_error_status, CacheKey, PurgeEvent, StoreError, StoreResult, StoredPage};

/// Metadata field holding the SHA-256 (hex) of the HTML it was written
/// with: how a reader tells a consistent pair from a torn one.
const F_HTML_SHA256: &str = "html_sha256";
/// Reads of a page raced by replacements before it counts as a miss.
const TORN_READ_ATTEMPTS: usize = 3;
/// `EXISTS` checks in flight at once while pruning an index.
const PER_KEY_CONCURRENCY: usize = 64;
/// Redirects and reconnects a cluster command may go through (within the
/// response timeout) before it fails.
const CLUSTER_RETRIES: u32 = 3;

impl RedisStore {
    /// The store on a Redis Cluster reached through any of `nodes`
    /// (`redis://host:port` URLs, as `--redis` lists them; one is enough,
    /// the rest of the cluster is discovered). Needs a Tokio runtime; only
    /// the URLs are checked here, the cluster may come up later and
    /// [`PageStore::ping`](crate::cache::PageStore::ping) says whether it
    /// answers.
    pub fn connect_cluster(
        nodes: &[String],
        options: RedisOptions,
    ) -> StoreResult<Arc<RedisStore>> {
        let runtime = current_runtime()?;
        if nodes.is_empty() {
            return Err(StoreError::Config(
                "a redis cluster needs at least one node URL".to_owned(),
            ));
        }
        let tls_roots = options.tls_roots.as_deref().map(Vec::as_slice);
        let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .connection_timeout(options.connect_timeout)
            .response_timeout(options.response_timeout)
            .retries(CLUSTER_RETRIES);
        if let Some(roots) = tls_roots.filter(|_| nodes.iter().any(|n| n.starts_with("rediss://")))
        {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(roots.to_vec()),
            });
        }
        let client = builder.build()?;
        let notice_nodes = nodes
            .iter()
            .map(|node| super::redis_client(node, tls_roots))
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = LazyCluster {
            client,
            conn: OnceCell::new(),
            connect_timeout: options.connect_timeout,
        };
        Ok(RedisStore::start(
            &runtime,
            Backend::Cluster(Arc::new(cluster)),
            notice_nodes,
            options,
        ))
    }
}

/// The cluster connection, made on first use.
pub(super) struct LazyCluster {
    client: redis::cluster::ClusterClient,
    conn: OnceCell<ClusterConnection>,
    connect_timeout: Duration,
}

impl LazyCluster {
    /// A handle on the shared connection (cheap to clone, multiplexed).
    /// While the cluster is unreachable each caller waits at most the
    /// connect timeout.
    pub(super) async fn get(&self) -> StoreResult<ClusterConnection> {
        let connect = self
            .conn
            .get_or_try_init(|| async { self.client.get_async_connection().await });
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(conn) => Ok(conn?.clone()),
            Err(_) => Err(StoreError::Pool(
                "timed out connecting to the redis cluster".to_owned(),
            )),
        }
    }
}

fn html_digest(html: &[u8]) -> String {
    hex::encode(Sha256::digest(html))
}

pub(super) async fn get_page(
    mut conn: ClusterConnection,
    names: &Names,
    key: &CacheKey,
) -> StoreResult<Option<StoredPage>> {
    for _ in 0..TORN_READ_ATTEMPTS {
        let html: Option<Vec<u8>> = redis::cmd("GET")
            .arg(names.page(key))
            .query_async(&mut conn)
            .await?;
        let Some(html) = html else { return Ok(None) };
        let meta: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(names.meta(key))
            .query_async(&mut conn)
            .await?;
        if meta.is_empty() || meta.get(F_HTML_SHA256) == Some(&html_digest(&html)) {
            return Ok(decode_page(key, html, &meta));
        }
    }
    tracing::debug!(key = %key, "page kept changing while read; treated as a miss");
    Ok(None)
}

pub(super) async fn put_page(
    mut conn: ClusterConnection,
    names: &Names,
    key: &CacheKey,
    page: &StoredPage,
    ttl_ms: u64,
) -> StoreResult<()> {
    let name = names.page(key);
    let mut fields = encode_meta(page)?;
    fields.push((F_HTML_SHA256, html_digest(&page.html)));
    redis::cmd("SET")
        .arg(&name)
        .arg(page.html.as_ref())
        .arg("PX")
        .arg(ttl_ms)
        .query_async::<()>(&mut conn)
        .await?;
    let mut meta = redis::pipe();
    write_meta(meta.atomic(), &names.meta(key), &fields, ttl_ms);
    meta.query_async::<()>(&mut conn).await?;
    run_all(
        &mut conn,
        vec![
            // NX: a re-rendered page keeps its last access (see `PageStore::put`).
            redis::cmd("ZADD")
                .arg(names.index(key.domain()))
                .arg("NX")
                .arg(crate::cache::unix_millis(std::time::SystemTime::now()))
                .arg(&name)
                .clone(),
            redis::Cmd::sadd(names.domains(), key.domain()),
        ],
    )
    .await
}

pub(super) async fn delete_page(
    mut conn: ClusterConnection,
    names: &Names,
    key: &CacheKey,
) -> StoreResult<bool> {
    let name = names.page(key);
    // The client splits a multi-key DEL by slot and sums the answers.
    let removed: u64 = redis::Cmd::del(&[name.as_str(), names.meta(key).as_str()])
        .query_async(&mut conn)
        .await?;
    run_all(
        &mut conn,
        vec![
            redis::Cmd::zrem(names.index(key.domain()), &name),
            redis::Cmd::zrem(names.due(key.domain()), &name),
            redis::Cmd::publish(
                names.purge_channel(),
                PurgeEvent::Page(key.clone()).to_message(),
            ),
        ],
    )
    .await?;
    Ok(removed > 0)
}

/// Runs commands one by one, in order (their keys may be on different
/// slots).
pub(super) async fn run_all(
    conn: &mut ClusterConnection,
    commands: Vec<redis::Cmd>,
) -> StoreResult<()> {
    for command in commands {
        command.query_async::<()>(conn).await?;
    }
    Ok(())
}

/// Whether each key exists, a bounded number of checks at once, answers
/// in the keys' order (a multi-key `EXISTS` only answers a total).
async fn exists_each(conn: &ClusterConnection, keys: Vec<String>) -> StoreResult<Vec<bool>> {
    let requests = keys.into_iter().map(|key| {
        let mut conn = conn.clone();
        async move { redis::Cmd::exists(key).query_async::<bool>(&mut conn).await }
    });
    futures::stream::iter(requests)
        .buffered(PER_KEY_CONCURRENCY)
        .try_collect()
        .await
        .map_err(StoreError::from)
}

/// The stored status of each page (`render:<key>` members); 0 when its
/// metadata is gone or unreadable.
async fn statuses_each(
    conn: &ClusterConnection,
    names: &Names,
    members: &[String],
) -> StoreResult<Vec<u16>> {
    let metas: Vec<Option<String>> = members
        .iter()
        .map(|member| {
            names
                .parse_members(vec![member.clone()])
                .pop()
                .map(|key| names.meta(&key))
        })
        .collect();
    let requests = metas.into_iter().map(|meta| {
        let mut conn = conn.clone();
        async move {
            let Some(meta) = meta else {
                return Ok(0);
            };
            let status: Option<String> = redis::Cmd::hget(meta, super::F_STATUS)
                .query_async(&mut conn)
                .await?;
            Ok::<u16, redis::RedisError>(status.and_then(|s| s.parse().ok()).unwrap_or(0))
        }
    });
    futures::stream::iter(requests)
        .buffered(PER_KEY_CONCURRENCY)
        .try_collect()
        .await
        .map_err(StoreError::from)
}

fn parse<T: redis::FromRedisValue>(value: &Value) -> StoreResult<T> {
    redis::from_redis_value_ref(value).map_err(|e| StoreError::Redis(e.into()))
}

/// The slot ranges of the cluster: each range's first slot and its
/// nodes' addresses, primary first.
async fn slot_ranges(conn: &mut ClusterConnection) -> StoreResult<Vec<(u16, Vec<(String, u16)>)>> {
    let ranges: Vec<Vec<Value>> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut parsed = Vec::new();
    for range in ranges {
        // [first slot, last slot, [ip, port, id, …] for the primary, then each replica]
        let Some(first) = range.first() else { continue };
        let mut nodes = Vec::new();
        for node in range.iter().skip(2) {
            let node: Vec<Value> = parse(node)?;
            if let [ip, port, ..] = node.as_slice() {
                nodes.push((parse(ip)?, parse(port)?));
            }
        }
        parsed.push((parse(first)?, nodes));
    }
    Ok(parsed)
}

/// A route to each primary: one slot it owns.
async fn primaries(conn: &mut ClusterConnection) -> StoreResult<Vec<Route>> {
    let mut seen = HashSet::new();
    let mut routes = Vec::new();
    for (first, nodes) in slot_ranges(conn).await? {
        if nodes
            .first()
            .is_some_and(|primary| seen.insert(primary.clone()))
        {
            routes.push(Route::new(first, SlotAddr::Master));
        }
    }
    Ok(routes)
}

/// A client for every node of the cluster, with `template`'s settings
/// (credentials, database) and each node's address.
pub(super) async fn node_clients(
    cluster: &LazyCluster,
    template: &redis::Client,
) -> StoreResult<Vec<redis::Client>> {
    let mut conn = cluster.get().await?;
    let mut addresses: Vec<(String, u16)> = slot_ranges(&mut conn)
        .await?
        .into_iter()
        .flat_map(|(_, nodes)| nodes)
        .collect();
    addresses.sort();
    addresses.dedup();
    let info = template.get_connection_info();
    addresses
        .into_iter()
        .filter_map(|(host, port)| match info.addr() {
            ConnectionAddr::Tcp(..) => Some(ConnectionAddr::Tcp(host, port)),
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => Some(ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            }),
            _ => None,
        })
        .map(|addr| redis::Client::open(info.clone().set_addr(addr)).map_err(StoreError::from))
        .collect()
}

/// Deletes every key matching `pattern` on every primary; returns how
/// many went.
pub(super) async fn scan_unlink(conn: &mut ClusterConnection, pattern: &str) -> StoreResult<u64> {
    let mut removed = 0;
    for route in primaries(conn).await? {
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
            let reply = conn.route_command(scan, routing).await?;
            let (next, keys): (u64, Vec<String>) =
                redis::from_redis_value(reply).map_err(redis::RedisError::from)?;
            if !keys.is_empty() {
                // Split by slot by the client, answers summed.
                removed += redis::Cmd::unlink(&keys).query_async::<u64>(conn).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(removed)
}

/// The domain's indexed pages that still exist, least recently used
/// first; members of pages that are gone are dropped from the index.
async fn live_members(
    conn: &mut ClusterConnection,
    names: &Names,
    domain: &str,
) -> StoreResult<Vec<String>> {
    let index = names.index(domain);
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&index)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await?;
    let exists = exists_each(conn, members.clone()).await?;
    let (live, gone): (Vec<_>, Vec<_>) = members
        .into_iter()
        .zip(exists)
        .partition(|(_, exists)| *exists);
    if !gone.is_empty() {
        let gone: Vec<String> = gone.into_iter().map(|(m, _)| m).collect();
        redis::Cmd::zrem(&index, gone)
            .query_async::<()>(conn)
            .await?;
    }
    Ok(live.into_iter().map(|(m, _)| m).collect())
}

pub(super) async fn entries(
    mut conn: ClusterConnection,
    names: &Names,
    domain: &str,
) -> StoreResult<u64> {
    Ok(live_members(&mut conn, names, domain).await?.len() as u64)
}

pub(super) async fn evict_over(
    mut conn: ClusterConnection,
    names: &Names,
    domain: &str,
    max_entries: u64,
) -> StoreResult<Vec<CacheKey>> {
    let max = usize::try_from(max_entries).unwrap_or(usize::MAX);
    let live = live_members(&mut conn, names, domain).await?;
    let over = live.len().saturating_sub(max);
    if over == 0 {
        trim_schedule(&mut conn, &names.due(domain), max).await?;
        return Ok(Vec::new());
    }
    // Error pages (status 400 and above) go before any other page.
    let statuses = statuses_each(&conn, names, &live).await?;
    let (mut doomed, others): (Vec<_>, Vec<_>) = live
        .into_iter()
        .zip(statuses)
        .partition(|(_, status)| is_error_status(*status));
    doomed.extend(others);
    let mut live: Vec<String> = doomed.into_iter().map(|(m, _)| m).collect();
    live.truncate(over);
    let index = names.index(domain);
    let due = names.due(domain);
    let mut evicted = Vec::new();
    for key in names.parse_members(live) {
        let name = names.page(&key);
        // Whoever removes the index entry evicts the page.
        let won: u64 = redis::Cmd::zrem(&index, &name)
            .query_async(&mut conn)
            .await?;
        if won == 1 {
            run_all(
                &mut conn,
                vec![
                    redis::Cmd::del(&[name.as_str(), names.meta(&key).as_str()]),
                    redis::Cmd::zrem(&due, &name),
                ],
            )
            .await?;
            evicted.push(key);
        }
    }
    trim_schedule(&mut conn, &due, max).await?;
    announce_pages(&mut conn, names, &evicted).await?;
    Ok(evicted)
}

/// Drops scheduled pages that are no longer cached, earliest first,
/// until the schedule is within `max` entries.
async fn trim_schedule(conn: &mut ClusterConnection, due: &str, max: usize) -> StoreResult<()> {
    let scheduled: u64 = redis::Cmd::zcard(due).query_async(&mut *conn).await?;
    let extra = usize::try_from(scheduled)
        .unwrap_or(usize::MAX)
        .saturating_sub(max);
    if extra == 0 {
        return Ok(());
    }
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(due)
        .arg(0)
        .arg(-1)
        .query_async(&mut *conn)
        .await?;
    let exists = exists_each(conn, members.clone()).await?;
    let uncached: Vec<String> = members
        .into_iter()
        .zip(exists)
        .filter(|(_, exists)| !*exists)
        .map(|(m, _)| m)
        .take(extra)
        .collect();
    if !uncached.is_empty() {
        redis::Cmd::zrem(due, uncached)
            .query_async::<()>(conn)
            .await?;
    }
    Ok(())
}
