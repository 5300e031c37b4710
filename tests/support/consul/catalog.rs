//! The catalog part of the state store: nodes, service instances and
//! health checks, with the indexes Consul's blocking queries on them
//! return (agent/consul/state/catalog.go).
//!
//! Faithful: one raft index shared with KV; a health query on a service
//! reports that service's own index (bumped by a registration,
//! deregistration or check change of one of its instances, or a change of
//! a node it runs on), or the services table's index for a service never
//! registered; `/v1/catalog/services` reports the services table's index,
//! `/v1/catalog/nodes` the nodes table's, `/v1/catalog/node/N` the higher
//! of the two. Service names match case-insensitively (memdb's service
//! index lowercases). Simplified: a service's index is kept after its last
//! instance goes (Consul keeps it too, but also tracks an extinction
//! index); no coordinates (`?near` keeps the usual order).

use std::collections::BTreeMap;

/// One service instance to register, built like
/// `Registration::new("web", "web-1").node("n1", "10.0.0.1").port(80)`.
#[derive(Clone, Debug)]
pub struct Registration {
    pub node: String,
    pub node_address: String,
    pub node_meta: BTreeMap<String, String>,
    pub id: String,
    pub name: String,
    pub address: String,
    /// None: registered without a port, and answered without one.
    pub port: Option<u64>,
    /// In registration order: Consul answers them so.
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
}

impl Registration {
    /// An instance on node "node1" at 127.0.0.1, without port or tags.
    pub fn new(name: &str, id: &str) -> Registration {
        Registration {
            node: "node1".into(),
            node_address: "127.0.0.1".into(),
            node_meta: BTreeMap::new(),
            id: id.into(),
            name: name.into(),
            address: String::new(),
            port: None,
            tags: Vec::new(),
            meta: BTreeMap::new(),
        }
    }

    pub fn node(mut self, name: &str, address: &str) -> Registration {
        self.node = name.into();
        self.node_address = address.into();
        self
    }

    pub fn address(mut self, address: &str) -> Registration {
        self.address = address.into();
        self
    }

    pub fn port(mut self, port: u64) -> Registration {
        self.port = Some(port);
        self
    }

    pub fn tags(mut self, tags: &[&str]) -> Registration {
        self.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }

    pub fn meta(mut self, k: &str, v: &str) -> Registration {
        self.meta.insert(k.into(), v.into());
        self
    }
}

#[derive(Clone, Debug)]
pub(super) struct NodeRec {
    pub(super) id: String,
    pub(super) address: String,
    pub(super) meta: BTreeMap<String, String>,
    pub(super) create_index: u64,
    pub(super) modify_index: u64,
}

#[derive(Clone, Debug)]
pub(super) struct ServiceRec {
    pub(super) name: String,
    pub(super) address: String,
    pub(super) port: Option<u64>,
    pub(super) tags: Vec<String>,
    pub(super) meta: BTreeMap<String, String>,
    pub(super) create_index: u64,
    pub(super) modify_index: u64,
}

#[derive(Clone, Debug)]
pub(super) struct CheckRec {
    /// "" for a node check (serfHealth).
    pub(super) service_id: String,
    pub(super) status: String,
    pub(super) modify_index: u64,
}

/// One instance as a health query sees it: (node name, node, service ID,
/// service, its checks and its node's by check ID).
pub(super) type InstanceView<'a> = (
    &'a str,
    &'a NodeRec,
    &'a str,
    &'a ServiceRec,
    Vec<(&'a str, &'a CheckRec)>,
);

/// The catalog tables.
#[derive(Clone, Debug, Default)]
pub(super) struct Catalog {
    pub(super) nodes: BTreeMap<String, NodeRec>,
    /// (node, service ID) -> instance.
    pub(super) services: BTreeMap<(String, String), ServiceRec>,
    /// (node, check ID) -> check.
    pub(super) checks: BTreeMap<(String, String), CheckRec>,
    /// Lowercased service name -> its index.
    pub(super) service_index: BTreeMap<String, u64>,
    pub(super) services_table: u64,
    pub(super) nodes_table: u64,
}

impl Catalog {
    /// Catalog.Register of one instance (its node created or updated) at
    /// raft index `idx`.
    pub(super) fn register(&mut self, r: &Registration, idx: u64) {
        let node = self.nodes.entry(r.node.clone()).or_insert_with(|| NodeRec {
            id: format!("{:08x}-0000-0000-0000-000000000000", idx),
            address: String::new(),
            meta: BTreeMap::new(),
            create_index: idx,
            modify_index: idx,
        });
        if node.address != r.node_address || node.meta != r.node_meta {
            node.address = r.node_address.clone();
            node.meta = r.node_meta.clone();
            node.modify_index = idx;
            self.nodes_table = idx;
            self.touch_node(&r.node.clone(), idx);
        }
        let key = (r.node.clone(), r.id.clone());
        let create_index = self.services.get(&key).map_or(idx, |s| s.create_index);
        self.services.insert(
            key,
            ServiceRec {
                name: r.name.clone(),
                address: r.address.clone(),
                port: r.port,
                tags: r.tags.clone(),
                meta: r.meta.clone(),
                create_index,
                modify_index: idx,
            },
        );
        self.nodes_table = self.nodes_table.max(idx);
        self.services_table = idx;
        self.service_index.insert(r.name.to_lowercase(), idx);
    }

    /// Catalog.Deregister of one instance and its checks.
    pub(super) fn deregister(&mut self, node: &str, id: &str, idx: u64) -> bool {
        let Some(gone) = self.services.remove(&(node.to_string(), id.to_string())) else {
            return false;
        };
        self.checks
            .retain(|(n, _), c| !(n == node && c.service_id == id));
        self.services_table = idx;
        self.service_index.insert(gone.name.to_lowercase(), idx);
        true
    }

    /// Catalog.Deregister of a whole node: its instances and checks too.
    pub(super) fn deregister_node(&mut self, node: &str, idx: u64) {
        let ids: Vec<String> = self
            .services
            .keys()
            .filter(|(n, _)| n == node)
            .map(|(_, id)| id.clone())
            .collect();
        for id in ids {
            self.deregister(node, &id, idx);
        }
        self.checks.retain(|(n, _), _| n != node);
        if self.nodes.remove(node).is_some() {
            self.nodes_table = idx;
        }
    }

    /// A check's status: `service_id` "" is the node's check (serfHealth).
    pub(super) fn set_check(&mut self, node: &str, service_id: &str, status: &str, idx: u64) {
        let check_id = if service_id.is_empty() {
            "serfHealth".to_string()
        } else {
            format!("service:{service_id}")
        };
        self.checks.insert(
            (node.to_string(), check_id),
            CheckRec {
                service_id: service_id.to_string(),
                status: status.to_string(),
                modify_index: idx,
            },
        );
        if service_id.is_empty() {
            self.touch_node(node, idx);
        } else if let Some(s) = self
            .services
            .get(&(node.to_string(), service_id.to_string()))
        {
            self.service_index.insert(s.name.to_lowercase(), idx);
        }
    }

    /// Every service on `node` changed with it.
    fn touch_node(&mut self, node: &str, idx: u64) {
        let names: Vec<String> = self
            .services
            .iter()
            .filter(|((n, _), _)| n == node)
            .map(|(_, s)| s.name.to_lowercase())
            .collect();
        for n in names {
            self.service_index.insert(n, idx);
        }
    }

    /// The index a health query on `name` reports.
    pub(super) fn index_of_service(&self, name: &str) -> u64 {
        self.service_index
            .get(&name.to_lowercase())
            .copied()
            .unwrap_or(self.services_table)
    }

    /// The instances of a service (matched case-insensitively), in
    /// Consul's order (by node, then ID), each with its checks and its
    /// node's.
    pub(super) fn instances(&self, name: &str) -> Vec<InstanceView<'_>> {
        let name = name.to_lowercase();
        self.services
            .iter()
            .filter(|(_, s)| s.name.to_lowercase() == name)
            .filter_map(|((node, id), s)| {
                let n = self.nodes.get(node)?;
                let checks = self
                    .checks
                    .iter()
                    .filter(|((cn, _), c)| {
                        cn == node && (c.service_id.is_empty() || c.service_id == *id)
                    })
                    .map(|((_, cid), c)| (cid.as_str(), c))
                    .collect();
                Some((node.as_str(), n, id.as_str(), s, checks))
            })
            .collect()
    }
}
