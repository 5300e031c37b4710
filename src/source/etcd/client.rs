//! The etcd v3 HTTP/JSON gateway: requests, auth, range reads.
//!
//! The gateway speaks gRPC messages as JSON: keys and values are base64,
//! 64-bit numbers are strings, and empty fields are omitted (a range with
//! no match has no `kvs`, a PUT event has no `type`), so every field of the
//! wire types below may be missing.
//!
//! Auth: a user and password are exchanged for a token that goes raw in
//! `Authorization` (no "Bearer"). Tokens expire and die with an etcd
//! restart; a 401 or gRPC code 16 re-authenticates once and retries.
//! Several endpoints are tried in turn; the one that answered is used first
//! next time.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::EtcdConfig;
use super::members::{Endpoint, Members};
use crate::runtime;
use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

pub(super) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

// ---------------------------------------------------------------------------
// Wire types.

#[derive(Debug, Default, Deserialize)]
pub(super) struct Header {
    #[serde(default, deserialize_with = "de_i64")]
    pub(super) revision: i64,
}

#[derive(Debug, Deserialize)]
pub(super) struct Kv {
    #[serde(default)]
    pub(super) key: String,
    #[serde(default)]
    pub(super) value: String,
    #[serde(default, deserialize_with = "de_i64")]
    pub(super) mod_revision: i64,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RangeResponse {
    #[serde(default)]
    pub(super) header: Header,
    #[serde(default)]
    pub(super) kvs: Vec<Kv>,
    #[serde(default)]
    pub(super) more: bool,
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

#[derive(Deserialize)]
struct AuthResponse {
    #[serde(default)]
    token: String,
}

/// A 64-bit number, which the gateway writes as a string.
pub(super) fn de_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
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
pub(super) enum EtcdError {
    /// The store compacted the revision we asked for.
    #[error("revision {0} has been compacted")]
    Compacted(i64),
    /// Permission denied or bad credentials: retrying will not help.
    #[error("{0}")]
    Denied(String),
}

impl EtcdError {
    pub(super) fn is_compacted(e: &anyhow::Error) -> bool {
        matches!(e.downcast_ref(), Some(EtcdError::Compacted(_)))
    }

    pub(super) fn is_denied(e: &anyhow::Error) -> bool {
        matches!(e.downcast_ref(), Some(EtcdError::Denied(_)))
    }
}

/// The token was refused (expired, or etcd restarted): authenticate again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct AuthExpired(String);

fn is_auth_expired(e: &anyhow::Error) -> bool {
    e.downcast_ref::<AuthExpired>().is_some()
}

/// A client for one etcd cluster.
pub struct EtcdClient {
    http: reqwest::Client,
    /// The bound on every request but the watch stream.
    timeout: Duration,
    /// The most bytes one reply or one watch message may hold.
    max_response_size: usize,
    pub(super) members: Members,
    credentials: Option<(String, String)>,
    token: Mutex<Option<String>>,
    /// Requests sent, for tests and benchmarks.
    pub requests: AtomicU64,
}

/// Without the password and the token: a Debug print must not leak them.
impl fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.describe_endpoints())
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

impl EtcdClient {
    pub fn new(config: &EtcdConfig) -> Result<EtcdClient> {
        if config.endpoints.is_empty() {
            bail!("no etcd endpoints given");
        }
        let endpoints: Vec<Endpoint> = config
            .endpoints
            .iter()
            .map(|e| Endpoint::parse(e))
            .collect::<Result<_>>()?;
        Ok(EtcdClient {
            // One client (one pool, one TLS setup) for reads and the watch
            // stream; reads carry their own timeout.
            http: runtime::http_client(&config.tls, config.timeout, true)?,
            timeout: config.timeout,
            max_response_size: config.max_response_size,
            members: Members::new(endpoints),
            credentials: credentials(config)?,
            token: Mutex::new(None),
            requests: AtomicU64::new(0),
        })
    }

    /// The bound on every request but the watch stream.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(super) fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// The most bytes one reply or one watch message may hold.
    pub(super) fn max_response_size(&self) -> usize {
        self.max_response_size
    }

    /// The endpoints as the user wrote them, for messages.
    pub(super) fn describe_endpoints(&self) -> String {
        let shown: Vec<&str> = self
            .members
            .endpoints
            .iter()
            .map(|e| e.shown.as_str())
            .collect();
        shown.join(",")
    }

    fn current_token(&self) -> Option<String> {
        self.token.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Drops a token etcd refused, so the next call authenticates again.
    pub(super) fn forget_token(&self) {
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Authenticates when credentials are set and no token is held.
    async fn ensure_token(&self) -> Result<()> {
        if self.credentials.is_some() && self.current_token().is_none() {
            self.authenticate().await?;
        }
        Ok(())
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
            self.ensure_token().await?;
            match self.post(path, body, self.current_token().as_deref()).await {
                Err(e) if !reauthenticated && self.credentials.is_some() && is_auth_expired(&e) => {
                    tracing::debug!("etcd token refused; authenticating again");
                    self.forget_token();
                    reauthenticated = true;
                }
                other => return other,
            }
        }
    }

    /// POSTs to the members in turn until one answers. A member that does
    /// not answer within the request timeout, or answers that it has no
    /// leader, is given up on and the next one asked.
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        token: Option<&str>,
    ) -> Result<T> {
        let mut last_error = None;
        for i in self.members.order() {
            let shown = self.members.shown(i);
            let (status, bytes) = match self.send(i, path, body, token, self.timeout).await {
                Ok(answer) => answer,
                // It answered: too much.
                Err(e) if e.is::<runtime::TooLarge>() => return Err(e),
                Err(e) => {
                    self.give_up(i, &format!("{e:#}"));
                    last_error = Some(e.context(format!("etcd at {shown} did not answer")));
                    continue;
                }
            };
            if is_unavailable(status, &bytes) {
                let e = gateway_error(status, &bytes, shown);
                self.give_up(i, &format!("{e:#}"));
                last_error = Some(e);
                continue;
            }
            self.members.answered(i);
            if status.is_success() {
                return serde_json::from_slice(&bytes)
                    .with_context(|| format!("etcd at {shown} sent a reply stencil cannot read"));
            }
            return Err(gateway_error(status, &bytes, shown));
        }
        Err(last_error.unwrap_or_else(|| anyhow!("no etcd endpoint")))
    }

    /// One request to member `i`, its answer read whole within `timeout`;
    /// an error when the member did not answer.
    async fn send(
        &self,
        i: usize,
        path: &str,
        body: &serde_json::Value,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<(reqwest::StatusCode, Vec<u8>)> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let req = self.request(i, path, body, token);
        let shown = format!("etcd at {}", self.members.shown(i));
        let exchange = async {
            let resp = req
                .send()
                .await
                .map_err(|e| anyhow!("{}", runtime::describe_reqwest(&e)))?;
            let status = resp.status();
            let body = runtime::read_body(resp, self.max_response_size, &shown).await?;
            Ok::<_, anyhow::Error>((status, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(anyhow!("no answer within {timeout:?} (timed out)")),
        }
    }

    /// A POST to member `i`, carrying the token and etcd's require-leader
    /// metadata: the gateway passes `Grpc-Metadata-*` headers on as gRPC
    /// metadata, and a member without a leader then refuses the request
    /// (and cancels the watch) instead of serving stale data or silence.
    fn request(
        &self,
        i: usize,
        path: &str,
        body: &serde_json::Value,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(self.members.endpoints[i].at(path))
            .header("Grpc-Metadata-hasleader", "true")
            .json(body);
        if let Some(t) = token {
            req = req.header(reqwest::header::AUTHORIZATION, t);
        }
        req
    }

    /// Gives up on member `i`, logging it the first time.
    pub(super) fn give_up(&self, i: usize, why: &str) {
        if self.members.give_up(i, why) && self.members.len() > 1 {
            let shown = self.members.shown(i);
            tracing::warn!("etcd member {shown}: {why}; trying the other members first");
        }
    }

    /// Asks member `i` for one key of the range it watches (`key`), within
    /// `timeout`. The read is linearizable, so it passes through the
    /// leader: a member that is frozen, cut off from its leader or cannot
    /// apply fails it. Any other answer (even "permission denied") shows
    /// the member is alive and caught up.
    pub(super) async fn probe(&self, i: usize, key: &[u8], timeout: Duration) -> Result<()> {
        self.ensure_token().await?;
        let body = json!({"key": B64.encode(key), "limit": "1", "keys_only": true});
        let token = self.current_token();
        let (status, bytes) = self
            .send(i, "v3/kv/range", &body, token.as_deref(), timeout)
            .await
            .context("it did not answer a probe")?;
        if is_unavailable(status, &bytes) {
            return Err(gateway_error(status, &bytes, self.members.shown(i)));
        }
        self.members.answered(i);
        Ok(())
    }

    async fn authenticate(&self) -> Result<()> {
        let Some((user, password)) = &self.credentials else {
            return Ok(());
        };
        let resp: AuthResponse = self
            .post(
                "v3/auth/authenticate",
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
    /// `revision` when given, at most `limit` keys when given (then `more`
    /// says whether there were more).
    pub(super) async fn range(
        &self,
        key: &[u8],
        range_end: Option<&[u8]>,
        revision: Option<i64>,
        limit: Option<usize>,
    ) -> Result<RangeResponse> {
        let mut body = json!({ "key": B64.encode(key) });
        if let Some(end) = range_end {
            body["range_end"] = json!(B64.encode(end));
        }
        if let Some(rev) = revision {
            body["revision"] = json!(rev.to_string());
        }
        if let Some(limit) = limit {
            body["limit"] = json!(limit.to_string());
        }
        let resp: RangeResponse = self.call("v3/kv/range", &body).await?;
        if resp.more && limit.is_none() {
            bail!(
                "etcd returned a partial range; stencil does not set a limit, so this should not happen"
            );
        }
        Ok(resp)
    }

    /// How many keys `[key, range_end)` holds now (`count_only`: etcd
    /// counts without sending them).
    pub(super) async fn count(&self, key: &[u8], range_end: &[u8]) -> Result<u64> {
        #[derive(Deserialize)]
        struct Count {
            #[serde(default, deserialize_with = "de_i64")]
            count: i64,
        }
        let body = json!({
            "key": B64.encode(key),
            "range_end": B64.encode(range_end),
            "count_only": true,
        });
        let resp: Count = self.call("v3/kv/range", &body).await?;
        Ok(u64::try_from(resp.count).unwrap_or(0))
    }

    /// Opens a watch stream with the `create_request` `body`, trying the
    /// members in turn; the stream and the index of the member that serves
    /// it.
    ///
    /// The response head must come within the request timeout, though the
    /// body streams forever.
    pub(super) async fn open_watch(
        &self,
        body: &serde_json::Value,
    ) -> Result<(reqwest::Response, usize)> {
        self.ensure_token().await?;
        let mut last_error = None;
        for i in self.members.order() {
            let shown = self.members.shown(i);
            self.requests.fetch_add(1, Ordering::Relaxed);
            let token = self.current_token();
            let req = self.request(i, "v3/watch", body, token.as_deref());
            let error = match tokio::time::timeout(self.timeout, req.send()).await {
                Ok(Ok(resp)) if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                    let bytes = self.error_body(resp, shown).await;
                    gateway_error(reqwest::StatusCode::SERVICE_UNAVAILABLE, &bytes, shown)
                }
                Ok(Ok(resp)) => {
                    self.members.answered(i);
                    let resp = self.check_watch_head(resp, shown).await?;
                    return Ok((resp, i));
                }
                Ok(Err(e)) => anyhow!("etcd at {shown}: {}", runtime::describe_reqwest(&e)),
                Err(_) => anyhow!("etcd at {shown} did not answer the watch in time"),
            };
            self.give_up(i, &format!("{error:#}"));
            last_error = Some(error);
        }
        Err(last_error.unwrap_or_else(|| anyhow!("no etcd endpoint")))
    }

    /// The watch response when its status says the stream is open, else
    /// the gateway's error (dropping a refused token on the way).
    async fn check_watch_head(
        &self,
        resp: reqwest::Response,
        endpoint: &str,
    ) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = self.error_body(resp, endpoint).await;
        let e = gateway_error(status, &bytes, endpoint);
        if is_auth_expired(&e) {
            self.forget_token();
        }
        Err(e)
    }

    /// The body of an error reply, within the size cap and the timeout;
    /// empty when it cannot be read.
    async fn error_body(&self, resp: reqwest::Response, endpoint: &str) -> Vec<u8> {
        let server = format!("etcd at {endpoint}");
        let read = runtime::read_body(resp, self.max_response_size, &server);
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(body)) => body,
            _ => Vec::new(),
        }
    }

    /// Any gateway call, for tests and tools (user and role setup).
    pub async fn raw(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        self.call(path, body).await
    }

    /// Writes a key (for tests and tools; stencil itself only reads).
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<i64> {
        let resp: RangeResponse = self
            .call(
                "v3/kv/put",
                &json!({"key": B64.encode(key), "value": B64.encode(value)}),
            )
            .await?;
        Ok(resp.header.revision)
    }

    /// Deletes a key (for tests and tools).
    pub async fn delete(&self, key: &[u8]) -> Result<i64> {
        let resp: RangeResponse = self
            .call("v3/kv/deleterange", &json!({"key": B64.encode(key)}))
            .await?;
        Ok(resp.header.revision)
    }

    /// Compacts history up to `revision` (for tests).
    pub async fn compact(&self, revision: i64) -> Result<()> {
        let _: serde_json::Value = self
            .call(
                "v3/kv/compaction",
                &json!({"revision": revision.to_string(), "physical": true}),
            )
            .await?;
        Ok(())
    }
}

/// The user and password of `config`, the password read from its file when
/// it is not given.
fn credentials(config: &EtcdConfig) -> Result<Option<(String, String)>> {
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
    match (&config.username, password) {
        (Some(u), Some(p)) => Ok(Some((u.clone(), p))),
        (Some(u), None) => bail!(
            "etcd user {u:?} has no password (password, password_file or ETCDCTL_USER=user:password)"
        ),
        (None, Some(_)) => bail!("an etcd password was given without a username"),
        (None, None) => Ok(None),
    }
}

/// The error a gateway's non-2xx answer means, typed where the caller
/// branches on it (compaction, permission, a refused token).
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

/// Whether an answer says the member cannot serve now (no leader, a
/// request timed out inside etcd): gRPC's Unavailable, which the gateway
/// sends as 503. The next member may serve.
fn is_unavailable(status: reqwest::StatusCode, body: &[u8]) -> bool {
    status == reqwest::StatusCode::SERVICE_UNAVAILABLE
        || serde_json::from_slice::<GatewayError>(body).is_ok_and(|g| g.code == 14)
}
