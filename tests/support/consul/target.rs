//! Where a Consul test runs: the test server, or a real Consul.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::wire::kv_url;
use super::{Acl, ConsulServer, Rule, http, lock};

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
