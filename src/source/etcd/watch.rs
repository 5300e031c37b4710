//! The watch stream: one `/v3/watch` request whose answer is a stream of
//! JSON lines, each a batch of events (or the stream's creation, or its
//! cancellation).
//!
//! One stream covers everything: it watches the longest common prefix of
//! the watched keys and filters here, rather than one stream per key as
//! confd does. A broken stream is resumed from the last seen revision + 1
//! with backoff, so no change is lost; a compacted start revision becomes a
//! [`SourceEvent::Resync`]. A watch etcd cancels for lack of permission
//! ends with an error: never silence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc::UnboundedSender;

use super::client::{B64, EtcdError, Header, Kv, de_i64};
use super::range::prefix_range;
use super::{EtcdSource, SourceEvent, WatchSpec};
use crate::runtime::Backoff;

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
    /// PUT and DELETE alike: either means "read again", so the type is not
    /// read.
    #[serde(default)]
    events: Vec<WatchEvent>,
}

#[derive(Debug, Deserialize)]
struct WatchEvent {
    /// `DELETE`, or missing for a PUT (the gateway omits the zero value).
    #[serde(default, rename = "type")]
    kind: String,
    kv: Option<Kv>,
}

/// The longest wait between attempts to reach etcd while it is down: how
/// late, at most, a returned etcd is noticed.
const RECONNECT_CAP: Duration = Duration::from_millis(500);

/// Why one stream ended.
enum WatchEnd {
    ReceiverGone,
    Compacted(i64),
    /// The stream's member failed: it disconnected, canceled the watch
    /// (no leader), sent an error or failed a probe.
    Broke(String),
}

impl EtcdSource {
    /// Watches `spec` from `start_revision` (0: from now), sending changes
    /// on `tx` until it is closed.
    pub async fn watch_from(
        &self,
        spec: &WatchSpec,
        start_revision: i64,
        tx: &UnboundedSender<SourceEvent>,
    ) -> Result<()> {
        let mut wanted: Vec<String> = spec.keys.iter().map(|k| self.full_key(k)).collect();
        wanted.extend(spec.prefixes.iter().map(|p| self.folder(p)));
        let prefix = common_prefix(&wanted);
        let (key, end) = prefix_range(&prefix);
        let mut watch = Watch {
            source: self,
            tx,
            wanted,
            prefix: prefix.into(),
            key,
            end,
            next: start_revision.max(0),
            failing: false,
            created: false,
            reauthenticated: false,
        };
        watch.run().await
    }
}

/// One watch of a source: what it covers, where it stands.
struct Watch<'a> {
    source: &'a EtcdSource,
    tx: &'a UnboundedSender<SourceEvent>,
    /// The etcd keys and folders templates read.
    wanted: Vec<String>,
    /// Their common prefix: what the stream covers.
    prefix: Arc<str>,
    /// The range the stream covers: every key under the common prefix of
    /// `wanted`.
    key: Vec<u8>,
    end: Vec<u8>,
    /// The revision to resume from; 0 for "from now", until the stream
    /// says what now is.
    next: i64,
    /// Whether the source was reported failed, so the next stream that
    /// opens reports it up again.
    failing: bool,
    /// Whether the current stream said it was created.
    created: bool,
    /// Whether a PermissionDenied was answered by authenticating again,
    /// since the last stream etcd created.
    reauthenticated: bool,
}

impl Watch<'_> {
    fn name(&self) -> &str {
        &self.source.name
    }

    /// Opens streams until the receiver is gone: at once on the next
    /// member when an established stream's member fails, with backoff
    /// when no member serves. An error only when etcd refuses the watch.
    ///
    /// The backoff is capped at [`RECONNECT_CAP`]: a refused connection
    /// costs etcd nothing, and a longer delay is how long a returned etcd
    /// goes unnoticed (a 2 s outage took 52 s to recover when the delay
    /// grew to a minute). Every failed attempt is reported, so `/status`
    /// shows the latest error and counts each one.
    async fn run(&mut self) -> Result<()> {
        let mut backoff = Backoff::capped(RECONNECT_CAP);
        loop {
            let retry = match self.once().await {
                Ok(WatchEnd::ReceiverGone) => return Ok(()),
                Ok(WatchEnd::Compacted(rev)) => {
                    if !self.resync(rev) {
                        return Ok(());
                    }
                    backoff.reset();
                    continue;
                }
                Ok(WatchEnd::Broke(why)) if self.created => {
                    // A failover: the next member serves from where this
                    // one stood, and the source never looked down.
                    tracing::debug!(source = %self.name(), "etcd watch: {why}");
                    backoff.reset();
                    continue;
                }
                Ok(WatchEnd::Broke(why)) => why,
                Err(e) if EtcdError::is_denied(&e) => {
                    let source = self.name();
                    return Err(e.context(format!("etcd watch of source {source:?} was refused")));
                }
                Err(e) => format!("{e:#}"),
            };
            if self.tx.is_closed() {
                return Ok(());
            }
            let delay = backoff.next_delay();
            tracing::warn!(source = %self.name(), "etcd watch: {retry}; next attempt in {} ms, from revision {}", delay.as_millis(), self.next);
            if !std::mem::replace(&mut self.failing, true) {
                // While it is away, changes go unseen: the snapshot is read
                // again once it is back.
                self.source.lock().invalidate();
            }
            // Every attempt is reported: /status counts each and shows the
            // latest error.
            let _ = self.tx.send(SourceEvent::Failed {
                source: self.name().to_string(),
                error: retry,
            });
            tokio::time::sleep(delay).await;
        }
    }

    /// Restarts from `compacted` (the oldest revision etcd still has) and
    /// asks for everything to be read again, since changes before it are
    /// lost. False when the receiver is gone.
    fn resync(&mut self, compacted: i64) -> bool {
        tracing::warn!(source = %self.name(), "etcd compacted history past revision {}; reading everything again", self.next);
        self.next = compacted.max(self.next);
        self.source.set_position(self.next);
        self.source.lock().invalidate();
        let event = SourceEvent::Resync {
            source: self.name().to_string(),
        };
        self.tx.send(event).is_ok()
    }

    /// One stream, from opening it to its end. A member whose stream
    /// broke is given up on, so the next stream opens on another.
    async fn once(&mut self) -> Result<WatchEnd> {
        let mut create = json!({
            "key": B64.encode(&self.key),
            "range_end": B64.encode(&self.end),
        });
        if self.next > 0 {
            create["start_revision"] = json!(self.next.to_string());
        }
        let source = self.source;
        let (resp, member) = source
            .client
            .open_watch(&json!({ "create_request": create }))
            .await
            .inspect_err(|_| source.report_members(self.tx, None))?;
        if std::mem::take(&mut self.failing) {
            let _ = self.tx.send(SourceEvent::Up {
                source: self.name().to_string(),
            });
        }
        source.report_members(self.tx, Some(member));
        self.created = false;
        let opened = Instant::now();
        let why = match self.follow(resp, member).await {
            Ok(WatchEnd::Broke(why)) => why,
            Err(e) if !EtcdError::is_denied(&e) => format!("{e:#}"),
            other => return other,
        };
        // A stream that lived less than a second counts as never made, so
        // a member that accepts watches and drops them at once is backed
        // off from.
        self.created &= opened.elapsed() >= Duration::from_secs(1);
        let shown = source.client.members.shown(member).to_string();
        source.client.give_up(member, &why);
        if source.client.members.len() > 1 {
            tracing::warn!(source = %self.name(), "etcd watch on member {shown}: {why}; resuming from revision {} on the next member", self.next);
            let _ = self.tx.send(SourceEvent::Failover {
                source: self.name().to_string(),
                from: shown,
                error: why.clone(),
            });
        }
        source.report_members(self.tx, None);
        Ok(WatchEnd::Broke(why))
    }

    /// Follows an open stream on `member` while probing that member.
    async fn follow(&mut self, resp: reqwest::Response, member: usize) -> Result<WatchEnd> {
        let source = self.source;
        let tx = self.tx;
        let key = self.key.clone();
        let endpoint = source.client.members.shown(member).to_string();
        let probe = source.probe_until_failure(member, &key, tx);
        tokio::pin!(probe);
        let mut stream = resp.bytes_stream();
        let cap = source.client.max_response_size();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::select! {
                chunk = stream.next() => chunk,
                why = &mut probe => return Ok(WatchEnd::Broke(why)),
            };
            let chunk = match chunk {
                None => {
                    return Ok(WatchEnd::Broke(format!(
                        "etcd at {endpoint} ended the watch stream"
                    )));
                }
                Some(Err(e)) => {
                    let why = crate::runtime::describe_reqwest(&e);
                    return Ok(WatchEnd::Broke(format!(
                        "the watch stream from etcd at {endpoint} broke: {why}"
                    )));
                }
                Some(Ok(chunk)) => chunk,
            };
            // Only the new bytes are searched for a newline: searching the
            // whole buffer each time made a stream without newlines cost
            // quadratic CPU.
            let mut searched = buf.len();
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf[searched..].iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=searched + pos).collect();
                searched = 0;
                if line.len() > cap {
                    return Ok(over_cap(&endpoint, cap));
                }
                if let Some(end) = self.handle_line(&line, &endpoint)? {
                    return Ok(end);
                }
            }
            if buf.len() > cap {
                return Ok(over_cap(&endpoint, cap));
            }
            if self.tx.is_closed() {
                return Ok(WatchEnd::ReceiverGone);
            }
        }
    }

    /// Handles one line of the stream; `Some` when the stream is over.
    fn handle_line(&mut self, line: &[u8], endpoint: &str) -> Result<Option<WatchEnd>> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let parsed: WatchLine = serde_json::from_slice(line).with_context(|| {
            format!("etcd at {endpoint} sent a watch message stencil cannot read")
        })?;
        if let Some(err) = parsed.error {
            let text = err.to_string();
            if text.contains("invalid auth token") || text.contains("\"grpc_code\":16") {
                self.source.client.forget_token();
            }
            bail!("etcd watch stream error: {text}");
        }
        let Some(result) = parsed.result else {
            return Ok(None);
        };
        if result.canceled {
            return self.canceled(&result).map(Some);
        }
        if result.created {
            self.created(result.header.revision);
        }
        self.queue(&result.events);
        let changed = self.changed_keys(&result.events);
        if changed.is_empty() {
            return Ok(None);
        }
        tracing::debug!(source = %self.name(), "etcd watch: {} watched key(s) changed, up to revision {}", changed.len(), self.next - 1);
        let event = SourceEvent::Changed {
            source: self.name().to_string(),
            keys: changed,
        };
        Ok(self
            .tx
            .send(event)
            .is_err()
            .then_some(WatchEnd::ReceiverGone))
    }

    /// Why etcd canceled the stream: compaction ends it for a resync,
    /// permission for good, anything else for a retry.
    fn canceled(&mut self, result: &WatchResult) -> Result<WatchEnd> {
        if result.compact_revision > 0 {
            return Ok(WatchEnd::Compacted(result.compact_revision));
        }
        let reason = &result.cancel_reason;
        if reason.contains("PermissionDenied") || reason.contains("permission denied") {
            // etcd cancels a watch whose token it no longer knows (a
            // restart drops simple tokens) with the same PermissionDenied
            // as a missing permission: authenticate again once before
            // believing it, or a restart would end the watch for good.
            if self.source.client.has_credentials()
                && !std::mem::replace(&mut self.reauthenticated, true)
            {
                self.source.client.forget_token();
                bail!("etcd canceled the watch: {reason}; authenticating again");
            }
            return Err(EtcdError::Denied(format!("etcd canceled the watch: {reason}")).into());
        }
        if reason.contains("invalid auth token") || reason.contains("Unauthenticated") {
            self.source.client.forget_token();
        }
        bail!("etcd canceled the watch: {reason}");
    }

    fn created(&mut self, revision: i64) {
        self.created = true;
        self.reauthenticated = false;
        tracing::debug!(source = %self.name(), "etcd watch created at revision {revision}");
        if self.next == 0 {
            // Watching "from now": now has a number, and a reconnect must
            // resume from it, not from a later now.
            self.next = revision + 1;
            self.source.set_position(self.next);
        }
    }

    /// Hands the new values `events` carry to the source's snapshot, before
    /// the coordinator hears of them, so the render they cause reads them
    /// without asking etcd again.
    fn queue(&self, events: &[WatchEvent]) {
        let mut to = 0;
        let mut changes = Vec::with_capacity(events.len());
        for ev in events {
            let Some(kv) = &ev.kv else { continue };
            to = to.max(kv.mod_revision);
            let value = if ev.kind == "DELETE" {
                None
            } else {
                match self.source.decode(kv) {
                    Ok((_, v)) => Some(v),
                    Err(_) => {
                        // A value the snapshot cannot hold: a fresh read
                        // reports it properly.
                        self.source.lock().invalidate();
                        return;
                    }
                }
            };
            let Ok(key) = B64.decode(&kv.key) else {
                continue;
            };
            let key = String::from_utf8_lossy(&key).into_owned();
            changes.push((key, value, kv.mod_revision));
        }
        if to == 0 {
            return;
        }
        // Watching "from now" without a creation seen: where it began is
        // unknown, so nothing follows on from the snapshot.
        let from = if self.next > 0 { self.next } else { i64::MAX };
        self.source.lock().queue(&self.prefix, from, to, changes);
    }

    /// The watched keys `events` touch (relative, sorted, once each);
    /// moves the resume point past them.
    fn changed_keys(&mut self, events: &[WatchEvent]) -> Vec<String> {
        let mut changed = Vec::new();
        let mut revision = 0;
        for kv in events.iter().filter_map(|ev| ev.kv.as_ref()) {
            revision = revision.max(kv.mod_revision);
            let Ok(k) = B64.decode(&kv.key) else { continue };
            let k = String::from_utf8_lossy(&k);
            if self.wanted.iter().any(|w| covers(w, &k)) {
                changed.extend(self.source.relative_key(&k));
            }
        }
        if revision > 0 {
            self.next = revision + 1;
            self.source.set_position(self.next);
        }
        changed.sort();
        changed.dedup();
        changed
    }
}

/// A watch message over `max_response_size`: the stream is given up on.
fn over_cap(endpoint: &str, cap: usize) -> WatchEnd {
    WatchEnd::Broke(format!(
        "etcd at {endpoint} sent a watch message over the {cap}-byte limit (max_response_size)"
    ))
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
        let deleted = result.events[1].kv.as_ref().unwrap();
        assert_eq!((deleted.key.as_str(), deleted.value.as_str()), ("YS95", ""));
    }
}
