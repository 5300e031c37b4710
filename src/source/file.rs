//! Data files as sources: JSON, TOML, YAML and dotenv.
//!
//! Nested objects become `/`-separated keys and array items are numbered,
//! so `{"db": {"hosts": ["a", "b"]}}` holds `db/hosts/0` and `db/hosts/1`.
//! Scalars become strings (`true`, `42`, `""` for null), as a KV store would
//! hold them; templates convert with `| int` or `| fromjson` when needed.
//!
//! The document itself is kept too, typed (the subtree at the source's
//! prefix): templates read it as `vars` and as top-level variables, as
//! j2cli, minijinja-cli and Ansible users expect, where `false` is false and
//! `[]` is an empty list.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};

use super::{Source, is_under, normalize_key};

#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    prefix: String,
    /// The last good contents, and the error of the last reload if it
    /// failed (then reads fail too, so dependent templates keep their last
    /// good output and report why, rather than rendering stale data).
    state: std::sync::RwLock<Loaded>,
}

/// The data, and the error of the last reload if it failed.
type Loaded = (Arc<Data>, Option<String>);

/// One read of the file: the flat keys and the typed document at the
/// prefix (`Null` when the prefix names nothing).
#[derive(Debug, Default)]
struct Data {
    flat: BTreeMap<String, String>,
    document: Arc<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Toml,
    Yaml,
    Dotenv,
}

impl Format {
    pub fn from_path(path: &Path) -> Result<Format> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        Ok(match ext.as_str() {
            "json" => Format::Json,
            "toml" => Format::Toml,
            "yaml" | "yml" => Format::Yaml,
            "env" => Format::Dotenv,
            _ if name == ".env" || name.starts_with(".env.") => Format::Dotenv,
            _ => bail!(
                "cannot tell the format of {}: name it .json, .toml, .yaml, .yml or .env",
                path.display()
            ),
        })
    }
}

impl FileSource {
    pub fn load(path: &Path, prefix: &str) -> Result<FileSource> {
        let prefix = normalize_key(prefix).to_string();
        Ok(FileSource {
            path: path.to_path_buf(),
            state: std::sync::RwLock::new((Arc::new(read(path, &prefix)?), None)),
            prefix,
        })
    }

    fn data(&self) -> Result<Arc<Data>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        match &state.1 {
            Some(e) => Err(anyhow!("{e}")),
            None => Ok(state.0.clone()),
        }
    }

    #[cfg(test)]
    fn from_data(prefix: &str, data: BTreeMap<String, String>) -> FileSource {
        FileSource {
            path: "x.json".into(),
            prefix: prefix.into(),
            state: std::sync::RwLock::new((
                Arc::new(Data {
                    flat: data,
                    document: Arc::default(),
                }),
                None,
            )),
        }
    }
}

/// Reads and parses a data file.
fn read(path: &Path, prefix: &str) -> Result<Data> {
    let format = Format::from_path(path)?;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "{} is not valid UTF-8 (at byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let document = parse_document(format, &text)
        .with_context(|| format!("invalid {} in {}", format.name(), path.display()))?;
    Ok(Data {
        flat: flat_keys(&document),
        document: Arc::new(at_prefix(document, prefix)),
    })
}

/// The part of `document` at `prefix` (`a/b`: key `b` of object `a`, or
/// item `b` of list `a`), as `key()` finds it; `Null` when there is none.
fn at_prefix(document: serde_json::Value, prefix: &str) -> serde_json::Value {
    let mut node = document;
    for part in prefix.split('/').filter(|p| !p.is_empty()) {
        node = match node {
            serde_json::Value::Object(mut map) => map.remove(part).unwrap_or_default(),
            serde_json::Value::Array(mut items) => match part.parse::<usize>() {
                Ok(i) if i < items.len() => items.swap_remove(i),
                _ => serde_json::Value::Null,
            },
            _ => serde_json::Value::Null,
        };
    }
    node
}

impl FileSource {
    fn full(&self, key: &str) -> String {
        let key = normalize_key(key);
        match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{key}", self.prefix),
        }
    }
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Toml => "TOML",
            Format::Yaml => "YAML",
            Format::Dotenv => "dotenv",
        }
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn get(&self, key: &str) -> Result<Option<String>> {
        Ok(self.data()?.flat.get(&self.full(key)).cloned())
    }

    fn document(&self) -> Option<Result<Arc<serde_json::Value>>> {
        Some(self.data().map(|d| d.document.clone()))
    }

    /// Reads the file again. A file that became unreadable or malformed
    /// keeps the last good data but fails reads until it is fixed.
    fn refresh(&self) {
        let result = read(&self.path, &self.prefix);
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(data) => *state = (Arc::new(data), None),
            Err(e) => state.1 = Some(format!("{e:#}")),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let full = self.full(prefix);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let start = if full.is_empty() {
            String::new()
        } else {
            format!("{full}/")
        };
        let data = self.data()?;
        Ok(data
            .flat
            .range(start..)
            .take_while(|(k, _)| is_under(k, &full))
            .map(|(k, v)| (k[strip..].to_string(), v.clone()))
            .collect())
    }
}

/// Parses a data file's text into flat keys.
///
/// A parse error names the line, the column and what was expected, never
/// the text there: a data file holds passwords, and the message reaches
/// stderr, the log and `/status`. (The parsers' own messages quote the
/// offending line; these are rebuilt from their positions instead.)
pub fn parse(format: Format, text: &str) -> Result<BTreeMap<String, String>> {
    Ok(flat_keys(&parse_document(format, text)?))
}

/// Parses a data file's text into its document: an object (a dotenv
/// file's is an object of strings), or `Null` for an empty file.
fn parse_document(format: Format, text: &str) -> Result<serde_json::Value> {
    let value: serde_json::Value = match format {
        Format::Json => serde_json::from_str(text).map_err(|e| {
            let why = e.to_string();
            at(e.line(), e.column(), &strip_position(&why))
        })?,
        Format::Toml => toml_to_json(toml::from_str(text).map_err(|e| toml_error(text, &e))?),
        Format::Yaml => {
            let yaml: serde_norway::Value = serde_norway::from_str(text).map_err(|e| {
                let why = e.to_string();
                match e.location() {
                    Some(l) => at(l.line(), l.column(), &strip_position(&why)),
                    None => anyhow!("{}", scrub(&why)),
                }
            })?;
            serde_json::to_value(yaml).map_err(|e| anyhow!("{}", scrub(&e.to_string())))?
        }
        Format::Dotenv => {
            return Ok(serde_json::Value::Object(
                parse_dotenv(text)?
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect(),
            ));
        }
    };
    match value {
        serde_json::Value::Object(_) | serde_json::Value::Array(_) | serde_json::Value::Null => {
            Ok(value)
        }
        _ => bail!("the top level must be an object (a table, a mapping), not a single value"),
    }
}

/// `line L, column C: why`, with anything quoted in `why` left out.
fn at(line: usize, column: usize, why: &str) -> anyhow::Error {
    anyhow!("line {line}, column {column}: {}", scrub(why))
}

/// The parser's message without its first ` at line L column C`, which
/// [`at`] says in front.
fn strip_position(why: &str) -> String {
    let Some(i) = why.find(" at line ") else {
        return why.to_string();
    };
    let rest = why[i + " at line ".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix(" column ").unwrap_or(rest);
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    format!("{}{rest}", &why[..i])
}

/// `why` with every double-quoted part replaced by `"…"`: the parsers
/// quote values (`invalid type: string "…"`) where they quote anything.
/// Grammar tokens are in backticks and stay.
fn scrub(why: &str) -> String {
    let mut out = String::with_capacity(why.len());
    let (mut token, mut quoted) = (false, false);
    for c in why.chars() {
        match c {
            '`' if !quoted => token = !token,
            '"' if !token => {
                quoted = !quoted;
                if quoted {
                    out.push_str("\"…");
                    continue;
                }
            }
            _ if quoted => continue,
            _ => {}
        }
        out.push(c);
    }
    out
}

/// Position and message of a TOML error, without the excerpt toml's own
/// Display prints (it shows the line, value and all).
fn toml_error(text: &str, e: &toml::de::Error) -> anyhow::Error {
    let why = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            at(line, column, &why)
        }
        None => anyhow!("{}", scrub(&why)),
    }
}

/// The 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// TOML values as JSON ones; dates and times become their TOML text
/// (serde would turn them into a private wrapper table).
fn toml_to_json(v: toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(f).map_or_else(|| J::String(f.to_string()), J::Number)
        }
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            J::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// The keys of a document; an empty file (`Null`) has none.
fn flat_keys(document: &serde_json::Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if !document.is_null() {
        flatten(document, &mut String::new(), &mut out);
    }
    out
}

fn flatten(value: &serde_json::Value, path: &mut String, out: &mut BTreeMap<String, String>) {
    let mut child = |name: &str, v: &serde_json::Value, path: &mut String| {
        let len = path.len();
        // A name of slashes only (or empty) adds no segment: `a/` or `a//b`
        // could never be read back, since lookups drop empty segments'
        // slashes. (Found by the config fuzz target.)
        let name = name.trim_matches('/');
        if !path.is_empty() && !name.is_empty() {
            path.push('/');
        }
        path.push_str(name);
        flatten(v, path, out);
        path.truncate(len);
    };
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                child(k, v, path);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                child(&i.to_string(), v, path);
            }
        }
        serde_json::Value::String(s) => {
            out.insert(path.clone(), s.clone());
        }
        serde_json::Value::Null => {
            out.insert(path.clone(), String::new());
        }
        other => {
            out.insert(path.clone(), other.to_string());
        }
    }
}

fn parse_dotenv(text: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    // Where the last good line's key was: a failed line is searched for
    // after it.
    let mut from = 0;
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok((k, v)) => {
                if let Some(i) = text[from..].find(&k) {
                    from += i + k.len();
                }
                out.insert(k, v);
            }
            Err(dotenvy::Error::LineParse(part, index)) => {
                return Err(dotenv_error(text, from, &part, index));
            }
            // Io and EnvVar errors carry no value.
            Err(e) => bail!("{e}"),
        }
    }
    Ok(out)
}

/// Where a dotenv line failed and why, without the line: dotenvy reports
/// the line (or only its value) and an index into it; both are found in
/// `text` again to name the line and column.
fn dotenv_error(text: &str, from: usize, part: &str, index: usize) -> anyhow::Error {
    let start = text[from..]
        .find(part.trim_end())
        .map(|i| from + i)
        .or_else(|| text.find(part.trim_end()));
    let Some(start) = start else {
        return anyhow!("a line is not KEY=VALUE");
    };
    let offset = part
        .char_indices()
        .nth(index)
        .map_or(start + part.trim_end().len(), |(i, _)| start + i);
    let (line, column) = line_column(text, offset);
    let why = match text[offset..].chars().next() {
        None | Some('\n') => "a quote that is not closed",
        Some(c) if c.is_whitespace() => "a space; a value with spaces goes in quotes",
        Some('"' | '\'') => "a quote; a value with quotes goes in the other kind of quotes",
        Some('\\') => "a backslash; escapes are \\n, \\\\, \\\", \\' and \\$",
        Some(_) => "expected KEY=VALUE",
    };
    anyhow!("line {line}, column {column}: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_objects_and_arrays_flatten_to_slash_keys() {
        let data = parse(
            Format::Json,
            r#"{"db": {"host": "h", "port": 5432, "tls": true, "x": null}, "hosts": ["a", "b"]}"#,
        )
        .unwrap();
        let got: Vec<_> = data.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            got,
            [
                "db/host=h",
                "db/port=5432",
                "db/tls=true",
                "db/x=",
                "hosts/0=a",
                "hosts/1=b"
            ]
        );
    }

    #[test]
    fn empty_and_slash_names_add_no_segment() {
        let data = parse(Format::Json, r#"{"a": {"": "x", "/": {"b": "y"}}}"#).unwrap();
        let got: Vec<_> = data.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(got, ["a=x", "a/b=y"]);
    }

    #[test]
    fn yaml_toml_and_dotenv_agree() {
        let yaml = parse(Format::Yaml, "db:\n  host: h\n  port: 5432\n").unwrap();
        let toml = parse(Format::Toml, "[db]\nhost = \"h\"\nport = 5432\n").unwrap();
        assert_eq!(yaml, toml);
        let dates = parse(Format::Toml, "when = 1979-05-27T07:32:00Z\n").unwrap();
        assert_eq!(
            dates.get("when").map(String::as_str),
            Some("1979-05-27T07:32:00Z")
        );
        let env = parse(Format::Dotenv, "# c\nA=1\nB=\"two words\"\n").unwrap();
        assert_eq!(env.get("B").map(String::as_str), Some("two words"));
    }

    #[test]
    fn parse_errors_name_the_place_never_the_value() {
        let cases = [
            (
                Format::Toml,
                "a = 1\npassword = \"C:\\SECRET\\pw\"\n",
                "line 2, column 16: ",
            ),
            (
                Format::Dotenv,
                "A=1\nDB_PASSWORD=SECRET&3 \"horse\"\n",
                "line 2, column 22: a quote",
            ),
            (
                Format::Dotenv,
                "A=1\nB=\"SECRET\n",
                "line 2, column 10: a quote that is not closed",
            ),
            (
                Format::Json,
                "{\"a\": 1,\n \"p\": \"SE\\qCRET\"}",
                "line 2, column 11: invalid escape",
            ),
            (
                Format::Yaml,
                "a: 1\np: \"SE\\qCRET\"\n",
                "line 2, column 7: found unknown escape",
            ),
            (
                Format::Yaml,
                "a: 1\nSECRET: 1\nSECRET: 2\n",
                "line 1, column 1: duplicate entry",
            ),
        ];
        for (format, text, want) in cases {
            let err = format!("{:#}", parse(format, text).unwrap_err());
            assert!(err.starts_with(want), "{format:?}: {err}");
            assert!(!err.contains("SECRET"), "{format:?}: {err}");
        }
        assert_eq!(scrub(r#"key "x" expected `"`"#), r#"key "…" expected `"`"#);
    }

    #[test]
    fn list_uses_directory_semantics_and_the_prefix() {
        let src = FileSource::from_data(
            "app",
            parse(
                Format::Json,
                r#"{"app": {"a": {"b": "1"}, "ab": "2"}, "other": "3"}"#,
            )
            .unwrap(),
        );
        assert_eq!(src.get("/a/b").unwrap().as_deref(), Some("1"));
        assert_eq!(
            src.list("a").unwrap(),
            vec![("a/b".to_string(), "1".to_string())]
        );
        assert_eq!(src.list("").unwrap().len(), 2);
    }
}
