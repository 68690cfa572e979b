//! The properties the fuzz targets check, one function per target. Shared
//! by the `cargo fuzz` targets (`fuzz/fuzz_targets/`) and by the stable
//! regression test that replays the committed corpora (`tests/fuzz_corpus.rs`).
//! Each function takes the raw input and panics when a property fails.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE, USER_AGENT};
use http::Method;
use http_body_util::Full;

use prerender_proxy::admin::body::{
    read_json, BodyError, RefreshRequest, WarmRequest, WarmTarget, MAX_URL_BYTES, MAX_WARM_URLS,
};
use prerender_proxy::admin::sitemap::{decode_sitemap_body, parse_sitemap};
use prerender_proxy::bot::{BotDetector, PassReason, RenderDecision, UaVerdict};
use prerender_proxy::cache::key::{normalize_path, MAX_HOST_BYTES, MAX_PATH_BYTES};
use prerender_proxy::cache::CacheKey;
use prerender_proxy::cli::ServeArgs;
use prerender_proxy::config::file::FileConfig;
use prerender_proxy::config::{Config, ConfigError, Plan, Site, SiteTable};
use prerender_proxy::proxy::relay::{fuzzing, Framing};
use prerender_proxy::proxy::request::resolve;

/// Longest error text an admin API client is sent for a bad body.
const MAX_BODY_ERROR_BYTES: usize = 1024;

// ---------------------------------------------------------------------------
// cache_key

/// Input: lines of text: host, request target, then significant query
/// parameter names; a leading `m` line selects the mobile variant.
///
/// `CacheKey::new` never panics; a key it makes is well-formed (printable
/// ASCII, path from `/` with no dot segments, within the length bounds),
/// parses back from its string form, and normalising its own parts again
/// gives the same key. The admin API's `from_public_url` obeys the same.
pub fn cache_key(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines: Vec<&str> = text.split('\n').collect();
    let mobile = lines.first() == Some(&"m");
    if mobile {
        lines.remove(0);
    }
    let host = lines.first().copied().unwrap_or("");
    let target = lines.get(1).copied().unwrap_or("");
    let params: Vec<String> = lines.iter().skip(2).map(|s| s.to_string()).collect();

    if let Ok(key) = CacheKey::new(host, target, &params, mobile) {
        check_key(&key, &params, mobile);
    }
    // The same text as a public URL, as the admin API receives it.
    for url in [
        format!("https://{host}{target}"),
        target.to_string(),
        host.to_string(),
    ] {
        if let Ok(key) = CacheKey::from_public_url(&url, &params, mobile) {
            check_key(&key, &params, mobile);
            let again = format!("https://{}{}", key.domain(), key.path());
            assert_eq!(
                CacheKey::from_public_url(&again, &params, mobile).as_ref(),
                Ok(&key),
                "public URL of {key} does not give it back"
            );
        }
    }
    // The path normalisation alone (used for every request path) is idempotent.
    let path = target.split(['?', '#']).next().unwrap_or("");
    if let Ok(normal) = normalize_path(path) {
        assert_eq!(
            normalize_path(&normal).as_deref(),
            Ok(normal.as_str()),
            "normalize_path({path:?}) is not idempotent"
        );
    }
}

fn check_key(key: &CacheKey, params: &[String], mobile: bool) {
    let domain = key.domain();
    let path = key.path();
    assert!(
        !domain.is_empty() && domain.len() <= MAX_HOST_BYTES,
        "{key}: domain length"
    );
    // Host-name characters, or an IPv6 address in brackets.
    let name = domain.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
    });
    let ipv6 = domain.starts_with('[')
        && domain.ends_with(']')
        && domain[1..domain.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok();
    assert!(name || ipv6, "{key}: domain bytes");
    assert!(path.starts_with('/'), "{key}: path must start with /");
    assert!(path.len() <= MAX_PATH_BYTES, "{key}: path too long");
    assert!(
        path.bytes().all(|b| b.is_ascii_graphic()),
        "{key}: raw byte outside printable ASCII"
    );
    assert!(!path.contains('#'), "{key}: fragment kept");
    let (bare, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    assert!(
        !bare.split('/').any(|s| s == "." || s == ".."),
        "{key}: dot segment left"
    );
    if params.is_empty() {
        assert!(query.is_none(), "{key}: query kept without query_params");
    }
    assert_eq!(key.is_mobile(), mobile);
    let stored = key.to_string();
    assert!(stored.starts_with("render:"), "{stored}");
    assert_eq!(
        CacheKey::parse(&stored).as_ref(),
        Ok(key),
        "{stored} does not parse back"
    );
    assert_eq!(
        CacheKey::new(domain, path, params, mobile).as_ref(),
        Ok(key),
        "normalising {stored} again changes it"
    );
}

// ---------------------------------------------------------------------------
// bot_match

fn detector() -> &'static BotDetector {
    static DETECTOR: OnceLock<BotDetector> = OnceLock::new();
    DETECTOR.get_or_init(|| BotDetector::with_defaults().expect("built-in patterns compile"))
}

/// Input: a User-Agent header value, any bytes.
///
/// Classifying never panics; surrounding whitespace does not change the
/// verdict; a pattern verdict names a rule that matches and whose family
/// is rendered; and the request decision for a plain `GET /` agrees with
/// the verdict.
pub fn bot_match(data: &[u8]) {
    let bots = detector();
    let ua = String::from_utf8_lossy(data);
    let verdict = bots.classify(&ua);
    assert_eq!(
        bots.classify(&format!(" \t{ua} ")),
        verdict,
        "whitespace changed the verdict for {ua:?}"
    );
    let matching: Vec<_> = bots.matching_rules(&ua).collect();
    if let UaVerdict::Bot {
        rule,
        family: Some(family),
    } = &verdict
    {
        let named = matching
            .iter()
            .find(|r| r.name() == rule.as_str())
            .unwrap_or_else(|| panic!("{ua:?}: rule {rule} decided but does not match"));
        assert_eq!(named.family(), *family);
        assert!(bots.rendered_families().contains(family));
    }
    let _ = prerender_proxy::bot::is_mobile_crawler(&ua);

    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(USER_AGENT, value);
    let decision = bots.decide(&Method::GET, "/", None, &headers, &regex::RegexSet::empty());
    assert_eq!(
        matches!(decision, RenderDecision::Render { .. }),
        verdict.is_bot(),
        "{ua:?}: decide() says {decision}, classify() says {verdict}"
    );
}

// ---------------------------------------------------------------------------
// config_parse

/// Input: the text of a config file (TOML).
///
/// Parsing and resolving never panic; an error is one line naming its
/// field; an accepted configuration has its counts in range and durations
/// the proxy can add to the clock (deadlines, expiry times) without overflow.
pub fn config_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = match FileConfig::parse(text) {
        Ok(file) => file,
        Err(e) => return check_config_error(&e),
    };
    let config = match Config::from_parts(&ServeArgs::default(), file) {
        Ok(config) => config,
        Err(e) => return check_config_error(&e),
    };
    assert!(config.browsers >= 1 && config.tabs_per_browser >= 1);
    assert!(config.max_connections >= 1 && config.queue_capacity >= 1);
    let mut durations: Vec<(String, Duration)> = [
        ("render_timeout", config.render_timeout),
        ("ready_timeout", config.ready_timeout),
        ("cache_ttl", config.cache_ttl),
        ("browser_max_age", config.browser_max_age),
        ("origin_timeout", config.origin_timeout),
        ("header_read_timeout", config.header_read_timeout),
        ("shutdown_timeout", config.shutdown_timeout),
    ]
    .into_iter()
    .map(|(field, d)| (field.to_string(), d))
    .collect();
    for (name, plan) in &config.plans {
        let fields = [
            ("refresh_every", plan.refresh_every),
            ("cache_ttl", plan.cache_ttl),
            ("stale_while_revalidate", Some(plan.stale_window())),
            ("error_ttl", Some(plan.error_ttl)),
            ("poll_every", plan.poll_every),
        ];
        for (field, d) in fields {
            if let Some(d) = d {
                durations.push((format!("plans.{name}.{field}"), d));
            }
        }
    }
    for (field, d) in durations {
        check_usable_duration(&field, d);
    }
}

/// A configured duration is used in sums of a few terms (a render's lock
/// lives `render_timeout × 3 + 5 s`; a page expires at `now + cache_ttl +
/// stale_while_revalidate`): several times it must still fit the clock.
fn check_usable_duration(field: &str, d: Duration) {
    let scaled = d
        .checked_mul(4)
        .unwrap_or_else(|| panic!("{field} = {d:?} overflows when scaled"));
    assert!(
        SystemTime::now().checked_add(scaled).is_some(),
        "{field} = {d:?} overflows the wall clock"
    );
    assert!(
        Instant::now().checked_add(scaled).is_some(),
        "{field} = {d:?} overflows the monotonic clock"
    );
    assert!(
        u64::try_from(scaled.as_millis()).is_ok_and(|ms| ms <= i64::MAX as u64),
        "{field} = {d:?} does not fit a Redis expiry in milliseconds"
    );
}

fn check_config_error(e: &ConfigError) {
    let line = e.to_string();
    assert!(!e.field.is_empty(), "error without a field: {line}");
    assert!(
        !line.contains(['\n', '\r']),
        "error is not one line: {line:?}"
    );
}

// ---------------------------------------------------------------------------
// admin_json

/// Input: a request body for `POST /api/v1/warm` and `POST /api/v1/refresh`.
///
/// Reading never panics and never hangs; a refused body gets a 4xx with a
/// short message; an accepted warm request lists 1..=10,000 URLs of
/// bounded length, and every URL it accepts can be turned into a cache key
/// (or refused) without panicking.
pub fn admin_json(data: &[u8]) {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let body = || Full::new(Bytes::copy_from_slice(data));

    match futures::executor::block_on(read_json::<WarmRequest, _>(&headers, body())) {
        Ok(request) => match request.into_target() {
            Ok(WarmTarget::Urls(urls)) => {
                assert!((1..=MAX_WARM_URLS).contains(&urls.len()));
                for url in &urls {
                    check_accepted_url(url);
                }
            }
            Ok(WarmTarget::Sitemap(url)) => check_accepted_url(&url),
            Err(e) => check_body_error(e),
        },
        Err(e) => check_body_error(e),
    }
    match futures::executor::block_on(read_json::<RefreshRequest, _>(&headers, body())) {
        Ok(request) => match request.validate() {
            Ok(()) => check_accepted_url(&request.url),
            Err(e) => check_body_error(e),
        },
        Err(e) => check_body_error(e),
    }
}

fn check_accepted_url(url: &str) {
    assert!(!url.trim().is_empty() && url.len() <= MAX_URL_BYTES);
    let _ = CacheKey::from_public_url(url, &[], false);
}

fn check_body_error(e: BodyError) {
    let status = e.status();
    assert!(status.is_client_error(), "{e}: status {status}");
    let message = e.to_string();
    assert!(
        message.len() <= MAX_BODY_ERROR_BYTES,
        "error message of {} bytes",
        message.len()
    );
    let response = e.into_response();
    assert_eq!(response.status(), status);
}

// ---------------------------------------------------------------------------
// sitemap

/// Bytes of XML one fuzz input may decompress to.
const FUZZ_SITEMAP_MAX_BYTES: usize = 64 * 1024;
/// `<loc>` entries one fuzz input may list.
const FUZZ_SITEMAP_MAX_LOCS: usize = 100;

/// Input: a fetched sitemap's bytes (XML, or gzip data: a leading `0x1f 0x8b`).
///
/// Decoding never panics and never yields more than its byte bound (a gzip
/// bomb stops there); parsing the result never panics, lists at most its
/// entry bound, says `capped` only at that bound, and every entry it lists
/// is trimmed text.
pub fn sitemap(data: &[u8]) {
    let xml = match decode_sitemap_body(data, false, FUZZ_SITEMAP_MAX_BYTES) {
        Ok(xml) => {
            assert!(xml.len() <= FUZZ_SITEMAP_MAX_BYTES);
            xml
        }
        Err(e) => {
            assert!(e.len() <= MAX_BODY_ERROR_BYTES, "error text too long: {e}");
            return;
        }
    };
    if let Ok(doc) = parse_sitemap(&xml, FUZZ_SITEMAP_MAX_LOCS) {
        assert!(doc.locs.len() <= FUZZ_SITEMAP_MAX_LOCS);
        assert!(!doc.capped || doc.locs.len() == FUZZ_SITEMAP_MAX_LOCS);
        for loc in &doc.locs {
            assert_eq!(loc.trim(), loc, "entries are trimmed");
        }
    }
}

// ---------------------------------------------------------------------------
// relay_response_head

/// Input: a response head (and whatever follows it) as an origin sends it;
/// the first byte's low bits choose a HEAD request and a client that asked
/// to close.
///
/// The relay's rewrite never panics and, when it accepts a head, gives the
/// client a head that parses, keeps the status, frames the body one way
/// only (one `content-length` that matches the framing, or `transfer-encoding:
/// chunked` alone, or neither with `connection: close`), and never forwards
/// a `Connection` header or a header it names.
pub fn relay_response_head(data: &[u8]) {
    let Some((&flags, raw)) = data.split_first() else {
        return;
    };
    let (head_only, client_close) = (flags & 1 == 1, flags & 2 == 2);
    let Ok(head) = fuzzing::response_head(raw, head_only, client_close) else {
        return;
    };
    assert!(head.origin_head_len <= raw.len());
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut parsed = httparse::Response::new(&mut headers);
    let status = parsed.parse(&head.bytes);
    assert!(
        matches!(status, Ok(httparse::Status::Complete(n)) if n == head.bytes.len()),
        "rewritten head does not parse: {:?}",
        String::from_utf8_lossy(&head.bytes)
    );
    let mut original_headers = [httparse::EMPTY_HEADER; 256];
    let mut original = httparse::Response::new(&mut original_headers);
    let _ = original.parse(raw);
    assert_eq!(parsed.code, original.code, "status changed");
    let named = |name: &str| {
        parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
            .collect::<Vec<_>>()
    };
    let lengths = named("content-length");
    let codings = named("transfer-encoding");
    let connection = named("connection");
    assert!(lengths.len() <= 1, "{lengths:?}");
    match head.framing {
        Framing::Length(n) => {
            // One value, the framing's (a single plain value such as `00`
            // is passed on as the origin wrote it).
            let values: Vec<Option<u64>> = lengths.iter().map(|v| v.parse().ok()).collect();
            assert_eq!(values, vec![Some(n)], "{lengths:?}");
            assert!(codings.is_empty());
        }
        Framing::Chunked => {
            assert!(lengths.is_empty(), "length beside chunked");
            assert_eq!(codings, vec!["chunked".to_string()]);
        }
        Framing::UntilClose => {
            assert!(lengths.is_empty() && codings.is_empty());
            assert!(!head.client_keep_alive && !head.origin_keep_alive);
            assert_eq!(connection, vec!["close".to_string()]);
        }
        Framing::Empty => {
            assert!(codings.is_empty());
            if matches!(parsed.code, Some(204) | Some(100..=199)) {
                assert!(lengths.is_empty(), "a length on a {:?}", parsed.code);
            }
        }
    }
    assert!(connection.iter().all(|c| c == "close"), "{connection:?}");
    assert_eq!(head.client_keep_alive, connection.is_empty());
    if client_close {
        assert!(!head.client_keep_alive);
    }
    // Headers the origin's Connection named are gone, but never the ones it
    // cannot remove.
    for h in original
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
    {
        for token in String::from_utf8_lossy(h.value).split(',').map(str::trim) {
            // The relay's own `connection: close`, `date` (when the origin
            // sent none) and framing headers are not the origin's.
            if token.is_empty()
                || [
                    "close",
                    "keep-alive",
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "date",
                ]
                .iter()
                .any(|t| token.eq_ignore_ascii_case(t))
            {
                continue;
            }
            assert!(
                !parsed
                    .headers
                    .iter()
                    .any(|o| o.name.eq_ignore_ascii_case(token)),
                "{token} was named by Connection but forwarded"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// relay_chunked

/// Input: a chunked body and what follows it; the first byte is where the
/// input is split in two.
///
/// Splitting never changes where the body ends, whether it is an error, or
/// what the client gets; what the client gets is itself a complete chunked
/// body (ending exactly where it ends) with an empty trailer section.
pub fn relay_chunked(data: &[u8]) {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(body.len());
    let whole = fuzzing::chunked_body(&[body]);
    let pieces = fuzzing::chunked_body(&[&body[..split], &body[split..]]);
    assert_eq!(whole, pieces, "splitting at {split} changed the outcome");
    let bytewise: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(whole, fuzzing::chunked_body(&bytewise), "byte by byte");
    if let Ok(Some((end, out))) = whole {
        assert!(end <= body.len());
        assert!(out.len() <= end + 2);
        assert!(out.ends_with(b"0\r\n\r\n") || out.ends_with(b"\r\n\r\n"));
        let again = fuzzing::chunked_body(&[&out]);
        assert_eq!(
            again,
            Ok(Some((out.len(), out.clone()))),
            "client's body is not chunked whole"
        );
    }
}

// ---------------------------------------------------------------------------
// relay_plan

/// The sites and bot detector the request planner is checked against.
fn relay_fixture() -> &'static (SiteTable, BotDetector) {
    static FIXTURE: OnceLock<(SiteTable, BotDetector)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let origin = url::Url::parse("http://127.0.0.1:9").unwrap();
        let plan = Plan::builtins().into_values().next().unwrap();
        let mut sites = Vec::new();
        for domain in [
            "www.example.test",
            "my_app.example.com",
            "[::1]",
            "10.0.0.5",
        ] {
            let mut site = Site::single(domain.to_string(), origin.clone(), plan.clone());
            site.query_params = vec!["page".to_string()];
            site.ignore = regex::RegexSet::new(["^/api/"]).unwrap();
            sites.push(site);
        }
        let sites = SiteTable::new(sites).unwrap();
        (
            sites,
            BotDetector::with_defaults().expect("built-in patterns compile"),
        )
    })
}

/// Whether the relay's planner takes `data` (for tests that the corpus
/// reaches the property, not only the refusals).
pub fn relay_plan_takes(data: &[u8]) -> bool {
    let (sites, bots) = relay_fixture();
    fuzzing::plan_request(sites, bots, data).is_some()
}

/// The request head as hyper's server hands it to the full path, or
/// `None` where hyper would refuse it.
fn as_hyper_request(raw: &[u8]) -> Option<http::Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(raw).ok()?;
    let mut builder = http::Request::builder()
        .method(http::Method::from_bytes(req.method?.as_bytes()).ok()?)
        .uri(http::Uri::try_from(req.path?).ok()?)
        .version(http::Version::HTTP_11);
    for h in req.headers.iter() {
        builder = builder.header(
            http::HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            http::HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    builder.body(()).ok()
}

/// Input: a raw request head, as a client sends it.
///
/// Whenever the relay's planner takes a request, hyper reads the same
/// bytes as a request, `request::resolve` accepts it for the same site and
/// host, the cache key made from either is the same, and the full path's
/// bot decision passes it through too (as an asset exactly when the relay
/// says so): the relay never serves what the full path would refuse or
/// render.
pub fn relay_plan(data: &[u8]) {
    let (sites, bots) = relay_fixture();
    let Some(planned) = fuzzing::plan_request(sites, bots, data) else {
        return;
    };
    let req = as_hyper_request(data).expect("the relay took a request hyper cannot read");
    let target = resolve(&req, sites).expect("the relay took a request resolve refuses");
    assert!(
        std::sync::Arc::ptr_eq(&planned.site, &target.site),
        "another site"
    );
    assert_eq!(planned.host, target.host, "another host");
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let site = &target.site;
    assert_eq!(
        CacheKey::new(&planned.host, pq, &site.query_params, false),
        CacheKey::new(&target.host, pq, &site.query_params, false),
        "another cache key"
    );
    assert!(
        CacheKey::new(&target.host, pq, &site.query_params, false).is_ok(),
        "the full path could not key {pq:?}"
    );
    match bots.decide(
        req.method(),
        req.uri().path(),
        req.uri().query(),
        req.headers(),
        &site.ignore,
    ) {
        RenderDecision::Render { rule } => panic!("the full path would render it ({rule})"),
        RenderDecision::Pass(reason) => assert_eq!(
            reason == PassReason::StaticAsset,
            planned.asset,
            "asset or not: {reason:?}"
        ),
    }
}

/// `proxy_header`: the PROXY protocol framing (v1 and v2) never panics; a
/// header is never longer than the bytes read nor than the protocol's
/// bounds; any prefix of a complete header is incomplete (never another
/// header), and bytes after a header do not change it.
pub fn proxy_header(data: &[u8]) {
    use prerender_proxy::listener::proxy_protocol::{parse, Parsed};
    let parsed = parse(data);
    if let Parsed::Header { len, source } = parsed {
        assert!(len <= data.len(), "header of {len} bytes in {}", data.len());
        assert!(len <= 4096, "header of {len} bytes");
        for cut in 0..len {
            let prefix = parse(&data[..cut]);
            assert!(
                !matches!(prefix, Parsed::Header { .. }),
                "a {cut}-byte prefix of a {len}-byte header read as a header"
            );
        }
        let mut longer = data[..len].to_vec();
        longer.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(parse(&longer), Parsed::Header { len, source });
    }
}
