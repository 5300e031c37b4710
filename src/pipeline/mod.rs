//! The one pipeline every command shares: snapshot -> render -> install ->
//! commands.
//!
//! `render` runs it once; watch and exec (later) run it again for the
//! templates a change affects. There is no second code path for one-shot
//! rendering, so what the tests prove about `render` holds for the daemon.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Result;

mod deliver;
mod parallel;
mod rollback;
mod waiting;

use deliver::deliver;
use rollback::Rollback;

use crate::command;
use crate::config::{Config, Destination, OnReloadFailure, TemplateSpec};
use crate::install::{self, Outcome, Previous};
use crate::source::Sources;
use crate::spec::CommandSpec;
use crate::template::{Deps, Scope, Template};

/// How a batch treats its output.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Options {
    /// Print what would be written; write nothing, run nothing.
    pub(crate) dry_run: bool,
    /// Print a unified diff of each changed file.
    pub(crate) diff: bool,
    /// Show the content of secret files in the diff and dry run too.
    pub(crate) show_secrets: bool,
    /// Install, but run no reload command.
    pub(crate) no_reload: bool,
    /// How long to wait for missing data before giving up.
    pub(crate) wait_for_data: Option<Duration>,
}

/// One template with its configuration.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    /// Shared with the batches, like the template: a batch's copy of the
    /// pipeline must not cost a copy of every template's settings (2 ms
    /// with 1,000 templates, on every change).
    pub(crate) spec: Arc<TemplateSpec>,
    /// Shared with the batches running on render threads.
    pub(crate) template: Arc<Template>,
    pub(crate) default_source: Option<String>,
    /// The content its reload last rejected, after which the previous file
    /// was restored: that content is not installed again, or every event
    /// would fail and restore once more.
    pub(crate) rejected: Option<Rejection>,
}

/// What a reload rejected, and which reload.
#[derive(Debug, Clone)]
pub(crate) struct Rejection {
    /// The SHA-256 of the content, in hex.
    pub(crate) sha256: String,
    /// The reload command, as run.
    reload: CommandSpec,
    /// Restored with other templates sharing the reload: it may not be
    /// this content the service refused, so it is tried again once that
    /// reload succeeds.
    shared: bool,
}

/// The loaded configuration: sources opened, templates parsed.
#[derive(Debug)]
pub(crate) struct Pipeline {
    /// Shared with the batches; replaced whole on reload.
    pub(crate) config: Arc<Config>,
    pub(crate) units: Vec<Unit>,
    pub(crate) sources: Sources,
}

/// What happened to one template in a batch.
#[derive(Debug)]
pub(crate) struct UnitReport {
    pub(crate) index: usize,
    pub(crate) result: Result<Outcome>,
    pub(crate) deps: Deps,
}

/// What a batch did.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) units: Vec<UnitReport>,
    /// Failed reload commands, after every file was installed.
    pub(crate) commands: Vec<anyhow::Error>,
    /// Check and reload commands run, and how many of them failed.
    pub(crate) commands_run: u64,
    pub(crate) command_failures: u64,
    /// Templates restored together with others whose reload now succeeds:
    /// worth rendering again (watch does).
    pub(crate) retry: Vec<usize>,
}

impl Report {
    /// Every error of the batch: templates first, then reload commands.
    /// A template its reload rejected is left out: the reload's error
    /// names it, with the command's output.
    pub(crate) fn into_errors(self) -> Vec<anyhow::Error> {
        self.units
            .into_iter()
            .filter_map(|u| u.result.err())
            .filter(|e| !is_rejected(e))
            .chain(self.commands)
            .collect()
    }
}

impl Pipeline {
    /// Parses every template and opens every source, collecting every error
    /// rather than stopping at the first.
    pub(crate) fn load(config: Config) -> Result<Pipeline, Vec<anyhow::Error>> {
        let mut errors = Vec::new();
        let mut units = Vec::new();
        for spec in &config.templates {
            match Template::load(&spec.source, spec.whitespace) {
                Ok(mut template) => units.push(Unit {
                    template: {
                        template.set_limits(config.limits);
                        Arc::new(template)
                    },
                    default_source: config.default_source(spec),
                    spec: Arc::new(spec.clone()),
                    rejected: None,
                }),
                Err(e) => errors.push(e.context(format!("template at {}", spec.origin))),
            }
        }
        let sources = match Sources::open(&config.sources) {
            Ok(s) => s,
            Err(e) => {
                errors.push(e);
                Sources::default()
            }
        };
        if errors.is_empty() {
            Ok(Pipeline {
                config: Arc::new(config),
                units,
                sources,
            })
        } else {
            Err(errors)
        }
    }

    /// A copy to run a batch on a render thread: the config, the templates
    /// and their settings are shared; what a batch changes (a template's
    /// rejected content) is copied.
    pub(crate) fn snapshot(&self) -> Pipeline {
        Pipeline {
            config: self.config.clone(),
            units: self.units.clone(),
            sources: self.sources.clone(),
        }
    }

    /// Renders, installs and runs the commands for the given templates.
    ///
    /// Each template stands alone: one that fails keeps its old file and is
    /// reported, the others are installed. Reload commands run after every
    /// file of the batch is in place, each distinct command once; one that
    /// fails puts back the files with `on_reload_failure = "restore"` it
    /// was reloading onto ([`Pipeline::run_reload`]).
    pub(crate) fn run(&mut self, which: &[usize], opts: &Options, out: &mut dyn Write) -> Report {
        let mut report = Report::default();
        let mut owed = Owed::default();
        if opts.wait_for_data.is_some() {
            for rendered in self.render_waiting(which, opts) {
                let delivered = self.deliver_rendered(rendered, opts, out);
                self.record(delivered, opts, &mut report, &mut owed);
            }
        } else if parallel::suits(self, which, opts) {
            for delivered in parallel::render_and_deliver(self, which, opts) {
                self.record(delivered, opts, &mut report, &mut owed);
            }
        } else {
            // Each file is installed as soon as its template renders: of a
            // thousand templates, the first lands long before the last is
            // rendered.
            for &index in which {
                let delivered = self.render_and_deliver(index, opts, out);
                self.record(delivered, opts, &mut report, &mut owed);
            }
        }
        // The renames are durable before anything reloads onto them.
        self.sync_dirs(std::mem::take(&mut owed.dirs), &mut report);
        if !opts.dry_run && !opts.no_reload {
            for reload in owed.reloads {
                self.run_reload(reload, &mut report);
            }
        }
        report
    }

    /// fsyncs each directory the batch renamed files into, once. When one
    /// fails, the templates written there fail: their new files are in
    /// place (and are reloaded onto) but may not survive a crash.
    fn sync_dirs(&self, dirs: Vec<(PathBuf, Vec<usize>)>, report: &mut Report) {
        for (dir, written) in dirs {
            if let Err(e) = install::sync_dir(&dir) {
                for index in written {
                    let e = anyhow::anyhow!(
                        "installed {}, but {e:#}: the new file may not survive a crash",
                        self.name(index)
                    );
                    set_result(report, index, Err(e));
                }
            }
        }
    }

    /// Renders one template and delivers it.
    fn render_and_deliver(
        &self,
        index: usize,
        opts: &Options,
        out: &mut dyn Write,
    ) -> (usize, Result<Delivered>, Deps) {
        let started = Instant::now();
        let (result, deps) = self.render_one(index);
        tracing::debug!(template = %self.units[index].spec.source.display(), "rendered in {:?}", started.elapsed());
        self.deliver_rendered((index, result, deps), opts, out)
    }

    /// Delivers a template's render, when it succeeded.
    fn deliver_rendered(
        &self,
        (index, result, deps): (usize, Result<String>, Deps),
        opts: &Options,
        out: &mut dyn Write,
    ) -> (usize, Result<Delivered>, Deps) {
        let delivered = result.map(|text| self.deliver_unit(index, text.as_bytes(), opts, out));
        (index, delivered, deps)
    }

    /// Renders one template from the sources as they are.
    fn render_one(&self, index: usize) -> (Result<String>, Deps) {
        let unit = &self.units[index];
        let scope = Scope {
            sources: self.sources.clone(),
            default_source: unit.default_source.clone(),
        };
        let r = unit.template.render(&scope);
        (r.result, r.deps)
    }

    /// Delivers one rendered template (to its file, stdout or the
    /// dry-run report) without touching the batch's books: what
    /// [`Pipeline::record`] then does, so installs can run on several
    /// threads ([`parallel`]).
    fn deliver_unit(
        &self,
        index: usize,
        content: &[u8],
        opts: &Options,
        out: &mut dyn Write,
    ) -> Delivered {
        let started = Instant::now();
        let unit = &self.units[index];
        let restore = match (&unit.spec.reload, &unit.spec.destination) {
            (Some(_), Destination::File(_)) => {
                unit.spec.on_reload_failure == OnReloadFailure::Restore
            }
            _ => false,
        };
        let hash = restore.then(|| sha256(content));
        if let (Some(hash), Some(rejected)) = (&hash, &unit.rejected) {
            if *hash == rejected.sha256 && !opts.dry_run {
                // Installing it again would fail the reload again and
                // restore again, on every event that renders it.
                let msg = format!(
                    "renders the content its reload rejected (sha256 {hash}); not installed \
                     again until it renders differently or the configuration is reloaded"
                );
                tracing::warn!(template = %unit.spec.source.display(), "{msg}");
                return Delivered {
                    result: Err(Rejected(msg).into()),
                    hash: None,
                };
            }
        }
        let result = deliver(unit, content, opts, out).map(|(outcome, previous)| {
            let dir = previous.as_ref().map(|p| p.directory().to_path_buf());
            (outcome, dir, previous.filter(|_| hash.is_some()))
        });
        if let Ok((outcome, _, _)) = &result {
            tracing::debug!(template = %unit.spec.source.display(), "{outcome:?} in {:?}", started.elapsed());
        }
        Delivered { result, hash }
    }

    /// Enters one template's outcome (a render error, or its delivery) in
    /// the batch's report, and what the batch owes for it.
    fn record(
        &mut self,
        (index, delivered, deps): (usize, Result<Delivered>, Deps),
        opts: &Options,
        report: &mut Report,
        owed: &mut Owed,
    ) {
        let result = delivered.and_then(|d| self.note(index, d, opts, report, owed));
        if let Err(e) = &result {
            tracing::debug!("{e:#}");
        }
        report.units.push(UnitReport {
            index,
            result,
            deps,
        });
    }

    /// Counts a delivered template's check, notes its directory and the
    /// reload it needs.
    fn note(
        &mut self,
        index: usize,
        Delivered {
            result: delivered,
            hash,
        }: Delivered,
        opts: &Options,
        report: &mut Report,
        owed: &mut Owed,
    ) -> Result<Outcome> {
        let unit = &self.units[index];
        // A check runs exactly when the file changed (or it failed).
        if unit.spec.check.is_some() && !opts.dry_run {
            match &delivered {
                Ok((Outcome::Written, _, _)) => report.commands_run += 1,
                Err(e) if command::is_command_failure(e) => {
                    report.commands_run += 1;
                    report.command_failures += 1;
                }
                _ => {}
            }
        }
        let (outcome, dir, previous) = delivered?;
        if let Some(dir) = dir {
            owed.wrote_in(dir, index);
        }
        let reloads = &mut owed.reloads;
        if let (Outcome::Written, Some(reload), Destination::File(dest)) =
            (outcome, &unit.spec.reload, &unit.spec.destination)
        {
            let dest = dest.to_string_lossy();
            let spec = reload.substitute(&[("destination", &dest)]);
            let name = unit.spec.source.display().to_string();
            let at = match reloads.iter().position(|r| r.spec == spec) {
                Some(at) => {
                    // Its logged output is prefixed by every template
                    // that asked for it.
                    reloads[at].label.push_str(", ");
                    reloads[at].label.push_str(&name);
                    at
                }
                None => {
                    reloads.push(Reload {
                        spec,
                        timeout: unit.spec.command_timeout,
                        label: name,
                        restorable: Vec::new(),
                    });
                    reloads.len() - 1
                }
            };
            if let (Some(previous), Some(hash)) = (previous, hash) {
                reloads[at].restorable.push((index, previous, hash));
            }
        }
        // Its content is in place: whatever was rejected before is not.
        self.units[index].rejected = None;
        Ok(outcome)
    }

    /// Runs one reload command of the batch. When it fails, the files it
    /// was reloading onto that may be restored are put back, all of them,
    /// and it runs once more so the service is on them; the failure is
    /// reported once, with both runs, and each restored template fails
    /// with a [`Rejected`] naming what happened, without the command's
    /// output (it is what `/status` shows). When the reload succeeds,
    /// templates restored together at its last failure are retried.
    fn run_reload(&mut self, reload: Reload, report: &mut Report) {
        // Batches run on threads of their own (watch mode): two templates
        // sharing `systemctl reload nginx` in two batches must not reload it
        // twice at once, nor one restore files under the other's reload.
        // Reloads are short; one at a time in the process is simplest.
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let Reload {
            spec,
            timeout,
            label,
            restorable,
        } = reload;
        tracing::info!(command = %spec, "running reload command");
        report.commands_run += 1;
        let Err(first) = command::run(&spec, "reload command", &label, timeout) else {
            self.retry_shared(&spec, report);
            return;
        };
        report.command_failures += 1;
        if restorable.is_empty() {
            report.commands.push(first);
            return;
        }
        let mut restored = Vec::new();
        let mut problems = Vec::new();
        for (index, previous, hash) in restorable {
            match install::restore(&previous) {
                Ok(()) => {
                    tracing::warn!(path = %previous.destination.display(), "the reload failed; restored the previous file");
                    restored.push((index, hash));
                }
                Err(e) => problems.push((index, e)),
            }
        }
        let second = (!restored.is_empty()).then(|| {
            tracing::info!(command = %spec, "running reload command again, on the restored files");
            report.commands_run += 1;
            let result = command::run(&spec, "reload command", &label, timeout);
            if result.is_err() {
                report.command_failures += 1;
            }
            result
        });
        let names: Vec<String> = restored.iter().map(|(i, _)| self.name(*i)).collect();
        let rollback = Rollback {
            spec: &spec,
            names: &names,
            first: &first,
            second: second.as_ref(),
        };
        for (index, hash) in &restored {
            self.units[*index].rejected = Some(Rejection {
                sha256: hash.clone(),
                reload: spec.clone(),
                shared: restored.len() > 1,
            });
            set_result(report, *index, Err(Rejected(rollback.summary()).into()));
        }
        for (index, e) in problems {
            let name = self.name(index);
            let e = e.context(format!(
                "the previous {name} could not be restored after the reload failed on the new \
                 one (below): the new file stays"
            ));
            report.commands.push(e);
            let msg =
                format!("reload command `{spec}` failed; the previous file could not be restored");
            set_result(report, index, Err(Rejected(msg).into()));
        }
        // With nothing restored, the reload's own error carries its output.
        let error = if names.is_empty() {
            first
        } else {
            rollback.error()
        };
        report.commands.push(error);
    }

    /// After `spec` succeeded: the templates restored together when it last
    /// failed may try their content again (one of the others may have been
    /// what the service refused). Once per success, so no loop.
    fn retry_shared(&mut self, spec: &CommandSpec, report: &mut Report) {
        for (index, unit) in self.units.iter_mut().enumerate() {
            if unit
                .rejected
                .as_ref()
                .is_some_and(|r| r.shared && r.reload == *spec)
            {
                unit.rejected = None;
                report.retry.push(index);
            }
        }
    }

    /// A template as messages name it: its destination and its source.
    fn name(&self, index: usize) -> String {
        let spec = &self.units[index].spec;
        format!("{} (from {})", spec.destination, spec.source.display())
    }

    /// Removes staged files left beside the destinations by a crashed run.
    pub(crate) fn remove_stale(&self) {
        for unit in &self.units {
            if let Destination::File(dest) = &unit.spec.destination {
                install::remove_stale(dest);
            }
        }
    }
}

/// A template delivered by [`Pipeline::deliver_unit`], not yet entered in
/// the batch's books.
struct Delivered {
    /// The outcome, the directory renamed into (to fsync), and the file
    /// replaced when a failed reload may put it back (only then: a large
    /// batch holds every template's until its end).
    result: Result<(Outcome, Option<PathBuf>, Option<Previous>)>,
    /// Its content's SHA-256, when a failed reload may restore it.
    hash: Option<String>,
}

/// What a batch owes once each of its files is in place: the directories
/// to fsync, then the reload commands.
#[derive(Default)]
struct Owed {
    /// Each directory files were renamed into, with those templates.
    dirs: Vec<(PathBuf, Vec<usize>)>,
    reloads: Vec<Reload>,
}

impl Owed {
    fn wrote_in(&mut self, dir: PathBuf, index: usize) {
        match self.dirs.iter_mut().find(|(d, _)| *d == dir) {
            Some((_, written)) => written.push(index),
            None => self.dirs.push((dir, vec![index])),
        }
    }
}

/// A reload command of a batch, and the files it reloads onto that may be
/// put back when it fails.
struct Reload {
    spec: CommandSpec,
    timeout: Duration,
    /// The templates that asked for it, for its logged output.
    label: String,
    /// Written templates with `on_reload_failure = "restore"`: the index,
    /// the file the install replaced, the new content's SHA-256.
    restorable: Vec<(usize, Previous, String)>,
}

/// A template whose new content its reload rejected: the previous file
/// was restored (or the same content was not installed again). The
/// reload's own error, reported once for the batch, carries the output.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Rejected(pub(crate) String);

pub(crate) fn is_rejected(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Rejected>().is_some()
}

/// Replaces the result a template had in the batch.
fn set_result(report: &mut Report, index: usize, result: Result<Outcome>) {
    if let Some(unit) = report.units.iter_mut().find(|u| u.index == index) {
        unit.result = result;
    }
}

/// The SHA-256 of rendered content, in hex as sha256sum(1) prints it.
pub(crate) fn sha256(content: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, content);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
