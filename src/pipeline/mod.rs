//! The render pipeline: how a page gets from "not cached" to "cached and
//! kept fresh".
//!
//! - [`job`]: one render job (lock, quota, render with retries, store,
//!   schedule the refresh), run by every miss, stale hit, refresh and warm-up.
//! - [`queue`]: the in-process queue in front of the browsers: bounded,
//!   deduplicating by key, two priorities.
//! - [`shared_queue`]: the queue shared by `--role proxy` and
//!   `--role renderer` instances on Redis Streams.
//! - [`consumer`]: the renderer side of the shared queue.
//! - [`refresh`]: the refresher (scheduled re-renders, origin polling).
//!
//! The pipeline uses `render` (the browsers), `cache` (the store) and
//! `state` (figures it reports); nothing here imports the listeners.

pub mod consumer;
pub mod job;
pub mod queue;
pub mod refresh;
pub mod shared_queue;
