//! The render job queue shared by `--role proxy` and `--role renderer`
//! instances: proxies push jobs, renderers take them, and a job whose
//! renderer died is handed to another once its lease runs out.
//!
//! On Redis it is one Stream per priority lane (`render-jobs:live`,
//! `render-jobs:background`) read through the consumer group
//! `renderers`: a taken job sits in its renderer's pending list until
//! acknowledged (then deleted, so a lane's length is its backlog), and the
//! renderer renews the job's lease while it renders. A job idle longer
//! than the lease is claimed by another renderer; after
//! [`MAX_DELIVERIES`] deliveries it is given up. Each job's outcome is
//! written to `render-result:<key>` (a hash: job id → outcome, kept for
//! [`RESULT_TTL`]) and announced on `render-done`, where the waiting proxy
//! hears it.

use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio::sync::broadcast;

use crate::cache::{CacheKey, StoreResult};

mod redis;

/// Stream of live (crawler is waiting) jobs.
pub const LIVE_JOBS_KEY: &str = "render-jobs:live";
/// Stream of refresh and warm-up jobs.
pub const BACKGROUND_JOBS_KEY: &str = "render-jobs:background";
/// Consumer group the renderers read both streams through.
pub const JOB_GROUP: &str = "renderers";
/// Prefix of the per-page hash of job outcomes.
pub const RESULT_KEY_PREFIX: &str = "render-result:";
/// Outcomes are kept this long for proxies that wait on them.
pub const RESULT_TTL: Duration = Duration::from_secs(120);
/// A job delivered this many times without finishing (its renderers kept
/// dying) is given up with `renderer-lost`.
pub const MAX_DELIVERIES: u64 = 3;

/// Priority lane of a shared job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobLane {
    Live,
    Background,
}

impl JobLane {
    pub fn stream_key(self) -> &'static str {
        match self {
            JobLane::Live => LIVE_JOBS_KEY,
            JobLane::Background => BACKGROUND_JOBS_KEY,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            JobLane::Live => "live",
            JobLane::Background => "background",
        }
    }
}

/// A job as it travels through the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedJob {
    pub key: CacheKey,
    pub lane: JobLane,
    /// When the proxy queued it: a page rendered after this answers it.
    pub queued_at: SystemTime,
}

/// A job a renderer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenJob {
    /// The stream entry id.
    pub id: String,
    pub job: SharedJob,
    /// Times the job has been handed out, this time included.
    pub deliveries: u64,
}

/// How a job ended, as the waiting proxy reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The page is in the store.
    Stored,
    /// No page was stored; the `X-Prerender-Error` reason.
    Failed(String),
}

impl JobOutcome {
    pub fn to_wire(&self) -> String {
        match self {
            JobOutcome::Stored => "stored".to_owned(),
            JobOutcome::Failed(reason) => format!("failed {reason}"),
        }
    }

    pub fn from_wire(wire: &str) -> Option<JobOutcome> {
        match wire.split_once(' ') {
            None if wire == "stored" => Some(JobOutcome::Stored),
            Some(("failed", reason)) if !reason.is_empty() => {
                Some(JobOutcome::Failed(reason.to_owned()))
            }
            _ => None,
        }
    }
}

/// The result hash of a page: `render-result:<domain>:[m:]<path>`.
pub fn result_key(key: &CacheKey) -> String {
    format!("{RESULT_KEY_PREFIX}{}", key.suffix())
}

/// Backlog of both lanes (jobs queued or taken but not finished).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobBacklog {
    pub live: u64,
    pub background: u64,
}

/// The shared queue's operations (Redis only: the split roles need it).
pub trait JobQueue: Send + Sync {
    /// Appends a job unless its lane already holds `capacity` unfinished
    /// jobs; the entry id, or `None` when the lane is full.
    fn push_job<'a>(
        &'a self,
        job: &'a SharedJob,
        capacity: usize,
    ) -> BoxFuture<'a, StoreResult<Option<String>>>;

    /// Takes the oldest job no renderer has been given yet, for `consumer`.
    fn take_job<'a>(
        &'a self,
        lane: JobLane,
        consumer: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<TakenJob>>>;

    /// Takes over one job whose holder has not renewed it for `lease`.
    fn reclaim_job<'a>(
        &'a self,
        lane: JobLane,
        consumer: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, StoreResult<Option<TakenJob>>>;

    /// Renews the lease of a job `consumer` holds; `false` if it is no
    /// longer held by it (finished, or taken over after a lapse).
    fn renew_job<'a>(
        &'a self,
        taken: &'a TakenJob,
        consumer: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Records the outcome, announces it, and removes the job.
    fn finish_job<'a>(
        &'a self,
        taken: &'a TakenJob,
        outcome: &'a JobOutcome,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// The outcome of job `id` for `key`, once finished.
    fn job_outcome<'a>(
        &'a self,
        key: &'a CacheKey,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<JobOutcome>>>;

    /// Unfinished jobs per lane.
    fn job_backlog(&self) -> BoxFuture<'_, StoreResult<JobBacklog>>;

    /// `render-done` notices (`render:<key>`): a render or a job of that
    /// page finished.
    fn subscribe_done(&self) -> broadcast::Receiver<String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_their_wire_form() {
        for outcome in [
            JobOutcome::Stored,
            JobOutcome::Failed("timeout".into()),
            JobOutcome::Failed("origin-error".into()),
        ] {
            assert_eq!(JobOutcome::from_wire(&outcome.to_wire()), Some(outcome));
        }
        for junk in ["", "ok", "failed", "failed ", "stored x"] {
            assert_eq!(JobOutcome::from_wire(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn result_keys_follow_the_page_key() {
        let key = CacheKey::new("example.com", "/p", &[], true).unwrap();
        assert_eq!(result_key(&key), "render-result:example.com:m:/p");
    }
}
