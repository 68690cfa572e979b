//! Per listener thread: spare buffers and idle origin connections, each
//! reused only while open and quiet, and their count for the metrics.

use super::*;

/// Spare buffers kept per thread, and the largest capacity kept.
pub(super) const MAX_SPARE_BUFFERS: usize = 64;
pub(super) const MAX_SPARE_CAPACITY: usize = 64 * 1024;

thread_local! {
    /// Emptied buffers for the next request on this thread: a request
    /// takes a few and gives them back, so steady traffic allocates none.
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn spare_buffer() -> Vec<u8> {
    SPARE
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_default()
}

pub(super) fn give_back(mut buffer: Vec<u8>) {
    if buffer.capacity() == 0 || buffer.capacity() > MAX_SPARE_CAPACITY {
        return;
    }
    buffer.clear();
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < MAX_SPARE_BUFFERS {
            spare.push(buffer);
        }
    });
}

/// `buf`, or a spare buffer in its place if it has none yet.
pub(super) fn spare_if_none(buf: &mut Vec<u8>) -> &mut Vec<u8> {
    if buf.capacity() == 0 {
        *buf = spare_buffer();
    }
    buf
}

thread_local! {
    /// Idle keep-alive origin connections of this thread, newest last. A
    /// connection belongs to the runtime of the thread that opened it, so
    /// it is never handed to another thread.
    pub(super) static IDLE: RefCell<HashMap<String, Vec<(TcpStream, Instant)>>> = RefCell::new(HashMap::new());
}

/// The newest idle connection to `origin` that is still open and quiet
/// (checked on the one taken, at the moment it is taken).
pub(super) fn idle_take(origin: &str, idle_timeout: Duration) -> Option<TcpStream> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(origin)?;
        let now = Instant::now();
        while let Some((stream, since)) = list.pop() {
            if now.saturating_duration_since(since) < idle_timeout
                && is_open_and_quiet(stream.as_raw_fd())
            {
                return Some(stream);
            }
        }
        None
    })
}

/// Closes this thread's idle origin connections that expired or that the
/// origin closed (or wrote to) while they waited: without this, a site
/// whose traffic stops would keep them, half-closed, until the thread ends.
pub(super) fn close_stale_idle(now: Instant, idle_timeout: Duration) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        for list in idle.values_mut() {
            keep_reusable(list, now, idle_timeout);
        }
        idle.retain(|_, list| !list.is_empty());
    });
}

/// Drops the idle connections that are older than the idle timeout or not
/// open and quiet: a byte waiting (data the origin sent unasked, such as a
/// body after a HEAD answer) or an end of stream retires a connection. The
/// check is a real non-blocking read, not the event loop's readiness flag,
/// which lags behind bytes already in the socket's buffer.
pub(super) fn keep_reusable(
    list: &mut Vec<(TcpStream, Instant)>,
    now: Instant,
    idle_timeout: Duration,
) {
    list.retain(|(stream, since)| {
        now.saturating_duration_since(*since) < idle_timeout
            && is_open_and_quiet(stream.as_raw_fd())
    });
}

/// Keeps a connection whose last read emptied it and whose answer was read
/// to its end.
pub(super) fn idle_put(origin: &str, stream: TcpStream, max_idle: usize) {
    // The read readiness left from the answer is cleared without a system
    // call, so the next read waits for the next answer instead of first
    // making a `recv` that fails with `EAGAIN`. Whether the connection can
    // be reused at all is `idle_take`'s check, by a real read.
    let _ = stream.try_io(Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = match idle.get_mut(origin) {
            Some(list) => list,
            None => idle.entry(origin.to_string()).or_default(),
        };
        if list.len() >= max_idle {
            // The oldest goes: it is the likeliest to be closed by the origin.
            list.remove(0);
        }
        list.push((stream, Instant::now()));
    });
}

thread_local! {
    /// What this thread last added to the idle-connection gauge.
    static IDLE_REPORTED: Cell<i64> = const { Cell::new(0) };
}

/// Brings `prerender_origin_idle_connections` up to date with this
/// thread's idle origin connections (each thread adds its change).
pub(super) fn report_idle(metrics: &Metrics) {
    let now = IDLE.with(|idle| idle.borrow().values().map(Vec::len).sum::<usize>());
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let before = IDLE_REPORTED.with(|reported| reported.replace(now));
    metrics.add_origin_idle_connections(now - before);
}
