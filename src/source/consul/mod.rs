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
//! The ACL token goes in the `X-Consul-Token` header, marked sensitive, and
//! never in a URL: URLs end up in error messages, the token must not.
//!
//! Watching is done with blocking queries (`?index=N&wait=…`), as Consul's
//! documentation on blocking queries asks: one query per watched prefix
//! (keys under it share it), one per other key; each starts from the
//! `X-Consul-Index` the render's read returned, so a change made after the
//! render is never missed; an index that goes backwards (a snapshot
//! restore, reaped tombstones) resets to 0; an unchanged index, or a reply
//! whose content is the same (a query on a missing key or an empty prefix
//! returns on *any* write, because its index is the KV table's), reports
//! nothing; the changed keys are found by diffing the old and new content.
//! Queries that bring no change are at least [`MIN_INTERVAL`] apart, so a
//! misbehaving server cannot drive a hot loop.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use serde::Deserialize;
use tokio::sync::mpsc::UnboundedSender;

use super::{Source, SourceEvent, WatchFuture, WatchSpec};
use crate::runtime::{self, Backoff, Tls};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The default request timeout: nothing waits without a bound.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a blocking query waits for a change before Consul answers with
/// the same index. consul-template's default; shorter than Consul's own
/// 5 minutes so a connection silently cut by a firewall is noticed soon.
pub const DEFAULT_QUERY_WAIT: Duration = Duration::from_secs(60);

/// The least time between the starts of two blocking queries of one watch
/// when the first brought no change (an expired wait, an index that did not
/// move or went backwards, a write elsewhere): a server that answers at
/// once every time costs at most 10 requests a second, not a hot loop. A
/// query after a real change starts at once, so a burst of changes is
/// followed without delay.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// How to reach Consul.
#[derive(Clone, PartialEq, serde::Serialize)]
pub struct ConsulConfig {
    /// `http://host:port` or `https://host:port`.
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
    pub tls: Tls,
    #[serde(with = "crate::spec::duration_serde")]
    pub timeout: Duration,
    /// The `wait` of blocking queries.
    #[serde(with = "crate::spec::duration_serde")]
    pub query_wait: Duration,
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
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .field("query_wait", &self.query_wait)
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
            tls: Tls::default(),
            timeout: DEFAULT_TIMEOUT,
            query_wait: DEFAULT_QUERY_WAIT,
        }
    }

    /// Defaults from the environment variables the consul CLI reads:
    /// `CONSUL_HTTP_ADDR` (`host:port` takes `https` when `CONSUL_HTTP_SSL`
    /// is true), `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`,
    /// `CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`.
    pub fn from_env() -> ConsulConfig {
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

// ---------------------------------------------------------------------------
// Wire types.

/// One entry of a KV read. Only what stencil uses; Consul sends more.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    key: String,
    /// base64; `null` for an empty value.
    #[serde(default)]
    value: Option<String>,
}

impl Entry {
    fn bytes(&self) -> Result<Vec<u8>> {
        match &self.value {
            None => Ok(Vec::new()),
            Some(v) => B64.decode(v).with_context(|| {
                format!(
                    "Consul sent a value for key {:?} that is not base64",
                    self.key
                )
            }),
        }
    }

    fn text(&self) -> Result<String> {
        String::from_utf8(self.bytes()?)
            .map_err(|_| anyhow!("the value of key {:?} is not UTF-8 text", self.key))
    }
}

/// A read's answer: the entries (`None` for a 404) and `X-Consul-Index`.
#[derive(Debug)]
struct Reply {
    index: u64,
    entries: Option<Vec<Entry>>,
}

// ---------------------------------------------------------------------------

/// What went wrong talking to Consul, when the caller branches on it.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// The token may not read this: retrying will not help.
    #[error("{0}")]
    Denied(String),
}

fn is_denied(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ConsulError>()
        .is_some_and(|e| matches!(e, ConsulError::Denied(_)))
}

/// A client for one Consul agent.
#[derive(Debug)]
pub struct ConsulClient {
    http: reqwest::Client,
    address: String,
    /// Marked sensitive, so it is left out of `Debug` output.
    token: Option<reqwest::header::HeaderValue>,
    datacenter: Option<String>,
    stale: bool,
    timeout: Duration,
    /// Requests sent, for tests and benchmarks.
    pub requests: AtomicU64,
}

impl ConsulClient {
    pub fn new(config: &ConsulConfig) -> Result<ConsulClient> {
        let address = normalize_address(&config.address)?;
        // As the consul CLI: the token file wins over the token.
        let token = match &config.token_file {
            Some(f) => {
                let t = std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read token_file {}", f.display()))?;
                let t = t.trim().to_string();
                if t.is_empty() {
                    bail!("token_file {} is empty", f.display());
                }
                Some(t)
            }
            None => config.token.clone(),
        };
        let token = match token {
            Some(t) => {
                let mut v = reqwest::header::HeaderValue::from_str(&t).map_err(|_| {
                    anyhow!("the Consul token has characters an HTTP header cannot carry")
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(ConsulClient {
            // One client (one pool, one TLS setup) for reads and blocking
            // queries; every exchange is bounded by its own timeout below.
            http: runtime::http_client(&config.tls, config.timeout, true)?,
            address,
            token,
            datacenter: config.datacenter.clone().filter(|d| !d.is_empty()),
            stale: config.stale,
            timeout: config.timeout,
            requests: AtomicU64::new(0),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether `address` is one stencil can use, before anything connects.
    pub fn check_address(address: &str) -> Result<()> {
        normalize_address(address).map(|_| ())
    }

    /// `GET /v1/kv/<key>`, with `?recurse` for a folder, and as a blocking
    /// query from `index` for at most `wait` when `block` is given.
    async fn read(
        &self,
        key: &str,
        recurse: bool,
        block: Option<(u64, Duration)>,
    ) -> Result<Reply> {
        let mut query = Vec::new();
        if recurse {
            query.push("recurse".to_string());
        }
        if let Some(dc) = &self.datacenter {
            query.push(format!("dc={}", encode(dc, false)));
        }
        if self.stale {
            query.push("stale".to_string());
        }
        if let Some((index, wait)) = block {
            query.push(format!("index={index}"));
            query.push(format!("wait={}ms", wait.as_millis().max(1)));
        }
        let mut url = format!("{}/v1/kv/{}", self.address, encode(key, true));
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        let what = if recurse {
            format!("prefix {key:?}")
        } else {
            format!("key {key:?}")
        };
        let (client, limit) = match block {
            // Consul holds a query up to wait + wait/16 of jitter; the
            // normal timeout on top covers the network.
            Some((_, wait)) => (&self.http, wait + wait / 16 + self.timeout),
            None => (&self.http, self.timeout),
        };
        let mut req = client.get(&url);
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t.clone());
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let exchange = async {
            let resp = req.send().await?;
            let status = resp.status();
            let index = resp
                .headers()
                .get("X-Consul-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, index, body))
        };
        let (status, index, body) = match tokio::time::timeout(limit, exchange).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(anyhow!("{}", runtime::describe_reqwest(&e))
                    .context(format!("consul at {} did not answer", self.address)));
            }
            Err(_) => bail!(
                "consul at {} did not answer within {} (reading {what})",
                self.address,
                humantime::format_duration(limit)
            ),
        };
        match status.as_u16() {
            200 => {
                let entries: Vec<Entry> = serde_json::from_slice(&body).with_context(|| {
                    format!(
                        "consul at {} sent a reply to the read of {what} stencil cannot read",
                        self.address
                    )
                })?;
                Ok(Reply {
                    index,
                    entries: Some(entries),
                })
            }
            404 => Ok(Reply {
                index,
                entries: None,
            }),
            403 => {
                let text = String::from_utf8_lossy(&body);
                let text: String = text.trim().chars().take(300).collect();
                let why = if self.token.is_none() {
                    "the token lacks permission: no token is set (token, token_file or CONSUL_HTTP_TOKEN)"
                } else if text.contains("ACL not found") {
                    "the token lacks permission: Consul does not know it (deleted or mistyped?)"
                } else {
                    "the token lacks permission to read it"
                };
                Err(ConsulError::Denied(format!(
                    "consul at {} refused to read {what}: {why} (403 {text})",
                    self.address
                ))
                .into())
            }
            _ => {
                let text = String::from_utf8_lossy(&body);
                let text: String = text.trim().chars().take(300).collect();
                bail!(
                    "consul at {} answered {status} to the read of {what}: {text}",
                    self.address
                )
            }
        }
    }
}

/// `host:port` -> `http://host:port`; no trailing `/`.
fn normalize_address(address: &str) -> Result<String> {
    let a = address.trim().trim_end_matches('/');
    if a.is_empty() {
        bail!("the Consul address is empty");
    }
    if a.starts_with("unix://") {
        bail!("Consul address {a:?}: unix sockets are not supported; use http:// or https://");
    }
    let url = if a.contains("://") {
        a.to_string()
    } else {
        format!("http://{a}")
    };
    let parsed =
        reqwest::Url::parse(&url).with_context(|| format!("invalid Consul address {a:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("Consul address {a:?}: use http:// or https://");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        bail!("Consul address {a:?} has no host");
    }
    Ok(url)
}

/// Percent-encodes a key for a URL path (`/` kept when `path`), or a query
/// value: Consul keys may hold spaces, `?`, `#` and `%`.
fn encode(s: &str, path: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (path && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether the Consul folder `folder` (ending in `/`, or "" for everything)
/// holds `key`.
fn in_folder(folder: &str, key: &str) -> bool {
    key.starts_with(folder)
}

// ---------------------------------------------------------------------------
// The source.

/// One read, with the `X-Consul-Index` it returned.
#[derive(Debug, Clone)]
struct Read<T> {
    index: u64,
    value: T,
}

/// Reads cached for one snapshot, keyed by Consul key.
#[derive(Debug, Default)]
struct Cache {
    /// Folder (a Consul key ending in `/`, or "" for everything) -> its
    /// keys (full Consul keys, folder markers left out) and values.
    folders: HashMap<String, Read<BTreeMap<String, String>>>,
    keys: HashMap<String, Read<Option<String>>>,
}

#[derive(Debug)]
pub struct ConsulSource {
    name: String,
    client: ConsulClient,
    /// Without leading or trailing `/`.
    prefix: String,
    query_wait: Duration,
    cache: Mutex<Cache>,
    /// What the watch's queries last saw, by (recurse, key): a watch
    /// restarted for a new set of keys (the coordinator does that when the
    /// templates read something new) goes on from here for queries whose
    /// data the last render did not read, rather than starting blind.
    watched: Mutex<Watched>,
}

impl ConsulSource {
    pub fn new(name: &str, config: &ConsulConfig) -> Result<ConsulSource> {
        Ok(ConsulSource {
            name: name.to_string(),
            client: ConsulClient::new(config)?,
            prefix: super::normalize_key(&config.prefix).to_string(),
            query_wait: config.query_wait,
            cache: Mutex::new(Cache::default()),
            watched: Mutex::new(HashMap::new()),
        })
    }

    pub fn client(&self) -> &ConsulClient {
        &self.client
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

    fn fetch(&self, key: &str, recurse: bool) -> Result<Reply> {
        runtime::block_on(self.client.read(key, recurse, None))
    }

    /// The cached folder that holds `key`, if any.
    fn cached_folder<'a>(
        cache: &'a Cache,
        key: &str,
    ) -> Option<&'a Read<BTreeMap<String, String>>> {
        cache
            .folders
            .iter()
            .find(|(f, _)| in_folder(f, key))
            .map(|(_, r)| r)
    }
}

impl Source for ConsulSource {
    fn describe(&self) -> String {
        format!("consul {}", self.client.address)
    }

    fn refresh(&self) {
        *self.lock() = Cache::default();
    }

    fn requests(&self) -> Option<u64> {
        Some(self.client.requests.load(Ordering::Relaxed))
    }

    fn get(&self, key: &str) -> Result<Option<String>> {
        let full = self.full_key(key);
        if full.is_empty() {
            return Ok(None);
        }
        {
            let cache = self.lock();
            if let Some(folder) = Self::cached_folder(&cache, &full) {
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
        if let Some(cached) = Self::cached_folder(&self.lock(), &folder) {
            return Ok(from(&cached.value));
        }
        let reply = self.fetch(&folder, true)?;
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
        Some(Box::pin(
            async move { self.watch_queries(queries, &tx).await },
        ))
    }
}

// ---------------------------------------------------------------------------
// Watching.

/// Full Consul key -> raw value.
type Content = BTreeMap<String, Vec<u8>>;

/// (recurse, Consul key) of a query -> what it last saw.
type Watched = HashMap<(bool, String), Read<Arc<Content>>>;

/// One blocking query of a watch.
#[derive(Debug, Clone)]
struct Query {
    /// A Consul key, or a folder (ending in `/`, or "") read with `recurse`.
    key: String,
    recurse: bool,
    /// What the render (or an earlier watch) read, and at which index.
    known: Option<Read<Arc<Content>>>,
}

impl Query {
    fn describe(&self) -> String {
        if self.recurse {
            format!("prefix {:?}", self.key)
        } else {
            format!("key {:?}", self.key)
        }
    }
}

/// How many of a watch's queries are failing, so the coordinator hears one
/// `Failed` when the source stops answering and one `Up` when it is back.
struct Health<'a> {
    failing: Mutex<usize>,
    source: &'a str,
    tx: &'a UnboundedSender<SourceEvent>,
}

impl Health<'_> {
    fn failed(&self, error: String) {
        let mut n = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        if *n == 1 {
            let _ = self.tx.send(SourceEvent::Failed {
                source: self.source.to_string(),
                error,
            });
        }
    }

    fn up(&self) {
        let mut n = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            let _ = self.tx.send(SourceEvent::Up {
                source: self.source.to_string(),
            });
        }
    }
}

impl ConsulSource {
    /// The queries that cover `spec`, each with what the current snapshot
    /// read of it.
    fn plan(&self, spec: &WatchSpec) -> Vec<Query> {
        let mut folders: BTreeSet<String> = spec.prefixes.iter().map(|p| self.folder(p)).collect();
        // A folder inside another watched folder shares its query.
        let all: Vec<String> = folders.iter().cloned().collect();
        folders.retain(|f| !all.iter().any(|g| g != f && in_folder(g, f)));
        let mut keys: BTreeSet<String> = spec
            .keys
            .iter()
            .map(|k| self.full_key(k))
            .filter(|k| !k.is_empty() && !folders.iter().any(|f| in_folder(f, k)))
            .collect();
        // Keys that share a folder share one recursive query on it: one
        // connection per folder, not one per key (consul-template's
        // hundreds of sockets). Keys at the root stay single queries rather
        // than watching the whole store. The diff may report folder
        // neighbours nobody reads; the coordinator ignores those.
        let mut by_folder: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in &keys {
            if let Some(i) = key.rfind('/') {
                by_folder
                    .entry(key[..=i].to_string())
                    .or_default()
                    .push(key.clone());
            }
        }
        let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (folder, members) in by_folder {
            if members.len() > 1 {
                for k in &members {
                    keys.remove(k);
                }
                folders.insert(folder.clone());
                grouped.insert(folder, members);
            }
        }
        let all: Vec<String> = folders.iter().cloned().collect();
        folders.retain(|f| !all.iter().any(|g| g != f && in_folder(g, f)));

        let cache = self.lock();
        let to_raw = |m: &BTreeMap<String, String>, within: &dyn Fn(&str) -> bool| -> Content {
            m.iter()
                .filter(|(k, _)| within(k))
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                .collect()
        };
        let mut queries = Vec::new();
        for folder in folders {
            // The folder's own read, or one of a folder holding it: its
            // index is at least the inner folder's, and any later write
            // under it gets a higher one.
            let known = cache
                .folders
                .iter()
                .find(|(f, _)| in_folder(f, &folder))
                .map(|(_, r)| Read {
                    index: r.index,
                    value: Arc::new(to_raw(&r.value, &|k| in_folder(&folder, k))),
                })
                .or_else(|| Self::known_from_keys(&cache, grouped.get(&folder)?));
            queries.push(Query {
                key: folder,
                recurse: true,
                known,
            });
        }
        for key in keys {
            let known = match cache.keys.get(&key) {
                Some(r) => Some(Read {
                    index: r.index,
                    value: Arc::new(
                        r.value
                            .iter()
                            .map(|v| (key.clone(), v.clone().into_bytes()))
                            .collect(),
                    ),
                }),
                None => Self::cached_folder(&cache, &key).map(|r| Read {
                    index: r.index,
                    value: Arc::new(to_raw(&r.value, &|k| k == key)),
                }),
            };
            queries.push(Query {
                key,
                recurse: false,
                known,
            });
        }
        drop(cache);
        // The newer of the render's read and what a watch saw: changes
        // between the two were delivered already.
        let mut watched = self.watched();
        watched.retain(|(recurse, key), _| {
            queries
                .iter()
                .any(|q| q.recurse == *recurse && q.key == *key)
        });
        for q in &mut queries {
            if let Some(seen) = watched.get(&(q.recurse, q.key.clone()))
                && q.known.as_ref().is_none_or(|k| k.index < seen.index)
            {
                q.known = Some(seen.clone());
            }
        }
        queries
    }

    /// What the render saw of a folder it read key by key: the keys'
    /// values, at the oldest of their indexes (so no later change is
    /// missed). Only when every key was read.
    fn known_from_keys(cache: &Cache, keys: &[String]) -> Option<Read<Arc<Content>>> {
        let mut index = u64::MAX;
        let mut content = Content::new();
        for key in keys {
            let r = cache.keys.get(key)?;
            index = index.min(r.index);
            if let Some(v) = &r.value {
                content.insert(key.clone(), v.clone().into_bytes());
            }
        }
        Some(Read {
            index,
            value: Arc::new(content),
        })
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn watch_queries(
        &self,
        queries: Vec<Query>,
        tx: &UnboundedSender<SourceEvent>,
    ) -> Result<()> {
        if queries.is_empty() {
            tx.closed().await;
            return Ok(());
        }
        let health = Health {
            failing: Mutex::new(0),
            source: &self.name,
            tx,
        };
        let runs = queries.into_iter().map(|q| self.run_query(q, tx, &health));
        futures_util::future::try_join_all(runs).await?;
        Ok(())
    }

    /// One blocking query, again and again, until `tx` closes.
    async fn run_query(
        &self,
        query: Query,
        tx: &UnboundedSender<SourceEvent>,
        health: &Health<'_>,
    ) -> Result<()> {
        let what = query.describe();
        let mut index = query.known.as_ref().map_or(0, |r| r.index);
        let mut query = query;
        let mut known = query.known.take().map(|r| r.value);
        let mut backoff = Backoff::default();
        let mut failing = false;
        // When the last query started, if the next one must keep
        // MIN_INTERVAL from it.
        let mut pace: Option<tokio::time::Instant> = None;
        loop {
            if let Some(started) = pace.take() {
                tokio::select! {
                    _ = tokio::time::sleep_until(started + MIN_INTERVAL) => {}
                    _ = tx.closed() => return Ok(()),
                }
            }
            let started = tokio::time::Instant::now();
            // After a failure, a plain read: a blocking query would only
            // answer (and so show the source is back) when something
            // changes. Its content is compared like any other, so nothing
            // is lost.
            let block = (!failing).then_some((index, self.query_wait));
            tracing::trace!(source = %self.name, "consul query on {what} from index {index}, blocking: {}", block.is_some());
            let read = self.client.read(&query.key, query.recurse, block);
            let result = tokio::select! {
                r = read => r,
                _ = tx.closed() => return Ok(()),
            };
            let reply = match result {
                Ok(reply) => reply,
                Err(e) if is_denied(&e) => {
                    return Err(e.context(format!(
                        "the Consul watch of source {:?} stopped",
                        self.name
                    )));
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    let error = format!("{e:#}");
                    tracing::warn!(source = %self.name, "consul watch of {what}: {error}; retrying from index {index} in {delay:?}");
                    if !failing {
                        failing = true;
                        health.failed(error);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = tx.closed() => return Ok(()),
                    }
                    continue;
                }
            };
            if std::mem::take(&mut failing) {
                health.up();
            }
            backoff.reset();
            if reply.index == index && known.is_some() {
                // The wait expired, or the server answered early without a
                // change.
                pace = Some(started);
                continue;
            }
            let next = if reply.index < index {
                // Consul's docs: an index that goes backwards (a snapshot
                // restore, reaped tombstones) must reset to 0, or the next
                // query may wait for an index that will come much later.
                tracing::info!(source = %self.name, "consul index of {what} went backwards ({index} -> {}); starting over from 0", reply.index);
                0
            } else {
                // Consul's docs: an index of 0 is a server bug; 1 is safe.
                reply.index.max(1)
            };
            index = next;
            let content = match raw_content(&query, reply.entries) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(source = %self.name, "consul watch of {what}: {e:#}");
                    pace = Some(started);
                    continue;
                }
            };
            let changed: Vec<String> = match &known {
                Some(old) => diff(old, &content),
                None => content.keys().cloned().collect(),
            }
            .iter()
            .filter_map(|k| self.relative_key(k))
            .collect();
            let content = Arc::new(content);
            self.watched().insert(
                (query.recurse, query.key.clone()),
                Read {
                    index: reply.index.max(1),
                    value: content.clone(),
                },
            );
            known = Some(content);
            if changed.is_empty() {
                pace = Some(started);
                continue;
            }
            tracing::debug!(source = %self.name, "consul: {} changed under {what}", changed.len());
            let event = SourceEvent::Changed {
                source: self.name.clone(),
                keys: changed,
            };
            if tx.send(event).is_err() {
                return Ok(());
            }
        }
    }
}

/// A reply's entries as the watch compares them.
fn raw_content(query: &Query, entries: Option<Vec<Entry>>) -> Result<Content> {
    let mut content = Content::new();
    for e in entries.into_iter().flatten() {
        let wanted = if query.recurse {
            !e.key.ends_with('/') && in_folder(&query.key, &e.key)
        } else {
            e.key == query.key
        };
        if wanted {
            let bytes = e.bytes()?;
            content.insert(e.key, bytes);
        }
    }
    Ok(content)
}

/// Keys created, modified or deleted between two contents, sorted.
fn diff(old: &Content, new: &Content) -> Vec<String> {
    let mut changed: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    changed.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
    changed.sort();
    changed
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

    #[test]
    fn addresses_get_a_scheme_and_lose_the_slash() {
        assert_eq!(
            normalize_address("127.0.0.1:8500").unwrap(),
            "http://127.0.0.1:8500"
        );
        assert_eq!(
            normalize_address("https://consul:8501/").unwrap(),
            "https://consul:8501"
        );
        assert!(normalize_address("unix:///tmp/consul.sock").is_err());
        assert!(normalize_address("ftp://x").is_err());
        assert!(normalize_address("").is_err());
    }

    #[test]
    fn keys_are_percent_encoded() {
        assert_eq!(encode("a b/c?d#e%", true), "a%20b/c%3Fd%23e%25");
        assert_eq!(encode("dc/1", false), "dc%2F1");
    }

    #[test]
    fn watch_plan_shares_a_prefix_query_with_the_keys_under_it() {
        let s = source("apps");
        let spec = WatchSpec {
            keys: ["web/db/host".into(), "web/port".into(), "other".into()].into(),
            prefixes: ["web/db".into(), "web/db/replicas".into()].into(),
        };
        let plan: Vec<(String, bool)> = s
            .plan(&spec)
            .into_iter()
            .map(|q| (q.key, q.recurse))
            .collect();
        assert_eq!(
            plan,
            [
                ("apps/web/db/".to_string(), true),
                ("apps/other".to_string(), false),
                ("apps/web/port".to_string(), false),
            ]
        );
    }

    #[test]
    fn diff_finds_created_modified_and_deleted_keys() {
        let old: Content = [("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())].into();
        let new: Content = [("b".into(), b"3".to_vec()), ("c".into(), b"".to_vec())].into();
        assert_eq!(diff(&old, &new), ["a", "b", "c"]);
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let mut config = ConsulConfig::new("127.0.0.1:8500");
        config.token = Some("s3cr3t-t0ken".into());
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let client = ConsulClient::new(&config).unwrap();
        assert!(!format!("{client:?}").contains("s3cr3t"));
    }
}
