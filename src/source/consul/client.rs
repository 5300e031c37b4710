//! One Consul agent's KV endpoint (the catalog's is in `catalog`):
//! requests, their URLs, and what the answers mean.
//!
//! The ACL token goes in the `X-Consul-Token` header, marked sensitive, and
//! never in a URL: URLs end up in error messages, the token must not.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use url::Url;

use super::ConsulConfig;
use crate::{runtime, spec::redact_urls};

mod catalog;
pub(super) use catalog::CatalogReply;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One entry of a KV read (only what stencil uses).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Entry {
    pub(super) key: String,
    /// base64; `null` for an empty value.
    #[serde(default)]
    value: Option<String>,
}

impl Entry {
    pub(super) fn bytes(&self) -> Result<Vec<u8>> {
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

    pub(super) fn text(&self) -> Result<String> {
        String::from_utf8(self.bytes()?)
            .map_err(|_| anyhow!("the value of key {:?} is not UTF-8 text", self.key))
    }
}

/// A read's answer: the entries (`None` for a 404), `X-Consul-Index`, and
/// whether the ACLs left entries out (`X-Consul-Results-Filtered-By-ACLs`).
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) index: u64,
    pub(super) entries: Option<Vec<Entry>>,
    /// Consul answers a recursive read with the keys the token may read
    /// (a 404 when none), not a 403, and says so only in this header; it
    /// sends the header only for a request that carried a token
    /// (agent/consul/rpc.go, maskResultsFilteredByACLs).
    pub(super) filtered: bool,
    /// `X-Consul-LastContact`: how long ago the answering server heard
    /// from the leader (0 from the leader itself).
    pub(super) last_contact: Duration,
    /// `X-Consul-KnownLeader`.
    pub(super) known_leader: bool,
}

/// The headers of an answer stencil reads.
struct Meta {
    /// `X-Consul-Index`; None when missing (not a Consul agent).
    index: Option<u64>,
    filtered: bool,
    last_contact: Duration,
    known_leader: bool,
}

/// What went wrong talking to Consul, when the caller branches on it.
#[derive(Debug, thiserror::Error)]
enum ConsulError {
    /// The token may not read this: retrying will not help.
    #[error("{0}")]
    Denied(String),
}

/// An error that ends a watch, as a denial does: the token's rights will
/// not change by asking again.
pub(super) fn refused(message: String) -> anyhow::Error {
    ConsulError::Denied(message).into()
}

/// Whether retrying `e` is pointless: the token may not read the key.
pub(super) fn is_denied(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ConsulError>()
        .is_some_and(|e| matches!(e, ConsulError::Denied(_)))
}

/// A client for one Consul agent.
#[derive(Debug)]
pub(crate) struct ConsulClient {
    http: reqwest::Client,
    /// As configured, normalized: what messages name.
    address: String,
    /// `address` parsed: what request URLs are built on.
    base: Url,
    /// Marked sensitive, so it is left out of `Debug` output.
    token: Mutex<Option<HeaderValue>>,
    /// `token_file`, re-read when it changes (a rotated token), with the
    /// modification time and length it had when last read.
    token_file: Option<(PathBuf, Mutex<Option<Stamp>>)>,
    datacenter: Option<String>,
    stale: bool,
    max_stale: Option<Duration>,
    timeout: Duration,
    max_response_size: usize,
    /// Requests sent, for tests and benchmarks.
    requests: AtomicU64,
}

impl ConsulClient {
    pub(super) fn new(config: &ConsulConfig) -> Result<ConsulClient> {
        let (address, base) = normalize_address(&config.address)?;
        Ok(ConsulClient {
            // One client (one pool, one TLS setup) for reads and blocking
            // queries; every exchange is bounded by its own timeout below.
            http: runtime::http_client(&config.tls, config.timeout, true)?,
            address,
            base,
            token: Mutex::new(token_header(config)?),
            token_file: config.token_file.clone().map(|f| {
                let stamp = stamp(&f);
                (f, Mutex::new(stamp))
            }),
            datacenter: config.datacenter.clone().filter(|d| !d.is_empty()),
            stale: config.stale || config.max_stale.is_some(),
            max_stale: config.max_stale,
            timeout: config.timeout,
            max_response_size: config.max_response_size,
            requests: AtomicU64::new(0),
        })
    }

    pub(super) fn address(&self) -> &str {
        &self.address
    }

    pub(super) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Whether `address` is one stencil can use, before anything connects.
    pub(crate) fn check_address(address: &str) -> Result<()> {
        normalize_address(address).map(|_| ())
    }

    /// `GET /v1/kv/<key>`, with `?recurse` for a folder, and as a blocking
    /// query from `index` for at most `wait` when `block` is given.
    pub(super) async fn read(
        &self,
        key: &str,
        recurse: bool,
        block: Option<(u64, Duration)>,
    ) -> Result<Reply> {
        let reply = self.read_as(key, recurse, block, self.stale).await?;
        // A follower may lag without bound, and the next stale read may go
        // to another server and return older data: with `max_stale`, an
        // answer from a server that lost the leader, or last heard from it
        // longer ago than that, is read again from the leader (as
        // consul-template's max_stale does).
        if self.stale
            && let Some(max) = self.max_stale
            && (!reply.known_leader || reply.last_contact > max)
        {
            tracing::debug!(
                "consul at {}: a stale answer for {key:?} {} behind the leader (max_stale {}); reading it from the leader",
                self.address,
                humantime::format_duration(reply.last_contact),
                humantime::format_duration(max)
            );
            return self.read_as(key, recurse, block, false).await;
        }
        Ok(reply)
    }

    /// One read, with `?stale` or not.
    async fn read_as(
        &self,
        key: &str,
        recurse: bool,
        block: Option<(u64, Duration)>,
        stale: bool,
    ) -> Result<Reply> {
        let what = if recurse {
            format!("prefix {key:?}")
        } else {
            format!("key {key:?}")
        };
        let url = self.kv_url(key, recurse, block, stale)?;
        let limit = match block {
            // Consul holds a query up to wait + wait/16 of jitter; the
            // normal timeout on top covers the network.
            Some((_, wait)) => wait + wait / 16 + self.timeout,
            None => self.timeout,
        };
        // A read for a render retries a 429 with backoff within its
        // timeout: many local clients share one per-address connection cap
        // (limits.http_max_conns_per_client), and a busy moment is no reason
        // to fail the template. A blocking query's caller retries anyway.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut backoff = runtime::Backoff::default();
        loop {
            let (status, meta, body) = self.exchange(url.clone(), limit, &what).await?;
            if status == StatusCode::TOO_MANY_REQUESTS && block.is_none() {
                let delay = backoff.next_delay();
                if tokio::time::Instant::now() + delay < deadline {
                    tracing::debug!(
                        "consul at {} answered 429 to the read of {what}; retrying in {delay:?}",
                        self.address
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
            return self.reply(status, &meta, &body, &what);
        }
    }

    /// The URL of a read. Each `/`-separated part of the key is one
    /// percent-encoded path segment, as Consul keys may hold spaces, `?`,
    /// `#`, `%` and `+`; the empty last part of a folder keeps its `/`.
    fn kv_url(
        &self,
        key: &str,
        recurse: bool,
        block: Option<(u64, Duration)>,
        stale: bool,
    ) -> Result<Url> {
        check_key(key)?;
        let mut url = self.base.clone();
        if url.cannot_be_a_base() {
            bail!("Consul address {:?} cannot take a path", self.address);
        }
        // Each segment percent-encoded here rather than by
        // `path_segments_mut`, which drops tabs and line breaks (the URL
        // standard strips them from input) where Consul keys may hold them.
        let segments: Vec<String> = key
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        let path = format!(
            "{}/v1/kv/{}",
            url.path().trim_end_matches('/'),
            segments.join("/")
        );
        url.set_path(&path);
        let mut query = url.query_pairs_mut();
        if recurse {
            query.append_key_only("recurse");
        }
        if let Some(dc) = &self.datacenter {
            query.append_pair("dc", dc);
        }
        if stale {
            query.append_key_only("stale");
        }
        if let Some((index, wait)) = block {
            query.append_pair("index", &index.to_string());
            query.append_pair("wait", &format!("{}ms", wait.as_millis().max(1)));
        }
        drop(query);
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(url)
    }

    /// Sends a GET with the token and reads the whole answer within
    /// `limit`: status, the headers stencil reads, and body.
    async fn exchange(
        &self,
        url: Url,
        limit: Duration,
        what: &str,
    ) -> Result<(StatusCode, Meta, Vec<u8>)> {
        let mut req = self.http.get(url);
        if let Some(t) = self.current_token() {
            req = req.header("X-Consul-Token", t);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let server = format!("consul at {}", self.address);
        let exchange = async {
            let resp = runtime::send(req, &server).await?;
            let status = resp.status();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let meta = Meta {
                index: header("X-Consul-Index").and_then(|v| v.parse::<u64>().ok()),
                filtered: header("X-Consul-Results-Filtered-By-ACLs").as_deref() == Some("true"),
                last_contact: Duration::from_millis(
                    header("X-Consul-LastContact")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                ),
                known_leader: header("X-Consul-KnownLeader").as_deref() != Some("false"),
            };
            let body = runtime::read_body(resp, self.max_response_size, &server).await?;
            Ok::<_, anyhow::Error>((status, meta, body))
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(answer) => answer,
            Err(_) => bail!(
                "{server} did not answer within {} (reading {what})",
                humantime::format_duration(limit)
            ),
        }
    }

    /// What an answer means: entries, a missing key, or an error.
    fn reply(&self, status: StatusCode, meta: &Meta, body: &[u8], what: &str) -> Result<Reply> {
        let index = meta.index.unwrap_or(0);
        match status.as_u16() {
            200 => {
                let entries: Vec<Entry> = serde_json::from_slice(body).with_context(|| {
                    format!(
                        "consul at {} sent a reply to the read of {what} stencil cannot read",
                        self.address
                    )
                })?;
                Ok(Reply {
                    index,
                    entries: Some(entries),
                    filtered: meta.filtered,
                    last_contact: meta.last_contact,
                    known_leader: meta.known_leader,
                })
            }
            // Every KV 404 from Consul carries X-Consul-Index (agent/kvs_endpoint.go
            // sets the meta before the 404); one without it comes from
            // something else on that address (a proxy, a wrong port, a path
            // prefix in the address), and reading it as "missing" would
            // render defaults.
            404 if meta.index.is_none() => bail!(
                "consul at {} answered 404 without X-Consul-Index to the read of {what}: \
                 that address is not a Consul agent's HTTP API (a proxy, another \
                 service, or a path in the address?): {}",
                self.address,
                excerpt(body)
            ),
            404 => Ok(Reply {
                index,
                entries: None,
                filtered: meta.filtered,
                last_contact: meta.last_contact,
                known_leader: meta.known_leader,
            }),
            403 => Err(self.denied(body, what)),
            429 => bail!(
                "consul at {} answered 429 Too Many Requests to the read of {what}: too many \
                 connections from this host (Consul's limits.http_max_conns_per_client, 200 by \
                 default, counts every local client together)",
                self.address
            ),
            _ => bail!(
                "consul at {} answered {status} to the read of {what}: {}",
                self.address,
                excerpt(body)
            ),
        }
    }

    /// A 403, with the likely reason: no token, an unknown one, or one
    /// without the right.
    fn denied(&self, body: &[u8], what: &str) -> anyhow::Error {
        let text = excerpt(body);
        let no_token = self
            .token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none();
        let why = if no_token {
            "the token lacks permission: no token is set (token, token_file or CONSUL_HTTP_TOKEN)"
        } else if text.contains("ACL not found") {
            "the token lacks permission: Consul does not know it (deleted or mistyped?)"
        } else {
            "the token lacks permission to read it"
        };
        ConsulError::Denied(format!(
            "consul at {} refused to read {what}: {why} (403 {text})",
            self.address
        ))
        .into()
    }
}

impl ConsulClient {
    /// The token to send: `token_file`'s content, read again when the
    /// file's modification time or length changed, so a token rotated in
    /// place (a Vault agent, a Kubernetes secret) is used from the next
    /// request on. A file that cannot be read or is empty right now (being
    /// rewritten) keeps the token read before.
    fn current_token(&self) -> Option<HeaderValue> {
        let mut token = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((file, seen)) = &self.token_file {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            let now = stamp(file);
            if now.is_some() && now != *seen {
                match read_token(file) {
                    Ok(t) => {
                        tracing::info!(
                            "consul at {}: token_file {} changed; using the token it holds now",
                            self.address,
                            file.display()
                        );
                        *token = Some(t);
                        *seen = now;
                    }
                    Err(e) => {
                        tracing::warn!(
                            "consul at {}: {e:#}; keeping the token read before",
                            self.address
                        );
                    }
                }
            }
        }
        token.clone()
    }
}

/// A file's modification time and length, to notice that it changed.
type Stamp = (SystemTime, u64);

fn stamp(file: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(file).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The start of an error body, for a message: Consul's error bodies are one
/// line of its own text, never a value.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(300)
        .collect()
}

/// The token as a header, marked sensitive. As the consul CLI: the token
/// file wins over the token.
fn token_header(config: &ConsulConfig) -> Result<Option<HeaderValue>> {
    match (&config.token_file, &config.token) {
        (Some(f), _) => read_token(f).map(Some),
        (None, Some(t)) => header(t).map(Some),
        (None, None) => Ok(None),
    }
}

/// The token in `file`, as a header.
fn read_token(file: &Path) -> Result<HeaderValue> {
    let t = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read token_file {}", file.display()))?;
    let t = t.trim();
    if t.is_empty() {
        bail!("token_file {} is empty", file.display());
    }
    header(t)
}

fn header(token: &str) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(token)
        .map_err(|_| anyhow!("the Consul token has characters an HTTP header cannot carry"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// `host:port` -> `http://host:port`, without a trailing `/`; with the
/// address parsed.
fn normalize_address(address: &str) -> Result<(String, Url)> {
    let a = address.trim().trim_end_matches('/');
    // What messages show, never with a password in it.
    let shown = redact_urls(a);
    let shown = shown.as_str();
    if a.is_empty() {
        bail!("the Consul address is empty");
    }
    if a.starts_with("unix://") {
        bail!("Consul address {shown:?}: unix sockets are not supported; use http:// or https://");
    }
    let url = if a.contains("://") {
        a.to_string()
    } else {
        format!("http://{a}")
    };
    let parsed = Url::parse(&url).with_context(|| format!("invalid Consul address {shown:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("Consul address {shown:?}: use http:// or https://");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        bail!("Consul address {shown:?} has no host");
    }
    Ok((redact_urls(&url), parsed))
}

/// What a key segment keeps as it is in a URL path: RFC 3986's unreserved
/// characters. Everything else, `/` inside a segment included, is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Refuses the keys a URL cannot carry as they are: URL parsers (reqwest's
/// too, and Consul's Go HTTP mux) resolve `.` and `..` segments, escaped or
/// not, so such a key would silently read another key.
fn check_key(key: &str) -> Result<()> {
    if key.split('/').any(|s| s == "." || s == "..") {
        bail!(
            "Consul key {key:?} has a \".\" or \"..\" segment, which a URL cannot carry \
             (it would read another key)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
