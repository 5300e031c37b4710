//! The HTTP endpoints: every request is recorded, meets the injected
//! faults, then goes to its endpoint's handler (agent/kvs_endpoint.go for
//! `/v1/kv/`, agent/status_endpoint.go for the leader).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, State};
use axum::http::Method;
use axum::http::request::Parts;
use axum::response::Response;

use super::acl::{Authz, PERMISSION_DENIED};
use super::blocking::{blocking, parse_go_duration};
use super::conn::Conn;
use super::wire::{
    JsonEntry, Query, json, meta, parse_query, percent_decode, reply, text, token_of,
};
use super::{DATACENTER, Entry, MAX_VALUE_SIZE, Request, Shared, Store, lock};

/// What the faults say to do with one request.
struct Injected {
    /// Close the connection without a reply.
    drop: bool,
    /// Answer this status and body instead of the endpoint.
    fail: Option<(u16, String)>,
    /// Hold the reply back this long first.
    delay: Duration,
}

impl Shared {
    /// Adds a request to the log; its id for `finish`.
    fn record(
        &self,
        parts: &Parts,
        path: &str,
        params: &[(String, String)],
        token: Option<String>,
    ) -> usize {
        let raw_query = parts.uri.query().unwrap_or("").to_string();
        let mut log = lock(&self.log);
        log.push(Request {
            method: parts.method.to_string(),
            path: path.to_string(),
            query: raw_query,
            params: params.to_vec(),
            token,
            at: Instant::now(),
            status: None,
            finished: None,
            dropped: false,
        });
        self.cleared.load(Ordering::SeqCst) + log.len() - 1
    }

    /// Returns once the server is not frozen.
    async fn thawed(&self) {
        let mut frozen = self.frozen.subscribe();
        // Err: the server is shutting down; nothing to wait for.
        let _ = frozen.wait_for(|f| !*f).await;
    }

    /// Uses up one of the pending faults, if any: a dropped connection
    /// first, else a failure.
    fn take_fault(&self) -> Injected {
        let mut f = lock(&self.faults);
        let drop = f.drop > 0;
        f.drop -= usize::from(drop);
        let fail = (!drop && f.fail > 0).then(|| (f.fail_status, f.fail_body.clone()));
        f.fail -= usize::from(fail.is_some());
        Injected {
            drop,
            fail,
            delay: f.delay,
        }
    }
}

/// Every request: recorded, then faulted or routed.
pub(super) async fn handle(
    State(srv): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    req: axum::extract::Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let path = percent_decode(parts.uri.path());
    let params = parse_query(parts.uri.query().unwrap_or(""));
    let token = token_of(&params, &parts.headers);
    let id = srv.record(&parts, &path, &params, token.clone());
    srv.thawed().await;
    let fault = srv.take_fault();
    if fault.drop {
        conn.kill();
        srv.finish(id, None);
        // Never written: the killed connection fails the write.
        return reply(500, "");
    }
    if !fault.delay.is_zero() {
        tokio::time::sleep(fault.delay).await;
    }
    if let Some((status, body)) = fault.fail {
        srv.finish(id, Some(status));
        return text(status, &body);
    }
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        srv.finish(id, None);
        return reply(400, "");
    };
    let q = Query { params };
    let Some(response) = route(&srv, &parts.method, &path, &q, token.as_deref(), &body).await
    else {
        conn.kill();
        srv.finish(id, None);
        return reply(500, "");
    };
    srv.thawed().await;
    srv.finish(id, Some(response.status().as_u16()));
    response
}

/// The endpoint of a request. None: drop the connection (a parked query
/// cut by the test).
async fn route(
    srv: &Shared,
    method: &Method,
    path: &str,
    q: &Query,
    token: Option<&str>,
    body: &[u8],
) -> Option<Response> {
    if path == "/v1/status/leader" {
        return Some(json(200, &"127.0.0.1:8300", q.has("pretty")));
    }
    if let Some(answer) = super::health::route(srv, method, path, q, token, body).await {
        return answer;
    }
    let Some(key) = path.strip_prefix("/v1/kv/") else {
        return Some(text(404, "404 page not found\n"));
    };
    let call = match Call::parse(srv, key, q, token) {
        Ok(call) => call,
        Err(refusal) => return Some(*refusal),
    };
    match *method {
        Method::GET if q.has("keys") => list_keys(srv, &call).await,
        Method::GET => get(srv, &call).await,
        Method::PUT => Some(put(srv, &call, body)),
        Method::DELETE => Some(delete(srv, &call)),
        _ => Some(text(405, &format!("method {method} not allowed"))),
    }
}

/// A KV request as agent/http.go's parse() leaves it for the endpoint.
pub(super) struct Call<'a> {
    key: &'a str,
    pub(super) q: &'a Query,
    pub(super) wait: Option<Duration>,
    pub(super) min_index: u64,
    pub(super) authz: Authz,
    /// Whether the request carried a token: Consul says a read was
    /// filtered only then (agent/consul/rpc.go, maskResultsFilteredByACLs),
    /// so an anonymous client cannot learn that hidden keys exist.
    pub(super) authenticated: bool,
    /// `acl.enable_key_list_policy` is on.
    list_policy: bool,
    pub(super) consistency: &'static str,
    pub(super) pretty: bool,
}

impl<'a> Call<'a> {
    /// Consistency, then wait, then index, as parse() checks them; the
    /// datacenter and the token only matter once the RPC is made. Err: the
    /// reply that refuses the request (boxed: a reply is large).
    pub(super) fn parse(
        srv: &Shared,
        key: &'a str,
        q: &'a Query,
        token: Option<&str>,
    ) -> Result<Call<'a>, Box<Response>> {
        let refuse = |status, body: &str| Box::new(text(status, body));
        if q.has("stale") && q.has("consistent") {
            return Err(refuse(
                400,
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            ));
        }
        let wait = match q.get("wait").filter(|w| !w.is_empty()) {
            Some(w) => Some(parse_go_duration(w).ok_or_else(|| refuse(400, "Invalid wait time"))?),
            None => None,
        };
        let min_index = match q.get("index").filter(|i| !i.is_empty()) {
            Some(i) => i.parse().map_err(|_| refuse(400, "Invalid index"))?,
            None => 0,
        };
        if q.get("dc")
            .is_some_and(|dc| !dc.is_empty() && dc != DATACENTER)
        {
            return Err(refuse(500, "No path to datacenter"));
        }
        let (authz, list_policy) = match lock(&srv.acl).as_ref() {
            None => (Authz::All, false),
            Some(acl) => (
                acl.resolve(token.unwrap_or(""))
                    .map_err(|body| refuse(403, body))?,
                acl.key_list_policy,
            ),
        };
        let consistency = if q.has("stale") {
            "stale"
        } else if q.has("consistent") {
            "consistent"
        } else {
            "leader"
        };
        Ok(Call {
            key,
            q,
            wait,
            min_index,
            authz,
            authenticated: token.is_some_and(|t| !t.is_empty()),
            list_policy,
            consistency,
            pretty: q.has("pretty"),
        })
    }

    /// Whether KVS.List / KVS.ListKeys may run: with
    /// `enable_key_list_policy`, only with `list` on the prefix.
    fn may_list(&self) -> bool {
        !self.list_policy || self.authz.list(self.key)
    }

    /// KVS.List: the entries under the key the token may read, with
    /// whether the ACLs hid any.
    fn visible(&self, s: &Store) -> (u64, (Vec<Entry>, bool)) {
        let (idx, entries) = s.list(self.key);
        let total = entries.len();
        let visible: Vec<Entry> = entries
            .into_iter()
            .filter(|e| self.authz.read(&e.key))
            .collect();
        let filtered = visible.len() < total && self.authenticated;
        (idx, (visible, filtered))
    }

    /// A numeric parameter; Err is Consul's answer to one that is not.
    fn number(&self, name: &str) -> Result<Option<u64>, Box<Response>> {
        match self.q.get(name).map(str::parse::<u64>) {
            None => Ok(None),
            Some(Ok(n)) => Ok(Some(n)),
            Some(Err(_)) => Err(Box::new(text(500, "strconv.ParseUint: invalid syntax"))),
        }
    }
}

/// `GET /v1/kv/<prefix>?keys[&separator=/]`: KVS.ListKeys.
async fn list_keys(srv: &Shared, call: &Call<'_>) -> Option<Response> {
    let sep = call
        .q
        .get("separator")
        .or_else(|| call.q.get("seperator"))
        .unwrap_or("");
    if !call.may_list() {
        return Some(text(403, PERMISSION_DENIED));
    }
    let (idx, (keys, filtered)) = blocking(srv, call.min_index, call.wait, |s| {
        let (idx, (visible, filtered)) = call.visible(s);
        (idx, (fold_keys(call.key, sep, &visible), filtered), false)
    })
    .await?;
    let mut r = if keys.is_empty() && !call.key.is_empty() {
        reply(404, "")
    } else {
        json(200, &keys, call.pretty)
    };
    meta(&mut r, idx, call.consistency, filtered);
    Some(r)
}

/// `GET /v1/kv/<key>[?recurse][&raw]`: KVS.Get, or KVS.List with recurse.
async fn get(srv: &Shared, call: &Call<'_>) -> Option<Response> {
    let recurse = call.q.has("recurse");
    if !recurse && call.key.is_empty() {
        return Some(text(400, "Missing key name"));
    }
    if !recurse && !call.authz.read(call.key) {
        return Some(text(403, PERMISSION_DENIED));
    }
    if recurse && !call.may_list() {
        return Some(text(403, PERMISSION_DENIED));
    }
    let follower = lock(&srv.follower).clone();
    if let Some((store, last_contact)) = follower.filter(|_| call.consistency == "stale") {
        let (idx, (entries, filtered)) = if recurse {
            call.visible(&store)
        } else {
            let (idx, e) = store.get(call.key);
            (idx, (e.into_iter().collect(), false))
        };
        let mut r = if entries.is_empty() {
            reply(404, "")
        } else {
            let out: Vec<JsonEntry> = entries.iter().map(JsonEntry::from).collect();
            json(200, &out, call.pretty)
        };
        meta(&mut r, idx, call.consistency, filtered);
        let ms = u64::try_from(last_contact.as_millis()).unwrap_or(u64::MAX);
        r.headers_mut().insert("x-consul-lastcontact", ms.into());
        return Some(r);
    }
    let (idx, (entries, filtered)) = blocking(srv, call.min_index, call.wait, |s| {
        if recurse {
            // KVS.List answers an empty prefix like any other (no
            // errNotFound), with the table index.
            let (idx, visible) = call.visible(s);
            (idx, visible, false)
        } else {
            let (idx, e) = s.get(call.key);
            let missing = e.is_none();
            (idx, (e.into_iter().collect(), false), missing)
        }
    })
    .await?;
    let mut r = if entries.is_empty() {
        reply(404, "")
    } else if call.q.has("raw") && !recurse {
        raw(&entries[0])
    } else {
        let out: Vec<JsonEntry> = entries.iter().map(JsonEntry::from).collect();
        json(200, &out, call.pretty)
    };
    meta(&mut r, idx, call.consistency, filtered);
    Some(r)
}

/// `?raw`: the value's bytes, with the headers that keep a browser from
/// running them.
fn raw(entry: &Entry) -> Response {
    let mut r = reply(200, entry.value.clone().unwrap_or_default());
    let h = r.headers_mut();
    h.insert("content-type", "text/plain".parse().unwrap());
    h.insert("x-content-type-options", "nosniff".parse().unwrap());
    h.insert("content-security-policy", "sandbox".parse().unwrap());
    r
}

/// `PUT /v1/kv/<key>[?flags=N][&cas=N]`: KVS.Apply with set or cas.
fn put(srv: &Shared, call: &Call<'_>, body: &[u8]) -> Response {
    if call.key.is_empty() {
        return text(400, "Missing key name");
    }
    let flagged = ["cas", "acquire", "release"]
        .iter()
        .filter(|f| call.q.has(f))
        .count();
    if flagged > 1 {
        return text(400, &call.q.conflicting());
    }
    if call.q.has("acquire") || call.q.has("release") {
        // Sessions are not modelled; Consul says this for an unknown
        // session.
        return text(500, "invalid session");
    }
    let (flags, cas) = match (call.number("flags"), call.number("cas")) {
        (Ok(flags), Ok(cas)) => (flags.unwrap_or(0), cas),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    if body.len() > MAX_VALUE_SIZE {
        return text(
            413,
            &format!(
                "Request body({} bytes) too large, max size: {MAX_VALUE_SIZE} bytes. See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.",
                body.len()
            ),
        );
    }
    if !call.authz.write(call.key) {
        return text(403, PERMISSION_DENIED);
    }
    let ok = srv.write(|s| s.set(call.key, body, flags, cas));
    // A plain set always answers true; only a CAS can say false.
    json(200, &(ok || cas.is_none()), call.pretty)
}

/// `DELETE /v1/kv/<key>[?recurse|?cas=N]`: KVS.Apply with delete,
/// delete-tree or delete-cas.
fn delete(srv: &Shared, call: &Call<'_>) -> Response {
    let recurse = call.q.has("recurse");
    if recurse && call.q.has("cas") {
        return text(400, &call.q.conflicting());
    }
    if !recurse && call.key.is_empty() {
        return text(400, "Missing key name");
    }
    let cas = match call.number("cas") {
        Ok(cas) => cas,
        Err(r) => return *r,
    };
    let allowed = if recurse {
        call.authz.write_prefix(call.key)
    } else {
        call.authz.write(call.key)
    };
    if !allowed {
        return text(403, PERMISSION_DENIED);
    }
    let ok = if recurse {
        srv.write(|s| s.delete_tree(call.key));
        true
    } else {
        srv.write(|s| s.delete(call.key, cas))
    };
    json(200, &(ok || cas.is_none()), call.pretty)
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
