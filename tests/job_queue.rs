//! The shared render job queue (`--role proxy` / `--role renderer`) on a
//! real redis-server and a real 3-primary Redis Cluster: bounded lanes,
//! each job to one renderer, leases renewed only by their holder, lapsed
//! jobs taken over, outcomes announced.

#[path = "common/ports.rs"]
mod ports;
use ports::free_port;
#[path = "common/redis.rs"]
mod redis_server;

#[path = "common/redis_cluster.rs"]
mod cluster_nodes;
#[path = "common/store.rs"]
mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prerender_proxy::cache::{CacheKey, RedisOptions, RedisStore};
use prerender_proxy::pipeline::shared_queue::{JobLane, JobOutcome, JobQueue, SharedJob};
use store::{eventually_ok, DEADLINE};

fn job(path: &str, lane: JobLane) -> SharedJob {
    SharedJob {
        key: CacheKey::new("example.com", path, &[], false).unwrap(),
        lane,
        queued_at: SystemTime::now(),
    }
}

async fn queue_contract(jobs: Arc<RedisStore>) {
    // Nothing to take from lanes never used.
    assert_eq!(jobs.take_job(JobLane::Live, "r1").await.unwrap(), None);
    assert_eq!(
        jobs.reclaim_job(JobLane::Live, "r1", Duration::from_millis(1))
            .await
            .unwrap(),
        None
    );

    // Bounded lanes: the third live job is refused, the background lane
    // has its own room.
    let a = jobs.push_job(&job("/a", JobLane::Live), 2).await.unwrap();
    let b = jobs.push_job(&job("/b", JobLane::Live), 2).await.unwrap();
    assert!(a.is_some() && b.is_some());
    assert_eq!(
        jobs.push_job(&job("/c", JobLane::Live), 2).await.unwrap(),
        None
    );
    let bg = jobs
        .push_job(&job("/bg", JobLane::Background), 2)
        .await
        .unwrap();
    assert!(bg.is_some());
    let backlog = jobs.job_backlog().await.unwrap();
    assert_eq!((backlog.live, backlog.background), (2, 1));

    // Oldest first, each job to one renderer.
    let first = jobs.take_job(JobLane::Live, "r1").await.unwrap().unwrap();
    assert_eq!(first.job.key.path(), "/a");
    assert_eq!(first.deliveries, 1);
    assert_eq!(Some(&first.id), a.as_ref());
    let second = jobs.take_job(JobLane::Live, "r2").await.unwrap().unwrap();
    assert_eq!(second.job.key.path(), "/b");
    assert_eq!(jobs.take_job(JobLane::Live, "r3").await.unwrap(), None);

    // Only the holder renews a lease.
    assert!(jobs.renew_job(&first, "r1").await.unwrap());
    assert!(!jobs.renew_job(&first, "r2").await.unwrap());

    // A lapsed job is taken over, once; the old holder can no longer renew it.
    // r2 renews its job each round, so only r1's can lapse; polled until
    // it has, however long Redis takes to count the idle time.
    let lease = Duration::from_millis(300);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let taken = loop {
        assert!(jobs.renew_job(&second, "r2").await.unwrap(), "r2 is alive");
        if let Some(taken) = jobs.reclaim_job(JobLane::Live, "r3", lease).await.unwrap() {
            break taken;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "r1's lapsed job was never taken over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(taken.id, first.id);
    assert_eq!(taken.deliveries, 2);
    assert_eq!(
        jobs.reclaim_job(JobLane::Live, "r4", lease).await.unwrap(),
        None
    );
    assert!(!jobs.renew_job(&first, "r1").await.unwrap());

    // Finishing records the outcome, announces it and frees the room.
    let mut done = jobs.subscribe_done();
    assert_eq!(
        jobs.job_outcome(&first.job.key, &first.id).await.unwrap(),
        None
    );
    jobs.finish_job(&taken, &JobOutcome::Stored).await.unwrap();
    jobs.finish_job(&second, &JobOutcome::Failed("timeout".into()))
        .await
        .unwrap();
    assert_eq!(
        jobs.job_outcome(&first.job.key, &first.id).await.unwrap(),
        Some(JobOutcome::Stored)
    );
    assert_eq!(
        jobs.job_outcome(&second.job.key, &second.id).await.unwrap(),
        Some(JobOutcome::Failed("timeout".into()))
    );
    let notice = tokio::time::timeout(DEADLINE, done.recv()).await.unwrap();
    assert_eq!(notice.unwrap(), "render:example.com:/a");
    let backlog = jobs.job_backlog().await.unwrap();
    assert_eq!((backlog.live, backlog.background), (0, 1));
    assert!(jobs
        .push_job(&job("/c", JobLane::Live), 2)
        .await
        .unwrap()
        .is_some());
    let bg = jobs
        .take_job(JobLane::Background, "r1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bg.job.key.path(), "/bg");
    assert_eq!(bg.job.lane, JobLane::Background);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_queue_on_redis() {
    let server = redis_server::RedisServer::start();
    queue_contract(server.store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_queue_on_a_redis_cluster() {
    let cluster = cluster_nodes::RedisCluster::start();
    queue_contract(cluster.store().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_lost_with_its_redis_comes_back_on_the_next_job() {
    let mut server = redis_server::RedisServer::start();
    let store = RedisStore::connect(&server.url(), RedisOptions::default()).unwrap();
    store
        .push_job(&job("/before", JobLane::Live), 10)
        .await
        .unwrap()
        .unwrap();
    // Redis restarts without persistence: stream and group are gone.
    server.stop();
    server.restart();
    // A renderer reading first recreates the group …
    let none = eventually_ok("the queue came back", || {
        store.take_job(JobLane::Live, "r1")
    })
    .await;
    assert_eq!(none, None);
    // … and jobs pushed afterwards are delivered.
    store
        .push_job(&job("/after", JobLane::Live), 10)
        .await
        .unwrap()
        .unwrap();
    let taken = store.take_job(JobLane::Live, "r1").await.unwrap().unwrap();
    assert_eq!(taken.job.key.path(), "/after");
}
