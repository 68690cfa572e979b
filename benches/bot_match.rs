//! Cost of classifying one User-Agent: a named crawler, a generic bot, a
//! desktop browser, an in-app browser and a library (the last three take
//! the longest path: every pattern misses, or a non-rendered family wins).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use prerender_proxy::bot::{is_mobile_crawler, BotDetector};

const USER_AGENTS: [(&str, &str); 6] = [
    (
        "googlebot_smartphone",
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.204 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ),
    (
        "unnamed_bot",
        "Mozilla/5.0 (compatible; FooBarBot/1.0; +https://foobar.example/bot)",
    ),
    (
        "human_desktop_chrome",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    (
        "human_in_app_facebook",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.39.93;FBBV/620516335;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/622140412]",
    ),
    (
        "human_in_app_tiktok",
        "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 musical_ly_2023405020 JsSdk/1.0 NetType/WIFI Channel/googleplay AppName/musical_ly app_version/34.5.2 ByteLocale/en ByteFullLocale/en Region/US BytedanceWebview/d8a21c6",
    ),
    ("curl", "curl/8.5.0"),
];

fn classify(c: &mut Criterion) {
    let detector = BotDetector::with_defaults().expect("built-in patterns compile");
    let mut group = c.benchmark_group("classify");
    for (name, user_agent) in USER_AGENTS {
        group.bench_function(name, |b| {
            b.iter(|| detector.classify(black_box(user_agent)))
        });
    }
    group.finish();
    c.bench_function("is_mobile_crawler", |b| {
        b.iter(|| is_mobile_crawler(black_box(USER_AGENTS[0].1)))
    });
}

criterion_group!(benches, classify);
criterion_main!(benches);
