//! The Consul KV test server's own tests: each documented Consul behaviour
//! it reproduces, and each fault it injects. Tests built on `ConsulTarget`
//! also run against a real Consul when `STENCIL_TEST_CONSUL_ADDR` is set,
//! which checks the server's fidelity; tests that count requests or inject
//! faults use `ConsulServer` and always run against the test server.
//!
//! No sleeps as synchronisation: `wait_parked` says when a blocking query
//! waits, and timings are only asserted as lower bounds or with deadlines
//! far above what they guard.

use std::thread;
use std::time::{Duration, Instant};

use crate::support::consul::http::{self, Reply};
use crate::support::consul::{
    Acl, ConsulServer, ConsulTarget, DEFAULT_WAIT, MAX_WAIT, Policy, Rule, parse_go_duration,
    query_timeout,
};

fn get(t: &ConsulTarget, rel: &str, query: &str) -> Reply {
    t.call("GET", rel, query).send()
}

/// Runs a request on another thread, so the test can act while it waits.
fn spawn(call: http::Call) -> thread::JoinHandle<(Reply, Duration)> {
    thread::spawn(move || {
        let start = Instant::now();
        let r = call.send();
        (r, start.elapsed())
    })
}

// ------------------------------------------------------------ reads

#[test]
fn a_key_reads_as_consul_json_with_its_indexes() {
    let t = ConsulTarget::start();
    t.put("apps/web/port", "8080");
    let r = get(&t, "apps/web/port", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    let e = &v.as_array().unwrap()[0];
    // Consul's field order and types; Value is base64; no Session unless locked.
    let fields: Vec<&str> = e.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    for f in [
        "LockIndex",
        "Key",
        "Flags",
        "Value",
        "CreateIndex",
        "ModifyIndex",
    ] {
        assert!(fields.contains(&f), "{f} missing from {e}");
    }
    assert!(e.get("Session").is_none(), "{e}");
    assert_eq!(e["Key"], t.key("apps/web/port"));
    assert_eq!(e["Value"], "ODA4MA==");
    assert_eq!(e["Flags"], 0);
    assert_eq!(e["LockIndex"], 0);
    assert_eq!(e["CreateIndex"], e["ModifyIndex"]);
    // A single key's index is its ModifyIndex.
    assert_eq!(r.index(), e["ModifyIndex"].as_u64().unwrap());
    assert_eq!(r.header("x-consul-knownleader"), Some("true"));
    assert!(r.header("x-consul-lastcontact").is_some());

    // An update keeps CreateIndex and moves ModifyIndex.
    t.put("apps/web/port", "9090");
    let e2 = get(&t, "apps/web/port", "").entries().remove(0);
    assert_eq!(e2.value_str(), "9090");
    assert_eq!(e2.create_index, e["CreateIndex"].as_u64().unwrap());
    assert!(e2.modify_index > e2.create_index);
}

#[test]
fn a_missing_key_is_404_with_an_empty_body_and_an_index() {
    let t = ConsulTarget::start();
    let r = get(&t, "no/such/key", "");
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty(), "{:?}", r.text());
    assert!(r.index() >= 1, "X-Consul-Index is never 0");
    assert_eq!(r.header("x-consul-knownleader"), Some("true"));
}

#[test]
fn a_missing_key_reports_the_kv_table_index() {
    // Consul answers a missing key with the index of the whole KV table, so
    // any write raises it.
    let s = ConsulServer::start();
    let before = http::get(&s.url("missing", "")).send();
    assert_eq!((before.status, before.index()), (404, 1), "empty store");
    let idx = s.put("elsewhere", "x");
    let after = http::get(&s.url("missing", "")).send();
    assert_eq!((after.status, after.index()), (404, idx));
}

#[test]
fn an_empty_value_is_null_and_binary_values_round_trip() {
    let t = ConsulTarget::start();
    t.put("folder/", "");
    t.put("bin", [0u8, 159, 146, 150, 255]);
    let r = get(&t, "folder/", "");
    assert_eq!(r.json()[0]["Value"], serde_json::Value::Null);
    let r = get(&t, "bin", "");
    assert_eq!(
        r.entries()[0].value.as_deref(),
        Some(&[0u8, 159, 146, 150, 255][..])
    );
}

#[test]
fn raw_returns_the_value_bytes_only() {
    let t = ConsulTarget::start();
    t.put("cfg", b"line 1\n\xffbinary\n");
    let r = get(&t, "cfg", "raw");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"line 1\n\xffbinary\n");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(r.index() >= 1);
    assert_eq!(get(&t, "nope", "raw").status, 404);
}

#[test]
fn recurse_reads_every_key_with_the_string_prefix_sorted() {
    let t = ConsulTarget::start();
    for k in ["a/b", "a/a", "a/c/d", "ab", "b"] {
        t.put(k, k);
    }
    let keys = |q: &str, rel: &str| -> Vec<String> {
        get(&t, rel, q)
            .entries()
            .into_iter()
            .map(|e| e.key)
            .collect()
    };
    assert_eq!(
        keys("recurse", "a/"),
        [t.key("a/a"), t.key("a/b"), t.key("a/c/d")]
    );
    // A string prefix, not a path: "a" also matches "ab".
    assert_eq!(
        keys("recurse", "a"),
        [t.key("a/a"), t.key("a/b"), t.key("a/c/d"), t.key("ab")]
    );
    let r = get(&t, "zzz/", "recurse");
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    assert!(r.index() >= 1);
}

#[test]
fn the_index_of_a_prefix_is_its_highest_modify_index() {
    let t = ConsulTarget::start();
    t.put("p/x", "1");
    t.put("p/y", "2");
    t.put("q/z", "3");
    let r = get(&t, "p/", "recurse");
    let max = r.entries().iter().map(|e| e.modify_index).max().unwrap();
    assert_eq!(r.index(), max);
    // q/z was written later, so the global index is higher.
    assert!(get(&t, "q/", "recurse").index() > r.index());
}

#[test]
fn deleting_a_key_raises_the_index_of_its_prefix() {
    // Consul keeps tombstones so a prefix's index never slides back when
    // its newest key goes.
    let t = ConsulTarget::start();
    t.put("p/x", "1");
    t.put("p/y", "2");
    t.put("q/z", "3");
    let q_before = get(&t, "q/", "recurse").index();
    let before = get(&t, "p/", "recurse").index();
    t.delete("p/y");
    let r = get(&t, "p/", "recurse");
    assert_eq!(r.entries().len(), 1);
    assert!(r.index() > before, "{} > {before}", r.index());
    assert!(r.index() > q_before, "the delete is newer than q/z");
    // Other prefixes keep theirs.
    assert_eq!(get(&t, "q/", "recurse").index(), q_before);
    // A prefix emptied by deletes: 404, index of the last delete, not lower.
    let last = r.index();
    t.delete("p/x");
    let r = get(&t, "p/", "recurse");
    assert_eq!(r.status, 404);
    assert!(r.index() > last);
}

#[test]
fn reaped_tombstones_let_a_prefix_index_go_backwards() {
    let s = ConsulServer::start();
    let kept = s.put("p/x", "1");
    s.put("p/y", "2");
    let deleted_at = s.delete("p/y");
    assert_eq!(
        http::get(&s.url("p/", "recurse")).send().index(),
        deleted_at
    );
    s.reap_tombstones();
    assert_eq!(http::get(&s.url("p/", "recurse")).send().index(), kept);
}

#[test]
fn keys_lists_names_and_folds_at_the_separator() {
    let t = ConsulTarget::start();
    for k in ["a/b/c", "a/b/d", "a/e", "a/f/", "a/f/g/h"] {
        t.put(k, "v");
    }
    let r = get(&t, "a/", "keys");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.keys(),
        ["a/b/c", "a/b/d", "a/e", "a/f/", "a/f/g/h"].map(|k| t.key(k))
    );
    let folded = get(&t, "a/", "keys&separator=/");
    assert_eq!(folded.keys(), ["a/b/", "a/e", "a/f/"].map(|k| t.key(k)));
    // The index counts the folded keys too.
    assert_eq!(folded.index(), r.index());
    assert_eq!(get(&t, "nothing/", "keys").status, 404);
}

#[test]
fn keys_of_an_empty_root_is_an_empty_list() {
    // Consul never answers 404 for the root's key list.
    let s = ConsulServer::start();
    let r = http::get(&s.url("", "keys")).send();
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));
}

#[test]
fn dc_stale_and_consistent_are_accepted() {
    let t = ConsulTarget::start();
    t.put("k", "v");
    let mut cases = vec![("stale", "stale"), ("consistent", "consistent")];
    if !t.is_real() {
        // A real agent's datacenter name is its own business.
        cases.push(("dc=dc1", "leader"));
    }
    for (q, consistency) in cases {
        let r = get(&t, "k", q);
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        assert_eq!(
            r.header("x-consul-effective-consistency"),
            Some(consistency),
            "{q}"
        );
    }
    let r = get(&t, "k", "stale&consistent");
    assert_eq!(r.status, 400);
    let r = get(&t, "k", "dc=no-such-dc");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("No path to datacenter"), "{}", r.text());
}

#[test]
fn bad_wait_or_index_is_400() {
    let t = ConsulTarget::start();
    let r = get(&t, "k", "index=1&wait=5");
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid wait time"));
    let r = get(&t, "k", "index=x");
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid index"));
}

#[test]
fn the_leader_endpoint_answers() {
    let s = ConsulServer::start();
    let r = http::get(&format!("{}/v1/status/leader", s.addr())).send();
    assert_eq!(r.status, 200);
    assert!(r.json().is_string());
}

// ----------------------------------------------------------- writes

#[test]
fn put_answers_true_and_stores_flags() {
    let t = ConsulTarget::start();
    let r = t.call("PUT", "k", "flags=42").body("v").send();
    assert_eq!((r.status, r.text().as_str()), (200, "true"));
    let e = get(&t, "k", "").entries().remove(0);
    assert_eq!((e.flags, e.value_str()), (42, "v"));
    // Writes carry no X-Consul-Index.
    assert!(r.header("x-consul-index").is_none());
}

#[test]
fn put_of_an_unchanged_value_keeps_the_modify_index() {
    let t = ConsulTarget::start();
    t.put("k", "v");
    let first = get(&t, "k", "").index();
    t.put("k", "v");
    assert_eq!(get(&t, "k", "").index(), first);
    t.put("k", "w");
    assert!(get(&t, "k", "").index() > first);
}

#[test]
fn cas_writes_only_from_the_index_read() {
    let t = ConsulTarget::start();
    let put = |q: &str, v: &str| t.call("PUT", "k", q).body(v).send().text();
    // cas=0: only if absent.
    assert_eq!(put("cas=0", "one"), "true");
    assert_eq!(put("cas=0", "two"), "false");
    let idx = get(&t, "k", "").entries()[0].modify_index;
    assert_eq!(put(&format!("cas={}", idx + 1000), "three"), "false");
    assert_eq!(put(&format!("cas={idx}"), "three"), "true");
    assert_eq!(get(&t, "k", "").entries()[0].value_str(), "three");
    // The old index is stale now.
    assert_eq!(put(&format!("cas={idx}"), "four"), "false");
    // cas=N on a missing key fails.
    let r = t.call("PUT", "missing", "cas=5").body("x").send();
    assert_eq!(r.text(), "false");
}

#[test]
fn delete_with_cas_and_recurse() {
    let t = ConsulTarget::start();
    t.put("d/a", "1");
    t.put("d/b", "2");
    t.put("d/c/e", "3");
    t.put("keep", "4");
    let idx = get(&t, "d/a", "").entries()[0].modify_index;
    let del = |rel: &str, q: &str| t.call("DELETE", rel, q).send().text();
    assert_eq!(del("d/a", &format!("cas={}", idx + 1000)), "false");
    assert_eq!(get(&t, "d/a", "").status, 200);
    assert_eq!(del("d/a", &format!("cas={idx}")), "true");
    assert_eq!(get(&t, "d/a", "").status, 404);
    // Consul's quirk: a CAS delete of a missing key succeeds.
    assert_eq!(del("d/a", "cas=1"), "true");
    assert_eq!(del("d/b", ""), "true");
    let r = t.call("DELETE", "d/", "recurse&cas=1").send();
    assert_eq!(r.status, 400);
    assert!(r.text().starts_with("Conflicting flags: "), "{}", r.text());
    assert_eq!(del("d/", "recurse"), "true");
    assert_eq!(get(&t, "d/", "recurse").status, 404);
    assert_eq!(get(&t, "keep", "").status, 200);
}

#[test]
fn a_value_above_512_kib_is_413() {
    let t = ConsulTarget::start();
    let r = t
        .call("PUT", "big", "")
        .body(vec![b'x'; 512 * 1024 + 1])
        .send();
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(get(&t, "big", "").status, 404);
}

// -------------------------------------------------- blocking queries

#[test]
fn a_blocking_query_returns_early_on_a_change_without_polling() {
    let t = ConsulTarget::start();
    t.put("apps/web/port", "8080");
    let first = get(&t, "apps/web/", "recurse");
    let idx = first.index();
    // wait=60s: a reply well before that can only be the change.
    let q = spawn(t.call("GET", "apps/web/", &format!("recurse&index={idx}&wait=60s")));
    if let Some(s) = t.test_server() {
        s.wait_parked(1);
    }
    t.put("apps/web/port", "9090");
    let (r, took) = q.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.index() > idx);
    assert_eq!(r.entries()[0].value_str(), "9090");
    assert!(
        took < Duration::from_secs(50),
        "returned only after {took:?}"
    );
    if let Some(s) = t.test_server() {
        // One plain read, one blocking query: nothing polled.
        let log = s.kv_requests();
        assert_eq!(log.len(), 2, "{log:#?}");
        assert_eq!(log[1].blocking_index(), Some(idx));
        assert_eq!(log[1].status, Some(200));
    }
}

#[test]
fn a_blocking_query_on_a_missing_key_returns_when_it_appears() {
    let t = ConsulTarget::start();
    let r = get(&t, "later", "");
    assert_eq!(r.status, 404);
    let q = spawn(t.call("GET", "later", &format!("index={}&wait=60s", r.index())));
    if let Some(s) = t.test_server() {
        s.wait_parked(1);
    }
    t.put("later", "here");
    let (r, _) = q.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.entries()[0].value_str(), "here");
}

/// agent/consul/kvs_endpoint.go (KVS.Get returns errNotFound for a
/// missing key since Consul 1.12) with rpc.go's blockingQuery: a query on a
/// missing key is not ended by writes elsewhere, although they move the
/// table index it reports.
#[test]
fn a_blocking_query_on_a_missing_key_ignores_writes_elsewhere() {
    let t = ConsulTarget::start();
    t.put("elsewhere", "1");
    let r = get(&t, "later", "");
    assert_eq!(r.status, 404);
    let q = spawn(t.call("GET", "later", &format!("index={}&wait=2s", r.index())));
    if let Some(s) = t.test_server() {
        s.wait_parked(1);
    }
    t.put("elsewhere", "2");
    t.put("elsewhere/too", "3");
    let (r, took) = q.join().unwrap();
    assert_eq!(r.status, 404);
    assert!(took >= Duration::from_secs(2), "{took:?}");
}

/// rpc.go's blockingQuery returns only when the index is above the one
/// asked for: an index from the future waits out the whole wait.
#[test]
fn an_index_above_the_current_one_waits_out_the_wait() {
    let t = ConsulTarget::start();
    t.put("k", "v");
    let idx = get(&t, "k", "").index();
    let (r, took) = spawn(t.call("GET", "k", &format!("index={}&wait=1s", idx + 1000)))
        .join()
        .unwrap();
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert_eq!((r.status, r.index()), (200, idx));
}

/// agent/consul/state/kvs.go, kvsDeleteTreeTxn: a recursive delete leaves
/// one tombstone at the deleted prefix. A read of that prefix keeps the
/// delete's index; a read of a folder inside it finds no tombstone of its
/// own and reports the table index, which later writes anywhere move.
#[test]
fn a_tree_delete_leaves_one_tombstone_at_the_prefix() {
    let t = ConsulTarget::start();
    t.put("tree/a/x", "1");
    t.put("tree/b/y", "2");
    t.delete_tree("tree/");
    let deleted = get(&t, "tree/", "recurse").index();
    t.put("unrelated", "1");
    let later = get(&t, "unrelated", "").index();
    assert!(later > deleted);
    let r = get(&t, "tree/", "recurse");
    assert_eq!((r.status, r.index()), (404, deleted));
    let r = get(&t, "tree/a/", "recurse");
    assert_eq!((r.status, r.index()), (404, later));
}

#[test]
fn a_blocking_query_returns_after_the_wait_with_the_same_index() {
    let t = ConsulTarget::start();
    t.put("k", "v");
    let idx = get(&t, "k", "").index();
    let start = Instant::now();
    let r = get(&t, "k", &format!("index={idx}&wait=1s"));
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!((r.status, r.index()), (200, idx));
    assert_eq!(r.entries()[0].value_str(), "v");
}

#[test]
fn a_change_elsewhere_does_not_end_a_blocking_query() {
    let t = ConsulTarget::start();
    t.put("a/x", "1");
    t.put("b/x", "1");
    let idx = get(&t, "a/", "recurse").index();
    let q = spawn(t.call("GET", "a/", &format!("recurse&index={idx}&wait=2s")));
    if let Some(s) = t.test_server() {
        s.wait_parked(1);
    }
    t.put("b/x", "2");
    t.put("b/y", "3");
    let (r, took) = q.join().unwrap();
    // It waited the whole wait and reports the prefix's unchanged index.
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert_eq!(r.index(), idx);
    if let Some(s) = t.test_server() {
        assert_eq!(s.kv_requests().len(), 2);
    }
}

#[test]
fn index_zero_and_an_old_index_never_block() {
    let t = ConsulTarget::start();
    t.put("k", "v1");
    let old = get(&t, "k", "").index();
    t.put("k", "v2");
    let start = Instant::now();
    let r = get(&t, "k", "index=0&wait=60s");
    assert_eq!(r.entries()[0].value_str(), "v2");
    let r = get(&t, "k", &format!("index={old}&wait=60s"));
    assert_eq!(r.entries()[0].value_str(), "v2");
    assert!(r.index() > old);
    assert!(start.elapsed() < Duration::from_secs(50));
}

#[test]
fn one_blocking_query_per_prefix_is_what_the_server_sees() {
    // The request log lets source tests assert "one query per prefix".
    let s = ConsulServer::start();
    s.put("a/1", "x");
    s.put("b/1", "x");
    let ia = http::get(&s.url("a/", "recurse")).send().index();
    let ib = http::get(&s.url("b/", "recurse")).send().index();
    s.clear_requests();
    let qa = spawn(http::get(
        &s.url("a/", &format!("recurse&index={ia}&wait=60s")),
    ));
    let qb = spawn(http::get(
        &s.url("b/", &format!("recurse&index={ib}&wait=60s")),
    ));
    s.wait_parked(2);
    s.put("a/1", "y");
    s.put("b/1", "y");
    qa.join().unwrap();
    qb.join().unwrap();
    let log = s.kv_requests();
    let per = |p: &str| log.iter().filter(|r| r.key() == Some(p)).count();
    assert_eq!((per("a/"), per("b/")), (1, 1), "{log:#?}");
    assert!(
        log.iter()
            .all(|r| r.has("recurse") && r.blocking_index().is_some())
    );
}

#[test]
fn waits_are_capped_and_jittered_like_consul() {
    for _ in 0..20 {
        let d = query_timeout(None);
        assert!(
            d >= DEFAULT_WAIT && d < DEFAULT_WAIT + DEFAULT_WAIT / 16,
            "{d:?}"
        );
        let d = query_timeout(Some(Duration::from_secs(3600)));
        assert!(d >= MAX_WAIT && d < MAX_WAIT + MAX_WAIT / 16, "{d:?}");
        let d = query_timeout(Some(Duration::from_secs(16)));
        assert!(
            d >= Duration::from_secs(16) && d < Duration::from_secs(17),
            "{d:?}"
        );
    }
    assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_go_duration("5"), None);
    assert_eq!(parse_go_duration("5x"), None);
}

// ---------------------------------------------------------------- ACLs

fn acl_server() -> ConsulServer {
    let s = ConsulServer::with_acl(
        Acl::new("root-token")
            .token("ro", [Rule::key_prefix("apps/", Policy::Read)])
            .token(
                "rw",
                [
                    Rule::key_prefix("apps/", Policy::Write),
                    Rule::key("apps/locked", Policy::Read),
                ],
            ),
    );
    s.put("apps/web/port", "8080");
    s.put("apps/locked", "x");
    s.put("secret/db", "hunter2");
    s
}

#[test]
fn acl_tokens_are_read_from_header_query_and_bearer() {
    let s = acl_server();
    let url = s.url("apps/web/port", "");
    for r in [
        http::get(&url).token("ro").send(),
        http::get(&s.url("apps/web/port", "token=ro")).send(),
        http::get(&url).header("Authorization", "Bearer ro").send(),
    ] {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let log = s.requests();
    assert!(
        log.iter().all(|r| r.token.as_deref() == Some("ro")),
        "{log:#?}"
    );
    // ?token= wins over the header, as in Consul.
    let r = http::get(&s.url("apps/web/port", "token=ro"))
        .token("bogus")
        .send();
    assert_eq!(r.status, 200);
}

#[test]
fn acl_denials_are_403_with_consuls_text() {
    let s = acl_server();
    // No token: the anonymous token, which may do nothing.
    let r = http::get(&s.url("apps/web/port", "")).send();
    assert_eq!((r.status, r.text().as_str()), (403, "Permission denied"));
    assert!(r.header("x-consul-index").is_none());
    // A token Consul does not know.
    let r = http::get(&s.url("apps/web/port", "")).token("nope").send();
    assert_eq!((r.status, r.text().as_str()), (403, "ACL not found"));
    // Outside the token's rules.
    let r = http::get(&s.url("secret/db", "")).token("ro").send();
    assert_eq!((r.status, r.text().as_str()), (403, "Permission denied"));
    // Read-only: writes are denied and change nothing.
    let r = http::put(&s.url("apps/web/port", ""), "1")
        .token("ro")
        .send();
    assert_eq!((r.status, r.text().as_str()), (403, "Permission denied"));
    assert_eq!(s.get("apps/web/port").unwrap().value_str(), "8080");
    // An exact rule beats the prefix rule.
    let r = http::put(&s.url("apps/locked", ""), "1").token("rw").send();
    assert_eq!(r.status, 403);
    let r = http::put(&s.url("apps/web/port", ""), "1")
        .token("rw")
        .send();
    assert_eq!(r.status, 200);
    // A recursive delete needs write on everything under the prefix.
    let r = http::delete(&s.url("apps/", "recurse")).token("rw").send();
    assert_eq!(r.status, 403);
    // A deleted token is unknown from then on.
    s.remove_token("ro");
    let r = http::get(&s.url("apps/web/port", "")).token("ro").send();
    assert_eq!((r.status, r.text().as_str()), (403, "ACL not found"));
}

#[test]
fn acl_filters_prefix_reads_instead_of_denying_them() {
    let s = acl_server();
    let r = http::get(&s.url("", "recurse")).token("ro").send();
    assert_eq!(r.status, 200);
    let keys: Vec<String> = r.entries().into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["apps/locked", "apps/web/port"]);
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), Some("true"));
    let r = http::get(&s.url("", "keys")).token("ro").send();
    assert_eq!(r.keys(), ["apps/locked", "apps/web/port"]);
    // Everything filtered away: 404, as if empty.
    let r = http::get(&s.url("secret/", "recurse")).token("ro").send();
    assert_eq!(r.status, 404);
    // The management token sees all, unfiltered.
    let r = http::get(&s.url("", "recurse")).token("root-token").send();
    assert_eq!(r.entries().len(), 3);
    assert!(r.header("x-consul-results-filtered-by-acls").is_none());
}

/// agent/consul/kvs_endpoint.go (KVS.List sets ResultsFilteredByACLs when
/// FilterDirEnt removed entries), agent/kvs_endpoint.go (setMeta runs
/// before the 404, so an all-filtered read still says so) and
/// agent/consul/rpc.go (maskResultsFilteredByACLs: never for a request
/// without a token, so the anonymous token learns nothing of hidden keys).
#[test]
fn acl_filtering_is_reported_on_404s_but_never_to_the_anonymous_token() {
    let s = ConsulServer::with_acl(
        Acl::new("root-token")
            .token("ro", [Rule::key_prefix("apps/web/", Policy::Read)])
            .anonymous([Rule::key_prefix("apps/web/", Policy::Read)]),
    );
    s.put("apps/web/port", "8080");
    s.put("apps/db/password", "hunter2");
    // With a token: partial answer, flagged.
    let r = http::get(&s.url("apps/", "recurse")).token("ro").send();
    assert_eq!(r.status, 200);
    assert_eq!(r.entries().len(), 1);
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), Some("true"));
    // Nothing readable: a 404 with its index, still flagged.
    let r = http::get(&s.url("apps/db/", "recurse")).token("ro").send();
    assert_eq!(r.status, 404);
    assert!(r.header("x-consul-index").is_some());
    assert_eq!(r.header("x-consul-results-filtered-by-acls"), Some("true"));
    // The same reads without a token: the same data, no flag.
    let r = http::get(&s.url("apps/", "recurse")).send();
    assert_eq!(r.entries().len(), 1);
    assert!(r.header("x-consul-results-filtered-by-acls").is_none());
    let r = http::get(&s.url("apps/db/", "recurse")).send();
    assert_eq!(r.status, 404);
    assert!(r.header("x-consul-results-filtered-by-acls").is_none());
}

/// agent/consul/kvs_endpoint.go: with `acl.enable_key_list_policy`,
/// KVS.List and KVS.ListKeys check KeyList on the prefix before the query;
/// `read` does not grant it, `list` and `write` do. Single keys are
/// unaffected.
#[test]
fn key_list_policy_wants_list_for_recursive_reads() {
    let s = ConsulServer::with_acl(
        Acl::new("root-token")
            .key_list_policy()
            .token("ro", [Rule::key_prefix("apps/", Policy::Read)])
            .token("lister", [Rule::key_prefix("apps/", Policy::List)]),
    );
    s.put("apps/web/a", "1");
    assert_eq!(
        http::get(&s.url("apps/web/a", ""))
            .token("ro")
            .send()
            .status,
        200
    );
    for query in ["recurse", "keys"] {
        let r = http::get(&s.url("apps/web/", query)).token("ro").send();
        assert_eq!((r.status, r.text().as_str()), (403, "Permission denied"));
        let r = http::get(&s.url("apps/web/", query)).token("lister").send();
        assert_eq!(r.status, 200, "{query}");
    }
    // `list` grants read of single keys too.
    let r = http::get(&s.url("apps/web/a", "")).token("lister").send();
    assert_eq!(r.status, 200);
}

/// A 404 that does not come from the KV endpoint carries no index: Go's
/// mux answers "404 page not found" for a path Consul does not serve
/// (agent/http.go registers /v1/kv/ and the other endpoints only).
#[test]
fn a_path_consul_does_not_serve_is_404_without_an_index() {
    let s = ConsulServer::start();
    let r = http::get(&format!("{}/proxy/v1/kv/a", s.addr())).send();
    assert_eq!((r.status, r.text().as_str()), (404, "404 page not found\n"));
    assert!(r.header("x-consul-index").is_none());
    let r = http::get(&s.url("a", "")).send();
    assert_eq!(r.status, 404);
    assert!(r.header("x-consul-index").is_some());
}

#[test]
fn acl_tokens_made_by_the_target_work_against_either_consul() {
    let t = ConsulTarget::start_with_acl();
    t.put("apps/web/port", "8080");
    t.put("secret/db", "x");
    let ro = t.create_token(&[Rule::key_prefix("apps/", Policy::Read)]);
    let call = |rel: &str| http::get(&t.url(rel, "")).token(&ro).send();
    assert_eq!(call("apps/web/port").status, 200);
    let r = call("secret/db");
    assert_eq!(r.status, 403);
    assert!(r.text().contains("Permission denied"), "{}", r.text());
    let r = http::get(&t.url("apps/web/port", ""))
        .token("00000000-0000-0000-0000-000000000001")
        .send();
    assert_eq!(r.status, 403);
    assert!(r.text().contains("ACL not found"), "{}", r.text());
}

// -------------------------------------------------------------- faults

#[test]
fn fail_next_answers_500_then_recovers() {
    let s = ConsulServer::start();
    s.put("k", "v");
    s.fail_next(2);
    for _ in 0..2 {
        let r = http::get(&s.url("k", "")).send();
        assert_eq!((r.status, r.text().as_str()), (500, "No cluster leader"));
        assert!(r.header("x-consul-index").is_none());
    }
    assert_eq!(http::get(&s.url("k", "")).send().status, 200);
    let statuses: Vec<_> = s.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(200)]);
    s.fail_next_with(1, 503, "overloaded");
    let r = http::get(&s.url("k", "")).send();
    assert_eq!((r.status, r.text().as_str()), (503, "overloaded"));
}

#[test]
fn delay_holds_every_reply_until_switched_off() {
    let s = ConsulServer::start();
    s.put("k", "v");
    s.delay(Duration::from_millis(300));
    let start = Instant::now();
    assert_eq!(http::get(&s.url("k", "")).send().status, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));
    // A client with a shorter timeout gives up.
    let e = http::get(&s.url("k", ""))
        .timeout(Duration::from_millis(50))
        .try_send();
    assert!(e.is_err());
    s.delay(Duration::ZERO);
    assert_eq!(http::get(&s.url("k", "")).send().status, 200);
}

#[test]
fn freeze_holds_requests_and_woken_queries_until_thawed() {
    let s = ConsulServer::start();
    let index = s.put("k", "1");
    let parked = spawn(http::get(&s.url("k", &format!("index={index}&wait=1m"))));
    s.wait_parked(1);
    s.freeze();
    s.put("k", "2");
    // A new request is accepted but not answered.
    let r = http::get(&s.url("k", ""))
        .timeout(Duration::from_millis(200))
        .try_send();
    assert!(r.is_err(), "{r:?}");
    assert!(!parked.is_finished());
    s.thaw();
    let (r, _) = parked.join().unwrap();
    assert_eq!(r.entries()[0].value_str(), "2");
    assert_eq!(http::get(&s.url("k", "")).send().status, 200);
}

/// hashicorp/go-connlimit as agent/agent.go uses it: a connection past
/// `limits.http_max_conns_per_client` gets a raw 429 with go-connlimit's
/// text and is closed; once a connection closes, new ones are accepted.
#[test]
fn connections_past_the_per_client_cap_get_429() {
    let s = ConsulServer::start();
    s.max_conns_per_client(1);
    let index = s.put("k", "1");
    let parked = spawn(http::get(&s.url("k", &format!("index={index}&wait=1m"))));
    s.wait_parked(1);
    let r = http::get(&s.url("k", "")).send();
    assert_eq!(r.status, 429);
    assert_eq!(
        r.text(),
        "Your IP is issuing too many concurrent connections, please rate limit your calls\n"
    );
    assert_eq!(s.rejected_connections(), 1);
    s.put("k", "2");
    parked.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.open_connections() > 0 {
        assert!(Instant::now() < deadline, "the connection never closed");
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(http::get(&s.url("k", "")).send().status, 200);
}

/// agent/consul/rpc.go: a `?stale` read is answered by whichever server
/// gets it, from its own state, with X-Consul-LastContact saying how long
/// ago it heard from the leader (agent/http.go's setLastContact, in ms); a
/// default read goes to the leader.
#[test]
fn a_lagging_follower_answers_stale_reads_with_old_data() {
    let s = ConsulServer::start();
    s.put("k", "1");
    s.lagging_follower(Duration::from_secs(5));
    s.put("k", "2");
    let r = http::get(&s.url("k", "stale")).send();
    assert_eq!(r.entries()[0].value_str(), "1");
    assert_eq!(r.header("x-consul-lastcontact"), Some("5000"));
    let r = http::get(&s.url("k", "")).send();
    assert_eq!(r.entries()[0].value_str(), "2");
    assert_eq!(r.header("x-consul-lastcontact"), Some("0"));
    s.follower_caught_up();
    let r = http::get(&s.url("k", "stale")).send();
    assert_eq!(r.entries()[0].value_str(), "2");
}

#[test]
fn drop_next_connection_closes_it_without_a_reply() {
    let s = ConsulServer::start();
    s.put("k", "v");
    s.drop_next_connection();
    let e = http::get(&s.url("k", "")).try_send();
    assert!(e.is_err(), "{e:?}");
    assert_eq!(http::get(&s.url("k", "")).send().status, 200);
    let log = s.requests();
    assert!(log[0].dropped && log[0].status.is_none(), "{log:#?}");
    assert_eq!(log[1].status, Some(200));
}

#[test]
fn drop_parked_connections_cuts_a_blocking_query_mid_wait() {
    let s = ConsulServer::start();
    s.put("k", "v");
    let idx = http::get(&s.url("k", "")).send().index();
    let q = thread::spawn({
        let url = s.url("k", &format!("index={idx}&wait=60s"));
        move || http::get(&url).try_send()
    });
    s.wait_parked(1);
    s.drop_parked_connections();
    let r = q.join().unwrap();
    assert!(r.is_err(), "{r:?}");
    assert_eq!(s.parked(), 0);
    assert!(s.requests()[1].dropped);
    // The server carries on.
    assert_eq!(http::get(&s.url("k", "")).send().status, 200);
}

#[test]
fn index_goes_backwards_like_after_a_snapshot_restore() {
    let s = ConsulServer::start();
    for i in 0..10 {
        s.put("p/k", i.to_string());
    }
    let before = http::get(&s.url("p/", "recurse")).send().index();
    s.index_goes_backwards();
    let r = http::get(&s.url("p/", "recurse")).send();
    assert!(r.index() < before, "{} < {before}", r.index());
    assert_eq!(r.entries()[0].value_str(), "9", "data survives");
    // A client still holding the old index would wait out its whole wait
    // (so clients must reset to 0 when the index goes backwards) ...
    let start = Instant::now();
    let stale = http::get(&s.url("p/", &format!("recurse&index={before}&wait=1s"))).send();
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert!(stale.index() < before);
    // ... while one that reset sees the next write at once.
    let low = r.index();
    let q = spawn(http::get(
        &s.url("p/", &format!("recurse&index={low}&wait=60s")),
    ));
    s.wait_parked(1);
    s.put("p/k", "new");
    let (r, _) = q.join().unwrap();
    assert!(r.index() > low && r.index() < before);
    assert_eq!(r.entries()[0].value_str(), "new");
}

#[test]
fn requests_are_recorded_with_method_path_query_and_time() {
    let s = ConsulServer::start();
    let start = Instant::now();
    http::put(&s.url("a/b", "flags=3"), "v").send();
    http::get(&s.url("a/", "recurse&stale")).send();
    http::delete(&s.url("a/b", "")).send();
    let log = s.wait_for_requests(3);
    let summary: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str(), r.query.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("PUT", "/v1/kv/a/b", "flags=3"),
            ("GET", "/v1/kv/a/", "recurse&stale"),
            ("DELETE", "/v1/kv/a/b", ""),
        ]
    );
    assert!(
        log.iter()
            .all(|r| r.at >= start && r.finished >= Some(r.at))
    );
    assert_eq!(log[0].param("flags"), Some("3"));
    assert!(log[1].has("stale") && log[1].blocking_index().is_none());
    s.clear_requests();
    assert!(s.requests().is_empty());
}

#[test]
fn ten_thousand_keys_under_a_prefix() {
    let s = ConsulServer::start();
    s.put_many((0..10_000).map(|i| (format!("big/{i:05}"), format!("v{i}"))));
    let r = http::get(&s.url("big/", "recurse")).send();
    let entries = r.entries();
    assert_eq!(entries.len(), 10_000);
    assert_eq!(entries[9_999].key, "big/09999");
    assert_eq!(r.index(), s.list("big/").0);
    assert_eq!(
        http::get(&s.url("big/", "keys")).send().keys().len(),
        10_000
    );
}

#[test]
fn a_target_without_the_env_is_the_test_server() {
    if std::env::var_os("STENCIL_TEST_CONSUL_ADDR").is_some() {
        return; // This test is about the default.
    }
    let t = ConsulTarget::start();
    assert!(!t.is_real());
    assert_eq!(t.key("apps/"), "apps/");
    assert!(t.addr().starts_with("http://127.0.0.1:"));
    assert!(t.token().is_none());
    t.put("apps/x", "1");
    assert_eq!(
        t.test_server().unwrap().get("apps/x").unwrap().value_str(),
        "1"
    );
}
