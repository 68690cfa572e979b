//! The shared render job queue on Redis Streams (see `pipeline::shared_queue`
//! for the design). Every command touches one key, so the same code runs on a
//! single server and on a Redis Cluster.

use std::sync::LazyLock;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use redis::streams::{StreamClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use redis::Script;
use tokio::sync::broadcast;

use super::{
    result_key, JobBacklog, JobLane, JobOutcome, JobQueue, SharedJob, TakenJob, JOB_GROUP,
    RESULT_TTL,
};
use crate::cache::redis::{Conn, RedisStore};
use crate::cache::{from_unix_millis, ttl_millis, unix_millis, CacheKey, StoreResult};

const F_KEY: &str = "key";
const F_QUEUED_AT: &str = "queued_at";

/// Creates the stream and its group on first use, then appends the job
/// unless the lane is at capacity (acknowledged jobs are deleted, so the
/// length is the backlog).
const PUSH_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then
  return false
end
return redis.call('XADD', KEYS[1], '*', ARGV[3], ARGV[4], ARGV[5], ARGV[6])
";

/// Resets a pending job's idle time, only while `consumer` still holds it.
const RENEW_SCRIPT: &str = r"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 1 and pending[1][2] == ARGV[3] then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
  return 1
end
return 0
";

static PUSH: LazyLock<Script> = LazyLock::new(|| Script::new(PUSH_SCRIPT));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW_SCRIPT));

impl RedisStore {
    /// Creates a lane's consumer group (and stream) if missing.
    async fn ensure_group(&self, conn: &mut Conn, lane: JobLane) -> StoreResult<()> {
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.names().prefixed(lane.stream_key()))
            .arg(JOB_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Turns a delivered stream entry into a job; a malformed entry
    /// (not written by this product) is deleted and skipped.
    async fn decode_entry(
        &self,
        conn: &mut Conn,
        lane: JobLane,
        entry: StreamId,
        deliveries: u64,
    ) -> StoreResult<Option<TakenJob>> {
        let key = entry
            .get::<String>(F_KEY)
            .and_then(|k| CacheKey::parse(&k).ok());
        let queued_at = entry.get::<u64>(F_QUEUED_AT).map(from_unix_millis);
        match (key, queued_at) {
            (Some(key), Some(queued_at)) => Ok(Some(TakenJob {
                id: entry.id,
                job: SharedJob {
                    key,
                    lane,
                    queued_at,
                },
                deliveries,
            })),
            _ => {
                tracing::warn!(stream = lane.stream_key(), id = %entry.id, "malformed render job dropped");
                remove_entry(conn, &self.names().prefixed(lane.stream_key()), &entry.id).await?;
                Ok(None)
            }
        }
    }
}

async fn remove_entry(conn: &mut Conn, stream: &str, id: &str) -> StoreResult<()> {
    redis::pipe()
        .cmd("XACK")
        .arg(stream)
        .arg(JOB_GROUP)
        .arg(id)
        .ignore()
        .cmd("XDEL")
        .arg(stream)
        .arg(id)
        .ignore()
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

fn lane_of(taken: &TakenJob) -> JobLane {
    taken.job.lane
}

impl JobQueue for RedisStore {
    fn push_job<'a>(
        &'a self,
        job: &'a SharedJob,
        capacity: usize,
    ) -> BoxFuture<'a, StoreResult<Option<String>>> {
        async move {
            let mut conn = self.conn().await?;
            let id: Option<String> = PUSH
                .key(self.names().prefixed(job.lane.stream_key()))
                .arg(JOB_GROUP)
                .arg(capacity)
                .arg(F_KEY)
                .arg(job.key.to_string())
                .arg(F_QUEUED_AT)
                .arg(unix_millis(job.queued_at))
                .invoke_async(&mut conn)
                .await?;
            Ok(id)
        }
        .boxed()
    }

    fn take_job<'a>(
        &'a self,
        lane: JobLane,
        consumer: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<TakenJob>>> {
        async move {
            let mut conn = self.conn().await?;
            let read = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(JOB_GROUP)
                .arg(consumer)
                .arg("COUNT")
                .arg(1)
                .arg("STREAMS")
                .arg(self.names().prefixed(lane.stream_key()))
                .arg(">")
                .to_owned();
            let reply: Option<StreamReadReply> = match read.query_async(&mut conn).await {
                Err(e) if e.code() == Some("NOGROUP") => {
                    // The stream went (Redis restarted without persistence):
                    // recreate the group and read again.
                    self.ensure_group(&mut conn, lane).await?;
                    read.query_async(&mut conn).await?
                }
                other => other?,
            };
            let entry = reply
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .next();
            match entry {
                Some(entry) => self.decode_entry(&mut conn, lane, entry, 1).await,
                None => Ok(None),
            }
        }
        .boxed()
    }

    fn reclaim_job<'a>(
        &'a self,
        lane: JobLane,
        consumer: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, StoreResult<Option<TakenJob>>> {
        async move {
            let mut conn = self.conn().await?;
            let idle = ttl_millis(lease);
            let pending: Result<StreamPendingCountReply, redis::RedisError> = redis::cmd("XPENDING")
                .arg(self.names().prefixed(lane.stream_key()))
                .arg(JOB_GROUP)
                .arg("IDLE")
                .arg(idle)
                .arg("-")
                .arg("+")
                .arg(1)
                .query_async(&mut conn)
                .await;
            let pending = match pending {
                Err(e) if e.code() == Some("NOGROUP") => return Ok(None),
                other => other?,
            };
            let Some(stale) = pending.ids.into_iter().next() else {
                return Ok(None);
            };
            // XCLAIM re-checks the idle time, so of several renderers
            // reclaiming at once only one gets the job.
            let claimed: StreamClaimReply = redis::cmd("XCLAIM")
                .arg(self.names().prefixed(lane.stream_key()))
                .arg(JOB_GROUP)
                .arg(consumer)
                .arg(idle)
                .arg(&stale.id)
                .query_async(&mut conn)
                .await?;
            match claimed.ids.into_iter().next() {
                Some(entry) => {
                    tracing::info!(stream = lane.stream_key(), id = %entry.id, from = %stale.consumer, "render job taken over from a renderer that stopped renewing it");
                    let deliveries = stale.times_delivered as u64 + 1;
                    self.decode_entry(&mut conn, lane, entry, deliveries).await
                }
                None => Ok(None),
            }
        }
        .boxed()
    }

    fn renew_job<'a>(
        &'a self,
        taken: &'a TakenJob,
        consumer: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        async move {
            let mut conn = self.conn().await?;
            let renewed: i64 = RENEW
                .key(self.names().prefixed(lane_of(taken).stream_key()))
                .arg(JOB_GROUP)
                .arg(&taken.id)
                .arg(consumer)
                .invoke_async(&mut conn)
                .await?;
            Ok(renewed == 1)
        }
        .boxed()
    }

    fn finish_job<'a>(
        &'a self,
        taken: &'a TakenJob,
        outcome: &'a JobOutcome,
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let mut conn = self.conn().await?;
            let results = self.names().prefixed(&result_key(&taken.job.key));
            // The outcome first, then the announcement, then the job goes:
            // an instance dying in between leaves the job to be taken over,
            // never a proxy waiting on an outcome nobody will write.
            redis::pipe()
                .hset(&results, &taken.id, outcome.to_wire())
                .ignore()
                .pexpire(&results, ttl_millis(RESULT_TTL) as i64)
                .ignore()
                .query_async::<()>(&mut conn)
                .await?;
            redis::cmd("PUBLISH")
                .arg(self.names().done_channel())
                .arg(taken.job.key.to_string())
                .query_async::<()>(&mut conn)
                .await?;
            remove_entry(
                &mut conn,
                &self.names().prefixed(lane_of(taken).stream_key()),
                &taken.id,
            )
            .await
        }
        .boxed()
    }

    fn job_outcome<'a>(
        &'a self,
        key: &'a CacheKey,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<JobOutcome>>> {
        async move {
            let mut conn = self.conn().await?;
            let wire: Option<String> = redis::cmd("HGET")
                .arg(self.names().prefixed(&result_key(key)))
                .arg(id)
                .query_async(&mut conn)
                .await?;
            Ok(wire.as_deref().and_then(JobOutcome::from_wire))
        }
        .boxed()
    }

    fn job_backlog(&self) -> BoxFuture<'_, StoreResult<JobBacklog>> {
        async move {
            let mut conn = self.conn().await?;
            let mut backlog = JobBacklog::default();
            for lane in [JobLane::Live, JobLane::Background] {
                let n: u64 = redis::cmd("XLEN")
                    .arg(self.names().prefixed(lane.stream_key()))
                    .query_async(&mut conn)
                    .await?;
                match lane {
                    JobLane::Live => backlog.live = n,
                    JobLane::Background => backlog.background = n,
                }
            }
            Ok(backlog)
        }
        .boxed()
    }

    fn subscribe_done(&self) -> broadcast::Receiver<String> {
        self.done_notices()
    }
}
