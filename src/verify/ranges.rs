//! The IP ranges crawler operators publish, in the shape they publish them
//! (`{"creationTime": …, "prefixes": [{"ipv4Prefix": "…"}, {"ipv6Prefix":
//! "…"}]}`, as Google, OpenAI and Perplexity do).
//!
//! Snapshots ship in `bot-patterns/ip-ranges/` and are compiled in; they are
//! never refreshed by the proxy. `crawler_ip_ranges = DIR` replaces them:
//! `DIR/<crawler>.json` (e.g. the operator's current `gptbot.json`) takes
//! the place of the built-in file of that name; crawlers without a file in
//! DIR keep the snapshot. Any other `.json` file in DIR is an error naming
//! it (a typo must not leave the snapshot in force silently); files not
//! ending in `.json` are ignored.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use super::claims::{Method, CRAWLERS};

/// Largest range file read from `crawler_ip_ranges`. Published lists are a
/// few KiB; anything near this is not a range list.
pub const MAX_RANGE_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The built-in snapshots, by crawler name.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "duckduckbot",
        include_str!("../../bot-patterns/ip-ranges/duckduckbot.json"),
    ),
    (
        "gptbot",
        include_str!("../../bot-patterns/ip-ranges/gptbot.json"),
    ),
    (
        "oai-searchbot",
        include_str!("../../bot-patterns/ip-ranges/oai-searchbot.json"),
    ),
    (
        "chatgpt-user",
        include_str!("../../bot-patterns/ip-ranges/chatgpt-user.json"),
    ),
    (
        "perplexitybot",
        include_str!("../../bot-patterns/ip-ranges/perplexitybot.json"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum RangeFileError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {size} bytes, more than the {MAX_RANGE_FILE_BYTES} a range file may have", path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("{}: not a crawler range file (names must be one of: {})", path.display(), range_crawler_names().join(", "))]
    UnknownFile { path: PathBuf },
}

#[derive(Deserialize)]
struct RangeFile {
    prefixes: Vec<Prefix>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Prefix {
    ipv4_prefix: Option<String>,
    ipv6_prefix: Option<String>,
}

fn range_crawler_names() -> Vec<&'static str> {
    CRAWLERS
        .iter()
        .filter(|c| c.method == Method::IpRanges)
        .map(|c| c.name)
        .collect()
}

/// Parses one published range file; `origin` names it in errors.
pub fn parse(origin: &str, text: &str) -> Result<Vec<IpNet>, RangeFileError> {
    let invalid = |message: String| RangeFileError::Invalid {
        origin: origin.to_string(),
        message,
    };
    let file: RangeFile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut nets = Vec::new();
    for prefix in file.prefixes {
        for raw in [prefix.ipv4_prefix, prefix.ipv6_prefix]
            .into_iter()
            .flatten()
        {
            let net: IpNet = raw
                .trim()
                .parse()
                .map_err(|_| invalid(format!("{raw:?} is not a CIDR")))?;
            nets.push(net.trunc());
        }
    }
    Ok(nets)
}

/// The ranges of every crawler verified by [`Method::IpRanges`].
#[derive(Debug, Clone, Default)]
pub struct IpRanges {
    /// `(crawler name, its ranges, where they came from)`.
    lists: Vec<(&'static str, Vec<IpNet>, String)>,
}

impl IpRanges {
    /// The built-in snapshots.
    pub fn built_in() -> IpRanges {
        let lists = BUILT_IN
            .iter()
            .map(|(name, text)| {
                let origin = format!("bot-patterns/ip-ranges/{name}.json");
                let nets = parse(&origin, text).expect("built-in range files parse");
                (*name, nets, origin)
            })
            .collect();
        IpRanges { lists }
    }

    /// The built-in snapshots with the files of `dir` in their place.
    pub fn load(dir: Option<&Path>) -> Result<IpRanges, RangeFileError> {
        let mut ranges = Self::built_in();
        let Some(dir) = dir else {
            return Ok(ranges);
        };
        let io = |path: &Path, source| RangeFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(|e| io(dir, e))?;
        entries.sort();
        for path in entries {
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(name) = file_name.strip_suffix(".json") else {
                continue;
            };
            let Some(slot) = ranges.lists.iter_mut().find(|(n, _, _)| *n == name) else {
                return Err(RangeFileError::UnknownFile { path });
            };
            let size = std::fs::metadata(&path).map_err(|e| io(&path, e))?.len();
            if size > MAX_RANGE_FILE_BYTES {
                return Err(RangeFileError::TooLarge { path, size });
            }
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            let origin = path.display().to_string();
            slot.1 = parse(&origin, &text)?;
            slot.2 = origin;
        }
        Ok(ranges)
    }

    /// Whether `ip` is in the ranges published for `crawler`.
    pub fn contains(&self, crawler: &str, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.lists
            .iter()
            .find(|(name, _, _)| *name == crawler)
            .is_some_and(|(_, nets, _)| nets.iter().any(|n| n.contains(&ip)))
    }

    /// `(crawler, number of ranges, source)` for the start-up log.
    pub fn sources(&self) -> impl Iterator<Item = (&'static str, usize, &str)> {
        self.lists
            .iter()
            .map(|(name, nets, origin)| (*name, nets.len(), origin.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_crawler_has_a_built_in_snapshot() {
        let ranges = IpRanges::built_in();
        for name in range_crawler_names() {
            let (_, count, _) = ranges.sources().find(|(n, _, _)| *n == name).unwrap();
            assert!(count > 0, "{name}");
        }
        assert!(ranges.contains("gptbot", "20.171.206.7".parse().unwrap()));
        assert!(ranges.contains("gptbot", "::ffff:20.171.206.7".parse().unwrap()));
        assert!(!ranges.contains("gptbot", "20.171.208.7".parse().unwrap()));
        assert!(!ranges.contains("chatgpt-user", "20.171.206.7".parse().unwrap()));
        assert!(!ranges.contains("googlebot", "66.249.66.1".parse().unwrap()));
    }

    #[test]
    fn the_published_shape_parses_both_families() {
        let nets = parse(
            "t",
            r#"{"creationTime": "2025-01-01T00:00:00", "prefixes": [
                {"ipv4Prefix": "192.0.2.0/24"}, {"ipv6Prefix": "2001:db8::/32"}]}"#,
        )
        .unwrap();
        assert_eq!(nets.len(), 2);
        assert!(parse("t", r#"{"prefixes": [{"ipv4Prefix": "nope"}]}"#).is_err());
        assert!(parse("t", "[]").is_err());
    }

    #[test]
    fn a_directory_replaces_files_by_name_and_refuses_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("gptbot.json"),
            r#"{"prefixes": [{"ipv4Prefix": "198.51.100.0/24"}]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("README"), "not a range file").unwrap();
        let ranges = IpRanges::load(Some(dir.path())).unwrap();
        assert!(ranges.contains("gptbot", "198.51.100.9".parse().unwrap()));
        assert!(!ranges.contains("gptbot", "20.171.206.7".parse().unwrap()));
        // Others keep their snapshot.
        assert!(ranges.contains("oai-searchbot", "20.42.10.177".parse().unwrap()));

        std::fs::write(dir.path().join("gtpbot.json"), "{}").unwrap();
        let e = IpRanges::load(Some(dir.path())).unwrap_err();
        assert!(e.to_string().contains("gtpbot.json"), "{e}");
    }
}
