//! ACLs: tokens with `key` and `key_prefix` rules, default policy deny
//! (acl/policy_authorizer.go, acl/errors.go).

use std::collections::HashMap;

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

/// What a rule is about: KV keys, services or nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Key,
    Service,
    Node,
}

impl Resource {
    fn name(self) -> &'static str {
        match self {
            Resource::Key => "key",
            Resource::Service => "service",
            Resource::Node => "node",
        }
    }
}

/// A `key` (exact) or `key_prefix` rule of a Consul ACL policy, or its
/// `service`/`service_prefix`, `node`/`node_prefix` kin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub prefix: bool,
    pub key: String,
    pub policy: Policy,
    pub resource: Resource,
}

impl Rule {
    pub fn key(key: &str, policy: Policy) -> Rule {
        Rule {
            prefix: false,
            key: key.to_string(),
            policy,
            resource: Resource::Key,
        }
    }

    pub fn key_prefix(prefix: &str, policy: Policy) -> Rule {
        Rule {
            prefix: true,
            ..Rule::key(prefix, policy)
        }
    }

    /// `service_prefix "web" { policy = "read" }`
    pub fn service_prefix(prefix: &str, policy: Policy) -> Rule {
        Rule {
            resource: Resource::Service,
            ..Rule::key_prefix(prefix, policy)
        }
    }

    /// `node_prefix "" { policy = "read" }`
    pub fn node_prefix(prefix: &str, policy: Policy) -> Rule {
        Rule {
            resource: Resource::Node,
            ..Rule::key_prefix(prefix, policy)
        }
    }

    /// The rule in Consul's HCL policy language, a key rule's key under
    /// `root`.
    pub fn hcl(&self, root: &str) -> String {
        let kind = self.resource.name();
        let kind = if self.prefix {
            format!("{kind}_prefix")
        } else {
            kind.to_string()
        };
        let root = if self.resource == Resource::Key {
            root
        } else {
            ""
        };
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
    pub(super) management: String,
    pub(super) tokens: HashMap<String, Vec<Rule>>,
    anonymous: Vec<Rule>,
    /// `acl.enable_key_list_policy`: a recursive read or key list needs
    /// `list` on the prefix (agent/consul/kvs_endpoint.go, KVS.List and
    /// KVS.ListKeys check KeyList before the query; `read` does not grant
    /// it, `list` and `write` do).
    pub(super) key_list_policy: bool,
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

    /// Turns on `acl.enable_key_list_policy`.
    pub fn key_list_policy(mut self) -> Acl {
        self.key_list_policy = true;
        self
    }

    pub fn anonymous(mut self, rules: impl IntoIterator<Item = Rule>) -> Acl {
        self.anonymous = rules.into_iter().collect();
        self
    }

    /// The authorizer for a request's token; Err is the 403 body.
    pub(super) fn resolve(&self, token: &str) -> Result<Authz, &'static str> {
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

pub(super) const PERMISSION_DENIED: &str = "Permission denied";
const ACL_NOT_FOUND: &str = "ACL not found";

pub(super) enum Authz {
    All,
    Rules(Vec<Rule>),
}

impl Authz {
    /// An exact `key` rule wins; else the longest matching `key_prefix`;
    /// else the default policy, deny.
    fn policy(&self, key: &str) -> Policy {
        self.policy_of(Resource::Key, key)
    }

    fn policy_of(&self, resource: Resource, key: &str) -> Policy {
        let rules = match self {
            Authz::All => return Policy::Write,
            Authz::Rules(r) => r,
        };
        let rules = rules.iter().filter(|r| r.resource == resource);
        if let Some(r) = rules.clone().find(|r| !r.prefix && r.key == key) {
            return r.policy;
        }
        rules
            .filter(|r| r.prefix && key.starts_with(&r.key))
            .max_by_key(|r| r.key.len())
            .map_or(Policy::Deny, |r| r.policy)
    }

    pub(super) fn read(&self, key: &str) -> bool {
        self.policy(key) != Policy::Deny
    }

    /// ServiceRead: any policy but deny (acl/policy_authorizer.go).
    pub(super) fn service_read(&self, name: &str) -> bool {
        self.policy_of(Resource::Service, name) != Policy::Deny
    }

    pub(super) fn service_write(&self, name: &str) -> bool {
        self.policy_of(Resource::Service, name) == Policy::Write
    }

    pub(super) fn node_read(&self, name: &str) -> bool {
        self.policy_of(Resource::Node, name) != Policy::Deny
    }

    pub(super) fn node_write(&self, name: &str) -> bool {
        self.policy_of(Resource::Node, name) == Policy::Write
    }

    /// KeyList: `list` or `write` on the prefix.
    pub(super) fn list(&self, prefix: &str) -> bool {
        matches!(self.policy(prefix), Policy::List | Policy::Write)
    }

    pub(super) fn write(&self, key: &str) -> bool {
        self.policy(key) == Policy::Write
    }

    /// KeyWritePrefix: write on the prefix and on every rule beneath it.
    pub(super) fn write_prefix(&self, prefix: &str) -> bool {
        let Authz::Rules(rules) = self else {
            return true;
        };
        let rules: Vec<&Rule> = rules
            .iter()
            .filter(|r| r.resource == Resource::Key)
            .collect();
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
