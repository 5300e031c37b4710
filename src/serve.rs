//! `--listen ADDR`: `/healthz`, `/readyz`, `/metrics`, `/status`.
//!
//! The coordinator keeps one [`Status`]; every endpoint is a view of it, so
//! the JSON and the Prometheus metrics cannot disagree. Error texts in it
//! name templates, keys and commands, never values.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::command::CommandFailed;
use crate::config::{Destination, TemplateSpec};
use crate::install::Outcome;
use crate::pipeline::{Pipeline, UnitReport, is_rejected};
use crate::source::SourceEvent;
use crate::source::etcd::GivenUp;
use crate::spec::redact_urls;
use crate::template::Dep;

mod conn;

/// What the coordinator reports.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Status {
    pub(crate) started_unix: f64,
    pub(crate) templates: BTreeMap<String, TemplateStatus>,
    pub(crate) sources: BTreeMap<String, SourceStatus>,
    pub(crate) commands: CommandStats,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TemplateState {
    /// Not rendered yet.
    #[default]
    New,
    /// The last render succeeded and its output is in place.
    Ok,
    /// Waiting for data that does not exist yet.
    Pending,
    /// The last render, check or install failed; the previous file stays.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct TemplateStatus {
    pub(crate) source: String,
    pub(crate) destination: String,
    pub(crate) state: TemplateState,
    /// Why it is pending or failed.
    pub(crate) detail: Option<String>,
    pub(crate) renders: u64,
    pub(crate) render_errors: u64,
    pub(crate) writes: u64,
    pub(crate) last_success_unix: Option<f64>,
    /// When a change that is waiting out the template's `wait` (or a retry)
    /// renders it next; `None` while nothing is due.
    pub(crate) next_render_unix: Option<f64>,
    /// With `on_reload_failure = "restore"`: the SHA-256 of the rendered
    /// content the reload failed on, after which the previous file was put
    /// back (and is what the destination holds); `None` once the template
    /// installs other content.
    pub(crate) rejected_sha256: Option<String>,
}

impl TemplateStatus {
    /// A template not rendered yet.
    pub(crate) fn new(source: String, destination: String) -> TemplateStatus {
        TemplateStatus {
            source,
            destination,
            state: TemplateState::New,
            detail: None,
            renders: 0,
            render_errors: 0,
            writes: 0,
            last_success_unix: None,
            next_render_unix: None,
            rejected_sha256: None,
        }
    }

    /// Counts one render, check and install that ended with `result` at
    /// `now_unix`.
    pub(crate) fn count(&mut self, result: &Result<Outcome>, now_unix: f64) {
        self.renders += 1;
        match result {
            Ok(outcome) => {
                self.last_success_unix = Some(now_unix);
                if *outcome == Outcome::Written {
                    self.writes += 1;
                }
            }
            Err(_) => self.render_errors += 1,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SourceStatus {
    pub(crate) kind: String,
    pub(crate) up: bool,
    pub(crate) errors: u64,
    pub(crate) reconnects: u64,
    pub(crate) last_error: Option<String>,
    /// The cluster member the watch is on (etcd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) member: Option<String>,
    /// The members given up on, and why (etcd).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) given_up: Vec<GivenUp>,
    /// Times the watch left a failed member for another.
    pub(crate) failovers: u64,
    /// The blocking queries the watch keeps parked (Consul).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) watch_queries: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct CommandStats {
    pub(crate) runs: u64,
    pub(crate) failures: u64,
}

/// A std `Mutex`, not tokio's: it is held only to copy or update numbers,
/// never across an await.
pub(crate) type Shared = Arc<Mutex<Status>>;

pub(crate) fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Default for Status {
    fn default() -> Self {
        Status {
            started_unix: now_unix(),
            templates: BTreeMap::new(),
            sources: BTreeMap::new(),
            commands: CommandStats::default(),
        }
    }
}

impl Status {
    /// Starts over for `pipeline`'s templates, none rendered yet. A source
    /// that keeps its name keeps its counters and whether it is up: its
    /// watch carries on reporting from where it was.
    pub(crate) fn reset(&mut self, pipeline: &Pipeline) {
        self.templates = pipeline
            .units
            .iter()
            .map(|u| {
                let source = u.spec.source.display().to_string();
                let status = TemplateStatus::new(source, u.spec.destination.to_string());
                (template_name(&u.spec), status)
            })
            .collect();
        let mut old = std::mem::take(&mut self.sources);
        self.sources = pipeline
            .config
            .sources
            .iter()
            .map(|(name, spec)| {
                let status = old.remove(name).unwrap_or(SourceStatus {
                    kind: spec.kind().to_string(),
                    up: true,
                    errors: 0,
                    reconnects: 0,
                    last_error: None,
                    member: None,
                    given_up: Vec::new(),
                    failovers: 0,
                    watch_queries: None,
                });
                (name.clone(), status)
            })
            .collect();
    }

    /// Ready once every template has its output in place from the latest
    /// data and no source is failing; otherwise the reasons.
    pub(crate) fn not_ready(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        for (name, t) in &self.templates {
            match t.state {
                TemplateState::Ok => {}
                TemplateState::New => reasons.push(format!("template {name} has not rendered yet")),
                TemplateState::Pending | TemplateState::Failed => reasons.push(format!(
                    "template {name} is {}: {}",
                    if t.state == TemplateState::Pending {
                        "pending"
                    } else {
                        "failing"
                    },
                    t.detail.as_deref().unwrap_or("")
                )),
            }
        }
        for (name, s) in &self.sources {
            if !s.up {
                reasons.push(format!(
                    "source {name:?} is failing: {}",
                    s.last_error.as_deref().unwrap_or("")
                ));
            }
        }
        reasons
    }

    /// Records which cluster member a watch is on, the members it gave up
    /// on, a failover, and how many queries a watch parks.
    pub(crate) fn cluster_event(&mut self, event: SourceEvent) {
        let (SourceEvent::Members { source, .. }
        | SourceEvent::Failover { source, .. }
        | SourceEvent::Queries { source, .. }) = &event
        else {
            return;
        };
        let Some(s) = self.sources.get_mut(source) else {
            return;
        };
        match event {
            SourceEvent::Members {
                watching, given_up, ..
            } => {
                s.member = watching;
                s.given_up = given_up;
            }
            SourceEvent::Failover { .. } => s.failovers += 1,
            SourceEvent::Queries { parked, .. } => s.watch_queries = Some(parked),
            _ => {}
        }
    }

    /// What `/readyz` says of clusters, ready or not: the member each
    /// watch is on, and the members given up on.
    fn members(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        let watching: BTreeMap<&str, &str> = self
            .sources
            .iter()
            .filter_map(|(name, s)| Some((name.as_str(), s.member.as_deref()?)))
            .collect();
        let given_up: Vec<String> = self
            .sources
            .iter()
            .flat_map(|(name, s)| {
                s.given_up.iter().map(move |g| {
                    format!(
                        "source {name:?}: gave up on member {}: {}",
                        g.member, g.error
                    )
                })
            })
            .collect();
        if !watching.is_empty() {
            out.insert("watching".into(), serde_json::json!(watching));
        }
        if !given_up.is_empty() {
            out.insert("given_up".into(), serde_json::json!(given_up));
        }
        out
    }

    /// Prometheus text exposition of the same numbers.
    pub(crate) fn metrics(&self) -> String {
        let mut registry = Registry::with_prefix("stencil");
        self.template_metrics(&mut registry);
        self.source_metrics(&mut registry);
        self.command_metrics(&mut registry);
        let mut out = String::new();
        let _ = encode(&mut out, &registry);
        out
    }

    fn template_metrics(&self, registry: &mut Registry) {
        let renders = counter(registry, "renders", "Template renders");
        let render_errors = counter(
            registry,
            "render_errors",
            "Renders, checks or installs that failed",
        );
        let writes = counter(
            registry,
            "writes",
            "Files written because their content changed",
        );
        let last_success = gauge(
            registry,
            "template_last_success_timestamp_seconds",
            "When the template last rendered successfully (Unix time)",
        );
        let ready = gauge(
            registry,
            "template_ready",
            "1 when the template's output is current",
        );
        for (name, t) in &self.templates {
            let l = vec![("template".to_string(), name.clone())];
            renders.get_or_create(&l).inc_by(t.renders);
            render_errors.get_or_create(&l).inc_by(t.render_errors);
            writes.get_or_create(&l).inc_by(t.writes);
            if let Some(ts) = t.last_success_unix {
                last_success.get_or_create(&l).set(ts);
            }
            ready
                .get_or_create(&l)
                .set(f64::from(u8::from(t.state == TemplateState::Ok)));
        }
    }

    fn source_metrics(&self, registry: &mut Registry) {
        let source_up = gauge(registry, "source_up", "1 when the source answers");
        let source_errors = counter(registry, "source_errors", "Errors talking to the source");
        let reconnects = counter(
            registry,
            "source_reconnects",
            "Times the source came back after failing",
        );
        let failovers = counter(
            registry,
            "source_failovers",
            "Times the watch left a failed cluster member for another",
        );
        let parked = gauge(registry, "source_watch_queries", "Parked blocking queries");
        for (name, s) in &self.sources {
            let l = vec![
                ("source".to_string(), name.clone()),
                ("kind".to_string(), s.kind.clone()),
            ];
            source_up.get_or_create(&l).set(f64::from(u8::from(s.up)));
            source_errors.get_or_create(&l).inc_by(s.errors);
            reconnects.get_or_create(&l).inc_by(s.reconnects);
            if s.kind == "etcd" {
                failovers.get_or_create(&l).inc_by(s.failovers);
            }
            if let Some(n) = s.watch_queries {
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                parked.get_or_create(&l).set(f64::from(n));
            }
        }
    }

    fn command_metrics(&self, registry: &mut Registry) {
        let commands = counter(registry, "commands", "Check and reload commands run");
        let command_failures = counter(
            registry,
            "command_failures",
            "Check and reload commands that failed",
        );
        commands.get_or_create(&vec![]).inc_by(self.commands.runs);
        command_failures
            .get_or_create(&vec![])
            .inc_by(self.commands.failures);
    }
}

type Labels = Vec<(String, String)>;

fn counter(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    registry.register(name, help, f.clone());
    f
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge<f64, AtomicU64>> {
    let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(name, help, f.clone());
    f
}

/// How a template is named in `/status` and the metrics: its destination,
/// or its source when it prints to stdout.
pub(crate) fn template_name(spec: &TemplateSpec) -> String {
    match &spec.destination {
        Destination::File(p) => p.display().to_string(),
        Destination::Stdout => format!("{} (stdout)", spec.source.display()),
    }
}

/// The state a render leaves its template in, and why it is not ok.
/// `secret`: the template's is (see [`detail`]).
pub(crate) fn state_after(unit: &UnitReport, secret: bool) -> (TemplateState, Option<String>) {
    match &unit.result {
        Ok(_) => (TemplateState::Ok, None),
        // The previous file is back; waiting for data cannot fix it.
        Err(e) if is_rejected(e) => (TemplateState::Failed, Some(detail(e, secret))),
        // A source that failed may answer later (etcd restarting, a data
        // file half-written): pending, with the source's error as the
        // reason.
        Err(e) if !unit.deps.failed.is_empty() => (TemplateState::Pending, Some(detail(e, secret))),
        Err(_) if unit.deps.may_appear() => {
            let waiting: Vec<String> = unit.deps.waiting_for.iter().map(describe_dep).collect();
            (
                TemplateState::Pending,
                Some(format!("waiting for {}", waiting.join(", "))),
            )
        }
        Err(e) => (TemplateState::Failed, Some(detail(e, secret))),
    }
}

/// An error as `/status` and `/readyz` show it: as `{:#}` prints it, but
/// a failed check or reload command as its first line only (the command
/// and its exit status), without the output, which may echo the rendered
/// file (`cat {{ staged }}`, `nginx -t`) and so its values. The output
/// stays whole in the log, where the operator looks. For a secret template
/// the command itself is left out too (`curl -u user:pw …`), and URLs are
/// always shown without their passwords.
pub(crate) fn detail(e: &anyhow::Error, secret: bool) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        if cause.is::<CommandFailed>() {
            // The output starts on the second line.
            let text = cause.to_string();
            let head = text.lines().next().unwrap_or_default();
            let head = head.trim_end_matches("; its output:");
            parts.push(if secret {
                without_command(head)
            } else {
                head.to_string()
            });
            break;
        }
        parts.push(cause.to_string());
    }
    redact_urls(&parts.join(": "))
}

/// "check command `cmd` failed (…)" -> "check command failed (…)".
fn without_command(head: &str) -> String {
    match head
        .split_once(" `")
        .and_then(|(what, rest)| Some((what, rest.rsplit_once("` ")?.1)))
    {
        Some((what, status)) => format!("{what} {status}"),
        None => head.to_string(),
    }
}

fn describe_dep(d: &Dep) -> String {
    match d {
        Dep::Env { name } => format!("environment variable {name}"),
        Dep::Key { source, key } => format!("key {key:?} in source {source:?}"),
        Dep::Prefix { source, prefix } => format!("prefix {prefix:?} in source {source:?}"),
        Dep::File { path } => format!("file {}", path.display()),
        Dep::Catalog { source, query } => format!("{query} in source {source:?}"),
    }
}

/// The endpoints, served on one address until stopped.
pub(crate) struct Server {
    /// The address as configured: a reload that keeps `127.0.0.1:0` keeps
    /// the port it was given rather than moving to a new one.
    configured: SocketAddr,
    /// Where it listens: the configured address with the port it got.
    bound: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Server {
    /// Binds `addr` and serves `status` on it. The address bound is logged:
    /// with port 0 it is the only place the port can be learnt.
    pub(crate) fn start(addr: SocketAddr, status: Shared) -> Result<Server> {
        let listener = bind(addr)?;
        let bound = listener
            .local_addr()
            .with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!("serving /healthz, /readyz, /metrics, /status on {bound}");
        if !bound.ip().is_loopback() {
            tracing::warn!(
                "{bound} is reachable from other machines and the endpoints have no \
                 authentication: they show template names, paths and errors (never values); \
                 restrict access with a network policy or listen on 127.0.0.1"
            );
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, status, async {
            let _ = stopped.await;
        }));
        Ok(Server {
            configured: addr,
            bound,
            stop,
            task,
        })
    }

    pub(crate) fn configured(&self) -> SocketAddr {
        self.configured
    }

    pub(crate) fn bound(&self) -> SocketAddr {
        self.bound
    }

    /// Closes the listening socket at once; the task returned ends when the
    /// requests in flight are answered.
    pub(crate) fn stop(self) -> tokio::task::JoinHandle<Result<()>> {
        let _ = self.stop.send(());
        self.task
    }
}

/// Serves the endpoints on `listener` until `shutdown` resolves.
async fn serve(
    listener: tokio::net::TcpListener,
    status: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(crate::liveness::healthz))
        .route(
            "/readyz",
            get({
                let status = status.clone();
                move || {
                    let (reasons, mut body) = {
                        let status = lock(&status);
                        (status.not_ready(), status.members())
                    };
                    body.insert("ready".into(), reasons.is_empty().into());
                    let code = if reasons.is_empty() {
                        StatusCode::OK
                    } else {
                        body.insert("reasons".into(), serde_json::json!(reasons));
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    async move { (code, axum::Json(body)).into_response() }
                }
            }),
        )
        .route(
            "/metrics",
            get({
                let status = status.clone();
                move || {
                    let text = lock(&status).metrics();
                    async move {
                        Response::builder()
                            .header(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(axum::body::Body::from(text))
                            .unwrap_or_default()
                    }
                }
            }),
        )
        .route(
            "/status",
            get({
                let status = status.clone();
                move || {
                    let snapshot = lock(&status).clone();
                    async move { axum::Json(snapshot) }
                }
            }),
        );
    conn::serve(listener, app, shutdown).await
}

/// Binds the listen address, naming it on failure. Synchronous, so a
/// reload can try the new address before it lets go of anything: binding
/// a local address does not wait on the network.
fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| {
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        })
        .with_context(|| format!("cannot listen on {addr}"))?;
    Ok(listener)
}

/// Locks the status; a panic elsewhere while it was held leaves numbers
/// that are still worth serving.
pub(crate) fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Status> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}
