//! The state store: entries, tombstones and the indexes Consul keeps
//! (agent/consul/state/kvs.go).

use std::collections::BTreeMap;

/// One KV pair as Consul stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    /// `None` is Consul's `"Value": null`, what an empty PUT body stores.
    pub value: Option<Vec<u8>>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub session: Option<String>,
}

impl Entry {
    pub fn value_str(&self) -> &str {
        std::str::from_utf8(self.value.as_deref().unwrap_or_default()).expect("UTF-8 value")
    }
}

/// The state store: entries, tombstones and the two indexes Consul keeps.
#[derive(Clone)]
pub(super) struct Store {
    /// The raft index: every write (even a failed CAS or a no-op) is a raft
    /// log entry and takes the next one.
    pub(super) raft: u64,
    /// The table index of "kvs" and "tombstones": the raft index of the last
    /// write that changed something. A missing key reports it.
    pub(super) table: u64,
    pub(super) entries: BTreeMap<String, Entry>,
    /// Deleted key -> index of its deletion. Consul keeps these so the index
    /// of a prefix does not slide backwards when its newest key is deleted.
    pub(super) tombstones: BTreeMap<String, u64>,
    /// Nodes, services and checks (catalog.rs), on the same raft log.
    pub(super) catalog: super::catalog::Catalog,
}

impl Store {
    pub(super) fn new() -> Store {
        // A fresh agent's raft log already has entries (elections, the
        // catalog); starting above 1 keeps clients from assuming the first
        // write gets index 1.
        Store {
            raft: 10,
            table: 0,
            entries: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            catalog: Default::default(),
        }
    }

    pub(super) fn next_index(&mut self) -> u64 {
        self.raft += 1;
        self.raft
    }

    /// PUT: `cas` None is a plain set; Some(0) only creates; Some(n) only
    /// updates an entry whose ModifyIndex is n. Whether it applied.
    pub(super) fn set(&mut self, key: &str, value: &[u8], flags: u64, cas: Option<u64>) -> bool {
        let idx = self.next_index();
        let existing = self.entries.get(key);
        match (cas, existing) {
            (Some(0), Some(_)) => return false,
            (Some(n), None) if n != 0 => return false,
            (Some(n), Some(e)) if n != 0 && e.modify_index != n => return false,
            _ => {}
        }
        let value = (!value.is_empty()).then(|| value.to_vec());
        if let Some(e) = existing {
            // kvsSetTxn: an entry equal to the stored one is not written,
            // so its ModifyIndex and the table index stay.
            if e.value == value && e.flags == flags {
                return true;
            }
        }
        let entry = Entry {
            key: key.to_string(),
            value,
            flags,
            create_index: existing.map_or(idx, |e| e.create_index),
            modify_index: idx,
            lock_index: existing.map_or(0, |e| e.lock_index),
            session: existing.and_then(|e| e.session.clone()),
        };
        self.entries.insert(key.to_string(), entry);
        self.table = idx;
        true
    }

    /// DELETE of one key; with `cas`, only if its ModifyIndex matches (a
    /// missing key "matches": Consul returns true).
    pub(super) fn delete(&mut self, key: &str, cas: Option<u64>) -> bool {
        let idx = self.next_index();
        if let Some(n) = cas {
            match self.entries.get(key) {
                None => return true,
                Some(e) if e.modify_index != n => return false,
                Some(_) => {}
            }
        }
        if self.entries.remove(key).is_some() {
            self.tombstones.insert(key.to_string(), idx);
            self.table = idx;
        }
        true
    }

    /// kvsDeleteTreeTxn: the keys go, and one tombstone is left at the
    /// prefix itself, not one per key (none when the prefix is "": every
    /// watcher then sees the table index).
    pub(super) fn delete_tree(&mut self, prefix: &str) {
        let idx = self.next_index();
        let doomed: Vec<String> = self.under(prefix).map(|e| e.key.clone()).collect();
        for key in &doomed {
            self.entries.remove(key);
        }
        if !doomed.is_empty() {
            if !prefix.is_empty() {
                self.tombstones.insert(prefix.to_string(), idx);
            }
            self.table = idx;
        }
    }

    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e)
    }

    /// KVS.Get: the entry's ModifyIndex, or the table index when missing.
    pub(super) fn get(&self, key: &str) -> (u64, Option<Entry>) {
        match self.entries.get(key) {
            Some(e) => (e.modify_index, Some(e.clone())),
            None => (self.table, None),
        }
    }

    /// KVS.List: the highest ModifyIndex or tombstone under the prefix,
    /// else the table index (and always the table index for prefix "").
    pub(super) fn list(&self, prefix: &str) -> (u64, Vec<Entry>) {
        let entries: Vec<Entry> = self.under(prefix).cloned().collect();
        let mut lindex = entries.iter().map(|e| e.modify_index).max().unwrap_or(0);
        if prefix.is_empty() {
            lindex = self.table;
        } else {
            let graveyard = self
                .tombstones
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, i)| *i)
                .max()
                .unwrap_or(0);
            lindex = lindex.max(graveyard);
        }
        let idx = if lindex != 0 { lindex } else { self.table };
        (idx, entries)
    }

    /// A snapshot restore that lowers every index (halved, rounded up, so
    /// order is kept and nothing reaches 0): what a client sees when the
    /// servers restore an older snapshot or a lagging server takes over.
    pub(super) fn rewind(&mut self) {
        let half = |i: u64| i.div_ceil(2);
        self.raft = half(self.raft);
        self.table = half(self.table);
        for e in self.entries.values_mut() {
            e.create_index = half(e.create_index);
            e.modify_index = half(e.modify_index);
        }
        for i in self.tombstones.values_mut() {
            *i = half(*i);
        }
    }
}
