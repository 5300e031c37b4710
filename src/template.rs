//! The template language: minijinja configured as DESIGN.md says, plus
//! stencil's functions and filters, with every read recorded.
//!
//! Jinja2 users expect strict undefined values, `trim_blocks` and a kept
//! trailing newline; auto-escaping is off because the output is
//! configuration, not HTML.
//!
//! Reads are recorded per render: a template's dependencies are what it
//! actually read (including keys it asked for that did not exist), so watch
//! mode can watch exactly those, and `stencil deps` can show them. The render
//! in progress is found through a thread-local set for the duration of the
//! render: minijinja calls our functions from inside its VM, in included
//! templates and macros alike, and the thread-local reaches all of them
//! without threading a hidden variable through the template context.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use base64::Engine as _;
use minijinja::value::{Enumerator, Kwargs, Object, Rest, Serde, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use serde::Serialize;

use crate::error::UsageError;
use crate::source::{self, Source, Sources};

/// One thing a template read while rendering.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Dep {
    Env { name: String },
    Key { source: String, key: String },
    Prefix { source: String, prefix: String },
    File { path: PathBuf },
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dep::Env { name } => write!(f, "env     {name}"),
            Dep::Key { source, key } => write!(f, "key     {source}:{key}"),
            Dep::Prefix { source, prefix } => write!(f, "prefix  {source}:{prefix}/"),
            Dep::File { path } => write!(f, "file    {}", path.display()),
        }
    }
}

/// What a render read, and which of those reads found nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Deps {
    pub read: BTreeSet<Dep>,
    pub missing: BTreeSet<Dep>,
    /// Sources that failed to answer (unreachable, refused): the render may
    /// succeed once they are back.
    pub failed: BTreeSet<String>,
    /// Keys whose absence failed the render (not those a default covered).
    pub waiting_for: BTreeSet<Dep>,
}

impl Deps {
    /// Whether the render may succeed later without anyone editing the
    /// template: a key that may appear, a source that may come back. The
    /// environment is read once, so an unset variable never appears.
    pub fn may_appear(&self) -> bool {
        !self.failed.is_empty() || !self.waiting_for.is_empty()
    }
}

/// The outcome of one render: the text, or the error, and always the reads
/// made up to that point (a template waiting for a key depends on it).
#[derive(Debug)]
pub struct Rendered {
    pub result: Result<String>,
    pub deps: Deps,
}

/// What a render may read: the sources and which one is the default.
#[derive(Debug, Clone)]
pub struct Scope {
    pub sources: Sources,
    pub default_source: Option<String>,
}

/// A parsed template, ready to render any number of times.
pub struct Template {
    path: PathBuf,
    env: Environment<'static>,
    /// Files pulled in by include/import/extends, recorded by the loader;
    /// the loader runs once per file, so they are kept across renders.
    included: Arc<Mutex<BTreeSet<PathBuf>>>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("path", &self.path)
            .finish()
    }
}

impl Template {
    /// Reads and parses a template. A syntax error is a usage error naming
    /// file, line and column.
    pub fn load(path: &Path) -> Result<Template> {
        let source = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read template {}", path.display()))?;
        Template::from_source(path, source)
    }

    pub fn from_source(path: &Path, source: String) -> Result<Template> {
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let included = Arc::new(Mutex::new(BTreeSet::new()));
        let mut env = new_environment();
        let loader_included = included.clone();
        env.set_loader(move |name| {
            let file = dir.join(name);
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    lock(&loader_included).insert(file);
                    Ok(Some(text))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::new(
                    ErrorKind::TemplateNotFound,
                    format!("cannot read {}: {e}", file.display()),
                )),
            }
        });
        let name = path.display().to_string();
        env.add_template_owned(name, source).map_err(|e| {
            anyhow::Error::new(e).context(UsageError(format!(
                "template {} has a syntax error",
                path.display()
            )))
        })?;
        Ok(Template {
            path: path.to_path_buf(),
            env,
            included,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Top-level names the template uses that are neither stencil's functions
    /// nor defined in the template: with an empty context they are undefined
    /// whenever they are reached.
    pub fn unknown_names(&self) -> Vec<String> {
        let Ok(tmpl) = self.env.get_template(&self.path.display().to_string()) else {
            return Vec::new();
        };
        let globals: BTreeSet<&str> = self.env.globals().map(|(name, _)| name).collect();
        let mut unknown: Vec<String> = tmpl
            .undeclared_variables(false)
            .into_iter()
            .filter(|n| !globals.contains(n.as_str()))
            .filter(|n| {
                !matches!(
                    n.as_str(),
                    "loop" | "self" | "super" | "caller" | "varargs" | "kwargs"
                )
            })
            .collect();
        unknown.sort();
        unknown
    }

    /// Renders with the reads recorded.
    pub fn render(&self, scope: &Scope) -> Rendered {
        let state = Arc::new(RenderState {
            scope: scope.clone(),
            dir: self.path.parent().unwrap_or(Path::new("")).to_path_buf(),
            deps: Mutex::new(Deps::default()),
        });
        let name = self.path.display().to_string();
        let result = CURRENT.with(|current| {
            let previous = current.replace(Some(state.clone()));
            let result = self.env.get_template(&name).and_then(|t| t.render(()));
            current.replace(previous);
            result
        });
        let mut deps = std::mem::take(&mut *lock(&state.deps));
        deps.read.insert(Dep::File {
            path: self.path.clone(),
        });
        for path in lock(&self.included).iter() {
            deps.read.insert(Dep::File { path: path.clone() });
        }
        let result = result.map_err(|e| explain(e, &deps, &self.path));
        Rendered { result, deps }
    }
}

/// Adds what stencil knows about a render error: which environment
/// variable was unset, which key was missing.
fn explain(err: Error, deps: &Deps, path: &Path) -> anyhow::Error {
    let line_text = err
        .template_source()
        .zip(err.line())
        .and_then(|(src, line)| src.lines().nth(line.wrapping_sub(1)))
        .unwrap_or_default()
        .to_string();
    let unset_env: Vec<&str> = deps
        .missing
        .iter()
        .filter_map(|d| match d {
            Dep::Env { name } if line_text.contains(name.as_str()) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let mut error = anyhow::Error::new(err);
    if err_is_undefined(&error) && !unset_env.is_empty() {
        let names = unset_env
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        error = error.context(format!(
            "environment variable {names} is not set (for an optional one write env.{} | default(\"…\"))",
            unset_env[0]
        ));
    }
    error.context(format!("cannot render template {}", path.display()))
}

fn err_is_undefined(err: &anyhow::Error) -> bool {
    err.downcast_ref::<Error>()
        .is_some_and(|e| e.kind() == ErrorKind::UndefinedError)
}

// ---------------------------------------------------------------------------
// The render in progress.

struct RenderState {
    scope: Scope,
    dir: PathBuf,
    deps: Mutex<Deps>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<RenderState>>> = const { RefCell::new(None) };
}

fn current() -> Result<Arc<RenderState>, Error> {
    CURRENT.with(|c| c.borrow().clone()).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            "stencil function called outside a render",
        )
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a set of reads
    // inconsistent in a way that matters; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RenderState {
    fn record(&self, dep: Dep) {
        lock(&self.deps).read.insert(dep);
    }

    fn record_missing(&self, dep: Dep) {
        let mut deps = lock(&self.deps);
        deps.read.insert(dep.clone());
        deps.missing.insert(dep);
    }

    /// The source a KV function reads: `source="name"`, else the template's
    /// default.
    fn source(&self, kwargs: &Kwargs) -> Result<(String, Arc<dyn Source>), Error> {
        let requested: Option<String> = kwargs.get("source")?;
        kwargs.assert_all_used()?;
        let name = match requested.or_else(|| self.scope.default_source.clone()) {
            Some(name) => name,
            None => {
                let names: Vec<&str> = self.scope.sources.names().collect();
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    if names.is_empty() {
                        "no data source is configured: add one with --data FILE or [sources.NAME] in the config".to_string()
                    } else {
                        format!(
                            "several sources are configured ({}): pass source=\"name\" or set data = \"name\" on the template",
                            names.join(", ")
                        )
                    },
                ));
            }
        };
        match self.scope.sources.get(&name) {
            Some(src) => Ok((name, src.clone())),
            None => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "no source named {name:?}; configured: {}",
                    self.scope.sources.names().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    fn get(&self, key: &str, kwargs: &Kwargs) -> Result<Lookup, Error> {
        let (name, src) = self.source(kwargs)?;
        let key = source::normalize_key(key).to_string();
        let dep = Dep::Key {
            source: name.clone(),
            key: key.clone(),
        };
        // Recorded before reading: a read that failed is still a
        // dependency, which watch mode must watch to see the source return.
        self.record(dep.clone());
        let value = src
            .get(&key)
            .map_err(|e| self.source_error(&name, &src, e))?;
        if value.is_none() {
            self.record_missing(dep);
        }
        Ok(Lookup { value, name, src })
    }

    fn list(
        &self,
        prefix: &str,
        kwargs: &Kwargs,
    ) -> Result<(String, Vec<(String, String)>), Error> {
        let (name, src) = self.source(kwargs)?;
        let prefix = source::normalize_key(prefix).to_string();
        // Recorded before reading, so a failed read is still watched.
        self.record(Dep::Prefix {
            source: name.clone(),
            prefix: prefix.clone(),
        });
        let items = src
            .list(&prefix)
            .map_err(|e| self.source_error(&name, &src, e))?;
        Ok((prefix, items))
    }
}

/// One key read: its value, and which source answered (for messages).
struct Lookup {
    value: Option<String>,
    name: String,
    src: Arc<dyn Source>,
}

impl RenderState {
    fn source_error(&self, name: &str, src: &Arc<dyn Source>, err: anyhow::Error) -> Error {
        lock(&self.deps).failed.insert(name.to_string());
        Error::new(
            ErrorKind::InvalidOperation,
            format!("source {name:?} ({}) failed: {err:#}", src.describe()),
        )
    }
}

fn missing_key(key: &str, name: &str, src: &Arc<dyn Source>) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "key {:?} not found in source {name:?} ({}); use key_or(key, default) if it is optional",
            source::normalize_key(key),
            src.describe()
        ),
    )
}

// ---------------------------------------------------------------------------
// The environment.

/// stencil's own template functions (and the `env` global), as registered
/// in [`new_environment`]; stencil-templates(7) documents each (a test checks).
pub const FUNCTIONS: &[&str] = &[
    "env",
    "env_or_file",
    "file",
    "key",
    "key_or",
    "key_exists",
    "ls",
    "kv",
    "tree",
    "getv",
    "gets",
    "getvs",
    "exists",
    "lsdir",
    "keyOrDefault",
    "keyExists",
];

/// stencil's own filters, as registered in [`new_environment`].
pub const FILTERS: &[&str] = &[
    "fromjson",
    "tojson",
    "fromyaml",
    "toyaml",
    "b64encode",
    "b64decode",
    "basename",
    "dirname",
    "shell_quote",
    "required",
];

fn new_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .expect("default delimiters are valid"),
    );
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_debug(true);
    env.set_auto_reload(false);
    // Booleans print as `true`/`false`, not Python's `True`/`False`: the
    // output is YAML, TOML, JSON, nginx, where only the lowercase form is
    // valid, and it is what confd and consul-template print.
    env.set_formatter(|out, state, value| match value.kind() {
        minijinja::value::ValueKind::Bool => out
            .write_str(if value.is_true() { "true" } else { "false" })
            .map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string())),
        _ => minijinja::escape_formatter(out, state, value),
    });

    // Jinja2 templates call Python methods (`d.items()`, `s.split(',')`);
    // people porting templates from Python tools expect them to work.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);

    env.add_global("env", Value::from_object(EnvObject));
    env.add_function("env_or_file", env_or_file);
    env.add_function("file", file);

    env.add_function("key", key);
    env.add_function("key_or", key_or);
    env.add_function("key_exists", key_exists);
    env.add_function("ls", ls);
    env.add_function("kv", kv);
    env.add_function("tree", tree);

    // confd
    env.add_function("getv", getv);
    env.add_function("gets", gets);
    env.add_function("getvs", getvs);
    env.add_function("exists", key_exists);
    env.add_function("lsdir", lsdir);
    // consul-template
    env.add_function("keyOrDefault", key_or);
    env.add_function("keyExists", key_exists);

    env.add_filter("fromjson", fromjson);
    env.add_filter("tojson", tojson);
    env.add_filter("fromyaml", fromyaml);
    env.add_filter("toyaml", toyaml);
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    env.add_filter("basename", basename);
    env.add_filter("dirname", dirname);
    env.add_filter("shell_quote", shell_quote);
    env.add_filter("required", required);
    env
}

/// One environment variable. Looked up per read rather than copied into a
/// map at start: a render reads a handful of variables, and copying the
/// whole environment cost 7% of a one-shot render's start-up. (stencil
/// never changes its own environment, so every read sees the same value.)
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `env.NAME`: records the read; an unset variable is undefined, so strict
/// mode makes it an error unless `| default(...)` is used.
#[derive(Debug)]
struct EnvObject;

impl Object for EnvObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        let value = env_var(name);
        if let Ok(state) = current() {
            let dep = Dep::Env {
                name: name.to_string(),
            };
            if value.is_some() {
                state.record(dep);
            } else {
                state.record_missing(dep);
            }
        }
        value.map(Value::from)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::NonEnumerable
    }
}

/// `env_or_file("NAME")`: `$NAME_FILE`'s contents if set (Docker and
/// Kubernetes secrets), else `$NAME`. One trailing newline of the file is
/// dropped, as `$(cat file)` would.
fn env_or_file(name: &str) -> Result<Value, Error> {
    let state = current()?;
    let file_var = format!("{name}_FILE");
    if let Some(path) = env_var(&file_var) {
        state.record(Dep::Env {
            name: file_var.clone(),
        });
        let path = PathBuf::from(path);
        state.record(Dep::File { path: path.clone() });
        let mut text = std::fs::read_to_string(&path).map_err(|e| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("cannot read {} (from ${file_var}): {e}", path.display()),
            )
        })?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        return Ok(Value::from(text));
    }
    state.record_missing(Dep::Env {
        name: file_var.clone(),
    });
    match env_var(name) {
        Some(v) => {
            state.record(Dep::Env {
                name: name.to_string(),
            });
            Ok(Value::from(v.as_str()))
        }
        None => {
            state.record_missing(Dep::Env {
                name: name.to_string(),
            });
            Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("neither ${file_var} nor ${name} is set"),
            ))
        }
    }
}

/// `file(path)`: a file's contents, relative to the template's directory.
fn file(path: &str) -> Result<Value, Error> {
    let state = current()?;
    let full = state.dir.join(path);
    state.record(Dep::File { path: full.clone() });
    std::fs::read_to_string(&full)
        .map(Value::from)
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("cannot read {}: {e}", full.display()),
            )
        })
}

fn key(path: &str, kwargs: Kwargs) -> Result<Value, Error> {
    let state = current()?;
    let found = state.get(path, &kwargs)?;
    match found.value {
        Some(v) => Ok(Value::from(v)),
        None => {
            lock(&state.deps).waiting_for.insert(Dep::Key {
                source: found.name.clone(),
                key: source::normalize_key(path).to_string(),
            });
            Err(missing_key(path, &found.name, &found.src))
        }
    }
}

fn key_or(path: &str, default: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let state = current()?;
    Ok(state.get(path, &kwargs)?.value.map_or(default, Value::from))
}

fn key_exists(path: &str, kwargs: Kwargs) -> Result<bool, Error> {
    let state = current()?;
    Ok(state.get(path, &kwargs)?.value.is_some())
}

/// confd's `getv(key[, default])`.
fn getv(path: &str, default: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    match default {
        Some(d) => key_or(path, d, kwargs),
        None => key(path, kwargs),
    }
}

/// Sorted names of the direct children of a prefix.
fn ls(prefix: Option<&str>, kwargs: Kwargs) -> Result<Value, Error> {
    let state = current()?;
    let (prefix, items) = state.list(prefix.unwrap_or(""), &kwargs)?;
    let names: BTreeSet<&str> = items
        .iter()
        .filter_map(|(k, _)| source::relative(k, &prefix).split('/').next())
        .filter(|n| !n.is_empty())
        .collect();
    Ok(natural_order(names))
}

/// Names sorted with numbers first, by value: a data file's list items are
/// keys `0`, `1`, … `10`, and must come back in list order, not `0, 1, 10, 2`.
fn natural_order(names: BTreeSet<&str>) -> Value {
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_by_key(|n| {
        (
            n.parse::<u64>().map_or(1, |_| 0),
            n.parse::<u64>().unwrap_or(0),
            *n,
        )
    });
    names.into_iter().map(Value::from).collect()
}

/// confd's `lsdir`: names of the children that have children themselves.
fn lsdir(prefix: Option<&str>, kwargs: Kwargs) -> Result<Value, Error> {
    let state = current()?;
    let (prefix, items) = state.list(prefix.unwrap_or(""), &kwargs)?;
    let names: BTreeSet<&str> = items
        .iter()
        .filter_map(|(k, _)| source::relative(k, &prefix).split_once('/').map(|(d, _)| d))
        .filter(|n| !n.is_empty())
        .collect();
    Ok(natural_order(names))
}

/// Every key under a prefix, relative to it, at any depth.
fn kv(prefix: Option<&str>, kwargs: Kwargs) -> Result<Value, Error> {
    let state = current()?;
    let (prefix, items) = state.list(prefix.unwrap_or(""), &kwargs)?;
    let map: BTreeMap<String, String> = items
        .into_iter()
        .map(|(k, v)| (source::relative(&k, &prefix).to_string(), v))
        .collect();
    Ok(Value::from(Serde(map)))
}

/// The keys under a prefix as nested dicts. A folder whose children are
/// exactly `0`, `1`, … `n-1` becomes a list, so a data file's lists come
/// back as lists, in order. Where a key is both a value and a folder (`a`
/// and `a/b`, possible in Consul and etcd), the folder wins.
fn tree(prefix: Option<&str>, kwargs: Kwargs) -> Result<Value, Error> {
    let state = current()?;
    let (prefix, items) = state.list(prefix.unwrap_or(""), &kwargs)?;
    let mut root = serde_json::Map::new();
    for (k, v) in items {
        let rel = source::relative(&k, &prefix);
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        let Some((last, dirs)) = parts.split_last() else {
            continue;
        };
        let mut node = &mut root;
        for d in dirs {
            let entry = node
                .entry(d.to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !entry.is_object() {
                *entry = serde_json::Value::Object(Default::default());
            }
            node = entry.as_object_mut().expect("just made an object");
        }
        if !node.get(*last).is_some_and(|e| e.is_object()) {
            node.insert(last.to_string(), serde_json::Value::String(v));
        }
    }
    let mut root = serde_json::Value::Object(root);
    lists_from_numbered_folders(&mut root);
    Ok(Value::from(Serde(root)))
}

fn lists_from_numbered_folders(v: &mut serde_json::Value) {
    let serde_json::Value::Object(map) = v else {
        return;
    };
    for child in map.values_mut() {
        lists_from_numbered_folders(child);
    }
    let numbered = !map.is_empty() && (0..map.len()).all(|i| map.contains_key(&i.to_string()));
    if numbered {
        let items = (0..map.len())
            .map(|i| map.remove(&i.to_string()).unwrap_or_default())
            .collect();
        *v = serde_json::Value::Array(items);
    }
}

/// confd's `gets(pattern)`: `[{Key, Value}]` for the keys matching a glob,
/// `*` not crossing `/`. Keys are shown with a leading `/` as confd does.
fn gets(pattern: &str, kwargs: Kwargs) -> Result<Value, Error> {
    let matched = glob_read(pattern, &kwargs)?;
    Ok(matched
        .into_iter()
        .map(|(k, v)| {
            let mut m = BTreeMap::new();
            m.insert("Key", format!("/{k}"));
            m.insert("Value", v);
            Value::from(Serde(m))
        })
        .collect())
}

/// confd's `getvs(pattern)`: the values of the keys matching a glob.
fn getvs(pattern: &str, kwargs: Kwargs) -> Result<Value, Error> {
    Ok(glob_read(pattern, &kwargs)?
        .into_iter()
        .map(|(_, v)| Value::from(v))
        .collect())
}

fn glob_read(pattern: &str, kwargs: &Kwargs) -> Result<Vec<(String, String)>, Error> {
    let state = current()?;
    let pattern = source::normalize_key(pattern);
    let compiled = glob::Pattern::new(pattern).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("invalid pattern {pattern:?}: {e}"),
        )
    })?;
    // Read the deepest folder that has no wildcard in it: one read.
    let literal_end = pattern.find(['*', '?', '[']).unwrap_or(pattern.len());
    let folder = pattern[..literal_end]
        .rfind('/')
        .map_or("", |i| &pattern[..i]);
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    if literal_end == pattern.len() {
        let value = state.get(pattern, kwargs)?.value;
        return Ok(value
            .map(|v| vec![(pattern.to_string(), v)])
            .unwrap_or_default());
    }
    let (_, items) = state.list(folder, kwargs)?;
    Ok(items
        .into_iter()
        .filter(|(k, _)| compiled.matches_with(k, options))
        .collect())
}

// ---------------------------------------------------------------------------
// Filters.

fn fromjson(s: &str) -> Result<Value, Error> {
    serde_json::from_str::<serde_json::Value>(s)
        .map(|v| Value::from(Serde(v)))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("fromjson: {e}")))
}

/// Plain JSON. minijinja's own `tojson` escapes `<`, `>`, `&` and `'` for
/// embedding in HTML, which only makes config files harder to read.
fn tojson(v: Value, indent: Option<usize>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match indent {
        Some(n) => Some(n),
        None => kwargs.get::<Option<usize>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let result = match indent {
        None => serde_json::to_string(&v),
        Some(n) => {
            let indent = " ".repeat(n);
            let mut out = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            serde::Serialize::serialize(&v, &mut ser)
                .map(|()| String::from_utf8(out).unwrap_or_default())
        }
    };
    result
        .map(Value::from)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))
}

fn fromyaml(s: &str) -> Result<Value, Error> {
    serde_norway::from_str::<serde_norway::Value>(s)
        .map(|v| Value::from(Serde(v)))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("fromyaml: {e}")))
}

fn toyaml(v: Value) -> Result<Value, Error> {
    serde_norway::to_string(&v)
        .map(Value::from)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("toyaml: {e}")))
}

fn b64encode(v: Value) -> Result<String, Error> {
    let bytes: Vec<u8> = match (v.as_str(), v.as_bytes()) {
        (Some(s), _) => s.as_bytes().to_vec(),
        (None, Some(b)) => b.to_vec(),
        _ => v.to_string().into_bytes(),
    };
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn b64decode(s: &str) -> Result<String, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("b64decode: {e}")))?;
    String::from_utf8(bytes).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            "b64decode: the decoded bytes are not UTF-8 text",
        )
    })
}

/// Like basename(1): `/etc/nginx/` -> `nginx`.
fn basename(s: &str) -> String {
    let trimmed = s.trim_end_matches('/');
    if trimmed.is_empty() {
        return if s.is_empty() {
            String::new()
        } else {
            "/".into()
        };
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// Like dirname(1): `/etc/nginx/nginx.conf` -> `/etc/nginx`, `a` -> `.`.
fn dirname(s: &str) -> String {
    let trimmed = s.trim_end_matches('/');
    match trimmed.rfind('/') {
        None if s.starts_with('/') => "/".into(),
        None => ".".into(),
        Some(0) => "/".into(),
        Some(i) => trimmed[..i].trim_end_matches('/').to_string(),
    }
}

/// Quotes a value for a POSIX shell.
fn shell_quote(v: Value) -> Result<String, Error> {
    let s = v.as_str().map_or_else(|| v.to_string(), str::to_string);
    shlex::try_quote(&s).map(|q| q.into_owned()).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            "shell_quote: the value contains a NUL byte",
        )
    })
}

/// `value | required("message")`: an error when the value is undefined,
/// none or empty.
fn required(v: Value, message: Rest<String>) -> Result<Value, Error> {
    let empty = v.is_undefined() || v.is_none() || v.as_str().is_some_and(str::is_empty);
    if empty {
        let msg = message
            .0
            .first()
            .cloned()
            .unwrap_or_else(|| "a required value is missing or empty".into());
        return Err(Error::new(ErrorKind::InvalidOperation, msg));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_and_filters_lists_match_the_environment() {
        let env = new_environment();
        let builtin: BTreeSet<String> = Environment::new()
            .globals()
            .map(|(name, _)| name.to_string())
            .collect();
        let ours: BTreeSet<&str> = env
            .globals()
            .map(|(name, _)| name)
            .filter(|name| !builtin.contains(*name))
            .collect();
        assert_eq!(ours, FUNCTIONS.iter().copied().collect());
        for name in FILTERS {
            let result = env.render_str(&format!("{{{{ '' | {name} }}}}"), ());
            assert!(
                !matches!(result, Err(e) if e.kind() == ErrorKind::UnknownFilter),
                "filter {name} is not registered"
            );
        }
        // Filters cannot be listed through minijinja's API: read them here.
        let source = include_str!("template.rs");
        let registered: BTreeSet<&str> = source
            .split("env.add_filter(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        assert_eq!(registered, FILTERS.iter().copied().collect());
    }

    #[test]
    fn basename_and_dirname_follow_coreutils() {
        assert_eq!(basename("/etc/nginx/nginx.conf"), "nginx.conf");
        assert_eq!(basename("/etc/nginx/"), "nginx");
        assert_eq!(basename("/"), "/");
        assert_eq!(dirname("/etc/nginx/nginx.conf"), "/etc/nginx");
        assert_eq!(dirname("nginx.conf"), ".");
        assert_eq!(dirname("/etc"), "/");
        assert_eq!(dirname("/"), "/");
    }
}
