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
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// An origin connection that carries passthrough requests.
type Connection = http1::Connection<TokioIo<TcpStream>, Incoming>;
type Sender = http1::SendRequest<Incoming>;

/// Why no connection to the origin could be used.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect to {origin}: {detail}")]
    Connect { origin: String, detail: String },
    #[error("connect to {0} timed out")]
    ConnectTimeout(String),
    #[error("origin URL has no host: {0}")]
    NoHost(String),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// Bounds of the pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Idle connections kept per origin; more are closed.
    pub max_idle_per_origin: usize,
    /// An idle connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
}

/// One connection: the handle requests are sent through and the
/// connection state, driven by whoever waits on it. Boxed wherever it goes,
/// so handing it between the pool, a request and a body moves a pointer.
struct Conn {
    sender: Sender,
    conn: Connection,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

struct PoolInner {
    limits: PoolLimits,
    /// Idle connections by origin URL, oldest first.
    idle: Mutex<HashMap<Arc<str>, Vec<Idle>>>,
}

/// Keep-alive connections to origins (see the module documentation).
#[derive(Clone)]
pub struct OriginPool {
    inner: Arc<PoolInner>,
}

impl OriginPool {
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
        mut req: Request<Incoming>,
    ) -> Result<Response<OriginBody>, PoolError> {
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
        conn: Option<Box<Conn>>,
    ) -> Response<OriginBody> {
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
    fn take_idle(&self, origin: &str) -> (Arc<str>, Option<Box<Conn>>) {
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

    async fn connect(&self, origin: &url::Url) -> Result<Box<Conn>, PoolError> {
        let port = origin.port_or_known_default().unwrap_or(80);
        let connect = async {
            match origin.host() {
                Some(url::Host::Domain(name)) => TcpStream::connect((name, port)).await,
                Some(url::Host::Ipv4(ip)) => TcpStream::connect((ip, port)).await,
                Some(url::Host::Ipv6(ip)) => TcpStream::connect((ip, port)).await,
                None => Err(std::io::Error::other("no host")),
            }
        };
        if origin.host().is_none() {
            return Err(PoolError::NoHost(origin.to_string()));
        }
        let stream = tokio::time::timeout(self.inner.limits.connect_timeout, connect)
            .await
            .map_err(|_| PoolError::ConnectTimeout(origin.as_str().to_string()))?
            .map_err(|e| PoolError::Connect {
                origin: origin.as_str().to_string(),
                detail: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        Ok(Box::new(Conn { sender, conn }))
    }
}

impl PoolInner {
    fn put(&self, key: Arc<str>, conn: Box<Conn>) {
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
/// origin closed it, or sent something unasked) and takes a request.
fn is_usable(conn: &mut Conn) -> bool {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    if Pin::new(&mut conn.conn).poll(&mut cx).is_ready() {
        return false;
    }
    matches!(conn.sender.poll_ready(&mut cx), Poll::Ready(Ok(())))
}

enum Retry {
    /// The connection did not take the request; it can go elsewhere.
    Again(Box<Request<Incoming>>),
    Failed(hyper::Error),
}

/// Sends `req` on a connection and drives the connection in this task until
/// the response head is in. The connection is returned unless it ended.
async fn exchange(
    mut conn: Box<Conn>,
    req: Request<Incoming>,
) -> Result<(Response<Incoming>, Option<Box<Conn>>), Retry> {
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
pub struct OriginBody {
    body: Incoming,
    conn: Option<Box<Conn>>,
    pool: Weak<PoolInner>,
    key: Arc<str>,
}

impl OriginBody {
    fn release(&mut self) {
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.upgrade()) {
            pool.put(self.key.clone(), conn);
        }
    }
}

impl HttpBody for OriginBody {
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

impl Drop for OriginBody {
    fn drop(&mut self) {
        // Read to the end without a last poll (the server stops once
        // `is_end_stream` says so): still reusable. Otherwise the unread rest
        // is on the wire and the connection closes with this body.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
