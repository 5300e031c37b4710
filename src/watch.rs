//! `stencil watch`: keep files current as their data changes.
//!
//! # Theory of operation
//!
//! One coordinator task owns all state. Producers send [`Event`]s into one
//! channel: a watch task per network source (etcd, Consul) reporting
//! changed keys, a notify watcher on every file the templates read (the
//! templates themselves, their includes, `file()` reads, data files, the
//! config file), and signal handlers. The coordinator never blocks on a
//! producer.
//!
//! Every render records what the template read ([`Deps`]). The coordinator
//! keeps those per template and answers each event with the templates that
//! read what changed: a key change re-renders only its dependents, never
//! everything (consul-template's complaint). Affected templates wait their
//! quiescence period (`wait = { min, max }`: the data must be still for
//! `min`, but no longer than `max` after the first change) in a
//! [`Debouncer`], then run through the same [`Pipeline`] `render` uses:
//! render, install, reload.
//!
//! A template whose data is missing stays pending (logged once, not ready)
//! and renders as soon as the key appears, because the missing key is one of
//! its recorded reads. A template that fails keeps its last good file. A
//! source that stops answering is retried by its watch with backoff forever,
//! and when it is back its dependents render again; etcd resumes from the
//! last revision it delivered, so no change made meanwhile is lost.
//!
//! After each batch the set of watched keys is recomputed; a source whose
//! set changed gets a new watch, started from what the templates last read.
//!
//! SIGHUP (or an edit of the config file) reloads config and templates;
//! SIGTERM and SIGINT exit 0 after the batch in progress. `--once` renders
//! everything, waiting for data, runs the commands and exits.
//!
//! Under `stencil exec --watch` the loop also owns the app's
//! [`Supervisor`](crate::exec::supervise::Supervisor): every signal stencil handles is
//! the app's (forwarded, or a graceful stop for TERM and INT), a batch that
//! changed a file sends the reload signal, and stencil exits with the app's
//! status when it exits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::config::{Destination, Flags};
use crate::error::{self, Exit};
use crate::install::Outcome;
use crate::pipeline::{Options, Pipeline};
use crate::runtime;
use crate::serve::{self, Shared, SourceStatus, TemplateState, TemplateStatus};
use crate::source::{SourceEvent, SourceSpec, WatchSpec, is_under};
use crate::spec::Debounce;
use crate::template::{Dep, Deps};

/// How the loop runs.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Render everything once (waiting for data), run commands, exit.
    pub once: bool,
    pub options: Options,
    /// `stencil exec --watch`: the app to supervise.
    pub exec: Option<crate::exec::spec::ExecSpec>,
}

/// What producers tell the coordinator.
#[derive(Debug)]
pub enum Event {
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
}

/// Runs the watch loop until a signal ends it (or, with `--once`, until
/// every template is in place), starting from `pipeline`, which was loaded
/// from `flags` (and, under exec, has rendered once). A reload reads the
/// config again from `flags`.
pub fn run(flags: Flags, settings: Settings, pipeline: Pipeline) -> Result<Exit> {
    let args = flags;
    // The coordinator runs as a task on the runtime's worker, so rendering
    // (synchronous, in block_in_place) can still block on source reads.
    runtime::get().block_on(async move {
        tokio::spawn(async move {
            let mut coordinator = Coordinator::new(args, settings, pipeline)?;
            coordinator.run().await
        })
        .await
        .context("the watch loop panicked")?
    })
}

struct TemplateInfo {
    deps: Deps,
    state: TemplateState,
    /// The missing data last logged, so a pending template logs once.
    logged_pending: Option<BTreeSet<Dep>>,
    /// Retries of a render that failed because a source did: a read can
    /// fail while the source's watch is healthy (a 500 on one request), and
    /// then no watch event would ever bring it back.
    retry: runtime::Backoff,
    /// A file it parses (the template, an include) changed: parse it again
    /// before the next render.
    reparse: bool,
}

/// How long a changed file must be quiet before it is read: an editor or a
/// deploy tool writing in place truncates first and writes after, and a
/// render in between would install an empty or half-written file.
const FILE_SETTLE: Debounce = Debounce {
    min: std::time::Duration::from_millis(100),
    max: std::time::Duration::from_secs(1),
};

struct Coordinator {
    args: Flags,
    settings: Settings,
    pipeline: Pipeline,
    templates: Vec<TemplateInfo>,
    tx: UnboundedSender<Event>,
    rx: UnboundedReceiver<Event>,
    watches: HashMap<String, (WatchSpec, tokio::task::JoinHandle<()>)>,
    files: FileWatch,
    debouncer: Debouncer,
    status: Shared,
}

impl Coordinator {
    fn new(args: Flags, settings: Settings, pipeline: Pipeline) -> Result<Coordinator> {
        let (tx, rx) = unbounded_channel();
        let files = FileWatch::new(tx.clone())?;
        let mut c = Coordinator {
            args,
            settings,
            templates: Vec::new(),
            pipeline,
            tx,
            rx,
            watches: HashMap::new(),
            files,
            debouncer: Debouncer::default(),
            status: Shared::default(),
        };
        c.reset_templates();
        Ok(c)
    }

    /// Fresh state for the pipeline's templates, all due now.
    fn reset_templates(&mut self) {
        let now = Instant::now();
        self.templates = self
            .pipeline
            .units
            .iter()
            .map(|_| TemplateInfo {
                deps: Deps::default(),
                state: TemplateState::New,
                logged_pending: None,
                retry: runtime::Backoff::default(),
                reparse: false,
            })
            .collect();
        self.debouncer = Debouncer::default();
        for i in 0..self.templates.len() {
            self.debouncer.touch(i, now, None);
        }
        let mut status = serve::lock(&self.status);
        status.templates = self
            .pipeline
            .units
            .iter()
            .map(|u| {
                (
                    template_name(&u.spec.source, &u.spec.destination),
                    TemplateStatus {
                        source: u.spec.source.display().to_string(),
                        destination: u.spec.destination.to_string(),
                        state: TemplateState::New,
                        detail: None,
                        renders: 0,
                        render_errors: 0,
                        writes: 0,
                        last_success_unix: None,
                    },
                )
            })
            .collect();
        status.sources = self
            .pipeline
            .config
            .sources
            .iter()
            .map(|(name, spec)| {
                let old = status.sources.get(name).cloned();
                (
                    name.clone(),
                    old.unwrap_or(SourceStatus {
                        kind: spec.kind().to_string(),
                        up: true,
                        errors: 0,
                        reconnects: 0,
                        last_error: None,
                    }),
                )
            })
            .collect();
    }

    async fn run(&mut self) -> Result<Exit> {
        // Under exec every signal belongs to the app; else HUP, TERM, INT
        // are the loop's.
        let mut app = match self.settings.exec.clone() {
            Some(spec) => {
                let signals = crate::exec::supervise::Signals::new()?;
                match crate::exec::supervise::Supervisor::spawn(&spec) {
                    Ok(sup) => Some((sup, signals)),
                    Err(e) => {
                        error::print(&e);
                        return Ok(crate::exec::supervise::spawn_exit(&e));
                    }
                }
            }
            None => {
                self.spawn_signals()?;
                None
            }
        };
        let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = match self.pipeline.config.listen {
            Some(addr) => {
                let listener = serve::bind(addr).await?;
                tracing::info!("listening on http://{}", listener.local_addr()?);
                let status = self.status.clone();
                Some(tokio::spawn(serve::serve(listener, status, async {
                    let _ = server_stopped.await;
                })))
            }
            None => None,
        };
        if !self.settings.options.dry_run {
            self.pipeline.remove_stale();
        }
        // Templates, data files and the config are known before anything
        // renders: watch them from the start.
        self.update_watches(std::time::SystemTime::now());
        let exit = self.main_loop(&mut app).await;
        for (_, (_, handle)) in self.watches.drain() {
            handle.abort();
        }
        let _ = stop_server.send(());
        if let Some(server) = server {
            let _ = server.await;
        }
        exit
    }

    async fn main_loop(
        &mut self,
        app: &mut Option<(
            crate::exec::supervise::Supervisor,
            crate::exec::supervise::Signals,
        )>,
    ) -> Result<Exit> {
        loop {
            let now = Instant::now();
            if self.debouncer.next_deadline().is_some_and(|d| d <= now) {
                let due = self.debouncer.take_due(now);
                let wrote = self.run_batch(&due);
                if let (true, Some((sup, _))) = (wrote, app.as_mut()) {
                    sup.reload();
                }
                if self.settings.once {
                    if let Some(exit) = self.once_finished() {
                        return Ok(exit);
                    }
                }
                continue;
            }
            let deadline = self.debouncer.next_deadline();
            let wake = {
                let (sup, signals) = match app.as_mut() {
                    Some((sup, signals)) => (Some(sup), Some(signals)),
                    None => (None, None),
                };
                tokio::select! {
                    e = self.rx.recv() => Wake::Event(e),
                    () = sleep_until(deadline) => Wake::Timer,
                    exit = app_exit(sup) => Wake::AppExit(exit),
                    sig = app_signal(signals) => Wake::Signal(sig),
                }
            };
            let event = match wake {
                Wake::Event(e) => e,
                Wake::Timer => continue,
                Wake::AppExit(exit) => {
                    let exit = exit?;
                    tracing::info!("the app exited ({}); exiting with its status", exit.code());
                    return Ok(exit);
                }
                Wake::Signal(sig) => {
                    if let Some((sup, _)) = app.as_mut() {
                        sup.on_signal(sig);
                    }
                    continue;
                }
            };
            let Some(event) = event else {
                return Ok(Exit::Success);
            };
            match event {
                Event::Shutdown(signal) => {
                    tracing::info!("{signal} received; exiting");
                    return Ok(Exit::Success);
                }
                Event::Reload => self.reload(),
                Event::File(path) => self.file_changed(&path),
                Event::Source(e) => self.source_event(e),
                Event::WatchEnded { source, error } => {
                    tracing::error!(source = %source, "the watch stopped: {error}");
                    self.source_down(&source, &error);
                }
            }
        }
    }

    /// With `--once`: done when every template is in place (exit 0) or one
    /// failed for a reason waiting cannot fix (exit 1).
    fn once_finished(&self) -> Option<Exit> {
        if self.templates.iter().all(|t| t.state == TemplateState::Ok) {
            return Some(Exit::Success);
        }
        if self
            .templates
            .iter()
            .any(|t| t.state == TemplateState::Failed)
        {
            return Some(Exit::Failure);
        }
        None
    }

    fn wait_for(&self, index: usize) -> Option<Debounce> {
        self.pipeline.units[index]
            .spec
            .wait
            .or(self.pipeline.config.wait)
    }

    fn mark(&mut self, indices: impl IntoIterator<Item = usize>, why: &str) {
        self.mark_with(indices, why, None);
    }

    /// Like `mark`, waiting at least `floor`.
    fn mark_with(
        &mut self,
        indices: impl IntoIterator<Item = usize>,
        why: &str,
        floor: Option<Debounce>,
    ) {
        let now = Instant::now();
        for i in indices {
            tracing::debug!(template = %self.pipeline.units[i].spec.source.display(), "{why}");
            let wait = match (self.wait_for(i), floor) {
                (Some(w), Some(f)) => Some(Debounce {
                    min: w.min.max(f.min),
                    max: w.max.max(f.max),
                }),
                (w, f) => w.or(f),
            };
            self.debouncer.touch(i, now, wait);
        }
    }

    fn reading_source(&self, source: &str) -> Vec<usize> {
        (0..self.templates.len())
            .filter(|&i| {
                self.templates[i].deps.read.iter().any(|d| match d {
                    Dep::Key { source: s, .. } | Dep::Prefix { source: s, .. } => s == source,
                    _ => false,
                }) || self.templates[i].deps.failed.contains(source)
            })
            .collect()
    }

    fn source_event(&mut self, event: SourceEvent) {
        match event {
            SourceEvent::Changed { source, keys } => {
                let affected: Vec<usize> = (0..self.templates.len())
                    .filter(|&i| {
                        self.templates[i].deps.read.iter().any(|d| match d {
                            Dep::Key { source: s, key } => {
                                *s == source && keys.iter().any(|k| k == key)
                            }
                            Dep::Prefix { source: s, prefix } => {
                                *s == source && keys.iter().any(|k| is_under(k, prefix))
                            }
                            _ => false,
                        })
                    })
                    .collect();
                tracing::debug!(source = %source, "{} key(s) changed; {} template(s) affected", keys.len(), affected.len());
                self.mark(affected, "data changed");
            }
            SourceEvent::Resync { source } => {
                let affected = self.reading_source(&source);
                self.mark(affected, "source resynchronised");
            }
            SourceEvent::Up { source } => {
                tracing::info!(source = %source, "source is answering again");
                {
                    let mut status = serve::lock(&self.status);
                    if let Some(s) = status.sources.get_mut(&source) {
                        s.up = true;
                        s.reconnects += 1;
                        s.last_error = None;
                    }
                }
                // Whatever changed while it was away, its dependents must
                // see the current data.
                let affected = self.reading_source(&source);
                self.mark(affected, "source is back");
            }
            SourceEvent::Failed { source, error } => {
                tracing::warn!(source = %source, "source is failing: {error}; keeping the current files");
                self.source_down(&source, &error);
            }
        }
    }

    fn source_down(&mut self, source: &str, error: &str) {
        let mut status = serve::lock(&self.status);
        if let Some(s) = status.sources.get_mut(source) {
            s.up = false;
            s.errors += 1;
            s.last_error = Some(error.to_string());
        }
    }

    fn file_changed(&mut self, path: &Path) {
        if self.files.config.as_deref() == Some(path) {
            tracing::info!(path = %path.display(), "config file changed; reloading");
            self.reload();
            return;
        }
        // Templates that read the file as a template, an include or through
        // file(): parsed again, since minijinja keeps an include it loaded.
        let reparse: BTreeSet<usize> = (0..self.templates.len())
            .filter(|&i| {
                absolute(&self.pipeline.units[i].spec.source) == path
                    || self.templates[i]
                        .deps
                        .read
                        .iter()
                        .any(|d| matches!(d, Dep::File { path: p } if absolute(p) == path))
            })
            .collect();
        let mut affected = reparse.clone();
        if let Some(source) = self.files.sources.get(path).cloned() {
            affected.extend(self.reading_source(&source));
        }
        for &i in &reparse {
            self.templates[i].reparse = true;
        }
        if affected.is_empty() {
            return;
        }
        self.mark_with(affected, "file changed", Some(FILE_SETTLE));
    }

    /// Parses again the templates whose files changed; one that no longer
    /// parses is reported and left out of the batch, since rendering its old
    /// parse would hide the error behind the last good output.
    fn reparse(&mut self, which: &[usize]) -> Vec<usize> {
        let mut keep = Vec::with_capacity(which.len());
        for &i in which {
            if !std::mem::take(&mut self.templates[i].reparse) {
                keep.push(i);
                continue;
            }
            let unit = &mut self.pipeline.units[i];
            match crate::template::Template::load(&unit.spec.source) {
                Ok(t) => {
                    unit.template = t;
                    keep.push(i);
                }
                Err(e) => {
                    tracing::error!(
                        "{}; the current file stays",
                        error::Report(&e).to_string().trim_end()
                    );
                    self.set_state(i, TemplateState::Failed, Some(format!("{e:#}")));
                }
            }
        }
        keep
    }

    fn reload(&mut self) {
        let loaded = self.args.load().and_then(|config| {
            Pipeline::load(config).map_err(|errors| {
                for e in &errors {
                    error::print(e);
                }
                anyhow::anyhow!("{} error(s) in the new configuration", errors.len())
            })
        });
        match loaded {
            Ok(pipeline) => {
                tracing::info!(
                    "configuration reloaded: {} template(s)",
                    pipeline.units.len()
                );
                self.pipeline = pipeline;
                for (_, (_, handle)) in self.watches.drain() {
                    handle.abort();
                }
                self.reset_templates();
                self.update_watches(std::time::SystemTime::now());
            }
            Err(e) => tracing::error!(
                "cannot reload the configuration; keeping the running one: {}",
                error::Report(&e).to_string().trim_end()
            ),
        }
    }

    fn set_state(&mut self, i: usize, state: TemplateState, detail: Option<String>) {
        self.templates[i].state = state;
        let name = self.name(i);
        if let Some(t) = serve::lock(&self.status).templates.get_mut(&name) {
            t.state = state;
            t.detail = detail;
        }
    }

    fn name(&self, i: usize) -> String {
        let spec = &self.pipeline.units[i].spec;
        template_name(&spec.source, &spec.destination)
    }

    /// Renders, installs and reloads the given templates, then updates
    /// states, status and watches. Returns whether a file was written.
    fn run_batch(&mut self, which: &[usize]) -> bool {
        let started = std::time::SystemTime::now();
        let which = &self.reparse(which);
        for (_, source) in self.pipeline.sources.iter() {
            source.refresh();
        }
        let options = Options {
            wait_for_data: None,
            ..self.settings.options
        };
        let pipeline = &mut self.pipeline;
        let report = tokio::task::block_in_place(|| {
            pipeline.run(which, &options, &mut std::io::stdout().lock())
        });
        let now = serve::now_unix();
        let wrote = report
            .units
            .iter()
            .any(|u| matches!(u.result, Ok(Outcome::Written)));
        for unit in report.units {
            let i = unit.index;
            let name = self.name(i);
            let (state, detail) = match &unit.result {
                Ok(_) => (TemplateState::Ok, None),
                // A source that failed may answer later (etcd restarting,
                // a data file half-written): pending, with the source's
                // error as the reason.
                Err(e) if !unit.deps.failed.is_empty() => {
                    (TemplateState::Pending, Some(format!("{e:#}")))
                }
                Err(_) if unit.deps.may_appear() => {
                    let waiting: Vec<String> =
                        unit.deps.waiting_for.iter().map(describe_dep).collect();
                    (
                        TemplateState::Pending,
                        Some(format!("waiting for {}", waiting.join(", "))),
                    )
                }
                Err(e) => (TemplateState::Failed, Some(format!("{e:#}"))),
            };
            {
                let mut status = serve::lock(&self.status);
                if let Some(t) = status.templates.get_mut(&name) {
                    t.renders += 1;
                    match &unit.result {
                        Ok(outcome) => {
                            t.last_success_unix = Some(now);
                            if *outcome == Outcome::Written {
                                t.writes += 1;
                            }
                        }
                        Err(_) => t.render_errors += 1,
                    }
                }
            }
            match (&unit.result, state) {
                (Err(_), TemplateState::Pending) => {
                    let missing: BTreeSet<Dep> = unit.deps.waiting_for.clone();
                    if self.templates[i].logged_pending.as_ref() != Some(&missing) {
                        tracing::info!(
                            template = %self.pipeline.units[i].spec.source.display(),
                            "pending: {}; the current file stays",
                            detail.as_deref().unwrap_or_default()
                        );
                        self.templates[i].logged_pending = Some(missing);
                    }
                }
                (Err(e), _) => {
                    self.templates[i].logged_pending = None;
                    tracing::error!(
                        "{} failed; the current file stays\n{}",
                        self.pipeline.units[i].spec.source.display(),
                        error::Report(e).to_string().trim_end()
                    );
                }
                (Ok(_), _) => self.templates[i].logged_pending = None,
            }
            if unit.result.is_ok() {
                self.templates[i].retry.reset();
            } else if !unit.deps.failed.is_empty() {
                let delay = self.templates[i].retry.next_delay();
                self.debouncer.retry_at(i, Instant::now() + delay);
            }
            self.templates[i].deps = unit.deps;
            self.set_state(i, state, detail);
        }
        {
            let mut status = serve::lock(&self.status);
            status.commands.runs += report.commands_run;
            status.commands.failures += report.command_failures;
        }
        for e in &report.commands {
            tracing::error!("{}", error::Report(e).to_string().trim_end());
        }
        self.update_watches(started);
        wrote
    }

    /// Starts, restarts or stops source watches so each covers exactly what
    /// the templates read, and watches the files they read.
    ///
    /// A file first read by the batch that started at `since` was not
    /// watched while it rendered: if it changed since then, that change is
    /// reported now rather than lost.
    fn update_watches(&mut self, since: std::time::SystemTime) {
        let mut specs: BTreeMap<String, WatchSpec> = BTreeMap::new();
        let mut files: BTreeSet<PathBuf> = BTreeSet::new();
        for t in &self.templates {
            for dep in &t.deps.read {
                match dep {
                    Dep::Key { source, key } => {
                        specs
                            .entry(source.clone())
                            .or_default()
                            .keys
                            .insert(key.clone());
                    }
                    Dep::Prefix { source, prefix } => {
                        specs
                            .entry(source.clone())
                            .or_default()
                            .prefixes
                            .insert(prefix.clone());
                    }
                    Dep::File { path } => {
                        files.insert(absolute(path));
                    }
                    Dep::Env { .. } => {}
                }
            }
        }
        for unit in &self.pipeline.units {
            files.insert(absolute(&unit.spec.source));
        }
        let mut sources = HashMap::new();
        for (name, spec) in &self.pipeline.config.sources {
            if let SourceSpec::File { path, .. } = spec {
                sources.insert(absolute(path), name.clone());
            }
        }
        let config = self.pipeline.config.file.as_deref().map(absolute);
        for path in self.files.update(files, sources, config) {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified());
            if modified.is_ok_and(|m| m >= since) {
                let _ = self.tx.send(Event::File(path));
            }
        }

        self.watches.retain(|name, (_, handle)| {
            let keep = specs.contains_key(name);
            if !keep {
                handle.abort();
            }
            keep
        });
        for (name, spec) in specs {
            let spec = spec.normalized();
            if self.watches.get(&name).is_some_and(|(s, _)| *s == spec) {
                continue;
            }
            let Some(source) = self.pipeline.sources.get(&name).cloned() else {
                continue;
            };
            let (stx, mut srx) = unbounded_channel();
            let Some(future) = source.watch(name.clone(), spec.clone(), stx) else {
                continue;
            };
            if let Some((_, old)) = self.watches.remove(&name) {
                old.abort();
            }
            let tx = self.tx.clone();
            let source_name = name.clone();
            let handle = tokio::spawn(async move {
                let forward = async {
                    while let Some(e) = srx.recv().await {
                        if tx.send(Event::Source(e)).is_err() {
                            break;
                        }
                    }
                };
                tokio::select! {
                    result = future => {
                        let error = match result {
                            Ok(()) => "the watch ended".to_string(),
                            Err(e) => format!("{e:#}"),
                        };
                        let _ = tx.send(Event::WatchEnded { source: source_name, error });
                    }
                    () = forward => {}
                }
            });
            tracing::debug!(source = %name, "watching {} key(s) and {} prefix(es)", spec.keys.len(), spec.prefixes.len());
            self.watches.insert(name, (spec, handle));
        }
    }

    fn spawn_signals(&self) -> Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let kinds = [
            (SignalKind::hangup(), "SIGHUP"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::interrupt(), "SIGINT"),
        ];
        for (kind, name) in kinds {
            let mut stream = signal(kind).with_context(|| format!("cannot handle {name}"))?;
            let tx = self.tx.clone();
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
}

fn describe_dep(d: &Dep) -> String {
    match d {
        Dep::Env { name } => format!("environment variable {name}"),
        Dep::Key { source, key } => format!("key {key:?} in source {source:?}"),
        Dep::Prefix { source, prefix } => format!("prefix {prefix:?} in source {source:?}"),
        Dep::File { path } => format!("file {}", path.display()),
    }
}

fn template_name(source: &Path, destination: &Destination) -> String {
    match destination {
        Destination::File(p) => p.display().to_string(),
        Destination::Stdout => format!("{} (stdout)", source.display()),
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

/// What woke the loop.
enum Wake {
    Event(Option<Event>),
    Timer,
    AppExit(Result<Exit>),
    Signal(nix::sys::signal::Signal),
}

/// The app's exit, or never without an app.
async fn app_exit(sup: Option<&mut crate::exec::supervise::Supervisor>) -> Result<Exit> {
    match sup {
        Some(sup) => sup.wait().await,
        None => std::future::pending().await,
    }
}

/// The next signal for the app, or never without an app.
async fn app_signal(
    signals: Option<&mut crate::exec::supervise::Signals>,
) -> nix::sys::signal::Signal {
    match signals {
        Some(signals) => signals.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// notify on the directories of the files templates depend on: editors and
/// stencil itself replace files by rename, which only a directory watch
/// sees.
struct FileWatch {
    watcher: notify::RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
    paths: Arc<std::sync::RwLock<BTreeSet<PathBuf>>>,
    /// File sources by path.
    sources: HashMap<PathBuf, String>,
    config: Option<PathBuf>,
}

impl FileWatch {
    fn new(tx: UnboundedSender<Event>) -> Result<FileWatch> {
        use notify::EventKind;
        let paths: Arc<std::sync::RwLock<BTreeSet<PathBuf>>> = Arc::default();
        let watched = paths.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            let watched = watched.read().unwrap_or_else(|e| e.into_inner());
            for path in event.paths {
                if watched.contains(&path) {
                    let _ = tx.send(Event::File(path));
                }
            }
        })
        .context("cannot watch files")?;
        Ok(FileWatch {
            watcher,
            dirs: BTreeSet::new(),
            paths,
            sources: HashMap::new(),
            config: None,
        })
    }

    /// Watches exactly `files` (plus the file sources and the config);
    /// returns the files that were not watched before.
    fn update(
        &mut self,
        mut files: BTreeSet<PathBuf>,
        sources: HashMap<PathBuf, String>,
        config: Option<PathBuf>,
    ) -> Vec<PathBuf> {
        use notify::Watcher;
        files.extend(sources.keys().cloned());
        files.extend(config.clone());
        let new: Vec<PathBuf> = {
            let old = self.paths.read().unwrap_or_else(|e| e.into_inner());
            files
                .iter()
                .filter(|f| !old.contains(*f))
                .cloned()
                .collect()
        };
        for file in &files {
            let Some(dir) = file.parent() else { continue };
            if self.dirs.insert(dir.to_path_buf()) {
                if let Err(e) = self.watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!(path = %dir.display(), "cannot watch directory: {e}");
                }
            }
        }
        *self.paths.write().unwrap_or_else(|e| e.into_inner()) = files;
        self.sources = sources;
        self.config = config;
        new
    }
}

/// Which templates are due when: each waits until its data has been quiet
/// for `wait.min`, but no longer than `wait.max` after the first change.
/// Without a wait a template is due at once.
#[derive(Debug, Default)]
pub struct Debouncer {
    pending: BTreeMap<usize, (Instant, Instant, Option<Debounce>)>,
}

impl Debouncer {
    /// Records a change affecting template `index` at `now`.
    pub fn touch(&mut self, index: usize, now: Instant, wait: Option<Debounce>) {
        self.pending
            .entry(index)
            .and_modify(|(_, last, w)| {
                *last = now;
                *w = wait;
            })
            .or_insert((now, now, wait));
    }

    /// Makes template `index` due at `at` (a retry), unless a change made
    /// it due sooner.
    pub fn retry_at(&mut self, index: usize, at: Instant) {
        let entry = self.pending.entry(index).or_insert((at, at, None));
        if Self::deadline(entry) > at {
            *entry = (at, at, None);
        }
    }

    fn deadline((first, last, wait): &(Instant, Instant, Option<Debounce>)) -> Instant {
        match wait {
            None => *last,
            Some(w) => (*last + w.min).min(*first + w.max),
        }
    }

    /// When the next template is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(Self::deadline).min()
    }

    /// Removes and returns the templates due at `now`, in order.
    pub fn take_due(&mut self, now: Instant) -> Vec<usize> {
        let due: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, p)| Self::deadline(p) <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in &due {
            self.pending.remove(i);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wait(min: u64, max: u64) -> Option<Debounce> {
        Some(Debounce {
            min: Duration::from_millis(min),
            max: Duration::from_millis(max),
        })
    }

    #[test]
    fn without_a_wait_a_change_is_due_at_once() {
        let t0 = Instant::now();
        let mut d = Debouncer::default();
        d.touch(3, t0, None);
        assert_eq!(d.next_deadline(), Some(t0));
        assert_eq!(d.take_due(t0), vec![3]);
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn changes_in_quick_succession_wait_for_quiet_but_not_past_max() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debouncer::default();
        d.touch(0, t0, wait(100, 250));
        assert_eq!(d.next_deadline(), Some(t0 + ms(100)));
        // Another change at 80 ms pushes it to 180 ms...
        d.touch(0, t0 + ms(80), wait(100, 250));
        assert!(d.take_due(t0 + ms(100)).is_empty());
        assert_eq!(d.next_deadline(), Some(t0 + ms(180)));
        // ...and changes every 80 ms cannot push it past max (250 ms).
        d.touch(0, t0 + ms(160), wait(100, 250));
        d.touch(0, t0 + ms(240), wait(100, 250));
        assert_eq!(d.next_deadline(), Some(t0 + ms(250)));
        assert_eq!(d.take_due(t0 + ms(250)), vec![0]);
    }

    #[test]
    fn a_retry_waits_unless_a_change_comes_first() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debouncer::default();
        d.retry_at(0, t0 + ms(250));
        assert!(d.take_due(t0 + ms(100)).is_empty());
        assert_eq!(d.take_due(t0 + ms(250)), vec![0]);
        d.touch(1, t0, None);
        d.retry_at(1, t0 + ms(250));
        assert_eq!(d.take_due(t0), vec![1], "the change is due at once");
    }

    #[test]
    fn only_due_templates_are_taken() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debouncer::default();
        d.touch(0, t0, wait(100, 100));
        d.touch(1, t0, None);
        assert_eq!(d.take_due(t0), vec![1]);
        assert_eq!(d.take_due(t0 + ms(100)), vec![0]);
    }
}
