//! TLS on the public listener, end to end: the real binary with two sites,
//! each with its own certificate (made in the test by a test CA), and a
//! default one. Each SNI gets its certificate, h2 and HTTP/1.1 are chosen
//! by ALPN, requests keep the plain listener's guarantees (4xx, the bot
//! path, X-Forwarded-Proto: https), and a SIGHUP with new files switches
//! certificates while a long download on an old connection completes.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use common::origin::{Route, TestOrigin};
use common::proxy::{config_file, ProxyProcess, FIREFOX, GOOGLEBOT};
use common::tls::{client_config, Leaf, TestCa};

const A: &str = "a.example.test";
const B: &str = "b.example.test";
const BIG: usize = 16 * 1024 * 1024;

fn der(leaf: &Leaf) -> Vec<u8> {
    CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

/// A TLS connection to the proxy naming `sni` and offering `alpn`.
async fn connect(port: u16, ca: &TestCa, sni: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(ca, alpn));
    connector
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .unwrap()
}

fn served_cert(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

fn alpn(tls: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

fn request(host: &str, path: &str, ua: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("https://{host}{path}"))
        .header("host", host)
        .header("user-agent", ua)
        .body(Empty::new())
        .unwrap()
}

async fn http1(tls: TlsStream<TcpStream>) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn text(resp: Response<Incoming>) -> String {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_each_sites_certificate_alpn_picks_the_protocol_and_sighup_reloads() {
    let ca = TestCa::new("prerender-proxy test listener CA");
    let (leaf_a, leaf_b, leaf_default) = (
        ca.leaf(&[A]),
        ca.leaf(&[B]),
        ca.leaf(&["default.test", "other.test"]),
    );
    let origin = TestOrigin::start(vec![
        ("/", Route::with_type("text/plain", "hello")),
        (
            "/page",
            Route::html(
                "<html><body><div id=app></div><script>\
                 document.getElementById('app').textContent='rendered behind tls'</script></body></html>",
            ),
        ),
        ("/big.bin", Route::bytes("application/octet-stream", vec![b'x'; BIG])),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (a_cert, a_key) = leaf_a.write(dir.path(), "a");
    let (b_cert, b_key) = leaf_b.write(dir.path(), "b");
    let (d_cert, d_key) = leaf_default.write(dir.path(), "default");
    let config = config_file(&format!(
        r#"
        browsers = 1
        tabs_per_browser = 1
        ready_timeout = 5
        tls_cert = "{d_cert}"
        tls_key = "{d_key}"
        [[sites]]
        domain = "{A}"
        origin = "{origin}"
        tls_cert = "{a_cert}"
        tls_key = "{a_key}"
        [[sites]]
        domain = "{B}"
        origin = "{origin}"
        tls_cert = "{b_cert}"
        tls_key = "{b_key}"
        "#,
        origin = origin.url(),
        a_cert = a_cert.display(),
        a_key = a_key.display(),
        b_cert = b_cert.display(),
        b_key = b_key.display(),
        d_cert = d_cert.display(),
        d_key = d_key.display(),
    ));
    let proxy = ProxyProcess::start_with_config(&config);
    let port = proxy.port;

    // SNI: each site's certificate, the default for any other name.
    for (sni, leaf) in [(A, &leaf_a), (B, &leaf_b), ("other.test", &leaf_default)] {
        let tls = connect(port, &ca, sni, &[b"http/1.1"]).await;
        assert_eq!(served_cert(&tls), der(leaf), "{sni}");
    }

    // ALPN http/1.1: the origin's answer, with X-Forwarded-Proto: https.
    let tls = connect(port, &ca, A, &[b"http/1.1"]).await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"http/1.1"[..]));
    let mut h1 = http1(tls).await;
    let resp = h1.send_request(request(A, "/", FIREFOX)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, "hello");
    let seen = origin.requests("/").pop().unwrap();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["host"], A);
    // The plain listener's refusals hold: an unknown host is 421.
    // (hyper hands back the connection asynchronously after a response: wait
    // for it rather than race it.)
    h1.ready().await.unwrap();
    let resp = h1
        .send_request(request("unknown.test", "/", FIREFOX))
        .await
        .unwrap();
    assert_eq!(resp.status(), 421);

    // ALPN h2.
    let tls = connect(port, &ca, B, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn(&tls).as_deref(), Some(&b"h2"[..]));
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = request(B, "/", FIREFOX);
    req.headers_mut().remove("host");
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert_eq!(text(resp).await, "hello");
    // The bot path over h2: rendered.
    h2.ready().await.unwrap();
    let mut req = request(B, "/page", GOOGLEBOT);
    req.headers_mut().remove("host");
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("x-prerender-cache")
            .and_then(|v| v.to_str().ok()),
        Some("MISS")
    );
    assert!(text(resp).await.contains("rendered behind tls"));

    // A long download starts on an old connection ...
    let old = connect(port, &ca, A, &[b"http/1.1"]).await;
    let mut download = http1(old).await;
    let resp = download
        .send_request(request(A, "/big.bin", FIREFOX))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut received = 0;
    while received < 64 * 1024 {
        let frame = body.frame().await.unwrap().unwrap();
        received += frame.data_ref().map_or(0, Bytes::len);
    }

    // ... new files for A and a SIGHUP: new handshakes get the new certificate.
    let renewed = ca.leaf(&[A]);
    std::fs::write(&a_cert, &renewed.cert_pem).unwrap();
    std::fs::write(&a_key, &renewed.key_pem).unwrap();
    unsafe {
        libc::kill(proxy.pid() as i32, libc::SIGHUP);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tls = connect(port, &ca, A, &[b"http/1.1"]).await;
        if served_cert(&tls) == der(&renewed) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tls = connect(port, &ca, B, &[b"http/1.1"]).await;
    assert_eq!(served_cert(&tls), der(&leaf_b), "B unchanged");

    // The old connection's download completes.
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, Bytes::len);
    }
    assert_eq!(received, BIG);
    // And the process is still serving.
    let mut h1 = http1(connect(port, &ca, A, &[b"http/1.1"]).await).await;
    let resp = h1.send_request(request(A, "/", FIREFOX)).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_without_tls_changes_nothing_and_ends_nothing() {
    let origin = TestOrigin::start(vec![("/", Route::with_type("text/plain", "hello"))]).await;
    let mut proxy = ProxyProcess::start(&["--origin", origin.url().as_str()]);
    unsafe {
        libc::kill(proxy.pid() as i32, libc::SIGHUP);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(proxy.child.try_wait().unwrap().is_none(), "still running");
    let r = common::proxy::get(&proxy.url("/"), &[("user-agent", FIREFOX)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello");
}
