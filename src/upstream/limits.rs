//! The bounds of the connections kept to origins, one set for every
//! client that reaches them (`origin_connect_timeout`, `origin_max_idle`,
//! `origin_idle_timeout`).

use std::time::Duration;

/// A new origin connection (passthrough and render fetches) must be
/// established within this; an origin that drops SYNs fails fast with 502
/// instead of holding the request until `origin_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle keep-alive connections kept per origin (per public thread, where
/// connections are kept per thread).
pub const DEFAULT_MAX_IDLE: u64 = 256;
/// How long an idle connection may wait to be reused.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bounds of a pool of origin connections.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Idle connections kept per origin; more are closed.
    pub max_idle_per_origin: usize,
    /// An idle connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
    /// A new connection must be established within this.
    pub connect_timeout: Duration,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            max_idle_per_origin: DEFAULT_MAX_IDLE as usize,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}
