//! Pattern files: their format, the built-in set compiled into the binary,
//! and the operator's extra directory (`--bot-patterns DIR`).
//!
//! # Format
//! One case-insensitive regex per line (leading and trailing whitespace is
//! ignored). A line starting with `#` is a comment and blank lines are
//! ignored, except the directive line `#! catch-all`: the patterns after it,
//! to the end of that file, are catch-alls (generic signs of a bot) rather
//! than named clients. Named patterns decide before catch-alls; see the
//! matching order in [`crate::bot`].
//!
//! # The extra directory
//! A file in the directory named after a family (`search-engines`, …) is
//! **appended** to that family: its patterns count exactly like the built-in
//! ones of the family, and start as named patterns (a `#! catch-all` line
//! in the file switches the rest of it to catch-alls). Appending rather than
//! replacing keeps the built-in list, which improves from release to
//! release, in force; to make a client a human instead, append its pattern to
//! a family that is not rendered (e.g. `monitoring`): a named match in a
//! family that is not rendered always passes the request through.
//! Any other file name is an error naming the file (a typo must not be
//! ignored silently); names starting with `.` are skipped.
//! Rules from the directory are named `<path>:<line>`, which ends in
//! `<family>:<line>` since the file is named after its family.

use std::fmt;
use std::path::{Path, PathBuf};

use regex::bytes::RegexBuilder;

use super::family::Family;

/// The directive line after which the rest of a file holds catch-alls.
pub const CATCH_ALL_DIRECTIVE: &str = "#! catch-all";

/// Largest pattern file read from the extra directory. The built-in files
/// are a few KiB; anything near this is a mistake (a log file dropped in the
/// directory), not a pattern list.
pub const MAX_PATTERN_FILE_BYTES: u64 = 1024 * 1024;

/// User-Agents of everyday browsers that no pattern may match: a pattern
/// that does (or that matches the empty string, as `a|` does) would turn every
/// visitor into a bot, or, in a family that is not rendered, hide every bot
/// that looks like a browser.
pub(crate) const ORDINARY_BROWSERS: [&str; 3] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
];

/// The built-in pattern files, compiled into the binary.
const BUILT_IN: [(Family, &str); 9] = [
    (
        Family::SearchEngines,
        include_str!("../../bot-patterns/search-engines"),
    ),
    (
        Family::SocialPreviews,
        include_str!("../../bot-patterns/social-previews"),
    ),
    (
        Family::AiTraining,
        include_str!("../../bot-patterns/ai-training"),
    ),
    (
        Family::AiSearch,
        include_str!("../../bot-patterns/ai-search"),
    ),
    (
        Family::AiUserFetch,
        include_str!("../../bot-patterns/ai-user-fetch"),
    ),
    (
        Family::SeoTools,
        include_str!("../../bot-patterns/seo-tools"),
    ),
    (
        Family::FeedReaders,
        include_str!("../../bot-patterns/feed-readers"),
    ),
    (
        Family::Monitoring,
        include_str!("../../bot-patterns/monitoring"),
    ),
    (
        Family::HttpLibraries,
        include_str!("../../bot-patterns/http-libraries"),
    ),
];

/// Why the bot patterns could not be loaded. Every variant names the file
/// (and line) at fault.
#[derive(Debug, thiserror::Error)]
pub enum BotPatternError {
    /// A line is not a valid regex.
    #[error("{origin}:{line}: invalid pattern `{pattern}`: {reason}")]
    InvalidPattern {
        origin: PatternOrigin,
        line: usize,
        pattern: String,
        reason: String,
    },
    /// A line matches an ordinary browser (or the empty string).
    #[error(
        "{origin}:{line}: pattern `{pattern}` matches an ordinary browser's User-Agent \
         (`{browser}`), so it would misclassify every visitor"
    )]
    MatchesBrowsers {
        origin: PatternOrigin,
        line: usize,
        pattern: String,
        browser: &'static str,
    },
    /// A `#!` line other than `#! catch-all`.
    #[error("{origin}:{line}: unknown directive `{directive}` (the only directive is `{CATCH_ALL_DIRECTIVE}`)")]
    UnknownDirective {
        origin: PatternOrigin,
        line: usize,
        directive: String,
    },
    /// A file in the extra directory whose name is not a family.
    #[error(
        "{}: not a bot family file (names must be one of: {})",
        path.display(),
        Family::ALL.map(Family::name).join(", ")
    )]
    UnknownFile { path: PathBuf },
    /// An entry of the extra directory named after a family is not a file.
    #[error("{}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    /// A pattern file over [`MAX_PATTERN_FILE_BYTES`].
    #[error("{}: {size} bytes, more than the {MAX_PATTERN_FILE_BYTES} a pattern file may have", path.display())]
    FileTooLarge { path: PathBuf, size: u64 },
    /// The directory or one of its files cannot be read (or is not UTF-8).
    #[error("{}: cannot read bot patterns: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// All patterns together exceed the regex engine's size limit.
    #[error("bot patterns: the combined pattern set cannot be compiled: {reason}")]
    SetTooLarge { reason: String },
}

/// Where a pattern line comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternOrigin {
    /// A built-in file of `bot-patterns/`, compiled in.
    BuiltIn(Family),
    /// A file of the extra directory.
    File(PathBuf),
}

impl fmt::Display for PatternOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternOrigin::BuiltIn(family) => f.write_str(family.name()),
            PatternOrigin::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One pattern line of a family file.
#[derive(Debug, Clone)]
pub struct PatternRule {
    family: Family,
    line: usize,
    pattern: String,
    catch_all: bool,
    origin: PatternOrigin,
    name: String,
}

impl PatternRule {
    /// The family whose file holds the pattern.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The 1-based line number in its file.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The regex as written (it is compiled case-insensitively).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern is a catch-all (after `#! catch-all`).
    pub fn is_catch_all(&self) -> bool {
        self.catch_all
    }

    /// Where the line comes from.
    pub fn origin(&self) -> &PatternOrigin {
        &self.origin
    }

    /// The rule name in verdicts: `<family>:<line>` for a built-in line,
    /// `<path>:<line>` for a line of the extra directory.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A regex builder with the options every pattern is compiled with: case
/// insensitive, and ASCII-only classes (`\w`, `\b`, `\s`) since User-Agents
/// are ASCII in practice; this keeps the compiled set small and fast.
pub(crate) fn pattern_builder(pattern: &str) -> RegexBuilder {
    let mut builder = RegexBuilder::new(pattern);
    builder.case_insensitive(true).unicode(false);
    builder
}

/// Parses one family file. `origin` names it in rule names and errors.
pub fn parse_pattern_file(
    family: Family,
    origin: &PatternOrigin,
    text: &str,
) -> Result<Vec<PatternRule>, BotPatternError> {
    let mut rules = Vec::new();
    let mut catch_all = false;
    for (index, raw_line) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw_line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(directive) = trimmed.strip_prefix("#!") {
            if directive.trim() == CATCH_ALL_DIRECTIVE["#!".len()..].trim() {
                catch_all = true;
                continue;
            }
            return Err(BotPatternError::UnknownDirective {
                origin: origin.clone(),
                line,
                directive: trimmed.to_string(),
            });
        }
        if trimmed.starts_with('#') {
            continue;
        }
        check_pattern(origin, line, trimmed)?;
        let name = format!("{origin}:{line}");
        rules.push(PatternRule {
            family,
            line,
            pattern: trimmed.to_string(),
            catch_all,
            origin: origin.clone(),
            name,
        });
    }
    Ok(rules)
}

/// Compiles one pattern alone, so that an error names its line, and refuses
/// patterns that match ordinary browsers.
fn check_pattern(
    origin: &PatternOrigin,
    line: usize,
    pattern: &str,
) -> Result<(), BotPatternError> {
    let regex =
        pattern_builder(pattern)
            .build()
            .map_err(|error| BotPatternError::InvalidPattern {
                origin: origin.clone(),
                line,
                pattern: pattern.to_string(),
                reason: short_regex_error(&error),
            })?;
    if let Some(browser) = ORDINARY_BROWSERS
        .into_iter()
        .find(|browser| regex.is_match(browser.as_bytes()))
    {
        return Err(BotPatternError::MatchesBrowsers {
            origin: origin.clone(),
            line,
            pattern: pattern.to_string(),
            browser,
        });
    }
    Ok(())
}

/// The one-line reason of a regex error (its full text draws a caret
/// diagram over several lines, unsuited to a one-line startup error).
pub(crate) fn short_regex_error(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("error:"))
        .map(|reason| reason.trim().to_string())
        .unwrap_or_else(|| text.lines().collect::<Vec<_>>().join(" "))
}

/// Every rule: for each family in [`Family::ALL`] order, its built-in lines
/// and then those of its file in `extra_dir`, if any.
pub fn load_rules(extra_dir: Option<&Path>) -> Result<Vec<PatternRule>, BotPatternError> {
    let mut extra = match extra_dir {
        Some(dir) => read_extra_dir(dir)?,
        None => Vec::new(),
    };
    let mut rules = Vec::new();
    for (family, text) in BUILT_IN {
        rules.extend(parse_pattern_file(
            family,
            &PatternOrigin::BuiltIn(family),
            text,
        )?);
        for (_, path, text) in extra.iter_mut().filter(|(f, _, _)| *f == family) {
            let origin = PatternOrigin::File(path.clone());
            rules.extend(parse_pattern_file(family, &origin, text)?);
        }
    }
    Ok(rules)
}

/// Reads the family files of the extra directory, sorted by name.
fn read_extra_dir(dir: &Path) -> Result<Vec<(Family, PathBuf, String)>, BotPatternError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BotPatternError::Io { path, source }
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            return Err(BotPatternError::UnknownFile { path });
        };
        if name.starts_with('.') {
            continue;
        }
        let Some(family) = Family::from_name(name) else {
            return Err(BotPatternError::UnknownFile { path });
        };
        paths.push((family, path));
    }
    paths.sort_by(|a, b| a.1.cmp(&b.1));
    let mut files = Vec::with_capacity(paths.len());
    for (family, path) in paths {
        // `metadata` follows symlinks, so a link to a file is accepted.
        let metadata = std::fs::metadata(&path).map_err(io_error(&path))?;
        if !metadata.is_file() {
            return Err(BotPatternError::NotAFile { path });
        }
        if metadata.len() > MAX_PATTERN_FILE_BYTES {
            return Err(BotPatternError::FileTooLarge {
                size: metadata.len(),
                path,
            });
        }
        let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
        files.push((family, path, text));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<PatternRule>, BotPatternError> {
        parse_pattern_file(
            Family::FeedReaders,
            &PatternOrigin::BuiltIn(Family::FeedReaders),
            text,
        )
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_and_lines_keep_their_numbers() {
        let rules = parse("# readers\n\n  feedly  \n   \n# more\ninoreader\n").unwrap();
        let summary: Vec<_> = rules
            .iter()
            .map(|r| (r.line(), r.pattern(), r.name(), r.is_catch_all()))
            .collect();
        assert_eq!(
            summary,
            [
                (3, "feedly", "feed-readers:3", false),
                (6, "inoreader", "feed-readers:6", false)
            ]
        );
    }

    #[test]
    fn patterns_after_the_directive_are_catch_alls() {
        let rules = parse("feedly\n#! catch-all\n# words\nrss\n").unwrap();
        assert!(!rules[0].is_catch_all());
        assert!(rules[1].is_catch_all());
        assert_eq!(rules[1].name(), "feed-readers:4");
        // Spacing inside the directive does not matter.
        assert!(parse("#!catch-all\nrss\n").unwrap()[0].is_catch_all());
    }

    #[test]
    fn an_unknown_directive_is_an_error_naming_file_and_line() {
        let err = parse("feedly\n#! catchall\nrss\n").unwrap_err();
        assert!(matches!(
            err,
            BotPatternError::UnknownDirective { line: 2, .. }
        ));
        assert!(err
            .to_string()
            .starts_with("feed-readers:2: unknown directive `#! catchall`"));
    }

    #[test]
    fn a_bad_regex_is_an_error_naming_file_and_line() {
        let err = parse("# ok\nfeedly\nfeed(reader\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("feed-readers:3: invalid pattern `feed(reader`: "),
            "{text}"
        );
        assert!(!text.contains('\n'), "one line: {text}");
        assert!(text.contains("unclosed group"), "{text}");

        let origin = PatternOrigin::File(PathBuf::from("/etc/bots/feed-readers"));
        let err = parse_pattern_file(Family::FeedReaders, &origin, "[z-a]\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/etc/bots/feed-readers:1: invalid pattern `[z-a]`"),
            "{err}"
        );
    }

    #[test]
    fn patterns_matching_browsers_or_everything_are_refused() {
        for pattern in ["mozilla", "safari|", "a*", "(?:)"] {
            let err = parse(&format!("feedly\n{pattern}\n")).unwrap_err();
            assert!(
                matches!(err, BotPatternError::MatchesBrowsers { line: 2, .. }),
                "{pattern}: {err}"
            );
        }
    }

    #[test]
    fn patterns_are_case_insensitive() {
        let regex = pattern_builder("googlebot").build().unwrap();
        assert!(regex.is_match(b"Mozilla/5.0 (compatible; GoogleBot/2.1)"));
    }

    #[test]
    fn every_built_in_file_parses_and_has_patterns() {
        let rules = load_rules(None).unwrap();
        for family in Family::ALL {
            let count = rules.iter().filter(|r| r.family() == family).count();
            assert!(count > 0, "{family} has no patterns");
        }
        // Ordered by family, then line.
        let keys: Vec<_> = rules.iter().map(|r| (r.family(), r.line())).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn extra_directory_files_are_appended_to_their_family() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("monitoring"), "# ours\nacme-health\n").unwrap();
        std::fs::write(dir.path().join(".keep"), "").unwrap();
        let rules = load_rules(Some(dir.path())).unwrap();
        let ours: Vec<_> = rules
            .iter()
            .filter(|r| r.pattern() == "acme-health")
            .collect();
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0].family(), Family::Monitoring);
        let expected = format!("{}:2", dir.path().join("monitoring").display());
        assert_eq!(ours[0].name(), expected);
        // Appended after the built-in monitoring lines, before http-libraries.
        let position = rules
            .iter()
            .position(|r| r.pattern() == "acme-health")
            .unwrap();
        assert_eq!(
            rules[position - 1].origin(),
            &PatternOrigin::BuiltIn(Family::Monitoring)
        );
        assert_eq!(rules[position + 1].family(), Family::HttpLibraries);
    }

    #[test]
    fn extra_directory_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("search-engine"), "foo\n").unwrap();
        let err = load_rules(Some(dir.path())).unwrap_err();
        assert!(matches!(err, BotPatternError::UnknownFile { .. }));
        assert!(
            err.to_string()
                .contains("search-engine: not a bot family file"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("seo-tools"), "ok\nbad(\n").unwrap();
        let err = load_rules(Some(dir.path())).unwrap_err();
        let expected = format!(
            "{}:2: invalid pattern",
            dir.path().join("seo-tools").display()
        );
        assert!(err.to_string().starts_with(&expected), "{err}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ai-search")).unwrap();
        let err = load_rules(Some(dir.path())).unwrap_err();
        assert!(matches!(err, BotPatternError::NotAFile { .. }), "{err}");

        let missing = dir.path().join("nope");
        let err = load_rules(Some(&missing)).unwrap_err();
        assert!(matches!(err, BotPatternError::Io { .. }));
        assert!(
            err.to_string().contains("nope: cannot read bot patterns"),
            "{err}"
        );
    }
}
