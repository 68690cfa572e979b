//! The public listener's first look at a connection: plain HTTP/1.1 `GET`
//! and `HEAD` requests from people (and crawler requests for assets) are
//! relayed to the origin on raw keep-alive connections, byte for byte
//! except for the head lines a proxy must change.
//!
//! Passthrough is the bulk of a proxy's traffic and most of its cost is
//! per request, so these requests skip building header maps and bodies:
//! the request head is parsed in place (`httparse`), checked exactly as
//! `request::resolve` and the bot decision check it, and copied to a pooled
//! origin connection with hop-by-hop headers dropped and X-Forwarded-* set;
//! the response head is rewritten the same way and its body copied as it
//! arrives, its end found from Content-Length or the chunked framing.
//!
//! Anything else — another method or version, a request body, an upgrade,
//! `Expect`, a crawler's page, a request that would be refused, bytes that
//! do not parse — hands the connection, with the bytes read so far, to
//! hyper and the full request path for the rest of its life.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::bot::request::{LOOP_GUARD_HEADER, LOOP_GUARD_VALUE};
use crate::bot::{BotDetector, PassReason, RenderDecision};
use crate::config::{Site, SiteTable};
use crate::domain::Domain;
use crate::listener::{Front, Rewound, MAX_HEADERS, MAX_HEAD_BYTES};
use crate::metrics::{CacheResult as CacheMetric, Metrics, RequestKind, NO_FAMILY};
use crate::proxy::forward::{connection_may_remove, HOP_BY_HOP};
use crate::proxy::origin_pool::is_open_and_quiet;
use crate::proxy::request::{
    parse_host, validate_path, validate_query, MAX_HEADER_BLOCK_BYTES, MAX_TARGET_BYTES,
};
use crate::proxy::PublicProxy;
use crate::upstream::connect_tcp;
use crate::upstream::OriginError;
use crate::upstream::PoolLimits;

mod body;
mod idle;
mod request;
mod response;

use body::*;
pub use body::{ChunkError, ChunkedEnd};
use idle::*;
use request::*;
pub use response::Framing;
use response::*;

/// Bytes asked of the kernel per read, from either side.
const READ_CHUNK: usize = 16 * 1024;
/// Largest response head taken from an origin; a larger one is a 502.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Answers of known length up to this size (head included) are gathered
/// and written to the client at once.
const GATHER_LIMIT: usize = 64 * 1024;
/// Bounds of a chunked body's framing: extension bytes per chunk-size line,
/// and the trailer section's bytes.
const MAX_CHUNK_LINE_EXTRA: usize = 4 * 1024;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

impl Front for PublicProxy {
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        header_read_timeout: Duration,
        stop: watch::Receiver<bool>,
    ) -> Option<Rewound> {
        if !self.raw_relay {
            return Some(Rewound::new(Vec::new(), stream));
        }
        serve_connection(self, stream, peer, header_read_timeout, stop).await
    }

    fn housekeeping(&self) {
        close_stale_idle(Instant::now(), self.origin.pool_limits().idle_timeout);
        report_idle(&self.metrics);
    }
}

/// How the connection goes on after one request.
enum Next {
    KeepAlive,
    Close,
    /// To hyper, with every byte read so far.
    Handoff,
}

async fn serve_connection(
    proxy: Arc<PublicProxy>,
    mut client: TcpStream,
    peer: SocketAddr,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> Option<Rewound> {
    // Taken once the client sends something: idle connections hold no buffer.
    let mut buf: Vec<u8> = Vec::new();
    let peer_ip = peer.ip().to_string();
    let trusted = proxy.trusted_proxies.contains(peer.ip());
    // One timer per connection for request heads and one for the origin,
    // each moved to a later deadline per request: moving a timer later
    // costs no timer-wheel work until it would have fired.
    let mut head_timer = std::pin::pin!(tokio::time::sleep(header_read_timeout));
    let mut origin_timer = std::pin::pin!(tokio::time::sleep(proxy.origin.timeout()));
    loop {
        head_timer
            .as_mut()
            .reset(tokio::time::Instant::now() + header_read_timeout);
        let head_len = loop {
            if !buf.is_empty() {
                let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut []);
                match req.parse_with_uninit_headers(&buf, &mut headers) {
                    Ok(httparse::Status::Complete(n)) => break n,
                    Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => {}
                    // hyper answers what does not parse or is too large.
                    _ => return Some(Rewound::new(buf, client)),
                }
            } else if *stop.borrow() {
                return None;
            }
            tokio::select! {
                _ = stop.changed(), if buf.is_empty() => return None,
                _ = head_timer.as_mut() => {
                    tracing::debug!(%peer, "no request within the header timeout; closing");
                    return None;
                }
                read = read_some(&client, spare_if_none(&mut buf)) => match read {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                },
            }
        };
        let closing = *stop.borrow();
        // Boxed: the parsed head and the relay's state exist only while a
        // request is in flight, not in every idle connection's task.
        let next = Box::pin(handle_request(
            &proxy,
            &mut client,
            Peer {
                addr: peer,
                ip: &peer_ip,
                trusted,
            },
            &buf[..head_len],
            closing,
            origin_timer.as_mut(),
        ))
        .await;
        match next {
            Next::Handoff => return Some(Rewound::new(buf, client)),
            Next::Close => return None,
            Next::KeepAlive => {
                buf.drain(..head_len);
                if buf.is_empty() {
                    give_back(std::mem::take(&mut buf));
                }
            }
        }
    }
}

/// The client's address, its IP as X-Forwarded-For gets it, and whether
/// it is one of `trusted_proxies` (whose X-Forwarded-For is appended to and
/// whose X-Forwarded-Proto is passed on).
#[derive(Clone, Copy)]
struct Peer<'a> {
    addr: SocketAddr,
    ip: &'a str,
    trusted: bool,
}

async fn handle_request(
    proxy: &PublicProxy,
    client: &mut TcpStream,
    peer: Peer<'_>,
    head: &[u8],
    closing: bool,
    origin_timer: Pin<&mut Sleep>,
) -> Next {
    let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(_)) => match plan(&proxy.sites, &proxy.bots, &req) {
            Some(plan) => relay(proxy, client, peer, &req, plan, closing, origin_timer).await,
            None => Next::Handoff,
        },
        _ => Next::Handoff,
    }
}

/// [`read_draining`] from an origin, or `None` when `timeout` passes first.
async fn read_in_time(
    conn: &TcpStream,
    buf: &mut Vec<u8>,
    mut timer: Pin<&mut Sleep>,
    timeout: Duration,
) -> Option<io::Result<(usize, bool)>> {
    timer.as_mut().reset(tokio::time::Instant::now() + timeout);
    tokio::select! {
        read = read_draining(conn, buf) => Some(read),
        _ = timer => None,
    }
}

/// Reads what the socket has into `buf`, growing it by [`READ_CHUNK`].
async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    read_draining(stream, buf).await.map(|(n, _)| n)
}

/// [`read_some`], also saying whether the read emptied the socket (it
/// returned less than there was room for).
async fn read_draining(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<(usize, bool)> {
    loop {
        stream.readable().await?;
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let room = buf.capacity() - buf.len();
        // A short read shows the receive queue empty (epoll and kqueue are
        // edge-triggered: bytes arriving later raise a new edge). Reporting
        // it as `WouldBlock` to `try_io` clears the socket's read readiness
        // as of before the read, as tokio's own `poll_read` does, so the
        // next read waits for that edge instead of first making a `recv`
        // that can only fail with `EAGAIN`: one system call less per
        // message each way.
        let mut read = None;
        let outcome = stream.try_io(Interest::READABLE, || {
            let n = stream.try_read_buf(buf)?;
            read = Some(n);
            if EDGE_TRIGGERED && 0 < n && n < room {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match (read, outcome) {
            (Some(n), _) => return Ok((n, n < room)),
            (None, Err(e)) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            (None, _) => continue,
        }
    }
}

/// Whether the reactor's selector reports each arrival of bytes (see
/// [`read_draining`]).
const EDGE_TRIGGERED: bool = cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
));

/// Relays one request and its answer; says how the client connection goes on.
async fn relay(
    proxy: &PublicProxy,
    client: &mut TcpStream,
    peer: Peer<'_>,
    req: &httparse::Request<'_, '_>,
    plan: Plan<'_, '_>,
    closing: bool,
    mut timer: Pin<&mut Sleep>,
) -> Next {
    let started = Instant::now();
    let kind = plan.kind;
    tracing::debug!(peer = %peer.addr, method = req.method.unwrap_or(""), host = %plan.host, path = req.path.unwrap_or(""), kind = RequestKind::as_str(kind), "passthrough");
    let head_only = req.method == Some("HEAD");
    let client_close = plan.close || closing;
    let origin = &plan.site.origin;
    let mut request_head = spare_buffer();
    origin_request_head(req, &plan, peer, &mut request_head);
    let timeout = proxy.origin.timeout();
    let limits = proxy.origin.pool_limits();

    timer.as_mut().reset(tokio::time::Instant::now() + timeout);
    let answer = tokio::select! {
        answer = exchange(origin, &request_head, limits) => Ok(answer),
        _ = timer.as_mut() => Err(()),
    };
    give_back(request_head);
    let (conn, mut response) = match answer {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            return answer_error(proxy, client, origin, kind, started, e, client_close).await
        }
        Err(_) => {
            let e = OriginError::Timeout(timeout);
            return answer_error(proxy, client, origin, kind, started, e, client_close).await;
        }
    };
    let head = match ResponseHead::parse(&response.bytes, head_only, client_close) {
        Ok(head) => head,
        Err(reason) => {
            let e = OriginError::Unreachable(reason.to_string());
            return answer_error(proxy, client, origin, kind, started, e, client_close).await;
        }
    };
    let client_keeps = head.client_keep_alive;
    let status = head.status;
    let mut body = BodyEnd::new(head.framing);
    let mut out = head.bytes;
    let first = &response.bytes[head.origin_head_len..];
    let fed = match body.feed(first) {
        Ok(fed) => fed,
        Err(e) => {
            // Nothing has been sent yet: the client gets a 502, not a close.
            give_back(out);
            let e = OriginError::Unreachable(format!("bad body framing: {e}"));
            return answer_error(proxy, client, origin, kind, started, e, client_close).await;
        }
    };
    fed.copy_to(first, &mut out);
    let mut done = fed.done;
    // Bytes past the answer's end are an answer nobody asked for: the
    // connection is not reused.
    let mut origin_reusable = head.origin_keep_alive && fed.taken == first.len();
    // A short body of known length is gathered before the first write: the
    // client then gets the answer in one write (and reads it in one read)
    // even when the origin's bytes arrive in pieces, and an origin that
    // stops short gets it a 502 or 504 rather than a cut-off answer. Longer
    // bodies, and bodies of unknown length, are passed on as they arrive.
    let gather = matches!(body, BodyEnd::Remaining(left)
        if out.len() as u64 + left <= GATHER_LIMIT as u64);
    // The head and the body read so far, while nothing has been written.
    let mut unsent = Some(out);
    loop {
        if let Some(out) = unsent.take_if(|_| done || !gather) {
            proxy
                .metrics
                .observe_request(kind, CacheMetric::None, NO_FAMILY, status);
            if client.write_all(&out).await.is_err() {
                return Next::Close;
            }
            proxy
                .metrics
                .observe_request_duration(kind, CacheMetric::None, started.elapsed());
            give_back(out);
        }
        if done {
            break;
        }
        response.bytes.clear();
        let read = read_in_time(&conn, &mut response.bytes, timer.as_mut(), timeout).await;
        let chunk = match read {
            Some(Ok((0, _))) if body.ends_at_close() => break,
            Some(Ok((n, drained))) if n > 0 => {
                response.drained = drained;
                &response.bytes[..n]
            }
            failed if unsent.is_some() => {
                let e = match failed {
                    None => OriginError::Timeout(timeout),
                    Some(_) => OriginError::Unreachable("origin closed inside the body".into()),
                };
                return answer_error(proxy, client, origin, kind, started, e, client_close).await;
            }
            _ => {
                tracing::debug!(origin = %origin, "origin body ended early; closing the client connection");
                return Next::Close;
            }
        };
        let fed = match body.feed(chunk) {
            Ok(fed) => fed,
            Err(e) if unsent.is_some() => {
                let e = OriginError::Unreachable(format!("bad body framing: {e}"));
                return answer_error(proxy, client, origin, kind, started, e, client_close).await;
            }
            Err(e) => {
                tracing::warn!(origin = %origin, error = %e, "passthrough failed: bad body framing; closing the client connection");
                return Next::Close;
            }
        };
        origin_reusable &= fed.taken == chunk.len();
        match unsent.as_mut() {
            Some(out) => fed.copy_to(chunk, out),
            None => {
                let written = if fed.closing.is_empty() {
                    client.write_all(&chunk[..fed.copied]).await
                } else {
                    let mut piece = spare_buffer();
                    fed.copy_to(chunk, &mut piece);
                    let written = client.write_all(&piece).await;
                    give_back(piece);
                    written
                };
                if written.is_err() {
                    return Next::Close;
                }
            }
        }
        done = fed.done;
    }
    give_back(response.bytes);
    if origin_reusable && done && response.drained {
        idle_put(origin.as_str(), conn, limits.max_idle_per_origin);
    }
    if client_keeps {
        Next::KeepAlive
    } else {
        let _ = client.shutdown().await;
        Next::Close
    }
}

/// Writes a 502 or 504 for an origin that could not answer.
async fn answer_error(
    proxy: &PublicProxy,
    client: &mut TcpStream,
    origin: &url::Url,
    kind: RequestKind,
    started: Instant,
    error: OriginError,
    close: bool,
) -> Next {
    tracing::warn!(origin = %origin, error = %error, "passthrough failed");
    let status = error.status();
    let message = format!("{}\n", error.public_message());
    let mut out = Vec::with_capacity(256 + message.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            message.len()
        )
        .as_bytes(),
    );
    push_date(&mut out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(message.as_bytes());
    proxy
        .metrics
        .observe_request(kind, CacheMetric::None, NO_FAMILY, status.as_u16());
    let written = client.write_all(&out).await.is_ok();
    proxy
        .metrics
        .observe_request_duration(kind, CacheMetric::None, started.elapsed());
    if written && !close {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// `date`, as hyper's server adds it when a response has none, rendered
/// once per second per thread.
fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second || cached.1.is_empty() {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        push_header(out, b"date", cached.1.as_bytes());
    });
}

/// The relay's parsers of untrusted bytes, for the fuzz targets (`fuzz/`)
/// and the replay of their corpora in `cargo test`; the proxy itself does
/// not use this module.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// A response head as the relay rewrites it for the client.
    pub struct RewrittenHead {
        pub bytes: Vec<u8>,
        pub origin_head_len: usize,
        pub framing: Framing,
        pub origin_keep_alive: bool,
        pub client_keep_alive: bool,
    }

    /// [`ResponseHead::parse`].
    pub fn response_head(
        raw: &[u8],
        head_only: bool,
        client_close: bool,
    ) -> Result<RewrittenHead, &'static str> {
        ResponseHead::parse(raw, head_only, client_close).map(|h| RewrittenHead {
            bytes: h.bytes,
            origin_head_len: h.origin_head_len,
            framing: h.framing,
            origin_keep_alive: h.origin_keep_alive,
            client_keep_alive: h.client_keep_alive,
        })
    }

    /// A chunked body fed to the relay in the given pieces: where it ends
    /// and the bytes the client gets, or `None` if it has not ended.
    pub fn chunked_body(pieces: &[&[u8]]) -> Result<Option<(usize, Vec<u8>)>, ChunkError> {
        let mut end = BodyEnd::new(Framing::Chunked);
        let (mut out, mut taken) = (Vec::new(), 0);
        for piece in pieces {
            let fed = end.feed(piece)?;
            fed.copy_to(piece, &mut out);
            taken += fed.taken;
            if fed.done {
                return Ok(Some((taken, out)));
            }
        }
        Ok(None)
    }

    /// What [`plan`] settled about a request the relay takes.
    #[derive(Debug)]
    pub struct Planned {
        pub site: Arc<Site>,
        pub host: Domain,
        pub asset: bool,
    }

    /// [`plan`] on a raw request head: `None` when the relay would hand the
    /// request to hyper.
    pub fn plan_request(sites: &SiteTable, bots: &BotDetector, raw: &[u8]) -> Option<Planned> {
        let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(raw, &mut headers) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return None,
        }
        let planned = plan(sites, bots, &req)?;
        Some(Planned {
            site: sites.lookup(&planned.host)?.clone(),
            host: planned.host.clone(),
            asset: planned.kind == RequestKind::Asset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_whole(input: &[u8]) -> Result<Option<usize>, ChunkError> {
        ChunkedEnd::default().feed(input)
    }

    fn scan_bytewise(input: &[u8]) -> Result<Option<usize>, ChunkError> {
        let mut scanner = ChunkedEnd::default();
        for (i, b) in input.iter().enumerate() {
            if let Some(n) = scanner.feed(std::slice::from_ref(b))? {
                return Ok(Some(i + n));
            }
        }
        Ok(None)
    }

    #[tokio::test]
    async fn a_short_read_clears_readiness_and_later_bytes_are_still_read() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(b"abc").await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_draining(&server, &mut buf).await.unwrap(), (3, true));
        // No readiness is left over to spend a `recv` on an empty socket.
        assert!(
            tokio::time::timeout(Duration::ZERO, server.readable())
                .await
                .is_err(),
            "read readiness survived a short read"
        );
        client.write_all(b"def").await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(10), read_draining(&server, &mut buf))
            .await
            .expect("bytes that arrive after a short read wake the reader");
        assert_eq!(read.unwrap(), (3, true));
        assert_eq!(buf, b"abcdef");
    }

    #[test]
    fn chunked_bodies_end_where_their_last_chunk_and_trailers_end() {
        for (body, end) in [
            (&b"5\r\nhello\r\n0\r\n\r\nNEXT"[..], 15),
            (b"5;name=value\r\nhello\r\n0\r\n\r\n", 26),
            (b"A \r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nNEXT", 35),
            (b"0\r\n\r\n", 5),
            (b"00000001\r\nx\r\n0\r\n\r\n", 18),
        ] {
            assert_eq!(scan_whole(body), Ok(Some(end)), "{body:?}");
            assert_eq!(scan_bytewise(body), Ok(Some(end)), "{body:?}");
        }
        assert_eq!(scan_whole(b"5\r\nhel"), Ok(None));
        assert_eq!(scan_whole(b"5\r\nhello\r\n0\r\n"), Ok(None));
    }

    #[test]
    fn broken_chunk_framing_is_an_error() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\r\n0\r\nbad\n",
            b"12345678901234567\r\n",
            b"5 x\r\n",
            b"\r\n",
        ] {
            assert!(scan_whole(bad).is_err(), "{bad:?}");
            assert!(scan_bytewise(bad).is_err(), "{bad:?}");
        }
        let long_trailers = format!(
            "0\r\n{}\r\n\r\n",
            "x-t: 1\r\n".repeat(MAX_TRAILER_BYTES / 6 + 1)
        );
        assert_eq!(
            scan_whole(long_trailers.as_bytes()),
            Err(ChunkError::TooLong)
        );
        let long_extension = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE_EXTRA + 1));
        assert_eq!(
            scan_whole(long_extension.as_bytes()),
            Err(ChunkError::TooLong)
        );
    }

    #[test]
    fn the_extension_bound_is_per_chunk_line() {
        // Short extensions on many chunks add up past one line's bound.
        let mut body = "1;e=1\r\nx\r\n".repeat(MAX_CHUNK_LINE_EXTRA);
        body.push_str("0\r\n\r\n");
        assert_eq!(scan_whole(body.as_bytes()), Ok(Some(body.len())));
    }

    proptest::proptest! {
        #[test]
        fn any_split_of_a_chunked_body_ends_in_the_same_place(
            chunks in proptest::collection::vec(proptest::collection::vec(0u8..=255, 1..40), 0..6),
            split in 0usize..400,
        ) {
            let mut body = Vec::new();
            for chunk in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                body.extend_from_slice(chunk);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let end = body.len();
            body.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            let split = split.min(body.len());
            let mut scanner = ChunkedEnd::default();
            let found = match scanner.feed(&body[..split]).unwrap() {
                Some(n) => n,
                None => split + scanner.feed(&body[split..]).unwrap().unwrap(),
            };
            proptest::prop_assert_eq!(found, end);
        }
    }

    #[test]
    fn response_heads_are_rewritten_for_the_client() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\nKeep-Alive: timeout=5\r\nx-kept: 1\r\nDate: Sat, 28 Nov 2026 18:00:00 GMT\r\n\r\nhello";
        let head = ResponseHead::parse(raw, false, false).unwrap();
        let text = String::from_utf8(head.bytes).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx-kept: 1\r\nDate: Sat, 28 Nov 2026 18:00:00 GMT\r\n\r\n"
        );
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.origin_keep_alive && head.client_keep_alive);

        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n";
        let head = ResponseHead::parse(chunked, false, true).unwrap();
        let text = String::from_utf8(head.bytes).unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!text.to_ascii_lowercase().contains("content-length"));
        assert!(text.contains("transfer-encoding: chunked\r\n"));
        assert!(text.contains("connection: close\r\n"));
        assert!(text.contains("date: "));

        let until_close = b"HTTP/1.0 200 OK\r\n\r\n";
        let head = ResponseHead::parse(until_close, false, false).unwrap();
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(!head.origin_keep_alive && !head.client_keep_alive);

        let head_only = ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
            true,
            false,
        )
        .unwrap();
        assert_eq!(head_only.framing, Framing::Empty);

        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            assert!(ResponseHead::parse(bad, false, false).is_err(), "{bad:?}");
        }
    }

    const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

    fn idle_count(origin: &str) -> usize {
        IDLE.with(|idle| idle.borrow().get(origin).map_or(0, Vec::len))
    }

    #[tokio::test]
    async fn stale_idle_connections_are_closed_by_housekeeping() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = "http://housekeeping.test/";
        let kept = TcpStream::connect(addr).await.unwrap();
        let (_kept_peer, _) = listener.accept().await.unwrap();
        let closed = TcpStream::connect(addr).await.unwrap();
        let (closed_peer, _) = listener.accept().await.unwrap();
        idle_put(origin, kept, 8);
        idle_put(origin, closed, 8);
        assert_eq!(idle_count(origin), 2);

        // The origin closes one: once the event loop has seen it, it goes.
        drop(closed_peer);
        let deadline = Instant::now() + Duration::from_secs(5);
        while idle_count(origin) == 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            close_stale_idle(Instant::now(), IDLE_TIMEOUT);
        }
        assert_eq!(idle_count(origin), 1);

        // The other stays until it is older than the idle timeout.
        close_stale_idle(Instant::now(), IDLE_TIMEOUT);
        assert_eq!(idle_count(origin), 1);
        close_stale_idle(Instant::now() + IDLE_TIMEOUT, IDLE_TIMEOUT);
        assert_eq!(idle_count(origin), 0);
    }

    #[tokio::test]
    async fn bytes_already_waiting_retire_an_idle_connection() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = "http://stray.test/";
        let conn = TcpStream::connect(addr).await.unwrap();
        let (mut peer, _) = listener.accept().await.unwrap();
        // The stray answer arrives while the connection is still in use
        // (the event loop has seen it), before it is put back idle: putting
        // it back clears the readiness, so only a real read can see it.
        peer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nSTRAY!")
            .await
            .unwrap();
        conn.readable().await.unwrap();
        idle_put(origin, conn, 8);
        assert!(idle_take(origin, IDLE_TIMEOUT).is_none());

        // A quiet connection is taken; one the origin closed is not.
        let quiet = TcpStream::connect(addr).await.unwrap();
        let (_quiet_peer, _) = listener.accept().await.unwrap();
        idle_put(origin, quiet, 8);
        assert!(idle_take(origin, IDLE_TIMEOUT).is_some());
        let closed = TcpStream::connect(addr).await.unwrap();
        let (closed_peer, _) = listener.accept().await.unwrap();
        idle_put(origin, closed, 8);
        drop(closed_peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(idle_take(origin, IDLE_TIMEOUT).is_none());
    }

    #[test]
    fn framing_headers_reach_the_client_once_and_true() {
        let text = |raw: &[u8]| {
            let head = ResponseHead::parse(raw, false, false).unwrap();
            (
                String::from_utf8(head.bytes).unwrap().to_ascii_lowercase(),
                head.framing,
            )
        };
        // `Connection` cannot remove the length.
        let (head, framing) = text(
            b"HTTP/1.1 200 OK\r\nConnection: content-length, host, x-hop\r\nContent-Length: 5\r\nx-hop: 1\r\n\r\n",
        );
        assert_eq!(framing, Framing::Length(5));
        assert!(head.contains("content-length: 5\r\n"), "{head}");
        assert!(!head.contains("x-hop"), "{head}");
        // Framed two ways: by the coding, and the connection is retired.
        let head = ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            false,
        )
        .unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!head.origin_keep_alive && head.client_keep_alive);
        // A coding that does not end in chunked: until close, no length.
        let (head, framing) =
            text(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(framing, Framing::UntilClose);
        assert!(!head.contains("content-length"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert!(head.contains("connection: close\r\n"), "{head}");
        // Repeated equal lengths become one.
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        ] {
            let (head, framing) = text(raw);
            assert_eq!(framing, Framing::Length(5));
            assert_eq!(head.matches("content-length").count(), 1, "{head}");
            assert!(head.contains("content-length: 5\r\n"), "{head}");
        }
        // A 204 has no length, whatever the origin says.
        let (head, framing) = text(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(framing, Framing::Empty);
        assert!(!head.contains("content-length"), "{head}");
    }

    #[test]
    fn trailers_are_dropped_from_chunked_bodies() {
        let body = b"5\r\nhello\r\n0\r\nx-sum: 5\r\nx-other: 1\r\n\r\nNEXT";
        // Whole, and fed in every split: the client gets the chunks, the
        // last chunk's line and an empty trailer section.
        for split in 0..=body.len() {
            let mut end = BodyEnd::new(Framing::Chunked);
            let (mut out, mut taken, mut done) = (Vec::new(), 0, false);
            for piece in [&body[..split], &body[split..]] {
                if done {
                    break;
                }
                let fed = end.feed(piece).unwrap();
                fed.copy_to(piece, &mut out);
                taken += fed.taken;
                done = fed.done;
            }
            assert!(done, "split {split}");
            assert_eq!(taken, body.len() - 4, "split {split}");
            assert_eq!(out, b"5\r\nhello\r\n0\r\n\r\n", "split {split}");
        }
    }

    #[test]
    fn simple_targets_are_origin_form_path_and_query_characters() {
        for good in ["/", "/p/1", "/a%20b?x=1&y=2", "/a;b=c/d@e:f"] {
            assert!(is_simple_target(good), "{good:?}");
        }
        for other in [
            "*",
            "http://x/",
            "/a b",
            "/a#b",
            "/a\"b",
            "/a{b}",
            "/a\\b",
            "",
        ] {
            assert!(!is_simple_target(other), "{other:?}");
        }
    }
}
