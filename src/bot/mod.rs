//! Who is a bot, and which requests are rendered (SPEC §2).
//!
//! A [`BotDetector`] classifies a User-Agent with the pattern files of
//! `bot-patterns/` (compiled into the binary, optionally extended by
//! `--bot-patterns DIR`, see [`patterns`]) and, as a second signal, woothee's
//! crawler category. [`BotDetector::decide`] adds the request-level rules:
//! method, loop guard, static assets, `_escaped_fragment_` and the site's
//! `ignore` patterns.
//!
//! # Matching order
//! All patterns of all nine families are compiled into **one**
//! case-insensitive [`RegexSet`](regex::bytes::RegexSet), so a User-Agent is
//! scanned once whatever the number of patterns. Among the patterns that
//! match, the verdict is the first that applies of:
//!
//! 1. a **named** pattern of a family that is **not rendered** → human
//!    (`human monitoring:3 (family not rendered)`);
//! 2. a **named** pattern of a rendered family → bot (`bot search-engines:12`);
//! 3. a **catch-all** of a family that is not rendered → human;
//! 4. a **catch-all** of a rendered family → bot;
//! 5. woothee's crawler category → bot (`bot woothee`);
//! 6. otherwise human (`human no rule matched`).
//!
//! Why this order:
//! - Named patterns name a product (`UptimeRobot`, `GPTBot`); catch-alls are
//!   generic signs (`crawler`, a URL in the User-Agent, no `Mozilla/`
//!   prefix). A product's name is better evidence than a generic sign, so
//!   `UptimeRobot/2.0 (http://…)` is a monitor (human by default) although
//!   it also says `bot` and carries a URL, and `GPTBot` stays a bot when an
//!   operator turns off the family holding the catch-alls.
//! - Within a tier, a family that is not rendered wins: an operator who turned
//!   a family off means "never render these", and the spec passes such a
//!   User-Agent through even when woothee calls it a crawler.
//! - woothee comes last: its crawler list is smaller than ours, and it
//!   cannot tell a family that is off from one that is on. Only its list of
//!   named crawlers is consulted, not its browser parse (see
//!   `is_woothee_crawler`).
//! - When several patterns of the same tier and outcome match, the first in
//!   [`Family::ALL`] order, then by line, names the verdict.
//!
//! Patterns are compiled without Unicode classes (User-Agents are ASCII in
//! practice), which keeps the set small: one classification costs about a
//! microsecond or two (see `benches/bot_match.rs`).

pub mod family;
pub mod patterns;
pub mod request;

use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::sync::LazyLock;

use http::header::USER_AGENT;
use http::{HeaderMap, Method};
use regex::bytes::{RegexSet, RegexSetBuilder};

pub use family::{Family, UnknownFamily};
pub use patterns::{BotPatternError, PatternOrigin, PatternRule};
pub use request::{PassReason, RenderDecision};

/// Rule name of verdicts decided by woothee's crawler category.
pub const WOOTHEE_RULE: &str = "woothee";

/// woothee's category for crawlers.
const WOOTHEE_CRAWLER_CATEGORY: &str = "crawler";

/// Reason of a human verdict when nothing matched.
pub const NO_RULE_MATCHED: &str = "no rule matched";

/// Reason of a human verdict for a missing or blank User-Agent.
pub const NO_USER_AGENT: &str = "no user agent";

/// Size limit of the compiled pattern set. The built-in set needs well under
/// 1 MiB; the bound leaves room for large operator lists while refusing a
/// runaway one at startup rather than slowing every request.
pub const PATTERN_SET_SIZE_LIMIT: usize = 32 * 1024 * 1024;

/// The verdict on one User-Agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaVerdict {
    /// A bot of a rendered family (or woothee's crawler category).
    Bot {
        /// The rule that decided: `<family>:<line>`, `<path>:<line>` or `woothee`.
        rule: String,
        /// The family of the rule; `None` for woothee.
        family: Option<Family>,
    },
    /// Not a rendered bot.
    Human {
        /// Why: `no rule matched`, `no user agent`, or
        /// `<rule> (family not rendered)`.
        reason: String,
    },
}

impl UaVerdict {
    /// Whether the verdict is a (rendered) bot.
    pub fn is_bot(&self) -> bool {
        matches!(self, UaVerdict::Bot { .. })
    }
}

impl fmt::Display for UaVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UaVerdict::Bot { rule, .. } => write!(f, "bot {rule}"),
            UaVerdict::Human { reason } => write!(f, "human {reason}"),
        }
    }
}

/// Which paths of a site are never rendered.
pub trait PathFilter {
    fn excludes(&self, path: &str) -> bool;
}

/// `ignore` patterns alone: a matching path is not rendered.
impl PathFilter for regex::RegexSet {
    fn excludes(&self, path: &str) -> bool {
        self.is_match(path)
    }
}

/// A site's `ignore` and `only` patterns: a path is rendered only if no
/// `ignore` pattern matches it and, when `only` lists any, one of those does.
#[derive(Debug, Clone, Copy)]
pub struct PathRules<'a> {
    pub ignore: &'a regex::RegexSet,
    pub only: &'a regex::RegexSet,
}

impl PathFilter for PathRules<'_> {
    fn excludes(&self, path: &str) -> bool {
        self.ignore.is_match(path) || (!self.only.is_empty() && !self.only.is_match(path))
    }
}

/// Classifies User-Agents and decides which requests are rendered.
/// Immutable once built: share it in an `Arc`.
pub struct BotDetector {
    set: RegexSet,
    rules: Vec<PatternRule>,
    rendered: [bool; Family::ALL.len()],
    woothee: woothee::parser::Parser,
}

impl fmt::Debug for BotDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotDetector")
            .field("rules", &self.rules.len())
            .field("rendered", &self.rendered_families())
            .finish_non_exhaustive()
    }
}

impl BotDetector {
    /// Builds a detector rendering the `rendered` families, with the built-in
    /// patterns extended by the family files of `extra_patterns_dir` (see
    /// [`patterns`] for that directory's rules).
    pub fn new(
        rendered: &[Family],
        extra_patterns_dir: Option<&Path>,
    ) -> Result<Self, BotPatternError> {
        let rules = patterns::load_rules(extra_patterns_dir)?;
        let set = RegexSetBuilder::new(rules.iter().map(PatternRule::pattern))
            .case_insensitive(true)
            .unicode(false)
            .size_limit(PATTERN_SET_SIZE_LIMIT)
            .build()
            .map_err(|error| BotPatternError::SetTooLarge {
                reason: patterns::short_regex_error(&error),
            })?;
        let mut rendered_table = [false; Family::ALL.len()];
        for family in rendered {
            rendered_table[family.index()] = true;
        }
        Ok(BotDetector {
            set,
            rules,
            rendered: rendered_table,
            woothee: woothee::parser::Parser::new(),
        })
    }

    /// A detector with the built-in patterns and the default families.
    pub fn with_defaults() -> Result<Self, BotPatternError> {
        BotDetector::new(&Family::DEFAULT_RENDERED, None)
    }

    /// The families rendered, in [`Family::ALL`] order.
    pub fn rendered_families(&self) -> Vec<Family> {
        Family::ALL
            .into_iter()
            .filter(|family| self.rendered[family.index()])
            .collect()
    }

    /// Every pattern, in compile order (family, then line).
    pub fn rules(&self) -> &[PatternRule] {
        &self.rules
    }

    /// The patterns that match `user_agent`, in compile order, whatever
    /// their family is rendered or not (for `is-bot` explanations and tests).
    pub fn matching_rules<'a>(
        &'a self,
        user_agent: &str,
    ) -> impl Iterator<Item = &'a PatternRule> + 'a {
        let matches = self.set.matches(user_agent.trim().as_bytes());
        matches.into_iter().map(move |index| &self.rules[index])
    }

    /// Classifies one User-Agent; see the module documentation for the order.
    pub fn classify(&self, user_agent: &str) -> UaVerdict {
        let user_agent = user_agent.trim();
        if user_agent.is_empty() {
            return UaVerdict::Human {
                reason: NO_USER_AGENT.to_string(),
            };
        }
        // First matching rule of each (tier, rendered) pair, indexed as
        // named+off, named+on, catch-all+off, catch-all+on: the order in
        // which they decide.
        let mut first: [Option<&PatternRule>; 4] = [None; 4];
        for index in self.set.matches(user_agent.as_bytes()).iter() {
            let rule = &self.rules[index];
            let slot =
                usize::from(rule.is_catch_all()) * 2 + usize::from(self.is_rendered(rule.family()));
            first[slot].get_or_insert(rule);
        }
        if let Some(rule) = first.into_iter().flatten().next() {
            return if self.is_rendered(rule.family()) {
                UaVerdict::Bot {
                    rule: rule.name().to_string(),
                    family: Some(rule.family()),
                }
            } else {
                UaVerdict::Human {
                    reason: format!("{} (family not rendered)", rule.name()),
                }
            };
        }
        if self.is_woothee_crawler(user_agent) {
            return UaVerdict::Bot {
                rule: WOOTHEE_RULE.to_string(),
                family: None,
            };
        }
        UaVerdict::Human {
            reason: NO_RULE_MATCHED.to_string(),
        }
    }

    /// Decides whether a request is rendered. Checks go from cheapest to
    /// dearest, and the first that fails names the [`PassReason`]: method,
    /// loop guard, static asset, User-Agent (or `_escaped_fragment_`), and
    /// last the site's `ignore` patterns (matched against `path`), which
    /// most requests, those of people, never reach.
    pub fn decide(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        ignore: &impl PathFilter,
    ) -> RenderDecision {
        let user_agent: Cow<'_, str> = headers
            .get(USER_AGENT)
            .map(|value| String::from_utf8_lossy(value.as_bytes()))
            .unwrap_or_default();
        self.decide_request(
            request::is_renderable_method(method),
            request::carries_loop_guard(headers),
            path,
            query,
            &user_agent,
            ignore,
        )
    }

    /// [`BotDetector::decide`] on a request's parts: whether its method can
    /// be rendered, whether it carries the renderer's loop guard, and its
    /// User-Agent (empty when absent).
    pub fn decide_request(
        &self,
        renderable_method: bool,
        loop_guard: bool,
        path: &str,
        query: Option<&str>,
        user_agent: &str,
        ignore: &impl PathFilter,
    ) -> RenderDecision {
        if !renderable_method {
            return RenderDecision::Pass(PassReason::Method);
        }
        if loop_guard {
            return RenderDecision::Pass(PassReason::LoopGuard);
        }
        if request::is_static_asset(path) {
            return RenderDecision::Pass(PassReason::StaticAsset);
        }
        let rule = match self.classify(user_agent) {
            UaVerdict::Bot { rule, .. } => rule,
            UaVerdict::Human { .. } if request::has_escaped_fragment(query) => {
                request::ESCAPED_FRAGMENT_RULE.to_string()
            }
            UaVerdict::Human { .. } => return RenderDecision::Pass(PassReason::Human),
        };
        if ignore.excludes(path) {
            return RenderDecision::Pass(PassReason::Ignored);
        }
        RenderDecision::Render { rule }
    }

    fn is_rendered(&self, family: Family) -> bool {
        self.rendered[family.index()]
    }

    /// woothee's crawler list: the named crawlers of its dataset (its
    /// `try_crawler` step). Its full parse would also try to recognise a
    /// browser and an OS before falling back on crawler words (`bot`,
    /// `crawler`, `spider`, `rss`), which the catch-alls already cover;
    /// skipping it keeps the common case, a person's browser that matches
    /// no pattern, at a few hundred nanoseconds instead of several microseconds.
    fn is_woothee_crawler(&self, user_agent: &str) -> bool {
        let mut result = woothee::parser::WootheeResult::new();
        self.woothee.try_crawler(user_agent, &mut result)
            && result.category == WOOTHEE_CRAWLER_CATEGORY
    }
}

/// Words of a mobile device in a User-Agent.
static MOBILE_MARKERS: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::RegexBuilder::new(
        r"\bmobile\b|\bandroid\b|\biphone\b|\bipod\b|windows phone|\biemobile\b|\bblackberry|opera mini|\bmidp\b",
    )
    .case_insensitive(true)
    .unicode(false)
    .build()
    .expect("constant regex compiles")
});

/// Whether a crawler's User-Agent presents a mobile device, as Googlebot
/// smartphone (`… Android 6.0.1; Nexus 5X … Mobile Safari/537.36 (compatible;
/// Googlebot/2.1; …)`) and Googlebot-Mobile do. Sites with `mobile_variant`
/// keep these renders apart. Meant for User-Agents already classified as bots.
pub fn is_mobile_crawler(user_agent: &str) -> bool {
    MOBILE_MARKERS.is_match(user_agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> BotDetector {
        BotDetector::with_defaults().unwrap()
    }

    fn no_ignore() -> regex::RegexSet {
        regex::RegexSet::empty()
    }

    #[test]
    fn only_patterns_limit_rendering_beside_ignore() {
        let detector = BotDetector::with_defaults().unwrap();
        let ignore = regex::RegexSet::new(["^/products/secret"]).unwrap();
        let only = regex::RegexSet::new(["^/products/", "^/$"]).unwrap();
        let rules = PathRules {
            ignore: &ignore,
            only: &only,
        };
        let decide =
            |path: &str| detector.decide(&Method::GET, path, None, &headers(GOOGLEBOT), &rules);
        assert!(decide("/products/1").is_render());
        assert!(decide("/").is_render());
        assert_eq!(decide("/about"), RenderDecision::Pass(PassReason::Ignored));
        assert_eq!(
            decide("/products/secret"),
            RenderDecision::Pass(PassReason::Ignored)
        );
        let empty = regex::RegexSet::empty();
        let no_only = PathRules {
            ignore: &empty,
            only: &empty,
        };
        assert!(detector
            .decide(&Method::GET, "/about", None, &headers(GOOGLEBOT), &no_only)
            .is_render());
    }

    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

    fn headers(user_agent: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, user_agent.parse().unwrap());
        headers
    }

    #[test]
    fn detector_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<BotDetector>();
    }

    #[test]
    fn verdicts_display_as_documented() {
        let detector = detector();
        let verdict = detector.classify(GOOGLEBOT);
        assert!(
            verdict.to_string().starts_with("bot search-engines:"),
            "{verdict}"
        );
        assert_eq!(
            detector.classify(CHROME).to_string(),
            "human no rule matched"
        );
        assert_eq!(detector.classify("  ").to_string(), "human no user agent");
        let verdict = detector
            .classify("Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)");
        let text = verdict.to_string();
        assert!(
            text.starts_with("human monitoring:") && text.ends_with(" (family not rendered)"),
            "{text}"
        );
    }

    #[test]
    fn named_patterns_win_over_catch_alls() {
        // With seo-tools (the catch-alls) off, named crawlers stay bots...
        let without_catch_alls: Vec<_> = Family::DEFAULT_RENDERED
            .into_iter()
            .filter(|f| *f != Family::SeoTools)
            .collect();
        let detector = BotDetector::new(&without_catch_alls, None).unwrap();
        assert!(detector.classify(GOOGLEBOT).is_bot());
        // ...and unnamed ones, matched only by a catch-all, are passed through.
        let verdict = detector
            .classify("Mozilla/5.0 (compatible; FooBarBot/1.0; +https://foobar.example/bot)");
        assert!(
            verdict.to_string().starts_with("human seo-tools:"),
            "{verdict}"
        );
    }

    #[test]
    fn a_family_turned_off_passes_its_named_bots_through() {
        let rendered: Vec<_> = Family::DEFAULT_RENDERED
            .into_iter()
            .filter(|f| *f != Family::AiTraining)
            .collect();
        let detector = BotDetector::new(&rendered, None).unwrap();
        let gptbot = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.1; +https://openai.com/gptbot)";
        let verdict = detector.classify(gptbot);
        assert!(
            verdict.to_string().starts_with("human ai-training:"),
            "{verdict}"
        );
        assert!(BotDetector::with_defaults()
            .unwrap()
            .classify(gptbot)
            .is_bot());
    }

    #[test]
    fn woothee_decides_when_no_pattern_matches() {
        let detector = detector();
        // A crawler of woothee's dataset that no pattern names.
        let ua = "Mozilla/5.0 (X11; Linux x86_64) Hatena Pagetitle Agent/1.0";
        assert_eq!(detector.matching_rules(ua).count(), 0);
        assert_eq!(detector.classify(ua).to_string(), "bot woothee");
        assert!(!detector.is_woothee_crawler(CHROME));
    }

    #[test]
    fn a_family_turned_off_wins_over_woothee() {
        let detector = BotDetector::new(&[], None).unwrap();
        assert!(detector.is_woothee_crawler(GOOGLEBOT));
        let verdict = detector.classify(GOOGLEBOT);
        assert!(
            verdict.to_string().starts_with("human search-engines:"),
            "{verdict}"
        );
    }

    #[test]
    fn decide_renders_bots_on_get_and_head() {
        let detector = detector();
        for method in [Method::GET, Method::HEAD] {
            let decision = detector.decide(
                &method,
                "/products",
                None,
                &headers(GOOGLEBOT),
                &no_ignore(),
            );
            match decision {
                RenderDecision::Render { rule } => assert!(rule.starts_with("search-engines:")),
                other => panic!("{method}: {other:?}"),
            }
        }
    }

    #[test]
    fn decide_passes_other_methods() {
        let detector = detector();
        for method in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::PATCH,
        ] {
            let decision = detector.decide(&method, "/", None, &headers(GOOGLEBOT), &no_ignore());
            assert_eq!(
                decision,
                RenderDecision::Pass(PassReason::Method),
                "{method}"
            );
        }
    }

    #[test]
    fn decide_passes_humans_unless_escaped_fragment() {
        let detector = detector();
        let human = headers(CHROME);
        assert_eq!(
            detector.decide(&Method::GET, "/", None, &human, &no_ignore()),
            RenderDecision::Pass(PassReason::Human)
        );
        assert_eq!(
            detector.decide(
                &Method::GET,
                "/",
                Some("_escaped_fragment_="),
                &human,
                &no_ignore()
            ),
            RenderDecision::Render {
                rule: "escaped-fragment".to_string()
            }
        );
        // No User-Agent at all is a human too.
        assert_eq!(
            detector.decide(&Method::GET, "/", None, &HeaderMap::new(), &no_ignore()),
            RenderDecision::Pass(PassReason::Human)
        );
        // curl is not rendered by default.
        assert_eq!(
            detector.decide(
                &Method::GET,
                "/",
                Some("a=1"),
                &headers("curl/8.5.0"),
                &no_ignore()
            ),
            RenderDecision::Pass(PassReason::Human)
        );
    }

    #[test]
    fn decide_passes_static_assets_whatever_the_case() {
        let detector = detector();
        for path in [
            "/app.js",
            "/STYLE.CSS",
            "/img/logo.SVG",
            "/feed.xml",
            "/f.woff2",
            "/x.Json",
        ] {
            let decision =
                detector.decide(&Method::GET, path, None, &headers(GOOGLEBOT), &no_ignore());
            assert_eq!(
                decision,
                RenderDecision::Pass(PassReason::StaticAsset),
                "{path}"
            );
        }
        // Even with an escaped fragment.
        let decision = detector.decide(
            &Method::GET,
            "/app.js",
            Some("_escaped_fragment_="),
            &headers(CHROME),
            &no_ignore(),
        );
        assert_eq!(decision, RenderDecision::Pass(PassReason::StaticAsset));
    }

    #[test]
    fn decide_passes_ignored_paths() {
        let detector = detector();
        let ignore = regex::RegexSet::new(["^/api/", "^/admin"]).unwrap();
        for path in ["/api/users", "/admin", "/administrator/x"] {
            let decision = detector.decide(&Method::GET, path, None, &headers(GOOGLEBOT), &ignore);
            assert_eq!(
                decision,
                RenderDecision::Pass(PassReason::Ignored),
                "{path}"
            );
        }
        assert!(detector
            .decide(&Method::GET, "/apix", None, &headers(GOOGLEBOT), &ignore)
            .is_render());
    }

    #[test]
    fn decide_never_renders_the_renderers_own_requests() {
        let detector = detector();
        let mut with_guard = headers(GOOGLEBOT);
        with_guard.insert("X-Prerender", "1".parse().unwrap());
        assert_eq!(
            detector.decide(
                &Method::GET,
                "/",
                Some("_escaped_fragment_="),
                &with_guard,
                &no_ignore()
            ),
            RenderDecision::Pass(PassReason::LoopGuard)
        );
    }

    #[test]
    fn decide_tolerates_non_utf8_user_agents() {
        let detector = detector();
        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            http::HeaderValue::from_bytes(b"Mozilla/5.0 (compatible; Caf\xe9Bot/1.0)").unwrap(),
        );
        assert!(detector
            .decide(&Method::GET, "/", None, &headers, &no_ignore())
            .is_render());
    }

    #[test]
    fn mobile_crawlers_are_recognised() {
        assert!(is_mobile_crawler(
            "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.204 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
        ));
        assert!(is_mobile_crawler(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 14_7_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/14.1.2 Mobile/15E148 Safari/604.1 (compatible; AdsBot-Google-Mobile; +http://www.google.com/mobile/adsbot.html)"
        ));
        assert!(is_mobile_crawler(
            "SAMSUNG-SGH-E250/1.0 Profile/MIDP-2.0 Configuration/CLDC-1.1 UP.Browser/6.2.3.3.c.1.101 (GUI) MMP/2.0 (compatible; Googlebot-Mobile/2.1; +http://www.google.com/bot.html)"
        ));
        assert!(!is_mobile_crawler(GOOGLEBOT));
        assert!(!is_mobile_crawler(
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36"
        ));
    }
}
