//! Replays every committed fuzz seed (`fuzz/corpus/<target>/`) through the
//! same checks the `cargo fuzz` targets run, on the stable toolchain: the
//! targets' properties are exercised by every `cargo test`, with or
//! without cargo-fuzz.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    let failing: Vec<String> = seeds
        .iter()
        .filter(|seed| {
            let data = std::fs::read(seed).unwrap();
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|seed| seed.display().to_string())
        .collect();
    assert!(
        failing.is_empty(),
        "{target}: seeds failing their check (messages above): {failing:#?}"
    );
}

#[test]
fn cache_key_corpus() {
    replay("cache_key", checks::cache_key);
}

#[test]
fn bot_match_corpus() {
    replay("bot_match", checks::bot_match);
}

#[test]
fn config_parse_corpus() {
    replay("config_parse", checks::config_parse);
}

#[test]
fn admin_json_corpus() {
    replay("admin_json", checks::admin_json);
}

#[test]
fn sitemap_corpus() {
    replay("sitemap", checks::sitemap);
}
