//! Consul KV over its HTTP API (`/v1/kv/`).
//!
//! A key is one `GET /v1/kv/<key>`; a prefix is one `GET /v1/kv/<folder>/?recurse`,
//! whatever it holds, so a template looping over 10,000 keys costs one
//! request, and a key inside a prefix already read is served from that read.
//! Values come base64-encoded (`null` for an empty value); a value that is
//! not UTF-8 is an error naming its key. A 404 is a missing key, not an
//! error. Consul "folder" keys (ending in `/`, made by the UI and
//! `consul kv put folder/`) are not keys a template can read, and are
//! skipped.
//!
//! The parts: `client` talks to one agent (URLs, the token, what answers
//! mean); `watch` plans and runs the blocking queries that follow what a
//! render read; this file holds the configuration and the source that
//! templates read through, with its per-snapshot cache.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc::UnboundedSender;

use super::catalog::{CatalogData, CatalogQuery};
use super::{Source, SourceEvent, WatchFuture, WatchSpec};
use crate::runtime::{self, Tls};

mod client;
mod plan;
mod services;
mod snapshot;
mod watch;

pub(crate) use client::ConsulClient;
use client::Entry;
pub use watch::MIN_INTERVAL;

/// The default request timeout: nothing waits without a bound.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a blocking query waits for a change before Consul answers with
/// the same index. consul-template's default; shorter than Consul's own
/// 5 minutes so a connection silently cut by a firewall is noticed soon.
const DEFAULT_QUERY_WAIT: Duration = Duration::from_secs(60);

/// The default bound on a watch's parked blocking queries: a third of
/// Consul's 200 connections per client address
/// (`limits.http_max_conns_per_client`), which every local client shares.
const DEFAULT_MAX_WATCH_QUERIES: usize = 64;

/// How to reach Consul.
#[derive(Clone, PartialEq, serde::Serialize)]
pub struct ConsulConfig {
    /// `http://host:port` or `https://host:port`.
    #[serde(serialize_with = "crate::spec::serialize_redacted")]
    pub address: String,
    /// Prepended to every key: with `apps/web`, `key("db/host")` reads
    /// `apps/web/db/host`. Leading and trailing `/` are ignored.
    pub prefix: String,
    /// Never printed: not by `--print-config`, not by `Debug`.
    #[serde(skip)]
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub datacenter: Option<String>,
    /// Let any server answer reads (`?stale`), not only the leader.
    pub stale: bool,
    /// With stale reads: an answer from a server further behind the
    /// leader than this (`X-Consul-LastContact`), or one that knows no
    /// leader, is read again from the leader. Setting it turns `stale` on.
    #[serde(with = "crate::spec::duration_serde_opt")]
    pub max_stale: Option<Duration>,
    pub tls: Tls,
    #[serde(with = "crate::spec::duration_serde")]
    pub timeout: Duration,
    /// The `wait` of blocking queries.
    #[serde(with = "crate::spec::duration_serde")]
    pub query_wait: Duration,
    /// What a recursive read whose answer the ACLs filtered is.
    pub acl_filtered: AclFiltered,
    /// The most blocking queries a watch parks at once (each holds a
    /// connection); more watched keys are merged into their folders.
    pub max_watch_queries: usize,
    /// The most bytes one reply may hold.
    pub max_response_size: usize,
}

/// What to do with a read Consul filtered by ACLs
/// (`X-Consul-Results-Filtered-By-ACLs`): the token may read only some of
/// the keys under the prefix, so the data is partial.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AclFiltered {
    /// An error naming the source and prefix, in render and watch.
    #[default]
    Error,
    /// A warning, once per prefix; the readable keys are used.
    Warn,
}

impl AclFiltered {
    /// `error` or `warn`, as the config file and `--source` write it.
    pub(crate) fn parse(s: &str) -> Option<AclFiltered> {
        match s {
            "error" => Some(AclFiltered::Error),
            "warn" => Some(AclFiltered::Warn),
            _ => None,
        }
    }
}

impl fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("address", &self.address)
            .field("prefix", &self.prefix)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("datacenter", &self.datacenter)
            .field("stale", &self.stale)
            .field("max_stale", &self.max_stale)
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .field("query_wait", &self.query_wait)
            .field("acl_filtered", &self.acl_filtered)
            .field("max_watch_queries", &self.max_watch_queries)
            .finish()
    }
}

impl ConsulConfig {
    /// A config for `address` with stencil's defaults and nothing from the
    /// environment.
    pub fn new(address: impl Into<String>) -> ConsulConfig {
        ConsulConfig {
            address: address.into(),
            prefix: String::new(),
            token: None,
            token_file: None,
            datacenter: None,
            stale: false,
            max_stale: None,
            tls: Tls::default(),
            timeout: DEFAULT_TIMEOUT,
            query_wait: DEFAULT_QUERY_WAIT,
            acl_filtered: AclFiltered::Error,
            max_watch_queries: DEFAULT_MAX_WATCH_QUERIES,
            max_response_size: crate::runtime::DEFAULT_MAX_RESPONSE_SIZE,
        }
    }

    /// Defaults from the environment variables the consul CLI reads:
    /// `CONSUL_HTTP_ADDR` (`host:port` takes `https` when `CONSUL_HTTP_SSL`
    /// is true), `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`,
    /// `CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`.
    pub(crate) fn from_env() -> ConsulConfig {
        let env = |k: &str| {
            std::env::var(k)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        // Go's strconv.ParseBool, which the consul CLI uses.
        let ssl = env("CONSUL_HTTP_SSL")
            .is_some_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"));
        let scheme = if ssl { "https" } else { "http" };
        let address = match env("CONSUL_HTTP_ADDR") {
            Some(a) if a.contains("://") => a,
            Some(a) => format!("{scheme}://{a}"),
            None => format!("{scheme}://127.0.0.1:8500"),
        };
        ConsulConfig {
            token: env("CONSUL_HTTP_TOKEN"),
            token_file: env("CONSUL_HTTP_TOKEN_FILE").map(PathBuf::from),
            tls: Tls {
                ca_file: env("CONSUL_CACERT").map(PathBuf::from),
                cert_file: env("CONSUL_CLIENT_CERT").map(PathBuf::from),
                key_file: env("CONSUL_CLIENT_KEY").map(PathBuf::from),
            },
            ..ConsulConfig::new(address)
        }
    }
}

/// One read, with the `X-Consul-Index` it returned.
#[derive(Debug, Clone)]
struct Read<T> {
    index: u64,
    value: T,
}

/// The snapshot templates read, keyed by Consul key: kept between
/// batches and brought forward by the watch's answers (`snapshot.rs`).
#[derive(Default)]
struct Cache {
    /// Folder (a Consul key ending in `/`, or "" for everything) -> its
    /// keys (full Consul keys, folder markers left out) and values.
    folders: HashMap<String, Read<BTreeMap<String, String>>>,
    keys: HashMap<String, Read<Option<String>>>,
    /// Kept for one batch only: a catalog watch reports that an answer
    /// changed, not the answer, so `advance` drops these.
    catalog: HashMap<CatalogQuery, Read<CatalogData>>,
    /// The watch's answers since the last batch began.
    pending: Vec<snapshot::Update>,
}

/// Without the values: a Debug print must not leak them.
impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("folders", &self.folders.keys().collect::<Vec<_>>())
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("catalog", &self.catalog.keys().collect::<Vec<_>>())
            .field("pending", &self.pending)
            .finish()
    }
}

impl Cache {
    /// The cached folder that holds `key`, if any.
    fn folder_of(&self, key: &str) -> Option<&Read<BTreeMap<String, String>>> {
        self.folders
            .iter()
            .find(|(f, _)| in_folder(f, key))
            .map(|(_, r)| r)
    }
}

/// Whether the Consul folder `folder` (ending in `/`, or "" for everything)
/// holds `key`.
fn in_folder(folder: &str, key: &str) -> bool {
    key.starts_with(folder)
}

/// Consul KV as a source: reads cached per snapshot, watched with
/// blocking queries.
#[derive(Debug)]
pub struct ConsulSource {
    name: String,
    client: ConsulClient,
    /// Without leading or trailing `/`.
    prefix: String,
    query_wait: Duration,
    acl_filtered: AclFiltered,
    max_watch_queries: usize,
    /// Whether a watch had to merge queries to stay within
    /// `max_watch_queries` (logged once).
    bounded: AtomicBool,
    /// Folders whose filtered reads were warned about (`acl_filtered =
    /// "warn"`): one warning per folder, not one per render or query.
    warned: Mutex<HashSet<String>>,
    /// Folders stencil merged watched keys into that Consul refused or
    /// filtered: their keys are watched one by one from then on.
    unlistable: Mutex<HashSet<String>>,
    cache: Mutex<Cache>,
    /// What the watch's queries last saw, by (recurse, key): a watch
    /// restarted for a new set of keys (the coordinator does that when the
    /// templates read something new) goes on from here for queries whose
    /// data the last render did not read, rather than starting blind.
    watched: Mutex<plan::Watched>,
    /// The same for catalog queries.
    watched_catalog: Mutex<HashMap<CatalogQuery, Read<CatalogData>>>,
}

impl ConsulSource {
    pub fn new(name: &str, config: &ConsulConfig) -> Result<ConsulSource> {
        Ok(ConsulSource {
            name: name.to_string(),
            client: ConsulClient::new(config)?,
            prefix: super::normalize_key(&config.prefix).to_string(),
            query_wait: config.query_wait,
            acl_filtered: config.acl_filtered,
            max_watch_queries: config.max_watch_queries,
            bounded: AtomicBool::new(false),
            warned: Mutex::new(HashSet::new()),
            unlistable: Mutex::new(HashSet::new()),
            cache: Mutex::new(Cache::default()),
            watched: Mutex::new(HashMap::new()),
            watched_catalog: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The Consul key of a template key.
    fn full_key(&self, key: &str) -> String {
        let key = super::normalize_key(key);
        match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{key}", self.prefix),
        }
    }

    /// The Consul folder holding everything under a template prefix.
    fn folder(&self, prefix: &str) -> String {
        let full = self.full_key(prefix);
        if full.is_empty() {
            full
        } else {
            format!("{full}/")
        }
    }

    /// A Consul key back to the template's key space.
    fn relative_key(&self, full: &str) -> Option<String> {
        if self.prefix.is_empty() {
            return Some(full.to_string());
        }
        full.strip_prefix(&self.prefix)?
            .strip_prefix('/')
            .map(str::to_string)
    }

    fn fetch(&self, key: &str, recurse: bool) -> Result<client::Reply> {
        runtime::block_on(self.client.read(key, recurse, None))
    }

    /// A reply to the recursive read of `folder` that the ACLs filtered:
    /// an error (it ends a watch), or with `acl_filtered = "warn"` one
    /// warning per folder.
    fn check_filtered(&self, folder: &str, reply: &client::Reply) -> Result<()> {
        if !reply.filtered {
            return Ok(());
        }
        let what = format!(
            "consul source {:?}: the read of prefix {folder:?} at {} was filtered by ACLs: \
             the token may read only some of the keys under it",
            self.name,
            self.client.address()
        );
        match self.acl_filtered {
            AclFiltered::Error => Err(client::refused(format!(
                "{what}, so the data would be partial (give the token read on the whole \
                 prefix, or set acl_filtered = \"warn\" on the source to use the keys it may read)"
            ))),
            AclFiltered::Warn => {
                let first = self
                    .warned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(folder.to_string());
                if first {
                    tracing::warn!(source = %self.name, "{what}; using the keys it may read (acl_filtered = \"warn\")");
                }
                Ok(())
            }
        }
    }
}

impl Source for ConsulSource {
    fn describe(&self) -> String {
        format!("consul {}", self.client.address())
    }

    /// Brings the snapshot forward by the watch's answers since the last
    /// batch; what they cannot vouch for is dropped and read again.
    fn refresh(&self) {
        self.lock().advance();
    }

    fn catalog(&self, query: &CatalogQuery) -> Result<CatalogData> {
        self.read_catalog(query)
    }

    fn has_catalog(&self) -> bool {
        true
    }

    fn requests(&self) -> Option<u64> {
        Some(self.client.requests())
    }

    fn get(&self, key: &str) -> Result<Option<String>> {
        let full = self.full_key(key);
        if full.is_empty() {
            return Ok(None);
        }
        {
            let cache = self.lock();
            if let Some(folder) = cache.folder_of(&full) {
                return Ok(folder.value.get(&full).cloned());
            }
            if let Some(read) = cache.keys.get(&full) {
                return Ok(read.value.clone());
            }
        }
        let reply = self.fetch(&full, false)?;
        let value = match reply.entries {
            None => None,
            Some(entries) => entries
                .iter()
                .find(|e| e.key == full)
                .map(Entry::text)
                .transpose()?,
        };
        self.lock().keys.insert(
            full,
            Read {
                index: reply.index,
                value: value.clone(),
            },
        );
        Ok(value)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let folder = self.folder(prefix);
        let from = |keys: &BTreeMap<String, String>| -> Vec<(String, String)> {
            keys.range(folder.clone()..)
                .take_while(|(k, _)| in_folder(&folder, k))
                .filter_map(|(k, v)| Some((self.relative_key(k)?, v.clone())))
                .collect()
        };
        if let Some(cached) = self.lock().folder_of(&folder) {
            return Ok(from(&cached.value));
        }
        let reply = self.fetch(&folder, true)?;
        self.check_filtered(&folder, &reply)?;
        let mut keys = BTreeMap::new();
        for e in reply.entries.iter().flatten() {
            // Folder markers (`a/b/`, the UI's "create folder") hold no
            // value a template can read.
            if e.key.ends_with('/') || !in_folder(&folder, &e.key) {
                continue;
            }
            keys.insert(e.key.clone(), e.text()?);
        }
        let out = from(&keys);
        self.lock().folders.insert(
            folder,
            Read {
                index: reply.index,
                value: keys,
            },
        );
        Ok(out)
    }

    /// Watches from what the last snapshot read: each blocking query starts
    /// at the `X-Consul-Index` of the read that fed the render, so a change
    /// made after it is delivered. A query with nothing read to start from
    /// reports every key its first answer holds as changed: it cannot tell
    /// what changed since the render, and a needless render writes nothing.
    fn watch(
        self: std::sync::Arc<Self>,
        _name: String,
        spec: WatchSpec,
        tx: UnboundedSender<SourceEvent>,
    ) -> Option<WatchFuture> {
        let queries = self.plan(&spec);
        let catalog: Vec<CatalogQuery> = spec.catalog.into_iter().collect();
        Some(Box::pin(async move {
            self.watch_queries(queries, catalog, &tx).await
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(prefix: &str) -> ConsulSource {
        let mut config = ConsulConfig::new("127.0.0.1:8500");
        config.prefix = prefix.into();
        ConsulSource::new("kv", &config).unwrap()
    }

    #[test]
    fn keys_and_folders_under_a_prefix() {
        let s = source("/apps/web/");
        assert_eq!(s.full_key("db/host"), "apps/web/db/host");
        assert_eq!(s.folder("upstreams"), "apps/web/upstreams/");
        assert_eq!(s.folder(""), "apps/web/");
        assert_eq!(
            s.relative_key("apps/web/db/host").as_deref(),
            Some("db/host")
        );
        assert_eq!(s.relative_key("apps/webx/db"), None);
        let s = source("");
        assert_eq!(s.folder(""), "");
        assert_eq!(s.full_key("/a/b/"), "a/b");
    }
}
