//! Service discovery in templates: `service()`, `services()`, `nodes()`
//! and `node()` over Consul's catalog and health API, each read recorded
//! as a [`Dep::Catalog`](super::Dep) so watch mode follows it with a
//! blocking query.
//!
//! consul-template's spellings work as well, so converted templates keep
//! rendering: the query form `service("v2.web@dc2")`, a health filter as
//! the second argument (`service("web", "any")`, `"passing,warning"`), and
//! Go's field names (`.Address`, `.Port`, `.Tags`, `.ID`, `.Node`,
//! `.ServiceMeta`) beside stencil's (`address`, `port`, `tags`, `id`,
//! `node`, `meta`).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use minijinja::value::{Enumerator, Kwargs, Object, ObjectExt, Value};
use minijinja::{Environment, Error, ErrorKind};

use super::reads::current;
use crate::source::catalog::{
    CatalogData, CatalogQuery, Instance, Node, NodeService, NodeServices, ServiceTags,
};

pub(super) fn register(env: &mut Environment<'static>) {
    env.add_function("service", service);
    env.add_function("services", services);
    env.add_function("nodes", nodes);
    env.add_function("node", node);
}

/// The health states an instance can be in, as consul-template's filter
/// names them.
const STATES: &[&str] = &["any", "passing", "warning", "critical", "unknown"];

/// consul-template's query form: `[tag.]name[@dc][:port]` (the port is
/// ignored there too).
static QUERY: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(
        r"\A(?:(?P<tag>[\w\-.]+)\.)?(?P<name>[\w\-/]+)(?:@(?P<dc>[\w.\-]+))?(?::[0-9]+)?\z",
    )
    .expect("a valid pattern")
});

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg)
}

/// `service(name, [states], tag=, dc=, near=, state=, source=)`.
fn service(query: &str, states: Option<&str>, kwargs: Kwargs) -> Result<Value, Error> {
    let state = current()?;
    let caps = QUERY.captures(query).ok_or_else(|| {
        invalid(format!(
            "service({query:?}): not a service name or consul-template query (\"[tag.]name[@dc]\")"
        ))
    })?;
    let mut tags: Vec<String> = caps
        .name("tag")
        .map(|t| t.as_str().to_string())
        .into_iter()
        .collect();
    match kwargs.get::<Option<Value>>("tag")? {
        None => {}
        Some(v) if v.as_str().is_some() => tags.push(v.as_str().unwrap_or_default().to_string()),
        Some(v) => {
            for t in v.try_iter()? {
                tags.push(t.as_str().map(str::to_string).ok_or_else(|| {
                    invalid(format!(
                        "service({query:?}): tag= takes a string or a list of strings"
                    ))
                })?);
            }
        }
    }
    tags.sort();
    tags.dedup();
    let dc: Option<String> = kwargs
        .get::<Option<String>>("dc")?
        .or_else(|| caps.name("dc").map(|d| d.as_str().to_string()));
    let near: Option<String> = kwargs.get("near")?;
    let named: Option<String> = kwargs.get("state")?;
    let wanted = parse_states(query, states.map(str::to_string).or(named).as_deref())?;
    let passing = wanted.is_none();
    let q = CatalogQuery::Service {
        // Consul matches service names case-insensitively: one query.
        name: caps["name"].to_lowercase(),
        tags,
        dc: dc.filter(|d| !d.is_empty()),
        near: near.filter(|n| !n.is_empty()),
        passing,
    };
    let CatalogData::Instances(list) = state.catalog(q, &kwargs)? else {
        return Err(invalid(format!(
            "service({query:?}): the source answered something else"
        )));
    };
    Ok(list
        .into_iter()
        .filter(|i| wanted.as_ref().is_none_or(|w| w.accepts(&i.status)))
        .map(instance)
        .collect())
}

/// Which states a `service()` call keeps; None: Consul's `?passing`.
enum States {
    Any,
    These(Vec<String>),
}

impl States {
    fn accepts(&self, status: &str) -> bool {
        match self {
            States::Any => true,
            States::These(list) => list.iter().any(|s| s == status),
        }
    }
}

/// consul-template's filter: "", "passing" -> healthy only (None); "any";
/// or a comma-separated list of states.
fn parse_states(query: &str, spec: Option<&str>) -> Result<Option<States>, Error> {
    let list: Vec<&str> = spec
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(bad) = list.iter().find(|s| !STATES.contains(s)) {
        return Err(invalid(format!(
            "service({query:?}): unknown health state {bad:?} (use any, passing, warning, critical or unknown)"
        )));
    }
    Ok(match list.as_slice() {
        [] | ["passing"] => None,
        ["any"] => Some(States::Any),
        l if l.contains(&"any") => {
            return Err(invalid(format!(
                "service({query:?}): \"any\" cannot be combined with other states"
            )));
        }
        l => Some(States::These(l.iter().map(|s| s.to_string()).collect())),
    })
}

/// consul-template's `"@dc"` argument, or `dc=`.
fn datacenter(what: &str, at: Option<&str>, kwargs: &Kwargs) -> Result<Option<String>, Error> {
    let named: Option<String> = kwargs.get("dc")?;
    let positional = match at {
        None | Some("") => None,
        Some(a) => Some(
            a.strip_prefix('@')
                .filter(|d| !d.is_empty())
                .ok_or_else(|| invalid(format!("{what}({a:?}): a datacenter is written \"@dc\"")))?
                .to_string(),
        ),
    };
    Ok(named.or(positional).filter(|d| !d.is_empty()))
}

/// `services([@dc], dc=, source=)`: every service with its tags.
fn services(at: Option<&str>, kwargs: Kwargs) -> Result<Value, Error> {
    let state = current()?;
    let dc = datacenter("services", at, &kwargs)?;
    let CatalogData::Services(list) = state.catalog(CatalogQuery::Services { dc }, &kwargs)? else {
        return Err(invalid(
            "services(): the source answered something else".into(),
        ));
    };
    Ok(list.into_iter().map(service_tags).collect())
}

/// `nodes([@dc], dc=, near=, source=)`.
fn nodes(at: Option<&str>, kwargs: Kwargs) -> Result<Value, Error> {
    let state = current()?;
    let dc = datacenter("nodes", at, &kwargs)?;
    let near: Option<String> = kwargs
        .get::<Option<String>>("near")?
        .filter(|n| !n.is_empty());
    let CatalogData::Nodes(list) = state.catalog(CatalogQuery::Nodes { dc, near }, &kwargs)? else {
        return Err(invalid(
            "nodes(): the source answered something else".into(),
        ));
    };
    Ok(list.into_iter().map(node_record).collect())
}

/// `node(name, [@dc], dc=, source=)`: the node and its services, or none
/// when there is no such node.
fn node(name: Option<&str>, at: Option<&str>, kwargs: Kwargs) -> Result<Value, Error> {
    let state = current()?;
    let name = name.filter(|n| !n.is_empty()).ok_or_else(|| {
        invalid(
            "node() needs a node name: stencil does not ask the agent for its own (consul-template's node without arguments)".into(),
        )
    })?;
    let dc = datacenter("node", at, &kwargs)?;
    let q = CatalogQuery::Node {
        name: name.to_string(),
        dc,
    };
    let CatalogData::Node(found) = state.catalog(q, &kwargs)? else {
        return Err(invalid(format!(
            "node({name:?}): the source answered something else"
        )));
    };
    Ok(found.map_or(Value::from(()), node_services))
}

/// A record with stencil's field names and consul-template's Go names for
/// the same fields (`address` and `Address`); iterating it gives stencil's
/// names only.
#[derive(Debug)]
struct Record {
    fields: BTreeMap<&'static str, Value>,
    /// Go name -> stencil name.
    go: &'static [(&'static str, &'static str)],
}

impl Object for Record {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        let key = self
            .go
            .iter()
            .find(|(g, _)| *g == key)
            .map_or(key, |(_, ours)| ours);
        self.fields.get(key).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_enumerator(|this| Box::new(this.fields.keys().map(|k| Value::from(*k))))
    }
}

fn record(
    fields: impl IntoIterator<Item = (&'static str, Value)>,
    go: &'static [(&'static str, &'static str)],
) -> Value {
    Value::from_object(Record {
        fields: fields.into_iter().collect(),
        go,
    })
}

fn strings(list: Vec<String>) -> Value {
    list.into_iter().map(Value::from).collect()
}

fn map(m: BTreeMap<String, String>) -> Value {
    Value::from(m)
}

/// consul-template's HealthService field names.
const INSTANCE_GO: &[(&str, &str)] = &[
    ("ID", "id"),
    ("Name", "name"),
    ("Node", "node"),
    ("NodeAddress", "node_address"),
    ("NodeDatacenter", "datacenter"),
    ("NodeMeta", "node_meta"),
    ("Address", "address"),
    ("Port", "port"),
    ("Tags", "tags"),
    ("ServiceMeta", "meta"),
    ("Status", "status"),
];

fn instance(i: Instance) -> Value {
    record(
        [
            ("id", Value::from(i.id)),
            ("name", Value::from(i.name)),
            ("node", Value::from(i.node)),
            ("node_address", Value::from(i.node_address)),
            ("address", Value::from(i.address)),
            ("port", Value::from(i.port)),
            ("tags", strings(i.tags)),
            ("meta", map(i.meta)),
            ("node_meta", map(i.node_meta)),
            ("status", Value::from(i.status)),
            ("datacenter", Value::from(i.datacenter)),
        ],
        INSTANCE_GO,
    )
}

fn service_tags(s: ServiceTags) -> Value {
    record(
        [("name", Value::from(s.name)), ("tags", strings(s.tags))],
        &[("Name", "name"), ("Tags", "tags")],
    )
}

/// consul-template's Node: `.Node` is the name.
const NODE_GO: &[(&str, &str)] = &[
    ("Node", "name"),
    ("ID", "id"),
    ("Address", "address"),
    ("Datacenter", "datacenter"),
    ("Meta", "meta"),
];

fn node_record(n: Node) -> Value {
    record(
        [
            ("name", Value::from(n.name)),
            ("id", Value::from(n.id)),
            ("address", Value::from(n.address)),
            ("datacenter", Value::from(n.datacenter)),
            ("meta", map(n.meta)),
        ],
        NODE_GO,
    )
}

fn node_services(n: NodeServices) -> Value {
    let services: Value = n.services.into_iter().map(node_service).collect();
    record(
        [("node", node_record(n.node)), ("services", services)],
        &[("Node", "node"), ("Services", "services")],
    )
}

fn node_service(s: NodeService) -> Value {
    record(
        [
            ("id", Value::from(s.id)),
            ("name", Value::from(s.name)),
            ("address", Value::from(s.address)),
            ("port", Value::from(s.port)),
            ("tags", strings(s.tags)),
            ("meta", map(s.meta)),
        ],
        &[
            ("ID", "id"),
            ("Service", "name"),
            ("Address", "address"),
            ("Port", "port"),
            ("Tags", "tags"),
            ("Meta", "meta"),
        ],
    )
}
