//! What crawler verification adds to a cache hit under
//! `verify_crawlers = "log"`: the client address behind a trusted proxy
//! and the standing of a Googlebot claim whose verdict is cached (the
//! claim's User-Agent, the verdict cache, the counter), next to the claim
//! of a User-Agent that claims nothing.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use futures::future::BoxFuture;
use futures::FutureExt;
use hyper::header::{HeaderMap, HeaderValue};
use prerender_proxy::config::parse_nets;
use prerender_proxy::metrics::Metrics;
use prerender_proxy::proxy::client_addr::TrustedProxies;
use prerender_proxy::verify::dns::{CrawlerDns, LookupError};
use prerender_proxy::verify::ranges::IpRanges;
use prerender_proxy::verify::{CrawlerVerifier, Standing, VerifyMode};

const GOOGLEBOT: &str = "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.204 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const AHREFS: &str = "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)";
const CLIENT: &str = "66.249.66.1";

/// Answers every check as Google's crawler.
struct GoogleDns;

impl CrawlerDns for GoogleDns {
    fn reverse(&self, _ip: IpAddr) -> BoxFuture<'_, Result<Vec<String>, LookupError>> {
        async { Ok(vec!["crawl-66-249-66-1.googlebot.com".to_string()]) }.boxed()
    }
    fn forward<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, LookupError>> {
        async { Ok(vec![CLIENT.parse().unwrap()]) }.boxed()
    }
}

fn standing(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let metrics = Metrics::new();
    let verifier = CrawlerVerifier::new(
        VerifyMode::Log,
        IpRanges::built_in(),
        Some(Arc::new(GoogleDns)),
        &metrics,
    );
    let trusted = TrustedProxies::new(parse_nets(["127.0.0.1"]).unwrap());
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_static(CLIENT));
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    // Cache the verdict first.
    let first = verifier.standing(GOOGLEBOT, CLIENT.parse().unwrap());
    runtime.block_on(first.settle(std::time::Duration::from_secs(5)));
    assert!(matches!(
        verifier.standing(GOOGLEBOT, CLIENT.parse().unwrap()),
        Standing::Known(_)
    ));

    let mut group = c.benchmark_group("verify_hit");
    group.bench_function("client_addr", |b| {
        b.iter(|| trusted.client_addr(black_box(peer), black_box(&headers)))
    });
    group.bench_function("googlebot_cached_verdict", |b| {
        b.iter(|| {
            verifier.standing_of(black_box(GOOGLEBOT), || {
                trusted.client_addr(black_box(peer), black_box(&headers))
            })
        })
    });
    group.bench_function("no_claim", |b| {
        b.iter(|| {
            verifier.standing_of(black_box(AHREFS), || {
                trusted.client_addr(black_box(peer), black_box(&headers))
            })
        })
    });
    group.finish();
}

criterion_group!(benches, standing);
criterion_main!(benches);
