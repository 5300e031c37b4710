//! The catalog and health endpoints, as agent/health_endpoint.go and
//! agent/catalog_endpoint.go (Consul v1.16.4) answer them:
//! `GET /v1/health/service/NAME` (`?passing`, `?tag=` repeated, `?near=`,
//! `?dc=`), `GET /v1/catalog/services`, `GET /v1/catalog/nodes`,
//! `GET /v1/catalog/node/NAME`, `PUT /v1/catalog/register` and
//! `PUT /v1/catalog/deregister`; blocking on the index of what was read.
//!
//! Reproduced on purpose, since clients must cope: `?passing` drops an
//! unhealthy instance by moving the last one into its place
//! (filterNonPassing), so the answer is no longer sorted; the tag lists of
//! `/v1/catalog/services` come from a Go map and are in random order; a
//! service registered without a port is answered without `Port`; names
//! match case-insensitively. ACLs filter (never deny) what a token may not
//! read — instances need service:read and node:read — and say so with
//! `X-Consul-Results-Filtered-By-ACLs` when a token was sent; an unknown
//! token is a 403 "ACL not found", a registration without write a 403
//! "Permission denied".

use std::hash::BuildHasher;

use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use super::acl::PERMISSION_DENIED;
use super::blocking::blocking;
use super::catalog::{Catalog, CheckRec, NodeRec, Registration, ServiceRec};
use super::endpoints::Call;
use super::wire::{Query, json as reply_json, meta, text};
use super::{DATACENTER, Shared};

/// The catalog endpoints; None for any other path.
pub(super) async fn route(
    srv: &Shared,
    method: &Method,
    path: &str,
    q: &Query,
    token: Option<&str>,
    body: &[u8],
) -> Option<Option<Response>> {
    let endpoint = path.strip_prefix("/v1/")?;
    let known = endpoint.starts_with("health/service/")
        || endpoint.starts_with("catalog/node/")
        || matches!(
            endpoint,
            "catalog/services" | "catalog/nodes" | "catalog/register" | "catalog/deregister"
        );
    if !known {
        return None;
    }
    let call = match Call::parse(srv, "", q, token) {
        Ok(call) => call,
        Err(refusal) => return Some(Some(*refusal)),
    };
    let writes = matches!(endpoint, "catalog/register" | "catalog/deregister");
    match (method, writes) {
        (&Method::PUT, true) => return Some(Some(write(srv, &call, endpoint, body))),
        (&Method::GET, false) => {}
        _ => return Some(Some(text(405, &format!("method {method} not allowed")))),
    }
    if let Some(name) = endpoint.strip_prefix("health/service/") {
        if name.is_empty() {
            return Some(Some(text(400, "Missing service name")));
        }
        return Some(health_service(srv, &call, name).await);
    }
    if let Some(name) = endpoint.strip_prefix("catalog/node/") {
        if name.is_empty() {
            return Some(Some(text(400, "Missing node name")));
        }
        return Some(read(srv, &call, |c, call| node(c, call, name)).await);
    }
    Some(match endpoint {
        "catalog/services" => read(srv, &call, services).await,
        _ => read(srv, &call, nodes).await,
    })
}

/// A blocking read of the catalog: `f` gives the index and the answer
/// with whether ACLs filtered it.
async fn read(
    srv: &Shared,
    call: &Call<'_>,
    f: impl Fn(&Catalog, &Call<'_>) -> (u64, Value, bool),
) -> Option<Response> {
    let (idx, (body, filtered)) = blocking(srv, call.min_index, call.wait, |s| {
        let (idx, body, filtered) = f(&s.catalog, call);
        (idx, (body, filtered), false)
    })
    .await?;
    let mut r = reply_json(200, &body, call.pretty);
    meta(
        &mut r,
        idx,
        call.consistency,
        filtered && call.authenticated,
    );
    Some(r)
}

/// `GET /v1/health/service/NAME`.
async fn health_service(srv: &Shared, call: &Call<'_>, name: &str) -> Option<Response> {
    let passing = match call.q.get("passing") {
        None => false,
        Some("" | "1" | "t" | "T" | "true" | "TRUE" | "True") => true,
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
        Some(_) => return Some(text(400, "Invalid value for ?passing")),
    };
    let tags: Vec<String> = call
        .q
        .params
        .iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v.to_lowercase())
        .collect();
    read(srv, call, |c, call| {
        let mut filtered = false;
        let mut out: Vec<(Value, bool)> = Vec::new();
        for (node, n, id, s, checks) in c.instances(name) {
            let lower: Vec<String> = s.tags.iter().map(|t| t.to_lowercase()).collect();
            if !tags.iter().all(|t| lower.contains(t)) {
                continue;
            }
            if !(call.authz.service_read(&s.name) && call.authz.node_read(node)) {
                filtered = true;
                continue;
            }
            let healthy = checks.iter().all(|(_, c)| c.status == "passing");
            out.push((entry(node, n, id, s, &checks), healthy));
        }
        if passing {
            filter_non_passing(&mut out);
        }
        let list: Vec<Value> = out.into_iter().map(|(v, _)| v).collect();
        (c.index_of_service(name), Value::from(list), filtered)
    })
    .await
}

/// filterNonPassing: an unhealthy entry is replaced by the last one and
/// the list shortened, so what remains is no longer in order.
fn filter_non_passing(out: &mut Vec<(Value, bool)>) {
    let mut n = out.len();
    let mut i = 0;
    while i < n {
        if out[i].1 {
            i += 1;
            continue;
        }
        out.swap(i, n - 1);
        n -= 1;
    }
    out.truncate(n);
}

fn node_json(name: &str, n: &NodeRec) -> Value {
    json!({
        "ID": n.id,
        "Node": name,
        "Address": n.address,
        "Datacenter": DATACENTER,
        "TaggedAddresses": {"lan": n.address, "wan": n.address},
        "Meta": n.meta,
        "CreateIndex": n.create_index,
        "ModifyIndex": n.modify_index,
    })
}

fn service_json(id: &str, s: &ServiceRec) -> Value {
    let mut v = json!({
        "ID": id,
        "Service": s.name,
        "Tags": s.tags,
        "Address": s.address,
        "Meta": if s.meta.is_empty() { Value::Null } else { json!(s.meta) },
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": false,
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    });
    if let Some(port) = s.port {
        v["Port"] = json!(port);
    }
    v
}

fn entry(node: &str, n: &NodeRec, id: &str, s: &ServiceRec, checks: &[(&str, &CheckRec)]) -> Value {
    let checks: Vec<Value> = checks
        .iter()
        .map(|(cid, c)| {
            json!({
                "Node": node,
                "CheckID": cid,
                "Name": if c.service_id.is_empty() { "Serf Health Status".to_string() } else { format!("Service '{}' check", s.name) },
                "Status": c.status,
                "Notes": "",
                "Output": "",
                "ServiceID": c.service_id,
                "ServiceName": if c.service_id.is_empty() { "" } else { s.name.as_str() },
                "ServiceTags": if c.service_id.is_empty() { Vec::new() } else { s.tags.clone() },
                "CreateIndex": c.modify_index,
                "ModifyIndex": c.modify_index,
            })
        })
        .collect();
    json!({"Node": node_json(node, n), "Service": service_json(id, s), "Checks": checks})
}

/// `GET /v1/catalog/services`: name -> tags, the tags in random order (a
/// Go map's), the services the token may read.
fn services(c: &Catalog, call: &Call<'_>) -> (u64, Value, bool) {
    let mut filtered = false;
    let mut map = serde_json::Map::new();
    for s in c.services.values() {
        if !call.authz.service_read(&s.name) {
            filtered = true;
            continue;
        }
        let tags = map.entry(s.name.clone()).or_insert_with(|| json!([]));
        let list = tags.as_array_mut().expect("an array");
        for t in &s.tags {
            if !list.iter().any(|x| x == t) {
                list.push(json!(t));
            }
        }
    }
    let random = std::collections::hash_map::RandomState::new();
    for tags in map.values_mut() {
        let list = tags.as_array_mut().expect("an array");
        list.sort_by_key(|t| random.hash_one(t.as_str()));
    }
    (c.services_table, Value::Object(map), filtered)
}

/// `GET /v1/catalog/nodes`: by name.
fn nodes(c: &Catalog, call: &Call<'_>) -> (u64, Value, bool) {
    let mut filtered = false;
    let mut list = Vec::new();
    for (name, n) in &c.nodes {
        if call.authz.node_read(name) {
            list.push(node_json(name, n));
        } else {
            filtered = true;
        }
    }
    (c.nodes_table, Value::from(list), filtered)
}

/// `GET /v1/catalog/node/NAME`: the node and its services by ID, or
/// `null`.
fn node(c: &Catalog, call: &Call<'_>, name: &str) -> (u64, Value, bool) {
    let idx = c.nodes_table.max(c.services_table);
    let Some(n) = c.nodes.get(name) else {
        return (idx, Value::Null, false);
    };
    if !call.authz.node_read(name) {
        return (idx, Value::Null, true);
    }
    let mut filtered = false;
    let mut services = serde_json::Map::new();
    for ((node, id), s) in &c.services {
        if node != name {
            continue;
        }
        if call.authz.service_read(&s.name) {
            services.insert(id.clone(), service_json(id, s));
        } else {
            filtered = true;
        }
    }
    (
        idx,
        json!({"Node": node_json(name, n), "Services": services}),
        filtered,
    )
}

/// `PUT /v1/catalog/register` and `/v1/catalog/deregister`.
fn write(srv: &Shared, call: &Call<'_>, endpoint: &str, body: &[u8]) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return text(400, "Request decode failed: invalid JSON");
    };
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let node = s(&v, "Node");
    if node.is_empty() {
        return text(400, "Missing node name");
    }
    if endpoint == "catalog/deregister" {
        return deregister(srv, call, &node, &s(&v, "ServiceID"));
    }
    let Some(svc) = v.get("Service").filter(|x| x.is_object()) else {
        return text(400, "stencil's test server registers services only");
    };
    let name = s(svc, "Service");
    if name.is_empty() || !call.authz.service_write(&name) {
        return text(
            if name.is_empty() { 400 } else { 403 },
            if name.is_empty() {
                "Missing service name"
            } else {
                PERMISSION_DENIED
            },
        );
    }
    let id = Some(s(svc, "ID"))
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| name.clone());
    let strings = |x: Option<&Value>| -> Vec<String> {
        x.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let map = |x: Option<&Value>| {
        x.and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let reg = Registration {
        node: node.clone(),
        node_address: s(&v, "Address"),
        node_meta: map(v.get("NodeMeta")),
        id: id.clone(),
        name,
        address: s(svc, "Address"),
        port: svc.get("Port").and_then(Value::as_u64),
        tags: strings(svc.get("Tags")),
        meta: map(svc.get("Meta")),
    };
    let status = v.get("Check").map(|c| s(c, "Status"));
    srv.write(|st| {
        let idx = st.next_index();
        st.catalog.register(&reg, idx);
        if let Some(status) = status.filter(|s| !s.is_empty()) {
            st.catalog.set_check(&node, &id, &status, idx);
        }
    });
    reply_json(200, &true, false)
}

/// `PUT /v1/catalog/deregister`: an instance, or with no ID the node.
fn deregister(srv: &Shared, call: &Call<'_>, node: &str, id: &str) -> Response {
    let allowed = if id.is_empty() {
        call.authz.node_write(node)
    } else {
        let name = lock_catalog(srv, |c| {
            c.services
                .get(&(node.to_string(), id.to_string()))
                .map(|r| r.name.clone())
        });
        name.is_none_or(|n| call.authz.service_write(&n))
    };
    if !allowed {
        return text(403, PERMISSION_DENIED);
    }
    srv.write(|st| {
        let idx = st.next_index();
        if id.is_empty() {
            st.catalog.deregister_node(node, idx);
        } else {
            st.catalog.deregister(node, id, idx);
        }
    });
    reply_json(200, &true, false)
}

fn lock_catalog<R>(srv: &Shared, f: impl FnOnce(&Catalog) -> R) -> R {
    f(&super::lock(&srv.store).catalog)
}
