//! Ports for child processes (proxies, redis-server) to listen on.
//!
//! Included by `#[path]` from the store tests too, so it depends on nothing.

/// A port that was free a moment ago, for a child process to listen on.
///
/// Chosen below the kernel's ephemeral range (32768–60999 by default): a port
/// from that range, released and handed to a child, can meanwhile become the
/// local end of any outgoing connection (to Redis, an origin, a browser) and
/// the child then fails with "address in use". A per-process counter from a
/// random start keeps one test binary from handing out a port twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let seed = std::process::id().wrapping_mul(2_654_435_761)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
        let _ = NEXT.compare_exchange(u32::MAX, seed % SPAN, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}
