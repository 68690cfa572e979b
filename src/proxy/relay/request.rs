//! The request side of the relay: which requests it takes (`plan`, the
//! same checks as `request::resolve` and the bot decision) and the head sent
//! to the origin (hop-by-hop headers dropped, X-Forwarded-* set).

use super::*;

/// A request this module relays, with what was settled about it.
pub(super) struct Plan<'r, 'p> {
    pub(super) site: &'p Site,
    pub(super) host: Domain,
    pub(super) kind: RequestKind,
    /// The client asked to close the connection after this request.
    pub(super) close: bool,
    /// Header names the client's `Connection` header lists.
    pub(super) connection_named: Vec<&'r str>,
}

/// The plan for a request this module relays, or `None` for one hyper and
/// the full request path take (everything `request::resolve` would refuse
/// included, so refusals are answered and counted in one place).
pub(super) fn plan<'r, 'p>(
    sites: &'p SiteTable,
    bots: &BotDetector,
    req: &httparse::Request<'_, 'r>,
) -> Option<Plan<'r, 'p>> {
    if req.version != Some(1) {
        return None;
    }
    let method = req.method?;
    if method != "GET" && method != "HEAD" {
        return None;
    }
    let target = req.path?;
    if target.len() > MAX_TARGET_BYTES || !is_simple_target(target) {
        return None;
    }
    let mut host = None;
    let mut user_agent = "";
    let mut loop_guard = false;
    let mut close = false;
    let mut connection_named = Vec::new();
    let mut header_bytes = 0;
    for h in req.headers.iter() {
        header_bytes += h.name.len() + h.value.len() + 4;
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return None;
            }
            host = Some(std::str::from_utf8(h.value).ok()?);
        } else if name.eq_ignore_ascii_case("user-agent") {
            if user_agent.is_empty() {
                user_agent = std::str::from_utf8(h.value).ok()?;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            let options = connection_options(h.value, &mut connection_named)?;
            if options.upgrade {
                return None;
            }
            close |= options.close;
        } else if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return None;
        } else if name.eq_ignore_ascii_case(LOOP_GUARD_HEADER)
            && h.value.trim_ascii() == LOOP_GUARD_VALUE.as_bytes()
        {
            loop_guard = true;
        }
    }
    if header_bytes > MAX_HEADER_BLOCK_BYTES {
        return None;
    }
    let host = parse_host(host?)?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    validate_path(path).ok()?;
    if let Some(q) = query {
        validate_query(q).ok()?;
    }
    let site: &Site = sites.lookup(&host)?;
    // The relay speaks plain HTTP/1.1 to origins: an `https://` origin is
    // reached through hyper and `upstream`'s TLS connections, which are
    // pooled the same way.
    if site.origin_tls {
        return None;
    }
    let kind = match bots.decide_request(
        true,
        loop_guard,
        path,
        query,
        user_agent,
        &site.path_rules(),
    ) {
        RenderDecision::Render { .. } => return None,
        RenderDecision::Pass(PassReason::StaticAsset) => RequestKind::Asset,
        RenderDecision::Pass(_) => RequestKind::Human,
    };
    Some(Plan {
        site,
        host,
        kind,
        close,
        connection_named,
    })
}

/// An origin-form target made only of RFC 3986 path and query characters
/// (percent-encoded or not), which every HTTP parser reads alike.
pub(super) fn is_simple_target(target: &str) -> bool {
    target.starts_with('/')
        && target.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'/' | b'?'
                        | b'-'
                        | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'@'
                )
        })
}

/// What a `Connection` header value asks for.
pub(super) struct ConnectionOptions {
    pub(super) close: bool,
    pub(super) upgrade: bool,
}

/// Reads a `Connection` value: `close` and `upgrade` are reported, the
/// header names it lists (other than `keep-alive` and the names it can
/// never remove, `NEVER_HOP_BY_HOP`) are added to `named`.
/// `None` when the value is not text.
pub(super) fn connection_options<'a>(
    value: &'a [u8],
    named: &mut Vec<&'a str>,
) -> Option<ConnectionOptions> {
    let mut options = ConnectionOptions {
        close: false,
        upgrade: false,
    };
    for token in std::str::from_utf8(value).ok()?.split(',').map(str::trim) {
        if token.eq_ignore_ascii_case("close") {
            options.close = true;
        } else if token.eq_ignore_ascii_case("upgrade") {
            options.upgrade = true;
        } else if !token.is_empty()
            && !token.eq_ignore_ascii_case("keep-alive")
            && connection_may_remove(token)
        {
            named.push(token);
        }
    }
    Some(options)
}

/// Whether a header is not passed on: hop-by-hop (as on the full path), the
/// `Upgrade` a relayed exchange never carries on, or named by `Connection`.
pub(super) fn is_hop_by_hop(name: &str, connection_named: &[&str]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_str()))
        || name.eq_ignore_ascii_case("upgrade")
        || connection_named
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
}

/// The request head sent to the origin. X-Forwarded-For and -Proto follow
/// `proxy::forward::set_forwarded`: kept and appended to from a trusted
/// peer, replaced from any other.
pub(super) fn origin_request_head(
    req: &httparse::Request<'_, '_>,
    plan: &Plan<'_, '_>,
    peer: Peer<'_>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(plan.site.origin.path().trim_end_matches('/').as_bytes());
    out.extend_from_slice(req.path.unwrap_or("/").as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    let mut forwarded_proto: Option<&[u8]> = None;
    for h in req.headers.iter() {
        if is_hop_by_hop(h.name, &plan.connection_named)
            || h.name.eq_ignore_ascii_case("x-forwarded-host")
        {
            continue;
        }
        if h.name.eq_ignore_ascii_case("host") {
            if let Some(host) = &plan.site.origin_host {
                // `origin_host`: the Host the origin sees.
                push_header(out, b"host", host.as_bytes());
                continue;
            }
        }
        if h.name.eq_ignore_ascii_case("x-forwarded-proto") {
            let value = h.value.trim_ascii();
            if peer.trusted && forwarded_proto.is_none() && matches!(value, b"http" | b"https") {
                forwarded_proto = Some(value);
            }
            continue;
        }
        if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            if peer.trusted && !h.value.trim_ascii().is_empty() {
                forwarded_for.push(h.value.trim_ascii());
            }
            continue;
        }
        push_header(out, h.name.as_bytes(), h.value);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for earlier in forwarded_for {
        out.extend_from_slice(earlier);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(peer.ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(forwarded_proto.unwrap_or(b"http"));
    out.extend_from_slice(b"\r\n");
    push_header(out, b"x-forwarded-host", plan.host.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub(super) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
