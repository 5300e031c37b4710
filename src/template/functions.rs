//! stencil's template functions: the `env` global, `env_or_file`, `file`,
//! the KV functions, and confd's and consul-template's names for them with
//! the originals' semantics. Each records what it reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use minijinja::value::{Enumerator, Kwargs, Object, Serde, Value};
use minijinja::{Environment, Error, ErrorKind};

use super::reads::{Dep, current};
use crate::source::{self, Source};

/// stencil's own template functions (and the `env` global), as registered
/// by `register`; stencil-templates(7) documents each (a test checks).
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
    // Service discovery (catalog.rs).
    "service",
    "services",
    "nodes",
    "node",
    // Go's builtins, for converted templates (gofmt.rs).
    "print",
    "printf",
    "println",
    "go_range",
    // confd's and consul-template's helpers (aliases.rs).
    "toUpper",
    "toLower",
    "base",
    "dir",
    "trimSuffix",
    "atoi",
    "seq",
    "trimSpace",
    "replaceAll",
    "parseBool",
    "parseInt",
    "split",
    "in",
    "contains",
    "regexMatch",
    "regexReplaceAll",
    "envOrDefault",
    "get",
    // confd's DNS lookups (dns.rs).
    "lookupIP",
    "lookupIPV4",
    "lookupIPV6",
    // consul-template's encoders (encode.rs).
    "toJSON",
    "toJSONPretty",
    "toYAML",
    "base64Encode",
    "base64Decode",
    "sha256Hex",
    "json",
    "jsonArray",
    "parseJSON",
    // consul-template's timestamp, confd's datetime (gotime.rs).
    "timestamp",
    "datetime",
];

pub(super) fn register(env: &mut Environment<'static>) {
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
    env.add_function("get", get);
    env.add_function("gets", gets);
    env.add_function("getvs", getvs);
    env.add_function("exists", key_exists);
    env.add_function("lsdir", lsdir);
    // consul-template
    env.add_function("keyOrDefault", key_or);
    env.add_function("keyExists", key_exists);
    env.add_function("envOrDefault", env_or_default);
}

/// consul-template's `envOrDefault(name, default)`: the variable's value
/// when it is set, even to "" (os.LookupEnv), else the default.
fn env_or_default(name: &str, default: Value) -> Result<Value, Error> {
    Ok(read_env(name)?.map_or(default, Value::from))
}

/// The process environment, copied once at the first read, each variable
/// with its place in it (which `RenderState::record_env` keys on).
/// Nothing can change the environment under a running stencil but stencil
/// itself, which never does; looking each read up with getenv instead
/// scanned the whole environment per `env.X`, and 5,000 reads of a
/// 1,000-variable environment spent most of a render there.
fn environment() -> &'static HashMap<OsString, (usize, OsString)> {
    static ENVIRONMENT: OnceLock<HashMap<OsString, (usize, OsString)>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        std::env::vars_os()
            .enumerate()
            .map(|(index, (name, value))| (name, (index, value)))
            .collect()
    })
}

/// One environment variable, with its place in the environment.
///
/// A value that is not UTF-8 is an error naming the variable, never
/// "unset": `env.X | default("d")` must not quietly render the default.
fn env_entry(name: &str) -> Option<(usize, Result<&'static str, Error>)> {
    let (index, value) = environment().get(OsStr::new(name))?;
    let text = value.to_str().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("environment variable {name:?} is set but its value is not UTF-8 text"),
        )
    });
    Some((*index, text))
}

/// [`env_entry`]'s value, with the read recorded for the render in progress: a set
/// (or unreadable) variable as read, an unset one as missing, so watch
/// mode knows it. Every read of the environment goes through here.
pub(super) fn read_env(name: &str) -> Result<Option<&'static str>, Error> {
    let entry = env_entry(name);
    if let Ok(state) = current() {
        match &entry {
            Some((index, _)) => state.record_env(*index, name),
            None => state.record_missing(Dep::Env {
                name: name.to_string(),
            }),
        }
    }
    entry.map(|(_, value)| value).transpose()
}

/// `env.NAME`: records the read; an unset variable is undefined, so strict
/// mode makes it an error unless `| default(...)` is used.
#[derive(Debug)]
struct EnvObject;

impl Object for EnvObject {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match read_env(key.as_str()?) {
            Ok(value) => value.map(Value::from),
            // An invalid value fails wherever it is used, `default` too.
            Err(e) => Some(Value::from(e)),
        }
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
    if let Some(path) = read_env(&file_var)? {
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
    match read_env(name)? {
        Some(v) => Ok(Value::from(v)),
        None => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("neither ${file_var} nor ${name} is set"),
        )),
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
            state.record_waiting(Dep::Key {
                source: found.name.clone(),
                key: source::normalize_key(path).to_string(),
            });
            Err(missing_key(path, &found.name, &found.src))
        }
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
        // Nested dicts are built, converted and dropped recursively: a key
        // with 20,000 segments would overflow the stack.
        if parts.len() > state.limits.max_depth {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "tree: a key under {prefix:?} is more than max_depth ({}) folders deep",
                    state.limits.max_depth
                ),
            ));
        }
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

/// confd's `get(key)`: the pair `{Key, Value}` (`.Key` has confd's leading
/// `/`); a missing key is an error, as in confd.
fn get(path: &str, kwargs: Kwargs) -> Result<Value, Error> {
    let value = key(path, kwargs)?;
    let mut m = BTreeMap::new();
    m.insert(
        "Key",
        Value::from(format!("/{}", source::normalize_key(path))),
    );
    m.insert("Value", value);
    Ok(Value::from(m))
}

/// confd's `getvs(pattern)`: the values of the keys matching a glob.
/// The values sorted by value, not by key: confd's GetAllValues ends with
/// `sort.Strings`, and templates iterating getvs rely on that order.
fn getvs(pattern: &str, kwargs: Kwargs) -> Result<Value, Error> {
    let mut values: Vec<String> = glob_read(pattern, &kwargs)?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    values.sort();
    Ok(values.into_iter().map(Value::from).collect())
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
