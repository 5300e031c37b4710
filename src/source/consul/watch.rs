//! Watching with blocking queries (`?index=N&wait=…`), as Consul's
//! documentation on blocking queries asks.
//!
//! Which queries (`plan`): one per watched prefix (keys under it share it),
//! one per folder holding several watched keys, one per other key. Each starts from
//! the `X-Consul-Index` the render's read returned, so a change made after
//! the render is never missed. An index that goes backwards (a snapshot
//! restore, reaped tombstones) resets to 0; an unchanged index, or a reply
//! whose content is the same (a query on an empty prefix, or on a missing
//! key before Consul 1.12, returns on *any* write, because its index is the
//! KV table's), reports nothing; the changed keys are found by diffing the old and new content.
//! Queries that bring no change are at least [`MIN_INTERVAL`] apart, so a
//! misbehaving server cannot drive a hot loop.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::client::{Reply, is_denied};
use super::plan::{Content, Query};
use super::snapshot::Update;
use super::{ConsulSource, Read, in_folder};
use crate::runtime::Backoff;
use crate::source::SourceEvent;
use crate::source::catalog::CatalogQuery;

/// The least time between the starts of two blocking queries of one watch
/// when the first brought no change (an expired wait, an index that did not
/// move or went backwards, a write elsewhere): a server that answers at
/// once every time costs at most 10 requests a second, not a hot loop. A
/// query after a real change starts at once, so a burst of changes is
/// followed without delay.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

impl ConsulSource {
    pub(super) async fn watch_queries(
        &self,
        queries: Vec<Query>,
        catalog: Vec<CatalogQuery>,
        tx: &UnboundedSender<SourceEvent>,
    ) -> Result<()> {
        if queries.is_empty() && catalog.is_empty() {
            // None parked now, whatever an earlier watch reported.
            let _ = tx.send(SourceEvent::Queries {
                source: self.name.clone(),
                parked: 0,
            });
            tx.closed().await;
            return Ok(());
        }
        let health = Health {
            failing: Mutex::new(0),
            parked: Mutex::new(0),
            source: &self.name,
            tx,
        };
        health.parked(queries.len() + catalog.len(), 0);
        let services = catalog
            .into_iter()
            .map(|q| self.watch_catalog(q, tx, &health));
        futures_util::future::try_join(
            self.run_all(queries, tx, &health),
            futures_util::future::try_join_all(services),
        )
        .await?;
        Ok(())
    }

    /// Runs `queries` side by side until `tx` closes, or one is denied.
    async fn run_all(
        &self,
        queries: Vec<Query>,
        tx: &UnboundedSender<SourceEvent>,
        health: &Health<'_>,
    ) -> Result<()> {
        let runs = queries.into_iter().map(|q| self.run_query(q, tx, health));
        futures_util::future::try_join_all(runs).await?;
        Ok(())
    }

    /// One blocking query, again and again, until `tx` closes.
    async fn run_query(
        &self,
        mut query: Query,
        tx: &UnboundedSender<SourceEvent>,
        health: &Health<'_>,
    ) -> Result<()> {
        let members = std::mem::take(&mut query.members);
        let mut run = Run::new(self, query);
        // When the last query started, if the next one must keep
        // MIN_INTERVAL from it.
        let mut pace: Option<Instant> = None;
        loop {
            if let Some(started) = pace.take()
                && until_closed(tx, tokio::time::sleep_until(started + MIN_INTERVAL))
                    .await
                    .is_none()
            {
                return Ok(());
            }
            let started = Instant::now();
            let Some(result) = until_closed(tx, run.read()).await else {
                return Ok(());
            };
            if !members.is_empty()
                && let Some(why) = refused_merge(&result)
            {
                run.streak.answered(health);
                self.split(&run.key, why);
                // One query becomes its members.
                health.parked(members.len(), 1);
                return Box::pin(self.run_all(members, tx, health)).await;
            }
            let result = match result {
                Ok(r) if run.recurse && members.is_empty() => {
                    self.check_filtered(&run.key, &r).map(|()| r)
                }
                other => other,
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
                    let delay = run.failed(&e, health);
                    if until_closed(tx, tokio::time::sleep(delay)).await.is_none() {
                        return Ok(());
                    }
                    continue;
                }
            };
            run.streak.answered(health);
            let changed = run.absorb(reply);
            if changed.is_empty() {
                pace = Some(started);
                continue;
            }
            tracing::debug!(source = %self.name, "consul: {} changed under {}", changed.len(), run.what);
            let event = SourceEvent::Changed {
                source: self.name.clone(),
                keys: changed,
            };
            if tx.send(event).is_err() {
                return Ok(());
            }
        }
    }

    /// Remembers that Consul would not answer the merged query on
    /// `folder` whole, so later watches split it from the start; logs it
    /// once.
    fn split(&self, folder: &str, why: &str) {
        let first = self
            .unlistable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(folder.to_string());
        // The split queries cover less than the merged one did.
        self.lock().invalidate();
        if first {
            tracing::warn!(source = %self.name, "consul {why} the query on folder {folder:?}, which stencil merged the watched keys in it into (with acl.enable_key_list_policy a recursive read needs list on the folder, which read does not grant); watching those keys one by one");
        }
    }
}

/// Why Consul would not answer a query stencil merged from several keys
/// whole: a 403 (`acl.enable_key_list_policy` needs `list` on the folder,
/// agent/consul/kvs_endpoint.go KVS.List), or an answer the ACLs filtered
/// (the token may not read a neighbour of the keys).
fn refused_merge(result: &Result<Reply>) -> Option<&'static str> {
    match result {
        Ok(r) if r.filtered => Some("filtered the answer to"),
        Err(e) if is_denied(e) => Some("refused (403)"),
        _ => None,
    }
}

/// `future`'s output, or None as soon as nobody listens on `tx` any more.
pub(super) async fn until_closed<T>(
    tx: &UnboundedSender<SourceEvent>,
    future: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        out = future => Some(out),
        () = tx.closed() => None,
    }
}

/// How many of a watch's queries are failing, so the coordinator hears one
/// `Failed` when the source stops answering and one `Up` when it is back.
pub(super) struct Health<'a> {
    /// A std mutex: held for an increment, never across an await.
    failing: Mutex<usize>,
    /// The queries running, reported as `SourceEvent::Queries`.
    parked: Mutex<usize>,
    source: &'a str,
    tx: &'a UnboundedSender<SourceEvent>,
}

impl Health<'_> {
    /// `started` more queries are parked and `ended` fewer.
    fn parked(&self, started: usize, ended: usize) {
        let mut n = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        *n = (*n + started).saturating_sub(ended);
        let _ = self.tx.send(SourceEvent::Queries {
            source: self.source.to_string(),
            parked: *n,
        });
    }

    /// One failed attempt; `first`: of a query's streak. Every attempt is
    /// reported, so `/status` counts each and shows the latest error.
    pub(super) fn failed(&self, error: String, first: bool) {
        let mut n = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        if first {
            *n += 1;
        }
        let _ = self.tx.send(SourceEvent::Failed {
            source: self.source.to_string(),
            error,
        });
    }

    pub(super) fn up(&self) {
        let mut n = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            let _ = self.tx.send(SourceEvent::Up {
                source: self.source.to_string(),
            });
        }
    }
}

/// One query's run of failed attempts, kept by the KV and the catalog
/// watches alike: the delay before the next attempt, and whether the last
/// one failed (then the next read does not block, so a source that is back
/// is seen at once; the health counts a streak once).
#[derive(Default)]
pub(super) struct Streak {
    backoff: Backoff,
    pub(super) failing: bool,
}

impl Streak {
    /// A failed attempt: the delay before the next, and whether it began
    /// the streak.
    pub(super) fn failed(&mut self) -> (Duration, bool) {
        let delay = self.backoff.next_delay();
        (delay, !std::mem::replace(&mut self.failing, true))
    }

    /// An answer came: the end of the streak, if there was one.
    pub(super) fn answered(&mut self, health: &Health<'_>) {
        if std::mem::take(&mut self.failing) {
            health.up();
        }
        self.backoff.reset();
    }
}

/// One blocking query's state from one answer to the next.
struct Run<'a> {
    source: &'a ConsulSource,
    key: String,
    recurse: bool,
    /// How messages name the query.
    what: String,
    /// The index the next query blocks from.
    index: u64,
    /// What the last answer (or the render) held; None: nothing known, so
    /// the first answer's keys are all news.
    known: Option<Arc<Content>>,
    streak: Streak,
}

impl<'a> Run<'a> {
    fn new(source: &'a ConsulSource, query: Query) -> Run<'a> {
        let what = if query.recurse {
            format!("prefix {:?}", query.key)
        } else {
            format!("key {:?}", query.key)
        };
        Run {
            source,
            what,
            index: query.known.as_ref().map_or(0, |r| r.index),
            known: query.known.map(|r| r.value),
            key: query.key,
            recurse: query.recurse,
            streak: Streak::default(),
        }
    }

    /// The next query. After a failure, a plain read: a blocking query
    /// would only answer (and so show the source is back) when something
    /// changes. Its content is compared like any other, so nothing is lost.
    async fn read(&self) -> Result<Reply> {
        let block = (!self.streak.failing).then_some((self.index, self.source.query_wait));
        tracing::trace!(source = %self.source.name, "consul query on {} from index {}, blocking: {}", self.what, self.index, block.is_some());
        self.source
            .client
            .read(&self.key, self.recurse, block)
            .await
    }

    /// Reports a failed attempt; the delay before retrying.
    fn failed(&mut self, e: &anyhow::Error, health: &Health<'_>) -> Duration {
        let (delay, first) = self.streak.failed();
        let error = format!("{e:#}");
        tracing::warn!(source = %self.source.name, "consul watch of {}: {error}; next attempt in {} ms, from index {}", self.what, delay.as_millis(), self.index);
        if first {
            // What changes while it fails goes unseen: the snapshot is read
            // again.
            self.source.lock().invalidate();
        }
        health.failed(error, first);
        delay
    }

    /// Takes in an answer: its index for the next query, its content as
    /// what is known; returns the template keys that changed.
    fn absorb(&mut self, reply: Reply) -> Vec<String> {
        if reply.index == self.index && self.known.is_some() {
            // The wait expired, or the server answered early without a
            // change.
            return Vec::new();
        }
        self.index = if reply.index < self.index {
            // Consul's docs: an index that goes backwards (a snapshot
            // restore, reaped tombstones) must reset to 0, or the next
            // query may wait for an index that will come much later.
            tracing::info!(source = %self.source.name, "consul index of {} went backwards ({} -> {}); starting over from 0", self.what, self.index, reply.index);
            0
        } else {
            // Consul's docs: an index of 0 is a server bug; 1 is safe.
            reply.index.max(1)
        };
        let content = match raw_content(&self.key, self.recurse, reply.entries) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(source = %self.source.name, "consul watch of {}: {e:#}", self.what);
                return Vec::new();
            }
        };
        let changed = match &self.known {
            Some(old) => diff(old, &content),
            None => content.keys().cloned().collect(),
        };
        let content = Arc::new(content);
        // Before the coordinator hears of the change: the render it causes
        // reads the new content from the snapshot.
        self.source.lock().queue(Update::Reply {
            key: self.key.clone(),
            recurse: self.recurse,
            index: reply.index,
            content: content.clone(),
        });
        self.source.watched().insert(
            (self.recurse, self.key.clone()),
            Read {
                index: reply.index.max(1),
                value: content.clone(),
            },
        );
        self.known = Some(content);
        changed
            .iter()
            .filter_map(|k| self.source.relative_key(k))
            .collect()
    }
}

/// A reply's entries as the watch compares them: the query's key, or the
/// keys in its folder without folder markers.
fn raw_content(
    key: &str,
    recurse: bool,
    entries: Option<Vec<super::client::Entry>>,
) -> Result<Content> {
    let mut content = Content::new();
    for e in entries.into_iter().flatten() {
        let wanted = if recurse {
            !e.key.ends_with('/') && in_folder(key, &e.key)
        } else {
            e.key == key
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

    #[test]
    fn diff_finds_created_modified_and_deleted_keys() {
        let old: Content = [("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())].into();
        let new: Content = [("b".into(), b"3".to_vec()), ("c".into(), b"".to_vec())].into();
        assert_eq!(diff(&old, &new), ["a", "b", "c"]);
        assert!(diff(&new, &new).is_empty());
    }
}
