//! The renderer side of the shared job queue (`--role renderer`): take
//! jobs the proxies queued, live lane first, render them through this
//! instance's own render queue, and report each outcome.
//!
//! A job is taken only when a render slot is free, so jobs wait in Redis
//! for whichever renderer frees a slot first instead of piling up behind
//! a busy one. While a job runs its lease is renewed; a renderer that dies
//! stops renewing, and another takes the job over once the lease lapses.
//! Nothing is stored until a render has finished, so a job taken over is
//! simply rendered again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::cache::store_call;
use crate::config::Config;
use crate::pipeline::job::Prerenderer;
use crate::pipeline::queue::Priority;
use crate::pipeline::shared_queue::{
    JobBacklog, JobLane, JobOutcome, JobQueue, TakenJob, MAX_DELIVERIES,
};

/// A taken job not renewed for this long is handed to another renderer.
pub const JOB_LEASE: Duration = Duration::from_secs(5);
/// Renewal period of a running job's lease: several renewals fit in one
/// lease, so one slow Redis answer does not lose the job.
const JOB_RENEW_EVERY: Duration = Duration::from_millis(1500);
/// Pause between looks at an empty queue.
const JOB_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How often lapsed jobs of dead renderers are looked for.
const RECLAIM_EVERY: Duration = Duration::from_secs(1);
/// How often the shared backlog is read for metrics and stats.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

/// Counters of the shared queue as this instance sees them.
#[derive(Debug, Default)]
pub struct SharedQueueFigures {
    live_backlog: AtomicU64,
    background_backlog: AtomicU64,
    taken: AtomicU64,
    taken_over: AtomicU64,
}

impl SharedQueueFigures {
    pub fn backlog(&self) -> JobBacklog {
        JobBacklog {
            live: self.live_backlog.load(Ordering::Relaxed),
            background: self.background_backlog.load(Ordering::Relaxed),
        }
    }

    /// Jobs this instance took (taken over from dead renderers included).
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Jobs this instance took over from renderers that stopped renewing them.
    pub fn taken_over(&self) -> u64 {
        self.taken_over.load(Ordering::Relaxed)
    }

    fn set_backlog(&self, backlog: JobBacklog) {
        self.live_backlog.store(backlog.live, Ordering::Relaxed);
        self.background_backlog
            .store(backlog.background, Ordering::Relaxed);
    }
}

/// Reads the shared backlog every second until `stop` (both roles).
pub fn spawn_backlog_watch(
    jobs: Arc<dyn JobQueue>,
    figures: Arc<SharedQueueFigures>,
    tasks: &mut JoinSet<()>,
    mut stop: watch::Receiver<bool>,
) {
    tasks.spawn(async move {
        loop {
            if let Ok(backlog) = store_call(jobs.job_backlog()).await {
                figures.set_backlog(backlog);
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(BACKLOG_EVERY) => {}
            }
        }
    });
}

pub struct JobConsumer {
    config: Arc<Config>,
    jobs: Arc<dyn JobQueue>,
    prerender: Arc<Prerenderer>,
    figures: Arc<SharedQueueFigures>,
    /// One permit per render this instance runs at once.
    slots: Arc<Semaphore>,
}

impl JobConsumer {
    pub fn new(
        config: Arc<Config>,
        jobs: Arc<dyn JobQueue>,
        prerender: Arc<Prerenderer>,
        figures: Arc<SharedQueueFigures>,
    ) -> Arc<Self> {
        let slots = Arc::new(Semaphore::new(
            (config.browsers * config.tabs_per_browser).max(1),
        ));
        Arc::new(JobConsumer {
            config,
            jobs,
            prerender,
            figures,
            slots,
        })
    }

    /// Takes jobs in `tasks` until `stop`; jobs running then finish on
    /// their own (or are taken over once their lease lapses).
    pub fn spawn(self: &Arc<Self>, tasks: &mut JoinSet<()>, stop: watch::Receiver<bool>) {
        tasks.spawn(self.clone().run(stop));
    }

    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut last_reclaim = Instant::now() - RECLAIM_EVERY;
        loop {
            let slot = tokio::select! {
                _ = stop.changed() => return,
                slot = self.slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            match self.next_job(&mut last_reclaim).await {
                Some(taken) => {
                    let this = self.clone();
                    tokio::spawn(async move {
                        this.run_job(taken).await;
                        drop(slot);
                    });
                }
                None => {
                    drop(slot);
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(JOB_POLL_INTERVAL) => {}
                    }
                }
            }
        }
    }

    /// The next job: live before background, then (once a second) one
    /// whose renderer stopped renewing it.
    async fn next_job(&self, last_reclaim: &mut Instant) -> Option<TakenJob> {
        let me = self.prerender.owner();
        for lane in [JobLane::Live, JobLane::Background] {
            match store_call(self.jobs.take_job(lane, me)).await {
                Ok(Some(taken)) => {
                    self.figures.taken.fetch_add(1, Ordering::Relaxed);
                    return Some(taken);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the shared render queue");
                    return None;
                }
            }
        }
        if last_reclaim.elapsed() >= RECLAIM_EVERY {
            *last_reclaim = Instant::now();
            for lane in [JobLane::Live, JobLane::Background] {
                match store_call(self.jobs.reclaim_job(lane, me, JOB_LEASE)).await {
                    Ok(Some(taken)) => {
                        self.figures.taken.fetch_add(1, Ordering::Relaxed);
                        self.figures.taken_over.fetch_add(1, Ordering::Relaxed);
                        return Some(taken);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot look for lapsed render jobs");
                        return None;
                    }
                }
            }
        }
        None
    }

    async fn run_job(&self, taken: TakenJob) {
        let lease = self.renew_lease(&taken);
        let outcome = self.outcome_of(&taken).await;
        lease.abort();
        let Some(outcome) = outcome else {
            // Shutting down: left pending for another renderer to take over.
            tracing::info!(key = %taken.job.key, id = %taken.id, "render job left to another renderer");
            return;
        };
        tracing::debug!(key = %taken.job.key, id = %taken.id, outcome = %outcome.to_wire(), "shared render job done");
        if let Err(e) = store_call(self.jobs.finish_job(&taken, &outcome)).await {
            // The job stays pending and is taken over after its lease.
            tracing::warn!(key = %taken.job.key, error = %e, "render job outcome not recorded");
        }
    }

    /// The job's outcome; `None` when this instance is shutting down and
    /// the job should go to another renderer instead.
    async fn outcome_of(&self, taken: &TakenJob) -> Option<JobOutcome> {
        let key = &taken.job.key;
        if taken.deliveries > MAX_DELIVERIES {
            tracing::warn!(key = %key, deliveries = taken.deliveries, "render job given up: its renderers kept dying");
            return Some(JobOutcome::Failed("renderer-lost".into()));
        }
        let Some(site) = self.config.sites.lookup(key.domain()).cloned() else {
            tracing::warn!(key = %key, "render job for a domain this renderer does not serve");
            return Some(JobOutcome::Failed("unknown-site".into()));
        };
        // Already rendered since the job was queued (a duplicate job, or
        // one taken over after its page was stored): nothing to do.
        if let Ok(Some(page)) = store_call(self.prerender.store().get(key)).await {
            if page.rendered_at >= taken.job.queued_at && page.settings_hash == site.settings_hash {
                return Some(JobOutcome::Stored);
            }
        }
        let priority = match taken.job.lane {
            JobLane::Live => Priority::Live,
            JobLane::Background => Priority::Background,
        };
        Some(match self.prerender.render(key, &site, priority).await {
            Ok(rendered) if rendered.stored => JobOutcome::Stored,
            Ok(rendered) if rendered.store_error => JobOutcome::Failed("store".into()),
            Ok(_) => JobOutcome::Failed("not-cached".into()),
            Err(failure) if failure.reason == "shutdown" => return None,
            Err(failure) => JobOutcome::Failed(failure.reason.into()),
        })
    }

    /// Keeps the job's lease until aborted.
    fn renew_lease(&self, taken: &TakenJob) -> tokio::task::JoinHandle<()> {
        let jobs = self.jobs.clone();
        let taken = taken.clone();
        let me = self.prerender.owner().to_owned();
        tokio::spawn(async move {
            let mut every = tokio::time::interval_at(
                tokio::time::Instant::now() + JOB_RENEW_EVERY,
                JOB_RENEW_EVERY,
            );
            loop {
                every.tick().await;
                match store_call(jobs.renew_job(&taken, &me)).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(key = %taken.job.key, id = %taken.id, "render job lease lapsed; another renderer took it over");
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "render job lease not renewed"),
                }
            }
        })
    }
}
