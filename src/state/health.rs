//! Readiness: not ready until the listeners are up and (where this instance
//! renders) the first browser has launched; afterwards a failing part only
//! *degrades* readiness — humans are still served and bots fail open. From
//! SIGTERM on, not ready again while in-flight requests drain, so a load
//! balancer stops sending new ones.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::StatusCode;
use parking_lot::Mutex;

#[derive(Debug, Default)]
pub struct Health {
    listeners_up: AtomicBool,
    needs_browser: AtomicBool,
    browser_up: AtomicBool,
    draining: AtomicBool,
    degraded: Mutex<BTreeSet<&'static str>>,
}

impl Health {
    /// `needs_browser`: this instance renders, so it is ready only once a
    /// browser has launched.
    pub fn new(needs_browser: bool) -> Self {
        let h = Health::default();
        h.needs_browser.store(needs_browser, Ordering::Relaxed);
        h
    }

    pub fn set_listeners_up(&self) {
        self.listeners_up.store(true, Ordering::Release);
    }

    pub fn set_browser_up(&self) {
        self.browser_up.store(true, Ordering::Release);
    }

    /// Shutting down: readiness answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Marks a part (`store`, `browsers`, …) degraded or recovered.
    pub fn set_degraded(&self, part: &'static str, degraded: bool) {
        let mut set = self.degraded.lock();
        if degraded {
            set.insert(part);
        } else {
            set.remove(part);
        }
    }

    pub fn readiness(&self) -> (StatusCode, serde_json::Value) {
        if self.draining.load(Ordering::Acquire) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "draining"}),
            );
        }
        let listeners = self.listeners_up.load(Ordering::Acquire);
        let browser =
            !self.needs_browser.load(Ordering::Relaxed) || self.browser_up.load(Ordering::Acquire);
        if !listeners || !browser {
            let waiting: Vec<&str> = [
                (!listeners).then_some("listeners"),
                (!browser).then_some("browser"),
            ]
            .into_iter()
            .flatten()
            .collect();
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "starting", "waiting_for": waiting}),
            );
        }
        let degraded: Vec<&str> = self.degraded.lock().iter().copied().collect();
        let status = if degraded.is_empty() {
            "ok"
        } else {
            "degraded"
        };
        (
            StatusCode::OK,
            serde_json::json!({"status": status, "degraded": degraded}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_listeners_and_browser() {
        let h = Health::new(true);
        assert_eq!(h.readiness().0, StatusCode::SERVICE_UNAVAILABLE);
        h.set_listeners_up();
        assert_eq!(h.readiness().0, StatusCode::SERVICE_UNAVAILABLE);
        h.set_browser_up();
        assert_eq!(h.readiness().0, StatusCode::OK);
        h.set_degraded("store", true);
        let (code, body) = h.readiness();
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["degraded"][0], "store");
    }

    #[test]
    fn not_ready_while_draining() {
        let h = Health::new(false);
        h.set_listeners_up();
        assert_eq!(h.readiness().0, StatusCode::OK);
        h.set_draining();
        let (code, body) = h.readiness();
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "draining");
    }
}
