//! Batches run beside the loop: each on a render thread of its own
//! ([`workers`](super::workers): kept between batches), with a snapshot
//! of the pipeline (the parsed templates shared), reporting back as an
//! [`Event::Batch`]. The loop never waits for a render, a check or a
//! reload: signals, source events and the endpoints are answered while
//! they run.
//!
//! A template is in at most one running batch: one that falls due while
//! its batch runs waits for that batch's report, then renders at once, so
//! its installs stay in order. Other templates start batches of their own
//! meanwhile, so a slow template (a render near its fuel, a check near its
//! timeout) holds back only itself. Every batch ends: a render within its
//! fuel, a source read within the client's timeout, a command within its
//! `command_timeout`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use super::Event;
use super::coordinator::Coordinator;
use crate::error;
use crate::install::Outcome;
use crate::pipeline::{Options, Rejection, Report, UnitReport, is_rejected};
use crate::serve::{self, TemplateState};

/// How long SIGTERM or SIGINT waits for the batches in progress before
/// their commands are killed and their staged files removed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The batches in progress.
#[derive(Default)]
pub(super) struct Batches {
    /// Bumped when the templates are replaced (a reload): a report of an
    /// older configuration's batch is dropped.
    generation: u64,
    /// The templates in a running batch.
    running: BTreeSet<usize>,
    /// Templates that fell due while their batch ran.
    deferred: BTreeSet<usize>,
    /// The threads batches run on.
    workers: super::workers::Workers,
}

impl Batches {
    pub(super) fn reset(&mut self) {
        self.generation += 1;
        self.running.clear();
        self.deferred.clear();
    }
}

/// What a render thread reports.
#[derive(Debug)]
pub(crate) struct BatchDone {
    generation: u64,
    which: Vec<usize>,
    report: Report,
    /// The templates' rejected content after the batch, for those the
    /// batch owned (and those its reload cleared).
    rejected: Vec<(usize, Option<Rejection>)>,
    started: SystemTime,
}

impl Coordinator {
    /// Starts a batch of the due templates that are not in one already.
    pub(super) fn start_batch(&mut self, due: Vec<usize>) {
        let (busy, free): (Vec<usize>, Vec<usize>) = due
            .into_iter()
            .partition(|i| self.batches.running.contains(i));
        self.batches.deferred.extend(busy);
        let which = self.reparse(&free);
        if which.is_empty() {
            return;
        }
        for (_, source) in self.pipeline.sources.iter() {
            source.refresh();
        }
        tracing::debug!("starting a batch of {} template(s)", which.len());
        self.batches.running.extend(which.iter().copied());
        let mut pipeline = self.pipeline.snapshot();
        let options = Options {
            wait_for_data: None,
            ..self.settings.options
        };
        let (tx, generation) = (self.tx.clone(), self.batches.generation);
        let started = SystemTime::now();
        let run = move |ready: &super::workers::Ready| {
            let report = pipeline.run(&which, &options, &mut std::io::stdout());
            let rejected = which
                .iter()
                .chain(&report.retry)
                .map(|&i| (i, pipeline.units[i].rejected.take()))
                .collect();
            let done = BatchDone {
                generation,
                which,
                report,
                rejected,
                started,
            };
            ready.now();
            let _ = tx.send(Event::Batch(Box::new(done)));
        };
        if let Err(e) = self.batches.workers.run(Box::new(run)) {
            tracing::error!("cannot start a render thread: {e}; retrying");
            // Only this batch's templates: other batches are still running.
            for i in &free {
                self.batches.running.remove(i);
            }
            let now = Instant::now() + Duration::from_secs(1);
            for i in free {
                self.debouncer.retry_at(i, now);
            }
        }
    }

    /// Templates in a running batch that have not reported reads yet (their
    /// first render): a change now cannot be matched against what they
    /// read, so it counts for them, and they render again after their batch.
    pub(super) fn first_renders_running(&self) -> Vec<usize> {
        self.batches
            .running
            .iter()
            .copied()
            .filter(|&i| self.templates[i].deps.read.is_empty())
            .collect()
    }

    /// Takes in a batch's report: states, status, logs, retries, watches.
    /// Returns whether a file was written.
    pub(super) fn finish_batch(&mut self, done: BatchDone) -> bool {
        if done.generation != self.batches.generation {
            return false;
        }
        let BatchDone {
            which,
            report,
            rejected,
            started,
            ..
        } = done;
        let now = Instant::now();
        for i in &which {
            self.batches.running.remove(i);
            if self.batches.deferred.remove(i) {
                self.debouncer.touch(*i, now, None);
            }
        }
        for (i, rejected) in rejected {
            self.pipeline.units[i].rejected = rejected;
        }
        let wrote = report
            .units
            .iter()
            .any(|u| matches!(u.result, Ok(Outcome::Written)));
        let now_unix = serve::now_unix();
        let mut reads_changed = false;
        for unit in report.units {
            reads_changed |= self.record(unit, now_unix);
        }
        {
            let mut status = serve::lock(&self.status);
            status.commands.runs += report.commands_run;
            status.commands.failures += report.command_failures;
        }
        for e in &report.commands {
            tracing::error!("{}", error::Logged(e));
        }
        if !report.retry.is_empty() {
            self.mark(
                report.retry,
                "its reload succeeds again; trying the content restored with another template's",
            );
        }
        self.publish_due(which.iter().copied());
        // What the watches cover follows from the templates' reads alone:
        // when no render of the batch read anything new or dropped a read,
        // they stay as they are. (Recomputing them walked every template's
        // reads: about 2 ms per batch with 1,000 templates of 10 keys.)
        if reads_changed {
            self.update_watches(started);
        }
        wrote
    }

    /// While exiting: waits up to [`SHUTDOWN_GRACE`] for the batches in
    /// progress (a second signal stops waiting).
    pub(super) async fn drain(&mut self) {
        if self.batches.running.is_empty() {
            return;
        }
        tracing::info!(
            "waiting up to {}s for the batch in progress",
            SHUTDOWN_GRACE.as_secs()
        );
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while !self.batches.running.is_empty() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Event::Batch(done))) => drop(self.finish_batch(*done)),
                Ok(Some(Event::Shutdown(_)) | None) | Err(_) => break,
                Ok(Some(_)) => {}
            }
        }
    }

    /// Takes in how one template's render ended (at `now_unix`): its state,
    /// counters, log line, retry and recorded reads. Returns whether it read
    /// other keys, prefixes or files than its last render.
    fn record(&mut self, unit: UnitReport, now_unix: f64) -> bool {
        let i = unit.index;
        let (state, detail) = serve::state_after(&unit, self.pipeline.units[i].spec.is_secret());
        if let Some(t) = serve::lock(&self.status).templates.get_mut(&self.name(i)) {
            t.count(&unit.result, now_unix);
            t.rejected_sha256 = self.pipeline.units[i]
                .rejected
                .as_ref()
                .map(|r| r.sha256.clone());
        }
        let source = self.pipeline.units[i].spec.source.display();
        let info = &mut self.templates[i];
        match (&unit.result, state) {
            (Err(_), TemplateState::Pending) => {
                if info.logged_pending.as_ref() != Some(&unit.deps.waiting_for) {
                    tracing::info!(
                        template = %source,
                        "pending: {}; the current file stays",
                        detail.as_deref().unwrap_or_default()
                    );
                    info.logged_pending = Some(unit.deps.waiting_for.clone());
                }
            }
            // The batch's reload error, logged once, names it.
            (Err(e), _) if is_rejected(e) => info.logged_pending = None,
            (Err(e), _) => {
                info.logged_pending = None;
                tracing::error!(
                    "{source} failed, the current file stays: {}",
                    error::Logged(e)
                );
            }
            (Ok(_), _) => info.logged_pending = None,
        }
        if unit.result.is_ok() {
            info.retry.reset();
        } else if !unit.deps.failed.is_empty() {
            let delay = info.retry.next_delay();
            self.debouncer.retry_at(i, Instant::now() + delay);
        }
        let reads_changed = self.templates[i].deps.read != unit.deps.read;
        if reads_changed {
            let old = &self.templates[i].deps.read;
            self.key_index.update(i, old, &unit.deps.read);
        }
        self.templates[i].deps = unit.deps;
        self.set_state(i, state, detail);
        reads_changed
    }
}
