//! The nine bot families: one pattern file each under `bot-patterns/`, and
//! the unit in which operators choose what is rendered (`bot_families`).

use std::fmt;
use std::str::FromStr;

/// A family of automated clients. Each has one pattern file in
/// `bot-patterns/` whose name is [`Family::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Web, image, news, shopping and job search crawlers.
    SearchEngines,
    /// Link-card fetchers of social networks and chat apps.
    SocialPreviews,
    /// Crawlers collecting pages to train models.
    AiTraining,
    /// Crawlers indexing pages for AI assistants' search answers.
    AiSearch,
    /// Assistants fetching a page on a person's behalf.
    AiUserFetch,
    /// SEO, marketing and auditing tools; also the catch-alls for unnamed bots.
    SeoTools,
    /// RSS/Atom readers and podcast directories.
    FeedReaders,
    /// Uptime and performance checks (not rendered by default).
    Monitoring,
    /// HTTP libraries, command-line clients, app HTTP stacks and scanners
    /// (not rendered by default).
    HttpLibraries,
}

/// The error of parsing a family name that is none of the nine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown bot family `{name}` (expected one of: {})",
    Family::names_list()
)]
pub struct UnknownFamily {
    /// The name that was given.
    pub name: String,
}

impl Family {
    /// Every family, in the order their patterns are compiled and reported.
    pub const ALL: [Family; 9] = [
        Family::SearchEngines,
        Family::SocialPreviews,
        Family::AiTraining,
        Family::AiSearch,
        Family::AiUserFetch,
        Family::SeoTools,
        Family::FeedReaders,
        Family::Monitoring,
        Family::HttpLibraries,
    ];

    /// The families rendered unless configured otherwise: all but
    /// `monitoring` and `http-libraries`, so curl and uptime checks get the
    /// origin's own response.
    pub const DEFAULT_RENDERED: [Family; 7] = [
        Family::SearchEngines,
        Family::SocialPreviews,
        Family::AiTraining,
        Family::AiSearch,
        Family::AiUserFetch,
        Family::SeoTools,
        Family::FeedReaders,
    ];

    /// The file name of the family in `bot-patterns/`, also its name in
    /// `bot_families` and in rule names (`search-engines:12`).
    pub fn name(self) -> &'static str {
        match self {
            Family::SearchEngines => "search-engines",
            Family::SocialPreviews => "social-previews",
            Family::AiTraining => "ai-training",
            Family::AiSearch => "ai-search",
            Family::AiUserFetch => "ai-user-fetch",
            Family::SeoTools => "seo-tools",
            Family::FeedReaders => "feed-readers",
            Family::Monitoring => "monitoring",
            Family::HttpLibraries => "http-libraries",
        }
    }

    /// The family of that exact name (names are lowercase, as the files are).
    pub fn from_name(name: &str) -> Option<Self> {
        Family::ALL.into_iter().find(|family| family.name() == name)
    }

    /// [`Family::DEFAULT_RENDERED`] as a vector, for configuration defaults.
    pub fn default_rendered() -> Vec<Family> {
        Family::DEFAULT_RENDERED.to_vec()
    }

    /// Position in [`Family::ALL`], for per-family tables.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    fn names_list() -> String {
        Family::ALL.map(Family::name).join(", ")
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Family {
    type Err = UnknownFamily;

    /// Accepts the family name with surrounding whitespace and in any case,
    /// as operators type it in `--bot-families search-engines, AI-Training`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Family::from_name(&wanted).ok_or_else(|| UnknownFamily {
            name: s.trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_index_matches_position() {
        for (position, family) in Family::ALL.into_iter().enumerate() {
            assert_eq!(Family::from_name(family.name()), Some(family));
            assert_eq!(family.name().parse::<Family>(), Ok(family));
            assert_eq!(family.to_string(), family.name());
            assert_eq!(family.index(), position);
        }
    }

    #[test]
    fn parsing_is_lenient_about_case_and_spaces_but_not_spelling() {
        assert_eq!(" AI-Training ".parse::<Family>(), Ok(Family::AiTraining));
        let err = "search_engines".parse::<Family>().unwrap_err();
        assert_eq!(err.name, "search_engines");
        assert!(err.to_string().contains("search-engines, social-previews"));
    }

    #[test]
    fn monitoring_and_http_libraries_are_not_rendered_by_default() {
        let rendered = Family::default_rendered();
        assert_eq!(rendered.len(), 7);
        assert!(!rendered.contains(&Family::Monitoring));
        assert!(!rendered.contains(&Family::HttpLibraries));
    }
}
