//! The Redis store: pages as `render:<key>` strings plus
//! `render-meta:<key>` hashes, and the coordination keys of the
//! `render-` family (see the module documentation of `cache` for the
//! layout). Commands fail fast when Redis is unreachable and the pool
//! reconnects by itself when it returns.
//!
//! The same store runs on a Redis Cluster ([`RedisStore::connect_cluster`]);
//! the few operations that span slots differ there (see `cluster`).
//!
//! Split by concern: `pages` (the page halves, their reads, writes and
//! purges: [`PageStore`](super::PageStore)), `coordination` (locks,
//! indexes, schedule, counters and their Lua scripts:
//! [`Coordination`](super::Coordination)), `notices` (the one
//! subscription to `render-done` and `render-purge`), `cluster` (what
//! differs on a Redis Cluster) and `names` (every key and channel name).

mod cluster;
mod coordination;
pub(crate) mod names;
mod notices;
mod pages;

use names::Names;

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::{Manager, Pool, Runtime};
use redis::cluster_async::ClusterConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::{broadcast, watch};

use super::{PurgeEvent, StoreError, StoreResult, NOTICE_CHANNEL_CAPACITY};
use coordination::Scripts;
use notices::{run_subscriber, NoticeNodes};
use pages::{announce_pages, decode_page, encode_meta, write_meta, F_STATUS, SCAN_BATCH};

/// Pooled connections per instance; each is multiplexed, so a few carry
/// many concurrent requests.
pub const DEFAULT_POOL_MAX_SIZE: usize = 16;
/// Connecting to Redis gives up after this, so an outage answers fast.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A command without an answer after this fails (a hung server must not
/// hold crawlers for longer than a render would).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

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
    scripts: Scripts,
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
            scripts: Scripts::new(),
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

    /// The Redis names of this store's `key_prefix`.
    pub(crate) fn names(&self) -> &Names {
        &self.names
    }

    /// Subscribes to `render-done` announcements.
    pub(crate) fn done_notices(&self) -> broadcast::Receiver<String> {
        self.done_tx.subscribe()
    }

    /// A connection from the pool (or the cluster client); also for the
    /// shared job queue, which keeps its Redis commands beside the pipeline.
    pub(crate) async fn conn(&self) -> StoreResult<Conn> {
        match &self.backend {
            Backend::Single(pool) => pool.get().await.map(Conn::Single).map_err(|e| match e {
                deadpool_redis::PoolError::Backend(e) => StoreError::Redis(e),
                other => StoreError::Pool(other.to_string()),
            }),
            Backend::Cluster(cluster) => cluster.get().await.map(Conn::Cluster),
        }
    }

    /// Whether the key `name` exists (one key, so one slot on a cluster too).
    async fn exists(&self, name: String) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        let n: u64 = redis::cmd("EXISTS")
            .arg(name)
            .query_async(&mut conn)
            .await?;
        Ok(n == 1)
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
