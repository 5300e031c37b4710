//! Which blocking queries watch what a render read: one per watched
//! prefix (keys under it share it), one per folder holding several watched
//! keys, one per other key, each with what the render read of it.

use std::collections::HashSet;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use super::{Cache, ConsulSource, Read, in_folder};
use crate::source::WatchSpec;

/// Full Consul key -> raw value.
pub(super) type Content = BTreeMap<String, Vec<u8>>;

/// (recurse, Consul key) of a query -> what it last saw.
pub(super) type Watched = HashMap<(bool, String), Read<Arc<Content>>>;

/// One blocking query of a watch.
#[derive(Debug, Clone)]
pub(super) struct Query {
    /// A Consul key, or a folder (ending in `/`, or "") read with `recurse`.
    pub(super) key: String,
    pub(super) recurse: bool,
    /// What the render (or an earlier watch) read, and at which index.
    pub(super) known: Option<Read<Arc<Content>>>,
    /// For a folder stencil merged keys into (no template reads it whole):
    /// the queries it stands for, run instead when Consul refuses the
    /// folder (`acl.enable_key_list_policy` wants `list` on it, which
    /// `read` does not grant). Empty for a folder a template reads.
    pub(super) members: Vec<Query>,
}

/// What a watch covers, in Consul's terms.
struct Coverage {
    /// The folders templates read, none inside another.
    prefixes: BTreeSet<String>,
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
            prefixes,
            keys,
            grouped,
        } = self.coverage(spec);
        let cache = self.lock();
        let key_query = |key: &String| Query {
            known: known_key(&cache, key),
            key: key.clone(),
            recurse: false,
            members: Vec::new(),
        };
        let folder_query = |folder: &String, members: Vec<Query>| Query {
            known: known_folder(&cache, folder, grouped.get(folder)),
            key: folder.clone(),
            recurse: true,
            members,
        };
        let mut folders = prefixes.clone();
        folders.extend(grouped.keys().cloned());
        // A folder inside another watched folder shares its query.
        outermost(&mut folders);
        let mut queries: Vec<Query> = folders
            .iter()
            .map(|folder| {
                if prefixes.contains(folder) {
                    return folder_query(folder, Vec::new());
                }
                // Merged by stencil: what it stands for, should Consul
                // refuse it.
                let mut members: Vec<Query> = prefixes
                    .iter()
                    .filter(|p| in_folder(folder, p))
                    .map(|p| folder_query(p, Vec::new()))
                    .collect();
                members.extend(
                    grouped
                        .iter()
                        .filter(|(g, _)| in_folder(folder, g))
                        .flat_map(|(_, ks)| ks.iter().map(key_query)),
                );
                folder_query(folder, members)
            })
            .collect();
        queries.extend(keys.iter().map(key_query));
        drop(cache);
        let before = queries.len();
        let unlistable = self
            .unlistable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Catalog queries cannot be merged: each is one of the bound.
        let bound = self.max_watch_queries.saturating_sub(spec.catalog.len());
        let mut queries = fit(queries, bound, &unlistable);
        self.lock().retain_covered(&queries);
        if queries.len() < before && !self.bounded.swap(true, Ordering::Relaxed) {
            tracing::warn!(source = %self.name, "consul watch needs {before} blocking queries, more than max_watch_queries = {}; merging keys into the folders holding them ({} queries); changes to keys nobody reads in those folders are fetched and ignored", self.max_watch_queries, queries.len());
        }
        self.resume(&mut queries);
        queries
    }

    /// The folders and single keys to query for `spec`.
    fn coverage(&self, spec: &WatchSpec) -> Coverage {
        let mut prefixes: BTreeSet<String> = spec.prefixes.iter().map(|p| self.folder(p)).collect();
        outermost(&mut prefixes);
        let mut keys: BTreeSet<String> = spec
            .keys
            .iter()
            .map(|k| self.full_key(k))
            .filter(|k| !k.is_empty() && !prefixes.iter().any(|f| in_folder(f, k)))
            .collect();
        let mut grouped = group_keys(&mut keys);
        // Folders Consul refused to list stay split.
        let unlistable = self.unlistable.lock().unwrap_or_else(|e| e.into_inner());
        grouped.retain(|folder, members| {
            if unlistable.contains(folder) {
                keys.extend(members.drain(..));
                return false;
            }
            true
        });
        drop(unlistable);
        Coverage {
            prefixes,
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

    pub(super) fn watched(&self) -> MutexGuard<'_, Watched> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Drops the folders that another folder of the set holds.
fn outermost(folders: &mut BTreeSet<String>) {
    let all: Vec<String> = folders.iter().cloned().collect();
    folders.retain(|f| !all.iter().any(|g| g != f && in_folder(g, f)));
}

/// Merges queries into a folder holding several of them, the deepest such
/// folder first (so the merged query fetches as little as it can), until
/// at most `bound` remain: each parked blocking query holds a connection,
/// and Consul refuses a client past `limits.http_max_conns_per_client`.
/// A merged folder keeps what it stands for (`members`), to split again
/// should Consul refuse it; folders in `unlistable` it refused already are
/// not merged into again.
fn fit(mut queries: Vec<Query>, bound: usize, unlistable: &HashSet<String>) -> Vec<Query> {
    let bound = bound.max(1);
    while queries.len() > bound {
        let Some(folder) = merge_target(&queries, unlistable) else {
            break;
        };
        let (inside, mut rest): (Vec<Query>, Vec<Query>) = queries
            .into_iter()
            .partition(|q| q.key != folder && in_folder(&folder, &q.key));
        let members: Vec<Query> = inside
            .into_iter()
            .flat_map(|q| {
                if q.members.is_empty() {
                    vec![q]
                } else {
                    q.members
                }
            })
            .collect();
        rest.push(Query {
            known: known_of(&members),
            key: folder,
            recurse: true,
            members,
        });
        rest.sort_by(|a, b| (!a.recurse, &a.key).cmp(&(!b.recurse, &b.key)));
        queries = rest;
    }
    queries
}

/// The deepest folder holding two or more of `queries` (the most of them
/// among folders equally deep); None when none does.
fn merge_target(queries: &[Query], unlistable: &HashSet<String>) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for q in queries {
        // Every folder above the query: "a/b/c" and "a/b/" are in "a/b/"
        // (the key) or "a/" (the folder), "a/", and "".
        let own = if q.recurse {
            q.key.strip_suffix('/').unwrap_or(&q.key)
        } else {
            &q.key
        };
        let mut ancestors = vec![""];
        ancestors.extend(own.match_indices('/').map(|(i, _)| &q.key[..=i]));
        for a in ancestors {
            *counts.entry(a).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .filter(|(f, n)| *n > 1 && !unlistable.contains(*f))
        .max_by_key(|(f, n)| (f.matches('/').count(), *n))
        .map(|(f, _)| f.to_string())
}

/// What the render saw of a merged folder: its members' reads, at the
/// oldest of their indexes (so no later change is missed); None when one
/// of them was not read.
fn known_of(members: &[Query]) -> Option<Read<Arc<Content>>> {
    let mut index = u64::MAX;
    let mut content = Content::new();
    for m in members {
        let r = m.known.as_ref()?;
        index = index.min(r.index);
        content.extend(r.value.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Some(Read {
        index,
        value: Arc::new(content),
    })
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
pub(super) fn raw(
    values: &BTreeMap<String, String>,
    within: impl Fn(&str) -> bool,
) -> Arc<Content> {
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
            catalog: Default::default(),
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
    fn a_merged_folder_knows_what_it_stands_for() {
        let s = ConsulSource::new("kv", &ConsulConfig::new("127.0.0.1:8500")).unwrap();
        let spec = WatchSpec {
            keys: ["a/x".into(), "a/y".into(), "b/z".into()].into(),
            prefixes: ["a/sub".into(), "b".into()].into(),
            catalog: Default::default(),
        };
        let plan = s.plan(&spec);
        let members = |q: &Query| -> Vec<(String, bool)> {
            q.members
                .iter()
                .map(|m| (m.key.clone(), m.recurse))
                .collect()
        };
        // "a/" is stencil's merge of a/x, a/y and the prefix a/sub/.
        assert_eq!(plan[0].key, "a/");
        assert_eq!(
            members(&plan[0]),
            [
                ("a/sub/".to_string(), true),
                ("a/x".to_string(), false),
                ("a/y".to_string(), false),
            ]
        );
        // "b/" is what a template reads: a refusal there is a real error.
        assert_eq!(plan[1].key, "b/");
        assert!(plan[1].members.is_empty());
        assert_eq!(plan.len(), 2);
    }

    #[test]
    fn a_plan_over_the_bound_merges_the_deepest_shared_folders_first() {
        let mut config = ConsulConfig::new("127.0.0.1:8500");
        config.max_watch_queries = 3;
        let s = ConsulSource::new("kv", &config).unwrap();
        let spec = WatchSpec {
            keys: [
                "app/db/host".into(),
                "app/db/port".into(),
                "app/web/port".into(),
                "app/cache/size".into(),
                "other/x".into(),
                "top".into(),
            ]
            .into(),
            prefixes: ["app/feature".into()].into(),
            catalog: Default::default(),
        };
        let plan = s.plan(&spec);
        let shape: Vec<(String, bool)> = plan.iter().map(|q| (q.key.clone(), q.recurse)).collect();
        // Unbounded: app/db/, app/feature/, app/cache/size, app/web/port,
        // other/x, top (6). "app/" holds four of them: merged there, the
        // deepest folder holding more than one.
        assert_eq!(
            shape,
            [
                ("app/".to_string(), true),
                ("other/x".to_string(), false),
                ("top".to_string(), false),
            ]
        );
        // Should Consul refuse "app/", it splits into what the templates
        // read: the keys of app/db/ one by one, as a refused app/db/ would.
        let members: Vec<&str> = plan[0].members.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(
            members,
            [
                "app/db/host",
                "app/db/port",
                "app/feature/",
                "app/cache/size",
                "app/web/port"
            ]
        );

        // A bound of 1 watches the whole store in one query.
        let mut config = ConsulConfig::new("127.0.0.1:8500");
        config.max_watch_queries = 1;
        let s = ConsulSource::new("kv", &config).unwrap();
        let plan = s.plan(&spec);
        assert_eq!(plan.len(), 1);
        assert_eq!((plan[0].key.as_str(), plan[0].recurse), ("", true));
        assert_eq!(plan[0].members.len(), 7);

        // Within the bound, nothing is merged beyond the folder rule.
        let s = ConsulSource::new("kv", &ConsulConfig::new("127.0.0.1:8500")).unwrap();
        assert_eq!(s.plan(&spec).len(), 6);
    }
}
