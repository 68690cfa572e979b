//! The accept loops of the public and the admin listener: HTTP/1.1 and h2c
//! on one port, bounded connections, bounded request heads, a header-read
//! timeout against slowloris, and graceful shutdown.
//!
//! The admin listener serves every connection with hyper on the shared
//! runtime. The public listener hands each connection to one of its own
//! threads (the one with the fewest open connections), each running a
//! single-threaded runtime: a connection, and every passthrough request on
//! it, stays on one thread with no wake-ups across threads. There a
//! [`Front`] sees the connection first (the raw passthrough relay) and may
//! hand it to hyper, with the bytes it already read, for anything else.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::config::ThreadScheduling;

pub mod proxy_protocol;
pub mod tls;

use crate::http::Body;

/// Largest request head hyper buffers: the 8 KiB request-target limit plus the
/// 32 KiB header-block limit of SPEC §2 plus room for the request line. A head
/// past this gets hyper's own 431; the handler enforces the exact limits.
pub const MAX_HEAD_BYTES: usize = 8 * 1024 + 32 * 1024 + 1024;
/// Header count bound (hyper's default is 100; browsers send ~20).
pub const MAX_HEADERS: usize = 128;

#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// A connection and the bytes already read from it, which are read again
/// first: how a [`Front`] hands a connection to hyper mid-stream.
pub struct Rewound {
    prefix: Vec<u8>,
    read: usize,
    stream: TcpStream,
}

impl Rewound {
    pub fn new(prefix: Vec<u8>, stream: TcpStream) -> Self {
        Rewound {
            prefix,
            read: 0,
            stream,
        }
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read < self.prefix.len() {
            let rest = &self.prefix[self.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.read += n;
            if self.read == self.prefix.len() {
                self.prefix = Vec::new();
                self.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What sees a public connection before hyper does.
pub trait Front: Send + Sync + 'static {
    /// Serves requests on `stream` until it closes (`None`) or a request it
    /// does not take arrives: then the connection, with every byte read
    /// from it so far, goes to hyper. Ends between requests once `stop`
    /// turns true.
    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        header_read_timeout: Duration,
        stop: watch::Receiver<bool>,
    ) -> impl Future<Output = Option<Rewound>> + Send;

    /// Called on every listener thread every [`HOUSEKEEPING_INTERVAL`], for
    /// state the front keeps per thread.
    fn housekeeping(&self) {}
}

/// How often [`Front::housekeeping`] runs on each listener thread.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(10);

fn hyper_builder(limits: &ListenerLimits) -> auto::Builder<TokioExecutor> {
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
    builder
}

/// Who may start a connection with a PROXY protocol header.
pub type ProxyProtocolPeers = Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>;

/// What happens to a public connection before HTTP: a PROXY protocol
/// header from the peers it is expected from, then TLS.
#[derive(Clone, Default)]
pub struct ConnectionSetup {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// With `proxy_protocol`: whether a peer must start with a PROXY
    /// header (the trusted proxies).
    pub proxy_protocol: Option<ProxyProtocolPeers>,
}

/// A request extension: the request came over TLS (the public listener
/// with `tls_cert`), so the client's scheme is `https`.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// Serves one connection with hyper until it ends; `tls` marks its
/// requests with [`OverTls`].
#[allow(clippy::too_many_arguments)]
async fn serve_hyper<I, H, F>(
    name: &'static str,
    io: I,
    peer: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    handler: H,
    header_read_timeout: Duration,
    graceful: Watcher,
    tls: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let first_request = Arc::new(AtomicBool::new(false));
    let seen = first_request.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        if tls {
            req.extensions_mut().insert(OverTls);
        }
        let fut = handler(req, peer);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let mut conn = std::pin::pin!(graceful.watch(conn));
    // hyper's header timeout starts only once the HTTP/1.1 parser runs,
    // which the HTTP/1.1-or-h2c detection reaches only after the client's
    // first bytes: a connection that never sends one (or stops inside the
    // h2c preface) would otherwise hold one of `max_connections` for ever.
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
}

/// Accepts the next connection once a permit is free; `None` once `stop`
/// turns true.
async fn accept(
    name: &'static str,
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let permit = tokio::select! {
        _ = stop.changed() => return None,
        permit = permits.clone().acquire_owned() => permit.ok()?,
    };
    loop {
        tokio::select! {
            _ = stop.changed() => return None,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer, permit));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Waits for the connections of one accept loop to end after a stop, up
/// to `grace`.
async fn drain(
    name: &'static str,
    graceful: GracefulShutdown,
    mut connections: JoinSet<()>,
    grace: Duration,
) {
    let all_closed = async {
        graceful.shutdown().await;
        while connections.join_next().await.is_some() {}
    };
    tokio::select! {
        _ = all_closed => tracing::info!(listener = name, "all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!(listener = name, "shutdown deadline passed with connections open"),
    }
}

/// Serves `handler` on `listener` until `stop` flips to true, then waits up to
/// `grace` for in-flight connections.
pub async fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    limits: ListenerLimits,
    handler: H,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = Arc::new(hyper_builder(&limits));
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    while let Some((stream, peer, permit)) = accept(name, &listener, &permits, &mut stop).await {
        while connections.try_join_next().is_some() {}
        let (builder, handler, watcher) = (builder.clone(), handler.clone(), graceful.watcher());
        let timeout = limits.header_read_timeout;
        connections.spawn(async move {
            serve_hyper(
                name, stream, peer, &builder, handler, timeout, watcher, false,
            )
            .await;
            drop(permit);
        });
    }
    drop(listener);
    drain(name, graceful, connections, grace).await;
}

/// A connection accepted for a listener thread.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
}

/// How many threads serve the public listener, and how the kernel
/// schedules them.
#[derive(Debug, Clone, Copy)]
pub struct ThreadPlan {
    pub count: usize,
    pub scheduling: ThreadScheduling,
}

/// The accept loop's handle on one listener thread.
struct ListenerThread {
    connections: mpsc::UnboundedSender<Accepted>,
    /// Connections open on the thread, for picking the least busy one.
    open: Arc<AtomicUsize>,
    finished: tokio::sync::oneshot::Receiver<()>,
}

/// Serves the public listener on threads of its own (see the
/// module documentation): each connection goes to `front` first and to
/// hyper with `handler` when the front hands it over. `max_connections`
/// bounds all threads together. Ends when every thread has drained.
#[allow(clippy::too_many_arguments)]
pub async fn serve_on_threads<T, H, F>(
    name: &'static str,
    listener: TcpListener,
    threads: ThreadPlan,
    limits: ListenerLimits,
    front: Arc<T>,
    handler: H,
    setup: ConnectionSetup,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) where
    T: Front,
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut workers = Vec::new();
    for index in 0..threads.count.max(1) {
        let scheduling = threads.scheduling;
        match spawn_thread(
            name, index, scheduling, &limits, &front, &handler, &setup, &stop, grace,
        ) {
            Ok(worker) => workers.push(worker),
            Err(e) => {
                tracing::error!(listener = name, error = %e, "cannot start a listener thread")
            }
        }
    }
    if workers.is_empty() {
        return;
    }
    while let Some((stream, peer, permit)) = accept(name, &listener, &permits, &mut stop).await {
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(listener = name, %peer, error = %e, "cannot hand a connection over");
                continue;
            }
        };
        let Some(worker) = workers
            .iter()
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
        else {
            break;
        };
        worker.open.fetch_add(1, Ordering::Relaxed);
        let accepted = Accepted {
            stream,
            peer,
            permit,
        };
        if worker.connections.send(accepted).is_err() {
            worker.open.fetch_sub(1, Ordering::Relaxed);
            tracing::error!(listener = name, "a listener thread has ended");
        }
    }
    drop(listener);
    for worker in workers {
        drop(worker.connections);
        let _ = worker.finished.await;
    }
}

/// Puts the calling thread under `scheduling`. Where the kernel refuses
/// (a seccomp profile, say) the thread keeps the normal policy.
fn apply_scheduling(listener: &str, scheduling: ThreadScheduling) {
    if scheduling != ThreadScheduling::Batch {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread and `param` outlives the call.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
            let error = io::Error::last_os_error();
            tracing::warn!(listener, %error, "cannot use batch scheduling; keeping the normal policy");
        }
    }
    #[cfg(not(target_os = "linux"))]
    tracing::debug!(listener, "batch scheduling exists only on Linux");
}

#[allow(clippy::too_many_arguments)]
fn spawn_thread<T, H, F>(
    name: &'static str,
    index: usize,
    scheduling: ThreadScheduling,
    limits: &ListenerLimits,
    front: &Arc<T>,
    handler: &H,
    setup: &ConnectionSetup,
    stop: &watch::Receiver<bool>,
    grace: Duration,
) -> io::Result<ListenerThread>
where
    T: Front,
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let (connections, mut incoming) = mpsc::unbounded_channel::<Accepted>();
    let (done, finished) = tokio::sync::oneshot::channel();
    let open = Arc::new(AtomicUsize::new(0));
    let thread_open = open.clone();
    let (limits, front, handler, stop_all) =
        (limits.clone(), front.clone(), handler.clone(), stop.clone());
    let tls = setup.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let proxy_protocol = setup.proxy_protocol.clone();
    std::thread::Builder::new()
        .name(format!("{name}-{index}"))
        .spawn(move || {
            apply_scheduling(name, scheduling);
            runtime.block_on(async move {
                // The stop signal, relayed to a channel of this thread's
                // own: every idle connection waits on it, and waiting
                // registers with the channel each time.
                let (local_stop, stop) = watch::channel(false);
                let mut global_stop = stop_all;
                tokio::spawn(async move {
                    while !*global_stop.borrow_and_update() {
                        if global_stop.changed().await.is_err() {
                            break;
                        }
                    }
                    let _ = local_stop.send(true);
                });
                let housekeeper = front.clone();
                tokio::spawn(async move {
                    let mut ticks = tokio::time::interval(HOUSEKEEPING_INTERVAL);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        ticks.tick().await;
                        housekeeper.housekeeping();
                    }
                });
                let builder = Arc::new(hyper_builder(&limits));
                let graceful = GracefulShutdown::new();
                let mut tasks = JoinSet::new();
                while let Some(Accepted { stream, peer, permit }) = incoming.recv().await {
                    while tasks.try_join_next().is_some() {}
                    let stream = match TcpStream::from_std(stream) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(listener = name, %peer, error = %e, "cannot take a connection");
                            thread_open.fetch_sub(1, Ordering::Relaxed);
                            continue;
                        }
                    };
                    let (front, handler, builder, watcher, stop, open, tls, proxy_protocol) = (
                        front.clone(),
                        handler.clone(),
                        builder.clone(),
                        graceful.watcher(),
                        stop.clone(),
                        thread_open.clone(),
                        tls.clone(),
                        proxy_protocol.clone(),
                    );
                    let timeout = limits.header_read_timeout;
                    let mut stream = stream;
                    tasks.spawn(async move {
                        // A PROXY header from the peers that send one: its
                        // source is the client from here on.
                        let peer = match proxy_protocol.filter(|expects| expects(peer.ip())) {
                            None => Some(peer),
                            Some(_) => match proxy_protocol::read_header(&mut stream, timeout).await {
                                Ok(Some(source)) => Some(source),
                                Ok(None) => Some(peer),
                                Err(reason) => {
                                    tracing::warn!(listener = name, %peer, %reason, "connection from a trusted proxy without a valid PROXY header; closing");
                                    None
                                }
                            },
                        };
                        match (peer, tls) {
                            (None, _) => {}
                            (Some(peer), None) => {
                                if let Some(rest) = front.serve(stream, peer, timeout, stop).await {
                                    serve_hyper(
                                        name, rest, peer, &builder, handler, timeout, watcher,
                                        false,
                                    )
                                    .await;
                                }
                            }
                            // TLS: the handshake within the header-read
                            // timeout, then hyper (the relay reads plain
                            // sockets only).
                            (Some(peer), Some(acceptor)) => {
                                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                                    Ok(Ok(tls_stream)) => {
                                        serve_hyper(
                                            name, tls_stream, peer, &builder, handler, timeout,
                                            watcher, true,
                                        )
                                        .await
                                    }
                                    Ok(Err(e)) => {
                                        tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed")
                                    }
                                    Err(_) => {
                                        tracing::debug!(listener = name, %peer, "no TLS handshake within the header timeout; closing")
                                    }
                                }
                            }
                        }
                        open.fetch_sub(1, Ordering::Relaxed);
                        drop(permit);
                    });
                }
                drain(name, graceful, tasks, grace).await;
            });
            let _ = done.send(());
        })?;
    Ok(ListenerThread {
        connections,
        open,
        finished,
    })
}
