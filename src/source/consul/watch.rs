//! Watching with blocking queries (`?index=N&wait=…`), as Consul's
//! documentation on blocking queries asks.
//!
//! Which queries: one per watched prefix (keys under it share it), one per
//! folder holding several watched keys, one per other key. Each starts from
//! the `X-Consul-Index` the render's read returned, so a change made after
//! the render is never missed. An index that goes backwards (a snapshot
//! restore, reaped tombstones) resets to 0; an unchanged index, or a reply
//! whose content is the same (a query on a missing key or an empty prefix
//! returns on *any* write, because its index is the KV table's), reports
//! nothing; the changed keys are found by diffing the old and new content.
//! Queries that bring no change are at least [`MIN_INTERVAL`] apart, so a
//! misbehaving server cannot drive a hot loop.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::client::{Reply, is_denied};
use super::{Cache, ConsulSource, Read, in_folder};
use crate::runtime::Backoff;
use crate::source::{SourceEvent, WatchSpec};

/// The least time between the starts of two blocking queries of one watch
/// when the first brought no change (an expired wait, an index that did not
/// move or went backwards, a write elsewhere): a server that answers at
/// once every time costs at most 10 requests a second, not a hot loop. A
/// query after a real change starts at once, so a burst of changes is
/// followed without delay.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Full Consul key -> raw value.
pub(super) type Content = BTreeMap<String, Vec<u8>>;

/// (recurse, Consul key) of a query -> what it last saw.
pub(super) type Watched = HashMap<(bool, String), Read<Arc<Content>>>;

/// One blocking query of a watch.
#[derive(Debug, Clone)]
pub(super) struct Query {
    /// A Consul key, or a folder (ending in `/`, or "") read with `recurse`.
    key: String,
    recurse: bool,
    /// What the render (or an earlier watch) read, and at which index.
    known: Option<Read<Arc<Content>>>,
}

/// What a watch covers, in Consul's terms.
struct Coverage {
    /// Folders read with `recurse`, none inside another.
    folders: BTreeSet<String>,
    /// Keys outside every folder, each its own query.
    keys: BTreeSet<String>,
    /// Folders watched for the keys they share -> those keys.
    grouped: BTreeMap<String, Vec<String>>,
}

impl ConsulSource {
    /// The queries that cover `spec`, each with what the current snapshot
    /// (or an earlier watch) read of it.
    pub(super) fn plan(&self, spec: &WatchSpec) -> Vec<Query> {
        let Coverage {
            folders,
            keys,
            grouped,
        } = self.coverage(spec);
        let cache = self.lock();
        let mut queries: Vec<Query> = folders
            .into_iter()
            .map(|folder| Query {
                known: known_folder(&cache, &folder, grouped.get(&folder)),
                key: folder,
                recurse: true,
            })
            .collect();
        queries.extend(keys.into_iter().map(|key| Query {
            known: known_key(&cache, &key),
            key,
            recurse: false,
        }));
        drop(cache);
        self.resume(&mut queries);
        queries
    }

    /// The folders and single keys to query for `spec`.
    fn coverage(&self, spec: &WatchSpec) -> Coverage {
        let mut folders: BTreeSet<String> = spec.prefixes.iter().map(|p| self.folder(p)).collect();
        // A folder inside another watched folder shares its query.
        outermost(&mut folders);
        let mut keys: BTreeSet<String> = spec
            .keys
            .iter()
            .map(|k| self.full_key(k))
            .filter(|k| !k.is_empty() && !folders.iter().any(|f| in_folder(f, k)))
            .collect();
        let grouped = group_keys(&mut keys);
        folders.extend(grouped.keys().cloned());
        outermost(&mut folders);
        Coverage {
            folders,
            keys,
            grouped,
        }
    }

    /// Starts each query from what a watch saw, when that is newer than
    /// the render's read: changes between the two were delivered already.
    /// What no query of this plan covers is forgotten.
    fn resume(&self, queries: &mut [Query]) {
        let mut watched = self.watched();
        watched.retain(|(recurse, key), _| {
            queries
                .iter()
                .any(|q| q.recurse == *recurse && q.key == *key)
        });
        for q in queries {
            if let Some(seen) = watched.get(&(q.recurse, q.key.clone()))
                && q.known.as_ref().is_none_or(|k| k.index < seen.index)
            {
                q.known = Some(seen.clone());
            }
        }
    }

    fn watched(&self) -> MutexGuard<'_, Watched> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs every query until `tx` closes, or one is denied.
    pub(super) async fn watch_queries(
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
            let reply = match result.and_then(|r| {
                if run.recurse {
                    self.check_filtered(&run.key, &r)?;
                }
                Ok(r)
            }) {
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
            run.answered(health);
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
}

/// `future`'s output, or None as soon as nobody listens on `tx` any more.
async fn until_closed<T>(
    tx: &UnboundedSender<SourceEvent>,
    future: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        out = future => Some(out),
        () = tx.closed() => None,
    }
}

/// Drops the folders that another folder of the set holds.
fn outermost(folders: &mut BTreeSet<String>) {
    let all: Vec<String> = folders.iter().cloned().collect();
    folders.retain(|f| !all.iter().any(|g| g != f && in_folder(g, f)));
}

/// Takes the keys that share a folder with another key out of `keys`, and
/// returns them by folder: one recursive query per folder, not one
/// connection per key (consul-template's hundreds of sockets). Keys at the
/// root stay single queries rather than watching the whole store. The
/// diff may report folder neighbours nobody reads; the coordinator ignores
/// those.
fn group_keys(keys: &mut BTreeSet<String>) -> BTreeMap<String, Vec<String>> {
    let mut by_folder: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in keys.iter() {
        if let Some(i) = key.rfind('/') {
            by_folder
                .entry(key[..=i].to_string())
                .or_default()
                .push(key.clone());
        }
    }
    by_folder.retain(|_, members| members.len() > 1);
    for members in by_folder.values() {
        for k in members {
            keys.remove(k);
        }
    }
    by_folder
}

/// The values of `values` whose keys `within` accepts, as a watch compares
/// them.
fn raw(values: &BTreeMap<String, String>, within: impl Fn(&str) -> bool) -> Arc<Content> {
    Arc::new(
        values
            .iter()
            .filter(|(k, _)| within(k))
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect(),
    )
}

/// What the snapshot read of a folder: its own read, or one of a folder
/// holding it (its index is at least the inner folder's, and any later
/// write under it gets a higher one), or the keys it was made for.
fn known_folder(
    cache: &Cache,
    folder: &str,
    members: Option<&Vec<String>>,
) -> Option<Read<Arc<Content>>> {
    cache
        .folder_of(folder)
        .map(|r| Read {
            index: r.index,
            value: raw(&r.value, |k| in_folder(folder, k)),
        })
        .or_else(|| known_from_keys(cache, members?))
}

/// What the render saw of a folder it read key by key: the keys' values,
/// at the oldest of their indexes (so no later change is missed). Only
/// when every key was read.
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

/// What the snapshot read of one key: its own read, or a folder's.
fn known_key(cache: &Cache, key: &str) -> Option<Read<Arc<Content>>> {
    match cache.keys.get(key) {
        Some(r) => Some(Read {
            index: r.index,
            value: Arc::new(
                r.value
                    .iter()
                    .map(|v| (key.to_string(), v.clone().into_bytes()))
                    .collect(),
            ),
        }),
        None => cache.folder_of(key).map(|r| Read {
            index: r.index,
            value: raw(&r.value, |k| k == key),
        }),
    }
}

/// How many of a watch's queries are failing, so the coordinator hears one
/// `Failed` when the source stops answering and one `Up` when it is back.
struct Health<'a> {
    /// A std mutex: held for an increment, never across an await.
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
    backoff: Backoff,
    failing: bool,
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
            backoff: Backoff::default(),
            failing: false,
        }
    }

    /// The next query. After a failure, a plain read: a blocking query
    /// would only answer (and so show the source is back) when something
    /// changes. Its content is compared like any other, so nothing is lost.
    async fn read(&self) -> Result<Reply> {
        let block = (!self.failing).then_some((self.index, self.source.query_wait));
        tracing::trace!(source = %self.source.name, "consul query on {} from index {}, blocking: {}", self.what, self.index, block.is_some());
        self.source
            .client
            .read(&self.key, self.recurse, block)
            .await
    }

    /// Reports the first failure of a streak; the delay before retrying.
    fn failed(&mut self, e: &anyhow::Error, health: &Health<'_>) -> Duration {
        let delay = self.backoff.next_delay();
        let error = format!("{e:#}");
        tracing::warn!(source = %self.source.name, "consul watch of {}: {error}; retrying from index {} in {delay:?}", self.what, self.index);
        if !self.failing {
            self.failing = true;
            health.failed(error);
        }
        delay
    }

    /// An answer came: the end of a failure streak, if there was one.
    fn answered(&mut self, health: &Health<'_>) {
        if std::mem::take(&mut self.failing) {
            health.up();
        }
        self.backoff.reset();
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
    use crate::source::consul::ConsulConfig;

    #[test]
    fn watch_plan_shares_a_prefix_query_with_the_keys_under_it() {
        let mut config = ConsulConfig::new("127.0.0.1:8500");
        config.prefix = "apps".into();
        let s = ConsulSource::new("kv", &config).unwrap();
        let spec = WatchSpec {
            keys: [
                "web/db/host".into(),
                "web/port".into(),
                "other".into(),
                "web/cache/a".into(),
                "web/cache/b".into(),
            ]
            .into(),
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
                ("apps/web/cache/".to_string(), true),
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
}
