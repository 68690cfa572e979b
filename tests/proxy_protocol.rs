//! The PROXY protocol from trusted peers (`proxy_protocol = true`), over
//! raw sockets against the real binary: v1 and v2 headers name the client
//! the origin sees in X-Forwarded-For (on the raw relay and on hyper's
//! path), the request behind the header is served as sent, a trusted peer
//! without a header is refused, and peers that are not trusted are read
//! as plain HTTP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::origin::{Route, TestOrigin};
use common::proxy::{ProxyArgs, ProxyProcess, FIREFOX};

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Sends `bytes` and reads until the proxy closes (the requests ask it to).
fn exchange(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: www.example.test\r\nUser-Agent: {FIREFOX}\r\n{extra}Connection: close\r\n\r\n"
    )
}

fn v2_tcp4(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&source);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&3000u16.to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_from_trusted_peers_name_the_client() {
    let origin = TestOrigin::start(vec![("/", Route::with_type("text/plain", "hello"))]).await;
    let proxy = ProxyProcess::start(&[
        "--origin",
        origin.url().as_str(),
        "--trusted-proxies",
        "127.0.0.1",
        "--proxy-protocol",
    ]);
    let port = proxy.port;
    let xff = |path: &str| {
        origin.requests(path).pop().map(|s| {
            (
                s.headers
                    .get("x-forwarded-for")
                    .cloned()
                    .unwrap_or_default(),
                s.headers
                    .get("x-forwarded-proto")
                    .cloned()
                    .unwrap_or_default(),
            )
        })
    };

    // v1, raw relay.
    let mut bytes = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 3000\r\n".to_vec();
    bytes.extend_from_slice(request("/", "X-Forwarded-For: 6.6.6.6\r\n").as_bytes());
    let answer = tokio::task::spawn_blocking(move || exchange(port, &bytes))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
    // The header's source is a client, not a trusted proxy: its own
    // X-Forwarded-For is replaced.
    assert_eq!(xff("/"), Some(("203.0.113.7".into(), "http".into())));

    // v2, hyper's path (a request with a body).
    let mut bytes = v2_tcp4([198, 51, 100, 9], 4321);
    bytes.extend_from_slice(
        b"POST / HTTP/1.1\r\nHost: www.example.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    );
    let answer = tokio::task::spawn_blocking(move || exchange(port, &bytes))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(xff("/").unwrap().0, "198.51.100.9");

    // A v2 LOCAL header (the balancer's own check): the peer stays the client.
    let mut bytes = V2_SIGNATURE.to_vec();
    bytes.extend_from_slice(&[0x20, 0x00, 0, 0]);
    bytes.extend_from_slice(request("/", "").as_bytes());
    let answer = tokio::task::spawn_blocking(move || exchange(port, &bytes))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(xff("/").unwrap().0, "127.0.0.1");

    // A trusted peer without a header is refused: no answer, no origin request.
    let before = origin.total_hits();
    let bytes = request("/", "").into_bytes();
    let answer = tokio::task::spawn_blocking(move || exchange(port, &bytes))
        .await
        .unwrap();
    assert_eq!(answer, "");
    assert_eq!(origin.total_hits(), before);

    // Where the peer is not trusted, no header is read: plain HTTP works,
    // and a PROXY line is no way to choose an address.
    let plain = ProxyProcess::start(&[
        "--origin",
        origin.url().as_str(),
        "--trusted-proxies",
        "10.0.0.0/8",
        "--proxy-protocol",
    ]);
    let port = plain.port;
    let bytes = request("/", "").into_bytes();
    let answer = tokio::task::spawn_blocking(move || exchange(port, &bytes))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(xff("/").unwrap().0, "127.0.0.1");
    let mut bytes = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 3000\r\n".to_vec();
    bytes.extend_from_slice(request("/", "").as_bytes());
    let answer = tokio::task::spawn_blocking(move || exchange(port, &bytes))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[test]
fn proxy_protocol_without_trusted_proxies_is_refused_by_name() {
    let out = std::process::Command::new(common::proxy::BIN)
        .args([
            "serve",
            "--origin",
            "http://127.0.0.1:9",
            "--proxy-protocol",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("proxy_protocol"), "{err}");
}

/// The crawler's log line names the client the PROXY header or a trusted
/// proxy's X-Forwarded-For gives, not the balancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawler_log_lines_name_the_client_behind_trusted_proxies() {
    let origin = TestOrigin::start(vec![(
        "/page",
        Route::html("<html><body><p>crawled</p></body></html>"),
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    let mut proxy = ProxyArgs::any_host(origin.url().as_str())
        .flag("--tabs-per-browser", "1")
        .flag("--trusted-proxies", "127.0.0.1")
        .arg(&["--proxy-protocol"])
        .flag("--verify-crawlers", "off")
        .start_with_stderr(
            &[("RUST_LOG", "info")],
            std::fs::File::create(&log).unwrap(),
        );
    proxy.wait_until("/readyz", Duration::from_secs(30));
    let port = proxy.port;
    let googlebot = common::proxy::GOOGLEBOT;
    for (header, xff) in [
        ("PROXY TCP4 203.0.113.7 127.0.0.1 5555 3000\r\n", ""),
        // A trusted balancer (the PROXY source is trusted too) naming the
        // client in X-Forwarded-For.
        (
            "PROXY TCP4 127.0.0.1 127.0.0.1 5555 3000\r\n",
            "X-Forwarded-For: 198.51.100.23\r\n",
        ),
    ] {
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(
            format!(
                "GET /page HTTP/1.1\r\nHost: www.example.test\r\nUser-Agent: {googlebot}\r\n{xff}Connection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        let answer = tokio::task::spawn_blocking(move || exchange(port, &bytes))
            .await
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("crawled"), "{answer}");
    }
    proxy.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" INFO ") && l.contains("crawler") && l.contains("/page"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("client=203.0.113.7"), "{}", lines[0]);
    assert!(lines[1].contains("client=198.51.100.23"), "{}", lines[1]);
}
