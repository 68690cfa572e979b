//! Replays every committed fuzz seed (`fuzz/corpus/<target>/`) through the
//! same checks the `cargo fuzz` targets run, on the stable toolchain: the
//! targets' properties are exercised by every `cargo test`, with or
//! without cargo-fuzz.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    let failing: Vec<String> = seeds
        .iter()
        .filter(|seed| {
            let data = std::fs::read(seed).unwrap();
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|seed| seed.display().to_string())
        .collect();
    assert!(
        failing.is_empty(),
        "{target}: seeds failing their check (messages above): {failing:#?}"
    );
}

/// One test per fuzz target, `<target>_corpus`, replaying its seeds.
macro_rules! corpus_tests {
    ($($test:ident: $target:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                replay(stringify!($target), checks::$target);
            }
        )*
    };
}

corpus_tests!(
    cache_key_corpus: cache_key,
    bot_match_corpus: bot_match,
    config_parse_corpus: config_parse,
    admin_json_corpus: admin_json,
    sitemap_corpus: sitemap,
    relay_response_head_corpus: relay_response_head,
    relay_chunked_corpus: relay_chunked,
    proxy_header_corpus: proxy_header,
);

#[test]
fn relay_plan_corpus() {
    replay("relay_plan", checks::relay_plan);
    // The seeds reach the property: the relay takes the plain ones.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/relay_plan");
    for (seed, taken) in [
        ("human-get", true),
        ("underscore-host", true),
        ("ipv6-host", true),
        ("crawler-asset", true),
        ("crawler-page", false),
        ("with-length", false),
    ] {
        let data = std::fs::read(dir.join(seed)).unwrap();
        assert_eq!(checks::relay_plan_takes(&data), taken, "{seed}");
    }
}

/// Requests from a small grammar of methods, hosts, targets and headers
/// (near-misses included) through the relay's planner: whenever it takes
/// one, `request::resolve` accepts it for the same site and cache key.
mod plan_agrees_with_resolve {
    use proptest::prelude::*;

    fn request() -> impl Strategy<Value = String> {
        let method = prop::sample::select(vec!["GET", "HEAD", "POST", "get", "OPTIONS"]);
        let host = prop::sample::select(vec![
            "www.example.test",
            "WWW.Example.Test.",
            "www.example.test:8080",
            "my_app.example.com",
            "[::1]:3000",
            "[0::1]",
            "10.0.0.5",
            "010.0.0.5",
            "other.test",
            "www.example.test@evil.test",
            "a b",
            "",
        ]);
        let path = "(/[a-zA-Z0-9._~%;=-]{0,8}){1,3}(\\?[a-z=&%0-9]{0,12})?";
        let extra = prop::sample::subsequence(
            vec![
                "User-Agent: Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "User-Agent: Mozilla/5.0 Firefox/128.0",
                "X-Prerender: 1",
                "Connection: keep-alive, host",
                "Connection: close",
                "X-Forwarded-Host: evil.test",
                "Host: second.test",
                "Content-Length: 0",
                "Upgrade: h2c",
            ],
            0..4,
        );
        (method, host, path, extra).prop_map(|(method, host, path, extra)| {
            let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
            for line in extra {
                head.push_str(line);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            head
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn whenever_the_relay_takes_a_request_resolve_agrees(head in request()) {
            super::checks::relay_plan(head.as_bytes());
        }
    }
}
