//! stencil: render configuration files from templates, install them
//! atomically, check before and reload after.
//!
//! The binary is a thin wrapper around [`run`], which takes its arguments
//! so tests and embedders can call it. The modules, lowest layer first
//! (ARCHITECTURE.md has the rules of who may use whom):
//!
//! - `spec`, `error`: plain values parsed from text; exit codes and how
//!   errors are printed. They use nothing of the crate.
//! - `reap`: the one owner of `waitpid` while stencil supervises an app.
//! - `runtime`: the async runtime and HTTP client, built only when needed.
//! - `source`: data sources behind `key()`, `ls()`, `kv()`, `tree()`:
//!   files, etcd and Consul, each with its watch.
//! - `template`: minijinja with stencil's functions, recording reads.
//! - `command`, `install`: check and reload commands; staging, rename, fsync.
//! - `cli` -> `config`: the clap tree, then file + environment + flags
//!   merged into one validated `Config`.
//! - `pipeline`: render -> install -> commands, shared by every command.
//! - `serve`, `watch`: the health endpoints; the coordinator loop.
//! - `commands` (render, check, deps, watch), `exec`, `subst`, `man`: the
//!   subcommands.

use std::ffi::OsString;

use anyhow::Result;
use clap::CommandFactory;

mod cleanup;
mod cli;
mod command;
mod commands;
mod config;
mod convert;
mod error;
mod exec;
mod install;
mod liveness;
mod logging;
mod man;
mod pipeline;
mod reap;
mod runtime;
mod serve;
mod source;
mod spec;
mod subst;
mod template;
mod watch;

use cli::{Cli, Command};
pub use error::Exit;

// The public surface: what the integration tests and the fuzz targets
// reach into. Everything else is private to the crate.
pub use config::{Config, parse_source_flag, parse_template_flag};
pub use convert::{Converted, GoError, go_to_jinja};
pub use man::pages as man_pages;
pub use runtime::{block_on, get as async_runtime};
pub use source::catalog::{CatalogData, CatalogQuery};
pub use source::consul::{
    AclFiltered, ConsulConfig, ConsulSource, MIN_INTERVAL as CONSUL_MIN_INTERVAL,
};
pub use source::etcd::{EtcdClient, EtcdConfig, EtcdSource, prefix_range_end};
pub use source::file::{Format as DataFormat, parse as parse_data};
pub use source::{Source, SourceEvent, Sources, WatchSpec};
pub use spec::{Debounce, MAX_DURATION, WaitTarget, parse_duration, parse_signal};
pub use subst::{
    Env as SubstEnv, Options as SubstOptions, Substituter, names as subst_names, substitute,
};
pub use template::{FILTERS, FUNCTIONS, Scope, Template, Whitespace};

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
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cli = match cli::parse(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" to clap; they print to stdout.
            if !e.use_stderr() {
                let _ = e.print();
                return Ok(Exit::Success);
            }
            // clap quotes the value it refused: a --wait or --source URL
            // with its password.
            eprint!("{}", spec::redact_urls(&e.render().to_string()));
            return Ok(Exit::Usage);
        }
    };
    let json = cli.global.log_format == cli::LogFormat::Json;
    let timestamps = logging::timestamps(
        cli.global.log_timestamps,
        std::env::var_os("JOURNAL_STREAM").as_deref(),
    );
    logging::init(cli.global.log_level.into(), json, timestamps);
    match cli.command {
        Command::Render(args) => commands::render(args),
        Command::Watch(args) => commands::watch(args),
        Command::Check(args) => commands::check(&args.templates),
        Command::Deps(args) => commands::deps(&args),
        Command::Exec(args) => exec::run(&args),
        Command::Convert(args) => convert::run(&args),
        Command::Subst(args) => subst::run(
            &args,
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
        ),
        Command::Completions { shell } => {
            let out = &mut std::io::stdout();
            clap_complete::generate(shell, &mut Cli::command(), "stencil", out);
            Ok(Exit::Success)
        }
        Command::Man { dir } => {
            man::write_all(&dir)?;
            Ok(Exit::Success)
        }
    }
}
