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
    let (mut ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("handshake timed out")
    .expect("handshake failed");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "prerender", "ws"] {
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
