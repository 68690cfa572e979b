//! The values of single options, each checked by name: counts, durations,
//! addresses, named choices, the Redis URL list, bot families, CIDR lists,
//! paths that must be readable, and the few strings with rules of their own.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::{plan, redact, ConfigError, StoreTarget};
use crate::bot::Family;
use crate::cli::DurationValue;

/// A count in `1..=max`, `default` when unset.
pub(super) fn count(
    field: &str,
    v: Option<u64>,
    default: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let v = v.unwrap_or(default);
    if v == 0 || v > max {
        return Err(ConfigError::new(
            field,
            format!("{v} is out of range 1..={max}"),
        ));
    }
    Ok(v)
}

/// A duration of at least a second, `default` when unset.
pub(super) fn secs(
    field: &str,
    v: Option<DurationValue>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) => match plan::parse_duration(&v, field)? {
            d if d < Duration::from_secs(1) => {
                Err(ConfigError::new(field, "must be at least 1 second"))
            }
            d => Ok(d),
        },
    }
}

/// A path that `check` accepts (it reads the file or directory now, so a
/// bad one stops the start with its field named).
pub(super) fn check_with(
    field: &str,
    path: Option<PathBuf>,
    check: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(path) = &path {
        check(path).map_err(|e| ConfigError::new(field, e))?;
    }
    Ok(path)
}

pub(super) fn check_dir(field: &str, dir: Option<PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
    check_with(field, dir, |dir| match dir.is_dir() {
        true => Ok(()),
        false => Err(format!("{} is not a readable directory", dir.display())),
    })
}

pub(super) fn check_key_prefix(prefix: String, store: &StoreTarget) -> Result<String, ConfigError> {
    if prefix.len() > 64
        || prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(ConfigError::new(
            "key_prefix",
            "use at most 64 printable ASCII characters without spaces",
        ));
    }
    if !prefix.is_empty() && *store == StoreTarget::Embedded {
        return Err(ConfigError::new(
            "key_prefix",
            "applies to Redis keys: set --redis (the embedded store is this process's alone)",
        ));
    }
    Ok(prefix)
}

/// An empty token is none.
pub(super) fn check_admin_token(token: Option<String>) -> Result<Option<String>, ConfigError> {
    let token = token.filter(|t| !t.is_empty());
    if let Some(t) = &token {
        // A short one is allowed, with a warning at start (`Config::warnings`).
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::new(
                "admin_token",
                "use a token without spaces (e.g. `openssl rand -hex 24`)",
            ));
        }
    }
    Ok(token)
}

/// A blank User-Agent is the default.
pub(super) fn check_user_agent(ua: Option<String>) -> Result<Option<String>, ConfigError> {
    match ua {
        None => Ok(None),
        Some(ua) if ua.trim().is_empty() => Ok(None),
        Some(ua) if ua.len() > 512 || ua.chars().any(|c| c.is_control() || !c.is_ascii()) => {
            Err(ConfigError::new(
                "render_user_agent",
                "use at most 512 printable ASCII characters",
            ))
        }
        Some(ua) => Ok(Some(ua.trim().to_string())),
    }
}

/// A blank resolver is the system's.
pub(super) fn parse_dns_resolver(raw: Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(raw) = raw.filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    raw.trim().parse().map(Some).map_err(|_| {
        ConfigError::new(
            "dns_resolver",
            format!("{raw:?} is not an address like 127.0.0.53:53"),
        )
    })
}

/// The choice `raw` names, `default` when unset; anything else is refused
/// with the names allowed.
pub(super) fn one_of<T: Copy>(
    field: &str,
    raw: Option<String>,
    default: T,
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    if let Some((_, value)) = choices.iter().find(|(name, _)| *name == raw) {
        return Ok(*value);
    }
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let allowed = match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(ConfigError::new(field, format!("{raw:?} is not {allowed}")))
}

pub(super) fn parse_addr(
    field: &str,
    v: Option<String>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let raw = v.unwrap_or_else(|| default.to_string());
    if let Ok(addr) = raw.parse() {
        return Ok(addr);
    }
    // A host name with a port (`localhost:3000`), resolved once at start;
    // IPv4 first, as `localhost` means to most.
    let resolved: Vec<SocketAddr> = match raw.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            std::net::ToSocketAddrs::to_socket_addrs(raw.as_str())
                .map(Iterator::collect)
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| {
            ConfigError::new(
                field,
                format!("{raw:?} is not an address like 127.0.0.1:3000"),
            )
        })
}

pub(super) fn parse_store(v: Option<&str>) -> Result<StoreTarget, ConfigError> {
    let Some(raw) = v.filter(|s| !s.trim().is_empty()) else {
        return Ok(StoreTarget::Embedded);
    };
    let urls: Vec<String> = raw
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for u in &urls {
        let parsed = url::Url::parse(u).map_err(|e| {
            ConfigError::new(
                "redis",
                format!("{:?} is not a URL: {e}", redact::redact_url(u)),
            )
        })?;
        if !matches!(
            parsed.scheme(),
            "redis" | "rediss" | "redis+cluster" | "rediss+cluster"
        ) || parsed.host_str().is_none()
        {
            return Err(ConfigError::new(
                "redis",
                format!(
                    "{:?} is not a redis:// or rediss:// URL",
                    redact::redact_url(u)
                ),
            ));
        }
    }
    let cluster_scheme = urls.iter().any(|u| u.contains("+cluster://"));
    if urls.len() == 1 && !cluster_scheme {
        Ok(StoreTarget::Redis(urls[0].clone()))
    } else {
        Ok(StoreTarget::RedisCluster(
            urls.into_iter()
                .map(|u| u.replacen("+cluster://", "://", 1))
                .collect(),
        ))
    }
}

/// A comma list of family names (or `all`); default: every family but
/// `monitoring` and `http-libraries` (see `bot::Family::DEFAULT_RENDERED`).
pub fn parse_families(v: Option<String>) -> Result<Vec<Family>, ConfigError> {
    let Some(raw) = v else {
        return Ok(Family::default_rendered());
    };
    let mut out = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if name == "all" {
            return Ok(Family::ALL.to_vec());
        }
        let family = Family::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
            ConfigError::new(
                "bot_families",
                format!("unknown family {name:?} (known: {})", known.join(", ")),
            )
        })?;
        if !out.contains(&family) {
            out.push(family);
        }
    }
    Ok(out)
}

/// Parses `trusted_proxies` entries: CIDRs (`10.0.0.0/8`, `2001:db8::/32`)
/// or single addresses (a /32 or /128).
pub fn parse_nets<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Vec<IpNet>, String> {
    let mut nets = Vec::new();
    for raw in entries {
        let entry = raw.trim();
        if entry.is_empty() {
            continue;
        }
        let net = match entry.parse::<IpNet>() {
            Ok(net) => net.trunc(),
            Err(_) => match entry.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip.to_canonical()),
                Err(_) => {
                    return Err(format!(
                        "{entry:?} is not a CIDR like 10.0.0.0/8 or an address"
                    ))
                }
            },
        };
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    Ok(nets)
}
