//! The accept loop shared by the public and the admin listener: HTTP/1.1 and
//! h2c on one port, bounded connections, bounded request heads, a header-read
//! timeout against slowloris, and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body every handler returns: a full buffer or a stream.
pub type Body = BoxBody<Bytes, BoxError>;

/// Largest request head hyper buffers: the 8 KiB request-target limit plus the
/// 32 KiB header-block limit of SPEC §2 plus room for the request line. A head
/// past this gets hyper's own 431; the handler enforces the exact limits.
const MAX_HEAD_BYTES: usize = 8 * 1024 + 32 * 1024 + 1024;
/// Header count bound (hyper's default is 100; browsers send ~20).
const MAX_HEADERS: usize = 128;

#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// Serves `handler` on `listener` until `stop` flips to true, then waits up to
/// `grace` for in-flight connections.
pub async fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    limits: ListenerLimits,
    handler: H,
    stop: watch::Receiver<bool>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    serve_with_permits(name, listener, permits, limits, handler, stop, grace).await
}

/// Like [`serve`], on `threads` threads of their own, each with a
/// single-threaded runtime accepting from the same socket: a connection and
/// everything its requests do that `handler` does not hand elsewhere stay on
/// one thread, with no wake-ups across threads. `max_connections` bounds
/// all threads together. Ends when every thread has finished.
pub async fn serve_on_threads<H, F>(
    name: &'static str,
    listener: TcpListener,
    threads: usize,
    limits: ListenerLimits,
    handler: H,
    stop: watch::Receiver<bool>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let socket = match listener.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(listener = name, error = %e, "cannot hand the listener to its threads");
            return;
        }
    };
    let mut finished = Vec::new();
    for index in 0..threads.max(1) {
        let socket = match socket.try_clone() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(listener = name, error = %e, "cannot share the listener");
                break;
            }
        };
        let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
        let (permits, limits, handler, stop) = (
            permits.clone(),
            limits.clone(),
            handler.clone(),
            stop.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(listener = name, error = %e, "cannot start a listener thread");
                        return;
                    }
                };
                runtime.block_on(async move {
                    match TcpListener::from_std(socket) {
                        Ok(listener) => {
                            serve_with_permits(
                                name, listener, permits, limits, handler, stop, grace,
                            )
                            .await
                        }
                        Err(e) => {
                            tracing::error!(listener = name, error = %e, "cannot register the listener")
                        }
                    }
                });
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => finished.push(finished_rx),
            Err(e) => {
                tracing::error!(listener = name, error = %e, "cannot spawn a listener thread")
            }
        }
    }
    for thread in finished {
        let _ = thread.await;
    }
}

async fn serve_with_permits<H, F>(
    name: &'static str,
    listener: TcpListener,
    permits: Arc<Semaphore>,
    limits: ListenerLimits,
    handler: H,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();

    loop {
        let permit = tokio::select! {
            _ = stop.changed() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let first_request = Arc::new(AtomicBool::new(false));
        let seen = first_request.clone();
        let service = hyper::service::service_fn(move |req| {
            seen.store(true, Ordering::Relaxed);
            let fut = handler(req, peer);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let header_read_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            // hyper's header timeout starts only once the HTTP/1.1 parser
            // runs, which the HTTP/1.1-or-h2c detection reaches only after
            // the client's first bytes: a connection that never sends one
            // (or stops inside the h2c preface) would otherwise hold one of
            // `max_connections` for ever.
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = tokio::time::sleep(header_read_timeout) => {
                    if first_request.load(Ordering::Relaxed) {
                        conn.await
                    } else {
                        tracing::debug!(listener = name, %peer, "no request within the header timeout; closing");
                        Ok(())
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(listener = name, "all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!(listener = name, "shutdown deadline passed with connections open"),
    }
}
