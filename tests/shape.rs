//! The shape of the crate, as ARCHITECTURE.md states it: every `crate::`
//! reference in src/ goes to a module on a lower layer (so there is no
//! import cycle), and no file in src/ is over 600 lines.
//!
//! The layers are read from ARCHITECTURE.md itself, so the document and the
//! check cannot drift apart: changing who may use whom is an edit there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every .rs file under src/, with its module path (`source::etcd::watch`).
fn sources() -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, prefix: &[String], out: &mut Vec<(String, PathBuf)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(std::fs::DirEntry::path);
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                let mut p = prefix.to_vec();
                p.push(name);
                walk(&path, &p, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut p = prefix.to_vec();
                if !matches!(stem, "mod" | "lib" | "main") {
                    p.push(stem.to_string());
                }
                out.push((p.join("::"), path));
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("src"), &[], &mut out);
    out
}

/// The layers of ARCHITECTURE.md: the lines of the fenced block after the
/// `<!-- layers -->` marker, lowest first, each listing its units.
fn layers() -> BTreeMap<String, usize> {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let start = doc
        .find("<!-- layers -->")
        .expect("ARCHITECTURE.md has a <!-- layers --> block");
    let block = doc[start..]
        .split("```")
        .nth(1)
        .expect("the layers are in a fenced block");
    let mut map = BTreeMap::new();
    for (rank, line) in block.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let units = line.split_once(':').map_or(line, |(_, u)| u);
        for unit in units.split_whitespace() {
            let unit = unit.trim_end_matches(',');
            assert!(
                map.insert(unit.to_string(), rank).is_none(),
                "{unit} is on two layers of ARCHITECTURE.md"
            );
        }
    }
    map
}

/// The unit a module belongs to: the longest unit name that is the module
/// or one of its ancestors (`source::etcd::watch` -> `source`).
fn unit_of<'a>(module: &str, layers: &'a BTreeMap<String, usize>) -> Option<&'a str> {
    let mut m = module;
    loop {
        if let Some((name, _)) = layers.get_key_value(m) {
            return Some(name);
        }
        m = &m[..m.rfind("::")?];
    }
}

/// The module paths a file refers to with `crate::…`, including the
/// members of `use crate::{a::X, b}` groups. Comments are skipped.
fn references(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            // Nested groups are flattened: their heads are the paths.
            for item in group[..end].split(',') {
                out.insert(path_head(item.trim()));
            }
        } else {
            out.insert(path_head(after));
        }
        rest = after;
    }
    out.retain(|p| !p.is_empty());
    out
}

/// `a::b::Thing` -> `a::b`: the lowercase segments at the start, up to the
/// first that is not followed by `::`.
fn path_head(s: &str) -> String {
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let seg = &rest[..len];
        if seg.is_empty() || !seg.starts_with(|c: char| c.is_ascii_lowercase()) {
            break;
        }
        segs.push(seg);
        match rest[len..].strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    segs.join("::")
}

#[test]
fn every_crate_reference_goes_to_a_lower_layer() {
    let layers = layers();
    let mut wrong = Vec::new();
    for (module, path) in sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        let rel = path.strip_prefix(root()).unwrap().display().to_string();
        if module.is_empty() {
            continue; // lib.rs and main.rs: the top, they may use anything
        }
        let Some(from) = unit_of(&module, &layers) else {
            wrong.push(format!(
                "{rel}: module {module} is on no layer of ARCHITECTURE.md"
            ));
            continue;
        };
        for target in references(&text) {
            let Some(to) = unit_of(&target, &layers) else {
                wrong.push(format!("{rel}: crate::{target} is on no layer"));
                continue;
            };
            if to != from && layers[to] >= layers[from] {
                wrong.push(format!(
                    "{rel}: {from} (layer {}) uses crate::{target} ({to}, layer {})",
                    layers[from] + 1,
                    layers[to] + 1
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "references against the layering of ARCHITECTURE.md:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_source_file_is_over_600_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter_map(|(_, path)| {
            let n = std::fs::read_to_string(&path).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} has {n} lines", path.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_reference_scanner_sees_groups_and_skips_comments() {
    let text = "use crate::config::{Flags, X};\nuse crate::{error::usage, spec};\n\
                // crate::watch in a comment\nlet x = crate::source::etcd::EtcdSource::new();\n\
                crate::reap::spawn(&mut c)?; humantime::format_duration(d)";
    let refs: Vec<String> = references(text).into_iter().collect();
    assert_eq!(
        refs,
        [
            "config",
            "error::usage",
            "reap::spawn",
            "source::etcd",
            "spec"
        ]
    );
}
