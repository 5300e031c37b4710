//! Data sources: what `key()`, `ls()`, `kv()` and `tree()` read.
//!
//! Every source is a flat map of `/`-separated keys to UTF-8 string values,
//! whatever it is underneath (a JSON file's nested objects, etcd's key
//! space, Consul's KV store). Templates ask for one key or for everything
//! under a prefix; a source answers a prefix with one read, so a template
//! that loops over a thousand keys costs one request, not a thousand.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use anyhow::{Result, bail};

pub mod catalog;
pub mod consul;
pub mod etcd;
pub mod file;

/// A source of keys and values. Keys are relative to the source's prefix,
/// without leading or trailing `/`.
pub trait Source: Send + Sync + fmt::Debug {
    /// How the source is named in messages: `file /etc/app/data.json`.
    fn describe(&self) -> String;

    /// The value of one key, or `None` when it does not exist.
    fn get(&self, key: &str) -> Result<Option<String>>;

    /// Every key strictly under `prefix` (directory semantics: `a` covers
    /// `a/b` and `a/b/c`, not `ab`), sorted by key. An empty prefix is the
    /// whole source. Keys are returned in full, not relative to `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<(String, String)>>;

    /// A service-discovery read (`service()`, `services()`, `nodes()`,
    /// `node()`): only Consul has a catalog.
    fn catalog(&self, query: &catalog::CatalogQuery) -> Result<catalog::CatalogData> {
        bail!(
            "{} has no service catalog: {query} reads a Consul source (pass source=\"name\" to pick one)",
            self.describe()
        )
    }

    /// Whether [`Source::catalog`] answers (a Consul source).
    fn has_catalog(&self) -> bool {
        false
    }

    /// Starts a new snapshot: forget what earlier reads cached.
    fn refresh(&self) {}

    /// The typed document (a data file's, at its prefix), for `vars`;
    /// `None` for key/value stores, whose values are only strings.
    fn document(&self) -> Option<Result<Arc<serde_json::Value>>> {
        None
    }

    /// Requests sent to a server so far, for network sources.
    fn requests(&self) -> Option<u64> {
        None
    }

    /// Watches what `spec` names, from the state the last snapshot read,
    /// sending [`SourceEvent`]s on `tx` until `tx` is closed. `None` for
    /// sources the coordinator watches itself (files, through notify).
    ///
    /// The future retries with backoff forever on connection errors
    /// (reporting [`SourceEvent::Failed`] and later [`SourceEvent::Up`]), and
    /// returns an error only for what retrying cannot fix (permission
    /// denied).
    fn watch(
        self: Arc<Self>,
        _name: String,
        _spec: WatchSpec,
        _tx: tokio::sync::mpsc::UnboundedSender<SourceEvent>,
    ) -> Option<WatchFuture> {
        None
    }
}

/// The future a source's watch runs as.
pub type WatchFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// What a watch covers: keys and folders as templates read them (relative
/// to the source's prefix, normalized).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSpec {
    pub keys: std::collections::BTreeSet<String>,
    pub prefixes: std::collections::BTreeSet<String>,
    /// Service-discovery queries (Consul's catalog and health).
    pub catalog: std::collections::BTreeSet<catalog::CatalogQuery>,
}

impl WatchSpec {
    /// Drops keys a watched prefix already covers, so two specs that watch
    /// the same thing compare equal (and a running watch is not restarted
    /// because a template read one more key under a prefix it lists).
    pub fn normalized(mut self) -> WatchSpec {
        let prefixes = self.prefixes.clone();
        self.keys
            .retain(|k| !prefixes.iter().any(|p| is_under(k, p)));
        self
    }
}

/// What a source's watch reports to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// These keys (relative, normalized) changed: created, modified or
    /// deleted.
    Changed { source: String, keys: Vec<String> },
    /// The answers to these catalog queries changed: an instance came,
    /// went, or changed health, address, port, tags or meta.
    CatalogChanged {
        source: String,
        queries: Vec<catalog::CatalogQuery>,
    },
    /// Changes may have been missed (etcd compacted the history):
    /// everything this source feeds must be read again. (Consul needs
    /// none: each blocking query's answer holds the whole content, which is
    /// compared with what was known, even when the index went backwards.)
    Resync { source: String },
    /// The source answers again after a failure.
    Up { source: String },
    /// The source stopped answering; the watch keeps retrying.
    Failed { source: String, error: String },
    /// Which member of a cluster (etcd) the watch is on, `None` while it is
    /// on none, and the members given up on. Sent when either changes.
    Members {
        source: String,
        watching: Option<String>,
        given_up: Vec<etcd::GivenUp>,
    },
    /// How many blocking queries the watch keeps parked (Consul): sent
    /// when it starts and when it splits a query Consul refused.
    Queries { source: String, parked: usize },
    /// The watch left a cluster member that failed (`error`) for the next
    /// one, resuming where it stood.
    Failover {
        source: String,
        from: String,
        error: String,
    },
}

/// A data source as configured, by kind.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceSpec {
    /// A JSON, TOML, YAML or dotenv file.
    File {
        path: std::path::PathBuf,
        /// Keys in templates are relative to this prefix.
        prefix: String,
    },
    /// etcd v3 through its HTTP/JSON gateway.
    Etcd(etcd::EtcdConfig),
    /// Consul KV.
    Consul(consul::ConsulConfig),
}

impl SourceSpec {
    /// The `kind` as written in the config file.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::File { .. } => "file",
            SourceSpec::Etcd(_) => "etcd",
            SourceSpec::Consul(_) => "consul",
        }
    }
}

/// The sources of one configuration, by name.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    map: BTreeMap<String, Arc<dyn Source>>,
}

impl Sources {
    /// Opens every source. File sources are read and parsed here, so a
    /// malformed data file fails before anything is rendered.
    pub fn open(specs: &BTreeMap<String, SourceSpec>) -> Result<Sources> {
        let mut map: BTreeMap<String, Arc<dyn Source>> = BTreeMap::new();
        for (name, spec) in specs {
            let source: Arc<dyn Source> = match spec {
                SourceSpec::File { path, prefix } => Arc::new(
                    file::FileSource::load(path, prefix)
                        .map_err(|e| e.context(format!("cannot load source {name:?}")))?,
                ),
                SourceSpec::Etcd(config) => Arc::new(
                    etcd::EtcdSource::new(name, config)
                        .map_err(|e| e.context(format!("cannot set up source {name:?}")))?,
                ),
                SourceSpec::Consul(config) => Arc::new(
                    consul::ConsulSource::new(name, config)
                        .map_err(|e| e.context(format!("cannot set up source {name:?}")))?,
                ),
            };
            map.insert(name.clone(), source);
        }
        Ok(Sources { map })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Source>> {
        self.map.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Every source with its name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<dyn Source>)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl FromIterator<(String, Arc<dyn Source>)> for Sources {
    fn from_iter<I: IntoIterator<Item = (String, Arc<dyn Source>)>>(iter: I) -> Self {
        Sources {
            map: iter.into_iter().collect(),
        }
    }
}

/// Normalizes a key or prefix as written in a template: `/a/b/` -> `a/b`.
pub fn normalize_key(key: &str) -> &str {
    key.trim_matches('/')
}

/// Whether `key` is strictly under `prefix` (both normalized).
pub fn is_under(key: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || (key.len() > prefix.len()
            && key.starts_with(prefix)
            && key.as_bytes()[prefix.len()] == b'/')
}

/// `key` relative to `prefix` (both normalized, `key` under `prefix`).
pub fn relative<'a>(key: &'a str, prefix: &str) -> &'a str {
    if prefix.is_empty() {
        key
    } else {
        &key[prefix.len() + 1..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_have_directory_semantics() {
        assert!(is_under("a/b", "a"));
        assert!(is_under("a/b/c", "a"));
        assert!(!is_under("ab", "a"));
        assert!(!is_under("a", "a"));
        assert!(is_under("a", ""));
        assert_eq!(relative("a/b/c", "a"), "b/c");
        assert_eq!(normalize_key("/a/b/"), "a/b");
    }
}
