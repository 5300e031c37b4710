//! The snapshot an etcd source answers templates from, kept between
//! batches and brought forward by the watch.
//!
//! Every value in it is valid at one revision (`revision`): reads that miss
//! it are pinned to that revision, and the watch's events after it are
//! queued (`pending`) and applied when the next batch starts
//! ([`Cache::advance`]), so a render never sees the snapshot move under it
//! and a change the watch reported costs no request: the event carried the
//! new value.
//!
//! The rules that keep it from going stale:
//! - an update applies only when it follows on from the snapshot's revision
//!   without a gap (a watch started later, or resumed after compaction,
//!   drops the snapshot: the next render reads afresh);
//! - what the stream that sent an update does not cover is dropped when the
//!   update applies (its revision moves on without them);
//! - a compaction, or a watch that lost its source, drops everything;
//! - a read that lands while events it may have needed were left out of
//!   the queue (they were for keys nobody had read) is answered but not
//!   kept.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// At most this many updates wait for the next batch; more (a batch that
/// does not come, a busy range) drop the snapshot instead of growing.
const MAX_PENDING: usize = 256;

/// A change the watch saw, for the snapshot.
#[derive(Debug)]
pub(super) enum Update {
    /// Every change with a revision in `from..=to` to keys starting with
    /// `prefix` was seen; `changes` holds those to keys the snapshot knew
    /// (full key, new value or `None` for a delete, revision).
    Changes {
        prefix: Arc<str>,
        from: i64,
        to: i64,
        changes: Vec<(String, Option<String>, i64)>,
    },
    /// Changes may have been missed: forget everything.
    Invalidate,
}

/// The snapshot: values by full etcd key, and the prefixes read whole.
#[derive(Debug, Default)]
pub(super) struct Cache {
    /// The revision every value here is valid at; `None` when empty.
    pub(super) revision: Option<i64>,
    /// Full etcd key -> value (`None`: missing or deleted) and the
    /// revision it is known at: an event applies only when it is newer, so
    /// a replayed older event never undoes a newer one.
    values: BTreeMap<String, (Option<String>, i64)>,
    /// Prefixes every key of which is in `values` (folders read whole, or
    /// the part of one a watch covers).
    complete: BTreeSet<String>,
    pending: Vec<Update>,
    /// The highest revision of an event left out of `pending` (its key was
    /// not known then), while it is above `revision`.
    skipped: i64,
    /// Grouped reads: distinct keys missed under each folder, and the
    /// folders found too big to read whole.
    pub(super) misses: HashMap<String, usize>,
    pub(super) too_big: HashSet<String>,
    /// A prefix every key of `values` is known to start with: the stream
    /// prefix an update last filtered them to. The next update of the same
    /// stream then need not look at every key again (with 10,000 keys that
    /// was most of a change's time in the coordinator).
    within: Option<String>,
}

/// Whether `prefix` (a string prefix of full keys) covers all of `within`.
fn holds(prefix: &str, within: &str) -> bool {
    within.starts_with(prefix)
}

impl Cache {
    /// The value of a full key: `Some(None)` when known missing, `None`
    /// when not known.
    pub(super) fn get(&self, key: &str) -> Option<Option<String>> {
        if let Some((v, _)) = self.values.get(key) {
            return Some(v.clone());
        }
        self.complete.iter().any(|p| holds(p, key)).then_some(None)
    }

    /// Every key under `folder` with its value, when the folder is known.
    pub(super) fn list(&self, folder: &str) -> Option<Vec<(String, String)>> {
        if !self.complete.iter().any(|p| holds(p, folder)) {
            return None;
        }
        Some(
            self.values
                .range(folder.to_string()..)
                .take_while(|(k, _)| k.starts_with(folder))
                .filter_map(|(k, (v, _))| Some((k.clone(), v.clone()?)))
                .collect(),
        )
    }

    /// Whether a read at `revision` may be kept: no event after it was
    /// left out of the queue.
    fn may_keep(&self, revision: i64) -> bool {
        self.revision == Some(revision) && self.skipped <= revision
    }

    /// Keeps one key read at `revision`.
    pub(super) fn insert_key(&mut self, key: String, value: Option<String>, revision: i64) {
        if self.may_keep(revision) {
            self.note_outside(&key);
            self.values.insert(key, (value, revision));
        }
    }

    /// Keeps a folder (or any string prefix) read whole at `revision`.
    pub(super) fn insert_folder(
        &mut self,
        folder: String,
        values: Vec<(String, String)>,
        revision: i64,
    ) {
        if !self.may_keep(revision) {
            return;
        }
        self.note_outside(&folder);
        let stale: Vec<String> = self
            .values
            .range(folder.clone()..)
            .take_while(|(k, _)| k.starts_with(&folder))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.values.remove(&k);
        }
        self.values
            .extend(values.into_iter().map(|(k, v)| (k, (Some(v), revision))));
        self.complete.insert(folder);
    }

    /// Whether the snapshot knows anything at or under `key`, so an event
    /// for it must be queued.
    fn knows(&self, key: &str) -> bool {
        self.values.contains_key(key) || self.complete.iter().any(|p| holds(p, key))
    }

    /// Queues what one watch response said: `events` (full key, value or
    /// `None`, revision) cover `from..=to` under `prefix`.
    pub(super) fn queue(
        &mut self,
        prefix: &Arc<str>,
        from: i64,
        to: i64,
        events: Vec<(String, Option<String>, i64)>,
    ) {
        let mut changes = Vec::new();
        for (key, value, rev) in events {
            if self.knows(&key) {
                changes.push((key, value, rev));
            } else {
                self.skipped = self.skipped.max(rev);
            }
        }
        // Runs of updates from one stream merge into one.
        if let Some(Update::Changes {
            prefix: p,
            to: last,
            changes: queued,
            ..
        }) = self.pending.last_mut()
            && p == prefix
            && *last + 1 >= from
        {
            *last = (*last).max(to);
            queued.extend(changes);
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.pending = vec![Update::Invalidate];
            return;
        }
        self.pending.push(Update::Changes {
            prefix: prefix.clone(),
            from,
            to,
            changes,
        });
    }

    /// Drops everything, at once and for whatever is queued.
    pub(super) fn invalidate(&mut self) {
        self.pending.push(Update::Invalidate);
        self.clear();
    }

    /// A key (or folder) about to be kept: `within` no longer holds if it
    /// does not start with it.
    fn note_outside(&mut self, key: &str) {
        if self.within.as_deref().is_some_and(|p| !holds(p, key)) {
            self.within = None;
        }
    }

    pub(super) fn clear(&mut self) {
        self.revision = None;
        self.within = None;
        self.values.clear();
        self.complete.clear();
        self.skipped = 0;
    }

    /// Starts a new snapshot: applies what the watch queued since the last.
    pub(super) fn advance(&mut self) {
        for update in std::mem::take(&mut self.pending) {
            match update {
                Update::Invalidate => self.clear(),
                Update::Changes {
                    prefix,
                    from,
                    to,
                    changes,
                } => self.apply(&prefix, from, to, changes),
            }
        }
        if self.revision.is_some_and(|r| self.skipped <= r) {
            self.skipped = 0;
        }
    }

    fn apply(
        &mut self,
        prefix: &str,
        from: i64,
        to: i64,
        changes: Vec<(String, Option<String>, i64)>,
    ) {
        let Some(revision) = self.revision else {
            return;
        };
        if to <= revision {
            return;
        }
        if from > revision + 1 {
            // A gap: what happened in between is unknown.
            tracing::debug!(
                "etcd snapshot at revision {revision} dropped: the watch went on from {from}"
            );
            self.clear();
            return;
        }
        // What the stream does not cover may change unseen from here on.
        if !self.within.as_deref().is_some_and(|p| holds(prefix, p)) {
            self.values.retain(|k, _| holds(prefix, k));
            self.within = Some(prefix.to_string());
        }
        self.complete = std::mem::take(&mut self.complete)
            .into_iter()
            .filter_map(|p| {
                if holds(prefix, &p) {
                    Some(p)
                } else if holds(&p, prefix) {
                    Some(prefix.to_string())
                } else {
                    None
                }
            })
            .collect();
        for (key, value, rev) in changes {
            if rev <= revision || !holds(prefix, &key) {
                continue;
            }
            match self.values.get_mut(&key) {
                Some(slot) if slot.1 < rev => *slot = (value, rev),
                Some(_) => {}
                None if self.complete.iter().any(|p| holds(p, &key)) => {
                    self.values.insert(key, (value, rev));
                }
                None => {}
            }
        }
        self.revision = Some(to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_at(revision: i64) -> Cache {
        let mut c = Cache {
            revision: Some(revision),
            ..Cache::default()
        };
        c.insert_key("/a/x".into(), Some("1".into()), revision);
        c.insert_folder(
            "/a/f/".into(),
            vec![("/a/f/1".into(), "one".into())],
            revision,
        );
        c
    }

    #[test]
    fn events_after_the_snapshot_update_it() {
        let mut c = cache_at(10);
        let p: Arc<str> = "/a/".into();
        c.queue(
            &p,
            11,
            12,
            vec![
                ("/a/x".into(), Some("2".into()), 11),
                ("/a/f/2".into(), Some("two".into()), 12),
                ("/a/f/1".into(), None, 12),
            ],
        );
        // Not before the next batch.
        assert_eq!(c.get("/a/x"), Some(Some("1".into())));
        c.advance();
        assert_eq!(c.revision, Some(12));
        assert_eq!(c.get("/a/x"), Some(Some("2".into())));
        assert_eq!(c.list("/a/f/").unwrap(), [("/a/f/2".into(), "two".into())]);
        assert_eq!(c.get("/a/f/1"), Some(None));
    }

    #[test]
    fn a_gap_drops_the_snapshot() {
        let mut c = cache_at(10);
        c.queue(
            &"/a/".into(),
            14,
            15,
            vec![("/a/x".into(), Some("3".into()), 15)],
        );
        c.advance();
        assert_eq!(c.revision, None);
        assert_eq!(c.get("/a/x"), None);
    }

    #[test]
    fn what_the_stream_does_not_cover_is_dropped() {
        let mut c = cache_at(10);
        c.insert_key("/b/y".into(), Some("b".into()), 10);
        c.queue(&"/a/f".into(), 11, 11, Vec::new());
        c.advance();
        assert_eq!(c.get("/b/y"), None);
        assert_eq!(c.get("/a/x"), None);
        assert!(c.list("/a/f/").is_some());
    }

    #[test]
    fn a_key_read_outside_the_stream_after_an_update_is_dropped_by_the_next() {
        let mut c = cache_at(10);
        let p: Arc<str> = "/a/".into();
        c.queue(&p, 11, 11, Vec::new());
        c.advance();
        // Read afresh between two updates of the same stream, outside it.
        c.insert_key("/b/y".into(), Some("b".into()), 11);
        c.insert_folder("/c/".into(), vec![("/c/1".into(), "one".into())], 11);
        c.queue(&p, 12, 12, Vec::new());
        c.advance();
        assert_eq!(c.get("/b/y"), None);
        assert_eq!(c.get("/c/1"), None);
        assert_eq!(c.get("/a/x"), Some(Some("1".into())));
    }

    #[test]
    fn a_read_racing_a_skipped_event_is_not_kept() {
        let mut c = cache_at(10);
        c.queue(
            &"/a/".into(),
            11,
            11,
            vec![("/a/new".into(), Some("n".into()), 11)],
        );
        // Read pinned at 10, after the event for it went by unqueued.
        c.insert_key("/a/new".into(), Some("old".into()), 10);
        assert_eq!(c.get("/a/new"), None);
        c.advance();
        c.insert_key("/a/new".into(), Some("n".into()), 11);
        assert_eq!(c.get("/a/new"), Some(Some("n".into())));
    }

    #[test]
    fn events_the_snapshot_already_has_are_not_applied_again() {
        let mut c = cache_at(10);
        c.queue(
            &"/a/".into(),
            9,
            10,
            vec![("/a/x".into(), Some("0".into()), 9)],
        );
        c.advance();
        assert_eq!(c.get("/a/x"), Some(Some("1".into())));
        assert_eq!(c.revision, Some(10));
    }
}
