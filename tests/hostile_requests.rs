//! Malformed and hostile requests over a raw socket: each gets its 4xx, none
//! reaches the origin, the process stays up, and nothing a client sends can
//! move a request to another site.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::handler_origin::{full, Origin};
use common::proxy::{get, ProxyProcess, FIREFOX};
use hyper::body::Incoming;
use hyper::{Request, Response};

async fn counting_origin() -> Origin {
    Origin::start(|req: Request<Incoming>| async move {
        let host = req
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        Response::new(full(format!("origin saw host {host}")))
    })
    .await
}

/// Sends raw bytes and returns the status code of the answer (None when the
/// connection closed without one).
fn raw(port: u16, request: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.split(' ').nth(1).and_then(|c| c.parse().ok())
}

fn req(line: &str, headers: &[&str]) -> Vec<u8> {
    let mut s = format!("{line}\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("Connection: close\r\n\r\n");
    s.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_request_gets_its_4xx_and_never_reaches_the_origin() {
    let origin = counting_origin().await;
    let proxy = ProxyProcess::start(&["--origin", &origin.url(), "--domain", "www.example.test"]);
    let port = proxy.port;
    let ua = "User-Agent: Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    let big_header = format!("X-Big: {}", "a".repeat(33 * 1024));
    let long_target = format!("GET /{} HTTP/1.1", "a".repeat(9 * 1024));
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "unknown host",
            req("GET /x HTTP/1.1", &["Host: other.test", ua]),
            &[421],
        ),
        ("missing host", req("GET /x HTTP/1.1", &[ua]), &[400]),
        (
            "malformed host",
            req("GET /x HTTP/1.1", &["Host: www.example.test@evil.test", ua]),
            &[400],
        ),
        (
            "host with a bad port",
            req("GET /x HTTP/1.1", &["Host: www.example.test:99999", ua]),
            &[400],
        ),
        (
            "host with spaces",
            req("GET /x HTTP/1.1", &["Host: www example test", ua]),
            &[400],
        ),
        (
            "duplicate host",
            req(
                "GET /x HTTP/1.1",
                &["Host: www.example.test", "Host: other.test", ua],
            ),
            &[400],
        ),
        (
            "header block over 32 KiB",
            req("GET /x HTTP/1.1", &["Host: www.example.test", &big_header]),
            &[431],
        ),
        (
            "target over 8 KiB",
            req(&long_target, &["Host: www.example.test"]),
            &[414],
        ),
        (
            "invalid percent-encoding",
            req("GET /a%zz HTTP/1.1", &["Host: www.example.test", ua]),
            &[400],
        ),
        (
            "truncated percent-encoding",
            req("GET /a% HTTP/1.1", &["Host: www.example.test", ua]),
            &[400],
        ),
        (
            "encoded CR LF",
            req(
                "GET /a%0d%0aSet-Cookie:x HTTP/1.1",
                &["Host: www.example.test", ua],
            ),
            &[400],
        ),
        (
            "encoded NUL",
            req("GET /a%00b HTTP/1.1", &["Host: www.example.test", ua]),
            &[400],
        ),
        (
            "dot-dot escape",
            req(
                "GET /../../etc/passwd HTTP/1.1",
                &["Host: www.example.test", ua],
            ),
            &[400],
        ),
        (
            "encoded dot-dot escape",
            req(
                "GET /%2e%2e/%2e%2e/x HTTP/1.1",
                &["Host: www.example.test", ua],
            ),
            &[400],
        ),
        (
            "absolute-form naming another host",
            req(
                "GET http://evil.test/x HTTP/1.1",
                &["Host: www.example.test", ua],
            ),
            &[400],
        ),
        (
            "CR in a header value",
            b"GET /x HTTP/1.1\r\nHost: www.example.test\r\nX-A: a\rb\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "NUL in a header value",
            b"GET /x HTTP/1.1\r\nHost: www.example.test\r\nX-A: a\0b\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "garbage request line",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "HTTP/1.0 without host",
            req("GET /x HTTP/1.0", &[ua]),
            &[400],
        ),
    ];
    for (name, bytes, expected) in &cases {
        let status = raw(port, bytes);
        assert!(
            status.is_some_and(|s| expected.contains(&s)),
            "{name}: expected {expected:?}, got {status:?}"
        );
    }
    assert_refused_before_the_origin(&origin, &proxy, "a refused request").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_clients_never_change_the_site() {
    let origin = counting_origin().await;
    let proxy = ProxyProcess::start(&["--origin", &origin.url(), "--domain", "www.example.test"]);
    // An unlisted Host stays unlisted whatever else the client claims.
    for h in [
        "x-forwarded-host",
        "x-original-url",
        "x-rewrite-url",
        "x-host",
        "forwarded",
    ] {
        let value = if h == "forwarded" {
            "host=www.example.test"
        } else {
            "www.example.test"
        };
        let r = get(
            &proxy.url("/x"),
            &[("host", "evil.test"), (h, value), ("user-agent", FIREFOX)],
        )
        .await;
        assert_eq!(r.status, 421, "{h} moved the request to a listed site");
    }
    // A listed Host keeps its site; the origin sees the listed host.
    let r = get(
        &proxy.url("/x"),
        &[
            ("host", "WWW.Example.Test."),
            ("x-forwarded-host", "evil.test"),
            ("user-agent", FIREFOX),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("www.example.test") || r.text().contains("WWW.Example.Test"),
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_after_the_header_timeout() {
    let origin = counting_origin().await;
    let proxy = ProxyProcess::start(&["--origin", &origin.url(), "--header-read-timeout", "2"]);
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: www.example.test\r\nX-Slow: ")
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 256];
    // Keep dribbling bytes: the deadline is for the whole head, not per byte.
    let mut closed = false;
    while start.elapsed() < Duration::from_secs(15) {
        if s.write_all(b"a").is_err() {
            closed = true;
            break;
        }
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {
                closed = true; // a 408 answer also ends it
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        closed,
        "slow request head kept the connection open for 15 s"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(origin.hits("/"), 0);
}

/// Two hundred and more malformed requests, built from families of defects:
/// each is refused with a 4xx (or the connection is closed when the bytes
/// are not HTTP at all), none reaches the origin, and the proxy stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_malformed_requests_never_reach_the_origin() {
    let origin = counting_origin().await;
    // A short head deadline: requests the parser waits on close quickly.
    let proxy = ProxyProcess::start(&[
        "--origin",
        &origin.url(),
        "--domain",
        "www.example.test",
        "--header-read-timeout",
        "1",
    ]);
    let host = "Host: www.example.test";
    let mut cases: Vec<Vec<u8>> = Vec::new();
    // Broken request lines.
    for line in [
        "GET",
        "GET /",
        "GET / HTTP/9.9",
        "GET / HTTP/1.1 extra",
        "/ HTTP/1.1",
        "GET  / HTTP/1.1",
        "GET / http/1.1",
        "G@T / HTTP/1.1",
        "GET\t/\tHTTP/1.1",
        "GET / HTTP/1.",
        "GET / HTTP/",
        "GET / HTTP/11",
        "\x00GET / HTTP/1.1",
    ] {
        cases.push(req(line, &[host]));
    }
    // Everything up to here is not HTTP a parser can answer: a 4xx or a
    // closed connection. Everything from here on parses as HTTP and must
    // get its 4xx, never a silent close.
    let parseable_from = cases.len();
    // Bad percent-encoding, encoded controls and escapes in many positions.
    for enc in [
        "%", "%0", "%g0", "%0g", "%%", "%00", "%0a", "%0d", "%0D%0A", "%zz", "%1", "%C0%",
    ] {
        for prefix in ["/", "/a/", "/a/b/"] {
            cases.push(req(&format!("GET {prefix}{enc}x HTTP/1.1"), &[host]));
            cases.push(req(&format!("GET {prefix}?q={enc} HTTP/1.1"), &[host]));
        }
    }
    // Dot-segments that climb above the root, raw and encoded.
    for path in [
        "/../x",
        "/a/../../x",
        "/%2e%2e/x",
        "/a/%2E%2E/%2e%2e/x",
        "/./../x",
        "/a/b/../../../x",
        "/%2e%2E/%2E%2e/x",
        "/.%2e/x",
        "/%2e./x",
        "/a/./../../x",
    ] {
        cases.push(req(&format!("GET {path} HTTP/1.1"), &[host]));
    }
    // Hosts that are not host names.
    for bad in [
        "",
        " ",
        "a b",
        "a/b",
        "a\\b",
        "a@b",
        "[::1",
        "::1",
        "a:",
        "a:-1",
        "a:65536",
        "a:1:2",
        "a..b",
        ".",
        "..",
        "-",
        "a_b c",
        "www.example.test:80@evil.test",
        "evil.test#www.example.test",
        "www.example.test/evil",
        "%77ww.example.test",
        "www.example.test%00",
        "ünïcode.test",
    ] {
        cases.push(req("GET / HTTP/1.1", &[&format!("Host: {bad}")]));
    }
    // Controls in header names and values.
    for raw in [
        b"X-A: a\rb".to_vec(),
        b"X-A: a\0b".to_vec(),
        b"X A: b".to_vec(),
        b"X-A : b".to_vec(),
        b": b".to_vec(),
        b"X-A\x7f: b".to_vec(),
        b"X-A: \x01".to_vec(),
        b"(X): b".to_vec(),
    ] {
        let mut r = b"GET / HTTP/1.1\r\nHost: www.example.test\r\n".to_vec();
        r.extend_from_slice(&raw);
        r.extend_from_slice(b"\r\n\r\n");
        cases.push(r);
    }
    // Oversized parts, at several sizes past the limits.
    for kib in [9, 16, 33, 40] {
        cases.push(req(
            &format!("GET /{} HTTP/1.1", "a".repeat(kib * 1024)),
            &[host],
        ));
    }
    for kib in [33, 38, 64] {
        cases.push(req(
            "GET / HTTP/1.1",
            &[host, &format!("X-Big: {}", "b".repeat(kib * 1024))],
        ));
    }
    for n in [200, 500] {
        let headers: Vec<String> = (0..n).map(|i| format!("X-H{i}: v")).collect();
        let mut all: Vec<&str> = vec![host];
        all.extend(headers.iter().map(String::as_str));
        cases.push(req("GET / HTTP/1.1", &all));
    }
    // Duplicate and conflicting hosts, absolute forms naming other hosts.
    for other in [
        "evil.test",
        "www.example.test.evil",
        "127.0.0.1",
        "[::1]",
        "WWW.EXAMPLE.TEST.EVIL",
    ] {
        cases.push(req("GET / HTTP/1.1", &[host, &format!("Host: {other}")]));
        cases.push(req(&format!("GET http://{other}/ HTTP/1.1"), &[host]));
    }
    let parseable_until = cases.len();
    // Random bytes that are not HTTP.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in (1..70).map(|i| i * 7) {
        let mut bytes = Vec::with_capacity(len + 4);
        for _ in 0..len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bytes.push((seed & 0xff) as u8);
        }
        bytes.extend_from_slice(b"\r\n\r\n");
        cases.push(bytes);
    }
    assert!(cases.len() >= 200, "only {} cases", cases.len());

    for (i, bytes) in cases.iter().enumerate() {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
        match raw(proxy.port, bytes) {
            Some(status) => assert!(
                (400..500).contains(&status),
                "case {i}: {shown:?} answered {status}"
            ),
            None => assert!(
                !(parseable_from..parseable_until).contains(&i),
                "case {i}: {shown:?} is HTTP but got no answer, only a closed connection"
            ),
        }
    }
    assert_refused_before_the_origin(&origin, &proxy, "malformed requests").await;
}

/// `what` never reached the origin, and the proxy is still up and serving.
async fn assert_refused_before_the_origin(origin: &Origin, proxy: &ProxyProcess, what: &str) {
    let total: usize = origin.hits.lock().unwrap().values().sum();
    assert_eq!(
        total,
        0,
        "{what} reached the origin: {:?}",
        origin.hits.lock().unwrap()
    );
    let r = get(
        &proxy.url("/ok"),
        &[("host", "www.example.test"), ("user-agent", FIREFOX)],
    )
    .await;
    assert_eq!(r.status, 200, "the proxy is still serving");
}

/// Sends raw bytes and reads until the proxy closes the connection (or 10 s
/// pass): every byte it sent, and whether it closed.
fn raw_all(port: u16, request: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

/// The status codes of the answers in `all`, in order.
fn statuses(all: &str) -> Vec<u16> {
    all.match_indices("HTTP/1.")
        .filter_map(|(i, _)| all[i..].split(' ').nth(1)?.parse().ok())
        .collect()
}

/// The classic request-smuggling set, over raw client sockets, alone and
/// behind a plain request the raw relay answers first: a request framed
/// two ways is framed by Transfer-Encoding and its connection closed after
/// the answer; anything ambiguous is a 400. No request hidden in a body
/// ever reaches the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_is_framed_once_or_refused() {
    let origin = counting_origin().await;
    let proxy = ProxyProcess::start(&["--origin", &origin.url(), "--domain", "www.example.test"]);
    let host = "Host: www.example.test";
    let hidden = "GET /smuggled HTTP/1.1\r\nHost: www.example.test\r\n\r\n";
    let plain_first = format!("GET /first HTTP/1.1\r\n{host}\r\nUser-Agent: {FIREFOX}\r\n\r\n");

    // Framed by Transfer-Encoding, then closed: CL.TE (the length covers
    // the hidden request, the chunked framing ends before it) and TE.CL
    // (the hidden request inside a chunk, a length that ends before it).
    let cl_te = format!(
        "POST /target HTTP/1.1\r\n{host}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}",
        5 + hidden.len()
    );
    let te_cl = format!(
        "POST /target HTTP/1.1\r\n{host}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{hidden}\r\n0\r\n\r\n{hidden}",
        hidden.len()
    );
    for (name, request) in [("CL.TE", &cl_te), ("TE.CL", &te_cl)] {
        for prefix in ["", plain_first.as_str()] {
            let (all, closed) = raw_all(proxy.port, format!("{prefix}{request}").as_bytes());
            let expected = if prefix.is_empty() {
                vec![200]
            } else {
                vec![200, 200]
            };
            assert_eq!(statuses(&all), expected, "{name} after {prefix:?}: {all}");
            assert!(
                closed,
                "{name}: the connection stayed open after a CL+TE request"
            );
        }
    }

    // Ambiguous framing: 400, and nothing reaches the origin.
    let body = format!("0\r\n\r\n{hidden}");
    let refused: Vec<(&str, String)> = vec![
        (
            "obfuscated TE (unknown coding)",
            "Transfer-Encoding: xchunked\r\n".to_string(),
        ),
        (
            "TE not ending in chunked",
            "Transfer-Encoding: chunked, identity\r\n".to_string(),
        ),
        ("TE identity", "Transfer-Encoding: identity\r\n".to_string()),
        (
            "TE lines, the last not chunked",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n".to_string(),
        ),
        (
            "space before the colon",
            "Transfer-Encoding : chunked\r\n".to_string(),
        ),
        (
            "TE folded onto the line before",
            "X-A: 1\r\n Transfer-Encoding: chunked\r\n".to_string(),
        ),
        (
            "TE with a vertical tab",
            "Transfer-Encoding:\x0bchunked\r\n".to_string(),
        ),
        (
            "unequal Content-Length lines",
            format!("Content-Length: 5\r\nContent-Length: {}\r\n", body.len()),
        ),
        (
            "unequal Content-Length list",
            format!("Content-Length: 5, {}\r\n", body.len()),
        ),
        (
            "signed Content-Length",
            format!("Content-Length: +{}\r\n", body.len()),
        ),
        (
            "negative Content-Length",
            "Content-Length: -1\r\n".to_string(),
        ),
    ];
    for (name, headers) in &refused {
        for method in ["POST", "GET"] {
            let request = format!("{method} /target HTTP/1.1\r\n{host}\r\n{headers}\r\n{body}");
            for prefix in ["", plain_first.as_str()] {
                let (all, closed) = raw_all(proxy.port, format!("{prefix}{request}").as_bytes());
                let mut expected = if prefix.is_empty() { vec![] } else { vec![200] };
                expected.push(400);
                assert_eq!(statuses(&all), expected, "{name} ({method}): {all}");
                assert!(closed, "{name} ({method}): connection left open");
            }
        }
    }
    // HTTP/1.0 has no Transfer-Encoding.
    let (all, _) = raw_all(
        proxy.port,
        format!("POST /target HTTP/1.0\r\n{host}\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
            .as_bytes(),
    );
    assert_eq!(statuses(&all), vec![400], "{all}");

    // Transfer-Encoding on a GET frames its (empty) body: the request after
    // it on the connection is the next request, not garbage.
    let requests = format!(
        "GET /te-get HTTP/1.1\r\n{host}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /after-te-get HTTP/1.1\r\n{host}\r\nConnection: close\r\n\r\n"
    );
    let (all, _) = raw_all(proxy.port, requests.as_bytes());
    assert_eq!(statuses(&all), vec![200, 200], "{all}");
    assert_eq!(origin.hits("/te-get"), 1);
    assert_eq!(origin.hits("/after-te-get"), 1);

    assert_eq!(
        origin.hits("/smuggled"),
        0,
        "{:?}",
        origin.hits.lock().unwrap()
    );
    // CL.TE and TE.CL reached the origin once per attempt, nothing else did.
    assert_eq!(
        origin.hits("/target"),
        4,
        "{:?}",
        origin.hits.lock().unwrap()
    );
}

/// Whatever the configuration accepts as a domain is served end to end,
/// crawlers included (one `Domain` parse for config, routing and cache
/// key); what it cannot serve is refused at start, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_configured_host_is_routed_rendered_and_cached() {
    let origin = Origin::start(|_req: Request<Incoming>| async move {
        Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .body(full("<html><body><h1>underscored site</h1></body></html>"))
            .unwrap()
    })
    .await;
    let proxy =
        ProxyProcess::start_ready(&["--origin", &origin.url(), "--domain", "My_App.example.com"]);
    let first = proxy.crawl("my_app.example.com", "/page").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(
        first.header("x-prerender-cache"),
        Some("MISS"),
        "{}",
        first.text()
    );
    assert!(first.text().contains("underscored site"));
    let again = proxy.crawl("MY_APP.example.com.:3000", "/page").await;
    assert_eq!(again.header("x-prerender-cache"), Some("HIT"));
    let human = get(
        &proxy.url("/page"),
        &[("host", "my_app.example.com"), ("user-agent", FIREFOX)],
    )
    .await;
    assert_eq!(human.status, 200);

    for (bad, field) in [
        ("bücher.example", "domain"),
        ("www.example.com:8080", "domain"),
    ] {
        let out = std::process::Command::new(common::proxy::BIN)
            .args(["serve", "--origin", "http://127.0.0.1:9", "--domain", bad])
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(said.contains(field), "{bad}: {said}");
    }
}
