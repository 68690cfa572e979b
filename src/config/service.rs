//! The prerender.io-compatible service listener's settings (SPEC §2, "The
//! prerender.io service protocol"): `service_listen` and `service_tokens`.

use std::net::SocketAddr;

use super::ConfigError;

/// The service listener: off unless `service_listen` is set.
#[derive(Clone, Default)]
pub struct ServiceConfig {
    pub listen: Option<SocketAddr>,
    /// Tokens accepted in `X-Prerender-Token`; empty: no token is asked for.
    pub tokens: Vec<String>,
}

/// Never prints a token (the start-up log and errors may show a `Config`).
impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("listen", &self.listen)
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl ServiceConfig {
    /// `listen` (flag/env over file) and the comma list of `tokens`.
    pub fn parse(listen: Option<String>, tokens: Option<String>) -> Result<Self, ConfigError> {
        let listen = match listen.map(|l| l.trim().to_string()) {
            None => None,
            Some(l) if l.is_empty() || l == "off" => None,
            Some(l) => Some(super::value::parse_addr("service_listen", Some(l), "")?),
        };
        let mut list = Vec::new();
        for (i, token) in tokens
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .enumerate()
        {
            if token.is_empty() {
                continue;
            }
            // The token itself never appears in the message. A short one is
            // allowed, with a warning at start (`Config::warnings`).
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError::new(
                    "service_tokens",
                    format!("token {} must have no spaces", i + 1),
                ));
            }
            list.push(token.to_string());
        }
        if !list.is_empty() && listen.is_none() {
            return Err(ConfigError::new(
                "service_tokens",
                "set without service_listen, so nothing would use them",
            ));
        }
        Ok(ServiceConfig {
            listen,
            tokens: list,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_tokens_parsed() {
        let c = ServiceConfig::parse(None, None).unwrap();
        assert!(c.listen.is_none() && c.tokens.is_empty());
        let c = ServiceConfig::parse(
            Some("127.0.0.1:3002".into()),
            Some(" token-one1 ,, token-two2".into()),
        )
        .unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:3002".parse().unwrap()));
        assert_eq!(c.tokens, ["token-one1", "token-two2"]);
        assert!(!format!("{c:?}").contains("token-one1"));
    }

    #[test]
    fn bad_values_name_the_field_and_never_the_token() {
        let e = ServiceConfig::parse(Some("nowhere".into()), None).unwrap_err();
        assert_eq!(e.field, "service_listen");
        let e = ServiceConfig::parse(Some("127.0.0.1:1".into()), Some("ok,bad\ttoken".into()))
            .unwrap_err();
        assert_eq!(e.field, "service_tokens");
        assert!(e.to_string().contains("token 2"), "{e}");
        assert!(!e.to_string().contains("bad"), "{e}");
        // Short is allowed (with a warning at start).
        let c = ServiceConfig::parse(Some("127.0.0.1:1".into()), Some("secret".into())).unwrap();
        assert_eq!(c.tokens, ["secret"]);
        let e = ServiceConfig::parse(None, Some("long-enough-token".into())).unwrap_err();
        assert_eq!(e.field, "service_tokens");
    }
}
