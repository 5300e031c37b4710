//! The snapshot a network source keeps between batches (issue 15): a
//! change the watch reported is read from the watch's own message, not
//! asked for again, and the snapshot never answers with a value older than
//! a fresh read would give after compaction, a watch that no longer covers
//! a key, a source that went away, or a Consul index that went backwards.
//! Real etcd; the Consul test server.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use stencil::{ConsulConfig, ConsulSource, EtcdSource, Source, SourceEvent};

use crate::support::consul::ConsulServer;
use crate::support::etcd::Etcd;
use crate::support::watch::{Watch, spec};

fn etcd_requests(source: &EtcdSource) -> u64 {
    source.client().requests.load(Ordering::Relaxed)
}

fn get(source: &dyn Source, key: &str) -> Option<String> {
    source.get(key).unwrap()
}

#[test]
fn etcd_a_change_is_read_from_the_watch_event_without_asking_again() {
    let etcd = Etcd::start();
    etcd.put("/app/host", "one");
    etcd.put("/app/port", "80");
    let source = Arc::new(EtcdSource::new("kv", &etcd.config(None)).unwrap());
    assert_eq!(get(&*source, "app/host").as_deref(), Some("one"));
    assert_eq!(get(&*source, "app/port").as_deref(), Some("80"));
    let mut watch = Watch::start(source.clone(), spec(&["app/host", "app/port"], &[]));
    etcd.put("/app/host", "two");
    watch.changed_key("app/host");
    let before = etcd_requests(&source);
    source.refresh();
    assert_eq!(get(&*source, "app/host").as_deref(), Some("two"));
    assert_eq!(get(&*source, "app/port").as_deref(), Some("80"));
    etcd.delete("/app/port");
    watch.changed_key("app/port");
    source.refresh();
    assert_eq!(get(&*source, "app/port"), None);
    assert_eq!(
        etcd_requests(&source),
        before,
        "the events carried the new values: no read"
    );
}

#[test]
fn etcd_compaction_drops_the_snapshot() {
    let etcd = Etcd::start();
    etcd.put("/app/host", "one");
    let source = Arc::new(EtcdSource::new("kv", &etcd.config(None)).unwrap());
    assert_eq!(get(&*source, "app/host").as_deref(), Some("one"));
    // Changed while no watch runs, and the history compacted past the
    // snapshot: the watch can only say "read everything again".
    etcd.put("/app/host", "two");
    let last = etcd.put("/app/other", "x");
    stencil::block_on(etcd.client(None).compact(last)).unwrap();
    let mut watch = Watch::start(source.clone(), spec(&["app/host"], &[]));
    watch.until("resync", |e| matches!(e, SourceEvent::Resync { .. }));
    source.refresh();
    assert_eq!(get(&*source, "app/host").as_deref(), Some("two"));
}

#[test]
fn etcd_a_key_the_watch_does_not_cover_is_read_again() {
    let etcd = Etcd::start();
    etcd.put("/a/x", "1");
    etcd.put("/b/y", "1");
    let source = Arc::new(EtcdSource::new("kv", &etcd.config(None)).unwrap());
    assert_eq!(get(&*source, "a/x").as_deref(), Some("1"));
    assert_eq!(get(&*source, "b/y").as_deref(), Some("1"));
    // The templates now read only a/x: b/y changes unseen.
    let mut watch = Watch::start(source.clone(), spec(&["a/x"], &[]));
    etcd.put("/b/y", "2");
    etcd.put("/a/x", "2");
    watch.changed_key("a/x");
    source.refresh();
    assert_eq!(get(&*source, "a/x").as_deref(), Some("2"));
    assert_eq!(get(&*source, "b/y").as_deref(), Some("2"));
}

#[test]
fn etcd_a_watch_that_lost_its_source_drops_the_snapshot() {
    let mut etcd = Etcd::start();
    etcd.put("/app/host", "one");
    let source = Arc::new(EtcdSource::new("kv", &etcd.config(None)).unwrap());
    assert_eq!(get(&*source, "app/host").as_deref(), Some("one"));
    let mut watch = Watch::start(source.clone(), spec(&["app/host"], &[]));
    etcd.put("/app/host", "two");
    watch.changed_key("app/host");
    etcd.restart();
    etcd.put("/app/host", "three");
    watch.until("the source back", |e| matches!(e, SourceEvent::Up { .. }));
    source.refresh();
    assert_eq!(get(&*source, "app/host").as_deref(), Some("three"));
}

#[test]
fn etcd_keys_under_one_folder_are_read_with_one_request() {
    let etcd = Etcd::start();
    for i in 0..50 {
        etcd.put(&format!("/fan/t1/k{i:02}"), format!("v{i}"));
    }
    let source = Arc::new(EtcdSource::new("kv", &etcd.config(None)).unwrap());
    let before = etcd_requests(&source);
    for i in 0..50 {
        assert_eq!(
            get(&*source, &format!("fan/t1/k{i:02}")),
            Some(format!("v{i}"))
        );
    }
    assert_eq!(get(&*source, "fan/t1/missing"), None);
    // The first key alone; at the second, a count and the folder whole.
    assert_eq!(etcd_requests(&source) - before, 3);
}

fn consul_source(server: &ConsulServer, wait: Duration) -> Arc<ConsulSource> {
    let mut config = ConsulConfig::new(server.addr());
    config.query_wait = wait;
    Arc::new(ConsulSource::new("kv", &config).unwrap())
}

/// KV reads that were not blocking queries.
fn plain_reads(server: &ConsulServer) -> usize {
    server
        .kv_requests()
        .iter()
        .filter(|r| r.blocking_index().is_none())
        .count()
}

#[test]
fn consul_a_change_is_read_from_the_blocking_reply_without_asking_again() {
    let server = ConsulServer::start();
    server.put("app/host", "one");
    server.put("app/port", "80");
    server.put("solo", "s");
    let source = consul_source(&server, Duration::from_secs(60));
    assert_eq!(get(&*source, "app/host").as_deref(), Some("one"));
    assert_eq!(get(&*source, "app/port").as_deref(), Some("80"));
    assert_eq!(get(&*source, "solo").as_deref(), Some("s"));
    let mut watch = Watch::start(source.clone(), spec(&["app/host", "app/port", "solo"], &[]));
    server.put("app/host", "two");
    watch.changed_key("app/host");
    server.put("solo", "t");
    watch.changed_key("solo");
    let before = plain_reads(&server);
    source.refresh();
    assert_eq!(get(&*source, "app/host").as_deref(), Some("two"));
    assert_eq!(get(&*source, "app/port").as_deref(), Some("80"));
    assert_eq!(get(&*source, "solo").as_deref(), Some("t"));
    assert_eq!(
        plain_reads(&server),
        before,
        "the replies were the new data"
    );
}

#[test]
fn consul_an_index_that_went_backwards_drops_what_it_would_replace() {
    let server = ConsulServer::start();
    for i in 0..20 {
        server.put("app/host", format!("v{i}"));
    }
    // A parked query waits out its wait when the index goes backwards, as
    // in Consul; the answer after it has the lower index.
    let source = consul_source(&server, Duration::from_secs(1));
    assert_eq!(get(&*source, "app/host").as_deref(), Some("v19"));
    let mut watch = Watch::start(source.clone(), spec(&["app/host"], &[]));
    // A snapshot restore: every index halves, and the next write's index is
    // below the one the snapshot read.
    server.index_goes_backwards();
    server.put("app/host", "restored");
    watch.changed_key("app/host");
    source.refresh();
    assert_eq!(get(&*source, "app/host").as_deref(), Some("restored"));
}

#[test]
fn consul_a_key_no_query_covers_is_read_again() {
    let server = ConsulServer::start();
    server.put("a", "1");
    server.put("b", "1");
    let source = consul_source(&server, Duration::from_secs(60));
    assert_eq!(get(&*source, "a").as_deref(), Some("1"));
    assert_eq!(get(&*source, "b").as_deref(), Some("1"));
    let mut watch = Watch::start(source.clone(), spec(&["a"], &[]));
    server.put("b", "2");
    server.put("a", "2");
    watch.changed_key("a");
    source.refresh();
    assert_eq!(get(&*source, "b").as_deref(), Some("2"));
}
