//! HTTP as Consul's agent speaks it: query strings and tokens as
//! agent/http.go parses them, replies with Consul's headers and JSON.

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine as _;

use super::Entry;

pub(super) fn reply(status: u16, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .body(body.into())
        .unwrap()
}

pub(super) fn text(status: u16, body: &str) -> Response {
    let mut r = reply(status, body.to_string());
    r.headers_mut()
        .insert("content-type", "text/plain; charset=utf-8".parse().unwrap());
    r
}

pub(super) fn json(status: u16, value: &impl serde::Serialize, pretty: bool) -> Response {
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
pub(super) fn parse_query(q: &str) -> Vec<(String, String)> {
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

pub(super) fn percent_decode(s: &str) -> String {
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

/// The token, from where Consul's parseTokenInternal looks, in its order.
pub(super) fn token_of(params: &[(String, String)], headers: &HeaderMap) -> Option<String> {
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

pub(super) struct Query {
    pub(super) params: Vec<(String, String)>,
}

impl Query {
    /// conflictingFlags' body: "Conflicting flags: " and Go's
    /// url.Values.Encode() (sorted by key).
    pub(super) fn conflicting(&self) -> String {
        let mut pairs: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{}={}", encode_key(k), encode_key(v)))
            .collect();
        pairs.sort();
        format!("Conflicting flags: {}\n", pairs.join("&"))
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.params.iter().any(|(k, _)| k == name)
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}
/// setMeta: the headers of every read reply, 404s included.
pub(super) fn meta(r: &mut Response, index: u64, consistency: &str, filtered: bool) {
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

/// An entry in Consul's JSON field order.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct JsonEntry<'a> {
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

pub(super) fn kv_url(addr: &str, key: &str, query: &str) -> String {
    let mut url = format!("{addr}/v1/kv/{}", encode_key(key));
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    url
}
