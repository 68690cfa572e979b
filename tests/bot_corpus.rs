//! Bot detection against real User-Agent corpora (`tests/fixtures/user-agents/`)
//! and the published User-Agents of the crawlers that matter most.
//!
//! The corpora are split in two, deterministically: a string is **held
//! out** when the last byte of the SHA-256 of the string (UTF-8, without
//! its line end; for `ua_bots.tags.tsv` the User-Agent after the tab)
//! modulo 10 is 0, 1 or 2 — about 30 % of each file. (Not the first byte:
//! the corpora are themselves one half of a split on the first byte's
//! parity, so that byte is far from uniform here.) Rules are tuned on
//! the other 70 % only (the tuning tests below); the held-out part is
//! scored by [`held_out_strings_are_judged_like_unseen_traffic`] with
//! stricter bounds, as an estimate of how the rules do on User-Agents they
//! were not written for.
//!
//! Run with `--nocapture` to see every miss, false positive and how the
//! optional kinds (monitors, libraries, scanners) were called.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use prerender_proxy::bot::{BotDetector, Family, UaVerdict};

/// Tags whose strings may be called either way: monitoring and HTTP libraries
/// are not rendered by default, scanners and browser automation are neither
/// crawlers nor people.
const OPTIONAL_TAGS: [&str; 4] = [
    "monitoring",
    "http-library",
    "scanner",
    "browser-automation",
];

/// Least share of the crawlers (strings with no optional tag) called bots.
const MIN_RECALL: f64 = 0.98;
/// The same on the held-out part.
const MIN_HELD_OUT_RECALL: f64 = 0.99;

/// Whether a corpus string belongs to the held-out part (see the module
/// documentation).
fn held_out(user_agent: &str) -> bool {
    use sha2::{Digest, Sha256};
    Sha256::digest(user_agent.as_bytes())[31] % 10 < 3
}

/// Which part of the corpora a test reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Tuning,
    HeldOut,
    Both,
}

impl Part {
    fn has(self, user_agent: &str) -> bool {
        match self {
            Part::Both => true,
            Part::HeldOut => held_out(user_agent),
            Part::Tuning => !held_out(user_agent),
        }
    }
}

/// Real browsers that are rare today and whose User-Agents trip generic
/// signs: WebTV's and Kindle's one-item `(compatible; …)`, Konqueror, old
/// MSIE with toolbar and shell tokens, LG's TV browser's `Compatible`, and
/// Edge or Chrome with an app's token appended.
const RARE_BROWSERS: &[&str] = &[
    "Mozilla/3.0 WebTV/1.2 (compatible; MSIE 2.0)",
    "Mozilla/4.0 WebTV/2.6 (compatible; MSIE 4.0)",
    "Mozilla/5.0 (compatible; Konqueror/3)",
    "Mozilla/5.0 (compatible; Konqueror/4.5; Linux) KHTML/4.5.5 (like Gecko)",
    "Mozilla/5.0 (X11; Linux x86_64) KHTML/5.20.0 (like Gecko) Konqueror/5.20 Fedora/5.20.0-1.fc30",
    "Mozilla/4.0 (compatible; Linux 2.6.22) NetFront/3.4 Kindle/2.0 (screen 600x800)",
    "Mozilla/1.22 (compatible; MSIE 2.0; Windows 95)",
    "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1; FunWebProducts; AskTbFXTV5/5.9.1.14019)",
    "Mozilla/4.0 (compatible; MSIE 6.0; Windows 98; Win 9x 4.90; Hotbar 4.1.8.0; ZangoToolbar 4.8.2)",
    "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.0; Trident/4.0; GTB6.4; SLCC1; .NET CLR 2.0.50727; Media Center PC 5.0; .NET CLR 3.5.30729; .NET CLR 3.0.30729; OfficeLiveConnector.1.4; OfficeLivePatch.1.3)",
    "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1; Media Center PC 3.0; .NET CLR 1.0.3705; .NET CLR 1.1.4322; .NET CLR 2.0.50727; InfoPath.1; Alexa Toolbar)",
    "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1; QQDownload 1.7)",
    "Mozilla/4.0 (compatible;MSIE 6.0;Windows 98;Q312461)",
    "Mozilla/5.0 (compatible, MSIE 11, Windows NT 6.3; Trident/7.0; rv:11.0) like Gecko",
    "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/38.0.2125.122 Safari/537.36 LG Browser/8.00.00(LGE; 60UH6550-UB; 03.00.15; 1; DTV_W16N); webOS.TV-2016; LG NetCast.TV-2013 Compatible (LGE, 60UH6550-UB, wireless)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80 OneOutlook/1.2024.419.100",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0 Teams/24124.1412.2911.3341",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Avast/120.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.6261.156 Electron/29.4.0 Safari/537.36 Figma/124.1.12",
    "Mozilla/5.0 (Linux; Android 4.1.2; GT-S7710 Build/JZO54K) AppleWebKit/535.19 (KHTML, like Gecko) Chrome/18.0.1025.166 Mobile Safari/535.19 Mobile",
];

/// Bots that send a browser's User-Agent with a product token at the end.
const BROWSER_LIKE_BOTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/41.0.2228.0 Safari/537.36 LinkTiger",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/87.0.4280.88 Safari/537.36 MarketGoo/2.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Scope3/2.0 (scope3.com)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/80.0.3987.149 Safari/537.36 Seekport",
];

/// Published User-Agents of the crawlers that must always be bots, with the
/// family expected to name them (`None`: any rendered family).
const NAMED_CRAWLERS: &[(&str, &str, Option<Family>)] = &[
    ("Googlebot", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; +http://www.google.com/bot.html) Chrome/131.0.6778.204 Safari/537.36", Some(Family::SearchEngines)),
    ("Googlebot", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", Some(Family::SearchEngines)),
    ("Googlebot", "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.204 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", Some(Family::SearchEngines)),
    ("Googlebot", "Googlebot-Image/1.0", Some(Family::SearchEngines)),
    ("bingbot", "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", Some(Family::SearchEngines)),
    ("bingbot", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36", Some(Family::SearchEngines)),
    ("bingbot", "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/116.0.1938.76 Mobile Safari/537.36 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", Some(Family::SearchEngines)),
    ("GPTBot", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.1; +https://openai.com/gptbot)", Some(Family::AiTraining)),
    ("OAI-SearchBot", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; OAI-SearchBot/1.0; +https://openai.com/searchbot", Some(Family::AiSearch)),
    ("ChatGPT-User", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot", Some(Family::AiUserFetch)),
    ("ClaudeBot", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)", Some(Family::AiTraining)),
    ("Claude-SearchBot", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Claude-SearchBot/1.0; +Claude-SearchBot@anthropic.com)", Some(Family::AiSearch)),
    ("Claude-User", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Claude-User/1.0; +Claude-User@anthropic.com)", Some(Family::AiUserFetch)),
    ("PerplexityBot", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; PerplexityBot/1.0; +https://perplexity.ai/perplexitybot)", Some(Family::AiSearch)),
    ("Perplexity-User", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Perplexity-User/1.0; +https://perplexity.ai/perplexity-user)", Some(Family::AiUserFetch)),
    ("CCBot", "CCBot/2.0 (https://commoncrawl.org/faq/)", Some(Family::AiTraining)),
    ("Bytespider", "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)", Some(Family::AiTraining)),
    ("Amazonbot", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Amazonbot/0.1; +https://developer.amazon.com/support/amazonbot) Chrome/119.0.6045.214 Safari/537.36", Some(Family::AiTraining)),
    ("meta-externalagent", "meta-externalagent/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)", Some(Family::AiTraining)),
    ("Applebot", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)", Some(Family::SearchEngines)),
    ("facebookexternalhit", "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", Some(Family::SocialPreviews)),
    ("Twitterbot", "Twitterbot/1.0", Some(Family::SocialPreviews)),
    ("Slackbot", "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", Some(Family::SocialPreviews)),
    ("LinkedInBot", "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)", Some(Family::SocialPreviews)),
    ("Discordbot", "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)", Some(Family::SocialPreviews)),
    ("WhatsApp", "WhatsApp/2.23.20.0 A", Some(Family::SocialPreviews)),
    ("WhatsApp", "WhatsApp/2.2413.51 i", Some(Family::SocialPreviews)),
];

/// Published User-Agents of clients named by patterns that the corpus lacks;
/// they take part in the non-redundancy check. (tag-like label, user agent)
const MORE_CLIENTS: &[(&str, &str)] = &[
    ("social-preview", "TelegramBot (like TwitterBot)"),
    ("monitoring", "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)"),
    ("monitoring", "Mozilla/5.0 (compatible; StatusCake)"),
    ("monitoring", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Site24x7"),
    ("http-library", "curl/8.5.0"),
    ("http-library", "python-requests/2.31.0"),
    ("http-library", "Ruby"),
    ("http-library", "Faraday v2.9.0"),
    ("http-library", "Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230805.001)"),
    ("http-library", "MyShop/4.2.1 CFNetwork/1494.0.7 Darwin/23.4.0"),
];

/// In-app browsers and browsers whose names resemble crawlers': people.
const MORE_PEOPLE: &[&str] = &[
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.39.93;FBBV/620516335;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/622140412]",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/125.0.6422.165 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/466.0.0.50.73;]",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 334.0.4.32.98 (iPhone15,2; iOS 17_5; en_US; en; scale=3.00; 1179x2556; 612745712)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Snapchat/13.1.0.33 (like Safari/8618.2.12.10.6, panda)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Safari Line/14.9.0",
    "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 musical_ly_2023405020 JsSdk/1.0 NetType/WIFI Channel/googleplay AppName/musical_ly app_version/34.5.2 ByteLocale/en ByteFullLocale/en Region/US BytedanceWebview/d8a21c6",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.49(0x18003137) NetType/WIFI Language/zh_CN",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Twitter for iPhone/10.48",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [Pinterest/iOS]",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Flipboard/4.3.26",
    "Mozilla/5.0 (Linux; Android 9; CUBOT X19) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 9; CUBOT_X19) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 YaBrowser/24.4.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-A525F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 YaBrowser/24.4.3.89.00 SA/3 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 DuckDuckGo/7 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Slack/4.38.125 Chrome/124.0.6367.243 Electron/30.1.0 Safari/537.36 Sonic Slack_SSB/4.38.125",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.0.0 Safari/537.36 Atom/32.0.0.36",
];

fn fixture(name: &str) -> String {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "fixtures",
        "user-agents",
        name,
    ]
    .iter()
    .collect();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (tags, user agent) of every bot string of `part`.
fn bots_of(part: Part) -> Vec<(Vec<String>, String)> {
    fixture("ua_bots.tags.tsv")
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (tags, ua) = line.split_once('\t').expect("tags<TAB>user-agent");
            (
                tags.split(',').map(str::to_string).collect(),
                ua.to_string(),
            )
        })
        .filter(|(_, ua)| part.has(ua))
        .collect()
}

fn bots() -> Vec<(Vec<String>, String)> {
    bots_of(Part::Both)
}

/// The browsers of `part`; the hand-written people lists go with tuning.
fn humans_of(part: Part) -> Vec<String> {
    let mut humans: Vec<String> = fixture("ua_humans.txt")
        .lines()
        .filter(|line| !line.is_empty() && part.has(line))
        .map(str::to_string)
        .collect();
    if part != Part::HeldOut {
        humans.extend(MORE_PEOPLE.iter().map(|ua| ua.to_string()));
        humans.extend(RARE_BROWSERS.iter().map(|ua| ua.to_string()));
    }
    humans
}

fn humans() -> Vec<String> {
    humans_of(Part::Both)
}

fn is_optional(tags: &[String]) -> bool {
    tags.iter().any(|tag| OPTIONAL_TAGS.contains(&tag.as_str()))
}

fn default_detector() -> BotDetector {
    BotDetector::with_defaults().expect("built-in patterns compile")
}

/// Recall over the crawlers of `part` (printing misses and how the optional
/// kinds were called) and the number of crawlers scored.
fn crawler_recall(part: Part) -> (f64, usize, Vec<String>) {
    let detector = default_detector();
    let mut crawlers = 0;
    let mut misses = Vec::new();
    let mut optional_calls: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (tags, ua) in bots_of(part) {
        let verdict = detector.classify(&ua);
        if is_optional(&tags) {
            let counts = optional_calls.entry(tags.join(",")).or_default();
            if verdict.is_bot() {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
            continue;
        }
        crawlers += 1;
        if !verdict.is_bot() {
            misses.push(format!("{} [{}] {ua}", verdict, tags.join(",")));
        }
    }
    for miss in &misses {
        println!("missed: {miss}");
    }
    for (tags, (bot, human)) in &optional_calls {
        println!("optional {tags}: {bot} bot, {human} human");
    }
    let recall = 1.0 - misses.len() as f64 / crawlers as f64;
    println!(
        "recall {:.4} over {crawlers} crawlers ({} missed)",
        recall,
        misses.len()
    );
    (recall, crawlers, misses)
}

/// The browsers of `part` called bots.
fn false_positives(part: Part) -> (Vec<String>, usize) {
    let detector = default_detector();
    let humans = humans_of(part);
    let false_positives: Vec<String> = humans
        .iter()
        .filter_map(|ua| {
            let verdict = detector.classify(ua);
            verdict.is_bot().then(|| format!("{verdict}: {ua}"))
        })
        .collect();
    for fp in &false_positives {
        println!("false positive: {fp}");
    }
    println!(
        "{} false positives over {} browsers",
        false_positives.len(),
        humans.len()
    );
    (false_positives, humans.len())
}

#[test]
fn crawlers_of_the_tuning_part_are_bots() {
    let (recall, crawlers, misses) = crawler_recall(Part::Tuning);
    assert!(crawlers > 500, "corpus too small: {crawlers}");
    assert!(
        recall >= MIN_RECALL,
        "recall {recall:.4} < {MIN_RECALL}: {misses:#?}"
    );
}

#[test]
fn no_browser_of_the_tuning_part_is_called_a_bot() {
    let (false_positives, humans) = false_positives(Part::Tuning);
    assert!(humans > 800);
    assert!(false_positives.is_empty(), "{false_positives:#?}");
}

/// The score on strings the rules were not tuned on. A failure here is
/// not fixed by naming the missed string: that would make the part a
/// tuning part. Fix the generic rule that should have caught it, and
/// check it against the tuning part first.
#[test]
fn held_out_strings_are_judged_like_unseen_traffic() {
    let (recall, crawlers, misses) = crawler_recall(Part::HeldOut);
    let (false_positives, humans) = false_positives(Part::HeldOut);
    assert!(
        crawlers > 150 && humans > 250,
        "{crawlers} crawlers, {humans} browsers"
    );
    assert!(
        recall >= MIN_HELD_OUT_RECALL,
        "held-out recall {recall:.4} < {MIN_HELD_OUT_RECALL}: {misses:#?}"
    );
    assert!(false_positives.is_empty(), "{false_positives:#?}");
}

#[test]
fn the_split_is_deterministic_and_about_thirty_percent() {
    // Fixed by the hash, not by the order or the run.
    assert!(held_out("Twitterbot/1.0"));
    assert!(!held_out("curl/8.5.0"));
    let bots = bots().len();
    let held = bots_of(Part::HeldOut).len();
    assert_eq!(held + bots_of(Part::Tuning).len(), bots);
    let share = held as f64 / bots as f64;
    assert!((0.25..0.35).contains(&share), "{share}");
}

#[test]
fn rare_browsers_are_people_and_browser_like_bots_are_bots() {
    let detector = default_detector();
    for ua in RARE_BROWSERS {
        let verdict = detector.classify(ua);
        assert!(!verdict.is_bot(), "{verdict}: {ua}");
    }
    for ua in BROWSER_LIKE_BOTS {
        let verdict = detector.classify(ua);
        assert!(verdict.is_bot(), "{verdict}: {ua}");
    }
}

#[test]
fn named_crawlers_are_always_bots_of_their_family() {
    let detector = default_detector();
    let mut failures = Vec::new();
    for (name, ua, family) in NAMED_CRAWLERS {
        match detector.classify(ua) {
            UaVerdict::Bot { family: got, rule } => {
                if family.is_some() && got != *family {
                    failures.push(format!("{name}: {rule} is not {family:?}: {ua}"));
                }
            }
            human => failures.push(format!("{name}: {human}: {ua}")),
        }
    }
    // Every corpus string of those crawlers too.
    let names: HashSet<String> = NAMED_CRAWLERS
        .iter()
        .map(|(n, _, _)| n.to_ascii_lowercase())
        .collect();
    let mut corpus_strings = 0;
    for (_, ua) in bots() {
        let lower = ua.to_ascii_lowercase();
        if names.iter().any(|name| lower.contains(name.as_str())) {
            corpus_strings += 1;
            let verdict = detector.classify(&ua);
            if !verdict.is_bot() {
                failures.push(format!("{verdict}: {ua}"));
            }
        }
    }
    println!("{corpus_strings} corpus strings of named crawlers");
    assert!(corpus_strings > 20);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn libraries_and_monitors_are_human_by_default_and_bots_when_enabled() {
    let by_default = default_detector();
    let everything = BotDetector::new(&Family::ALL, None).unwrap();
    let cases = [
        ("curl/8.5.0", Family::HttpLibraries),
        ("curl/7.64.1", Family::HttpLibraries),
        ("python-requests/2.31.0", Family::HttpLibraries),
        (
            "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
            Family::Monitoring,
        ),
    ];
    for (ua, family) in cases {
        let verdict = by_default.classify(ua);
        let text = verdict.to_string();
        assert!(
            text.starts_with(&format!("human {}:", family.name()))
                && text.ends_with("(family not rendered)"),
            "{ua}: {text}"
        );
        match everything.classify(ua) {
            UaVerdict::Bot { rule, family: got } => {
                assert_eq!(got, Some(family), "{ua}: {rule}");
                assert!(
                    rule.starts_with(&format!("{}:", family.name())),
                    "{ua}: {rule}"
                );
            }
            human => panic!("{ua}: {human}"),
        }
    }
    // Enabling one family does not enable the other.
    let with_monitoring: Vec<_> = Family::DEFAULT_RENDERED
        .into_iter()
        .chain([Family::Monitoring])
        .collect();
    let detector = BotDetector::new(&with_monitoring, None).unwrap();
    assert!(detector
        .classify("Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)")
        .is_bot());
    assert!(!detector.classify("curl/8.5.0").is_bot());
}

/// A pattern is redundant when another pattern **of the same family**
/// matches every string of the corpus that it matches (bots, browsers and
/// the published User-Agents above). Within a family, the superset pattern
/// decides every verdict the subset one would (same family, so the same
/// render/pass outcome under every `bot_families` setting), so the subset
/// one only lengthens the list. Across families overlap is deliberate: a
/// named `GPTBot` in `ai-training` also matches the `bot` catch-all of
/// `seo-tools`, and it is the named pattern that lets an operator turn AI
/// training crawlers off. By this definition a pattern matching nothing in
/// the corpus is redundant too (the empty set is a subset of any), so every
/// pattern must be exercised by at least one real User-Agent.
#[test]
fn no_pattern_is_redundant_within_its_family() {
    let detector = default_detector();
    let mut corpus: Vec<String> = bots().into_iter().map(|(_, ua)| ua).collect();
    corpus.extend(humans());
    corpus.extend(NAMED_CRAWLERS.iter().map(|(_, ua, _)| ua.to_string()));
    corpus.extend(MORE_CLIENTS.iter().map(|(_, ua)| ua.to_string()));
    corpus.extend(BROWSER_LIKE_BOTS.iter().map(|ua| ua.to_string()));

    let rules = detector.rules();
    let mut matched: Vec<HashSet<usize>> = vec![HashSet::new(); rules.len()];
    for (string_index, ua) in corpus.iter().enumerate() {
        for rule in detector.matching_rules(ua) {
            let rule_index = rules
                .iter()
                .position(|r| r.name() == rule.name())
                .expect("rule of this detector");
            matched[rule_index].insert(string_index);
        }
    }
    let mut redundant = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if matched[i].is_empty() {
            redundant.push(format!(
                "{} `{}` matches nothing",
                rule.name(),
                rule.pattern()
            ));
            continue;
        }
        for (j, other) in rules.iter().enumerate() {
            if i != j && rule.family() == other.family() && matched[i].is_subset(&matched[j]) {
                redundant.push(format!(
                    "{} `{}` is covered by {} `{}`",
                    rule.name(),
                    rule.pattern(),
                    other.name(),
                    other.pattern()
                ));
            }
        }
    }
    assert!(redundant.is_empty(), "{redundant:#?}");
}

#[test]
fn rule_names_are_family_and_line_of_the_pattern_file() {
    let detector = default_detector();
    let files: BTreeMap<&str, Vec<String>> = Family::ALL
        .iter()
        .map(|family| {
            let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "bot-patterns", family.name()]
                .iter()
                .collect();
            let text = std::fs::read_to_string(&path).unwrap();
            (family.name(), text.lines().map(str::to_string).collect())
        })
        .collect();
    let everything = BotDetector::new(&Family::ALL, None).unwrap();
    let mut compiled: BTreeMap<String, regex::Regex> = BTreeMap::new();
    let mut checked = 0;
    for (_, ua) in bots() {
        for detector in [&detector, &everything] {
            let UaVerdict::Bot { rule, family } = detector.classify(&ua) else {
                continue;
            };
            if rule == "woothee" {
                assert_eq!(family, None);
                continue;
            }
            let (name, line) = rule.split_once(':').unwrap_or_else(|| panic!("{rule}"));
            let line: usize = line.parse().unwrap_or_else(|_| panic!("{rule}"));
            assert_eq!(family.map(Family::name), Some(name), "{rule}");
            let lines = &files[name];
            let pattern = lines[line - 1].trim();
            assert!(
                !pattern.is_empty() && !pattern.starts_with('#'),
                "{rule} is `{pattern}`"
            );
            let regex = compiled.entry(rule.clone()).or_insert_with(|| {
                regex::RegexBuilder::new(pattern)
                    .case_insensitive(true)
                    .build()
                    .unwrap()
            });
            assert!(
                regex.is_match(&ua),
                "{rule} `{pattern}` does not match {ua}"
            );
            checked += 1;
        }
    }
    assert!(checked > 1000);
}
