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
//! reply, but a query on an empty prefix does return on any KV write,
//! because its index is the table index: that is Consul's behaviour too. A
//! query on a *missing* key waits for the key (KVS.Get's errNotFound,
//! Consul 1.12+), and a recursive delete leaves one tombstone at its
//! prefix (kvsDeleteTreeTxn).
//!
//! Simplified: one datacenter ("dc1"), one always-known leader, no
//! sessions or locks (`acquire`/`release` are refused), no namespaces or
//! partitions, no `/v1/txn`, ACL default policy
//! is deny, tombstones are kept until `reap_tombstones()`. Error replies
//! (400, 403, 500) carry no X-Consul-Index, as in Consul. The newest
//! Consul's key-name validation (only `[A-Za-z0-9,-_./]`, no ".json" suffix)
//! is not copied: older releases accept any key.
//!
//! This file is the control surface tests use (`ConsulServer`: data,
//! request log, faults); `store` is the state store, `acl` the tokens and
//! rules, `endpoints` one handler per endpoint, `blocking` the blocking
//! queries, `wire` Consul's HTTP conventions, `conn` the connections a test
//! can cut, `target` the test-server-or-real-Consul switch, and `http` a
//! raw client for asserting on the wire.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::sync::watch;

mod acl;
mod blocking;
mod catalog;
mod conn;
mod endpoints;
mod health;
pub mod http;
mod store;
mod target;
mod wire;

pub use acl::{Acl, Policy, Rule};
pub use blocking::{parse_go_duration, query_timeout};
pub use catalog::Registration;
pub use store::Entry;
pub use target::ConsulTarget;

use conn::{Conn, ConnLimit, KillListener};
use store::Store;

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

/// Faults armed by the test, used up by the requests that meet them.
#[derive(Default)]
struct Faults {
    fail: usize,
    fail_status: u16,
    fail_body: String,
    delay: Duration,
    drop: usize,
}

/// What the server's handlers and the test's handle share. The mutexes
/// are std ones: each is held for a few statements, never across an await.
struct Shared {
    store: Mutex<Store>,
    /// Bumped on every KV change (and restore): wakes blocking queries.
    changes: watch::Sender<u64>,
    /// Bumped by `drop_parked_connections`.
    kill_parked: watch::Sender<u64>,
    /// True while `freeze` holds every request and reply.
    frozen: watch::Sender<bool>,
    acl: Mutex<Option<Acl>>,
    faults: Mutex<Faults>,
    log: Mutex<Vec<Request>>,
    /// Requests removed from `log` by `clear_requests`: ids count from the
    /// first request ever, so a query in flight across a clear finishes
    /// its own entry (or none), never another's.
    cleared: AtomicUsize,
    parked: AtomicUsize,
    /// The most blocking queries ever parked at once.
    most_parked: AtomicUsize,
    conns: Arc<ConnLimit>,
    /// A lagging follower answering `?stale` reads: its (old) copy of the
    /// store and how long ago it heard from the leader.
    follower: Mutex<Option<(Store, Duration)>>,
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
            frozen: watch::channel(false).0,
            acl: Mutex::new(acl),
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
            cleared: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            most_parked: AtomicUsize::new(0),
            conns: Arc::new(ConnLimit::default()),
            follower: Mutex::new(None),
        });
        let conns = shared.conns.clone();
        // Bound here, so the address is known before start() returns and
        // the first request can never race the bind.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .fallback(endpoints::handle)
            .with_state(shared.clone());
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
                        conns,
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
        wire::kv_url(&self.addr(), key, query)
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

    // --- the service catalog (catalog.rs, health.rs), bypassing ACLs

    /// Registers (or updates) a service instance and its node; returns the
    /// raft index of the write.
    pub fn register(&self, r: Registration) -> u64 {
        self.shared.write(|s| {
            let idx = s.next_index();
            s.catalog.register(&r, idx);
            idx
        })
    }

    /// Deregisters one instance (and its checks).
    pub fn deregister(&self, node: &str, service_id: &str) -> u64 {
        self.shared.write(|s| {
            let idx = s.next_index();
            s.catalog.deregister(node, service_id, idx);
            idx
        })
    }

    /// Sets the status (`passing`, `warning`, `critical`) of an instance's
    /// check, or with `service_id` "" of its node's (serfHealth).
    pub fn set_check(&self, node: &str, service_id: &str, status: &str) -> u64 {
        self.shared.write(|s| {
            let idx = s.next_index();
            s.catalog.set_check(node, service_id, status, idx);
            idx
        })
    }

    /// The index a health query on `service` reports now.
    pub fn service_index(&self, service: &str) -> u64 {
        lock(&self.shared.store).catalog.index_of_service(service)
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

    /// The most blocking queries that were ever parked at once.
    pub fn most_parked(&self) -> usize {
        self.shared.most_parked.load(Ordering::SeqCst)
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

    /// `limits.http_max_conns_per_client`: connections past `n` open ones
    /// get Consul's raw 429 and are closed (0: no limit, the default here).
    pub fn max_conns_per_client(&self, n: usize) {
        self.shared.conns.max.store(n, Ordering::SeqCst);
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.conns.open.load(Ordering::SeqCst)
    }

    /// Connections refused with a 429 so far.
    pub fn rejected_connections(&self) -> usize {
        self.shared.conns.rejected.load(Ordering::SeqCst)
    }

    /// From now on `?stale` reads are answered by a follower that stopped
    /// applying the leader's log at this moment and last heard from it
    /// `last_contact` ago (X-Consul-LastContact; rpc.go's setQueryMeta sets
    /// it from raft's LastContact on a follower): later writes are not in
    /// its answers. Simplified: the follower answers at once, never parks.
    pub fn lagging_follower(&self, last_contact: Duration) {
        let snapshot = lock(&self.shared.store).clone();
        *lock(&self.shared.follower) = Some((snapshot, last_contact));
    }

    /// The follower caught up: `?stale` reads see the leader's data again.
    pub fn follower_caught_up(&self) {
        *lock(&self.shared.follower) = None;
    }

    /// A frozen agent (a stopped process, a hung disk): connections are
    /// accepted, but no request is answered, and no reply already computed
    /// (a parked query woken by a write) is written, until `thaw`.
    pub fn freeze(&self) {
        self.shared.frozen.send_replace(true);
    }

    pub fn thaw(&self) {
        self.shared.frozen.send_replace(false);
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
