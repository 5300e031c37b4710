//! Service discovery: what `service()`, `services()`, `nodes()` and
//! `node()` ask a source for, and what they get back.
//!
//! A [`CatalogQuery`] is one request to the catalog as a blocking query can
//! watch it: two templates that ask the same thing share one query, and a
//! change to it re-renders exactly the templates that asked. The answers
//! are sorted by the source as consul-template sorts them (instances by
//! node, then ID; services and tags by name; nodes by name, then address),
//! so a reply Consul sent in another order renders the same bytes.

use std::collections::BTreeMap;
use std::fmt;

/// One catalog request. Names are kept as written except a service's,
/// which Consul matches case-insensitively: `service("Web")` and
/// `service("web")` are one query.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(tag = "what", rename_all = "lowercase")]
pub enum CatalogQuery {
    /// `/v1/health/service/NAME`: the instances of a service with their
    /// health; `passing` asks Consul for the healthy ones only (`?passing`).
    Service {
        name: String,
        /// Every tag an instance must have (`?tag=`, repeated).
        tags: Vec<String>,
        dc: Option<String>,
        /// Sort by round-trip time from this node (`?near=`, `_agent` for
        /// the agent answering).
        near: Option<String>,
        passing: bool,
    },
    /// `/v1/catalog/services`: every service with the union of its tags.
    Services { dc: Option<String> },
    /// `/v1/catalog/nodes`.
    Nodes {
        dc: Option<String>,
        near: Option<String>,
    },
    /// `/v1/catalog/node/NAME`: one node and its services.
    Node { name: String, dc: Option<String> },
}

impl fmt::Display for CatalogQuery {
    /// As the template call that makes it: `service("web", tag="v2")`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |name: &str, v: &Option<String>| {
            v.as_ref()
                .map(|v| format!(", {name}={v:?}"))
                .unwrap_or_default()
        };
        match self {
            CatalogQuery::Service {
                name,
                tags,
                dc,
                near,
                passing,
            } => {
                write!(f, "service({name:?}")?;
                for t in tags {
                    write!(f, ", tag={t:?}")?;
                }
                let state = if *passing { "" } else { ", state=\"any\"" };
                write!(f, "{}{}{state})", opt("dc", dc), opt("near", near))
            }
            CatalogQuery::Services { dc } => {
                write!(f, "services({})", opt("dc", dc).trim_start_matches(", "))
            }
            CatalogQuery::Nodes { dc, near } => {
                let args = format!("{}{}", opt("dc", dc), opt("near", near));
                write!(f, "nodes({})", args.trim_start_matches(", "))
            }
            CatalogQuery::Node { name, dc } => write!(f, "node({name:?}{})", opt("dc", dc)),
        }
    }
}

/// An answer to a [`CatalogQuery`], sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogData {
    Instances(Vec<Instance>),
    Services(Vec<ServiceTags>),
    Nodes(Vec<Node>),
    /// None: no node of that name.
    Node(Option<NodeServices>),
}

/// One instance of a service, as `service()` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub node: String,
    pub node_address: String,
    /// The service's address, or the node's when the service has none.
    pub address: String,
    /// 0 when the registration has none.
    pub port: u64,
    /// Sorted.
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub node_meta: BTreeMap<String, String>,
    /// `passing`, `warning` or `critical`: the worst of its checks and
    /// its node's (an instance without checks is passing).
    pub status: String,
    /// The node's datacenter.
    pub datacenter: String,
}

/// A service name with the tags its instances carry, as `services()`
/// gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTags {
    pub name: String,
    /// Sorted, without duplicates.
    pub tags: Vec<String>,
}

/// A node of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub id: String,
    pub address: String,
    pub datacenter: String,
    pub meta: BTreeMap<String, String>,
}

/// `node(name)`: a node with the services registered on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeServices {
    pub node: Node,
    pub services: Vec<NodeService>,
}

/// A service as registered on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeService {
    pub id: String,
    pub name: String,
    /// The service's own address, or the node's when it has none.
    pub address: String,
    pub port: u64,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
}

/// The worst of a set of check statuses, as consul-template ranks them:
/// critical, then unknown (Consul's maintenance mode reports critical),
/// then warning, then passing. No checks at all is passing.
pub fn worst_status<'a>(statuses: impl IntoIterator<Item = &'a str>) -> String {
    let rank = |s: &str| match s {
        "critical" => 3,
        "passing" => 0,
        "warning" => 1,
        // Anything else Consul might add reads as unknown: worse than a
        // warning, not healthy.
        _ => 2,
    };
    statuses
        .into_iter()
        .max_by_key(|s| rank(s))
        .map_or_else(|| "passing".to_string(), str::to_string)
}

/// Sorts an answer the way consul-template does, so the rendered file does
/// not depend on the order Consul sent (it reorders `?passing` answers, and
/// tag lists come in no fixed order). Instances asked for `near` a node
/// keep Consul's order, nearest first: that order is the point.
pub fn sort(data: &mut CatalogData, keep_order: bool) {
    match data {
        CatalogData::Instances(list) => {
            for i in list.iter_mut() {
                i.tags.sort();
            }
            if !keep_order {
                list.sort_by(|a, b| (&a.node, &a.id).cmp(&(&b.node, &b.id)));
            }
        }
        CatalogData::Services(list) => {
            for s in list.iter_mut() {
                s.tags.sort();
                s.tags.dedup();
            }
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }
        CatalogData::Nodes(list) => {
            if !keep_order {
                list.sort_by(|a, b| (&a.name, &a.address).cmp(&(&b.name, &b.address)));
            }
        }
        CatalogData::Node(Some(n)) => {
            for s in &mut n.services {
                s.tags.sort();
            }
            n.services
                .sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        }
        CatalogData::Node(None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_check_wins() {
        assert_eq!(worst_status([]), "passing");
        assert_eq!(worst_status(["passing", "warning"]), "warning");
        assert_eq!(worst_status(["warning", "critical", "passing"]), "critical");
        assert_eq!(worst_status(["maintenance", "warning"]), "maintenance");
    }

    #[test]
    fn queries_print_as_the_call_that_made_them() {
        let q = CatalogQuery::Service {
            name: "web".into(),
            tags: vec!["v2".into()],
            dc: Some("dc2".into()),
            near: None,
            passing: true,
        };
        assert_eq!(q.to_string(), r#"service("web", tag="v2", dc="dc2")"#);
        assert_eq!(
            CatalogQuery::Services { dc: None }.to_string(),
            "services()"
        );
        let q = CatalogQuery::Nodes {
            dc: Some("dc1".into()),
            near: Some("_agent".into()),
        };
        assert_eq!(q.to_string(), r#"nodes(dc="dc1", near="_agent")"#);
    }
}
