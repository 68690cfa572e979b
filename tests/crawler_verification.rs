//! Crawlers that lie, end to end: the real binary, real Chromium, a local
//! JavaScript origin, a real redis-server or the embedded store, and a
//! local DNS server (dnsmasq) holding the PTR and A records of verified,
//! spoofed and unresolvable clients.
//!
//! A resolver answers reverse lookups of 127.0.0.0/8 itself, so the clients
//! here are the addresses a trusted proxy names in `X-Forwarded-For`: the
//! test connects from 127.0.0.1, which is in `--trusted-proxies`.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::dns::DnsServer;
use common::proxy::{get, ProxyArgs, ProxyProcess, Reply, GOOGLEBOT};
use common::redis::RedisServer;
use common::spa::Spa;

const HOST: &str = "www.example.test";
const GPTBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";
/// A rendered bot (seo-tools) that claims no verifiable crawler.
const AHREFS: &str = "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)";
const RENDERED: &str = "Rendered by JavaScript";

/// Googlebot's own address: its PTR name is Google's and resolves back.
const VERIFIED: &str = "66.249.66.1";
/// PTR names Google's crawler, but that name resolves to 66.249.66.1.
const SPOOFED_PTR: &str = "203.0.113.5";
/// PTR names a host that is not Google's.
const FOREIGN_PTR: &str = "203.0.113.6";
/// No PTR record at all (NXDOMAIN).
const UNRESOLVABLE: &str = "203.0.113.9";
/// Inside the GPTBot ranges shipped in bot-patterns/ip-ranges.
const GPTBOT_RANGE: &str = "20.171.206.9";

fn dns() -> DnsServer {
    DnsServer::start(
        &[
            (SPOOFED_PTR, "crawl-66-249-66-1.googlebot.com"),
            (FOREIGN_PTR, "crawler.example.net"),
        ],
        &[
            ("crawl-66-249-66-1.googlebot.com", VERIFIED),
            ("crawler.example.net", FOREIGN_PTR),
        ],
    )
}

fn start(spa: &Spa, dns: &DnsServer, extra: &[&str]) -> ProxyProcess {
    start_trusting("127.0.0.1", spa, dns, extra)
}

fn start_trusting(trusted: &str, spa: &Spa, dns: &DnsServer, extra: &[&str]) -> ProxyProcess {
    start_with(trusted, &dns.addr(), spa, extra)
}

fn start_with(trusted: &str, dns: &str, spa: &Spa, extra: &[&str]) -> ProxyProcess {
    ProxyArgs::small_pool(&spa.url(), HOST)
        .quick_ready()
        .flag("--trusted-proxies", trusted)
        .flag("--dns-resolver", dns)
        .arg(extra)
        .start_ready()
}

/// `GET path` with `user_agent`, forwarded for `client` by a trusted proxy.
async fn from(proxy: &ProxyProcess, user_agent: &str, client: &str, path: &str) -> Reply {
    get(
        &proxy.url(path),
        &[
            ("host", HOST),
            ("user-agent", user_agent),
            // The first entry is the client's own invention; the trusted
            // proxy appended the address it saw.
            ("x-forwarded-for", &format!("66.249.66.200, {client}")),
        ],
    )
    .await
}

fn rendered(reply: &Reply) -> bool {
    reply.text().contains(RENDERED)
}

/// The value of one `/metrics` sample, 0 when absent.
async fn metric(proxy: &ProxyProcess, series: &str) -> f64 {
    let text = get(&proxy.admin_url("/metrics"), &[]).await.text();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

async fn verifications(proxy: &ProxyProcess, family: &str, result: &str) -> f64 {
    metric(
        proxy,
        &format!(r#"prerender_crawler_verifications_total{{family="{family}",result="{result}"}}"#),
    )
    .await
}

/// Polls until `check` holds (checks run in the background).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn log_mode_counts_failed_claims_and_changes_nothing() {
    let spa = Spa::start().await;
    let dns = dns();
    let redis = RedisServer::start();
    let redis_url = redis.url();
    // verify_crawlers = log is the default.
    let proxy = start(&spa, &dns, &["--redis", &redis_url]);

    for (i, client) in [VERIFIED, SPOOFED_PTR, FOREIGN_PTR, UNRESOLVABLE]
        .into_iter()
        .enumerate()
    {
        let path = format!("/log/{i}");
        let miss = from(&proxy, GOOGLEBOT, client, &path).await;
        assert_eq!(miss.header("x-prerender-cache"), Some("MISS"), "{client}");
        assert!(rendered(&miss), "{client}: {}", miss.text());
        let hit = from(&proxy, GOOGLEBOT, client, &path).await;
        assert_eq!(hit.header("x-prerender-cache"), Some("HIT"), "{client}");
    }
    // A bot claiming nothing verifiable renders too, however many.
    for i in 0..2 {
        let r = from(&proxy, AHREFS, UNRESOLVABLE, &format!("/log/seo/{i}")).await;
        assert_eq!(r.header("x-prerender-cache"), Some("MISS"));
    }

    // Every claim is counted once its check ends: 2 requests from each.
    eventually("the verified claims are counted", || async {
        verifications(&proxy, "googlebot", "verified").await == 2.0
    })
    .await;
    eventually("the three failed claims are counted", || async {
        verifications(&proxy, "googlebot", "failed").await == 6.0
    })
    .await;
    assert_eq!(verifications(&proxy, "googlebot", "error").await, 0.0);
    // A claim from a range file needs no lookup.
    let r = from(&proxy, GPTBOT, "198.51.100.7", "/log/gpt").await;
    assert_eq!(r.header("x-prerender-cache"), Some("MISS"));
    assert_eq!(verifications(&proxy, "gptbot", "failed").await, 1.0);
}

#[tokio::test]
async fn enforce_renders_verified_crawlers_and_answers_impostors_like_people() {
    let spa = Spa::start().await;
    let dns = dns();
    // The embedded store: the budget is counted in process.
    let proxy = start(
        &spa,
        &dns,
        &[
            "--verify-crawlers",
            "enforce",
            "--unverified-renders-per-minute",
            "1000",
        ],
    );

    let real = from(&proxy, GOOGLEBOT, VERIFIED, "/enforce/a").await;
    assert_eq!(real.header("x-prerender-cache"), Some("MISS"));
    assert!(rendered(&real), "{}", real.text());

    for client in [SPOOFED_PTR, FOREIGN_PTR, UNRESOLVABLE] {
        let documents = spa.documents("/enforce/b");
        let fake = from(&proxy, GOOGLEBOT, client, "/enforce/b").await;
        assert_eq!(fake.status, 200, "{client}");
        assert_eq!(fake.header("x-prerender-cache"), None, "{client}");
        assert!(!rendered(&fake), "{client} got a render");
        assert!(
            fake.text().contains("Loading"),
            "{client}: the origin's shell"
        );
        assert_eq!(spa.documents("/enforce/b"), documents + 1, "{client}");
    }
    // Nothing was rendered or cached for them.
    let later = from(&proxy, GOOGLEBOT, VERIFIED, "/enforce/b").await;
    assert_eq!(later.header("x-prerender-cache"), Some("MISS"));

    // Once a claim is known to be false, a cached page is not served to it
    // either: it is a person.
    let impostor = from(&proxy, GOOGLEBOT, SPOOFED_PTR, "/enforce/a").await;
    assert_eq!(impostor.header("x-prerender-cache"), None);
    assert!(!rendered(&impostor));
    let real = from(&proxy, GOOGLEBOT, VERIFIED, "/enforce/a").await;
    assert_eq!(real.header("x-prerender-cache"), Some("HIT"));

    // Published ranges decide for GPTBot.
    let gpt = from(&proxy, GPTBOT, GPTBOT_RANGE, "/enforce/gpt").await;
    assert_eq!(gpt.header("x-prerender-cache"), Some("MISS"));
    let not_gpt = from(&proxy, GPTBOT, "198.51.100.7", "/enforce/gpt2").await;
    assert_eq!(not_gpt.header("x-prerender-cache"), None);
    assert!(!rendered(&not_gpt));

    assert_eq!(verifications(&proxy, "googlebot", "failed").await, 4.0);
    assert_eq!(
        metric(
            &proxy,
            r#"prerender_requests_total{cache="none",family="none",kind="human",status_class="2xx"}"#
        )
        .await,
        5.0
    );
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let spa = Spa::start().await;
    let dns = dns();
    // The test's own address, 127.0.0.1, is not a trusted proxy here.
    let proxy = start_trusting(
        "192.0.2.0/24",
        &spa,
        &dns,
        &["--verify-crawlers", "enforce"],
    );
    let r = from(&proxy, GOOGLEBOT, VERIFIED, "/untrusted").await;
    assert_eq!(r.header("x-prerender-cache"), None);
    assert!(!rendered(&r), "a loopback client is not Googlebot");
    assert_eq!(verifications(&proxy, "googlebot", "failed").await, 1.0);
    assert_eq!(verifications(&proxy, "googlebot", "verified").await, 0.0);
}

#[tokio::test]
async fn a_silent_resolver_never_delays_a_hit_and_a_miss_waits_for_it_at_most_two_seconds() {
    let spa = Spa::start().await;
    // A "resolver" that takes queries and never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let _silent_tcp = std::net::TcpListener::bind(("127.0.0.1", port)).ok();
    let resolver = format!("127.0.0.1:{port}");
    let proxy = start_with(
        "127.0.0.1",
        &resolver,
        &spa,
        &["--verify-crawlers", "enforce"],
    );

    // GPTBot is checked against its ranges, without DNS: it renders.
    let gpt = from(&proxy, GPTBOT, GPTBOT_RANGE, "/silent/a").await;
    assert_eq!(gpt.header("x-prerender-cache"), Some("MISS"));

    // A hit is answered while its claim's check still waits for the
    // resolver (which can only end, as an error, at the check's deadline).
    let hit = from(&proxy, GOOGLEBOT, "203.0.113.20", "/silent/a").await;
    assert_eq!(hit.header("x-prerender-cache"), Some("HIT"));
    assert_eq!(verifications(&proxy, "googlebot", "error").await, 0.0);

    // A miss waits for its check at most 2 s, then counts it as failed.
    let started = Instant::now();
    let miss = from(&proxy, GOOGLEBOT, "203.0.113.21", "/silent/b").await;
    assert_eq!(miss.header("x-prerender-cache"), None);
    assert!(!rendered(&miss));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered after {:?}",
        started.elapsed()
    );
    eventually("both checks end as errors", || async {
        verifications(&proxy, "googlebot", "error").await == 2.0
    })
    .await;
    drop(silent);
}

/// Waits, if needed, until a minute has at least `room` left, so a test
/// counting a per-minute budget does not straddle two minutes.
async fn minute_with_room(room: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = Duration::from_secs(now.as_secs() % 60);
    if into + room > Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(60) - into + Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn unverified_bots_share_one_budget_per_site_across_instances() {
    let spa = Spa::start().await;
    let dns = dns();
    let redis = RedisServer::start();
    let redis_url = redis.url();
    let flags = [
        "--redis",
        redis_url.as_str(),
        "--verify-crawlers",
        "enforce",
        "--unverified-renders-per-minute",
        "2",
    ];
    let a = start(&spa, &dns, &flags);
    let b = start(&spa, &dns, &flags);
    minute_with_room(Duration::from_secs(40)).await;

    let first = from(&a, AHREFS, UNRESOLVABLE, "/budget/1").await;
    assert_eq!(first.header("x-prerender-cache"), Some("MISS"));
    let second = from(&b, AHREFS, UNRESOLVABLE, "/budget/2").await;
    assert_eq!(second.header("x-prerender-cache"), Some("MISS"));
    // The third render of the minute, on either instance, fails open.
    for proxy in [&a, &b] {
        let refused = from(proxy, AHREFS, UNRESOLVABLE, "/budget/3").await;
        assert_eq!(refused.header("x-prerender-cache"), Some("ERROR"));
        assert_eq!(refused.header("x-prerender-error"), Some("rate-limited"));
        assert!(refused.text().contains("Loading"), "the origin's answer");
    }
    // Hits are never limited, and verified crawlers are not counted.
    let hit = from(&b, AHREFS, UNRESOLVABLE, "/budget/1").await;
    assert_eq!(hit.header("x-prerender-cache"), Some("HIT"));
    let real = from(&b, GOOGLEBOT, VERIFIED, "/budget/4").await;
    assert_eq!(real.header("x-prerender-cache"), Some("MISS"));
    // No limit evicts a page.
    for path in ["/budget/1", "/budget/2", "/budget/4"] {
        assert!(redis.exists(&format!("render:{HOST}:{path}")), "{path}");
    }
    assert_eq!(
        metric(
            &a,
            &format!(r#"prerender_unverified_renders_refused_total{{domain="{HOST}"}}"#)
        )
        .await,
        1.0
    );
}
