//! Humans get the origin's answer through the proxy: status, headers (minus
//! hop-by-hop), bodies streamed both ways, WebSockets, h2c, 502 and 504.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::handler_origin::{full, Origin, OriginBody};
use common::proxy::{get, send, ProxyProcess, FIREFOX};
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};

const BIG: usize = 5 * 1024 * 1024;

async fn test_origin() -> Origin {
    Origin::start(|req: Request<Incoming>| async move {
        match req.uri().path() {
            "/page" => Response::builder()
                .header("content-type", "text/html; charset=utf-8")
                .header("x-custom", "kept")
                .header("set-cookie", "a=1")
                .header("set-cookie", "b=2")
                .header("connection", "x-private")
                .header("x-private", "dropped")
                .header("keep-alive", "timeout=5")
                .status(203)
                .body(full("<h1>origin page</h1>"))
                .unwrap(),
            "/headers" => {
                let mut lines = String::new();
                for (k, v) in req.headers() {
                    lines.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
                }
                Response::new(full(lines))
            }
            "/echo" => {
                // Stream the upload straight back.
                let body: OriginBody = req.into_body().map_err(Into::into).boxed();
                Response::new(body)
            }
            "/big" => {
                let chunks = futures::stream::iter((0..BIG / 65536).map(|i| {
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from(
                        vec![(i % 251) as u8; 65536],
                    )))
                }));
                Response::new(BodyExt::boxed(http_body_util::StreamBody::new(chunks)))
            }
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(8)).await;
                Response::new(full("late"))
            }
            "/ws" => websocket_echo(req).await,
            _ => Response::builder().status(404).body(full("nope")).unwrap(),
        }
    })
    .await
}

async fn websocket_echo(mut req: Request<Incoming>) -> Response<OriginBody> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let key = req.headers().get("sec-websocket-key").cloned();
    let Some(key) = key else {
        return Response::builder()
            .status(400)
            .body(full("no key"))
            .unwrap();
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = upgrade.await.unwrap();
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                ws.send(msg).await.unwrap();
            }
        }
    });
    Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .body(full(""))
        .unwrap()
}

#[tokio::test]
async fn human_gets_the_origin_response_unchanged() {
    let origin = test_origin().await;
    let proxy = ProxyProcess::start(&["--origin", &origin.url()]);
    let r = get(&proxy.url("/page"), &[("user-agent", FIREFOX)]).await;
    assert_eq!(r.status, StatusCode::NON_AUTHORITATIVE_INFORMATION);
    assert_eq!(r.text(), "<h1>origin page</h1>");
    assert_eq!(r.header("x-custom"), Some("kept"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let cookies: Vec<_> = r.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies.len(), 2);
    assert!(
        r.headers.get("x-private").is_none(),
        "Connection-named header leaked"
    );
    assert!(r.headers.get("keep-alive").is_none());
}

#[tokio::test]
async fn origin_sees_public_host_and_forwarded_headers_not_hop_by_hop() {
    let origin = test_origin().await;
    let proxy = ProxyProcess::start(&["--origin", &origin.url()]);
    let r = get(
        &proxy.url("/headers"),
        &[
            ("host", "www.example.test"),
            ("user-agent", FIREFOX),
            ("connection", "x-hop"),
            ("x-hop", "secret"),
            ("x-forwarded-host", "evil.test"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    let seen = r.text();
    assert!(seen.contains("host: www.example.test\n"), "{seen}");
    assert!(
        seen.contains("x-forwarded-host: www.example.test\n"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\n"), "{seen}");
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(!seen.contains("x-hop"), "{seen}");
    assert!(!seen.contains("evil.test"), "{seen}");
}

#[tokio::test]
async fn five_megabytes_stream_up_and_down() {
    let origin = test_origin().await;
    let proxy = ProxyProcess::start(&["--origin", &origin.url()]);
    let upload: Vec<u8> = (0..BIG).map(|i| (i % 253) as u8).collect();
    let r = send(
        "POST",
        &proxy.url("/echo"),
        &[("user-agent", FIREFOX)],
        upload.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), BIG);
    assert!(r.body == upload, "upload came back altered");

    let r = get(&proxy.url("/big"), &[("user-agent", FIREFOX)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), BIG);
    assert!(r
        .body
        .chunks(65536)
        .enumerate()
        .all(|(i, c)| c.iter().all(|&b| b == (i % 251) as u8)));
}

#[tokio::test]
async fn websocket_is_relayed() {
    let origin = test_origin().await;
    let proxy = ProxyProcess::start(&["--origin", &origin.url()]);
    let url = format!("ws://127.0.0.1:{}/ws", proxy.port);
    assert_websocket_echoes(
        tokio_tungstenite::connect_async(url),
        &["hello", "prerender", "ws"],
    )
    .await;
}

/// The WebSocket `handshake` (to the test origin's echoing `/ws`) is
/// accepted within 10 s, and each of `texts` comes back.
async fn assert_websocket_echoes<S>(
    handshake: impl std::future::Future<
        Output = Result<
            (
                tokio_tungstenite::WebSocketStream<S>,
                tokio_tungstenite::tungstenite::handshake::client::Response,
            ),
            tokio_tungstenite::tungstenite::Error,
        >,
    >,
    texts: &[&str],
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut ws, resp) = tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .expect("handshake timed out")
        .expect("handshake failed");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for &text in texts {
        ws.send(text.into()).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let origin = test_origin().await;
    let proxy = ProxyProcess::start(&["--origin", &origin.url()]);
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = Request::get(proxy.url("/page"))
        .header("user-agent", FIREFOX)
        .body(Default::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::NON_AUTHORITATIVE_INFORMATION);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"<h1>origin page</h1>");
    // The origin saw the public host from :authority.
    let req = Request::get(proxy.url("/headers"))
        .body(Default::default())
        .unwrap();
    let body = client
        .request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains(&format!("host: 127.0.0.1:{}", proxy.port)));
}

#[tokio::test]
async fn origin_down_is_502_and_slow_origin_is_504() {
    let closed = common::free_port();
    let proxy = ProxyProcess::start(&["--origin", &format!("http://127.0.0.1:{closed}")]);
    let r = get(&proxy.url("/x"), &[("user-agent", FIREFOX)]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);

    let origin = test_origin().await;
    let proxy = ProxyProcess::start(&["--origin", &origin.url(), "--origin-timeout", "1"]);
    let started = std::time::Instant::now();
    let r = get(&proxy.url("/slow"), &[("user-agent", FIREFOX)]).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "504 came after {:?}",
        started.elapsed()
    );
}

/// A listening port that never completes a connection: its accept queue is
/// full and never drained, so the kernel drops every further SYN. Returns
/// the listener and the connection filling its queue (both kept open).
async fn unanswering_port() -> (tokio::net::TcpListener, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    // A backlog of 0 still queues one connection; fill the queue until a
    // connect no longer completes.
    for _ in 0..4 {
        match tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(e)) => panic!("connect to the full listener failed: {e}"),
            Err(_) => return (listener, queued),
        }
    }
    panic!("every connect to a listener that never accepts completed");
}

#[tokio::test]
async fn origin_connect_timeout_bounds_connecting_to_an_origin() {
    let (listener, _queued) = unanswering_port().await;
    let port = listener.local_addr().unwrap().port();
    // The connect timeout (1 s) is shorter than the answer deadline (4 s):
    // honoured, the request fails as unreachable (502), not as slow (504).
    let proxy = ProxyProcess::start(&[
        "--origin",
        &format!("http://127.0.0.1:{port}"),
        "--origin-timeout",
        "4",
        "--origin-connect-timeout",
        "1",
    ]);
    // GET takes the raw relay; POST with a body takes hyper's path.
    let r = get(&proxy.url("/x"), &[("user-agent", FIREFOX)]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    let r = send("POST", &proxy.url("/x"), &[("user-agent", FIREFOX)], "a=1").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());

    // With the default connect timeout (5 s), the 4 s answer deadline
    // comes first: the same origin gets a 504.
    let proxy = ProxyProcess::start(&[
        "--origin",
        &format!("http://127.0.0.1:{port}"),
        "--origin-timeout",
        "4",
    ]);
    let r = get(&proxy.url("/x"), &[("user-agent", FIREFOX)]).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let origin = Origin::start(|_req: Request<Incoming>| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Response::new(full("finished"))
    })
    .await;
    let mut proxy = ProxyProcess::start(&["--origin", &origin.url()]);
    let url = proxy.url("/slow-but-fine");
    let in_flight = tokio::spawn(async move { get(&url, &[("user-agent", FIREFOX)]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    unsafe {
        libc::kill(proxy.pid() as i32, libc::SIGTERM);
    }
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "finished");
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No Chromium left behind by the pool.
    let leftovers = std::process::Command::new("pgrep")
        .args(["-P", &proxy.pid().to_string()])
        .output()
        .unwrap();
    assert!(
        leftovers.stdout.is_empty(),
        "children left: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
}

/// The answers of an origin speaking raw HTTP/1.x, to send what hyper
/// would not ([`ScriptedOrigin`]): each path gets a fixed answer; `/close`
/// answers without a length and closes, and `/hang-up` closes every
/// connection after its answer.
fn wire_answers(path: &str) -> Vec<Step> {
    let (answer, close): (Vec<u8>, bool) = match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n".to_vec(),
            false,
        ),
        "/close" => (b"HTTP/1.0 200 OK\r\n\r\nuntil the origin closes".to_vec(), true),
        "/early-hints" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        "/two-lengths" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!".to_vec(),
            true,
        ),
        "/head" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nx-head: yes\r\n\r\n".to_vec(),
            false,
        ),
        "/hang-up" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye".to_vec(),
            true,
        ),
        // Bodies that arrive in pieces (see below); the
        // last ones stop short of their length.
        "/pieces" => (sized_answer(30_000, 30_000), false),
        "/cut-short" => (sized_answer(1_000, 10), true),
        "/cut-long" => (sized_answer(200_000, 100_000), true),
        _ => (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
                path.len(),
                path
            )
            .into_bytes(),
            false,
        ),
    };
    let mut steps = Vec::new();
    if path == "/slow" {
        steps.push(Step::Pause(Duration::from_millis(300)));
    }
    let pieces = if path == "/pieces" || path == "/cut-long" {
        3
    } else {
        1
    };
    for piece in answer.chunks(answer.len().div_ceil(pieces)) {
        steps.push(send_step(piece));
        if pieces > 1 {
            steps.push(Step::Pause(Duration::from_millis(30)));
        }
    }
    if close {
        steps.push(Step::Close);
    }
    steps
}

/// A 200 announcing `length` body bytes and sending `sent` of them.
fn sized_answer(length: usize, sent: usize) -> Vec<u8> {
    let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n").into_bytes();
    answer.extend(body_of(sent));
    answer
}

fn body_of(length: usize) -> Vec<u8> {
    (0..length).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Sends `request` and reads until the proxy closes the connection.
async fn raw_until_close(port: u16, request: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(request).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut all))
        .await
        .expect("closed within 10 s")
        .unwrap();
    all
}

/// Sends `requests` (raw bytes) on one connection in one write and reads
/// until `answers` complete answers (by Content-Length, chunked framing or
/// close) have come back; returns each answer's head and body.
async fn raw_exchange(port: u16, requests: &[u8], answers: usize) -> Vec<(String, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(requests).await.unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut closed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < answers {
        if let Some((head, body, used)) = split_answer(&buf, closed) {
            out.push((head, body));
            buf.drain(..used);
            continue;
        }
        assert!(
            !closed,
            "connection closed after {} answers: {out:?}",
            out.len()
        );
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("answer within 10 s")
            .unwrap_or(0);
        closed = n == 0;
        buf.extend_from_slice(&chunk[..n]);
    }
    out
}

/// One complete answer at the start of `buf`: head, decoded body, bytes used.
fn split_answer(buf: &[u8], closed: bool) -> Option<(String, Vec<u8>, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let lower = head.to_ascii_lowercase();
    if lower.contains("transfer-encoding: chunked") {
        let mut at = end;
        let mut body = Vec::new();
        loop {
            let line_end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
            let line = String::from_utf8_lossy(&buf[at..line_end]).to_string();
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
            at = line_end + 2;
            if size == 0 {
                let trailers_end =
                    buf[at - 2..].windows(4).position(|w| w == b"\r\n\r\n")? + at + 2;
                return Some((head, body, trailers_end));
            }
            if buf.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&buf[at..at + size]);
            at += size + 2;
        }
    }
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|v| v.trim().parse::<usize>().unwrap());
    // Answers to HEAD (marked by the test origins) and 204 and 304 have no body.
    let head_only = lower.contains("x-head: yes")
        || lower.starts_with("http/1.1 204")
        || lower.starts_with("http/1.1 304");
    match length {
        _ if head_only => Some((head, Vec::new(), end)),
        Some(n) if buf.len() >= end + n => Some((head, buf[end..end + n].to_vec(), end + n)),
        Some(_) => None,
        None if closed => Some((head, buf[end..].to_vec(), buf.len())),
        None => None,
    }
}

fn get_line(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {FIREFOX}\r\n\r\n")
}

#[tokio::test]
async fn origin_framings_reach_the_client_intact() {
    let (origin, proxy) = ScriptedOrigin::behind_proxy(wire_answers, &[]).await;
    // Pipelined on one client connection: chunked with extensions and
    // trailers, an interim 103, a HEAD whose length announces no body, and
    // a plain answer — each answered in order, the connection kept.
    let requests = [
        get_line("/chunked"),
        get_line("/early-hints"),
        format!("HEAD /head HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {FIREFOX}\r\n\r\n"),
        get_line("/plain"),
        get_line("/chunked"),
    ]
    .concat();
    let answers = raw_exchange(proxy.port, requests.as_bytes(), 5).await;
    let (head, body) = &answers[0];
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"hello world");
    assert!(!head.to_ascii_lowercase().contains("trailer:"), "{head}");
    let (head, body) = &answers[1];
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "interim answer passed on: {head}"
    );
    assert_eq!(body, b"ok");
    let (head, body) = &answers[2];
    assert!(
        head.contains("x-head: yes") && head.contains("Content-Length: 100"),
        "{head}"
    );
    assert!(body.is_empty());
    assert_eq!(answers[3].1, b"/plain");
    assert_eq!(answers[4].1, b"hello world");
    // Five answers, one origin connection: it went back to the pool each time.
    assert_eq!(origin.connections(), 1);

    // Without a length the body ends when the origin closes; the client is
    // told the connection closes too.
    let answers = raw_exchange(proxy.port, get_line("/close").as_bytes(), 1).await;
    let (head, body) = &answers[0];
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(body, b"until the origin closes");

    // Conflicting lengths could split one answer into two: refused.
    let r = get(&proxy.url("/two-lengths"), &[("user-agent", FIREFOX)]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn bodies_arriving_in_pieces_are_passed_on_whole_or_refused() {
    let (origin, proxy) = ScriptedOrigin::behind_proxy(wire_answers, &[]).await;
    // A short body in three pieces, then a plain answer on the same
    // connections: whole, and the origin connection reused.
    let requests = [get_line("/pieces"), get_line("/plain")].concat();
    let answers = raw_exchange(proxy.port, requests.as_bytes(), 2).await;
    assert!(answers[0].0.starts_with("HTTP/1.1 200"), "{}", answers[0].0);
    assert_eq!(answers[0].1, body_of(30_000));
    assert_eq!(answers[1].1, b"/plain");
    assert_eq!(origin.connections(), 1);

    // A short body the origin cuts off is not started to the client: a 502,
    // and the client's connection goes on.
    let requests = [get_line("/cut-short"), get_line("/plain")].concat();
    let answers = raw_exchange(proxy.port, requests.as_bytes(), 2).await;
    assert!(answers[0].0.starts_with("HTTP/1.1 502"), "{}", answers[0].0);
    assert_eq!(answers[1].1, b"/plain");

    // A long body streams as it arrives; cut off, the client sees the
    // connection close before the announced length.
    let stream = raw_until_close(proxy.port, get_line("/cut-long").as_bytes()).await;
    let head_end = stream.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(stream.starts_with(b"HTTP/1.1 200"));
    assert_eq!(&stream[head_end..], &body_of(100_000)[..]);
}

#[tokio::test]
async fn idle_origin_connections_are_bounded_by_origin_max_idle() {
    let (origin, proxy) = ScriptedOrigin::behind_proxy(
        wire_answers,
        &["--public-threads", "1", "--origin-max-idle", "1"],
    )
    .await;
    let three_at_once = || async {
        let answers = futures::future::join_all(
            (0..3).map(|_| raw_exchange_owned(proxy.port, get_line("/slow"))),
        )
        .await;
        for answer in answers {
            assert_eq!(answer[0].1, b"/slow");
        }
    };
    three_at_once().await;
    assert_eq!(origin.connections(), 3);
    // One of the three was kept idle, two were closed.
    three_at_once().await;
    assert_eq!(origin.connections(), 5);
    // The gauge follows within a housekeeping round (10 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = get(&proxy.admin_url("/metrics"), &[]).await.text();
        if metrics.contains("\nprerender_origin_idle_connections 1\n") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gauge never 1:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn an_origin_that_closes_after_each_answer_is_reconnected() {
    let (origin, proxy) = ScriptedOrigin::behind_proxy(wire_answers, &[]).await;
    // The origin closes without saying so: the pooled connection is dead
    // by the next request, which must still be answered.
    for i in 0..5 {
        let r = get(&proxy.url("/hang-up"), &[("user-agent", FIREFOX)]).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert_eq!(r.text(), "bye");
    }
    assert_eq!(origin.connections(), 5);
}

#[tokio::test]
async fn a_connection_moves_to_the_full_path_when_a_request_needs_it() {
    let origin = test_origin().await;
    let proxy = ProxyProcess::start(&["--origin", &origin.url()]);
    // A relayed GET, then a POST with a body (the full path), then a GET
    // again, pipelined on one connection.
    let requests = [
        get_line("/headers"),
        format!("POST /echo HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {FIREFOX}\r\nContent-Length: 5\r\n\r\nhello"),
        get_line("/page"),
    ]
    .concat();
    let answers = raw_exchange(proxy.port, requests.as_bytes(), 3).await;
    assert!(String::from_utf8_lossy(&answers[0].1).contains("x-forwarded-for: 127.0.0.1"));
    assert_eq!(answers[1].1, b"hello");
    assert!(answers[2].0.starts_with("HTTP/1.1 203"), "{}", answers[2].0);
    assert_eq!(answers[2].1, b"<h1>origin page</h1>");
}

/// [`threads`] once `count` public listener threads have named themselves
/// and set their policy (a thread does both when it first runs, which on a
/// busy machine can be after the first answer), or after 10 s.
fn threads_once_started(pid: u32, count: usize) -> Vec<(String, u32)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = threads(pid);
        let started = all
            .iter()
            .filter(|(name, _)| name.starts_with("public-"))
            .count();
        if started >= count || std::time::Instant::now() > deadline {
            return all;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Each thread's name and Linux scheduling policy (0 normal, 3 batch).
fn threads(pid: u32) -> Vec<(String, u32)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
        .map(|stat| {
            let open = stat.find('(').unwrap();
            let close = stat.rfind(')').unwrap();
            // Fields after the name start at the third; `policy` is the 41st.
            let policy = stat[close + 1..].split_whitespace().nth(38).unwrap();
            (stat[open + 1..close].to_string(), policy.parse().unwrap())
        })
        .collect()
}

const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

#[tokio::test]
async fn public_connections_are_served_on_the_configured_threads() {
    let (_origin, proxy) =
        ScriptedOrigin::behind_proxy(wire_answers, &["--public-threads", "7"]).await;
    // Six connections at once: the least busy thread takes each.
    let mut replies = Vec::new();
    for i in 0..6 {
        let path = format!("/n{i}");
        replies.push(tokio::spawn(raw_exchange_owned(
            proxy.port,
            get_line(&path),
        )));
    }
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.await.unwrap()[0].1, format!("/n{i}").into_bytes());
    }
    let all = threads_once_started(proxy.pid(), 7);
    let public: Vec<&(String, u32)> = all
        .iter()
        .filter(|(name, _)| name.starts_with("public-"))
        .collect();
    assert_eq!(public.len(), 7, "{all:?}");
    // Batch scheduling by default, for the public threads only.
    assert!(
        public.iter().all(|(_, policy)| *policy == SCHED_BATCH),
        "{all:?}"
    );
    assert!(
        all.iter()
            .filter(|(name, _)| !name.starts_with("public-"))
            .all(|(_, policy)| *policy == SCHED_OTHER),
        "{all:?}"
    );
}

#[tokio::test]
async fn public_threads_default_to_one_per_core() {
    let (_origin, proxy) = ScriptedOrigin::behind_proxy(wire_answers, &[]).await;
    assert_eq!(
        raw_exchange_owned(proxy.port, get_line("/n")).await[0].1,
        b"/n"
    );
    let cores = std::thread::available_parallelism().unwrap().get();
    let all = threads_once_started(proxy.pid(), cores);
    assert_eq!(
        all.iter()
            .filter(|(name, _)| name.starts_with("public-"))
            .count(),
        cores,
        "{all:?}"
    );
}

#[tokio::test]
async fn public_threads_keep_the_normal_policy_when_asked() {
    let (_origin, proxy) = ScriptedOrigin::behind_proxy(
        wire_answers,
        &["--public-threads", "2", "--public-scheduling", "normal"],
    )
    .await;
    assert_eq!(
        raw_exchange_owned(proxy.port, get_line("/n")).await[0].1,
        b"/n"
    );
    let all = threads_once_started(proxy.pid(), 2);
    assert_eq!(
        all.iter()
            .filter(|(name, policy)| name.starts_with("public-") && *policy == SCHED_OTHER)
            .count(),
        2,
        "{all:?}"
    );
}

async fn raw_exchange_owned(port: u16, request: String) -> Vec<(String, Vec<u8>)> {
    raw_exchange(port, request.as_bytes(), 1).await
}

// ---- the framing rules of SPEC §2 "Humans", on both passthrough paths ----

/// Which of the two passthrough paths a request takes: the raw relay takes
/// a plain `GET`/`HEAD`; any request with a `Content-Length` (even 0) goes
/// to hyper and the full path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Relay,
    Hyper,
}

const BOTH: [Via; 2] = [Via::Relay, Via::Hyper];

/// A request head for `path` on the given path; `extra` header lines end
/// in `\r\n`.
fn request_via(via: Via, method: &str, path: &str, extra: &str) -> String {
    let length = match via {
        Via::Relay => "",
        Via::Hyper => "Content-Length: 0\r\n",
    };
    format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {FIREFOX}\r\n{length}{extra}\r\n")
}

/// What the scripted origin does for one request, in order.
enum Step {
    Send(Vec<u8>),
    Pause(Duration),
    Close,
}

fn send_step(bytes: &[u8]) -> Step {
    Step::Send(bytes.to_vec())
}

/// An origin that answers every request with the raw bytes its test
/// scripts for the request's path, misbehaving on purpose. It records each
/// request head it reads and counts connections.
struct ScriptedOrigin {
    port: u16,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// A complete answer nobody asked for: if it is ever read as the answer
/// to a request, that request got someone else's answer.
const STRAY_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nSTRAY!";

impl ScriptedOrigin {
    /// The origin of `script` behind a proxy started with `--origin` and
    /// `flags`.
    async fn behind_proxy(
        script: fn(&str) -> Vec<Step>,
        flags: &[&str],
    ) -> (ScriptedOrigin, ProxyProcess) {
        let origin = ScriptedOrigin::start(script).await;
        let url = origin.url();
        let proxy = ProxyProcess::start(&[&["--origin", url.as_str()], flags].concat());
        (origin, proxy)
    }

    async fn start(script: fn(&str) -> Vec<Step>) -> ScriptedOrigin {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (seen, counter) = (heads.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let end = loop {
                            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break end + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end);
                        // A request body is read past (the tests send none
                        // or a few bytes, with Content-Length).
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        while buf.len() < length {
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..length);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                        seen.lock().unwrap().push(head);
                        for step in script(&path) {
                            match step {
                                Step::Send(bytes) => {
                                    if stream.write_all(&bytes).await.is_err() {
                                        return;
                                    }
                                }
                                Step::Pause(pause) => tokio::time::sleep(pause).await,
                                Step::Close => return,
                            }
                        }
                    }
                });
            }
        });
        ScriptedOrigin {
            port,
            heads,
            connections,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The last request head that reached the origin with `path`.
    fn head_for(&self, path: &str) -> String {
        let wanted = format!(" {path} ");
        self.heads
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|h| h.contains(&wanted))
            .cloned()
            .unwrap_or_else(|| panic!("{path} never reached the origin"))
    }
}

/// The scripted answers of the framing tests, by path. Any other path is
/// answered with its own path as the body (Content-Length framed).
fn misbehaving(path: &str) -> Vec<Step> {
    let with_stray = |answer: &[u8]| vec![send_step(&[answer, STRAY_ANSWER].concat())];
    match path {
        // Stray bytes in the same packet as the answer.
        "/head-stray" => with_stray(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Head: yes\r\n\r\n"),
        "/no-content-stray" => with_stray(b"HTTP/1.1 204 No Content\r\n\r\n"),
        "/not-modified-stray" => with_stray(b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\n"),
        "/past-length" => with_stray(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        // Stray bytes that come later, after the proxy has read the answer.
        "/late-stray" => vec![
            send_step(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            Step::Pause(Duration::from_millis(150)),
            send_step(STRAY_ANSWER),
        ],
        // `Connection` naming framing headers.
        "/connection-content-length" => vec![send_step(
            b"HTTP/1.1 200 OK\r\nConnection: content-length, transfer-encoding\r\nContent-Length: 5\r\n\r\nhello",
        )],
        // A transfer coding that does not end in chunked, with a length
        // that is not the body's.
        "/gzip-coded" => vec![
            send_step(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n"),
            send_step(b"0123456789 then the origin closes"),
            Step::Close,
        ],
        "/length-list" => vec![send_step(b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello")],
        "/length-twice" => vec![send_step(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        )],
        "/length-unequal" => vec![
            send_step(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 7\r\n\r\nokSTRAY!"),
            Step::Close,
        ],
        "/trailers" => vec![send_step(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 5\r\nx-smuggled: 1\r\n\r\n",
        )],
        "/bad-chunk" => vec![
            send_step(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n"),
            Step::Close,
        ],
        "/switch" => vec![send_step(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
        )],
        _ => vec![send_step(
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}", path.len()).as_bytes(),
        )],
    }
}

/// The one answer to `GET path` sent `via` one of the two paths.
async fn answer_via(proxy: &ProxyProcess, via: Via, path: &str) -> (String, Vec<u8>) {
    raw_exchange(proxy.port, request_via(via, "GET", path, "").as_bytes(), 1)
        .await
        .remove(0)
}

/// The answer to `GET path` sent `via` one path (its head in lowercase),
/// followed on the same client connection by `GET /after`, whose answer
/// must be its own: the first answer's framing swallowed nothing of the
/// next.
async fn answer_then_next(proxy: &ProxyProcess, via: Via, path: &str) -> (String, Vec<u8>) {
    let requests = [
        request_via(via, "GET", path, ""),
        request_via(via, "GET", "/after", ""),
    ]
    .concat();
    let mut answers = raw_exchange(proxy.port, requests.as_bytes(), 2).await;
    assert_eq!(answers[1].1, b"/after", "{via:?} after {path}");
    let (head, body) = answers.remove(0);
    (head.to_ascii_lowercase(), body)
}

/// An answer the proxy wrote itself: `status`, with `body` (the public
/// message, `origin unreachable` or `origin timeout`) when given.
fn assert_proxy_error(answer: &(String, Vec<u8>), status: u16, body: Option<&str>, via: Via) {
    assert!(
        answer.0.starts_with(&format!("HTTP/1.1 {status}")),
        "{via:?}: {answer:?}"
    );
    if let Some(body) = body {
        assert_eq!(answer.1, format!("{body}\n").as_bytes(), "{via:?}");
    }
}

/// The [`misbehaving`] origin behind a proxy with one listener thread:
/// every client connection shares its idle origin connections, so a
/// connection left dirty would be the next one used.
async fn misbehaving_origin_behind_one_thread() -> (ScriptedOrigin, ProxyProcess) {
    ScriptedOrigin::behind_proxy(misbehaving, &["--public-threads", "1"]).await
}

#[tokio::test]
async fn stray_bytes_after_an_answer_retire_the_origin_connection() {
    let (origin, proxy) = misbehaving_origin_behind_one_thread().await;
    for via in BOTH {
        for (method, path, status) in [
            ("HEAD", "/head-stray", 200),
            ("GET", "/no-content-stray", 204),
            ("GET", "/not-modified-stray", 304),
            ("GET", "/past-length", 200),
            ("GET", "/late-stray", 200),
        ] {
            let request = request_via(via, method, path, "");
            let answers = raw_exchange(proxy.port, request.as_bytes(), 1).await;
            assert!(
                answers[0].0.starts_with(&format!("HTTP/1.1 {status}")),
                "{via:?} {path}: {}",
                answers[0].0
            );
            // Let late bytes arrive while the connection waits idle.
            tokio::time::sleep(Duration::from_millis(300)).await;
            // The next request, on a new client connection, must get its
            // own answer, never the stray one, on a new origin connection.
            let before = origin.connections();
            let next = request_via(via, "GET", "/next", "");
            let answers = raw_exchange(proxy.port, next.as_bytes(), 1).await;
            assert_eq!(
                String::from_utf8_lossy(&answers[0].1),
                "/next",
                "{via:?} after {path}: {answers:?}"
            );
            assert_eq!(origin.connections(), before + 1, "{via:?} after {path}");
        }
    }
}

#[tokio::test]
async fn connection_never_removes_framing_host_or_forwarding_headers() {
    let (origin, proxy) = misbehaving_origin_behind_one_thread().await;
    for via in BOTH {
        // The origin's `Connection: content-length` keeps the length: the
        // next answer on the same client connection is not merged into
        // this body.
        let (head, body) = answer_then_next(&proxy, via, "/connection-content-length").await;
        assert!(head.contains("content-length: 5\r\n"), "{via:?}: {head}");
        assert_eq!(body, b"hello", "{via:?}");

        // A client's `Connection` cannot take Host or X-Forwarded-* away
        // from the origin.
        let path = format!("/client-connection-{via:?}");
        let request = request_via(
            via,
            "GET",
            &path,
            "Connection: host, x-forwarded-for, x-forwarded-proto, x-forwarded-host\r\nX-Forwarded-For: 192.0.2.7\r\n",
        );
        raw_exchange(proxy.port, request.as_bytes(), 1).await;
        let seen = origin.head_for(&path).to_ascii_lowercase();
        assert!(seen.contains("\r\nhost: localhost\r\n"), "{via:?}: {seen}");
        assert!(seen.contains("\r\nx-forwarded-for: "), "{via:?}: {seen}");
        assert!(seen.contains("127.0.0.1"), "{via:?}: {seen}");
        assert!(
            seen.contains("\r\nx-forwarded-proto: http\r\n"),
            "{via:?}: {seen}"
        );
        assert!(
            seen.contains("\r\nx-forwarded-host: localhost\r\n"),
            "{via:?}: {seen}"
        );
        // The request took the path it was meant to: the relay keeps the
        // client's header case, hyper writes names in lowercase.
        let original = origin.head_for(&path);
        assert_eq!(
            original.contains("\r\nHost: "),
            via == Via::Relay,
            "{original}"
        );
    }
}

#[tokio::test]
async fn a_transfer_coding_not_ending_in_chunked_reaches_the_client_close_delimited() {
    let (_origin, proxy) = misbehaving_origin_behind_one_thread().await;
    for via in BOTH {
        let all = raw_until_close(
            proxy.port,
            request_via(via, "GET", "/gzip-coded", "").as_bytes(),
        )
        .await;
        let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&all[..end]).to_ascii_lowercase();
        assert!(head.contains(" 200 "), "{via:?}: {head}");
        assert!(!head.contains("content-length"), "{via:?}: {head}");
        assert!(!head.contains("transfer-encoding"), "{via:?}: {head}");
        assert!(head.contains("connection: close\r\n"), "{via:?}: {head}");
        assert_eq!(&all[end..], b"0123456789 then the origin closes", "{via:?}");
    }
}

#[tokio::test]
async fn repeated_lengths_become_one_and_unequal_lengths_are_a_502() {
    let (_origin, proxy) = misbehaving_origin_behind_one_thread().await;
    for via in BOTH {
        for path in ["/length-list", "/length-twice"] {
            let (head, body) = answer_via(&proxy, via, path).await;
            let head = head.to_ascii_lowercase();
            assert_eq!(
                head.matches("content-length").count(),
                1,
                "{via:?} {path}: {head}"
            );
            assert!(
                head.contains("content-length: 5\r\n"),
                "{via:?} {path}: {head}"
            );
            assert_eq!(body, b"hello", "{via:?} {path}");
        }
        let answer = answer_via(&proxy, via, "/length-unequal").await;
        assert_proxy_error(&answer, 502, Some("origin unreachable"), via);
    }
}

#[tokio::test]
async fn trailers_are_dropped_on_both_paths() {
    let (_origin, proxy) = misbehaving_origin_behind_one_thread().await;
    for via in BOTH {
        let (head, body) = answer_then_next(&proxy, via, "/trailers").await;
        assert!(!head.contains("trailer"), "{via:?}: {head}");
        assert_eq!(body, b"hello", "{via:?}");
    }
    // Raw: nothing of the trailer section reaches the client.
    for via in BOTH {
        let request = request_via(via, "GET", "/trailers", "Connection: close\r\n");
        let all = raw_until_close(proxy.port, request.as_bytes()).await;
        let text = String::from_utf8_lossy(&all).to_ascii_lowercase();
        assert!(
            !text.contains("x-sum") && !text.contains("x-smuggled"),
            "{via:?}: {text}"
        );
        assert!(text.ends_with("\r\n0\r\n\r\n"), "{via:?}: {text:?}");
    }
}

#[tokio::test]
async fn a_framing_error_before_anything_was_sent_is_a_502() {
    let (_origin, proxy) = misbehaving_origin_behind_one_thread().await;
    for via in BOTH {
        let answer = answer_via(&proxy, via, "/bad-chunk").await;
        assert_proxy_error(&answer, 502, Some("origin unreachable"), via);
    }
}

#[tokio::test]
async fn only_websocket_upgrades_reach_the_origin() {
    let (origin, proxy) = misbehaving_origin_behind_one_thread().await;
    // A client asking for h2c: the origin sees a plain request.
    let request = format!(
        "GET /h2c HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {FIREFOX}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    );
    let answers = raw_exchange(proxy.port, request.as_bytes(), 1).await;
    assert!(answers[0].0.starts_with("HTTP/1.1 200"), "{answers:?}");
    assert_eq!(answers[0].1, b"/h2c");
    let seen = origin.head_for("/h2c").to_ascii_lowercase();
    assert!(!seen.contains("upgrade"), "{seen}");
    assert!(!seen.contains("http2-settings"), "{seen}");
    // An origin that switches protocols unasked gets no tunnel: a 502.
    for via in BOTH {
        let answer = answer_via(&proxy, via, "/switch").await;
        assert_proxy_error(&answer, 502, None, via);
    }
}

#[tokio::test]
async fn error_answers_never_name_the_origin() {
    let closed = common::free_port();
    let proxy = ProxyProcess::start(&["--origin", &format!("http://127.0.0.1:{closed}")]);
    for via in BOTH {
        let answer = answer_via(&proxy, via, "/x").await;
        assert_proxy_error(&answer, 502, Some("origin unreachable"), via);
        assert!(!answer.0.contains(&closed.to_string()), "{via:?}");
    }
    let slow = ScriptedOrigin::start(|_| vec![Step::Pause(Duration::from_secs(5))]).await;
    let proxy = ProxyProcess::start(&["--origin", &slow.url(), "--origin-timeout", "1"]);
    for via in BOTH {
        let answer = answer_via(&proxy, via, "/x").await;
        assert_proxy_error(&answer, 504, Some("origin timeout"), via);
    }
}

/// `trusted_proxies` (SPEC §1): from a trusted peer the client-sent
/// X-Forwarded-For is appended to and X-Forwarded-Proto passed on; from any
/// other peer both are replaced by what the connection shows — on both
/// passthrough paths, over raw sockets.
#[tokio::test]
async fn forwarding_headers_are_kept_from_trusted_peers_and_replaced_from_others() {
    let origin = ScriptedOrigin::start(misbehaving).await;
    let sent = "X-Forwarded-For: 203.0.113.9, 198.51.100.4\r\nX-Forwarded-Proto: https\r\n";
    let untrusted =
        ProxyProcess::start(&["--origin", &origin.url(), "--trusted-proxies", "10.0.0.0/8"]);
    let trusted = ProxyProcess::start(&[
        "--origin",
        &origin.url(),
        "--trusted-proxies",
        "10.0.0.0/8,127.0.0.1",
    ]);
    // Who sends, under which name, what the client says, what the origin
    // must see and what it must not.
    type Case<'a> = (
        &'a ProxyProcess,
        &'a str,
        &'a str,
        &'a [&'a str],
        &'a [&'a str],
    );
    let cases: [Case; 3] = [
        (
            &untrusted,
            "untrusted",
            sent,
            &[
                "\r\nx-forwarded-for: 127.0.0.1\r\n",
                "\r\nx-forwarded-proto: http\r\n",
            ],
            &["203.0.113.9", "x-forwarded-proto: https"],
        ),
        (
            &trusted,
            "trusted",
            sent,
            &[
                "\r\nx-forwarded-for: 203.0.113.9, 198.51.100.4, 127.0.0.1\r\n",
                "\r\nx-forwarded-proto: https\r\n",
            ],
            &[],
        ),
        // A trusted peer that says nothing gets the listener's own facts.
        (
            &trusted,
            "trusted-silent",
            "",
            &[
                "\r\nx-forwarded-for: 127.0.0.1\r\n",
                "\r\nx-forwarded-proto: http\r\n",
            ],
            &[],
        ),
    ];
    for via in BOTH {
        for (proxy, name, headers, present, absent) in &cases {
            let path = format!("/{name}-{via:?}");
            raw_exchange(
                proxy.port,
                request_via(via, "GET", &path, headers).as_bytes(),
                1,
            )
            .await;
            let seen = origin.head_for(&path).to_ascii_lowercase();
            for line in *present {
                assert!(seen.contains(line), "{via:?} {name}: no {line:?} in {seen}");
            }
            for text in *absent {
                assert!(!seen.contains(text), "{via:?} {name}: {text:?} in {seen}");
            }
            assert_eq!(
                seen.matches("x-forwarded-proto").count(),
                1,
                "{via:?} {name}: {seen}"
            );
        }
    }
}

/// The TLS listener keeps the plain one's guarantees: a WebSocket upgrade
/// over TLS (ALPN http/1.1) is relayed both ways.
#[tokio::test]
async fn websocket_is_relayed_on_the_tls_listener() {
    use common::tls::{client_config, TestCa};
    let origin = test_origin().await;
    let ca = TestCa::new("prerender-proxy test websocket CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf(&["localhost"]).write(dir.path(), "listener");
    let proxy = ProxyProcess::start(&[
        "--origin",
        &origin.url(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(&ca, &[b"http/1.1"]))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/ws", proxy.port);
    assert_websocket_echoes(tokio_tungstenite::client_async(url, tls), &["over", "tls"]).await;
}
