//! The snapshot a Consul source answers templates from, kept between
//! batches and brought forward by the watch's answers: a blocking query's
//! reply is the new content of what it watches, so the render a change
//! causes reads it without asking Consul again.
//!
//! Replies are queued and applied when the next batch starts
//! ([`Cache::advance`]), so the snapshot never moves under a render. Each
//! cached read keeps the `X-Consul-Index` it was valid at; a reply replaces
//! it only when its index is at least that (a reply with index X reflects
//! every write up to raft index X of what it covers), and else drops it
//! (an index that went backwards: a snapshot restore), to be read again.
//! What no query of the running watch covers is dropped when the watch
//! starts, and a query that fails drops everything: changes made while it
//! was away are read afresh.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::plan::{Content, Query};
use super::{Cache, in_folder};

/// At most this many replies wait for the next batch (one per query is
/// kept); more drop the snapshot instead of growing.
const MAX_PENDING: usize = 1024;

/// What the watch saw, for the snapshot.
pub(super) enum Update {
    /// A query's answer: the whole content of a key or a folder at `index`.
    Reply {
        key: String,
        recurse: bool,
        index: u64,
        content: Arc<Content>,
    },
    /// Changes may have been missed: forget everything.
    Invalidate,
}

/// Without the values: a Debug print must not leak them.
impl fmt::Debug for Update {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Update::Reply {
                key,
                recurse,
                index,
                ..
            } => write!(f, "Reply({key:?}, recurse: {recurse}, index: {index})"),
            Update::Invalidate => write!(f, "Invalidate"),
        }
    }
}

/// A raw value as the snapshot holds it; `None` when it is not UTF-8 (a
/// fresh read reports that).
fn text(raw: &[u8]) -> Option<String> {
    String::from_utf8(raw.to_vec()).ok()
}

impl Cache {
    /// Queues a query's answer, replacing an older answer of the same
    /// query.
    pub(super) fn queue(&mut self, update: Update) {
        if let Update::Reply { key, recurse, .. } = &update
            && let Some(slot) = self.pending.iter_mut().find(|u| {
                matches!(u, Update::Reply { key: k, recurse: r, .. } if k == key && r == recurse)
            })
        {
            *slot = update;
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.pending.clear();
            self.pending.push(Update::Invalidate);
            return;
        }
        self.pending.push(update);
    }

    /// Drops everything, at once and for whatever is queued.
    pub(super) fn invalidate(&mut self) {
        self.pending.push(Update::Invalidate);
        self.folders.clear();
        self.keys.clear();
        self.catalog.clear();
    }

    /// Starts a new snapshot: applies the answers queued since the last.
    pub(super) fn advance(&mut self) {
        // A catalog watch says that an answer changed, not what it is now.
        self.catalog.clear();
        for update in std::mem::take(&mut self.pending) {
            match update {
                Update::Invalidate => {
                    self.folders.clear();
                    self.keys.clear();
                }
                Update::Reply {
                    key,
                    recurse: true,
                    index,
                    content,
                } => self.apply_folder(&key, index, &content),
                Update::Reply {
                    key,
                    recurse: false,
                    index,
                    content,
                } => self.apply_key(&key, index, content.get(&key).map(Vec::as_slice)),
            }
        }
    }

    /// The answer for `folder` at `index` holding `content`.
    fn apply_folder(&mut self, folder: &str, index: u64, content: &Content) {
        let within = |k: &str| in_folder(folder, k);
        let fresh = |keep: &dyn Fn(&str) -> bool| -> Option<BTreeMap<String, String>> {
            content
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| Some((k.clone(), text(v)?)))
                .collect()
        };
        self.folders.retain(|g, read| {
            if read.index > index {
                // Newer than this answer (or the index went backwards):
                // read again.
                return !(in_folder(folder, g) || in_folder(g, folder));
            }
            if in_folder(folder, g) {
                // Inside the answer: replaced whole.
                match fresh(&|k| in_folder(g, k)) {
                    Some(values) => {
                        read.value = values;
                        read.index = index;
                        true
                    }
                    None => false,
                }
            } else if in_folder(g, folder) {
                // Holds the answer: its part under `folder` is replaced; its
                // index stays, the oldest of what it holds.
                let Some(values) = fresh(&within) else {
                    return false;
                };
                read.value.retain(|k, _| !within(k));
                read.value.extend(values);
                true
            } else {
                true
            }
        });
        self.keys.retain(|k, read| {
            if !within(k) {
                return true;
            }
            if read.index > index {
                return false;
            }
            match content.get(k) {
                None => read.value = None,
                Some(v) => match text(v) {
                    Some(v) => read.value = Some(v),
                    None => return false,
                },
            }
            read.index = index;
            true
        });
    }

    /// The answer for one key at `index`: its raw value, `None` when
    /// missing.
    fn apply_key(&mut self, key: &str, index: u64, raw: Option<&[u8]>) {
        let value = match raw.map(text) {
            Some(None) => {
                // Not UTF-8: read again, which reports it.
                self.keys.remove(key);
                self.folders.retain(|g, _| !in_folder(g, key));
                return;
            }
            Some(Some(v)) => Some(v),
            None => None,
        };
        if let Some(read) = self.keys.get_mut(key) {
            if read.index > index {
                self.keys.remove(key);
            } else {
                read.value.clone_from(&value);
                read.index = index;
            }
        }
        self.folders.retain(|g, read| {
            if !in_folder(g, key) {
                return true;
            }
            if read.index > index {
                return false;
            }
            match &value {
                Some(v) => read.value.insert(key.to_string(), v.clone()),
                None => read.value.remove(key),
            };
            true
        });
    }

    /// Drops what no query of a new watch covers: nothing would tell when
    /// it changes.
    pub(super) fn retain_covered(&mut self, queries: &[Query]) {
        let covers = |k: &str| {
            queries.iter().any(|q| {
                if q.recurse {
                    in_folder(&q.key, k)
                } else {
                    q.key == k
                }
            })
        };
        self.folders
            .retain(|g, _| queries.iter().any(|q| q.recurse && in_folder(&q.key, g)));
        self.keys.retain(|k, _| covers(k));
    }
}

#[cfg(test)]
mod tests {
    use super::super::Read;
    use super::*;

    fn cache() -> Cache {
        let mut c = Cache::default();
        c.keys.insert(
            "a/x".into(),
            Read {
                index: 10,
                value: Some("1".into()),
            },
        );
        c.folders.insert(
            "f/".into(),
            Read {
                index: 10,
                value: [("f/1".to_string(), "one".to_string())].into(),
            },
        );
        c
    }

    fn reply(key: &str, recurse: bool, index: u64, content: &[(&str, &str)]) -> Update {
        Update::Reply {
            key: key.into(),
            recurse,
            index,
            content: Arc::new(
                content
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn answers_update_the_snapshot_at_the_next_batch() {
        let mut c = cache();
        c.queue(reply("a/x", false, 11, &[("a/x", "2")]));
        c.queue(reply("f/", true, 12, &[("f/2", "two")]));
        assert_eq!(c.keys["a/x"].value.as_deref(), Some("1"));
        c.advance();
        assert_eq!(c.keys["a/x"].value.as_deref(), Some("2"));
        assert_eq!(
            c.folders["f/"].value,
            BTreeMap::from([("f/2".to_string(), "two".to_string())])
        );
    }

    #[test]
    fn an_older_answer_drops_what_it_would_have_replaced() {
        let mut c = cache();
        c.queue(reply("a/x", false, 5, &[("a/x", "restored")]));
        c.queue(reply("f/", true, 6, &[]));
        c.advance();
        assert!(c.keys.is_empty());
        assert!(c.folders.is_empty());
    }

    #[test]
    fn a_key_answer_updates_the_folder_holding_it() {
        let mut c = cache();
        c.queue(reply("f/1", false, 11, &[]));
        c.advance();
        assert!(c.folders["f/"].value.is_empty());
    }
}
