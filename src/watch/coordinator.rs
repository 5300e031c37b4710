//! The coordinator: the one task that owns the loop's state and answers
//! every [`Event`] (the module's doc has the theory of operation).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Instant, SystemTime};

use anyhow::Result;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::debounce::Debouncer;
use super::files::{self, FILE_SETTLE, FileWatch, absolute};
use super::sources::{self, SourceWatches};
use super::{Event, Settings};
use crate::config::Flags;
use crate::error::{self, Exit};
use crate::exec::spec::ExecSpec;
use crate::exec::supervise::{Signals, Supervisor, spawn_exit};
use crate::pipeline::Pipeline;
use crate::runtime;
use crate::serve::{self, Server, Shared, TemplateState};
use crate::source::SourceEvent;
use crate::spec::Debounce;
use crate::template::{Dep, Deps};

/// What the coordinator knows about one template.
#[derive(Default)]
pub(super) struct TemplateInfo {
    pub(super) deps: Deps,
    pub(super) state: TemplateState,
    /// The missing data last logged, so a pending template logs once.
    pub(super) logged_pending: Option<BTreeSet<Dep>>,
    /// Retries of a render that failed because a source did: a read can
    /// fail while the source's watch is healthy (a 500 on one request), and
    /// then no watch event would ever bring it back.
    pub(super) retry: runtime::Backoff,
    /// A file it parses (the template, an include) changed: parse it again
    /// before the next render.
    reparse: bool,
}

/// The app under `stencil exec --watch`, and the signals stencil takes
/// for it.
type App = Option<(Supervisor, Signals)>;

pub(super) struct Coordinator {
    /// Read again on reload.
    pub(super) flags: Flags,
    pub(super) settings: Settings,
    pub(super) pipeline: Pipeline,
    pub(super) templates: Vec<TemplateInfo>,
    pub(super) tx: UnboundedSender<Event>,
    pub(super) rx: UnboundedReceiver<Event>,
    pub(super) watches: SourceWatches,
    /// Which templates read each key (from `templates`' reads).
    pub(super) key_index: sources::KeyIndex,
    files: FileWatch,
    pub(super) debouncer: Debouncer,
    pub(super) status: Shared,
    /// The endpoints, while the config has a listen address.
    pub(super) server: Option<Server>,
    /// When the config file first and last changed, while it settles: an
    /// editor's or `cp`'s write arrives in steps, and a reload in between
    /// would read half a file.
    pub(super) config_changed: Option<(Instant, Instant)>,
    /// The app's settings from a reloaded `[exec]` table, for the loop to
    /// hand to the supervisor.
    pub(super) new_exec: Option<ExecSpec>,
    /// The batches running on render threads (batch.rs).
    pub(super) batches: super::batch::Batches,
}

/// What woke the loop.
enum Wake {
    Event(Option<Event>),
    Timer,
    AppExit(Result<Exit>),
    Signal(nix::sys::signal::Signal),
}

impl Coordinator {
    pub(super) fn new(flags: Flags, settings: Settings, pipeline: Pipeline) -> Result<Coordinator> {
        let (tx, rx) = unbounded_channel();
        let files = FileWatch::new(tx.clone())?;
        let mut c = Coordinator {
            flags,
            settings,
            templates: Vec::new(),
            pipeline,
            tx,
            rx,
            watches: SourceWatches::default(),
            key_index: sources::KeyIndex::default(),
            files,
            debouncer: Debouncer::default(),
            status: Shared::default(),
            server: None,
            config_changed: None,
            new_exec: None,
            batches: super::batch::Batches::default(),
        };
        c.reset_templates();
        Ok(c)
    }

    /// Fresh state for the pipeline's templates, all due now.
    pub(super) fn reset_templates(&mut self) {
        self.batches.reset();
        let now = Instant::now();
        let count = self.pipeline.units.len();
        self.templates = std::iter::repeat_with(TemplateInfo::default)
            .take(count)
            .collect();
        self.key_index = sources::KeyIndex::default();
        self.debouncer = Debouncer::default();
        for i in 0..self.templates.len() {
            self.debouncer.touch(i, now, None);
        }
        serve::lock(&self.status).reset(&self.pipeline);
        self.publish_due(0..self.templates.len());
    }

    pub(super) async fn run(&mut self) -> Result<Exit> {
        // Taken before the app starts: an edit made once the app runs (and
        // before the watches below exist) still counts as a change.
        let since = SystemTime::now();
        let mut app = match self.start_app()? {
            Ok(app) => app,
            Err(exit) => return Ok(exit),
        };
        self.server = self
            .pipeline
            .config
            .listen
            .map(|addr| Server::start(addr, self.status.clone()))
            .transpose()?;
        if !self.settings.options.dry_run {
            self.pipeline.remove_stale();
        }
        // Templates, data files and the config are known before anything
        // renders: watch them from the start.
        self.update_watches(since);
        let exit = self.main_loop(&mut app).await;
        self.drain().await;
        crate::cleanup::run();
        self.watches.stop_all();
        if let Some(server) = self.server.take() {
            let _ = server.stop().await;
        }
        exit
    }

    /// Under exec every signal belongs to the app, which starts here; else
    /// HUP, TERM and INT are the loop's. `Err` holds the exit status when
    /// the app cannot start.
    fn start_app(&self) -> Result<Result<App, Exit>> {
        let Some(exec) = &self.settings.exec else {
            super::spawn_signals(&self.tx)?;
            return Ok(Ok(None));
        };
        let signals = Signals::new()?;
        match Supervisor::spawn(&exec.spec) {
            Ok(sup) => Ok(Ok(Some((sup, signals)))),
            Err(e) => {
                error::print(&e);
                Ok(Err(spawn_exit(&e)))
            }
        }
    }

    async fn main_loop(&mut self, app: &mut App) -> Result<Exit> {
        loop {
            crate::liveness::beat(self.pipeline.config.stall_timeout);
            let now = Instant::now();
            if self.debouncer.next_deadline().is_some_and(|d| d <= now) {
                let due = self.debouncer.take_due(now);
                self.start_batch(due);
                continue;
            }
            if self.config_settled_at().is_some_and(|d| d <= now) {
                self.config_changed = None;
                self.reload();
            }
            if let (Some(spec), Some((sup, _))) = (self.new_exec.take(), app.as_mut()) {
                sup.set_spec(spec);
            }
            match self.next_wake(app).await {
                Wake::Event(None) => return Ok(Exit::Success),
                Wake::Event(Some(Event::Batch(done))) => {
                    let wrote = self.finish_batch(*done);
                    if let (true, Some((sup, _))) = (wrote, app.as_mut()) {
                        sup.reload();
                    }
                    if let Some(exit) = self.once_finished() {
                        return Ok(exit);
                    }
                }
                Wake::Event(Some(event)) => {
                    if let Some(exit) = self.handle(event) {
                        return Ok(exit);
                    }
                }
                Wake::Timer => {}
                Wake::AppExit(exit) => {
                    let exit = exit?;
                    tracing::info!("the app exited ({}); exiting with its status", exit.code());
                    return Ok(exit);
                }
                Wake::Signal(sig) => {
                    if let Some((sup, _)) = app.as_mut() {
                        sup.on_signal(sig);
                    }
                }
            }
        }
    }

    /// Waits for an event, the next template to be due, or the app.
    async fn next_wake(&mut self, app: &mut App) -> Wake {
        // At least once a second, so an idle loop still beats (liveness).
        let tick = Instant::now() + std::time::Duration::from_secs(1);
        let deadline = [self.debouncer.next_deadline(), self.config_settled_at()]
            .into_iter()
            .flatten()
            .fold(tick, Instant::min);
        let deadline = Some(deadline);
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
    }

    /// Answers one event; `Some` ends the loop with that status.
    fn handle(&mut self, event: Event) -> Option<Exit> {
        match event {
            Event::Shutdown(signal) => {
                tracing::info!("{signal} received; exiting");
                return Some(Exit::Success);
            }
            Event::Reload => self.reload(),
            Event::File(path) => self.file_changed(&path),
            Event::Source(e) => self.source_event(e),
            Event::WatchEnded { source, error } => {
                tracing::error!(source = %source, "the watch stopped: {error}");
                self.source_down(&source, &error);
            }
            // main_loop takes these itself; drain() while exiting.
            Event::Batch(done) => drop(self.finish_batch(*done)),
        }
        None
    }

    /// With `--once`: done when every template is in place (exit 0) or one
    /// failed for a reason waiting cannot fix (exit 1).
    pub(super) fn once_finished(&self) -> Option<Exit> {
        if !self.settings.once {
            return None;
        }
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

    /// The template's own `wait`, else the config's: read from the running
    /// pipeline, so a reload's new `wait` applies to the next change.
    fn wait_for(&self, index: usize) -> Option<Debounce> {
        self.pipeline.units[index]
            .spec
            .wait
            .or(self.pipeline.config.wait)
    }

    pub(super) fn mark(&mut self, indices: impl IntoIterator<Item = usize>, why: &str) {
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
        let mut marked = Vec::new();
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
            marked.push(i);
        }
        self.publish_due(marked);
    }

    /// Shows in `/status` when each of `indices` renders next.
    pub(super) fn publish_due(&self, indices: impl IntoIterator<Item = usize>) {
        let now = (Instant::now(), serve::now_unix());
        let mut status = serve::lock(&self.status);
        for i in indices {
            if let Some(t) = status.templates.get_mut(&self.name(i)) {
                t.next_render_unix = self
                    .debouncer
                    .deadline_of(i)
                    .map(|d| now.1 + d.saturating_duration_since(now.0).as_secs_f64());
            }
        }
    }

    /// What each template read, by index.
    fn deps(&self) -> impl Iterator<Item = &Deps> {
        self.templates.iter().map(|t| &t.deps)
    }

    fn source_event(&mut self, event: SourceEvent) {
        match event {
            SourceEvent::Changed { source, keys } => {
                let mut affected = self.key_index.reading(&source, &keys);
                affected.extend(self.first_renders_running());
                tracing::debug!(source = %source, "{} key(s) changed; {} template(s) affected", keys.len(), affected.len());
                self.mark(affected, "data changed");
            }
            SourceEvent::CatalogChanged { source, queries } => {
                let affected = sources::reading_catalog(self.deps(), &source, &queries);
                tracing::debug!(source = %source, "{} catalog quer(ies) changed; {} template(s) affected", queries.len(), affected.len());
                self.mark(affected, "services changed");
            }
            SourceEvent::Resync { source } => {
                let mut affected = sources::reading(self.deps(), &source);
                affected.extend(self.first_renders_running());
                self.mark(affected, "source resynchronised");
            }
            SourceEvent::Up { source } => {
                tracing::info!(source = %source, "source is answering again");
                if let Some(s) = serve::lock(&self.status).sources.get_mut(&source) {
                    s.up = true;
                    s.reconnects += 1;
                    s.last_error = None;
                }
                // Whatever changed while it was away, its dependents must
                // see the current data.
                let affected = sources::reading(self.deps(), &source);
                self.mark(affected, "source is back");
            }
            SourceEvent::Failed { source, error } => {
                // The watch logs each attempt; this, once per outage.
                if self.source_down(&source, &error) {
                    tracing::warn!(source = %source, "source is failing: {error}; keeping the current files");
                }
            }
            event @ (SourceEvent::Members { .. }
            | SourceEvent::Failover { .. }
            | SourceEvent::Queries { .. }) => {
                serve::lock(&self.status).cluster_event(event);
            }
        }
    }

    /// Counts a failed attempt and keeps its error as the current one;
    /// true when the source was up until now.
    fn source_down(&mut self, source: &str, error: &str) -> bool {
        let mut status = serve::lock(&self.status);
        let Some(s) = status.sources.get_mut(source) else {
            return false;
        };
        s.errors += 1;
        s.last_error = Some(error.to_string());
        std::mem::replace(&mut s.up, false)
    }

    fn file_changed(&mut self, path: &Path) {
        if self.files.is_config(path) {
            tracing::info!(path = %path.display(), "config file changed; reloading");
            let now = Instant::now();
            let first = self.config_changed.map_or(now, |(first, _)| first);
            self.config_changed = Some((first, now));
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
        affected.extend(self.first_renders_running());
        if let Some(source) = self.files.source_at(path) {
            affected.extend(sources::reading(self.deps(), source));
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
    pub(super) fn reparse(&mut self, which: &[usize]) -> Vec<usize> {
        let mut keep = Vec::with_capacity(which.len());
        for &i in which {
            if !std::mem::take(&mut self.templates[i].reparse) {
                keep.push(i);
                continue;
            }
            let unit = &mut self.pipeline.units[i];
            match crate::template::Template::load(&unit.spec.source, unit.spec.whitespace) {
                Ok(mut t) => {
                    t.set_limits(self.pipeline.config.limits);
                    unit.template = std::sync::Arc::new(t);
                    keep.push(i);
                }
                Err(e) => {
                    tracing::error!("{}; the current file stays", error::Logged(&e));
                    let detail = serve::detail(&e, unit.spec.is_secret());
                    self.set_state(i, TemplateState::Failed, Some(detail));
                }
            }
        }
        keep
    }

    /// Reads the config again and rebuilds everything derived from it. A
    /// config that does not load, or a new listen address that cannot be
    /// bound, keeps the running one whole.
    pub(super) fn set_state(&mut self, i: usize, state: TemplateState, detail: Option<String>) {
        self.templates[i].state = state;
        let name = self.name(i);
        if let Some(t) = serve::lock(&self.status).templates.get_mut(&name) {
            t.state = state;
            t.detail = detail;
        }
    }

    pub(super) fn name(&self, i: usize) -> String {
        serve::template_name(&self.pipeline.units[i].spec)
    }

    /// Starts, restarts or stops source watches so each covers exactly what
    /// the templates read, and watches the files they read.
    pub(super) fn update_watches(&mut self, since: SystemTime) {
        let deps = || self.templates.iter().map(|t| &t.deps);
        self.files
            .watch(&self.pipeline, files::read_by(deps()), since);
        let specs = sources::wanted(deps());
        self.watches.update(specs, &self.pipeline.sources, &self.tx);
    }
}

/// The app's exit, or never without an app.
async fn app_exit(sup: Option<&mut Supervisor>) -> Result<Exit> {
    match sup {
        Some(sup) => sup.wait().await,
        None => std::future::pending().await,
    }
}

/// The next signal for the app, or never without an app.
async fn app_signal(signals: Option<&mut Signals>) -> nix::sys::signal::Signal {
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
