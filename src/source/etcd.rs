//! etcd v3 through its HTTP/JSON gateway (etcd 3.4 and 3.5).
//!
//! The gateway speaks gRPC messages as JSON: keys and values are base64,
//! 64-bit numbers are strings, and empty fields are omitted (a range with
//! no match has no `kvs`, a PUT event has no `type`). Prefixes are read with
//! one range request each (`range_end` = the prefix with its last byte
//! incremented), so a template looping over 10,000 keys costs one request.
//!
//! Reads within one snapshot are pinned to the revision of the first read,
//! so a template never mixes two states of the store, and a watch started
//! at that revision + 1 cannot miss a change made after the render read.
//!
//! Auth: a user and password are exchanged for a token that goes raw in
//! `Authorization` (no "Bearer"). Tokens expire and die with an etcd
//! restart; a 401 or gRPC code 16 re-authenticates once and retries.
//! Several endpoints are tried in turn; the one that answered is used first
//! next time.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::{Source, SourceEvent, WatchFuture, WatchSpec};
use crate::runtime::{self, Backoff, Tls};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The default request timeout. A bogus token can make the gateway hang
/// forever, so nothing waits without a bound.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EtcdConfig {
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
        }
    }
}

// ---------------------------------------------------------------------------
// Wire types. Every field may be missing.

#[derive(Debug, Default, Deserialize)]
struct Header {
    #[serde(default, deserialize_with = "de_i64")]
    revision: i64,
}

#[derive(Debug, Deserialize)]
struct Kv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "de_i64")]
    mod_revision: i64,
}

#[derive(Debug, Default, Deserialize)]
struct RangeResponse {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    kvs: Vec<Kv>,
    #[serde(default)]
    more: bool,
}

#[derive(Debug, Deserialize)]
struct GatewayError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    error: String,
}

#[derive(Debug, Deserialize)]
struct AuthResponse {
    #[serde(default)]
    token: String,
}

#[derive(Debug, Deserialize)]
struct WatchLine {
    result: Option<WatchResult>,
    error: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct WatchResult {
    #[serde(default)]
    header: Header,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default, deserialize_with = "de_i64")]
    compact_revision: i64,
    #[serde(default)]
    events: Vec<WatchEvent>,
}

#[derive(Debug, Deserialize)]
struct WatchEvent {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    kv: Option<Kv>,
}

fn de_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        S(String),
        N(i64),
    }
    match Num::deserialize(d)? {
        Num::S(s) => s.parse().map_err(serde::de::Error::custom),
        Num::N(n) => Ok(n),
    }
}

// ---------------------------------------------------------------------------

/// What went wrong talking to etcd, when the caller branches on it.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The store compacted the revision we asked for.
    #[error("revision {0} has been compacted")]
    Compacted(i64),
    /// Permission denied or bad credentials: retrying will not help.
    #[error("{0}")]
    Denied(String),
}

/// A client for one etcd cluster.
#[derive(Debug)]
pub struct EtcdClient {
    http: reqwest::Client,
    /// The bound on every request but the watch stream.
    timeout: Duration,
    endpoints: Vec<String>,
    preferred: AtomicUsize,
    credentials: Option<(String, String)>,
    token: Mutex<Option<String>>,
    /// Requests sent, for tests and benchmarks.
    pub requests: AtomicU64,
}

impl EtcdClient {
    pub fn new(config: &EtcdConfig) -> Result<EtcdClient> {
        if config.endpoints.is_empty() {
            bail!("no etcd endpoints given");
        }
        let mut endpoints = Vec::new();
        for e in &config.endpoints {
            let e = e.trim_end_matches('/');
            let url = if e.contains("://") {
                e.to_string()
            } else {
                format!("http://{e}")
            };
            reqwest::Url::parse(&url).with_context(|| format!("invalid etcd endpoint {e:?}"))?;
            endpoints.push(url);
        }
        let password = match (&config.password, &config.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read password_file {}", f.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            (None, None) => None,
        };
        let credentials = match (&config.username, password) {
            (Some(u), Some(p)) => Some((u.clone(), p)),
            (Some(u), None) => bail!(
                "etcd user {u:?} has no password (password, password_file or ETCDCTL_USER=user:password)"
            ),
            (None, Some(_)) => bail!("an etcd password was given without a username"),
            (None, None) => None,
        };
        Ok(EtcdClient {
            // One client (one pool, one TLS setup) for reads and the watch
            // stream; reads carry their own timeout.
            http: runtime::http_client(&config.tls, config.timeout, true)?,
            timeout: config.timeout,
            endpoints,
            preferred: AtomicUsize::new(0),
            credentials,
            token: Mutex::new(None),
            requests: AtomicU64::new(0),
        })
    }

    fn endpoint_order(&self) -> Vec<usize> {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        (0..n).map(|i| (first + i) % n).collect()
    }

    fn current_token(&self) -> Option<String> {
        self.token.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// POSTs a JSON request to every endpoint in turn until one answers.
    /// Authenticates first when credentials are set, and once more when
    /// the token is refused.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T> {
        let mut reauthenticated = false;
        loop {
            if self.credentials.is_some() && self.current_token().is_none() {
                self.authenticate().await?;
            }
            match self.post(path, body, self.current_token().as_deref()).await {
                Err(e) if !reauthenticated && self.credentials.is_some() && is_auth_expired(&e) => {
                    tracing::debug!("etcd token refused; authenticating again");
                    *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    reauthenticated = true;
                }
                other => return other,
            }
        }
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        token: Option<&str>,
    ) -> Result<T> {
        let mut last_error = None;
        for i in self.endpoint_order() {
            let url = format!("{}{path}", self.endpoints[i]);
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mut req = self.http.post(&url).json(body).timeout(self.timeout);
            if let Some(t) = token {
                req = req.header(reqwest::header::AUTHORIZATION, t);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    // Connection-level failure: try the next endpoint.
                    last_error = Some(
                        anyhow!("{}", runtime::describe_reqwest(&e))
                            .context(format!("etcd at {} did not answer", self.endpoints[i])),
                    );
                    continue;
                }
            };
            self.preferred.store(i, Ordering::Relaxed);
            let status = resp.status();
            let bytes = resp
                .bytes()
                .await
                .with_context(|| format!("reading the answer of etcd at {}", self.endpoints[i]))?;
            if status.is_success() {
                return serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "etcd at {} sent a reply stencil cannot read",
                        self.endpoints[i]
                    )
                });
            }
            return Err(gateway_error(status, &bytes, &self.endpoints[i]));
        }
        Err(last_error.unwrap_or_else(|| anyhow!("no etcd endpoint")))
    }

    async fn authenticate(&self) -> Result<()> {
        let Some((user, password)) = &self.credentials else {
            return Ok(());
        };
        let resp: AuthResponse = self
            .post(
                "/v3/auth/authenticate",
                &json!({"name": user, "password": password}),
                None,
            )
            .await
            .with_context(|| format!("cannot authenticate to etcd as user {user:?}"))?;
        if resp.token.is_empty() {
            bail!("etcd gave no token for user {user:?}: is auth enabled on the server?");
        }
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(resp.token);
        Ok(())
    }

    /// Reads `[key, range_end)` (or one key without `range_end`), at
    /// `revision` when given.
    async fn range(
        &self,
        key: &[u8],
        range_end: Option<&[u8]>,
        revision: Option<i64>,
    ) -> Result<RangeResponse> {
        let mut body = json!({ "key": B64.encode(key) });
        if let Some(end) = range_end {
            body["range_end"] = json!(B64.encode(end));
        }
        if let Some(rev) = revision {
            body["revision"] = json!(rev.to_string());
        }
        let resp: RangeResponse = self.call("/v3/kv/range", &body).await?;
        if resp.more {
            bail!(
                "etcd returned a partial range; stencil does not set a limit, so this should not happen"
            );
        }
        Ok(resp)
    }

    /// Any gateway call, for tests and tools (user and role setup).
    pub async fn raw(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        self.call(path, body).await
    }

    /// Writes a key (for tests and tools; stencil itself only reads).
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<i64> {
        let resp: RangeResponse = self
            .call(
                "/v3/kv/put",
                &json!({"key": B64.encode(key), "value": B64.encode(value)}),
            )
            .await?;
        Ok(resp.header.revision)
    }

    /// Deletes a key (for tests and tools).
    pub async fn delete(&self, key: &[u8]) -> Result<i64> {
        let resp: RangeResponse = self
            .call("/v3/kv/deleterange", &json!({"key": B64.encode(key)}))
            .await?;
        Ok(resp.header.revision)
    }

    /// Compacts history up to `revision` (for tests).
    pub async fn compact(&self, revision: i64) -> Result<()> {
        let _: serde_json::Value = self
            .call(
                "/v3/kv/compaction",
                &json!({"revision": revision.to_string(), "physical": true}),
            )
            .await?;
        Ok(())
    }
}

fn gateway_error(status: reqwest::StatusCode, body: &[u8], endpoint: &str) -> anyhow::Error {
    let parsed: Option<GatewayError> = serde_json::from_slice(body).ok();
    let (code, message) = match parsed {
        Some(g) => (
            g.code,
            if g.message.is_empty() {
                g.error
            } else {
                g.message
            },
        ),
        None => (0, String::from_utf8_lossy(body).chars().take(200).collect()),
    };
    if message.contains("required revision has been compacted") {
        return EtcdError::Compacted(0).into();
    }
    let text = format!("etcd at {endpoint} answered {status}: {message} (code {code})");
    match (status.as_u16(), code) {
        (403, _) | (_, 7) => anyhow::Error::new(EtcdError::Denied(format!(
            "{text}: the user lacks permission for this key or prefix"
        ))),
        (400, 3) if message.contains("user name is empty") => {
            anyhow::Error::new(EtcdError::Denied(format!(
                "{text}: etcd has authentication enabled; give a username and password \
             (username and password_file in the source, or ETCDCTL_USER=user:password)"
            )))
        }
        (400, 3) if message.contains("authentication failed") => anyhow::Error::new(
            EtcdError::Denied(format!("{text}: wrong username or password")),
        ),
        (401, _) | (_, 16) => anyhow!(AuthExpired(text)),
        _ => anyhow!(text),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct AuthExpired(String);

fn is_auth_expired(e: &anyhow::Error) -> bool {
    e.downcast_ref::<AuthExpired>().is_some()
}

/// The end of the range holding every key that starts with `prefix`.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or the prefix was empty): to the end of the
    // key space.
    vec![0]
}

// ---------------------------------------------------------------------------
// The source.

/// Reads cached for one snapshot.
#[derive(Debug, Default)]
struct Cache {
    /// The revision every read of this snapshot is pinned to.
    revision: Option<i64>,
    /// Folder (etcd key ending in `/`, or "" for the whole source) -> its
    /// keys (relative to the source) and values.
    folders: HashMap<Vec<u8>, BTreeMap<String, String>>,
    keys: HashMap<Vec<u8>, Option<String>>,
}

#[derive(Debug)]
pub struct EtcdSource {
    name: String,
    client: EtcdClient,
    prefix: String,
    cache: Mutex<Cache>,
    /// The revision the running (or last) watch would resume from, so a
    /// restarted watch never skips what the old one had not delivered.
    watch_position: Mutex<Option<i64>>,
}

impl EtcdSource {
    pub fn new(name: &str, config: &EtcdConfig) -> Result<EtcdSource> {
        Ok(EtcdSource {
            name: name.to_string(),
            client: EtcdClient::new(config)?,
            prefix: config.prefix.clone(),
            cache: Mutex::new(Cache::default()),
            watch_position: Mutex::new(None),
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

    /// One range read at the snapshot's revision; the first read of a
    /// snapshot sets it. A compacted pin is dropped and the read repeated
    /// at the current revision.
    fn read(&self, key: &[u8], range_end: Option<&[u8]>) -> Result<Vec<(String, String)>> {
        let pinned = self.lock().revision;
        let resp = match runtime::block_on(self.client.range(key, range_end, pinned)) {
            Err(e)
                if pinned.is_some()
                    && e.downcast_ref::<EtcdError>()
                        .is_some_and(|e| matches!(e, EtcdError::Compacted(_))) =>
            {
                self.lock().revision = None;
                runtime::block_on(self.client.range(key, range_end, None))?
            }
            other => other?,
        };
        {
            let mut cache = self.lock();
            if cache.revision.is_none() {
                cache.revision = Some(resp.header.revision);
            }
        }
        resp.kvs.iter().map(|kv| self.decode(kv)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
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
        let snapshot = self.snapshot_revision().map(|r| r + 1);
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

    /// The revision the current snapshot read at, if it read anything.
    pub fn snapshot_revision(&self) -> Option<i64> {
        self.lock().revision
    }
}

impl Source for EtcdSource {
    fn describe(&self) -> String {
        format!("etcd {}", self.client.endpoints.join(","))
    }

    fn refresh(&self) {
        *self.lock() = Cache::default();
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
        {
            let cache = self.lock();
            let rel = self.relative_key(&full).unwrap_or_default();
            for (folder, keys) in &cache.folders {
                if full.as_bytes().starts_with(folder) {
                    return Ok(keys.get(&rel).cloned());
                }
            }
            if let Some(v) = cache.keys.get(full.as_bytes()) {
                return Ok(v.clone());
            }
        }
        let value = self
            .read(full.as_bytes(), None)?
            .into_iter()
            .next()
            .map(|(_, v)| v);
        self.lock().keys.insert(full.into_bytes(), value.clone());
        Ok(value)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let folder = self.folder(prefix);
        if let Some(keys) = self.lock().folders.get(folder.as_bytes()) {
            return Ok(keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        }
        let (key, end) = if folder.is_empty() {
            (vec![0u8], vec![0u8])
        } else {
            (
                folder.clone().into_bytes(),
                prefix_range_end(folder.as_bytes()),
            )
        };
        let mut keys = BTreeMap::new();
        for (k, v) in self.read(&key, Some(&end))? {
            if let Some(rel) = self.relative_key(&k).filter(|r| !r.is_empty()) {
                keys.insert(rel, v);
            }
        }
        let out = keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        self.lock().folders.insert(folder.into_bytes(), keys);
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Watching.

impl EtcdSource {
    /// Watches `spec` from `start_revision`, sending changes on `tx` until
    /// it is closed.
    ///
    /// One stream covers everything: it watches the longest common prefix
    /// of the watched keys and filters here, rather than one stream per key
    /// as confd does. A broken stream is resumed from the last seen
    /// revision + 1 with backoff, so no change is lost; a compacted start
    /// revision becomes a [`SourceEvent::Resync`]. A watch etcd cancels for
    /// lack of permission ends with an error: never silence.
    pub async fn watch_from(
        &self,
        spec: &WatchSpec,
        start_revision: i64,
        tx: &tokio::sync::mpsc::UnboundedSender<SourceEvent>,
    ) -> Result<()> {
        let mut wanted: Vec<String> = spec.keys.iter().map(|k| self.full_key(k)).collect();
        wanted.extend(spec.prefixes.iter().map(|p| self.folder(p)));
        let common = common_prefix(&wanted);
        let (key, end) = if common.is_empty() {
            (vec![0u8], vec![0u8])
        } else {
            (
                common.clone().into_bytes(),
                prefix_range_end(common.as_bytes()),
            )
        };
        let source = self.name.clone();
        // 0: from now (the revision etcd reports when the watch is created).
        let mut next = start_revision.max(0);
        let mut backoff = Backoff::default();
        let mut failing = false;
        loop {
            let outcome = self
                .watch_once(&key, &end, &mut next, &wanted, tx, &mut failing)
                .await;
            let retry = match outcome {
                Ok(WatchEnd::ReceiverGone) => return Ok(()),
                Ok(WatchEnd::Compacted(rev)) => {
                    tracing::warn!(source = %source, "etcd compacted history past revision {next}; reading everything again");
                    next = rev.max(next);
                    self.set_position(next);
                    if tx
                        .send(SourceEvent::Resync {
                            source: source.clone(),
                        })
                        .is_err()
                    {
                        return Ok(());
                    }
                    backoff.reset();
                    continue;
                }
                Ok(WatchEnd::Disconnected) => "the watch stream ended".to_string(),
                Err(e)
                    if e.downcast_ref::<EtcdError>()
                        .is_some_and(|e| matches!(e, EtcdError::Denied(_))) =>
                {
                    return Err(e.context(format!("etcd watch of source {source:?} was refused")));
                }
                Err(e) => format!("{e:#}"),
            };
            if tx.is_closed() {
                return Ok(());
            }
            let delay = backoff.next_delay();
            tracing::warn!(source = %source, "etcd watch: {retry}; resuming from revision {next} in {delay:?}");
            if !failing {
                failing = true;
                let _ = tx.send(SourceEvent::Failed {
                    source: source.clone(),
                    error: retry,
                });
            }
            tokio::time::sleep(delay).await;
        }
    }

    async fn watch_once(
        &self,
        key: &[u8],
        end: &[u8],
        next: &mut i64,
        wanted: &[String],
        tx: &tokio::sync::mpsc::UnboundedSender<SourceEvent>,
        failing: &mut bool,
    ) -> Result<WatchEnd> {
        use futures_util::StreamExt;

        let client = &self.client;
        if client.credentials.is_some() && client.current_token().is_none() {
            client.authenticate().await?;
        }
        let mut body = json!({"create_request": {
            "key": B64.encode(key),
            "range_end": B64.encode(end),
        }});
        if *next > 0 {
            body["create_request"]["start_revision"] = json!(next.to_string());
        }
        let mut last_error = None;
        let mut response = None;
        for i in client.endpoint_order() {
            client.requests.fetch_add(1, Ordering::Relaxed);
            let mut req = client
                .http
                .post(format!("{}/v3/watch", client.endpoints[i]))
                .json(&body);
            if let Some(t) = client.current_token() {
                req = req.header(reqwest::header::AUTHORIZATION, t);
            }
            // The response head must come within the request timeout even
            // though the body streams forever.
            match tokio::time::timeout(client.timeout, req.send()).await {
                Ok(Ok(r)) => {
                    client.preferred.store(i, Ordering::Relaxed);
                    response = Some((r, i));
                    break;
                }
                Ok(Err(e)) => {
                    last_error = Some(anyhow!(
                        "etcd at {}: {}",
                        client.endpoints[i],
                        runtime::describe_reqwest(&e)
                    ))
                }
                Err(_) => {
                    last_error = Some(anyhow!(
                        "etcd at {} did not answer the watch in time",
                        client.endpoints[i]
                    ))
                }
            }
        }
        let Some((resp, i)) = response else {
            return Err(last_error.unwrap_or_else(|| anyhow!("no etcd endpoint")));
        };
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp.bytes().await.unwrap_or_default();
            let e = gateway_error(status, &bytes, &client.endpoints[i]);
            if is_auth_expired(&e) {
                *client.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            return Err(e);
        }
        if std::mem::take(failing) {
            let _ = tx.send(SourceEvent::Up {
                source: self.name.clone(),
            });
        }
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                return Ok(WatchEnd::Disconnected);
            };
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let parsed: WatchLine = serde_json::from_slice(&line).with_context(|| {
                    format!(
                        "etcd at {} sent a watch message stencil cannot read",
                        client.endpoints[i]
                    )
                })?;
                if let Some(err) = parsed.error {
                    let text = err.to_string();
                    if text.contains("invalid auth token") || text.contains("\"grpc_code\":16") {
                        *client.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    }
                    bail!("etcd watch stream error: {text}");
                }
                let Some(result) = parsed.result else {
                    continue;
                };
                if result.canceled {
                    if result.compact_revision > 0 {
                        return Ok(WatchEnd::Compacted(result.compact_revision));
                    }
                    let reason = result.cancel_reason;
                    if reason.contains("PermissionDenied") || reason.contains("permission denied") {
                        return Err(EtcdError::Denied(format!(
                            "etcd canceled the watch: {reason}"
                        ))
                        .into());
                    }
                    if reason.contains("invalid auth token") || reason.contains("Unauthenticated") {
                        *client.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    }
                    bail!("etcd canceled the watch: {reason}");
                }
                if result.created {
                    tracing::debug!(source = %self.name, "etcd watch created at revision {}", result.header.revision);
                    if *next == 0 {
                        // Watching "from now": now has a number, and a
                        // reconnect must resume from it, not from a later now.
                        *next = result.header.revision + 1;
                        self.set_position(*next);
                    }
                }
                let mut changed = Vec::new();
                let mut revision = 0;
                for ev in &result.events {
                    let Some(kv) = &ev.kv else { continue };
                    revision = revision.max(kv.mod_revision);
                    let Ok(k) = B64.decode(&kv.key) else { continue };
                    let k = String::from_utf8_lossy(&k).into_owned();
                    let _ = &ev.kind;
                    if wanted.iter().any(|w| covers(w, &k)) {
                        if let Some(rel) = self.relative_key(&k) {
                            changed.push(rel);
                        }
                    }
                }
                if revision > 0 {
                    *next = revision + 1;
                    self.set_position(*next);
                }
                if !changed.is_empty() {
                    changed.sort();
                    changed.dedup();
                    let event = SourceEvent::Changed {
                        source: self.name.clone(),
                        keys: changed,
                    };
                    if tx.send(event).is_err() {
                        return Ok(WatchEnd::ReceiverGone);
                    }
                }
            }
            if tx.is_closed() {
                return Ok(WatchEnd::ReceiverGone);
            }
        }
        Ok(WatchEnd::Disconnected)
    }
}

enum WatchEnd {
    ReceiverGone,
    Disconnected,
    Compacted(i64),
}

/// Whether a watched key or folder covers an etcd key: equal, or the key is
/// inside the folder.
fn covers(watched: &str, key: &str) -> bool {
    key == watched
        || (key.starts_with(watched)
            && (watched.ends_with('/') || key.as_bytes().get(watched.len()) == Some(&b'/')))
}

fn common_prefix(keys: &[String]) -> String {
    let Some(first) = keys.first() else {
        return String::new();
    };
    let mut len = first.len();
    for k in &keys[1..] {
        len = len.min(
            first
                .bytes()
                .zip(k.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    let mut end = len;
    while !first.is_char_boundary(end) {
        end -= 1;
    }
    first[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_increments_the_last_byte() {
        assert_eq!(prefix_range_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_range_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_range_end(b""), vec![0]);
    }

    #[test]
    fn common_prefix_of_watched_keys() {
        let keys = vec![
            "/apps/web/db/host".to_string(),
            "/apps/web/upstreams/".to_string(),
        ];
        assert_eq!(common_prefix(&keys), "/apps/web/");
        assert!(covers("/apps/web/upstreams", "/apps/web/upstreams/a"));
        assert!(!covers("/apps/web/up", "/apps/web/upstreams/a"));
    }

    #[test]
    fn watch_messages_with_omitted_fields_parse() {
        let line = br#"{"result":{"header":{"revision":"7"},"events":[{"kv":{"key":"YS94","mod_revision":"7","value":"MQ=="}},{"type":"DELETE","kv":{"key":"YS95","mod_revision":"7"}}]}}"#;
        let parsed: WatchLine = serde_json::from_slice(line).unwrap();
        let result = parsed.result.unwrap();
        assert_eq!(result.header.revision, 7);
        assert_eq!(result.events.len(), 2);
        assert_eq!(result.events[1].kind.as_deref(), Some("DELETE"));
    }
}
