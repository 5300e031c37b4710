//! stencil: render configuration files from templates, install them
//! atomically, check before and reload after.
//!
//! The binary is a thin wrapper around [`run`], which takes its arguments
//! so tests and embedders can call it. Each command is a short function
//! here; the work lives in the modules:
//!
//! - [`cli`]: the clap tree, `STENCIL_*` environment variables, help text.
//! - [`config`]: config file + flags -> a validated [`config::Config`].
//! - [`template`]: minijinja with stencil's functions, recording reads.
//! - [`source`]: data sources behind `key()`, `ls()`, `kv()`, `tree()`.
//! - [`pipeline`]: render -> install -> commands, shared by every command.
//! - [`install`]: staging, check, rename, fsync.
//! - [`command`]: check and reload commands with timeouts.
//! - [`exec`]: the container entrypoint: exec into the app, or supervise it.
//! - [`subst`]: the envsubst replacement.

use std::ffi::OsString;
use std::io::Write;

use anyhow::Result;
use clap::{CommandFactory, Parser};

pub mod cli;
pub mod command;
pub mod config;
pub mod error;
pub mod exec;
pub mod install;
mod logging;
pub mod man;
pub mod pipeline;
pub mod runtime;
pub mod serve;
pub mod source;
pub mod subst;
pub mod template;
pub mod watch;

use cli::{Cli, Command, TemplateArgs};
use config::Config;
use error::Exit;
use pipeline::{Options, Pipeline};

/// Runs stencil with `args` (the first is the program name) and returns
/// the process exit code, printing errors on stderr.
pub fn main_with_args<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match run(args) {
        Ok(exit) => exit.into(),
        Err(err) => {
            error::print(&err);
            error::exit_for(&err).into()
        }
    }
}

/// Parses `args` and runs the command.
pub fn run<I, T>(args: I) -> Result<Exit>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" to clap; they print to stdout.
            let _ = e.print();
            return Ok(if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            });
        }
    };
    logging::init(cli.global.log_level, cli.global.log_format);
    match cli.command {
        Command::Render(args) => render(&args.templates, &args.output.into()),
        Command::Watch(args) => watch(args),
        Command::Check(args) => check(&args.templates),
        Command::Deps(args) => deps(&args.templates, args.json),
        Command::Exec(args) => exec::run(&args),
        Command::Subst(args) => subst::run(
            &args,
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
        ),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "stencil",
                &mut std::io::stdout(),
            );
            Ok(Exit::Success)
        }
        Command::Man { dir } => {
            man::write_all(&dir)?;
            Ok(Exit::Success)
        }
    }
}

impl From<cli::OutputArgs> for Options {
    fn from(a: cli::OutputArgs) -> Self {
        Options {
            dry_run: a.dry_run,
            diff: a.diff,
            no_reload: a.no_reload,
            wait_for_data: a.wait_for_data,
        }
    }
}

/// Loads config, templates and sources; on failure prints every error.
fn load(args: &TemplateArgs) -> Result<Result<Pipeline, Exit>> {
    let config = Config::load(args)?;
    if args.print_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(Err(Exit::Success));
    }
    match Pipeline::load(config) {
        Ok(p) => Ok(Ok(p)),
        Err(errors) => Ok(Err(print_all(&errors))),
    }
}

/// Prints each error; the exit status is the worst of them.
fn print_all(errors: &[anyhow::Error]) -> Exit {
    let mut exit = Exit::Success;
    for e in errors {
        error::print(e);
        exit = exit.max(error::exit_for(e));
    }
    exit
}

fn render(args: &TemplateArgs, opts: &Options) -> Result<Exit> {
    let mut pipeline = match load(args)? {
        Ok(p) => p,
        Err(exit) => return Ok(exit),
    };
    if !opts.dry_run {
        pipeline.remove_stale();
    }
    let all: Vec<usize> = (0..pipeline.units.len()).collect();
    let report = pipeline.run(&all, opts, &mut std::io::stdout().lock());
    for (name, source) in pipeline.sources.iter() {
        if let Some(n) = source.requests() {
            tracing::debug!(source = name, requests = n, "requests sent");
        }
    }
    let errors = report.into_errors();
    Ok(print_all(&errors).max(if errors.is_empty() {
        Exit::Success
    } else {
        Exit::Failure
    }))
}

fn watch(args: cli::WatchArgs) -> Result<Exit> {
    // Flags win over the config file for the listen address and the wait;
    // the config file is read again inside for the templates.
    let config = Config::load(&args.templates)?;
    if args.templates.print_config {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(Exit::Success);
    }
    let settings = watch::Settings {
        once: args.watch.once,
        listen: args.watch.listen.or(config.listen),
        wait: args.watch.debounce.or(config.wait),
        options: args.output.into(),
        exec: None,
    };
    watch::run(&args.templates, settings)
}

fn check(args: &TemplateArgs) -> Result<Exit> {
    let pipeline = match load(args)? {
        Ok(p) => p,
        Err(exit) => return Ok(exit.max(Exit::Usage)),
    };
    for unit in &pipeline.units {
        let unknown = unit.template.unknown_names();
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

fn deps(args: &TemplateArgs, json: bool) -> Result<Exit> {
    let pipeline = match load(args)? {
        Ok(p) => p,
        Err(exit) => return Ok(exit),
    };
    let mut out = std::io::stdout().lock();
    let mut exit = Exit::Success;
    let mut all = Vec::new();
    for unit in &pipeline.units {
        let scope = template::Scope {
            sources: pipeline.sources.clone(),
            default_source: unit.default_source.clone(),
        };
        let rendered = unit.template.render(&scope);
        if let Err(e) = &rendered.result {
            error::print(e);
            exit = Exit::Failure;
        }
        if json {
            all.push(serde_json::json!({
                "template": unit.spec.source,
                "destination": unit.spec.destination.to_string(),
                "reads": rendered.deps.read,
                "missing": rendered.deps.missing,
            }));
        } else {
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
    }
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
    }
    Ok(exit)
}
