//! The module table of docs/ARCHITECTURE.md is the allowed-imports table:
//! every `crate::` path a module's code names (tests aside) must be in its
//! own top-level module or listed in its row's "depends on" column, every
//! module under `src/` has a row, and the top-level modules form no cycle.
//! So the picture a newcomer reads stays true to the code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ARCHITECTURE: &str = "docs/ARCHITECTURE.md";

/// One row of the table: the module paths it describes and what they may import.
#[derive(Debug)]
struct Row {
    modules: Vec<String>,
    /// `None` = anything ("everything").
    allowed: Option<Vec<String>>,
}

fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn table() -> Vec<Row> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(ARCHITECTURE)).unwrap();
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Modules"))
        .expect("a \"## Modules\" section");
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        assert!(
            cells.len() >= 3,
            "{ARCHITECTURE}: a row without 3 cells: {line}"
        );
        let modules: Vec<String> = backticked(cells[0])
            .into_iter()
            .filter(|m| !m.ends_with(".rs"))
            .collect();
        let deps = cells[cells.len() - 1].trim();
        let allowed = if deps == "everything" {
            None
        } else {
            Some(backticked(deps))
        };
        rows.push(Row { modules, allowed });
    }
    assert!(rows.len() > 10, "{ARCHITECTURE}: module table not found");
    rows
}

/// Every source file but the crate roots, with its module path.
fn sources() -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, prefix: &[String], out: &mut Vec<(String, PathBuf)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                let mut p = prefix.to_vec();
                p.push(path.file_name().unwrap().to_string_lossy().to_string());
                walk(&path, &p, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut p = prefix.to_vec();
                if name != "mod" {
                    p.push(name);
                }
                if p.is_empty() || p == ["main"] || p == ["lib"] {
                    continue;
                }
                out.push((p.join("::"), path));
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut out,
    );
    out.sort();
    out
}

/// The `crate::…` paths named outside `#[cfg(test)]` code.
fn crate_paths(source: &str) -> BTreeSet<String> {
    let code = match source.find("#[cfg(test)]") {
        Some(i) => &source[..i],
        None => source,
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let comment = code[..i]
            .rsplit('\n')
            .next()
            .is_some_and(|line| line.trim_start().starts_with("//"));
        if comment {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let path = path.trim_end_matches(':').to_string();
        if !path.is_empty() {
            out.insert(path);
        }
    }
    out
}

fn within(path: &str, module: &str) -> bool {
    path == module || path.starts_with(&format!("{module}::"))
}

fn top(path: &str) -> &str {
    path.split("::").next().unwrap()
}

#[test]
fn every_import_is_in_the_architecture_table_and_modules_form_no_cycle() {
    let rows = table();
    let mut problems = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in sources() {
        // The most specific row that describes this file.
        let row = rows
            .iter()
            .flat_map(|r| r.modules.iter().map(move |m| (m, r)))
            .filter(|(m, _)| within(&module, m))
            .max_by_key(|(m, _)| m.len());
        let Some((_, row)) = row else {
            problems.push(format!("`{module}` has no row in {ARCHITECTURE}"));
            continue;
        };
        let source = std::fs::read_to_string(&file).unwrap();
        for path in crate_paths(&source) {
            if top(&path) == top(&module) {
                continue;
            }
            graph
                .entry(top(&module).to_string())
                .or_default()
                .insert(top(&path).to_string());
            let allowed = match &row.allowed {
                None => true,
                Some(list) => list.iter().any(|dep| within(&path, dep)),
            };
            if !allowed {
                problems.push(format!(
                    "`{module}` ({}) uses `crate::{path}`, not in its row's \"depends on\"",
                    file.display()
                ));
            }
        }
    }
    // No cycle among top-level modules: depth-first search for a back edge.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            cycles.push(cycle.join(" -> "));
            return;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done, cycles);
        }
        stack.pop();
        done.insert(node.to_string());
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done, &mut cycles);
    }
    for cycle in cycles {
        problems.push(format!("module cycle: {cycle}"));
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_imports_and_skips_comments_and_tests() {
    let found = crate_paths(
        "use crate::cache::{CacheKey, X};\n// crate::admin in a comment\nlet a = crate::render::DEFAULT;\n#[cfg(test)]\nmod tests { use crate::proxy::x; }\n",
    );
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["cache", "render::DEFAULT"]
    );
    assert!(within("proxy::forward::OriginClient", "proxy::forward"));
    assert!(!within("proxy::forwarded", "proxy::forward"));
}
