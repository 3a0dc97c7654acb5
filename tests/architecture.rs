//! The shape of the code, read from the source (docs/architecture.md): every command runs
//! through the one driver, layers look only down, and no two files need each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

/// Every .rs file under `dir`, relative to the crate root.
fn sources(dir: &str) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = vec![];
    walk(&root().join(dir), &mut out);
    let mut files: Vec<String> = out
        .iter()
        .map(|p| {
            p.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    files
}

/// The source without its unit tests (they may reach anywhere).
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i])
}

/// The variants of `enum AwsSubcommand` in src/cli/mod.rs: every `imgpub aws` command.
fn subcommands() -> Vec<String> {
    let cli = read("src/cli/mod.rs");
    let body = cli.split("pub enum AwsSubcommand {").nth(1).unwrap();
    let body = &body[..body.find("\n}\n").unwrap()];
    let variants: Vec<String> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("///") && !l.starts_with('#') && !l.starts_with(')'))
        .filter_map(|l| l.split_once('(').map(|(name, _)| name.trim().to_string()))
        .filter(|name| name.chars().all(|c| c.is_ascii_alphanumeric()) && !name.is_empty())
        .collect();
    assert!(variants.len() >= 16, "{variants:?}");
    variants
}

#[test]
fn main_only_parses_dispatches_and_prints() {
    let main = read("src/main.rs");
    assert!(
        main.lines().count() <= 150,
        "src/main.rs has {} lines",
        main.lines().count()
    );
    assert!(!main.contains("aws_sdk"), "an SDK type in src/main.rs");
    // Each command's arm: at most 3 lines, and it hands the command to the driver.
    for variant in subcommands() {
        let arm = format!("Aws::{variant}(");
        let start = main
            .find(&arm)
            .unwrap_or_else(|| panic!("{variant} is not dispatched in src/main.rs"));
        let rest = &main[start..];
        let rest = &rest[..rest.find("\n}\n").unwrap_or(rest.len())];
        let end = rest[arm.len()..]
            .find("Aws::")
            .map_or(rest.len(), |i| i + arm.len());
        let body = rest[..end].trim_end().trim_end_matches('}').trim_end();
        let lines = body.lines().count();
        assert!(lines <= 4, "the {variant} arm has {lines} lines:\n{body}");
        assert!(
            body.contains("drive("),
            "{variant} does not go through the driver:\n{body}"
        );
    }
}

#[test]
fn the_library_has_no_command_line_types_and_looks_only_down() {
    for file in sources("src/aws").iter().chain(&sources("src/image")) {
        let text = read(file);
        assert!(!text.contains("clap"), "{file} uses clap");
        let code = without_tests(&text);
        for upper in ["crate::commands", "crate::cli"] {
            assert!(!code.contains(upper), "{file} reaches up into {upper}");
        }
    }
}

/// The library file that `crate::a::b::…` lands in: the longest prefix that is a module.
fn target(path: &[&str], modules: &BTreeMap<Vec<String>, String>) -> Option<String> {
    (0..=path.len()).rev().find_map(|n| {
        let key: Vec<String> = path[..n].iter().map(|s| s.to_string()).collect();
        modules.get(&key).cloned()
    })
}

/// Every `crate::…` path in `code`, with `use crate::a::{b, c::d}` groups expanded (one
/// level: the forms this crate uses).
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = vec![];
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '{'))
            .unwrap_or(rest.len());
        let head = &rest[..end];
        let prefix: Vec<String> = head
            .trim_end_matches('{')
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if head.ends_with('{') {
            let group = &rest[end..rest[end..].find('}').map_or(rest.len(), |j| end + j)];
            for item in group.split(',') {
                let mut path = prefix.clone();
                path.extend(
                    item.trim()
                        .split("::")
                        .map(|s| s.split_whitespace().next().unwrap_or(""))
                        .filter(|s| !s.is_empty() && *s != "self")
                        .map(str::to_string),
                );
                out.push(path);
            }
        } else {
            out.push(prefix);
        }
    }
    out
}

#[test]
fn no_two_library_files_need_each_other() {
    let files = sources("src");
    let files: Vec<&String> = files
        .iter()
        .filter(|f| !f.starts_with("src/main.rs") && !f.starts_with("src/cli"))
        .collect();
    let module = |file: &str| -> Vec<String> {
        let path = file.trim_start_matches("src/").trim_end_matches(".rs");
        let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
        if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
            parts.pop();
        }
        parts
    };
    let modules: BTreeMap<Vec<String>, String> =
        files.iter().map(|f| (module(f), f.to_string())).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let text = read(file);
        let targets = crate_paths(without_tests(&text))
            .into_iter()
            .filter_map(|p| target(&p.iter().map(String::as_str).collect::<Vec<_>>(), &modules))
            .filter(|t| t != *file)
            .collect();
        edges.insert(file.to_string(), targets);
    }
    // A file that reaches itself through others is in a circle.
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for next in &edges[&at] {
                if next == start {
                    panic!("a circle: {} -> {start}", path.join(" -> "));
                }
                if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
}

#[test]
fn the_library_has_one_front_door() {
    let lib = read("src/lib.rs");
    assert!(
        lib.contains("#![deny(unreachable_pub)]"),
        "src/lib.rs must deny unreachable pub items, so rustc reports what nothing uses"
    );
    // Every module is the crate's own; the API is what lib.rs re-exports. `testing` is the
    // hidden door the integration tests use below the façade, `defaults` the flags' values.
    for line in lib.lines().filter(|l| l.starts_with("pub mod ")) {
        assert!(
            line == "pub mod testing;" || line == "pub mod defaults {",
            "a public module in src/lib.rs: {line}"
        );
    }
    assert!(lib.contains("#[doc(hidden)]\npub mod testing;"));
    // The binary uses the front door only.
    for file in sources("src/cli")
        .iter()
        .chain([&"src/main.rs".to_string()])
    {
        let text = read(file);
        assert!(
            !text.contains("imgpub::testing"),
            "{file} uses imgpub::testing, which is not API"
        );
    }
}
