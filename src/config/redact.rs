//! Credentials never reach a log line, the API or the dashboard: every URL
//! the configuration holds is shown through [`redact_url`].

/// `scheme://user:***@host…` for a URL with a password, `scheme://***@host…`
/// for one with only a user part that may be a token; anything else as is.
/// Works on the text, so a URL that does not parse is still redacted.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _password)) if !user.is_empty() => format!("{user}:***"),
        _ => "***".to_string(),
    };
    format!("{}{}@{}", &url[..scheme_end + 3], shown, &rest[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_and_tokens_are_hidden() {
        assert_eq!(
            redact_url("redis://user:s3cret@redis:6379/0"),
            "redis://user:***@redis:6379/0"
        );
        assert_eq!(redact_url("rediss://:s3cret@r:6380"), "rediss://***@r:6380");
        assert_eq!(redact_url("redis://s3cret@r"), "redis://***@r");
        assert_eq!(redact_url("redis://r:6379"), "redis://r:6379");
        assert_eq!(redact_url("http://a/b@c"), "http://a/b@c");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("redis://u:p@ss:w@rd@h:1"), "redis://u:***@h:1");
    }
}
