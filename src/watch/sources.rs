//! The watches of network sources: one task per source (one etcd watch
//! stream, one set of Consul blocking queries), covering exactly the keys
//! and prefixes the templates read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

use super::Event;
use crate::source::catalog::CatalogQuery;
use crate::source::{Source, Sources, WatchSpec, is_under};
use crate::template::{Dep, Deps};

/// What each source's watch must cover: the keys and prefixes `deps` read.
pub(super) fn wanted<'a>(deps: impl Iterator<Item = &'a Deps>) -> BTreeMap<String, WatchSpec> {
    let mut specs: BTreeMap<String, WatchSpec> = BTreeMap::new();
    for dep in deps.flat_map(|d| &d.read) {
        match dep {
            Dep::Key { source, key } => {
                let spec = specs.entry(source.clone()).or_default();
                spec.keys.insert(key.clone());
            }
            Dep::Prefix { source, prefix } => {
                let spec = specs.entry(source.clone()).or_default();
                spec.prefixes.insert(prefix.clone());
            }
            Dep::Catalog { source, query } => {
                let spec = specs.entry(source.clone()).or_default();
                spec.catalog.insert(query.clone());
            }
            Dep::File { .. } | Dep::Env { .. } => {}
        }
    }
    specs
}

/// The templates (indices into `deps`) that read anything of `source`, or
/// failed because it did not answer.
pub(super) fn reading<'a>(deps: impl Iterator<Item = &'a Deps>, source: &str) -> Vec<usize> {
    let reads = |d: &Dep| match d {
        Dep::Key { source: s, .. }
        | Dep::Prefix { source: s, .. }
        | Dep::Catalog { source: s, .. } => s == source,
        Dep::File { .. } | Dep::Env { .. } => false,
    };
    deps.enumerate()
        .filter(|(_, d)| d.read.iter().any(reads) || d.failed.contains(source))
        .map(|(i, _)| i)
        .collect()
}

/// Which templates read each key and prefix, by source, kept up to date as
/// their reads change: a change finds the templates it affects without
/// looking through every template's reads (1 ms per change with 1,000
/// templates of 10 keys).
#[derive(Debug, Default)]
pub(super) struct KeyIndex {
    /// source -> key -> templates.
    keys: HashMap<String, HashMap<String, BTreeSet<usize>>>,
    /// (source, prefix) -> templates: prefix reads are few, and a change is
    /// checked against each.
    prefixes: BTreeMap<(String, String), BTreeSet<usize>>,
}

impl KeyIndex {
    /// Template `index` now reads `new` where it read `old`.
    pub(super) fn update(&mut self, index: usize, old: &BTreeSet<Dep>, new: &BTreeSet<Dep>) {
        for dep in old.difference(new) {
            match dep {
                Dep::Key { source, key } => {
                    if let Some(keys) = self.keys.get_mut(source) {
                        if let Some(templates) = keys.get_mut(key) {
                            templates.remove(&index);
                            if templates.is_empty() {
                                keys.remove(key);
                            }
                        }
                    }
                }
                Dep::Prefix { source, prefix } => {
                    let entry = (source.clone(), prefix.clone());
                    if let Some(templates) = self.prefixes.get_mut(&entry) {
                        templates.remove(&index);
                        if templates.is_empty() {
                            self.prefixes.remove(&entry);
                        }
                    }
                }
                Dep::File { .. } | Dep::Env { .. } | Dep::Catalog { .. } => {}
            }
        }
        for dep in new.difference(old) {
            match dep {
                Dep::Key { source, key } => {
                    let keys = self.keys.entry(source.clone()).or_default();
                    keys.entry(key.clone()).or_default().insert(index);
                }
                Dep::Prefix { source, prefix } => {
                    let entry = (source.clone(), prefix.clone());
                    self.prefixes.entry(entry).or_default().insert(index);
                }
                Dep::File { .. } | Dep::Env { .. } | Dep::Catalog { .. } => {}
            }
        }
    }

    /// The templates (in order) that read one of `keys` of `source`, as a
    /// key or under a prefix.
    pub(super) fn reading(&self, source: &str, keys: &[String]) -> Vec<usize> {
        let mut found = BTreeSet::new();
        if let Some(by_key) = self.keys.get(source) {
            for key in keys {
                found.extend(by_key.get(key).into_iter().flatten());
            }
        }
        for ((s, prefix), templates) in &self.prefixes {
            if s == source && keys.iter().any(|k| is_under(k, prefix)) {
                found.extend(templates);
            }
        }
        found.into_iter().collect()
    }
}

/// The templates (indices into `deps`) that asked `source` one of
/// `queries` of its service catalog.
pub(super) fn reading_catalog<'a>(
    deps: impl Iterator<Item = &'a Deps>,
    source: &str,
    queries: &[CatalogQuery],
) -> Vec<usize> {
    let reads = |d: &Dep| matches!(d, Dep::Catalog { source: s, query } if s == source && queries.contains(query));
    deps.enumerate()
        .filter(|(_, d)| d.read.iter().any(reads))
        .map(|(i, _)| i)
        .collect()
}

/// The running watch of each source, with what it covers.
#[derive(Default)]
pub(super) struct SourceWatches {
    running: HashMap<String, (WatchSpec, JoinHandle<()>)>,
}

impl SourceWatches {
    /// Gives each source of `sources` a watch of exactly its entry in
    /// `specs`: stops those no template reads any more and restarts only
    /// those whose set changed, from what the templates last read.
    pub(super) fn update(
        &mut self,
        specs: BTreeMap<String, WatchSpec>,
        sources: &Sources,
        tx: &UnboundedSender<Event>,
    ) {
        self.running.retain(|name, (_, handle)| {
            let keep = specs.contains_key(name);
            if !keep {
                handle.abort();
            }
            keep
        });
        for (name, spec) in specs {
            let spec = spec.normalized();
            if self.running.get(&name).is_some_and(|(s, _)| *s == spec) {
                continue;
            }
            let Some(source) = sources.get(&name).cloned() else {
                continue;
            };
            let Some(handle) = spawn(&name, source, spec.clone(), tx.clone()) else {
                continue;
            };
            if let Some((_, old)) = self.running.remove(&name) {
                old.abort();
            }
            tracing::debug!(source = %name, "watching {} key(s), {} prefix(es) and {} catalog quer(ies)", spec.keys.len(), spec.prefixes.len(), spec.catalog.len());
            self.running.insert(name, (spec, handle));
        }
    }

    /// Stops every watch: on reload, whose sources are new ones, and at
    /// exit.
    pub(super) fn stop_all(&mut self) {
        for (_, (_, handle)) in self.running.drain() {
            handle.abort();
        }
    }
}

/// Runs `source`'s watch of `spec` as a task that forwards its events to
/// `tx`, and reports when the watch ends for good. `None` for sources the
/// coordinator watches itself (files).
fn spawn(
    name: &str,
    source: Arc<dyn Source>,
    spec: WatchSpec,
    tx: UnboundedSender<Event>,
) -> Option<JoinHandle<()>> {
    let (stx, mut srx) = unbounded_channel();
    let future = source.watch(name.to_string(), spec, stx)?;
    let source = name.to_string();
    Some(tokio::spawn(async move {
        let forward = async {
            while let Some(e) = srx.recv().await {
                if tx.send(Event::Source(e)).is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            result = future => {
                let error = match result {
                    Ok(()) => "the watch ended".to_string(),
                    Err(e) => format!("{e:#}"),
                };
                let _ = tx.send(Event::WatchEnded { source, error });
            }
            () = forward => {}
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Dep {
        Dep::Key {
            source: "kv".into(),
            key: k.into(),
        }
    }

    fn prefix(p: &str) -> Dep {
        Dep::Prefix {
            source: "kv".into(),
            prefix: p.into(),
        }
    }

    #[test]
    fn the_index_follows_reads_as_they_change() {
        let mut index = KeyIndex::default();
        let t0: BTreeSet<Dep> = [key("a"), key("b")].into();
        let t1: BTreeSet<Dep> = [key("b"), prefix("app")].into();
        index.update(0, &BTreeSet::new(), &t0);
        index.update(1, &BTreeSet::new(), &t1);
        assert_eq!(index.reading("kv", &["b".into()]), [0, 1]);
        assert_eq!(index.reading("kv", &["app/x".into(), "a".into()]), [0, 1]);
        assert_eq!(index.reading("other", &["b".into()]), Vec::<usize>::new());
        // Template 0 stops reading "b" and reads under "app/".
        let t0_now: BTreeSet<Dep> = [key("a"), prefix("app")].into();
        index.update(0, &t0, &t0_now);
        assert_eq!(index.reading("kv", &["b".into()]), [1]);
        assert_eq!(index.reading("kv", &["app/y".into()]), [0, 1]);
        // Template 1 reads nothing any more.
        index.update(1, &t1, &BTreeSet::new());
        assert_eq!(index.reading("kv", &["app/y".into(), "b".into()]), [0]);
        assert!(!index.keys["kv"].contains_key("b"));
    }
}
