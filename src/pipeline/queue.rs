//! The render queue: bounded, deduplicating by key, two priorities.
//!
//! A key has at most one job pending or running in this process; every
//! further request for it *joins* that job and receives the same result.
//! Live bot misses are taken before refresh and warm-up jobs. A full queue
//! refuses a new key at once instead of growing. The job itself (lock,
//! render, store) is the caller's future: the queue decides only *when* it
//! runs and who hears the result.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A crawler is waiting.
    Live,
    /// Refresh and warm-up: only when no live job waits.
    Background,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("render queue full ({capacity} pending)")]
pub struct QueueFull {
    pub capacity: usize,
}

/// Receives the result of a queued job.
pub struct Waiter<T> {
    rx: watch::Receiver<Option<T>>,
}

impl<T: Clone> Waiter<T> {
    /// The job's result; `None` only if the job was dropped unfinished
    /// (queue shut down or the job panicked).
    pub async fn wait(mut self) -> Option<T> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        }
    }
}

/// What `submit` did with a key.
pub enum Submitted<T> {
    /// A new job was queued.
    Queued(Waiter<T>),
    /// A job for the key was already pending or running: joined it.
    Joined(Waiter<T>),
}

impl<T> Submitted<T> {
    pub fn into_waiter(self) -> Waiter<T> {
        match self {
            Submitted::Queued(w) | Submitted::Joined(w) => w,
        }
    }
}

struct Pending<T> {
    key: String,
    work: BoxFuture<'static, T>,
}

struct State<T> {
    live: VecDeque<Pending<T>>,
    background: VecDeque<Pending<T>>,
    in_flight: HashMap<String, watch::Sender<Option<T>>>,
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    wake: Notify,
    capacity: usize,
    dedup_joins: AtomicU64,
    refused: AtomicU64,
}

/// Counters for metrics and stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub live_pending: usize,
    pub background_pending: usize,
    pub running: usize,
    pub dedup_joins: u64,
    pub refused: u64,
}

impl From<&QueueStats> for crate::metrics::QueueFigures {
    fn from(s: &QueueStats) -> Self {
        crate::metrics::QueueFigures {
            live_pending: s.live_pending,
            background_pending: s.background_pending,
            dedup_joins: s.dedup_joins,
        }
    }
}

pub struct RenderQueue<T> {
    shared: Arc<Shared<T>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl<T: Clone + Send + Sync + 'static> RenderQueue<T> {
    /// `capacity` bounds pending jobs; `workers` bounds jobs running at once
    /// (the pool's `browsers × tabs_per_browser`).
    pub fn new(capacity: usize, workers: usize) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                live: VecDeque::new(),
                background: VecDeque::new(),
                in_flight: HashMap::new(),
                closed: false,
            }),
            wake: Notify::new(),
            capacity,
            dedup_joins: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let workers = (0..workers.max(1))
            .map(|_| tokio::spawn(worker(shared.clone())))
            .collect();
        RenderQueue { shared, workers }
    }

    /// Joins the job for `key` if one is pending or running.
    pub fn join(&self, key: &str) -> Option<Waiter<T>> {
        let state = self.shared.state.lock();
        let tx = state.in_flight.get(key)?;
        self.shared.dedup_joins.fetch_add(1, Ordering::Relaxed);
        Some(Waiter { rx: tx.subscribe() })
    }

    /// Queues `work` under `key`, or joins the job already there. A live
    /// request joining a pending background job moves it to the live lane.
    pub fn submit(
        &self,
        key: &str,
        priority: Priority,
        work: BoxFuture<'static, T>,
    ) -> Result<Submitted<T>, QueueFull> {
        let mut state = self.shared.state.lock();
        if let Some(tx) = state.in_flight.get(key) {
            let waiter = Waiter { rx: tx.subscribe() };
            self.shared.dedup_joins.fetch_add(1, Ordering::Relaxed);
            if priority == Priority::Live {
                if let Some(pos) = state.background.iter().position(|p| p.key == key) {
                    if let Some(job) = state.background.remove(pos) {
                        state.live.push_back(job);
                    }
                }
            }
            return Ok(Submitted::Joined(waiter));
        }
        if state.closed || state.live.len() + state.background.len() >= self.shared.capacity {
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
            return Err(QueueFull {
                capacity: self.shared.capacity,
            });
        }
        let (tx, rx) = watch::channel(None);
        state.in_flight.insert(key.to_string(), tx);
        let job = Pending {
            key: key.to_string(),
            work,
        };
        match priority {
            Priority::Live => state.live.push_back(job),
            Priority::Background => state.background.push_back(job),
        }
        drop(state);
        self.shared.wake.notify_one();
        Ok(Submitted::Queued(Waiter { rx }))
    }

    pub fn stats(&self) -> QueueStats {
        let state = self.shared.state.lock();
        let pending = state.live.len() + state.background.len();
        QueueStats {
            live_pending: state.live.len(),
            background_pending: state.background.len(),
            running: state.in_flight.len().saturating_sub(pending),
            dedup_joins: self.shared.dedup_joins.load(Ordering::Relaxed),
            refused: self.shared.refused.load(Ordering::Relaxed),
        }
    }

    /// Refuses new jobs, drops pending ones (their waiters get `None`) and
    /// lets running ones finish.
    pub fn close(&self) {
        {
            let mut guard = self.shared.state.lock();
            let state = &mut *guard;
            state.closed = true;
            for job in state.live.drain(..).chain(state.background.drain(..)) {
                state.in_flight.remove(&job.key);
            }
        }
        self.shared.wake.notify_waiters();
    }
}

impl<T> Drop for RenderQueue<T> {
    fn drop(&mut self) {
        for w in &self.workers {
            w.abort();
        }
    }
}

async fn worker<T: Clone + Send + Sync + 'static>(shared: Arc<Shared<T>>) {
    loop {
        let next = {
            let mut state = shared.state.lock();
            if state.closed && state.live.is_empty() && state.background.is_empty() {
                return;
            }
            state
                .live
                .pop_front()
                .or_else(|| state.background.pop_front())
        };
        let Some(job) = next else {
            shared.wake.notified().await;
            continue;
        };
        // More work may be waiting for another worker.
        shared.wake.notify_one();
        // A panicking job must not take the worker with it: its waiters get None.
        let result = std::panic::AssertUnwindSafe(job.work).catch_unwind().await;
        let tx = shared.state.lock().in_flight.remove(&job.key);
        match (tx, result) {
            (Some(tx), Ok(result)) => {
                let _ = tx.send(Some(result));
            }
            (_, Err(_)) => tracing::error!(key = %job.key, "render job panicked"),
            (None, Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_submits_for_one_key_run_once() {
        let q: RenderQueue<u32> = RenderQueue::new(10, 2);
        let runs = Arc::new(AtomicUsize::new(0));
        let mut waiters = Vec::new();
        for _ in 0..20 {
            let runs = runs.clone();
            let work = Box::pin(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                7
            });
            waiters.push(q.submit("k", Priority::Live, work).unwrap().into_waiter());
        }
        for w in waiters {
            assert_eq!(w.wait().await, Some(7));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(q.stats().dedup_joins, 19);
    }

    /// Occupies the queue's only worker with a job under `key` that runs
    /// until the returned gate is notified; returns once the job runs.
    async fn occupy(q: &RenderQueue<u32>, key: &str, result: u32) -> (Arc<Notify>, Waiter<u32>) {
        let gate = Arc::new(Notify::new());
        let g = gate.clone();
        let job = q
            .submit(
                key,
                Priority::Live,
                Box::pin(async move {
                    g.notified().await;
                    result
                }),
            )
            .unwrap();
        while q.stats().running == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (gate, job.into_waiter())
    }

    /// Submits a job that writes its key into `order` when it runs.
    fn recording(
        q: &RenderQueue<u32>,
        key: &str,
        priority: Priority,
        order: &Arc<Mutex<Vec<String>>>,
    ) -> Waiter<u32> {
        let order = order.clone();
        let k = key.to_string();
        q.submit(
            key,
            priority,
            Box::pin(async move {
                order.lock().push(k);
                1
            }),
        )
        .unwrap()
        .into_waiter()
    }

    #[tokio::test]
    async fn a_full_queue_refuses_new_keys_but_joins_known_ones() {
        let q: RenderQueue<u32> = RenderQueue::new(2, 1);
        let (gate, first) = occupy(&q, "a", 1).await;
        q.submit("b", Priority::Live, Box::pin(async { 2 }))
            .unwrap();
        q.submit("c", Priority::Live, Box::pin(async { 3 }))
            .unwrap();
        assert!(q
            .submit("d", Priority::Live, Box::pin(async { 4 }))
            .is_err());
        assert!(matches!(
            q.submit("b", Priority::Live, Box::pin(async { 9 })),
            Ok(Submitted::Joined(_))
        ));
        gate.notify_one();
        assert_eq!(first.wait().await, Some(1));
        assert_eq!(q.stats().refused, 1);
    }

    #[tokio::test]
    async fn live_jobs_run_before_background_jobs() {
        let q: RenderQueue<u32> = RenderQueue::new(10, 1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let (gate, blocker) = occupy(&q, "block", 0).await;
        let mut waiters = vec![blocker];
        for (key, priority) in [
            ("bg1", Priority::Background),
            ("live1", Priority::Live),
            ("bg2", Priority::Background),
            ("live2", Priority::Live),
        ] {
            waiters.push(recording(&q, key, priority, &order));
        }
        gate.notify_one();
        for w in waiters {
            w.wait().await;
        }
        assert_eq!(*order.lock(), vec!["live1", "live2", "bg1", "bg2"]);
    }

    #[tokio::test]
    async fn a_live_join_promotes_a_pending_background_job() {
        let q: RenderQueue<u32> = RenderQueue::new(10, 1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let (gate, blocker) = occupy(&q, "block", 0).await;
        let mut waiters = vec![blocker];
        for key in ["bg1", "bg2"] {
            waiters.push(recording(&q, key, Priority::Background, &order));
        }
        waiters.push(
            q.submit("bg2", Priority::Live, Box::pin(async { 9 }))
                .unwrap()
                .into_waiter(),
        );
        gate.notify_one();
        for w in waiters {
            w.wait().await;
        }
        assert_eq!(*order.lock(), vec!["bg2", "bg1"]);
    }
}
