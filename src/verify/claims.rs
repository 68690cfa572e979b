//! Which crawler a User-Agent claims to be, and how that crawler's
//! operator says to check the claim.

use regex::RegexSet;

/// How an operator lets sites check that a request comes from its crawler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Reverse DNS of the client address gives a name under one of these
    /// domains, and that name resolves back to the same address.
    ReverseDns(&'static [&'static str]),
    /// The client address is in the list of ranges the operator publishes
    /// (`bot-patterns/ip-ranges/<name>.json`).
    IpRanges,
}

/// A crawler whose claims can be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crawler {
    /// Its name: the `family` label of `crawler_verifications_total`, and
    /// for [`Method::IpRanges`] the name of its range file.
    pub name: &'static str,
    /// Case-insensitive regex on the User-Agent that makes the claim.
    pub user_agent: &'static str,
    pub method: Method,
}

/// Every crawler that publishes how to verify it (SPEC §2). The first
/// match wins, so a User-Agent naming two crawlers is checked as the first.
pub const CRAWLERS: &[Crawler] = &[
    Crawler {
        name: "googlebot",
        // Google's common and special-case crawlers share the method.
        user_agent: r"googlebot|google-inspectiontool|googleother|adsbot-google|mediapartners-google|storebot-google",
        method: Method::ReverseDns(&["googlebot.com", "google.com"]),
    },
    Crawler {
        name: "bingbot",
        user_agent: r"bingbot|\badidxbot|\bbingpreview|microsoftpreview",
        method: Method::ReverseDns(&["search.msn.com"]),
    },
    Crawler {
        name: "applebot",
        user_agent: r"\bapplebot",
        method: Method::ReverseDns(&["applebot.apple.com"]),
    },
    Crawler {
        name: "yandexbot",
        // YandexBot and its named helpers, not the Yandex browser (YaBrowser).
        user_agent: r"\byandex[a-z]*(?:bot|images|video|media|blogs|favicons|webmaster|metrika|news|market|direct)",
        method: Method::ReverseDns(&["yandex.ru", "yandex.net", "yandex.com"]),
    },
    Crawler {
        name: "baiduspider",
        user_agent: r"baiduspider",
        method: Method::ReverseDns(&["baidu.com", "baidu.jp"]),
    },
    Crawler {
        name: "duckduckbot",
        user_agent: r"duckduckbot",
        method: Method::IpRanges,
    },
    Crawler {
        name: "gptbot",
        user_agent: r"\bgptbot",
        method: Method::IpRanges,
    },
    Crawler {
        name: "oai-searchbot",
        user_agent: r"oai-searchbot",
        method: Method::IpRanges,
    },
    Crawler {
        name: "chatgpt-user",
        user_agent: r"chatgpt-user",
        method: Method::IpRanges,
    },
    Crawler {
        name: "perplexitybot",
        user_agent: r"perplexitybot",
        method: Method::IpRanges,
    },
];

/// Finds the claim a User-Agent makes, with one `RegexSet` pass.
pub struct ClaimMatcher {
    set: RegexSet,
}

impl Default for ClaimMatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl ClaimMatcher {
    pub fn new() -> Self {
        let set = regex::RegexSetBuilder::new(CRAWLERS.iter().map(|c| c.user_agent))
            .case_insensitive(true)
            .build()
            .expect("the crawler table's patterns are valid constants");
        ClaimMatcher { set }
    }

    /// The index in [`CRAWLERS`] of the crawler `user_agent` claims to be.
    pub fn claim(&self, user_agent: &str) -> Option<usize> {
        self.set.matches(user_agent).iter().next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(ua: &str) -> Option<&'static str> {
        ClaimMatcher::new().claim(ua).map(|i| CRAWLERS[i].name)
    }

    #[test]
    fn user_agents_name_their_crawler() {
        for (ua, want) in [
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "googlebot",
            ),
            (
                "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "googlebot",
            ),
            ("AdsBot-Google (+http://www.google.com/adsbot.html)", "googlebot"),
            (
                "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
                "bingbot",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
                "applebot",
            ),
            (
                "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
                "yandexbot",
            ),
            (
                "Mozilla/5.0 (compatible; YandexImages/3.0; +http://yandex.com/bots)",
                "yandexbot",
            ),
            (
                "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
                "baiduspider",
            ),
            ("DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", "duckduckbot"),
            (
                "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
                "gptbot",
            ),
            (
                "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; OAI-SearchBot/1.0; +https://openai.com/searchbot",
                "oai-searchbot",
            ),
            (
                "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot",
                "chatgpt-user",
            ),
            (
                "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; PerplexityBot/1.0; +https://perplexity.ai/perplexitybot)",
                "perplexitybot",
            ),
        ] {
            assert_eq!(claimed(ua), Some(want), "{ua}");
        }
    }

    #[test]
    fn other_clients_claim_nothing() {
        for ua in [
            "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 YaBrowser/24.1.0.0 Safari/537.36",
            "facebookexternalhit/1.1",
            "",
        ] {
            assert_eq!(claimed(ua), None, "{ua}");
        }
    }

    #[test]
    fn range_crawlers_are_named_like_their_files() {
        for c in CRAWLERS {
            assert!(
                c.name
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '-'),
                "{}",
                c.name
            );
        }
    }
}
