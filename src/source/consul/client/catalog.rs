//! The catalog and health endpoints (`/v1/health/service/`,
//! `/v1/catalog/services`, `/v1/catalog/nodes`, `/v1/catalog/node/`), as
//! agent/health_endpoint.go and agent/catalog_endpoint.go answer them.
//!
//! Consul's answers are read leniently: a registration without a port, a
//! service without tags or meta (`null`), a node without a datacenter all
//! read as empty rather than failing the render. The answer is sorted here
//! (see `source::catalog::sort`): Consul reorders `?passing` answers (its
//! filter swaps the last instance into a removed one's place) and sends
//! tags in the order they were registered.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use percent_encoding::utf8_percent_encode;
use reqwest::StatusCode;
use serde::Deserialize;
use url::Url;

use super::{ConsulClient, SEGMENT, excerpt};
use crate::source::catalog::{
    self, CatalogData, CatalogQuery, Instance, Node, NodeService, NodeServices, ServiceTags,
};

/// An answer to a catalog query, with its `X-Consul-Index` and whether the
/// ACLs left something out.
#[derive(Debug)]
pub(in crate::source::consul) struct CatalogReply {
    pub(in crate::source::consul) index: u64,
    pub(in crate::source::consul) data: CatalogData,
    pub(in crate::source::consul) filtered: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct JsonNode {
    #[serde(rename = "ID")]
    id: String,
    node: String,
    address: String,
    datacenter: String,
    meta: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct JsonService {
    #[serde(rename = "ID")]
    id: String,
    service: String,
    tags: Option<Vec<String>>,
    address: String,
    meta: Option<BTreeMap<String, String>>,
    /// Absent from some registrations (a service registered without one).
    port: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct JsonCheck {
    status: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct JsonHealth {
    node: JsonNode,
    service: JsonService,
    checks: Option<Vec<JsonCheck>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct JsonNodeServices {
    node: JsonNode,
    services: Option<BTreeMap<String, JsonService>>,
}

impl JsonNode {
    fn into_node(self) -> Node {
        Node {
            name: self.node,
            id: self.id,
            address: self.address,
            datacenter: self.datacenter,
            meta: self.meta.unwrap_or_default(),
        }
    }
}

impl ConsulClient {
    /// One catalog read, as a blocking query from `index` for at most
    /// `wait` when `block` is given; with `max_stale`, a stale answer too
    /// far behind is read again from the leader, as for KV.
    pub(in crate::source::consul) async fn catalog(
        &self,
        query: &CatalogQuery,
        block: Option<(u64, Duration)>,
    ) -> Result<CatalogReply> {
        let (reply, behind) = self.catalog_as(query, block, self.stale).await?;
        if behind {
            return Ok(self.catalog_as(query, block, false).await?.0);
        }
        Ok(reply)
    }

    /// One read, with `?stale` or not; whether a stale answer is too old.
    async fn catalog_as(
        &self,
        query: &CatalogQuery,
        block: Option<(u64, Duration)>,
        stale: bool,
    ) -> Result<(CatalogReply, bool)> {
        let what = query.to_string();
        let url = self.catalog_url(query, block, stale)?;
        let limit = match block {
            Some((_, wait)) => wait + wait / 16 + self.timeout,
            None => self.timeout,
        };
        let (status, meta, body) = self.exchange(url, limit, &what).await?;
        let behind = stale
            && self
                .max_stale
                .is_some_and(|max| !meta.known_leader || meta.last_contact > max);
        let index = match (status, meta.index) {
            (_, Some(index)) if status.is_success() || status == StatusCode::NOT_FOUND => index,
            (StatusCode::FORBIDDEN, _) => return Err(self.denied(&body, &what)),
            (StatusCode::OK | StatusCode::NOT_FOUND, None) => bail!(
                "consul at {} answered {status} without X-Consul-Index to {what}: that address \
                 is not a Consul agent's HTTP API (a proxy, another service, or a path in the \
                 address?): {}",
                self.address,
                excerpt(&body)
            ),
            _ => bail!(
                "consul at {} answered {status} to {what}: {}",
                self.address,
                excerpt(&body)
            ),
        };
        let mut data = if status == StatusCode::NOT_FOUND {
            empty(query)
        } else {
            parse(query, &body).with_context(|| {
                format!(
                    "consul at {} sent an answer to {what} stencil cannot read",
                    self.address
                )
            })?
        };
        let near = matches!(
            query,
            CatalogQuery::Service { near: Some(_), .. } | CatalogQuery::Nodes { near: Some(_), .. }
        );
        catalog::sort(&mut data, near);
        let reply = CatalogReply {
            index,
            data,
            filtered: meta.filtered,
        };
        Ok((reply, behind))
    }

    /// The URL of a catalog read: the name one percent-encoded path
    /// segment, then the query parameters.
    fn catalog_url(
        &self,
        query: &CatalogQuery,
        block: Option<(u64, Duration)>,
        stale: bool,
    ) -> Result<Url> {
        let mut url = self.base.clone();
        if url.cannot_be_a_base() {
            bail!("Consul address {:?} cannot take a path", self.address);
        }
        let segment = |s: &str| utf8_percent_encode(s, SEGMENT).to_string();
        let (path, dc) = match query {
            CatalogQuery::Service { name, dc, .. } => {
                (format!("health/service/{}", segment(name)), dc)
            }
            CatalogQuery::Services { dc } => ("catalog/services".to_string(), dc),
            CatalogQuery::Nodes { dc, .. } => ("catalog/nodes".to_string(), dc),
            CatalogQuery::Node { name, dc } => (format!("catalog/node/{}", segment(name)), dc),
        };
        let path = format!("{}/v1/{path}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        let mut q = url.query_pairs_mut();
        if let CatalogQuery::Service {
            tags,
            near,
            passing,
            ..
        } = query
        {
            if *passing {
                q.append_key_only("passing");
            }
            for t in tags {
                q.append_pair("tag", t);
            }
            if let Some(n) = near {
                q.append_pair("near", n);
            }
        }
        if let CatalogQuery::Nodes { near: Some(n), .. } = query {
            q.append_pair("near", n);
        }
        if let Some(dc) = dc.as_ref().or(self.datacenter.as_ref()) {
            q.append_pair("dc", dc);
        }
        if stale {
            q.append_key_only("stale");
        }
        if let Some((index, wait)) = block {
            q.append_pair("index", &index.to_string());
            q.append_pair("wait", &format!("{}ms", wait.as_millis().max(1)));
        }
        drop(q);
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(url)
    }
}

/// What a 404 (with an index) means: nothing there.
fn empty(query: &CatalogQuery) -> CatalogData {
    match query {
        CatalogQuery::Service { .. } => CatalogData::Instances(Vec::new()),
        CatalogQuery::Services { .. } => CatalogData::Services(Vec::new()),
        CatalogQuery::Nodes { .. } => CatalogData::Nodes(Vec::new()),
        CatalogQuery::Node { .. } => CatalogData::Node(None),
    }
}

/// An answer's body as stencil's types (`null` reads as empty).
fn parse(query: &CatalogQuery, body: &[u8]) -> Result<CatalogData> {
    Ok(match query {
        CatalogQuery::Service { .. } => {
            let entries: Option<Vec<JsonHealth>> = serde_json::from_slice(body)?;
            CatalogData::Instances(
                entries
                    .unwrap_or_default()
                    .into_iter()
                    .map(instance)
                    .collect(),
            )
        }
        CatalogQuery::Services { .. } => {
            let map: Option<BTreeMap<String, Option<Vec<String>>>> = serde_json::from_slice(body)?;
            CatalogData::Services(
                map.unwrap_or_default()
                    .into_iter()
                    .map(|(name, tags)| ServiceTags {
                        name,
                        tags: tags.unwrap_or_default(),
                    })
                    .collect(),
            )
        }
        CatalogQuery::Nodes { .. } => {
            let nodes: Option<Vec<JsonNode>> = serde_json::from_slice(body)?;
            CatalogData::Nodes(
                nodes
                    .unwrap_or_default()
                    .into_iter()
                    .map(JsonNode::into_node)
                    .collect(),
            )
        }
        CatalogQuery::Node { .. } => {
            let found: Option<JsonNodeServices> = serde_json::from_slice(body)?;
            CatalogData::Node(found.map(|n| {
                let node = n.node.into_node();
                let services = n
                    .services
                    .unwrap_or_default()
                    .into_values()
                    .map(|s| NodeService {
                        address: if s.address.is_empty() {
                            node.address.clone()
                        } else {
                            s.address
                        },
                        id: s.id,
                        name: s.service,
                        port: s.port.unwrap_or(0),
                        tags: s.tags.unwrap_or_default(),
                        meta: s.meta.unwrap_or_default(),
                    })
                    .collect();
                NodeServices { node, services }
            }))
        }
    })
}

/// One `/v1/health/service/` entry as `service()` gives it: the service's
/// address or else the node's, the worst status of its checks (the node's
/// checks included, as Consul sends them).
fn instance(e: JsonHealth) -> Instance {
    let status = catalog::worst_status(e.checks.iter().flatten().map(|c| c.status.as_str()));
    let address = if e.service.address.is_empty() {
        e.node.address.clone()
    } else {
        e.service.address
    };
    Instance {
        id: e.service.id,
        name: e.service.service,
        node: e.node.node,
        node_address: e.node.address,
        address,
        port: e.service.port.unwrap_or(0),
        tags: e.service.tags.unwrap_or_default(),
        meta: e.service.meta.unwrap_or_default(),
        node_meta: e.node.meta.unwrap_or_default(),
        status,
        datacenter: e.node.datacenter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::consul::ConsulConfig;

    #[test]
    fn urls_carry_the_query_and_the_name_as_one_segment() {
        let c = ConsulClient::new(&ConsulConfig::new("127.0.0.1:8500")).unwrap();
        let q = CatalogQuery::Service {
            name: "web api/x".into(),
            tags: vec!["a b".into(), "v2".into()],
            dc: Some("dc2".into()),
            near: Some("_agent".into()),
            passing: true,
        };
        let url = c
            .catalog_url(&q, Some((7, Duration::from_secs(60))), false)
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8500/v1/health/service/web%20api%2Fx?passing&tag=a+b&tag=v2&near=_agent&dc=dc2&index=7&wait=60000ms"
        );
        let url = c
            .catalog_url(&CatalogQuery::Services { dc: None }, None, true)
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8500/v1/catalog/services?stale"
        );
    }

    #[test]
    fn missing_fields_read_as_empty_and_answers_are_sorted() {
        let q = CatalogQuery::Service {
            name: "web".into(),
            tags: Vec::new(),
            dc: None,
            near: None,
            passing: false,
        };
        let body = br#"[
            {"Node":{"Node":"n2","Address":"10.0.0.2"},"Service":{"ID":"web-2","Service":"web","Tags":["b","a"]},"Checks":[{"Status":"passing"},{"Status":"warning"}]},
            {"Node":{"Node":"n1","Address":"10.0.0.1","Datacenter":"dc1"},"Service":{"ID":"web-1","Service":"Web","Address":"192.0.2.1","Port":80,"Tags":null,"Meta":null},"Checks":null}
        ]"#;
        let mut data = parse(&q, body).unwrap();
        catalog::sort(&mut data, false);
        let CatalogData::Instances(list) = data else {
            panic!("instances")
        };
        assert_eq!(list[0].id, "web-1");
        assert_eq!((list[0].address.as_str(), list[0].port), ("192.0.2.1", 80));
        assert_eq!(list[0].status, "passing");
        assert!(list[0].tags.is_empty() && list[0].meta.is_empty());
        assert_eq!((list[1].address.as_str(), list[1].port), ("10.0.0.2", 0));
        assert_eq!(list[1].tags, ["a", "b"]);
        assert_eq!(list[1].status, "warning");
    }
}
