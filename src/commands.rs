//! `stencil render`, `check`, `deps` and `watch`: each loads the config
//! once, builds the [`Pipeline`] and runs it its own way.

use std::io::Write;

use anyhow::Result;

use crate::cli::{DepsArgs, OutputArgs, RenderArgs, TemplateArgs, WatchArgs};
use crate::config::Flags;
use crate::error::{self, Exit};
use crate::pipeline::{Options, Pipeline};
use crate::template::Scope;

impl From<OutputArgs> for Options {
    fn from(a: OutputArgs) -> Self {
        Options {
            dry_run: a.dry_run,
            diff: a.diff,
            show_secrets: a.show_secrets,
            no_reload: a.no_reload,
            wait_for_data: a.wait_for_data,
        }
    }
}

/// Reads the config, templates and sources; on failure prints every
/// error and gives the exit status. `--print-config` prints and stops here.
pub(crate) fn load(flags: &Flags) -> Result<Result<Pipeline, Exit>> {
    let config = flags.load()?;
    if flags.templates.print_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(Err(Exit::Success));
    }
    match Pipeline::load(config) {
        Ok(p) => Ok(Ok(p)),
        // A template or data file that cannot be read or parsed is for a
        // person to fix before anything can run: 2 for every command, as
        // stencil(1) says.
        Err(errors) => Ok(Err(print_all(&errors).max(Exit::Usage))),
    }
}

/// Prints each error; the exit status is the worst of them.
pub(crate) fn print_all(errors: &[anyhow::Error]) -> Exit {
    let mut exit = Exit::Success;
    for e in errors {
        error::print(e);
        exit = exit.max(error::exit_for(e));
    }
    exit
}

/// `stencil render`: every template once.
pub(crate) fn render(args: RenderArgs) -> Result<Exit> {
    let opts = Options::from(args.output);
    let mut templates = args.templates;
    templates.stdout_template = args.template.map(|t| (t, args.data_file));
    let mut pipeline = match load(&Flags::from(&templates))? {
        Ok(p) => p,
        Err(exit) => return Ok(exit),
    };
    if !opts.dry_run {
        pipeline.remove_stale();
    }
    let runs_commands = pipeline
        .units
        .iter()
        .any(|u| u.spec.check.is_some() || (u.spec.reload.is_some() && !opts.no_reload));
    // A check or reload must not outlive a stencil that is stopped.
    let _signals = (runs_commands && !opts.dry_run).then(crate::cleanup::exit_on_signals);
    let all: Vec<usize> = (0..pipeline.units.len()).collect();
    let report = pipeline.run(&all, &opts, &mut std::io::stdout().lock());
    for (name, source) in pipeline.sources.iter() {
        if let Some(n) = source.requests() {
            tracing::debug!(source = name, requests = n, "requests sent");
        }
    }
    // The process ends right after: the kernel takes the templates back
    // faster than their destructors would (a tenth of a small render's
    // instructions went to freeing its compiled templates and functions).
    // Sources are still dropped: they own connections and threads.
    std::mem::forget(std::mem::take(&mut pipeline.units));
    let errors = report.into_errors();
    Ok(print_all(&errors).max(if errors.is_empty() {
        Exit::Success
    } else {
        Exit::Failure
    }))
}

/// `stencil watch`: the config is read here, once; the loop reads it again
/// only on reload, from the same flags.
pub(crate) fn watch(args: WatchArgs) -> Result<Exit> {
    let flags = Flags {
        templates: args.templates,
        listen: args.watch.listen,
        debounce: args.watch.debounce,
        ..Flags::default()
    };
    let pipeline = match load(&flags)? {
        Ok(p) => p,
        Err(exit) => return Ok(exit),
    };
    let settings = crate::watch::Settings {
        once: args.watch.once,
        options: args.output.into(),
        exec: None,
    };
    crate::watch::run(flags, settings, pipeline)
}

/// `stencil check`: parse everything, touch no network, write nothing.
pub(crate) fn check(args: &TemplateArgs) -> Result<Exit> {
    let pipeline = match load(&Flags::from(args))? {
        Ok(p) => p,
        Err(exit) => return Ok(exit),
    };
    for unit in &pipeline.units {
        let scope = Scope {
            sources: pipeline.sources.clone(),
            default_source: unit.default_source.clone(),
        };
        let unknown = unit.template.unknown_names(&scope);
        if !unknown.is_empty() {
            tracing::warn!(
                template = %unit.spec.source.display(),
                "uses names that are neither stencil functions nor set in the template \
                 (undefined when reached): {}",
                unknown.join(", ")
            );
        }
    }
    tracing::info!(
        "ok: {} template(s), {} source(s)",
        pipeline.units.len(),
        pipeline.sources.names().count()
    );
    Ok(Exit::Success)
}

/// `stencil deps`: render in memory and print what each template read.
pub(crate) fn deps(args: &DepsArgs) -> Result<Exit> {
    let pipeline = match load(&Flags::from(&args.templates))? {
        Ok(p) => p,
        Err(exit) => return Ok(exit),
    };
    let mut out = std::io::stdout().lock();
    let mut exit = Exit::Success;
    let mut all = Vec::new();
    for unit in &pipeline.units {
        let scope = Scope {
            sources: pipeline.sources.clone(),
            default_source: unit.default_source.clone(),
        };
        let rendered = unit.template.render(&scope);
        if let Err(e) = &rendered.result {
            error::print(e);
            exit = Exit::Failure;
        }
        if args.json {
            all.push(serde_json::json!({
                "template": unit.spec.source,
                "destination": unit.spec.destination.to_string(),
                "reads": rendered.deps.read,
                "missing": rendered.deps.missing,
            }));
            continue;
        }
        writeln!(
            out,
            "{} -> {}",
            unit.spec.source.display(),
            unit.spec.destination
        )?;
        for dep in &rendered.deps.read {
            let mark = if rendered.deps.missing.contains(dep) {
                "  (missing)"
            } else {
                ""
            };
            writeln!(out, "  {dep}{mark}")?;
        }
    }
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
    }
    Ok(exit)
}
