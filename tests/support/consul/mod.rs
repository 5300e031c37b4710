//! A Consul KV test server, written from Consul's HTTP API documentation
//! (api-docs/kv, api-docs/features/blocking, api-docs/features/consistency,
//! api-docs/api-structure) and, where the docs are silent, from Consul's own
//! source (agent/kvs_endpoint.go, agent/consul/kvs_endpoint.go,
//! agent/consul/state/kvs.go, agent/http.go, acl/errors.go). No Consul agent
//! can be installed on this project's machines, so this is what the Consul
//! source is tested against; `ConsulTarget` runs the same tests against a
//! real Consul when `STENCIL_TEST_CONSUL_ADDR` is set.
//!
//! ```ignore
//! let consul = ConsulServer::start();            // 127.0.0.1:<free port>, stops on drop
//! consul.put("apps/web/port", "8080");           // -> ModifyIndex, bypasses ACLs and faults
//! let url = consul.addr();                       // "http://127.0.0.1:PORT"
//! consul.wait_parked(1);                         // a blocking query is now waiting
//! consul.put("apps/web/port", "9090");           // ... and returns at once
//! assert_eq!(consul.kv_requests().len(), 2);     // every request is recorded
//! consul.fail_next(2);                           // faults, switchable at runtime
//! ```
//!
//! Faithful: the JSON shape and field order, base64 `Value` (null for an
//! empty value), CreateIndex/ModifyIndex/LockIndex, a PUT of identical
//! value and flags keeping its ModifyIndex, `?recurse`, `?keys` with
//! `separator` folding, `?raw`, `?cas`, `?flags`, DELETE with `?recurse` and
//! `?cas`, X-Consul-Index (never 0) on every read reply including a 404,
//! the index rules of the state store (a key: its ModifyIndex, or the KV
//! table index when missing; a prefix: the highest ModifyIndex or tombstone
//! under it, or the table index when there is neither), blocking queries
//! (default wait 5m, capped at 10m, plus up to wait/16 of jitter; index 0
//! never blocks), ACL tokens from `?token=`, `X-Consul-Token` or
//! `Authorization: Bearer` in that order, 403 bodies "Permission denied" and
//! "ACL not found", reads of a prefix filtered by ACL (not denied) with
//! `X-Consul-Results-Filtered-By-ACLs`, `?dc=` ("No path to datacenter" for
//! another one), `?stale`/`?consistent` with X-Consul-Effective-Consistency,
//! 400s for a bad `wait` or `index`, 413 above 512 KiB.
//!
//! Blocking queries wake on every KV change, as Consul's watch sets may,
//! re-evaluate, and return only when the index of what they read moved past
//! `index` (or the wait expired). So an unrelated change never returns a
//! reply, but a query on a *missing* key or an empty prefix does return on
//! any KV write, because its index is the table index: that is Consul's
//! behaviour too.
//!
//! Simplified: one datacenter ("dc1"), one always-known leader, no
//! sessions or locks (`acquire`/`release` are refused), no namespaces or
//! partitions, no `/v1/txn`, no `enable_key_list_policy`, ACL default policy
//! is deny, tombstones are kept until `reap_tombstones()`. Error replies
//! (400, 403, 500) carry no X-Consul-Index, as in Consul. The newest
//! Consul's key-name validation (only `[A-Za-z0-9,-_./]`, no ".json" suffix)
//! is not copied: older releases accept any key.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::serve::IncomingStream;
use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// The only datacenter the test server knows.
pub const DATACENTER: &str = "dc1";
/// Consul's `defaultQueryTime`: the wait of a blocking query without `wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Consul's `maxQueryTime`: longer waits are cut to this.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// Consul's default `kv_max_value_size`.
pub const MAX_VALUE_SIZE: usize = 512 * 1024;
/// How long the `wait_*` helpers poll before they fail a test. Generous, so
/// a loaded CI machine never makes a test flaky.
pub const TEST_DEADLINE: Duration = Duration::from_secs(30);

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

// ---------------------------------------------------------------- the store

/// The state store: entries, tombstones and the two indexes Consul keeps.
struct Store {
    /// The raft index: every write (even a failed CAS or a no-op) is a raft
    /// log entry and takes the next one.
    raft: u64,
    /// The table index of "kvs" and "tombstones": the raft index of the last
    /// write that changed something. A missing key reports it.
    table: u64,
    entries: BTreeMap<String, Entry>,
    /// Deleted key -> index of its deletion. Consul keeps these so the index
    /// of a prefix does not slide backwards when its newest key is deleted.
    tombstones: BTreeMap<String, u64>,
}

impl Store {
    fn new() -> Store {
        // A fresh agent's raft log already has entries (elections, the
        // catalog); starting above 1 keeps clients from assuming the first
        // write gets index 1.
        Store {
            raft: 10,
            table: 0,
            entries: BTreeMap::new(),
            tombstones: BTreeMap::new(),
        }
    }

    fn next_index(&mut self) -> u64 {
        self.raft += 1;
        self.raft
    }

    /// PUT: `cas` None is a plain set; Some(0) only creates; Some(n) only
    /// updates an entry whose ModifyIndex is n. Whether it applied.
    fn set(&mut self, key: &str, value: &[u8], flags: u64, cas: Option<u64>) -> bool {
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
    fn delete(&mut self, key: &str, cas: Option<u64>) -> bool {
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

    fn delete_tree(&mut self, prefix: &str) {
        let idx = self.next_index();
        let doomed: Vec<String> = self.under(prefix).map(|e| e.key.clone()).collect();
        for key in &doomed {
            self.entries.remove(key);
            self.tombstones.insert(key.clone(), idx);
        }
        if !doomed.is_empty() {
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
    fn get(&self, key: &str) -> (u64, Option<Entry>) {
        match self.entries.get(key) {
            Some(e) => (e.modify_index, Some(e.clone())),
            None => (self.table, None),
        }
    }

    /// KVS.List: the highest ModifyIndex or tombstone under the prefix,
    /// else the table index (and always the table index for prefix "").
    fn list(&self, prefix: &str) -> (u64, Vec<Entry>) {
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
    fn rewind(&mut self) {
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

// --------------------------------------------------------------------- ACLs

/// An ACL rule's access level, as in `key_prefix "apps/" { policy = "read" }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Deny,
    Read,
    List,
    Write,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Deny => "deny",
            Policy::Read => "read",
            Policy::List => "list",
            Policy::Write => "write",
        }
    }
}

/// A `key` (exact) or `key_prefix` rule of a Consul ACL policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub prefix: bool,
    pub key: String,
    pub policy: Policy,
}

impl Rule {
    pub fn key(key: &str, policy: Policy) -> Rule {
        Rule {
            prefix: false,
            key: key.to_string(),
            policy,
        }
    }

    pub fn key_prefix(prefix: &str, policy: Policy) -> Rule {
        Rule {
            prefix: true,
            key: prefix.to_string(),
            policy,
        }
    }

    /// The rule in Consul's HCL policy language, its key under `root`.
    pub fn hcl(&self, root: &str) -> String {
        let kind = if self.prefix { "key_prefix" } else { "key" };
        format!(
            "{kind} \"{root}{}\" {{ policy = \"{}\" }}\n",
            self.key,
            self.policy.name()
        )
    }
}

/// ACL configuration: `default_policy = "deny"`, a management token, and
/// tokens with rules. Requests without a token get the anonymous token's
/// rules (none unless given).
#[derive(Clone, Debug, Default)]
pub struct Acl {
    management: String,
    tokens: HashMap<String, Vec<Rule>>,
    anonymous: Vec<Rule>,
}

impl Acl {
    pub fn new(management_token: &str) -> Acl {
        Acl {
            management: management_token.to_string(),
            ..Acl::default()
        }
    }

    /// `Acl::new("root").token("ro", [Rule::key_prefix("apps/", Policy::Read)])`
    pub fn token(mut self, secret: &str, rules: impl IntoIterator<Item = Rule>) -> Acl {
        self.tokens
            .insert(secret.to_string(), rules.into_iter().collect());
        self
    }

    pub fn anonymous(mut self, rules: impl IntoIterator<Item = Rule>) -> Acl {
        self.anonymous = rules.into_iter().collect();
        self
    }

    /// The authorizer for a request's token; Err is the 403 body.
    fn resolve(&self, token: &str) -> Result<Authz, &'static str> {
        if token.is_empty() {
            Ok(Authz::Rules(self.anonymous.clone()))
        } else if token == self.management {
            Ok(Authz::All)
        } else {
            self.tokens
                .get(token)
                .map(|r| Authz::Rules(r.clone()))
                .ok_or(ACL_NOT_FOUND)
        }
    }
}

const PERMISSION_DENIED: &str = "Permission denied";
const ACL_NOT_FOUND: &str = "ACL not found";

enum Authz {
    All,
    Rules(Vec<Rule>),
}

impl Authz {
    /// An exact `key` rule wins; else the longest matching `key_prefix`;
    /// else the default policy, deny.
    fn policy(&self, key: &str) -> Policy {
        let rules = match self {
            Authz::All => return Policy::Write,
            Authz::Rules(r) => r,
        };
        if let Some(r) = rules.iter().find(|r| !r.prefix && r.key == key) {
            return r.policy;
        }
        rules
            .iter()
            .filter(|r| r.prefix && key.starts_with(&r.key))
            .max_by_key(|r| r.key.len())
            .map_or(Policy::Deny, |r| r.policy)
    }

    fn read(&self, key: &str) -> bool {
        self.policy(key) != Policy::Deny
    }

    fn write(&self, key: &str) -> bool {
        self.policy(key) == Policy::Write
    }

    /// KeyWritePrefix: write on the prefix and on every rule beneath it.
    fn write_prefix(&self, prefix: &str) -> bool {
        let Authz::Rules(rules) = self else {
            return true;
        };
        let own = rules
            .iter()
            .filter(|r| r.prefix && prefix.starts_with(&r.key))
            .max_by_key(|r| r.key.len())
            .map_or(Policy::Deny, |r| r.policy);
        own == Policy::Write
            && rules
                .iter()
                .filter(|r| r.key.starts_with(prefix))
                .all(|r| r.policy == Policy::Write)
    }
}

// -------------------------------------------------------- requests, faults

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Percent-decoded, e.g. "/v1/kv/apps/web/a".
    pub path: String,
    /// The raw query string, e.g. "recurse&index=42&wait=1s".
    pub query: String,
    /// The decoded query parameters, in order; a flag like `recurse` has "".
    pub params: Vec<(String, String)>,
    /// The ACL token it carried, from whichever place Consul reads it.
    pub token: Option<String>,
    pub at: Instant,
    /// None while in flight, and for a dropped connection.
    pub status: Option<u16>,
    pub finished: Option<Instant>,
    /// The connection was closed without a reply (a fault).
    pub dropped: bool,
}

impl Request {
    /// The key (or prefix) of a `/v1/kv/` request.
    pub fn key(&self) -> Option<&str> {
        self.path.strip_prefix("/v1/kv/")
    }

    pub fn has(&self, name: &str) -> bool {
        self.params.iter().any(|(k, _)| k == name)
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `index` of a blocking query, if it is one (`index` > 0).
    pub fn blocking_index(&self) -> Option<u64> {
        self.param("index")
            .and_then(|i| i.parse().ok())
            .filter(|i| *i > 0)
    }
}

#[derive(Default)]
struct Faults {
    fail: usize,
    fail_status: u16,
    fail_body: String,
    delay: Duration,
    drop: usize,
}

struct Shared {
    store: Mutex<Store>,
    /// Bumped on every KV change (and restore): wakes blocking queries.
    changes: watch::Sender<u64>,
    /// Bumped by `drop_parked_connections`.
    kill_parked: watch::Sender<u64>,
    acl: Mutex<Option<Acl>>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<Request>>,
    /// Requests removed from `log` by `clear_requests`: ids count from the
    /// first request ever, so a query in flight across a clear finishes
    /// its own entry (or none), never another's.
    cleared: AtomicUsize,
    parked: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding a lock must not hide the real
    // failure behind a poison error in every other call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Applies a write from the test (or a request) and wakes the watchers.
    fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let r = f(&mut lock(&self.store));
        self.changes.send_modify(|n| *n += 1);
        r
    }

    fn finish(&self, id: usize, status: Option<u16>) {
        let mut log = lock(&self.log);
        let Some(entry) = id
            .checked_sub(self.cleared.load(Ordering::SeqCst))
            .and_then(|i| log.get_mut(i))
        else {
            return;
        };
        entry.finished = Some(Instant::now());
        entry.status = status;
        entry.dropped = status.is_none();
    }
}

// ------------------------------------------------------------ the server

/// The Consul KV test server; see the module documentation.
pub struct ConsulServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ConsulServer {
    /// Starts a server without ACLs on 127.0.0.1 and a free port, on a
    /// thread with its own runtime. It stops when dropped.
    pub fn start() -> ConsulServer {
        Self::launch(None)
    }

    /// Starts a server with ACLs enabled, default policy deny.
    pub fn with_acl(acl: Acl) -> ConsulServer {
        Self::launch(Some(acl))
    }

    fn launch(acl: Option<Acl>) -> ConsulServer {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            changes: watch::channel(0).0,
            kill_parked: watch::channel(0).0,
            acl: Mutex::new(acl),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
            cleared: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
        });
        // Bound here, so the address is known before start() returns and
        // the first request can never race the bind.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("consul-test-server-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    let listener = KillListener(
                        tokio::net::TcpListener::from_std(std_listener).expect("tokio listener"),
                    );
                    let serve =
                        axum::serve(listener, app.into_make_service_with_connect_info::<Conn>());
                    tokio::select! {
                        _ = async { serve.await } => {}
                        _ = rx => {}
                    }
                });
                // Parked blocking queries would otherwise hold the runtime
                // for up to ten minutes.
                rt.shutdown_background();
            })
            .expect("spawn server thread");
        ConsulServer {
            shared,
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// "http://127.0.0.1:PORT"
    pub fn addr(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `addr()` + "/v1/kv/" + key + "?" + query (no "?" when query is "").
    pub fn url(&self, key: &str, query: &str) -> String {
        kv_url(&self.addr(), key, query)
    }

    pub fn management_token(&self) -> Option<String> {
        lock(&self.shared.acl)
            .as_ref()
            .map(|a| a.management.clone())
    }

    // --- data, bypassing ACLs and faults; each write is one raft entry

    /// Sets a key; returns its ModifyIndex afterwards.
    pub fn put(&self, key: &str, value: impl AsRef<[u8]>) -> u64 {
        self.put_flags(key, value, 0)
    }

    pub fn put_flags(&self, key: &str, value: impl AsRef<[u8]>, flags: u64) -> u64 {
        self.shared.write(|s| {
            s.set(key, value.as_ref(), flags, None);
            s.entries[key].modify_index
        })
    }

    /// Many keys, each its own write, with one wake-up for watchers (10,000
    /// keys load in milliseconds).
    pub fn put_many<K: AsRef<str>, V: AsRef<[u8]>>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> u64 {
        self.shared.write(|s| {
            for (k, v) in pairs {
                s.set(k.as_ref(), v.as_ref(), 0, None);
            }
            s.raft
        })
    }

    /// Deletes a key; returns the raft index of the delete.
    pub fn delete(&self, key: &str) -> u64 {
        self.shared.write(|s| {
            s.delete(key, None);
            s.raft
        })
    }

    /// Deletes every key starting with `prefix`; returns the raft index.
    pub fn delete_tree(&self, prefix: &str) -> u64 {
        self.shared.write(|s| {
            s.delete_tree(prefix);
            s.raft
        })
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        lock(&self.shared.store).get(key).1
    }

    /// The entries under a prefix and the index a recursive read returns.
    pub fn list(&self, prefix: &str) -> (u64, Vec<Entry>) {
        lock(&self.shared.store).list(prefix)
    }

    /// The current raft index.
    pub fn raft_index(&self) -> u64 {
        lock(&self.shared.store).raft
    }

    /// Forgets the tombstones (Consul reaps them after `tombstone_ttl`): the
    /// index of a prefix whose newest change was a delete goes backwards,
    /// one of the documented reasons clients must reset their index.
    pub fn reap_tombstones(&self) {
        self.shared.write(|s| {
            let idx = s.next_index();
            if !s.tombstones.is_empty() {
                s.tombstones.clear();
                s.table = idx;
            }
        })
    }

    pub fn add_token(&self, secret: &str, rules: impl IntoIterator<Item = Rule>) {
        let mut acl = lock(&self.shared.acl);
        let acl = acl.as_mut().expect("server started without ACLs");
        acl.tokens
            .insert(secret.to_string(), rules.into_iter().collect());
    }

    /// Deletes a token: its next request gets 403 "ACL not found".
    pub fn remove_token(&self, secret: &str) {
        if let Some(acl) = lock(&self.shared.acl).as_mut() {
            acl.tokens.remove(secret);
        }
    }

    // --- requests

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.log).clone()
    }

    /// The requests to `/v1/kv/`.
    pub fn kv_requests(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.key().is_some())
            .collect()
    }

    pub fn clear_requests(&self) {
        let mut log = lock(&self.shared.log);
        self.shared.cleared.fetch_add(log.len(), Ordering::SeqCst);
        log.clear();
    }

    /// Polls until `pred` holds for the request log, failing the test after
    /// `TEST_DEADLINE`; returns the log.
    #[track_caller]
    pub fn wait_until(&self, what: &str, pred: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        let deadline = Instant::now() + TEST_DEADLINE;
        loop {
            let log = self.requests();
            if pred(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "consul test server: gave up waiting for {what}; requests: {log:#?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until at least `n` requests arrived.
    #[track_caller]
    pub fn wait_for_requests(&self, n: usize) -> Vec<Request> {
        self.wait_until(&format!("{n} requests"), |log| log.len() >= n)
    }

    /// Blocking queries currently waiting for a change.
    pub fn parked(&self) -> usize {
        self.shared.parked.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` blocking queries are waiting for a change:
    /// a write after this is certain to be seen by them as a change, so
    /// tests need no sleeps.
    #[track_caller]
    pub fn wait_parked(&self, n: usize) {
        let deadline = Instant::now() + TEST_DEADLINE;
        while self.parked() < n {
            assert!(
                Instant::now() < deadline,
                "consul test server: {} blocking queries parked, wanted {n}; requests: {:#?}",
                self.parked(),
                self.requests()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    // --- faults

    /// The next `n` requests get 500 "No cluster leader", what Consul
    /// answers while it has no leader.
    pub fn fail_next(&self, n: usize) {
        self.fail_next_with(n, 500, "No cluster leader");
    }

    pub fn fail_next_with(&self, n: usize, status: u16, body: &str) {
        let mut f = lock(&self.shared.faults);
        f.fail = n;
        f.fail_status = status;
        f.fail_body = body.to_string();
    }

    /// Every reply from now on is held back by `d` (`Duration::ZERO` ends it).
    pub fn delay(&self, d: Duration) {
        lock(&self.shared.faults).delay = d;
    }

    /// The next request's connection is closed without a reply.
    pub fn drop_next_connection(&self) {
        self.drop_next_connections(1);
    }

    pub fn drop_next_connections(&self, n: usize) {
        lock(&self.shared.faults).drop = n;
    }

    /// Closes the connections of the blocking queries waiting now, without
    /// a reply: a server restart or a network cut in the middle of a query.
    pub fn drop_parked_connections(&self) {
        self.shared.kill_parked.send_modify(|n| *n += 1);
    }

    /// Every index goes backwards, as after a snapshot restore: the raft
    /// index and each entry's and tombstone's indexes are halved (rounded
    /// up), so the next reply reports an X-Consul-Index lower than before
    /// and later writes continue from there. Blocking queries re-evaluate
    /// and, as in Consul, go on waiting while the index is not above theirs:
    /// a client that does not reset its index to 0 waits out its `wait`.
    pub fn index_goes_backwards(&self) {
        self.shared.write(Store::rewind);
    }
}

impl Drop for ConsulServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------- connections that can be cut

/// Per-connection switch: once killed, the connection's reads and writes
/// fail, so hyper closes the socket without writing the reply. axum has no
/// other way to drop a connection from a handler.
#[derive(Default)]
struct ConnCtl {
    killed: AtomicBool,
}

#[derive(Clone)]
struct Conn {
    ctl: Arc<ConnCtl>,
}

// axum::serve wants the listener's address type printable.
impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

impl Conn {
    fn kill(&self) {
        self.ctl.killed.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, KillListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, KillListener>) -> Self {
        stream.remote_addr().clone()
    }
}

struct KillListener(tokio::net::TcpListener);

impl axum::serve::Listener for KillListener {
    type Io = ConnIo;
    type Addr = Conn;

    async fn accept(&mut self) -> (ConnIo, Conn) {
        loop {
            match self.0.accept().await {
                Ok((sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    let ctl = Arc::new(ConnCtl::default());
                    return (
                        ConnIo {
                            inner: sock,
                            ctl: ctl.clone(),
                        },
                        Conn { ctl },
                    );
                }
                // EMFILE and friends: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Conn> {
        self.0.local_addr().map(|_| Conn {
            ctl: Arc::default(),
        })
    }
}

struct ConnIo {
    inner: tokio::net::TcpStream,
    ctl: Arc<ConnCtl>,
}

impl ConnIo {
    fn killed(&self) -> Option<io::Error> {
        self.ctl
            .killed
            .load(Ordering::SeqCst)
            .then(|| io::Error::from(io::ErrorKind::ConnectionAborted))
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ----------------------------------------------------------------- HTTP

fn reply(status: u16, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .body(body.into())
        .unwrap()
}

fn text(status: u16, body: &str) -> Response {
    let mut r = reply(status, body.to_string());
    r.headers_mut()
        .insert("content-type", "text/plain; charset=utf-8".parse().unwrap());
    r
}

fn json(status: u16, value: &impl serde::Serialize, pretty: bool) -> Response {
    let body = if pretty {
        serde_json::to_string_pretty(value).unwrap() + "\n"
    } else {
        serde_json::to_string(value).unwrap()
    };
    let mut r = reply(status, body);
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// Go's url.ParseQuery, loosely: `a&b=c` -> [("a",""),("b","c")], with
/// `+` as space and %XX decoded.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(hex) = b.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("-"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's time.ParseDuration: "5s", "1m30s", "1.5h", "250ms"; "0" alone
/// needs no unit. Negative durations read as zero (the default wait).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..end];
        if number.is_empty() || number == "." {
            return None;
        }
        let v: f64 = number.parse().ok()?;
        rest = &rest[end..];
        let end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        nanos += v * unit;
        rest = &rest[end..];
    }
    Some(if neg {
        Duration::ZERO
    } else {
        Duration::from_nanos(nanos as u64)
    })
}

/// How long a blocking query with this `wait` is held at most: the wait
/// (default 5m, at most 10m) plus a random stagger of up to wait/16, as
/// Consul's blockingQuery does.
pub fn query_timeout(wait: Option<Duration>) -> Duration {
    use std::hash::BuildHasher;
    let base = match wait {
        Some(w) if w > MAX_WAIT => MAX_WAIT,
        Some(w) if !w.is_zero() => w,
        _ => DEFAULT_WAIT,
    };
    let span = (base / 16).as_nanos() as u64;
    // RandomState is seeded randomly: jitter without a dependency.
    let r = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    base + Duration::from_nanos(if span == 0 { 0 } else { r % span })
}

/// The token, from where Consul's parseTokenInternal looks, in its order.
fn token_of(params: &[(String, String)], headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    if let Some((_, t)) = params.iter().find(|(k, v)| k == "token" && !v.is_empty()) {
        return Some(t.clone());
    }
    if let Some(t) = header("x-consul-token") {
        return Some(t.to_string());
    }
    let auth = header("authorization")?;
    let (scheme, value) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    value.split_whitespace().next().map(str::to_string)
}

struct Query {
    params: Vec<(String, String)>,
}

impl Query {
    /// conflictingFlags' body: "Conflicting flags: " and Go's
    /// url.Values.Encode() (sorted by key).
    fn conflicting(&self) -> String {
        let mut pairs: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{}={}", encode_key(k), encode_key(v)))
            .collect();
        pairs.sort();
        format!("Conflicting flags: {}\n", pairs.join("&"))
    }

    fn has(&self, name: &str) -> bool {
        self.params.iter().any(|(k, _)| k == name)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn handle(
    State(srv): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    req: axum::extract::Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let path = percent_decode(parts.uri.path());
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let params = parse_query(&raw_query);
    let token = token_of(&params, &parts.headers);
    let id = {
        let mut log = lock(&srv.log);
        log.push(Request {
            method: parts.method.to_string(),
            path: path.clone(),
            query: raw_query,
            params: params.clone(),
            token: token.clone(),
            at: Instant::now(),
            status: None,
            finished: None,
            dropped: false,
        });
        srv.cleared.load(Ordering::SeqCst) + log.len() - 1
    };

    let (drop, fail, delay) = {
        let mut f = lock(&srv.faults);
        let drop = f.drop > 0;
        f.drop -= usize::from(drop);
        let fail = (!drop && f.fail > 0).then(|| (f.fail_status, f.fail_body.clone()));
        f.fail -= usize::from(fail.is_some());
        (drop, fail, f.delay)
    };
    if drop {
        conn.kill();
        srv.finish(id, None);
        // Never written: the killed connection fails the write.
        return reply(500, "");
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let response = match fail {
        Some((status, body)) => text(status, &body),
        None => {
            let body = match axum::body::to_bytes(body, usize::MAX).await {
                Ok(b) => b.to_vec(),
                Err(_) => {
                    srv.finish(id, None);
                    return reply(400, "");
                }
            };
            let q = Query { params };
            match route(&srv, &parts.method, &path, &q, token, body).await {
                Some(r) => r,
                None => {
                    conn.kill();
                    srv.finish(id, None);
                    return reply(500, "");
                }
            }
        }
    };
    srv.finish(id, Some(response.status().as_u16()));
    response
}

/// None: drop the connection (a parked query cut by the test).
async fn route(
    srv: &Shared,
    method: &Method,
    path: &str,
    q: &Query,
    token: Option<String>,
    body: Vec<u8>,
) -> Option<Response> {
    if path == "/v1/status/leader" {
        return Some(json(200, &"127.0.0.1:8300", q.has("pretty")));
    }
    let Some(key) = path.strip_prefix("/v1/kv/") else {
        return Some(text(404, "404 page not found\n"));
    };
    // agent/http.go parse(): consistency, then wait, then index; the
    // datacenter and the token only matter once the RPC is made.
    if q.has("stale") && q.has("consistent") {
        return Some(text(
            400,
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ));
    }
    let wait = match q.get("wait").filter(|w| !w.is_empty()) {
        Some(w) => match parse_go_duration(w) {
            Some(d) => Some(d),
            None => return Some(text(400, "Invalid wait time")),
        },
        None => None,
    };
    let min_index = match q.get("index").filter(|i| !i.is_empty()) {
        Some(i) => match i.parse::<u64>() {
            Ok(i) => i,
            Err(_) => return Some(text(400, "Invalid index")),
        },
        None => 0,
    };
    if let Some(dc) = q.get("dc")
        && !dc.is_empty()
        && dc != DATACENTER
    {
        return Some(text(500, "No path to datacenter"));
    }
    let authz = match lock(&srv.acl).as_ref() {
        None => Authz::All,
        Some(acl) => match acl.resolve(token.as_deref().unwrap_or("")) {
            Ok(a) => a,
            Err(body) => return Some(text(403, body)),
        },
    };
    let consistency = if q.has("stale") {
        "stale"
    } else if q.has("consistent") {
        "consistent"
    } else {
        "leader"
    };
    let pretty = q.has("pretty");
    let key = key.to_string();
    match *method {
        Method::GET if q.has("keys") => {
            let sep = q
                .get("separator")
                .or_else(|| q.get("seperator"))
                .unwrap_or("")
                .to_string();
            let read = blocking(srv, min_index, wait, |s| {
                let (idx, entries) = s.list(&key);
                let total = entries.len();
                let visible: Vec<Entry> =
                    entries.into_iter().filter(|e| authz.read(&e.key)).collect();
                let filtered = visible.len() < total;
                (idx, (fold_keys(&key, &sep, &visible), filtered))
            })
            .await?;
            let (idx, (keys, filtered)) = read;
            let mut r = if keys.is_empty() && !key.is_empty() {
                reply(404, "")
            } else {
                json(200, &keys, pretty)
            };
            meta(&mut r, idx, consistency, filtered);
            Some(r)
        }
        Method::GET => {
            let recurse = q.has("recurse");
            if !recurse && key.is_empty() {
                return Some(text(400, "Missing key name"));
            }
            if !recurse && !authz.read(&key) {
                return Some(text(403, PERMISSION_DENIED));
            }
            let (idx, (entries, filtered)) = blocking(srv, min_index, wait, |s| {
                if recurse {
                    let (idx, entries) = s.list(&key);
                    let total = entries.len();
                    let visible: Vec<Entry> =
                        entries.into_iter().filter(|e| authz.read(&e.key)).collect();
                    let filtered = visible.len() < total;
                    (idx, (visible, filtered))
                } else {
                    let (idx, e) = s.get(&key);
                    (idx, (e.into_iter().collect(), false))
                }
            })
            .await?;
            let mut r = if entries.is_empty() {
                reply(404, "")
            } else if q.has("raw") && !recurse {
                let mut r = reply(200, entries[0].value.clone().unwrap_or_default());
                let h = r.headers_mut();
                h.insert("content-type", "text/plain".parse().unwrap());
                h.insert("x-content-type-options", "nosniff".parse().unwrap());
                h.insert("content-security-policy", "sandbox".parse().unwrap());
                r
            } else {
                let out: Vec<JsonEntry> = entries.iter().map(JsonEntry::from).collect();
                json(200, &out, pretty)
            };
            meta(&mut r, idx, consistency, filtered);
            Some(r)
        }
        Method::PUT => {
            if key.is_empty() {
                return Some(text(400, "Missing key name"));
            }
            let flagged = ["cas", "acquire", "release"]
                .iter()
                .filter(|f| q.has(f))
                .count();
            if flagged > 1 {
                return Some(text(400, &q.conflicting()));
            }
            if q.has("acquire") || q.has("release") {
                // Sessions are not modelled; Consul says this for an
                // unknown session.
                return Some(text(500, "invalid session"));
            }
            let flags = match q.get("flags").map(str::parse::<u64>) {
                None => 0,
                Some(Ok(f)) => f,
                Some(Err(_)) => return Some(text(500, "strconv.ParseUint: invalid syntax")),
            };
            let cas = match q.get("cas").map(str::parse::<u64>) {
                None => None,
                Some(Ok(c)) => Some(c),
                Some(Err(_)) => return Some(text(500, "strconv.ParseUint: invalid syntax")),
            };
            if body.len() > MAX_VALUE_SIZE {
                return Some(text(
                    413,
                    &format!(
                        "Request body({} bytes) too large, max size: {MAX_VALUE_SIZE} bytes. See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.",
                        body.len()
                    ),
                ));
            }
            if !authz.write(&key) {
                return Some(text(403, PERMISSION_DENIED));
            }
            let ok = srv.write(|s| s.set(&key, &body, flags, cas));
            // A plain set always answers true; only a CAS can say false.
            Some(json(200, &(ok || cas.is_none()), pretty))
        }
        Method::DELETE => {
            if q.has("recurse") && q.has("cas") {
                return Some(text(400, &q.conflicting()));
            }
            let recurse = q.has("recurse");
            if !recurse && key.is_empty() {
                return Some(text(400, "Missing key name"));
            }
            let cas = match q.get("cas").map(str::parse::<u64>) {
                None => None,
                Some(Ok(c)) => Some(c),
                Some(Err(_)) => return Some(text(500, "strconv.ParseUint: invalid syntax")),
            };
            let allowed = if recurse {
                authz.write_prefix(&key)
            } else {
                authz.write(&key)
            };
            if !allowed {
                return Some(text(403, PERMISSION_DENIED));
            }
            let ok = if recurse {
                srv.write(|s| s.delete_tree(&key));
                true
            } else {
                srv.write(|s| s.delete(&key, cas))
            };
            Some(json(200, &(ok || cas.is_none()), pretty))
        }
        _ => Some(text(405, &format!("method {method} not allowed"))),
    }
}

/// setMeta: the headers of every read reply, 404s included.
fn meta(r: &mut Response, index: u64, consistency: &str, filtered: bool) {
    let h = r.headers_mut();
    // setIndex: never 0, or a client's next ?index=0 would not block and
    // it would hammer the server.
    h.insert("x-consul-index", index.max(1).into());
    h.insert("x-consul-knownleader", "true".parse().unwrap());
    h.insert("x-consul-lastcontact", "0".parse().unwrap());
    h.insert(
        "x-consul-effective-consistency",
        consistency.parse().unwrap(),
    );
    h.insert("x-consul-query-backend", "blocking-query".parse().unwrap());
    if filtered {
        h.insert("x-consul-results-filtered-by-acls", "true".parse().unwrap());
    }
}

/// KVS.ListKeys: with a separator, everything beyond the first separator
/// after the prefix folds into one "prefix/sub/" entry.
fn fold_keys(prefix: &str, sep: &str, entries: &[Entry]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for e in entries {
        if sep.is_empty() {
            keys.push(e.key.clone());
            continue;
        }
        let after = &e.key[prefix.len()..];
        match after.find(sep) {
            Some(i) => {
                let folded = &e.key[..prefix.len() + i + sep.len()];
                // Entries are sorted, so a folded key repeats only in a run.
                if keys.last().map(String::as_str) != Some(folded) {
                    keys.push(folded.to_string());
                }
            }
            None => keys.push(e.key.clone()),
        }
    }
    keys
}

/// Consul's blockingQuery: run `read`; without `min_index` return at once;
/// otherwise return when the read's index is above `min_index`, or with the
/// last read when the timeout (capped wait plus jitter) expires. None: the
/// test cut the connection.
async fn blocking<T>(
    srv: &Shared,
    min_index: u64,
    wait: Option<Duration>,
    mut read: impl FnMut(&Store) -> (u64, T),
) -> Option<(u64, T)> {
    if min_index == 0 {
        return Some(read(&lock(&srv.store)));
    }
    let deadline = tokio::time::Instant::now() + query_timeout(wait);
    // Subscribed before the first read, so a change between the read and
    // the wait is not lost.
    let mut changes = srv.changes.subscribe();
    let mut kill = srv.kill_parked.subscribe();
    loop {
        let (idx, value) = read(&lock(&srv.store));
        if idx.max(1) > min_index {
            return Some((idx, value));
        }
        srv.parked.fetch_add(1, Ordering::SeqCst);
        let _unpark = Unpark(&srv.parked);
        tokio::select! {
            _ = changes.changed() => continue,
            _ = kill.changed() => return None,
            _ = tokio::time::sleep_until(deadline) => return Some((idx, value)),
        }
    }
}

/// Decrements the parked count however the wait ends (the client may also
/// go away, dropping the handler's future).
struct Unpark<'a>(&'a AtomicUsize);

impl Drop for Unpark<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An entry in Consul's JSON field order.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct JsonEntry<'a> {
    lock_index: u64,
    key: &'a str,
    flags: u64,
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a Entry> for JsonEntry<'a> {
    fn from(e: &'a Entry) -> Self {
        JsonEntry {
            lock_index: e.lock_index,
            key: &e.key,
            flags: e.flags,
            value: e
                .value
                .as_ref()
                .map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
            session: e.session.as_deref(),
            create_index: e.create_index,
            modify_index: e.modify_index,
        }
    }
}

fn encode_key(key: &str) -> String {
    let mut out = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn kv_url(addr: &str, key: &str, query: &str) -> String {
    let mut url = format!("{addr}/v1/kv/{}", encode_key(key));
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    url
}

// ------------------------------------------------------------ the target

/// Where a Consul test runs: the test server, or a real Consul when
/// `STENCIL_TEST_CONSUL_ADDR` is set (token from
/// `STENCIL_TEST_CONSUL_TOKEN`). Write a test once against this:
///
/// ```ignore
/// let consul = ConsulTarget::start();
/// consul.put("apps/web/port", "8080");           // relative key
/// let prefix = consul.key("apps/web/");           // absolute key for the client
/// // stencil --source consul={addr}?prefix={prefix}, token consul.token()
/// ```
///
/// Against a real Consul every test gets its own root ("stencil-test/…/")
/// that is deleted on drop, as tests share the real KV store. Tests that
/// need fault injection or request counts use `ConsulServer` directly, and
/// so run against the test server in either mode.
pub struct ConsulTarget {
    server: Option<ConsulServer>,
    addr: String,
    token: Option<String>,
    root: String,
    /// Real Consul: (token AccessorID, policy ID) to delete on drop.
    created: Mutex<Vec<(String, String)>>,
}

impl ConsulTarget {
    pub fn start() -> ConsulTarget {
        match real_consul() {
            Some((addr, token)) => Self::real(addr, token),
            None => Self::server(ConsulServer::start()),
        }
    }

    /// With ACLs (default deny): `token()` is a management token and
    /// `create_token` makes restricted ones. A real Consul needs
    /// `STENCIL_TEST_CONSUL_TOKEN` to be a management token; without one
    /// the test runs against the test server and says so.
    pub fn start_with_acl() -> ConsulTarget {
        match real_consul() {
            Some((addr, Some(token))) => Self::real(addr, Some(token)),
            Some(_) => {
                eprintln!(
                    "STENCIL_TEST_CONSUL_TOKEN is not set: this ACL test runs against the test server"
                );
                Self::server(ConsulServer::with_acl(Acl::new(&random_secret())))
            }
            None => Self::server(ConsulServer::with_acl(Acl::new(&random_secret()))),
        }
    }

    fn server(server: ConsulServer) -> ConsulTarget {
        ConsulTarget {
            addr: server.addr(),
            token: server.management_token(),
            server: Some(server),
            root: String::new(),
            created: Mutex::new(Vec::new()),
        }
    }

    fn real(addr: String, token: Option<String>) -> ConsulTarget {
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = format!(
            "stencil-test/{}-{}-{}/",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        ConsulTarget {
            server: None,
            addr: addr.trim_end_matches('/').to_string(),
            token,
            root,
            created: Mutex::new(Vec::new()),
        }
    }

    pub fn is_real(&self) -> bool {
        self.server.is_none()
    }

    /// The test server, when that is what runs (for request counts).
    pub fn test_server(&self) -> Option<&ConsulServer> {
        self.server.as_ref()
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The token a client under test should send (None: no ACLs).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The absolute key for a test-relative one.
    pub fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.root)
    }

    /// URL of a relative key with a query ("" for none).
    pub fn url(&self, rel: &str, query: &str) -> String {
        kv_url(&self.addr, &self.key(rel), query)
    }

    /// A request carrying the target's token, if any.
    pub fn call(&self, method: &str, rel: &str, query: &str) -> http::Call {
        let call = http::Call::new(method, &self.url(rel, query));
        match &self.token {
            Some(t) => call.token(t),
            None => call,
        }
    }

    pub fn put(&self, rel: &str, value: impl AsRef<[u8]>) {
        self.put_flags(rel, value, 0);
    }

    pub fn put_flags(&self, rel: &str, value: impl AsRef<[u8]>, flags: u64) {
        match &self.server {
            Some(s) => {
                s.put_flags(&self.key(rel), value, flags);
            }
            None => {
                let q = if flags == 0 {
                    String::new()
                } else {
                    format!("flags={flags}")
                };
                let r = self.call("PUT", rel, &q).body(value.as_ref()).send();
                assert_eq!((r.status, r.text().as_str()), (200, "true"), "PUT {rel}");
            }
        }
    }

    pub fn delete(&self, rel: &str) {
        match &self.server {
            Some(s) => {
                s.delete(&self.key(rel));
            }
            None => {
                let r = self.call("DELETE", rel, "").send();
                assert_eq!(r.status, 200, "DELETE {rel}: {}", r.text());
            }
        }
    }

    pub fn delete_tree(&self, rel: &str) {
        match &self.server {
            Some(s) => {
                s.delete_tree(&self.key(rel));
            }
            None => {
                let r = self.call("DELETE", rel, "recurse").send();
                assert_eq!(r.status, 200, "DELETE {rel}?recurse: {}", r.text());
            }
        }
    }

    /// A token that may do what `rules` say, keys relative to this target.
    pub fn create_token(&self, rules: &[Rule]) -> String {
        if let Some(s) = &self.server {
            let secret = random_secret();
            s.add_token(&secret, rules.iter().cloned());
            return secret;
        }
        let hcl: String = rules.iter().map(|r| r.hcl(&self.root)).collect();
        let name = format!("stencil-test-{}", random_secret());
        let policy = http::Call::new("PUT", &format!("{}/v1/acl/policy", self.addr))
            .token(self.token.as_deref().unwrap_or(""))
            .body(serde_json::json!({ "Name": name, "Rules": hcl }).to_string())
            .send();
        assert_eq!(policy.status, 200, "create policy: {}", policy.text());
        let policy_id = policy.json()["ID"].as_str().unwrap().to_string();
        let token = http::Call::new("PUT", &format!("{}/v1/acl/token", self.addr))
            .token(self.token.as_deref().unwrap_or(""))
            .body(
                serde_json::json!({ "Description": name, "Policies": [{ "ID": policy_id }] })
                    .to_string(),
            )
            .send();
        assert_eq!(token.status, 200, "create token: {}", token.text());
        let t = token.json();
        lock(&self.created).push((t["AccessorID"].as_str().unwrap().to_string(), policy_id));
        t["SecretID"].as_str().unwrap().to_string()
    }
}

impl Drop for ConsulTarget {
    fn drop(&mut self) {
        if self.server.is_some() {
            return;
        }
        let token = self.token.clone().unwrap_or_default();
        let _ = http::Call::new("DELETE", &kv_url(&self.addr, &self.root, "recurse"))
            .token(&token)
            .try_send();
        for (accessor, policy) in lock(&self.created).drain(..) {
            let _ = http::Call::new("DELETE", &format!("{}/v1/acl/token/{accessor}", self.addr))
                .token(&token)
                .try_send();
            let _ = http::Call::new("DELETE", &format!("{}/v1/acl/policy/{policy}", self.addr))
                .token(&token)
                .try_send();
        }
    }
}

fn real_consul() -> Option<(String, Option<String>)> {
    let addr = std::env::var("STENCIL_TEST_CONSUL_ADDR")
        .ok()
        .filter(|a| !a.is_empty())?;
    let token = std::env::var("STENCIL_TEST_CONSUL_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    Some((addr, token))
}

fn random_secret() -> String {
    use std::hash::BuildHasher;
    let s = std::collections::hash_map::RandomState::new();
    format!(
        "{:016x}{:016x}",
        s.hash_one(1u8),
        s.hash_one(Instant::now())
    )
}

// ------------------------------------------------------- a small client

/// A plain HTTP/1.1 client on std's TcpStream, one connection per call, so
/// tests see exactly what went over the wire: status, headers, body, or a
/// connection closed without any reply.
pub mod http {
    use std::io::{self, Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use base64::Engine as _;

    use super::Entry;

    pub struct Call {
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        timeout: Duration,
    }

    pub fn get(url: &str) -> Call {
        Call::new("GET", url)
    }

    pub fn put(url: &str, body: impl AsRef<[u8]>) -> Call {
        Call::new("PUT", url).body(body)
    }

    pub fn delete(url: &str) -> Call {
        Call::new("DELETE", url)
    }

    impl Call {
        pub fn new(method: &str, url: &str) -> Call {
            Call {
                method: method.to_string(),
                url: url.to_string(),
                headers: Vec::new(),
                body: Vec::new(),
                // Longer than any wait the tests use, so a blocking query
                // that should return but hangs fails instead of hanging.
                timeout: Duration::from_secs(120),
            }
        }

        pub fn header(mut self, name: &str, value: &str) -> Call {
            self.headers.push((name.to_string(), value.to_string()));
            self
        }

        pub fn token(self, token: &str) -> Call {
            self.header("X-Consul-Token", token)
        }

        pub fn body(mut self, body: impl AsRef<[u8]>) -> Call {
            self.body = body.as_ref().to_vec();
            self
        }

        pub fn timeout(mut self, d: Duration) -> Call {
            self.timeout = d;
            self
        }

        #[track_caller]
        pub fn send(self) -> Reply {
            let what = format!("{} {}", self.method, self.url);
            self.try_send().unwrap_or_else(|e| panic!("{what}: {e}"))
        }

        /// Err when the connection fails or closes without a full reply.
        pub fn try_send(self) -> io::Result<Reply> {
            let rest = self
                .url
                .strip_prefix("http://")
                .ok_or_else(|| io::Error::other("only http:// URLs"))?;
            let (host, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let mut sock = TcpStream::connect(host)?;
            sock.set_read_timeout(Some(self.timeout))?;
            let mut head = format!(
                "{} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
                self.method,
                self.body.len()
            );
            for (k, v) in &self.headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            sock.write_all(head.as_bytes())?;
            sock.write_all(&self.body)?;
            let mut raw = Vec::new();
            sock.read_to_end(&mut raw)?;
            parse(&raw)
        }
    }

    fn parse(raw: &[u8]) -> io::Result<Reply> {
        let eof = || {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed without a complete reply ({} bytes)",
                    raw.len()
                ),
            )
        };
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(eof)?;
        let head = String::from_utf8_lossy(&raw[..end]);
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(eof)?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[end + 4..].to_vec();
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            body = dechunk(&body).ok_or_else(eof)?;
        } else if let Some(n) = header("content-length").and_then(|n| n.parse::<usize>().ok()) {
            if body.len() < n {
                return Err(eof());
            }
            body.truncate(n);
        }
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let nl = b.windows(2).position(|w| w == b"\r\n")?;
            let size = std::str::from_utf8(&b[..nl])
                .ok()?
                .split(';')
                .next()?
                .trim();
            let size = usize::from_str_radix(size, 16).ok()?;
            b = &b[nl + 2..];
            if size == 0 {
                return Some(out);
            }
            out.extend_from_slice(b.get(..size)?);
            b = b.get(size + 2..)?;
        }
    }

    #[derive(Debug)]
    pub struct Reply {
        pub status: u16,
        /// Names in lower case.
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Reply {
        pub fn header(&self, name: &str) -> Option<&str> {
            let name = name.to_ascii_lowercase();
            self.headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        }

        /// X-Consul-Index; panics when it is missing.
        #[track_caller]
        pub fn index(&self) -> u64 {
            self.header("x-consul-index")
                .unwrap_or_else(|| panic!("no X-Consul-Index: {self:?}"))
                .parse()
                .expect("numeric X-Consul-Index")
        }

        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        #[track_caller]
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
        }

        /// The body of a KV read as entries.
        #[track_caller]
        pub fn entries(&self) -> Vec<Entry> {
            let v = self.json();
            let arr = v.as_array().expect("a JSON array");
            arr.iter()
                .map(|e| Entry {
                    key: e["Key"].as_str().unwrap().to_string(),
                    value: e["Value"].as_str().map(|s| {
                        base64::engine::general_purpose::STANDARD
                            .decode(s)
                            .expect("base64 Value")
                    }),
                    flags: e["Flags"].as_u64().unwrap(),
                    create_index: e["CreateIndex"].as_u64().unwrap(),
                    modify_index: e["ModifyIndex"].as_u64().unwrap(),
                    lock_index: e["LockIndex"].as_u64().unwrap(),
                    session: e["Session"].as_str().map(str::to_string),
                })
                .collect()
        }

        /// The body of a `?keys` read.
        #[track_caller]
        pub fn keys(&self) -> Vec<String> {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("not a JSON list of keys ({e}): {:?}", self.text()))
        }
    }
}
