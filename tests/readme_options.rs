//! The README's options table and `--help` agree: every option of `serve`
//! has a row with its flag and environment variable, every row names an
//! option that exists, and where `--help` states a default the row states
//! the same one.

use std::collections::BTreeMap;

use clap::CommandFactory;
use prerender_proxy::cli::Cli;

struct Row {
    env: String,
    default: String,
}

/// `--flag` → its row, from the table of `| `--flag …` | `ENV` | default | … |` lines.
fn readme_rows() -> BTreeMap<String, Row> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut rows = BTreeMap::new();
    for line in readme.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        assert!(cells.len() >= 4, "README: a short options row: {line}");
        let flag: String = cells[0]
            .trim()
            .trim_start_matches("`--")
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let env = cells[1].split('`').nth(1).unwrap_or_default().to_string();
        let default = cells[2].replace('`', "").trim().to_string();
        let previous = rows.insert(flag.clone(), Row { env, default });
        assert!(previous.is_none(), "README: two rows for --{flag}");
    }
    rows
}

/// `X` of a help text's `[default: X]`.
fn stated_default(help: &str) -> Option<String> {
    let start = help.find("[default: ")? + "[default: ".len();
    let len = help[start..].find(']')?;
    Some(help[start..start + len].trim().to_string())
}

#[test]
fn the_readme_lists_every_serve_option_with_its_flag_env_and_default() {
    let rows = readme_rows();
    let command = Cli::command();
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        seen.push(long.to_string());
        let Some(row) = rows.get(long) else {
            problems.push(format!("--{long} has no row in the README's options table"));
            continue;
        };
        match arg.get_env().and_then(|e| e.to_str()) {
            Some(env) if env == row.env => {}
            Some(env) => problems.push(format!(
                "--{long}: --help says {env}, the README {:?}",
                row.env
            )),
            None => problems.push(format!("--{long} has no environment variable")),
        }
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        if let Some(default) = stated_default(&help) {
            if !row.default.contains(&default) {
                problems.push(format!(
                    "--{long}: --help says the default is {default:?}, the README {:?}",
                    row.default
                ));
            }
        }
    }
    for flag in rows.keys() {
        if !seen.contains(flag) {
            problems.push(format!(
                "the README lists --{flag}, which `serve` does not take"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    assert!(seen.len() > 40, "only {} options seen", seen.len());
}

#[test]
fn a_stated_default_is_read_from_the_help_text() {
    assert_eq!(
        stated_default("Public listener [default: 0.0.0.0:3000]."),
        Some("0.0.0.0:3000".into())
    );
    assert_eq!(stated_default("no default here"), None);
}
