//! Pages on Redis: the HTML as `render:<key>` and its metadata hash
//! `render-meta:<key>`, written together (on a cluster, see `cluster`),
//! read together, and purged by key, by domain or all at once.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::{cluster, run_each, Backend, Conn, Names, RedisStore};
use crate::cache::key::{normalize_host, META_KEY_PREFIX, PAGE_KEY_PREFIX};
use crate::cache::{
    from_unix_millis, ttl_millis, unix_millis, CacheKey, PageInfo, PageStore, PurgeEvent,
    StoreError, StoreResult, StoredPage, DUE_KEY_PREFIX, INDEX_KEY_PREFIX,
};

/// Keys asked of each SCAN step during purges.
pub(super) const SCAN_BATCH: usize = 500;

// Metadata hash fields.
pub(super) const F_STATUS: &str = "status";
const F_HEADERS: &str = "headers";
const F_ETAG: &str = "etag";
const F_RENDERED_AT: &str = "rendered_at";
const F_EXPIRES_AT: &str = "expires_at";
const F_SETTINGS_HASH: &str = "settings_hash";
const F_CONTENT_HASH: &str = "content_hash";

impl RedisStore {
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
        // NX: a re-rendered page keeps its last access (see `PageStore::put`).
        write_meta(&mut pipe, &self.names.meta(key), &fields, ttl_ms)
            .cmd("ZADD")
            .arg(self.names.index(key.domain()))
            .arg("NX")
            .arg(unix_millis(SystemTime::now()))
            .arg(&name)
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

/// Replaces the metadata hash of a page, with its TTL.
pub(super) fn write_meta<'p>(
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
pub(super) async fn announce_pages<C>(
    conn: &mut C,
    names: &Names,
    keys: &[CacheKey],
) -> StoreResult<()>
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
pub(super) fn encode_meta(page: &StoredPage) -> StoreResult<Vec<(&'static str, String)>> {
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
pub(super) fn decode_page(
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
        // The metadata half is not checked (a reader treats a lone half as
        // a miss anyway).
        self.exists(self.names.page(key)).boxed()
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
