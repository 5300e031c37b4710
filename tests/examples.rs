//! The runnable examples under templates-examples/ render to their expected output.
//!
//! Every directory there is an example and is found by itself: a new one is
//! tested without touching this file. Each is copied into a temp dir (its
//! destinations are relative, under `out/`) and run as the README shows,
//! with the environment from its `env` file and nothing from the host's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::support::{Output, Test};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/templates-examples");

/// One example directory.
struct Example {
    name: String,
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Example {
    /// A test dir holding a copy of the example under its own name, so
    /// paths in its `env` file (relative to templates-examples/, where the
    /// README runs the commands) resolve the same way. Output left over
    /// from running the example by hand is not copied.
    fn test(&self) -> Test {
        let test = Test::new();
        copy_tree(&self.dir, &test.path(&self.name), &["out"]);
        self.env
            .iter()
            .fold(test, |test, (k, v)| test.env(k.as_str(), v.as_str()))
    }

    fn config(&self) -> String {
        format!("{}/stencil.toml", self.name)
    }

    /// Runs `stencil COMMAND -c NAME/stencil.toml`. The Test is returned
    /// too: its temp dir, with the rendered files, lives as long as it.
    fn run(&self, command: &[&str]) -> (Test, Output) {
        let config = self.config();
        let mut args = command.to_vec();
        args.extend(["-c", &config]);
        let test = self.test().args(args);
        let out = test.run();
        (test, out)
    }
}

fn examples() -> Vec<Example> {
    let mut found: Vec<Example> = std::fs::read_dir(EXAMPLES)
        .unwrap_or_else(|e| panic!("cannot read {EXAMPLES}: {e}"))
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_dir())
        // The migration corpus is tested by tests/convert.rs.
        .filter(|entry| entry.file_name() != "migration")
        // Service discovery needs a Consul: tests/services.rs renders
        // those examples against the test server, seeded from
        // services.json.
        .filter(|entry| !entry.path().join("services.json").exists())
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            assert!(
                dir.join("stencil.toml").is_file(),
                "example {name}/ has no stencil.toml"
            );
            let env = read_env(&dir.join("env"));
            Example { name, dir, env }
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        found.len() >= 3,
        "expected at least three examples in {EXAMPLES}, found {}",
        found.len()
    );
    found
}

/// An example's `env` file: `KEY=VALUE` lines, `#` comments. Values must
/// survive the README's `env $(grep -v '^#' X/env)`: no spaces, no quotes.
fn read_env(path: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: {line:?} is not KEY=VALUE", path.display()));
            assert!(
                !v.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)),
                "{}: the value of {k} would not survive the README's shell command",
                path.display()
            );
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            if !skip.iter().any(|s| entry.file_name() == **s) {
                copy_tree(&src, &dst, skip);
            }
        } else {
            std::fs::copy(&src, &dst)
                .unwrap_or_else(|e| panic!("cannot copy {}: {e}", src.display()));
        }
    }
}

/// Every file under `dir`, relative to it, with its bytes.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn every_example_renders_its_expected_output() {
    for example in examples() {
        let expected = files_under(&example.dir.join("expected"));
        assert!(
            !expected.is_empty(),
            "example {}/ has no expected output: put the files it renders under {0}/expected/",
            example.name
        );
        let (_dir, out) = example.run(&["render"]);
        let out = out.success();
        let rendered = files_under(&out.dir.join(&example.name).join("out"));
        for (rel, want) in &expected {
            let got = rendered.get(rel).unwrap_or_else(|| {
                panic!(
                    "{}: expected/{} was not rendered to out/{0}; out/ holds {:?}\n{}",
                    example.name,
                    rel.display(),
                    rendered.keys().collect::<Vec<_>>(),
                    out.stderr
                )
            });
            assert!(
                got == want,
                "{}: out/{} differs from expected/{1}\n--- expected\n{}\n--- rendered\n{}",
                example.name,
                rel.display(),
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(got),
            );
        }
        let extra: Vec<_> = rendered
            .keys()
            .filter(|k| !expected.contains_key(*k))
            .collect();
        assert!(
            extra.is_empty(),
            "{}: out/ holds files that expected/ lacks: {extra:?}",
            example.name
        );
    }
}

#[test]
fn every_example_passes_check() {
    for example in examples() {
        example.run(&["check"]).1.success();
    }
}

/// `stencil deps` names what the templates read: every variable the
/// example's `env` file sets, every template, and, through keys and
/// prefixes, every key of every data file (the sample data holds only what
/// the templates use, so a read the recorder missed shows up here).
#[test]
fn every_example_lists_what_its_templates_read() {
    for example in examples() {
        let out = example.run(&["deps", "--json"]).1.success();
        let deps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: deps --json is not JSON: {e}\n{}",
                example.name,
                out.stdout_str()
            )
        });
        let reads: Vec<&serde_json::Value> = deps
            .as_array()
            .expect("deps --json prints an array of templates")
            .iter()
            .flat_map(|t| t["reads"].as_array().expect("each template has reads"))
            .collect();
        let of_kind = |kind: &str, field: &str| -> BTreeSet<String> {
            reads
                .iter()
                .filter(|r| r["kind"] == kind)
                .map(|r| r[field].as_str().unwrap().to_string())
                .collect()
        };

        let env_read = of_kind("env", "name");
        for (name, _) in &example.env {
            assert!(
                env_read.contains(name),
                "{}: deps does not list env {name}, which its env file sets; it lists {env_read:?}",
                example.name
            );
        }

        let config: toml::Table =
            toml::from_str(&std::fs::read_to_string(example.dir.join("stencil.toml")).unwrap())
                .unwrap();
        let files_read = of_kind("file", "path");
        for template in config["templates"].as_array().unwrap() {
            let source = format!("{}/{}", example.name, template["source"].as_str().unwrap());
            assert!(
                files_read
                    .iter()
                    .any(|p| Path::new(p) == Path::new(&source)),
                "{}: deps does not list the template {source}; files: {files_read:?}",
                example.name
            );
        }

        let sources = config.get("sources").and_then(|s| s.as_table());
        for (name, spec) in sources.into_iter().flatten() {
            let source_reads = |kind: &str, field: &str| -> Vec<String> {
                reads
                    .iter()
                    .filter(|r| r["kind"] == kind && r["source"] == name.as_str())
                    .map(|r| r[field].as_str().unwrap().to_string())
                    .collect()
            };
            let keys = source_reads("key", "key");
            let prefixes = source_reads("prefix", "prefix");
            let data = example.dir.join(spec["path"].as_str().unwrap());
            for key in keys_of(&data) {
                let covered = keys.contains(&key)
                    || prefixes.iter().any(|p| {
                        let p = p.trim_matches('/');
                        p.is_empty() || key.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
                    });
                assert!(
                    covered,
                    "{}: deps lists no read of key {key:?} of source {name:?} ({}); \
                     keys read: {keys:?}, prefixes read: {prefixes:?}. \
                     If the template does not use it, drop it from the sample data.",
                    example.name,
                    data.display()
                );
            }
        }
    }
}

/// Every key of a data file, as stencil sees it: asked of stencil itself,
/// so the test does not carry a second parser for four formats.
fn keys_of(data: &Path) -> Vec<String> {
    let out = Test::new()
        .file("keys.j2", "{% for k in kv() %}{{ k }}\n{% endfor %}")
        .args(["render", "--data", data.to_str().unwrap(), "-t", "keys.j2"])
        .run()
        .success();
    out.stdout_str().lines().map(str::to_string).collect()
}

#[test]
fn the_readme_shows_how_to_run_every_example() {
    let readme = std::fs::read_to_string(Path::new(EXAMPLES).join("README.md")).unwrap();
    for example in examples() {
        let config = example.config();
        let command = if example.env.is_empty() {
            format!("stencil render -c {config}")
        } else {
            format!(
                "env $(grep -v '^#' {}/env) stencil render -c {config}",
                example.name
            )
        };
        assert!(
            readme.contains(&command),
            "templates-examples/README.md lacks the command for {}: `{command}`",
            example.name
        );
    }
}
