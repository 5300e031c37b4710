//! `--listen ADDR`: `/healthz`, `/readyz`, `/metrics`, `/status`.
//!
//! The coordinator keeps one [`Status`]; every endpoint is a view of it, so
//! the JSON and the Prometheus metrics cannot disagree. Error texts in it
//! name templates, keys and commands, never values.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// What the coordinator reports.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub started_unix: f64,
    pub templates: BTreeMap<String, TemplateStatus>,
    pub sources: BTreeMap<String, SourceStatus>,
    pub commands: CommandStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateState {
    /// Not rendered yet.
    New,
    /// The last render succeeded and its output is in place.
    Ok,
    /// Waiting for data that does not exist yet.
    Pending,
    /// The last render, check or install failed; the previous file stays.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct TemplateStatus {
    pub source: String,
    pub destination: String,
    pub state: TemplateState,
    /// Why it is pending or failed.
    pub detail: Option<String>,
    pub renders: u64,
    pub render_errors: u64,
    pub writes: u64,
    pub last_success_unix: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub kind: String,
    pub up: bool,
    pub errors: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CommandStats {
    pub runs: u64,
    pub failures: u64,
}

pub type Shared = Arc<Mutex<Status>>;

pub fn now_unix() -> f64 {
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
    /// Ready once every template has its output in place from the latest
    /// data and no source is failing; otherwise the reasons.
    pub fn not_ready(&self) -> Vec<String> {
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

    /// Prometheus text exposition of the same numbers.
    pub fn metrics(&self) -> String {
        use prometheus_client::encoding::text::encode;
        use prometheus_client::metrics::counter::Counter;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::Gauge;
        use prometheus_client::registry::Registry;

        type Labels = Vec<(String, String)>;
        let mut registry = Registry::with_prefix("stencil");
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let f = Family::<Labels, Counter>::default();
            registry.register(name, help, f.clone());
            f
        };
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let f = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
            registry.register(name, help, f.clone());
            f
        };
        let renders = counter(&mut registry, "renders", "Template renders");
        let render_errors = counter(
            &mut registry,
            "render_errors",
            "Renders, checks or installs that failed",
        );
        let writes = counter(
            &mut registry,
            "writes",
            "Files written because their content changed",
        );
        let last_success = gauge(
            &mut registry,
            "template_last_success_timestamp_seconds",
            "When the template last rendered successfully (Unix time)",
        );
        let ready = gauge(
            &mut registry,
            "template_ready",
            "1 when the template's output is current",
        );
        let source_up = gauge(&mut registry, "source_up", "1 when the source answers");
        let source_errors = counter(
            &mut registry,
            "source_errors",
            "Errors talking to the source",
        );
        let reconnects = counter(
            &mut registry,
            "source_reconnects",
            "Times the source came back after failing",
        );
        let commands = counter(&mut registry, "commands", "Check and reload commands run");
        let command_failures = counter(
            &mut registry,
            "command_failures",
            "Check and reload commands that failed",
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
        for (name, s) in &self.sources {
            let l = vec![
                ("source".to_string(), name.clone()),
                ("kind".to_string(), s.kind.clone()),
            ];
            source_up.get_or_create(&l).set(f64::from(u8::from(s.up)));
            source_errors.get_or_create(&l).inc_by(s.errors);
            reconnects.get_or_create(&l).inc_by(s.reconnects);
        }
        commands.get_or_create(&vec![]).inc_by(self.commands.runs);
        command_failures
            .get_or_create(&vec![])
            .inc_by(self.commands.failures);

        let mut out = String::new();
        let _ = encode(&mut out, &registry);
        out
    }
}

/// Serves the endpoints on `addr` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    status: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get({
                let status = status.clone();
                move || {
                    let reasons = lock(&status).not_ready();
                    async move {
                        if reasons.is_empty() {
                            (
                                StatusCode::OK,
                                axum::Json(serde_json::json!({"ready": true})),
                            )
                                .into_response()
                        } else {
                            (
                                StatusCode::SERVICE_UNAVAILABLE,
                                axum::Json(serde_json::json!({"ready": false, "reasons": reasons})),
                            )
                                .into_response()
                        }
                    }
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
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("the HTTP server failed")
}

/// Binds the listen address, naming it on failure.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

pub fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Status> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}
