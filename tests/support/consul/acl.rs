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

    pub(super) fn read(&self, key: &str) -> bool {
        self.policy(key) != Policy::Deny
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
