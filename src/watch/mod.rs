//! `stencil watch`: keep files current as their data changes.
//!
//! # Theory of operation
//!
//! One coordinator task ([`coordinator`]) owns all state. Producers send
//! [`Event`]s into one channel: a watch task per network source (etcd,
//! Consul; [`sources`]) reporting changed keys, a notify watcher on every
//! file the templates read (the templates themselves, their includes,
//! `file()` reads, data files, the config file; [`files`]), and signal
//! handlers. The coordinator never blocks on a producer.
//!
//! Every render records what the template read
//! ([`Deps`](crate::template::Deps)). The coordinator keeps those per
//! template and answers each event with the templates that read what
//! changed: a key change re-renders only its dependents, never everything
//! (consul-template's complaint). Affected templates wait their quiescence
//! period (`wait = { min, max }`: the data must be still for `min`, but no
//! longer than `max` after the first change) in a
//! [`Debouncer`](debounce::Debouncer), then run through the same
//! [`Pipeline`] `render` uses: render, install, reload.
//!
//! A template whose data is missing stays pending (logged once, not ready)
//! and renders as soon as the key appears, because the missing key is one
//! of its recorded reads. A template that fails keeps its last good file. A
//! source that stops answering is retried by its watch with backoff
//! forever, and when it is back its dependents render again; etcd resumes
//! from the last revision it delivered, so no change made meanwhile is
//! lost.
//!
//! After each batch the set of watched keys is recomputed; a source whose
//! set changed gets a new watch, started from what the templates last read.
//!
//! SIGHUP (or an edit of the config file) reads the config again through
//! the same [`Flags`] and rebuilds everything derived from it: templates,
//! sources and their watches, the top-level `wait`, and the `[listen]`
//! address (the new one is bound before the old one closes; a `--listen`
//! flag wins over the file and stays). A config that does not load, or an
//! address that cannot be bound, keeps everything as it was. SIGTERM and
//! SIGINT exit 0 after the batches in progress (at most 5 s; then
//! [`cleanup`](crate::cleanup) kills their commands and removes their staged
//! files).
//!
//! Batches run on render threads beside the loop ([`batch`]), so the loop
//! itself turns at least once a second and beats
//! [`liveness`](crate::liveness) for `/healthz`. `--once` renders everything,
//! waiting for data, runs the commands and exits.
//!
//! Under `stencil exec --watch` the loop also owns the app's
//! [`Supervisor`](crate::exec::supervise::Supervisor): every signal
//! stencil handles is the app's (forwarded, or a graceful stop for TERM and
//! INT), a batch that changed a file sends the reload signal, and stencil
//! exits with the app's status when it exits.

mod batch;
mod coordinator;
mod debounce;
mod files;
mod reload;
mod sources;
mod workers;

use std::path::PathBuf;

use anyhow::{Context, Result};
use tokio::sync::mpsc::UnboundedSender;

use crate::config::Flags;
use crate::error::Exit;
use crate::pipeline::{Options, Pipeline};
use crate::runtime;
use crate::source::SourceEvent;

/// How the loop runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// Render everything once (waiting for data), run commands, exit.
    pub(crate) once: bool,
    pub(crate) options: Options,
    /// `stencil exec --watch`: the app to supervise.
    pub(crate) exec: Option<Exec>,
}

/// The app of `stencil exec --watch`: what it runs, and the flags that
/// spec is resolved from again when a reload brings a new `[exec]` table.
#[derive(Debug, Clone)]
pub(crate) struct Exec {
    pub(crate) spec: crate::exec::spec::ExecSpec,
    pub(crate) args: crate::cli::ExecArgs,
}

/// What producers tell the coordinator.
#[derive(Debug)]
pub(crate) enum Event {
    Source(SourceEvent),
    /// A source's watch ended for good (e.g. permission denied).
    WatchEnded {
        source: String,
        error: String,
    },
    /// A file a template, a source or the config depends on changed.
    File(PathBuf),
    /// SIGHUP: reload config and templates.
    Reload,
    /// SIGTERM or SIGINT.
    Shutdown(&'static str),
    /// A render thread's batch ended.
    Batch(Box<batch::BatchDone>),
}

/// Runs the watch loop until a signal ends it (or, with `--once`, until
/// every template is in place), starting from `pipeline`, which was loaded
/// from `flags` (and, under exec, has rendered once). A reload reads the
/// config again from `flags`.
pub(crate) fn run(flags: Flags, settings: Settings, pipeline: Pipeline) -> Result<Exit> {
    // The coordinator runs on this thread, not on the runtime's worker: the
    // endpoints, the source watches and the signal handlers run there, and
    // keep answering (/healthz saying so) should the loop ever stall.
    // Batches run on render threads of their own (batch.rs).
    runtime::get().block_on(async move {
        let mut coordinator = coordinator::Coordinator::new(flags, settings, pipeline)?;
        coordinator.run().await
    })
}

/// Turns HUP into [`Event::Reload`], and TERM and INT into
/// [`Event::Shutdown`] (not under exec, where every signal is the app's).
fn spawn_signals(tx: &UnboundedSender<Event>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let kinds = [
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::interrupt(), "SIGINT"),
    ];
    for (kind, name) in kinds {
        let mut stream = signal(kind).with_context(|| format!("cannot handle {name}"))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let event = if name == "SIGHUP" {
                    Event::Reload
                } else {
                    Event::Shutdown(name)
                };
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}
