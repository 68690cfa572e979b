//! Keep-alive HTTP/1.1 connections to origins for human passthrough, each
//! driven by the task of the request that uses it.
//!
//! A pooled client that runs every connection as a task of its own makes a
//! passthrough request cross tasks (and, on a multi-threaded runtime, often
//! threads) for the request, the response head and every body chunk; on a
//! busy machine those wake-ups cost more than the HTTP work itself. Here the
//! request's task polls the connection while it waits for the answer and
//! while the body streams to the client, so one task serves the whole
//! exchange, and an idle connection is just a value in a list.
//!
//! A connection goes back to the pool only once its response body has been
//! read to the end; a body dropped early (client gone) closes it. An idle
//! connection is not polled, so one the origin closed is noticed when it is
//! next taken out (it is then dropped and another one used).

use std::collections::HashMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::error::Error as StdError;
use std::os::fd::RawFd;
use tokio::time::Instant;

use crate::upstream::{ConnectError, OriginStream, PoolLimits};

/// An origin connection carrying requests whose bodies are `B` (the
/// client's own body, streamed on).
type Connection<B> = http1::Connection<TokioIo<OriginStream>, B>;
type Sender<B> = http1::SendRequest<B>;

/// What a request body must be to be sent on a pooled connection.
pub trait RequestBody:
    HttpBody<Data = Bytes, Error = Self::Failure> + Send + Unpin + 'static
{
    type Failure: Into<Box<dyn StdError + Send + Sync>>;
}

impl<B, E> RequestBody for B
where
    B: HttpBody<Data = Bytes, Error = E> + Send + Unpin + 'static,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    type Failure = E;
}

/// Why no connection to the origin could be used.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect to {origin}: {detail}")]
    Connect { origin: String, detail: String },
    #[error(transparent)]
    Upstream(#[from] ConnectError),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// One connection: the handle requests are sent through and the
/// connection state, driven by whoever waits on it. Boxed wherever it goes,
/// so handing it between the pool, a request and a body moves a pointer.
struct Conn<B: RequestBody> {
    sender: Sender<B>,
    conn: Connection<B>,
    /// The socket `conn` owns, for the check before reuse.
    fd: RawFd,
}

struct Idle<B: RequestBody> {
    conn: Box<Conn<B>>,
    since: Instant,
}

struct PoolInner<B: RequestBody> {
    limits: PoolLimits,
    /// Idle connections by origin URL, oldest first.
    idle: Mutex<HashMap<Arc<str>, Vec<Idle<B>>>>,
}

/// Keep-alive connections to origins (see the module documentation), for
/// requests whose bodies are `B`.
pub struct OriginPool<B: RequestBody = Incoming> {
    inner: Arc<PoolInner<B>>,
}

impl<B: RequestBody> Clone for OriginPool<B> {
    fn clone(&self) -> Self {
        OriginPool {
            inner: self.inner.clone(),
        }
    }
}

impl<B: RequestBody> OriginPool<B> {
    pub fn new(limits: PoolLimits) -> Self {
        OriginPool {
            inner: Arc::new(PoolInner {
                limits,
                idle: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sends `req` (origin-form URI, Host set) to `origin` and returns the
    /// response head; its body keeps driving the connection. A request that
    /// a reused connection could not take (the origin had closed it) is
    /// sent again on a new connection.
    pub async fn send(
        &self,
        origin: &url::Url,
        mut req: Request<B>,
    ) -> Result<Response<OriginBody<B>>, PoolError> {
        let (key, reused) = self.take_idle(origin.as_str());
        if let Some(conn) = reused {
            match exchange(conn, req).await {
                Ok((resp, conn)) => return Ok(self.wrap(resp, key, conn)),
                Err(Retry::Again(r)) => req = *r,
                Err(Retry::Failed(e)) => return Err(e.into()),
            }
        }
        let conn = self.connect(origin).await?;
        match exchange(conn, req).await {
            Ok((resp, conn)) => Ok(self.wrap(resp, key, conn)),
            Err(Retry::Again(_)) => Err(PoolError::Connect {
                origin: origin.as_str().to_string(),
                detail: "a new connection refused the request".into(),
            }),
            Err(Retry::Failed(e)) => Err(e.into()),
        }
    }

    /// Idle connections in the pool for `origin` (for tests and metrics).
    pub fn idle_count(&self, origin: &url::Url) -> usize {
        self.inner
            .idle
            .lock()
            .get(origin.as_str())
            .map_or(0, Vec::len)
    }

    fn wrap(
        &self,
        resp: Response<Incoming>,
        key: Arc<str>,
        conn: Option<Box<Conn<B>>>,
    ) -> Response<OriginBody<B>> {
        let (parts, body) = resp.into_parts();
        let mut body = OriginBody {
            body,
            conn,
            pool: Arc::downgrade(&self.inner),
            key,
        };
        // No body to read (HEAD, 204, 304, Content-Length: 0): the
        // connection is free now, whether or not the body is ever polled.
        if body.body.is_end_stream() {
            body.release();
        }
        Response::from_parts(parts, body)
    }

    /// The pool's key for `origin` and its most recently used idle
    /// connection that is still open and ready for a request.
    fn take_idle(&self, origin: &str) -> (Arc<str>, Option<Box<Conn<B>>>) {
        let mut idle = self.inner.idle.lock();
        let Some(key) = idle.get_key_value(origin).map(|(k, _)| k.clone()) else {
            return (Arc::from(origin), None);
        };
        let Some(list) = idle.get_mut(origin) else {
            return (key, None);
        };
        let now = Instant::now();
        let timeout = self.inner.limits.idle_timeout;
        let expired = list
            .iter()
            .take_while(|c| now.duration_since(c.since) >= timeout)
            .count();
        list.drain(..expired);
        while let Some(mut candidate) = list.pop() {
            if is_usable(&mut candidate.conn) {
                return (key, Some(candidate.conn));
            }
        }
        (key, None)
    }

    async fn connect(&self, origin: &url::Url) -> Result<Box<Conn<B>>, PoolError> {
        let stream = crate::upstream::connect(origin, self.inner.limits.connect_timeout).await?;
        let fd = stream.raw_fd();
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        Ok(Box::new(Conn { sender, conn, fd }))
    }
}

impl<B: RequestBody> PoolInner<B> {
    fn put(&self, key: Arc<str>, conn: Box<Conn<B>>) {
        let mut idle = self.idle.lock();
        let list = idle.entry(key).or_default();
        if list.len() >= self.limits.max_idle_per_origin {
            // The oldest goes: it is the likeliest to be closed by the origin.
            list.remove(0);
        }
        list.push(Idle {
            conn,
            since: Instant::now(),
        });
    }
}

/// Polls an idle connection once: it is usable when it has not ended (the
/// origin closed it, or sent something unasked, which hyper may already
/// hold in its buffer), takes a request, and its socket is open with no
/// unread byte.
fn is_usable<B: RequestBody>(conn: &mut Conn<B>) -> bool {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    if Pin::new(&mut conn.conn).poll(&mut cx).is_ready() {
        return false;
    }
    matches!(conn.sender.poll_ready(&mut cx), Poll::Ready(Ok(()))) && is_open_and_quiet(conn.fd)
}

/// Whether an idle socket is still open and holds no unread byte, by one
/// non-blocking peek (as pingora's `test_reusable_stream` does). Readiness
/// flags are no proof: bytes can sit in the socket's buffer before the
/// event loop has reported them. Any byte (an answer nobody asked for, the
/// rest of a body past its length) or an end of stream retires the
/// connection: the next answer read from it could be someone else's.
pub fn is_open_and_quiet(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: the caller owns the open socket `fd` for the duration of the
    // call, and `byte` is one writable byte.
    let read = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    read < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

enum Retry<B> {
    /// The connection did not take the request; it can go elsewhere.
    Again(Box<Request<B>>),
    Failed(hyper::Error),
}

/// Sends `req` on a connection and drives the connection in this task until
/// the response head is in. The connection is returned unless it ended.
async fn exchange<B: RequestBody>(
    mut conn: Box<Conn<B>>,
    req: Request<B>,
) -> Result<(Response<Incoming>, Option<Box<Conn<B>>>), Retry<B>> {
    let mut answer = pin!(conn.sender.try_send_request(req));
    let mut ended = false;
    let result = std::future::poll_fn(|cx| {
        if !ended && Pin::new(&mut conn.conn).poll(cx).is_ready() {
            // Closed or failed: the pending answer fails too (below).
            ended = true;
        }
        answer.as_mut().poll(cx)
    })
    .await;
    match result {
        Ok(resp) => Ok((resp, (!ended).then_some(conn))),
        Err(mut e) => match e.take_message() {
            Some(req) => Err(Retry::Again(Box::new(req))),
            None => Err(Retry::Failed(e.into_error())),
        },
    }
}

/// A response body from an origin. Reading it drives its connection; the
/// connection returns to the pool when the body has been read to the end.
pub struct OriginBody<B: RequestBody = Incoming> {
    body: Incoming,
    conn: Option<Box<Conn<B>>>,
    pool: Weak<PoolInner<B>>,
    key: Arc<str>,
}

impl<B: RequestBody> OriginBody<B> {
    fn release(&mut self) {
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.upgrade()) {
            pool.put(self.key.clone(), conn);
        }
    }
}

impl<B: RequestBody> HttpBody for OriginBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(conn) = this.conn.as_mut() {
            if Pin::new(&mut conn.conn).poll(cx).is_ready() {
                // Ended (closed after this response, or failed): what it read
                // is still in the body; it is not reused.
                this.conn = None;
            }
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B: RequestBody> Drop for OriginBody<B> {
    fn drop(&mut self) {
        // Read to the end without a last poll (the server stops once
        // `is_end_stream` says so): still reusable. Otherwise the unread rest
        // is on the wire and the connection closes with this body.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, Full};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn limits() -> PoolLimits {
        PoolLimits {
            max_idle_per_origin: 4,
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// A local hyper origin: `/small` is five bytes, `/big` a megabyte in
    /// 64 KiB chunks, `/close` asks to close the connection, `/empty` is
    /// 204. Returns its URL and the number of connections it accepted.
    /// An origin on raw sockets: connection `n` (from 0) answers each
    /// request head it reads with `answer(n)`; with `once` it closes after
    /// the first answer without saying so. Also counts connections.
    async fn raw_origin(
        answer: fn(usize) -> &'static [u8],
        once: bool,
    ) -> (url::Url, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        let mut head = Vec::new();
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(read) => head.extend_from_slice(&buf[..read]),
                            }
                        }
                        if stream.write_all(answer(n)).await.is_err() {
                            return;
                        }
                        if once {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    async fn origin() -> (url::Url, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let mut resp = match req.uri().path() {
                            "/big" => {
                                let chunks = (0..16).map(|_| {
                                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(
                                        vec![b'x'; 64 * 1024],
                                    )))
                                });
                                let body =
                                    http_body_util::StreamBody::new(futures::stream::iter(chunks));
                                let mut r = Response::new(body.boxed());
                                r.headers_mut()
                                    .insert(hyper::header::CONTENT_LENGTH, (16 * 64 * 1024).into());
                                r
                            }
                            "/empty" => {
                                let mut r = Response::new(
                                    Empty::<Bytes>::new().map_err(|e| match e {}).boxed(),
                                );
                                *r.status_mut() = hyper::StatusCode::NO_CONTENT;
                                r
                            }
                            _ => Response::new(
                                Full::new(Bytes::from_static(b"hello"))
                                    .map_err(|e| match e {})
                                    .boxed(),
                            ),
                        };
                        if req.uri().path() == "/close" {
                            resp.headers_mut().insert(
                                hyper::header::CONNECTION,
                                hyper::header::HeaderValue::from_static("close"),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (
            url::Url::parse(&format!("http://{addr}")).unwrap(),
            accepted,
        )
    }

    fn get(path: &str) -> Request<Empty<Bytes>> {
        Request::builder()
            .uri(path)
            .header(hyper::header::HOST, "www.example.test")
            .body(Empty::new())
            .unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_was_read() {
        let (url, accepted) = origin().await;
        let pool = OriginPool::new(limits());
        for _ in 0..3 {
            let resp = pool.send(&url, get("/small")).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(&url), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_get_their_own_connections_and_all_come_back() {
        let (url, accepted) = origin().await;
        let pool = OriginPool::new(limits());
        let answers =
            futures::future::join_all((0..3).map(|_| pool.send(&url, get("/small")))).await;
        for resp in answers {
            let body = resp
                .unwrap()
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(&body[..], b"hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(pool.idle_count(&url), 3);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_the_connection() {
        let (url, accepted) = origin().await;
        let pool = OriginPool::new(limits());
        let mut body = pool.send(&url, get("/big")).await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        drop(body);
        assert_eq!(pool.idle_count(&url), 0);
        // The next request needs (and gets) a connection of its own.
        let resp = pool.send(&url, get("/small")).await.unwrap();
        resp.into_body().collect().await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // A big body read to the end frees its connection too.
        let resp = pool.send(&url, get("/big")).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 16 * 64 * 1024);
        assert_eq!(pool.idle_count(&url), 1);
    }

    #[tokio::test]
    async fn answers_without_a_body_free_the_connection_unread() {
        let (url, accepted) = origin().await;
        let pool = OriginPool::new(limits());
        let resp = pool.send(&url, get("/empty")).await.unwrap();
        assert_eq!(resp.status(), hyper::StatusCode::NO_CONTENT);
        assert_eq!(pool.idle_count(&url), 1);
        drop(resp);
        let resp = pool.send(&url, get("/small")).await.unwrap();
        resp.into_body().collect().await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_origin_asked_to_close_is_not_kept() {
        let (url, accepted) = origin().await;
        let pool = OriginPool::new(limits());
        for _ in 0..2 {
            let resp = pool.send(&url, get("/close")).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"hello");
            assert_eq!(pool.idle_count(&url), 0);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_the_origin_dropped_is_replaced() {
        // An origin that answers one request per connection and then closes
        // it without saying so, as an origin's idle timeout does.
        let (url, accepted) =
            raw_origin(|_| b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", true).await;
        let pool = OriginPool::new(limits());
        for _ in 0..3 {
            let resp = pool.send(&url, get("/")).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
            // Let the origin close the connection now idle in the pool.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn idle_connections_are_bounded_and_expire() {
        let (url, accepted) = origin().await;
        let pool = OriginPool::new(PoolLimits {
            max_idle_per_origin: 2,
            idle_timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(5),
        });
        let answers =
            futures::future::join_all((0..4).map(|_| pool.send(&url, get("/small")))).await;
        for resp in answers {
            resp.unwrap().into_body().collect().await.unwrap();
        }
        assert_eq!(pool.idle_count(&url), 2);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let resp = pool.send(&url, get("/small")).await.unwrap();
        resp.into_body().collect().await.unwrap();
        // Both idle ones had expired: a fifth connection was opened.
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
        assert_eq!(pool.idle_count(&url), 1);
    }

    #[tokio::test]
    async fn only_an_open_socket_with_nothing_unread_is_quiet() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conn = TcpStream::connect(addr).await.unwrap();
        let (mut peer, _) = listener.accept().await.unwrap();
        assert!(is_open_and_quiet(conn.as_raw_fd()));
        peer.write_all(b"x").await.unwrap();
        // No readiness involved: the peek sees the byte once it is there.
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_open_and_quiet(conn.as_raw_fd()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!is_open_and_quiet(conn.as_raw_fd()));
        let closed = TcpStream::connect(addr).await.unwrap();
        let (closed_peer, _) = listener.accept().await.unwrap();
        drop(closed_peer);
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_open_and_quiet(closed.as_raw_fd()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!is_open_and_quiet(closed.as_raw_fd()));
    }

    #[tokio::test]
    async fn an_answer_with_stray_bytes_after_it_is_not_reused() {
        // A HEAD-like answer with an unasked answer right behind it, then a
        // plain one on every later connection.
        let (url, accepted) = raw_origin(
            |connection| match connection {
                0 => b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nSTRAY!",
                _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            },
            false,
        )
        .await;
        let pool = OriginPool::new(limits());
        let resp = pool.send(&url, get("/")).await.unwrap();
        assert_eq!(resp.status(), hyper::StatusCode::NO_CONTENT);
        drop(resp);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let resp = pool.send(&url, get("/")).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_origin_that_is_down_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let pool = OriginPool::new(limits());
        assert!(matches!(
            pool.send(&url, get("/")).await,
            Err(PoolError::Upstream(ConnectError::Connect { .. }))
        ));
    }
}
