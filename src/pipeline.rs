//! The one pipeline every command shares: snapshot -> render -> install ->
//! commands.
//!
//! `render` runs it once; watch and exec (later) run it again for the
//! templates a change affects. There is no second code path for one-shot
//! rendering, so what the tests prove about `render` holds for the daemon.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::command;
use crate::config::{Config, Destination, TemplateSpec};
use crate::install::{self, Outcome};
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
    /// Install, but run no reload command.
    pub(crate) no_reload: bool,
    /// How long to wait for missing data before giving up.
    pub(crate) wait_for_data: Option<Duration>,
}

/// One template with its configuration.
#[derive(Debug)]
pub(crate) struct Unit {
    pub(crate) spec: TemplateSpec,
    pub(crate) template: Template,
    pub(crate) default_source: Option<String>,
}

/// The loaded configuration: sources opened, templates parsed.
#[derive(Debug)]
pub(crate) struct Pipeline {
    pub(crate) config: Config,
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
}

impl Report {
    /// Every error of the batch: templates first, then reload commands.
    pub(crate) fn into_errors(self) -> Vec<anyhow::Error> {
        self.units
            .into_iter()
            .filter_map(|u| u.result.err())
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
            match Template::load(&spec.source) {
                Ok(template) => units.push(Unit {
                    default_source: config.default_source(spec),
                    spec: spec.clone(),
                    template,
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
                config,
                units,
                sources,
            })
        } else {
            Err(errors)
        }
    }

    /// Renders, installs and runs the commands for the given templates.
    ///
    /// Each template stands alone: one that fails keeps its old file and is
    /// reported, the others are installed. Reload commands run after every
    /// file of the batch is in place, each distinct command once.
    pub(crate) fn run(&mut self, which: &[usize], opts: &Options, out: &mut dyn Write) -> Report {
        let rendered = self.render_waiting(which, opts);
        let mut report = Report::default();
        // Each reload once, with the templates that asked for it (its
        // logged output is prefixed by them).
        let mut reloads: Vec<(CommandSpec, Duration, String)> = Vec::new();
        for (index, result, deps) in rendered {
            let unit = &self.units[index];
            let result = result.and_then(|text| {
                let delivered = deliver(unit, text.as_bytes(), opts, out);
                // A check runs exactly when the file changed (or it failed).
                if unit.spec.check.is_some() && !opts.dry_run {
                    match &delivered {
                        Ok(Outcome::Written) => report.commands_run += 1,
                        Err(e) if command::is_command_failure(e) => {
                            report.commands_run += 1;
                            report.command_failures += 1;
                        }
                        _ => {}
                    }
                }
                let outcome = delivered?;
                if outcome == Outcome::Written {
                    if let (Some(reload), Destination::File(dest)) =
                        (&unit.spec.reload, &unit.spec.destination)
                    {
                        let dest = dest.to_string_lossy();
                        let spec = reload.substitute(&[("destination", &dest)]);
                        let name = unit.spec.source.display().to_string();
                        match reloads.iter_mut().find(|(r, _, _)| *r == spec) {
                            Some((_, _, label)) => {
                                label.push_str(", ");
                                label.push_str(&name);
                            }
                            None => reloads.push((spec, unit.spec.command_timeout, name)),
                        }
                    }
                }
                Ok(outcome)
            });
            if let Err(e) = &result {
                tracing::debug!("{e:#}");
            }
            report.units.push(UnitReport {
                index,
                result,
                deps,
            });
        }
        if !opts.dry_run && !opts.no_reload {
            for (spec, timeout, label) in reloads {
                tracing::info!(command = %spec, "running reload command");
                report.commands_run += 1;
                if let Err(e) = command::run(&spec, "reload command", &label, timeout) {
                    report.command_failures += 1;
                    report.commands.push(e);
                }
            }
        }
        report
    }

    /// Renders the templates; while some lack data and `wait_for_data`
    /// allows, re-reads the sources with backoff and renders those again.
    fn render_waiting(
        &mut self,
        which: &[usize],
        opts: &Options,
    ) -> Vec<(usize, Result<String>, Deps)> {
        let deadline = opts.wait_for_data.map(|d| Instant::now() + d);
        let mut backoff = crate::runtime::Backoff::default();
        loop {
            let results: Vec<_> = which
                .iter()
                .map(|&i| {
                    let unit = &self.units[i];
                    let scope = Scope {
                        sources: self.sources.clone(),
                        default_source: unit.default_source.clone(),
                    };
                    let r = unit.template.render(&scope);
                    (i, r.result, r.deps)
                })
                .collect();
            let waiting: Vec<_> = results
                .iter()
                .filter(|(_, r, deps)| r.is_err() && deps.may_appear())
                .collect();
            let Some(deadline) = deadline else {
                return results;
            };
            let now = Instant::now();
            if waiting.is_empty() || now >= deadline {
                return results;
            }
            for (i, _, deps) in &waiting {
                let mut waiting_for: Vec<String> =
                    deps.waiting_for.iter().map(|d| d.to_string()).collect();
                waiting_for.extend(
                    deps.failed
                        .iter()
                        .map(|s| format!("source {s:?} to answer")),
                );
                tracing::info!(
                    template = %self.units[*i].spec.source.display(),
                    "waiting for data: {}",
                    waiting_for.join(", ")
                );
            }
            std::thread::sleep(backoff.next_delay().min(deadline - now));
            match Sources::open(&self.config.sources) {
                Ok(s) => self.sources = s,
                Err(e) => tracing::warn!("cannot re-read the sources: {e:#}"),
            }
        }
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

/// Puts one rendered template where it goes: stdout, the dry-run report,
/// or the destination file.
fn deliver(unit: &Unit, content: &[u8], opts: &Options, out: &mut dyn Write) -> Result<Outcome> {
    let spec = &unit.spec;
    let dest = match &spec.destination {
        Destination::Stdout => {
            write_stdout(out, content)?;
            return Ok(Outcome::Written);
        }
        Destination::File(p) => p,
    };
    let label = spec.source.display().to_string();
    let req = install::Request {
        destination: dest,
        content,
        mode: spec.mode,
        owner: spec.owner.as_deref(),
        group: spec.group.as_deref(),
        check: spec.check.as_ref(),
        command_timeout: spec.command_timeout,
        backup: spec.backup,
        create_dirs: spec.create_dirs,
        label: &label,
        create_dirs_hint: "set create_dirs = true, or --create-dirs for -t, to create it",
    };
    let context = || format!("cannot install {}", dest.display());
    if opts.dry_run || opts.diff {
        let plan = install::plan(&req).with_context(context)?;
        if !plan.changed {
            tracing::debug!(path = %dest.display(), "unchanged");
            return Ok(Outcome::Unchanged);
        }
        if opts.diff {
            write_stdout(out, diff(dest, plan.current.as_deref(), content).as_bytes())?;
        } else {
            let header = format!("==> {} (mode {:04o}) <==\n", dest.display(), plan.mode);
            write_stdout(out, header.as_bytes())?;
            write_stdout(out, content)?;
        }
        if opts.dry_run {
            return Ok(Outcome::Written);
        }
    }
    let outcome = install::install(&req).with_context(context)?;
    match outcome {
        Outcome::Written => tracing::info!(path = %dest.display(), "wrote"),
        Outcome::Unchanged => tracing::debug!(path = %dest.display(), "unchanged"),
    }
    Ok(outcome)
}

/// A broken stdout pipe (`stencil render … | head`) is not a failure.
fn write_stdout(out: &mut dyn Write, bytes: &[u8]) -> Result<()> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow!(e).context("cannot write to stdout")),
    }
}

fn diff(dest: &std::path::Path, current: Option<&[u8]>, new: &[u8]) -> String {
    let old = current.map(String::from_utf8_lossy).unwrap_or_default();
    let new = String::from_utf8_lossy(new);
    let old_name = if current.is_some() {
        dest.display().to_string()
    } else {
        "/dev/null".into()
    };
    similar::TextDiff::from_lines(old.as_ref(), new.as_ref())
        .unified_diff()
        .header(&old_name, &dest.display().to_string())
        .to_string()
}
