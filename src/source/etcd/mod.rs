//! etcd v3 through its HTTP/JSON gateway (etcd 3.4 and 3.5): the source
//! behind `key()`, `ls()`, `kv()` and `tree()`.
//!
//! Prefixes are read with one range request each (`range_end` = the prefix
//! with its last byte incremented), so a template looping over 10,000 keys
//! costs one request.
//!
//! Reads within one snapshot are pinned to the revision of the first read,
//! so a template never mixes two states of the store, and a watch started
//! at that revision + 1 cannot miss a change made after the render read.
//!
//! `client` speaks the gateway's protocol; `watch` follows its watch stream.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;

use super::{Source, SourceEvent, WatchFuture, WatchSpec};
use crate::runtime::{self, Tls};
use client::{B64, EtcdError, Kv};
use range::prefix_range;

mod cache;
mod client;
mod members;
mod probe;
mod range;
mod watch;

pub use client::EtcdClient;
pub use members::GivenUp;
pub use range::prefix_range_end;

/// The default request timeout. A bogus token can make the gateway hang
/// forever, so nothing waits without a bound.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the watch asks the member that carries it whether it still
/// serves. With the probe timeout of half that, a frozen member is left
/// within 7.5 s, so a change is applied within 10 s.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// How to reach etcd.
#[derive(Clone, PartialEq, serde::Serialize)]
pub struct EtcdConfig {
    #[serde(serialize_with = "crate::spec::serialize_redacted_list")]
    pub endpoints: Vec<String>,
    /// Prepended to every key; `/` by default, the convention of etcdctl
    /// and confd (`/apps/web/db/host`).
    pub prefix: String,
    pub username: Option<String>,
    #[serde(skip)]
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub tls: Tls,
    #[serde(with = "crate::spec::duration_serde")]
    pub timeout: Duration,
    /// How often the watch probes the member it is on; each probe may
    /// take half of it (at most `timeout`).
    #[serde(with = "crate::spec::duration_serde")]
    pub probe_interval: Duration,
    /// The most bytes one reply or one watch message may hold.
    pub max_response_size: usize,
}

/// Without the password: a Debug print must not leak it.
impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("password_file", &self.password_file)
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .field("probe_interval", &self.probe_interval)
            .field("max_response_size", &self.max_response_size)
            .finish()
    }
}

impl EtcdConfig {
    /// Defaults from the environment variables etcdctl reads.
    pub fn from_env() -> EtcdConfig {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (username, password) = match env("ETCDCTL_USER") {
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (Some(user.to_string()), Some(pass.to_string())),
                None => (Some(u), env("ETCDCTL_PASSWORD")),
            },
            None => (None, env("ETCDCTL_PASSWORD")),
        };
        EtcdConfig {
            endpoints: env("ETCDCTL_ENDPOINTS")
                .map(|e| {
                    e.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_else(|| vec!["http://127.0.0.1:2379".to_string()]),
            prefix: "/".to_string(),
            username,
            password,
            password_file: None,
            tls: Tls {
                ca_file: env("ETCDCTL_CACERT").map(PathBuf::from),
                cert_file: env("ETCDCTL_CERT").map(PathBuf::from),
                key_file: env("ETCDCTL_KEY").map(PathBuf::from),
            },
            timeout: DEFAULT_TIMEOUT,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            max_response_size: crate::runtime::DEFAULT_MAX_RESPONSE_SIZE,
        }
    }
}

/// Grouped reads: after this many keys under one folder missed the
/// snapshot, the folder is read whole (one request for what would be
/// many).
const GROUP_AFTER: usize = 2;

/// A folder read whole for grouped reads holds at most this many keys (as
/// many as the 10,000-key template of the benchmarks reads in one request);
/// a bigger one is read key by key.
const GROUP_LIMIT: usize = 10_000;

/// Grouped reads look at most this many folders above a key.
const GROUP_LEVELS: usize = 2;

/// One range read: full keys and values, the revision they are valid at,
/// and whether a limit left keys out.
struct Read {
    kvs: Vec<(String, String)>,
    at: i64,
    more: bool,
}

pub struct EtcdSource {
    name: String,
    client: EtcdClient,
    probe_interval: Duration,
    prefix: String,
    cache: Mutex<cache::Cache>,
    /// The revision the running (or last) watch would resume from, so a
    /// restarted watch never skips what the old one had not delivered.
    watch_position: Mutex<Option<i64>>,
    /// What the watch last said of the cluster's members.
    reported: Mutex<probe::Reported>,
}

/// Without the cached values: a Debug print must not leak them.
impl fmt::Debug for EtcdSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdSource")
            .field("name", &self.name)
            .field("client", &self.client)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdSource {
    pub fn new(name: &str, config: &EtcdConfig) -> Result<EtcdSource> {
        Ok(EtcdSource {
            name: name.to_string(),
            client: EtcdClient::new(config)?,
            probe_interval: config.probe_interval,
            prefix: config.prefix.clone(),
            cache: Mutex::new(cache::Cache::default()),
            watch_position: Mutex::new(None),
            reported: Mutex::new(None),
        })
    }

    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    /// The etcd key for a template key: the prefix and the key joined by
    /// one `/`.
    fn full_key(&self, key: &str) -> String {
        let key = super::normalize_key(key);
        if self.prefix.is_empty() {
            key.to_string()
        } else if self.prefix.ends_with('/') {
            format!("{}{key}", self.prefix)
        } else if key.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The etcd folder holding everything under `prefix`.
    fn folder(&self, prefix: &str) -> String {
        let full = self.full_key(prefix);
        if full.is_empty() || full.ends_with('/') {
            full
        } else {
            format!("{full}/")
        }
    }

    /// An etcd key back to the template's key space.
    fn relative_key(&self, etcd_key: &str) -> Option<String> {
        let base = if self.prefix.is_empty() || self.prefix.ends_with('/') {
            self.prefix.clone()
        } else {
            format!("{}/", self.prefix)
        };
        etcd_key
            .strip_prefix(&base)
            .map(|k| super::normalize_key(k).to_string())
    }

    fn decode(&self, kv: &Kv) -> Result<(String, String)> {
        let key = B64
            .decode(&kv.key)
            .context("etcd sent a key that is not base64")?;
        let key = String::from_utf8(key).map_err(|e| {
            anyhow!(
                "a key under {:?} is not UTF-8: {:?}",
                self.prefix,
                String::from_utf8_lossy(e.as_bytes())
            )
        })?;
        let value = B64
            .decode(&kv.value)
            .context("etcd sent a value that is not base64")?;
        let value = String::from_utf8(value)
            .map_err(|_| anyhow!("the value of key {key:?} is not UTF-8 text"))?;
        Ok((key, value))
    }

    /// One range read at the snapshot's revision (the first read of an
    /// empty snapshot sets it): the keys and values, the revision they are
    /// valid at, and whether `limit` left keys out. A compacted pin drops
    /// the snapshot and reads at the current revision.
    fn read(&self, key: &[u8], range_end: Option<&[u8]>, limit: Option<usize>) -> Result<Read> {
        let pinned = self.lock().revision;
        let (resp, at) = match runtime::block_on(self.client.range(key, range_end, pinned, limit)) {
            Err(e) if pinned.is_some() && EtcdError::is_compacted(&e) => {
                self.lock().clear();
                let resp = runtime::block_on(self.client.range(key, range_end, None, limit))?;
                let at = resp.header.revision;
                (resp, at)
            }
            // etcd's header names the current revision, not the one read.
            Ok(resp) => {
                let at = pinned.unwrap_or(resp.header.revision);
                (resp, at)
            }
            Err(e) => return Err(e),
        };
        {
            let mut cache = self.lock();
            if cache.revision.is_none() {
                cache.revision = Some(at);
            }
        }
        let kvs = resp
            .kvs
            .iter()
            .map(|kv| self.decode(kv))
            .collect::<Result<_>>()?;
        Ok(Read {
            kvs,
            at,
            more: resp.more,
        })
    }

    /// Reads a folder above `full` whole when several of its keys missed
    /// the snapshot (the widest of at most [`GROUP_LEVELS`] such folders
    /// holding at most [`GROUP_LIMIT`] keys): the key's value when it did.
    fn read_grouped(&self, full: &str) -> Result<Option<Option<String>>> {
        let base = self.folder("");
        let candidates: Vec<String> = {
            let mut cache = self.lock();
            let mut found = Vec::new();
            for (i, _) in full.match_indices('/').rev().take(GROUP_LEVELS) {
                let folder = &full[..=i];
                if folder.len() <= base.len() {
                    break;
                }
                let n = cache.misses.entry(folder.to_string()).or_default();
                *n += 1;
                if *n >= GROUP_AFTER && !cache.too_big.contains(folder) {
                    found.push(folder.to_string());
                }
            }
            found
        };
        // The widest first: one read for a whole fan of folders.
        for folder in candidates.into_iter().rev() {
            let (key, end) = prefix_range(&folder);
            let count = runtime::block_on(self.client.count(&key, &end))?;
            if count > u64::try_from(GROUP_LIMIT).unwrap_or(u64::MAX) {
                self.lock().too_big.insert(folder);
                continue;
            }
            let Read { kvs, at, more } = self.read(&key, Some(&end), Some(GROUP_LIMIT))?;
            if more {
                self.lock().too_big.insert(folder);
                continue;
            }
            tracing::debug!(source = %self.name, "read {folder:?} whole: {} keys", kvs.len());
            let value = kvs.iter().find(|(k, _)| k == full).map(|(_, v)| v.clone());
            self.lock().insert_folder(folder, kvs, at);
            return Ok(Some(value));
        }
        Ok(None)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, cache::Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_position(&self, next: i64) {
        *self
            .watch_position
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(next);
    }

    /// Where a new watch starts: the earlier of what the last snapshot read
    /// (+ 1) and where the previous watch stood. Replaying a change twice
    /// costs a render whose output is unchanged; skipping one loses it.
    fn watch_start(&self) -> i64 {
        let snapshot = self.lock().revision.map(|r| r + 1);
        let position = *self
            .watch_position
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match (snapshot, position) {
            (Some(s), Some(p)) => s.min(p),
            (Some(s), None) => s,
            (None, Some(p)) => p,
            (None, None) => 0,
        }
    }
}

impl Source for EtcdSource {
    fn describe(&self) -> String {
        format!("etcd {}", self.client.describe_endpoints())
    }

    /// Brings the snapshot forward by what the watch saw since the last
    /// batch; what it cannot vouch for is dropped and read again.
    fn refresh(&self) {
        self.lock().advance();
    }

    fn requests(&self) -> Option<u64> {
        Some(self.client.requests.load(Ordering::Relaxed))
    }

    /// Watches from the revision the last snapshot read + 1: every change
    /// after what the templates saw is delivered.
    fn watch(
        self: std::sync::Arc<Self>,
        _name: String,
        spec: WatchSpec,
        tx: tokio::sync::mpsc::UnboundedSender<SourceEvent>,
    ) -> Option<WatchFuture> {
        let start = self.watch_start();
        Some(Box::pin(
            async move { self.watch_from(&spec, start, &tx).await },
        ))
    }

    fn get(&self, key: &str) -> Result<Option<String>> {
        let full = self.full_key(key);
        if let Some(value) = self.lock().get(&full) {
            return Ok(value);
        }
        if let Some(value) = self.read_grouped(&full)? {
            return Ok(value);
        }
        let Read { kvs, at, .. } = self.read(full.as_bytes(), None, None)?;
        let value = kvs.into_iter().next().map(|(_, v)| v);
        self.lock().insert_key(full, value.clone(), at);
        Ok(value)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let folder = self.folder(prefix);
        let relative = |kvs: &[(String, String)]| -> Vec<(String, String)> {
            let keys: BTreeMap<String, String> = kvs
                .iter()
                .filter_map(|(k, v)| {
                    let rel = self.relative_key(k).filter(|r| !r.is_empty())?;
                    Some((rel, v.clone()))
                })
                .collect();
            keys.into_iter().collect()
        };
        if let Some(kvs) = self.lock().list(&folder) {
            return Ok(relative(&kvs));
        }
        let (key, end) = prefix_range(&folder);
        let Read { kvs, at, .. } = self.read(&key, Some(&end), None)?;
        let out = relative(&kvs);
        self.lock().insert_folder(folder, kvs, at);
        Ok(out)
    }
}
